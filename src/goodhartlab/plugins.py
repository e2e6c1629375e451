"""Plugins: parts registered from outside the package.

A plugin is an ordinary Python module that, when imported, registers parts in the
registries of :mod:`goodhartlab.registry` (an aggregator, a shaping, a regularizer, a
detector, a whole testbed, ...). It is loaded

- by name: ``goodhart --plugin my_module ...`` (any command), the ``plugins:`` list of a
  study config, or ``$GOODHART_PLUGINS`` (comma-separated);
- or by installation: an entry point in the ``goodhartlab`` group of the plugin's package
  (``[project.entry-points.goodhartlab] my_parts = "my_module"``), loaded for every command.

A study records its plugins in its config, so its worker processes and ``--resume`` load
them too. Nothing here executes configuration text: a plugin is imported by module name,
as ``python -c "import my_module"`` would.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from collections.abc import Iterable

__all__ = ["ENTRY_POINT_GROUP", "load_plugins", "loaded_plugins"]

ENTRY_POINT_GROUP = "goodhartlab"

_loaded: list[str] = []
_entry_points_loaded = False


def _import(module: str, where: str) -> None:
    if not isinstance(module, str) or not module.strip():
        raise ValueError(f"{where}: expected a module name, got {module!r}")
    module = module.strip()
    if module in _loaded:
        return
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is not None and (module == e.name or module.startswith(e.name + ".")):
            raise ValueError(
                f"{where}: no module named {module!r} (is it installed, or on PYTHONPATH?)"
            ) from None
        raise
    _loaded.append(module)


def load_plugins(modules: Iterable[str] = (), *, where: str = "plugin") -> list[str]:
    """Import the installed entry points of the ``goodhartlab`` group (once), then
    ``modules`` and those of ``$GOODHART_PLUGINS``; each module is imported once.

    Returns every plugin module loaded so far. A module that does not exist is a
    ValueError naming it; an error inside a plugin propagates as it is.
    """
    global _entry_points_loaded
    if not _entry_points_loaded:
        _entry_points_loaded = True
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            _import(ep.value.split(":")[0], f"entry point {ep.name!r}")
    env = [m for m in os.environ.get("GOODHART_PLUGINS", "").split(",") if m.strip()]
    for module in [*env, *modules]:
        _import(module, where)
    return list(_loaded)


def loaded_plugins() -> list[str]:
    """The plugin modules imported so far, in order."""
    return list(_loaded)
