"""Benchmark expected_best_of_n against the reference code's straightforward loop.

    python benchmarks/bench_bon.py [--runs 7] [--naive-runs 3] [--full-10k]

P = 100 prompts, N = 10,000 and N = 100,000 samples per prompt, 20 values of n on a
geometric grid from 1 to N. The naive baseline follows tlc4418/llm_optimization
``src/bon/bon_sampling.py``: per n, coefficients C(i-1, n-1) / C(N, n) from exact integer
``scipy.special.comb`` (floats overflow: C(10^4, 5000) ~ 10^3008), then a loop over prompts.

The exact coefficients take minutes for N = 10,000 and hours for N = 100,000
(C(99999, 49999) has ~30,000 digits), so by default the naive time is extrapolated: per n,
the coefficient time is measured on 64 evenly spaced ranks i and scaled by (N - n + 1) / 64;
the per-prompt loop is timed in full. ``--full-10k`` also times N = 10,000 in full (one
run), which checks the extrapolation. Agreement is checked in full for the n whose exact
coefficients are cheap (n <= 100), and at the sampled ranks for every n.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import scipy.special

from goodhartlab.core.bon import bon_weights, expected_best_of_n

N_PROMPTS = 100
GRID_SIZE = 20
SAMPLED_RANKS = 64
CHEAP_N = 100


def geometric_grid(pool_size: int) -> np.ndarray:
    return np.unique(np.round(np.geomspace(1, pool_size, GRID_SIZE)).astype(np.int64))


def exact_coefficient(i: int, n: int, pool_size: int) -> float:
    # Python int / int is correctly rounded, so this is the exact weight to float64.
    return scipy.special.comb(i - 1, n - 1, exact=True) / scipy.special.comb(
        pool_size, n, exact=True
    )


def naive_coefficients(n: int, pool_size: int) -> np.ndarray:
    return np.array([exact_coefficient(i, n, pool_size) for i in range(n, pool_size + 1)])


def naive_prompt_loop(
    proxy: np.ndarray, gold: np.ndarray, ns: np.ndarray, coeffs: dict[int, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    pool_size = proxy.shape[1]
    gold_curve = np.zeros(len(ns))
    proxy_curve = np.zeros(len(ns))
    for p in range(proxy.shape[0]):
        order = np.argsort(proxy[p])
        sorted_proxy, sorted_gold = proxy[p][order], gold[p][order]
        for k, n in enumerate(ns):
            gold_curve[k] += np.sum(coeffs[n] * sorted_gold[n - 1 : pool_size])
            proxy_curve[k] += np.sum(coeffs[n] * sorted_proxy[n - 1 : pool_size])
    return gold_curve / proxy.shape[0], proxy_curve / proxy.shape[0]


def make_pool(pool_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    proxy = rng.normal(size=(N_PROMPTS, pool_size))
    gold = proxy + rng.normal(size=(N_PROMPTS, pool_size))
    return proxy, gold


def time_fast(
    proxy: np.ndarray, gold: np.ndarray, ns: np.ndarray, runs: int
) -> tuple[float, object]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        curve = expected_best_of_n(proxy, gold, ns)
        times.append(time.perf_counter() - start)
    return statistics.median(times), curve


def bench(pool_size: int, runs: int, naive_runs: int, full: bool) -> None:
    proxy, gold = make_pool(pool_size)
    ns = geometric_grid(pool_size)
    fast_s, curve = time_fast(proxy, gold, ns, runs)
    weights = bon_weights(ns, pool_size).numpy()

    naive_times, coeff_err = [], 0.0
    for _ in range(naive_runs):
        if full:
            start = time.perf_counter()
            coeffs = {int(n): naive_coefficients(int(n), pool_size) for n in ns}
            naive_gold, naive_proxy = naive_prompt_loop(proxy, gold, ns, coeffs)
            naive_times.append(time.perf_counter() - start)
            continue
        coeff_s = 0.0
        for k, n in enumerate(int(n) for n in ns):
            ranks = np.unique(np.linspace(n, pool_size, SAMPLED_RANKS).astype(np.int64))
            start = time.perf_counter()
            sampled = np.array([exact_coefficient(int(i), n, pool_size) for i in ranks])
            coeff_s += (time.perf_counter() - start) * (pool_size - n + 1) / len(ranks)
            rel = np.abs(weights[k, ranks - 1] - sampled) / np.maximum(sampled, 1e-300)
            coeff_err = max(coeff_err, float(rel.max()))
        # The prompt loop does not depend on how the coefficients were computed: time it in full.
        coeffs = {int(n): weights[k, n - 1 :] for k, n in enumerate(ns)}
        start = time.perf_counter()
        naive_prompt_loop(proxy, gold, ns, coeffs)
        naive_times.append(coeff_s + time.perf_counter() - start)
    naive_s = statistics.median(naive_times)

    if full:
        checked, how = ns, "measured in full"
        extra = "whole curve checked"
    else:
        checked = ns[ns <= CHEAP_N]
        coeffs = {int(n): naive_coefficients(int(n), pool_size) for n in checked}
        naive_gold, naive_proxy = naive_prompt_loop(proxy, gold, checked, coeffs)
        how = f"EXTRAPOLATED: exact coefficients timed on {SAMPLED_RANKS} sampled ranks per n"
        extra = (
            f"curve checked in full for n <= {CHEAP_N}; weights vs exact coefficients at the "
            f"sampled ranks: max rel err {coeff_err:.2e}"
        )
        assert coeff_err < 1e-8, f"weights differ from exact coefficients: {coeff_err:.3g}"
    k_checked = np.searchsorted(ns, checked)
    err = max(
        np.abs(curve.gold.numpy()[k_checked] - naive_gold).max(),
        np.abs(curve.proxy.numpy()[k_checked] - naive_proxy).max(),
    )
    assert err < 1e-9, f"fast and naive disagree: max abs diff {err:.3g}"
    report(pool_size, len(ns), fast_s, runs, naive_s, naive_runs, how, err, extra)


def report(
    pool_size: int,
    n_values: int,
    fast_s: float,
    runs: int,
    naive_s: float,
    naive_runs: int,
    how: str,
    err: float,
    extra: str = "",
) -> None:
    print(f"P={N_PROMPTS} N={pool_size:,} K={n_values} values of n")
    print(f"  expected_best_of_n: {fast_s:8.3f} s  (median of {runs})")
    print(f"  naive reference:    {naive_s:8.3f} s  (median of {naive_runs}; {how})")
    print(f"  ratio naive/fast:   {naive_s / fast_s:8.0f}x")
    print(f"  agreement: max abs diff {err:.2e}" + (f"; {extra}" if extra else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs of expected_best_of_n")
    parser.add_argument("--naive-runs", type=int, default=3, help="runs of the naive baseline")
    parser.add_argument(
        "--full-10k",
        action="store_true",
        help="time the naive baseline in full for N = 10,000 (about 3 minutes per run)",
    )
    args = parser.parse_args()
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()}")
    bench(10_000, args.runs, args.naive_runs, full=False)
    if args.full_10k:
        bench(10_000, args.runs, 1, full=True)
    bench(100_000, args.runs, args.naive_runs, full=False)


if __name__ == "__main__":
    main()
