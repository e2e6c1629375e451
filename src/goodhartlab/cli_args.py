"""Command-line flags made from pydantic config fields (cleanrl's dataclass-plus-tyro idea,
with pydantic and argparse): a flag per field, its help the field's description, its
default the field's, its choices the registry's names when the field names a registered
part. No default or description is written a second time for the CLI.

Flags are added with ``default=argparse.SUPPRESS``, so the parsed namespace holds only what
the user gave: a command fills the rest from the model (and ``--resume`` from the saved
run), which is how "given" is told from "default".
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Iterable
from typing import Any

import yaml
from pydantic import BaseModel

from goodhartlab.configs import registry_of

__all__ = ["add_model_arguments", "given_fields", "parse_mapping"]


def parse_mapping(text: str) -> dict:
    """``lam=0.1,k=2`` or a YAML mapping ``{lam: 0.1}`` -> dict (values parsed as YAML)."""
    text = text.strip()
    if text.startswith("{"):
        value = yaml.safe_load(text)
    else:
        value = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            if "=" not in part:
                raise argparse.ArgumentTypeError(f"expected key=value[,key=value], got {text!r}")
            k, v = part.split("=", 1)
            value[k.strip()] = yaml.safe_load(v)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected key=value[,key=value], got {text!r}")
    return value


def _number_list(item: type):
    def parse(text: str) -> list:
        try:
            return [item(x) for x in text.replace(" ", ",").split(",") if x]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {item.__name__}s, e.g. 1,2,4; got {text!r}"
            ) from None

    parse.__name__ = f"{item.__name__} list"
    return parse


def _strip_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _default_text(info) -> str:
    if info.default_factory is not None:
        value = info.default_factory()
    else:
        value = info.default
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value) or "none"
    return str(value)


def add_model_arguments(
    parser: argparse.ArgumentParser,
    model: type[BaseModel],
    include: Iterable[str] | None = None,
    *,
    exclude: Iterable[str] = (),
    default_text: dict[str, str] | None = None,
    values: dict[str, Any] | None = None,
    aliases: dict[str, list[str]] | None = None,
) -> list[str]:
    """Add a ``--field-name`` flag for each field of ``model``; returns the field names.

    Args:
        default_text: replaces the "(default: ...)" text of some flags, where the command
            fills the value from elsewhere (e.g. ``max_new_tokens``: "the testbed's").
        values: the command's own defaults for some fields (set on the parser, so they are
            in the namespace when not given), e.g. taken from another config's fields.
        aliases: extra flag names of a field (kept for commands that had them).
    """
    defaults = dict(default_text or {})
    values = dict(values or {})
    aliases = aliases or {}
    names = [n for n in (include or model.model_fields) if n not in set(exclude)]
    for name in names:
        info = model.model_fields[name]
        annotation = _strip_optional(info.annotation)
        origin = typing.get_origin(annotation)
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS}
        registry = registry_of(info)
        if registry is not None:
            kwargs["choices"] = registry.names()
            kwargs["metavar"] = "{" + ",".join(registry.names()) + "}"
        elif origin is typing.Literal:
            kwargs["choices"] = list(typing.get_args(annotation))
        elif annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin in (list, tuple):
            item = typing.get_args(annotation)[0]
            if item in (int, float):
                kwargs.update(type=_number_list(item), metavar=f"{item.__name__.upper()}[,...]")
            else:
                kwargs.update(nargs="+", type=str)
        elif origin is dict or annotation is dict:
            kwargs.update(type=parse_mapping, metavar="KEY=VALUE[,...]")
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            # a nested settings model (RLConfig.constrained): its fields as a mapping
            kwargs.update(type=parse_mapping, metavar="{KEY: VALUE, ...}")
        elif annotation in (int, float, str):
            kwargs["type"] = annotation
        help_text = (info.description or "").replace("%", "%%")
        if name in values:
            kwargs["default"] = values[name]
            shown = values[name]
            defaults.setdefault(
                name, ",".join(map(str, shown)) if isinstance(shown, list | tuple) else str(shown)
            )
        default = defaults.get(name, _default_text(info))
        kwargs["help"] = f"{help_text} (default: {default})"
        parser.add_argument("--" + name.replace("_", "-"), *aliases.get(name, []), **kwargs)
    return names


def given_fields(
    args: argparse.Namespace, names: Iterable[str], exclude: Iterable[str] = ()
) -> dict[str, Any]:
    """The fields among ``names`` (less ``exclude``) that the user gave on the command line
    (or that the command set defaults for)."""
    values, exclude = vars(args), set(exclude)
    return {n: values[n] for n in names if n in values and n not in exclude}
