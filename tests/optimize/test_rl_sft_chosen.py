"""The SFT regularizer on chosen data (RLConfig.sft_source 'chosen'; Liu et al. 2024, arXiv
2405.16436, RPO's SFT term in RL): the step's targets are chosen completions of preference
pairs, drawn per (seed, step); the loss adds η × exactly their NLL; a resumed run equals an
uninterrupted one; bad settings fail naming the field."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError
from test_rl_mitigations import E_COUNT, EVAL_PROMPTS, PROMPTS, TINY, WORDS

from goodhartlab.data import PreferencePair, write_pairs
from goodhartlab.measure.evaluate import sample_rollouts
from goodhartlab.models.prompts import encode_prompts
from goodhartlab.models.tiny import build_causal_lm
from goodhartlab.optimize.rl import (
    ChosenTargets,
    RLConfig,
    _build_run,
    _Experience,
    _loss,
    _sft_samples,
    run_rl,
)
from goodhartlab.optimize.rundir import derived_seed, read_jsonl

# PROMPTS[0] has three chosen completions, PROMPTS[1] one, PROMPTS[2..5] none.
PAIRS = [
    PreferencePair(prompt=PROMPTS[0], chosen=" the screen is great .", rejected=" bad"),
    PreferencePair(prompt=PROMPTS[0], chosen=" great phone", rejected=" slow"),
    PreferencePair(prompt=PROMPTS[1], chosen=" a fine laptop .", rejected=" old"),
    PreferencePair(prompt=PROMPTS[0], chosen=" nice", rejected=" loud"),
]
CHOSEN = dict(sft_coef=0.5, sft_samples=2, sft_source="chosen")


def test_each_prompt_gets_its_own_chosen_completions_else_any_pairs():
    targets = ChosenTargets.from_pairs(PAIRS)
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[2]]
    rows = targets.draw(prompts, 2, seed=7)
    assert len(rows) == 6 and rows == targets.draw(prompts, 2, seed=7)  # a function of the seed
    own = {(p.prompt, p.chosen) for p in PAIRS}
    assert set(rows) <= own  # a chosen completion is a target for its own prompt only
    # PROMPTS[0]: two of its three, without replacement; PROMPTS[1]: its one, twice.
    assert [p for p, _ in rows[:2]] == [PROMPTS[0]] * 2 and rows[0] != rows[1]
    assert rows[2:4] == [(PROMPTS[1], " a fine laptop .")] * 2
    # PROMPTS[2] has no pair: two distinct pairs of any prompt stand in for it.
    assert rows[4] != rows[5]
    # Another seed draws differently somewhere over a few seeds (4 · 3 · 1 · 12 choices).
    assert len({tuple(targets.draw(prompts, 2, seed=s)) for s in range(6)}) > 1


def test_the_sft_term_is_eta_times_the_nll_of_the_steps_chosen_completions(tiny_tokenizer):
    tok = tiny_tokenizer
    cfg = RLConfig(**{**TINY, **CHOSEN, "sft_coef": 0.7, "prompts_per_step": 3, "seed": 3})
    policy = build_causal_lm("small", tok, seed=0)
    reference = build_causal_lm("small", tok, seed=0).eval().requires_grad_(False)
    device = torch.device("cpu")
    targets = ChosenTargets.from_pairs(PAIRS)
    run = _build_run(cfg, policy, reference, tok, E_COUNT, PROMPTS, device, targets)
    prompts = [PROMPTS[2], PROMPTS[0], PROMPTS[1]]
    step = 5
    sft = _sft_samples(run, prompts, step)
    # The rows are exactly the draw seeded by (seed, "sft", step), prompt-major.
    rows = targets.draw(prompts, 2, derived_seed(3, "sft", step))
    assert sft.completions == [c for _, c in rows]

    # NLL_i = −(1/|y_i|) Σ_t log π(y_i,t | x_i, y_<t) over completion + EOS, each row by its
    # own forward pass (no padding), averaged over rows.
    nll = []
    for prompt, chosen in rows:
        x = encode_prompts(tok, [prompt])[0]
        y = [*tok(chosen, add_special_tokens=False)["input_ids"], tok.eos_token_id]
        with torch.no_grad():
            logits = policy(input_ids=torch.tensor([x + y])).logits[0].float()
        logp = torch.log_softmax(logits[len(x) - 1 : -1], dim=-1)
        nll.append(-logp[torch.arange(len(y)), torch.tensor(y)].sum().item() / len(y))
    expected = sum(nll) / len(nll)

    rollouts = sample_rollouts(
        policy, tok, prompts, 2, max_new_tokens=4, generator=torch.Generator().manual_seed(0)
    )
    exp = _Experience(rollouts, rollouts.logp, None, torch.randn(6), None, None)
    with torch.no_grad():
        with_sft, stats = _loss(run, exp, sft)
        without, _ = _loss(run, exp, None)
    assert stats["sft_nll"].item() == pytest.approx(expected, rel=1e-5)
    assert (with_sft - without).item() == pytest.approx(0.7 * expected, rel=1e-4)


def _run(tmp_path, tokenizer, name, steps, pairs=PAIRS, resume=False, **overrides):
    return run_rl(
        tmp_path / name,
        policy=build_causal_lm("small", tokenizer, seed=0),
        tokenizer=tokenizer,
        reward=E_COUNT,
        gold=WORDS,
        train_prompts=PROMPTS,
        eval_prompts=EVAL_PROMPTS,
        config=RLConfig(**{**TINY, **CHOSEN, "steps": steps, **overrides}),
        resume=resume,
        sft_pairs=pairs,
    )


def test_a_resumed_chosen_sft_run_equals_an_uninterrupted_one(tmp_path, tiny_tokenizer):
    settings = dict(kl_coef=0.05, checkpoint_every=2, eval_every=2)
    straight = _run(tmp_path, tiny_tokenizer, "straight", 4, **settings)
    _run(tmp_path, tiny_tokenizer, "resumed", 2, **settings)
    # Other pairs are another run: refused on resume.
    with pytest.raises(ValueError, match=r"identity\.sft_pairs"):
        _run(tmp_path, tiny_tokenizer, "resumed", 4, pairs=PAIRS[:3], resume=True, **settings)
    resumed = _run(tmp_path, tiny_tokenizer, "resumed", 4, resume=True, **settings)
    assert resumed.metrics == straight.metrics
    timing = ("sample_s", "step_s")
    train = {
        name: [
            {k: v for k, v in r.items() if k not in timing}
            for r in read_jsonl(tmp_path / name / "train.jsonl")
        ]
        for name in ("straight", "resumed")
    }
    assert train["resumed"] == train["straight"]
    for r in train["straight"]:
        assert math.isfinite(r["sft_nll"]) and r["sft_nll"] > 0
        # B = 4 of the 6 prompts, 2 of which have pairs: 0 to 2 of 4 have their own targets.
        assert r["sft_own_prompts"] in (0.0, 0.25, 0.5)
    for k, v in straight.policy.state_dict().items():
        assert torch.equal(v, resumed.policy.state_dict()[k]), k


def test_chosen_sft_settings_fail_naming_the_field(tmp_path, tiny_tokenizer):
    with pytest.raises(ValidationError, match=r"sft_source: 'chosen'.*sft_coef = 0"):
        RLConfig(sft_source="chosen")
    with pytest.raises(ValueError, match=r"sft_pairs: sft_source 'chosen'.*none given"):
        _run(tmp_path, tiny_tokenizer, "no-pairs", 1, pairs=None)
    with pytest.raises(ValueError, match=r"sft_pairs: no preference pairs"):
        _run(tmp_path, tiny_tokenizer, "empty", 1, pairs=[])
    with pytest.raises(ValueError, match=r"sft_pairs: given, but sft_source is 'base'"):
        _run(tmp_path, tiny_tokenizer, "base", 1, sft_source="base")
    bad = [PreferencePair(prompt="", chosen=" x", rejected=" y")]
    with pytest.raises(ValueError, match=r"sft_pairs: pair 0 has an empty prompt"):
        _run(tmp_path, tiny_tokenizer, "blank", 1, pairs=bad)
    assert not any((tmp_path / n).exists() for n in ("no-pairs", "empty", "base", "blank"))


def test_cli_takes_the_pairs_file_and_refuses_an_empty_one(tmp_path, tiny_tokenizer, capsys):
    from goodhartlab.cli import main
    from goodhartlab.models.tiny import build_reward_model

    policy_dir, gold_dir, proxy_dir = tmp_path / "policy", tmp_path / "gold", tmp_path / "proxy"
    build_causal_lm("small", tiny_tokenizer, seed=0).save_pretrained(policy_dir)
    build_reward_model("small", tiny_tokenizer, seed=1).save_pretrained(gold_dir)
    build_reward_model("small", tiny_tokenizer, seed=2).save_pretrained(proxy_dir)
    for d in (policy_dir, gold_dir, proxy_dir):
        tiny_tokenizer.save_pretrained(d)
    (tmp_path / "train.txt").write_text("\n".join(PROMPTS))
    (tmp_path / "eval.txt").write_text("\n".join(EVAL_PROMPTS))
    write_pairs(PAIRS, tmp_path / "pairs.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    files = (
        f"--policy {policy_dir} --prompts {tmp_path / 'train.txt'} --gold {gold_dir} "
        f"--eval-prompts-file {tmp_path / 'eval.txt'} --proxy {proxy_dir}"
    )
    small = "--max-new-tokens 6 --prompts-per-step 2 --group-size 2 --eval-prompts 2 --steps 1"
    sft = "--sft-coef 0.5 --sft-source chosen"
    run_dir = tmp_path / "run"
    argv = f"rl {files} {small} {sft} --sft-pairs {tmp_path / 'pairs.jsonl'} --out {run_dir}"
    assert main(argv.split()) == 0
    assert math.isfinite(read_jsonl(run_dir / "train.jsonl")[0]["sft_nll"])
    capsys.readouterr()
    argv = f"rl {files} {small} {sft} --sft-pairs {tmp_path / 'empty.jsonl'} --out {tmp_path / 'e'}"
    assert main(argv.split()) == 2
    err = capsys.readouterr().err
    assert "sft_pairs:" in err and "empty.jsonl holds no preference pairs" in err
    assert not (tmp_path / "e").exists()
