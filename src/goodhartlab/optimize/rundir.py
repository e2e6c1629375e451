"""The run directory: one component for every loop (RL, DAA, best-of-n) and for the study.

:class:`RunDir` creates a run directory or resumes one, comparing the config it was started
with and saying what differs; it keeps one manifest schema (:data:`MANIFEST_SCHEMA`) and one
versions record (:func:`package_versions`), the run's status, JSONL logs that survive a kill
(append, and truncate-on-resume), and checkpoints. An RL run's directory::

    run_dir/
      config.yaml       resolved config + identity (policy, reward, gold, prompts)
      manifest.json     schema, kind, versions, seed, host, started / finished, status, resumes
      metrics.jsonl     one line per evaluation (step 0 = the base policy)
      train.jsonl       one line per training step (losses, batch rewards)
      samples.jsonl     a few evaluation samples per evaluation
      summary.json      final and peak gold (written at the end)
      checkpoints/step_000050/
        policy.safetensors  value.safetensors (PPO)  optimizer.safetensors
        rng.safetensors     state.json (step, optimizer hyper-parameters, pipeline state)
        goodhart_artifact.json  (checksums: a checkpoint without it is incomplete)

Every JSONL line carries its ``step``. A checkpoint at step s is written after every line of
step s, so on resume the logs are cut back to the lines with step ≤ s (dropping a line torn
by the kill and the lines of steps that will be recomputed): nothing is duplicated or lost.
No pickle anywhere: tensors are safetensors, everything else JSON.

What makes a resumed run equal an uninterrupted one is here too: every random stream of a
run is seeded by :func:`derived_seed` from the run's seed and where it is used (step, round,
epoch), and :func:`check_resume` refuses to continue a run directory whose config.yaml
(settings and identity: :func:`reward_identity`, :func:`prompts_hash`) differs.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from goodhartlab.artifacts import atomic_write_text, building, read_info, verify

__all__ = [
    "MANIFEST_SCHEMA",
    "RunDir",
    "append_jsonl",
    "check_resume",
    "check_steps_reach",
    "complete_checkpoints",
    "derived_seed",
    "latest_checkpoint",
    "load_checkpoint",
    "package_versions",
    "prompts_hash",
    "read_jsonl",
    "reward_identity",
    "save_checkpoint",
    "truncate_jsonl",
]

CHECKPOINTS = "checkpoints"


# --------------------------------------------------------------------------------------
# Identity and resumption
# --------------------------------------------------------------------------------------


def derived_seed(*parts: Any) -> int:
    """A 63-bit seed from the run's seed and a label, e.g. ``derived_seed(seed, "rollout", step)``.

    A SHA-256 of ``repr(parts)``: independent streams per use and per step, the same in a
    resumed run as in an uninterrupted one, whatever ran before.
    """
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def prompts_hash(prompts: Sequence[str]) -> str:
    """The first 16 hex digits of a SHA-256 of the prompts (in order), for config.yaml."""
    return hashlib.sha256(json.dumps(list(prompts)).encode()).hexdigest()[:16]


def reward_identity(source: Any) -> dict[str, Any]:
    """What a reward source is, for config.yaml: its name, and its members' identities (an
    ensemble), its weights' fingerprint (a model) or its ``version`` (anything else)."""
    from goodhartlab.models.fingerprint import fingerprint_module
    from goodhartlab.rewards.pipeline import source_name

    members = getattr(source, "members", None)
    if members is not None:
        return {"name": source_name(source), "members": [reward_identity(m) for m in members]}
    model = getattr(source, "model", None)
    if isinstance(model, nn.Module):
        return {"name": source_name(source), "fingerprint": fingerprint_module(model)}
    return {"name": source_name(source), "version": str(getattr(source, "version", "unversioned"))}


def package_versions() -> dict[str, str]:
    """What produced a result, for manifest.json: Python and the installed versions of
    goodhart-lab, torch, transformers and numpy (the one versions record of every run)."""
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for pkg in ("goodhart-lab", "torch", "transformers", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): d}


