"""Cooper's co-trained reward model as a reward model: accuracy, calibration, best-of-n.

Issue 14 asks every reward-model variant for clean accuracy, calibration and best-of-n gold at
n = 16, 256 and 1,024 against the Bradley-Terry baseline. Cooper's reward model (Hong et al.
2025, arXiv 2508.05613) exists only at the end of an RL run: ``run_rl`` saves it as
``RUN/cooper_rm`` (``optimize.rl.save_cooper_reward_model``). This script reads the run
directories ``benchmarks/cooper.py`` wrote (``RUNS/grpo-seedS`` and ``RUNS/LABEL-seedS``) and
compares, for each seed S, the co-trained model of ``LABEL-seedS`` with the frozen proxy it
started from (the study's single proxy, the same for every seed), on

* the last 1,000 of the study's 6,000 pairs (never trained on by either), against the
  noise-free labels: clean accuracy, ECE (10 bins) and Brier of σ(r_c − r_r)
  (``train.rm.evaluate_reward_model``);
* best-of-n gold at n = 1, 16, 256 and 1,024 on a shared pool of base-policy samples
  (``--prompts`` held-out prompts × ``--pool-size``; unbiased estimator, ``core.bon``);
* pairs from the policies RL produced, where the frozen proxy was exploited: ``--policy-
  samples`` completions of each of the first ``--prompts`` held-out prompts from the final
  policy of ``grpo-seedS`` (optimized against the frozen proxy) and of ``LABEL-seedS``
  (against the co-trained model); every within-prompt pair whose gold differs, labelled by
  gold. The share each reward model orders as gold does ("on-policy accuracy").

Intervals: seeds are paired (the same run's models); Student-t 95 % over seeds
(``core.stats.t_interval``); best-of-n also paired over prompts (seed means first, normal
interval), as in ``benchmarks/rm_variants.py``.

    python benchmarks/cooper_rm.py --runs runs/cooper [--label cooper] [--seeds 0 1 2] \
        [--pool-dir POOL] [--pool-size 1024] [--prompts 64] [--json cooper_rm.json]

One torch thread. The pool is cached in ``--pool-dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from safetensors.torch import load_model

from cooper import _fmt, _iv, study_single_proxy
from goodhartlab.core.bon import expected_best_of_n
from goodhartlab.experiments.study import load_config, make_testbed
from goodhartlab.models.generation import sample_completions
from goodhartlab.optimize.rl import COOPER_RM
from goodhartlab.optimize.rundir import complete_checkpoints
from goodhartlab.rewards import RewardModel
from goodhartlab.train.rm import evaluate_reward_model
from rm_variants import paired_prompt_interval, study_pairs, study_pool

NS = (1, 16, 256, 1024)


def final_policy(run_dir: Path, tb):
    """The base policy with the weights of ``run_dir``'s newest complete checkpoint."""
    policy = tb.load_policy("cpu")
    newest = complete_checkpoints(run_dir)[0]
    missing, unexpected = load_model(policy, str(newest / "policy.safetensors"))
    assert not missing and not unexpected, (missing, unexpected)
    return policy.eval()


def co_trained_model(run_dir: Path, frozen_dir: Path) -> RewardModel:
    """``RUN/cooper_rm``, or for a run written before it was saved, the frozen proxy with the
    weights of the newest checkpoint's ``cooper_rm.safetensors`` (the run's last step)."""
    if (run_dir / COOPER_RM).is_dir():
        return RewardModel.from_pretrained(run_dir / COOPER_RM)
    rm = RewardModel.from_pretrained(frozen_dir)
    newest = complete_checkpoints(run_dir)[0]
    # The name run_rl gives the co-trained copy in its checkpoints.
    missing, unexpected = load_model(rm.model, str(newest / "cooper_rm.safetensors"))
    assert not missing and not unexpected, (missing, unexpected)
    return rm


