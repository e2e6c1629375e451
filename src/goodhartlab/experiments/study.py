"""The study runner behind ``goodhart run``: a config, a run directory, resumable stages.

Stages (each skipped on ``--resume`` when already finished):
1. ``testbed``  build or verify the testbed's tokenizer, base policy and backbones;
2. ``proxies``  sample gold-labelled noisy pairs and train the proxies (a single proxy and an
                ensemble whose member 0 is that proxy);
3. ``bon``      the best-of-n study over every aggregator (``optimize.bon``);
4. ``rl/<name>`` one RL run per method (``optimize.rl``) in ``rl/<name>/``: a finished run is
                not redone, a killed one resumes from its last checkpoint;
5. ``daa/<name>`` (off by default) one direct-alignment run (``optimize.daa``) per entry of
                ``daa.runs`` in ``daa/<name>/``: offline on the proxies stage's gold-labelled
                noisy pairs, or online (``online: true``) on pairs the study's proxies label
                each round (the single proxy, or the ensemble with an aggregator, as the RL
                methods), with the RL runs' monitor when ``monitor`` is set; resumed like the
                RL runs;
The RL and DAA runs are independent of each other and go to the workers of the backend
(``experiments.dispatch``: a local process pool by default, Ray tasks with ``backend="ray"``);
each seeds itself, so its results do not depend on the backend or the number of workers.
The stages before them go to the same workers in pieces (``experiments.parallel_stages``:
the policy beside the backbones, the pairs, the members, the pool's chunks, its scores), each
piece seeded as it is in one process, so those stages' files do not depend on it either.
``experiments.progress`` shows one overall display with the time left, and what each running
stage has done so far.

Then ``metrics.jsonl`` (every BoN, RL and DAA evaluation point, rebuilt from the stages' own
files so never duplicated), ``summary.json`` and the report (``report.build_report``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from goodhartlab.artifacts import atomic_write_json
from goodhartlab.configs import fields_from
from goodhartlab.models.loading import check_device
from goodhartlab.optimize.bon import BonStudyConfig
from goodhartlab.optimize.daa import DAAConfig
from goodhartlab.optimize.rl import RLConfig
from goodhartlab.optimize.rundir import RunDir
from goodhartlab.registry import AGGREGATORS, TESTBEDS, name_in
from goodhartlab.report.claims import ClaimConfig
from goodhartlab.rewards.pipeline import RewardPipelineConfig
from goodhartlab.train.rm import RMTrainConfig

#: RMTrainConfig fields a proxy variant cannot set: the study sets them for every proxy.
_VARIANT_SET_BY_STUDY = ("seed", "device")


class ProxyVariantConfig(BaseModel):
    """A reward-model variant trained beside the proxies, on the same pairs and backbones
    (issue 14: ``goodhart run rm-variants``): one model per seed, each paired with the
    proxies' member of the same seed (the Bradley-Terry baseline of that seed)."""

    model_config = ConfigDict(extra="forbid")
    rm: dict[str, Any] = Field(
        default_factory=dict,
        description="RMTrainConfig settings of the variant (objective, tool and the "
        "objective's parameters; epochs and lr default to the proxies'); seed and device are "
        "the study's.",
    )
    seeds: list[int] | None = Field(
        None,
        min_length=1,
        description="One model per seed, each a seed of proxies.seeds (its backbone and data "
        "order are that member's); None: the first three of proxies.seeds.",
    )

    @field_validator("rm")
    @classmethod
    def _rm_settings(cls, v: dict[str, Any]) -> dict[str, Any]:
        fixed = [k for k in _VARIANT_SET_BY_STUDY if k in v]
        if fixed:
            raise ValueError(f"{', '.join(fixed)}: set by the study for every proxy; leave out")
        objective = _objective_entry(v)
        if objective.meta.get("adversarial_search"):
            raise ValueError(
                f"objective {objective.name!r} searches with the policy and the gold while it "
                "trains; a study cannot train it as a proxy variant (use goodhart train-rm)"
            )
        return v

    @property
    def pairwise(self) -> bool:
        """Whether the variant is a pairwise preference model (no per-completion score)."""
        return bool(_objective_entry(self.rm).meta.get("pairwise"))


def _objective_entry(rm: dict[str, Any]):
    """The RM_OBJECTIVES entry of a variant's RMTrainConfig settings (checked)."""
    from goodhartlab.registry import RM_OBJECTIVES

    return RM_OBJECTIVES.entry(RMTrainConfig(**rm).objective)


class _ProxyBase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pairs: int = Field(6000, ge=10, description="Base-policy preference pairs labelled by gold.")
    noise: float = Field(
        0.25, ge=0, le=0.5, description="Fraction of labels flipped (Coste et al.: 0.25)."
    )
    size: str = Field("small", description="Backbone size of every proxy (models.tiny.SIZES).")
    seeds: list[int] = Field(
        [0, 1, 2, 3, 4],
        min_length=1,
        description="One ensemble member per seed; member 0 is the single proxy.",
    )
    pretrain_seeds: bool = Field(
        True,
        description="Members also start from differently-seeded backbones (Eisenstein et al. "
        "2023); member k's backbone is pretrained with seed k.",
    )
    components: bool = Field(
        False,
        description="Also train one proxy per gold component (constrained RLHF; "
        "experiments.proxies.train_component_proxies) on these pairs relabelled by each "
        "component, for RL methods with components: true. The testbed must have components.",
    )
    variants: dict[str, ProxyVariantConfig] = Field(
        default_factory=dict,
        description="Reward-model variants trained on the same pairs (name -> settings): "
        "best-of-n picks with each seed of each as NAME-sSEED beside bt-sSEED (the proxies' "
        "member of that seed), and an RL method with proxy: NAME optimizes its first model.",
    )

    @model_validator(mode="after")
    def _variant_seeds(self):
        import re

        for name, v in self.variants.items():
            if not re.fullmatch(r"[A-Za-z0-9_.]+", name) or name in ("bt", "single", "oracle"):
                raise ValueError(
                    f"variants: name {name!r}: expected letters, digits, '_' or '.', and not "
                    "bt, single or oracle"
                )
            missing = [s for s in (v.seeds or []) if s not in self.seeds]
            if missing:
                raise ValueError(
                    f"variants.{name}.seeds: {missing} not in proxies.seeds {self.seeds}: a "
                    "variant's seed is paired with the proxies' member of that seed"
                )
        return self

    def variant_seeds(self, name: str) -> list[int]:
        """The seeds of variant ``name`` (its own, else the first three of ``seeds``)."""
        return list(self.variants[name].seeds or self.seeds[:3])