def config_differences(
    saved: dict[str, Any], now: dict[str, Any], skip: Sequence[str] = ()
) -> list[str]:
    """Dotted keys whose values differ between two nested configs (``skip``: keys or
    prefixes ending in ``.`` never compared)."""
    a, b = _flatten(saved), _flatten(now)

    def skipped(k: str) -> bool:
        return any(k == s or (s.endswith(".") and k.startswith(s)) for s in skip)

    return [k for k in sorted(a.keys() | b.keys()) if not skipped(k) and a.get(k) != b.get(k)]


def check_resume(
    saved: dict[str, Any], now: dict[str, Any], out_dir: Path, resumable: Sequence[str]
) -> None:
    """Raise ValueError, listing the differences, if a run's saved config.yaml differs from now.

    Args:
        saved: the run directory's config.yaml.
        now: the config.yaml the resumed run would write.
        out_dir: the run directory (for the message).
        resumable: fields of ``config`` that may differ (e.g. ``steps``, ``device``);
            ``launch.*`` (how the run was started) is never compared.
    """
    a, b = _flatten(saved), _flatten(now)
    diffs = config_differences(saved, now, [*(f"config.{k}" for k in resumable), "launch."])
    if diffs:
        shown = "; ".join(f"{k}: {a.get(k)!r} (saved) vs {b.get(k)!r} (now)" for k in diffs[:6])
        raise ValueError(
            f"resume: {out_dir} was started with a different configuration ({len(diffs)} "
            f"difference(s): {shown}). Resume with the same settings (only "
            f"{', '.join(resumable)} may change), or start a new run directory."
        )


#: Bump on any change of manifest.json's fields (v2: ``config`` replaces ``config_sha256``).
MANIFEST_SCHEMA = "goodhart-run/v2"


#: A run directory's lock file: held (``flock``) by the one process that runs it.
LOCK = ".goodhart.lock"
_held: dict[str, int] = {}  # run directory -> the descriptor of its lock, held here


def _own(path: Path, what: str) -> bool:
    """Take ``path``'s lock for this process (True: taken now; False: held already).

    One process runs a directory at a time, so a ``--resume`` started while the killed
    run's process, or another resume, still writes there is refused instead of interleaving
    lines. The lock is the kernel's (``flock``): it goes with the process that holds it,
    however that process ends. Without ``fcntl`` (Windows) nothing is locked."""
    try:
        import fcntl
    except ImportError:
        return False
    key = str(path.resolve())
    if key in _held:
        return False
    fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
        os.close(fd)
        raise ValueError(
            f"{path}: this {what} directory is in use by {holder}; one process runs it at a "
            "time. Wait for that process to end (or stop it), then resume"
        ) from None
    import platform

    os.ftruncate(fd, 0)
    os.write(fd, f"process {os.getpid()} on {platform.node()}".encode())
    _held[key] = fd
    return True


def _release(path: Path) -> None:
    """Let go of ``path``'s lock if this process holds it."""
    fd = _held.pop(str(Path(path).resolve()), None)
    if fd is not None:
        os.close(fd)  # closing the last descriptor releases the flock


def _read_manifest(path: Path) -> dict[str, Any]:
    """A run's manifest.json ({} when there is none); a clear error when unreadable."""
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"resume: {path} is not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"resume: {path}: expected a JSON object")
    return manifest


def _read_config(path: Path) -> dict[str, Any]:
    """A run's config.yaml, parsed; a clear error naming the file when it is not a mapping."""
    import yaml

    try:
        saved = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"resume: {path} is not valid YAML ({e})") from None
    if not isinstance(saved, dict):
        raise ValueError(f"resume: {path}: expected a mapping of settings")
    return saved


