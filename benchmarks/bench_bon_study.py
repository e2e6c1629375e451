"""Benchmark pool sampling against ``model.generate``, and time a small best-of-n study.

    python benchmarks/bench_bon_study.py [--runs 5] [--batch 128] [--prompts-per-batch 2]
        [--policy tiny|toy_text] [--max-new-tokens 64] [--device cpu]
        [--study [--study-prompts 32] [--study-pool 128]]
        [--hump [--hump-dir runs/bench_bon_hump] [--hump-pairs 5000] [--hump-size small]]

Sampling: the same model, the same rows (``--batch`` rows made of ``--prompts-per-batch``
distinct prompts, as in a pool batch where rows share a prompt), temperature 1, top-p 1,
``--max-new-tokens``; completions per second of ``goodhartlab.optimize.pool.sample_token_ids``
and of ``model.generate(do_sample=True, top_k=0)``, median of ``--runs`` runs each
(interleaved), and their ratio. The mean completion length of both is printed as a sanity
check of the distribution (same model, so it should agree within noise).

``--policy tiny``: a freshly built "medium" tiny Llama (models/tiny.py) with widened random
weights (so its outputs vary and end at different lengths) on the toy_text tokenizer;
``--policy toy_text``: the testbed's trained base policy (built and cached on first use).

``--study``: wall time of ``run_bon_study`` on toy_text (``--study-prompts`` held-out
prompts × ``--study-pool`` samples, gold, one single proxy and a 3-member ensemble): the
proxies are reward models with untrained score heads on the policy's backbone, which score
at the speed of trained ones (the curves themselves are meaningless here). Runs in a fresh
temporary directory, so nothing is cached.

``--hump``: the study of issue 4 on real proxies: pairs sampled from the base policy and
labelled by gold with 25 % label noise, five Bradley-Terry reward models (seeds 0-4) on the
``--hump-size`` backbone, member 0 as the single proxy; prints gold at the peak, n at the
peak, gold at N, the drop with its intervals, and the fitted α, β, R² for every method.
Proxies and pool are cached under ``--hump-dir``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from goodhartlab.models.generation import sample_token_ids


def tiny_policy(tokenizer):
    from goodhartlab.models.tiny import build_causal_lm

    model = build_causal_lm("medium", tokenizer, seed=0).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.3, generator=gen)
        model.model.embed_tokens.weight[tokenizer.eos_token_id] *= 1.3
    return model


def bench_sampling(args, tb) -> None:
    tokenizer = tb.tokenizer
    policy = tb.load_policy(args.device) if args.policy == "toy_text" else tiny_policy(tokenizer)
    policy = policy.to(args.device).eval()
    prompts = tb.eval_prompts[: args.prompts_per_batch]
    rows = [i * len(prompts) // args.batch for i in range(args.batch)]
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    old = tokenizer.padding_side
    tokenizer.padding_side = "left"
    enc = tokenizer(
        [prompts[r] for r in rows], return_tensors="pt", padding=True, add_special_tokens=False
    ).to(args.device)
    tokenizer.padding_side = old
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id

    def ours(seed: int) -> float:
        gen = torch.Generator(device=args.device).manual_seed(seed)
        out = sample_token_ids(
            policy,
            prompt_ids,
            rows,
            max_new_tokens=args.max_new_tokens,
            eos_token_id=eos,
            pad_token_id=pad,
            generator=gen,
        )
        return float(out.num_tokens.float().mean())

    @torch.inference_mode()
    def generate(seed: int) -> float:
        torch.manual_seed(seed)
        seq = policy.generate(
            **enc,
            do_sample=True,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            max_new_tokens=args.max_new_tokens,
            pad_token_id=pad,
            eos_token_id=eos,
        )
        new = seq[:, enc["input_ids"].shape[1] :]
        ended = (new == eos).any(dim=1)
        first_eos = torch.where(ended, (new == eos).int().argmax(dim=1), new.shape[1])
        return float(first_eos.float().mean())

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    ours(0), generate(0)  # warm-up
    times = {"ours": [], "generate": []}
    lengths = {"ours": [], "generate": []}
    for run in range(args.runs):
        for name, fn in (("ours", ours), ("generate", generate)):
            sync()
            t0 = time.perf_counter()
            lengths[name].append(fn(1000 + run))
            sync()
            times[name].append(time.perf_counter() - t0)

    print(
        f"policy={args.policy} batch={args.batch} rows from {len(prompts)} prompts, "
        f"max_new_tokens={args.max_new_tokens}, device={args.device}, runs={args.runs}"
    )
    print(f"{'sampler':<10} {'median s':>9} {'completions/s':>14} {'mean tokens':>12}")
    rate = {}
    for name in ("ours", "generate"):
        med = statistics.median(times[name])
        rate[name] = args.batch / med
        print(f"{name:<10} {med:>9.3f} {rate[name]:>14.1f} {statistics.mean(lengths[name]):>12.1f}")
    print(f"ratio ours/generate: {rate['ours'] / rate['generate']:.2f}x")


def bench_study(args, tb) -> None:
    from transformers import AutoModelForSequenceClassification

    from goodhartlab.optimize.bon import BonStudyConfig, run_bon_study
    from goodhartlab.report.plots import plot_bon_curves

    with tempfile.TemporaryDirectory(prefix="bench_bon_") as tmp:
        tmp = Path(tmp)
        rm_dirs = []
        for seed in range(4):  # a single proxy + a 3-member ensemble
            torch.manual_seed(seed)
            rm = AutoModelForSequenceClassification.from_pretrained(tb.policy_path, num_labels=1)
            d = tmp / f"rm{seed}"
            rm.save_pretrained(d)
            tb.tokenizer.save_pretrained(d)
            rm_dirs.append(d)
        config = BonStudyConfig(
            pool_size=args.study_pool,
            prompts_count=args.study_prompts,
            max_new_tokens=tb.max_new_tokens,
            device=args.device,
        )
        t0 = time.perf_counter()
        result = run_bon_study(
            tmp / "run",
            policy=tb.policy_path,
            tokenizer=tb.tokenizer,
            prompts=tb.eval_prompts,
            gold=tb.gold,
            proxies=[rm_dirs[0]],
            ensembles={"ens": rm_dirs[1:]},
            config=config,
            plot=plot_bon_curves,
        )
        total = time.perf_counter() - t0
        import json

        timings = json.loads((result.out_dir / "manifest.json").read_text())["timings"]
    samples = args.study_prompts * args.study_pool
    print(
        f"study: {args.study_prompts} prompts x {args.study_pool} = {samples} samples, "
        f"gold + 4 reward models, {len(result.curves)} curves, device={args.device}"
    )
    print(
        f"  pool {timings['pool_s']:.1f}s ({samples / timings['pool_s']:.0f} completions/s), "
        f"scoring {timings['score_s']:.1f}s, curves+bootstrap {timings['curves_s']:.1f}s, "
        f"total {total:.1f}s"
    )


def bench_hump(args, tb) -> None:
    from goodhartlab.optimize.bon import BonStudyConfig, run_bon_study
    from goodhartlab.report.plots import plot_bon_curves

    root = Path(args.hump_dir)
    t0 = time.perf_counter()
    from goodhartlab.experiments.proxies import train_proxies

    members = train_proxies(
        tb, root, pairs=args.hump_pairs, size=args.hump_size, device=args.device
    ).paths
    t_proxies = time.perf_counter() - t0
    config = BonStudyConfig(
        pool_size=args.study_pool,
        prompts_count=args.study_prompts,
        max_new_tokens=tb.max_new_tokens,
        device=args.device,
    )
    t0 = time.perf_counter()
    result = run_bon_study(
        root / f"study-{args.hump_size}-P{args.study_prompts}-N{args.study_pool}",
        policy=tb.policy_path,
        tokenizer=tb.tokenizer,
        prompts=tb.eval_prompts,
        gold=tb.gold,
        proxies={"single": members[0]},
        ensembles={"ens": members},
        config=config,
        plot=plot_bon_curves,
        progress=True,
    )
    print(f"proxies {t_proxies:.0f}s, study {time.perf_counter() - t0:.0f}s -> {result.out_dir}")
    print(
        f"{'method':<24} {'n_peak':>6} {'gold_peak':>9} {'gold@N':>8} {'drop [95% CI]':>26} "
        f"{'paired CI':>18} {'alpha':>7} {'beta':>7} {'r2':>5}"
    )
    for m, s in result.summary["methods"].items():

        def f(x, w=7):
            return f"{x:>{w}.3f}" if x is not None else f"{'-':>{w}}"

        ci = f"{f(s['drop'], 0)} [{f(s.get('drop_lo'), 0)}, {f(s.get('drop_hi'), 0)}]"
        paired = f"[{f(s.get('drop_paired_lo'), 0)}, {f(s.get('drop_paired_hi'), 0)}]"
        print(
            f"{m:<24} {s['n_peak']:>6} {f(s['gold_peak'], 9)} {f(s['gold_final'], 8)} {ci:>26} "
            f"{paired:>18} {f(s['alpha'])} {f(s['beta'])} {f(s['r2'], 5)}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--prompts-per-batch", type=int, default=2)
    ap.add_argument("--policy", choices=["tiny", "toy_text"], default="tiny")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--study", action="store_true", help="also time a small study")
    ap.add_argument("--no-sampling", action="store_true", help="skip the sampling benchmark")
    ap.add_argument("--study-prompts", type=int, default=32)
    ap.add_argument("--study-pool", type=int, default=128)
    ap.add_argument(
        "--hump",
        action="store_true",
        help="train toy_text proxies (25%% noise) and run the study on them",
    )
    ap.add_argument(
        "--hump-dir", default="runs/bench_bon_hump", help="where --hump caches its work"
    )
    ap.add_argument("--hump-pairs", type=int, default=5000)
    ap.add_argument("--hump-size", default="small")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from goodhartlab.testbeds import get_testbed

    tb = get_testbed("toy_text", progress=False)
    print(
        f"host {platform.node()}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"cpu cores {os.cpu_count()}, load avg {os.getloadavg()[0]:.1f}"
    )
    if not args.no_sampling:
        bench_sampling(args, tb)
    if args.study:
        bench_study(args, tb)
    if args.hump:
        bench_hump(args, tb)


if __name__ == "__main__":
    main()
