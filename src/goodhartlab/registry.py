"""Registries: one per kind of swappable part, each entry with its metadata.

Every part a study, a command or a report can name — an ensemble aggregator, a reward
shaping, a KL-style regularizer, an RL algorithm, a DAA loss, a reward-model objective, a
reward source, a testbed, a hacking detector, a report metric — is an :class:`Entry` of the
:class:`Registry` of its kind. The entry carries what a user needs to choose it: a one-line
description, the paper, whether higher is better (for metrics and detectors), and its
parameters as a pydantic model, so that ``uwo`` with ``lam=-1`` or ``ipo`` with ``eta=2``
fails at load time naming the parameter. A failed lookup lists what exists (and the closest
names), as lm-evaluation-harness's task registry does.

The registries are the only list of names: the CLI's ``choices`` and help, the configs'
validators and the report read them. A user's module adds entries from outside the package
(:mod:`goodhartlab.plugins`)::

    from goodhartlab.core.aggregate import AGGREGATORS

    @AGGREGATORS.register("softmin", paper="...", params=SoftminParams)
    def softmin(r_members, tau=1.0):
        ...

Each registry is created here, empty, and filled by the module that owns its kind (its
``home``), which is imported on first use, so that ``goodhartlab.registry`` itself imports
nothing from the rest of the package and may be used by every layer, ``core`` included.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = [
    "AGGREGATORS",
    "CLAIM_CHECKS",
    "DAA_LOSSES",
    "DETECTORS",
    "METRICS",
    "OCCUPANCY_DIVERGENCES",
    "REGISTRIES",
    "REGULARIZERS",
    "REWARD_SOURCES",
    "RL_ALGORITHMS",
    "RM_FEATURES",
    "RM_OBJECTIVES",
    "RM_TOOLS",
    "SHAPINGS",
    "TESTBEDS",
    "Entry",
    "NoParams",
    "Registry",
]

T = TypeVar("T")


class NoParams(BaseModel):
    """The parameters of a part that takes none."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered part and what a user needs to choose it."""

    name: str
    obj: T
    """The part itself: a function, a class or a factory (what each kind expects is said in
    its registry's ``doc``)."""
    description: str
    """One line: what it does."""
    paper: str | None = None
    """Authors, year, arXiv id (or the source) of the method."""
    params: type[BaseModel] = NoParams
    """Its parameters, a pydantic model with a description per field."""
    higher_is_better: bool | None = None
    """For metrics and detectors: which direction is good (None: not a score)."""
    version: str | None = None
    """Bumped on every change of what the part computes (results record it)."""
    meta: Mapping[str, Any] = field(default_factory=dict)
    """Kind-specific facts (e.g. a shaping's ``needs``: ``"references"``)."""
    module: str = ""
    """The module that registered it (``goodhartlab...`` or a plugin's)."""

    @property
    def builtin(self) -> bool:
        return self.module.split(".")[0] == "goodhartlab"

    def validate_params(self, params: Mapping[str, Any] | None, where: str = "") -> BaseModel:
        """``params`` checked against the entry's model (ValueError naming the parameter)."""
        what = where or f"{self.name}"
        accepted = list(self.params.model_fields)
        unknown = sorted(set(params or {}) - set(accepted))
        if unknown:
            raise ValueError(
                f"{what}: {self.name!r} does not take parameter(s) {unknown}; it takes "
                f"{accepted or 'none'}"
            )
        try:
            return self.params.model_validate(dict(params or {}))
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(x) for x in err['loc']) or '(all)'}: {err['msg']}"
                for err in e.errors()
            )
            raise ValueError(f"{what}: bad parameters for {self.name!r}: {problems}") from None


def params_from_signature(
    fn: Callable[..., Any], docs: Mapping[str, str], model_name: str
) -> type[BaseModel]:
    """A pydantic model of the keyword parameters ``docs`` names, from ``fn``'s signature:
    each field's type is the annotation, its default the signature's, its description
    ``docs[name]``. A parameter without a default is required."""
    import inspect
    import typing

    from pydantic import Field, create_model

    sig = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations: accept any value
        hints = {}
    fields: dict[str, Any] = {}
    for pname, description in docs.items():
        if pname not in sig.parameters:
            raise TypeError(f"{getattr(fn, '__name__', fn)!r} has no parameter {pname!r}")
        default = sig.parameters[pname].default
        fields[pname] = (
            hints.get(pname, Any),
            Field(... if default is inspect.Parameter.empty else default, description=description),
        )
    return create_model(model_name, __config__=ConfigDict(extra="forbid", frozen=True), **fields)


