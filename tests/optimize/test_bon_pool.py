"""Pool sampling (optimize/pool.py): the KV-cache sampler against generate, and resumable pools."""

from __future__ import annotations

import json

import pytest
import torch

from goodhartlab.artifacts import MANIFEST
from goodhartlab.models.generation import _top_p_filter, sample_token_ids
from goodhartlab.models.tiny import build_causal_lm
from goodhartlab.optimize.pool import (
    PoolError,
    build_pool,
    finish_pool,
    load_pool,
    pool_status,
    prepare_pool,
    sample_pool_chunks,
)

PROMPTS = [
    "review of a phone:",
    "review of a book: the screen",
    "review of a song: very nice and",
    "a",
]
MAX_NEW = 12


def varied_policy(tokenizer):
    """A tiny Llama whose greedy and sampled outputs vary with the prompt and often end early.

    A freshly initialised model repeats one token forever; wider weights make the output
    depend on context, and a larger EOS embedding (tied to the output layer) makes EOS
    the argmax at some steps, so rows finish at different steps.
    """
    model = build_causal_lm("small", tokenizer, seed=0).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.5, generator=gen)
        model.model.embed_tokens.weight[tokenizer.eos_token_id] *= 1.5
    return model


def varied_gpt2(tokenizer):
    """As ``varied_policy`` for GPT-2, whose learned absolute positions (unlike Llama's
    rotary ones, which only see offsets) expose wrong position ids under left padding."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    torch.manual_seed(0)
    model = GPT2LMHeadModel(cfg).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.5, generator=gen)
        model.transformer.wte.weight[tokenizer.eos_token_id] *= 2.0
    return model


@pytest.fixture(scope="module")
def policy(tiny_tokenizer):
    return varied_policy(tiny_tokenizer)


def _generate_greedy(policy, tokenizer, prompts, max_new_tokens):
    old = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = old
    seq = policy.generate(
        **enc,
        do_sample=False,
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return seq[:, enc["input_ids"].shape[1] :]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_greedy_equals_generate(arch, policy, tiny_tokenizer):
    tok = tiny_tokenizer
    if arch == "gpt2":
        policy = varied_gpt2(tok)
    rows = [0, 1, 1, 2, 3, 3, 0]
    ids = tok(PROMPTS, add_special_tokens=False)["input_ids"]
    ours = sample_token_ids(
        policy,
        ids,
        rows,
        max_new_tokens=14,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        temperature=0,
    )
    ref = _generate_greedy(policy, tok, [PROMPTS[r] for r in rows], 14)
    # Rows of different prompt lengths, some ending with EOS early (their rows leave the
    # batch) and some running to the budget: the case the test exists for.
    assert ours.eos.any() and not ours.eos.all()
    assert len(set(ours.num_tokens.tolist())) >= 3
    width = ours.tokens.shape[1]
    assert torch.equal(ours.tokens, ref[:, :width])
    assert bool((ref[:, width:] == tok.pad_token_id).all())  # generate stopped too
    # num_tokens counts the tokens before EOS; EOS sits right after them.
    for b in range(len(rows)):
        n = int(ours.num_tokens[b])
        if ours.eos[b]:
            assert int(ours.tokens[b, n]) == tok.eos_token_id
            assert tok.eos_token_id not in ours.tokens[b, :n].tolist()


def test_tiny_top_p_is_greedy(policy, tiny_tokenizer):
    tok = tiny_tokenizer
    ids = tok(PROMPTS, add_special_tokens=False)["input_ids"]
    kw = dict(max_new_tokens=16, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    greedy = sample_token_ids(policy, ids, [0, 1, 2, 3], temperature=0, **kw)
    nucleus = sample_token_ids(
        policy,
        ids,
        [0, 1, 2, 3],
        temperature=1.0,
        top_p=1e-6,
        generator=torch.Generator().manual_seed(3),
        **kw,
    )
    assert torch.equal(greedy.tokens, nucleus.tokens)


def test_top_p_filter_matches_transformers():
    from transformers.generation.logits_process import TopPLogitsWarper

    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(0)) * 3
    for top_p in (0.1, 0.5, 0.9, 1.0):
        ours = _top_p_filter(logits, top_p)
        ref = TopPLogitsWarper(top_p)(None, logits.clone())
        assert torch.equal(torch.isinf(ours), torch.isinf(ref)), top_p


def test_first_token_frequencies_match_softmax(policy, tiny_tokenizer):
    # 4,000 one-token samples of one prompt against the model's own next-token
    # distribution: the 5 likeliest tokens each within 4.5 standard errors.
    tok = tiny_tokenizer
    ids = tok(PROMPTS[:1], add_special_tokens=False)["input_ids"]
    n = 4000
    out = sample_token_ids(
        policy,
        ids,
        [0] * n,
        max_new_tokens=1,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        temperature=0.7,
        generator=torch.Generator().manual_seed(0),
    )
    with torch.no_grad():
        logits = policy(input_ids=torch.tensor(ids)).logits[0, -1]
    probs = (logits / 0.7).softmax(-1)
    counts = torch.bincount(out.tokens[:, 0], minlength=probs.numel()).double() / n
    for t in probs.topk(5).indices:
        p = float(probs[t])
        assert abs(float(counts[t]) - p) < 4.5 * (p * (1 - p) / n) ** 0.5 + 1e-3, (int(t), p)


def _pool_kwargs(tokenizer):
    return dict(max_new_tokens=MAX_NEW, seed=7, chunk_size=10, batch_size=8)


def _build(tmp_path, name, policy, tokenizer, **kw):
    args = _pool_kwargs(tokenizer) | kw
    return build_pool(tmp_path / name, policy, tokenizer, PROMPTS, 16, **args)


def test_pool_deterministic_for_seed(tmp_path, policy, tiny_tokenizer):
    a = _build(tmp_path, "a", policy, tiny_tokenizer)
    b = _build(tmp_path, "b", policy, tiny_tokenizer)
    c = _build(tmp_path, "c", policy, tiny_tokenizer, seed=8)
    assert a.completions == b.completions and a.digest == b.digest
    assert (a.num_tokens == b.num_tokens).all()
    assert a.completions != c.completions
    assert len(a.completions) == 4 and all(len(row) == 16 for row in a.completions)
    # Samples of one prompt differ from each other (it is a sample, not 16 copies).
    assert len(set(a.completions[0])) > 8


def test_pool_sampled_in_shares_out_of_order_is_the_pool_sampled_at_once(
    tmp_path, policy, tiny_tokenizer
):
    # 4 prompts x 16 = 64 rows in chunks of 10: 7 chunks. Each chunk is its own stream, so
    # sampling them in shares, in any order (as several workers would), changes nothing.
    whole = _build(tmp_path, "whole", policy, tiny_tokenizer)
    args = _pool_kwargs(tiny_tokenizer)
    missing = prepare_pool(tmp_path / "shares", policy, tiny_tokenizer, PROMPTS, 16, **args)
    assert missing == list(range(7))
    done = []
    for share in ([5, 6, 0], [3], [1, 4, 2]):
        sample_pool_chunks(
            tmp_path / "shares", policy, tiny_tokenizer, share, on_chunk=lambda *d: done.append(d)
        )
    assert done == [(1, 3), (2, 3), (3, 3), (1, 1), (1, 3), (2, 3), (3, 3)]
    with pytest.raises(PoolError, match="incomplete"):
        finish_pool(tmp_path / "other")  # nothing prepared there
    pool = finish_pool(tmp_path / "shares")
    assert pool.digest == whole.digest and pool.completions == whole.completions
    chunks = sorted((tmp_path / "whole/samples/chunks").iterdir())
    assert [c.read_bytes() for c in chunks] == [
        (tmp_path / "shares/samples/chunks" / c.name).read_bytes() for c in chunks
    ]
    assert prepare_pool(tmp_path / "shares", policy, tiny_tokenizer, PROMPTS, 16, **args) == []


def test_resume_after_interruption_equals_uninterrupted(tmp_path, policy, tiny_tokenizer):
    full = _build(tmp_path, "full", policy, tiny_tokenizer)
    with pytest.raises(PoolError, match="incomplete"):
        _build(tmp_path, "resumed", policy, tiny_tokenizer, max_chunks=3)
    assert pool_status(tmp_path / "resumed") is not None  # never looks complete
    with pytest.raises(PoolError, match="not complete"):
        load_pool(tmp_path / "resumed")
    chunks = tmp_path / "resumed" / "samples" / "chunks"
    assert len(list(chunks.glob("*.jsonl"))) == 3
    # A kill during a write leaves a temp file; a chunk cut short is resampled.
    (chunks / ".00003.jsonl.abc.tmp").write_text('{"row": 30')
    data = (chunks / "00001.jsonl").read_bytes()
    (chunks / "00001.jsonl").write_bytes(data[: len(data) // 2])
    resumed = _build(tmp_path, "resumed", policy, tiny_tokenizer)
    assert resumed.completions == full.completions
    assert (resumed.num_tokens == full.num_tokens).all() and (resumed.eos == full.eos).all()
    assert resumed.digest == full.digest
    assert not list(chunks.glob(".*.tmp"))


def test_truncated_pool_file_is_detected_and_repaired(tmp_path, policy, tiny_tokenizer):
    pool = _build(tmp_path, "p", policy, tiny_tokenizer)
    chunk = tmp_path / "p" / "samples" / "chunks" / "00002.jsonl"
    data = chunk.read_bytes()
    chunk.write_bytes(data[:-40])
    with pytest.raises(PoolError, match=r"00002\.jsonl"):
        load_pool(tmp_path / "p")
    repaired = _build(tmp_path, "p", policy, tiny_tokenizer)
    assert repaired.digest == pool.digest and repaired.completions == pool.completions
    assert pool_status(tmp_path / "p") is None


def test_pool_with_other_settings_is_refused(tmp_path, policy, tiny_tokenizer):
    _build(tmp_path, "p", policy, tiny_tokenizer)
    with pytest.raises(PoolError, match="temperature"):
        _build(tmp_path, "p", policy, tiny_tokenizer, temperature=0.5)
    with pytest.raises(PoolError, match="other settings"):
        build_pool(
            tmp_path / "p", policy, tiny_tokenizer, PROMPTS[:2], 16, **_pool_kwargs(tiny_tokenizer)
        )


def test_pool_files(tmp_path, policy, tiny_tokenizer):
    pool = _build(tmp_path, "p", policy, tiny_tokenizer)
    samples = tmp_path / "p" / "samples"
    assert (samples / MANIFEST).is_file()
    config = json.loads((samples / "pool.json").read_text())
    assert config["prompts"] == PROMPTS and config["pool_size"] == 16
    # 64 rows in chunks of 10: 7 files, the last one with 4 rows.
    lines = (samples / "chunks" / "00006.jsonl").read_text().splitlines()
    assert len(lines) == 5 and json.loads(lines[-1])["rows"] == 4
    assert pool.num_tokens.shape == (4, 16) and pool.num_tokens.max() <= MAX_NEW
    # A completion cut at the budget has MAX_NEW tokens; one that ended has fewer.
    assert (pool.num_tokens[~pool.eos] == MAX_NEW).all()
    assert (pool.num_tokens[pool.eos] < MAX_NEW).all()


def test_bad_input(tmp_path, policy, tiny_tokenizer):
    with pytest.raises(ValueError, match="at least one prompt"):
        build_pool(tmp_path / "e", policy, tiny_tokenizer, [], 16)
    with pytest.raises(ValueError, match="pool_size"):
        build_pool(tmp_path / "e", policy, tiny_tokenizer, PROMPTS, 0)
    with pytest.raises(ValueError, match=r"prompts\[1\]: empty"):
        build_pool(tmp_path / "e", policy, tiny_tokenizer, ["a", ""], 4)
    with pytest.raises(ValueError, match="max_position_embeddings=128"):
        build_pool(tmp_path / "e", policy, tiny_tokenizer, ["a " * 100], 4, max_new_tokens=64)
    assert not (tmp_path / "e").exists()
