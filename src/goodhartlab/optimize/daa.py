"""Direct alignment (DPO, IPO, SLiC, RPO) on preference pairs, offline or online-iterative.

One loop, read top to bottom in :func:`run_daa`. Offline, the base policy is trained on a
fixed set of (noisy, gold-labelled) pairs with a loss of ``core.losses`` against the frozen
base policy π0 (Rafailov et al. 2024, "Scaling laws for reward model overoptimization in
direct alignment algorithms", arXiv 2406.02900). Online (Dong et al. 2024, "RLHF workflow",
arXiv 2405.07863), each of K rounds samples two completions per prompt from the current
policy, labels them with a proxy (a reward model, or an ensemble and an aggregator), and
trains on them; the reference stays π0.

Each step scores the chosen and the rejected completions with one forward pass each
(``measure.evaluate.completion_logprobs``; prompt tokens masked, completion + EOS scored)
under π and π0, and takes one AdamW step on the loss. Evaluation (step 0 = π0, then at
``eval_points_in_first_epoch`` of the first epoch and after every epoch) writes one line of
metrics.jsonl with the RL loop's fields (``method``, ``step``, ``kl``, ``d``, ``gold``,
``proxy``, ``length``, ...) plus ``epoch_fraction`` and ``win_rate``: the fraction of held-out
samples whose gold beats the base policy's sample in the same row (same prompt, same sample
index, same random numbers), ties counting ½. At step 0 every row is a tie, so the win rate
of the base policy is exactly 0.5.

With ``monitor`` (a :class:`~goodhartlab.monitor.live.MonitorConfig`, as in the RL loop), every
evaluation also logs the monitor's inputs (no gold: the proxy's, the members' and a held-out
reward's scores, tokens, log-probs, latents) to ``monitor.jsonl`` and its reading to the
metrics line's ``monitor``, writes ``alarm.json`` when the alarm is first raised, and with
``stop_on_alarm`` stops the run there (``before_alarm/`` holds the last quiet policy), all
through :class:`~goodhartlab.optimize.monitoring.RunMonitor`.

Pairs the losses cannot use are skipped and counted in manifest.json and summary.json
(``skipped``): ``identical`` (chosen == rejected: h ≡ 0, no signal), ``empty_completion``
(chosen or rejected is ""), ``empty_prompt`` (no token to condition on), ``too_long``
(prompt + completion + EOS longer than the model's context). When every pair is skipped the
run stops with an error naming the counts. Online, each round's drops (and ``proxy_tie``:
the proxy scored both completions equally) are in manifest.json ``rounds`` and summed in
summary.json.

The run directory is the RL loop's (:mod:`goodhartlab.optimize.rundir`), plus
``base_eval.jsonl`` (the base policy's evaluation samples, for the win rate) and, online,
``rounds/round_K.jsonl`` (the proxy-labelled pairs of each round). A resumed run writes the
same metrics as an uninterrupted one: the pair order of every epoch and the sampling of
every round are seeded from (seed, epoch / round), and weights, optimizer and RNG states
are checkpointed after every evaluation.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from goodhartlab.artifacts import atomic_write_json
from goodhartlab.core.losses import DAA_LOSSES
from goodhartlab.core.scaling import fit_rl_law, overoptimization
from goodhartlab.data.schema import PreferencePair
from goodhartlab.measure.evaluate import (
    Rollouts,
    completion_logprobs,
    completion_rollouts,
    evaluate_policy,
)
from goodhartlab.models.loading import load_policy_and_reference, resolve_autocast_dtype
from goodhartlab.models.prompts import encode_prompts
from goodhartlab.monitor.live import MonitorConfig
from goodhartlab.optimize.monitoring import MONITOR_LOG, RunMonitor, resolve_sources
from goodhartlab.optimize.rundir import (
    RunDir,
    append_jsonl,
    derived_seed,
    load_checkpoint,
    prompts_hash,
    read_jsonl,
    reward_identity,
    save_checkpoint,
)
from goodhartlab.registry import name_in
from goodhartlab.rewards.pipeline import RewardPipeline, RewardPipelineConfig

__all__ = [
    "METRICS_VERSION",
    "DAAConfig",
    "DAAResult",
    "PairBatch",
    "filter_pairs",
    "run_daa",
    "sequence_logps",
    "tokenize_pairs",
]

#: Bump on any change of what metrics.jsonl / train.jsonl fields mean.
METRICS_VERSION = "daa/v1"

#: Fields that may differ between a run and its resumption.
RESUMABLE_CHANGES = ("device",)

SKIP_REASONS = ("identical", "empty_completion", "empty_prompt", "too_long")


class DAAConfig(BaseModel):
    """Settings of a direct-alignment run. Invalid values fail at construction, naming the field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    loss: name_in(DAA_LOSSES) = Field(
        "dpo",
        description="Registry 'daa_loss': dpo: −log σ(β h); ipo: (h − 1/(2β))²; slic: max(0, "
        "1 − β h); rpo: DPO + η · length-normalized NLL of the chosen completion "
        "(core.losses), with h the difference of the chosen and rejected log-ratios "
        "log π − log π0.",
    )
    name: str | None = Field(
        None, description="Method label in metrics.jsonl (default LOSS, or online-LOSS)."
    )
    beta: float = Field(0.1, gt=0, description="β: the strength of the implicit KL constraint.")
    eta: float = Field(1.0, ge=0, description="rpo: η, the weight of the chosen-NLL term.")
    label_smoothing: float = Field(
        0.0, ge=0, lt=0.5, description="dpo: ε of conservative DPO (0: plain DPO)."
    )
    lr: float = Field(1e-4, gt=0, description="AdamW learning rate (constant).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float | None = Field(
        1.0, gt=0, description="Clip the gradient norm to this (None: no clipping)."
    )
    epochs: int = Field(1, ge=1, description="Passes over the pairs (online: per round).")
    batch_size: int = Field(32, ge=1, description="Pairs per optimizer step.")
    max_pairs: int | None = Field(
        None, ge=1, description="Use only the first this many (usable) pairs (None: all)."
    )
    eval_points_in_first_epoch: tuple[float, ...] = Field(
        (0.1, 0.25, 0.5),
        description="Fractions of the first epoch (of the first round, online) after which to "
        "evaluate, in (0, 1]; every epoch end is evaluated anyway.",
    )
    eval_prompts: int | None = Field(
        100, ge=1, description="Held-out prompts per evaluation (the first ones; None: all)."
    )
    eval_samples: int = Field(2, ge=1, description="Completions per held-out prompt.")
    eval_temperature: float = Field(1.0, gt=0, description="Decoding temperature of evaluation.")
    eval_batch_size: int = Field(256, ge=1, description="Rows sampled together in evaluation.")
    max_new_tokens: int = Field(64, ge=1, description="Completion budget (tokens, EOS included).")
    logged_samples: int = Field(
        4, ge=0, description="Evaluation samples per evaluation written to samples.jsonl."
    )
    keep_checkpoints: int = Field(2, ge=1, description="Newest checkpoints kept.")
    seed: int = Field(0, description="Seeds pair order, online sampling and evaluation.")
    device: str = Field("cpu", description="cpu, cuda, cuda:1, ...")
    bf16: bool = Field(False, description="bf16 autocast (only where the device supports it).")
    online: bool = Field(
        False,
        description="Online iterative mode: K rounds of sampling two completions per prompt "
        "from the current policy, labelling them with the proxy, and training on them.",
    )
    rounds: int = Field(3, ge=1, description="online: K, the number of rounds.")
    pairs_per_round: int = Field(
        256, ge=1, description="online: prompts sampled (one new pair each) per round."
    )
    temperature: float = Field(1.0, gt=0, description="online: sampling temperature of pairs.")
    reward: RewardPipelineConfig = Field(
        default_factory=RewardPipelineConfig,
        description="online: how the proxy labels pairs (the ensemble aggregator; shaping is "
        "irrelevant to a comparison and must stay 'none').",
    )
    monitor: MonitorConfig | None = Field(
        None,
        description="The hacking monitor (no gold) at every evaluation: detectors in "
        "metrics.jsonl, inputs in monitor.jsonl, alarm.json when it fires (None: off; needs "
        "a proxy, whose scores it reads).",
    )

    @model_validator(mode="after")
    def _check(self) -> DAAConfig:
        bad = [f for f in self.eval_points_in_first_epoch if not 0 < f <= 1]
        if bad:
            raise ValueError(f"eval_points_in_first_epoch: expected fractions in (0, 1]; got {bad}")
        takes = DAA_LOSSES.entry(self.loss).params.model_fields
        if self.label_smoothing > 0 and "label_smoothing" not in takes:
            raise ValueError(
                f"label_smoothing: loss {self.loss!r} does not take it (dpo does); got "
                f"{self.label_smoothing}"
            )
        if self.reward.shaping != "none":
            raise ValueError("reward.shaping: a preference label ignores shaping; use 'none'")
        return self

    @property
    def method(self) -> str:
        return self.name or (f"online-{self.loss}" if self.online else self.loss)


