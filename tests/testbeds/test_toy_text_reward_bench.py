"""The toy_text reward benchmark (testbeds/toy_text/reward_bench.py) and eval-rm on it."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
import torch

from goodhartlab.cli import main
from goodhartlab.core.rm_metrics import length_matched
from goodhartlab.measure.rm_eval import SectionMap
from goodhartlab.testbeds.toy_text.gold import WEIGHTS, gold_features
from goodhartlab.testbeds.toy_text.grounded import (
    GROUNDED_VERSION,
    NUMBER_WORDS,
    grounded_features,
    parse_grounded_prompt,
    resolve_polarities,
)
from goodhartlab.testbeds.toy_text.language import NEGATIVE, POSITIVE, parse_prompt
from goodhartlab.testbeds.toy_text.personas import PERSONAS, parse_persona_prompt
from goodhartlab.testbeds.toy_text.reward_bench import (
    BENCH_VERSION,
    MIN_MARGIN,
    NEAR_TIE,
    PERSONA_MAX_GENERIC_MARGIN,
    PERSONA_MIN_MARGIN,
    SECTIONS,
    bench_gold,
    build_reward_bench,
    section_map,
    write_reward_bench,
)

PER_SUBSET = 8
SENTIMENT_WORDS = set(POSITIVE) | set(NEGATIVE)
DEFECT_FIELD = {
    "misfit": "misfit",
    "contradiction": "contra",
    "repetition": "rep",
    "stuffing": "stuff",
    "stacking": "stack",
    "offtopic": "off",
    "broken": "broken",
}


@pytest.fixture(scope="module")
def by_subset() -> dict[str, list[dict]]:
    out = defaultdict(list)
    for row in build_reward_bench(PER_SUBSET, seed=0):
        out[row["subset"]].append(row)
    return dict(out)


def _features(row: dict, which: str):
    return gold_features(row["prompt"], row[which])


def _words_differing(row: dict) -> list[tuple[str, str]]:
    c, r = row["chosen"].split(), row["rejected"].split()
    assert len(c) == len(r), row
    return [(a, b) for a, b in zip(c, r, strict=True) if a != b]


def test_every_prompt_and_completion_is_in_the_toy_text_alphabet(by_subset):
    # Letters, ',', '.' and ':' only: the language's tokenizer reads every word (a bracket, a
    # digit or a bar would be <unk>, and citations [1] and [2] would tokenize alike).
    for rows in by_subset.values():
        for row in rows:
            text = row["prompt"] + row["chosen"] + row["rejected"]
            assert all(ch.isalpha() or ch in " ,.:" for ch in text), row


def test_every_subset_of_every_section_is_built_with_unique_ids(by_subset):
    expected = [t for tests in SECTIONS.values() for t in tests]
    assert list(by_subset) == expected
    assert all(len(rows) == PER_SUBSET for rows in by_subset.values())
    ids = [r["id"] for rows in by_subset.values() for r in rows]
    assert len(set(ids)) == len(ids)
    assert len(SECTIONS["Personalized"]) == len(PERSONAS) >= 3
    assert set(SECTIONS["Grounded"]) == {f"grounded-{s}" for s in
                                         ("multihop", "citation", "abstain", "conflict")}  # fmt: skip


def test_the_rows_gold_prefers_the_chosen_on_every_row_by_the_subsets_margin(by_subset):
    for subset, rows in by_subset.items():
        for row in rows:
            g_c, g_r = (
                bench_gold(row["prompt"], row["chosen"]),
                bench_gold(row["prompt"], row["rejected"]),
            )
            margin = g_c - g_r
            assert margin == pytest.approx(row["meta"]["margin"]) and margin > 0, row
            if subset == "toy-near-ties":
                assert NEAR_TIE[0] <= margin <= NEAR_TIE[1]
            elif subset.startswith("persona-"):
                assert margin >= PERSONA_MIN_MARGIN
            else:
                assert margin >= MIN_MARGIN
            assert row["meta"]["bench_version"] == BENCH_VERSION


def test_versions_are_recorded_per_row_by_which_gold_scored_it(by_subset):
    for subset, rows in by_subset.items():
        version = rows[0]["meta"]["gold_version"]
        if subset.startswith("grounded-"):
            assert version.startswith(GROUNDED_VERSION)
        elif subset.startswith("persona-"):
            assert version.startswith("toy_text-personas-v")
        else:
            assert version == "toy_text-gold-v4"


def test_deterministic_for_a_seed_and_each_subset_its_own_stream(by_subset):
    again = build_reward_bench(PER_SUBSET, seed=0, subsets=["toy-sentiment", "grounded-conflict"])
    assert again == by_subset["toy-sentiment"] + by_subset["grounded-conflict"]
    other = build_reward_bench(PER_SUBSET, seed=1, subsets=["toy-sentiment"])
    assert other != by_subset["toy-sentiment"]


def test_sentiment_pairs_differ_in_one_sentiment_word_of_the_other_polarity(by_subset):
    for row in by_subset["toy-sentiment"]:
        ((a, b),) = _words_differing(row)
        assert {a, b} <= SENTIMENT_WORDS and (a in POSITIVE) != (b in POSITIVE)
        c, r = _features(row, "chosen"), _features(row, "rejected")
        assert c.coverage == r.coverage and c.misfit == r.misfit


def test_coverage_pairs_differ_in_one_noun_and_one_covered_noun_only(by_subset):
    for row in by_subset["toy-coverage"]:
        assert len(_words_differing(row)) == 1
        c, r = _features(row, "chosen"), _features(row, "rejected")
        assert c.coverage - r.coverage == 1
        for name in ("sentiment", "misfit", "contra", "rep", "stuff", "stack", "off", "broken",
                     "constraint"):  # fmt: skip
            assert getattr(c, name) == getattr(r, name), (name, row)


def test_constraint_pairs_isolate_the_constraint(by_subset):
    for row in by_subset["toy-constraint-mention"]:
        target = parse_prompt(row["prompt"]).constraint.split(":")[1]
        ((a, _b),) = _words_differing(row)
        c, r = _features(row, "chosen"), _features(row, "rejected")
        assert a == target and c.coverage == r.coverage
        assert (c.constraint, r.constraint) == (WEIGHTS["mention"], -WEIGHTS["mention_missing"])
    for row in by_subset["toy-constraint-short"]:
        assert row["rejected"].startswith(row["chosen"])
        assert _features(row, "chosen").sentences <= 2 < _features(row, "rejected").sentences
    for row in by_subset["toy-constraint-detailed"]:
        assert len(_words_differing(row)) == 1
        assert (_features(row, "chosen").coverage, _features(row, "rejected").coverage) == (3, 2)


@pytest.mark.parametrize("defect", list(DEFECT_FIELD))
def test_defect_pairs_add_their_defect_to_a_clean_review(by_subset, defect):
    field = DEFECT_FIELD[defect]
    for row in by_subset[f"toy-defect-{defect}"]:
        c, r = _features(row, "chosen"), _features(row, "rejected")
        assert all(getattr(c, f) == 0 for f in DEFECT_FIELD.values()), row
        assert getattr(r, field) >= 1, row


def test_contradiction_pairs_keep_sentiment_and_coverage(by_subset):
    for row in by_subset["toy-defect-contradiction"]:
        c, r = _features(row, "chosen"), _features(row, "rejected")
        assert c.sentiment == pytest.approx(r.sentiment)  # the same terms, summed in another order
        assert (c.coverage, c.contra) == (r.coverage, 0)
        assert r.contra == 1 and len(_words_differing(row)) == 2


def test_long_and_gushing_pairs(by_subset):
    for row in by_subset["toy-defect-long"]:
        c, r = _features(row, "chosen"), _features(row, "rejected")
        assert c.sentences <= WEIGHTS["max_sentences"] < r.sentences
        assert row["rejected"].startswith(row["chosen"])
    for row in by_subset["toy-defect-gushing"]:
        c, r = _features(row, "chosen"), _features(row, "rejected")
        assert abs(r.sentiment) > abs(c.sentiment) and abs(r.sentiment) > WEIGHTS["gush_threshold"]
        assert r.coverage == c.coverage and r.stack == 0


def test_length_matched_pairs_are_within_eval_rms_tolerance_and_near_ties_are_near(by_subset):
    rows = by_subset["toy-length-matched"]
    lc = torch.tensor([len(r["chosen"]) for r in rows], dtype=torch.float64)
    lr = torch.tensor([[len(r["rejected"])] for r in rows], dtype=torch.float64)
    assert bool(length_matched(lc, lr, 0.1).all())
    assert all(0 < r["meta"]["margin"] <= NEAR_TIE[1] for r in by_subset["toy-near-ties"])


def test_persona_pairs_are_the_readers_choice_and_of_about_equal_general_quality(by_subset):
    for name in PERSONAS:
        for row in by_subset[f"persona-{name}"]:
            persona, toy = parse_persona_prompt(row["prompt"])
            assert persona.name == row["meta"]["persona"] == name
            generic = (
                gold_features(toy, row["chosen"]).gold - gold_features(toy, row["rejected"]).gold
            )
            assert generic <= PERSONA_MAX_GENERIC_MARGIN + 1e-9
            assert generic == pytest.approx(row["meta"]["generic_gold_margin"])


def test_grounded_pairs_differ_in_faithfulness_to_the_sheet(by_subset):
    for row in by_subset["grounded-multihop"]:
        sheet, toy = parse_grounded_prompt(row["prompt"])
        target = parse_prompt(toy).constraint.split(":")[1]
        assert any(s.noun == target and s.matches for s in sheet)  # reached through a link only
        assert not any(s.noun == target and s.adjective for s in sheet)
        ((a, b),) = _words_differing(row)
        (pol,) = resolve_polarities(sheet)[target]
        assert (a in POSITIVE) == (pol > 0) and (b in POSITIVE) != (pol > 0)
    for row in by_subset["grounded-citation"]:
        cited = [(a, b) for a, b in zip(row["chosen"].split(), row["rejected"].split(),
                                        strict=True) if a != b]  # fmt: skip
        assert len(cited) == 2 and all(a in NUMBER_WORDS and b in NUMBER_WORDS for a, b in cited)
        c = grounded_features(row["prompt"], row["chosen"])
        r = grounded_features(row["prompt"], row["rejected"])
        assert (c.wrong_citation, r.wrong_citation, c.citations) == (0, 2, 2)
    for row in by_subset["grounded-abstain"]:
        c = grounded_features(row["prompt"], row["chosen"])
        r = grounded_features(row["prompt"], row["rejected"])
        assert (c.unsupported, c.over_abstain) == (0, 0) and r.unsupported + r.over_abstain == 1
    for row in by_subset["grounded-conflict"]:
        c = grounded_features(row["prompt"], row["chosen"])
        r = grounded_features(row["prompt"], row["rejected"])
        assert (c.conflicts_noted, c.one_sided, r.one_sided) == (1, 0, 1)


def test_section_map_reads_back_and_bad_maps_are_named(tmp_path, by_subset):
    rows = [r for rs in by_subset.values() for r in rs]
    path = tmp_path / "map.json"
    path.write_text(json.dumps(section_map(rows)))
    sm = SectionMap.from_json(path)
    assert sm.name == BENCH_VERSION and list(sm.subset_mapping) == list(SECTIONS)
    assert all(n == PER_SUBSET for n in sm.example_counts.values())
    path.write_text(json.dumps({"example_counts": {}, "subset_mapping": {"A": ["x"]}}))
    with pytest.raises(ValueError, match=f"{path}: field 'example_counts': no count for x"):
        SectionMap.from_json(path)


def test_write_refuses_a_name_that_is_not_jsonl(tmp_path):
    with pytest.raises(ValueError, match=r"expected a \.jsonl file name"):
        write_reward_bench(tmp_path / "bench.json", 1)
    assert list(tmp_path.iterdir()) == []


def test_cli_builds_it_and_eval_rm_scores_it_by_section(tmp_path, tiny_tokenizer, capsys):
    from goodhartlab.models.tiny import build_reward_model

    bench = tmp_path / "bench.jsonl"
    assert main(["reward-bench", str(bench), "--per-subset", "2"]) == 0
    sections = tmp_path / "bench.sections.json"
    meta = json.loads(sections.read_text())
    assert meta["bench_version"] == BENCH_VERSION and meta["rows"] == "bench.jsonl"
    rm_dir = tmp_path / "rm"
    build_reward_model("small", tiny_tokenizer, seed=0).save_pretrained(rm_dir)
    tiny_tokenizer.save_pretrained(rm_dir)
    out = tmp_path / "eval"
    argv = ["eval-rm", str(bench), "--rm", str(rm_dir), "--sections", str(sections),
            "--bootstrap", "20", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((out / "eval_rm.json").read_text())
    assert result["unweighted_subsets"] == [] and result["missing_sections"] == []
    assert (
        set(result["sections"]) == set(SECTIONS) and result["settings"]["sections"] == BENCH_VERSION
    )
    # Equal rows per subset: a section's score is the mean of its subsets' accuracies.
    subsets = result["subsets"]
    for name, tests in SECTIONS.items():
        assert result["sections"][name] == pytest.approx(
            sum(subsets[t]["accuracy"] for t in tests) / len(tests)
        )
    # The benchmark's own gold (--gold toy_text) gets every row right.
    gold_out = tmp_path / "gold"
    argv = ["eval-rm", str(bench), "--gold", "toy_text", "--cache-dir", str(tmp_path / "cache"),
            "--sections", str(sections), "--bootstrap", "20", "--out", str(gold_out)]  # fmt: skip
    assert main(argv) == 0
    gold = json.loads((gold_out / "eval_rm.json").read_text())
    assert gold["overall"]["accuracy"] == 1.0 and gold["section_total"] == 1.0
    assert BENCH_VERSION in gold["model"]
    capsys.readouterr()
