"""A general pairwise preference model P(y ≻ y' | x): one backbone reads the prompt and BOTH
completions (NLHF's preference model; formulas in ``core.pairwise``).

The text the model reads (template version :data:`PAIRWISE_TEMPLATE_VERSION`):

    ids = tok(prompt + y) + [eos] + tok(y') + [eos]

each part tokenized without special tokens, eos the separator and the token the logit
f(x, y, y') is read at (:func:`~goodhartlab.rewards.reward_model.reward_at_last_token`, as a
scalar reward model reads its one completion). Longer than ``max_length``: each side keeps its
last tokens (the first side loses the start of its prompt first); when both must be cut,
each keeps half of the budget. The preference is antisymmetric by construction,
P(y ≻ y') = σ((f(x, y, y') − f(x, y', y)) / 2), so every preference costs two sequences (both
orders), read in one batch. Bump the version on any change of the template: a saved model
records the version it was trained with and refuses to load under another.

Training: ``goodhart train-rm --objective pairwise`` (``train.rm_pairwise``). A saved model is
a sequence-classification directory (safetensors) whose ``goodhart_rm.json`` has ``kind:
pairwise``; ``RewardModel.from_pretrained`` refuses it (it has no per-completion score), and
the one RL algorithm that can optimize it is ``nash_mp``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from goodhartlab.core.pairwise import pairwise_preference
from goodhartlab.models.loading import check_vocabulary
from goodhartlab.rewards.reward_model import (
    PAIRWISE_KIND,
    default_max_length,
    load_sequence_classifier,
    saved_info,
    saved_kind,
    score_token_ids,
)

__all__ = [
    "PAIRWISE_TEMPLATE_VERSION",
    "PairwisePreferenceModel",
    "is_pairwise_model",
    "pairwise_input_ids",
]

#: Version of the pairwise template (module docstring); bump on any change.
PAIRWISE_TEMPLATE_VERSION = "1"


def is_pairwise_model(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a saved pairwise preference model (``goodhart_rm.json`` kind)."""
    return saved_kind(path) == PAIRWISE_KIND


