"""Domain-knowledge features on toy_text (testbeds.toy_text.features): a hand-computed
vector, the gold is never imported, and a feature reward model that trains, saves and
reloads with its feature layer (``RewardModel.from_pretrained`` scores identically)."""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from goodhartlab.data import PreferencePair
from goodhartlab.models.tiny import build_reward_model
from goodhartlab.registry import RM_FEATURES
from goodhartlab.rewards import RewardModel
from goodhartlab.rewards.feature_head import FeatureHead, compute_features
from goodhartlab.testbeds.toy_text.features import FEATURE_NAMES, toy_text_domain, well_formed
from goodhartlab.train import RMTrainConfig, train_reward_model
from goodhartlab.train.rm_features import train_feature_only

PROMPT = "rate this phone , mention the battery :"
# 5 sentences: a repeat with stacked intensifiers, a negative one about the asked part, a
# verb sentence about a camera's lens, an unterminated broken fragment.
COMPLETION = (
    " the screen is very very great . the screen is very very great . cheap battery ."
    " i love the lens . battery the"
)


def _named(prompt: str, completion: str) -> dict[str, float]:
    return dict(zip(FEATURE_NAMES, toy_text_domain(prompt, completion), strict=True))


def test_hand_computed_feature_vector():
    assert RM_FEATURES["toy_text_domain"] is toy_text_domain
    assert tuple(RM_FEATURES.entry("toy_text_domain").meta["names"]) == FEATURE_NAMES
    got = _named(PROMPT, COMPLETION)
    assert got == {
        "own_parts": 2,  # screen, battery
        "generic_nouns": 0,
        "off_parts": 1,  # lens (a camera's)
        "sentences": 5,
        "over_budget": 1,  # 5 - 4 (no "keep it short")
        "repeated": 1,
        "top_mentions": 2,  # screen x2, battery x2
        "words": 24,
        "intensifiers": 4,
        "stacked": 2,  # one extra "very" in each of two sentences
        "positive": 3,  # great, great, love
        "negative": 1,  # cheap
        "mixed_nouns": 0,
        "malformed": 1,  # "battery the"
        "asked_part": 1,  # battery is mentioned
        "detailed_parts": 0,
    }
    short = _named("review of a phone , keep it short :", COMPLETION)
    assert short["over_budget"] == 3 and short["asked_part"] == 0
    mixed = _named(
        "review of a phone , be detailed :", " the case is solid . the case feels flimsy ."
    )
    assert mixed["mixed_nouns"] == 1 and mixed["detailed_parts"] == 1
    missing = toy_text_domain("rate this phone , mention the case :", COMPLETION)
    assert missing[FEATURE_NAMES.index("asked_part")] == -1
    assert well_formed(("i", "hate", "the", "price")) and well_formed(("so", "quiet", "fan"))
    assert not well_formed(("the", "screen", "is")) and not well_formed(("great",))


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_features_never_import_the_gold():
    """Neither the feature module nor anything of ours it imports (transitively) is the
    gold or its components."""
    start = "goodhartlab.testbeds.toy_text.features"
    todo, seen = [start], set()
    while todo:
        name = todo.pop()
        if name in seen or not name.startswith("goodhartlab"):
            continue
        seen.add(name)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            continue
        todo.extend(_imports(Path(spec.origin)))
    assert "goodhartlab.testbeds.toy_text.tools" in seen
    forbidden = {"gold", "components", "checks", "grounded", "reward_bench"}
    leaked = {m for m in seen if m.rsplit(".", 1)[-1] in forbidden}
    assert not leaked, leaked
    # nor the gold's hidden plausibility table, which lives in the public language module
    tree = ast.parse(Path(importlib.util.find_spec(start).origin).read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert "fits" not in names and "gold_features" not in names


def _pairs() -> list[PreferencePair]:
    chosen = [" the screen is great . the battery is solid .", " i love the battery ."]
    rejected = [" the screen is great . the screen is great .", " the lens is dull ."]
    prompts = ["review of a phone :", "review of a phone , keep it short :"]
    return [
        PreferencePair(prompt=p, chosen=c, rejected=r, id=i)
        for i, (p, c, r) in enumerate(zip(prompts * 4, chosen * 4, rejected * 4, strict=True))
    ]


def test_feature_model_trains_saves_and_reloads(tmp_path, tiny_tokenizer):
    pairs = _pairs()
    config = RMTrainConfig(
        features="toy_text_domain", batch_size=4, epochs=2, lr=1e-3, max_length=128,
        eval_fraction=0.0,
    )  # fmt: skip
    backbone = build_reward_model("small", tiny_tokenizer, seed=0)
    result = train_reward_model(
        pairs, tiny_tokenizer, backbone, config, eval_pairs=[], out_dir=tmp_path / "rm",
        progress=False,
    )  # fmt: skip
    rm = result.reward_model
    head = rm.feature_head
    assert isinstance(head, FeatureHead) and head.weight.abs().sum() > 0  # it learned
    prompts = [p.prompt for p in pairs] * 2
    completions = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    scores = rm.score(prompts, completions)
    # the score is the backbone's plus the feature term
    plain = RewardModel(rm.model, rm.tokenizer, max_length=128).score(prompts, completions)
    phi = compute_features("toy_text_domain", prompts, completions)
    with torch.no_grad():
        torch.testing.assert_close(scores, head(plain, phi))
    info = json.loads((tmp_path / "rm" / "goodhart_rm.json").read_text())
    assert info["feature_head"]["features"] == "toy_text_domain"
    assert len(info["feature_head"]["weight"]) == len(FEATURE_NAMES)
    loaded = RewardModel.from_pretrained(tmp_path / "rm")
    assert loaded.feature_head is not None and "features=" in repr(loaded)
    torch.testing.assert_close(loaded.score(prompts, completions), scores, rtol=0, atol=0)
    r, _h = loaded.score_with_latents(prompts, completions)
    torch.testing.assert_close(r, scores)


def test_num_parameters_counts_the_feature_layer(tmp_path, tiny_tokenizer):
    # Tiny "small" Llama RM (hidden 48, 2 layers, MLP 128, tied embeddings, no biases):
    # embeddings V·48; per layer q, k, v, o 4·48², MLP 3·48·128, two RMSNorms 2·48; final norm
    # 48; score head 48 (no bias). The feature layer adds w (one per feature) and b.
    per_layer = 4 * 48 * 48 + 3 * 48 * 128 + 2 * 48
    backbone_count = len(tiny_tokenizer) * 48 + 2 * per_layer + 48 + 48
    feature_count = len(FEATURE_NAMES) + 1
    assert (per_layer, feature_count) == (27744, 17)
    backbone = build_reward_model("small", tiny_tokenizer, seed=0)
    fast = dict(batch_size=8, epochs=1, max_length=64, eval_fraction=0.0)
    plain = train_reward_model(
        _pairs(), tiny_tokenizer, backbone, RMTrainConfig(**fast), eval_pairs=[], progress=False
    )
    assert plain.num_parameters == backbone_count
    result = train_reward_model(
        _pairs(), tiny_tokenizer, backbone, RMTrainConfig(features="toy_text_domain", **fast),
        eval_pairs=[], out_dir=tmp_path / "rm", progress=False,
    )  # fmt: skip
    assert result.num_parameters == backbone_count + feature_count
    info = json.loads((tmp_path / "rm" / "goodhart_rm.json").read_text())
    assert info["num_parameters"] == backbone_count + feature_count


def test_feature_only_baseline_learns_the_pairs():
    pairs = _pairs()
    rm = train_feature_only(pairs, "toy_text_domain", steps=200)
    r = rm([p.prompt for p in pairs] * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs])
    assert (r[: len(pairs)] > r[len(pairs) :]).all()


def test_features_refused_with_own_loop_objective(tiny_tokenizer):
    config = RMTrainConfig(features="toy_text_domain", objective="pal", eval_fraction=0.0)
    backbone = build_reward_model("small", tiny_tokenizer, seed=0)
    with pytest.raises(ValueError, match="features"):
        train_reward_model(_pairs(), tiny_tokenizer, backbone, config, eval_pairs=[],
                           progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="unknown reward-model feature set"):
        RMTrainConfig(features="nope")


def test_no_budget_ablation_drops_one_feature():
    from goodhartlab.testbeds.toy_text.features import NO_BUDGET_NAMES, toy_text_domain_no_budget

    full = _named(PROMPT, COMPLETION)
    got = dict(zip(NO_BUDGET_NAMES, toy_text_domain_no_budget(PROMPT, COMPLETION), strict=True))
    assert "over_budget" not in got and got == {k: v for k, v in full.items() if k != "over_budget"}
    phi = compute_features("toy_text_domain_no_budget", [PROMPT], [COMPLETION])
    assert phi.shape == (1, len(FEATURE_NAMES) - 1)
