"""The length bias of the mitigations study's proxies on base-policy samples (issue 18 item 3).

For each cached proxy member (and the gold, for comparison): the Pearson and Spearman
correlation of its score with completion length (words) on π0's samples of the first 32 train
prompts x 10 (the calibration set the ``length_fit`` shaping fits on), and FiMi-RM's fitted
curve f(ℓ) (``core.length_bias.fit_length_bias``) beside the mean score at each length.

    python benchmarks/length_bias.py [--out /work/bench/length_bias.json]
        [--odin DIR [--length-sign -1] [--length-coef 0.1]]

With ``--odin DIR``, also trains an ODIN proxy (``rm_objective odin``, Chen et al. 2024) as the
study trains member 0 (its pairs, backbone seed 0, 2 epochs, lr 1e-3) into DIR, and reports its
held-out clean accuracy, each head's correlation with length on the held-out pairs, and the
quality head's on the base-policy samples (use it in RL: ``goodhart rl --proxy DIR``).

Needs the study's proxies in the cache (``goodhart run mitigations rl.enabled=false``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from scipy.stats import spearmanr

from goodhartlab.core.length_bias import completion_lengths, fit_length_bias
from goodhartlab.experiments.study import load_config, make_testbed
from goodhartlab.measure.evaluate import sample_rollouts
from goodhartlab.rewards import RewardModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="length_bias.json")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--odin", default=None, help="train an ODIN proxy into this directory")
    parser.add_argument("--length-sign", type=float, default=-1.0)
    parser.add_argument("--length-coef", type=float, default=0.1)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    config = load_config("mitigations")
    tb = make_testbed(config, progress=False)
    proxies = sorted((tb.root / "proxies").glob("rm-*-pretrain-seeds0_1_2_3_4"))
    if not proxies:
        raise SystemExit(f"no cached proxies under {tb.root / 'proxies'}: build them first")
    members = sorted(proxies[0].glob("member_*"))
    policy = tb.load_policy("cpu").eval()
    prompts = list(tb.train_prompts)[: args.prompts]
    ro = sample_rollouts(
        policy,
        tb.tokenizer,
        prompts,
        args.samples,
        max_new_tokens=tb.max_new_tokens,
        generator=torch.Generator().manual_seed(0),
    )
    flat_p = [p for p in prompts for _ in range(args.samples)]
    lengths = completion_lengths(ro.completions)
    sources = {"gold": tb.gold} | {
        m.name: RewardModel.from_pretrained(m, device="cpu") for m in members
    }
    out: dict = {
        "n": len(flat_p),
        "length_mean": lengths.mean().item(),
        "length_min": lengths.min().item(),
        "length_max": lengths.max().item(),
        "sources": {},
    }
    for name, src in sources.items():
        r = torch.as_tensor(src(flat_p, ro.completions)).double()
        _, rep = fit_length_bias(lengths, r)
        out["sources"][name] = {
            "pearson": rep.pearson_before,
            "spearman": float(spearmanr(r.numpy(), lengths.numpy()).statistic),
            "pearson_residual": rep.pearson_after,
            "fit_pearson": rep.fit_pearson,
            "curve": rep.curve,
            "mean_by_length": rep.mean_by_length,
        }
        print(
            f"{name:>9}: rho(r, len) {rep.pearson_before:+.3f}  spearman "
            f"{out['sources'][name]['spearman']:+.3f}  rho(r - f, len) {rep.pearson_after:+.3f}  "
            f"rho(r, f) {rep.fit_pearson:+.3f}"
        )
    if args.odin:
        out["odin"] = _odin(tb, proxies[0], args, flat_p, ro.completions, lengths)
    out["seconds"] = time.perf_counter() - t0
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(
        f"lengths {out['length_min']:.0f}-{out['length_max']:.0f} words (mean "
        f"{out['length_mean']:.1f}); {out['seconds']:.0f} s; written {args.out}"
    )


def _odin(tb, proxy_dir: Path, args, prompts, completions, lengths) -> dict:
    from goodhartlab.core.length_bias import pearson
    from goodhartlab.data import read_pairs
    from goodhartlab.testbeds import backbone_tokenizer
    from goodhartlab.train.rm import RMTrainConfig, train_reward_model

    info = json.loads((proxy_dir / "member_0" / "goodhart_rm.json").read_text())
    pairs_file = sorted((tb.root / "proxies").glob("pairs-*-n6000-noise0.25-seed0.jsonl"))[0]
    config = RMTrainConfig.model_validate(
        info["config"]
        | {"objective": "odin", "length_sign": args.length_sign, "length_coef": args.length_coef}
    )
    t0 = time.perf_counter()
    res = train_reward_model(
        read_pairs(pairs_file),
        backbone_tokenizer(tb, "small"),
        info["backbone"],
        config,
        out_dir=args.odin,
        progress=False,
    )
    r_q = torch.as_tensor(res.reward_model(prompts, completions)).double()
    odin = {
        "train_seconds": time.perf_counter() - t0,
        "clean_accuracy": res.metrics.get("clean_accuracy"),
        "bt_member_0_clean_accuracy": info["metrics"].get("clean_accuracy"),
        "heads_on_eval_pairs": res.pair_inputs["length_heads"],
        "rho_quality_base_samples": float(pearson(r_q, lengths)),
    }
    print(f"odin: {odin}")
    return odin


if __name__ == "__main__":
    main()
