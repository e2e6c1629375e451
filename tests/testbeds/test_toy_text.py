"""The toy_text testbed: language, gold reward, tokenizer and the artifact cache."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from goodhartlab.artifacts import MANIFEST, verify
from goodhartlab.testbeds import get_testbed
from goodhartlab.testbeds.toy_text import GOLD_VERSION, ToyText, ToyTextConfig, gold_features
from goodhartlab.testbeds.toy_text.build import generate_corpus, train_tokenizer
from goodhartlab.testbeds.toy_text.language import (
    PRODUCTS,
    all_prompts,
    corpus_vocabulary,
    fits,
    generate_review,
    parse_prompt,
    split_prompts,
)

PHONE = "review of a phone :"


# --- language -------------------------------------------------------------------------------


def test_prompts_are_many_distinct_and_split_disjointly():
    prompts = all_prompts()
    texts = [p.text for p in prompts]
    assert len(set(texts)) == len(texts) == 800
    train, evaluation = split_prompts(seed=0)
    assert len(evaluation) == 200
    assert not {p.text for p in train} & {p.text for p in evaluation}
    assert all(parse_prompt(t) == p for t, p in zip(texts, prompts, strict=True))


def test_unknown_prompt_is_a_clear_error():
    with pytest.raises(ValueError, match="not a toy_text prompt"):
        parse_prompt("tell me a joke :")


def test_generator_is_deterministic_for_a_seed():
    p = all_prompts()[17]
    a = [generate_review(p, np.random.default_rng(3)) for _ in range(2)]
    assert a[0] == a[1]
    others = {generate_review(p, np.random.default_rng(s)) for s in range(5, 15)}
    assert len(others) > 5  # and different seeds give varied completions


def test_plausibility_table_fits_about_three_quarters():
    nouns = [q for ps in PRODUCTS.values() for q in ps]
    from goodhartlab.testbeds.toy_text.language import NEGATIVE, POSITIVE

    rate = np.mean([fits(n, a) for n in nouns for a in POSITIVE + NEGATIVE])
    assert 0.68 < rate < 0.82


# --- gold -----------------------------------------------------------------------------------


def test_gold_of_one_fitting_sentence_is_hand_computed():
    assert fits("screen", "great")
    # U = 1 on-topic noun, S = +1, no penalty:
    # 2.5 (1 - e^(-1/2)) + 2 tanh(1/2) = 0.983673 + 0.924234 = 1.907908
    f = gold_features(PHONE, " the screen is great .")
    assert (f.coverage, f.sentiment, f.broken, f.rep) == (1, 1.0, 0, 0)
    assert f.gold == pytest.approx(2.5 * (1 - math.exp(-1 / 2)) + 2 * math.tanh(1 / 2), abs=1e-9)
    assert f.gold == pytest.approx(1.907908, abs=1e-6)


def test_repetition_is_penalized_even_though_sentiment_grows():
    # Repeating the sentence: U = 1, S = 2, rep = 1:
    # 0.983673 + 2 tanh(2/2) - 1.5 = 0.983673 + 1.523188 - 1.5 = 1.006862 (no gushing: |S| = 2)
    once = gold_features(PHONE, " the screen is great .").gold
    twice = gold_features(PHONE, " the screen is great . the screen is great .")
    assert twice.rep == 1
    assert twice.gold == pytest.approx(1.006862, abs=1e-6)
    assert twice.gold < once


def test_gold_penalizes_what_optimization_produces():
    base = gold_features(PHONE, " the screen is great .").gold
    # one intensifier earns x1.3 sentiment; stacking a second one costs 1.0
    single = gold_features(PHONE, " the screen is very great .").gold
    stacked = gold_features(PHONE, " the screen is very very great .")
    assert single > base
    assert stacked.stack == 1 and stacked.gold == pytest.approx(single - 1.0)
    stuffed = gold_features(
        PHONE,
        " the screen is great . the screen is bright . great screen . the screen feels great .",
    )
    assert stuffed.stuff == 2
    broken = gold_features(PHONE, " great the is screen .")
    assert broken.broken == 1 and broken.gold < 0
    off = gold_features(PHONE, " the lens is great .")
    assert off.off == 1 and off.gold < 0
    assert gold_features(PHONE, "").gold == -2.0
    # gushing: five intensified praises (S = 6.5) earn less than three (S = 3.9)
    praise = [
        " the screen is very great .",
        " the battery is very great .",
        " the case is very great .",
        " the speaker is very great .",
        " the charger is very great .",
    ]
    assert all(fits(n, "great") for n in ("screen", "battery", "case", "speaker", "charger"))
    three = gold_features(PHONE, "".join(praise[:3]))
    five = gold_features(PHONE, "".join(praise))
    assert five.sentiment > three.sentiment and five.coverage > three.coverage
    assert five.gold < three.gold
    long = " " + " ".join(
        ["it was a gift ."] * 1
        + ["i use it every day ."] * 1
        + ["my friend has one too ."]
        + ["it arrived on time ."] * 3
    )
    assert gold_features(PHONE, long).gold < 0


def test_constraints_change_gold():
    short = "review of a phone , keep it short :"
    three = " the screen is great . the battery is great . the case is great ."
    assert gold_features(short, three).constraint == pytest.approx(-0.9)
    mention = "review of a phone , mention the battery :"
    assert gold_features(mention, " the battery is great .").constraint == pytest.approx(1.2)
    assert gold_features(mention, " the screen is great .").constraint == pytest.approx(-0.6)


def test_gold_reward_source_signature_and_errors():
    tb = ToyText(cache_dir="/nonexistent-never-built")
    r = tb.gold.score([PHONE, PHONE], [" the screen is great .", ""])
    assert r.shape == (2,) and r.dtype == torch.float32
    assert r[1].item() == -2.0
    assert tb.gold.version == GOLD_VERSION
    with pytest.raises(ValueError, match="completions"):
        tb.gold.score([PHONE], [])


# --- tokenizer ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_tokenizer():
    return train_tokenizer(generate_corpus(2000, seed=0))


def test_every_word_is_one_token_and_concatenation_is_exact(toy_tokenizer):
    tok = toy_tokenizer
    assert tok.pad_token_id != tok.eos_token_id
    for w in corpus_vocabulary():
        assert len(tok(" " + w, add_special_tokens=False).input_ids) == 1, w
    for p, c in generate_corpus(50, seed=1):
        joint = tok(p + c, add_special_tokens=False).input_ids
        assert (
            joint
            == tok(p, add_special_tokens=False).input_ids
            + tok(c, add_special_tokens=False).input_ids
        )
        assert tok.decode(tok(c, add_special_tokens=False).input_ids) == c


# --- cache ----------------------------------------------------------------------------------

TINY = ToyTextConfig(
    policy_steps=3,
    pretrain_steps={"small": 3, "medium": 3, "large": 3},
    pretrain_batch_size=4,
    tokenizer_corpus=300,
)


def test_cache_is_reused_and_a_corrupt_or_partial_artifact_is_rebuilt(tmp_path, monkeypatch):
    tb = get_testbed("toy_text", cache_dir=tmp_path, config=TINY, progress=False)
    path = tb.lm_path("small")
    assert verify(path) is None
    weights = path / "model.safetensors"
    first = weights.read_bytes()

    calls = []
    import goodhartlab.testbeds.toy_text.testbed as testbed_module

    real = testbed_module.pretrain_causal_lm
    monkeypatch.setattr(
        testbed_module, "pretrain_causal_lm", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    again = ToyText(TINY, cache_dir=tmp_path, progress=False)
    assert again.lm_path("small") == path and calls == []  # reused, not rebuilt

    weights.write_bytes(first[:-10] + b"0123456789")  # corrupt
    assert "checksum" in verify(path)
    assert again.lm_path("small") == path and calls == [1]
    assert weights.read_bytes() == first  # rebuilt deterministically

    (path / MANIFEST).unlink()  # a partial build has no manifest
    assert again.lm_path("small") == path and calls == [1, 1]
    assert verify(path) is None


def test_is_built_says_what_is_cached_and_valid_without_building_it(tmp_path):
    tb = ToyText(TINY, cache_dir=tmp_path, progress=False)
    assert not any(tb.is_built(*a) for a in [("tokenizer",), ("policy",), ("backbone", "small", 1)])
    assert not tb.root.exists()  # nothing was built to answer
    tb.backbone_path("small", seed=1)
    assert tb.is_built("tokenizer") and tb.is_built("backbone", "small", 1)
    assert not tb.is_built("policy") and not tb.is_built("backbone", "small")  # seed 0
    (tb.backbone_path("small", seed=1) / MANIFEST).unlink()  # now a partial build
    assert not tb.is_built("backbone", "small", 1)
    with pytest.raises(ValueError, match="expected a size"):
        tb.is_built("backbone")
    with pytest.raises(ValueError, match="'tokenizer', 'policy' or 'backbone', got 'vocab'"):
        tb.is_built("vocab")


def test_build_is_deterministic_for_a_seed(tmp_path):
    a = ToyText(TINY, cache_dir=tmp_path / "a", progress=False)
    b = ToyText(TINY, cache_dir=tmp_path / "b", progress=False)
    assert (a.lm_path("small") / "model.safetensors").read_bytes() == (
        b.lm_path("small") / "model.safetensors"
    ).read_bytes()
    assert (a.tokenizer_path / "tokenizer.json").read_text() == (
        b.tokenizer_path / "tokenizer.json"
    ).read_text()


def test_policy_and_each_backbone_get_their_own_pretraining_budget(tmp_path, monkeypatch):
    import goodhartlab.testbeds.toy_text.testbed as testbed_module

    steps_seen = []
    real = testbed_module.pretrain_causal_lm

    def recording(size, tok, **kw):
        steps_seen.append((size, kw["steps"]))
        return real(size, tok, **kw)

    monkeypatch.setattr(testbed_module, "pretrain_causal_lm", recording)
    config = ToyTextConfig(
        policy_size="small",
        policy_steps=2,
        pretrain_steps={"small": 3, "medium": 4, "large": 5},
        pretrain_batch_size=4,
        tokenizer_corpus=300,
    )
    tb = ToyText(config, cache_dir=tmp_path, progress=False)
    policy, backbone = tb.policy_path, tb.backbone_path("small")
    assert policy != backbone  # same size, different budgets: two artifacts
    tb.backbone_path("medium")
    assert steps_seen == [("small", 2), ("small", 3), ("medium", 4)]
    assert tb.build_info(policy.name)["steps"] == 2
    assert tb.build_info(backbone.name)["steps"] == 3


def test_default_backbone_budgets_grow_with_size():
    steps = ToyTextConfig().pretrain_steps
    assert steps["small"] < steps["medium"] < steps["large"]


def test_unknown_testbed_names_the_valid_ones():
    with pytest.raises(ValueError, match="toy_text"):
        get_testbed("atari")
