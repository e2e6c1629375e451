"""Benchmark our GRPO loop against TRL 1.16's GRPOTrainer on the same tiny problem.

    python benchmarks/bench_rl.py [--steps 30] [--repeats 2] [--proxy RM_DIR] [--cache-dir DIR]

Same policy (the toy_text base policy), same reward (a proxy reward model with --proxy, else
the toy_text gold), same batch (B = 8 prompts × G = 8 completions = 64 rows, one optimizer
step per generation batch), same completion budget (64 tokens), temperature 1, lr 1e-4
constant, AdamW, gradient clipping 1.0, β = 0 (no reference model), loss "grpo", rewards
scaled by the group std, one iteration per batch. TRL: ``bf16=False``, ``use_cpu=True``,
``disable_dropout=True``. One process, one torch thread; the two loops alternate
(``--repeats``) so that load from other jobs hits both alike.

Reported: steps/s (a step = sample 64 completions, score them, one update; the first step
of each run is left out as warm-up), the ratio, gold / proxy / KL on 100 held-out prompts
(2 samples each) after the same number of steps (mean over the repeats; each repeat
samples its own prompts, so they differ by seed), with the base policy for reference, and
peak memory: each loop once more in a fresh child process (``--memory-steps`` steps), its
peak resident set (VmHWM, reset after imports and model loading) and how much that is above
the resident set before the loop started (Linux only).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

B, G, MAX_NEW_TOKENS, LR = 8, 8, 64, 1e-4


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _setup(cache_dir, proxy):
    from goodhartlab.rewards import RewardModel
    from goodhartlab.testbeds import get_testbed

    tb = get_testbed("toy_text", cache_dir=cache_dir)
    reward = RewardModel.from_pretrained(proxy) if proxy else tb.gold
    return tb, reward


def _run(name, tb, reward, steps, out, seed=0):
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    if name == "ours":
        return run_ours(
            tb.policy_path, tb.tokenizer, reward, tb.train_prompts, tb.eval_prompts, tb.gold,
            steps, out, seed,
        )  # fmt: skip
    return run_trl(tb.policy_path, tb.tokenizer, reward, tb.train_prompts, steps, out, seed)


def measure_memory(name, cache_dir, proxy, steps, out) -> tuple[float, float]:
    """In a fresh process: (resident MiB after setup, peak resident MiB during the run).

    The peak (VmHWM) is reset after imports and model loading (``/proc/self/clear_refs``),
    so that their transient allocations do not count.
    """
    torch.set_num_threads(1)
    import datasets  # noqa: F401 - imported before the baseline, like the rest
    import trl  # noqa: F401

    from goodhartlab.optimize.rl import run_rl  # noqa: F401

    tb, reward = _setup(cache_dir, proxy)
    tb.load_policy()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident set
    baseline = _status_mib("VmRSS")
    _run(name, tb, reward, steps, out)
    return baseline, _status_mib("VmHWM")


def run_ours(policy_path, tokenizer, reward, prompts, eval_prompts, gold, steps, out, seed=0):
    from goodhartlab.optimize.rl import RLConfig, run_rl
    from goodhartlab.optimize.rundir import read_jsonl

    config = RLConfig(
        steps=steps,
        prompts_per_step=B,
        group_size=G,
        max_new_tokens=MAX_NEW_TOKENS,
        lr=LR,
        eval_every=10**6,
        eval_prompts=1,
        eval_samples=1,
        checkpoint_every=10**6,
        seed=seed,
    )
    result = run_rl(
        out,
        policy=str(policy_path),
        tokenizer=tokenizer,
        reward=reward,
        gold=gold,
        train_prompts=prompts,
        eval_prompts=eval_prompts,
        config=config,
    )
    step_s = [r["step_s"] for r in read_jsonl(Path(out) / "train.jsonl")]
    return result.policy, step_s


def run_trl(policy_path, tokenizer, reward, prompts, steps, out, seed=0):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    times: list[float] = []

    class StepTimes(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t0)

    def reward_func(prompts, completions, **kw):
        return reward(list(prompts), list(completions)).tolist()

    reward_func.__name__ = "proxy"
    model = AutoModelForCausalLM.from_pretrained(policy_path)
    args = GRPOConfig(
        output_dir=str(out),
        per_device_train_batch_size=B * G,
        gradient_accumulation_steps=1,
        num_generations=G,
        max_completion_length=MAX_NEW_TOKENS,
        temperature=1.0,
        top_p=1.0,
        learning_rate=LR,
        lr_scheduler_type="constant",
        warmup_steps=0,
        max_grad_norm=1.0,
        beta=0.0,
        loss_type="grpo",
        scale_rewards="group",
        num_iterations=1,
        max_steps=steps,
        bf16=False,
        use_cpu=True,
        disable_dropout=True,
        logging_steps=10**6,
        save_strategy="no",
        report_to="none",
        seed=seed,
        dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_func,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": list(prompts)}),
        processing_class=tokenizer,
        callbacks=[StepTimes()],
    )
    trainer.train()
    return trainer.model, times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--memory-steps", type=int, default=10)
    ap.add_argument("--proxy", default=None, help="reward-model directory (default: the gold)")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--out", default="/tmp/bench_rl")
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import multiprocessing

    from goodhartlab.measure import evaluate_policy

    tb, reward = _setup(args.cache_dir, args.proxy)
    base = tb.load_policy()
    results: dict[str, list] = {"ours": [], "trl": []}
    for rep in range(args.repeats):
        for name in ("ours", "trl"):
            policy, times = _run(
                name, tb, reward, args.steps, Path(args.out) / f"{name}{rep}", seed=rep
            )
            steps_per_s = 1 / statistics.mean(times[1:] if len(times) > 1 else times)
            results[name].append((steps_per_s, policy))
            print(f"{name} run {rep}: {steps_per_s:.3f} steps/s", flush=True)

    memory = {}
    ctx = multiprocessing.get_context("spawn")
    for name in ("ours", "trl"):
        with ctx.Pool(1) as pool:
            memory[name] = pool.apply(
                measure_memory,
                (
                    name,
                    args.cache_dir,
                    args.proxy,
                    args.memory_steps,
                    Path(args.out) / f"{name}-mem",
                ),
            )

    def quality(policy):
        m, _, _ = evaluate_policy(
            policy.eval(), base, tb.tokenizer, tb.eval_prompts[:100], gold=tb.gold, proxy=reward,
            num_samples=2, max_new_tokens=MAX_NEW_TOKENS, seed=1,
        )  # fmt: skip
        return m

    print(
        f"\nB={B} G={G} max_new_tokens={MAX_NEW_TOKENS} steps={args.steps} "
        f"reward={'proxy ' + args.proxy if args.proxy else 'gold'} load={os.getloadavg()[0]:.1f}"
    )
    header = f"{'':<6} {'steps/s':>8} {'peak MiB':>9} {'+MiB':>6} {'gold':>7} {'proxy':>7}"
    print(f"{header} {'kl':>6} {'len':>5}")
    b = quality(base)
    print(f"{'base':<6} {'':>8} {'':>9} {'':>6} {b['gold']:>7.3f} {b['proxy']:>7.3f} "
          f"{b['kl']:>6.2f} {b['length']:>5.1f}")  # fmt: skip
    speed = {}
    for name, runs in results.items():
        speed[name] = statistics.median(r[0] for r in runs)
        qs = [quality(policy) for _, policy in runs]
        q = {k: statistics.mean(x[k] for x in qs) for k in ("gold", "proxy", "kl", "length")}
        baseline, peak = memory[name]
        print(
            f"{name:<6} {speed[name]:>8.3f} {peak:>9.0f} {peak - baseline:>6.0f} "
            f"{q['gold']:>7.3f} {q['proxy']:>7.3f} {q['kl']:>6.2f} {q['length']:>5.1f}   "
            f"(per run: gold {[round(x['gold'], 2) for x in qs]}, kl {[round(x['kl'], 2) for x in qs]})"
        )
    print(f"ratio ours / trl: {speed['ours'] / speed['trl']:.2f}x")


if __name__ == "__main__":
    main()
