"""The length head of an ODIN reward model (Chen et al. 2024, arXiv 2402.07319) in training.

An objective whose entry has meta ``length_head`` (``odin``) trains a second linear head W_L on
the hidden state the score head W_Q reads (``reward_at_last_token(return_hidden=True)``); the
loss (``core.length_bias.odin_loss``) sees both heads' rewards and weights. The length head is
dropped after training: the saved model is the backbone with its quality head, an ordinary
one-output reward model, so RL scores with r_Q alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from goodhartlab.core.length_bias import completion_lengths, pearson
from goodhartlab.data.schema import PreferencePair
from goodhartlab.rewards.reward_model import reward_at_last_token


def quality_head(model: nn.Module) -> nn.Linear:
    """The model's score head W_Q (one output, no bias), which the length head mirrors."""
    head = getattr(model, "score", None)
    if not isinstance(head, nn.Linear) or head.out_features != 1:
        raise ValueError(
            f"objective odin: expected a decoder reward model with a one-output linear `score` "
            f"head, got {type(model).__name__}"
        )
    return head


def build_length_head(model: nn.Module, seed: int) -> nn.Linear:
    """W_L: a linear head of the score head's shape, N(0, initializer_range²) from ``seed``
    (drawn from its own generator: the model's initialisation and data order are untouched)."""
    w_q = quality_head(model)
    head = nn.Linear(w_q.in_features, 1, bias=False).to(w_q.weight.device, w_q.weight.dtype)
    std = getattr(getattr(model, "config", None), "initializer_range", 0.02)
    gen = torch.Generator().manual_seed(seed + 7919)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * std)
    return head


def odin_rewards(
    model: nn.Module, length_head: nn.Linear, input_ids: Tensor, attention_mask: Tensor, n: int
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """r_Q of the n chosen and n rejected sequences (stacked in that order in ``input_ids``),
    and the odin loss's other inputs: each head's r_L and both heads' weights."""
    r_q, hidden = reward_at_last_token(model, input_ids, attention_mask, return_hidden=True)
    r_l = length_head(hidden.to(length_head.weight.dtype))[:, 0]
    extra = {
        "length_reward_chosen": r_l[:n],
        "length_reward_rejected": r_l[n:],
        "w_quality": quality_head(model).weight[0],
        "w_length": length_head.weight[0],
    }
    return r_q[:n], r_q[n:], extra


@torch.no_grad()
def head_length_correlations(
    reward_model: Any, length_head: nn.Linear, pairs: Sequence[PreferencePair]
) -> dict[str, float]:
    """ρ of each head's reward with length (words) over both completions of ``pairs``, and the
    cosine of the two heads' weights: how well the two heads came apart."""
    from goodhartlab.rewards.reward_model import collate_rm_inputs

    prompts = [p.prompt for p in pairs] * 2
    completions = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    model = reward_model.model
    ids = reward_model.input_ids(prompts, completions)
    r_q, r_l = [], []
    device = quality_head(model).weight.device
    for start in range(0, len(ids), 64):
        input_ids, mask = collate_rm_inputs(ids[start : start + 64], reward_model.pad_token_id)
        q, h = reward_at_last_token(
            model, input_ids.to(device), mask.to(device), return_hidden=True
        )
        r_q.append(q.double().cpu())
        r_l.append(length_head(h.to(length_head.weight.dtype))[:, 0].double().cpu())
    ell = completion_lengths(completions)
    w_q, w_l = quality_head(model).weight[0].double(), length_head.weight[0].double()
    return {
        "n": len(completions),
        "rho_quality": float(pearson(torch.cat(r_q), ell)),
        "rho_length": float(pearson(torch.cat(r_l), ell)),
        "head_cosine": float(w_q @ w_l / (w_q.norm() * w_l.norm()).clamp_min(1e-12)),
    }
