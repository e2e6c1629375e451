"""The packaged reward-model variants study (issue 14): proxies.variants and RL on a variant."""

from __future__ import annotations

import pytest

from goodhartlab.experiments.study import load_config, packaged_configs, variant_bon_proxies


def test_rm_variants_trains_each_variant_on_three_seeds_and_runs_rl_on_each():
    assert "rm-variants" in packaged_configs()
    config = load_config("rm-variants")
    variants = config.proxies.variants
    assert {"ordinal", "noise_robust", "armo", "armo_plain", "themis"} <= set(variants)
    assert variants["themis"].rm["tool"] == "toy_text_counter"
    assert variants["armo_plain"].rm == {"objective": "armo", "armo_decorrelate": False}
    assert all(config.proxies.variant_seeds(v) == [0, 1, 2] for v in variants)
    groups = {m.group: m for m in config.rl.methods}
    assert set(groups) == {"single", *variants}
    for name in variants:
        runs = [m for m in config.rl.methods if m.group == name]
        assert sorted(m.seed for m in runs) == [0, 1, 2] and all(m.proxy == name for m in runs)
    # A variant's run is the same RL as the single proxy's: only the reward differs.
    single = config.rl.run_config(groups["single"], seed=0, device="cpu", max_new_tokens=8)
    armo = config.rl.run_config(groups["armo"], seed=0, device="cpu", max_new_tokens=8)
    assert single.model_dump(exclude={"name", "seed"}) == armo.model_dump(exclude={"name", "seed"})
    assert config.bon.pool_size == 1024 and config.bon.prompts == 64


@pytest.mark.parametrize(
    "override, message",
    [
        ("proxies.variants={r: {rm: {objective: reform}}}", "cannot train it as a proxy variant"),
        ("proxies.variants={r: {rm: {seed: 3}}}", "seed: set by the study"),
        ("proxies.variants={r: {rm: {objectiv: ordinal}}}", "proxies.variants.r.rm.objectiv"),
        ("proxies.variants={r: {rm: {objective: nope}}}", "nope"),
        ("proxies.variants={bt: {}}", "name 'bt'"),
        ("proxies.variants={r: {seeds: [9]}}", "variants.r.seeds: [9] not in proxies.seeds"),
        ("rl.methods=[{name: x, proxy: nope}]", "proxy 'nope' is not one of proxies.variants"),
        (
            "rl.methods=[{name: x, proxy: ordinal, aggregator: mean}]",
            "takes no aggregator",
        ),
    ],
)
def test_bad_variant_settings_are_refused_naming_the_field(override, message):
    extra = (
        ["proxies.variants={ordinal: {rm: {objective: ordinal}}}"] if "ordinal," in override else []
    )
    with pytest.raises(ValueError, match="invalid study config") as e:
        load_config(None, [*extra, override])
    assert message in str(e.value)


def test_best_of_n_pairs_each_variant_seed_with_the_proxies_member_of_that_seed():
    config = load_config(None, ["proxies.variants={o: {rm: {objective: ordinal}, seeds: [1, 3]}}"])
    info = {
        "members": [f"m{i}" for i in range(5)],
        "variants": {"o": {"seeds": [1, 3], "members": ["o1", "o3"]}},
    }
    picks = variant_bon_proxies(config.proxies, info)
    assert picks == {"bt-s1": "m1", "bt-s3": "m3", "o-s1": "o1", "o-s3": "o3"}
    assert list(picks)[:2] == ["bt-s1", "bt-s3"]
    assert variant_bon_proxies(config.proxies, {"members": ["m0"]}) == {}
