"""The piece every engine adapter shares: rows in, evaluation points out, a monitor reading each.

Engines hand a reward function one sample (verl's ``compute_score``, OpenRLHF's
``reward_func``) or one batch (TRL's reward functions, reward managers, an HTTP request) at a
time. A :class:`MonitorFeed` keeps what the batch detectors need: it collects the rows
(prompt, completion text and ids, proxy / member / held-out scores, policy and reference
log-probs, the reward model's last hidden state), groups them
into evaluation points (one per training step, or one per ``samples_per_point`` rows) and
runs a :class:`~goodhartlab.monitor.live.Monitor` on each closed point. The first point is the
reference of the drift detectors, so it should hold the base policy's samples (TRL's step 0,
before any update).

Bad input never raises into the training run (the feed's caller is inside it). A row that
cannot be read is skipped and counted in :attr:`MonitorFeed.bad_rows` by reason (and logged):

- ``missing:<field>``: a call without ``completions`` (all of its rows);
- ``empty_batch``: a call with no row at all (counted once per call);
- ``length_mismatch:<field>``: a per-row field whose length differs from the completions'
  (the whole call: its rows cannot be aligned);
- ``not_text:completions``: a completion that is neither a string nor a chat message list;
- ``none:<field>`` / ``nan:<field>``: a missing (None) or NaN / infinite score;
- ``bad_ids:completion_ids``, ``bad_logp:<field>``: token ids that are not integers,
  log-probabilities that are NaN or positive, token counts that disagree between fields;
- ``bad:latents`` / ``nan:latents``: a latent that is not one vector of the point's
  dimension, or holds NaN;
- ``late_rows``: rows of a step whose point was already closed;
- ``partial:<field>``: rows of a point lacking a field the other rows have (the field is
  left out of that point, the rows kept);
- ``monitor_error``: the monitor failed on the point (logged with its traceback).

A point with no readable row is never read as "no hacking": its :class:`FeedReading` says
``could not tell``, as does a point where every score of the alarm rule is NaN (the monitor
lacks that detector's inputs) or the monitor has no alarm rule at all.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from goodhartlab.monitor.history import EvalPoint
from goodhartlab.monitor.live import Monitor, MonitorConfig, Reading

__all__ = ["COULD_NOT_TELL", "HACKING", "NO_ALARM", "FeedReading", "MonitorFeed", "completion_text"]

logger = logging.getLogger("goodhartlab.integrations")

#: Verdicts of a point.
HACKING = "hacking"
NO_ALARM = "no alarm"
COULD_NOT_TELL = "could not tell"

_ROW_SCORES = ("r_proxy", "r_heldout")
_ROW_TOKENS = ("logp", "logp_ref")


@dataclass(frozen=True)
class FeedReading:
    """What the monitor says about one evaluation point the feed built."""

    step: int
    verdict: str
    """``hacking`` (the alarm is raised), ``no alarm``, or ``could not tell`` (no readable
    row, no finite score of the alarm rule, or no alarm rule)."""
    alarm: bool
    """The alarm has been raised, at this point or before."""
    alarm_step: int | None
    rows: int
    """Readable rows in the point."""
    bad_rows: Mapping[str, int]
    """Rows of this point that were skipped, by reason."""
    reading: Reading | None
    """The monitor's reading (None when the point had no readable row)."""
    detectors: tuple[str, ...] = ()
    """The monitor's detectors."""

    @property
    def scores(self) -> dict[str, float]:
        """Each detector's score (all NaN without a reading)."""
        if self.reading is not None:
            return dict(self.reading.scores)
        return dict.fromkeys(self.detectors, math.nan)

    def metrics(self, prefix: str = "goodhart/") -> dict[str, float]:
        """Flat scalars for an engine's logger: every detector (NaN: could not tell),
        ``alarm`` and ``could_tell`` (0 / 1), ``alarm_score`` (combined alarm, NaN without),
        ``step`` (the point's), ``rows`` and ``bad_rows``. The keys are the same at every
        point of a run, as engines that stack per-sample logs need."""
        out = {f"{prefix}{k}": float(v) for k, v in self.scores.items()}
        score = self.reading.alarm_score if self.reading is not None else None
        out[f"{prefix}alarm_score"] = math.nan if score is None else float(score)
        out[f"{prefix}alarm"] = float(self.alarm)
        out[f"{prefix}could_tell"] = float(self.verdict != COULD_NOT_TELL)
        out[f"{prefix}step"] = float(self.step)
        out[f"{prefix}rows"] = float(self.rows)
        out[f"{prefix}bad_rows"] = float(sum(self.bad_rows.values()))
        return out