@dataclass(frozen=True)
class DAAResult:
    out_dir: Path
    metrics: list[dict[str, Any]]
    """The lines of metrics.jsonl."""
    policy: nn.Module
    """The trained policy."""


# --------------------------------------------------------------------------------------
# Pairs -> token batches -> sequence log-probs
# --------------------------------------------------------------------------------------


def _context_length(model: nn.Module) -> int | None:
    cfg = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def filter_pairs(
    pairs: Sequence[PreferencePair], tokenizer, context: int | None
) -> tuple[list[PreferencePair], dict[str, int]]:
    """The pairs a loss can use, and the count of each skipped kind (``SKIP_REASONS``).

    A pair is skipped (first matching reason) when chosen == rejected, when either
    completion is empty, when the prompt is empty (nothing to condition on), or when
    prompt + the longer completion + EOS exceed ``context`` tokens (None: no limit).
    """
    kept, skipped = [], dict.fromkeys(SKIP_REASONS, 0)
    for pair in pairs:
        if pair.chosen == pair.rejected:
            skipped["identical"] += 1
            continue
        if not pair.chosen or not pair.rejected:
            skipped["empty_completion"] += 1
            continue
        ids = tokenizer([pair.chosen, pair.rejected], add_special_tokens=False)["input_ids"]
        n_prompt = len(encode_prompts(tokenizer, [pair.prompt])[0])
        n_chosen, n_rejected = (len(x) for x in ids)
        if n_prompt == 0:
            skipped["empty_prompt"] += 1
            continue
        if n_chosen == 0 or n_rejected == 0:
            skipped["empty_completion"] += 1
            continue
        if context is not None and n_prompt + max(n_chosen, n_rejected) + 1 > context:
            skipped["too_long"] += 1
            continue
        kept.append(pair)
    return kept, skipped


