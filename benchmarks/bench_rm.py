"""Reward-model throughput: training pairs/second and scoring completions/second per size.

Synthetic data: prompts like "review of a phone:" and completions of 8-24 words from a
small review vocabulary (about 12-30 tokens each) under a byte-level BPE tokenizer of ~360
tokens. Each number is the median over ``--repeats`` timed runs after one warm-up.

    python benchmarks/bench_rm.py [--threads 1] [--device cpu] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from goodhartlab.data import PreferencePair
from goodhartlab.models.tiny import SIZES, build_reward_model, count_parameters
from goodhartlab.rewards import RewardModel
from goodhartlab.train import RMTrainConfig, train_reward_model

NOUNS = ["phone", "laptop", "camera", "book", "movie", "song", "chair", "coffee"]
WORDS = "great bad fine slow fast cheap loud quiet nice old the screen is and it was very not a battery price".split()


def build_tokenizer():
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
    corpus = [f"review of a {n}: " + " ".join(WORDS) for n in NOUNS] * 20
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def synthetic_pairs(n: int, seed: int = 0) -> list[PreferencePair]:
    rng = random.Random(seed)

    def completion() -> str:
        return " " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 24))) + "."

    return [
        PreferencePair(
            prompt=f"review of a {rng.choice(NOUNS)}:", chosen=completion(), rejected=completion()
        )
        for _ in range(n)
    ]


def time_once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    return statistics.median(time_once(fn) for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train-pairs", type=int, default=256)
    parser.add_argument("--score-completions", type=int, default=512)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer = build_tokenizer()
    pairs = synthetic_pairs(args.train_pairs)
    prompts = [p.prompt for p in pairs] * 2
    completions = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    reps = -(-args.score_completions // len(completions))
    prompts, completions = (
        (prompts * reps)[: args.score_completions],
        (completions * reps)[: args.score_completions],
    )
    config = RMTrainConfig(
        batch_size=32, lr=1e-4, epochs=1, max_length=64, eval_fraction=0.0, device=args.device
    )

    rows = []
    for size in SIZES:
        backbone = build_reward_model(size, tokenizer, seed=0)
        params = count_parameters(backbone)
        train_s = median_time(
            lambda backbone=backbone: train_reward_model(
                pairs, tokenizer, backbone, config, progress=False
            ),
            args.repeats,
        )
        rm = RewardModel(backbone, tokenizer, max_length=64, device=args.device)
        score_s = median_time(
            lambda rm=rm: rm.score(prompts, completions, batch_size=64), args.repeats
        )
        rows.append((size, params, len(pairs) / train_s, len(completions) / score_s))

    print(
        f"RM throughput: device={args.device}, torch threads={torch.get_num_threads()}, "
        f"train batch 32 pairs, score batch 64, ~12-30 tokens per completion, "
        f"median of {args.repeats}, torch {torch.__version__}\n"
    )
    print("| size | parameters | train pairs/s | score completions/s |")
    print("|---|---:|---:|---:|")
    for size, params, train_rate, score_rate in rows:
        print(f"| {size} | {params:,} | {train_rate:,.0f} | {score_rate:,.0f} |")


if __name__ == "__main__":
    main()