#: How the proxies are made; the training recipe is RMTrainConfig's fields with the study's
#: defaults (2 epochs at lr 1e-3; also ``goodhart train-rm``'s).
ProxyConfig = create_model(
    "ProxyConfig",
    __base__=_ProxyBase,
    __doc__="How the proxies are made.",
    **fields_from(RMTrainConfig, ["epochs", "lr"], defaults={"epochs": 2, "lr": 1e-3}),
)


#: The best-of-n stage's settings: BonStudyConfig's fields with the study's own default
#: (pools of 1,024: at 512 the single proxy's drop interval reached just below 0).
_BON_FIELDS = [
    f
    for f in BonStudyConfig.model_fields
    if f not in ("prompts_count", "max_new_tokens", "seed", "device")
]


class _BonStageBase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(True, description="Run the best-of-n study.")
    prompts: int = Field(200, ge=1, description="Held-out prompts in the pool.")

    def run_config(self, **study: Any) -> BonStudyConfig:
        """The BonStudyConfig of the stage, with what the study sets (``seed``, ``device``,
        ``max_new_tokens``)."""
        settings = {f: getattr(self, f) for f in _BON_FIELDS}
        return BonStudyConfig(**settings, prompts_count=self.prompts, **study)

    @model_validator(mode="after")
    def _check_study(self):
        self.run_config()  # BonStudyConfig's own checks (aggregator names, parameters, ns)
        return self


BonStageConfig = create_model(
    "BonStageConfig",
    __base__=_BonStageBase,
    __doc__="The best-of-n stage: BonStudyConfig's settings (the study's defaults).",
    **fields_from(BonStudyConfig, _BON_FIELDS, defaults={"pool_size": 1024}),
)


def _unique_names(items: list, what: str) -> list:
    """``items`` unchanged if their ``name`` fields are distinct (each names a run directory)."""
    names = [m.name for m in items]
    if len(set(names)) != len(names):
        raise ValueError(f"{what} names must be unique; got {names}")
    return items


def _check_each(items: list, build, what: str) -> None:
    """Build each run's config at load time, so a bad setting fails naming the run and the
    field (``methods.2 (wco): group_size: ...``) before anything runs."""
    for i, item in enumerate(items):
        try:
            build(item)
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(x) for x in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            where = f"{what}.{i} ({item.name})" + (f".{field}" if field else "")
            raise ValueError(f"{where}: {msg}") from None


_NAME = Field(..., pattern=r"^[A-Za-z0-9_.-]+$", description="Method label and run subdirectory.")

# What the study itself sets in every run, from its own fields or from the testbed.
_SET_BY_STUDY = ("name", "seed", "device", "max_new_tokens")

#: The RL stage's settings: RLConfig's fields, with the study's own defaults (60 steps keep
#: six runs to a few minutes on a 2-core CPU; the KL penalty β = 0.01 of the ensemble runs).
_RL_STAGE_DEFAULTS = {"steps": 60, "checkpoint_every": 20, "kl_coef": 0.01}
_RL_FIELDS = [f for f in RLConfig.model_fields if f not in (*_SET_BY_STUDY, "reward")]


class _RLMethodBase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = _NAME
    aggregator: name_in(AGGREGATORS) | None = Field(
        None,
        description="None: the single proxy (ensemble member 0); else an aggregator "
        "(registry 'aggregator') over the whole ensemble.",
    )
    optimize: Literal["proxy", "gold"] = Field(
        "proxy",
        description="What the run is trained on: the proxy (single or aggregated) or the "
        "testbed's gold itself (a run that cannot hack: the monitor's negative control).",
    )
    seed: int | None = Field(None, description="The run's seed (None: the study's).")
    group: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="The method this run is one seed of: the report pools a group's runs "
        "(set by rl.seeds; None: the run is its own group).",
    )
    baseline: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="The method (group) the report pairs this one's seeds against: "
        "differences of final and peak gold, seed by seed (None: 'single' where it exists).",
    )

    proxy: str | None = Field(
        None,
        description="A proxies.variants name: the run optimizes that variant's first model "
        "instead of the single proxy (no aggregator); None: the study's proxies.",
    )
    components: bool = Field(
        False,
        description="The reward is the ensemble of component proxies (proxies.components), "
        "aggregated by aggregator (mean: their fixed equal-weight sum) or, with "
        "constrained, μ-PPO's Lagrangian.",
    )

    @model_validator(mode="after")
    def _gold_alone(self):
        if self.components and (self.optimize == "gold" or self.aggregator is None):
            raise ValueError(
                "components: the component proxies are an ensemble; give an aggregator (mean: "
                "their equal-weight sum) and optimize: proxy"
            )
        if self.proxy is not None and (
            self.aggregator is not None or self.components or self.optimize == "gold"
        ):
            raise ValueError(
                f"proxy {self.proxy!r}: a variant's model is one reward; it takes no "
                "aggregator or components, and optimize: proxy"
            )
        if self.optimize == "gold" and (self.aggregator is not None or self.shaping != "none"):
            raise ValueError(
                "optimize: 'gold' trains on gold itself; it takes no aggregator or shaping"
            )
        return self


#: One RL run of the study: its reward pipeline (RewardPipelineConfig's fields; the
#: aggregator None is the single proxy) and overrides of any stage setting (None: the stage's).
RLMethodConfig = create_model(
    "RLMethodConfig",
    __base__=_RLMethodBase,
    __doc__="One RL run of the study: a reward pipeline and overrides of the stage's settings.",
    **fields_from(RewardPipelineConfig, exclude=("aggregator",)),
    **fields_from(RLConfig, _RL_FIELDS, optional=True),
)


