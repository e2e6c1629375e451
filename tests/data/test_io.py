"""JSONL / Parquet round trips, validation errors that locate the problem, atomic writes."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from goodhartlab.data import PreferencePair, pairs_from_dataset, read_pairs, write_pairs
from goodhartlab.data import io as data_io

PAIRS = [
    PreferencePair(prompt="review of a phone:", chosen=" great.", rejected=" bad.", id=0),
    PreferencePair(
        prompt="review of a book:",
        chosen=" fine ünïcode ✓",
        rejected="",
        id=1,
        subset="s1",
        margin=0.5,
        gold_chosen=2.0,
        gold_rejected=-1.0,
        meta={"flipped": True, "nested": {"a": [1, 2]}},
    ),
    PreferencePair(prompt="p", chosen="c", rejected="r", id=2, meta={"other": "x"}),
]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_round_trip(tmp_path, suffix):
    path = write_pairs(PAIRS, tmp_path / f"pairs{suffix}")
    assert read_pairs(path) == PAIRS
    assert [p.name for p in tmp_path.iterdir()] == [f"pairs{suffix}"]  # no temp files left


def test_jsonl_rows_are_minimal_rewardbench_rows(tmp_path):
    path = write_pairs(PAIRS[:1], tmp_path / "p.jsonl")
    assert json.loads(path.read_text()) == {
        "prompt": "review of a phone:",
        "chosen": " great.",
        "rejected": " bad.",
        "id": 0,
    }


def test_dict_rows_are_validated_on_write(tmp_path):
    with pytest.raises(ValueError, match="pair 2: field 'chosen'"):
        write_pairs(
            [PAIRS[0].model_dump(), {"prompt": "p", "chosen": 1, "rejected": "r"}],
            tmp_path / "p.jsonl",
        )


text = st.text(max_size=20)
pair_strategy = st.builds(
    PreferencePair,
    prompt=text,
    chosen=text,
    rejected=text,
    id=st.one_of(st.none(), st.integers(-(2**62), 2**62)),
    subset=st.one_of(st.none(), text),
    margin=st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
    meta=st.dictionaries(
        st.text(max_size=5), st.one_of(st.integers(-100, 100), text, st.booleans())
    ),
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(pairs=st.lists(pair_strategy, max_size=5))
def test_round_trip_property(tmp_path, pairs):
    for suffix in (".jsonl", ".parquet"):
        assert read_pairs(write_pairs(pairs, tmp_path / f"h{suffix}")) == pairs


def test_jsonl_error_names_file_line_and_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    rows = [
        {"prompt": "p", "chosen": "c", "rejected": "r"},
        {},  # blank line below keeps physical line numbering
        {"prompt": "p", "chosen": ["not", "a", "string"], "rejected": "r"},
    ]
    path.write_text(json.dumps(rows[0]) + "\n\n" + json.dumps(rows[2]) + "\n")
    with pytest.raises(
        ValueError, match=r"bad\.jsonl: line 3: field 'chosen': Input should be a valid string"
    ):
        read_pairs(path)


def test_jsonl_not_json_and_not_object(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "p", "chosen": "c", "rejected": "r"}\n{oops\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl: line 2: expected a JSON object"):
        read_pairs(path)
    path.write_text("[1, 2]\n")
    with pytest.raises(ValueError, match=r"line 1: expected a JSON object, got list"):
        read_pairs(path)


def test_parquet_error_names_file_row_and_field(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(
        pa.table({"prompt": ["p", "p", None], "chosen": ["c", "c", "c"], "rejected": ["r"] * 3}),
        path,
    )
    with pytest.raises(ValueError, match=r"bad\.parquet: row 3: field 'prompt'"):
        read_pairs(path)
    pq.write_table(pa.table({"prompt": ["p"], "chosen": ["c"]}), path)
    with pytest.raises(ValueError, match=r"row 1: field 'rejected': missing"):
        read_pairs(path)
    pq.write_table(
        pa.table({"prompt": ["p"], "chosen": ["c"], "rejected": ["r"], "meta": ["{no"]}), path
    )
    with pytest.raises(ValueError, match=r"row 1: field 'meta': expected a JSON object"):
        read_pairs(path)


def test_not_a_parquet_file(tmp_path):
    path = tmp_path / "x.parquet"
    path.write_text("hello")
    with pytest.raises(ValueError, match=r"x\.parquet: not a readable Parquet file"):
        read_pairs(path)


def test_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"pairs\.csv: unknown file type"):
        write_pairs(PAIRS, tmp_path / "pairs.csv")


def test_parquet_mixed_id_types_rejected(tmp_path):
    mixed = [PAIRS[0], PAIRS[2].model_copy(update={"id": "two"})]
    with pytest.raises(ValueError, match="field 'id'"):
        write_pairs(mixed, tmp_path / "p.parquet")


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_failed_write_leaves_old_file_intact(tmp_path, suffix):
    path = write_pairs(PAIRS, tmp_path / f"pairs{suffix}")
    before = path.read_bytes()

    def rows():  # fails half way through the data
        yield PAIRS[0]
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_pairs(rows(), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"pairs{suffix}"]


def test_failed_rename_leaves_old_file_intact(tmp_path, monkeypatch):
    path = write_pairs(PAIRS, tmp_path / "pairs.jsonl")
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(data_io.os, "replace", broken_replace)
    with pytest.raises(OSError, match="rename failed"):
        write_pairs(PAIRS[:1], path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["pairs.jsonl"]


class FakeDataset:
    """What pairs_from_dataset relies on in a ``datasets.Dataset``: rows and column_names."""

    def __init__(self, rows):
        self.rows = rows
        self.column_names = list(rows[0])

    def __iter__(self):
        return iter(self.rows)


def test_pairs_from_dataset_rewardbench_columns():
    ds = FakeDataset(
        [
            {
                "prompt": "p",
                "chosen": "c",
                "chosen_model": "m1",
                "rejected": "r",
                "rejected_model": "m2",
                "subset": "chat",
                "id": 5,
            },
        ]
    )
    with pytest.raises(ValueError, match="dataset: row 1: unexpected field 'chosen_model'"):
        pairs_from_dataset(ds)
    (pair,) = pairs_from_dataset(ds, extra="meta")
    assert pair.meta == {"chosen_model": "m1", "rejected_model": "m2"}
    assert (pair.id, pair.subset) == (5, "chat")


def test_pairs_from_dataset_missing_column_reported_first():
    ds = FakeDataset([{"prompt": "p", "chosen": "c"}])
    with pytest.raises(ValueError, match=r"missing column.*rejected"):
        pairs_from_dataset(ds, source="my/ds")


def test_pairs_from_plain_iterable_row_numbers():
    rows = [{"prompt": "p", "chosen": "c", "rejected": "r"}] * 2 + [
        {"prompt": "p", "chosen": "c", "rejected": 3}
    ]
    with pytest.raises(ValueError, match="rows: row 3: field 'rejected'"):
        pairs_from_dataset(iter(rows), source="rows")
