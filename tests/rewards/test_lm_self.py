"""rewards.lm_self on a tiny Llama with a chat template: each score equals a naive per-item
computation (one unpadded sequence at a time, pieces tokenized as the source documents)."""

from __future__ import annotations

import copy

import pytest
import torch

from goodhartlab.models.tiny import build_causal_lm
from goodhartlab.rewards import REWARD_SOURCES
from goodhartlab.rewards.lm_self import (
    NEGATIVE_FOLLOWUPS,
    POSITIVE_FOLLOWUPS,
    REFERENCE_QUESTION,
    LMConfidence,
    LMEndogenous,
    LMFollowupLikelihood,
    LMReferenceLikelihood,
    conversation_tail,
    real_text_topic,
)

TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
PROMPTS = ["review of a phone:", "review of a phone:", "review of a book: the", "a film:", "q:"]
COMPLETIONS = [" good phone", " bad bad phone, the screen", "", " a great film and a", " ok"]
REFS = {"review of a phone:": "a phone", "review of a book: the": "a book", "a film:": "film",
        "q:": "nothing"}  # fmt: skip


@pytest.fixture(scope="module")
def chat_tok(tiny_tokenizer):
    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = TEMPLATE
    return tok


@pytest.fixture(scope="module")
def lm(chat_tok):
    return build_causal_lm("small", chat_tok, seed=0).eval()


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def logits_of(model, seq):
    with torch.no_grad():
        return model(input_ids=torch.tensor([seq])).logits[0].double()


def prefix(tok, p, c):
    return ids(tok, f"user: {p}\nassistant:") + ids(tok, c)


def test_conversation_tail_cuts_the_template_at_the_turns(chat_tok):
    assert conversation_tail(chat_tok, answer=False) == ("\nuser: ",)
    assert conversation_tail(chat_tok, answer=True) == ("\nuser: ", "\nassistant: ")


def test_confidence_and_endogenous_equal_a_naive_per_item_computation(lm, chat_tok):
    eos = chat_tok.eos_token_id
    conf = LMConfidence(lm, chat_tok, batch_size=2).score(PROMPTS, COMPLETIONS)
    endo = LMEndogenous(lm, chat_tok, batch_size=3, alpha=0.7).score(PROMPTS, COMPLETIONS)
    assert conf.dtype == torch.float32 and conf.shape == (5,)
    for i, (p, c) in enumerate(zip(PROMPTS, COMPLETIONS, strict=True)):
        head = ids(chat_tok, f"user: {p}\nassistant:")
        seq = head + ids(chat_tok, c) + [eos]
        z = logits_of(lm, seq)
        lp = torch.log_softmax(z, -1)
        span = range(len(head), len(seq))
        probs = [lp[t - 1, seq[t]].exp().item() for t in span]
        assert conf[i].item() == pytest.approx(sum(probs) / len(probs), rel=1e-4)
        v = [0.7 * torch.logsumexp(z[t] / 0.7, -1).item() for t in range(len(seq))]
        r = sum(z[t - 1, seq[t]].item() - (v[t] if t < len(seq) - 1 else 0.0) for t in span)
        assert endo[i].item() == pytest.approx(r, rel=1e-4, abs=1e-4)


def test_reference_likelihood_equals_a_naive_per_item_computation(lm, chat_tok):
    got = LMReferenceLikelihood(lm, chat_tok, references=REFS, batch_size=2).score(
        PROMPTS, COMPLETIONS
    )
    mean = LMReferenceLikelihood(
        lm, chat_tok, references=REFS.__getitem__, reduction="mean", batch_size=4
    ).score(PROMPTS, COMPLETIONS)
    for i, (p, c) in enumerate(zip(PROMPTS, COMPLETIONS, strict=True)):
        head = (
            prefix(chat_tok, p, c) + ids(chat_tok, "\nuser: ") + ids(chat_tok, REFERENCE_QUESTION)
            + ids(chat_tok, "\nassistant: ")
        )  # fmt: skip
        ref = ids(chat_tok, REFS[p])
        lp = torch.log_softmax(logits_of(lm, head + ref), -1)
        total = sum(lp[len(head) + k - 1, t].item() for k, t in enumerate(ref))
        assert got[i].item() == pytest.approx(total, rel=1e-4)
        assert mean[i].item() == pytest.approx(total / len(ref), rel=1e-4)