def _check_unedited(path: Path, saved: dict[str, Any], manifest: dict[str, Any], what: str):
    """Refuse a config.yaml whose settings differ from those the run recorded at its start."""
    recorded = manifest.get("config")
    if recorded is None:  # goodhart-run/v1 recorded the hash of the file only
        digest = manifest.get("config_sha256")
        if digest and hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise ValueError(
                f"resume: {path} was edited after the {what} started (its hash differs from "
                "the one in manifest.json); restore it, or start a new run directory"
            )
        return
    edits = config_differences(recorded, saved)
    if edits:
        a, b = _flatten(recorded), _flatten(saved)
        shown = "; ".join(f"{k}: {a.get(k)!r} (recorded) vs {b.get(k)!r} (file)" for k in edits[:6])
        raise ValueError(
            f"resume: {path} was edited after the {what} started ({len(edits)} setting(s) "
            f"differ from manifest.json's record: {shown}); restore it, or start a new run "
            "directory with the new settings"
        )


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).isoformat()


class RunDir:
    """A run directory: config.yaml, manifest.json, JSONL logs, checkpoints.

    Create or resume with :meth:`open`; then :meth:`truncate` the logs to what a checkpoint
    covers, :meth:`append` lines as the run goes, and end with :meth:`finish` or
    :meth:`fail` (also done by using it as a context manager around the loop). The manifest
    has one schema for every kind of run::

        schema, kind, name, metrics_version, seed, host, versions (package_versions()),
        status ("running" | "complete" | "failed"), started, finished, seconds, error,
        resumes ([{from_step, at}]), config, and the kind's own fields (a study's
        stages, a DAA run's rounds, a best-of-n study's timings).

    ``config`` is config.yaml's settings as the run wrote them: a resume compares the parsed
    config.yaml with it, so a file edited by hand since is refused with what differs (a mere
    reformat, comments or key order, is not a change), as is a requested config that differs.
    """

    CONFIG = "config.yaml"
    MANIFEST = "manifest.json"

    def __init__(self, path: str | os.PathLike, manifest: dict[str, Any]):
        self.path = Path(path)
        self.manifest = manifest

    # -- create / resume --------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        *,
        kind: str,
        config: dict[str, Any],
        resume: bool,
        name: str | None = None,
        seed: int | None = None,
        metrics_version: str | None = None,
        resumable: Sequence[str] = (),
        what: str = "run",
        replace: bool = False,
    ) -> RunDir:
        """Create the run directory ``path`` for ``config``, or resume it.

        Args:
            kind: "rl", "daa", "bon", "study", ... (recorded in the manifest).
            config: the resolved config to write as config.yaml (JSON-able).
            resume: continue the run in ``path``; its config.yaml must equal ``config``
                except the ``resumable`` dotted keys (or prefixes ending in "."), and must
                not have been edited since the run wrote it. A new run (``resume=False``)
                refuses a directory that already holds one.
            what: how messages name the run ("RL run", "study").
            replace: a run whose every result is recomputed from caches (best-of-n: the pool
                and the scores are cached beside it) may be rerun in place with another
                config: the directory is taken over, its config.yaml and manifest replaced.
        """
        import yaml

        path = Path(path)
        text = yaml.safe_dump(config, sort_keys=False)
        config_file = path / cls.CONFIG
        if resume and not replace and not config_file.is_file():
            raise FileNotFoundError(f"resume: {config_file} not found (not a {what} directory)")
        path.mkdir(parents=True, exist_ok=True)
        locked_here = _own(path, what)
        try:
            manifest = cls._checked_manifest(path, config, resume, resumable, what, replace)
        except BaseException:
            if locked_here:
                _release(path)
            raise
        # A resume may change the resumable settings (more steps): config.yaml says what
        # the run is now, and the manifest records it.
        atomic_write_text(config_file, text)
        import platform

        manifest.update(
            schema=MANIFEST_SCHEMA,
            kind=kind,
            versions=package_versions(),
            host=platform.node(),
            status="running",
        )
        for key, value in (("name", name), ("seed", seed), ("metrics_version", metrics_version)):
            if value is not None:
                manifest[key] = value
        manifest.setdefault("started", _now())
        manifest.pop("config_sha256", None)  # goodhart-run/v1's record of config.yaml
        manifest["config"] = yaml.safe_load(text)
        run = cls(path, manifest)
        run.save()
        return run

    @classmethod
    def _checked_manifest(
        cls,
        path: Path,
        config: dict[str, Any],
        resume: bool,
        resumable: Sequence[str],
        what: str,
        replace: bool,
    ) -> dict[str, Any]:
        """The manifest to continue (a resume whose settings match) or {} (a new run)."""
        config_file, manifest_file = path / cls.CONFIG, path / cls.MANIFEST
        if replace:
            manifest = {}
        elif resume:
            manifest = _read_manifest(manifest_file)
            saved = _read_config(config_file)
            _check_unedited(config_file, saved, manifest, what)
            diffs = config_differences(saved, config, resumable)
            if diffs:
                a, b = _flatten(saved), _flatten(config)
                shown = "; ".join(
                    f"{k}: {a.get(k)!r} (saved) vs {b.get(k)!r} (now)" for k in diffs[:6]
                )
                changeable = [k for k in resumable if not k.endswith(".")]
                may = f" (only {', '.join(changeable)} may change)" if changeable else ""
                raise ValueError(
                    f"resume: {path} was started with a different configuration; it differs "
                    f"in {len(diffs)} setting(s): {shown}. Resume with the same settings{may}, "
                    "or start a new run directory."
                )
        else:
            if config_file.exists() or manifest_file.exists():
                raise ValueError(
                    f"{path}: already holds a {what} (config.yaml / manifest.json); resume it "
                    "(--resume) or choose a new directory"
                )
            manifest = {}
        return manifest

    # -- manifest ---------------------------------------------------------------------

    def save(self) -> None:
        """Write manifest.json atomically."""
        from goodhartlab.artifacts import atomic_write_json

        atomic_write_json(self.path / self.MANIFEST, self.manifest)

    def resumed(self, from_step: int) -> None:
        """Record that the run continues from a checkpoint at ``from_step``."""
        self.manifest.setdefault("resumes", []).append({"from_step": from_step, "at": _now()})
        self.save()

    def finish(self, **fields: Any) -> None:
        """Status "complete", with the end time and any ``fields``; the directory is let go."""
        self.manifest.update(status="complete", finished=_now(), **fields)
        self.manifest.pop("error", None)
        self.save()
        _release(self.path)

    def fail(self, error: BaseException) -> None:
        """Status "failed", with the end time and the error; the directory is let go."""
        self.manifest.update(
            status="failed", finished=_now(), error=f"{type(error).__name__}: {error}"
        )
        self.save()
        _release(self.path)

    # -- logs -------------------------------------------------------------------------

    def log(self, name: str) -> Path:
        """The path of a JSONL log, e.g. ``log("metrics")`` -> run_dir/metrics.jsonl."""
        return self.path / f"{name}.jsonl"

    def append(self, name: str, record: dict[str, Any]) -> None:
        append_jsonl(self.log(name), record)

    def read(self, name: str) -> list[dict[str, Any]]:
        return read_jsonl(self.log(name))

    def truncate(self, names: Sequence[str], max_step: int) -> None:
        """Cut each log back to its lines with ``step <= max_step`` (-1: empty them)."""
        for name in names:
            truncate_jsonl(self.log(name), max_step)

    def latest_checkpoint(self) -> Path | None:
        return latest_checkpoint(self.path)

    def resume_checkpoint(
        self, needs: Callable[[int], Mapping[str, Iterable[int]]]
    ) -> tuple[Path | None, int]:
        """The checkpoint to resume from and its step: the newest complete one whose lines
        the logs all hold (``(None, 0)``: start over).

        ``needs(step)`` names, per log, the steps whose lines a run checkpointed at ``step``
        wrote (e.g. ``{"train": 1..step, "metrics": its evaluation steps}``). A line lost
        after its checkpoint (a torn or truncated log) makes that checkpoint unusable, so the
        run resumes from an older one, or from the start, and the line is recomputed rather
        than silently missing."""
        logs: dict[str, set[int]] = {}
        for path in complete_checkpoints(self.path):
            step = int(read_info(path)["step"])
            need = needs(step)
            for name in need:
                if name not in logs:
                    logs[name] = {r.get("step") for r in self.read(name)}
            if all(set(steps) <= logs[name] for name, steps in need.items()):
                return path, step
        return None, 0


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and push it to disk (a kill loses at most this line)."""
    line = json.dumps(record, allow_nan=False) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike, *, torn_tail: bool = True) -> list[dict[str, Any]]:
    """The records of a JSONL log ([] when there is none).

    Lines are appended whole and pushed to disk one by one (:func:`append_jsonl`), so a kill
    can tear only the last line, which then lacks its newline: with ``torn_tail`` it is
    skipped (a resume recomputes it). Any other line that is not a JSON object is damage,
    never skipped: ValueError naming the file and the line.
    """
    path = Path(path)
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e})") from None
    lines = text.split("\n")
    tail = lines.pop()  # "" when the file ends with a newline
    out = []
    for i, line in enumerate(lines, 1):
        if line.strip():
            out.append(_record(path, i, line))
    if tail.strip():
        try:
            out.append(_record(path, len(lines) + 1, tail))
        except ValueError:
            if not torn_tail:
                raise
    return out


def _record(path: Path, lineno: int, line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except ValueError as e:
        raise ValueError(
            f"{path}, line {lineno}: not a JSON line ({e}); the file is damaged"
        ) from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}, line {lineno}: expected a JSON object, got {line[:40]!r}")
    return record


def truncate_jsonl(path: Path, max_step: int) -> None:
    """Keep only the complete lines with ``step <= max_step`` (atomically)."""
    if not path.exists():
        return
    kept = [r for r in read_jsonl(path) if r.get("step", 1 << 62) <= max_step]
    atomic_write_text(path, "".join(json.dumps(r, allow_nan=False) + "\n" for r in kept))


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{idx}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}/{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = s
    np_state = np.random.get_state()  # noqa: NPY002 - the legacy global state is what we save
    tensors["numpy_keys"] = torch.from_numpy(np.asarray(np_state[1], dtype=np.int64))
    meta = {
        "numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": _to_json(random.getstate()),
    }
    return tensors, meta


def _to_json(x):
    return [_to_json(v) for v in x] if isinstance(x, tuple | list) else x


def _to_tuple(x):
    return tuple(_to_tuple(v) for v in x) if isinstance(x, list) else x


def save_checkpoint(
    run_dir: Path,
    step: int,
    *,
    policy: nn.Module,
    optimizer: torch.optim.Optimizer,
    value_model: nn.Module | None,
    state: dict[str, Any],
    keep: int,
    extra: dict[str, tuple[nn.Module, torch.optim.Optimizer | None]] | None = None,
) -> Path:
    """Write ``checkpoints/step_{step}`` atomically and keep only the newest ``keep``.

    ``extra``: more models with their own optimizers (e.g. Cooper's reward model), saved as
    ``{name}.safetensors`` and ``{name}_optimizer.safetensors``; a model that is not
    trained (e.g. GARDO's moving KL reference) has the optimizer None and no such file."""
    root = run_dir / CHECKPOINTS
    path = root / f"step_{step:06d}"
    with building(path, info={"step": step}) as tmp:
        save_model(policy, str(tmp / "policy.safetensors"))
        if value_model is not None:
            save_model(value_model, str(tmp / "value.safetensors"))
        opt_tensors, opt_meta = _optimizer_tensors(optimizer)
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        rng_tensors, rng_meta = _rng_state()
        save_file(rng_tensors, str(tmp / "rng.safetensors"))
        extra_meta = {}
        for name, (module, opt) in (extra or {}).items():
            save_model(module, str(tmp / f"{name}.safetensors"))
            extra_meta[name] = None
            if opt is not None:
                tensors, extra_meta[name] = _optimizer_tensors(opt)
                save_file(tensors, str(tmp / f"{name}_optimizer.safetensors"))
        payload = {"step": step, "optimizer": opt_meta, "rng": rng_meta, **state}
        if extra_meta:
            payload["extra_optimizers"] = extra_meta
        (tmp / "state.json").write_text(json.dumps(payload, indent=2))
    for old in sorted(root.glob("step_*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """The complete checkpoints (checksums verified), newest first."""
    paths = sorted((Path(run_dir) / CHECKPOINTS).glob("step_*"), reverse=True)
    return [p for p in paths if verify(p) is None]


def check_steps_reach(run_dir: str | os.PathLike, steps: int, field: str = "steps") -> None:
    """Refuse to resume ``run_dir`` with fewer ``steps`` than its newest checkpoint has run
    (the run would report ``steps`` and end past them); called before anything is written."""
    newest = latest_checkpoint(Path(run_dir))
    if newest is not None and (done := int(read_info(newest)["step"])) > steps:
        raise ValueError(
            f"resume: {run_dir} has already run {done} steps ({newest.name}); {field}={steps} "
            f"would end before them. Resume with {field} >= {done}, or start a new run directory"
        )


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint (checksums verified), or None."""
    return next(iter(complete_checkpoints(run_dir)), None)


def _load_optimizer(optimizer: torch.optim.Optimizer, file: Path, meta: dict) -> None:
    flat = load_file(str(file))
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*flat.items(), *meta["scalars"].items()]:
        idx, name = key.split("/", 1)
        state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def load_checkpoint(
    path: Path,
    *,
    policy: nn.Module,
    optimizer: torch.optim.Optimizer,
    value_model: nn.Module | None,
    device: torch.device,
    extra: dict[str, tuple[nn.Module, torch.optim.Optimizer | None]] | None = None,
) -> dict[str, Any]:
    """Restore weights, optimizer and RNG states in place (and ``extra``'s, as
    :func:`save_checkpoint` wrote them); returns state.json's contents."""
    payload = json.loads((path / "state.json").read_text())
    missing, unexpected = load_model(policy, str(path / "policy.safetensors"), device=str(device))
    if missing or unexpected:
        raise ValueError(f"{path}: policy weights do not match the model ({missing or unexpected})")
    if value_model is not None:
        load_model(value_model, str(path / "value.safetensors"), device=str(device))
    _load_optimizer(optimizer, path / "optimizer.safetensors", payload["optimizer"])
    for name, (module, opt) in (extra or {}).items():
        if name not in payload.get("extra_optimizers", {}):
            raise ValueError(f"{path}: the checkpoint has no {name!r} (a run without it)")
        missing, unexpected = load_model(
            module, str(path / f"{name}.safetensors"), device=str(device)
        )
        if missing or unexpected:
            raise ValueError(
                f"{path}: {name} weights do not match the model ({missing or unexpected})"
            )
        if opt is not None:
            _load_optimizer(
                opt, path / f"{name}_optimizer.safetensors", payload["extra_optimizers"][name]
            )

    rng = load_file(str(path / "rng.safetensors"))
    torch.set_rng_state(rng["torch"])
    cuda = [rng[k] for k in sorted(k for k in rng if k.startswith("cuda"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, pos, has_gauss, cached = payload["rng"]["numpy"]
    keys = rng["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state((kind, keys, pos, has_gauss, cached))  # noqa: NPY002
    random.setstate(_to_tuple(payload["rng"]["python"]))
    return payload
