"""Preference data from a policy and a gold reward: sample two completions per prompt,
label each pair with the gold reward, then add label noise that can be audited.

Label noise follows Coste et al. 2023 (arXiv 2310.02743): each label is flipped
independently with probability ``noise`` (their reference code re-draws every other label
uniformly at random, which flips a quarter of them on average). The number of flipped
labels is therefore Binomial(n, noise), not exactly round(noise · n); ``meta["flipped"]``
records which ones, so the realised rate can be audited and the clean labels recovered
(:meth:`PreferencePair.clean`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch

from goodhartlab.data.schema import CompletionPair, PreferencePair
from goodhartlab.models.generation import sample_completions

#: A gold (or any) reward: ``score(prompts, completions) -> Tensor[B]``.
RewardFn = Callable[[list[str], list[str]], torch.Tensor]

LabelRule = Literal["argmax", "bradley_terry"]


def sample_pairs(
    policy,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = False,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[CompletionPair]:
    """Two completions per prompt from ``policy``: unlabelled pairs, in prompt order.

    Sampling goes through :func:`goodhartlab.models.generation.sample_completions`
    (deterministic for a seed; ``on_batch(pairs_sampled, pairs)`` after each batch). Pairs get ids ``0 .. len(prompts) - 1`` and
    ``meta["sampling"]`` records the sampling settings. Identical completions are kept
    (the gold labels them as a tie).
    """
    prompts = list(prompts)
    completions = sample_completions(
        policy,
        tokenizer,
        prompts,
        2,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        batch_size=batch_size,
        device=device,
        progress=progress,
        on_batch=on_batch,
    )
    sampling = {
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "seed": seed,
    }
    return [
        CompletionPair(prompt=p, completion_a=a, completion_b=b, id=i, meta={"sampling": sampling})
        for i, (p, (a, b)) in enumerate(zip(prompts, completions, strict=True))
    ]


def _gold_scores(gold: RewardFn, prompts: list[str], completions: list[str]) -> np.ndarray:
    scores = gold(prompts, completions)
    scores = torch.as_tensor(scores).detach().to("cpu", torch.float64)
    if scores.shape != (len(prompts),):
        raise ValueError(
            f"gold reward: expected a tensor of shape ({len(prompts)},), got {tuple(scores.shape)}"
        )
    if not torch.isfinite(scores).all():
        bad = int((~torch.isfinite(scores)).nonzero()[0])
        raise ValueError(
            f"gold reward: expected finite scores, got {scores[bad].item()} for item {bad}"
        )
    return scores.numpy()


def label_with_gold(
    pairs: Sequence[CompletionPair | PreferencePair],
    gold: RewardFn,
    *,
    rule: LabelRule = "argmax",
    noise: float = 0.0,
    seed: int = 0,
) -> list[PreferencePair]:
    """Label pairs with a gold reward, then flip each label with probability ``noise``.

    With g_a, g_b the gold rewards of the two completions:

    - ``"argmax"``: a is chosen iff g_a > g_b; ties (g_a = g_b) are broken by a fair coin
      and recorded as ``meta["tie"] = True``.
    - ``"bradley_terry"``: a is chosen with probability σ(g_a − g_b) (the Bradley-Terry
      model of human raters, as in Gao et al. 2023, arXiv 2210.10760).

    Then each label is flipped independently with probability ``noise`` (Coste et al. 2023:
    "25 % label noise" is ``noise=0.25``), recorded in ``meta["flipped"]``. ``gold_chosen``
    / ``gold_rejected`` are the gold rewards of the texts finally in those slots, so a
    flipped argmax pair has ``gold_chosen <= gold_rejected``.

    Args:
        pairs: unlabelled pairs (``completion_a``, ``completion_b``); PreferencePairs are
            relabelled with ``chosen`` as a and ``rejected`` as b.
        gold: ``score(prompts, completions) -> Tensor[B]``; called once on all 2B texts. Its
            ``name`` and ``version`` attributes, if any, are recorded in ``meta``.
        rule: ``"argmax"`` or ``"bradley_terry"``.
        noise: flip probability in [0, 1].
        seed: seeds tie-breaks, Bradley-Terry draws and flips; same seed, same labels.

    Returns:
        One PreferencePair per input pair, in order, with ``meta`` holding the input meta
        plus ``rule``, ``noise``, ``flipped``, ``tie``, ``gold_name``, ``gold_version``.
    """
    if rule not in ("argmax", "bradley_terry"):
        raise ValueError(f"rule: expected 'argmax' or 'bradley_terry', got {rule!r}")
    if not (isinstance(noise, int | float) and 0.0 <= noise <= 1.0):
        raise ValueError(f"noise: expected a probability in [0, 1], got {noise!r}")
    pairs = list(pairs)
    if not pairs:
        return []
    prompts, texts_a, texts_b = [], [], []
    for p in pairs:
        if isinstance(p, CompletionPair):
            a, b = p.completion_a, p.completion_b
        elif isinstance(p, PreferencePair):
            a, b = p.chosen, p.rejected
        else:
            raise ValueError(
                f"pairs: expected CompletionPair or PreferencePair, got {type(p).__name__}"
            )
        prompts.append(p.prompt)
        texts_a.append(a)
        texts_b.append(b)
    n = len(pairs)
    g = _gold_scores(gold, prompts + prompts, texts_a + texts_b)
    g_a, g_b = g[:n], g[n:]

    # Draw every random array regardless of rule / noise, so that a seed fixes them all.
    rng = np.random.default_rng(seed)
    u_label = rng.random(n)
    u_flip = rng.random(n)

    tie = g_a == g_b
    if rule == "argmax":
        a_chosen = np.where(tie, u_label < 0.5, g_a > g_b)
    else:
        p_a = 1.0 / (1.0 + np.exp(-(g_a - g_b)))
        a_chosen = u_label < p_a
    flipped = u_flip < noise
    a_chosen = a_chosen ^ flipped

    gold_name = getattr(gold, "name", None)
    gold_version = getattr(gold, "version", None)
    out = []
    for i, p in enumerate(pairs):
        ga, gb = float(g_a[i]), float(g_b[i])
        chosen, rejected, g_c, g_r = (
            (texts_a[i], texts_b[i], ga, gb) if a_chosen[i] else (texts_b[i], texts_a[i], gb, ga)
        )
        meta = {
            **p.meta,
            "rule": rule,
            "noise": float(noise),
            "flipped": bool(flipped[i]),
            "tie": bool(tie[i]),
            "gold_name": None if gold_name is None else str(gold_name),
            "gold_version": None if gold_version is None else str(gold_version),
        }
        out.append(
            PreferencePair(
                prompt=p.prompt,
                chosen=chosen,
                rejected=rejected,
                id=p.id,
                subset=getattr(p, "subset", None),
                gold_chosen=g_c,
                gold_rejected=g_r,
                meta=meta,
            )
        )
    return out


def flip_rate(pairs: Sequence[PreferencePair]) -> float:
    """Fraction of pairs whose label noise flipped them (``meta["flipped"]``).

    Raises ValueError if a pair does not record ``flipped``.
    """
    flags = [p.flipped for p in pairs]
    if not flags or any(f is None for f in flags):
        raise ValueError("pairs: expected every pair to record meta['flipped']")
    return sum(flags) / len(flags)
