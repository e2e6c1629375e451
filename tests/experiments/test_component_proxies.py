"""Component proxies: one reward model per gold component, on the study's own pairs
relabelled by that component (ties dropped), cached."""

from __future__ import annotations

import pytest
from test_parallel_stages import TINY  # the tiny toy_text world of the stage tests

from goodhartlab.data import read_pairs
from goodhartlab.experiments.proxies import preference_pairs, train_component_proxies
from goodhartlab.testbeds import get_testbed
from goodhartlab.testbeds.toy_text.components import COMPONENTS, ToyTextGoldComponent

#: Enough base-policy pairs of the tiny world that every component has some that do not tie.
PAIRS = 400

pytestmark = pytest.mark.slow  # builds a tiny world and trains five reward models (~40 s)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tb = get_testbed("toy_text", TINY, cache_dir=tmp_path_factory.mktemp("c"), progress=False)
    root = tb.root / "proxies"
    ps = train_component_proxies(tb, root, pairs=PAIRS, noise=0.25, epochs=1, progress=False)
    return tb, root, ps


def test_one_member_per_component_on_relabelled_study_pairs(trained):
    tb, root, ps = trained
    assert ps.components == list(COMPONENTS)
    assert [p.name for p in ps.paths] == [f"member_{i}" for i in range(len(COMPONENTS))]
    assert (ps.ensemble_dir / "ensemble.json").is_file()
    base = read_pairs(preference_pairs(tb, root, pairs=PAIRS, noise=0.25, seed=0))
    texts = {(p.prompt, frozenset((p.chosen, p.rejected))) for p in base}
    for name, path in zip(ps.components, ps.pairs_paths, strict=True):
        pairs = read_pairs(path)
        gold = ToyTextGoldComponent(name)
        assert len(pairs) <= len(base)
        for p in pairs:
            # the same base-policy pair, labelled by the component (or flipped by noise)
            assert (p.prompt, frozenset((p.chosen, p.rejected))) in texts
            g_c, g_r = gold([p.prompt, p.prompt], [p.chosen, p.rejected]).tolist()
            assert g_c != g_r  # ties dropped
            assert (g_c > g_r) != p.meta["flipped"]


def test_a_second_call_finds_them_cached(trained):
    tb, root, ps = trained
    before = [(p / "model.safetensors").stat().st_mtime_ns for p in ps.paths]
    again = train_component_proxies(tb, root, pairs=PAIRS, noise=0.25, epochs=1, progress=False)
    assert again.paths == ps.paths
    assert [(p / "model.safetensors").stat().st_mtime_ns for p in again.paths] == before
