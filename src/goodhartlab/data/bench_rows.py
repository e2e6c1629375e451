"""Reward-benchmark rows (RewardBench and RewardBench 2 format) from JSONL, Parquet or a
Hugging Face dataset saved with ``save_to_disk``.

A row has ``prompt``, ``chosen``, ``rejected`` and, optionally, ``subset`` and ``id``.
``rejected`` is a string (a RewardBench pair) or a list of strings (RewardBench 2: best-of-4,
three rejected); ``chosen`` is a string or a list of one string. Other columns
(``chosen_model``, ``num_correct``, ...) are ignored, except that ``num_correct`` > 1
(RewardBench 2's Ties subset, several correct answers scored by another rule) is refused.
Every bad row raises ValueError naming the file, the 1-based line (JSONL) or row, the field
and what was expected.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from goodhartlab.data.schema import MAX_TEXT_CHARS

__all__ = ["BenchRow", "bench_rows_from_records", "read_bench_rows"]

#: The subset of rows that name none (when no row names one).
DEFAULT_SUBSET = "all"


@dataclass(frozen=True)
class BenchRow:
    """One benchmark row: ``chosen`` should outscore every completion in ``rejected``."""

    prompt: str
    chosen: str
    rejected: tuple[str, ...]
    subset: str
    id: Any = None
    where: str = ""
    """Where the row came from (``file: line 3``), for messages."""


def _text(value: Any, where: str, field: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}: field '{field}': expected a string, got {_show(value)}")
    if len(value) > MAX_TEXT_CHARS:
        raise ValueError(
            f"{where}: field '{field}': longer than {MAX_TEXT_CHARS:,} characters ({len(value):,})"
        )
    return value


def _completion(value: Any, where: str, field: str) -> str:
    text = _text(value, where, field)
    if not text.strip():
        raise ValueError(
            f"{where}: field '{field}': empty completion (expected a non-empty string)"
        )
    return text


def _show(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _is_list(value: Any) -> bool:
    # pyarrow gives lists; numpy arrays come from pandas-made Parquet files.
    return isinstance(value, list | tuple) or type(value).__name__ == "ndarray"


def bench_row(record: Mapping[str, Any], where: str, *, need_subset: bool) -> BenchRow:
    """Validate one record into a :class:`BenchRow`; errors are prefixed with ``where``."""
    if not isinstance(record, Mapping):
        raise ValueError(f"{where}: expected an object with fields, got {type(record).__name__}")
    required = ("prompt", "chosen", "rejected", *(("subset",) if need_subset else ()))
    for name in required:
        if record.get(name) is None:
            why = " (other rows have one)" if name == "subset" else ""
            raise ValueError(
                f"{where}: field '{name}': missing{why} (required: {', '.join(required)})"
            )
    prompt = _text(record["prompt"], where, "prompt")
    chosen = record["chosen"]
    if _is_list(chosen):
        if len(chosen) != 1:
            raise ValueError(
                f"{where}: field 'chosen': expected one completion (a string or a list of one), "
                f"got a list of {len(chosen)} (RewardBench 2's Ties rows are not supported)"
            )
        chosen = _completion(chosen[0], where, "chosen[0]")
    else:
        chosen = _completion(chosen, where, "chosen")
    num_correct = record.get("num_correct")
    if num_correct is not None and num_correct != 1:
        raise ValueError(
            f"{where}: field 'num_correct': expected 1 (one chosen completion), got {num_correct!r}"
            " (RewardBench 2's Ties rows are not supported)"
        )
    rejected = record["rejected"]
    if _is_list(rejected):
        if len(rejected) == 0:
            raise ValueError(
                f"{where}: field 'rejected': expected at least one completion, got an empty list"
            )
        rejected = tuple(_completion(r, where, f"rejected[{j}]") for j, r in enumerate(rejected))
    else:
        rejected = (_completion(rejected, where, "rejected"),)
    subset = record.get("subset")
    if subset is None:
        subset = DEFAULT_SUBSET
    elif not isinstance(subset, str) or not subset.strip():
        raise ValueError(
            f"{where}: field 'subset': expected a non-empty string, got {_show(subset)}"
        )
    return BenchRow(prompt, chosen, rejected, subset, record.get("id"), where)


def bench_rows_from_records(
    records: Iterable[Mapping[str, Any]], source: str, unit: str = "row"
) -> list[BenchRow]:
    """Validate records (dicts) into rows; messages name ``source`` and ``unit`` i (1-based).

    A ``subset`` is required of every row once the first row has one (a file whose rows
    name none forms one subset, ``"all"``).
    """
    return _validated(
        ((f"{source}: {unit} {i}", r) for i, r in enumerate(records, start=1)), source
    )


def _validated(located: Iterable[tuple[str, Any]], source: str) -> list[BenchRow]:
    rows: list[BenchRow] = []
    need_subset = None
    for where, record in located:
        has_subset = isinstance(record, Mapping) and record.get("subset") is not None
        if need_subset is None:
            need_subset = has_subset
        elif has_subset and not need_subset:
            raise ValueError(
                f"{where}: field 'subset': given, but the rows before it have none "
                "(give every row a subset, or none)"
            )
        rows.append(bench_row(record, where, need_subset=need_subset))
    if not rows:
        raise ValueError(f"{source}: no rows")
    return rows


def read_bench_rows(path: str | os.PathLike) -> list[BenchRow]:
    """Rows from a ``.jsonl`` file, a ``.parquet`` file, or a ``save_to_disk`` directory.

    Raises:
        ValueError: an unknown format or a bad row (naming the file, line / row and field).
        FileNotFoundError: no such file or directory.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if path.is_dir():
        return bench_rows_from_records(_dataset_records(path), str(path))
    name = path.name.lower()
    if name.endswith(".jsonl"):
        return _validated(_jsonl_records(path), str(path))
    if name.endswith((".parquet", ".pq")):
        return bench_rows_from_records(_parquet_records(path), str(path))
    raise ValueError(
        f"{path}: unknown format; expected a .jsonl or .parquet file, or a directory written "
        "by datasets' save_to_disk"
    )


