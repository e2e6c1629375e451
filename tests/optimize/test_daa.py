"""Direct alignment (optimize/daa.py): learning, evaluation points, bad input, resume, online."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from goodhartlab.data.schema import PreferencePair
from goodhartlab.models.tiny import build_causal_lm
from goodhartlab.optimize.daa import (
    DAAConfig,
    filter_pairs,
    run_daa,
    sequence_logps,
    tokenize_pairs,
)
from goodhartlab.optimize.rundir import read_jsonl
from goodhartlab.rewards import ProgrammaticReward

NOUNS = ("phone", "laptop", "camera", "book", "movie", "song")
EVAL_PROMPTS = ["review of a chair:", "review of a coffee:"]
# Learnable: "great" is preferred to "bad" for every prompt.
PAIRS = [
    PreferencePair(prompt=f"review of a {n}:", chosen=" great.", rejected=" bad.") for n in NOUNS
] * 2
GREAT = ProgrammaticReward(lambda p, c: c.count("great") - c.count("bad"), name="g", version="1")

TINY = dict(
    batch_size=4,
    lr=1e-2,
    beta=0.5,
    max_new_tokens=6,
    eval_prompts=2,
    eval_samples=2,
    eval_points_in_first_epoch=(0.34, 0.67),
)


def _run(tmp_path, tokenizer, name="run", pairs=PAIRS, resume=False, policy=None, **overrides):
    config = DAAConfig(**{**TINY, "epochs": 2, **overrides})
    policy = policy or build_causal_lm("small", tokenizer, seed=0)
    return run_daa(
        tmp_path / name,
        policy=policy,
        tokenizer=tokenizer,
        pairs=pairs,
        gold=GREAT,
        eval_prompts=EVAL_PROMPTS,
        config=config,
        proxy=GREAT if overrides.get("online") else None,
        resume=resume,
    )


def _margin(model, tokenizer) -> float:
    batch = tokenize_pairs(tokenizer, PAIRS[:6])
    with torch.no_grad():
        chosen, _ = sequence_logps(model, batch.chosen)
        rejected, _ = sequence_logps(model, batch.rejected)
    return float((chosen - rejected).mean())


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="eval_points_in_first_epoch"):
        DAAConfig(eval_points_in_first_epoch=(0.0,))
    with pytest.raises(ValueError, match="label_smoothing"):
        DAAConfig(loss="ipo", label_smoothing=0.1)
    with pytest.raises(ValueError, match="beta"):
        DAAConfig(beta=0)


def test_sequence_logps_score_completion_and_eos_only(tiny_tokenizer):
    model = build_causal_lm("small", tiny_tokenizer, seed=0).eval()
    batch = tokenize_pairs(tiny_tokenizer, PAIRS[:2])
    n_tokens = len(tiny_tokenizer(" great.", add_special_tokens=False)["input_ids"]) + 1
    with torch.no_grad():
        logp, n = sequence_logps(model, batch.chosen)
    assert n.tolist() == [n_tokens, n_tokens]
    # Brute force: log p of the completion + EOS token by token from full-sequence logits.
    prompt = tiny_tokenizer(PAIRS[0].prompt, add_special_tokens=False)["input_ids"]
    target = tiny_tokenizer(" great.", add_special_tokens=False)["input_ids"] + [
        tiny_tokenizer.eos_token_id
    ]
    ids = torch.tensor([prompt + target])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].log_softmax(-1)
    naive = sum(float(logits[len(prompt) - 1 + t, tok]) for t, tok in enumerate(target))
    assert float(logp[0]) == pytest.approx(naive, abs=1e-4)


@pytest.mark.parametrize("loss", ["dpo", "ipo", "slic", "rpo"])
def test_loss_falls_and_preference_is_learned(tmp_path, tiny_tokenizer, loss):
    policy = build_causal_lm("small", tiny_tokenizer, seed=0)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    margin0 = _margin(policy, tiny_tokenizer)
    result = _run(tmp_path, tiny_tokenizer, policy=policy, loss=loss, epochs=2)
    train = read_jsonl(result.out_dir / "train.jsonl")
    assert train[-1]["loss"] < train[0]["loss"], [t["loss"] for t in train]
    # IPO's optimum is h = 1/(2β) = 1 (β = 0.5); the others push the margin further.
    assert _margin(result.policy, tiny_tokenizer) > margin0 + 0.5
    changed = [k for k, v in result.policy.state_dict().items() if not torch.equal(v, before[k])]
    assert changed


def test_eval_lines_at_in_epoch_points_and_epoch_ends(tmp_path, tiny_tokenizer):
    result = _run(tmp_path, tiny_tokenizer, epochs=2)
    # 12 pairs / batch 4 = 3 steps per epoch; points 0.34, 0.67 -> steps 2 (ceil 1.02), 3.
    steps = [m["step"] for m in result.metrics]
    assert steps == [0, 2, 3, 6], steps
    base = result.metrics[0]
    assert base["kl"] == pytest.approx(0.0, abs=1e-5)
    assert base["win_rate"] == 0.5  # every row ties with itself
    assert base["epoch_fraction"] == 0.0
    assert result.metrics[-1]["epoch_fraction"] == 2.0
    for m in result.metrics:
        for key in ("method", "step", "epoch_fraction", "kl", "d", "gold", "win_rate", "length"):
            assert key in m, key
    assert result.metrics[-1]["kl"] > 1e-3  # the policy moved away from π0
    assert 0.0 <= result.metrics[-1]["win_rate"] <= 1.0
    summary = json.loads((result.out_dir / "summary.json").read_text())
    assert summary["method"] == "dpo"
    assert summary["length_drift"] == pytest.approx(result.metrics[-1]["length"] - base["length"])
    assert summary["rl_law_fit"]["law"] == "rl"
    assert summary["skipped"] == {
        "identical": 0, "empty_completion": 0, "empty_prompt": 0, "too_long": 0
    }  # fmt: skip


def test_win_rate_compares_rows_with_the_base_and_counts_ties_half():
    from goodhartlab.optimize.daa import _win_rate

    base = [{"gold": 1.0}, {"gold": 2.0}, {"gold": 0.0}, {"gold": 5.0}]
    policy = [{"gold": 2.0}, {"gold": 2.0}, {"gold": -1.0}, {"gold": 6.0}]
    assert _win_rate(policy, base) == (1 + 0.5 + 0 + 1) / 4
    assert _win_rate(base, base) == 0.5


def test_bad_pairs_are_skipped_and_counted(tmp_path, tiny_tokenizer):
    bad = [
        PreferencePair(prompt="review of a book:", chosen=" fine.", rejected=" fine."),
        PreferencePair(prompt="review of a book:", chosen="", rejected=" bad."),
        PreferencePair(prompt="", chosen=" great.", rejected=" bad."),
        PreferencePair(prompt="review of a book:" * 40, chosen=" great.", rejected=" bad."),
    ]
    result = _run(tmp_path, tiny_tokenizer, pairs=PAIRS + bad, epochs=1)
    expected = {"identical": 1, "empty_completion": 1, "empty_prompt": 1, "too_long": 1}
    summary = json.loads((result.out_dir / "summary.json").read_text())
    manifest = json.loads((result.out_dir / "manifest.json").read_text())
    assert summary["skipped"] == expected
    assert manifest["pairs"] == {"given": 16, "used": 12, "skipped": expected}
    assert all(t["loss"] == t["loss"] for t in read_jsonl(result.out_dir / "train.jsonl"))


def test_all_pairs_bad_is_a_clear_error(tmp_path, tiny_tokenizer):
    same = [PreferencePair(prompt="review of a book:", chosen=" a", rejected=" a")]
    with pytest.raises(ValueError, match=r"none of the 1 pairs is usable.*identical"):
        _run(tmp_path, tiny_tokenizer, pairs=same)
    kept, skipped = filter_pairs(same, tiny_tokenizer, None)
    assert kept == [] and skipped["identical"] == 1


def test_resume_equals_uninterrupted(tmp_path, tiny_tokenizer):
    full = _run(tmp_path, tiny_tokenizer, name="full", epochs=2)
    # A run killed after its step-3 checkpoint: delete the later checkpoint and resume.
    part = _run(tmp_path, tiny_tokenizer, name="part", epochs=2)
    run_dir = part.out_dir
    for ckpt in sorted((run_dir / "checkpoints").glob("step_*"))[1:]:
        shutil.rmtree(ckpt)  # keep step 3 only: as if killed before step 6 was saved
    resumed = _run(tmp_path, tiny_tokenizer, name="part", epochs=2, resume=True)
    assert [m["step"] for m in resumed.metrics] == [m["step"] for m in full.metrics]
    for a, b in zip(full.metrics, resumed.metrics, strict=True):
        assert a["gold"] == b["gold"] and a["kl"] == pytest.approx(b["kl"], abs=1e-6)
    for k, v in full.policy.state_dict().items():
        torch.testing.assert_close(resumed.policy.state_dict()[k], v)


def test_a_metrics_line_torn_after_its_checkpoint_is_recomputed(tmp_path, tiny_tokenizer):
    # Issue 17, defect 3: the last checkpoint's evaluation line cut by a kill (or by hand)
    # was never recomputed; the run now goes back to the checkpoint before it.
    full = _run(tmp_path, tiny_tokenizer, name="full", epochs=2)
    part = _run(tmp_path, tiny_tokenizer, name="part", epochs=2)
    metrics = part.out_dir / "metrics.jsonl"
    text = metrics.read_text()
    metrics.write_text(text[: text.rindex("\n", 0, len(text) - 1) + 10])
    resumed = _run(tmp_path, tiny_tokenizer, name="part", epochs=2, resume=True)
    assert [m["step"] for m in resumed.metrics] == [m["step"] for m in full.metrics]
    for a, b in zip(full.metrics, resumed.metrics, strict=True):
        assert a["gold"] == b["gold"] and a["kl"] == pytest.approx(b["kl"], abs=1e-6)
    manifest = json.loads((part.out_dir / "manifest.json").read_text())
    last = full.metrics[-1]["step"]
    assert manifest["resumes"][-1]["from_step"] < last


def test_new_run_refuses_a_used_directory(tmp_path, tiny_tokenizer):
    _run(tmp_path, tiny_tokenizer, epochs=1)
    with pytest.raises(ValueError, match="already holds a run"):
        _run(tmp_path, tiny_tokenizer, epochs=1)


def test_online_mode_runs_rounds_labelled_by_the_proxy(tmp_path, tiny_tokenizer):
    result = _run(
        tmp_path, tiny_tokenizer, online=True, rounds=2, pairs_per_round=8, epochs=1,
        eval_points_in_first_epoch=(0.5,),
    )  # fmt: skip
    lines = result.metrics
    assert [m["round"] for m in lines] == [0, 1, 1, 2]
    assert [m["step"] for m in lines] == [0, 1, 2, 4]
    assert all(m["proxy"] is not None for m in lines)
    for r in (1, 2):
        path = result.out_dir / "rounds" / f"round_{r}.jsonl"
        for row in map(json.loads, path.read_text().splitlines()):
            assert row["meta"]["proxy_chosen"] > row["meta"]["proxy_rejected"]
    assert result.metrics[0]["method"] == "online-dpo"
    summary = json.loads((result.out_dir / "summary.json").read_text())
    manifest = json.loads((result.out_dir / "manifest.json").read_text())
    kept = sum(r["pairs"] for r in manifest["rounds"].values())
    assert kept + sum(summary["skipped"].values()) == 2 * 8  # every sampled pair accounted for


def test_online_needs_a_proxy(tmp_path, tiny_tokenizer):
    with pytest.raises(ValueError, match="proxy"):
        run_daa(
            tmp_path / "x",
            policy=build_causal_lm("small", tiny_tokenizer, seed=0),
            tokenizer=tiny_tokenizer,
            pairs=PAIRS,
            gold=GREAT,
            eval_prompts=EVAL_PROMPTS,
            config=DAAConfig(online=True),
        )


def test_cli_trains_and_reports(tmp_path, tiny_tokenizer, capsys, monkeypatch):
    from types import SimpleNamespace

    from goodhartlab import cli
    from goodhartlab.data import write_pairs

    policy_dir = tmp_path / "policy"
    build_causal_lm("small", tiny_tokenizer, seed=0).save_pretrained(policy_dir)
    tiny_tokenizer.save_pretrained(policy_dir)
    fake = SimpleNamespace(
        policy_path=policy_dir,
        tokenizer=tiny_tokenizer,
        gold=GREAT,
        eval_prompts=EVAL_PROMPTS,
        train_prompts=[p.prompt for p in PAIRS],
        max_new_tokens=6,
    )
    monkeypatch.setattr(cli, "_testbed", lambda args: fake)
    pairs_file = tmp_path / "pairs.jsonl"
    write_pairs(PAIRS, pairs_file)
    out = tmp_path / "run"
    argv = (
        f"dpo --loss ipo --beta 0.5 --pairs {pairs_file} --batch-size 4 --eval-prompts 2 "
        f"--eval-points 0.5 --out {out}"
    ).split()
    assert cli.main(argv) == 0
    assert "final" in capsys.readouterr().out
    assert [m["step"] for m in read_jsonl(out / "metrics.jsonl")] == [0, 2, 3]
    assert cli.main(argv) == 2  # a used directory is refused with a clear error
    assert cli.main([*argv, "--resume"]) == 0
    assert cli.main(["dpo", "--out", str(tmp_path / "x")]) == 2  # no --pairs


def test_online_resume_equals_uninterrupted(tmp_path, tiny_tokenizer):
    online = dict(online=True, rounds=2, pairs_per_round=8, epochs=1)
    full = _run(tmp_path, tiny_tokenizer, name="full", **online)
    part = _run(tmp_path, tiny_tokenizer, name="part", **online)
    # Kill after round 1's last checkpoint (step 2): round 2 is resampled from that policy.
    for ckpt in sorted((part.out_dir / "checkpoints").glob("step_*")):
        if ckpt.name != "step_000002":
            shutil.rmtree(ckpt)
    (part.out_dir / "rounds" / "round_2.jsonl").unlink()
    resumed = _run(tmp_path, tiny_tokenizer, name="part", resume=True, **online)
    assert [m["step"] for m in resumed.metrics] == [m["step"] for m in full.metrics]
    for a, b in zip(full.metrics, resumed.metrics, strict=True):
        assert a["gold"] == b["gold"] and a["proxy"] == b["proxy"]
    assert (full.out_dir / "rounds" / "round_2.jsonl").read_text() == (
        part.out_dir / "rounds" / "round_2.jsonl"
    ).read_text()