@dataclass(frozen=True)
class PairBatch:
    """B pairs tokenized for scoring: the chosen and the rejected rows, row-aligned."""

    chosen: Rollouts
    rejected: Rollouts

    def to(self, device: torch.device) -> PairBatch:
        return PairBatch(self.chosen.to(device), self.rejected.to(device))


def tokenize_pairs(tokenizer, pairs: Sequence[PreferencePair]) -> PairBatch:
    """Tokenize pairs (already through :func:`filter_pairs`) for :func:`sequence_logps`."""
    prompts = [p.prompt for p in pairs]
    return PairBatch(
        completion_rollouts(tokenizer, prompts, [p.chosen for p in pairs]),
        completion_rollouts(tokenizer, prompts, [p.rejected for p in pairs]),
    )


def sequence_logps(model: nn.Module, rows: Rollouts) -> tuple[Tensor, Tensor]:
    """log π(y | x) summed over completion + EOS tokens, and the number of those tokens.

    Carries the gradient outside ``no_grad``. Shapes: (B,), (B,)
    """
    logp = completion_logprobs(model, rows)
    return logp.sum(dim=1), rows.completion_mask.sum(dim=1)


# --------------------------------------------------------------------------------------
# One training step
# --------------------------------------------------------------------------------------


@dataclass
class _Run:
    cfg: DAAConfig
    policy: nn.Module
    reference: nn.Module
    tokenizer: Any
    optimizer: torch.optim.Optimizer
    device: torch.device
    autocast_dtype: torch.dtype | None

    def autocast(self):
        return torch.autocast(
            self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None
        )


