"""REFORM's adversarial selection (issue 14 item 6), as a pure function of proxy scores.

REFORM ("Reward Models Can Improve Themselves: Reward-Guided Adversarial Failure Mode
Discovery for Robust Reward Modeling", 2025) lets the reward model guide the generation of
responses it scores falsely, labels them, adds them to the training pairs and retrains. The
paper's search is reward-guided controlled decoding; here it is its simplest instance,
reward-guided best-of-K selection over K base-policy samples per training prompt (the search
``train.rm_reform`` runs, then relabels with the training pairs' own noisy gold labeler).

Registered in ``RM_OBJECTIVES`` as ``reform``: its loss is Bradley-Terry's (the variant
changes the data, not the loss); meta ``adversarial_search`` sends ``goodhart train-rm`` to
``train.rm_reform``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from goodhartlab.core.losses import bradley_terry_loss
from goodhartlab.registry import RM_OBJECTIVES


def reform_selection(proxy: Tensor, num_pairs: int) -> tuple[Tensor, Tensor, Tensor]:
    """Pick the prompts whose best proxy-scored sample stands out most, and a normal sample.

    For prompt p with proxy scores r_p1..r_pK of K samples, sorted r_p(1) ≥ ... ≥ r_p(K):

        adversarial a_p = argmax_k r_pk                       (reward-guided search)
        normal      n_p = the sample of rank ⌊(K − 1)/2⌋ + 1 (the upper median)
        score       s_p = r_p(1) − r_p(⌊(K−1)/2⌋+1)         (how far the proxy lifts a_p
                                                              above a typical sample)

    and the ``num_pairs`` prompts of largest s_p are kept (ties: lower prompt index first).
    Under the proxy, a_p is the completion best-of-K would return; when the proxy
    over-scores, a_p is where it does so most, so its pair with n_p, once labelled by the
    gold, is the pair that corrects the proxy (REFORM's falsely scored response).

    Args:
        proxy: proxy scores. Shape: (P, K), K ≥ 2.
        num_pairs: how many prompts to keep, 1 ≤ num_pairs ≤ P.

    Returns:
        ``(prompt_idx, adversarial_idx, normal_idx)``, each Shape: (num_pairs,), in order of
        decreasing s_p; the sample indices index the second axis of ``proxy``.

    >>> p, a, n = reform_selection(torch.tensor([[0.0, 1.0, 2.0], [5.0, 0.0, 0.0]]), 1)
    >>> p.tolist(), a.tolist(), n.tolist()
    ([1], [0], [1])
    """
    if proxy.ndim != 2 or proxy.shape[1] < 2:
        raise ValueError(f"proxy: expected shape (P, K) with K >= 2, got {tuple(proxy.shape)}")
    if not 1 <= num_pairs <= proxy.shape[0]:
        raise ValueError(f"reform_pairs: expected 1..{proxy.shape[0]} pairs, got {num_pairs}")
    k = proxy.shape[1]
    order = torch.sort(proxy.double(), dim=1, descending=True, stable=True).indices  # (P, K)
    adversarial = order[:, 0]
    normal = order[:, (k - 1) // 2]
    rows = torch.arange(proxy.shape[0])
    score = proxy.double()[rows, adversarial] - proxy.double()[rows, normal]
    keep = torch.sort(score, descending=True, stable=True).indices[:num_pairs]
    return keep, adversarial[keep], normal[keep]


def reform_loss(
    r_chosen: Tensor,
    r_rejected: Tensor,
    *,
    margin: Tensor | None = None,
    label_smoothing: float = 0.0,
    center_coef: float = 0.0,
    reform_rounds: int = 1,
    reform_pairs: int = 256,
    reform_prompts: int = 256,
    reform_samples: int = 16,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Bradley-Terry's loss (``bradley_terry_loss``) on the augmented pairs; the reform_*
    search parameters act before training, in ``train.rm_reform``, and are ignored here."""
    del reform_rounds, reform_pairs, reform_prompts, reform_samples
    return bradley_terry_loss(
        r_chosen,
        r_rejected,
        margin=margin,
        label_smoothing=label_smoothing,
        center_coef=center_coef,
    )


RM_OBJECTIVES.register(
    "reform",
    reform_loss,
    paper="REFORM: 'Reward Models Can Improve Themselves: Reward-Guided Adversarial Failure "
    "Mode Discovery for Robust Reward Modeling' (2025); best-of-K search over base samples",
    params={
        "reform_rounds": "search-relabel-retrain rounds",
        "reform_pairs": "adversarial pairs added per round (extra gold labels)",
        "reform_prompts": "training prompts searched per round",
        "reform_samples": "K, base-policy samples per searched prompt",
        "label_smoothing": "ε of the Bradley-Terry loss",
        "center_coef": "c of the Bradley-Terry centering term",
    },
    adversarial_search=True,
)