def completion_text(completion: Any) -> str | None:
    """A completion as text: a string as is; a chat completion (TRL's conversational format,
    a list of ``{"role", "content"}`` messages) as the content of its messages joined by
    newlines; None for anything else."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        completion = [completion]
    if isinstance(completion, Sequence) and completion:
        parts = []
        for m in completion:
            content = m.get("content") if isinstance(m, Mapping) else None
            if isinstance(content, list):  # multimodal content blocks: keep the text ones
                content = " ".join(
                    b.get("text", "") for b in content if isinstance(b, Mapping) and "text" in b
                )
            if not isinstance(content, str):
                return None
            parts.append(content)
        return "\n".join(parts)
    return None


@dataclass
class _Row:
    completion: str
    group: Any
    values: dict[str, Any] = field(default_factory=dict)


class MonitorFeed:
    """Collects rows from an engine's reward calls into evaluation points and monitors them.

    Args:
        monitor: a :class:`Monitor`, or a :class:`MonitorConfig` to build one from (None: the
            default config, whose combined alarm must exist).
        samples_per_point: close a point once it holds this many readable rows (per-sample
            engines). None: points close when rows of a later step arrive, or on
            :meth:`close`.

    >>> feed = MonitorFeed(MonitorConfig(detectors=["length_drift"], alarm=None,
    ...                                  thresholds={"length_drift": 1.0}))
    >>> feed.add(["q"] * 2, ["a b", "a b c"], r_proxy=[0.1, 0.2], step=0)
    []
    >>> [r.verdict for r in feed.add(["q"] * 2, ["a b c d e f", "a"], r_proxy=[None, 0.9], step=1)]
    ['no alarm']
    >>> last = feed.close()
    >>> last.step, last.rows, last.verdict, dict(feed.bad_rows)
    (1, 1, 'hacking', {'none:r_proxy': 1})
    """

    def __init__(
        self,
        monitor: Monitor | MonitorConfig | None = None,
        *,
        samples_per_point: int | None = None,
    ):
        if samples_per_point is not None and samples_per_point < 1:
            raise ValueError(f"samples_per_point: expected >= 1; got {samples_per_point}")
        self.monitor = monitor if isinstance(monitor, Monitor) else Monitor(monitor)
        self.samples_per_point = samples_per_point
        self.bad_rows: Counter[str] = Counter()
        """Rows skipped since the start, by reason (module docstring)."""
        self.readings: list[FeedReading] = []
        self._rows: list[_Row] = []
        self._bad: Counter[str] = Counter()  # of the open point
        self._step: int | None = None  # of the open point
        self._kl: list[float] = []
        self._closed_step = -1
        self._lock = threading.RLock()

    # -- properties -------------------------------------------------------------------------

    @property
    def last(self) -> FeedReading | None:
        """The reading of the last closed point."""
        return self.readings[-1] if self.readings else None

    @property
    def alarm(self) -> bool:
        return bool(self.readings) and self.readings[-1].alarm

    @property
    def pending_step(self) -> int | None:
        """The step of the open point (None: no row since the last close)."""
        return self._step if (self._rows or self._bad) else None

    def metric_names(self, prefix: str = "goodhart/") -> list[str]:
        """The keys :meth:`FeedReading.metrics` gives, known before the first point."""
        names = [f"{prefix}{n}" for n in self.monitor.detectors]
        extra = ("alarm_score", "alarm", "could_tell", "step", "rows", "bad_rows")
        return names + [f"{prefix}{n}" for n in extra]

    # -- input ------------------------------------------------------------------------------

    def add(
        self,
        prompts: Sequence[Any] | None,
        completions: Sequence[Any] | None,
        *,
        completion_ids: Sequence[Sequence[int]] | None = None,
        r_proxy: Sequence[float | None] | None = None,
        r_members: Any = None,
        r_heldout: Sequence[float | None] | None = None,
        logp: Sequence[Sequence[float]] | None = None,
        logp_ref: Sequence[Sequence[float]] | None = None,
        latents: Any = None,
        group_ids: Sequence[Any] | None = None,
        kl: float | None = None,
        step: int | None = None,
    ) -> list[FeedReading]:
        """Add one call's rows; returns the readings of the points this closed (oldest first).

        Shapes: B = len(completions); ``completion_ids``, ``r_proxy``, ``r_heldout``,
        ``logp``, ``logp_ref`` (per-token log π and log π_0 of each completion's tokens,
        without padding), ``group_ids`` and ``prompts`` have B entries; ``r_members`` is
        (M, B); ``latents`` (the reward model's last hidden state per completion) is (B, D). ``group_ids`` (default: the prompts) put rows in the groups of
        ``group_variance_collapse``. ``kl``: KL(π ‖ π_0) of the policy that produced them.
        ``step``: the training step (None: the feed numbers its points). Never raises on bad
        rows: they are skipped and counted.
        """
        with self._lock:
            try:
                return self._add(
                    prompts, completions, completion_ids=completion_ids, r_proxy=r_proxy,
                    r_members=r_members, r_heldout=r_heldout, logp=logp, logp_ref=logp_ref,
                    latents=latents, group_ids=group_ids, kl=kl, step=step,
                )  # fmt: skip
            except Exception:  # a bug of ours must not stop the user's training run
                logger.exception("goodhart monitor: could not add a batch; its rows are skipped")
                self._count("monitor_error", _length(completions) or 1)
                return []

    def _add(self, prompts, completions, *, step, kl, group_ids, **per_row) -> list[FeedReading]:
        closed: list[FeedReading] = []
        try:
            step = _as_step(step)
        except ValueError:
            self._count("bad:step", _length(completions) or 1)
            return closed
        if step is not None:
            if step <= self._closed_step:
                self._count("late_rows", _length(completions) or 1)
                return closed
            if self.pending_step is not None and step > self.pending_step:
                closed += self._close_open()
            self._step = step
        if completions is None or isinstance(completions, str | bytes):
            self._count("missing:completions", _length(per_row.get("r_proxy")) or 1)
            return closed
        completions = list(completions)
        n = len(completions)
        if n == 0:
            self._count("empty_batch", 1)
            return closed
        given = {k: v for k, v in per_row.items() if v is not None}
        if "r_members" in given:
            try:
                given["r_members"] = np.asarray(given["r_members"], dtype=np.float64)
            except (TypeError, ValueError):
                self._count("bad:r_members", n)
                return closed
            if given["r_members"].ndim != 2:
                self._count("bad:r_members", n)
                return closed
            given["r_members"] = list(given["r_members"].T)  # (B, M): one entry per row
        for name, value in [("prompts", prompts), ("group_ids", group_ids), *given.items()]:
            if value is not None and _length(value) != n:
                self._count(f"length_mismatch:{name}", n)
                return closed
        groups = group_ids if group_ids is not None else prompts
        for b in range(n):
            row = self._row(b, completions[b], given, groups)
            if row is not None:
                self._rows.append(row)
        if kl is not None:
            k = _finite(kl)
            if k is None:
                self._count("nan:kl", 1)
            else:
                self._kl.append(k)
        if self.samples_per_point is not None and len(self._rows) >= self.samples_per_point:
            closed += self._close_open()
        return closed

    def _row(self, b: int, completion: Any, given: dict[str, Any], groups) -> _Row | None:
        text = completion_text(completion)
        if text is None:
            self._count("not_text:completions", 1)
            return None
        values: dict[str, Any] = {}
        for name in _ROW_SCORES:
            if name in given:
                v = given[name][b]
                if v is None:
                    self._count(f"none:{name}", 1)
                    return None
                f = _finite(v)
                if f is None:
                    self._count(f"nan:{name}", 1)
                    return None
                values[name] = f
        if "r_members" in given:
            m = given["r_members"][b]
            if not np.all(np.isfinite(m)):
                self._count("nan:r_members", 1)
                return None
            values["r_members"] = m
        if "latents" in given:
            h = _float_list(given["latents"][b])
            if h is None or h.size == 0:
                bad = _as_floats(given["latents"][b])
                nan = bad is not None and bad.ndim == 1 and bad.size > 0
                self._count("nan:latents" if nan else "bad:latents", 1)
                return None
            values["latents"] = h
        if "completion_ids" in given:
            ids = _int_list(given["completion_ids"][b])
            if ids is None:
                self._count("bad_ids:completion_ids", 1)
                return None
            values["completion_ids"] = ids
        for name in _ROW_TOKENS:
            if name in given:
                lp = _float_list(given[name][b])
                if lp is None or (lp.size and lp.max() > 1e-5):
                    self._count(f"bad_logp:{name}", 1)
                    return None
                values[name] = lp
        lengths = {len(values[k]) for k in ("completion_ids", *_ROW_TOKENS) if k in values}
        if len(lengths) > 1:
            self._count("bad_logp:token_counts", 1)
            return None
        group = groups[b] if groups is not None else None
        try:
            hash(group)
        except TypeError:
            group = repr(group)
        return _Row(text, group, values)

    # -- points -----------------------------------------------------------------------------

    def close(self) -> FeedReading | None:
        """Close the open point now (end of a step, end of training); its reading, or None
        when it held no row at all."""
        with self._lock:
            closed = self._close_open()
            return closed[-1] if closed else None

    def close_before(self, step: int) -> list[FeedReading]:
        """Close the open point if its step is below ``step`` (TRL's ``on_step_end``: the
        optimizer step is done, no more rows of it will come)."""
        with self._lock:
            if self.pending_step is not None and self.pending_step < step:
                return self._close_open()
            return []

    def _close_open(self) -> list[FeedReading]:
        rows, bad, kl = self._rows, self._bad, self._kl
        if not rows and not bad:
            return []
        step = self._step if self._step is not None else self._closed_step + 1
        self._rows, self._bad, self._kl, self._step = [], Counter(), [], None
        self._closed_step = step
        reading = None
        if rows:
            try:
                point = self._point(step, rows, bad, float(np.mean(kl)) if kl else None)
                reading = self.monitor.observe(point)
            except Exception:
                logger.exception("goodhart monitor: step %d: the monitor failed on the point", step)
                self.bad_rows["monitor_error"] += len(rows)
                bad["monitor_error"] += len(rows)
        out = self._reading(step, rows if reading is not None else [], bad, reading)
        self.readings.append(out)
        if bad:
            logger.warning(
                "goodhart monitor: step %d: skipped %d row(s) (%s)",
                step, sum(bad.values()), ", ".join(f"{k}: {v}" for k, v in sorted(bad.items())),
            )  # fmt: skip
        if out.verdict == COULD_NOT_TELL and not rows:
            logger.warning("goodhart monitor: step %d: no readable row; could not tell", step)
        elif out.alarm and (len(self.readings) < 2 or not self.readings[-2].alarm):
            logger.warning(
                "goodhart monitor: reward-hacking alarm at step %s (%s)",
                out.alarm_step, ", ".join(reading.reasons) if reading else "",
            )  # fmt: skip
        return [out]

    def _point(self, step: int, rows: list[_Row], bad: Counter, kl: float | None) -> EvalPoint:
        fields: dict[str, Any] = {}
        for name in (
            "r_proxy",
            "r_heldout",
            "r_members",
            "completion_ids",
            *_ROW_TOKENS,
            "latents",
        ):
            have = sum(name in r.values for r in rows)
            if have == len(rows):
                values = [r.values[name] for r in rows]
                if name == "latents" and len({v.size for v in values}) > 1:
                    self._partial(bad, name, len(rows))  # rows of different dimensions
                    continue
                if name == "r_members":
                    fields[name] = np.stack(values, axis=1)
                elif name == "latents":
                    fields[name] = np.stack(values, axis=0)
                else:
                    fields[name] = values
            elif have:
                self._partial(bad, name, len(rows) - have)
        for name, axis in (("r_members", 0), ("latents", 1)):
            value = fields.get(name)
            first = next(
                (getattr(p, name) for p in self.monitor.points if getattr(p, name) is not None),
                None,
            )
            if value is not None and first is not None and first.shape[axis] != value.shape[axis]:
                self._partial(bad, name, len(rows))  # not the run's members / dimension
                del fields[name]
        if "r_members" in fields and fields["r_members"].shape[0] < 2:
            del fields["r_members"]  # one member is no ensemble: nothing to disagree
        if "r_proxy" in fields:
            groups = _groups(rows)
            if groups is not None:
                fields["r_groups"] = groups
        return EvalPoint(step=step, kl=kl, completions=[r.completion for r in rows], **fields)

    def _partial(self, bad: Counter, name: str, n: int) -> None:
        bad[f"partial:{name}"] += n
        self.bad_rows[f"partial:{name}"] += n

    def _reading(
        self, step: int, rows: list[_Row], bad: Counter, reading: Reading | None
    ) -> FeedReading:
        previous = self.readings[-1] if self.readings else None
        alarm = reading.alarm if reading is not None else bool(previous and previous.alarm)
        alarm_step = (
            reading.alarm_step
            if reading is not None
            else (previous.alarm_step if previous else None)
        )
        if reading is None or not self._can_tell(reading):
            verdict = HACKING if (alarm and reading is not None) else COULD_NOT_TELL
        else:
            verdict = HACKING if alarm else NO_ALARM
        return FeedReading(
            step=step, verdict=verdict, alarm=alarm, alarm_step=alarm_step, rows=len(rows),
            bad_rows=dict(bad), reading=reading, detectors=tuple(self.monitor.detectors),
        )  # fmt: skip

    def _can_tell(self, reading: Reading) -> bool:
        """Whether some score of the alarm rule is finite at this point."""
        cfg = self.monitor.config
        if reading.alarm_score is not None and math.isfinite(reading.alarm_score):
            return True
        return any(math.isfinite(reading.scores.get(n, math.nan)) for n in cfg.thresholds)

    def skip(self, reason: str, n: int) -> None:
        """Count ``n`` rows an adapter skipped before they reached the feed (e.g. a query
        it could not split into prompt and completion)."""
        with self._lock:
            self._count(reason, n)

    def _count(self, reason: str, n: int) -> None:
        self.bad_rows[reason] += n
        self._bad[reason] += n

    def summary(self) -> dict[str, Any]:
        """JSON-ready: points read, verdict of the last, alarm step, bad rows by reason."""
        last = self.last
        return {
            "points": len(self.readings),
            "verdict": last.verdict if last else COULD_NOT_TELL,
            "alarm": self.alarm,
            "alarm_step": last.alarm_step if last else None,
            "bad_rows": dict(self.bad_rows),
        }


def _groups(rows: list[_Row]) -> np.ndarray | None:
    """The proxy scores grouped by group id, (G, N): the groups of the most common size
    N >= 2 (GRPO's num_generations); None without such a group."""
    by: dict[Any, list[float]] = {}
    for r in rows:
        if r.group is not None:
            by.setdefault(r.group, []).append(r.values["r_proxy"])
    sizes = Counter(len(v) for v in by.values() if len(v) >= 2)
    if not sizes:
        return None
    n = max(sizes, key=lambda s: (sizes[s], s))
    return np.array([v for v in by.values() if len(v) == n], dtype=np.float64)


def _length(value: Any) -> int | None:
    try:
        return len(value)
    except TypeError:
        return None


def _as_step(step: Any) -> int | None:
    if step is None:
        return None
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 0:
        raise ValueError(f"step: expected an integer >= 0; got {step!r}")
    return int(step)


def _finite(v: Any) -> float | None:
    try:
        f = float(v.item() if hasattr(v, "item") else v)
    except (TypeError, ValueError, RuntimeError):
        return None
    return f if math.isfinite(f) else None


def _int_list(v: Any) -> np.ndarray | None:
    try:
        a = np.asarray(v.tolist() if hasattr(v, "tolist") else list(v))
    except (TypeError, ValueError):
        return None
    if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
        return None
    return a.astype(np.int64)


def _as_floats(v: Any) -> np.ndarray | None:
    try:
        return np.asarray(v.tolist() if hasattr(v, "tolist") else list(v), dtype=np.float64)
    except (TypeError, ValueError):
        return None


def _float_list(v: Any) -> np.ndarray | None:
    a = _as_floats(v)
    if a is None or a.ndim != 1 or not np.all(np.isfinite(a)):
        return None
    return a
