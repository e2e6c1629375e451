"""Every input that changes a cached artifact is in its key (issue 17, defect 1)."""

from types import SimpleNamespace

import pytest

from goodhartlab.experiments.proxies import pairs_file_name, proxy_set_dir_name

BASE = dict(
    pairs=200,
    noise=0.25,
    seed=0,
    size="small",
    seeds=(0, 1),
    pretrain_seeds=False,
    epochs=2,
    lr=1e-3,
)
CHANGED = dict(
    pairs=400,
    noise=0.1,
    seed=1,
    size="medium",
    seeds=(0, 2),
    pretrain_seeds=True,
    epochs=3,
    lr=3e-4,
)
TB = SimpleNamespace(gold_version="gold-v1")


@pytest.mark.parametrize("field", sorted(BASE))
def test_each_input_of_a_proxy_set_changes_its_directory(field):
    # Before the fix the study seed (which samples and labels the pairs) was not in the
    # name: seed=1 reused the members trained on the seed-0 pairs.
    assert proxy_set_dir_name(TB, **{**BASE, field: CHANGED[field]}) != proxy_set_dir_name(
        TB, **BASE
    )


def test_the_gold_version_changes_the_proxy_set_and_its_pairs():
    other = SimpleNamespace(gold_version="gold-v2")
    assert proxy_set_dir_name(other, **BASE) != proxy_set_dir_name(TB, **BASE)
    kw = dict(pairs=200, noise=0.25, seed=0)
    assert pairs_file_name(other, **kw) != pairs_file_name(TB, **kw)


@pytest.mark.parametrize("field, value", [("pairs", 400), ("noise", 0.1), ("seed", 1)])
def test_each_input_of_the_pairs_changes_their_file(field, value):
    kw = dict(pairs=200, noise=0.25, seed=0)
    assert pairs_file_name(TB, **{**kw, field: value}) != pairs_file_name(TB, **kw)


def test_a_variants_settings_change_its_proxy_set_but_no_settings_keep_the_old_name():
    plain = proxy_set_dir_name(TB, **BASE)
    assert proxy_set_dir_name(TB, **BASE, options={}) == plain  # existing caches stay valid
    ordinal = proxy_set_dir_name(TB, **BASE, options={"objective": "ordinal"})
    assert ordinal != plain and "-ordinal-" in ordinal
    other = proxy_set_dir_name(TB, **BASE, options={"objective": "ordinal", "ordinal_levels": 5})
    assert other != ordinal
    # The same settings in another order: the same set.
    a = proxy_set_dir_name(TB, **BASE, options={"objective": "armo", "armo_decorrelate": False})
    b = proxy_set_dir_name(TB, **BASE, options={"armo_decorrelate": False, "objective": "armo"})
    assert a == b