def _default_rl_methods() -> list:
    m = RLMethodConfig
    return [
        m(name="single"),
        m(name="mean", aggregator="mean"),
        m(name="wco", aggregator="wco"),
        m(name="uwo", aggregator="uwo", aggregator_params={"lam": 0.1}),
        m(name="par", shaping="par"),
        m(name="single-nokl", kl_coef=0.0),
    ]


class _RLStageBase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(True, description="Run the RL stage.")
    seeds: list[int] | None = Field(
        None,
        min_length=1,
        description="Run every method once per seed, as NAME-sSEED in the group NAME (the "
        "report gives a group's mean over seeds with 95 % intervals); None: each method once.",
    )
    methods: list[RLMethodConfig] = Field(
        default_factory=_default_rl_methods,
        description="The runs: single / mean / WCO / UWO / PAR at β = 0.01, single at β = 0.",
    )

    @model_validator(mode="before")
    @classmethod
    def _one_run_per_seed(cls, raw: Any) -> Any:
        """With ``seeds``, each method not yet in a group becomes one run per seed. Runs that
        already name their group are kept as they are, so that a saved config (which holds
        the expanded runs and the seeds) loads to the same runs."""
        if not isinstance(raw, dict) or not raw.get("seeds"):
            return raw
        seeds = raw["seeds"]
        if not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds):
            return raw  # the field's own validation names the problem
        methods = raw.get("methods")
        if methods is None:
            methods = [m.model_dump(exclude_none=True) for m in _default_rl_methods()]
        methods = [
            m.model_dump(exclude_none=True) if isinstance(m, BaseModel) else m for m in methods
        ]
        kept = [m for m in methods if not isinstance(m, dict) or m.get("group") is not None]
        sweep = [m for m in methods if isinstance(m, dict) and m.get("group") is None]
        for m in sweep:
            if m.get("seed") is not None:
                raise ValueError(
                    f"method {m.get('name')}: seed is set by rl.seeds; leave it out, or run "
                    "the method outside the seed sweep by naming its group"
                )
        # Seed-major, so that the first runs to finish cover every method.
        runs = [
            {**m, "name": f"{m.get('name')}-s{s}", "seed": s, "group": m.get("name")}
            for s in seeds
            for m in sweep
        ]
        return {**raw, "methods": kept + runs}

    @field_validator("methods")
    @classmethod
    def _unique(cls, v: list) -> list:
        return _unique_names(v, "method")

    @model_validator(mode="after")
    def _baselines_exist(self):
        groups = {m.group or m.name for m in self.methods}
        for i, m in enumerate(self.methods):
            if m.baseline is not None and m.baseline not in groups:
                raise ValueError(
                    f"methods.{i} ({m.name}): baseline {m.baseline!r} is not a method of the "
                    f"stage ({', '.join(sorted(groups))})"
                )
        return self

    def run_config(self, method, **study: Any) -> RLConfig:
        """The RLConfig of one method: the stage's settings, the method's overrides and
        reward pipeline, and what the study sets (``name``, ``seed``, ``device``,
        ``max_new_tokens``)."""
        # The fields themselves, not a dump with exclude_none, which would also drop the
        # None values inside a nested setting (monitor: {alarm: null}).
        exclude = {
            "name",
            "aggregator",
            "optimize",
            "seed",
            "group",
            "baseline",
            "components",
            "proxy",
        }
        given = {
            f: getattr(method, f)
            for f in type(method).model_fields
            if f not in exclude and getattr(method, f) is not None
        }
        reward = {k: given.pop(k) for k in RewardPipelineConfig.model_fields if k in given}
        settings = {f: getattr(self, f) for f in _RL_FIELDS} | given
        if method.seed is not None:
            study = {**study, "seed": method.seed}
        return RLConfig(
            **settings,
            name=method.name,
            reward=RewardPipelineConfig(aggregator=method.aggregator or "mean", **reward),
            **study,
        )

    @model_validator(mode="after")
    def _check_runs(self):
        _check_each(self.methods, self.run_config, "methods")
        return self


RLStageConfig = create_model(
    "RLStageConfig",
    __base__=_RLStageBase,
    __doc__="The RL stage: RLConfig's settings (the study's defaults), and one run per method.",
    **fields_from(RLConfig, _RL_FIELDS, defaults=_RL_STAGE_DEFAULTS),
)

#: The DAA stage's settings: DAAConfig's fields (the labeller's pipeline is the run's
#: aggregator), with the study's own defaults.
_DAA_STAGE_DEFAULTS = {"lr": 3e-4, "eval_points_in_first_epoch": (0.1, 0.25, 0.5, 0.75)}
_DAA_ONLINE = ("rounds", "pairs_per_round", "temperature")
_DAA_LOSS_FIELDS = ("loss", "beta", "eta", "label_smoothing")
_DAA_FIELDS = [
    f for f in DAAConfig.model_fields if f not in (*_SET_BY_STUDY, "reward", *_DAA_LOSS_FIELDS)
]


class _DAARunBase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = _NAME
    aggregator: name_in(AGGREGATORS) | None = Field(
        None,
        description="The proxy (online: the labeller of the pairs; offline: logged): None, the "
        "single proxy (ensemble member 0); else an aggregator (registry 'aggregator') over "
        "the whole ensemble.",
    )
    aggregator_params: dict[str, float] | None = Field(
        None, description="The aggregator's parameters (uwo: lam; None: its defaults)."
    )
    seed: int | None = Field(None, description="The run's seed (None: the study's).")

    @model_validator(mode="after")
    def _params_need_an_aggregator(self):
        if self.aggregator_params is not None and self.aggregator is None:
            raise ValueError(
                "aggregator_params: the single proxy takes no aggregator parameters; give an "
                "aggregator"
            )
        return self


