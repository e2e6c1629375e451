"""A user's plugin, outside the package: a soft-minimum aggregator and a tanh shaping.

Imported by name (``goodhart --plugin softmin_plugin``, with tests/plugins on PYTHONPATH)."""

from __future__ import annotations

import torch

from goodhartlab.registry import AGGREGATORS, SHAPINGS


@AGGREGATORS.register(
    "softmin", params={"tau": "temperature τ > 0 (τ → 0: the minimum, WCO)"}, paper="a test"
)
def softmin(r_members: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Soft minimum over members: −τ · log mean_i exp(−R_i / τ)."""
    r = torch.as_tensor(r_members, dtype=torch.float64)
    m = torch.tensor(float(r.shape[0]), dtype=r.dtype)
    return -tau * (torch.logsumexp(-r / tau, dim=0) - torch.log(m))


@SHAPINGS.register("tanh")
def tanh(r, context) -> torch.Tensor:
    """tanh(r): a bounded reward."""
    return torch.tanh(torch.as_tensor(r))
