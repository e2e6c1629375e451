"""Best-of-n curves from scored pools (measure/bon_curves.py): every method starts at 0,
aggregators against their formulas, standardized members, a significant hump, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from goodhartlab.core.stats import bootstrap_ci, bootstrap_means
from goodhartlab.measure.bon_curves import DEFAULT_AGGREGATORS, bon_curves, default_ns

P, N = 4, 16


def test_default_ns():
    assert default_ns(16) == [1, 2, 4, 8, 16]
    assert default_ns(20) == [1, 2, 4, 8, 16, 20]
    assert default_ns(1) == [1]


def test_curves_for_every_aggregator_start_at_zero():
    gen = torch.Generator().manual_seed(0)
    r_gold = torch.randn(P, N, generator=gen, dtype=torch.float64) + 3.0
    r_members = torch.randn(3, P, N, generator=gen, dtype=torch.float64)
    curves = bon_curves(r_gold, {"single": r_members[0]}, {"ens": r_members}, n_boot=200)
    names = [c.method for c in curves]
    assert names == (
        ["single"]
        + [f"ens/{a}" for a in DEFAULT_AGGREGATORS]
        + ["ens/member0", "ens/member1", "ens/member2", "ens/members_avg", "oracle"]
    )
    for c in curves:
        assert c.n.tolist() == [1, 2, 4, 8, 16]
        assert c.gold[0] == 0 and c.proxy[0] == 0  # relative to the base policy
        assert c.gold_lo[0] == 0 and c.gold_hi[0] == 0
        assert math.isclose(c.summary["base_gold"], float(r_gold.mean()), rel_tol=1e-12)
        np.testing.assert_allclose(c.gold_abs - c.gold, float(r_gold.mean()), rtol=1e-12)
        assert (c.gold_lo <= c.gold + 1e-12).all() and (c.gold <= c.gold_hi + 1e-12).all()
        # KL_bon(16) = log 16 − 15/16.
        assert math.isclose(c.kl[-1], math.log(16) - 15 / 16) and math.isclose(
            c.d[-1] ** 2, c.kl[-1]
        )
        assert np.all(np.diff(c.proxy) >= -1e-12)  # a pick's own score never falls with n
    # Member 0 picked alone is the single proxy; the oracle is the ceiling of every method.
    by = {c.method: c for c in curves}
    np.testing.assert_allclose(by["ens/member0"].gold, by["single"].gold)
    for c in curves:
        assert np.all(c.gold <= by["oracle"].gold + 1e-12)
    # UWO with its λ = 0.5: member mean minus half the member variance, picked as one proxy,
    # on members standardized over the pool (default) or on the raw scores.
    z = (r_members - r_members.mean((1, 2), keepdim=True)) / r_members.std(
        (1, 2), unbiased=False, keepdim=True
    )
    for members, kw in ((z, {}), (r_members, {"standardize": False})):
        uwo = members.mean(0) - 0.5 * members.var(0, unbiased=False)
        ens_uwo = [
            c for c in bon_curves(r_gold, None, {"ens": r_members}, **kw) if c.method == "ens/uwo"
        ]
        np.testing.assert_allclose(
            bon_curves(r_gold, {"u": uwo}, oracle=False)[0].gold, ens_uwo[0].gold
        )

    # The members' average: each member used alone, curves averaged (gold and proxy).
    members = [by[f"ens/member{i}"] for i in range(3)]
    np.testing.assert_allclose(by["ens/members_avg"].gold, np.mean([c.gold for c in members], 0))
    np.testing.assert_allclose(by["ens/members_avg"].proxy, np.mean([c.proxy for c in members], 0))
    assert not np.allclose(by["ens/members_avg"].gold, by["ens/member0"].gold)


def test_standardizing_members_removes_the_low_offset_members_grip_on_wco():
    gen = torch.Generator().manual_seed(3)
    r_gold = torch.randn(P, N, generator=gen, dtype=torch.float64)
    r_members = torch.randn(3, P, N, generator=gen, dtype=torch.float64)
    shifted = r_members.clone()
    shifted[1] -= 50.0  # member 1's Bradley-Terry offset happens to be low
    raw = {c.method: c for c in bon_curves(r_gold, None, {"e": shifted}, standardize=False)}
    # Raw: WCO is member 1 alone.
    np.testing.assert_allclose(raw["e/wco"].gold, raw["e/member1"].gold)
    # Standardized: the offset is gone, WCO is the same as for the unshifted members.
    std = {c.method: c for c in bon_curves(r_gold, None, {"e": shifted})}
    ref = {c.method: c for c in bon_curves(r_gold, None, {"e": r_members})}
    np.testing.assert_allclose(std["e/wco"].gold, ref["e/wco"].gold)
    assert not np.allclose(std["e/wco"].gold, std["e/member1"].gold)


def test_drop_resamples_are_those_of_core_bootstrap_ci():
    # The drop's interval uses the bootstrap means of core.stats.bootstrap_ci's resamples;
    # if the two drift apart, the drop and the point intervals disagree.
    x = torch.randn(30, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    lo, hi = bootstrap_ci(x, n_boot=300, alpha=0.1, seed=4)
    boot = bootstrap_means(x.numpy(), 300, 4).numpy()
    np.testing.assert_allclose(np.quantile(boot, [0.05, 0.95], axis=0), np.stack([lo, hi]))


def test_overoptimized_proxy_shows_a_significant_hump():
    # Proxy x ~ N(0, 1); gold = x − 0.4 x² + noise. Picking by x, gold rises while the pick
    # is moderate, then falls as n pushes x into the region where −0.4 x² dominates
    # (gold is largest at x = 1.25, which best-of-n passes near n ≈ 8).
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 512, generator=gen, dtype=torch.float64)
    gold = x - 0.4 * x**2 + 0.3 * torch.randn(64, 512, generator=gen, dtype=torch.float64)
    (c,) = bon_curves(gold, {"proxy": x}, oracle=False, n_boot=500)
    s = c.summary
    assert 2 <= s["n_peak"] <= 64 < s["n_final"]
    assert s["gold_peak"] > 0.2 and s["gold_final"] < s["gold_peak"] - 0.3
    assert s["drop_lo"] > 0 and s["drop_paired_lo"] > 0  # significant
    assert np.all(np.diff(c.proxy) > 0)  # while the proxy keeps rising
    assert s["beta"] > 0 and s["r2"] > 0.8
    assert math.isclose(s["drop"], s["gold_peak"] - s["gold_final"])


def test_curve_bad_input():
    r = torch.zeros(P, N)
    with pytest.raises(ValueError, match=r"n must be in 1\.\.N = 16"):
        bon_curves(r, {"p": r}, ns=[1, 32])
    with pytest.raises(ValueError, match=r"proxies\['p'\]"):
        bon_curves(r, {"p": torch.zeros(P, N + 1)})
