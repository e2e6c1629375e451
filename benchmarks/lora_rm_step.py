"""Issue 16: trainable parameters and seconds per training step of a SmolLM2-135M reward model
with LoRA (r = 8 on q_proj and v_proj, ``RMTrainConfig.lora``) against full fine-tuning.

    python benchmarks/lora_rm_step.py [--repeats 3]

8 pairs of real_text training prompts with two fixed answers, batch 8 (one step an epoch),
one torch thread. Seconds per step = (time of 3 epochs − time of 1 epoch) / 2, so model loading
and the set-up cancel; the median over ``--repeats``. Builds the real_text testbed's SmolLM2
folder on first use (about 20 s).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from goodhartlab.data import PreferencePair
from goodhartlab.testbeds import backbone_tokenizer, get_testbed
from goodhartlab.train import RMTrainConfig, train_reward_model

GOOD = " A warm, friendly answer that stays on the topic and explains it clearly and kindly."
BAD = " Whatever. I do not care about that, it is boring and I will talk about something else."
SETTINGS = {"lora": {"lora": {"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]}}}
SETTINGS["full"] = {}


def main(repeats: int) -> None:
    torch.set_num_threads(1)
    tb = get_testbed("real_text", progress=False)
    path = str(tb.backbone_path("smollm2"))
    tok = backbone_tokenizer(tb, "smollm2")
    pairs = [
        PreferencePair(prompt=p, chosen=GOOD, rejected=BAD, id=i)
        for i, p in enumerate(tb.train_prompts[:8])
    ]
    out = {}
    for name, extra in SETTINGS.items():
        per_step, result = [], None
        for _ in range(repeats):
            seconds = {}
            for epochs in (1, 3):
                config = RMTrainConfig(
                    batch_size=8, epochs=epochs, lr=1e-4, eval_fraction=0.0, max_length=64, **extra
                )
                t0 = time.perf_counter()
                result = train_reward_model(pairs, tok, path, config, progress=False)
                seconds[epochs] = time.perf_counter() - t0
            per_step.append((seconds[3] - seconds[1]) / 2)
        out[name] = {
            "trainable": result.num_trainable_parameters,
            "total": result.num_parameters,
            "s_per_step_median": statistics.median(per_step),
            "s_per_step": per_step,
        }
        print(name, json.dumps(out[name]), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    main(parser.parse_args().repeats)
