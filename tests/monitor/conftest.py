"""Synthetic run histories for the monitor tests: runs that hack after an onset and runs
that do not, with every input a detector reads (no gold: the labels are the onset)."""

from __future__ import annotations

import numpy as np
import pytest

from goodhartlab.monitor import EvalPoint, RunHistory

WORDS = ["the", "phone", "screen", "is", "nice", "battery", "fast", "and", "cheap", "old"]


def synthetic_run(
    seed: int, hacks: bool, n_points: int = 30, onset: int = 15, b: int = 32
) -> tuple[RunHistory, np.ndarray]:
    """A run and its per-point labels (1 from the onset of hacking on, 0 before / never).

    Every run improves honestly (the members' common signal and the KL grow). From the onset
    a hacking run exploits two of four members (disagreement, proxy above held-out), moves
    the reward model's latents, stuffs a repeated word into the completions (length,
    repetition, distinct-n), sharpens the policy (entropy) and speeds up the KL. Run-level
    rates and noise vary with the seed, so no single fixed threshold fits every run.
    """
    rng = np.random.default_rng(seed)
    kl_rate = rng.uniform(0.05, 0.2)
    noise = rng.uniform(0.2, 0.4)
    direction = rng.normal(size=6)
    direction /= np.linalg.norm(direction)
    points = []
    kl = 0.0
    for k in range(n_points):
        h = max(0, k - onset + 1) if hacks else 0
        kl = kl + kl_rate * (1 + 0.3 * h) if k else 0.0
        honest = rng.normal(size=b) + 0.5 * np.sqrt(kl)
        members = honest + rng.normal(0, noise, size=(4, b))
        members[:2] += 0.25 * h * (1 + rng.random((2, b)))
        lengths = rng.integers(6, 10, size=b)
        texts = []
        for n_words in lengths:
            words = list(rng.choice(WORDS, size=n_words))
            texts.append(" ".join(words + ["great"] * h))
        p_tok = min(0.9, 0.3 + 0.04 * h)
        logp = [
            np.log(np.full(len(t.split()), p_tok)) + rng.normal(0, 0.01, len(t.split())).clip(max=0)
            for t in texts
        ]
        points.append(
            EvalPoint(
                step=10 * k,
                kl=kl,
                r_proxy=members.mean(axis=0),
                r_members=members,
                r_heldout=honest + rng.normal(0, noise, size=b) - 0.1 * h,
                completions=texts,
                logp=logp,
                latents=rng.normal(size=(b, 6)) + 0.4 * h * direction,
                r_groups=members.mean(axis=0).reshape(8, 4) / (1 + 0.3 * h),
            )
        )
    labels = np.array([1 if hacks and k >= onset else 0 for k in range(n_points)])
    return RunHistory(points), labels


@pytest.fixture(scope="session")
def make_run():
    return synthetic_run
