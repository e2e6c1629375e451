"""real_text on the real weights: the GGUF conversion, a 4-token sample, gold on real models.

Needs the weights packages (installed ``--no-deps``, see .ci/run); skipped with the reason
where they are absent, and a failure where GOODHART_REQUIRE_REAL_TEXT is set (CI sets it).
"""

from __future__ import annotations

import os

import pytest
import torch

from goodhartlab.testbeds.real_text.build import MissingWeights, minilm_dir, smollm2_gguf

pytestmark = pytest.mark.slow


def _weights_missing() -> str | None:
    try:
        smollm2_gguf()
        minilm_dir()
        import gguf  # noqa: F401
        import vaderSentiment  # noqa: F401
    except (MissingWeights, ImportError) as e:
        return str(e)
    return None


@pytest.fixture(scope="module")
def tb(tmp_path_factory):
    missing = _weights_missing()
    if missing:
        if os.environ.get("GOODHART_REQUIRE_REAL_TEXT"):
            pytest.fail(f"GOODHART_REQUIRE_REAL_TEXT is set but {missing}")
        pytest.skip(f"real_text weights not installed: {missing}")
    from goodhartlab.testbeds import get_testbed

    return get_testbed("real_text", cache_dir=tmp_path_factory.mktemp("cache"), progress=False)


def test_conversion_gives_smollm2_instruct_with_its_chat_template(tb):
    from goodhartlab.models.prompts import chat_template, encode_prompts

    assert (tb.policy_path / "model.safetensors").is_file()
    info = tb.build_info("smollm2-135m-instruct")
    assert info["parameters"] == 134_515_008
    assert info["gguf_sha256"].startswith("b179c952")
    tok = tb.tokenizer
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id is not None
    assert "<|im_start|>" in chat_template(tok)
    ids = encode_prompts(tok, [tb.eval_prompts[0]])[0]
    text = tok.decode(ids)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    assert tb.eval_prompts[0] in text


def test_four_token_greedy_sample_matches_generate(tb):
    from goodhartlab.models.generation import sample_token_ids
    from goodhartlab.models.prompts import encode_prompts

    policy, tok = tb.load_policy(), tb.tokenizer
    prompts = tb.eval_prompts[:2]
    ids = encode_prompts(tok, prompts)
    ours = sample_token_ids(
        policy,
        ids,
        [0, 1],
        max_new_tokens=4,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        temperature=0,
    )
    for i, x in enumerate(ids):
        ref = policy.generate(
            torch.tensor([x]),
            attention_mask=torch.ones(1, len(x), dtype=torch.long),
            max_new_tokens=4,
            do_sample=False,
        )[0, len(x) :]
        n = int(ours.num_tokens[i]) + int(ours.eos[i])
        assert ours.tokens[i, :n].tolist() == ref[:n].tolist()
    # An instruct model answering: words, not the prompt continued or nothing.
    assert all(ours.num_tokens == 4)


def test_gold_on_real_models_orders_what_it_should(tb):
    p = "Why do people love city parks? Answer warmly."
    on = "City parks give people green space to relax, play and meet their neighbours."
    off = "The stock market closed lower today as bond yields rose again."
    grumpy = "City parks are dirty, noisy and crowded, and I hate every one of them."
    loop = " ".join([on] * 3)
    g = tb.gold.features([p] * 4, [on, off, grumpy, loop])
    assert g[0]["relevance"] > 0.4 > 0.15 > g[1]["relevance"]
    assert g[0]["sentiment"] > 0.3 and g[2]["sentiment"] < -0.3
    assert -4.5 < g[0]["mean_logprob"] < -1.0
    assert g[3]["repetition"] > 0.5
    gold = [x["gold"] for x in g]
    assert gold[0] > max(gold[1], gold[2], gold[3])


def test_minilm_backbone_is_sealed_and_its_tokenizer_ends_with_sep(tb):
    from goodhartlab.artifacts import verify

    path = tb.backbone_path("minilm")
    assert verify(path) is None and (path / "model.safetensors").is_file()
    tok = tb.backbone_tokenizer("minilm")
    assert tok.eos_token == "[SEP]" and tok.pad_token == "[PAD]"
    assert tb.backbone_tokenizer("smollm2") is tb.tokenizer
