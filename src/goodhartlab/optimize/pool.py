"""Sample pools for best-of-n: N completions per prompt from the base policy, stored resumably.

Two parts:

* :func:`sample_token_ids`, a plain sampling loop with a KV cache: each distinct prompt of a
  batch is prefilled once (left-padded, position ids from the attention mask, as
  ``generate`` computes them), its cache is copied to the rows that sample from it, then
  one token per step is drawn for every unfinished row; rows that hit EOS are dropped from
  the batch as they finish. Temperature 0 is greedy decoding and gives ``generate``'s greedy
  tokens.
* :func:`build_pool` / :func:`load_pool`, the pool on disk (``build_pool`` is
  :func:`prepare_pool`, :func:`sample_pool_chunks` and :func:`finish_pool`, which a study runs
  apart to sample the chunks on several workers). Row r of the pool is sample
  ``r % N`` of prompt ``r // N``; rows are sampled and written in chunks of ``chunk_size``
  rows, each chunk with its own random stream seeded from ``(seed, chunk index)``, so an
  interrupted build resumes at the first missing chunk and ends with the pool an
  uninterrupted build would have written. Layout::

      pool_dir/
        samples/
          pool.json                 what the pool is (policy and tokenizer fingerprints,
                                    prompts, sampling settings): a resume must match it
          chunks/00000.jsonl ...    one JSON object per row, then a footer line with the
                                    row count and the SHA-256 of the rows (a truncated or
                                    edited chunk is detected and resampled)
          goodhart_artifact.json    the checksum manifest, written last: the pool is
                                    complete (``goodhartlab.artifacts.verify``)
        scores/                     reward caches (``goodhartlab.optimize.scores.score_pool``)

Every file is written atomically; a pool without a valid manifest is never loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from goodhartlab.artifacts import MANIFEST, atomic_write_json, atomic_write_text, seal, verify
from goodhartlab.models.fingerprint import fingerprint_module, fingerprint_tokenizer
from goodhartlab.models.generation import SampledBatch, decode_completion, sample_token_ids
from goodhartlab.models.loading import check_vocabulary
from goodhartlab.models.prompts import chat_template, encode_prompts

__all__ = [
    "POOL_FORMAT",
    "Pool",
    "PoolError",
    "SampledBatch",
    "build_pool",
    "finish_pool",
    "load_pool",
    "pool_status",
    "prepare_pool",
    "sample_pool_chunks",
    "sample_token_ids",
]

log = logging.getLogger(__name__)

#: Bump on any change of the pool files' meaning or layout.
POOL_FORMAT = "goodhart-pool/v1"
SAMPLES_DIR = "samples"
POOL_FILE = "pool.json"
CHUNKS_DIR = "chunks"


class PoolError(ValueError):
    """A pool directory that is incomplete, corrupt, or was built with other settings."""


# --------------------------------------------------------------------------------------
# The pool on disk
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pool:
    """A complete pool: N completions for each of P prompts."""

    path: Path
    prompts: list[str]
    """The P prompts."""
    completions: list[list[str]]
    """completions[p][j]: sample j of prompt p. Shape: (P, N)."""
    num_tokens: np.ndarray
    """Tokens before EOS of each completion, int64. Shape: (P, N)."""
    eos: np.ndarray
    """Whether each completion ended with EOS (False: cut at max_new_tokens). Shape: (P, N)."""
    config: dict[str, Any]
    """The contents of pool.json."""
    digest: str
    """SHA-256 identifying the pool's contents (pool.json and every chunk)."""

    @property
    def num_prompts(self) -> int:
        return len(self.prompts)

    @property
    def pool_size(self) -> int:
        return int(self.config["pool_size"])

    def flat(self) -> tuple[list[str], list[str]]:
        """(prompts, completions) of every row, prompt-major. Length P·N each."""
        n = self.pool_size
        prompts = [p for p in self.prompts for _ in range(n)]
        completions = [c for row in self.completions for c in row]
        return prompts, completions


def _chunk_path(samples: Path, k: int) -> Path:
    return samples / CHUNKS_DIR / f"{k:05d}.jsonl"


