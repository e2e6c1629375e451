"""Atomic writes of files and artifact directories, and verification of cached artifacts.

Nothing a run writes may be left half-written: files go to a temporary name in the same
directory and are renamed into place; artifact directories are built in a temporary sibling,
sealed with a manifest of SHA-256 checksums, and renamed into place. A directory whose manifest
is missing or whose files do not match it is *not* a valid artifact and is rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

MANIFEST = "goodhart_artifact.json"


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temp file in the same directory, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)


def seal(directory: str | Path, info: dict | None = None) -> None:
    """Write the checksum manifest of every file in ``directory`` (marks it complete)."""
    directory = Path(directory)
    files = {str(p.relative_to(directory)): _sha256(p) for p in _files(directory)}
    atomic_write_json(directory / MANIFEST, {"files": files, "info": info or {}})


def verify(directory: str | Path) -> str | None:
    """``None`` if ``directory`` is a complete, uncorrupted artifact, else why it is not."""
    directory = Path(directory)
    manifest = directory / MANIFEST
    if not directory.is_dir():
        return "missing"
    if not manifest.is_file():
        return f"no {MANIFEST} (a partial or interrupted build)"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError) as e:
        return f"unreadable {MANIFEST}: {e}"
    present = {str(p.relative_to(directory)) for p in _files(directory)}
    if set(files) - present:
        return f"files missing: {sorted(set(files) - present)}"
    for rel, digest in files.items():
        if _sha256(directory / rel) != digest:
            return f"checksum mismatch in {rel}"
    return None


def read_info(directory: str | Path) -> dict:
    return json.loads((Path(directory) / MANIFEST).read_text()).get("info", {})


@contextlib.contextmanager
def building(directory: str | Path, info: dict | None = None) -> Iterator[Path]:
    """Build an artifact directory atomically.

    Yields a temporary sibling directory to write into; on success the directory is sealed
    and renamed to ``directory`` (replacing an invalid one); on failure it is removed.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(
        tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.", suffix=".building")
    )
    try:
        yield tmp
        seal(tmp, info)
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
