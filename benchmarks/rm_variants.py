"""Reward-model objectives of issue 14 against Bradley-Terry, on the same noisy toy_text pairs.

For each objective and each seed it trains one proxy on the first ``--train-pairs`` of the
default study's gold-labelled pairs (25 % of labels flipped; ``experiments.proxies``'s cached
file) from the size-``small`` backbone with the study's recipe (2 epochs, lr 1e-3), then
reports

* clean held-out accuracy on the last 1,000 pairs of that file (never trained on), against
  the noise-free labels, and the calibration of σ(r_c − r_r) against them (ECE, 10 bins, and
  Brier; ``train.rm.evaluate_reward_model``);
* best-of-n gold at n = 16, 256 and (with ``--pool-size 1024``) 1,024 on a shared pool of
  ``--pool-size`` base-policy samples for each of ``--prompts`` held-out prompts (unbiased
  estimator, ``core.bon``);
* for ``armo``, the same (its attribute heads also see a noisy rating of each gold
  component of every training completion, ``train.rm_armo``); ``armo_no_decorrelation`` is
  its ablation without the verbosity decorrelation;
* for ``themis``, the same for a Bradley-Terry proxy that reads the answer of the
  ``toy_text_counter`` tool (counts and a catalogue lookup, ``testbeds.toy_text.tools``)
  after each completion, at training and at scoring;
* for ``reform`` (``train.rm_reform``), the search report of each round (how often the gold
  prefers the proxy's best-of-16 pick to the prompt's median sample, the flips); ``reform``
  and ``reform_3_rounds`` train on 256 fewer original pairs (an equal label budget),
  ``reform_extra_labels`` on all of them plus its 256 added labels;
* for ``noise_robust``, the precision and recall of its suspects against the known flipped
  labels (``meta["flipped"]``), next to chance (the flip rate).

Intervals: mean over the seeds ± the t-interval (95 %, 2 degrees of freedom for 3 seeds) of
the seed means; for best-of-n also the paired 95 % interval over prompts of the difference
from Bradley-Terry (seeds averaged first).

    python benchmarks/rm_variants.py [--seeds 0 1 2] [--out rm_variants.json]

One torch thread. The pool is cached in ``--pool-dir``; the testbed, its backbones and the
pairs in ``$GOODHART_CACHE``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from goodhartlab.core.bon import expected_best_of_n
from goodhartlab.data import read_pairs
from goodhartlab.experiments.proxies import preference_pairs
from goodhartlab.experiments.study import load_config, make_testbed
from goodhartlab.optimize.pool import build_pool
from goodhartlab.train.rm import RMTrainConfig, evaluate_reward_model, train_reward_model
from goodhartlab.train.rm_reform import policy_sampler, train_reform

#: name -> RMTrainConfig overrides. noise_robust: the paper's 10 % and the known 25 % noise.
VARIANTS: dict[str, dict] = {
    "bradley_terry": {"objective": "bradley_terry"},
    "ordinal": {"objective": "ordinal"},
    "noise_robust": {"objective": "noise_robust"},
    "noise_robust_25": {"objective": "noise_robust", "suspect_fraction": 0.25},
    # ArmoRM: attribute heads on toy_text's gold components (noisy) + gating, Wang et al. 2024.
    "armo": {"objective": "armo"},
    "armo_no_decorrelation": {"objective": "armo", "armo_decorrelate": False},
    # Themis (Li et al. 2024): Bradley-Terry on prompt + completion + a counter tool's answer.
    "themis": {"objective": "bradley_terry", "tool": "toy_text_counter"},
    # Its ablation: the catalogue lookup alone (parts mentioned), without the counts.
    "themis_lookup": {"objective": "bradley_terry", "tool": "toy_text_lookup"},
    # Domain knowledge as features (opinion-summarization case study, February 2024): BT plus
    # a linear layer over toy_text_domain's standardized features (benchmarks/domain_features.py).
    "domain_features": {"objective": "bradley_terry", "features": "toy_text_domain"},
    # CausalRM on simulated observational feedback (train.rm_pair_inputs.simulate_observation:
    # a pair is observed with p = σ(−1 + 2·length gap), about a third of them): BT on the
    # observed pairs only, IPS and DR with the estimated propensity, and both with the oracle one.
    "causal_naive": {"objective": "causal_naive"},
    "causal_ips": {"objective": "causal_ips"},
    "causal_dr": {"objective": "causal_dr"},
    "causal_ips_oracle": {"objective": "causal_ips", "causal_propensity": "oracle"},
    "causal_dr_oracle": {"objective": "causal_dr", "causal_propensity": "oracle"},
    # The same on the gold gap |g_c − g_r| (users rate pairs they feel strongly about).
    "causal_naive_gold": {"objective": "causal_naive", "causal_feature": "gold_gap"},
    "causal_ips_gold": {"objective": "causal_ips", "causal_feature": "gold_gap"},
    "causal_dr_gold": {"objective": "causal_dr", "causal_feature": "gold_gap"},
    # Ablation: flipping only, without the adaptive margin.
    "noise_robust_flip_only": {"objective": "noise_robust", "strength_margin": 0.0},
    # REFORM (train.rm_reform): one round, 256 adversarial pairs from 256 prompts x 16
    # samples; at an equal label budget (it trains on 256 fewer original pairs).
    "reform": {"objective": "reform"},
    # The same search with its 256 pairs as extra labels (3,000 + 256).
    "reform_extra_labels": {"objective": "reform"},
    # Three rounds of 128 pairs each (each round's search uses the model retrained on the
    # pairs added so far), equal label budget.
    "reform_3_rounds": {"objective": "reform", "reform_rounds": 3, "reform_pairs": 128},
}
#: Variants whose added pairs are labels on top of the --train-pairs (the others that add
#: pairs train on that many fewer original pairs: an equal label budget).
EXTRA_LABELS = {"reform_extra_labels"}
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}


def seed_interval(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=float)
    mean = float(v.mean())
    if len(v) < 2:
        return {"mean": mean, "half_width": float("nan")}
    half = T_975.get(len(v) - 1, 1.96) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return {"mean": mean, "half_width": half}


def paired_prompt_interval(diff: np.ndarray) -> dict[str, float]:
    """Mean and 95 % normal interval half-width of a per-prompt difference. Shape: (P,)"""
    return {
        "mean": float(diff.mean()),
        "half_width": 1.96 * float(diff.std(ddof=1)) / math.sqrt(len(diff)),
    }


def study_pairs(tb, study, train_pairs: int) -> tuple[list, list]:
    """(train, held-out) pairs: the first ``train_pairs`` and the last 1,000 of the default
    study's cached gold-labelled pairs (``experiments.proxies.preference_pairs``; its noise)."""
    p = study.proxies
    pairs_path = preference_pairs(
        tb,
        Path(tb.root) / "proxies",
        pairs=p.pairs,
        noise=p.noise,
        seed=study.seed,
        progress=False,
    )
    pairs = read_pairs(pairs_path)
    held_out = pairs[-1000:]
    if train_pairs > len(pairs) - len(held_out):
        raise ValueError(
            f"train_pairs: at most {len(pairs) - len(held_out)} (the held-out pairs are the "
            f"last {len(held_out)} of {len(pairs)}), got {train_pairs}"
        )
    return pairs[:train_pairs], held_out


