"""A general pairwise preference model P(y ≻ y' | x) and its training loss (objective ``pairwise``).

Nash learning from human feedback (NLHF; Munos et al. 2023, "Nash Learning from Human
Feedback", arXiv 2312.00886) replaces the reward model by a preference model conditioned on
the prompt and BOTH responses, so that it can represent preferences no scalar reward can
(intransitive ones, or ones that depend on what the other response is). Ours reads
``prompt, y, y'`` in one sequence (the template of ``rewards.pairwise``) and outputs one logit
f(x, y, y'); the preference is made antisymmetric by construction,

    P(y ≻ y' | x) = σ( (f(x, y, y') − f(x, y', y)) / 2 ),

so P(y ≻ y' | x) + P(y' ≻ y | x) = 1 and P(y ≻ y | x) = 1/2 for any network f. The logit of
the preference is the average of the logit read in one order and the negated logit read in
the other (reading both orders of a pair, as PairRM does: Jiang, Ren, Lin 2023, "LLM-Blender",
arXiv 2306.02561); the factor 1/2 makes the Bradley-Terry model the special case
f(x, y, y') = r(x, y) − r(x, y') exactly (then P = σ(r(y) − r(y'))), so the two objectives'
logits are on the same scale. Munos et al. train their preference model on pairs of responses
with binary labels and make it symmetric; their exact parametrization (§8 of the paper) was
not available to us, so this form is ours.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from goodhartlab.registry import RM_OBJECTIVES

__all__ = ["pairwise_preference", "pairwise_preference_logit", "pairwise_preference_loss"]


def pairwise_preference_logit(logit_ab: Tensor, logit_ba: Tensor) -> Tensor:
    """The logit of P(a ≻ b): z = (f(x, a, b) − f(x, b, a)) / 2, antisymmetric in (a, b).

    Args:
        logit_ab: the model's logit reading a first, f(x, a, b). Shape: (B,)
        logit_ba: its logit reading b first, f(x, b, a). Shape: (B,)

    Returns:
        z. Shape: (B,)
    """
    assert logit_ab.ndim == 1, logit_ab.shape
    assert logit_ba.shape == logit_ab.shape, (logit_ab.shape, logit_ba.shape)
    return 0.5 * (logit_ab - logit_ba)


def pairwise_preference(logit_ab: Tensor, logit_ba: Tensor) -> Tensor:
    """P(a ≻ b | x) = σ((f(x, a, b) − f(x, b, a)) / 2) (module docstring; Munos et al. 2023,
    arXiv 2312.00886). P(a ≻ b) + P(b ≻ a) = 1; a = b gives exactly 1/2.

    Args:
        logit_ab: f(x, a, b). Shape: (B,)
        logit_ba: f(x, b, a). Shape: (B,)

    Returns:
        P(a ≻ b | x), in (0, 1). Shape: (B,)
    """
    return torch.sigmoid(pairwise_preference_logit(logit_ab, logit_ba))


def pairwise_preference_loss(
    logit_chosen_first: Tensor,
    logit_rejected_first: Tensor,
    *,
    label_smoothing: float = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Binary cross-entropy of the pairwise preference model on labelled pairs, both orders.

    With z_i = (f(x, y_c, y_r) − f(x, y_r, y_c)) / 2 the logit of P(y_c ≻ y_r), each pair is
    presented in both orders, (y_c, y_r) with label 1 and (y_r, y_c) with label 0:

        ℓ_i = ½ [−log P(y_c ≻ y_r)] + ½ [−log (1 − P(y_r ≻ y_c))]
            = ½ [−log σ(z_i)]       + ½ [−log (1 − σ(−z_i))]  =  −log σ(z_i)

    (antisymmetry makes the two orders' terms equal: each forward pass reads both orders
    anyway). With label smoothing ε (the weight of the reversed label):

        ℓ_i = (1 − ε) · softplus(−z_i) + ε · softplus(z_i),   L = mean_i ℓ_i

    The preference model of NLHF (Munos et al. 2023, arXiv 2312.00886) trained as a binary
    classifier of which response is preferred; on a model whose logit is a difference of
    scores it is Bradley-Terry's loss.

    Args:
        logit_chosen_first: f(x, y_c, y_r), the logit reading the labelled chosen first.
            Shape: (B,)
        logit_rejected_first: f(x, y_r, y_c). Shape: (B,)
        label_smoothing: ε in [0, 0.5).

    Returns:
        ``(loss, stats)``: ``accuracy`` (z > 0 strictly, against the given labels),
        ``margin_mean`` (mean z), ``p_chosen`` (mean P(y_c ≻ y_r)), ``order_logit_mean`` (mean
        (f(x, y_c, y_r) + f(x, y_r, y_c)) / 2: the part of the logit the antisymmetry cancels,
        a position bias of the network).
    """
    z = pairwise_preference_logit(logit_chosen_first, logit_rejected_first)
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing: expected a value in [0, 0.5), got {label_smoothing}")
    per_pair = (1.0 - label_smoothing) * F.softplus(-z) + label_smoothing * F.softplus(z)
    loss = per_pair.mean()
    with torch.no_grad():
        stats = {
            "accuracy": (z > 0).float().mean(),
            "margin_mean": z.mean(),
            "p_chosen": torch.sigmoid(z).mean(),
            "order_logit_mean": (0.5 * (logit_chosen_first + logit_rejected_first)).mean(),
        }
    return loss, {k: v.detach() for k, v in stats.items()}


RM_OBJECTIVES.register(
    "pairwise",
    pairwise_preference_loss,
    description="General pairwise preference model P(y ≻ y' | x) = σ((f(x,y,y') − f(x,y',y))/2): "
    "the backbone reads the prompt and both completions (rewards.pairwise's template), binary "
    "cross-entropy on the pairs in both orders; optimized by nash_mp only (no scalar reward).",
    paper="Munos et al. 2023, 'Nash Learning from Human Feedback', arXiv 2312.00886 (preference "
    "model); Jiang et al. 2023, LLM-Blender / PairRM, arXiv 2306.02561 (both orders)",
    params={"label_smoothing": "ε: weight of the reversed label"},
    version="1",
    pairwise=True,
)