def pairwise_input_ids(
    tokenizer,
    prompts: Sequence[str],
    firsts: Sequence[str],
    seconds: Sequence[str],
    max_length: int,
) -> list[list[int]]:
    """Token ids the pairwise model reads for each (prompt, first, second) (template v1).

    ids = tok(prompt + first) + [eos] + tok(second) + [eos]; truncation as the module
    docstring says (each side keeps its end).
    """
    n = len(prompts)
    if len(firsts) != n or len(seconds) != n:
        raise ValueError(
            f"prompts, firsts, seconds: expected the same length, got {n}, {len(firsts)}, "
            f"{len(seconds)}"
        )
    if max_length < 4:
        raise ValueError(f"max_length: expected >= 4 (two sides and two eos), got {max_length}")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("tokenizer: expected an eos_token; the pairwise template needs it")
    if n == 0:
        return []
    lhs = tokenizer([p + a for p, a in zip(prompts, firsts, strict=True)], add_special_tokens=False)
    rhs = tokenizer(list(seconds), add_special_tokens=False)
    keep = max_length - 2
    out = []
    for a, b in zip(lhs["input_ids"], rhs["input_ids"], strict=True):
        if len(a) + len(b) > keep:
            b_keep = min(len(b), max(keep // 2, keep - len(a)))
            a, b = a[len(a) - (keep - b_keep) :], b[len(b) - b_keep :]
        out.append([*a, eos, *b, eos])
    return out


class PairwisePreferenceModel:
    """P(y ≻ y' | x) from a one-logit sequence classifier reading x, y, y' (template v1).

    Args:
        model: a sequence-classification model with one label (moved to ``device``).
        tokenizer: its tokenizer (with an eos token).
        max_length: longest input in tokens (both sides and both eos); default: the model's
            ``max_position_embeddings`` (and the tokenizer's limit).
        device: where to run; defaults to the model's current device.
        name: a label for logs and reports.
    """

    kind = PAIRWISE_KIND
    version = PAIRWISE_TEMPLATE_VERSION

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        *,
        max_length: int | None = None,
        device: str | torch.device | None = None,
        name: str | None = None,
    ):
        check_vocabulary(tokenizer, model)
        if tokenizer.eos_token_id is None:
            raise ValueError("tokenizer: expected an eos_token; the pairwise template needs it")
        self.model = model if device is None else model.to(device)
        self.tokenizer = tokenizer
        self.max_length = (
            max_length if max_length is not None else default_max_length(tokenizer, model)
        )
        self.name = name or f"pairwise:{type(model).__name__}"
        pad = tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else tokenizer.eos_token_id

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        *,
        device: str | torch.device = "cpu",
        max_length: int | None = None,
    ) -> PairwisePreferenceModel:
        """Load a model that ``train_reward_model`` saved with objective ``pairwise``
        (safetensors, checksums verified; ValueError naming the directory otherwise)."""
        if not is_pairwise_model(path):
            raise ValueError(
                f"{path}: not a pairwise preference model (its goodhart_rm.json has no "
                f"kind: {PAIRWISE_KIND}); train one with goodhart train-rm --objective pairwise"
            )
        info = saved_info(path)
        saved = str(info.get("pairwise_template"))
        if saved != PAIRWISE_TEMPLATE_VERSION:
            raise ValueError(
                f"{path}: trained with pairwise template version {saved}, this version reads "
                f"version {PAIRWISE_TEMPLATE_VERSION}; retrain it"
            )
        tokenizer, model = load_sequence_classifier(path)
        if model.config.num_labels != 1:
            raise ValueError(f"{path}: expected num_labels=1, got {model.config.num_labels}")
        if max_length is None and info.get("max_length") is not None:
            max_length = int(info["max_length"])
        return cls(model, tokenizer, max_length=max_length, device=device, name=str(Path(path)))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def input_ids(
        self, prompts: Sequence[str], firsts: Sequence[str], seconds: Sequence[str]
    ) -> list[list[int]]:
        """The token ids this model reads for each (prompt, first, second)."""
        return pairwise_input_ids(self.tokenizer, prompts, firsts, seconds, self.max_length)

    def logits(
        self,
        prompts: Sequence[str],
        firsts: Sequence[str],
        seconds: Sequence[str],
        *,
        batch_size: int = 64,
    ) -> Tensor:
        """f(x, first, second) of each row. Shape: (B,), float32, CPU."""
        ids = self.input_ids(prompts, firsts, seconds)
        return score_token_ids(self.model, ids, self.pad_token_id, batch_size=batch_size)

    def preference(
        self,
        prompts: Sequence[str],
        completions_a: Sequence[str],
        completions_b: Sequence[str],
        *,
        batch_size: int = 64,
    ) -> Tensor:
        """P(a ≻ b | x) = σ((f(x, a, b) − f(x, b, a)) / 2) of each row, both orders scored in
        one batch (``core.pairwise.pairwise_preference``). Shape: (B,), float32, CPU."""
        n = len(prompts)
        prompts = list(prompts)
        f = self.logits(
            prompts + prompts,
            list(completions_a) + list(completions_b),
            list(completions_b) + list(completions_a),
            batch_size=batch_size,
        )
        return pairwise_preference(f[:n], f[n:])

    def preference_matrix(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        group_size: int,
        opponents: Sequence[str] | None = None,
        opp_group_size: int | None = None,
        *,
        batch_size: int = 64,
    ) -> Tensor:
        """P[b, i, j] = P(y_{b,i} ≻ y'_{b,j} | x_b) for each prompt's group against its opponents.

        Without ``opponents``, the group against itself (self-play): only the G(G − 1)/2 pairs
        i < j are scored, P[b, j, i] = 1 − P[b, i, j] (antisymmetry) and P[b, i, i] = 1/2.

        Args:
            prompts: one per group. Shape: (B,)
            completions: G contiguous rows per prompt. Shape: (B·G,)
            group_size: G.
            opponents: G' contiguous rows per prompt, or None (self-play). Shape: (B·G',)
            opp_group_size: G' (required with ``opponents``).

        Returns:
            P, float64. Shape: (B, G, G'), G' = G for self-play.
        """
        B, G = len(prompts), int(group_size)
        if G < 1 or len(completions) != B * G:
            raise ValueError(
                f"completions: expected {B} prompts x group_size {G} rows, got {len(completions)}"
            )
        if opponents is None:
            rows = [(b, i, j) for b in range(B) for i in range(G) for j in range(i + 1, G)]
            p = self.preference(
                [prompts[b] for b, _, _ in rows],
                [completions[b * G + i] for b, i, _ in rows],
                [completions[b * G + j] for b, _, j in rows],
                batch_size=batch_size,
            ).double()
            out = torch.full((B, G, G), 0.5, dtype=torch.float64)
            for (b, i, j), p_ij in zip(rows, p.tolist(), strict=True):
                out[b, i, j], out[b, j, i] = p_ij, 1.0 - p_ij
            return out
        Gp = opp_group_size
        if Gp is None or len(opponents) != B * Gp:
            raise ValueError(
                f"opponents: expected {B} prompts x opp_group_size rows; got {len(opponents)} "
                f"rows with opp_group_size={opp_group_size}"
            )
        rows = [(b, i, j) for b in range(B) for i in range(G) for j in range(Gp)]
        p = self.preference(
            [prompts[b] for b, _, _ in rows],
            [completions[b * G + i] for b, i, _ in rows],
            [opponents[b * Gp + j] for b, _, j in rows],
            batch_size=batch_size,
        )
        return p.double().reshape(B, G, Gp)

    def __repr__(self) -> str:
        return f"PairwisePreferenceModel(name={self.name!r}, max_length={self.max_length})"