def test_followup_likelihood_equals_a_naive_per_item_computation(lm, chat_tok):
    got = LMFollowupLikelihood(lm, chat_tok, batch_size=2).score(PROMPTS, COMPLETIONS)
    pos_only = LMFollowupLikelihood(lm, chat_tok, negative=()).score(PROMPTS, COMPLETIONS)

    def ell(p, c, f):
        head = prefix(chat_tok, p, c) + ids(chat_tok, "\nuser: ")
        fi = ids(chat_tok, f)
        lp = torch.log_softmax(logits_of(lm, head + fi), -1)
        return sum(lp[len(head) + k - 1, t].item() for k, t in enumerate(fi)) / len(fi)

    for i, (p, c) in enumerate(zip(PROMPTS, COMPLETIONS, strict=True)):
        pos = sum(ell(p, c, f) for f in POSITIVE_FOLLOWUPS) / len(POSITIVE_FOLLOWUPS)
        neg = sum(ell(p, c, f) for f in NEGATIVE_FOLLOWUPS) / len(NEGATIVE_FOLLOWUPS)
        assert got[i].item() == pytest.approx(pos - neg, rel=1e-4, abs=1e-5)
        assert pos_only[i].item() == pytest.approx(pos, rel=1e-4)


def test_a_tokenizer_without_template_gets_the_raw_layout(lm, tiny_tokenizer):
    src = LMFollowupLikelihood(lm, tiny_tokenizer, positive=("thanks",), negative=())
    fi = ids(tiny_tokenizer, "thanks")
    head = (
        ids(tiny_tokenizer, "q:") + ids(tiny_tokenizer, " ok") + ids(tiny_tokenizer, "\n\nUser: ")
    )
    lp = torch.log_softmax(logits_of(lm, head + fi), -1)
    want = sum(lp[len(head) + k - 1, t].item() for k, t in enumerate(fi)) / len(fi)
    assert src.score(["q:"], [" ok"]).item() == pytest.approx(want, rel=1e-4)


def test_bad_input_gives_a_clear_error(lm, chat_tok):
    src = LMConfidence(lm, chat_tok)
    with pytest.raises(ValueError, match="same length"):
        src.score(["a:", "b:"], [" x"])
    assert src.score([], []).shape == (0,)
    with pytest.raises(KeyError, match="no reference"):
        LMReferenceLikelihood(lm, chat_tok, references={"a:": "x"}).score(["b:"], [" x"])
    with pytest.raises(ValueError, match="reduction"):
        LMReferenceLikelihood(lm, chat_tok, references=REFS, reduction="max")


def test_default_reference_is_the_real_text_topic():
    assert real_text_topic("Explain black holes to a curious beginner.") == "black holes"
    assert real_text_topic("my own prompt") == "my own prompt"


def test_registered_sources_load_a_causal_lm_folder(lm, chat_tok, tmp_path):
    lm.save_pretrained(tmp_path)
    chat_tok.save_pretrained(tmp_path)
    direct = LMEndogenous(lm, chat_tok).score(PROMPTS[:2], COMPLETIONS[:2])
    for name in ("lm_confidence", "lm_reference_likelihood", "lm_followup_likelihood"):
        assert name in REWARD_SOURCES
    src = REWARD_SOURCES["lm_endogenous"](str(tmp_path), batch_size=1)
    assert torch.allclose(src.score(PROMPTS[:2], COMPLETIONS[:2]), direct, atol=1e-4)
    ref = REWARD_SOURCES["lm_reference_likelihood"](str(tmp_path), references=REFS)
    assert ref.score(PROMPTS[:1], COMPLETIONS[:1]).shape == (1,)


def test_full_logits_path_agrees_with_the_head_on_span_path(lm, chat_tok, monkeypatch):
    from goodhartlab.rewards import lm_self

    fast = LMEndogenous(lm, chat_tok, batch_size=2).score(PROMPTS, COMPLETIONS)
    monkeypatch.setattr(lm_self, "_head_on_span", lambda model: False)
    full = LMEndogenous(lm, chat_tok, batch_size=2).score(PROMPTS, COMPLETIONS)
    assert torch.allclose(fast, full, atol=1e-4)
