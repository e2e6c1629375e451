"""Training a pairwise preference model (objective ``pairwise``; ``core.pairwise``,
``rewards.pairwise``): the reward-model backbone reads the prompt and both completions and
outputs one logit f(x, y, y'); P(y ≻ y') = σ((f(x, y, y') − f(x, y', y)) / 2).

Trained by the shared loop (``train.rm_loop``: AdamW at ``lr``, ``batch_size`` pairs a step,
the ``lr_schedule``, the gradient clipped to ``max_grad_norm``) on the same backbone and head
initialisation as a Bradley-Terry model of the same seed; each step reads every pair in both
orders (2 × ``batch_size`` sequences, each about twice a scalar model's length) and minimises
``core.pairwise.pairwise_preference_loss``. Held-out pairs are evaluated with
:func:`evaluate_preference_model`, whose metrics have the names and meanings of
``train.rm.evaluate_reward_model``'s with the preference P(y_c ≻ y_r) in place of
σ(r_c − r_r).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from goodhartlab.core.pairwise import pairwise_preference_logit
from goodhartlab.data.schema import PreferencePair
from goodhartlab.rewards.pairwise import PAIRWISE_TEMPLATE_VERSION, PairwisePreferenceModel
from goodhartlab.rewards.reward_model import PAIRWISE_KIND, collate_rm_inputs, reward_at_last_token
from goodhartlab.train.rm import pair_metrics
from goodhartlab.train.rm_loop import RMHead


def check_pairwise_config(config) -> None:
    """The ``RMTrainConfig`` settings a pairwise model does not take (ValueError naming them)."""
    unsupported = {
        "margin": config.margin,
        "center_coef": config.center_coef != 0.0,
        "tool": config.tool is not None,
        "features": config.features is not None,
    }
    bad = [k for k, v in unsupported.items() if v]
    if bad:
        raise ValueError(
            f"{', '.join(bad)}: not supported with objective 'pairwise' (a preference model of "
            "two completions has no per-completion score to add a margin, a centering term, a "
            "tool's answer or a feature layer to)"
        )


def saved_pairwise_info() -> dict[str, str]:
    """The entries of ``goodhart_rm.json`` that make a directory a pairwise model."""
    return {"kind": PAIRWISE_KIND, "pairwise_template": PAIRWISE_TEMPLATE_VERSION}


def evaluate_preference_model(
    pm: PairwisePreferenceModel, pairs: Sequence[PreferencePair], *, batch_size: int = 64
) -> dict[str, Any]:
    """Pairwise metrics of a pairwise preference model on labelled pairs.

    With z = logit P(y_c ≻ y_r) (``core.pairwise.pairwise_preference_logit``): a pair is
    correct iff z > 0 strictly (P > 1/2; a tie is wrong, as for a reward model).

    Returns:
        ``n``; ``accuracy``; ``loss`` = mean −log σ(z); ``margin_mean`` = mean z; when every
        pair records ``meta["flipped"]``: ``clean_accuracy`` against the noise-free labels,
        ``clean_ece`` and ``clean_brier`` of the forecast σ(z); ``accuracy_by_subset`` when
        pairs have a ``subset``.
    """
    pairs = list(pairs)
    if not pairs:
        raise ValueError("pairs: expected at least one pair to evaluate")
    n = len(pairs)
    prompts = [p.prompt for p in pairs]
    chosen, rejected = [p.chosen for p in pairs], [p.rejected for p in pairs]
    f = pm.logits(prompts + prompts, chosen + rejected, rejected + chosen, batch_size=batch_size)
    return pair_metrics(pairwise_preference_logit(f[:n], f[n:]), pairs)


class PairwiseTrainHead(RMHead):
    """The pairwise preference model as a ``train.rm_loop.RMHead``: the backbone's linear score
    head reads the last eos of the pairwise template; every batch is read in both orders in
    one forward pass. :attr:`scorer` is the trained :class:`PairwisePreferenceModel`."""

    desc = "train pairwise"

    def __init__(self, reward_model, objective, train_pairs: list[PreferencePair], config):
        check_pairwise_config(config)
        super().__init__(reward_model, config, items=len(train_pairs), batch=config.batch_size)
        self.objective = objective
        self.objective_params = {k: getattr(config, k) for k in objective.params.model_fields}
        self.scorer = PairwisePreferenceModel(
            self.model, reward_model.tokenizer, max_length=config.max_length,
            name=reward_model.name,
        )  # fmt: skip
        prompts = [p.prompt for p in train_pairs]
        chosen, rejected = [p.chosen for p in train_pairs], [p.rejected for p in train_pairs]
        self.ids_chosen_first = self.scorer.input_ids(prompts, chosen, rejected)
        self.ids_rejected_first = self.scorer.input_ids(prompts, rejected, chosen)

    def parameters(self) -> list[Tensor]:
        return list(self.model.parameters())

    def loss(self, idx: list[int]) -> tuple[Tensor, dict[str, Tensor]]:
        input_ids, mask = collate_rm_inputs(
            [self.ids_chosen_first[i] for i in idx] + [self.ids_rejected_first[i] for i in idx],
            self.scorer.pad_token_id,
        )
        device = self.config.device
        f = reward_at_last_token(self.model, input_ids.to(device), mask.to(device))
        n = len(idx)
        return self.objective.obj(f[:n], f[n:], **self.objective_params)

    def evaluate(self, pairs: Sequence[PreferencePair]) -> dict[str, Any]:
        if not pairs:
            return {}
        return evaluate_preference_model(self.scorer, pairs, batch_size=self.config.eval_batch_size)
