"""Rewards computed by plain Python functions: gold rewards of testbeds, heuristics."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from numbers import Real

import torch
from torch import Tensor


class ProgrammaticReward:
    """A Python function turned into a reward source ``score(prompts, completions) -> Tensor[B]``.

    ``fn(prompt, completion) -> float`` is called per item; with ``batched=True`` it is
    ``fn(prompts, completions) -> sequence of floats`` instead. Every output must be a
    finite real number, and a batched function must return one per item; anything else
    raises ValueError naming the reward, the item and the value.

    ``name`` and ``version`` identify the definition that produced a result (bump the
    version on every change that alters scores); labelling records both in the pair meta.

    >>> length = ProgrammaticReward(lambda p, c: len(c.split()), name="words", version="1")
    >>> length(["q:", "q:"], [" a b", " a"])
    tensor([2., 1.])
    """

    def __init__(
        self,
        fn: Callable[..., float] | Callable[..., Sequence[float]],
        name: str,
        version: str,
        *,
        batched: bool = False,
    ):
        self.fn = fn
        self.name = name
        self.version = str(version)
        self.batched = batched

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> Tensor:
        """Rewards for each (prompt, completion). Shape: (B,), float32."""
        if len(prompts) != len(completions):
            raise ValueError(
                f"{self.name}: prompts and completions: expected the same length, got "
                f"{len(prompts)} and {len(completions)}"
            )
        if self.batched:
            values = list(self.fn(list(prompts), list(completions)))
            if len(values) != len(prompts):
                raise ValueError(
                    f"{self.name}: expected {len(prompts)} rewards (one per item), "
                    f"got {len(values)}"
                )
        else:
            values = [self.fn(p, c) for p, c in zip(prompts, completions, strict=True)]
        for i, v in enumerate(values):
            if isinstance(v, Tensor) and v.numel() == 1:
                v = v.item()
            if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v):
                raise ValueError(
                    f"{self.name}: expected a finite number for item {i} "
                    f"(prompt {prompts[i]!r:.40}, completion {completions[i]!r:.40}), got {v!r}"
                )
            values[i] = float(v)
        return torch.tensor(values, dtype=torch.float32)

    __call__ = score

    def __repr__(self) -> str:
        return f"ProgrammaticReward(name={self.name!r}, version={self.version!r})"
