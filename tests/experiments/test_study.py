"""Study configs and the study runner (a tiny end-to-end run)."""

from __future__ import annotations

import json

import pytest

from goodhartlab.experiments.study import StudyConfig, load_config, run_study


def test_default_config_loads_with_the_documented_defaults():
    c = load_config()
    assert c.testbed == "toy_text" and c.proxies.noise == 0.25 and c.proxies.size == "small"
    assert len(c.proxies.seeds) == 5
    assert set(c.bon.aggregators) == {"mean", "wco", "uwo", "median", "mean_minus_std"}
    assert c.bon.aggregators["uwo"] == {"lam": 0.5}


def test_overrides_are_parsed_as_yaml_and_nested():
    c = load_config(None, ["bon.pool_size=64", "proxies.seeds=[0, 1]", "name=x"])
    assert c.bon.pool_size == 64 and c.proxies.seeds == [0, 1] and c.name == "x"


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("bon.pool_sise=3", "bon.pool_sise"),
        ("proxies.noise=0.9", "proxies.noise"),
        ("bon.pool_size=many", "bon.pool_size"),
        ("colour=red", "colour"),
    ],
)
def test_bad_config_names_the_field(override, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        load_config(None, [override])


def test_bad_yaml_file_names_the_file(tmp_path):
    bad = tmp_path / "study.yaml"
    bad.write_text("bon: [unclosed\n")
    with pytest.raises(ValueError, match=r"study\.yaml"):
        load_config(bad)
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml"):
        load_config(tmp_path / "nope.yaml")


TINY = {
    "testbed_options": {
        "pretrain_steps": {"small": 40, "medium": 40, "large": 2},
        "pretrain_batch_size": 16,
        "tokenizer_corpus": 400,
        "max_new_tokens": 24,
    },
    "proxies": {"pairs": 120, "seeds": [0, 1], "epochs": 1},
    "bon": {"pool_size": 8, "prompts": 6, "n_boot": 50},
}


def test_tiny_study_writes_every_artifact_and_resumes_without_recomputing(tmp_path, monkeypatch):
    config = StudyConfig.model_validate({**TINY, "cache_dir": str(tmp_path / "cache")})
    run_dir = run_study(config, tmp_path / "run", progress=False)
    for name in (
        "config.yaml",
        "manifest.json",
        "summary.json",
        "bon/metrics.jsonl",
        "bon/plots/bon.png",
    ):
        assert (run_dir / name).is_file(), name
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "done"
    assert set(manifest["stages"]) == {"testbed", "proxies", "bon"}
    methods = {
        json.loads(line)["method"]
        for line in (run_dir / "bon/metrics.jsonl").read_text().splitlines()
    }
    aggregators = {"mean", "wco", "uwo", "median", "mean_minus_std"}
    assert methods == {"single", "oracle", "ensemble/member0", "ensemble/member1"} | {
        f"ensemble/{a}" for a in aggregators
    }
    summary = json.loads((run_dir / "summary.json").read_text())

    # A resumed finished study recomputes nothing and keeps the same summary.
    import goodhartlab.experiments.proxies as proxies_module

    monkeypatch.setattr(proxies_module, "train_proxies", lambda *a, **k: pytest.fail("recomputed"))
    again = run_study(config, run_dir, resume=True, progress=False)
    assert json.loads((again / "summary.json").read_text()) == summary

    with pytest.raises(ValueError, match="differs"):
        run_study(config.model_copy(update={"seed": 1}), run_dir, resume=True, progress=False)
    with pytest.raises(ValueError, match="not empty"):
        run_study(config, run_dir, progress=False)
