"""Length bias of a reward model: measured, fitted as a function of length, and disentangled.

- FiMi-RM (Zhao, Cai, Zhu, Sun, Xue, Zhou, Li, Li 2025, "Bias Fitting to Mitigate Length Bias
  of Reward Model in RLHF", arXiv 2505.12843): a light fitting model f(len) — a sinusoidal
  length encoding, a two-block residual MLP and a linear head — is fitted to the reward
  model's scores with L_fit = −|ρ(r, f)| + MSE(r, f); the debiased reward is r − f(len).
  ``fit_length_bias`` / ``LengthBiasFit`` here; the shaping ``length_fit``
  (:mod:`goodhartlab.core.shaping`) optimizes the residual.
- ODIN (Chen, Zhu, Soselia, Zhou, Goldstein, Huang, Shoeybi, Catanzaro 2024, "ODIN:
  Disentangled Reward Mitigates Hacking in RLHF", arXiv 2402.07319): a reward model with two
  linear heads on one hidden state, a quality head and a length head, trained with
  Bradley-Terry on their sum, a correlation loss that ties the length head to length and
  unties the quality head from it, and an orthogonality loss on the two heads' weights. At RL
  time only the quality head scores. ``odin_loss`` here (registered as the RM objective
  ``odin``).

Length is counted in whitespace-separated words of the completion (``completion_lengths``): the
pipeline is text-level; the papers count tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from goodhartlab.registry import RM_OBJECTIVES

__all__ = [
    "LengthBiasFit",
    "completion_lengths",
    "fit_length_bias",
    "length_bias_fit_loss",
    "length_encoding",
    "odin_loss",
    "pearson",
]

FIMI_PAPER = (
    "Zhao et al. 2025, 'Bias Fitting to Mitigate Length Bias of Reward Model in RLHF', "
    "arXiv 2505.12843"
)
ODIN_PAPER = (
    "Chen et al. 2024, 'ODIN: Disentangled Reward Mitigates Hacking in RLHF', arXiv 2402.07319"
)


def completion_lengths(completions: Sequence[str]) -> Tensor:
    """Length of each completion in whitespace-separated words. Shape: (B,), float64.

    >>> completion_lengths(["the screen is great .", ""]).tolist()
    [5.0, 0.0]
    """
    return torch.tensor([float(len(c.split())) for c in completions], dtype=torch.float64)


def pearson(x: Tensor, y: Tensor, eps: float = 1e-8) -> Tensor:
    """Pearson correlation of two samples, differentiable.

        ρ(x, y) = Σ (x − x̄)(y − ȳ) / sqrt(Σ (x − x̄)² · Σ (y − ȳ)² + ε)

    ε keeps a constant sample finite (ρ = 0 there).

    Args:
        x: Shape: (N,)
        y: Shape: (N,)

    Returns:
        Shape: ().
    """
    assert x.ndim == 1 and y.shape == x.shape, (x.shape, y.shape)
    xc, yc = x - x.mean(), y - y.mean()
    return (xc * yc).sum() / torch.sqrt(xc.square().sum() * yc.square().sum() + eps)


# ---------------------------------------------------------------------------------------------
# FiMi-RM: the length bias as a learned function of length
# ---------------------------------------------------------------------------------------------


def length_encoding(lengths: Tensor, dim: int) -> Tensor:
    """Sinusoidal length encoding, as the Transformer's positional encoding of the length.

        LE(ℓ)_j       = sin(ℓ / 10000^{2j/d}),   j = 0 .. d/2 − 1
        LE(ℓ)_{d/2+j} = cos(ℓ / 10000^{2j/d})

    (Zhao et al. 2025, arXiv 2505.12843, the fitting model's first layer: sines then cosines
    concatenated.)

    Args:
        lengths: ℓ of each response. Shape: (B,)
        dim: d, even and ≥ 2.

    Returns:
        Shape: (B, d), the dtype of ``lengths`` (float64 for integers).
    """
    assert lengths.ndim == 1, lengths.shape
    if dim < 2 or dim % 2:
        raise ValueError(f"dim: expected an even number >= 2, got {dim}")
    ell = lengths if lengths.is_floating_point() else lengths.to(torch.float64)
    j = torch.arange(dim // 2, dtype=ell.dtype, device=ell.device)
    angle = ell.unsqueeze(1) / torch.pow(torch.tensor(10000.0, dtype=ell.dtype), 2 * j / dim)
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)


def length_bias_fit_loss(r: Tensor, r_hat: Tensor) -> Tensor:
    """The fitting model's loss: L_fit = −|ρ(r, r̂)| + (1/N) Σ (r − r̂)².

    Zhao et al. 2025 (arXiv 2505.12843), with r the reward model's (detached) scores and r̂ the
    fitting model's prediction from length alone: the Pearson term asks r̂ to follow r's shape,
    the MSE term its scale and offset.

    Args:
        r: reward-model scores (targets, no gradient needed). Shape: (N,)
        r_hat: fitted values f(ℓ). Shape: (N,)

    Returns:
        Shape: ().
    """
    assert r.ndim == 1 and r_hat.shape == r.shape, (r.shape, r_hat.shape)
    r = r.detach().to(r_hat.dtype)
    return -pearson(r, r_hat).abs() + F.mse_loss(r_hat, r)


class _ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.fc2(F.relu(self.fc1(x))))


class LengthBiasFit(nn.Module):
    """FiMi-RM's fitting model f(ℓ) = W_reg · ResNet(LE(ℓ)) + b_reg.

    LE is :func:`length_encoding` (d = ``dim``), projected to ``hidden`` units, then two
    residual blocks x ↦ relu(x + W₂ relu(W₁ x)) and a linear regression head (Zhao et al. 2025,
    arXiv 2505.12843: "a length encoding layer, a two-layer ResNet and a linear regression
    head"; the input projection is ours, so the residual width need not equal d).

    Outside the range of lengths it was fitted on, ``[lo, hi]``, f is held constant at the
    nearest end (ours): a sinusoidal encoding extrapolates arbitrarily, and an RL policy that
    grows past every base-policy sample would be paid by whatever f does there.
    """

    def __init__(self, dim: int = 16, hidden: int = 32):
        super().__init__()
        self.dim = dim
        self.proj = nn.Linear(dim, hidden)
        self.blocks = nn.Sequential(_ResidualBlock(hidden), _ResidualBlock(hidden))
        self.head = nn.Linear(hidden, 1)
        self.lo, self.hi = -math.inf, math.inf

    def forward(self, lengths: Tensor) -> Tensor:
        """f(ℓ). Shape: (B,) -> (B,)."""
        assert lengths.ndim == 1, lengths.shape
        ell = lengths.to(self.head.weight.dtype).clamp(self.lo, self.hi)
        x = length_encoding(ell, self.dim)
        return self.head(self.blocks(F.relu(self.proj(x)))).squeeze(1)


@dataclass(frozen=True)
class LengthBiasReport:
    """How strongly a reward follows length, before and after the fit (on the fit's sample)."""

    n: int
    """Samples fitted."""
    pearson_before: float
    """ρ(r, ℓ)."""
    pearson_after: float
    """ρ(r − f(ℓ), ℓ)."""
    fit_pearson: float
    """ρ(r, f(ℓ)): how much of r the length explains (its square: the R² of a linear map)."""
    curve: dict[int, float]
    """f at every integer length from the shortest to the longest sample."""
    mean_by_length: dict[int, float]
    """The mean of r at each length seen."""


def fit_length_bias(
    lengths: Tensor,
    r: Tensor,
    *,
    dim: int = 16,
    hidden: int = 32,
    steps: int = 500,
    lr: float = 1e-2,
    seed: int = 0,
) -> tuple[LengthBiasFit, LengthBiasReport]:
    """Fit FiMi-RM's f(ℓ) to rewards r by full-batch Adam on L_fit (``length_bias_fit_loss``).

    r is standardized for the fit (f = μ_r + σ_r · g, g fitted to the z-scores), and the first
    fifth of the steps minimize the MSE alone (ours, not the paper's: from a near-constant
    start, −|ρ| + MSE has a local minimum at r̂ ∝ −r of tiny scale).

    Deterministic: the weights are drawn from a generator seeded with ``seed`` (the global RNG
    is left alone) and every step sees the whole sample. Lengths are divided by nothing: the
    encoding's lowest frequency (1 rad per word) already resolves one word.

    Args:
        lengths: ℓ of each sampled completion. Shape: (N,)
        r: the reward of each. Shape: (N,)
        dim, hidden: the fitting model's sizes (``LengthBiasFit``).
        steps: Adam steps; lr: its learning rate.
        seed: seeds the initial weights.

    Returns:
        ``(f, report)``, f in eval mode, float64, without gradients.
    """
    assert lengths.ndim == 1 and r.shape == lengths.shape, (lengths.shape, r.shape)
    if lengths.numel() < 2:
        raise ValueError(f"fit_length_bias: expected at least 2 samples, got {lengths.numel()}")
    if steps < 1:
        raise ValueError(f"steps: expected >= 1, got {steps}")
    ell = lengths.detach().to(torch.float64).cpu()
    target = r.detach().to(torch.float64).cpu()
    # Fitted in z-units, mapped back by the head, so that the loss does not depend on the
    # proxy's scale.
    mu, sigma = target.mean(), target.std(correction=0).clamp_min(1e-12)
    z = (target - mu) / sigma
    with torch.random.fork_rng(devices=[]):  # nn.Linear's default init draws globally
        model = LengthBiasFit(dim, hidden).to(torch.float64)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            bound = 1.0 / math.sqrt(p.shape[-1]) if p.ndim == 2 else 0.1
            p.copy_((torch.rand(p.shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    warmup = steps // 5
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        r_hat = model(ell)
        # MSE alone first: from a near-constant start, −|ρ| is as happy with r̂ ∝ −r (|ρ| ≈ 1
        # at a tiny scale, MSE ≈ 1), a local minimum that full L_fit does not leave.
        loss = F.mse_loss(r_hat, z) if step < warmup else length_bias_fit_loss(z, r_hat)
        loss.backward()
        opt.step()
    with torch.no_grad():  # f = μ + σ · g, folded into the regression head
        model.head.weight.mul_(sigma)
        model.head.bias.mul_(sigma).add_(mu)
    model.lo, model.hi = float(ell.min()), float(ell.max())
    model.eval().requires_grad_(False)
    with torch.no_grad():
        fitted = model(ell)
        grid = torch.arange(int(ell.min()), int(ell.max()) + 1, dtype=torch.float64)
        by_len = {int(v): float(target[ell == v].mean()) for v in torch.unique(ell).tolist()}
        report = LengthBiasReport(
            n=int(ell.numel()),
            pearson_before=float(pearson(target, ell)),
            pearson_after=float(pearson(target - fitted, ell)),
            fit_pearson=float(pearson(target, fitted)),
            curve={int(g): float(v) for g, v in zip(grid, model(grid), strict=True)},
            mean_by_length=by_len,
        )
    return model, report


# ---------------------------------------------------------------------------------------------
# ODIN: a quality head and a length head
# ---------------------------------------------------------------------------------------------


def odin_loss(
    r_chosen: Tensor,
    r_rejected: Tensor,
    *,
    length_reward_chosen: Tensor,
    length_reward_rejected: Tensor,
    length_chosen: Tensor,
    length_rejected: Tensor,
    w_quality: Tensor,
    w_length: Tensor,
    margin: Tensor | None = None,
    length_coef: float = 1.0,
    ortho_coef: float = 1.0,
    length_sign: float = 1.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """ODIN's disentangled reward loss: Bradley-Terry on r_Q + r_L, length-correlation and
    orthogonality terms.

    With r = r_Q + r_L on both responses of each pair, ρ the Pearson correlation over the 2B
    responses of the batch and ℓ their lengths,

        L_BT = −mean log σ(r_c − r_r)
        L_L  = |ρ(r_Q, ℓ)| − s · ρ(r_L, ℓ)
        L_O  = |W_Q · W_L|
        L    = L_BT + λ_L L_L + λ_O L_O

    Chen et al. 2024, arXiv 2402.07319, sec. 4 (eq. 3–5): the length head is asked to carry the
    length (ρ → 1), the quality head to carry none (|ρ| → 0), and their weight vectors to be
    orthogonal (the paper adds the orthogonality loss to keep the two heads on disjoint
    features; both heads are linear on the same last hidden state, no bias). At RL time only
    r_Q scores. The sign s is ours: the paper's s = +1 lets the length head carry a bias
    towards longer responses; where the labels prefer shorter ones (toy_text), s = −1 lets it
    carry that one (with s = +1 the length head must grow with length while Bradley-Terry wants
    the shorter side, and the preference has nowhere to go).

    Args:
        r_chosen, r_rejected: the quality head's r_Q. Shape: (B,)
        length_reward_chosen, length_reward_rejected: the length head's r_L. Shape: (B,)
        length_chosen, length_rejected: ℓ of each response. Shape: (B,)
        w_quality: W_Q, the quality head's weights. Shape: (H,)
        w_length: W_L, the length head's weights. Shape: (H,)
        margin: ignored (accepted so that the training loop can pass it to any objective).
        length_coef: λ_L ≥ 0.
        ortho_coef: λ_O ≥ 0.
        length_sign: s, +1 (the paper: the length head rewards length) or −1 (it penalizes
            length).

    Returns:
        ``(loss, stats)``: ``accuracy`` (of r_Q alone, strict), ``accuracy_sum`` (of r_Q + r_L),
        ``margin_mean`` (of r_Q), ``reward_mean`` (of r_Q), ``bt_loss`` (L_BT on the sum),
        ``length_loss`` (L_L), ``ortho_loss`` (L_O), ``rho_quality`` and ``rho_length``
        (ρ of each head with ℓ).
    """
    assert r_chosen.ndim == 1, r_chosen.shape
    for name, t in (
        ("r_rejected", r_rejected),
        ("length_reward_chosen", length_reward_chosen),
        ("length_reward_rejected", length_reward_rejected),
        ("length_chosen", length_chosen),
        ("length_rejected", length_rejected),
    ):
        assert t.shape == r_chosen.shape, (name, t.shape, r_chosen.shape)
    assert w_quality.ndim == 1 and w_length.shape == w_quality.shape, (
        w_quality.shape,
        w_length.shape,
    )
    del margin
    if length_sign not in (1.0, -1.0):
        raise ValueError(f"length_sign: expected +1 or -1, got {length_sign}")
    if length_coef < 0 or ortho_coef < 0:
        raise ValueError(
            f"length_coef, ortho_coef: expected values >= 0, got {length_coef}, {ortho_coef}"
        )
    gap_sum = (r_chosen + length_reward_chosen) - (r_rejected + length_reward_rejected)
    bt = F.softplus(-gap_sum).mean()
    ell = torch.cat([length_chosen, length_rejected]).to(r_chosen.dtype)
    rho_q = pearson(torch.cat([r_chosen, r_rejected]), ell)
    rho_l = pearson(torch.cat([length_reward_chosen, length_reward_rejected]), ell)
    length_term = rho_q.abs() - length_sign * rho_l
    ortho_term = (w_quality * w_length).sum().abs()
    loss = bt + length_coef * length_term + ortho_coef * ortho_term

    with torch.no_grad():
        gap_q = r_chosen - r_rejected
        stats = {
            "accuracy": (gap_q > 0).float().mean(),
            "accuracy_sum": (gap_sum > 0).float().mean(),
            "margin_mean": gap_q.mean(),
            "reward_mean": torch.cat([r_chosen, r_rejected]).mean(),
            "bt_loss": bt,
            "length_loss": length_term,
            "ortho_loss": ortho_term,
            "rho_quality": rho_q,
            "rho_length": rho_l,
        }
    return loss, {k: v.detach() for k, v in stats.items()}


RM_OBJECTIVES.register(
    "odin",
    odin_loss,
    description="ODIN: a quality head and a length head, Bradley-Terry on their sum, the "
    "length head correlated with length and the quality head not, orthogonal head weights; "
    "the saved model keeps the quality head only.",
    paper=ODIN_PAPER,
    params={
        "length_coef": "λ_L, weight of |ρ(r_Q, ℓ)| − s·ρ(r_L, ℓ)",
        "length_sign": "s: +1, the length head rewards length (the paper); −1, it penalizes it",
        "ortho_coef": "λ_O, weight of |W_Q · W_L|",
    },
    version="1",
    needs=("length",),
    length_head=True,
)