def _loss(run: _Run, batch: PairBatch) -> tuple[Tensor, dict[str, Tensor]]:
    """The configured loss of ``core.losses`` on one batch of pairs."""
    cfg = run.cfg
    with torch.no_grad(), run.autocast():
        ref_chosen, _ = sequence_logps(run.reference, batch.chosen)
        ref_rejected, _ = sequence_logps(run.reference, batch.rejected)
    with run.autocast():
        logp_chosen, n_chosen = sequence_logps(run.policy, batch.chosen)
        logp_rejected, _ = sequence_logps(run.policy, batch.rejected)
    entry = DAA_LOSSES.entry(cfg.loss)
    # The loss's parameters are DAAConfig fields of the same names (label_smoothing, eta).
    params = {k: getattr(cfg, k) for k in entry.params.model_fields}
    if entry.meta.get("needs_nll"):
        params["chosen_nll"] = -logp_chosen / n_chosen
    return entry.obj(logp_chosen, logp_rejected, ref_chosen, ref_rejected, cfg.beta, **params)


def daa_step(run: _Run, pairs: Sequence[PreferencePair], step: int) -> dict[str, float]:
    """One AdamW step on a batch of pairs; returns the loss and its statistics."""
    batch = tokenize_pairs(run.tokenizer, pairs).to(run.device)
    loss, stats = _loss(run, batch)
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"step {step}: the loss is {float(loss)}; the run stopped before this update "
            "(lower lr or beta)"
        )
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for g in run.optimizer.param_groups for p in g["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, run.cfg.max_grad_norm or math.inf)
    if not torch.isfinite(grad_norm):
        raise FloatingPointError(
            f"step {step}: the gradient norm is {float(grad_norm)}; the run stopped before "
            "this update (lower lr or beta)"
        )
    run.optimizer.step()
    out = {"loss": float(loss.detach()), "grad_norm": float(grad_norm)}
    out.update({k: float(v) for k, v in stats.items()})
    return out


# --------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------


def _zero_proxy(prompts: Sequence[str], completions: Sequence[str]) -> Tensor:
    return torch.zeros(len(prompts))


def _evaluate(
    run: _Run,
    eval_prompts: list[str],
    gold: Any,
    pipeline: RewardPipeline | None,
    sources: dict[str, Any] | None,
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any] | None]:
    cfg = run.cfg
    n = len(eval_prompts) * cfg.eval_samples
    metrics, samples, record = evaluate_policy(
        run.policy,
        run.reference,
        run.tokenizer,
        eval_prompts,
        gold=gold,
        proxy=pipeline if pipeline is not None else _zero_proxy,
        num_samples=cfg.eval_samples,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.eval_temperature,
        seed=derived_seed(cfg.seed, "eval"),
        batch_size=cfg.eval_batch_size,
        num_logged_samples=n,
        autocast_dtype=run.autocast_dtype,
        monitor=sources,
    )
    if pipeline is None:
        metrics.update(proxy=None, proxy_std=None)
    return metrics, samples, record


def _win_rate(samples: list[dict], base: list[dict]) -> float:
    """Row-wise gold comparison with the base policy's samples; ties count ½."""
    assert len(samples) == len(base), (len(samples), len(base))
    wins = [
        1.0 if s["gold"] > b["gold"] else 0.5 if s["gold"] == b["gold"] else 0.0
        for s, b in zip(samples, base, strict=True)
    ]
    return sum(wins) / len(wins)


def _log_eval(
    run: _Run,
    rundir: RunDir,
    eval_prompts: list[str],
    gold: Any,
    pipeline: RewardPipeline | None,
    steps_per_epoch: int,
    progress: bool,
    watch: RunMonitor | None,
    sources: dict[str, Any] | None,
    step: int,
    round_: int,
) -> bool:
    """Evaluates at ``step``: a metrics.jsonl line, its samples (step 0: base_eval.jsonl)
    and, with a monitor, its inputs and reading; True when the monitor stops the run."""
    cfg = run.cfg
    base_path = rundir.log("base_eval")
    line_metrics, samples, record = _evaluate(run, eval_prompts, gold, pipeline, sources)
    if step == 0:
        for s in samples:
            append_jsonl(base_path, s)
    base = read_jsonl(base_path)
    line = {
        "method": cfg.method,
        "step": step,
        "epoch_fraction": step / steps_per_epoch,
        **({"round": round_} if cfg.online else {}),
        **line_metrics,
        "win_rate": _win_rate(samples, base),
        "loss": cfg.loss,
        "beta": cfg.beta,
    }
    reading = None
    if watch is not None:
        reading = watch.observe(step, record, run.policy, run.tokenizer, line["kl"])
        line["monitor"] = reading.to_json()
    for s in samples[: cfg.logged_samples]:  # first: the metrics line says they are written
        rundir.append("samples", {"step": step, **s})
    rundir.append("metrics", line)
    if progress:
        print(
            f"[{cfg.method} β={cfg.beta}] step {step:>5} ep {line['epoch_fraction']:5.2f}  "
            f"kl {line['kl']:7.3f}  gold {line['gold']:7.3f}  win {line['win_rate']:.3f}  "
            f"len {line['length']:5.1f}"
            + (f"  ALARM (step {reading.alarm_step})" if reading and reading.alarm else ""),
            flush=True,
        )
    return watch is not None and watch.stops(reading)


