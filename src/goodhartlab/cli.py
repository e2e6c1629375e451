"""The ``goodhart`` command.

Plain ``argparse`` rather than typer/click: no extra dependency, sub-commands with their own
help, and the ``key=value`` overrides of ``goodhart run`` are ordinary positional arguments.
Heavy imports (torch, transformers) happen inside the sub-commands so ``goodhart --help`` is
instant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from goodhartlab.cli_args import add_model_arguments, given_fields
from goodhartlab.experiments.dispatch import MissingExtraError
from goodhartlab.registry import REGISTRIES, TESTBEDS

# Nothing in goodhart-lab reaches a model hub: defaults a user can still override.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def _parse_seeds(text: str) -> list[int]:
    """``"0-4"`` -> [0, 1, 2, 3, 4]; ``"0,2,5"`` -> [0, 2, 5]."""
    out: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part:
                lo, hi = part.split("-")
                out.extend(range(int(lo), int(hi) + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--seeds: expected e.g. 0-4 or 0,2,5, got {text!r}"
        ) from None
    if not out:
        raise argparse.ArgumentTypeError("--seeds: expected at least one seed")
    return out


def _testbed(args):
    from goodhartlab.testbeds import get_testbed

    return get_testbed(args.testbed, cache_dir=args.cache_dir)


def cmd_testbed(args) -> int:
    from goodhartlab.testbeds import check_backbone_size

    for size in args.backbones:
        check_backbone_size(args.testbed, size, where="--backbones")
    tb = _testbed(args)
    tb.policy_path  # noqa: B018 - builds (or verifies) the tokenizer and base policy
    for size in args.backbones:
        tb.backbone_path(size)
    print(
        json.dumps(
            {
                "cache": str(tb.root),
                "policy": str(tb.policy_path),
                "train_prompts": len(tb.train_prompts),
                "eval_prompts": len(tb.eval_prompts),
                "gold_version": tb.gold_version,
            },
            indent=2,
        )
    )
    return 0


def cmd_data(args) -> int:
    from goodhartlab.data import label_with_gold, sample_pairs, write_pairs

    tb = _testbed(args)
    import numpy as np

    rng = np.random.default_rng(args.seed)
    prompts = [tb.train_prompts[i] for i in rng.integers(len(tb.train_prompts), size=args.pairs)]
    policy = tb.load_policy(args.device)
    pairs = sample_pairs(
        policy,
        tb.tokenizer,
        prompts,
        max_new_tokens=tb.max_new_tokens,
        temperature=args.temperature,
        seed=args.seed,
        device=args.device,
    )
    labelled = label_with_gold(pairs, tb.gold, rule=args.rule, noise=args.noise, seed=args.seed)
    write_pairs(labelled, args.out)
    flipped = sum(bool((p.meta or {}).get("flipped")) for p in labelled)
    print(
        f"wrote {len(labelled)} pairs to {args.out} ({flipped} labels flipped, noise={args.noise})"
    )
    return 0


def cmd_train_rm(args) -> int:
    from goodhartlab.data import read_pairs
    from goodhartlab.train.rm import RMTrainConfig, train_ensemble

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out: {out} is a file; expected a directory for the reward models")
    if args.backbone is None:
        from goodhartlab.testbeds import check_backbone_size

        check_backbone_size(args.testbed, args.size, where="--size")
    pairs = read_pairs(args.data)
    if args.backbone is not None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.backbone, trust_remote_code=False)
        backbones = [args.backbone] * len(args.seeds)
    else:
        tb = _testbed(args)
        from goodhartlab.testbeds import backbone_tokenizer

        tokenizer = backbone_tokenizer(tb, args.size)
        if args.pretrain_seeds:
            backbones = [str(tb.backbone_path(args.size, seed=s)) for s in args.seeds]
        else:
            backbones = [str(tb.backbone_path(args.size))] * len(args.seeds)
    config = RMTrainConfig(
        **given_fields(args, RMTrainConfig.model_fields, ("device",)), device=args.device
    )
    from goodhartlab.registry import RM_OBJECTIVES

    if RM_OBJECTIVES.entry(config.objective).meta.get("adversarial_search"):
        result = _train_reform_members(args, pairs, tokenizer, backbones, config)
    else:
        result = train_ensemble(pairs, tokenizer, backbones, args.seeds, config, args.out)
    print(json.dumps(result, indent=2, default=str))
    return 0


def _train_reform_members(args, pairs, tokenizer, backbones, config):
    """``--objective reform``: one REFORM model per seed (``train.rm_reform``), searching with
    the testbed's base policy and relabelling with its gold; saved as ``train_ensemble`` saves."""
    from goodhartlab.train.rm import write_ensemble_index
    from goodhartlab.train.rm_reform import policy_sampler, train_reform

    tb = _testbed(args)
    sample = policy_sampler(
        tb.load_policy(args.device),
        tb.tokenizer,
        max_new_tokens=tb.max_new_tokens,
        device=args.device,
    )
    paths, metrics, reports = [], [], []
    for i, (seed, backbone) in enumerate(zip(args.seeds, backbones, strict=True)):
        member = train_reform(
            pairs,
            tokenizer,
            backbone,
            config.model_copy(update={"seed": seed}),
            sample=sample,
            gold=tb.gold,
            out_dir=Path(args.out) / f"member_{i}",
        )
        paths.append(member.path)
        metrics.append(member.metrics)
        reports.append(member.pair_inputs["reform"])
    write_ensemble_index(args.out, paths, args.seeds, backbones, metrics)
    return {"paths": paths, "metrics": metrics, "reform": reports}


