"""Reading and writing preference pairs: JSONL, Parquet, and Hugging Face datasets.

Every row is validated against :class:`PreferencePair`. A bad row raises ``ValueError``
naming the file, the 1-based line (JSONL) or row (Parquet), the field and what was
expected. Writes are atomic: the data go to a temporary file in the target's directory,
which then replaces the target with ``os.replace``, so a failed write leaves any previous
file untouched and never a half-written one.

On disk, JSONL rows omit fields that are None (and an empty ``meta``), so RewardBench-style
rows stay minimal. Parquet files have a fixed set of columns; ``meta`` is stored as a
JSON string, because Parquet structs would force every row's meta onto one set of keys.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from goodhartlab.artifacts import atomic_path
from goodhartlab.data.schema import PreferencePair

#: What to do with columns that are not fields of PreferencePair: raise, keep them in
#: ``meta``, or drop them.
ExtraColumns = Literal["error", "meta", "drop"]

_FIELDS = tuple(PreferencePair.model_fields)
_REQUIRED = ("prompt", "chosen", "rejected")
_JSONL_SUFFIXES = (".jsonl",)
_PARQUET_SUFFIXES = (".parquet", ".pq")


def _format_validation_error(err: ValidationError, where: str) -> str:
    parts = []
    for e in err.errors():
        field = ".".join(str(x) for x in e["loc"]) or "<row>"
        if e["type"] == "extra_forbidden":
            parts.append(
                f"unexpected field '{field}' (expected only {', '.join(_FIELDS)}; "
                "pass extra='meta' to keep unknown columns in meta, or extra='drop')"
            )
        elif e["type"] == "missing":
            parts.append(f"field '{field}': missing (required: {', '.join(_REQUIRED)})")
        else:
            got = repr(e.get("input"))
            got = got if len(got) <= 60 else got[:57] + "..."
            parts.append(f"field '{field}': {e['msg']} (got {got})")
    return f"{where}: " + "; ".join(parts)


def _normalise_row(row: Mapping[str, Any], extra: ExtraColumns) -> dict[str, Any]:
    row = dict(row)
    if row.get("meta", {}) is None:
        row["meta"] = {}
    unknown = [k for k in row if k not in _FIELDS]
    if unknown and extra != "error":
        moved = {k: row.pop(k) for k in unknown}
        if extra == "meta":
            meta = row.get("meta", {})
            row["meta"] = {**moved, **meta} if isinstance(meta, dict) else meta
    return row


def pair_from_row(
    row: Mapping[str, Any], *, where: str = "row", extra: ExtraColumns = "error"
) -> PreferencePair:
    """Validate one dict row into a PreferencePair; errors are prefixed with ``where``."""
    if extra not in ("error", "meta", "drop"):
        raise ValueError(f"extra: expected 'error', 'meta' or 'drop', got {extra!r}")
    if not isinstance(row, Mapping):
        raise ValueError(f"{where}: expected an object with fields, got {type(row).__name__}")
    try:
        return PreferencePair.model_validate(_normalise_row(row, extra))
    except ValidationError as e:
        raise ValueError(_format_validation_error(e, where)) from None


def _as_pair(obj: PreferencePair | Mapping[str, Any], where: str) -> PreferencePair:
    if isinstance(obj, PreferencePair):
        return obj
    return pair_from_row(obj, where=where)


def _format(path: Path) -> Literal["jsonl", "parquet"]:
    name = path.name.lower()
    if name.endswith(_JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    raise ValueError(
        f"{path}: unknown file type; expected a name ending in "
        f"{', '.join(_JSONL_SUFFIXES + _PARQUET_SUFFIXES)}"
    )


def read_pairs(path: str | os.PathLike, *, extra: ExtraColumns = "error") -> list[PreferencePair]:
    """Read and validate preference pairs from a ``.jsonl`` or ``.parquet`` file.

    Args:
        path: the file; its suffix picks the format.
        extra: what to do with columns that are not PreferencePair fields (RewardBench has
            ``chosen_model`` / ``rejected_model``): ``"error"`` (default), ``"meta"`` (keep
            them in ``meta``) or ``"drop"``.

    Raises:
        ValueError: unknown suffix, unreadable file, or a row that does not validate; the
            message names the file, the 1-based line / row and the field.
        FileNotFoundError: no such file.
    """
    path = Path(path)
    fmt = _format(path)
    if fmt == "jsonl":
        return _read_jsonl(path, extra)
    return _read_parquet(path, extra)


def _read_jsonl(path: Path, extra: ExtraColumns) -> list[PreferencePair]:
    pairs = []
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
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: expected a JSON object ({e.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
            pairs.append(pair_from_row(row, where=where, extra=extra))
    return pairs


def _read_parquet(path: Path, extra: ExtraColumns) -> list[PreferencePair]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.exists():
        raise FileNotFoundError(path)
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"{path}: not a readable Parquet file ({e})") from None
    pairs = []
    for rowno, row in enumerate(table.to_pylist(), start=1):
        where = f"{path}: row {rowno}"
        meta = row.get("meta")
        if isinstance(meta, str):
            try:
                row["meta"] = json.loads(meta)
            except json.JSONDecodeError as e:
                raise ValueError(
                    f"{where}: field 'meta': expected a JSON object string ({e.msg})"
                ) from None
        pairs.append(pair_from_row(row, where=where, extra=extra))
    return pairs


def pairs_from_dataset(
    ds: Iterable[Mapping[str, Any]], *, extra: ExtraColumns = "error", source: str = "dataset"
) -> list[PreferencePair]:
    """Validate the rows of a Hugging Face ``datasets.Dataset`` (or any iterable of dicts).

    ``datasets`` is not imported: anything that iterates over dict rows works. If ``ds`` has
    ``column_names`` (as a ``Dataset`` does), missing required columns are reported before
    any row is read. Errors name ``source`` and the 1-based row.
    """
    columns = getattr(ds, "column_names", None)
    if isinstance(columns, list | tuple):
        missing = [c for c in _REQUIRED if c not in columns]
        if missing:
            raise ValueError(
                f"{source}: missing column(s) {', '.join(missing)} (has: {', '.join(columns)})"
            )
    return [
        pair_from_row(row, where=f"{source}: row {i}", extra=extra)
        for i, row in enumerate(ds, start=1)
    ]


def write_pairs(
    pairs: Iterable[PreferencePair | Mapping[str, Any]], path: str | os.PathLike
) -> Path:
    """Write preference pairs atomically to a ``.jsonl`` or ``.parquet`` file.

    ``pairs`` may hold PreferencePair objects or dict rows (validated; an error names the
    1-based pair). The parent directory is created if needed. Returns the path written.
    Parquet needs ``id`` to be all ints or all strings (or None).
    """
    path = Path(path)
    fmt = _format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        _atomic_write(path, lambda f: _write_jsonl(pairs, f))
    else:
        table = _to_arrow(pairs, path)
        _atomic_write(path, lambda f: _write_parquet(table, f))
    return path


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)


def _write_jsonl(pairs: Iterable[PreferencePair | Mapping[str, Any]], f) -> None:
    for i, obj in enumerate(pairs, start=1):
        pair = _as_pair(obj, f"pair {i}")
        row = pair.model_dump(exclude_none=True)
        if not row.get("meta"):
            row.pop("meta", None)
        f.write((json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8"))


def _to_arrow(pairs: Iterable[PreferencePair | Mapping[str, Any]], path: Path):
    import pyarrow as pa

    rows = [_as_pair(obj, f"pair {i}") for i, obj in enumerate(pairs, start=1)]
    ids = [p.id for p in rows]
    id_types = {type(x) for x in ids if x is not None}
    if len(id_types) > 1:
        raise ValueError(f"{path}: field 'id': expected all ints or all strings for Parquet")
    id_type = pa.int64() if id_types == {int} else pa.string()
    columns = {
        "prompt": pa.array([p.prompt for p in rows], pa.string()),
        "chosen": pa.array([p.chosen for p in rows], pa.string()),
        "rejected": pa.array([p.rejected for p in rows], pa.string()),
        "id": pa.array(ids, id_type),
        "subset": pa.array([p.subset for p in rows], pa.string()),
        "margin": pa.array([p.margin for p in rows], pa.float64()),
        "gold_chosen": pa.array([p.gold_chosen for p in rows], pa.float64()),
        "gold_rejected": pa.array([p.gold_rejected for p in rows], pa.float64()),
        "meta": pa.array([json.dumps(p.meta, ensure_ascii=False) for p in rows], pa.string()),
    }
    return pa.table(columns)


def _write_parquet(table, f) -> None:
    import pyarrow.parquet as pq

    pq.write_table(table, f)