#: One direct-alignment run of the study: a loss with its β (DAAConfig's fields) and
#: overrides of any stage setting.
DAARunConfig = create_model(
    "DAARunConfig",
    __base__=_DAARunBase,
    __doc__="One direct-alignment run of the study: a loss, its β and overrides.",
    **fields_from(DAAConfig, _DAA_LOSS_FIELDS),
    **fields_from(DAAConfig, _DAA_FIELDS, optional=True),
)


def _default_daa_runs() -> list:
    return [DAARunConfig(name="dpo", loss="dpo", beta=0.05)]


class _DAAStageBase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(
        False, description="Run the stage (off by default: it exceeds the default time target)."
    )
    runs: list[DAARunConfig] = Field(
        default_factory=_default_daa_runs, description="The runs (default: DPO at β = 0.05)."
    )

    @field_validator("runs")
    @classmethod
    def _unique(cls, v: list) -> list:
        return _unique_names(v, "run")

    def run_config(self, run, **study: Any) -> DAAConfig:
        """The DAAConfig of one run: the stage's settings, the run's loss, overrides and
        proxy pipeline, and what the study sets (its ``seed`` unless the run's)."""
        # The fields themselves, not a dump with exclude_none, which would also drop the
        # None values inside a nested setting (monitor: {alarm: null}).
        exclude = {"name", "aggregator", "aggregator_params", "seed"}
        given = {
            f: getattr(run, f)
            for f in type(run).model_fields
            if f not in exclude and getattr(run, f) is not None
        }
        settings = {f: getattr(self, f) for f in _DAA_FIELDS} | given
        if run.seed is not None:
            study = {**study, "seed": run.seed}
        reward = RewardPipelineConfig(
            aggregator=run.aggregator or "mean", aggregator_params=run.aggregator_params or {}
        )
        return DAAConfig(**settings, name=run.name, reward=reward, **study)

    @model_validator(mode="after")
    def _check_runs(self):
        _check_each(self.runs, self.run_config, "runs")
        for i, run in enumerate(self.runs):
            given = [f for f in _DAA_ONLINE if getattr(run, f) is not None]
            if given and not self.run_config(run).online:
                raise ValueError(
                    f"runs.{i} ({run.name}).{given[0]}: only an online run samples rounds of "
                    "pairs; set online: true (on the run or the stage) or leave it out"
                )
        return self


DAAStageConfig = create_model(
    "DAAStageConfig",
    __base__=_DAAStageBase,
    __doc__="The direct-alignment stage: offline on the proxies stage's noisy pairs, or "
    "online on pairs the study's proxies label.",
    **fields_from(DAAConfig, _DAA_FIELDS, defaults=_DAA_STAGE_DEFAULTS),
)


class StudyConfig(BaseModel):
    """A study. Unknown keys and bad values fail at load time, naming the field."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(
        "default", description="Study name (the run directory is runs/<name>/<run-id>)."
    )
    plugins: list[str] = Field(
        [],
        description="Modules to import before the study is read (they register parts: "
        "aggregators, shapings, testbeds, ...); also given by goodhart --plugin.",
    )
    testbed: name_in(TESTBEDS) = Field("toy_text", description="Testbed name (registry 'testbed').")
    testbed_options: dict = Field(
        {},
        description="Build settings of the testbed, checked against its options model "
        "(toy_text: fields of ToyTextConfig, e.g. pretrain_steps).",
    )
    seed: int = Field(0, description="Seed of pairs, proxies' data order and pools.")
    device: str = Field("cpu", description="cpu or cuda.")
    out_dir: str = Field("runs", description="Where run directories go.")
    cache_dir: str | None = Field(
        None, description="Testbed cache (default $GOODHART_CACHE or ~/.cache/goodhart-lab)."
    )
    proxies: ProxyConfig = Field(default_factory=ProxyConfig)
    bon: BonStageConfig = Field(default_factory=BonStageConfig)
    rl: RLStageConfig = Field(default_factory=RLStageConfig)
    daa: DAAStageConfig = Field(default_factory=DAAStageConfig)
    claims: list[ClaimConfig] = Field(
        [],
        description="Papers' claims the report checks on the RL methods over seeds "
        "(report.claims): each a registered check of methods against a baseline.",
    )

    @model_validator(mode="after")
    def _check_claims(self) -> StudyConfig:
        groups = {m.group or m.name for m in self.rl.methods}
        for i, c in enumerate(self.claims):
            unknown = [m for m in [*c.methods, c.baseline] if m is not None and m not in groups]
            if unknown:
                raise ValueError(
                    f"claims.{i}: {', '.join(unknown)} is not a method of the RL stage "
                    f"({', '.join(sorted(groups))})"
                )
        return self

    @model_validator(mode="after")
    def _check_testbed(self) -> StudyConfig:
        from goodhartlab.testbeds import check_backbone_size, testbed_options

        testbed_options(self.testbed, self.testbed_options)
        check_backbone_size(self.testbed, self.proxies.size, where="proxies.size")
        for i, m in enumerate(self.rl.methods):
            if m.proxy is not None and m.proxy not in self.proxies.variants:
                known = ", ".join(self.proxies.variants) or "none"
                raise ValueError(
                    f"rl.methods.{i} ({m.name}): proxy {m.proxy!r} is not one of "
                    f"proxies.variants ({known})"
                )
        for i, m in enumerate(self.rl.methods):
            algorithm = m.algorithm or self.rl.algorithm
            if m.proxy is not None and self.proxies.variants[m.proxy].pairwise:
                if algorithm != "nash_mp":
                    raise ValueError(
                        f"rl.methods.{i} ({m.name}): proxy {m.proxy!r} is a pairwise preference "
                        f"model (objective pairwise), which only algorithm nash_mp optimizes; "
                        f"got {algorithm!r}"
                    )
        wanting = [m.name for m in self.rl.methods if m.components]
        if wanting and not self.proxies.components:
            raise ValueError(
                f"rl.methods {wanting}: components: true needs the component proxies; set "
                "proxies.components: true"
            )
        return self


def packaged_configs() -> list[str]:
    """Names of the packaged studies (``goodhart run NAME``): default, monitor-bench, ..."""
    folder = resources.files("goodhartlab.experiments")
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def default_config_text() -> str:
    return resources.files("goodhartlab.experiments").joinpath("default.yaml").read_text()


def _set_path(d: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise ValueError(f"override {dotted!r}: {k!r} is not a section")
    d[keys[-1]] = value


def select_methods(raw: dict, names: Sequence[str], where: str) -> dict:
    """``raw`` (a study config as parsed YAML) with only the RL methods ``names`` and the
    baselines they name (transitively), and only the claims all of whose methods and baseline
    are kept: a part of a study, run with the same settings (``goodhart run --methods``).

    Raises:
        ValueError: a name that is not one of the config's ``rl.methods``."""
    methods = (raw.get("rl") or {}).get("methods")
    if not isinstance(methods, list) or not methods:
        raise ValueError(f"{where}: --methods: the config lists no rl.methods to choose from")
    by_name = {m.get("name"): m for m in methods if isinstance(m, dict)}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(
            f"{where}: --methods: {', '.join(unknown)} not among rl.methods "
            f"({', '.join(str(n) for n in by_name)})"
        )
    keep, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep.add(name)
        baseline = by_name[name].get("baseline")
        if baseline in by_name:
            todo.append(baseline)
    out = {**raw, "rl": {**raw["rl"], "methods": [m for m in methods if m.get("name") in keep]}}
    out["claims"] = [
        c
        for c in raw.get("claims") or []
        if all(m in keep for m in [*c.get("methods", []), c.get("baseline")] if m is not None)
    ]
    return out


