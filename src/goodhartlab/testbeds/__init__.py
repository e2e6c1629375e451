"""Worlds where the gold reward is known, behind one protocol (:mod:`.base`).

Each is an entry of ``goodhartlab.registry.TESTBEDS`` (``goodhart list testbed``); a user's
module registers its own (``goodhart --plugin MODULE``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from goodhartlab.registry import TESTBEDS
from goodhartlab.testbeds.base import Testbed
from goodhartlab.testbeds.real_text.testbed import RealText, RealTextConfig
from goodhartlab.testbeds.toy_text.testbed import ToyText, ToyTextConfig

__all__ = [
    "TESTBEDS",
    "Testbed",
    "backbone_tokenizer",
    "check_backbone_size",
    "get_testbed",
    "testbed_options",
]

TESTBEDS.register(
    "toy_text",
    ToyText,
    params=ToyTextConfig,
    paper="goodhart-lab (a generated review language; docs/toy-text-findings.md)",
)
TESTBEDS.register(
    "real_text",
    RealText,
    params=RealTextConfig,
    paper="SmolLM2-135M-Instruct (Allal et al. 2025, arXiv:2502.02737) from PyPI; gold from "
    "all-MiniLM-L6-v2, VADER (Hutto & Gilbert 2014) and SmolLM2 (testbeds/real_text/gold.py)",
)


def testbed_options(name: str, options: Mapping[str, Any] | None, where: str = "testbed_options"):
    """The options model of testbed ``name`` built from ``options`` (ValueError naming the
    field otherwise)."""
    return TESTBEDS.entry(name).validate_params(options, where=where)


def check_backbone_size(name: str, size: str, where: str = "size") -> str:
    """``size`` if testbed ``name`` has reward-model backbones of that size (its class's
    ``backbone_sizes``), else ValueError naming ``where`` and the sizes; checked before any
    build, so a typo costs no minutes of building."""
    sizes = getattr(TESTBEDS.entry(name).obj, "backbone_sizes", None)
    if sizes is not None and size not in sizes:
        raise ValueError(
            f"{where}: testbed {name!r} has backbone sizes {', '.join(sizes)}; got {size!r}"
        )
    return size


def backbone_tokenizer(tb: Testbed, size: str):
    """The tokenizer reward models on ``tb``'s backbone of ``size`` read with: the testbed's
    ``backbone_tokenizer(size)`` where it has one (a backbone of another family, as
    real_text's MiniLM), else the testbed's own tokenizer."""
    own = getattr(tb, "backbone_tokenizer", None)
    return own(size) if own is not None else tb.tokenizer


def get_testbed(name: str, config=None, *, cache_dir=None, progress: bool = True) -> Testbed:
    """The testbed called ``name``, built with ``config`` (its options model, a mapping of
    its fields, or None for the defaults). ValueError naming the registered ones otherwise."""
    try:
        entry = TESTBEDS.entry(name)
    except ValueError as e:
        raise ValueError(f"testbed: {e}") from None
    if not isinstance(config, entry.params):
        config = testbed_options(name, config)
    return entry.obj(config, cache_dir=cache_dir, progress=progress)
