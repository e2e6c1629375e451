"""Worlds where the gold reward is known."""

from __future__ import annotations

TESTBEDS = ("toy_text",)


def get_testbed(name: str, **kwargs):
    """The testbed called ``name`` (ValueError naming the valid ones otherwise)."""
    if name == "toy_text":
        from goodhartlab.testbeds.toy_text import ToyText

        return ToyText(**kwargs)
    raise ValueError(f"testbed: expected one of {list(TESTBEDS)}, got {name!r}")
