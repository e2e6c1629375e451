"""Loading a policy and its reference (models/loading.py): from a module or a directory,
identities, a frozen reference, clear errors."""

from __future__ import annotations

import pytest
import torch

from goodhartlab.models.fingerprint import fingerprint_files, fingerprint_module
from goodhartlab.models.loading import (
    check_vocabulary,
    load_policy,
    load_policy_and_reference,
    local_model_dir,
    resolve_autocast_dtype,
)
from goodhartlab.models.tiny import build_causal_lm


def test_module_policy_is_trained_in_place_and_the_reference_is_a_frozen_copy(tiny_tokenizer):
    policy = build_causal_lm("small", tiny_tokenizer, seed=0).train()
    model, reference, tokenizer, identity = load_policy_and_reference(policy, tiny_tokenizer)
    assert model is policy and tokenizer is tiny_tokenizer and reference is not policy
    assert identity == {"name": type(policy).__name__, "fingerprint": fingerprint_module(policy)}
    assert not model.training and not reference.training  # dropout off, also while training
    assert all(p.requires_grad for p in model.parameters())
    assert not any(p.requires_grad for p in reference.parameters())
    assert fingerprint_module(reference) == fingerprint_module(model)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert fingerprint_module(reference) != fingerprint_module(model)  # no shared tensors


def test_directory_policy_is_loaded_with_its_tokenizer(tmp_path, tiny_tokenizer):
    build_causal_lm("small", tiny_tokenizer, seed=1).save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    model, tokenizer, identity = load_policy(str(tmp_path))
    assert identity == {"name": str(tmp_path), "fingerprint": fingerprint_files(tmp_path)}
    assert len(tokenizer) == len(tiny_tokenizer)
    _, reference, _, identity2 = load_policy_and_reference(tmp_path)
    assert identity2["fingerprint"] == identity["fingerprint"]
    assert fingerprint_module(reference) == fingerprint_module(model)


def test_bad_input_is_a_clear_error(tmp_path, tiny_tokenizer):
    policy = build_causal_lm("small", tiny_tokenizer, seed=0)
    with pytest.raises(ValueError, match="tokenizer: required"):
        load_policy(policy)
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="expected a model directory, got a file"):
        local_model_dir(tmp_path / "weights.bin")
    with pytest.raises(FileNotFoundError, match="not a model in the local Hugging Face cache"):
        local_model_dir(tmp_path / "no-such-model")

    class LargerVocabulary:  # a tokenizer that can emit ids past the embedding's rows
        def __len__(self):
            return policy.config.vocab_size + 1

    check_vocabulary(tiny_tokenizer, policy)
    with pytest.raises(ValueError, match="vocabulary mismatch"):
        check_vocabulary(LargerVocabulary(), policy)


def test_autocast_dtype():
    assert resolve_autocast_dtype(False, torch.device("cpu")) is None
    assert resolve_autocast_dtype(True, torch.device("cpu")) is torch.bfloat16
