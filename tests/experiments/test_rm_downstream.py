"""The parts of goodhartlab.experiments.rm_downstream that run without a testbed."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from goodhartlab.data.schema import PreferencePair
from goodhartlab.experiments import rm_downstream
from goodhartlab.experiments.rm_downstream import (
    ProxySpec,
    correlations,
    disagreement,
    format_correlations,
    parse_grid,
    relabelled,
    rl_proxy_indices,
    rl_seed_agreement,
    run_rm_downstream,
    seed_summary,
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
    sizes = ("small", "medium", "large")
    assert parse_grid(["1500x0.4@large"], sizes=sizes) == [ProxySpec(1500, 0.4, "large")]
    assert ProxySpec(1500, 0.4, "large").name == "trained-large-n1500-noise0.4"
    with pytest.raises(ValueError, match=r"--grid: '500x0.1@huge': size must be one of small"):
        parse_grid(["500x0.1@huge"], sizes=sizes)


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
    with pytest.raises(ValueError, match="--siblings: expected >= 0"):
        run_rm_downstream(tmp_path / "out", siblings=-1)
    with pytest.raises(ValueError, match="--rl-seeds: expected at least one"):
        run_rm_downstream(tmp_path / "out", rl_seeds=[])
    with pytest.raises(ValueError, match="--rl-proxies: expected >= 1"):
        run_rm_downstream(tmp_path / "out", rl_proxies=0)
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_disagreement_by_hand():
    # Two members on P = 2 prompts x N = 2 samples, prompt-major. Standardized on all four:
    # member 0 (0, 1, 2, 3): mean 1.5, sd sqrt(5) / 2, z0 = (-3, -1, 1, 3) / sqrt 5;
    # member 1 (10, 0, 0, 0): mean 2.5, sd 5 sqrt 3 / 2, z1 = (sqrt 3, -1, -1, -1) / sqrt 3.
    # With two members the population sd of an item is |z0 - z1| / 2, so
    # D = mean of (3/sqrt5 + sqrt3, 1/sqrt3 - 1/sqrt5, 1/sqrt5 + 1/sqrt3, 3/sqrt5 + 1/sqrt3) / 2
    #   = (3/sqrt5 + sqrt3) / 4.
    # Member 0's top sample of each prompt is the second (items 1 and 3):
    # D_top = (1/sqrt3 - 1/sqrt5 + 3/sqrt5 + 1/sqrt3) / 4 = (1/sqrt3 + 1/sqrt5) / 2.
    r = np.array([[0.0, 1.0, 2.0, 3.0], [10.0, 0.0, 0.0, 0.0]])
    d = disagreement(r, n_prompts=2)
    s3, s5 = np.sqrt(3), np.sqrt(5)
    assert d["disagreement"] == pytest.approx((3 / s5 + s3) / 4, abs=1e-12)
    assert d["disagreement_top"] == pytest.approx((1 / s3 + 1 / s5) / 2, abs=1e-12)
    # Identities: affine copies of one member agree exactly; one member has no spread.
    same = disagreement(np.stack([r[0], 3 * r[0] - 7, 0.5 * r[0]]), n_prompts=2)
    assert same == pytest.approx({"disagreement": 0.0, "disagreement_top": 0.0}, abs=1e-12)
    assert all(np.isnan(v) for v in disagreement(r[:1], n_prompts=2).values())


def test_seed_summary_by_hand():
    # mean 2, sd 1 (ddof 1), t_{0.975, 2} = 4.302653 -> 2 -+ 4.302653 / sqrt 3.
    s = seed_summary([1.0, 2.0, 3.0])
    half = 4.302653 / np.sqrt(3)
    assert s["mean"] == 2.0 and s["sd"] == pytest.approx(1.0)
    assert (s["lo"], s["hi"]) == pytest.approx((2 - half, 2 + half), abs=1e-5)
    one = seed_summary([0.5])
    assert one["mean"] == 0.5 and np.isnan(one["sd"]) and np.isnan(one["lo"])


def test_rl_seed_agreement_and_the_rl_subset():
    g = np.arange(4.0)
    assert rl_seed_agreement(np.stack([g, g**2], axis=1)) == pytest.approx(1.0)
    # three seeds: pairs (0, 1) +1, (0, 2) -1, (1, 2) -1 -> mean -1/3
    assert rl_seed_agreement(np.stack([g, g**3, -g], axis=1)) == pytest.approx(-1 / 3)
    assert np.isnan(rl_seed_agreement(np.stack([g], axis=1)))  # one seed: no pair
    assert rl_proxy_indices(5, None) == [0, 1, 2, 3, 4]
    assert rl_proxy_indices(10, 4) == [0, 3, 6, 9]
    assert rl_proxy_indices(3, 8) == [0, 1, 2]


def test_rl_row_averages_the_seeds(monkeypatch, tmp_path):
    import goodhartlab.optimize.rl as rl

    final = {0: (0.5, 2.0), 1: (1.0, 4.0), 2: (-0.3, 3.0)}  # seed -> (gold, kl)
    calls = []

    def fake_run_rl(run_dir, *, config, **kwargs):
        calls.append((Path(run_dir).name, config.seed, config.steps, config.kl_coef, config.lr))
        gold, kl = final[config.seed]
        return SimpleNamespace(metrics=[{"gold": 0.0, "kl": 0.0}, {"gold": gold, "kl": kl}])

    monkeypatch.setattr(rl, "run_rl", fake_run_rl)
    tb = SimpleNamespace(policy_path="p", tokenizer=None, gold=None, train_prompts=[],
                         eval_prompts=[])  # fmt: skip
    row = rm_downstream._rl_row(None, SimpleNamespace(tb=tb), tmp_path, 40, 8, [0, 1, 2])
    # one run per seed, each in its own directory, with the study's GRPO settings
    assert calls == [(f"seed{s}", s, 40, 0.01, 1e-4) for s in (0, 1, 2)]
    assert row["rl_gold_seeds"] == [0.5, 1.0, -0.3] and row["rl_kl_seeds"] == [2.0, 4.0, 3.0]
    assert row["rl_gold"] == pytest.approx(0.4) and row["rl_kl"] == pytest.approx(3.0)
    # sd of (0.5, 1.0, -0.3) about 0.4: sqrt((0.01 + 0.36 + 0.49) / 2) = sqrt(0.43)
    assert row["rl_gold_sd"] == pytest.approx(np.sqrt(0.43))
    assert row["rl_gold_lo"] < row["rl_gold"] < row["rl_gold_hi"]


def test_correlations_use_the_proxies_that_have_the_target():
    x = np.arange(6.0)
    rl_gold = np.array([0.0, np.nan, 2.0, np.nan, 1.0, 3.0])  # RL on four proxies only
    corr = correlations({"m": x}, {"bon": x, "rl": rl_gold}, n_boot=50)
    # over proxies 0, 2, 4, 5: x = (0, 2, 4, 5), rl = (0, 2, 1, 3): ranks (1,2,3,4) vs
    # (1,3,2,4): d^2 = 0+1+1+0 = 2, rho = 1 - 6*2/(4*15) = 0.8
    assert corr["m"]["bon"]["spearman"]["estimate"] == pytest.approx(1.0)
    assert corr["m"]["rl"]["spearman"]["estimate"] == pytest.approx(0.8)


def test_measures_leave_out_the_downstream_gold_and_bookkeeping():
    rows = [
        {"proxy": "a", "size": "small", "clean_acc": 0.9, "disagreement": 0.1,
         "bon_gold_n64": 1.0, "rl_gold": 0.5, "rl_gold_seeds": [0.5], "seconds": 3.0},
        {"proxy": "b", "size": "large", "clean_acc": 0.7, "disagreement": 0.3,
         "bon_gold_n64": 0.2, "seconds": 2.0, "cpu_seconds": 1.0},
    ]  # fmt: skip
    measures, targets = rm_downstream._measures_and_targets(rows, ["bon_gold_n64", "rl_gold"])
    assert set(measures) == {"clean_acc", "disagreement"}
    np.testing.assert_array_equal(targets["rl_gold"], [0.5, np.nan])


def test_summarize_a_run_whose_rl_covers_some_proxies():
    # four proxies, RL (two seeds) on three of them; row "c" has no RL keys at all
    def row(name, acc, bon, golds=None):
        r = {"proxy": name, "clean_acc": acc, "disagreement": 1 - acc, "bon_gold_n64": bon}
        if golds is not None:
            r |= {"rl_gold": float(np.mean(golds)), "rl_gold_sd": float(np.std(golds, ddof=1)),
                  "rl_gold_seeds": golds}  # fmt: skip
        return r

    rows = [row("a", 0.6, 0.0, [0.0, 0.2]), row("b", 0.7, 0.5, [1.0, 0.6]),
            row("c", 0.8, 0.4), row("d", 0.9, 1.0, [2.0, 1.6])]  # fmt: skip
    meta = {"ns": [64], "rl_steps": 40, "rl_seeds": [0, 1]}
    result = rm_downstream.summarize(rows, meta, n_boot=20)
    assert result["target_proxies"] == {"bon_gold_n64": 4, "rl_gold": 3}
    corr = result["correlations"]
    assert set(corr) == {"clean_acc", "disagreement"}
    assert corr["clean_acc"]["rl_gold"]["spearman"]["estimate"] == pytest.approx(1.0)
    assert corr["disagreement"]["rl_gold"]["spearman"]["estimate"] == pytest.approx(-1.0)
    # clean_acc (0.6, 0.7, 0.8, 0.9) vs bon (0, 0.5, 0.4, 1): ranks (1,2,3,4) vs (1,3,2,4),
    # sum d^2 = 2, rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert corr["clean_acc"]["bon_gold_n64"]["spearman"]["estimate"] == pytest.approx(0.8)
    rl = result["rl"]
    assert rl["proxies"] == 3 and rl["seeds"] == [0, 1]
    # seed sds: 0.1414, 0.2828, 0.2828 -> mean 0.2357; seed means 0.1, 0.8, 1.8 -> sd 0.8544
    assert rl["mean_seed_sd"] == pytest.approx((np.sqrt(0.02) + 2 * np.sqrt(0.08)) / 3)
    assert rl["between_proxy_sd"] == pytest.approx(np.std([0.1, 0.8, 1.8], ddof=1))
    assert rl["seed_rank_agreement"] == pytest.approx(1.0)  # both seeds rank a < b < d
    no_rl = rm_downstream.summarize(rows, {"ns": [64], "rl_steps": None}, n_boot=20)
    assert no_rl["rl"] == {} and set(no_rl["target_proxies"]) == {"bon_gold_n64"}
