"""Shared fixtures: a tiny byte-level BPE tokenizer and tiny Llama-style models."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tiny models run faster on one thread, and on a busy 2-core machine a second OpenMP
# thread can make each matmul ~1000x slower (spin-waiting for a core). Override with
# GOODHART_TEST_THREADS.
torch.set_num_threads(int(os.environ.get("GOODHART_TEST_THREADS", "1")))

#: Words of the toy review language used by the shared tokenizer and synthetic data.
NOUNS = ["phone", "laptop", "camera", "book", "movie", "song", "chair", "coffee"]
ADJECTIVES = ["great", "bad", "fine", "slow", "fast", "cheap", "loud", "quiet", "nice", "old"]
FILLERS = ["the", "screen", "is", "and", "it", "was", "very", "not", "a", "battery", "price"]

_CORPUS = [
    "review of a phone: the screen is great.",
    "review of a laptop: the battery is bad and slow.",
    "review of a camera: it was very nice, not cheap.",
    "review of a book: a fine and quiet book.",
    "review of a movie: loud, old and not great.",
    "review of a song: the price is fine.",
    "review of a chair: very cheap, very old.",
    "review of a coffee: fast and nice.",
]


def _train_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    words = " ".join(NOUNS + ADJECTIVES + FILLERS)
    tok.train_from_iterator(_CORPUS * 5 + [words] * 20, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


@pytest.fixture(scope="session")
def tiny_corpus() -> list[str]:
    """The review sentences the shared tokenizer is trained on (to pretrain tiny policies)."""
    return list(_CORPUS)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A byte-level BPE tokenizer (~400 tokens), pad "<pad>" != eos "<eos>", no BOS."""
    return _train_tokenizer()


@pytest.fixture
def tiny_reward_model(tiny_tokenizer):
    """A freshly initialised size-"small" Llama reward model (seed 0)."""
    from goodhartlab.models.tiny import build_reward_model

    return build_reward_model("small", tiny_tokenizer, seed=0)
