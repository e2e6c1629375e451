"""The parts of goodhartlab.experiments.rm_downstream that run without a testbed."""

from __future__ import annotations

import numpy as np
import pytest

from goodhartlab.data.schema import PreferencePair
from goodhartlab.experiments.rm_downstream import (
    ProxySpec,
    correlations,
    format_correlations,
    parse_grid,
    relabelled,
    run_rm_downstream,
)


def test_parse_grid_and_its_errors():
    assert parse_grid(["500x0.05", "50x0"]) == [ProxySpec(500, 0.05), ProxySpec(50, 0.0)]
    assert ProxySpec(500, 0.05).name == "trained-n500-noise0.05"
    with pytest.raises(ValueError, match=r"--grid: '500-0.1': expected PAIRSxNOISE"):
        parse_grid(["500-0.1"])
    with pytest.raises(ValueError, match="at most 5000"):
        parse_grid(["6000x0.1"], max_pairs=5000)
    with pytest.raises(ValueError, match=r"noise must be in \[0, 0.5\)"):
        parse_grid(["100x0.5"])


def _pair(i: int, flipped: bool) -> PreferencePair:
    # gold says "good" beats "bad"; a flipped pair records the bad one as chosen.
    good, bad = (f" good {i}", 1.0), (f" bad {i}", -1.0)
    chosen, rejected = (bad, good) if flipped else (good, bad)
    return PreferencePair(prompt="p", chosen=chosen[0], rejected=rejected[0],
                          gold_chosen=chosen[1], gold_rejected=rejected[1],
                          meta={"flipped": flipped})  # fmt: skip


def test_relabelled_undoes_recorded_flips_and_flips_a_fresh_fraction():
    pairs = [_pair(i, flipped=i % 4 == 0) for i in range(2000)]
    clean = relabelled(pairs, 0.0, seed=0)
    assert all(p.chosen.startswith(" good") and not p.meta["flipped"] for p in clean)
    noisy = relabelled(pairs, 0.3, seed=0)
    flips = np.array([p.meta["flipped"] for p in noisy])
    # meta matches the labels, and the rate is 0.3 within 4 standard errors (sd 0.0102).
    assert all(p.chosen.startswith(" bad") == f for p, f in zip(noisy, flips, strict=True))
    assert all((p.gold_chosen > p.gold_rejected) != f for p, f in zip(noisy, flips, strict=True))
    assert abs(flips.mean() - 0.3) < 4 * np.sqrt(0.3 * 0.7 / 2000)
    assert [p.meta for p in relabelled(pairs, 0.3, seed=0)] == [p.meta for p in noisy]


def test_correlations_skip_constant_measures_and_format():
    x = np.arange(6.0)
    measures = {"good": x, "bad": -x, "constant": np.ones(6), "undefined": np.r_[x[:5], np.nan]}
    corr = correlations(measures, {"gold": x**2}, n_boot=100)
    assert set(corr) == {"good", "bad"}
    assert corr["good"]["gold"]["spearman"] == {"estimate": 1.0, "lo": 1.0, "hi": 1.0}
    assert corr["bad"]["gold"]["kendall"]["estimate"] == -1.0
    table = format_correlations({"correlations": corr})
    assert table.splitlines()[1].startswith("good") or table.splitlines()[1].startswith("bad")
    assert "+1.00 [+1.00, +1.00] / +1.00" in table and "-1.00 [-1.00, -1.00] / -1.00" in table


def test_bad_settings_are_refused_before_anything_is_built(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file"):
        run_rm_downstream(tmp_path / "file")
    with pytest.raises(ValueError, match=r"--ns: expected values in \[1, --pool-size = 16\]"):
        run_rm_downstream(tmp_path / "out", pool_size=16, ns=[64])
    with pytest.raises(ValueError, match="--grid"):
        run_rm_downstream(tmp_path / "out", grid=["nope"], cache_dir=str(tmp_path / "cache"))
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