def _jsonl_records(path: Path) -> Iterable[tuple[str, Any]]:
    """(``file: line n``, the parsed line) for each non-blank line."""
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}: line {lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{where}: not UTF-8 text (byte {e.start})") from None
            if not line.strip():
                continue
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: expected a JSON object ({e.msg})") from None


def _parquet_records(path: Path) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"{path}: not a readable Parquet file ({e})") from None


def _dataset_records(path: Path) -> list[dict[str, Any]]:
    """Rows of a ``datasets.Dataset.save_to_disk`` directory, read with pyarrow.

    The directory holds ``state.json`` (listing the ``.arrow`` files, Arrow IPC streams) and
    ``dataset_info.json``; a ``DatasetDict`` holds ``dataset_dict.json`` and one directory
    per split, one of which must be given.
    """
    import pyarrow as pa

    splits = path / "dataset_dict.json"
    if splits.is_file():
        try:
            names = json.loads(splits.read_text())["splits"]
        except (ValueError, KeyError, TypeError):
            names = []
        raise ValueError(
            f"{path}: a DatasetDict; give one split's directory, e.g. {path / (names or ['test'])[0]}"
            f" (splits: {', '.join(names) or 'unknown'})"
        )
    state = path / "state.json"
    if not state.is_file():
        raise ValueError(
            f"{path}: a directory without state.json; expected a dataset written by "
            "datasets' save_to_disk"
        )
    try:
        files = [f["filename"] for f in json.loads(state.read_text())["_data_files"]]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"{state}: expected {{'_data_files': [{{'filename': ...}}]}} ({e})"
        ) from None
    records: list[dict[str, Any]] = []
    for name in files:
        try:
            with pa.memory_map(str(path / name)) as source:
                records.extend(pa.ipc.open_stream(source).read_all().to_pylist())
        except (pa.ArrowException, OSError) as e:
            raise ValueError(f"{path / name}: not a readable Arrow file ({e})") from None
    return records
