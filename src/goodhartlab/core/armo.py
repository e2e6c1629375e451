"""ArmoRM: multi-objective reward regression, verbosity decorrelation and a gating network.

Wang et al. 2024, "Interpretable Preferences via Multi-Objective Reward Modeling and
Mixture-of-Experts", arXiv 2406.12845 (reference code: RLHFlow/RLHF-Reward-Modeling,
``armo-rm/stage-1_train.py`` and ``armo-rm/stage-2_train.py``). Two stages:

1. regression heads r = W h + b predict K absolute attribute ratings from the hidden state h
   of the response's last token (the paper: ridge regression on frozen embeddings; we train
   the backbone with the heads, MSE on standardized targets);
2. a gating network g(x) = β softmax(MLP(h_x) / τ) on the hidden state h_x of the prompt's last
   token mixes the verbosity-decorrelated attribute rewards into one score
   s = Σ_k g_k(x) r'_k, trained with Bradley-Terry on preference pairs.

The functions here are the formulas; ``rewards.armo_head`` holds the module that computes them
inside a saved reward model, ``train.rm_armo`` the two training stages. Registered in
``RM_OBJECTIVES`` as ``armo`` (meta ``multi_objective``: ``train.rm`` hands it to
``train.rm_armo``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from goodhartlab.registry import RM_OBJECTIVES

ARMO_PAPER = (
    "Wang et al. 2024, 'Interpretable Preferences via Multi-Objective Reward Modeling and "
    "Mixture-of-Experts', arXiv 2406.12845"
)


def attribute_regression_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Stage 1: mean squared error of the attribute heads, averaged over attributes.

        L_reg = 1/(K B) Σ_k Σ_b (r̂_{k,b} − y_{k,b})²

    Wang et al. 2024 (arXiv 2406.12845, sec. 3.1, eq. 1) regress each attribute's rating with a
    squared loss (ridge on frozen embeddings in the reference code's stage 1). Targets are
    standardized per attribute before the loss, so that no attribute's units dominate.

    Args:
        pred: predicted (standardized) attribute values. Shape: (K, B)
        target: their noisy (standardized) targets. Shape: (K, B)
    """
    assert pred.ndim == 2, pred.shape
    assert target.shape == pred.shape, (pred.shape, target.shape)
    return F.mse_loss(pred, target.to(pred.dtype))


def verbosity_penalties(r_attributes: Tensor, r_verbosity: Tensor) -> Tensor:
    """λ_k that makes each decorrelated attribute uncorrelated with the verbosity reward.

        λ_k = Cov(r_k, r_v) / Var(r_v)   ⇒   Corr(r_k − λ_k r_v, r_v) = 0

    Wang et al. 2024 (arXiv 2406.12845, sec. 3.2): "r'_k = r_k − λ_k r_verbose, λ_k chosen so
    that Corr(r'_k, r_verbose) = 0" on a reference distribution (the preference data's
    responses, as the reference code's default). The reference code searches λ_k on a grid
    (0 ... 0.95) until the Spearman correlation falls below 0.028; here λ_k is the exact
    least-squares slope, which zeroes the Pearson correlation. Population moments (1/B).

    Args:
        r_attributes: attribute rewards of the reference responses. Shape: (K, B)
        r_verbosity: verbosity reward of the same responses. Shape: (B,)

    Returns:
        λ. Shape: (K,)
    """
    assert r_attributes.ndim == 2, r_attributes.shape
    assert r_verbosity.ndim == 1 and r_verbosity.shape[0] == r_attributes.shape[1], (
        r_attributes.shape,
        r_verbosity.shape,
    )
    v = r_verbosity - r_verbosity.mean()
    var = (v * v).mean()
    if not var > 0:
        raise ValueError("verbosity: the verbosity reward is constant on the reference responses")
    a = r_attributes - r_attributes.mean(dim=1, keepdim=True)
    return (a * v).mean(dim=1) / var


