"""Loading a policy (and its frozen reference) from a directory, a cached hub name or a module.

The one place the optimizers (best-of-n pools, RL, direct alignment) turn what the user gave
as ``policy`` into a model, a tokenizer and an identity for the run's config. Nothing is
downloaded: a hub name must already be in the local Hugging Face cache, and remote code is
never trusted.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from goodhartlab.models.fingerprint import fingerprint_files, fingerprint_module

__all__ = [
    "check_device",
    "check_vocabulary",
    "embedding_rows",
    "load_policy",
    "load_policy_and_reference",
    "local_model_dir",
    "resolve_autocast_dtype",
]


def check_device(device: str | torch.device, where: str = "device") -> str:
    """``device`` if this torch can use it, else ValueError naming ``where`` (e.g. ``cuda``
    on a CPU-only build, or a name that is not a device); checked before any work."""
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"{where}: {device!r} is not a torch device ({e})") from None
    if d.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"{where}: {device!r}, but this torch ({torch.__version__}) has no usable CUDA "
            "device; use cpu"
        )
    if d.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{where}: {device!r}, but MPS is not available here; use cpu")
    return str(device)


def local_model_dir(path_or_hub: str | os.PathLike) -> Path:
    """The directory of a model: ``path_or_hub`` itself, or a hub name's local snapshot.

    Raises FileNotFoundError (naming what was given) for a file, or for a name that is
    neither a directory nor in the local Hugging Face cache.
    """
    path = Path(path_or_hub)
    if path.is_dir():
        return path
    if path.exists():
        raise FileNotFoundError(f"{path}: expected a model directory, got a file")
    try:  # a hub name already in the local cache (nothing is downloaded)
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(path_or_hub), local_files_only=True))
    except Exception:
        raise FileNotFoundError(
            f"{path_or_hub}: not a directory, and not a model in the local Hugging Face cache"
        ) from None


def embedding_rows(model: nn.Module) -> int | None:
    """Number of rows of the model's input embedding, or None if it has none."""
    get = getattr(model, "get_input_embeddings", None)
    emb = get() if callable(get) else None
    return getattr(emb, "num_embeddings", None)


def check_vocabulary(tokenizer, model: nn.Module) -> None:
    """Raise ValueError if the tokenizer can emit ids the model's embedding does not have."""
    rows = embedding_rows(model)
    if rows is not None and len(tokenizer) > rows:
        raise ValueError(
            f"vocabulary mismatch: the tokenizer has {len(tokenizer)} tokens but the model's "
            f"embedding has {rows} rows; use the tokenizer the model was trained with"
        )


def _causal_lm(local: Path) -> nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(local, trust_remote_code=False)


def load_policy(
    policy: str | os.PathLike | nn.Module, tokenizer=None, *, device: str | torch.device = "cpu"
) -> tuple[nn.Module, Any, dict[str, str]]:
    """The policy on ``device``, its tokenizer, and its identity.

    Args:
        policy: a model directory, a cached hub name, or a causal-LM module (moved to
            ``device`` in place; then ``tokenizer`` is required).
        tokenizer: the policy's tokenizer (default: loaded from the policy directory).
        device: where the model goes.

    Returns:
        ``(model, tokenizer, identity)`` with identity ``{"name", "fingerprint"}``: for a
        module its class name and :func:`fingerprint_module`, for a directory the name given
        and :func:`fingerprint_files` of the directory.
    """
    if isinstance(policy, nn.Module):
        if tokenizer is None:
            raise ValueError("tokenizer: required when the policy is a model object")
        identity = {"name": type(policy).__name__, "fingerprint": fingerprint_module(policy)}
        return policy.to(device), tokenizer, identity
    local = local_model_dir(policy)
    model = _causal_lm(local).to(device)
    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(local, trust_remote_code=False)
    return model, tokenizer, {"name": str(policy), "fingerprint": fingerprint_files(local)}


def load_policy_and_reference(
    policy: str | os.PathLike | nn.Module, tokenizer=None, *, device: str | torch.device = "cpu"
) -> tuple[nn.Module, nn.Module, Any, dict[str, str]]:
    """The policy to train, a frozen copy of it (the reference π0), its tokenizer, identity.

    As :func:`load_policy`; a module is trained in place and the reference is a deep copy of
    it, a directory is loaded twice. Both are in ``eval()`` mode (dropout off, also while
    training); the reference does not require gradients. The tokenizer is checked against
    the model's embedding (:func:`check_vocabulary`).

    Returns:
        ``(model, reference, tokenizer, identity)``.
    """
    model, tokenizer, identity = load_policy(policy, tokenizer, device=device)
    if isinstance(policy, nn.Module):
        reference = copy.deepcopy(model)
    else:
        reference = _causal_lm(local_model_dir(policy))
    check_vocabulary(tokenizer, model)
    model.eval()
    reference.to(device).eval().requires_grad_(False)
    return model, reference, tokenizer, identity


def resolve_autocast_dtype(bf16: bool, device: torch.device) -> torch.dtype | None:
    """bfloat16 when ``bf16`` is asked for (ValueError on a CUDA device without it), else None."""
    if not bf16:
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"bf16: the device {device} does not support bfloat16")
    return torch.bfloat16
