"""Tests for goodhartlab.measure.rm_eval (``goodhart eval-rm``) and the rows it reads.

The reward-bench agreement tests import the reference from the ``rewardbench`` 0.1.4 wheel,
installed with ``pip install --no-deps rewardbench==0.1.4`` (its dependencies would replace
our transformers; .ci/run installs it so). Its ``rewardbench.utils`` imports fastchat, datasets
and the hub at import time, so the functions compared against are compiled from the
installed file's own source, with only the names they use (numpy, pandas, datasets).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from goodhartlab.cli import main
from goodhartlab.data.bench_rows import read_bench_rows
from goodhartlab.measure.rm_eval import (
    METRICS_VERSION,
    REWARDBENCH_SECTIONS,
    RowScores,
    evaluate_rm,
    rm_eval_metrics,
    score_rows,
)
from goodhartlab.registry import REWARD_SOURCES
from goodhartlab.rewards import ProgrammaticReward, RewardModel

# ----------------------------------------------------------------------------------------
# the reference: rewardbench 0.1.4


def _rewardbench_dir() -> Path:
    spec = importlib.util.find_spec("rewardbench")  # finds the package without importing it
    if spec is None or spec.origin is None:
        if os.environ.get("GOODHART_REQUIRE_REWARDBENCH"):
            pytest.fail("rewardbench is not installed (pip install --no-deps rewardbench==0.1.4)")
        pytest.skip("rewardbench 0.1.4 not installed: pip install --no-deps rewardbench==0.1.4")
    return Path(spec.origin).parent


def _rewardbench_constants():
    """rewardbench/constants.py (plain dicts), loaded without the package's __init__."""
    path = _rewardbench_dir() / "constants.py"
    spec = importlib.util.spec_from_file_location("_rewardbench_constants", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rewardbench_function(name: str, **names):
    """The function ``name`` of the installed rewardbench/utils.py, compiled from its source
    with only ``names`` as globals (its module imports fastchat and the hub)."""
    path = _rewardbench_dir() / "utils.py"
    tree = ast.parse(path.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    namespace = dict(names)
    exec(compile(ast.Module([node], type_ignores=[]), str(path), "exec"), namespace)
    return namespace[name]


# ----------------------------------------------------------------------------------------
# helpers


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


#: A programmatic reward for the tests: the number in the completion's first word, e.g.
#: " 3 ..." scores 3, so every score (and tie) is chosen by the row.
def _number(prompt: str, completion: str) -> float:
    return float(completion.split()[0])


NUMBER = ProgrammaticReward(_number, name="number", version="1")


@pytest.fixture
def number_reward():
    """``--reward number`` in the reward_source registry, as a plugin would register it."""
    REWARD_SOURCES.register("test_number", lambda device="cpu": NUMBER, description="test")
    yield "test_number"
    REWARD_SOURCES.unregister("test_number")


def _rb_rows() -> list[dict]:
    """Rows of four RewardBench subsets (two sections) and one best-of-4 row; the scores are
    the leading numbers, ties included."""
    return [
        {"prompt": "q1", "chosen": " 3 ab", "rejected": " 1 abcd", "subset": "alpacaeval-easy"},
        {"prompt": "q2", "chosen": " 1 abcd", "rejected": " 2 ab", "subset": "alpacaeval-easy"},
        {
            "prompt": "q3",
            "chosen": " 2 abcdefghij",
            "rejected": " 2 abcdefghijk",
            "subset": "alpacaeval-easy",
        },
        {"prompt": "q4", "chosen": " 5 a", "rejected": " 4 aa", "subset": "mt-bench-easy"},
        {"prompt": "q5", "chosen": " 0 x", "rejected": " 4 yy", "subset": "mt-bench-easy"},
        {"prompt": "q6", "chosen": " 7 xx", "rejected": " 6 xx", "subset": "llmbar-natural"},
        {
            "prompt": "q7",
            "chosen": [" 9 long answer"],
            "rejected": [" 9 s", " 3 t", " 9 u"],
            "subset": "mt-bench-hard",
        },
    ]


# ----------------------------------------------------------------------------------------
# agreement with reward-bench


def test_section_map_is_rewardbench_0_1_4s():
    constants = _rewardbench_constants()
    assert dict(REWARDBENCH_SECTIONS.example_counts) == constants.EXAMPLE_COUNTS
    assert {k: list(v) for k, v in REWARDBENCH_SECTIONS.subset_mapping.items()} == (
        constants.SUBSET_MAPPING
    )


def test_section_scores_equal_rewardbenchs_calculate_scores_per_section():
    from goodhartlab.core.rm_metrics import section_scores, section_total

    constants = _rewardbench_constants()
    theirs = _rewardbench_function("calculate_scores_per_section")
    rng = np.random.default_rng(0)
    every = list(constants.EXAMPLE_COUNTS)
    # All subsets; then only Chat's alpacaeval and Reasoning's hep ones (two sections empty).
    for present in (every, [s for s in every if s.startswith(("alpacaeval", "hep"))]):
        accuracy = {s: float(rng.uniform()) for s in present}
        ours = section_scores(
            accuracy, REWARDBENCH_SECTIONS.example_counts, REWARDBENCH_SECTIONS.subset_mapping
        )
        ref = theirs(constants.EXAMPLE_COUNTS, constants.SUBSET_MAPPING, accuracy)
        # reward-bench writes 0 for a section with no subset present; ours leaves it out.
        assert ours == pytest.approx({s: v for s, v in ref.items() if s in ours})
        assert all(ref[s] == 0 for s in ref if s not in ours)
        assert list(ours) == (list(ref) if present is every else ["Chat", "Reasoning"])
        if present is every:
            assert section_total(ours) == pytest.approx(float(np.mean(list(ref.values()))))


def test_per_subset_accuracy_and_sections_equal_rewardbenchs_on_the_same_scores(tmp_path):
    import pandas as pd
    from datasets import Dataset

    constants = _rewardbench_constants()
    reroll = _rewardbench_function("reroll_and_score_dataset", np=np, pd=pd, Dataset=Dataset)
    sections_of = _rewardbench_function("calculate_scores_per_section")
    records = _rb_rows()
    rows = read_bench_rows(_write_jsonl(tmp_path / "rb.jsonl", records))
    scores = score_rows(NUMBER, rows)
    # reward-bench's layout: one line per completion, chosen first, then reroll_and_score_dataset
    # puts each row back together and scores it (1/m for a tie of m at the top).
    flat, sizes = [], []
    for r in records:
        chosen = r["chosen"] if isinstance(r["chosen"], list) else [r["chosen"]]
        rejected = r["rejected"] if isinstance(r["rejected"], list) else [r["rejected"]]
        for c in chosen + rejected:
            flat.append({"text": c, "scores": _number("", c), "id": r["prompt"],
                         "subset": r["subset"]})  # fmt: skip
        sizes.append(len(chosen) + len(rejected))
    rerolled = reroll(Dataset.from_list(flat), sizes).to_pandas()
    # Their per-subset accuracy, as scripts/run_rm.py and run_v2.py compute it.
    theirs = {s: g["results"].sum() / len(g) for s, g in rerolled.groupby("subset")}

    split = rm_eval_metrics(rows, scores, ties="split")
    assert {s: m.accuracy for s, m in split.subsets.items()} == pytest.approx(theirs)
    ref_sections = sections_of(constants.EXAMPLE_COUNTS, constants.SUBSET_MAPPING, theirs)
    assert split.sections == pytest.approx({s: ref_sections[s] for s in ("Chat", "Chat Hard")})
    assert ref_sections["Safety"] == 0 and ref_sections["Reasoning"] == 0

    # strict (reward-bench v1: `1 if chosen > rejected else 0`) equals split wherever the
    # chosen completion does not tie the top, and gives a tied row 0.
    strict = rm_eval_metrics(rows, scores, ties="strict")
    tied = [i for i, r in enumerate(rerolled["results"]) if 0 < r < 1]
    assert tied == [2, 6]  # q3 (2 vs 2) and q7 (9 vs 9, 3, 9)
    assert strict.subsets["alpacaeval-easy"].accuracy == pytest.approx(
        theirs["alpacaeval-easy"] - 0.5 / 3
    )
    assert strict.subsets["mt-bench-easy"].accuracy == theirs["mt-bench-easy"]
    assert strict.subsets["mt-bench-hard"].accuracy == 0.0
    assert strict.overall.ties == 2


# ----------------------------------------------------------------------------------------
# the metrics on known scores


def test_metrics_hand_computed_on_programmatic_scores(tmp_path):
    rows = read_bench_rows(_write_jsonl(tmp_path / "rb.jsonl", _rb_rows()))
    result = rm_eval_metrics(rows, score_rows(NUMBER, rows), n_boot=200)
    easy = result.subsets["alpacaeval-easy"]
    # Rows q1 (3 > 1), q2 (1 < 2), q3 (2 = 2, strict: wrong): 1/3.
    assert (easy.n, easy.k, easy.ties) == (3, 1, 1)
    assert easy.accuracy == pytest.approx(1 / 3)
    assert easy.accuracy_lo <= easy.accuracy <= easy.accuracy_hi
    # Lengths (characters): q1 5 vs 7, q2 7 vs 5, q3 13 vs 14: the chosen is longer once.
    assert easy.always_longer == pytest.approx(1 / 3)
    assert easy.always_shorter == pytest.approx(2 / 3)
    # |13 − 14| = 1 <= 0.1 · 14 only for q3 (|5 − 7| = 2 > 0.7), a tie: accuracy 0 on 1 row.
    assert (easy.length_matched_n, easy.length_matched_accuracy) == (1, 0.0)
    # p = σ(2), σ(−1), σ(0); Brier = mean (1 − p)².
    p = torch.sigmoid(torch.tensor([2.0, -1.0, 0.0], dtype=torch.float64))
    assert easy.brier == pytest.approx(float((1 - p).square().mean()))
    hard = result.subsets["mt-bench-hard"]
    assert (hard.n, hard.k, hard.accuracy_lo, hard.accuracy_hi) == (1, 3, None, None)
    # Chat = (1/3 · 100 + 1/2 · 28) / 128; Chat Hard = (0 · 37 + 1 · 100) / 137.
    assert result.sections == pytest.approx({"Chat": (100 / 3 + 14) / 128, "Chat Hard": 100 / 137})
    assert result.section_total == pytest.approx(((100 / 3 + 14) / 128 + 100 / 137) / 2)
    assert result.unweighted_subsets == [] and result.missing_sections == ["Safety", "Reasoning"]
    assert result.rewardbench_results()["alpacaeval-easy"] == pytest.approx(1 / 3)


def test_subsets_outside_the_section_map_are_unweighted_or_an_error(tmp_path):
    records = [*_rb_rows(), {"prompt": "q", "chosen": " 1", "rejected": " 0", "subset": "mine"}]
    path = _write_jsonl(tmp_path / "rb.jsonl", records)
    rows = read_bench_rows(path)
    scores = score_rows(NUMBER, rows)
    result = rm_eval_metrics(rows, scores)
    assert result.unweighted_subsets == ["mine"] and result.subsets["mine"].accuracy == 1.0
    assert result.sections == rm_eval_metrics(rows[:-1], score_rows(NUMBER, rows[:-1])).sections
    with pytest.raises(ValueError, match=r"rb.jsonl: line 8: field 'subset': 'mine' is not"):
        rm_eval_metrics(rows, scores, unknown_subsets="error")


def test_member_agreement_of_an_ensemble_like_scorer():
    class TwoMembers:
        name = "two"

        def score_members(self, prompts, completions):
            first = torch.tensor([_number("", c) for c in completions])
            return torch.stack([first, -first])  # the second member disagrees on every row...

    from goodhartlab.data.bench_rows import bench_rows_from_records

    rows = bench_rows_from_records(
        [
            {"prompt": "q", "chosen": " 2", "rejected": " 1"},
            {"prompt": "q", "chosen": " 1", "rejected": " 1"},  # ...but a tie, sign 0 for both
        ],
        "mem",
    )
    result = evaluate_rm(TwoMembers(), rows, n_boot=10)
    assert result.subsets["all"].member_agreement == 0.5
    # mean of the members is 0 everywhere: every row a tie.
    assert result.overall.ties == 2 and result.settings["aggregator"] == "mean"


# ----------------------------------------------------------------------------------------
# end to end on a tiny reward model


@pytest.fixture(scope="module")
def tiny_rm_dirs(tmp_path_factory, tiny_tokenizer):
    """Two tiny Llama reward models saved as plain HF directories, an ensemble directory of
    both, and a copy of the first whose tokenizer has no pad token."""
    import copy

    from goodhartlab.models.tiny import build_reward_model

    root = tmp_path_factory.mktemp("rms")
    for seed in (0, 1):
        model = build_reward_model("small", tiny_tokenizer, seed=seed)
        model.save_pretrained(root / "ens" / f"member_{seed}")
        tiny_tokenizer.save_pretrained(root / "ens" / f"member_{seed}")
    (root / "ens" / "ensemble.json").write_text(
        json.dumps({"members": [{"path": "member_0"}, {"path": "member_1"}]})
    )
    no_pad = copy.deepcopy(tiny_tokenizer)
    no_pad.pad_token = None
    build_reward_model("small", tiny_tokenizer, seed=0).save_pretrained(root / "no_pad")
    no_pad.save_pretrained(root / "no_pad")
    return root


def _toy_rows() -> list[dict]:
    return [
        {"prompt": "review of a phone:", "chosen": " the screen is great.",
         "rejected": " the battery is bad and slow.", "subset": "chat"},
        {"prompt": "review of a book:", "chosen": " a fine and quiet book.",
         "rejected": [" loud, old and not great.", " very cheap, very old."], "subset": "chat"},
        {"prompt": "review of a song:", "chosen": " the price is fine.",
         "rejected": " it was very nice, not cheap.", "subset": "other"},
    ]  # fmt: skip


def test_cli_on_a_tiny_reward_model(tmp_path, tiny_rm_dirs, capsys):
    data = _write_jsonl(tmp_path / "rows.jsonl", _toy_rows())
    member = tiny_rm_dirs / "ens" / "member_0"
    out = tmp_path / "out"
    argv = ["eval-rm", str(data), "--rm", str(member), "--bootstrap", "50", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "(all rows)" in printed and "chat" in printed
    result = json.loads((out / "eval_rm.json").read_text())
    assert result["metrics_version"] == METRICS_VERSION == "eval-rm/v1"
    assert result["n_rows"] == 3 and set(result["subsets"]) == {"chat", "other"}
    # No subset is a RewardBench subset: no section scores, every subset unweighted.
    assert result["sections"] is None and result["unweighted_subsets"] == ["chat", "other"]
    # The scores written are the reward model's own, and each result is chosen > every rejected.
    rm = RewardModel.from_pretrained(member)
    lines = [json.loads(x) for x in (out / "scores.jsonl").read_text().splitlines()]
    for record, line in zip(_toy_rows(), lines, strict=True):
        rejected = (
            record["rejected"] if isinstance(record["rejected"], list) else [record["rejected"]]
        )
        r = rm.score([record["prompt"]] * (1 + len(rejected)), [record["chosen"], *rejected])
        got = [line["score_chosen"], *np.atleast_1d(line["scores_rejected"]).tolist()]
        assert got == pytest.approx(r.tolist(), abs=1e-6)
        assert line["result"] == float(r[0] > r[1:].max())
    assert result["overall"]["accuracy"] == pytest.approx(np.mean([x["result"] for x in lines]))
    assert (out / "eval_rm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_on_an_ensemble_directory(tmp_path, tiny_rm_dirs):
    data = _write_jsonl(tmp_path / "rows.jsonl", _toy_rows())
    out = tmp_path / "out"
    argv = ["eval-rm", str(data), "--rm", str(tiny_rm_dirs / "ens"), "--bootstrap", "20",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((out / "eval_rm.json").read_text())
    rows = read_bench_rows(data)
    members = [RewardModel.from_pretrained(tiny_rm_dirs / "ens" / f"member_{s}") for s in (0, 1)]
    per = [score_rows(m, rows) for m in members]
    # Agreement by hand: the sign of chosen − best rejected, per member and row.
    signs = [torch.sign(p.r_chosen - p.r_rejected.nan_to_num(-math.inf).amax(1)) for p in per]
    assert result["overall"]["member_agreement"] == pytest.approx(
        float((signs[0] == signs[1]).double().mean())
    )
    lines = [json.loads(x) for x in (out / "scores.jsonl").read_text().splitlines()]
    mean_chosen = ((per[0].r_chosen + per[1].r_chosen) / 2).tolist()
    assert [x["score_chosen"] for x in lines] == pytest.approx(mean_chosen, abs=1e-6)
    assert result["settings"]["aggregator"] == "mean"


def test_a_tokenizer_without_pad_token_scores_as_with_one(tmp_path, tiny_rm_dirs):
    rows = read_bench_rows(_write_jsonl(tmp_path / "rows.jsonl", _toy_rows()))
    no_pad = RewardModel.from_pretrained(tiny_rm_dirs / "no_pad")
    assert no_pad.tokenizer.pad_token_id is None
    with_pad = RewardModel.from_pretrained(tiny_rm_dirs / "ens" / "member_0")
    # eos pads instead, and padding never reaches the score (rows of different lengths).
    a, b = score_rows(no_pad, rows, batch_size=4), score_rows(with_pad, rows, batch_size=4)
    torch.testing.assert_close(a.r_chosen, b.r_chosen)
    torch.testing.assert_close(a.r_rejected, b.r_rejected, equal_nan=True)


def test_a_tokenizer_without_pad_or_eos_is_one_error_naming_the_directory(
    tmp_path, tiny_rm_dirs, capsys
):
    import shutil

    broken = tmp_path / "no_eos"
    shutil.copytree(tiny_rm_dirs / "no_pad", broken)
    config = json.loads((broken / "tokenizer_config.json").read_text())
    config["eos_token"] = None
    (broken / "tokenizer_config.json").write_text(json.dumps(config))
    data = _write_jsonl(tmp_path / "rows.jsonl", _toy_rows())
    out = tmp_path / "out"
    assert main(["eval-rm", str(data), "--rm", str(broken), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(broken) in err and "eos_token" in err
    assert not out.exists()


# ----------------------------------------------------------------------------------------
# programmatic rewards and bad input through the command


def test_cli_with_a_registered_programmatic_reward(tmp_path, number_reward, capsys):
    data = _write_jsonl(tmp_path / "rb.jsonl", _rb_rows())
    out = tmp_path / "out"
    argv = ["eval-rm", str(data), "--reward", number_reward, "--ties", "split",
            "--bootstrap", "20", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((out / "eval_rm.json").read_text())
    # split: q1 1, q2 0, q3 1/2 -> 1/2; q7 ties two of three at the top -> 1/3.
    assert result["subsets"]["alpacaeval-easy"]["accuracy"] == pytest.approx(0.5)
    assert result["rewardbench_results"]["mt-bench-hard"] == pytest.approx(1 / 3)
    assert result["settings"]["ties"] == "split" and result["section_total"] is not None
    assert "sections: Chat" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"prompt": "q", "chosen": " 1"}, "line 2: field 'rejected': missing"),
        ({"prompt": "q", "chosen": "  ", "rejected": " 0"}, "line 2: field 'chosen': empty"),
        (
            {"prompt": "q", "chosen": " 1", "rejected": [" 0", ""]},
            "line 2: field 'rejected\\[1\\]'",
        ),
        ({"prompt": "q", "chosen": " 1", "rejected": []}, "line 2: field 'rejected': expected at"),
        ({"prompt": 3, "chosen": " 1", "rejected": " 0"}, "line 2: field 'prompt': expected a str"),
        ({"prompt": "q", "chosen": [" 1", " 2"], "rejected": " 0"}, "line 2: field 'chosen'"),
    ],
)
def test_bad_rows_name_file_line_and_field_and_write_nothing(
    tmp_path, number_reward, capsys, row, message
):
    good = {"prompt": "q", "chosen": " 1", "rejected": " 0"}
    data = _write_jsonl(tmp_path / "rows.jsonl", [good, row])
    out = tmp_path / "out"
    out.mkdir()
    (out / "eval_rm.json").write_text("earlier result\n")
    assert main(["eval-rm", str(data), "--reward", number_reward, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(data) in err
    import re

    assert re.search(message, err), err
    assert (out / "eval_rm.json").read_text() == "earlier result\n"
    assert sorted(p.name for p in out.iterdir()) == ["eval_rm.json"]


def test_nan_scores_name_the_row_and_field_and_write_nothing(tmp_path, capsys):
    class HalfNaN:
        name = "nan-rm"

        def score(self, prompts, completions):
            return torch.tensor([math.nan if c == " bad" else 0.0 for c in completions])

    REWARD_SOURCES.register("test_nan", lambda device="cpu": HalfNaN(), description="test")
    try:
        rows = [{"prompt": "q", "chosen": " 1", "rejected": [" 0", " bad"], "subset": "s"}] * 2
        data = _write_jsonl(tmp_path / "rows.jsonl", [{**rows[0], "rejected": " 0"}, rows[1]])
        out = tmp_path / "out"
        assert main(["eval-rm", str(data), "--reward", "test_nan", "--out", str(out)]) == 2
    finally:
        REWARD_SOURCES.unregister("test_nan")
    err = capsys.readouterr().err
    assert "rows.jsonl: line 2, field 'rejected[1]'" in err and "nan" in err
    assert not out.exists()


def test_cli_refuses_two_rewards_and_an_out_that_is_a_file(tmp_path, number_reward, capsys):
    data = _write_jsonl(tmp_path / "rb.jsonl", _rb_rows())
    with pytest.raises(SystemExit):  # argparse: not allowed with
        main(["eval-rm", str(data), "--reward", number_reward, "--gold", "toy_text", "--out", "o"])
    target = tmp_path / "file"
    target.write_text("x")
    assert main(["eval-rm", str(data), "--reward", number_reward, "--out", str(target)]) == 2
    assert "is a file" in capsys.readouterr().err and target.read_text() == "x"


# ----------------------------------------------------------------------------------------
# formats


def test_parquet_and_save_to_disk_read_the_same_rows_and_name_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = _rb_rows()
    flat = [{**r, "chosen": r["chosen"] if isinstance(r["chosen"], str) else r["chosen"][0],
             "rejected": r["rejected"] if isinstance(r["rejected"], list) else [r["rejected"]]}
            for r in records]  # fmt: skip
    expected = read_bench_rows(_write_jsonl(tmp_path / "rb.jsonl", records))
    pq.write_table(pa.Table.from_pylist(flat), tmp_path / "rb.parquet")
    got = read_bench_rows(tmp_path / "rb.parquet")
    strip = [(r.prompt, r.chosen, r.rejected, r.subset) for r in expected]
    assert [(r.prompt, r.chosen, r.rejected, r.subset) for r in got] == strip
    bad = [*flat[:2], {**flat[2], "chosen": ""}]
    pq.write_table(pa.Table.from_pylist(bad), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=r"bad.parquet: row 3: field 'chosen': empty"):
        read_bench_rows(tmp_path / "bad.parquet")

    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list(flat)
    ds.save_to_disk(str(tmp_path / "ds"))
    got = read_bench_rows(tmp_path / "ds")
    assert [(r.prompt, r.chosen, r.rejected, r.subset) for r in got] == strip
    datasets.DatasetDict({"filtered": ds}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(ValueError, match=r"a DatasetDict; give one split's directory.*filtered"):
        read_bench_rows(tmp_path / "dd")


def test_subset_on_some_rows_only_is_named(tmp_path):
    path = _write_jsonl(
        tmp_path / "rows.jsonl",
        [{"prompt": "q", "chosen": " 1", "rejected": " 0", "subset": "a"},
         {"prompt": "q", "chosen": " 1", "rejected": " 0"}],
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"line 2: field 'subset': missing"):
        read_bench_rows(path)


def test_scores_of_the_wrong_shape_are_refused():
    from goodhartlab.data.bench_rows import bench_rows_from_records

    rows = bench_rows_from_records([{"prompt": "q", "chosen": " 1", "rejected": " 0"}], "mem")
    with pytest.raises(ValueError, match=r"expected 1 rows"):
        rm_eval_metrics(rows, RowScores(torch.zeros(2), torch.zeros(2, 1)))
