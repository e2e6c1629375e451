"""One source for every setting: configs built from other configs' fields.

Every setting is a field of one pydantic model, with its type, its constraints and its
description written once (``RLConfig``, ``DAAConfig``, ``BonStudyConfig``, ``RMTrainConfig``,
``RewardPipelineConfig``). What composes them — a study's stage, a study's RL method, a CLI
command — takes those fields as they are, with only its own defaults changed
(:func:`fields_from`), so that no description or constraint is copied by hand and a default
differs only where a composer says so. The CLI's flags are made from the same fields
(``goodhartlab.cli_args``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

__all__ = ["fields_from", "registry_of"]


def fields_from(
    model: type[BaseModel],
    include: Iterable[str] | None = None,
    *,
    exclude: Iterable[str] = (),
    defaults: Mapping[str, Any] | None = None,
    optional: bool = False,
) -> dict[str, tuple[Any, FieldInfo]]:
    """``model``'s fields as ``pydantic.create_model`` keyword arguments.

    Args:
        model: where the fields are defined.
        include: the fields to take (default: all), in this order.
        exclude: fields to leave out.
        defaults: new defaults for some of them (the composer's own).
        optional: every field defaults to None and accepts None (an override: None means
            "not given, take the enclosing setting").
    """
    defaults = dict(defaults or {})
    names = list(model.model_fields) if include is None else list(include)
    unknown = sorted((set(names) | set(defaults)) - set(model.model_fields))
    if unknown:
        raise KeyError(f"{model.__name__} has no field(s) {unknown}")
    out: dict[str, tuple[Any, FieldInfo]] = {}
    for name in names:
        if name in exclude:
            continue
        info = copy.copy(model.model_fields[name])
        annotation = info.annotation
        if name in defaults:
            value = defaults[name]
            info.default, info.default_factory = value, None
        if optional:
            info.default, info.default_factory = None, None
            annotation = annotation | None
            # Constraints stay: they apply to a given value, not to None.
        out[name] = (annotation, info)
    return out


def registry_of(info: FieldInfo):
    """The registry whose parts a field names (typed ``registry.name_in(REGISTRY)``), or None."""
    import typing

    from goodhartlab.registry import REGISTRIES

    extra = info.json_schema_extra
    kind = extra.get("registry") if isinstance(extra, dict) else None
    # An optional name (name_in(R) | None) keeps the mark inside the Annotated member.
    for arg in typing.get_args(info.annotation) if kind is None else ():
        for meta in getattr(arg, "__metadata__", ()):
            extra = getattr(meta, "json_schema_extra", None)
            if isinstance(extra, dict) and "registry" in extra:
                kind = extra["registry"]
    return next((r for r in REGISTRIES.values() if r.kind == kind), None) if kind else None
