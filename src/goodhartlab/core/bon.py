"""Unbiased estimate of best-of-n gold and proxy reward from a pool of base-policy samples."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.special
import torch

__all__ = ["BonCurve", "bon_weights", "expected_best_of_n"]

# Weight matrices are built for at most this many (n, i) entries at a time (32 MiB).
_WEIGHT_CHUNK = 1 << 22


class BonCurve(NamedTuple):
    """Best-of-n curve: for each n, the expected gold and proxy reward of the proxy's pick.

    ``gold`` and ``proxy`` are means over prompts; the per-prompt arrays are there for
    bootstrap confidence intervals over prompts (``goodhartlab.core.stats.bootstrap_ci``).
    """

    n: torch.Tensor
    """Values of n, int64. Shape: (K,)."""
    gold: torch.Tensor
    """Expected gold reward of best-of-n[k] selected by the proxy, mean over prompts, float64.
    Shape: (K,)."""
    proxy: torch.Tensor
    """Expected proxy reward of the same pick (the proxy's own view), float64. Shape: (K,)."""
    gold_per_prompt: torch.Tensor
    """Per-prompt expected gold, float64. Shape: (P, K)."""
    proxy_per_prompt: torch.Tensor
    """Per-prompt expected proxy, float64. Shape: (P, K)."""


def _as_ns(ns: int | list[int] | np.ndarray | torch.Tensor, pool_size: int) -> torch.Tensor:
    ns_t = torch.as_tensor(ns)
    if ns_t.ndim > 1:
        raise ValueError(
            f"ns must be an int or a 1-D sequence of ints; got shape {tuple(ns_t.shape)}"
        )
    ns_t = ns_t.reshape(-1)
    if ns_t.numel() == 0:
        raise ValueError("ns is empty: give at least one n")
    if ns_t.dtype == torch.bool or ns_t.is_complex():
        raise ValueError(f"ns must hold integers; got dtype {ns_t.dtype}")
    if ns_t.is_floating_point() and not bool((ns_t == ns_t.round()).all()):
        raise ValueError(f"ns must hold integers; got {ns_t.tolist()}")
    ns_t = ns_t.to(torch.int64)
    if bool((ns_t < 1).any()):
        raise ValueError(f"ns must be ≥ 1; got {ns_t.tolist()}")
    if bool((ns_t > pool_size).any()):
        raise ValueError(
            f"ns must be ≤ N = {pool_size} (the pool size, r_proxy.shape[1]); "
            f"got max(ns) = {int(ns_t.max())}"
        )
    return ns_t


def bon_weights(ns: int | list[int] | np.ndarray | torch.Tensor, pool_size: int) -> torch.Tensor:
    """Weight of the i-th smallest pool sample in the best-of-n estimate.

        w[k, i] = C(i − 1, n_k − 1) / C(N, n_k)   for i = n_k..N (1-based), else 0

    the probability that the maximum of a uniformly random n_k-subset of the pool is the
    i-th smallest (Coste et al. 2023, arXiv 2310.02743). Computed in log space from one
    table of log m! = lgamma(m + 1), m = 0..N, in float64 (``scipy.special.gammaln``); each
    row is then divided by its sum, which is 1 in exact arithmetic
    (Σ_{i=n}^{N} C(i−1, n−1) = C(N, n)), to cancel the rounding shared by a row.

    Args:
        ns: values of n, each an integer in 1..N. Shape: () or (K,).
        pool_size: N ≥ 1.

    Returns:
        Float64 weights, rows summing to 1. Shape: (K, N).
    """
    if int(pool_size) != pool_size or pool_size < 1:
        raise ValueError(f"pool_size must be an integer ≥ 1; got {pool_size!r}")
    pool_size = int(pool_size)
    ns_t = _as_ns(ns, pool_size)
    return torch.from_numpy(_bon_weights_np(ns_t.tolist(), pool_size))


def _bon_weights_np(ns: list[int], pool_size: int) -> np.ndarray:
    # NumPy/SciPy rather than torch here and in the products below: on a busy machine torch's
    # intra-op thread pool made these small ops 20-100x slower (see BENCHMARKS.md).
    log_fact = scipy.special.gammaln(np.arange(1, pool_size + 2, dtype=np.float64))  # log m!
    w = np.zeros((len(ns), pool_size), dtype=np.float64)
    for k, n in enumerate(ns):
        # Columns n-1..N-1 hold i = n..N: log C(i-1, n-1) = log (i-1)! - log (n-1)! - log (i-n)!
        log_c = log_fact[n - 1 : pool_size] - log_fact[n - 1] - log_fact[: pool_size - n + 1]
        log_total = log_fact[pool_size] - log_fact[n] - log_fact[pool_size - n]
        row = np.exp(log_c - log_total)
        w[k, n - 1 :] = row / row.sum()
    return w


def _as_pool(x: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    # Lists go through NumPy so that Python floats stay float64 (torch would make float32).
    x = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (P, N); got {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); need P ≥ 1 and N ≥ 1")
    if x.dtype == torch.bool or x.is_complex():
        raise ValueError(f"{name} must be real-valued; got dtype {x.dtype}")
    x_np = np.ascontiguousarray(x.detach().cpu().to(torch.float64).numpy())
    if not np.isfinite(x_np).all():
        what = "NaN" if np.isnan(x_np).any() else "±inf"
        raise ValueError(f"{name} contains {what}")
    return x_np


def _sort_pool(r_proxy: np.ndarray, r_gold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row by proxy ascending, gold in the same order, gold averaged over ties.

    Row by row, so each row's argsort and gathers stay in cache and no (P, N) index array is
    held. Within a block of equal proxy values gold is replaced by the block's mean, so the
    (unstable) order inside a block does not matter.
    """
    sorted_proxy = np.empty_like(r_proxy)
    sorted_gold = np.empty_like(r_gold)
    for p in range(r_proxy.shape[0]):
        order = np.argsort(r_proxy[p])
        np.take(r_proxy[p], order, out=sorted_proxy[p])
        np.take(r_gold[p], order, out=sorted_gold[p])
        tied = sorted_proxy[p, 1:] == sorted_proxy[p, :-1]
        if tied.any():
            starts = np.flatnonzero(np.concatenate(([True], ~tied)))
            sizes = np.diff(np.append(starts, r_proxy.shape[1]))
            sorted_gold[p] = np.repeat(np.add.reduceat(sorted_gold[p], starts) / sizes, sizes)
    return sorted_proxy, sorted_gold


def expected_best_of_n(
    r_proxy: torch.Tensor | np.ndarray,
    r_gold: torch.Tensor | np.ndarray,
    ns: int | list[int] | np.ndarray | torch.Tensor,
) -> BonCurve:
    """Unbiased expected gold (and proxy) reward of best-of-n selection by a proxy.

    For each prompt, sort the pool of N base-policy samples by proxy reward ascending; with
    1-based rank i,

        E[gold of best-of-n] = Σ_{i=n..N} C(i − 1, n − 1) / C(N, n) · gold_(i)

    which is the average, over all n-subsets of the pool, of the gold reward of the subset's
    proxy argmax: an unbiased estimate of best-of-n over fresh base-policy samples
    (Coste, Anwar, Kirk, Krueger 2023, "Reward model ensembles help mitigate
    overoptimization", arXiv 2310.02743; reference code tlc4418/llm_optimization,
    ``src/bon/bon_sampling.py``). Then average over prompts.

    Differences from the reference code:

    * gold is always permuted with the proxy's order (the reference re-sorts an ensemble's
      proxy scores but not the gold, so every ensemble's gold curve equals member 1's);
    * ties in the proxy are resolved exactly: within a block of equal proxy values, gold_(i)
      is replaced by the block's mean gold. This equals the average over n-subsets when the
      pick among tied maxima is uniformly random (a random order within each block makes each
      tied sample equally likely to hold every rank of the block);
    * the weights are computed in log space (``bon_weights``) once for all prompts, and
      applied as one matrix product, so N = 100,000 is cheap.

    To evaluate an ensemble, aggregate its members first (``goodhartlab.core.aggregate``) and
    pass the aggregate as ``r_proxy``.

    Args:
        r_proxy: proxy reward of each pool sample. Shape: (P, N), P prompts, N samples each.
        r_gold: gold reward of the same samples. Shape: (P, N).
        ns: values of n, each an integer in 1..N. Shape: () or (K,).

    Returns:
        ``BonCurve(n, gold, proxy, gold_per_prompt, proxy_per_prompt)``, float64 on the CPU.

    Raises:
        ValueError: a shape is not (P, N) or the two differ, an input is empty or holds NaN
            or ±inf, or some n is outside 1..N.
    """
    proxy_np = _as_pool(r_proxy, "r_proxy")
    gold_np = _as_pool(r_gold, "r_gold")
    if gold_np.shape != proxy_np.shape:
        raise ValueError(
            f"r_gold must have the shape of r_proxy {proxy_np.shape}; got {gold_np.shape}"
        )
    n_prompts, pool_size = proxy_np.shape
    ns_t = _as_ns(ns, pool_size)

    sorted_proxy, sorted_gold = _sort_pool(proxy_np, gold_np)
    n_list = ns_t.tolist()
    gold_per_prompt = np.empty((n_prompts, len(n_list)), dtype=np.float64)
    proxy_per_prompt = np.empty((n_prompts, len(n_list)), dtype=np.float64)
    chunk = max(1, _WEIGHT_CHUNK // pool_size)
    for lo in range(0, len(n_list), chunk):
        w = _bon_weights_np(n_list[lo : lo + chunk], pool_size)  # (k, N)
        gold_per_prompt[:, lo : lo + chunk] = sorted_gold @ w.T
        proxy_per_prompt[:, lo : lo + chunk] = sorted_proxy @ w.T
    gold_per_prompt = torch.from_numpy(gold_per_prompt)
    proxy_per_prompt = torch.from_numpy(proxy_per_prompt)
    return BonCurve(
        n=ns_t,
        gold=gold_per_prompt.mean(dim=0),
        proxy=proxy_per_prompt.mean(dim=0),
        gold_per_prompt=gold_per_prompt,
        proxy_per_prompt=proxy_per_prompt,
    )
