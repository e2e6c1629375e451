"""Fingerprints: what a pool, a score cache or a run was computed from.

A SHA-256 of a model directory's files, of a module's tensors, or of a tokenizer's
vocabulary. A changed weight, config or tokenizer changes the fingerprint, so a cache keyed
by it is recomputed rather than silently reused.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import nn

__all__ = ["fingerprint_files", "fingerprint_module", "fingerprint_tokenizer"]


def fingerprint_files(path: str | os.PathLike) -> str:
    """SHA-256 over a directory's files (relative path + content), hidden files skipped.

    A changed weight, config or tokenizer file changes the fingerprint.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: expected a model directory")
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path)
        if not p.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        h.update(str(rel).encode() + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


def fingerprint_module(model: nn.Module) -> str:
    """SHA-256 over a model's parameters and buffers (names, dtypes, shapes, values)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def fingerprint_tokenizer(tokenizer) -> str:
    """SHA-256 of a tokenizer's vocabulary and special tokens."""
    blob = {
        "vocab": sorted(tokenizer.get_vocab().items()),
        "special": {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()
