"""The live monitor inside a training run: one reading per evaluation, an alarm record, the
last policy before the alarm.

:class:`RunMonitor` joins a :class:`~goodhartlab.monitor.Monitor` to a run directory:

- every evaluation's monitor inputs (no gold) go to ``monitor.jsonl``, one
  :meth:`EvalPoint.to_record` line per evaluation, so that ``goodhart monitor RUN_DIR`` and a
  resumed run read exactly what the live monitor read;
- the reading (each detector's score, the alarm probability, whether the alarm is raised) is
  returned for the evaluation's metrics line;
- when the alarm is first raised, ``alarm.json`` records its step, KL, reasons and scores;
- with ``stop_on_alarm``, the policy of every quiet evaluation is saved to ``before_alarm/``
  (replacing the previous one), so after the alarm stops the run it holds the last policy
  the monitor had not flagged.

Both training loops (``optimize.rl`` and ``optimize.daa``) use it the same way: the sources the
monitor reads (:func:`resolve_sources`), one :meth:`RunMonitor.observe` per evaluation (its
reading in the metrics line), and the alarm's fields of summary.json
(:meth:`RunMonitor.summary`).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from goodhartlab.artifacts import atomic_write_json
from goodhartlab.monitor.history import EvalPoint
from goodhartlab.monitor.live import Monitor, MonitorConfig, Reading
from goodhartlab.optimize.rundir import RunDir

__all__ = ["ALARM_FILE", "BEFORE_ALARM_DIR", "MONITOR_LOG", "RunMonitor", "resolve_sources"]

MONITOR_LOG = "monitor"
ALARM_FILE = "alarm.json"
BEFORE_ALARM_DIR = "before_alarm"


def resolve_sources(reward: Any, given: dict[str, Any] | None) -> dict[str, Any]:
    """The monitor's reward sources: the caller's (``members``, ``heldout``,
    ``heldout_members``, ``latents``), latents by default from the optimized reward model
    (member 0 of an ensemble). Gold is never one of them."""
    from goodhartlab.rewards import Ensemble, RewardModel

    sources = dict(given or {})
    if "latents" not in sources:
        model = reward.members[0] if isinstance(reward, Ensemble) else reward
        sources["latents"] = model if isinstance(model, RewardModel) else None
    return sources


class RunMonitor:
    """A run's monitor (see the module docstring).

    Args:
        rundir: the run directory.
        config: the monitor's settings.
        start: the step the run resumes after (0: a new run): the points of ``monitor.jsonl``
            up to it are replayed, so the readings equal an uninterrupted run's.
    """

    def __init__(self, rundir: RunDir, config: MonitorConfig, start: int = 0):
        self.rundir = rundir
        self.config = config
        self.monitor = Monitor(config)
        where = self.rundir.log(MONITOR_LOG)
        for lineno, record in enumerate(rundir.read(MONITOR_LOG), start=1):
            if record.get("step", -1) <= start:
                self.monitor.observe(EvalPoint.from_record(record, f"{where} line {lineno}"))

    @property
    def alarm_step(self) -> int | None:
        return self.monitor.alarm_step

    def observe(
        self, step: int, record: dict[str, Any], policy: nn.Module, tokenizer: Any, kl: float
    ) -> Reading:
        """Log the evaluation's monitor inputs, read them, and act on the alarm."""
        point = EvalPoint.from_record(
            EvalPoint(step=step, **record).to_record(), f"evaluation at step {step}"
        )  # through the record, as a resumed run reads it
        raised_before = self.monitor.alarm_step is not None
        reading = self.monitor.observe(point)
        self.rundir.append(MONITOR_LOG, point.to_record())
        if reading.alarm and not raised_before:
            atomic_write_json(
                self.rundir.path / ALARM_FILE,
                {
                    "step": reading.alarm_step,
                    "raised_at_step": step,
                    "kl": kl,
                    "reasons": list(reading.reasons),
                    "alarm_score": reading.alarm_score,
                    "threshold": None
                    if self.monitor.alarm is None
                    else self.monitor.alarm.threshold,
                    "scores": reading.to_json()["scores"],
                    "before_alarm": BEFORE_ALARM_DIR
                    if (self.rundir.path / BEFORE_ALARM_DIR).is_dir()
                    else None,
                    "config": self.config.model_dump(mode="json"),
                },
            )
        elif not reading.alarm and self.config.stop_on_alarm:
            self._save_policy(policy, tokenizer, step)
        return reading

    def stops(self, reading: Reading) -> bool:
        """Whether the run stops after this reading (the alarm is raised, ``stop_on_alarm``)."""
        return bool(reading.alarm and self.config.stop_on_alarm)

    def summary(self, stopped_at: int | None) -> dict[str, int | None]:
        """summary.json's monitor fields: the alarm's step and the step the run stopped at."""
        return {"alarm_step": self.alarm_step, "stopped_at_step": stopped_at}

    def _save_policy(self, policy: nn.Module, tokenizer: Any, step: int) -> None:
        """``before_alarm/`` ← this policy, replaced whole (a temp dir, then a rename)."""
        final = self.rundir.path / BEFORE_ALARM_DIR
        tmp = Path(tempfile.mkdtemp(dir=self.rundir.path, prefix=".before_alarm-"))
        try:
            policy.save_pretrained(tmp, safe_serialization=True)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
            atomic_write_json(tmp / "goodhart_step.json", {"step": step})
            old = None
            if final.exists():
                old = final.with_name(f".old-{BEFORE_ALARM_DIR}")
                shutil.rmtree(old, ignore_errors=True)
                final.rename(old)
            tmp.rename(final)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