def _num_chunks(config: dict[str, Any]) -> int:
    rows = len(config["prompts"]) * int(config["pool_size"])
    return -(-rows // int(config["chunk_size"]))


def _chunk_rows(config: dict[str, Any], k: int) -> range:
    rows = len(config["prompts"]) * int(config["pool_size"])
    c = int(config["chunk_size"])
    return range(k * c, min((k + 1) * c, rows))


def _chunk_seed(seed: int, k: int) -> int:
    # Independent streams per chunk: a resumed build draws exactly what an uninterrupted one
    # would have, whatever chunks were written before the interruption.
    return int(np.random.SeedSequence([int(seed), int(k)]).generate_state(1)[0])


def _read_chunk(path: Path, expected_rows: range) -> tuple[list[dict[str, Any]], str]:
    """The rows of a chunk file and its digest; PoolError when truncated, edited or misplaced."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise PoolError(f"{path}: unreadable ({e})") from None
    body, sep, footer_line = data.rstrip(b"\n").rpartition(b"\n")
    if not sep:
        raise PoolError(f"{path}: truncated (no footer line)")
    try:
        footer = json.loads(footer_line)
    except ValueError:
        raise PoolError(f"{path}: truncated or corrupt (last line is not a footer)") from None
    if not isinstance(footer, dict) or "sha256" not in footer or "rows" not in footer:
        raise PoolError(f"{path}: truncated or corrupt (last line is not a footer)")
    body += b"\n"
    digest = hashlib.sha256(body).hexdigest()
    if digest != footer["sha256"]:
        raise PoolError(f"{path}: corrupt (rows do not match the footer's SHA-256)")
    rows = [json.loads(line) for line in body.decode("utf-8").splitlines()]
    if len(rows) != footer["rows"] or [r["row"] for r in rows] != list(expected_rows):
        raise PoolError(
            f"{path}: expected rows {expected_rows.start}..{expected_rows.stop - 1}, "
            f"got {len(rows)} rows"
        )
    return rows, digest


def _write_chunk(path: Path, rows: list[dict[str, Any]], info: dict[str, Any]) -> None:
    body = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)
    digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
    footer = {"rows": len(rows), "sha256": digest, **info}
    atomic_write_text(path, body + json.dumps(footer, sort_keys=True) + "\n")


def _pool_digest(config: dict[str, Any], chunk_digests: list[str]) -> str:
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for d in chunk_digests:
        h.update(d.encode())
    return h.hexdigest()


def pool_status(pool_dir: str | os.PathLike) -> str | None:
    """``None`` if ``pool_dir`` holds a complete, uncorrupted pool, else why it does not."""
    samples = Path(pool_dir) / SAMPLES_DIR
    if not (samples / POOL_FILE).is_file():
        return "missing" if not samples.exists() else f"no {SAMPLES_DIR}/{POOL_FILE}"
    return verify(samples)


def load_pool(pool_dir: str | os.PathLike) -> Pool:
    """Load a complete pool.

    Raises:
        PoolError: the directory is not a complete pool (interrupted build, a missing,
            truncated or edited file); the message names the file. ``build_pool`` with the
            same settings resumes or repairs it.
    """
    pool_dir = Path(pool_dir)
    problem = pool_status(pool_dir)
    if problem is not None:
        raise PoolError(
            f"pool {pool_dir} is not complete: {problem}; run the build again with the same "
            "settings to resume or repair it"
        )
    samples = pool_dir / SAMPLES_DIR
    config = json.loads((samples / POOL_FILE).read_text())
    if config.get("format") != POOL_FORMAT:
        raise PoolError(
            f"{samples / POOL_FILE}: expected format {POOL_FORMAT}, got {config.get('format')!r}"
        )
    n_prompts, n = len(config["prompts"]), int(config["pool_size"])
    completions: list[str] = []
    num_tokens = np.empty(n_prompts * n, dtype=np.int64)
    eos = np.empty(n_prompts * n, dtype=bool)
    digests = []
    for k in range(_num_chunks(config)):
        rows, digest = _read_chunk(_chunk_path(samples, k), _chunk_rows(config, k))
        digests.append(digest)
        for r in rows:
            completions.append(r["completion"])
            num_tokens[r["row"]] = r["num_tokens"]
            eos[r["row"]] = r["eos"]
    return Pool(
        path=pool_dir,
        prompts=list(config["prompts"]),
        completions=[completions[p * n : (p + 1) * n] for p in range(n_prompts)],
        num_tokens=num_tokens.reshape(n_prompts, n),
        eos=eos.reshape(n_prompts, n),
        config=config,
        digest=_pool_digest(config, digests),
    )


def _identity_mismatch(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    diffs = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            if key == "prompts":
                diffs.append(
                    f"prompts ({len(old.get(key) or [])} vs {len(new.get(key) or [])}, or their text)"
                )
            else:
                diffs.append(f"{key} ({old.get(key)!r} vs {new.get(key)!r})")
    return diffs


def prepare_pool(
    pool_dir: str | os.PathLike,
    policy: nn.Module,
    tokenizer,
    prompts: Sequence[str],
    pool_size: int,
    *,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    chunk_size: int = 512,
    batch_size: int = 128,
    add_special_tokens: bool = False,
    policy_fingerprint: str | None = None,
) -> list[int]:
    """Make ``pool_dir`` ready to be sampled into; returns the chunks still to sample.

    The first step of :func:`build_pool` (arguments as there): checks the settings, writes
    ``pool.json`` (or checks that an existing one matches), removes the stale manifest and
    the temporary files of interrupted writes, and lists the chunks that are missing,
    truncated or corrupt. ``[]`` for a complete pool. Then any processes may each
    :func:`sample_pool_chunks` a share of the list (each chunk is its own random stream and
    its own file), and :func:`finish_pool` seals the pool.

    Raises:
        PoolError: the directory holds a pool of other settings, or is not a pool.
    """
    pool_dir = Path(pool_dir)
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts: expected at least one prompt, got none")
    if int(pool_size) != pool_size or pool_size < 1:
        raise ValueError(f"pool_size: expected an integer >= 1, got {pool_size!r}")
    if chunk_size < 1 or batch_size < 1:
        raise ValueError(
            f"chunk_size and batch_size: expected >= 1, got {chunk_size}, {batch_size}"
        )
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer: expected an eos token (it ends a completion)")
    check_vocabulary(tokenizer, policy)
    template = chat_template(tokenizer)
    prompt_ids = encode_prompts(
        tokenizer, prompts, add_special_tokens=add_special_tokens, template=template
    )
    limit = getattr(getattr(policy, "config", None), "max_position_embeddings", None)
    for i, ids in enumerate(prompt_ids):
        if not ids:
            raise ValueError(f"prompts[{i}]: empty after tokenization ({prompts[i]!r})")
        if isinstance(limit, int) and len(ids) + max_new_tokens > limit:
            raise ValueError(
                f"prompts[{i}]: {len(ids)} tokens + max_new_tokens={max_new_tokens} exceed the "
                f"policy's max_position_embeddings={limit} ({prompts[i][:60]!r}...)"
            )
    config = {
        "format": POOL_FORMAT,
        "policy": policy_fingerprint or fingerprint_module(policy),
        "tokenizer": fingerprint_tokenizer(tokenizer),
        "prompts": prompts,
        "pool_size": int(pool_size),
        "max_new_tokens": int(max_new_tokens),
        "temperature": float(temperature),
        "top_p": float(top_p),
        "seed": int(seed),
        "chunk_size": int(chunk_size),
        "batch_size": int(batch_size),
        "add_special_tokens": bool(add_special_tokens),
    }
    if template is not None:  # recorded only when used: older pools keep their identity
        config["chat_template"] = template
    samples = pool_dir / SAMPLES_DIR
    config_path = samples / POOL_FILE
    if config_path.is_file():
        try:
            old = json.loads(config_path.read_text())
        except ValueError as e:
            raise PoolError(f"{config_path}: unreadable ({e}); delete the pool directory") from None
        diffs = _identity_mismatch(old, config)
        if diffs:
            raise PoolError(
                f"pool {pool_dir} was built with other settings: {'; '.join(diffs)}. "
                "Use another pool directory (or delete this one)"
            )
        if pool_status(pool_dir) is None:
            return []
    elif samples.exists() and any(samples.iterdir()):
        raise PoolError(f"{samples} exists, is not empty, and has no {POOL_FILE}: not a pool")
    else:
        atomic_write_json(config_path, config)
    # An incomplete pool loses its (stale) manifest before anything else changes, and the
    # temp files of writes that a kill interrupted go.
    (samples / MANIFEST).unlink(missing_ok=True)
    for stale in samples.rglob(".*.tmp"):
        stale.unlink(missing_ok=True)

    missing = []
    for k in range(_num_chunks(config)):
        path = _chunk_path(samples, k)
        if path.is_file():
            try:
                _read_chunk(path, _chunk_rows(config, k))
                continue
            except PoolError as e:
                log.warning("%s; resampling it", e)
        missing.append(k)
    return missing


def sample_pool_chunks(
    pool_dir: str | os.PathLike,
    policy: nn.Module,
    tokenizer,
    chunks: Sequence[int],
    *,
    progress: bool = False,
    on_chunk: Callable[[int, int], None] | None = None,
) -> None:
    """Sample the chunks ``chunks`` of a pool that :func:`prepare_pool` set up, one file each.

    Chunk k is drawn from its own stream, seeded from ``(seed, k)``, in batches of the
    pool's ``batch_size``: it is the same whichever process samples it and whatever else
    it samples, so a pool sampled in shares by several processes is byte-identical to one
    sampled by one. Each chunk file is written atomically; nothing else is touched.

    Args:
        pool_dir: the pool directory (its ``pool.json`` gives every setting).
        policy: the policy ``pool.json`` names (on the device to sample on).
        tokenizer: its tokenizer.
        chunks: indices of the chunks to sample.
        progress: show a progress bar.
        on_chunk: called as ``on_chunk(done, len(chunks))`` after each chunk is written.
    """
    samples = Path(pool_dir) / SAMPLES_DIR
    config = json.loads((samples / POOL_FILE).read_text())
    if config.get("format") != POOL_FORMAT:
        raise PoolError(
            f"{samples / POOL_FILE}: expected format {POOL_FORMAT}, got {config.get('format')!r}"
        )
    pool_size, batch_size = int(config["pool_size"]), int(config["batch_size"])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    # The template the pool recorded, not the worker's tokenizer's: every chunk of a pool
    # conditions on the same text.
    prompt_ids = encode_prompts(
        tokenizer,
        config["prompts"],
        add_special_tokens=config["add_special_tokens"],
        template=config.get("chat_template"),
    )
    device = next(policy.parameters()).device
    was_training = policy.training
    policy.eval()
    try:
        for done, k in enumerate(tqdm(chunks, desc="pool", disable=not progress), start=1):
            gen = torch.Generator(device=device).manual_seed(_chunk_seed(config["seed"], k))
            rows: list[dict[str, Any]] = []
            chunk = _chunk_rows(config, k)
            for lo in range(chunk.start, chunk.stop, batch_size):
                batch = range(lo, min(lo + batch_size, chunk.stop))
                row_p = [r // pool_size for r in batch]
                uniq = sorted(set(row_p))
                local = {p: i for i, p in enumerate(uniq)}
                out = sample_token_ids(
                    policy,
                    [prompt_ids[p] for p in uniq],
                    [local[p] for p in row_p],
                    max_new_tokens=config["max_new_tokens"],
                    eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=pad,
                    temperature=config["temperature"],
                    top_p=config["top_p"],
                    generator=gen,
                )
                for b, r in enumerate(batch):
                    n_tok = int(out.num_tokens[b])
                    ids = out.tokens[b, :n_tok].tolist()
                    rows.append(
                        {
                            "row": r,
                            "completion": decode_completion(tokenizer, ids),
                            "num_tokens": n_tok,
                            "eos": bool(out.eos[b]),
                        }
                    )
            _write_chunk(_chunk_path(samples, k), rows, {"device": device.type})
            if on_chunk is not None:
                on_chunk(done, len(chunks))
    finally:
        policy.train(was_training)


def finish_pool(pool_dir: str | os.PathLike) -> Pool:
    """Seal a pool whose every chunk is written (the checksum manifest, written last) and
    load it; a complete pool is loaded as it is.

    Raises:
        PoolError: chunks are missing (naming the first); build again to resume.
    """
    pool_dir = Path(pool_dir)
    if pool_status(pool_dir) is None:
        return load_pool(pool_dir)
    samples = pool_dir / SAMPLES_DIR
    if not (samples / POOL_FILE).is_file():
        raise PoolError(
            f"pool {pool_dir} is incomplete: no {SAMPLES_DIR}/{POOL_FILE} (never prepared); "
            "build it with build_pool"
        )
    config = json.loads((samples / POOL_FILE).read_text())
    remaining = [k for k in range(_num_chunks(config)) if not _chunk_path(samples, k).is_file()]
    if remaining:
        raise PoolError(
            f"pool {pool_dir} is incomplete: {len(remaining)} of {_num_chunks(config)} chunks "
            f"missing (first: {_chunk_path(samples, remaining[0]).name}); build again to resume"
        )
    seal(samples, {"format": POOL_FORMAT})
    return load_pool(pool_dir)


def build_pool(
    pool_dir: str | os.PathLike,
    policy: nn.Module,
    tokenizer,
    prompts: Sequence[str],
    pool_size: int,
    *,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    chunk_size: int = 512,
    batch_size: int = 128,
    add_special_tokens: bool = False,
    policy_fingerprint: str | None = None,
    progress: bool = False,
    max_chunks: int | None = None,
) -> Pool:
    """Sample ``pool_size`` completions for each prompt into ``pool_dir``, resuming if possible.

    An existing pool directory is reused when its ``pool.json`` matches these settings
    (policy and tokenizer fingerprints, prompts, sampling settings, seed, chunk size):
    valid chunks are kept, missing, truncated or corrupt ones are (re)sampled, and the
    manifest is written last. A complete pool is loaded as it is. Settings that differ
    raise :class:`PoolError` rather than mixing samples of two configurations. The three
    steps (:func:`prepare_pool`, :func:`sample_pool_chunks`, :func:`finish_pool`) can be
    run apart, to sample the chunks in several processes.

    Args:
        pool_dir: the pool directory (created if missing).
        policy: the base policy π0, a causal LM on the device to sample on.
        tokenizer: its tokenizer (pad token used for padding; eos ends a completion; a
            tokenizer without a pad token pads with eos).
        prompts: the P prompts, P ≥ 1.
        pool_size: N ≥ 1 completions per prompt.
        max_new_tokens: most tokens per completion.
        temperature: sampling temperature (0: greedy, every sample equal).
        top_p: nucleus threshold in (0, 1].
        seed: the pool is a deterministic function of the settings and the seed (on one
            device type).
        chunk_size: rows per chunk file (the unit of resumption).
        batch_size: rows sampled together. It sets how a chunk's random stream is consumed,
            so it is part of the pool's identity: a resume must use the same value.
        add_special_tokens: tokenize prompts with the tokenizer's special tokens (e.g. BOS).
        policy_fingerprint: identifies the policy; default: a hash of its parameters.
        progress: show a progress bar.
        max_chunks: stop after sampling this many chunks (leaves the pool incomplete; for
            tests and time-boxed runs). None: sample every missing chunk.

    Returns:
        The :class:`Pool` (when complete; after ``max_chunks`` stops early, PoolError is
        raised from the final load instead, naming the missing chunks).
    """
    missing = prepare_pool(
        pool_dir,
        policy,
        tokenizer,
        prompts,
        pool_size,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        chunk_size=chunk_size,
        batch_size=batch_size,
        add_special_tokens=add_special_tokens,
        policy_fingerprint=policy_fingerprint,
    )
    if max_chunks is not None:
        missing = missing[:max_chunks]
    sample_pool_chunks(pool_dir, policy, tokenizer, missing, progress=progress)
    return finish_pool(pool_dir)