def _read_prompts(path: str) -> list[str]:
    """Prompts from a .jsonl file (a "prompt" field per line), a .json list, or a text file
    (one prompt per non-empty line)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start})") from None
    if path.endswith(".jsonl"):
        prompts = []
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                prompt = json.loads(line)["prompt"]
            except (ValueError, KeyError, TypeError):
                raise ValueError(
                    f'{path}:{i}: expected a JSON object with a "prompt" field'
                ) from None
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError(f'{path}:{i}: "prompt" must be a non-empty string, got {prompt!r}')
            prompts.append(prompt)
    elif path.endswith(".json"):
        prompts = json.loads(text)
        if not isinstance(prompts, list) or not all(
            isinstance(x, str) and x.strip() for x in prompts
        ):
            raise ValueError(f"{path}: expected a JSON list of non-empty prompt strings")
    else:
        prompts = [line for line in text.splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"{path}: no prompts in the file")
    from goodhartlab.data.schema import MAX_TEXT_CHARS

    long = next((i for i, x in enumerate(prompts, 1) if len(x) > MAX_TEXT_CHARS), None)
    if long is not None:
        raise ValueError(f"{path}: prompt {long} is longer than {MAX_TEXT_CHARS:,} characters")
    return prompts


def cmd_bon(args) -> int:
    from goodhartlab.optimize.bon import BonStudyConfig, run_bon_study
    from goodhartlab.report.plots import plot_bon_curves

    settings = given_fields(args, BonStudyConfig.model_fields, ("device",))
    BonStudyConfig(**settings, device=args.device)  # a bad setting fails before any build
    testbed = args.testbed or ("toy_text" if args.policy is None else None)
    tb = (
        _testbed(argparse.Namespace(testbed=testbed, cache_dir=args.cache_dir)) if testbed else None
    )
    if tb is None and (args.prompts is None or args.gold is None):
        raise ValueError("--policy without --testbed needs --prompts FILE and --gold RM_DIR")
    policy = args.policy or str(tb.policy_path)
    tokenizer = tb.tokenizer if tb is not None and args.policy is None else None
    prompts = _read_prompts(args.prompts) if args.prompts else tb.eval_prompts
    gold = args.gold or tb.gold
    ensembles = {}
    for i, dirs in enumerate(args.ensemble or []):
        name = Path(dirs[0]).name if len(dirs) == 1 else f"ensemble{i}"
        ensembles[name if name not in ensembles else f"{name}#{i}"] = (
            dirs[0] if len(dirs) == 1 else dirs
        )
    if tb is not None:
        settings.setdefault("max_new_tokens", tb.max_new_tokens)
    config = BonStudyConfig(**settings, device=args.device)
    result = run_bon_study(
        args.out,
        policy=policy,
        tokenizer=tokenizer,
        prompts=prompts,
        gold=gold,
        proxies=args.proxies or [],
        ensembles=ensembles,
        config=config,
        pool_dir=args.pool,
        plot=plot_bon_curves,
        progress=True,
    )

    def num(
        x, width: int = 7, digits: int = 3
    ) -> str:  # summary.json writes undefined values as null
        return f"{x:>{width}.{digits}f}" if x is not None else f"{'-':>{width}}"

    shown = {m: s for m, s in result.summary["methods"].items() if s["kind"] != "member"}
    w = max(len(m) for m in shown)
    print(
        f"{'method':<{w}} {'n_peak':>6} {'gold_peak':>9} {'gold@N':>8} {'drop [95% CI]':>26} {'alpha':>7} {'beta':>7} {'r2':>5}"
    )
    for m, s in shown.items():
        ci = f"{num(s['drop'], 0)} [{num(s.get('drop_lo'), 0)}, {num(s.get('drop_hi'), 0)}]"
        print(
            f"{m:<{w}} {s['n_peak']:>6} {num(s['gold_peak'], 9)} {num(s['gold_final'], 8)} {ci:>26} "
            f"{num(s['alpha'])} {num(s['beta'])} {num(s['r2'], 5, 2)}"
        )
    print(f"wrote {args.out}/metrics.jsonl, summary.json, plots/bon.png")
    return 0


def cmd_rl(args) -> int:
    from goodhartlab.optimize.rl_launch import launch_rl, settings

    given = given_fields(args, settings())
    if getattr(args, "stop_on_alarm", False):
        given["monitor"] = {**(given.get("monitor") or {}), "stop_on_alarm": True}
    result = launch_rl(
        given,
        out=getattr(args, "out", None),
        resume=getattr(args, "resume", None),
        read_prompts=_read_prompts,
    )
    summary = json.loads((result.out_dir / "summary.json").read_text())
    base, final, peak = summary["base"], summary["final"], summary["peak_gold"]
    print(f"{'':<6} {'step':>6} {'kl':>8} {'gold':>8} {'proxy':>8}")
    for label, r in (("base", base), ("peak", peak), ("final", final)):
        print(f"{label:<6} {r['step']:>6} {r['kl']:>8.3f} {r['gold']:>8.3f} {r['proxy']:>8.3f}")
    print(f"wrote {result.out_dir}/metrics.jsonl, samples.jsonl, summary.json, checkpoints/")
    return 0


def cmd_dpo(args) -> int:
    from goodhartlab.data import PreferencePair, read_pairs
    from goodhartlab.optimize.daa import DAAConfig, run_daa
    from goodhartlab.optimize.rl_launch import monitor_sources, reward_source
    from goodhartlab.rewards.pipeline import RewardPipelineConfig

    tb = _testbed(args)
    proxy = None
    if args.proxy or args.ensemble:
        proxy = reward_source({"proxy": args.proxy, "ensemble": args.ensemble}, args.device)
    extra = {k: getattr(args, k, None) for k in ("monitor_heldout", "monitor_ensemble")}
    if any(extra.values()) and getattr(args, "monitor", None) is None:
        raise ValueError("--monitor-heldout / --monitor-ensemble: they are read by --monitor")
    reward = given_fields(args, ("aggregator", "aggregator_params"))
    fields = given_fields(args, DAAConfig.model_fields, ("device",))
    if getattr(args, "stop_on_alarm", False):
        fields["monitor"] = {**(fields.get("monitor") or {}), "stop_on_alarm": True}
    config = DAAConfig(
        **fields,
        max_new_tokens=tb.max_new_tokens,
        device=args.device,
        reward=RewardPipelineConfig(**reward),
    )
    if args.pairs:
        pairs = read_pairs(args.pairs)
    elif config.online:
        # Online mode only needs prompts; the labels come from the proxy each round.
        pairs = [PreferencePair(prompt=p, chosen="", rejected="") for p in tb.train_prompts]
    else:
        raise ValueError("--pairs FILE is required (offline training needs preference pairs)")
    result = run_daa(
        args.out,
        policy=str(tb.policy_path),
        tokenizer=tb.tokenizer,
        pairs=pairs,
        gold=tb.gold,
        eval_prompts=tb.eval_prompts,
        config=config,
        proxy=proxy,
        resume=args.resume,
        progress=True,
        monitor_sources=monitor_sources(extra, args.device) if config.monitor else None,
    )
    summary = json.loads((result.out_dir / "summary.json").read_text())
    base, final, peak = summary["base"], summary["final"], summary["peak_gold"]
    print(f"{'':<6} {'step':>6} {'epoch':>6} {'kl':>8} {'gold':>8} {'win':>6} {'len':>6}")
    for label, r in (("base", base), ("peak", peak), ("final", final)):
        print(
            f"{label:<6} {r['step']:>6} {r['epoch_fraction']:>6.2f} {r['kl']:>8.3f} "
            f"{r['gold']:>8.3f} {r['win_rate']:>6.3f} {r['length']:>6.1f}"
        )
    print(f"skipped pairs: {summary['skipped']}")
    print(f"wrote {result.out_dir}/metrics.jsonl, summary.json, checkpoints/")
    return 0


def cmd_eval_rm(args) -> int:
    from goodhartlab.measure.rm_eval import format_table, run_eval_rm
    from goodhartlab.report.rm_eval_plot import plot_rm_eval

    try:
        params = json.loads(args.reward_params) if args.reward_params else None
    except ValueError as e:
        raise ValueError(f"--reward-params: expected a JSON object ({e})") from None
    if params is not None and not isinstance(params, dict):
        raise ValueError(f"--reward-params: expected a JSON object, got {args.reward_params!r}")
    reward = {"rm": args.rm, "ensemble": args.ensemble, "reward": args.reward, "gold": args.gold}
    result, written = run_eval_rm(
        args.data,
        args.out,
        reward_options={
            **reward,
            "reward_params": params,
            "device": args.device,
            "cache_dir": args.cache_dir,
        },
        batch_size=args.batch_size,
        aggregator=args.aggregator,
        sections=_section_map(args.sections),
        plot=plot_rm_eval,
        ties=args.ties,
        n_boot=args.bootstrap,
        seed=args.seed,
        ece_bins=args.ece_bins,
        length_tolerance=args.length_tolerance,
        unknown_subsets=args.unknown_subsets,
    )
    print(format_table(result))
    print(f"wrote {', '.join(str(p) for p in written)}")
    return 0


def _section_map(text: str):
    """``--sections``: rewardbench, none, or a section-map JSON file."""
    from goodhartlab.measure.rm_eval import REWARDBENCH_SECTIONS, SectionMap

    if text == "rewardbench":
        return REWARDBENCH_SECTIONS
    if text == "none":
        return None
    return SectionMap.from_json(text)


def cmd_reward_bench(args) -> int:
    from goodhartlab.testbeds.toy_text.reward_bench import BENCH_VERSION, write_reward_bench

    rows, sections = write_reward_bench(
        args.out, args.per_subset, seed=args.seed, testbed_seed=args.testbed_seed
    )
    n = sum(1 for _ in rows.open())
    print(f"wrote {n} rows of {BENCH_VERSION} to {rows} and its section map to {sections}")
    print(f"score a reward model: goodhart eval-rm {rows} --sections {sections} --rm DIR --out DIR")
    return 0


def cmd_rm_downstream(args) -> int:
    from goodhartlab.experiments.rm_downstream import format_correlations, run_rm_downstream

    result = run_rm_downstream(
        args.out,
        grid=args.grid,
        per_subset=args.per_subset,
        prompts=args.prompts,
        pool_size=args.pool_size,
        ns=args.ns,
        siblings=args.siblings,
        rl_steps=args.rl_steps,
        rl_eval_prompts=args.rl_eval_prompts,
        rl_seeds=args.rl_seeds,
        rl_proxies=args.rl_proxies,
        n_boot=args.bootstrap,
        cache_dir=args.cache_dir,
    )
    print(format_correlations(result))
    print(f"wrote {args.out}/rm_downstream.json, rm_downstream.txt, rm_downstream.png")
    return 0


def cmd_run(args) -> int:
    from goodhartlab.experiments.study import load_config, run_study

    config_path, overrides = args.config, list(args.overrides)
    if config_path is not None and "=" in config_path and not os.path.isfile(config_path):
        config_path, overrides = None, [args.config, *overrides]
    where = {"backend": args.backend, "workers": args.workers, "threads": args.threads}
    if args.resume:
        if args.methods:
            raise ValueError(
                "--methods with --resume: a resumed study runs the methods of its config.yaml"
            )
        config = load_config(Path(args.resume) / "config.yaml", overrides, plugins=args.plugin)
        run_dir = run_study(config, args.resume, resume=True, **where)
    else:
        methods = (
            [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
        )
        config = load_config(config_path, overrides, plugins=args.plugin, methods=methods)
        bon = (
            f"best-of-n over {config.bon.prompts} prompts x {config.bon.pool_size}"
            if config.bon.enabled
            else "no best-of-n"
        )
        rl = f"{len(config.rl.methods)} RL runs" if config.rl.enabled else "no RL"
        print(
            f"goodhart run: study {config.name!r} on {config.testbed} "
            f"({config.proxies.noise:.0%} label noise, {len(config.proxies.seeds)} {config.proxies.size} "
            f"proxies, {bon}, {rl})"
        )
        run_dir = run_study(config, args.run_dir, **where)
    print(f"goodhart run: results in {run_dir} (report.html, summary.json, metrics.jsonl, plots/)")
    return 0


def cmd_list(args) -> int:
    from goodhartlab.registry import REGISTRIES

    for kind, registry in REGISTRIES.items():
        if args.kind not in (None, kind):
            continue
        print(f"{kind} ({registry.kind}s: {registry.doc})")
        entries = registry.entries()
        if not entries:
            print("  (none registered yet)")
        for e in entries:
            params = ", ".join(
                f"{n}={'required' if f.is_required() else f.get_default(call_default_factory=True)!r}"
                for n, f in e.params.model_fields.items()
            )
            where = "" if e.builtin else f"  [plugin {e.module}]"
            print(f"  {e.name:<16} {e.description}{where}")
            if params:
                print(f"  {'':<16} params: {params}")
            if e.paper:
                print(f"  {'':<16} {e.paper}")
        print()
    return 0


def cmd_report(args) -> int:
    from goodhartlab.report import build_report
    from goodhartlab.report.report import check_study_dir

    report = build_report(check_study_dir(args.run_dir))
    print(report["verdict"])
    print(f"wrote {args.run_dir}/report.html, summary.json, metrics.jsonl, plots/")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def _common(sp) -> None:
    """Options every testbed command takes."""
    sp.add_argument(
        "--testbed", default="toy_text", choices=TESTBEDS.names(), help="(default: toy_text)"
    )
    sp.add_argument(
        "--cache-dir",
        default=None,
        help="testbed cache (default: $GOODHART_CACHE or ~/.cache/goodhart-lab)",
    )
    sp.add_argument("--device", default="cpu", help="cpu or cuda")


def _add_list_command(sub, common) -> None:
    """``goodhart list``."""
    ls = sub.add_parser(
        "list", help="the registered parts of every kind (or of one), with their papers"
    )
    ls.add_argument("kind", nargs="?", choices=list(REGISTRIES), help="one kind only")
    ls.set_defaults(func=cmd_list)


def _add_run_command(sub, common) -> None:
    """``goodhart run``."""
    r = sub.add_parser("run", help="run a study end to end (the default study without arguments)")
    r.add_argument("config", nargs="?", help="study config YAML")
    r.add_argument("overrides", nargs="*", help="key=value overrides, e.g. bon.pool_size=128")
    r.add_argument("--resume", metavar="RUN_DIR", help="finish an interrupted study")
    r.add_argument(
        "--methods",
        default=None,
        metavar="A,B,...",
        help="run only these rl.methods of the config (and the baselines they name), with the "
        "claims about them alone: a part of a study with its settings",
    )
    r.add_argument(
        "--run-dir", default=None, help="run directory (default runs/<name>/<timestamp>)"
    )
    r.add_argument(
        "--backend",
        choices=["local", "ray"],
        default="local",
        help="where the independent RL and DAA runs go: local (a process pool; the default) "
        "or ray (Ray tasks, on the cluster of $RAY_ADDRESS if set; pip install "
        "'goodhart-lab[ray]')",
    )
    r.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        help="runs at once (default: the CPU cores of this machine; 1: one after the other "
        "in this process); each worker gets --threads torch threads, capped so that "
        "workers x threads <= cores",
    )
    r.set_defaults(func=cmd_run)


def _add_testbed_command(sub, common) -> None:
    """``goodhart testbed``."""
    t = sub.add_parser(
        "testbed", help="build (or verify) a testbed's cached tokenizer, policy and backbones"
    )
    common(t)
    t.add_argument(
        "--backbones", nargs="*", default=[], help="also build these reward-model backbone sizes"
    )
    t.set_defaults(func=cmd_testbed)


def _add_data_command(sub, common) -> None:
    """``goodhart data``."""
    d = sub.add_parser(
        "data", help="sample preference pairs from the base policy and label them with gold"
    )
    common(d)
    d.add_argument("--pairs", type=_positive_int, default=5000)
    d.add_argument("--noise", type=float, default=0.25, help="fraction of labels flipped")
    d.add_argument("--rule", choices=["argmax", "bradley_terry"], default="argmax")
    d.add_argument("--temperature", type=float, default=1.0)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", required=True, help="pairs file (.jsonl or .parquet)")
    d.set_defaults(func=cmd_data)


def _add_train_rm_command(sub, common) -> None:
    """``goodhart train-rm``."""
    m = sub.add_parser(
        "train-rm", help="train proxy reward models (Bradley-Terry) on preference pairs"
    )
    common(m)
    m.add_argument("--data", required=True, help="pairs file (.jsonl or .parquet)")
    m.add_argument("--size", default="small", help="testbed backbone size: small | medium | large")
    m.add_argument(
        "--backbone", default=None, help="local path or hub name of a backbone instead of --size"
    )
    m.add_argument(
        "--seeds", type=_parse_seeds, default=[0], help="e.g. 0-4 for a 5-member ensemble"
    )
    m.add_argument(
        "--pretrain-seeds",
        action="store_true",
        help="members also start from differently-seeded backbones",
    )
    from goodhartlab.experiments.study import ProxyConfig
    from goodhartlab.train.rm import RMTrainConfig

    # The command's recipe is the study's proxies' (ProxyConfig: 2 epochs at lr 1e-3).
    add_model_arguments(
        m,
        RMTrainConfig,
        exclude=("seed", "device"),
        values={f: ProxyConfig.model_fields[f].default for f in ("epochs", "lr")},
    )
    m.add_argument("--out", required=True, help="output directory")
    m.set_defaults(func=cmd_train_rm)


def _add_bon_command(sub, common) -> None:
    """``goodhart bon``."""
    b = sub.add_parser(
        "bon", help="best-of-n study: sample a pool, score it, gold and proxy curves against KL"
    )
    b.add_argument(
        "--testbed",
        default=None,
        choices=TESTBEDS.names(),
        help="testbed name (default: toy_text unless --policy is given)",
    )
    b.add_argument(
        "--cache-dir",
        default=None,
        help="testbed cache (default: $GOODHART_CACHE or ~/.cache/goodhart-lab)",
    )
    b.add_argument("--device", default="cpu", help="cpu or cuda")
    b.add_argument(
        "--policy",
        default=None,
        help="base policy: local path or hub name (instead of the testbed's)",
    )
    b.add_argument(
        "--prompts",
        default=None,
        help="prompts file: .jsonl (field 'prompt'), .json list, or one per line",
    )
    b.add_argument(
        "--gold",
        default=None,
        help="reward-model directory used as gold (instead of the testbed's gold)",
    )
    b.add_argument(
        "--proxies", nargs="+", default=[], metavar="DIR", help="single proxy reward models"
    )
    b.add_argument(
        "--ensemble",
        nargs="+",
        action="append",
        metavar="DIR",
        help="one ensemble: an ensemble directory (ensemble.json) or its member directories; repeatable",
    )
    from goodhartlab.optimize.bon import BonStudyConfig

    add_model_arguments(
        b,
        BonStudyConfig,
        exclude=("device",),
        default_text={"max_new_tokens": "the testbed's"},
    )
    b.add_argument(
        "--pool", default=None, help="pool directory to reuse across runs (default: OUT/pool)"
    )
    b.add_argument("--out", required=True, help="run directory")
    b.set_defaults(func=cmd_bon)


def cmd_monitor(args) -> int:
    from goodhartlab.artifacts import atomic_write_json
    from goodhartlab.experiments.monitor_offline import monitor_path
    from goodhartlab.monitor.live import MonitorConfig

    settings = dict(args.monitor or {})
    if args.stop_on_alarm:
        raise ValueError("--stop-on-alarm: a finished run cannot be stopped; drop the flag")
    config = MonitorConfig(**settings)
    runs = monitor_path(args.path, config, reward_columns=args.reward_column)
    print(f"{'run':<36} {'points':>6} {'alarm':>6} {'at step':>8}  reasons")
    for run in runs:
        last = run["readings"][-1]
        first = next((r for r in run["readings"] if r["alarm"]), None)
        print(
            f"{run['run']:<36} {run['points']:>6} {'YES' if run['alarm'] else 'no':>6} "
            f"{run['alarm_step'] if run['alarm'] else '':>8}  "
            f"{', '.join(first['reasons']) if first else ''}"
        )
        if run.get("skipped_rows"):
            print(f"  skipped rows: {run['skipped_rows']}")
        if not run["alarm"] and last["alarm_score"] is None and not config.thresholds:
            print("  (no alarm rule: give alarm=NAME|FILE or thresholds to get a verdict)")
    if args.json:
        atomic_write_json(args.json, {"config": config.model_dump(mode="json"), "runs": runs})
        print(f"wrote {args.json}")
    return 0


def cmd_monitor_bench(args) -> int:
    from goodhartlab.experiments.monitor_bench import analyze_bench, bench_summary_line

    study_dir = args.analyze
    if study_dir is None:
        from goodhartlab.experiments.study import load_config, run_study

        where = {"workers": args.workers, "threads": args.threads}
        if args.resume:
            config = load_config(Path(args.resume) / "config.yaml", args.overrides)
            study_dir = run_study(config, args.resume, resume=True, **where)
        else:
            config = load_config("monitor-bench", args.overrides)
            study_dir = run_study(config, args.run_dir, **where)
    result = analyze_bench(study_dir)
    print(Path(study_dir, "monitor_bench.md").read_text())
    print(bench_summary_line(result))
    print(f"wrote {study_dir}/monitor_bench.json, monitor_bench.md, combined_alarm.json, plots/")
    return 0


def _add_monitor_commands(sub, common) -> None:
    """``goodhart monitor`` and ``goodhart monitor-bench``."""
    m = sub.add_parser(
        "monitor",
        help="check a finished run for reward hacking, without gold: a goodhart RL or study "
        "directory (monitor.jsonl) or TRL's completion logs (completions/*.parquet)",
    )
    m.add_argument("path", help="RL run directory, study directory, or TRL output_dir")
    _add_monitor_flags(m, "--settings")
    m.add_argument(
        "--reward-column",
        action="append",
        default=None,
        metavar="NAME",
        help="TRL logs: the reward column(s) optimized (default: the sum of every reward "
        "column); repeatable",
    )
    m.add_argument("--json", default=None, help="also write every reading to this JSON file")
    m.set_defaults(func=cmd_monitor, stop_on_alarm=False)
    b = sub.add_parser(
        "monitor-bench",
        help="the monitor's labelled benchmark: run the packaged monitor-bench study (48 RL "
        "runs) and score every detector against gold on its held-out runs",
    )
    b.add_argument("overrides", nargs="*", help="key=value overrides of the study config")
    b.add_argument("--run-dir", default=None, help="the study directory (default runs/...)")
    b.add_argument("--resume", metavar="RUN_DIR", help="finish an interrupted benchmark study")
    b.add_argument("--analyze", metavar="RUN_DIR", help="only score a finished study's runs")
    b.add_argument("--workers", type=_positive_int, default=None, help="runs at once")
    b.set_defaults(func=cmd_monitor_bench)


def _monitor_settings(text: str) -> dict:
    from goodhartlab.cli_args import parse_mapping

    return parse_mapping(text)


def _add_monitor_flags(parser, flag: str) -> None:
    """``--monitor [KEY=VALUE,...]`` (MonitorConfig's fields) and ``--stop-on-alarm``."""
    from goodhartlab.monitor.live import MonitorConfig
    from goodhartlab.optimize.rl import RLConfig

    fields = ", ".join(MonitorConfig.model_fields)
    parser.add_argument(
        flag,
        dest="monitor",
        nargs="?",
        const={},
        type=_monitor_settings,
        metavar="KEY=VALUE,...",
        help=f"{RLConfig.model_fields['monitor'].description} Settings ({fields}) as "
        "key=value, e.g. 'patience=2' or 'alarm=none,thresholds={length_drift: 1.5}' "
        "(default: every detector, the packaged toy_text alarm)",
    )
    parser.add_argument(
        "--stop-on-alarm",
        dest="stop_on_alarm",
        action="store_true",
        help="with --monitor: stop the run when the alarm fires; before_alarm/ keeps the "
        "last policy the monitor had not flagged",
    )


def _add_rl_command(sub, common) -> None:
    """``goodhart rl``."""
    from goodhartlab.rewards.pipeline import RewardPipelineConfig

    # Flags from RLLaunch, RLConfig and RewardPipelineConfig (cli_args): only the options
    # given are set, so --resume can tell them from defaults.
    rl = sub.add_parser(
        "rl",
        argument_default=argparse.SUPPRESS,
        help="RL (GRPO / RLOO / PPO) against a proxy; gold, proxy and KL every few steps",
    )
    from goodhartlab.optimize.rl import RLConfig
    from goodhartlab.optimize.rl_launch import CONFIG_FIELDS, REWARD_FIELDS, RLLaunch

    add_model_arguments(rl, RLLaunch)
    add_model_arguments(
        rl,
        RLConfig,
        [f for f in CONFIG_FIELDS if f != "monitor"],
        default_text={"max_new_tokens": "the testbed's, else 64"},
    )
    add_model_arguments(rl, RewardPipelineConfig, REWARD_FIELDS)
    _add_monitor_flags(rl, "--monitor")
    rl.add_argument("--out", help="a new run directory")
    rl.add_argument(
        "--resume", metavar="RUN_DIR", help="continue a killed run from its last checkpoint"
    )
    rl.set_defaults(func=cmd_rl)


def _add_report_command(sub, common) -> None:
    """``goodhart report``."""
    rep = sub.add_parser(
        "report", help="(re)build a study's report: plots, table, verdict, report.html"
    )
    rep.add_argument("run_dir", metavar="RUN_DIR", help="the run directory of a study")
    rep.set_defaults(func=cmd_report)


def _add_dpo_command(sub, common) -> None:
    """``goodhart dpo``."""
    from goodhartlab.rewards.pipeline import RewardPipelineConfig

    dpo = sub.add_parser(
        "dpo",
        help="direct alignment (DPO / IPO / SLiC / RPO) on preference pairs, offline or online",
    )
    common(dpo)
    from goodhartlab.optimize.daa import DAAConfig

    dpo.add_argument("--pairs", help="preference pairs file (.jsonl or .parquet)")
    dpo.add_argument("--proxy", metavar="DIR", help="proxy reward model (logged; online labeller)")
    dpo.add_argument("--ensemble", nargs="+", metavar="DIR", help="ensemble member directories")
    add_model_arguments(
        dpo,
        DAAConfig,
        exclude=("name", "device", "max_new_tokens", "reward", "monitor"),
        aliases={"eval_points_in_first_epoch": ["--eval-points"]},
    )
    _add_monitor_flags(dpo, "--monitor")
    from goodhartlab.optimize.rl_launch import RLLaunch

    add_model_arguments(dpo, RLLaunch, ("monitor_heldout", "monitor_ensemble"))
    add_model_arguments(dpo, RewardPipelineConfig, ("aggregator", "aggregator_params"))
    dpo.add_argument("--out", required=True, help="run directory")
    dpo.add_argument("--resume", action="store_true", help="continue --out from its checkpoint")
    dpo.set_defaults(func=cmd_dpo)


def _add_eval_rm_command(sub, common) -> None:
    """``goodhart eval-rm``."""
    e = sub.add_parser(
        "eval-rm",
        help="a reward model on RewardBench-format rows: per-subset accuracy, ties, length "
        "baselines, calibration, RewardBench's section scores",
    )
    e.add_argument(
        "data",
        help="rows (prompt, chosen, rejected [a string or a list], subset): .jsonl, .parquet, "
        "or a directory written by datasets' save_to_disk",
    )
    which = e.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--rm", metavar="DIR", help="a reward-model directory (ours or any HF sequence "
        "classifier with one label), or an ensemble directory (ensemble.json)"
    )  # fmt: skip
    which.add_argument("--ensemble", nargs="+", metavar="DIR", help="ensemble member directories")
    which.add_argument(
        "--reward", metavar="NAME", help="a registered reward source (goodhart list reward_source)"
    )
    which.add_argument("--gold", metavar="TESTBED", help="a testbed's programmatic gold reward")
    e.add_argument("--reward-params", metavar="JSON", help="parameters of --reward, a JSON object")
    e.add_argument(
        "--aggregator", default="mean", help="how an ensemble's members combine (default: mean)"
    )
    e.add_argument(
        "--ties",
        choices=["strict", "split"],
        default="strict",
        help="strict: a tie at the top is wrong (RewardBench); split: 1/m for m tied "
        "completions (RewardBench 2) (default: strict)",
    )
    e.add_argument("--bootstrap", type=_positive_int, default=1000, help="resamples (1000)")
    e.add_argument("--seed", type=int, default=0, help="bootstrap seed (0)")
    e.add_argument("--ece-bins", type=_positive_int, default=10, help="ECE bins over [0.5, 1]")
    e.add_argument(
        "--length-tolerance",
        type=float,
        default=0.1,
        help="length-matched rows: every rejected within this fraction of the longer (0.1)",
    )
    e.add_argument(
        "--sections",
        default="rewardbench",
        metavar="rewardbench|none|FILE",
        help="section map of the weighted total: RewardBench 0.1.4's (default), none, or a "
        "JSON file such as the .sections.json goodhart reward-bench writes",
    )
    e.add_argument(
        "--unknown-subsets",
        choices=["unweighted", "error"],
        default="unweighted",
        help="subsets outside the section map: reported but in no section (default), or an error",
    )
    e.add_argument("--batch-size", type=_positive_int, default=64)
    e.add_argument(
        "--cache-dir", default=None, help="testbed cache, for --gold (default: $GOODHART_CACHE)"
    )
    e.add_argument("--device", default="cpu", help="cpu or cuda")
    e.add_argument(
        "--out", required=True, help="output directory: eval_rm.json, scores.jsonl, eval_rm.png"
    )
    e.set_defaults(func=cmd_eval_rm)


def cmd_serve(args) -> int:
    import yaml

    from goodhartlab.integrations.scoring import MonitoredScorer, load_reward
    from goodhartlab.monitor.live import MonitorConfig

    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401

        from goodhartlab.integrations.server import run_server
    except ImportError as e:
        raise MissingExtraError(
            f"goodhart serve needs the serve extra ({e}): pip install 'goodhart-lab[serve]'"
        ) from None
    settings: dict = {}
    if args.monitor_config:
        path = Path(args.monitor_config)
        settings = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(settings, dict):
            raise ValueError(f"--monitor-config {path}: expected a mapping of MonitorConfig fields")
    if args.detectors:
        settings["detectors"] = args.detectors
    for item in args.threshold or []:
        name, sep, value = item.partition("=")
        try:
            settings.setdefault("thresholds", {})[name] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise ValueError(f"--threshold {item!r}: expected DETECTOR=VALUE, e.g. length_drift=2")
    if args.alarm is not None:
        settings["alarm"] = None if args.alarm == "none" else args.alarm
    if args.patience is not None:
        settings["patience"] = args.patience
    config = MonitorConfig(**settings)
    reward = load_reward(args.proxy, args.ensemble, device=args.device)
    heldout = load_reward(args.heldout, device=args.device) if args.heldout else None
    scorer = MonitoredScorer(
        reward, config, heldout=heldout, aggregator=args.aggregator,
        samples_per_point=args.samples_per_point,
    )  # fmt: skip
    print(
        f"goodhart serve: POST http://{args.host}:{args.port}/get_reward (OpenRLHF "
        f"--reward.remote_url), GET /monitor; {args.samples_per_point} samples per point",
        flush=True,
    )
    try:
        run_server(scorer, host=args.host, port=args.port)
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C once it has shut down cleanly
        pass
    print(f"goodhart serve: stopped; monitor: {json.dumps(scorer.feed.summary())}")
    return 0


def _add_reward_bench_command(sub, common) -> None:
    """``goodhart reward-bench``."""
    r = sub.add_parser(
        "reward-bench",
        help="build the toy_text reward benchmark (subsets from the gold's parts, reader "
        "personas, fact-sheet grounding) as RewardBench-format rows for goodhart eval-rm",
    )
    r.add_argument("out", help="rows file (.jsonl); its section map goes to <stem>.sections.json")
    r.add_argument(
        "--per-subset", type=_positive_int, default=100, help="rows of each subset (100)"
    )
    r.add_argument("--seed", type=int, default=0, help="seed of the construction (0)")
    r.add_argument(
        "--testbed-seed",
        type=int,
        default=0,
        help="the toy_text seed whose held-out evaluation prompts are used (0, the default "
        "study's)",
    )
    r.set_defaults(func=cmd_reward_bench)


def _add_rm_downstream_command(sub, common) -> None:
    """``goodhart rm-downstream``."""
    from goodhartlab.experiments.rm_downstream import (
        DEFAULT_GRID,
        DEFAULT_RL_PROXIES,
        DEFAULT_RL_SEEDS,
        DEFAULT_SIBLINGS,
    )

    r = sub.add_parser(
        "rm-downstream",
        help="which reward-model benchmark predicts downstream gold: proxies of varied quality "
        "on toy_text, their benchmark scores against best-of-n and RL gold (rank correlations)",
    )
    r.add_argument("--out", required=True, help="output directory")
    r.add_argument(
        "--grid",
        nargs="+",
        default=list(DEFAULT_GRID),
        metavar="PAIRSxNOISE[@SIZE]",
        help="proxies to train besides the default study's members, on the small backbone "
        f"unless @SIZE says otherwise (default: {' '.join(DEFAULT_GRID)})",
    )
    r.add_argument(
        "--siblings",
        type=int,
        default=DEFAULT_SIBLINGS,
        help="reward models per proxy, other fine-tune seeds, for its ensemble disagreement "
        f"(0: not measured) ({DEFAULT_SIBLINGS})",
    )
    r.add_argument("--per-subset", type=_positive_int, default=100, help="bench rows per subset")
    r.add_argument("--prompts", type=_positive_int, default=64, help="held-out pool prompts")
    r.add_argument("--pool-size", type=_positive_int, default=256, help="samples per prompt")
    r.add_argument("--ns", nargs="+", type=_positive_int, default=[64, 256], help="best-of-n")
    r.add_argument("--rl-steps", type=int, default=40, help="GRPO steps per proxy (0: no RL) (40)")
    r.add_argument("--rl-eval-prompts", type=_positive_int, default=64)
    r.add_argument(
        "--rl-seeds",
        nargs="+",
        type=int,
        default=list(DEFAULT_RL_SEEDS),
        help=f"RL seeds per proxy; RL gold is their mean ({' '.join(map(str, DEFAULT_RL_SEEDS))})",
    )
    r.add_argument(
        "--rl-proxies",
        type=_positive_int,
        default=DEFAULT_RL_PROXIES,
        help="RL on this many proxies, spread evenly over the list (a number at least the "
        f"list's: all) ({DEFAULT_RL_PROXIES})",
    )
    r.add_argument("--bootstrap", type=_positive_int, default=1000, help="resamples of proxies")
    r.add_argument("--cache-dir", default=None, help="testbed cache (default: $GOODHART_CACHE)")
    r.set_defaults(func=cmd_rm_downstream)


def _add_serve_command(sub, common) -> None:
    """``goodhart serve``."""
    s = sub.add_parser(
        "serve",
        help="an HTTP reward server for OpenRLHF's remote reward protocol (POST /get_reward), "
        "the proxy and the reward-hacking monitor inside",
    )
    which = s.add_mutually_exclusive_group(required=True)
    which.add_argument("--proxy", metavar="DIR", help="the reward-model directory to serve")
    which.add_argument(
        "--ensemble", nargs="+", metavar="DIR",
        help="ensemble member directories, or one ensemble directory (ensemble.json)",
    )  # fmt: skip
    s.add_argument("--aggregator", default="mean", help="how an ensemble's members combine")
    s.add_argument(
        "--heldout",
        metavar="DIR",
        help="a reward model the policy is not trained on (monitor only)",
    )
    s.add_argument("--monitor-config", metavar="FILE", help="MonitorConfig fields (YAML or JSON)")
    s.add_argument("--detectors", nargs="+", metavar="NAME", help="detectors to compute")
    s.add_argument(
        "--threshold", action="append", metavar="NAME=VALUE",
        help="alarm when detector NAME is above VALUE; repeatable",
    )  # fmt: skip
    s.add_argument(
        "--alarm", default=None, help="a combined alarm: packaged name or JSON file; none: off"
    )
    s.add_argument("--patience", type=_positive_int, default=None, help="alarming points in a row")
    s.add_argument(
        "--samples-per-point", type=_positive_int, default=128,
        help="samples in each evaluation point; the first point is the reference (128)",
    )  # fmt: skip
    s.add_argument("--host", default="127.0.0.1", help="(default: 127.0.0.1)")
    s.add_argument("--port", type=int, default=5000, help="(default: 5000)")
    s.add_argument("--device", default="cpu", help="cpu or cuda")
    s.set_defaults(func=cmd_serve)


def build_parser() -> argparse.ArgumentParser:
    """The ``goodhart`` parser: global options, then one sub-command per ``_add_*_command``."""
    p = argparse.ArgumentParser(prog="goodhart", description="Measure and mitigate reward hacking.")
    p.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first: its parts (aggregators, shapings, regularizers, testbeds, "
        "detectors, ...) join the registries and can be named in configs and flags; "
        "repeatable (also $GOODHART_PLUGINS, and entry points of the 'goodhartlab' group)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("GOODHART_THREADS", "1")),
        help="torch intra-op threads (default 1, or $GOODHART_THREADS): the tiny models of the "
        "built-in testbeds run fastest on one thread, and a second thread on a busy 2-core "
        "machine made each step ~20x slower (BENCHMARKS.md)",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    _add_list_command(sub, _common)
    _add_run_command(sub, _common)
    _add_testbed_command(sub, _common)
    _add_data_command(sub, _common)
    _add_train_rm_command(sub, _common)
    _add_bon_command(sub, _common)
    _add_rl_command(sub, _common)
    _add_monitor_commands(sub, _common)
    _add_report_command(sub, _common)
    _add_dpo_command(sub, _common)
    _add_eval_rm_command(sub, _common)
    _add_reward_bench_command(sub, _common)
    _add_rm_downstream_command(sub, _common)
    _add_serve_command(sub, _common)
    return p


def _load_plugins(argv: list[str] | None) -> None:
    """Import the plugins before the parser is built, so that its choices include their
    parts (``--plugin`` is read from the command line first, on its own)."""
    from goodhartlab.plugins import load_plugins

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--plugin", action="append", default=[])
    known, _ = pre.parse_known_args(argv)
    load_plugins(known.plugin, where="--plugin")


def main(argv: list[str] | None = None) -> int:
    try:
        _load_plugins(argv)
    except ValueError as e:
        print(f"goodhart: error: {e}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    import torch

    torch.set_num_threads(max(1, args.threads))
    try:
        if getattr(args, "device", None) is not None:
            from goodhartlab.models.loading import check_device

            check_device(args.device, where="--device")
        return args.func(args)
    except (ValueError, OSError, MissingExtraError) as e:  # a user can fix these
        print(f"goodhart {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug: a short message, the traceback in a log
        if os.environ.get("GOODHART_DEBUG"):
            raise
        log = _write_traceback(args.command)
        print(
            f"goodhart {args.command}: internal error: {type(e).__name__}: {e}\n"
            f"  the traceback is in {log} (GOODHART_DEBUG=1 shows it here); please report it",
            file=sys.stderr,
        )
        return 1


def _write_traceback(command: str) -> str:
    """Write the exception being handled to a log under the cache; returns its path."""
    import tempfile
    import traceback

    from goodhartlab.testbeds.toy_text.testbed import default_cache_dir

    root = default_cache_dir()
    try:
        (root / "errors").mkdir(parents=True, exist_ok=True)
        fd, path = tempfile.mkstemp(dir=root / "errors", prefix=f"{command}-", suffix=".log")
    except OSError:
        fd, path = tempfile.mkstemp(prefix=f"goodhart-{command}-", suffix=".log")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f"goodhart {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}")
    return path


if __name__ == "__main__":
    sys.exit(main())
