"""PAL (Chen et al. 2024, arXiv 2406.08469) against Bradley-Terry on toy_text reader personas.

Pairs: the default study's base-policy pairs (``experiments.proxies``'s cached file, 6,000
pairs), relabelled by reader personas' golds (``testbeds.toy_text.personas``,
``toy_text-personas-v1``; argmax with ``--noise`` of the labels flipped, as the project's
labeling does) with ``meta["persona"]`` recording the reader. One persona (``--held-out``)
is left out of training.

* Training: the first ``--train-pairs`` pairs, dealt round-robin to the seen personas, each
  labelled by its own persona. On them, for each seed: PAL (``--objective pal``); one
  Bradley-Terry model on all of them pooled (it is not told the persona); and one
  Bradley-Terry model per seen persona on that persona's pairs only (the same total pair
  budget). All from the size-``small`` backbone with the study's recipe (2 epochs, lr 1e-3).
* With ``--prompted``, also one pooled Bradley-Terry model that is told the persona: every
  prompt written for its reader (``persona_prompt``: ``reader NAME , DESCRIPTION . PROMPT``),
  at training, evaluation, few-shot fine-tuning and best-of-n alike.
* Clean held-out accuracy per persona on the last 1,000 pairs of the file (never trained on),
  each labelled noise-free by every persona (the same pairs for all of them).
* Few-shot on the held-out persona: k of its pairs (noisy, from pairs the others never saw),
  k in ``--shots``; PAL fits only that persona's mixture weights (``train.rm_pal.fit_persona``);
  Bradley-Terry is the pooled model fine-tuned on the k pairs (``--ft-epochs`` epochs at
  ``--ft-lr``, batch min(k, 16)). k = 0: PAL's uniform mixture and the pooled model as it is.
  For reference, a Bradley-Terry model trained on ``--train-pairs`` / (#seen) pairs of the
  held-out persona (what a seen persona had).
* Few-shot prior (``--prior-strengths``): for each λ, PAL's fit again with the prior
  λ/(2k) ‖θ − θ̄‖² toward the seen personas' mean logits θ̄ (``core.pal.mixture_prior_penalty``,
  ``RMTrainConfig.pal_fewshot_prior``), measured on the same PAL model. ``--validate-prior``
  chooses λ without the held-out persona: each seen persona in turn gets a fresh row fitted
  from k of its own pairs (prior mean: the *other* seen personas' logits), scored on its clean
  held-out pairs; the λ with the best mean over seen personas, k and seeds is reported as
  ``chosen_strength``.
* The agreement of the personas' noise-free labels on the held-out pairs is printed (and
  recorded); ``--held-out least-agreeing`` holds out the persona with the least mean
  agreement with the others. ``--few-shot-only`` skips the seen personas' comparisons.
* Calibration per seen persona: the ECE (10 bins, ``core.rm_metrics``, through
  ``train.rm.evaluate_reward_model``) of σ(r_c − r_r) against that persona's noise-free
  labels of the held-out pairs, for every model.
* Best-of-16 gold per seen persona (that persona's gold) on ``--prompts`` held-out prompts x
  ``--pool-size`` base-policy samples (``--pool-dir``, 256 or 1,024; unbiased estimator,
  ``core.bon``), and best-of-256 and 1,024 where the pool has them, each model picking by its
  reward for that persona (the pooled model: its one reward). ``seen_mean_bon*``: averaged
  over the seen personas (the paired difference: seeds and personas averaged per prompt).

Intervals: mean over seeds ± the 95 % t-interval (``core.stats.t_interval``) of the seed
values, for each model and for the paired per-seed differences PAL − pooled BT and PAL −
per-persona BT (best-of-n: seeds averaged, then a 95 % normal interval over prompts of the
paired difference).

    python benchmarks/pal.py --pool-dir /work/pool/p64x256 [--prompted] [--seeds 0 1 2] [--out pal.json]
    python benchmarks/pal.py --pool-dir /work/pool/p64x1024 --pool-size 1024 --out pal_1024.json
    python benchmarks/pal.py --few-shot-only --validate-prior --prior-strengths 0 1 10 100 \
        [--held-out least-agreeing]

One torch thread. The testbed, its backbones and the pairs are in ``$GOODHART_CACHE``.
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
from goodhartlab.core.pal import ideal_point_reward, mixture_weights
from goodhartlab.core.stats import t_interval
from goodhartlab.data import read_pairs
from goodhartlab.experiments.proxies import preference_pairs
from goodhartlab.experiments.study import load_config, make_testbed
from goodhartlab.optimize.pool import build_pool
from goodhartlab.rewards.pal_head import select_persona
from goodhartlab.testbeds.toy_text.personas import (
    PERSONAS,
    PERSONAS_VERSION,
    label_pairs_by_persona,
    persona_gold,
    persona_prompt,
)
from goodhartlab.train.rm import RMTrainConfig, evaluate_reward_model, train_reward_model
from goodhartlab.train.rm_pal import fit_persona, pair_latents

LEAST_AGREEING = "least-agreeing"


def interval(values: list[float]) -> dict[str, float]:
    lo, hi = t_interval(np.asarray(values, dtype=float))
    return {"mean": float(np.mean(values)), "half_width": (hi - lo) / 2}


def prompt_interval(diff: np.ndarray) -> dict[str, float]:
    """Mean and 95 % normal interval half-width of a per-prompt difference. Shape: (P,)"""
    return {
        "mean": float(diff.mean()),
        "half_width": 1.96 * float(diff.std(ddof=1)) / math.sqrt(len(diff)),
    }


def accuracy(rm, pairs) -> float:
    return evaluate_reward_model(rm, pairs, batch_size=256)["accuracy"]


def latent_accuracy(head, logits: torch.Tensor, latents) -> float:
    """Accuracy of a PAL persona with mixture logits ``logits`` (K,) on pairs whose latents
    f(x, y_c), f(x, y_r) are ``latents`` (``train.rm_pal.pair_latents``): the fraction with
    r_u(y_c) > r_u(y_r), as ``evaluate_reward_model`` counts it, without re-running the
    backbone."""
    f_c, f_r = latents
    with torch.no_grad():
        a = (mixture_weights(logits[None]) @ head.prototypes).expand_as(f_c)
        return float((ideal_point_reward(f_c, a) > ideal_point_reward(f_r, a)).double().mean())


def persona_held_out(raw) -> dict[str, list]:
    """The last 1,000 of the study's pairs ``raw``, labelled noise-free by each persona."""
    held_raw = raw[-1000:]
    return {u: label_pairs_by_persona(held_raw, [u] * len(held_raw), noise=0.0) for u in PERSONAS}


