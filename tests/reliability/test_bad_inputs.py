"""Bad inputs get one clear line naming the flag, file, line or field, before any work
and without touching what exists (issue 17: the inputs that crashed or passed silently)."""

from __future__ import annotations

import json

import pytest
import torch

from goodhartlab.cli import _read_prompts, main
from goodhartlab.data import read_pairs
from goodhartlab.data.schema import MAX_TEXT_CHARS, PreferencePair


def _err(capsys) -> str:
    return capsys.readouterr().err


def _pairs_file(tmp_path, rows=None):
    path = tmp_path / "pairs.jsonl"
    rows = rows or [{"prompt": "p", "chosen": " a", "rejected": " b"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# -- raw tracebacks that became one line ------------------------------------------------------


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["train-rm", "--data", "DATA", "--size", "huge", "--out", "OUT"], "--size"),
        (["testbed", "--backbones", "huge"], "--backbones"),
    ],
)
def test_an_unknown_backbone_size_is_refused_before_any_build(tmp_path, capsys, argv, flag):
    argv = [str(_pairs_file(tmp_path)) if a == "DATA" else a for a in argv]
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    assert main([*argv, "--cache-dir", str(tmp_path / "cache")]) == 2
    err = _err(capsys)
    assert f"{flag}: testbed 'toy_text' has backbone sizes small" in err and "'huge'" in err
    assert not (tmp_path / "cache").exists()  # nothing was built


def test_out_onto_an_existing_file_is_refused_before_training(tmp_path, capsys):
    out = tmp_path / "taken"
    out.write_text("keep me")
    data = _pairs_file(tmp_path)
    argv = ["train-rm", "--data", str(data), "--out", str(out), "--cache-dir", str(tmp_path)]
    assert main(argv) == 2
    assert f"--out: {out} is a file" in _err(capsys)
    assert out.read_text() == "keep me"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without CUDA")
def test_cuda_on_a_cpu_only_torch_is_one_clear_error(tmp_path, capsys):
    data = _pairs_file(tmp_path)
    argv = ["train-rm", "--data", str(data), "--out", str(tmp_path / "o"), "--device", "cuda"]
    assert main(argv) == 2
    assert "--device: 'cuda', but this torch" in _err(capsys)
    assert main([*argv[:-1], "nonsense"]) == 2
    assert "--device: 'nonsense' is not a torch device" in _err(capsys)


def test_an_unexpected_error_is_a_short_message_with_the_log(tmp_path, capsys, monkeypatch):
    import goodhartlab.cli as cli

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "cmd_list", broken)
    monkeypatch.setenv("GOODHART_CACHE", str(tmp_path))
    monkeypatch.delenv("GOODHART_DEBUG", raising=False)
    assert main(["list"]) == 1
    err = _err(capsys)
    assert "goodhart list: internal error: RuntimeError: a bug" in err
    (log,) = (tmp_path / "errors").glob("list-*.log")
    assert str(log) in err and "Traceback" in log.read_text()
    monkeypatch.setenv("GOODHART_DEBUG", "1")
    with pytest.raises(RuntimeError, match="a bug"):
        main(["list"])


# -- silent acceptance that became an error ---------------------------------------------------


@pytest.mark.parametrize(
    "content, expected",
    [
        ('{"prompt": null}\n', r':1: "prompt" must be a non-empty string, got None'),
        ('{"prompt": "ok"}\n{"prompt": 42}\n', r':2: "prompt" must be a non-empty string, got 42'),
        ('{"prompt": {"text": "x"}}\n', r':1: "prompt" must be a non-empty string'),
    ],
)
def test_prompts_that_are_not_strings_name_the_line(tmp_path, content, expected):
    path = tmp_path / "prompts.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=expected):
        _read_prompts(str(path))


def test_a_json_prompt_list_of_numbers_and_bad_bytes_are_refused(tmp_path):
    path = tmp_path / "prompts.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON list of non-empty prompt strings"):
        _read_prompts(str(path))
    path = tmp_path / "prompts.txt"
    path.write_bytes(b"fine\n\xff\xfe broken\n")
    with pytest.raises(ValueError, match=r"prompts\.txt: not UTF-8 text \(byte 5\)"):
        _read_prompts(str(path))
    path.write_text("x" * (MAX_TEXT_CHARS + 1))
    with pytest.raises(ValueError, match="prompt 1 is longer than 100,000 characters"):
        _read_prompts(str(path))


