"""Training an ArmoRM reward model (objective ``armo``): the two stages of Wang et al. 2024
(arXiv 2406.12845; formulas in ``core.armo``, the saved head in ``rewards.armo_head``).

Attributes: toy_text's gold components (``testbeds.toy_text.components``: coverage, sentiment,
constraint, defects, length; their sum is the gold) and the verbosity attribute, the
completion's length in words. Like the pairs' labels, the attribute ratings the heads learn
from are noisy: each training completion's rating of attribute k is
y_k + ε, ε ~ N(0, (``armo_attribute_noise`` · std_k)²), std_k the attribute's standard
deviation over the training completions, drawn from ``seed``.

Stage 1 trains the backbone with the regression heads (MSE on standardized noisy ratings of
both completions of every training pair) for ``epochs``. Then the backbone and the heads are
frozen, the verbosity penalties λ are fitted on the training completions' predicted
attributes (unless ``armo_decorrelate`` is False: λ = 0), and stage 2 trains the gating network and β with Bradley-Terry on the training
pairs' labels for ``armo_gate_epochs`` over cached hidden states.

Measured (``benchmarks/rm_variants.py``, 3,000 pairs with 25 % flipped labels, 3 seeds): in
toy_text length is part of the gold (the ``length`` component penalizes runaway length), so
the paper's decorrelation removes true signal: the ``length`` head's λ is about −0.08 per
word, and best-of-256 gold falls from 1.37 without decorrelation to 0.57 with it (Bradley-
Terry: 0.38). ArmoRM also learns from more than the pairs: a noisy rating of every attribute
of both completions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from goodhartlab.core.armo import armo_gating_loss, attribute_regression_loss, verbosity_penalties
from goodhartlab.core.length_bias import completion_lengths, pearson
from goodhartlab.data.schema import PreferencePair
from goodhartlab.rewards.armo_head import ArmoHead
from goodhartlab.rewards.reward_model import (
    RewardModel,
    collate_rm_inputs,
    reward_at_last_token,
)

VERBOSITY = "words"


def attribute_targets(
    pairs: Sequence[PreferencePair], noise: float, seed: int
) -> tuple[list[str], Tensor, Tensor]:
    """(attribute names, clean ratings, noisy ratings) of the chosen then the rejected
    completions of ``pairs``; verbosity (words) is the last row. Shapes: (K + 1, 2n)."""
    from goodhartlab.testbeds.toy_text.components import COMPONENTS, component_matrix

    prompts = [p.prompt for p in pairs] * 2
    completions = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    try:
        comps = component_matrix(prompts, completions)
    except Exception as e:
        raise ValueError(
            f"objective armo: the attributes are toy_text's gold components; cannot parse "
            f"these pairs as toy_text ({type(e).__name__}: {e})"
        ) from e
    words = completion_lengths(completions).to(comps.dtype).unsqueeze(0)
    clean = torch.cat([comps, words]).double()
    gen = torch.Generator().manual_seed(seed + 104729)
    std = clean.std(dim=1, keepdim=True)
    noisy = clean + noise * std * torch.randn(clean.shape, generator=gen, dtype=torch.float64)
    return [*COMPONENTS, VERBOSITY], clean, noisy


def gate_token_id(tokenizer, pairs: Sequence[PreferencePair]) -> int:
    """The token that ends every prompt (the gating reads the hidden state there)."""
    ends = {tokenizer(p.prompt, add_special_tokens=False)["input_ids"][-1] for p in pairs}
    if len(ends) != 1:
        raise ValueError(
            f"objective armo: the gating reads the prompt's last token, which must be the same "
            f"token in every prompt; these prompts end with {len(ends)} different tokens"
        )
    return ends.pop()


def _hidden_states(model, head: ArmoHead, ids: list[list[int]], pad_id: int, batch: int, device):
    """Hidden states at the last token and at the prompt's end. Shapes: (N, H), (N, H)."""
    base = model.base_model
    last_all, prompt_all = [], []
    with torch.no_grad():
        for start in range(0, len(ids), batch):
            input_ids, mask = collate_rm_inputs(ids[start : start + batch], pad_id)
            input_ids, mask = input_ids.to(device), mask.to(device)
            hidden = base(input_ids=input_ids, attention_mask=mask).last_hidden_state
            rows = torch.arange(input_ids.shape[0], device=device)
            positions = torch.arange(input_ids.shape[1], device=device)
            last = (positions * mask).argmax(dim=1)
            last_all.append(hidden[rows, last])
            prompt_all.append(hidden[rows, head.prompt_positions(input_ids, mask)])
    return torch.cat(last_all), torch.cat(prompt_all)