def persona_train_pairs(raw, seen: list[str], n_train: int, *, noise: float, seed: int) -> list:
    """The first ``n_train`` of ``raw`` dealt round-robin to the ``seen`` personas, each pair
    labelled by its persona (``noise`` of the labels flipped)."""
    return label_pairs_by_persona(
        raw[:n_train], [seen[i % len(seen)] for i in range(n_train)], noise=noise, seed=seed
    )


def agreement_matrix(held_by_persona: dict) -> dict[str, dict[str, float]]:
    """Fraction of the (same) held-out pairs on which two personas' noise-free labels agree."""
    names = list(held_by_persona)
    chosen = {u: [q.chosen for q in held_by_persona[u]] for u in names}
    return {
        u: {
            v: float(np.mean([a == b for a, b in zip(chosen[u], chosen[v], strict=True)]))
            for v in names
        }
        for u in names
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument(
        "--held-out",
        default="stickler",
        choices=[*PERSONAS, LEAST_AGREEING],
        help=f"the persona left out of training; {LEAST_AGREEING}: the one whose noise-free "
        "labels agree least, on average, with the other personas' on the held-out pairs",
    )
    ap.add_argument("--train-pairs", type=int, default=3000)
    ap.add_argument("--noise", type=float, default=0.25)
    ap.add_argument("--shots", nargs="+", type=int, default=[5, 20, 100])
    ap.add_argument("--ft-epochs", type=int, default=5)
    ap.add_argument("--ft-lr", type=float, default=1e-4)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--pool-dir", default="rm_variants_pool")
    ap.add_argument(
        "--pool-size", type=int, default=256,
        help="samples per prompt of the pool (256 or 1024: best-of-16, 256 and 1,024)",
    )  # fmt: skip
    ap.add_argument("--no-bon", action="store_true", help="skip best-of-n")
    ap.add_argument(
        "--pal-epochs", type=int, default=None, help="PAL's epochs (default: the study's)"
    )
    ap.add_argument(
        "--prompted",
        action="store_true",
        help="also a pooled Bradley-Terry model told the persona in the prompt "
        "(testbeds.toy_text.personas.persona_prompt)",
    )
    ap.add_argument(
        "--prior-strengths",
        nargs="+",
        type=float,
        default=[0.0],
        help="few-shot prior strengths λ (RMTrainConfig.pal_fewshot_prior; prior mean: the seen "
        "personas' mean logits), each fitted and measured on the same PAL model",
    )
    ap.add_argument(
        "--few-shot-only",
        action="store_true",
        help="skip the per-persona BT models, the seen personas' accuracies and best-of-16",
    )
    ap.add_argument(
        "--validate-prior",
        action="store_true",
        help="also few-shot on each seen persona (a fresh row fitted from k of its pairs, prior "
        "mean: the other seen personas' logits), to choose λ without the held-out persona",
    )
    ap.add_argument("--out", default="pal.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t_start = time.perf_counter()

    study = load_config(None)
    tb = make_testbed(study, progress=False)
    p = study.proxies
    raw = read_pairs(
        preference_pairs(
            tb, Path(tb.root) / "proxies", pairs=p.pairs, noise=p.noise, seed=study.seed,
            progress=False,
        )
    )  # fmt: skip
    held_raw = raw[-1000:]
    held = persona_held_out(raw)
    agreement = agreement_matrix(held)
    print("agreement of the personas' noise-free labels on the held-out pairs:")
    print("  " + " " * 11 + " ".join(f"{w[:5]:>5}" for w in PERSONAS))
    for u in PERSONAS:
        print(f"  {u:>11} " + " ".join(f"{agreement[u][w]:.3f}" for w in PERSONAS), flush=True)
    if args.held_out == LEAST_AGREEING:
        args.held_out = min(
            PERSONAS, key=lambda u: np.mean([agreement[u][w] for w in PERSONAS if w != u])
        )
        print(f"held out: {args.held_out} (least mean agreement with the others)", flush=True)
    seen = [u for u in PERSONAS if u != args.held_out]
    n_train, max_shots = args.train_pairs, max(args.shots)
    per_persona = n_train // len(seen)
    assert n_train + max_shots + per_persona <= len(raw) - 1000, "pair sets overlap"
    train = persona_train_pairs(raw, seen, n_train, noise=args.noise, seed=study.seed)
    shots_raw = raw[n_train : n_train + max_shots]
    own_raw = raw[n_train + max_shots : n_train + max_shots + per_persona]
    if args.few_shot_only:
        args.no_bon = True

    def prompted(pairs):
        """The pairs with their persona named in the prompt (``reader NAME , ... . PROMPT``)."""
        return [
            q.model_copy(update={"prompt": persona_prompt(q.meta["persona"], q.prompt)})
            for q in pairs
        ]

    bon = not args.no_bon
    ns = [n for n in (16, 256, 1024) if n <= args.pool_size]
    if bon:
        # The pool of benchmarks/rm_variants.py (64 prompts x --pool-size); its first
        # --prompts prompts.
        size = args.pool_size
        pool = build_pool(
            args.pool_dir, tb.load_policy("cpu"), tb.tokenizer, tb.eval_prompts[:64], size,
            max_new_tokens=tb.max_new_tokens, seed=study.seed, chunk_size=size,
        )  # fmt: skip
        prompts = tb.eval_prompts[: args.prompts]
        flat_prompts, flat_completions = (x[: size * len(prompts)] for x in pool.flat())
        assert all(q == prompts[i // size] for i, q in enumerate(flat_prompts))
        gold = {
            u: np.array(
                [persona_gold(u, q, c) for q, c in zip(flat_prompts, flat_completions, strict=True)]
            ).reshape(len(prompts), -1)
            for u in seen
        }

    def pool_scores(rm, u=None, *, tell_persona: bool = False) -> np.ndarray:
        texts = [persona_prompt(u, q) for q in flat_prompts] if tell_persona else flat_prompts
        with torch.no_grad():
            r = rm(texts, flat_completions, batch_size=256)
        return r.double().numpy().reshape(len(prompts), -1)

    def best_of(rm_or_scores, u, *, tell_persona: bool = False) -> dict[int, list[float]]:
        """Best-of-n gold of persona ``u`` per prompt, for each n of ``ns``."""
        r = rm_or_scores
        if not isinstance(r, np.ndarray):
            r = pool_scores(r, u, tell_persona=tell_persona)
        g = expected_best_of_n(r, gold[u], ns).gold_per_prompt.numpy()
        return {n: g[:, k].tolist() for k, n in enumerate(ns)}

    def record(entry: dict, m: str, rm, pairs) -> None:
        """Accuracy and clean ECE of ``rm`` on ``pairs`` into ``entry[m]``, ``entry["ece_"+m]``."""
        e = evaluate_reward_model(rm, pairs, batch_size=256)
        entry[m], entry[f"ece_{m}"] = e["accuracy"], e["clean_ece"]

    backbone = str(tb.backbone_path(p.size))
    rows = []
    for seed in args.seeds:
        t = time.perf_counter()
        base = RMTrainConfig(epochs=p.epochs, lr=p.lr, seed=seed, eval_fraction=0.0)
        pal = train_reward_model(
            train, tb.tokenizer, backbone, base.model_copy(
                update={"objective": "pal", "epochs": args.pal_epochs or base.epochs}
            ),
            eval_pairs=[], progress=False,
        )  # fmt: skip
        pooled = train_reward_model(
            train, tb.tokenizer, backbone, base, eval_pairs=[], progress=False
        )
        row: dict = {"seed": seed, "pal_mixture_weights": pal.pair_inputs["pal"]["mixture_weights"]}
        if args.prompted:
            told = train_reward_model(
                prompted(train), tb.tokenizer, backbone, base, eval_pairs=[], progress=False
            ).reward_model
        per: dict[str, dict] = {}
        pooled_scores = pool_scores(pooled.reward_model) if bon and not args.few_shot_only else None
        for u in [] if args.few_shot_only else seen:
            own = train_reward_model(
                [q for q in train if q.meta["persona"] == u], tb.tokenizer, backbone, base,
                eval_pairs=[], progress=False,
            ).reward_model  # fmt: skip
            select_persona(pal.reward_model, u)
            per[u] = {}
            record(per[u], "pal", pal.reward_model, held[u])
            record(per[u], "bt_pooled", pooled.reward_model, held[u])
            record(per[u], "bt_own", own, held[u])
            if bon:
                for m, best in (
                    ("pal", best_of(pal.reward_model, u)),
                    ("bt_pooled", best_of(pooled_scores, u)),
                    ("bt_own", best_of(own, u)),
                ):
                    per[u].update({f"bon{n}_{m}": g for n, g in best.items()})
            if args.prompted:
                record(per[u], "bt_prompted", told, prompted(held[u]))
                if bon:
                    best = best_of(told, u, tell_persona=True)
                    per[u].update({f"bon{n}_bt_prompted": g for n, g in best.items()})
        row["seen"] = per

        # Few-shot on the held-out persona.
        v = args.held_out
        few: dict[str, dict] = {}
        head = pal.reward_model.model.score
        head.add_persona(f"{v}_uniform", torch.zeros(head.prototypes.shape[0]))
        select_persona(pal.reward_model, f"{v}_uniform")
        few["0"] = {
            "pal": accuracy(pal.reward_model, held[v]),
            "bt_pooled": accuracy(pooled.reward_model, held[v]),
        }
        if args.prompted:
            few["0"]["bt_prompted"] = accuracy(told, prompted(held[v]))
        shots_all = label_pairs_by_persona(
            shots_raw, [v] * len(shots_raw), noise=args.noise, seed=study.seed + 1000 + seed
        )
        lat = {u: pair_latents(pal.reward_model, held[u], batch_size=256) for u in PERSONAS}
        for k in args.shots:
            shots = shots_all[:k]
            fit = fit_persona(pal.reward_model, shots, f"{v}_{k}", base)
            select_persona(pal.reward_model, f"{v}_{k}")
            prior_acc = {}
            for lam in args.prior_strengths:
                cfg_lam = base.model_copy(update={"pal_fewshot_prior": lam})
                name = f"{v}_{k}_prior{lam:g}"
                f_lam = fit_persona(pal.reward_model, shots, name, cfg_lam, population=seen)
                prior_acc[f"{lam:g}"] = {
                    "accuracy": latent_accuracy(
                        head, head.weight_logits.detach()[head.index(name)], lat[v]
                    ),
                    "mixture_weights": f_lam["mixture_weights"],
                }
            ft_config = base.model_copy(
                update={
                    "epochs": args.ft_epochs,
                    "lr": args.ft_lr,
                    "batch_size": min(k, 16),
                    "reinit_head": False,
                }
            )
            ft = train_reward_model(
                shots, tb.tokenizer, pooled.reward_model.model, ft_config, eval_pairs=[],
                progress=False,
            ).reward_model  # fmt: skip
            few[str(k)] = {
                "pal": accuracy(pal.reward_model, held[v]),
                "bt_finetuned": accuracy(ft, held[v]),
                "pal_mixture_weights": fit["mixture_weights"],
                "pal_prior": prior_acc,
            }
            if args.prompted:
                ft_told = train_reward_model(
                    prompted(shots), tb.tokenizer, told.model, ft_config, eval_pairs=[],
                    progress=False,
                ).reward_model  # fmt: skip
                few[str(k)]["bt_prompted_finetuned"] = accuracy(ft_told, prompted(held[v]))
        own_v = label_pairs_by_persona(own_raw, [v] * len(own_raw), noise=args.noise, seed=seed)
        few["bt_own_reference"] = {
            "pairs": len(own_v),
            "accuracy": accuracy(
                train_reward_model(
                    own_v, tb.tokenizer, backbone, base, eval_pairs=[], progress=False
                ).reward_model,
                held[v],
            ),
        }
        row["few_shot"] = few
        if args.validate_prior:
            # Few-shot on the seen personas (their k pairs: the held-out persona's shot pairs
            # relabelled by them), for choosing λ without looking at the held-out persona.
            val: dict = {}
            for u in seen:
                others = [w for w in seen if w != u]
                u_shots = label_pairs_by_persona(
                    shots_raw, [u] * len(shots_raw), noise=args.noise,
                    seed=study.seed + 2000 + seed,
                )  # fmt: skip
                for k in args.shots:
                    for lam in args.prior_strengths:
                        name = f"val_{u}_{k}_prior{lam:g}"
                        fit_persona(
                            pal.reward_model, u_shots[:k], name,
                            base.model_copy(update={"pal_fewshot_prior": lam}), population=others,
                        )  # fmt: skip
                        val.setdefault(str(k), {}).setdefault(f"{lam:g}", {})[u] = latent_accuracy(
                            head, head.weight_logits.detach()[head.index(name)], lat[u]
                        )
            row["prior_validation"] = val
        row["seconds"] = round(time.perf_counter() - t, 1)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "seen"}), flush=True)
        print(
            json.dumps({u: {m: x for m, x in d.items() if "bon" not in m} for u, d in per.items()}),
            flush=True,
        )

    # Summary: intervals over seeds (and over prompts for best-of-16).
    summary: dict = {"seen": {}, "few_shot": {}}
    models = ["pal", "bt_pooled", "bt_own"] + (["bt_prompted"] if args.prompted else [])
    for u in [] if args.few_shot_only else seen:
        accs = {m: [r["seen"][u][m] for r in rows] for m in models}
        entry = {m: interval(x) for m, x in accs.items()}
        entry["pal_minus_bt_pooled"] = interval(
            [a - b for a, b in zip(accs["pal"], accs["bt_pooled"], strict=True)]
        )
        for m in models[2:]:
            entry[f"pal_minus_{m}"] = interval(
                [a - b for a, b in zip(accs["pal"], accs[m], strict=True)]
            )
        for m in models:
            entry[f"ece_{m}"] = interval([r["seen"][u][f"ece_{m}"] for r in rows])
            if m != "pal":
                entry[f"ece_pal_minus_{m}"] = interval(
                    [r["seen"][u]["ece_pal"] - r["seen"][u][f"ece_{m}"] for r in rows]
                )
        for n in ns if bon else ():
            mean_curve = {
                m: np.mean([r["seen"][u][f"bon{n}_{m}"] for r in rows], axis=0) for m in models
            }
            for m in mean_curve:
                entry[f"bon{n}_{m}"] = interval([float(np.mean(r["seen"][u][f"bon{n}_{m}"]))
                                                 for r in rows])  # fmt: skip
            for m in models[1:]:
                entry[f"bon{n}_pal_minus_{m}_paired"] = prompt_interval(
                    mean_curve["pal"] - mean_curve[m]
                )
        summary["seen"][u] = entry
    for m in [] if args.few_shot_only else models:
        summary["seen_mean_" + m] = interval(
            [float(np.mean([r["seen"][u][m] for u in seen])) for r in rows]
        )
        summary["seen_mean_ece_" + m] = interval(
            [float(np.mean([r["seen"][u][f"ece_{m}"] for u in seen])) for r in rows]
        )
        for n in ns if bon else ():
            summary[f"seen_mean_bon{n}_{m}"] = interval(
                [float(np.mean([r["seen"][u][f"bon{n}_{m}"] for u in seen])) for r in rows]
            )
            if m != "pal":
                # Paired over prompts: seeds and seen personas averaged first.
                diff = np.mean(
                    [np.subtract(r["seen"][u][f"bon{n}_pal"], r["seen"][u][f"bon{n}_{m}"])
                     for r in rows for u in seen], axis=0,
                )  # fmt: skip
                summary[f"seen_mean_bon{n}_pal_minus_{m}_paired"] = prompt_interval(diff)
    for m in [] if args.few_shot_only else models[1:]:
        summary[f"seen_mean_ece_pal_minus_{m}"] = interval(
            [float(np.mean([r["seen"][u]["ece_pal"] - r["seen"][u][f"ece_{m}"] for u in seen]))
             for r in rows]
        )  # fmt: skip
    if not args.few_shot_only:
        summary["seen_mean_pal_minus_bt_pooled"] = interval(
            [float(np.mean([r["seen"][u]["pal"] - r["seen"][u]["bt_pooled"] for u in seen]))
             for r in rows]
        )  # fmt: skip
    for m in [] if args.few_shot_only else models[2:]:
        summary[f"seen_mean_pal_minus_{m}"] = interval(
            [float(np.mean([r["seen"][u]["pal"] - r["seen"][u][m] for u in seen]))
             for r in rows]
        )  # fmt: skip
    for k in ["0", *map(str, args.shots)]:
        bt_key = "bt_pooled" if k == "0" else "bt_finetuned"
        pal_k = [r["few_shot"][k]["pal"] for r in rows]
        bt_k = [r["few_shot"][k][bt_key] for r in rows]
        summary["few_shot"][k] = {
            "pal": interval(pal_k),
            "bt": interval(bt_k),
            "pal_minus_bt": interval([a - b for a, b in zip(pal_k, bt_k, strict=True)]),
        }
        if args.prompted:
            told_k = [
                r["few_shot"][k]["bt_prompted" if k == "0" else "bt_prompted_finetuned"]
                for r in rows
            ]
            summary["few_shot"][k]["bt_prompted"] = interval(told_k)
            summary["few_shot"][k]["pal_minus_bt_prompted"] = interval(
                [a - b for a, b in zip(pal_k, told_k, strict=True)]
            )
    for k in map(str, args.shots):
        bt_k = [r["few_shot"][k]["bt_finetuned"] for r in rows]
        summary["few_shot"][k]["pal_prior"] = {}
        for lam in (f"{x:g}" for x in args.prior_strengths):
            acc = [r["few_shot"][k]["pal_prior"][lam]["accuracy"] for r in rows]
            summary["few_shot"][k]["pal_prior"][lam] = {
                "pal": interval(acc),
                "pal_minus_bt": interval([a - b for a, b in zip(acc, bt_k, strict=True)]),
            }
    if args.validate_prior:
        # λ with the best mean few-shot accuracy over the seen personas, k and seeds.
        val_mean = {
            lam: float(
                np.mean(
                    [
                        r["prior_validation"][k][lam][u]
                        for r in rows
                        for k in map(str, args.shots)
                        for u in seen
                    ]
                )
            )
            for lam in (f"{x:g}" for x in args.prior_strengths)
        }
        summary["prior_validation"] = {
            "mean_accuracy_by_strength": val_mean,
            "by_k": {
                k: {
                    lam: interval(
                        [
                            float(np.mean([r["prior_validation"][k][lam][u] for u in seen]))
                            for r in rows
                        ]
                    )
                    for lam in val_mean
                }
                for k in map(str, args.shots)
            },
            "chosen_strength": max(val_mean, key=val_mean.get),
        }
    summary["few_shot"]["bt_own_reference"] = interval(
        [r["few_shot"]["bt_own_reference"]["accuracy"] for r in rows]
    )
    out = {
        "personas_version": PERSONAS_VERSION,
        "held_out_persona": args.held_out,
        "agreement": agreement,
        "prior_strengths": args.prior_strengths,
        "seen_personas": seen,
        "train_pairs": len(train),
        "pairs_per_persona": per_persona,
        "noise": args.noise,
        "held_out_pairs": len(held_raw),
        "shots": args.shots,
        "ft_epochs": args.ft_epochs,
        "ft_lr": args.ft_lr,
        "bon_prompts": args.prompts if bon else 0,
        "prompted_bt": args.prompted,
        "pal_epochs": args.pal_epochs or p.epochs,
        "seeds": args.seeds,
        "gold_version": getattr(tb.gold, "version", None),
        "rows": rows,
        "summary": summary,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