class Registry(Generic[T]):
    """The parts of one kind, by name, in registration order.

    Args:
        kind: what the parts are, singular (``"aggregator"``), used in messages.
        home: the module that registers the built-in entries (imported on first lookup).
        doc: what an entry's ``obj`` must be.
    """

    def __init__(self, kind: str, *, home: str, doc: str):
        self.kind = kind
        self.home = home
        self.doc = doc
        self._entries: dict[str, Entry[T]] = {}
        self._loaded = False

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True  # first, so that the home module may look itself up
            importlib.import_module(self.home)

    def register(
        self,
        name: str,
        obj: T | None = None,
        *,
        description: str | None = None,
        paper: str | None = None,
        params: type[BaseModel] | Mapping[str, str] = NoParams,
        higher_is_better: bool | None = None,
        version: str | None = None,
        replace: bool = False,
        **meta: Any,
    ):
        """Register ``obj`` as ``name``; without ``obj``, a decorator that does.

        ``description`` defaults to the first line of ``obj``'s docstring. ``params`` is a
        pydantic model, or ``{parameter: description}`` naming keyword parameters of the
        function ``obj``, whose model is then built from its signature (types and defaults
        written once, in the function). A name already taken raises ValueError unless
        ``replace=True`` (a plugin that means to override).
        """
        if (
            not isinstance(name, str)
            or not name
            or not name.replace("_", "a").replace("-", "a").replace(".", "a").isalnum()
        ):
            raise ValueError(
                f"{self.kind} name {name!r}: expected letters, digits, '_', '-' or '.'"
            )

        def add(o: T) -> T:
            model = params
            if isinstance(params, Mapping):
                model = params_from_signature(o, params, f"{name.title()}Params")
            if not (isinstance(model, type) and issubclass(model, BaseModel)):
                raise TypeError(
                    f"{self.kind} {name!r}: params must be a pydantic model class or a "
                    "mapping {parameter: description}"
                )
            if name in self._entries and not replace:
                raise ValueError(
                    f"{self.kind} {name!r} is already registered (by "
                    f"{self._entries[name].module}); pass replace=True to override it"
                )
            doc = (getattr(o, "__doc__", None) or "").strip().splitlines()
            self._entries[name] = Entry(
                name=name,
                obj=o,
                description=description or (doc[0] if doc else ""),
                paper=paper,
                params=model,
                higher_is_better=higher_is_better,
                version=version,
                meta=dict(meta),
                module=getattr(o, "__module__", None) or "",
            )
            return o

        return add if obj is None else add(obj)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests use it to clean up after a plugin)."""
        self._entries.pop(name, None)

    def entry(self, name: str) -> Entry[T]:
        """The entry called ``name``; ValueError listing the registered names otherwise."""
        self._load()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            pass
        names = list(self._entries)
        close = difflib.get_close_matches(str(name), names, n=2)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"unknown {self.kind} {name!r}; registered: {', '.join(names) or '(none)'}.{hint} "
            f"(A plugin can add one: goodhart --plugin MODULE.)"
        )

    def __getitem__(self, name: str) -> T:
        return self.entry(name).obj

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(list(self._entries))

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """(name, part) pairs, as a dict's."""
        return [(e.name, e.obj) for e in self.entries()]

    def values(self) -> list[T]:
        return [e.obj for e in self.entries()]

    def names(self) -> list[str]:
        return list(self)

    def entries(self) -> list[Entry[T]]:
        self._load()
        return list(self._entries.values())

    def check(self, name: str, where: str = "") -> str:
        """``name`` if registered, else ValueError (for pydantic validators)."""
        if name not in self:
            try:
                self.entry(name)
            except ValueError as e:
                raise ValueError(f"{where + ': ' if where else ''}{e}") from None
        return name

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