# --------------------------------------------------------------------------------------
# Online rounds
# --------------------------------------------------------------------------------------


@torch.no_grad()
def _online_pairs(
    run: _Run, pipeline: RewardPipeline, prompts: list[str], round_: int
) -> tuple[list[PreferencePair], int]:
    """Two completions per prompt from the current policy, labelled by the proxy.

    Returns the pairs and the number of prompts dropped because the proxy tied.
    """
    from goodhartlab.measure.evaluate import sample_rollouts

    cfg = run.cfg
    gen = torch.Generator().manual_seed(derived_seed(cfg.seed, "online-prompts", round_))
    pick = torch.randint(len(prompts), (cfg.pairs_per_round,), generator=gen).tolist()
    chosen_prompts = [prompts[i] for i in pick]
    sampler = torch.Generator(device=run.device).manual_seed(
        derived_seed(cfg.seed, "online", round_)
    )
    completions: list[str] = []
    rows = max(1, cfg.eval_batch_size // 2)
    for start in range(0, len(chosen_prompts), rows):
        ro = sample_rollouts(
            run.policy,
            run.tokenizer,
            chosen_prompts[start : start + rows],
            2,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            generator=sampler,
            autocast_dtype=run.autocast_dtype,
        )
        completions += ro.completions
    flat = [p for p in chosen_prompts for _ in range(2)]
    r_proxy, _ = pipeline.score_source(flat, completions)
    out, ties = [], 0
    for i, prompt in enumerate(chosen_prompts):
        a, b = completions[2 * i], completions[2 * i + 1]
        ra, rb = float(r_proxy[2 * i]), float(r_proxy[2 * i + 1])
        if ra == rb and a != b:
            ties += 1  # no preference (identical completions are counted by filter_pairs)
            continue
        chosen, rejected = (a, b) if ra > rb else (b, a)
        out.append(
            PreferencePair(
                prompt=prompt,
                chosen=chosen,
                rejected=rejected,
                id=f"round{round_}-{i}",
                meta={"round": round_, "proxy_chosen": max(ra, rb), "proxy_rejected": min(ra, rb)},
            )
        )
    return out, ties


def _online_round(
    run: _Run, rundir: RunDir, pipeline: RewardPipeline, prompts: list[str], round_: int
) -> list[PreferencePair]:
    """The round's usable proxy-labelled pairs: read from ``rounds/``, or labelled and written."""
    from goodhartlab.data.io import read_pairs, write_pairs

    round_file = rundir.path / "rounds" / f"round_{round_}.jsonl"
    if round_file.is_file():
        round_pairs = read_pairs(round_file)
    else:
        labelled, ties = _online_pairs(run, pipeline, prompts, round_)
        round_pairs, dropped = filter_pairs(labelled, run.tokenizer, _context_length(run.policy))
        dropped["proxy_tie"] = ties
        rundir.manifest.setdefault("rounds", {})[str(round_)] = {
            "pairs": len(round_pairs),
            "skipped": dropped,
        }
        rundir.save()
        round_file.parent.mkdir(exist_ok=True)
        write_pairs(round_pairs, round_file)
    if not round_pairs:
        raise ValueError(f"round {round_}: the proxy preferred no completion")
    return round_pairs


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------


def _eval_steps(cfg: DAAConfig, steps_per_epoch: int) -> set[int]:
    """Steps (within one round) after which to evaluate."""
    points = {max(1, math.ceil(f * steps_per_epoch)) for f in cfg.eval_points_in_first_epoch}
    return points | {e * steps_per_epoch for e in range(1, cfg.epochs + 1)}


def _summary(cfg: DAAConfig, metrics: list[dict], skipped: dict[str, int]) -> dict[str, Any]:
    base, final = metrics[0], metrics[-1]
    peak = max(metrics, key=lambda r: r["gold"])
    d = torch.tensor([r["d"] for r in metrics], dtype=torch.float64)
    gold = torch.tensor([r["gold"] for r in metrics], dtype=torch.float64)
    fit = None
    if len(metrics) >= 3:
        try:
            fit = dataclasses.asdict(fit_rl_law(d, gold - gold[0]))
        except ValueError as e:
            fit = {"error": str(e)}
    over = dataclasses.asdict(overoptimization(d, gold))
    over = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in over.items()}
    if fit is not None:
        fit = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in fit.items()
        }
    keys = ("step", "epoch_fraction", "gold", "win_rate", "kl", "length")
    return {
        "method": cfg.method,
        "metrics_version": METRICS_VERSION,
        "loss": cfg.loss,
        "beta": cfg.beta,
        "base": base,
        "final": final,
        "peak_gold": {k: peak.get(k) for k in keys},
        "gold_drop_from_peak": peak["gold"] - final["gold"],
        "peak_in_first_epoch": peak["epoch_fraction"] <= 1.0 and peak["step"] > 0,
        "length_drift": final["length"] - base["length"],
        "rl_law_fit": fit,
        "overoptimization": over,
        "skipped": skipped,
    }


