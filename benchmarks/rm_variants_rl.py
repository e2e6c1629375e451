"""One GRPO run per trained model for the reward-model variants the packaged study cannot take.

Issue 14 asks for "one RL run each"; ``goodhart run rm-variants`` runs RL for the variants it
trains on the study's pairs, but not for REFORM (it searches with the policy while training),
CausalRM or PAL (they train on other data). Here, for each group, the variant(s) and their
baseline are trained on the same data for each seed (data builders and training imported from
``benchmarks/rm_variants.py`` and ``benchmarks/pal.py``):

* ``reform``: ``reform`` (1 round x 256 adversarial pairs, equal label budget) against
  ``bradley_terry`` on the first 3,000 of the study's noisy pairs (25 % flipped), as
  ``rm_variants.py``;
* ``pal``: PAL (``--objective pal``) against one Bradley-Terry model on the same pooled
  persona pairs (3,000, dealt round-robin to the seen personas, ``stickler`` held out;
  ``pal.py``). RL optimizes PAL's reward for ``--pal-persona`` (default ``skeptic``, the seen
  persona that agrees least with the others, chosen before any RL number) and gold is that
  persona's gold (``testbeds.toy_text.personas.PersonaGold``); pooled BT has one reward;
* ``causal``: ``causal_ips`` and ``causal_dr`` against ``causal_naive`` (BT on the observed
  pairs only), all on the same 3,000 pairs with the same simulated length-gap selection
  (``observation-v1``, ``train.rm_pair_inputs.simulate_observation``).

Then one GRPO run against each trained model, RL seed = the model's seed, with the RL settings
of ``goodhart run rm-variants`` and ``benchmarks/cooper.py`` (60 steps, 8 prompts x 8
completions, lr 1e-4, β = 0.01, an evaluation every 10 steps on 100 held-out prompts x 2
samples). Reported per model (``cooper._summary``): final gold and peak gold relative to the
run's base-policy evaluation (step 0), final proxy gain, final KL; mean over seeds with the
Student-t 95 % interval (``core.stats.t_interval``), and each variant minus its baseline paired
by seed. Clean held-out accuracy and ECE of each model are recorded too (for PAL and pooled BT:
on the RL persona's noise-free labels).

    python benchmarks/rm_variants_rl.py [--groups reform pal causal] [--seeds 0 1 2] \
        [--out runs/rm_variants_rl] [--json rm_variants_rl.json]

One torch thread. Trained models are saved in OUT/rm and RL runs in OUT/rl; both are reused
when present (an interrupted run resumes), and the JSON is rewritten after every run.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from cooper import _fmt, _iv, _summary
from goodhartlab.experiments.study import load_config, make_testbed
from goodhartlab.optimize.rl import RLConfig, run_rl
from goodhartlab.rewards import RewardModel
from goodhartlab.rewards.pal_head import select_persona
from goodhartlab.testbeds.toy_text.personas import PERSONAS, PERSONAS_VERSION, PersonaGold
from goodhartlab.train.rm import RMTrainConfig, evaluate_reward_model, train_reward_model
from goodhartlab.train.rm_reform import policy_sampler
from pal import persona_held_out, persona_train_pairs
from rm_variants import study_pairs, train_variant

#: group -> (baseline, variants)
GROUPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "reform": ("bradley_terry", ("reform",)),
    "pal": ("bt_pooled", ("pal",)),
    "causal": ("causal_naive", ("causal_ips", "causal_dr")),
}
FIGURES = {
    "final_gold": "final gold − base",
    "peak_gold": "peak gold − base",
    "proxy_gain": "final proxy − base",
    "final_kl": "final KL",
}
PAL_HELD_OUT = "stickler"  # benchmarks/pal.py's default


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", nargs="+", default=list(GROUPS), choices=list(GROUPS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--train-pairs", type=int, default=3000)
    ap.add_argument("--pal-persona", default="skeptic", choices=[u for u in PERSONAS
                                                                 if u != PAL_HELD_OUT])  # fmt: skip
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--kl-coef", type=float, default=0.01)
    ap.add_argument("--eval-prompts", type=int, default=100)
    ap.add_argument("--out", default="runs/rm_variants_rl")
    ap.add_argument("--json", default=None, help="default OUT/rm_variants_rl.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    study = load_config(None)
    tb = make_testbed(study, progress=False)
    p = study.proxies
    train, held_out = study_pairs(tb, study, args.train_pairs)
    out = Path(args.out)
    json_path = Path(args.json) if args.json else out / "rm_variants_rl.json"
    sampler = None
    seen = [u for u in PERSONAS if u != PAL_HELD_OUT]
    persona_train = persona_train_pairs(
        train, seen, len(train), noise=p.noise, seed=study.seed
    )  # pal.py's training pairs
    persona_held = persona_held_out(held_out)[args.pal_persona]

    def trained(group: str, name: str, seed: int):
        """The model ``name`` of ``seed`` (trained, or loaded from OUT/rm) and its metrics."""
        nonlocal sampler
        rm_dir = out / "rm" / f"{name}-s{seed}"
        if not (rm_dir / "goodhart_rm.json").is_file():
            if group == "pal":
                config = RMTrainConfig(epochs=p.epochs, lr=p.lr, seed=seed, eval_fraction=0.0)
                if name == "pal":
                    config = config.model_copy(update={"objective": "pal"})
                train_reward_model(
                    persona_train, tb.tokenizer, str(tb.backbone_path(p.size)), config,
                    eval_pairs=[], out_dir=rm_dir, progress=False,
                )  # fmt: skip
            else:
                if name == "reform" and sampler is None:
                    sampler = policy_sampler(
                        tb.load_policy("cpu"), tb.tokenizer, max_new_tokens=tb.max_new_tokens,
                        device="cpu",
                    )  # fmt: skip
                train_variant(name, seed, train, tb, study, sampler, out_dir=rm_dir)
        rm = RewardModel.from_pretrained(rm_dir)
        if name == "pal":
            select_persona(rm, args.pal_persona)
        m = evaluate_reward_model(rm, persona_held if group == "pal" else held_out, batch_size=256)
        return rm, {"clean_accuracy": m["clean_accuracy"], "clean_ece": m["clean_ece"]}

    gold = {"pal": PersonaGold(args.pal_persona)}
    runs: dict[str, dict[str, dict[int, dict]]] = {}
    t0 = time.perf_counter()

    def report() -> dict:
        table, paired = {}, {}
        for group, models in runs.items():
            base, variants = GROUPS[group]
            for name, by_seed in models.items():
                seeds = sorted(by_seed)
                table[name] = {
                    k: _iv([by_seed[s][k] for s in seeds])
                    for k in [*FIGURES, "clean_accuracy", "clean_ece"]
                }
                if name in variants:
                    both = [s for s in seeds if s in models.get(base, {})]
                    paired[name] = {
                        k: _iv([by_seed[s][k] - models[base][s][k] for s in both])
                        for k in [*FIGURES, "clean_accuracy", "clean_ece"]
                    }
        rep = {
            "settings": {
                "seeds": args.seeds, "steps": args.steps, "kl_coef": args.kl_coef,
                "eval_prompts": args.eval_prompts, "train_pairs": len(train),
                "noise": p.noise, "pal_persona": args.pal_persona, "pal_held_out": PAL_HELD_OUT,
                "personas_version": PERSONAS_VERSION, "gold_version": tb.gold_version,
            },
            "groups": {g: GROUPS[g] for g in runs}, "runs": runs, "table": table,
            "paired_minus_baseline": paired, "wall_s": time.perf_counter() - t0,
        }  # fmt: skip
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(rep, indent=2) + "\n")
        return rep

    for group in args.groups:
        base, variants = GROUPS[group]
        runs[group] = {m: {} for m in (base, *variants)}
        for seed in args.seeds:
            for name in (base, *variants):
                t = time.perf_counter()
                rm, metrics = trained(group, name, seed)
                t_rm = time.perf_counter() - t
                cfg = RLConfig(
                    name=name, algorithm="grpo", steps=args.steps, prompts_per_step=8,
                    group_size=8, lr=1e-4, kl_coef=args.kl_coef, eval_every=10,
                    eval_prompts=args.eval_prompts, checkpoint_every=20,
                    max_new_tokens=tb.max_new_tokens, seed=seed,
                )  # fmt: skip
                run_dir = out / "rl" / f"{name}-s{seed}"
                result = run_rl(
                    run_dir, policy=tb.policy_path, reward=rm, gold=gold.get(group, tb.gold),
                    train_prompts=tb.train_prompts, eval_prompts=tb.eval_prompts, config=cfg,
                    resume=(run_dir / "config.yaml").is_file(),
                )  # fmt: skip
                row = _summary(result.metrics) | metrics
                row |= {"rm_seconds": round(t_rm, 1), "rl_seconds": round(time.perf_counter() - t - t_rm, 1)}  # fmt: skip
                runs[group][name][seed] = row
                print(f"{group} {name} seed {seed}: " + json.dumps(row), flush=True)
                rep = report()

    fmt = {"final_kl": "{:.2f}", "clean_accuracy": "{:.3f}", "clean_ece": "{:.3f}"}
    cols = [*FIGURES, "clean_accuracy", "clean_ece"]
    names = {**FIGURES, "clean_accuracy": "clean acc.", "clean_ece": "clean ECE"}
    print("\n| model | " + " | ".join(names[k] for k in cols) + " |\n|---|" + "---|" * len(cols))
    for group in runs:
        base, variants = GROUPS[group]
        for name in (base, *variants):
            print(f"| {name} | " + " | ".join(
                _fmt(rep["table"][name][k], fmt.get(k, "{:+.2f}")) for k in cols) + " |")  # fmt: skip
        for name in variants:
            print(f"| {name} − {base} (paired) | " + " | ".join(
                _fmt(rep["paired_minus_baseline"][name][k], fmt.get(k, "{:+.2f}")) for k in cols
            ) + " |")  # fmt: skip
    print(f"wall {rep['wall_s']:.0f} s")
    return rep


if __name__ == "__main__":
    main()
