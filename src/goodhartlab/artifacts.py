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


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a plainly created file gets under the process's umask (0o644 under 022).

    Temporary files and directories are created private (0o600 / 0o700); what is renamed
    into place gets the ordinary mode instead, so shared caches, Ray nodes and served
    reports can read it."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """The mode a plainly created directory gets under the umask (0o755 under 022)."""
    return 0o777 & ~_umask()


def fsync_dir(directory: str | Path) -> None:
    """Push a directory's entries (a rename into it) to disk; a no-op where unsupported."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Write a file atomically: yields a temporary path beside ``path`` to write to; on
    success it gets the umask's ordinary mode (:func:`file_mode`), is pushed to disk and
    renamed to ``path`` (the rename pushed with the directory); on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, file_mode())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


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
        os.chmod(tmp, dir_mode())
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
        fsync_dir(directory.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