def decorrelate_verbosity(r_attributes: Tensor, r_verbosity: Tensor, penalties: Tensor) -> Tensor:
    """Attribute rewards with their verbosity component removed: r'_k = r_k − λ_k r_v.

    Wang et al. 2024 (arXiv 2406.12845, sec. 3.2); the reference code's
    ``reward_transform_matrix`` (the identity minus λ in the verbosity row) applied as a product.

    Args:
        r_attributes: Shape: (K, B)
        r_verbosity: Shape: (B,)
        penalties: λ (``verbosity_penalties``). Shape: (K,)

    Returns:
        r'. Shape: (K, B)
    """
    assert r_attributes.ndim == 2, r_attributes.shape
    assert r_verbosity.ndim == 1, r_verbosity.shape
    assert penalties.shape == (r_attributes.shape[0],), (penalties.shape, r_attributes.shape)
    return r_attributes - penalties.unsqueeze(1) * r_verbosity.unsqueeze(0)


def gating_weights(logits: Tensor, temperature: float, logit_scale: Tensor) -> Tensor:
    """The gating network's output: a scaled softmax over the attributes.

        g(x) = β · softmax(z(x) / τ)

    Wang et al. 2024 (arXiv 2406.12845, sec. 3.3, eq. 3; the reference code's
    ``GatingNetwork.forward``, τ = 10, β = ``logit_scale`` a learned scalar initialised to 1):
    the softmax makes the weights non-negative and sum to 1, β restores the scale the
    Bradley-Terry loss needs.

    Args:
        logits: z(x), the MLP's outputs on the prompts. Shape: (B, K)
        temperature: τ > 0.
        logit_scale: β. Shape: () or (1,)

    Returns:
        g. Shape: (B, K); each row sums to β.
    """
    assert logits.ndim == 2, logits.shape
    if not temperature > 0:
        raise ValueError(f"armo_temperature: expected a value > 0, got {temperature}")
    return F.softmax(logits / temperature, dim=1) * logit_scale.reshape(())


def gated_score(weights: Tensor, r_decorrelated: Tensor) -> Tensor:
    """The mixture of experts' score: s = Σ_k g_k(x) r'_k.

    Wang et al. 2024 (arXiv 2406.12845, sec. 3.3, eq. 4).

    Args:
        weights: g(x) (``gating_weights``). Shape: (B, K)
        r_decorrelated: r' (``decorrelate_verbosity``). Shape: (K, B)

    Returns:
        Scores. Shape: (B,)
    """
    assert weights.ndim == 2, weights.shape
    assert r_decorrelated.shape == weights.T.shape, (weights.shape, r_decorrelated.shape)
    return (weights * r_decorrelated.T).sum(dim=1)


def armo_gating_loss(
    r_chosen: Tensor, r_rejected: Tensor, *, margin: Tensor | None = None
) -> tuple[Tensor, dict[str, Tensor]]:
    """Stage 2: Bradley-Terry on the gated scores, L = −mean log σ(s_c − s_r).

    Wang et al. 2024 (arXiv 2406.12845, sec. 3.3, eq. 5; the reference code's
    ``BCEWithLogitsLoss(s_c − s_r, 1)``). Only the gating network and β learn in this stage;
    the backbone and the regression heads are frozen (``train.rm_armo``).

    Args:
        r_chosen: gated scores s of the preferred completions. Shape: (B,)
        r_rejected: the same for the other completions. Shape: (B,)
        margin: ignored (accepted so that the training loop can pass it to any objective).

    Returns:
        ``(loss, stats)``: ``accuracy`` (s_c > s_r strictly), ``margin_mean``, ``reward_mean``.
    """
    assert r_chosen.ndim == 1, r_chosen.shape
    assert r_rejected.shape == r_chosen.shape, (r_chosen.shape, r_rejected.shape)
    del margin
    gap = r_chosen - r_rejected
    loss = F.softplus(-gap).mean()
    with torch.no_grad():
        stats = {
            "accuracy": (gap > 0).float().mean(),
            "margin_mean": gap.mean(),
            "reward_mean": torch.cat([r_chosen, r_rejected]).mean(),
        }
    return loss, stats


RM_OBJECTIVES.register(
    "armo",
    armo_gating_loss,
    description="ArmoRM: regression heads on the gold's attributes (noisy), verbosity "
    "decorrelation, then a gating network on the prompt mixing them, trained Bradley-Terry "
    "(toy_text attributes; RMTrainConfig armo_* fields).",
    paper=ARMO_PAPER,
    version="1",
    multi_objective=True,
)