AGGREGATORS: Registry[Callable[..., Any]] = Registry(
    "aggregator",
    home="goodhartlab.core.aggregate",
    doc="f(r_members: Tensor[M, B], **params) -> Tensor[B], NaN-aware.",
)
SHAPINGS: Registry[Callable[..., Any]] = Registry(
    "shaping",
    home="goodhartlab.core.shaping",
    doc="f(r: Tensor[B], context: ShapingContext, **params) -> Tensor[B]; meta 'needs' says "
    "what the context must hold: 'references' (r_ref, Shape (B, M)), 'moments' (running "
    "statistics, updated with the batch first), 'steps' (r_steps and step_mask, Shape (B, K): "
    "the score of every sentence prefix; meta 'step_rewards' gives the per-step rewards), "
    "'length_bias' (length_bias, Shape (B,): a length bias fitted on base-policy samples) or "
    "nothing.",
)
REGULARIZERS: Registry[Callable[..., Any]] = Registry(
    "regularizer",
    home="goodhartlab.core.kl",
    doc="A per-token divergence estimate f(logp: Tensor[B, T], logp_ref: Tensor[B, T]) -> "
    "Tensor[B, T]; summed over the completion for a penalty in the reward, averaged like the "
    "policy loss for a penalty in the loss.",
)
OCCUPANCY_DIVERGENCES: Registry[Callable[..., Any]] = Registry(
    "occupancy divergence",
    home="goodhartlab.core.occupancy",
    doc="A divergence between the policy's and the reference's distributions over whole "
    "sequences (their occupancy measures), f(log_ratio: Tensor[B], weights: Tensor[B]) -> "
    "core.occupancy.OccupancyPenalty (the batch estimate and a per-sample reward term whose "
    "policy gradient is the divergence's gradient); not additive over tokens.",
)
RL_ALGORITHMS: Registry[Any] = Registry(
    "RL algorithm",
    home="goodhartlab.optimize.algorithms",
    doc="An optimize.algorithms.RLAlgorithm: advantages and the clipped policy loss.",
)
DAA_LOSSES: Registry[Callable[..., Any]] = Registry(
    "DAA loss",
    home="goodhartlab.core.losses",
    doc="f(logp_chosen, logp_rejected, ref_chosen, ref_rejected, *, beta, **params) -> "
    "(loss, stats); meta 'needs_nll' if it also takes nll_chosen.",
)
RM_OBJECTIVES: Registry[Callable[..., Any]] = Registry(
    "reward-model objective",
    home="goodhartlab.core.losses",
    doc="f(r_chosen: Tensor[B], r_rejected: Tensor[B], **params) -> (loss, stats); meta "
    "'needs' names per-pair inputs (train.rm_pair_inputs), meta 'length_head' a second head "
    "trained beside the score head (ODIN: train.rm_length_head).",
)
RM_TOOLS: Registry[Callable[..., Any]] = Registry(
    "reward-model tool",
    home="goodhartlab.testbeds.toy_text.tools",
    doc="f(prompt: str, completion: str) -> str: a tool's answer, appended to the completion "
    "in a tool-augmented reward model's input (Themis; rewards.reward_model); meta 'testbed' "
    "names the testbed whose prompts it reads.",
)
RM_FEATURES: Registry[Callable[..., Any]] = Registry(
    "reward-model feature set",
    home="goodhartlab.testbeds.toy_text.features",
    doc="f(prompt: str, completion: str) -> list[float]: domain-knowledge features a "
    "reward model reads beside its backbone (a linear layer over their standardized vector; "
    "core.feature_reward, rewards.feature_head); meta 'names' names the F features, meta "
    "'testbed' the testbed whose prompts it reads. Never the gold's own scores.",
)
REWARD_SOURCES: Registry[Callable[..., Any]] = Registry(
    "reward source",
    home="goodhartlab.rewards",
    doc="A factory f(**params, device=...) -> an object with score(prompts, completions) "
    "(and score_members for an ensemble).",
)
TESTBEDS: Registry[Callable[..., Any]] = Registry(
    "testbed",
    home="goodhartlab.testbeds",
    doc="A class implementing testbeds.Testbed, built as cls(options, cache_dir=, progress=) "
    "with options an instance of the entry's params model.",
)
DETECTORS: Registry[Callable[..., Any]] = Registry(
    "detector",
    home="goodhartlab.monitor",
    doc="A pure function over a run's history (no gold) -> an alarm score per point; meta "
    "'needs' names the EvalPoint fields it reads, meta 'incremental' its incremental form (a "
    "monitor.detectors.DetectorStream class, built as cls(streams, **params)).",
)
METRICS: Registry[Callable[..., Any]] = Registry(
    "metric",
    home="goodhartlab.report.metrics",
    doc="f(summary_row: dict) -> float | None: a column of the report's table.",
)
CLAIM_CHECKS: Registry[Callable[..., Any]] = Registry(
    "claim check",
    home="goodhartlab.report.claims",
    doc="f(claim: ClaimConfig, figures: {method: {seed: run figures}}, rows: {method: row "
    "over seeds}) -> (measured: str, verdict: str): a paper's claim tested on a study.",
)

#: Every registry by kind, for ``goodhart list``.
REGISTRIES: dict[str, Registry[Any]] = {
    "aggregator": AGGREGATORS,
    "shaping": SHAPINGS,
    "regularizer": REGULARIZERS,
    "occupancy_divergence": OCCUPANCY_DIVERGENCES,
    "rl_algorithm": RL_ALGORITHMS,
    "daa_loss": DAA_LOSSES,
    "rm_objective": RM_OBJECTIVES,
    "rm_tool": RM_TOOLS,
    "rm_features": RM_FEATURES,
    "reward_source": REWARD_SOURCES,
    "testbed": TESTBEDS,
    "detector": DETECTORS,
    "metric": METRICS,
    "claim_check": CLAIM_CHECKS,
}


def name_in(registry: Registry[Any]) -> Any:
    """The type of a config field that names a part of ``registry``: a str, checked against
    the registry when the config is validated (the error lists what is registered), and
    marked so that the CLI offers the registered names as choices.

    >>> class C(BaseModel):
    ...     aggregator: name_in(AGGREGATORS) = "mean"
    """
    from typing import Annotated

    from pydantic import AfterValidator, Field

    def check(value: str | None) -> str | None:
        # None passes: an optional override (configs.fields_from(optional=True)) keeps this
        # validator on the whole ``str | None``.
        return value if value is None else registry.check(value)

    return Annotated[
        str, AfterValidator(check), Field(json_schema_extra={"registry": registry.kind})
    ]