def _held_out_prompts(eval_prompts: Sequence[str], limit: int | None) -> list[str]:
    """The first ``limit`` held-out prompts (None: all); none at all is an error."""
    eval_prompts = list(eval_prompts)
    if not eval_prompts:
        raise ValueError("eval_prompts: expected at least one held-out prompt")
    return eval_prompts[:limit] if limit else eval_prompts


def _training_pairs(
    cfg: DAAConfig, pairs: list[PreferencePair], tokenizer, model: nn.Module
) -> tuple[list[PreferencePair], list[str], dict[str, int]]:
    """The offline pairs (online: none), the training prompts, and the skipped counts."""
    if cfg.online:
        train_prompts = list(dict.fromkeys(p.prompt for p in pairs))
        if not train_prompts:
            raise ValueError("pairs: online mode needs at least one prompt")
        return [], train_prompts, dict.fromkeys(SKIP_REASONS, 0)
    offline_pairs, skipped = filter_pairs(pairs, tokenizer, _context_length(model))
    if not offline_pairs:
        raise ValueError(f"pairs: none of the {len(pairs)} pairs is usable (skipped: {skipped})")
    offline_pairs = offline_pairs[: cfg.max_pairs] if cfg.max_pairs else offline_pairs
    return offline_pairs, [p.prompt for p in offline_pairs], skipped


def _resolved_config(
    cfg: DAAConfig,
    policy_id: dict[str, Any],
    proxy: Any,
    gold: Any,
    pairs: list[PreferencePair],
    eval_prompts: list[str],
) -> dict[str, Any]:
    """What config.yaml records: the settings and what the run trains and measures on."""
    return {
        "study": "daa",
        "metrics_version": METRICS_VERSION,
        "config": cfg.model_dump(mode="json"),
        "identity": {
            "policy": policy_id,
            "proxy": reward_identity(proxy) if proxy is not None else None,
            "gold": {
                "name": str(getattr(gold, "name", type(gold).__name__)),
                "version": str(getattr(gold, "version", "unversioned")),
            },
            "pairs": {
                "count": len(pairs),
                "sha256": prompts_hash([p.model_dump_json() for p in pairs]),
            },
            "eval_prompts": {"count": len(eval_prompts), "sha256": prompts_hash(eval_prompts)},
        },
    }


def _open_run_dir(out_dir: Path, cfg: DAAConfig, resolved: dict[str, Any], resume: bool) -> RunDir:
    """The run directory, created or resumed (only ``RESUMABLE_CHANGES`` may differ)."""
    return RunDir.open(
        out_dir,
        kind="daa",
        config=resolved,
        resume=resume,
        name=cfg.method,
        seed=cfg.seed,
        metrics_version=METRICS_VERSION,
        resumable=[*(f"config.{k}" for k in RESUMABLE_CHANGES), "launch."],
    )