def load_config(
    path: str | Path | None = None,
    overrides: list[str] = (),
    plugins: list[str] = (),
    methods: Sequence[str] | None = None,
) -> StudyConfig:
    """The packaged default (or ``path``) with ``key=value`` overrides (values parsed as YAML).

    The config's ``plugins`` (and ``plugins`` given here, e.g. by ``goodhart --plugin``) are
    imported first, so that the parts they register can be named in it. ``methods``: run only
    these RL methods, their baselines and the claims about them (:func:`select_methods`).
    """
    if path is None:
        text, where = default_config_text(), "default.yaml"
    elif not Path(path).is_file() and str(path) in packaged_configs():
        where = f"{path}.yaml"
        text = resources.files("goodhartlab.experiments").joinpath(where).read_text()
    else:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"config: no such file {path}, nor a packaged study "
                f"({', '.join(packaged_configs())})"
            )
        text, where = path.read_text(), str(path)
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{where}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping of settings at the top level")
    raw.setdefault("plugins", [])
    if not isinstance(raw["plugins"], list):
        raise ValueError(f"{where}: plugins: expected a list of module names")
    raw["plugins"] = list(dict.fromkeys([*raw["plugins"], *plugins]))
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected key=value")
        key, value = item.split("=", 1)
        _set_path(raw, key.strip(), yaml.safe_load(value))
    if methods:
        raw = select_methods(raw, methods, where)
    from pydantic import ValidationError

    from goodhartlab.plugins import load_plugins

    load_plugins(raw["plugins"], where=f"{where}: plugins")
    try:
        return StudyConfig.model_validate(raw)
    except ValidationError as e:
        lines = [f"{where}: invalid study config:"]
        for err in e.errors():
            field = ".".join(str(x) for x in err["loc"])
            lines.append(f"  {field}: {err['msg']}")
        raise ValueError("\n".join(lines)) from None


def make_testbed(config: StudyConfig, progress: bool = True):
    """The study's testbed (a ``testbeds.Testbed``), built with its ``testbed_options``."""
    from goodhartlab.testbeds import get_testbed

    return get_testbed(
        config.testbed, config.testbed_options, cache_dir=config.cache_dir, progress=progress
    )


def _reward(config: StudyConfig, proxy_info: dict, key: str, rewards: dict):
    """The single proxy (ensemble member 0), the ensemble, the component proxies or
    (``variant:NAME``) a reward-model variant's first model (a pairwise preference model for
    objective pairwise), loaded once and shared."""
    from goodhartlab.rewards import Ensemble, PairwisePreferenceModel, RewardModel
    from goodhartlab.rewards.reward_model import PAIRWISE_KIND, saved_kind

    members = proxy_info["members"]
    if key == "components":  # one proxy per gold component (proxies.components)
        members = proxy_info["components"]["members"]
    if key.startswith("variant:"):
        members = proxy_info["variants"][key.removeprefix("variant:")]["members"]
    if key not in rewards:
        if key.startswith("variant:") and saved_kind(members[0]) == PAIRWISE_KIND:
            rewards[key] = PairwisePreferenceModel.from_pretrained(members[0], device=config.device)
        elif key == "single" or key.startswith("variant:"):
            rewards[key] = RewardModel.from_pretrained(members[0], device=config.device)
        else:
            rewards[key] = Ensemble.from_dirs([Path(m) for m in members], device=config.device)
    return rewards[key]


def _daa_run(config: StudyConfig, tb, proxy_info: dict, run: DAARunConfig, run_dir, rewards):
    """One DAA run: offline on the study's noisy pairs (the proxy is logged, not trained on),
    or online on the testbed's training prompts, its pairs labelled by the proxy (the single
    proxy, or the ensemble and the run's aggregator); the monitor reads what an RL run's reads.
    A half-done run directory is resumed from its checkpoint."""
    from goodhartlab.data import PreferencePair, read_pairs
    from goodhartlab.optimize.daa import run_daa

    daa_config = config.daa.run_config(
        run, seed=config.seed, device=config.device, max_new_tokens=tb.max_new_tokens
    )
    if daa_config.online:  # only the prompts: each round's labels come from the proxy
        pairs = [PreferencePair(prompt=p, chosen="", rejected="") for p in tb.train_prompts]
    else:
        pairs = read_pairs(proxy_info["pairs"])
    key = "single" if run.aggregator is None else "ensemble"
    sources = None
    if daa_config.monitor is not None:
        sources = _monitor_sources(config, proxy_info, run, rewards)
    out = Path(run_dir) / "daa" / run.name
    result = run_daa(
        out,
        policy=tb.policy_path,
        pairs=pairs,
        gold=tb.gold,
        eval_prompts=tb.eval_prompts,
        config=daa_config,
        proxy=_reward(config, proxy_info, key, rewards),
        resume=(out / "config.yaml").is_file(),
        monitor_sources=sources,
    )
    return json.loads((result.out_dir / "summary.json").read_text())


