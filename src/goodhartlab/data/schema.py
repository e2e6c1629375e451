"""Preference-pair records, compatible with RewardBench rows (``prompt``, ``chosen``,
``rejected``, optionally ``id`` and ``subset``).

The text a model sees is ``prompt + chosen`` (resp. ``prompt + rejected``): completions
usually begin with a space, and nothing is inserted between prompt and completion.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: The longest prompt or completion accepted, in characters. Far beyond any context the
#: models here read (they truncate to a few hundred tokens); an 8 MB line used to be read,
#: tokenized (gigabytes of memory) and silently cut away.
MAX_TEXT_CHARS = 100_000


def _check_json_meta(meta: dict[str, Any]) -> dict[str, Any]:
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"expected a JSON-serializable dict of finite values ({e})") from None
    return meta


class PreferencePair(BaseModel):
    """One labelled comparison: ``chosen`` is preferred to ``rejected`` for ``prompt``."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    prompt: str = Field(
        max_length=MAX_TEXT_CHARS, description="The prompt; the model sees prompt + completion."
    )
    chosen: str = Field(max_length=MAX_TEXT_CHARS, description="The preferred completion.")
    rejected: str = Field(max_length=MAX_TEXT_CHARS, description="The other completion.")
    id: int | str | None = Field(default=None, description="Row identifier (RewardBench: int).")
    subset: str | None = Field(default=None, description="Subset name, for per-subset accuracy.")
    margin: float | None = Field(
        default=None,
        description="Preference strength m for the margin loss −log σ(r_c − r_r − m) (Llama 2).",
    )
    gold_chosen: float | None = Field(default=None, description="Gold reward of `chosen`.")
    gold_rejected: float | None = Field(default=None, description="Gold reward of `rejected`.")
    meta: dict[str, Any] = Field(
        default_factory=dict,
        description="Free-form JSON metadata: labelling rule, `flipped` (label noise), `tie`, ...",
    )

    _check_meta = field_validator("meta")(_check_json_meta)

    @field_validator("id", mode="before")
    @classmethod
    def _id_not_bool(cls, v: object) -> object:
        if isinstance(v, bool):
            raise ValueError("expected an int or a string, got a bool")
        return v

    @property
    def flipped(self) -> bool | None:
        """Whether label noise swapped this pair (``meta["flipped"]``), None if not recorded."""
        flag = self.meta.get("flipped")
        return None if flag is None else bool(flag)

    def swapped(self) -> PreferencePair:
        """The same pair with chosen and rejected (and their gold rewards) exchanged."""
        return self.model_copy(
            update={
                "chosen": self.rejected,
                "rejected": self.chosen,
                "gold_chosen": self.gold_rejected,
                "gold_rejected": self.gold_chosen,
            }
        )

    def clean(self) -> PreferencePair:
        """The pair as the noise-free labeller saw it: swapped back if ``meta["flipped"]``."""
        if not self.flipped:
            return self
        clean = self.swapped()
        return clean.model_copy(update={"meta": {**self.meta, "flipped": False}})


class CompletionPair(BaseModel):
    """Two completions of one prompt, not yet labelled (the output of ``sample_pairs``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = Field(description="The prompt.")
    completion_a: str = Field(description="First sampled completion.")
    completion_b: str = Field(description="Second sampled completion.")
    id: int | str | None = Field(default=None, description="Row identifier.")
    meta: dict[str, Any] = Field(default_factory=dict, description="Free-form JSON metadata.")

    _check_meta = field_validator("meta")(_check_json_meta)