def _restore(rundir: RunDir, run: _Run, resume: bool) -> int:
    """The step to go on from (0: a new run), its checkpoint loaded and the logs cut back.

    A checkpoint follows each evaluation, so one at ``step`` is used only if the logs hold a
    train line per step up to it and its evaluation's metrics line (and step 0's): a line
    torn or cut after it sends the run back to an older checkpoint, and the line is
    recomputed."""

    def logged(step: int) -> dict[str, range | list[int]]:
        evals = {"metrics": [0, step]} | ({MONITOR_LOG: [0, step]} if run.cfg.monitor else {})
        return {"train": range(1, step + 1), **evals}

    ckpt, start = rundir.resume_checkpoint(logged) if resume else (None, 0)
    if ckpt is not None:
        load_checkpoint(
            ckpt, policy=run.policy, optimizer=run.optimizer, value_model=None, device=run.device
        )
        rundir.resumed(start)
    logs = ("metrics", "train", "samples", MONITOR_LOG)
    rundir.truncate(logs, start if ckpt is not None else -1)
    base_path = rundir.log("base_eval")
    if ckpt is None and base_path.exists():
        base_path.unlink()
    rundir.save()
    return start


def _pair_order(cfg: DAAConfig, n: int, round_: int, epoch: int) -> list[int]:
    """The order of the ``n`` pairs in one epoch, seeded from (seed, round, epoch)."""
    gen = torch.Generator().manual_seed(derived_seed(cfg.seed, "order", round_, epoch))
    return torch.randperm(n, generator=gen).tolist()


def _batch_indices(order: list[int], k: int, batch_size: int) -> list[int]:
    """The pair indices of the epoch's ``k``-th batch."""
    idx = order[k * batch_size : (k + 1) * batch_size]
    if not idx:
        # An online round may hold fewer pairs than pairs_per_round (proxy ties are
        # dropped) while its step count is fixed: wrap around.
        span = range(k * batch_size, (k + 1) * batch_size)
        idx = [order[j % len(order)] for j in span][: len(order)]
    return idx


def _checkpoint(run: _Run, out_dir: Path, step: int) -> None:
    """Saves the policy, optimizer and RNG states after ``step``."""
    save_checkpoint(
        out_dir,
        step,
        policy=run.policy,
        optimizer=run.optimizer,
        value_model=None,
        state={},
        keep=run.cfg.keep_checkpoints,
    )


def _skipped_over_rounds(skipped: dict[str, int], manifest: dict[str, Any]) -> dict[str, int]:
    """``skipped`` plus the sum over rounds of what each round's labelling dropped."""
    skipped = {"proxy_tie": 0, **skipped}
    for info in manifest.get("rounds", {}).values():
        for k, v in info["skipped"].items():
            skipped[k] = skipped.get(k, 0) + v
    return skipped


