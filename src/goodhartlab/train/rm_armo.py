"""Training an ArmoRM reward model (objective ``armo``): the two stages of Wang et al. 2024
(arXiv 2406.12845; formulas in ``core.armo``, the saved head in ``rewards.armo_head``).

Attributes: toy_text's gold components (``testbeds.toy_text.components``: coverage, sentiment,
constraint, defects, length; their sum is the gold) and the verbosity attribute, the
completion's length in words. Like the pairs' labels, the attribute ratings the heads learn
from are noisy: each training completion's rating of attribute k is
y_k + ε, ε ~ N(0, (``armo_attribute_noise`` · std_k)²), std_k the attribute's standard
deviation over the training completions, drawn from ``seed``.

Stage 1 trains the backbone with the regression heads (MSE on standardized noisy ratings of
both completions of every training pair) for ``epochs``. Then the backbone and the heads are
frozen, the verbosity penalties λ are fitted on the training completions' predicted
attributes (unless ``armo_decorrelate`` is False: λ = 0), and stage 2 trains the gating network and β with Bradley-Terry on the training
pairs' labels for ``armo_gate_epochs`` over cached hidden states.

Measured (``benchmarks/rm_variants.py``, 3,000 pairs with 25 % flipped labels, 3 seeds): in
toy_text length is part of the gold (the ``length`` component penalizes runaway length), so
the paper's decorrelation removes true signal: the ``length`` head's λ is about −0.08 per
word, and best-of-256 gold falls from 1.37 without decorrelation to 0.57 with it (Bradley-
Terry: 0.38). ArmoRM also learns from more than the pairs: a noisy rating of every attribute
of both completions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from goodhartlab.core.armo import armo_gating_loss, attribute_regression_loss, verbosity_penalties
from goodhartlab.core.length_bias import completion_lengths, pearson
from goodhartlab.data.schema import PreferencePair
from goodhartlab.rewards.armo_head import ArmoHead
from goodhartlab.rewards.reward_model import (
    RewardModel,
    collate_rm_inputs,
    reward_at_last_token,
)
from goodhartlab.train.rm_loop import RMHead, lr_schedule, run_epochs

VERBOSITY = "words"


def attribute_targets(
    pairs: Sequence[PreferencePair], noise: float, seed: int
) -> tuple[list[str], Tensor, Tensor]:
    """(attribute names, clean ratings, noisy ratings) of the chosen then the rejected
    completions of ``pairs``; verbosity (words) is the last row. Shapes: (K + 1, 2n)."""
    from goodhartlab.testbeds.toy_text.components import COMPONENTS, component_matrix

    prompts = [p.prompt for p in pairs] * 2
    completions = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    try:
        comps = component_matrix(prompts, completions)
    except Exception as e:
        raise ValueError(
            f"objective armo: the attributes are toy_text's gold components; cannot parse "
            f"these pairs as toy_text ({type(e).__name__}: {e})"
        ) from e
    words = completion_lengths(completions).to(comps.dtype).unsqueeze(0)
    clean = torch.cat([comps, words]).double()
    gen = torch.Generator().manual_seed(seed + 104729)
    std = clean.std(dim=1, keepdim=True)
    noisy = clean + noise * std * torch.randn(clean.shape, generator=gen, dtype=torch.float64)
    return [*COMPONENTS, VERBOSITY], clean, noisy


def gate_token_id(tokenizer, pairs: Sequence[PreferencePair]) -> int:
    """The token that ends every prompt (the gating reads the hidden state there)."""
    ends = {tokenizer(p.prompt, add_special_tokens=False)["input_ids"][-1] for p in pairs}
    if len(ends) != 1:
        raise ValueError(
            f"objective armo: the gating reads the prompt's last token, which must be the same "
            f"token in every prompt; these prompts end with {len(ends)} different tokens"
        )
    return ends.pop()


def _hidden_states(model, head: ArmoHead, ids: list[list[int]], pad_id: int, batch: int, device):
    """Hidden states at the last token and at the prompt's end. Shapes: (N, H), (N, H)."""
    base = model.base_model
    last_all, prompt_all = [], []
    with torch.no_grad():
        for start in range(0, len(ids), batch):
            input_ids, mask = collate_rm_inputs(ids[start : start + batch], pad_id)
            input_ids, mask = input_ids.to(device), mask.to(device)
            hidden = base(input_ids=input_ids, attention_mask=mask).last_hidden_state
            rows = torch.arange(input_ids.shape[0], device=device)
            positions = torch.arange(input_ids.shape[1], device=device)
            last = (positions * mask).argmax(dim=1)
            last_all.append(hidden[rows, last])
            prompt_all.append(hidden[rows, head.prompt_positions(input_ids, mask)])
    return torch.cat(last_all), torch.cat(prompt_all)