def train_armo(
    model: nn.Module,
    reward_model: RewardModel,
    train_pairs: list[PreferencePair],
    config,
    *,
    progress: bool,
) -> tuple[list[float], dict[str, Any]]:
    """Both stages on ``model`` in place (its ``score`` becomes an ``ArmoHead``).

    Returns (per-epoch stage-1 train losses, a report for goodhart_rm.json: the attributes,
    their noise, each head's correlation with the clean attribute on the training completions,
    the verbosity penalties and the decorrelated attributes' correlation with verbosity, the
    gating's training-pair BT loss before and after stage 2, its accuracy and mean weights, β).
    """
    tokenizer, device = reward_model.tokenizer, config.device
    names, clean, noisy = attribute_targets(train_pairs, config.armo_attribute_noise, config.seed)
    hidden_size = model.config.hidden_size
    gen = torch.Generator().manual_seed(config.seed + 15485863)
    head = ArmoHead(
        hidden_size,
        names[:-1],
        gate_hidden=config.armo_gate_hidden,
        gate_layers=config.armo_gate_layers,
        temperature=config.armo_temperature,
        gate_token_id=gate_token_id(tokenizer, train_pairs),
    )
    with torch.no_grad():
        for p in head.parameters():  # drawn from our own generator: seeded, order-independent
            if p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / p.shape[1]) ** 0.5)
        head.target_mean.copy_(noisy.mean(dim=1).float())
        head.target_std.copy_(noisy.std(dim=1).clamp_min(1e-6).float())
    head.to(device)
    model.score = head
    # A constant attribute (std 0, e.g. no prompt with a constraint) gets targets of 0.
    target = (noisy - noisy.mean(dim=1, keepdim=True)) / noisy.std(dim=1, keepdim=True).clamp_min(
        1e-6
    )
    target = target.float()

    n = len(train_pairs)
    prompts = [p.prompt for p in train_pairs] * 2
    completions = [p.chosen for p in train_pairs] + [p.rejected for p in train_pairs]
    ids = reward_model.input_ids(prompts, completions)  # the scorer's ids (and tool answers)
    pad_id = reward_model.pad_token_id

    # Stage 1: backbone + regression heads (the gating is not in this graph).
    stage1 = [p for name, p in model.named_parameters() if not name.startswith("score.gate")
              and not name.startswith("score.logit_scale")]  # fmt: skip
    optimizer = torch.optim.AdamW(stage1, lr=config.lr, weight_decay=config.weight_decay)
    per_step = max(1, config.batch_size)  # pairs per step: 2 x sequences, as Bradley-Terry
    steps = -(-2 * n // (2 * per_step)) * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        (lambda s: 1.0 - s / steps) if config.lr_schedule == "linear" else (lambda s: 1.0),
    )
    order_gen = torch.Generator().manual_seed(config.seed)
    bar = tqdm(total=steps, desc="train armo (1/2)", disable=not progress, leave=False)
    losses = []
    for _ in range(config.epochs):
        model.train()
        order = torch.randperm(2 * n, generator=order_gen).tolist()
        total = 0.0
        for start in range(0, 2 * n, 2 * per_step):
            idx = order[start : start + 2 * per_step]
            input_ids, mask = collate_rm_inputs([ids[i] for i in idx], pad_id)
            _, h_last = reward_at_last_token(
                model, input_ids.to(device), mask.to(device), return_hidden=True
            )
            pred = head.standardized_attributes(h_last)
            loss = attribute_regression_loss(pred, target[:, idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(stage1, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(idx)
            bar.update(1)
        losses.append(total / (2 * n))
    bar.close()
    model.eval()

    # Verbosity decorrelation on the training completions (the reference distribution).
    h_last, h_prompt = _hidden_states(model, head, ids, pad_id, config.eval_batch_size, device)
    with torch.no_grad():
        r = head.attribute_rewards(h_last)
        if config.armo_decorrelate:
            lam = verbosity_penalties(r[:-1].double(), r[-1].double())
            head.verbosity_penalty.copy_(lam.float())
        r_dec = head.decorrelated(h_last)
    for p in model.parameters():
        p.requires_grad_(False)

    # Stage 2: gating network and β, Bradley-Terry on the labelled pairs.
    gate_params = [*head.gate.parameters(), head.logit_scale]
    for p in gate_params:
        p.requires_grad_(True)
    gate_opt = torch.optim.AdamW(gate_params, lr=config.armo_gate_lr)
    gate_steps = -(-n // per_step) * config.armo_gate_epochs
    gate_sched = torch.optim.lr_scheduler.LambdaLR(gate_opt, lambda s: 1.0 - s / gate_steps)
    x = h_prompt[:n]  # chosen and rejected share the prompt (causal: same prefix)

    def full_gate_loss() -> tuple[Tensor, dict[str, Tensor]]:
        with torch.no_grad():
            g = head.gating(x)
            return armo_gating_loss((g * r_dec[:, :n].T).sum(1), (g * r_dec[:, n:].T).sum(1))

    initial_loss, _ = full_gate_loss()
    for _ in range(config.armo_gate_epochs):
        order = torch.randperm(n, generator=order_gen)
        for start in range(0, n, per_step):
            idx = order[start : start + per_step].to(device)
            g = head.gating(x[idx])
            s_c = (g * r_dec[:, idx].T).sum(dim=1)
            s_r = (g * r_dec[:, idx + n].T).sum(dim=1)
            loss, _ = armo_gating_loss(s_c, s_r)
            gate_opt.zero_grad(set_to_none=True)
            loss.backward()
            gate_opt.step()
            gate_sched.step()
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()

    final_loss, final_stats = full_gate_loss()
    with torch.no_grad():
        weights = head.gating(x).mean(dim=0).cpu()
        r_cpu, r_dec_cpu = r.double().cpu(), r_dec.double().cpu()
    report = {
        "attributes": names,
        "attribute_noise": config.armo_attribute_noise,
        "head_rho_clean": {k: _finite(pearson(r_cpu[i], clean[i])) for i, k in enumerate(names)},
        "verbosity_penalty": dict(zip(names[:-1], head.verbosity_penalty.tolist(), strict=True)),
        "decorrelated_rho_verbosity": {
            k: _finite(pearson(r_dec_cpu[i], r_cpu[-1])) for i, k in enumerate(names[:-1])
        },
        "gate_mean_weights": dict(zip(names[:-1], weights.tolist(), strict=True)),
        "logit_scale": float(head.logit_scale.item()),
        "gate_initial_loss": float(initial_loss),
        "gate_final_loss": float(final_loss),
        "gate_final_accuracy": float(final_stats["accuracy"]),
    }
    return losses, report


def _finite(x: Tensor) -> float | None:
    """A correlation for goodhart_rm.json: None where it is undefined (a constant series)."""
    v = float(x)
    return v if math.isfinite(v) else None


def check_backbone(model: nn.Module, objective: str = "armo") -> None:
    """ArmoRM (and PAL, ``objective="pal"``) read hidden states of a decoder with a linear
    ``score`` head."""
    if (
        not isinstance(getattr(model, "score", None), nn.Linear)
        or getattr(model, "base_model", model) is model
    ):
        raise ValueError(
            f"objective {objective}: expected a decoder reward model with a linear `score` head, got "
            f"{type(model).__name__}"
        )
