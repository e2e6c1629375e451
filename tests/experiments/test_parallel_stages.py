"""The testbed, proxies and best-of-n stages in pieces on two worker processes give the files
that one process gives, and a rerun after a kill keeps the pieces already written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from goodhartlab.experiments import parallel_stages
from goodhartlab.experiments.parallel_stages import (
    StageWorkers,
    build_testbed,
    pretrain_seeds_beside_policy,
    sample_and_score_pool,
)
from goodhartlab.experiments.proxies import train_proxies
from goodhartlab.experiments.study import ProxyConfig
from goodhartlab.optimize.bon import BonStudyConfig, run_bon_study
from goodhartlab.testbeds import get_testbed
from tiny_study import TESTBED_OPTIONS

#: A toy_text world small enough to build in seconds (the study tests').
TINY = TESTBED_OPTIONS
PROXIES = dict(pairs=60, noise=0.25, size="small", seeds=(0, 1), pretrain_seeds=True, epochs=1)


def _spec(cache: Path):
    # (imported through the module: pytest would collect a Test* class as tests)
    return parallel_stages.TestbedSpec("toy_text", json.dumps(TINY, sort_keys=True), str(cache))


def _two_workers(tb, cache: Path, shown: list | None = None) -> StageWorkers:
    show = (lambda stage, text: shown.append((stage, text))) if shown is not None else None
    return StageWorkers(tb, _spec(cache), workers=2, threads=1, show=show)


def _files(root: Path, pattern: str) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.glob(pattern)) if p.is_file()
    }


def _scores(pool_dir: Path) -> dict[str, tuple]:
    """Each score cache: its reward's key, the pool's digest and the scores (the label a
    cache carries is the caller's name for the reward, not part of what it is)."""
    from safetensors import safe_open

    out = {}
    for path in sorted((pool_dir / "scores").glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            out[path.name] = (meta["key"], meta["pool"], f.get_tensor("scores").tolist())
    return out


@pytest.fixture(scope="module")
def here(tmp_path_factory):
    """The tiny testbed, built in this process (policy, own backbone, pretrain seed 1)."""
    cache = tmp_path_factory.mktemp("here")
    tb = get_testbed("toy_text", TINY, cache_dir=cache, progress=False)
    build_testbed(tb, StageWorkers(tb), "small", [0, 1])
    return tb


def test_testbed_built_on_two_workers_is_the_one_built_in_one_process(here, tmp_path):
    cache = tmp_path / "cache"
    tb = get_testbed("toy_text", TINY, cache_dir=cache, progress=False)
    assert not tb.is_built("policy") and not tb.is_built("backbone", "small", 1)
    shown: list = []
    workers = _two_workers(tb, cache, shown)
    try:
        got = build_testbed(tb, workers, "small", [0, 1])
    finally:
        workers.close()
    assert got == {"policy": str(tb.policy_path), "backbone": str(tb.backbone_path("small"))}
    assert tb.is_built("tokenizer") and tb.is_built("policy")
    # Each model is seeded by its own seed: the same weights, whichever process built it.
    for name in ("lm-medium-seed0-steps40", "lm-small-seed0-steps40", "lm-small-seed1-steps40"):
        assert (tb.root / name / "model.safetensors").read_bytes() == (
            here.root / name / "model.safetensors"
        ).read_bytes(), name
    # The stage said what it built as it went: the policy and the three backbone builds
    # (seed 0 is the testbed's own, found built once that one is).
    assert shown[-1] == ("testbed", "policy 1/1 · backbones 3/3")
    assert shown[0] == ("testbed", "policy 0/1 · backbones 0/3")


def test_two_workers_train_the_members_and_build_the_pool_one_process_builds(
    here, tmp_path, monkeypatch
):
    # 40 rows scored 8 at a time: each reward in two blocks (rows 0-23 and 24-39), one per
    # worker, put together here.
    config = BonStudyConfig(
        pool_size=8,
        prompts_count=5,
        chunk_size=8,
        score_batch_size=8,
        max_new_tokens=here.max_new_tokens,
        n_boot=20,
    )

    # One process: train_proxies and run_bon_study on their own.
    alone = train_proxies(here, tmp_path / "alone", **PROXIES, progress=False)
    members = [str(p) for p in alone.paths]
    study = dict(
        policy=here.policy_path,
        tokenizer=here.tokenizer,
        prompts=here.eval_prompts,
        gold=here.gold,
        proxies={"single": members[0]},
        ensembles={"ensemble": members},
        config=config,
    )
    bon_alone = run_bon_study(tmp_path / "bon-alone", **study)

    # Two workers: pairs, the members, the pool's chunks and its scores in pieces.
    shown: list = []
    workers = _two_workers(here, here.root.parent.parent, shown)
    try:
        two = train_proxies(here, tmp_path / "two", **PROXIES, workers=workers)
        pool_dir = tmp_path / "bon-two" / "pool"
        sample_and_score_pool(workers, pool_dir, here, config, [str(p) for p in two.paths])
    finally:
        workers.close()
    assert two.metrics == alone.metrics
    assert two.pairs_path.read_bytes() == alone.pairs_path.read_bytes()
    for a, b in zip(alone.paths, two.paths, strict=True):
        assert _files(b, "*") == _files(a, "*"), b.name  # weights, tokenizer, goodhart_rm.json
    index = json.loads((two.ensemble_dir / "ensemble.json").read_text())
    assert index == json.loads((alone.ensemble_dir / "ensemble.json").read_text())
    stages = {stage for stage, _ in shown}
    assert stages == {"proxies", "bon"}
    assert ("proxies", "pairs 60/60 · members 2/2") in shown
    assert shown[-1] == ("bon", "pool chunks 5/5 · rows scored 120/120")  # gold + 2 members

    # The pool sampled in shares is byte-identical, and so are its scores; run_bon_study
    # then finds both cached: it samples and scores nothing, and writes the same summary.
    assert _files(pool_dir, "samples/**/*") == _files(bon_alone.pool.path, "samples/**/*")
    assert _scores(pool_dir) == _scores(bon_alone.pool.path)
    import goodhartlab.optimize.pool as pool_module
    import goodhartlab.optimize.scores as scores_module

    monkeypatch.setattr(pool_module, "sample_token_ids", lambda *a, **k: pytest.fail("sampled"))
    monkeypatch.setattr(scores_module, "_write_scores", lambda *a, **k: pytest.fail("scored"))
    bon_two = run_bon_study(tmp_path / "bon-two", **study)
    assert bon_two.summary == bon_alone.summary
    monkeypatch.undo()

    # A proxies stage killed after member 0 was saved: the rerun trains member 1 only, and
    # gives the same ensemble.
    (two.ensemble_dir / "ensemble.json").unlink()
    shutil.rmtree(two.paths[1])
    trained = []
    train_member = parallel_stages.train_member

    def spy(testbed, pairs_path, size, seed, config, out_dir):
        trained.append(Path(out_dir).name)
        return train_member(testbed, pairs_path, size, seed, config, out_dir)

    monkeypatch.setattr(parallel_stages, "train_member", spy)
    again = train_proxies(here, tmp_path / "two", **PROXIES, progress=False)
    assert trained == ["member_1"]
    assert again.metrics == alone.metrics
    assert _files(again.paths[1], "*") == _files(alone.paths[1], "*")


def test_the_testbed_stage_builds_the_pretrain_seed_backbones_that_fit_beside_the_policy():
    # toy_text: the policy ~80 s, a small backbone ~28 s: on two workers the second worker
    # has room for 80 // 28 = 2 backbones (the testbed's own, seed 0, and seed 1).
    calibration = {"policy": 80.0, "backbone_small": 28.0}
    proxies = ProxyConfig(seeds=[0, 1, 2, 3, 4], pretrain_seeds=True)
    assert pretrain_seeds_beside_policy(proxies, calibration, workers=2) == [0, 1]
    assert pretrain_seeds_beside_policy(proxies, calibration, workers=3) == [0, 1, 2, 3, 4]
    assert pretrain_seeds_beside_policy(proxies, calibration, workers=1) == []
    no_seeds = ProxyConfig(seeds=[0, 1, 2, 3, 4], pretrain_seeds=False)
    assert pretrain_seeds_beside_policy(no_seeds, calibration, workers=2) == []
    assert pretrain_seeds_beside_policy(proxies, {"testbed_build": 110.0}, workers=2) == []


def test_row_blocks_start_at_multiples_of_the_score_batch():
    assert parallel_stages._blocks(40, 2, 8) == [(0, 24), (24, 40)]
    assert parallel_stages._blocks(40, 2, 256) == [(0, 40)]  # one batch: one block
    assert parallel_stages._blocks(1000, 3, 256) == [(0, 512), (512, 768), (768, 1000)]


def test_a_stage_reports_its_pieces_by_kind_of_work():
    tally = parallel_stages._Tally({"pairs": ("pairs", 6000), "member/0": ("members", 1)})
    tally.add({"member/1": ("members", 1)})
    assert tally.text() == "pairs 0/6,000 · members 0/2"
    tally.report("pairs", 1024, 2048)  # half of the prompts
    tally.finish("member/1")
    assert tally.text() == "pairs 3,000/6,000 · members 1/2"
    tally.finish("pairs")
    assert tally.text() == "pairs 6,000/6,000 · members 1/2"