def test_pairs_with_bad_bytes_or_an_enormous_line_name_the_line(tmp_path):
    path = _pairs_file(tmp_path)
    path.write_bytes(path.read_bytes() + b'{"prompt": "\xff"}\n')
    with pytest.raises(ValueError, match=r"pairs\.jsonl: line 2: not UTF-8 text"):
        read_pairs(path)
    big = {"prompt": "p", "chosen": "a" * (MAX_TEXT_CHARS + 1), "rejected": "b"}
    path = _pairs_file(tmp_path, [big])
    with pytest.raises(ValueError, match=r"line 1.*chosen.*at most 100000 characters"):
        read_pairs(path)


def test_pairs_without_any_preference_do_not_train(tiny_tokenizer):
    from goodhartlab.models.tiny import build_reward_model
    from goodhartlab.train.rm import RMTrainConfig, train_reward_model

    ties = [PreferencePair(prompt="", chosen="", rejected="") for _ in range(8)]
    model = build_reward_model("small", tiny_tokenizer, seed=0)
    with pytest.raises(ValueError, match="in all 8 pairs chosen equals rejected"):
        train_reward_model(ties, tiny_tokenizer, model, RMTrainConfig(epochs=1))


def test_negative_pair_counts_name_the_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["data", "--pairs", "-5", "--out", "x.jsonl"])
    assert e.value.code == 2 and "--pairs: expected at least 1, got -5" in _err(capsys)


@pytest.mark.parametrize("kind", [None, "rl"])
def test_report_is_built_only_in_a_study_directory(tmp_path, capsys, kind):
    run = tmp_path / "somewhere"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    if kind is not None:
        (run / "manifest.json").write_text(json.dumps({"kind": kind}))
    before = sorted(p.name for p in run.iterdir())
    assert main(["report", str(run)]) == 2
    err = _err(capsys)
    assert ("no manifest.json" if kind is None else "holds a run of kind 'rl'") in err
    assert sorted(p.name for p in run.iterdir()) == before  # nothing written


def test_a_study_with_an_unknown_proxy_size_fails_at_load(tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            ["run", "proxies.size=huge", "cache_dir=" + str(tmp_path / "c"), "--run-dir", str(run)]
        )
        == 2
    )
    assert "proxies.size: testbed 'toy_text' has backbone sizes" in _err(capsys)
    assert not run.exists() and not (tmp_path / "c").exists()


def test_run_methods_unknown_or_with_resume_fails_before_writing(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["run", "par-shaping", "cache_dir=" + str(tmp_path / "c"), "--run-dir", str(run)]
    assert main([*argv, "--methods", "rloo-par,rloo-nope"]) == 2
    assert "--methods: rloo-nope not among rl.methods" in _err(capsys)
    assert main(["run", "--resume", str(run), "--methods", "rloo-par"]) == 2
    assert "--methods with --resume" in _err(capsys)
    assert not run.exists() and not (tmp_path / "c").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without CUDA")
def test_a_study_on_cuda_without_cuda_fails_before_writing(tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(["run", "device=cuda", "cache_dir=" + str(tmp_path / "c"), "--run-dir", str(run)]) == 2
    )
    assert "device: 'cuda', but this torch" in _err(capsys)
    assert not run.exists() and not (tmp_path / "c").exists()


@pytest.mark.parametrize("command", ["bon", "rl"])
def test_zero_new_tokens_is_refused_before_any_build(tmp_path, capsys, command):
    # Issue 17: `--max-new-tokens 0` silently became 64.
    cache = tmp_path / "cache"
    argv = [
        command,
        "--max-new-tokens",
        "0",
        "--cache-dir",
        str(cache),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 2
    assert "max_new_tokens" in _err(capsys)
    assert not cache.exists()


def test_wrong_typed_testbed_options_fail_at_load_leaving_no_cache(tmp_path, capsys):
    # Issue 17: a wrong-typed option failed after 151 s of building, leaving a cache key.
    cache = tmp_path / "cache"
    argv = ["run", "testbed_options.policy_steps=many", f"cache_dir={cache}"]
    assert main([*argv, "--run-dir", str(tmp_path / "run")]) == 2
    assert "policy_steps" in _err(capsys)
    assert not cache.exists() and not (tmp_path / "run").exists()
