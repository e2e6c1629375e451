"""Every formula of goodhart-lab, once: pure functions over torch tensors, no I/O.

- ``kl``: per-token and per-sequence KL estimators, the best-of-n KL bound.
- ``bon``: unbiased best-of-n gold/proxy curves from a pool of samples.
- ``stats``: bootstrap confidence intervals over prompts.
- ``aggregate``: reward-model ensemble aggregators (mean, WCO, UWO, median, mean − std).
- ``shaping``: reward shaping (PAR and its baselines).
- ``scaling``: Gao et al. 2023 overoptimization laws, their fits, the overoptimization drop.
- ``losses``: Bradley-Terry, PPO / GRPO / RLOO policy losses, the value loss, DPO / IPO /
  SLiC / RPO.
- ``advantages``: GAE, group-normalized (GRPO) and leave-one-out (RLOO) advantages, the KL
  penalty in the reward and the adaptive KL controller.
"""

from goodhartlab.core.aggregate import (
    AGGREGATORS,
    get_aggregator,
    mean,
    mean_minus_std,
    median,
    uwo,
    wco,
)
from goodhartlab.core.bon import BonCurve, bon_weights, expected_best_of_n
from goodhartlab.core.kl import bon_kl, sequence_kl, token_kl
from goodhartlab.core.scaling import (
    OveroptimizationResult,
    PeakDropIntervals,
    ScalingFit,
    bon_law,
    fit_bon_law,
    fit_rl_law,
    overoptimization,
    peak_drop_intervals,
    rl_law,
)
from goodhartlab.core.shaping import (
    RunningMoments,
    ceil,
    centered,
    clip_to_band,
    log_sigmoid_centered,
    meanstd,
    minmax,
    par,
)
from goodhartlab.core.stats import bootstrap_ci, bootstrap_means

__all__ = [
    "AGGREGATORS",
    "BonCurve",
    "OveroptimizationResult",
    "PeakDropIntervals",
    "RunningMoments",
    "ScalingFit",
    "bon_kl",
    "bon_law",
    "bon_weights",
    "bootstrap_ci",
    "bootstrap_means",
    "ceil",
    "centered",
    "clip_to_band",
    "expected_best_of_n",
    "fit_bon_law",
    "fit_rl_law",
    "get_aggregator",
    "log_sigmoid_centered",
    "mean",
    "mean_minus_std",
    "meanstd",
    "median",
    "minmax",
    "overoptimization",
    "par",
    "peak_drop_intervals",
    "rl_law",
    "sequence_kl",
    "token_kl",
    "uwo",
    "wco",
]