def study_pool(tb, study, prompts: int, pool_size: int, pool_dir) -> tuple[list, list, np.ndarray]:
    """(prompts, completions, gold): ``pool_size`` base-policy samples of each of the first
    ``prompts`` held-out prompts, flat and prompt-major, cached in ``pool_dir``, and their gold.
    Shape of gold: (prompts, pool_size)."""
    held_out = tb.eval_prompts[:prompts]
    pool = build_pool(
        pool_dir, tb.load_policy("cpu"), tb.tokenizer, held_out, pool_size,
        max_new_tokens=tb.max_new_tokens, seed=study.seed, chunk_size=pool_size,
    )  # fmt: skip
    flat_prompts, flat_completions = pool.flat()
    gold = tb.gold(flat_prompts, flat_completions).double().numpy()
    return flat_prompts, flat_completions, gold.reshape(len(held_out), -1)


def train_variant(name: str, seed: int, train: list, tb, study, sampler, out_dir=None):
    """Train variant ``name`` (of ``VARIANTS``) of seed ``seed`` on ``train`` with the study's
    recipe from its size-``small`` backbone; REFORM searches with ``sampler`` and the gold and
    trains on ``len(train)`` minus its added pairs (unless in ``EXTRA_LABELS``). Returns the
    ``RMTrainResult``; saved to ``out_dir`` if given."""
    p = study.proxies
    backbone = str(tb.backbone_path(p.size))
    config = RMTrainConfig(epochs=p.epochs, lr=p.lr, seed=seed, eval_fraction=0.0)
    config = config.model_copy(update=VARIANTS[name])
    config = RMTrainConfig(**config.model_dump())  # validated
    if config.objective == "reform":  # REFORM's search needs the policy and gold
        added = config.reform_rounds * config.reform_pairs
        budget = len(train) - (0 if name in EXTRA_LABELS else added)
        return train_reform(
            train[:budget],
            tb.tokenizer,
            backbone,
            config,
            sample=sampler,
            gold=tb.gold,
            eval_pairs=[],
            out_dir=out_dir,
            progress=False,
        )
    return train_reward_model(
        train, tb.tokenizer, backbone, config, eval_pairs=[], out_dir=out_dir, progress=False
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument(
        "--variants", nargs="+", default=[v for v in VARIANTS if v != "noise_robust_flip_only"]
    )
    ap.add_argument("--train-pairs", type=int, default=3000)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--pool-size", type=int, default=256)
    ap.add_argument("--pool-dir", default="rm_variants_pool")
    ap.add_argument("--out", default="rm_variants.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ns = [n for n in (1, 16, 256, 1024) if n <= args.pool_size]

    study = load_config(None)
    tb = make_testbed(study, progress=False)
    p = study.proxies
    train, held_out = study_pairs(tb, study, args.train_pairs)

    t0 = time.perf_counter()
    prompts = tb.eval_prompts[: args.prompts]
    flat_prompts, flat_completions, gold = study_pool(
        tb, study, args.prompts, args.pool_size, args.pool_dir
    )
    pool_seconds = time.perf_counter() - t0

    sampler = policy_sampler(
        tb.load_policy("cpu"), tb.tokenizer, max_new_tokens=tb.max_new_tokens, device="cpu"
    )
    rows, bon_per_prompt = [], {}
    for name in args.variants:
        for seed in args.seeds:
            t = time.perf_counter()
            result = train_variant(name, seed, train, tb, study, sampler)
            rm = result.reward_model
            held_out_metrics = evaluate_reward_model(rm, held_out)
            with torch.no_grad():
                proxy = rm(flat_prompts, flat_completions, batch_size=256)
            proxy = proxy.double().cpu().numpy().reshape(len(prompts), -1)
            curve = expected_best_of_n(proxy, gold, ns)
            bon_per_prompt[(name, seed)] = curve.gold_per_prompt.numpy()
            row = {
                "variant": name,
                "seed": seed,
                "clean_accuracy": held_out_metrics["clean_accuracy"],
                "clean_ece": held_out_metrics["clean_ece"],
                "clean_brier": held_out_metrics["clean_brier"],
                **{
                    f"bon_gold_n{n}": float(g) for n, g in zip(ns, curve.gold.tolist(), strict=True)
                },
                "train_seconds": round(time.perf_counter() - t, 1),
            }
            observation = result.pair_inputs.get("observation")
            if observation:
                row.update(
                    observed_fraction=observation["observed_fraction"],
                    flipped_fraction_observed=observation.get("flipped_fraction_observed"),
                    fitted_slope=observation["fitted_slope"],
                )
            detection = result.pair_inputs.get("strength", {}).get("detection")
            if detection:
                row.update(
                    precision=detection["precision"],
                    recall=detection["recall"],
                    chance_precision=detection["chance_precision"],
                    n_suspect=detection["n_suspect"],
                )
            reform = result.pair_inputs.get("reform")
            if reform:
                row["reform"] = reform
            rows.append(row)
            print(json.dumps(row), flush=True)

    summary = {}
    base = np.mean([bon_per_prompt[("bradley_terry", s)] for s in args.seeds], axis=0)
    for name in args.variants:
        these = [r for r in rows if r["variant"] == name]
        entry = {
            key: seed_interval([r[key] for r in these])
            for key in [
                "clean_accuracy",
                "clean_ece",
                "clean_brier",
                *[f"bon_gold_n{n}" for n in ns],
                "precision",
                "recall",
            ]
            if key in these[0]
        }
        if name != "bradley_terry" and "bradley_terry" in args.variants:
            mean_curve = np.mean([bon_per_prompt[(name, s)] for s in args.seeds], axis=0)
            for k, n in enumerate(ns):
                entry[f"bon_gold_n{n}_minus_bt_paired"] = paired_prompt_interval(
                    mean_curve[:, k] - base[:, k]
                )
        summary[name] = entry
    out = {
        "train_pairs": len(train),
        "noise": p.noise,
        "held_out_pairs": len(held_out),
        "prompts": len(prompts),
        "pool_size": args.pool_size,
        "seeds": args.seeds,
        "pool_seconds": round(pool_seconds, 1),
        "gold_version": tb.gold_version,
        "rows": rows,
        "summary": summary,
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    for name, entry in summary.items():
        cells = [f"{k}={v['mean']:.3f}±{v['half_width']:.3f}" for k, v in entry.items()]
        print(name, " ".join(cells))


if __name__ == "__main__":
    main()
