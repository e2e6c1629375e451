"""PAL trained end to end on toy_text pairs of two opposed readers (enthusiast, skeptic): it
learns both better than one pooled Bradley-Terry model, few-shot fitting changes only the new
persona's mixture weights, and the saved model loads and scores as the trained one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from goodhartlab.data import CompletionPair
from goodhartlab.models.tiny import build_reward_model
from goodhartlab.rewards import RewardModel
from goodhartlab.rewards.pal_head import PalHead, select_persona
from goodhartlab.testbeds.toy_text.language import all_prompts, generate_review
from goodhartlab.testbeds.toy_text.personas import label_pairs_by_persona, persona_prompt
from goodhartlab.train import RMTrainConfig, train_reward_model
from goodhartlab.train.rm_pal import evaluate_pal, fit_persona

OPPOSED = ("enthusiast", "skeptic")


def raw_pairs(n: int, seed: int) -> list[CompletionPair]:
    rng = np.random.default_rng(seed)
    prompts = all_prompts()
    out = []
    for i in range(n):
        p = prompts[int(rng.integers(len(prompts)))]
        a, b = " " + generate_review(p, rng), " " + generate_review(p, rng)
        out.append(CompletionPair(prompt=p.text, completion_a=a, completion_b=b, id=i))
    return out


def persona_pairs(n: int, seed: int, personas=OPPOSED, noise: float = 0.0):
    return label_pairs_by_persona(
        raw_pairs(n, seed), [personas[i % len(personas)] for i in range(n)], noise=noise, seed=seed
    )


def test_label_pairs_by_persona_records_the_persona_and_its_gold():
    pairs = persona_pairs(20, seed=0)
    assert [p.meta["persona"] for p in pairs[:4]] == ["enthusiast", "skeptic"] * 2
    assert all(p.gold_chosen >= p.gold_rejected for p in pairs)  # noise 0: argmax labels
    assert {p.meta["gold_name"] for p in pairs} == {
        "toy_text-persona-enthusiast",
        "toy_text-persona-skeptic",
    }


def config(**kw) -> RMTrainConfig:
    base = dict(batch_size=16, lr=1e-3, epochs=3, max_length=64, eval_fraction=0.0)
    return RMTrainConfig(**{**base, **kw})


@pytest.mark.slow
def test_pal_learns_two_opposed_personas_better_than_pooled_bt(tmp_path, tiny_tokenizer):
    torch.set_num_threads(1)
    # The two readers disagree on about half of these pairs (sentiment counts for one, against
    # for the other): a pooled model is near chance on them, PAL learned 0.64 / 0.65.
    train = persona_pairs(1200, seed=0, noise=0.1)
    held_out = persona_pairs(200, seed=1)
    backbone = build_reward_model("small", tiny_tokenizer, seed=0)
    pal = train_reward_model(
        train,
        tiny_tokenizer,
        backbone,
        config(objective="pal", pal_prototypes=2),
        eval_pairs=held_out,
        out_dir=tmp_path / "pal",
        progress=False,
    )
    bt = train_reward_model(
        train, tiny_tokenizer, backbone, config(), eval_pairs=held_out, progress=False
    )
    pal_acc = pal.metrics["accuracy_by_persona"]
    bt_acc = {
        u: evaluate_pal_like_bt(bt.reward_model, [p for p in held_out if p.meta["persona"] == u])
        for u in OPPOSED
    }
    # A pooled model can serve one reader at the other's expense; PAL serves both.
    assert min(pal_acc.values()) > 0.6, pal_acc
    assert pal.metrics["accuracy"] > bt.metrics["accuracy"] + 0.05, (pal_acc, bt_acc)
    weights = pal.pair_inputs["pal"]["mixture_weights"]  # each reader took its own prototype
    assert weights["enthusiast"][0] > 0.7 and weights["skeptic"][1] > 0.7, weights
    assert min(pal_acc.values()) > min(bt_acc.values()), (pal_acc, bt_acc)

    # The saved model is a RewardModel scoring for its active persona; select_persona switches.
    loaded = RewardModel.from_pretrained(tmp_path / "pal")
    assert isinstance(loaded.model.score, PalHead)
    prompts = [p.prompt for p in held_out[:8]]
    completions = [p.chosen for p in held_out[:8]]
    torch.testing.assert_close(loaded(prompts, completions), pal.reward_model(prompts, completions))
    select_persona(loaded, "skeptic")
    select_persona(pal.reward_model, "skeptic")
    torch.testing.assert_close(loaded(prompts, completions), pal.reward_model(prompts, completions))
    assert evaluate_pal(loaded, held_out)["accuracy"] == pytest.approx(pal.metrics["accuracy"])


def evaluate_pal_like_bt(rm, pairs) -> float:
    from goodhartlab.train.rm import evaluate_reward_model

    return evaluate_reward_model(rm, pairs)["accuracy"]


def test_fit_persona_changes_only_the_new_personas_mixture_weights(tiny_tokenizer):
    torch.set_num_threads(1)
    train = persona_pairs(32, seed=0)
    backbone = build_reward_model("small", tiny_tokenizer, seed=0)
    cfg = config(objective="pal", epochs=1, pal_fewshot_steps=50, pal_fewshot_lr=0.1)
    rm = train_reward_model(train, tiny_tokenizer, backbone, cfg, progress=False).reward_model
    head = rm.model.score
    before = {k: v.detach().clone() for k, v in rm.model.state_dict().items()}
    new = persona_pairs(10, seed=3, personas=("minimalist",))
    report = fit_persona(rm, new, "minimalist", cfg)
    after = rm.model.state_dict()
    assert set(after) == set(before)
    for key, value in before.items():
        if key == "score.weight_logits":
            # The seen personas' rows are untouched; one row was appended.
            assert after[key].shape == (3, cfg.pal_prototypes)
            torch.testing.assert_close(after[key][:2], value, rtol=0, atol=0)
        else:
            torch.testing.assert_close(after[key], value, rtol=0, atol=0, msg=key)
    assert head.personas == ["enthusiast", "skeptic", "minimalist"]
    assert report["final_loss"] < report["initial_loss"]
    w = torch.tensor(report["mixture_weights"])
    assert abs(w.sum().item() - 1.0) < 1e-5 and not torch.allclose(w, torch.full_like(w, 0.25))
    select_persona(rm, "minimalist")
    rm(["rate this"], [" fine ."])  # the new persona scores
    with pytest.raises(ValueError, match="not one this PAL model knows"):
        select_persona(rm, "stickler")


def test_fit_persona_prior_pulls_toward_the_population_mean(tiny_tokenizer):
    torch.set_num_threads(1)
    train = persona_pairs(32, seed=0)
    backbone = build_reward_model("small", tiny_tokenizer, seed=0)
    cfg = config(objective="pal", epochs=1, pal_fewshot_steps=100, pal_fewshot_lr=0.1)
    rm = train_reward_model(train, tiny_tokenizer, backbone, cfg, progress=False).reward_model
    head = rm.model.score
    target = head.weight_logits.detach()[:2].mean(0)
    new = persona_pairs(5, seed=3, personas=("minimalist",))
    free = fit_persona(rm, new, "free", cfg)
    tied = fit_persona(
        rm, new, "tied", cfg.model_copy(update={"pal_fewshot_prior": 1e6}),
        population=["enthusiast", "skeptic"],
    )  # fmt: skip
    assert free["prior_strength"] == 0.0 and tied["prior_strength"] == 1e6
    # A very strong prior keeps θ at the seen personas' mean logits; none lets it move away.
    rows = head.weight_logits.detach()
    torch.testing.assert_close(rows[head.index("tied")], target, atol=1e-3, rtol=0)
    assert (rows[head.index("free")] - target).abs().max() > 1e-2
    with pytest.raises(ValueError, match="not one this PAL model knows"):
        fit_persona(rm, new, "x", cfg, population=["stickler"])


def test_a_pal_model_scores_each_prompt_for_the_persona_it_names(tmp_path, tiny_tokenizer):
    torch.set_num_threads(1)
    train = persona_pairs(32, seed=0)
    backbone = build_reward_model("small", tiny_tokenizer, seed=0)
    cfg = config(objective="pal", epochs=1)
    trained = train_reward_model(
        train, tiny_tokenizer, backbone, cfg, out_dir=tmp_path / "pal", progress=False
    )
    rm = trained.reward_model
    head = rm.model.score
    assert head.personas == ["enthusiast", "skeptic"] and head.active == "enthusiast"
    prompt, completion = train[0].prompt, train[0].chosen

    def for_persona(model, u):  # the plain prompt, scored with the persona selected
        active = model.model.score.active
        select_persona(model, u)
        r = model([prompt], [completion])[0]
        select_persona(model, active)
        return r

    texts = [persona_prompt("skeptic", prompt), persona_prompt("enthusiast", prompt), prompt]
    for model in (rm, RewardModel.from_pretrained(tmp_path / "pal")):
        r = model(texts, [completion] * 3)
        expected = torch.stack([for_persona(model, "skeptic"), for_persona(model, "enthusiast")])
        torch.testing.assert_close(r[:2], expected)
        # A prompt naming no persona: the active one (enthusiast), which stays active.
        torch.testing.assert_close(r[2], expected[1])
        assert model.model.score.active == "enthusiast"
        assert abs(r[0] - r[1]) > 1e-6  # the two personas' scores differ
    # The latents are those of the prompt without its reader's preamble.
    _, h = rm.score_with_latents(texts, [completion] * 3)
    torch.testing.assert_close(h[0], h[2])
    torch.testing.assert_close(h[1], h[2])
    with pytest.raises(ValueError, match="not one this PAL model knows"):
        rm([persona_prompt("stickler", prompt)], [completion])
    # Training on a persona prompt for another reader than the pair's is refused.
    wrong = [p.model_copy(update={"prompt": persona_prompt("skeptic", p.prompt)}) for p in train]
    with pytest.raises(ValueError, match="prompt is written for 'skeptic'"):
        train_reward_model(wrong, tiny_tokenizer, backbone, cfg, progress=False)


def test_pal_refuses_pairs_without_a_persona(tiny_tokenizer):
    pairs = persona_pairs(8, seed=0)
    pairs[3].meta.pop("persona")
    backbone = build_reward_model("small", tiny_tokenizer, seed=0)
    with pytest.raises(ValueError, match=r"pair 3 .* no meta\['persona'\]"):
        train_reward_model(pairs, tiny_tokenizer, backbone, config(objective="pal"), progress=False)