def _rl_run(config: StudyConfig, tb, proxy_info: dict, method: RLMethodConfig, run_dir, rewards):
    """One RL run of the study; a half-done run directory is resumed from its checkpoint.
    With ``sft_source`` chosen, the SFT term's targets are the chosen sides of the proxies'
    (noisy) training pairs."""
    from goodhartlab.data import read_pairs
    from goodhartlab.optimize.rl import run_rl

    key = "single" if method.aggregator is None else "ensemble"
    key = "components" if method.components else key
    key = f"variant:{method.proxy}" if method.proxy is not None else key
    reward = tb.gold if method.optimize == "gold" else _reward(config, proxy_info, key, rewards)
    rl_config = config.rl.run_config(
        method, seed=config.seed, device=config.device, max_new_tokens=tb.max_new_tokens
    )
    out = Path(run_dir) / "rl" / method.name
    sources = None
    if rl_config.monitor is not None:
        sources = _monitor_sources(config, proxy_info, method, rewards)
    result = run_rl(
        out,
        policy=tb.policy_path,
        reward=reward,
        gold=tb.gold,
        train_prompts=tb.train_prompts,
        eval_prompts=tb.eval_prompts,
        config=rl_config,
        resume=(out / "config.yaml").is_file(),
        monitor_sources=sources,
        sft_pairs=read_pairs(proxy_info["pairs"]) if rl_config.sft_source == "chosen" else None,
    )
    return json.loads((result.out_dir / "summary.json").read_text())


def _monitor_sources(config: StudyConfig, proxy_info: dict, method, rewards: dict) -> dict:
    """What the monitor of a study's RL or DAA run reads, the same for every run: the
    ensemble's members, the latents of member 0 (the single proxy), and as the held-out reward
    the mean of the members the run is not trained on (members 1.. for a run on the single
    proxy or on gold; none for a run on the whole ensemble)."""
    ensemble = _reward(config, proxy_info, "ensemble", rewards)
    sources = {"members": ensemble, "latents": ensemble.members[0]}
    if method.aggregator is None and len(ensemble) > 1:
        sources["heldout_members"] = list(range(1, len(ensemble)))
    return sources


def _absolute_cache(config: StudyConfig) -> StudyConfig:
    """``config`` with its testbed cache as an absolute path, so that every process (a pool
    worker, a Ray task) finds the same files and the runs record the same policy path."""
    cache = config.cache_dir or os.environ.get("GOODHART_CACHE")
    if not cache:
        return config
    return config.model_copy(update={"cache_dir": str(Path(cache).resolve())})


def run_in_worker(kind: str, name: str, config: dict, proxy_info: dict, run_dir: str) -> dict:
    """One RL (``kind="rl"``) or DAA run of a study in a worker process: rebuilds the
    (cached) testbed and loads its own proxies; returns the run's summary."""
    from goodhartlab.plugins import load_plugins

    load_plugins(config.get("plugins", []), where="study plugins")
    config = StudyConfig.model_validate(config)
    tb = make_testbed(config, progress=False)
    if kind == "rl":
        method = next(m for m in config.rl.methods if m.name == name)
        return _rl_run(config, tb, proxy_info, method, run_dir, {})
    run = next(r for r in config.daa.runs if r.name == name)
    return _daa_run(config, tb, proxy_info, run, run_dir, {})


def _check_workers(backend: str, workers: int | None) -> tuple[int, int]:
    """The machine's cores and the worker count; a bad backend or count fails before any write."""
    from goodhartlab.experiments import dispatch

    if backend not in dispatch.BACKENDS:
        raise ValueError(f"backend: expected one of {list(dispatch.BACKENDS)}, got {backend!r}")
    if backend == "ray":
        dispatch.import_ray()  # fail now, not after the first stages
    cores = dispatch.available_cpus()
    workers = cores if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers: expected at least 1, got {workers}")
    return cores, workers


def _open_study_dir(config: StudyConfig, run_dir: str | Path | None, resume: bool) -> RunDir:
    """The study's run directory, created or resumed, with a ``stages`` record in its manifest."""
    if run_dir is None:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        run_dir = Path(config.out_dir) / config.name / stamp
    run_dir = Path(run_dir)
    if not resume and run_dir.exists() and any(run_dir.iterdir()):
        raise ValueError(f"run directory {run_dir} is not empty (use --resume to continue it)")
    rundir = RunDir.open(
        run_dir,
        kind="study",
        config=config.model_dump(mode="json"),
        resume=resume,
        name=config.name,
        seed=config.seed,
        what="study",
    )
    rundir.manifest.setdefault("stages", {})
    rundir.save()
    return rundir


def _independent_runs(config: StudyConfig) -> list[tuple[str, str]]:
    """The enabled RL methods and DAA runs as ``(kind, name)``, in config order."""
    runs = [("rl", m.name) for m in config.rl.methods if config.rl.enabled]
    runs += [("daa", r.name) for r in config.daa.runs if config.daa.enabled]
    return runs


def _unfinished(runs: list[tuple[str, str]], stages: dict) -> list[tuple[str, str]]:
    """The runs not recorded complete in the manifest's ``stages``."""
    return [
        (kind, name)
        for kind, name in runs
        if stages.get(f"{kind}/{name}", {}).get("status") != "complete"
    ]


def _display(config: StudyConfig, tb, workers: int, pool_workers: int, progress: bool):
    """The overall progress display (``progress.StudyProgress``), one line per stage."""
    from goodhartlab.experiments.progress import StageState, StudyProgress, estimate_stages

    estimates = estimate_stages(
        config, testbed_cached=tb.is_cached(), seconds_per=tb.seconds_per, workers=workers
    )
    return StudyProgress(
        [
            StageState(
                name,
                seconds,
                group=name.split("/")[0] if "/" in name else "",
                parallel="/" in name,
                calibrates=name not in ("testbed", "proxies"),
            )
            for name, seconds in estimates.items()
        ],
        workers=pool_workers,
        enabled=progress,
    )


