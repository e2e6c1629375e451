"""A run's history as the detectors see it: what a real run has at each evaluation, never gold.

An :class:`EvalPoint` holds what one evaluation of a policy produced: its step, its KL to the
base policy, the proxy's (and an ensemble's members', and a held-out reward model's) scores of
the sampled completions, the completions themselves, their log-probabilities and the reward
model's last hidden states. Every field but ``step`` is optional: a detector whose inputs are
absent returns NaN. A :class:`RunHistory` is the points of one run in step order; its first
point is the reference of every drift detector and should be the base policy's own samples
(step 0, before any update).

There is no field for gold, on purpose: a detector cannot read what a real run does not have.

Bad input fails when the point is built, with a ValueError that names the step and the field:
NaN or infinite scores, fields whose batch sizes disagree, an empty batch, positive
log-probabilities. (Drop unreadable rows from every field before building the point; an
individual empty completion is a real output, length 0, and is kept.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from goodhartlab.core.kl import sequence_kl

__all__ = ["POINT_VERSION", "EvalPoint", "RunHistory"]

#: Bump on any change of what a point's record (``EvalPoint.to_record``) holds.
POINT_VERSION = "monitor-point/v1"

#: Decimals kept in a record: scores and log-probs to 1e-5, latents to 1e-4 (a record is
#: the monitor's input on resume and offline, so a live monitor reads it back the same way).
_DECIMALS = {"latents": 4}
_FLOAT_DECIMALS = 5

# Log-probabilities a hair above 0 come from float32 rounding of log-softmax.
_LOGP_TOL = 1e-5


def _fail(step: int, name: str, msg: str) -> ValueError:
    return ValueError(f"evaluation point at step {step}: {name}: {msg}")


def _scores(step: int, name: str, value, ndim: int) -> np.ndarray:
    a = np.asarray(value, dtype=np.float64)
    if a.ndim != ndim:
        raise _fail(step, name, f"expected {ndim} dimension(s); got shape {a.shape}")
    if a.size == 0:
        raise _fail(step, name, f"is empty (shape {a.shape})")
    bad = int(np.sum(~np.isfinite(a)))
    if bad:
        raise _fail(
            step,
            name,
            f"{bad} of {a.size} values are NaN or infinite; drop those rows (from every "
            "field) before building the point",
        )
    return a


def _ragged(step: int, name: str, value, dtype) -> tuple[np.ndarray, ...]:
    rows = []
    for b, row in enumerate(value):
        a = np.asarray(row, dtype=dtype)
        if a.ndim != 1:
            raise _fail(step, f"{name}[{b}]", f"expected one value per token; got shape {a.shape}")
        if dtype is np.float64 and not np.all(np.isfinite(a)):
            raise _fail(step, f"{name}[{b}]", "holds NaN or infinite values")
        rows.append(a)
    if not rows:
        raise _fail(step, name, "is empty (no completion)")
    return tuple(rows)


@dataclass(frozen=True)
class EvalPoint:
    """What one evaluation of the policy produced (no gold).

    Arrays are converted to float64 NumPy arrays (token ids to int64) and checked on
    construction.
    """

    step: int
    """Training step of the evaluation (0: the base policy)."""
    kl: float | None = None
    """KL(π ‖ π_0) in nats, sequence level, averaged over the evaluation prompts. When None,
    it is estimated from ``logp`` and ``logp_ref`` (k1) if both are given."""
    r_proxy: np.ndarray | None = None
    """Scores of the optimized reward (the aggregate of an ensemble, if that is what the
    policy is trained on). Shape: (B,)."""
    r_members: np.ndarray | None = None
    """Scores of each ensemble member. Shape: (M, B), M ≥ 2."""
    r_heldout: np.ndarray | None = None
    """Scores of a reward model that the policy is not optimized against. Shape: (B,)."""
    completions: Sequence[str] | None = None
    """The sampled completions. Shape: B strings."""
    completion_ids: Sequence[Sequence[int]] | None = None
    """Their token ids, without padding. Shape: B sequences of (T_b,)."""
    logp: Sequence[Sequence[float]] | None = None
    """log π of each sampled token, without padding. Shape: B sequences of (T_b,)."""
    logp_ref: Sequence[Sequence[float]] | None = None
    """log π_0 (the reference policy) of the same tokens. Shape: B sequences of (T_b,)."""
    latents: np.ndarray | None = None
    """The reward model's last hidden state for each completion (InfoRM's latent). Shape:
    (B, D)."""
    r_groups: np.ndarray | None = None
    """Optimized rewards grouped by prompt (GRPO / RLOO groups). Shape: (G, N), N ≥ 2."""

    def __post_init__(self) -> None:
        step = self.step
        if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 0:
            raise ValueError(f"evaluation point: step: expected an integer >= 0; got {step!r}")
        set_ = lambda name, v: object.__setattr__(self, name, v)  # noqa: E731 (frozen)
        set_("step", int(step))
        if self.kl is not None:
            kl = float(self.kl)
            if not math.isfinite(kl):
                raise _fail(step, "kl", f"expected a finite number; got {self.kl!r}")
            set_("kl", kl)
        for name, ndim in (("r_proxy", 1), ("r_members", 2), ("r_heldout", 1), ("latents", 2)):
            if getattr(self, name) is not None:
                set_(name, _scores(step, name, getattr(self, name), ndim))
        if self.r_members is not None and self.r_members.shape[0] < 2:
            raise _fail(
                step, "r_members", f"expected M >= 2 members; got {self.r_members.shape[0]}"
            )
        if self.r_groups is not None:
            set_("r_groups", _scores(step, "r_groups", self.r_groups, 2))
            if self.r_groups.shape[1] < 2:
                raise _fail(
                    step, "r_groups", f"expected N >= 2 per group; got shape {self.r_groups.shape}"
                )
        if self.completions is not None:
            texts = tuple(self.completions)
            for b, t in enumerate(texts):
                if not isinstance(t, str):
                    raise _fail(
                        step, f"completions[{b}]", f"expected a string; got {type(t).__name__}"
                    )
            if not texts:
                raise _fail(step, "completions", "is empty (no completion)")
            set_("completions", texts)
        if self.completion_ids is not None:
            set_("completion_ids", _ragged(step, "completion_ids", self.completion_ids, np.int64))
        for name in ("logp", "logp_ref"):
            if getattr(self, name) is not None:
                rows = _ragged(step, name, getattr(self, name), np.float64)
                for b, a in enumerate(rows):
                    if a.size and a.max() > _LOGP_TOL:
                        raise _fail(
                            step, f"{name}[{b}]", f"log-probabilities must be <= 0; got {a.max()}"
                        )
                set_(name, rows)
        self._check_batch()

    def _check_batch(self) -> None:
        sizes = {
            "r_proxy": None if self.r_proxy is None else self.r_proxy.shape[0],
            "r_members": None if self.r_members is None else self.r_members.shape[1],
            "r_heldout": None if self.r_heldout is None else self.r_heldout.shape[0],
            "completions": None if self.completions is None else len(self.completions),
            "completion_ids": None if self.completion_ids is None else len(self.completion_ids),
            "logp": None if self.logp is None else len(self.logp),
            "logp_ref": None if self.logp_ref is None else len(self.logp_ref),
            "latents": None if self.latents is None else self.latents.shape[0],
        }
        given = {k: v for k, v in sizes.items() if v is not None}
        if len(set(given.values())) > 1:
            first = next(iter(given))
            other = next(k for k, v in given.items() if v != given[first])
            raise _fail(
                self.step,
                other,
                f"has {given[other]} completions, {first} has {given[first]}; every per-sample "
                "field must hold the same B samples",
            )
        per_token = {
            k: getattr(self, k)
            for k in ("completion_ids", "logp", "logp_ref")
            if getattr(self, k) is not None
        }
        if len(per_token) > 1:
            names = list(per_token)
            for b in range(len(per_token[names[0]])):
                lens = {k: per_token[k][b].size for k in names}
                if len(set(lens.values())) > 1:
                    raise _fail(
                        self.step, f"{names[1]}[{b}]", f"token counts differ between fields: {lens}"
                    )

    def to_record(self) -> dict[str, Any]:
        """The point as a JSON-ready dict (a line of a run's ``monitor.jsonl``), floats
        rounded (``_FLOAT_DECIMALS``, latents ``_DECIMALS``). ``EvalPoint.from_record`` reads
        it back; a monitor fed ``from_record(p.to_record())`` computes what a resumed or
        offline one does."""
        out: dict[str, Any] = {"version": POINT_VERSION, "step": self.step}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "step" or v is None:
                continue
            digits = _DECIMALS.get(f.name, _FLOAT_DECIMALS)
            if f.name == "kl":
                out["kl"] = round(v, digits)
            elif f.name == "completions":
                out[f.name] = list(v)
            elif f.name == "completion_ids":
                out[f.name] = [a.tolist() for a in v]
            elif isinstance(v, tuple):  # ragged float rows (logp, logp_ref)
                out[f.name] = [np.round(a, digits).tolist() for a in v]
            else:
                out[f.name] = np.round(v, digits).tolist()
        return out

    @classmethod
    def from_record(cls, record: Mapping[str, Any], where: str = "record") -> EvalPoint:
        """The point of a record written by :meth:`to_record`; a bad record is a
        ValueError naming ``where`` (e.g. ``monitor.jsonl line 3``) and the field."""
        if not isinstance(record, Mapping):
            raise ValueError(f"{where}: expected a JSON object; got {type(record).__name__}")
        version = record.get("version")
        if version != POINT_VERSION:
            raise ValueError(f"{where}: version {version!r}; this version reads {POINT_VERSION!r}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(record) - names - {"version"})
        if unknown:
            raise ValueError(
                f"{where}: unknown field(s) {unknown}; expected some of {sorted(names)}"
            )
        if "step" not in record:
            raise ValueError(f"{where}: step: missing")
        try:
            return cls(**{k: v for k, v in record.items() if k != "version"})
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {e}") from None

    @property
    def batch_size(self) -> int | None:
        """B, or None when no per-sample field is given."""
        for name in ("r_proxy", "completions", "completion_ids", "logp", "latents", "r_heldout"):
            v = getattr(self, name)
            if v is not None:
                return len(v)
        return None if self.r_members is None else self.r_members.shape[1]

    def kl_estimate(self) -> float:
        """``kl`` if given, else the k1 estimate mean_b Σ_t (logp − logp_ref), else NaN."""
        if self.kl is not None:
            return self.kl
        if self.logp is None or self.logp_ref is None:
            return math.nan
        width = max(a.size for a in self.logp)
        pad = np.zeros((len(self.logp), width))
        mask = np.zeros((len(self.logp), width), dtype=bool)
        ref = pad.copy()
        for b, (a, r) in enumerate(zip(self.logp, self.logp_ref, strict=True)):
            pad[b, : a.size], ref[b, : r.size], mask[b, : a.size] = a, r, True
        kl = sequence_kl(torch.from_numpy(pad), torch.from_numpy(ref), torch.from_numpy(mask))
        return float(kl.mean())


def _check_points(points: tuple[EvalPoint, ...], start: int) -> None:
    """Check ``points[start:]`` (ValueError naming the point and the field): each an EvalPoint,
    steps strictly increasing, members and latent dimensions those of the first point that has
    them. ``points[:start]`` were checked before."""
    for i in range(start, len(points)):
        if not isinstance(points[i], EvalPoint):
            raise ValueError(
                f"run history: points[{i}]: expected an EvalPoint; got {type(points[i]).__name__}"
            )
    for i in range(max(start, 1), len(points)):
        if points[i].step <= points[i - 1].step:
            raise ValueError(
                f"run history: points[{i}] has step {points[i].step} after step "
                f"{points[i - 1].step}; expected strictly increasing steps"
            )
    for name, axis in (("r_members", 0), ("latents", 1)):
        if all(getattr(p, name) is None for p in points[start:]):
            continue
        first = next(q for q in points if getattr(q, name) is not None)
        dim0 = getattr(first, name).shape[axis]
        for p in points[start:]:
            value = getattr(p, name)
            if value is not None and value.shape[axis] != dim0:
                what = "members" if name == "r_members" else "latent dimensions"
                raise ValueError(
                    f"evaluation point at step {p.step}: {name}: has {value.shape[axis]} "
                    f"{what}, the point at step {first.step} has {dim0}; expected the same in "
                    "every point"
                )


@dataclass(frozen=True)
class RunHistory:
    """The evaluation points of one run, in strictly increasing step order.

    ``points[0]`` is the reference of the drift detectors (the base policy's samples). Member
    counts and latent dimensions must agree across points.
    """

    points: Sequence[EvalPoint]

    def __post_init__(self) -> None:
        points = tuple(self.points)
        if not points:
            raise ValueError("run history: expected at least one evaluation point; got none")
        _check_points(points, 0)
        object.__setattr__(self, "points", points)

    def append(self, point: EvalPoint) -> RunHistory:
        """This history with ``point`` added after its last point, checking only the new point
        (its step after the last, its members and latent dimension as before): what a live
        monitor does at each evaluation, in time independent of the points already checked."""
        points = (*self.points, point)
        _check_points(points, len(self.points))
        new = object.__new__(RunHistory)
        object.__setattr__(new, "points", points)
        return new

    def __len__(self) -> int:
        return len(self.points)

    @property
    def base(self) -> EvalPoint:
        """The first point: the reference of the drift detectors."""
        return self.points[0]

    @property
    def steps(self) -> np.ndarray:
        """Shape: (K,)."""
        return np.array([p.step for p in self.points], dtype=np.int64)

    def kl(self) -> np.ndarray:
        """KL(π ‖ π_0) per point (:meth:`EvalPoint.kl_estimate`; NaN where unknown). Shape: (K,)."""
        return np.array([p.kl_estimate() for p in self.points])

    def prefix(self, k: int) -> RunHistory:
        """The first k points (what a live monitor had at the k-th evaluation)."""
        return RunHistory(self.points[:k])

    def fields_present(self) -> set[str]:
        """Names of the optional fields given at some point."""
        return {
            f.name
            for f in fields(EvalPoint)
            if f.name != "step" and any(getattr(p, f.name) is not None for p in self.points)
        }
