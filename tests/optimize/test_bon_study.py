"""The best-of-n study (optimize/bon.py) and its score cache (optimize/scores.py): scoring,
the run directory, the CLI. The curves themselves: tests/measure/test_bon_curves.py."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from goodhartlab.measure.bon_curves import DEFAULT_AGGREGATORS
from goodhartlab.models.tiny import build_causal_lm, build_reward_model
from goodhartlab.optimize.bon import BonStudyConfig, run_bon_study
from goodhartlab.optimize.pool import PoolError, build_pool
from goodhartlab.optimize.scores import (
    cached_scores,
    reward_model_source,
    save_scores,
    score_path,
    score_pool,
    score_rows,
    scorer_source,
)
from goodhartlab.report.plots import plot_bon_curves
from goodhartlab.rewards import ProgrammaticReward

PROMPTS = ["review of a phone:", "review of a book: the", "review of a song: very", "a"]
P, N = 4, 16


def words(prompt: str, completion: str) -> float:
    return float(len(completion.split()))


GOLD = ProgrammaticReward(words, name="words", version="1")


class CountingScorer:
    """A gold-like scorer that counts the items it scored."""

    name = "counting"
    version = "1"

    def __init__(self):
        self.items = 0

    def score(self, prompts, completions):
        self.items += len(completions)
        return torch.tensor([len(c) % 7 for c in completions], dtype=torch.float32)


@pytest.fixture(scope="module")
def policy(tiny_tokenizer):
    model = build_causal_lm("small", tiny_tokenizer, seed=0).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.5, generator=gen)
        model.model.embed_tokens.weight[tiny_tokenizer.eos_token_id] *= 1.5
    return model


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory, policy, tiny_tokenizer):
    path = tmp_path_factory.mktemp("policy")
    policy.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def rm_dirs(tmp_path_factory, tiny_tokenizer):
    """Four tiny reward models (seeds 0-3) saved with their tokenizer."""
    root = tmp_path_factory.mktemp("rms")
    dirs = []
    for seed in range(4):
        d = root / f"rm{seed}"
        build_reward_model("small", tiny_tokenizer, seed=seed).save_pretrained(d)
        tiny_tokenizer.save_pretrained(d)
        dirs.append(d)
    return dirs


@pytest.fixture(scope="module")
def pool(tmp_path_factory, policy, tiny_tokenizer):
    path = tmp_path_factory.mktemp("pool")
    return build_pool(path, policy, tiny_tokenizer, PROMPTS, N, max_new_tokens=10, seed=0)


# ---------------------------------------------------------------- scoring


def test_score_cache_reused(tmp_path, policy, tiny_tokenizer):
    pool = build_pool(tmp_path / "pool", policy, tiny_tokenizer, PROMPTS, N, max_new_tokens=10)
    scorer = CountingScorer()
    first = score_pool(pool, scorer)
    assert first.shape == (P, N) and scorer.items == P * N
    again = score_pool(pool, scorer)
    assert scorer.items == P * N  # from the cache, not rescored
    assert torch.equal(first, again)
    # A new version of the scorer is a new key: rescored.
    scorer.version = "2"
    score_pool(pool, scorer)
    assert scorer.items == 2 * P * N
    # A cache file cut short is detected and recomputed, never used.
    cache = score_path(pool, scorer_source(scorer))
    cache.write_bytes(cache.read_bytes()[:-10])
    assert torch.equal(score_pool(pool, scorer), first)  # same function of the text
    assert scorer.items == 3 * P * N


def test_scores_of_row_blocks_put_together_are_the_whole_pools_scores(
    tmp_path, policy, tiny_tokenizer, rm_dirs
):
    # A reward model batches each score call longest-first: blocks that start at multiples
    # of batch_size make the very calls a whole-pool scoring makes, so the same floats.
    pool = build_pool(tmp_path / "pool", policy, tiny_tokenizer, PROMPTS, N, max_new_tokens=10)
    source = reward_model_source(rm_dirs[0])
    whole = score_pool(pool, source, batch_size=4)
    rows, seen = P * N, []
    blocks = [range(0, 8), range(8, 12), range(12, rows)]
    parts = [
        score_rows(pool, source, b, batch_size=4, on_batch=lambda *d: seen.append(d))
        for b in blocks
    ]
    assert torch.equal(torch.cat(parts).reshape(P, N), whole)
    assert seen[:3] == [(4, 8), (8, 8), (4, 4)]
    with pytest.raises(ValueError, match="a multiple of batch_size=4"):
        score_rows(pool, source, range(2, 8), batch_size=4)
    # Cached as score_pool caches it: read back without scoring.
    score_path(pool, source).unlink()
    save_scores(pool, source, torch.cat(parts))
    assert torch.equal(cached_scores(pool, source), whole)


def test_changed_reward_model_is_rescored(tmp_path, pool, tiny_tokenizer):
    d = tmp_path / "rm"
    build_reward_model("small", tiny_tokenizer, seed=0).save_pretrained(d)
    tiny_tokenizer.save_pretrained(d)
    s1 = reward_model_source(d)
    r1 = score_pool(pool, s1)
    build_reward_model("small", tiny_tokenizer, seed=1).save_pretrained(d)  # retrained
    s2 = reward_model_source(d)
    assert s1.key != s2.key
    r2 = score_pool(pool, s2)
    assert not torch.equal(r1, r2)


def test_one_model_under_two_names_is_scored_once(tmp_path, pool, rm_dirs, monkeypatch):
    from goodhartlab.rewards import RewardModel

    calls = []
    score = RewardModel.score
    monkeypatch.setattr(
        RewardModel, "score", lambda self, *a, **k: calls.append(1) or score(self, *a, **k)
    )
    a = score_pool(pool, reward_model_source(rm_dirs[2], name="single"), batch_size=P * N)
    b = score_pool(pool, reward_model_source(rm_dirs[2], name="ens.member0"), batch_size=P * N)
    assert len(calls) == 1 and torch.equal(a, b)


def test_vocabulary_mismatch_is_a_clear_error(tmp_path, pool, tiny_tokenizer):
    from transformers import PreTrainedTokenizerFast

    d = tmp_path / "rm_bad"
    build_reward_model("small", tiny_tokenizer, seed=0).save_pretrained(d)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tiny_tokenizer.backend_tokenizer, pad_token="<pad>", eos_token="<eos>"
    )
    tok.add_tokens([f"extra{i}" for i in range(50)])  # more ids than the model has rows
    tok.save_pretrained(d)
    with pytest.raises(ValueError, match=r"rm_bad.*vocabulary mismatch"):
        score_pool(pool, reward_model_source(d))
    assert not (pool.path / "scores").exists() or not any(
        "rm_bad" in p.name for p in (pool.path / "scores").iterdir()
    )


# ---------------------------------------------------------------- curves


def test_config_bad_input():
    with pytest.raises(ValueError, match="ns"):
        BonStudyConfig(pool_size=16, ns=[1, 4, 32])
    with pytest.raises(ValueError, match="pool_size"):
        BonStudyConfig(pool_size=0)
    with pytest.raises(ValueError, match="unknown aggregator"):
        BonStudyConfig(aggregators={"max": {}})


# ---------------------------------------------------------------- the study


def _config(**kw):
    return BonStudyConfig(pool_size=N, max_new_tokens=10, n_boot=200, chunk_size=32, **kw)


def test_run_bon_study_writes_the_run_directory(tmp_path, policy_dir, rm_dirs, monkeypatch):
    ens_dir = tmp_path / "ens"
    ens_dir.mkdir()
    (ens_dir / "ensemble.json").write_text(
        json.dumps({"members": [{"path": str(d)} for d in rm_dirs[1:]]})
    )
    out = tmp_path / "run"
    kw = dict(
        policy=policy_dir, prompts=PROMPTS, gold=GOLD, proxies=[rm_dirs[0]], ensembles=[ens_dir]
    )
    result = run_bon_study(out, config=_config(), plot=plot_bon_curves, **kw)

    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    methods = {x["method"] for x in lines}
    assert methods == (
        {"rm0", "oracle"}
        | {f"ens/{a}" for a in DEFAULT_AGGREGATORS}
        | {f"ens/member{i}" for i in range(3)}
        | {"ens/members_avg"}
    )
    assert len(lines) == len(methods) * 5
    for x in lines:
        assert {"method", "n", "kl", "d", "gold", "gold_lo", "gold_hi", "proxy", "length"} <= set(x)
        if x["n"] == 1:
            assert x["gold"] == 0
    summary = json.loads((out / "summary.json").read_text())
    for m in methods:
        s = summary["methods"][m]
        for key in (
            "gold_peak",
            "n_peak",
            "d_peak",
            "gold_final",
            "drop",
            "drop_lo",
            "drop_hi",
            "alpha",
            "beta",
            "r2",
        ):
            assert key in s, (m, key)
    assert (out / "plots" / "bon.png").stat().st_size > 0 and (out / "plots" / "bon.svg").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert (out / "config.yaml").is_file() and (out / "samples.jsonl").is_file()
    assert result.pool.pool_size == N

    # A rerun (e.g. after an interruption, or to refresh plots) resamples and rescores
    # nothing: the pool and every score come from disk.
    def fail(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr("goodhartlab.optimize.pool.sample_token_ids", fail)
    monkeypatch.setattr("goodhartlab.rewards.RewardModel.score", fail)
    again = run_bon_study(out, config=_config(), **kw)
    assert again.summary == result.summary

    # Another pool size into the finished directory is refused, and nothing of the finished
    # run is overwritten (issue 17: config.yaml and the manifest were replaced first).
    before = {f: (out / f).read_bytes() for f in ("config.yaml", "manifest.json", "summary.json")}
    monkeypatch.undo()
    with pytest.raises(PoolError, match="other settings"):
        other = BonStudyConfig(pool_size=N // 2, max_new_tokens=10, n_boot=200, chunk_size=32)
        run_bon_study(out, config=other, **kw)
    assert {f: (out / f).read_bytes() for f in before} == before


def test_run_bon_study_bad_input(tmp_path, policy_dir, rm_dirs):
    kw = dict(policy=policy_dir, gold=GOLD, proxies=[rm_dirs[0]])
    with pytest.raises(ValueError, match="at least one prompt"):
        run_bon_study(tmp_path / "r", prompts=[], config=_config(), **kw)
    with pytest.raises(ValueError, match="prompts_count"):
        run_bon_study(tmp_path / "r", prompts=PROMPTS, config=_config(prompts_count=9), **kw)
    with pytest.raises(ValueError, match="at least one proxy"):
        run_bon_study(
            tmp_path / "r", prompts=PROMPTS, policy=policy_dir, gold=GOLD, config=_config()
        )


def test_cli_bon(tmp_path, policy_dir, rm_dirs, capsys):
    from goodhartlab.cli import main

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    out = tmp_path / "run"
    args = [
        "bon",
        "--policy",
        str(policy_dir),
        "--prompts",
        str(prompts),
        "--gold",
        str(rm_dirs[3]),
        "--proxies",
        str(rm_dirs[0]),
        "--ensemble",
        str(rm_dirs[1]),
        str(rm_dirs[2]),
        "--pool-size",
        "8",
        "--max-new-tokens",
        "8",
        "--n-boot",
        "100",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert {"rm0", "ensemble0/wco", "ensemble0/uwo", "oracle"} <= set(summary["methods"])
    assert "n_peak" in capsys.readouterr().out
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["config"]["standardize_members"] is True
    # --no-standardize-members: Coste et al.'s raw aggregation, on the same pool (nothing resampled).
    raw = tmp_path / "raw"
    raw_args = [*args[:-1], str(raw), "--pool", str(out / "pool"), "--no-standardize-members"]
    assert main(raw_args) == 0
    resolved = yaml.safe_load((raw / "config.yaml").read_text())
    assert resolved["config"]["standardize_members"] is False
    members = json.loads((raw / "summary.json").read_text())["methods"]
    assert members["ensemble0/member0"] == summary["methods"]["ensemble0/member0"]

    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    assert main([*args[:3], "--prompts", str(empty), *args[5:-1], str(tmp_path / "r2")]) == 2
    assert "no prompts" in capsys.readouterr().err
    assert main([*args[:-4], "--ns", "1,64", "--out", str(tmp_path / "r3")]) == 2
    assert "larger than pool_size" in capsys.readouterr().err
