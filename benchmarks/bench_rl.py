"""Benchmark our GRPO loop against TRL 1.16's GRPOTrainer on the same tiny problem.

    python benchmarks/bench_rl.py [--steps 30] [--repeats 2] [--proxy RM_DIR] [--cache-dir DIR]

Same policy (the toy_text base policy), same reward (a proxy reward model with --proxy, else
the toy_text gold), same batch (B = 8 prompts × G = 8 completions = 64 rows, one optimizer
step per generation batch), same completion budget (64 tokens), temperature 1, lr 1e-4
constant, AdamW, gradient clipping 1.0, β = 0 (no reference model), loss "grpo", rewards
scaled by the group std, one iteration per batch. TRL: ``bf16=False``, ``use_cpu=True``,
``disable_dropout=True``. One process, one torch thread; the two loops alternate
(``--repeats``) so that load from other jobs hits both alike.

Reported: steps/s (a step = sample 64 completions, score them, one update), the ratio, the
peak resident memory each loop adds (VmHWM reset through /proc/self/clear_refs where the
kernel allows, else a 10 ms RSS poll), and gold / proxy on 100 held-out prompts (2 samples
each) after the same number of steps, with the base policy for reference.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from pathlib import Path

import torch

B, G, MAX_NEW_TOKENS, LR = 8, 8, 64, 1e-4


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class PeakRSS:
    """Peak resident memory (MiB) above the level at entry, polled every 10 ms."""

    def __enter__(self):
        self.start = _rss_kb()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _rss_kb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_kb())
        self.added_mib = (self.peak - self.start) / 1024


def run_ours(policy_path, tokenizer, reward, prompts, eval_prompts, gold, steps, out):
    from goodhartlab.optimize.rl import RLConfig, run_rl
    from goodhartlab.optimize.rl_rundir import read_jsonl

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
        seed=0,
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


def run_trl(policy_path, tokenizer, reward, prompts, steps, out):
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
        seed=0,
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
    ap.add_argument("--proxy", default=None, help="reward-model directory (default: the gold)")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--out", default="/tmp/bench_rl")
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import shutil

    from goodhartlab.measure import evaluate_policy
    from goodhartlab.rewards import RewardModel
    from goodhartlab.testbeds import get_testbed

    tb = get_testbed("toy_text", cache_dir=args.cache_dir)
    tokenizer = tb.tokenizer
    reward = RewardModel.from_pretrained(args.proxy) if args.proxy else tb.gold
    base = tb.load_policy()
    results = {"ours": [], "trl": []}
    for rep in range(args.repeats):
        for name in ("ours", "trl"):
            out = Path(args.out) / f"{name}{rep}"
            shutil.rmtree(out, ignore_errors=True)
            with PeakRSS() as mem:
                if name == "ours":
                    policy, times = run_ours(
                        tb.policy_path,
                        tokenizer,
                        reward,
                        tb.train_prompts,
                        tb.eval_prompts,
                        tb.gold,
                        args.steps,
                        out,
                    )
                else:
                    policy, times = run_trl(
                        tb.policy_path, tokenizer, reward, tb.train_prompts, args.steps, out
                    )
            steady = times[1:] if len(times) > 1 else times  # the first step warms up
            results[name].append(
                {
                    "steps_per_s": 1 / statistics.mean(steady),
                    "mem_mib": mem.added_mib,
                    "policy": policy,
                }
            )
            print(
                f"{name} run {rep}: {1 / statistics.mean(steady):.3f} steps/s, "
                f"+{mem.added_mib:.0f} MiB peak",
                flush=True,
            )

    def quality(policy):
        m, _ = evaluate_policy(
            policy.eval(),
            base,
            tokenizer,
            tb.eval_prompts[:100],
            gold=tb.gold,
            proxy=reward,
            num_samples=2,
            max_new_tokens=MAX_NEW_TOKENS,
            seed=1,
        )
        return m

    print(
        f"\nB={B} G={G} max_new_tokens={MAX_NEW_TOKENS} steps={args.steps} "
        f"reward={'proxy ' + args.proxy if args.proxy else 'gold'} load={os.getloadavg()[0]:.1f}"
    )
    print(f"{'':<6} {'steps/s':>8} {'peak MiB':>9} {'gold':>7} {'proxy':>7} {'kl':>6} {'len':>5}")
    b = quality(base)
    print(
        f"{'base':<6} {'':>8} {'':>9} {b['gold']:>7.3f} {b['proxy']:>7.3f} {b['kl']:>6.2f} {b['length']:>5.1f}"
    )
    speed = {}
    for name, runs in results.items():
        speed[name] = statistics.median(r["steps_per_s"] for r in runs)
        mem = max(r["mem_mib"] for r in runs)
        q = quality(runs[0]["policy"])
        print(
            f"{name:<6} {speed[name]:>8.3f} {mem:>9.0f} {q['gold']:>7.3f} {q['proxy']:>7.3f} "
            f"{q['kl']:>6.2f} {q['length']:>5.1f}"
        )
    print(f"ratio ours / trl: {speed['ours'] / speed['trl']:.2f}x")


if __name__ == "__main__":
    main()
