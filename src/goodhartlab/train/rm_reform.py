"""Training a REFORM reward model (objective ``reform``, issue 14 item 6): reward-guided
search for completions the proxy over-scores, relabelled and added to training.

Each of ``reform_rounds`` rounds:

1. train a Bradley-Terry proxy on the current pairs (``train.rm.train_reward_model``);
2. draw ``reform_prompts`` distinct prompts of the training pairs and sample
   ``reform_samples`` (K) base-policy completions for each;
3. score them with the proxy and keep, by ``core.reform.reform_selection``, the
   ``reform_pairs`` prompts whose best-scored sample (the one best-of-K returns) stands out
   most over the prompt's median sample; pair that sample with the median one;
4. label these pairs with the same noisy gold labeler as the training pairs
   (``data.labeling.label_with_gold`` with their ``meta["rule"]`` and ``meta["noise"]``:
   the same flip rate) and add them to the pairs.

Then the final model is trained afresh (same seed) on the original plus all added pairs.
The added pairs are extra gold labels: ``reform_rounds · reform_pairs`` of them; for an
equal label budget give REFORM that many fewer original pairs (``benchmarks/rm_variants.py``
does). The search is best-of-K selection, the simplest reward-guided search; the paper's is
reward-guided controlled decoding.

Measured (``benchmarks/rm_variants.py``, toy_text, 3,000 labels with 25 % flipped, 3 seeds,
one round of 256 pairs from 256 prompts x 16 samples, equal label budget): no gain. The
gold prefers the proxy's best-of-16 pick to the median sample in 53-58 % of the searched
prompts, so at K = 16 on training prompts the pick is rarely a failure the gold would
correct, and a quarter of those labels are then flipped. Clean accuracy 0.629 ± 0.037 (BT
0.650 ± 0.007); best-of-16 gold −0.064 ± 0.037 below BT (paired over prompts), best-of-256
+0.109 ± 0.367 (not resolved). With the 256 pairs as extra labels (3,256 in all): best-of-16
−0.077 ± 0.054, best-of-256 +0.069 ± 0.359. Three rounds of 128 (equal budget): −0.075 ±
0.050 and +0.215 ± 0.383.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from goodhartlab.core.reform import reform_selection
from goodhartlab.data.labeling import RewardFn, label_with_gold
from goodhartlab.data.schema import CompletionPair, PreferencePair

#: ``sample(prompts, k, seed) -> one list of k completions per prompt``.
SampleFn = Callable[[list[str], int, int], list[list[str]]]
#: ``score(prompts, completions) -> Tensor[B]`` (a reward model).
ScoreFn = Callable[[list[str], list[str]], torch.Tensor]


def labeler_of(pairs: Sequence[PreferencePair]) -> tuple[str, float]:
    """(rule, noise) of the gold labeler that labelled ``pairs`` (``label_with_gold``'s
    ``meta``); the same for every pair, else ValueError."""
    found = {((p.meta or {}).get("rule"), (p.meta or {}).get("noise")) for p in pairs}
    if len(found) != 1 or None in next(iter(found)):
        raise ValueError(
            "objective reform: relabels its adversarial pairs with the training pairs' gold "
            "labeler, so every pair must record the same meta['rule'] and meta['noise'] "
            f"(data.label_with_gold); found {sorted(map(str, found))[:4]}"
        )
    rule, noise = next(iter(found))
    return str(rule), float(noise)


def adversarial_pairs(
    score: ScoreFn,
    sample: SampleFn,
    prompts: Sequence[str],
    gold: RewardFn,
    *,
    samples: int,
    num_pairs: int,
    rule: str,
    noise: float,
    seed: int,
    round_index: int = 1,
) -> tuple[list[PreferencePair], dict[str, Any]]:
    """One round of REFORM's search: sample, score with the proxy, select, gold-label.

    Returns the labelled pairs (``meta["reform"]``: round, proxy scores of the adversarial
    and the normal completion, ``adversarial_chosen``) and a report: how many pairs, the
    fraction the (clean) gold prefers the adversarial completion in, the flips.
    """
    prompts = list(prompts)
    texts = sample(prompts, samples, seed)
    if len(texts) != len(prompts) or any(len(t) != samples for t in texts):
        raise ValueError(f"sample: expected {samples} completions for each of {len(prompts)}")
    flat_p = [p for p in prompts for _ in range(samples)]
    flat_c = [c for t in texts for c in t]
    with torch.no_grad():
        r = torch.as_tensor(score(flat_p, flat_c)).detach().double().cpu()
    r = r.reshape(len(prompts), samples)
    keep, adv, normal = reform_selection(r, min(num_pairs, len(prompts)))
    unlabelled = [
        CompletionPair(
            prompt=prompts[i],
            completion_a=texts[i][a],
            completion_b=texts[i][b],
            id=f"reform-{round_index}-{j}",
            meta={
                "reform": {
                    "round": round_index,
                    "proxy_adversarial": float(r[i, a]),
                    "proxy_normal": float(r[i, b]),
                }
            },
        )
        for j, (i, a, b) in enumerate(
            zip(keep.tolist(), adv.tolist(), normal.tolist(), strict=True)
        )
    ]
    labelled = label_with_gold(unlabelled, gold, rule=rule, noise=noise, seed=seed)  # type: ignore[arg-type]
    out = []
    for u, p in zip(unlabelled, labelled, strict=True):
        meta = dict(p.meta)
        meta["reform"] = {**meta["reform"], "adversarial_chosen": p.chosen == u.completion_a}
        out.append(p.model_copy(update={"meta": meta}))
    gold_adv = np.array(
        [p.gold_chosen if p.meta["reform"]["adversarial_chosen"] else p.gold_rejected for p in out]
    )
    gold_norm = np.array(
        [p.gold_rejected if p.meta["reform"]["adversarial_chosen"] else p.gold_chosen for p in out]
    )
    report = {
        "round": round_index,
        "pairs": len(out),
        "searched_prompts": len(prompts),
        "samples": samples,
        "gold_prefers_adversarial": float(np.mean(gold_adv > gold_norm)),
        "label_adversarial_chosen": float(
            np.mean([p.meta["reform"]["adversarial_chosen"] for p in out])
        ),
        "flipped": int(sum(p.meta["flipped"] for p in out)),
        "gold_adversarial_mean": float(gold_adv.mean()),
        "gold_normal_mean": float(gold_norm.mean()),
    }
    return out, report


def policy_sampler(policy, tokenizer, *, max_new_tokens: int, device: str) -> SampleFn:
    """A ``SampleFn`` drawing from ``policy`` (``models.generation.sample_completions``)."""
    from goodhartlab.models.generation import sample_completions

    def sample(prompts: list[str], k: int, seed: int) -> list[list[str]]:
        return sample_completions(
            policy, tokenizer, prompts, k, max_new_tokens=max_new_tokens, seed=seed, device=device
        )

    return sample


def train_reform(
    pairs: Sequence[PreferencePair],
    tokenizer,
    backbone: str | os.PathLike | nn.Module,
    config,
    *,
    sample: SampleFn,
    gold: RewardFn,
    eval_pairs: Sequence[PreferencePair] | None = None,
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
):
    """Train a REFORM reward model (module docstring); returns the final model's
    ``RMTrainResult`` with ``pair_inputs["reform"]``: one report per round
    (``adversarial_pairs``) and the number of added pairs."""
    from goodhartlab.train.rm import _training_pairs, train_reward_model

    if config.margin:
        raise ValueError("objective reform: margin=True is not supported (added pairs have none)")
    train_pairs, eval_pairs, _ = _training_pairs(pairs, eval_pairs, config)
    rule, noise = labeler_of(train_pairs)
    distinct = list(dict.fromkeys(p.prompt for p in train_pairs))
    added: list[PreferencePair] = []
    reports = []
    for rnd in range(1, config.reform_rounds + 1):
        proxy = train_reward_model(  # the round's searcher: reform's loss is Bradley-Terry's
            train_pairs + added,
            tokenizer,
            backbone,
            config.model_copy(update={"objective": "bradley_terry"}),
            eval_pairs=eval_pairs,
            progress=progress,
        ).reward_model
        rng = np.random.default_rng([config.seed, rnd, 7919])
        pick = rng.permutation(len(distinct))[: config.reform_prompts]
        new, report = adversarial_pairs(
            lambda p, c, rm=proxy: rm(p, c, batch_size=config.eval_batch_size),
            sample,
            [distinct[i] for i in sorted(pick)],
            gold,
            samples=config.reform_samples,
            num_pairs=config.reform_pairs,
            rule=rule,
            noise=noise,
            seed=config.seed * 1000 + rnd,
            round_index=rnd,
        )
        added += new
        reports.append(report)
        del proxy
    return train_reward_model(
        train_pairs + added,
        tokenizer,
        backbone,
        config,
        eval_pairs=eval_pairs,
        out_dir=out_dir,
        progress=progress,
        extra_pair_inputs={"reform": {"rounds": reports, "added_pairs": len(added)}},
    )
