"""How much of a reward model's trunk trains: all of it (full fine-tuning, the default),
none of it (``freeze_trunk``: the score head alone, a linear probe of the trunk's hidden
state), or low-rank adapters on some of its layers (``lora``). The score head is trained
fully in every case.

LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models", arXiv:2106.09685)
keeps a targeted weight W (d_out × d_in) frozen and trains B (d_out × r, zero at the start)
and A (r × d_in): the layer computes W·x + (α/r)·B·A·x, so training starts from the backbone
and moves r·(d_in + d_out) parameters per targeted matrix instead of d_in·d_out. It is built
with the ``peft`` library (``LoraConfig``, ``get_peft_model``), not by hand.

The trunk is the sequence-classification model's base model (``model.base_model_prefix``:
``model`` of a Llama, ``bert`` of a MiniLM). Only the trunk is wrapped in a ``peft.PeftModel``,
in place, so the model around it, its score head and ``rewards.reward_model.
reward_at_last_token`` (which runs the base model and applies the head to its last hidden
state) read it as before.

After training, :func:`merge_trunk` merges the adapters into the weights
(``merge_and_unload``: W ← W + (α/r)·B·A) and puts the plain trunk back. Merged, because then
the saved directory is an ordinary reward model: ``RewardModel.from_pretrained`` loads it
unchanged (safetensors, sealed with checksums), loading needs no peft, and the model scores
through the same inference path as a fully fine-tuned one (no adapter branch at scoring).
``goodhart_rm.json`` records the settings (``lora``, ``num_trainable_parameters``). The price is
the file size: the saved model is as large as its backbone.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

#: Modules of a trunk that only the head reads, trained with it: an encoder's pooler (BERT,
#: MiniLM: dense + tanh over [CLS], which the classifier reads; a sentence-embedding
#: checkpoint may not even hold pretrained pooler weights).
HEAD_PARTS = ("pooler",)

#: Layer types LoRA can adapt (peft's ``LoraModel`` supports these and a few rarer ones).
_ADAPTABLE = ("Linear", "Embedding", "Conv1d", "Conv2d", "Conv1D")


class LoraSettings(BaseModel):
    """LoRA adapters on the reward model's trunk (Hu et al. 2021; ``peft.LoraConfig``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    r: int = Field(8, gt=0, description="Rank r of each adapter B·A.")
    alpha: float = Field(
        16.0, gt=0, description="α: the adapter's update is scaled by α / r (peft lora_alpha)."
    )
    dropout: float = Field(
        0.0, ge=0, lt=1, description="Dropout on the adapters' input in training (lora_dropout)."
    )
    target_modules: list[str] = Field(
        ["q_proj", "v_proj"],
        min_length=1,
        description="Names (or name suffixes) of the trunk's layers that get adapters, e.g. "
        "q_proj, v_proj (Llama, SmolLM2) or query, value (BERT, MiniLM).",
    )

    @field_validator("target_modules", mode="before")
    @classmethod
    def _one_name(cls, v: Any) -> Any:
        # `--lora target_modules=q_proj`: one name given without a list
        return [v] if isinstance(v, str) else v

    @field_validator("target_modules")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        bad = [n for n in v if not n.strip() or n != n.strip()]
        if bad:
            raise ValueError(f"expected non-empty module names without spaces, got {bad}")
        if len(set(v)) != len(v):
            raise ValueError(f"expected distinct module names, got {v}")
        return v


def trunk_of(model: nn.Module) -> tuple[str, nn.Module]:
    """(attribute name, module) of the trunk of a sequence-classification model: its base
    model, everything but the score head."""
    prefix = getattr(model, "base_model_prefix", "") or ""
    trunk = getattr(model, prefix, None) if prefix else None
    if not isinstance(trunk, nn.Module) or trunk is model:
        raise ValueError(
            f"lora / freeze_trunk: cannot find the trunk (base model) of {type(model).__name__}; "
            "expected a transformers *ForSequenceClassification model"
        )
    return prefix, trunk


def prepare_trunk(model: nn.Module, lora: LoraSettings | None, freeze_trunk: bool) -> None:
    """Make ``model``'s trunk train as the settings say, in place: LoRA adapters on the
    ``lora.target_modules`` (everything else of the trunk frozen), or the trunk frozen
    (``freeze_trunk``), or nothing changed (full fine-tuning). The score head, any other
    module outside the trunk and the trunk's pooler (an encoder's, :data:`HEAD_PARTS`) stay
    trainable.

    Call it after the head is initialised and under the run's seed (peft draws A from the
    global torch generator; B starts at zero).
    """
    if lora is None and not freeze_trunk:
        return
    prefix, trunk = trunk_of(model)
    if freeze_trunk:
        trunk.requires_grad_(False)
        _unfreeze_head_parts(trunk)
        return
    _check_targets(trunk, lora.target_modules)
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ImportError(
            "lora: LoRA reward models need the peft package: pip install 'goodhart-lab[real]'"
        ) from None

    peft_config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias="none",
    )
    # get_peft_model freezes every trunk parameter but the adapters'. peft 0.21 reads a
    # property transformers 5 deprecated; the warning says nothing about this model.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
        setattr(model, prefix, get_peft_model(trunk, peft_config))
    _unfreeze_head_parts(trunk)


def merge_trunk(model: nn.Module) -> nn.Module:
    """Merge LoRA adapters into the trunk's weights (W ← W + (α/r)·B·A; peft's
    ``merge_and_unload``) and put the plain trunk back, in place; a model without adapters
    is left as it is. Every parameter is made trainable again, as a freshly loaded model's
    is. Returns ``model``."""
    prefix = getattr(model, "base_model_prefix", "") or ""
    trunk = getattr(model, prefix, None) if prefix else None
    peft = sys.modules.get("peft")  # not imported: no model has adapters
    if peft is not None and isinstance(trunk, peft.PeftModel):
        setattr(model, prefix, trunk.merge_and_unload())
    model.requires_grad_(True)
    return model


def _check_targets(trunk: nn.Module, targets: list[str]) -> None:
    """Every target names (as peft matches: the whole name or its last dotted parts) at
    least one layer of the trunk that LoRA can adapt; else a ValueError listing the names."""
    layers = {
        name: type(m).__name__
        for name, m in trunk.named_modules()
        if name and type(m).__name__ in _ADAPTABLE
    }

    def matches(target: str) -> bool:
        return any(n == target or n.endswith("." + target) for n in layers)

    missing = [t for t in targets if not matches(t)]
    if missing:
        leaf_names = sorted({n.rsplit(".", 1)[-1] for n in layers})
        raise ValueError(
            f"lora.target_modules: {missing} name no layer of the trunk "
            f"({type(trunk).__name__}) that LoRA can adapt; its layers are named "
            f"{', '.join(leaf_names)}"
        )


def _unfreeze_head_parts(trunk: nn.Module) -> None:
    for name in HEAD_PARTS:
        part = getattr(trunk, name, None)
        if isinstance(part, nn.Module):
            part.requires_grad_(True)
