"""Registries: lookups, metadata, parameter models, plugins, and the CLI built from them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest
import torch

from goodhartlab.registry import AGGREGATORS, REGISTRIES, SHAPINGS, Registry

PLUGINS = Path(__file__).parent / "plugins"


@pytest.fixture
def plugin_path(monkeypatch):
    """tests/plugins importable, and the plugin's entries removed afterwards."""
    monkeypatch.syspath_prepend(str(PLUGINS))
    yield
    AGGREGATORS.unregister("softmin")
    SHAPINGS.unregister("tanh")
    sys.modules.pop("softmin_plugin", None)
    import goodhartlab.plugins as plugins

    plugins._loaded[:] = [m for m in plugins._loaded if m != "softmin_plugin"]


def test_unknown_name_lists_what_exists_and_the_closest():
    with pytest.raises(ValueError, match=r"unknown aggregator 'wc0'.*mean, wco, uwo") as e:
        AGGREGATORS.entry("wc0")
    assert "Did you mean 'wco'" in str(e.value)


def test_entries_carry_paper_and_parameters_from_the_signature():
    uwo = AGGREGATORS.entry("uwo")
    assert uwo.paper.startswith("Coste et al. 2023") and uwo.builtin
    assert uwo.params().model_dump() == {"lam": 0.5}  # the function's default, written once
    assert uwo.meta["rl_params"] == {"lam": 0.1}
    with pytest.raises(ValueError, match=r"does not take parameter\(s\) \['k'\]"):
        uwo.validate_params({"k": 1})
    with pytest.raises(ValueError, match="lam"):
        uwo.validate_params({"lam": "lots"})
    assert SHAPINGS.entry("par").meta["needs"] == "references"
    with pytest.raises(ValueError, match="c"):
        SHAPINGS.entry("ceil").validate_params({})  # the cap is required


def test_register_refuses_a_taken_name_and_a_bad_name():
    r = Registry("thing", home="goodhartlab.registry", doc="")
    r.register("a", lambda: 1)
    with pytest.raises(ValueError, match="already registered"):
        r.register("a", lambda: 2)
    r.register("a", lambda: 3, replace=True)
    assert r["a"]() == 3
    with pytest.raises(ValueError, match="name"):
        r.register("a b", lambda: 4)


def test_every_registry_loads_and_kinds_are_documented():
    for kind, registry in REGISTRIES.items():
        assert registry.doc, kind
        names = registry.names()  # imports the home module
        assert len(set(names)) == len(names)
    assert set(REGISTRIES["rl_algorithm"]) == {"grpo", "rloo", "ppo", "nash_mp"}
    assert set(REGISTRIES["daa_loss"]) == {"dpo", "ipo", "slic", "rpo"}
    assert set(REGISTRIES["regularizer"]) >= {"k1", "k2", "k3"}
    assert "toy_text" in REGISTRIES["testbed"]


def _choices(parser: argparse.ArgumentParser, command: str, flag: str) -> list[str]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in sub.choices[command]._actions if flag in (*a.option_strings, a.dest))
    return list(action.choices)


def test_cli_choices_are_the_registries():
    from goodhartlab.cli import build_parser

    p = build_parser()
    assert _choices(p, "rl", "--aggregator") == AGGREGATORS.names()
    assert _choices(p, "rl", "--shaping") == SHAPINGS.names()
    assert _choices(p, "rl", "--algorithm") == REGISTRIES["rl_algorithm"].names()
    assert _choices(p, "rl", "--kl-estimator") == REGISTRIES["regularizer"].names()
    assert _choices(p, "dpo", "--loss") == REGISTRIES["daa_loss"].names()
    assert _choices(p, "dpo", "--aggregator") == AGGREGATORS.names()
    assert _choices(p, "testbed", "--testbed") == REGISTRIES["testbed"].names()
    assert _choices(p, "list", "kind") == list(REGISTRIES)


def test_rl_flags_are_the_config_fields_with_their_descriptions():
    from goodhartlab.cli import build_parser
    from goodhartlab.optimize.rl import RLConfig

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    rl = {a.dest: a for a in sub.choices["rl"]._actions}
    for name, info in RLConfig.model_fields.items():
        if name in ("reward", "name"):
            continue
        assert name in rl, name
        assert info.description.replace("%", "%%") in rl[name].help, name
    assert "(default: 200)" in rl["steps"].help  # RLConfig's default, not a copy