@dataclass
class _Stages:
    """The study's stages as its manifest records them, each shown on the display."""

    rundir: RunDir
    display: Any

    def record(self, name: str, result, seconds: float) -> None:
        """Records the stage ``name`` complete in the manifest and on the display."""
        self.rundir.manifest["stages"][name] = {
            "status": "complete",
            "seconds": seconds,
            "result": result,
        }
        self.rundir.save()
        self.display.done(name, seconds)

    def run(self, name: str, fn):
        """The stage's result: the recorded one if it is complete, else ``fn()``'s, recorded."""
        done = self.rundir.manifest["stages"].get(name, {})
        if done.get("status") == "complete":
            self.display.skip(name, done.get("seconds", 0.0))
            return done.get("result")
        self.display.start(name)
        t0 = time.perf_counter()
        try:
            result = fn()
        except BaseException:
            self.display.fail(name)
            raise
        self.record(name, result, time.perf_counter() - t0)
        return result


def _testbed_stage(config: StudyConfig, tb, stage_workers, workers: int) -> dict:
    """Builds the testbed on the stage workers; returns what the manifest records of it."""
    from goodhartlab.experiments.parallel_stages import build_testbed, pretrain_seeds_beside_policy

    return {
        **build_testbed(
            tb,
            stage_workers,
            config.proxies.size,
            pretrain_seeds_beside_policy(config.proxies, tb.seconds_per, workers),
        ),
        "gold_version": tb.gold_version,
    }


def _proxies_stage(config: StudyConfig, tb, stage_workers) -> dict:
    """Trains the proxies; returns their member directories, metrics and pairs file."""
    from goodhartlab.experiments.proxies import train_proxies

    p = config.proxies
    ps = train_proxies(
        tb,
        pairs=p.pairs,
        noise=p.noise,
        size=p.size,
        seeds=tuple(p.seeds),
        pretrain_seeds=p.pretrain_seeds,
        epochs=p.epochs,
        lr=p.lr,
        seed=config.seed,
        device=config.device,
        progress=False,
        workers=stage_workers,
    )
    info = {
        "members": [str(x) for x in ps.paths],
        "metrics": ps.metrics,
        "pairs": str(ps.pairs_path),
    }
    if p.variants:
        info["variants"] = {}
    for name, variant in p.variants.items():  # reward-model variants, on the same pairs
        vs = train_proxies(
            tb, pairs=p.pairs, noise=p.noise, size=p.size, seeds=tuple(p.variant_seeds(name)),
            pretrain_seeds=p.pretrain_seeds, epochs=p.epochs, lr=p.lr, seed=config.seed,
            device=config.device, progress=False, workers=stage_workers, rm_options=variant.rm,
        )  # fmt: skip
        info["variants"][name] = {
            "seeds": p.variant_seeds(name),
            "members": [str(x) for x in vs.paths],
            "metrics": vs.metrics,
        }
    if p.components:  # constrained RLHF's component proxies, on the same pairs
        from goodhartlab.experiments.proxies import train_component_proxies

        cs = train_component_proxies(
            tb, pairs=p.pairs, noise=p.noise, size=p.size, epochs=p.epochs, lr=p.lr,
            seed=config.seed, device=config.device, progress=False, workers=stage_workers,
        )  # fmt: skip
        info["components"] = {
            "names": cs.components,
            "members": [str(x.resolve()) for x in cs.paths],
            "metrics": cs.metrics,
        }
    return info


def variant_bon_proxies(proxies: ProxyConfig, proxy_info: dict) -> dict[str, str]:
    """Best-of-n picks of the reward-model variants: ``NAME-sSEED`` for each seed's model of
    each variant, and ``bt-sSEED`` for the proxies' member of every such seed (the
    Bradley-Terry model of the same backbone and data order); empty without variants. A
    pairwise preference model has no per-completion score to pick by: it is left out."""
    picks: dict[str, str] = {}
    for name, v in proxy_info.get("variants", {}).items():
        if proxies.variants[name].pairwise:
            continue
        for s, path in zip(v["seeds"], v["members"], strict=True):
            picks[f"bt-s{s}"] = proxy_info["members"][proxies.seeds.index(s)]
            picks[f"{name}-s{s}"] = path
    return dict(sorted(picks.items(), key=lambda kv: not kv[0].startswith("bt-")))


def _bon_stage(config: StudyConfig, tb, stage_workers, proxy_info: dict, run_dir: Path) -> dict:
    """The best-of-n study in ``run_dir/bon``; returns its summary."""
    from goodhartlab.experiments.parallel_stages import sample_and_score_pool
    from goodhartlab.optimize.bon import run_bon_study
    from goodhartlab.report.plots import plot_bon_curves

    members = proxy_info["members"]
    b = config.bon
    bon_config = BonStudyConfig(
        pool_size=b.pool_size,
        prompts_count=b.prompts,
        max_new_tokens=tb.max_new_tokens,
        aggregators=b.aggregators,
        n_boot=b.n_boot,
        standardize_members=b.standardize_members,
        seed=config.seed,
        device=config.device,
    )
    proxies = {"single": members[0], **variant_bon_proxies(config.proxies, proxy_info)}
    # The pool and its scores on the workers; run_bon_study finds them cached.
    scored = list(dict.fromkeys([*members, *proxies.values()]))
    sample_and_score_pool(stage_workers, run_dir / "bon" / "pool", tb, bon_config, scored)
    result = run_bon_study(
        run_dir / "bon",
        policy=tb.policy_path,
        tokenizer=tb.tokenizer,
        prompts=tb.eval_prompts,
        gold=tb.gold,
        proxies=proxies,
        ensembles={"ensemble": members} if len(members) > 1 else None,
        config=bon_config,
        plot=plot_bon_curves,
        progress=False,
    )
    return result.summary


