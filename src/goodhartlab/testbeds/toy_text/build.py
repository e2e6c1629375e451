"""Building the toy_text world: the BPE tokenizer and causal LMs pretrained on the language."""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerFast

from goodhartlab.models.generation import right_pad
from goodhartlab.models.tiny import build_causal_lm
from goodhartlab.testbeds.toy_text.language import (
    Prompt,
    all_prompts,
    corpus_vocabulary,
    generate_review,
)

SPECIAL_TOKENS = ["<pad>", "<eos>", "<unk>"]


def generate_corpus(
    n: int, seed: int, prompts: list[Prompt] | None = None
) -> list[tuple[str, str]]:
    """``n`` (prompt, completion) pairs from the language's generator."""
    rng = np.random.default_rng(seed)
    prompts = prompts or all_prompts()
    idx = rng.integers(len(prompts), size=n)
    return [(prompts[i].text, generate_review(prompts[i], rng)) for i in idx]


def train_tokenizer(
    corpus: list[tuple[str, str]], vocab_size: int = 640
) -> PreTrainedTokenizerFast:
    """A BPE tokenizer trained on the corpus (Metaspace pre-tokenization, so every word of the
    language ends up a single token and ``tok(prompt + completion)`` equals
    ``tok(prompt) + tok(completion)``), wrapped as a ``PreTrainedTokenizerFast``."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="never")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False
    )
    # Every word once per "sentence" guarantees whole-word tokens for the full vocabulary.
    texts = [p + c for p, c in corpus] + [" ".join(corpus_vocabulary())] * 50
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    fast.padding_side = "right"
    return fast


def encode_lm_example(tokenizer, prompt: str, completion: str) -> list[int]:
    """Token ids of one pretraining sequence: prompt + completion + EOS."""
    return [
        *tokenizer(prompt + completion, add_special_tokens=False).input_ids,
        tokenizer.eos_token_id,
    ]


def pretrain_causal_lm(
    size: str,
    tokenizer,
    *,
    seed: int,
    steps: int,
    batch_size: int = 64,
    lr: float = 3e-3,
    corpus_seed: int | None = None,
    progress: bool = True,
    desc: str = "pretraining",
):
    """Pretrain a tiny Llama of ``size`` on freshly generated corpus text (one pass, never
    repeating a batch), with AdamW, linear warmup and cosine decay. Returns (model, stats)."""
    torch.manual_seed(seed)
    model = build_causal_lm(size, tokenizer, seed=seed)
    model.train()
    corpus = generate_corpus(
        steps * batch_size, seed=1000 + (seed if corpus_seed is None else corpus_seed)
    )
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    pad = tokenizer.pad_token_id
    t0 = time.perf_counter()
    losses = []
    for step in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        rows = [
            encode_lm_example(tokenizer, p, c)
            for p, c in corpus[step * batch_size : (step + 1) * batch_size]
        ]
        ids, att = right_pad(rows, pad)
        labels = ids.masked_fill(att == 0, -100)
        loss = model(input_ids=ids, attention_mask=att, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    stats = {
        "size": size,
        "seed": seed,
        "steps": steps,
        "batch_size": batch_size,
        "final_loss": float(np.mean(losses[-20:])),
        "seconds": time.perf_counter() - t0,
    }
    return model, stats