def test_plugin_parts_join_the_cli_and_the_configs(plugin_path, capsys):
    from goodhartlab.cli import main
    from goodhartlab.rewards.pipeline import RewardPipelineConfig

    with pytest.raises(ValueError, match="unknown aggregator 'softmin'"):
        RewardPipelineConfig(aggregator="softmin")
    assert main(["--plugin", "softmin_plugin", "list", "aggregator"]) == 0
    out = capsys.readouterr().out
    assert "softmin" in out and "[plugin softmin_plugin]" in out and "tau=1.0" in out
    config = RewardPipelineConfig(aggregator="softmin", aggregator_params={"tau": 0.5})
    with pytest.raises(ValueError, match="tau"):
        RewardPipelineConfig(aggregator="softmin", aggregator_params={"tau": "x"})
    r = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    fn = AGGREGATORS["softmin"]
    assert torch.all(fn(r, tau=1e-3) <= r.max(dim=0).values)
    torch.testing.assert_close(fn(r, tau=1e-3), r.min(dim=0).values.double(), atol=1e-2, rtol=0)
    assert config.shaping == "none"


def test_missing_plugin_is_a_clear_error(capsys):
    from goodhartlab.cli import main

    assert main(["--plugin", "no_such_plugin_module", "list"]) == 2
    assert "no module named 'no_such_plugin_module'" in capsys.readouterr().err


TINY_STUDY = """
plugins: [softmin_plugin]
testbed_options:
  policy_steps: 40
  pretrain_steps: {small: 40, medium: 40, large: 2}
  pretrain_batch_size: 16
  tokenizer_corpus: 400
  max_new_tokens: 24
proxies: {pairs: 120, seeds: [0, 1], epochs: 1}
bon:
  pool_size: 8
  prompts: 6
  n_boot: 50
  aggregators: {mean: {}, softmin: {tau: 0.5}}
rl:
  steps: 2
  eval_every: 1
  prompts_per_step: 2
  group_size: 2
  eval_prompts: 4
  methods:
    - {name: softmin, aggregator: softmin, aggregator_params: {tau: 0.5}, shaping: tanh}
"""


def test_a_study_uses_a_plugin_through_the_cli_without_editing_the_package(
    tmp_path, plugin_path, monkeypatch
):
    """`goodhart run my_study.yaml` with a user's aggregator and shaping: best-of-n picks by
    the soft minimum, and an RL run optimizes the tanh-shaped soft minimum."""
    from goodhartlab.cli import main

    study = tmp_path / "my_study.yaml"
    study.write_text(TINY_STUDY)
    monkeypatch.setenv("GOODHART_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    assert main(["run", str(study), "--run-dir", str(run_dir), "--workers", "1"]) == 0
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    methods = {(p["kind"], p["method"]) for p in lines}
    assert ("bon", "ensemble/softmin") in methods and ("rl", "softmin") in methods
    rl_config = (run_dir / "rl/softmin/config.yaml").read_text()
    assert "aggregator: softmin" in rl_config and "shaping: tanh" in rl_config
    # The shaped reward is tanh of the soft minimum: inside (-1, 1) at every step.
    train = [json.loads(x) for x in (run_dir / "rl/softmin/train.jsonl").read_text().splitlines()]
    assert all(-1 < t["r_shaped"] < 1 for t in train) and len(train) == 2
    # A resumed study (a fresh process would load the plugin from config.yaml) agrees.
    assert "softmin_plugin" in (run_dir / "config.yaml").read_text()


def test_bon_dpo_train_rm_flags_are_their_config_fields():
    from goodhartlab.cli import build_parser
    from goodhartlab.experiments.study import ProxyConfig
    from goodhartlab.optimize.bon import BonStudyConfig
    from goodhartlab.optimize.daa import DAAConfig
    from goodhartlab.train.rm import RMTrainConfig

    p = build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    for command, model, skip in (
        ("bon", BonStudyConfig, {"device"}),
        ("dpo", DAAConfig, {"name", "device", "max_new_tokens", "reward"}),
        ("train-rm", RMTrainConfig, {"seed", "device"}),
    ):
        dests = {a.dest for a in sub.choices[command]._actions}
        assert set(model.model_fields) - skip <= dests, command
    # train-rm's recipe is the study's proxies' (one source), unless given.
    args = p.parse_args(["train-rm", "--data", "d.jsonl", "--out", "o"])
    assert (args.epochs, args.lr) == (ProxyConfig().epochs, ProxyConfig().lr) == (2, 1e-3)
    args = p.parse_args(["train-rm", "--data", "d.jsonl", "--out", "o", "--lr", "3e-4"])
    assert args.lr == 3e-4
    # Lists of numbers: comma-separated, as before (--ns 1,2,4; --eval-points 0.1,0.5).
    args = p.parse_args(["bon", "--out", "o", "--ns", "1,2,4", "--no-standardize-members"])
    assert args.ns == [1, 2, 4] and args.standardize_members is False
    args = p.parse_args(["dpo", "--out", "o", "--eval-points", "0.1,0.5", "--loss", "ipo"])
    assert args.eval_points_in_first_epoch == [0.1, 0.5] and args.loss == "ipo"
    assert not hasattr(args, "beta")  # not given: DAAConfig's default applies