class ArmoTrainHead(RMHead):
    """ArmoRM's two stages as a ``train.rm_loop.RMHead`` (``model.score`` becomes an
    ``ArmoHead`` when training starts, after the epoch-0 evaluation of the linear head).

    Stage 1 is the shared epoch loop over both completions of every training pair (MSE on the
    standardized noisy attribute ratings; ``batch_size`` pairs, 2 x sequences, a step, as
    Bradley-Terry); :meth:`fit` then decorrelates and trains the gating (stage 2).
    :meth:`report` (for goodhart_rm.json): the attributes, their noise, each head's
    correlation with the clean attribute on the training completions, the verbosity penalties
    and the decorrelated attributes' correlation with verbosity, the gating's training-pair
    BT loss before and after stage 2, its accuracy and mean weights, β.
    """

    desc = "train armo (1/2)"
    eval_each_epoch = False

    def __init__(self, reward_model: RewardModel, train_pairs: list[PreferencePair], config):
        check_backbone(reward_model.model)
        self.per_step = max(1, config.batch_size)
        super().__init__(reward_model, config, items=2 * len(train_pairs), batch=2 * self.per_step)
        self.train_pairs = train_pairs
        self._report: dict[str, Any] = {}

    def _install(self) -> None:
        """The ArmoHead (drawn from ``seed``, its target statistics from the noisy ratings) on
        the model, the stage-1 targets and the scorer's ids of every training completion."""
        config, model, train_pairs = self.config, self.model, self.train_pairs
        names, clean, noisy = attribute_targets(
            train_pairs, config.armo_attribute_noise, config.seed
        )
        gen = torch.Generator().manual_seed(config.seed + 15485863)
        head = ArmoHead(
            model.config.hidden_size,
            names[:-1],
            gate_hidden=config.armo_gate_hidden,
            gate_layers=config.armo_gate_layers,
            temperature=config.armo_temperature,
            gate_token_id=gate_token_id(self.reward_model.tokenizer, train_pairs),
        )
        with torch.no_grad():
            for p in head.parameters():  # drawn from our own generator: seeded, order-independent
                if p.ndim == 2:
                    p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / p.shape[1]) ** 0.5)
            head.target_mean.copy_(noisy.mean(dim=1).float())
            head.target_std.copy_(noisy.std(dim=1).clamp_min(1e-6).float())
        head.to(config.device)
        model.score = head
        self.head, self.names, self.clean = head, names, clean
        # A constant attribute (std 0, e.g. no prompt with a constraint) gets targets of 0.
        std = noisy.std(dim=1, keepdim=True).clamp_min(1e-6)
        self.target = ((noisy - noisy.mean(dim=1, keepdim=True)) / std).float()
        prompts = [p.prompt for p in train_pairs] * 2
        completions = [p.chosen for p in train_pairs] + [p.rejected for p in train_pairs]
        self.ids = self.reward_model.input_ids(prompts, completions)  # the scorer's ids
        # Stage 1: backbone + regression heads (the gating is not in this graph).
        self.stage1 = [p for name, p in model.named_parameters() if not name.startswith("score.gate")
                       and not name.startswith("score.logit_scale")]  # fmt: skip

    def parameters(self) -> list[Tensor]:
        return self.stage1

    def loss(self, idx: list[int]) -> tuple[Tensor, None]:
        device = self.config.device
        input_ids, mask = collate_rm_inputs(
            [self.ids[i] for i in idx], self.reward_model.pad_token_id
        )
        _, h_last = reward_at_last_token(
            self.model, input_ids.to(device), mask.to(device), return_hidden=True
        )
        pred = self.head.standardized_attributes(h_last)
        return attribute_regression_loss(pred, self.target[:, idx].to(device)), None

    def fit(self, *, progress: bool, on_epoch=None) -> list[float]:
        """Stage 1 (the shared loop; returns its per-epoch losses), then stage 2."""
        self._install()
        losses = super().fit(progress=progress, on_epoch=on_epoch)
        self._report = self._gating_stage()
        return losses

    def report(self) -> dict[str, Any]:
        return {"armo": self._report}

    def _decorrelate(self) -> tuple[Tensor, Tensor, Tensor]:
        """The training completions' attribute rewards r, the verbosity penalties fitted on
        them (the reference distribution; unless ``armo_decorrelate`` is False), the
        decorrelated r', and the hidden states at the prompt's end the gating reads (one per
        pair: chosen and rejected share the prompt, a causal model the same prefix)."""
        config, head = self.config, self.head
        h_last, h_prompt = _hidden_states(
            self.model, head, self.ids, self.reward_model.pad_token_id, config.eval_batch_size,
            config.device,
        )  # fmt: skip
        with torch.no_grad():
            r = head.attribute_rewards(h_last)
            if config.armo_decorrelate:
                lam = verbosity_penalties(r[:-1].double(), r[-1].double())
                head.verbosity_penalty.copy_(lam.float())
            r_dec = head.decorrelated(h_last)
        return r, r_dec, h_prompt[: len(self.train_pairs)]

    def _gating_stage(self) -> dict[str, Any]:
        """Verbosity decorrelation, then the gating network and β trained Bradley-Terry on the
        training pairs over cached hidden states (the data order continues stage 1's)."""
        config, model, head, names = self.config, self.model, self.head, self.names
        device, n, per_step = config.device, len(self.train_pairs), self.per_step
        r, r_dec, x = self._decorrelate()
        for p in model.parameters():
            p.requires_grad_(False)

        # Stage 2: gating network and β, Bradley-Terry on the labelled pairs.
        gate_params = [*head.gate.parameters(), head.logit_scale]
        for p in gate_params:
            p.requires_grad_(True)
        gate_opt = torch.optim.AdamW(gate_params, lr=config.armo_gate_lr)
        gate_steps = -(-n // per_step) * config.armo_gate_epochs

        def gate_scores(idx: Tensor) -> tuple[Tensor, Tensor]:
            g = head.gating(x[idx])
            return (g * r_dec[:, idx].T).sum(dim=1), (g * r_dec[:, idx + n].T).sum(dim=1)

        def full_gate_loss() -> tuple[Tensor, dict[str, Tensor]]:
            with torch.no_grad():
                g = head.gating(x)
                return armo_gating_loss((g * r_dec[:, :n].T).sum(1), (g * r_dec[:, n:].T).sum(1))

        def gate_batch_loss(idx: list[int]) -> tuple[Tensor, None]:
            return armo_gating_loss(*gate_scores(torch.tensor(idx, device=device)))[0], None

        initial_loss, _ = full_gate_loss()
        run_epochs(
            gate_batch_loss,
            gate_opt,
            lr_schedule(gate_opt, gate_steps, "linear"),
            items=n,
            batch=per_step,
            epochs=config.armo_gate_epochs,
            order_gen=self.order_gen,
        )
        for p in model.parameters():
            p.requires_grad_(True)
        model.eval()

        final_loss, final_stats = full_gate_loss()
        with torch.no_grad():
            weights = head.gating(x).mean(dim=0).cpu()
            r_cpu, r_dec_cpu = r.double().cpu(), r_dec.double().cpu()
        clean = self.clean
        return {
            "attributes": names,
            "attribute_noise": config.armo_attribute_noise,
            "head_rho_clean": {
                k: _finite(pearson(r_cpu[i], clean[i])) for i, k in enumerate(names)
            },
            "verbosity_penalty": dict(
                zip(names[:-1], head.verbosity_penalty.tolist(), strict=True)
            ),
            "decorrelated_rho_verbosity": {
                k: _finite(pearson(r_dec_cpu[i], r_cpu[-1])) for i, k in enumerate(names[:-1])
            },
            "gate_mean_weights": dict(zip(names[:-1], weights.tolist(), strict=True)),
            "logit_scale": float(head.logit_scale.item()),
            "gate_initial_loss": float(initial_loss),
            "gate_final_loss": float(final_loss),
            "gate_final_accuracy": float(final_stats["accuracy"]),
        }


def _finite(x: Tensor) -> float | None:
    """A correlation for goodhart_rm.json: None where it is undefined (a constant series)."""
    v = float(x)
    return v if math.isfinite(v) else None


def check_backbone(model: nn.Module, objective: str = "armo") -> None:
    """ArmoRM (and PAL, ``objective="pal"``) read hidden states of a decoder with a linear
    ``score`` head."""
    if (
        not isinstance(getattr(model, "score", None), nn.Linear)
        or getattr(model, "base_model", model) is model
    ):
        raise ValueError(
            f"objective {objective}: expected a decoder reward model with a linear `score` head, got "
            f"{type(model).__name__}"
        )