def run_daa(
    out_dir: str | os.PathLike,
    *,
    policy: str | os.PathLike | nn.Module,
    pairs: Sequence[PreferencePair],
    gold: Any,
    eval_prompts: Sequence[str],
    config: DAAConfig | None = None,
    proxy: Any = None,
    tokenizer=None,
    resume: bool = False,
    progress: bool = False,
    monitor_sources: dict[str, Any] | None = None,
) -> DAAResult:
    """Train a policy with a direct-alignment loss and track gold, win rate, proxy and KL.

    Args:
        out_dir: the run directory. A new run refuses a directory that already has metrics;
            ``resume=True`` continues it from its newest checkpoint.
        policy: the base policy π0: a directory, a cached hub name, or a causal-LM module
            (then pass ``tokenizer``; the module is trained in place, a frozen copy is π0).
        pairs: offline: the training pairs. Online: their prompts (deduplicated, in order)
            are the prompts sampled each round; their labels are not used.
        gold: the gold reward, ``score(prompts, completions) -> Tensor[B]``.
        eval_prompts: held-out prompts (the first ``config.eval_prompts`` are used).
        config: :class:`DAAConfig`.
        proxy: a ``RewardModel``, ``Ensemble`` or callable reward: logged at every
            evaluation, and (required online) the labeller of the online pairs.
        tokenizer: the policy's tokenizer (default: loaded from the policy directory).
        resume: continue from the newest checkpoint; the configuration must match.
        progress: print one line per evaluation.
        monitor_sources: with ``config.monitor``, the rewards the monitor reads besides the
            proxy: ``members`` (an ensemble), ``heldout`` (a reward not optimized against) or
            ``heldout_members`` (indices of members: their mean), ``latents`` (a
            ``RewardModel``; default: the proxy, member 0 of an ensemble). Never gold.

    Returns:
        :class:`DAAResult`.
    """

    cfg = config or DAAConfig()
    out_dir = Path(out_dir)
    device = torch.device(cfg.device)
    autocast_dtype = resolve_autocast_dtype(cfg.bf16, device)
    eval_prompts = _held_out_prompts(eval_prompts, cfg.eval_prompts)
    if cfg.online and proxy is None:
        raise ValueError("proxy: online mode labels its pairs with a proxy; none was given")
    if cfg.monitor is not None and proxy is None:
        raise ValueError("proxy: the monitor reads the proxy's scores; none was given")
    from goodhartlab.rewards.pairwise import PairwisePreferenceModel

    if isinstance(proxy, PairwisePreferenceModel):
        raise ValueError(
            "proxy: a pairwise preference model has no per-completion score, which DPO's "
            "labelling and logging read; give a reward model (or use algorithm nash_mp in RL)"
        )

    model, reference, tokenizer, policy_id = load_policy_and_reference(
        policy, tokenizer, device=device
    )
    pairs = list(pairs)
    offline_pairs, train_prompts, skipped = _training_pairs(cfg, pairs, tokenizer, model)
    pipeline = RewardPipeline(proxy, cfg.reward) if proxy is not None else None
    resolved = _resolved_config(cfg, policy_id, proxy, gold, pairs, eval_prompts)
    rundir = _open_run_dir(out_dir, cfg, resolved, resume)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    run = _Run(cfg, model, reference, tokenizer, optimizer, device, autocast_dtype)
    rundir.manifest["pairs"] = {"given": len(pairs), "used": len(offline_pairs), "skipped": skipped}
    start = _restore(rundir, run, resume)
    watch = RunMonitor(rundir, cfg.monitor, start) if cfg.monitor is not None else None
    sources = resolve_sources(proxy, monitor_sources) if watch is not None else None

    n_train = cfg.pairs_per_round if cfg.online else len(offline_pairs)
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    steps_per_round = steps_per_epoch * cfg.epochs
    eval_at = _eval_steps(cfg, steps_per_epoch)
    log_eval = partial(
        _log_eval,
        run,
        rundir,
        eval_prompts,
        gold,
        pipeline,
        steps_per_epoch,
        progress,
        watch,
        sources,
    )

    stopped_at = None
    try:
        if start == 0:
            log_eval(0, 0)
        rounds = cfg.rounds if cfg.online else 1
        for round_ in range(1, rounds + 1):
            if stopped_at is not None:
                break
            first = (round_ - 1) * steps_per_round  # global step before this round
            if start >= first + steps_per_round:
                continue
            if cfg.online:
                round_pairs = _online_round(run, rundir, pipeline, train_prompts, round_)
            else:
                round_pairs = offline_pairs
            for epoch in range(cfg.epochs):
                if stopped_at is not None:
                    break
                order = _pair_order(cfg, len(round_pairs), round_, epoch)
                for k in range(steps_per_epoch):
                    local = epoch * steps_per_epoch + k + 1
                    step = first + local
                    if step <= start:
                        continue
                    batch = [round_pairs[i] for i in _batch_indices(order, k, cfg.batch_size)]
                    stats = daa_step(run, batch, step)
                    rundir.append("train", {"step": step, **stats})
                    in_first = round_ == 1 or local % steps_per_epoch == 0
                    if local in eval_at and in_first:
                        stop = log_eval(step, round_)
                        _checkpoint(run, out_dir, step)
                        if stop:
                            stopped_at = step
                            break
    except BaseException as e:
        rundir.fail(e)
        raise

    metrics = rundir.read("metrics")
    if cfg.online:
        skipped = _skipped_over_rounds(skipped, rundir.manifest)
    summary = _summary(cfg, metrics, skipped) | (watch.summary(stopped_at) if watch else {})
    atomic_write_json(out_dir / "summary.json", summary)
    rundir.finish()
    return DAAResult(out_dir=out_dir, metrics=metrics, policy=model)