def on_policy_accuracy(models: dict, prompts: list[str], completions: list[list[str]], gold):
    """Per model: the share of within-prompt pairs with different gold that it orders as gold
    does (ties in the model's score count one half)."""
    flat_p = [p for p, ys in zip(prompts, completions, strict=True) for _ in ys]
    flat_y = [y for ys in completions for y in ys]
    n = len(completions[0])
    g = gold(flat_p, flat_y).double().view(len(prompts), n)
    i, j = torch.triu_indices(n, n, offset=1)
    dg = g[:, i] - g[:, j]
    keep = dg != 0
    out = {}
    for name, rm in models.items():
        r = rm.score(flat_p, flat_y, batch_size=256).double().view(len(prompts), n)
        dr = r[:, i] - r[:, j]
        agree = (torch.sign(dr) == torch.sign(dg)).double() + 0.5 * (dr == 0).double()
        out[name] = float(agree[keep].mean())
    return out | {"pairs": int(keep.sum())}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", required=True, help="benchmarks/cooper.py's --out")
    ap.add_argument("--label", default="cooper")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--pool-size", type=int, default=1024)
    ap.add_argument("--pool-dir", default="cooper_rm_pool")
    ap.add_argument("--policy-samples", type=int, default=8)
    ap.add_argument("--json", default=None, help="default RUNS/LABEL_rm.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    runs = Path(args.runs)
    study = load_config(None)
    tb = make_testbed(study, progress=False)
    _, held_out = study_pairs(tb, study, 0)
    prompts = tb.eval_prompts[: args.prompts]
    flat_p, flat_y, gold = study_pool(tb, study, args.prompts, args.pool_size, args.pool_dir)
    ns = [n for n in NS if n <= args.pool_size]

    def measure(rm) -> tuple[dict, np.ndarray]:
        m = evaluate_reward_model(rm, held_out)
        with torch.no_grad():
            proxy = rm.score(flat_p, flat_y, batch_size=256).double().numpy()
        curve = expected_best_of_n(proxy.reshape(len(prompts), -1), gold, ns)
        row = {k: m[k] for k in ("clean_accuracy", "clean_ece", "clean_brier")}
        row |= {f"bon_gold_n{n}": float(x) for n, x in zip(ns, curve.gold.tolist(), strict=True)}
        return row, curve.gold_per_prompt.numpy()

    frozen_dir = study_single_proxy(tb)
    frozen = RewardModel.from_pretrained(frozen_dir)
    frozen_row, frozen_bon = measure(frozen)
    rows, bon, on_policy = {}, {}, {}
    for s in args.seeds:
        cooper = co_trained_model(runs / f"{args.label}-seed{s}", frozen_dir)
        rows[s], bon[s] = measure(cooper)
        on_policy[s] = {}
        for source in ("grpo", args.label):
            policy = final_policy(runs / f"{source}-seed{s}", tb)
            completions = sample_completions(
                policy, tb.tokenizer, list(prompts), args.policy_samples,
                max_new_tokens=tb.max_new_tokens, seed=1000 + s,
            )  # fmt: skip
            on_policy[s][source] = on_policy_accuracy(
                {"frozen": frozen, "cooper": cooper}, list(prompts), completions, tb.gold
            )
        print(f"seed {s}: {json.dumps(rows[s])} on-policy {json.dumps(on_policy[s])}", flush=True)

    keys = list(frozen_row)
    table = {
        "frozen": frozen_row,
        "cooper": {k: _iv([rows[s][k] for s in args.seeds]) for k in keys},
        "cooper_minus_frozen": {
            k: _iv([rows[s][k] - frozen_row[k] for s in args.seeds]) for k in keys
        },
    }
    mean_bon = np.mean([bon[s] for s in args.seeds], axis=0)
    table["bon_minus_frozen_paired_over_prompts"] = {
        f"bon_gold_n{n}": paired_prompt_interval(mean_bon[:, k] - frozen_bon[:, k])
        for k, n in enumerate(ns)
    }
    for source in ("grpo", args.label):
        for name in ("frozen", "cooper"):
            table[f"on_policy_{source}_{name}"] = _iv(
                [on_policy[s][source][name] for s in args.seeds]
            )
        table[f"on_policy_{source}_cooper_minus_frozen"] = _iv(
            [on_policy[s][source]["cooper"] - on_policy[s][source]["frozen"] for s in args.seeds]
        )
    report = {
        "settings": vars(args) | {"frozen": str(frozen_dir), "gold_version": tb.gold_version},
        "rows": rows, "on_policy": on_policy, "table": table,
        "wall_s": time.perf_counter() - t0,
    }  # fmt: skip
    print("\n| | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys))
    print("| frozen proxy | " + " | ".join(f"{frozen_row[k]:.3f}" for k in keys) + " |")
    for name in ("cooper", "cooper_minus_frozen"):
        print(f"| {name} | " + " | ".join(_fmt(table[name][k], "{:+.3f}") for k in keys) + " |")
    for k, v in table["bon_minus_frozen_paired_over_prompts"].items():
        print(f"{k} cooper − frozen, paired over prompts: {v['mean']:+.3f} ± {v['half_width']:.3f}")
    for source in ("grpo", args.label):
        cells = [
            f"{name} {_fmt(table[f'on_policy_{source}_{name}'], '{:.3f}')}"
            for name in ("frozen", "cooper", "cooper_minus_frozen")
        ]
        print(f"on-policy accuracy, final {source} policy: " + "; ".join(cells))
    print(f"wall {report['wall_s']:.0f} s")
    path = Path(args.json) if args.json else runs / f"{args.label}_rm.json"
    path.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