def _tasks_here(runtime: StudyConfig, tb, proxy_info: dict, run_dir: Path, todo: list) -> list:
    """The runs as tasks for this process, sharing its testbed and reward models."""
    from goodhartlab.experiments import dispatch

    rewards: dict = {}  # one process: load each reward model once for all runs
    methods = {m.name: m for m in runtime.rl.methods}
    daa_runs = {r.name: r for r in runtime.daa.runs}
    return [
        dispatch.Task(
            f"{kind}/{name}",
            _rl_run if kind == "rl" else _daa_run,
            (
                runtime,
                tb,
                proxy_info,
                methods[name] if kind == "rl" else daa_runs[name],
                run_dir,
                rewards,
            ),
        )
        for kind, name in todo
    ]


def _tasks_in_workers(runtime: StudyConfig, proxy_info: dict, run_dir: Path, todo: list) -> list:
    """The runs as tasks for other processes (``run_in_worker``), with absolute paths."""
    from goodhartlab.experiments import dispatch

    absolute = {
        **proxy_info,
        "members": [str(Path(m).resolve()) for m in proxy_info["members"]],
        "pairs": str(Path(proxy_info["pairs"]).resolve()),
    }
    return [
        dispatch.Task(
            f"{kind}/{name}",
            run_in_worker,
            (kind, name, runtime.model_dump(), absolute, str(run_dir.resolve())),
        )
        for kind, name in todo
    ]


def _dispatch_runs(tasks: list, stages: _Stages, **run_tasks: Any) -> None:
    """Runs the tasks, recording each as it finishes; if one fails, those running show failed."""
    from goodhartlab.experiments import dispatch

    running: set[str] = set()

    def started(name: str) -> None:
        running.add(name)
        stages.display.start(name)

    def finished(name: str, result, seconds: float) -> None:
        running.discard(name)
        stages.record(name, result, seconds)

    try:
        dispatch.run_tasks(tasks, on_start=started, on_done=finished, **run_tasks)
    except BaseException:
        for name in sorted(running):
            stages.display.fail(name)
        raise


def _write_study_results(run_dir: Path, summary: dict) -> None:
    """Writes ``metrics.jsonl`` (from the stages' own files), ``summary.json`` and the report."""
    from goodhartlab.report import build_report, collect_metrics

    collect_metrics(run_dir)
    atomic_write_json(run_dir / "summary.json", summary)
    build_report(run_dir)


def run_study(
    config: StudyConfig,
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    backend: str = "local",
    workers: int | None = None,
    threads: int = 1,
) -> Path:
    """Run (or resume) a study; returns the run directory.

    Args:
        config: the study.
        run_dir: default ``<out_dir>/<name>/<UTC timestamp>``.
        resume: finish the study in ``run_dir``: finished stages are skipped, a killed RL or
            DAA run continues from its last checkpoint.
        progress: the overall progress display on stderr (``progress.StudyProgress``).
        backend: where the independent RL and DAA runs go: ``"local"`` (a process pool, or
            this process for one worker) or ``"ray"`` (Ray tasks; ``goodhart-lab[ray]``).
        workers: runs at once (default: the CPU cores of this machine).
        threads: torch threads per run, capped so that workers × threads ≤ cores; the runs
            in this process (one local worker) keep the caller's setting.
    """
    from goodhartlab.experiments import dispatch
    from goodhartlab.experiments.parallel_stages import StageWorkers, TestbedSpec

    cores, workers = _check_workers(backend, workers)
    check_device(config.device)  # before anything is written or built
    rundir = _open_study_dir(config, run_dir, resume)
    run_dir, recorded = rundir.path, rundir.manifest["stages"]

    runtime = _absolute_cache(config)
    tb = make_testbed(runtime, progress=False)
    runs = _independent_runs(config)
    todo = _unfinished(runs, recorded)
    pool_workers = max(1, min(workers, len(todo)))
    display = _display(config, tb, workers, pool_workers, progress)
    stages = _Stages(rundir, display)
    # The testbed, proxies and best-of-n stages in pieces on the same workers (one start).
    stage_workers = StageWorkers(
        tb,
        TestbedSpec.of(runtime),
        backend=backend,
        workers=workers,
        threads=dispatch.threads_per_worker(workers, cores, threads),
        show=display.update,
    )

    summary: dict = {"gold_version": tb.gold_version}
    from transformers.utils import logging as hf_logging

    # transformers' per-model "Loading weights" bars would cut through the display.
    hf_bars = hf_logging.is_progress_bar_enabled()
    if progress:
        hf_logging.disable_progress_bar()
    display.open()
    try:
        stages.run("testbed", lambda: _testbed_stage(config, tb, stage_workers, workers))
        proxy_info = stages.run("proxies", lambda: _proxies_stage(config, tb, stage_workers))
        if config.bon.enabled:
            summary["bon"] = stages.run(
                "bon", lambda: _bon_stage(config, tb, stage_workers, proxy_info, run_dir)
            )

        # The independent runs: RL methods and DAA runs, on the backend's workers.
        for kind, name in runs:
            if (kind, name) not in todo:
                display.skip(f"{kind}/{name}", recorded[f"{kind}/{name}"]["seconds"])
        if backend == "local" and pool_workers == 1:
            tasks = _tasks_here(runtime, tb, proxy_info, run_dir, todo)
        else:
            tasks = _tasks_in_workers(runtime, proxy_info, run_dir, todo)
        _dispatch_runs(
            tasks,
            stages,
            backend=backend,
            workers=pool_workers,
            threads=dispatch.threads_per_worker(pool_workers, cores, threads),
            pool=stage_workers.pool,
        )
        # Summaries in config order, whichever run finished first.
        for kind, name in runs:
            summary.setdefault(kind, {})[name] = recorded[f"{kind}/{name}"]["result"]

        _write_study_results(run_dir, summary)
    except BaseException as e:
        rundir.fail(e)
        raise
    finally:
        stage_workers.close()
        display.close()
        if hf_bars:
            hf_logging.enable_progress_bar()
    rundir.finish(seconds=sum(s.get("seconds", 0) for s in recorded.values()))
    return run_dir
