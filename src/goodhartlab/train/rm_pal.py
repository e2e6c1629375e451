"""Training a PAL reward model (objective ``pal``): the ideal-point model of Chen et al. 2024
(arXiv 2406.08469; formulas in ``core.pal``, the saved head in ``rewards.pal_head``).

Every training pair names its persona (the paper's user) in ``meta["persona"]``
(``testbeds.toy_text.personas.label_pairs_by_persona`` makes such pairs). The backbone, the
latent MLP, the K prototypes and every persona's mixture logits are trained together with
Bradley-Terry on each pair's persona's reward r_u = −‖f(x, y) − a_u‖², for ``epochs`` with
the recipe of Bradley-Terry (AdamW, ``lr``, ``batch_size`` pairs a step), except that the
mixture logits and the prototypes learn at ``pal_weights_lr`` (no weight decay).

Few-shot adaptation to a persona not seen in training (:func:`fit_persona`): f and the
prototypes stay frozen and only the new persona's K mixture logits are fitted on its few
pairs (full-batch Adam), then appended to the head; ``pal_fewshot_prior`` λ > 0 adds a
Gaussian prior toward the known personas' mean logits (``core.pal.mixture_prior_penalty``).

Measured (``benchmarks/pal.py --prompted``, 3,000 pairs dealt to four toy_text personas, 25 %
flipped labels, 3 seeds; ``stickler`` held out): mean clean accuracy over the seen personas
0.642 ± 0.016 against 0.638 ± 0.016 for one pooled Bradley-Terry model and 0.636 ± 0.021 for
one per persona (differences within ± 0.03). The sentiment-opposed enthusiast and skeptic end
with nearly the same mixture weights. Few-shot, the weights-only fit is unregularized: on 5
pairs it collapses onto one prototype (0.49 ± 0.31, against 0.64 for the uniform mixture and
for fine-tuned Bradley-Terry); at 100 pairs it is level (0.640 against 0.643).

With the prior (``benchmarks/pal.py --few-shot-only --validate-prior --prior-strengths 0 1 10
100``; λ = 1 chosen by few-shot on the seen personas, before the held-out persona's numbers
were read): on ``stickler``, k = 5: 0.644 ± 0.012 (PAL − fine-tuned BT +0.008 ± 0.020),
k = 20: 0.643 ± 0.009, k = 100: 0.642 ± 0.005: the collapse is gone, but the fitted weights
stay near the prior mean (the pair likelihood is nearly flat in θ), so PAL ties BT rather
than adapting. On ``skeptic`` (the persona agreeing least with the others, 58-67 %; held out
with ``--held-out least-agreeing``) neither adapts: k = 100: PAL 0.619 ± 0.051, fine-tuned BT
0.628 ± 0.034, a BT trained on 750 skeptic pairs 0.652 ± 0.040; even k = 750 leaves the
weights-only fit at 0.611 ± 0.050 (fine-tuned BT 0.641 ± 0.049): a persona outside the
prototypes' convex hull cannot be reached by its mixture weights alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from goodhartlab.core.pal import (
    ideal_point_reward,
    mixture_prior_penalty,
    mixture_weights,
    pal_loss,
)
from goodhartlab.data.schema import PreferencePair
from goodhartlab.rewards.pal_head import PalHead
from goodhartlab.rewards.reward_model import RewardModel, collate_rm_inputs, reward_at_last_token
from goodhartlab.train.rm_armo import check_backbone
from goodhartlab.train.rm_loop import RMHead, run_epochs

PERSONA_KEY = "persona"


def pair_personas(pairs: Sequence[PreferencePair]) -> list[str]:
    """Each pair's ``meta["persona"]`` (ValueError naming the first pair without one)."""
    out = []
    for i, p in enumerate(pairs):
        name = p.meta.get(PERSONA_KEY)
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"objective pal: pair {i} (id {p.id!r}) has no meta['{PERSONA_KEY}']; PAL learns "
                "one ideal point per persona and needs every pair's persona "
                "(testbeds.toy_text.personas.label_pairs_by_persona)"
            )
        out.append(name)
    return out


def build_pal_head(model: nn.Module, train_pairs: Sequence[PreferencePair], config) -> PalHead:
    """Replace ``model.score`` by a fresh ``PalHead`` for the training pairs' personas (in order
    of first appearance), drawn from ``config.seed``: latent weights N(0, 1/fan_in), prototypes
    N(0, 1), mixture logits 0 (uniform weights)."""
    check_backbone(model, "pal")
    personas = list(dict.fromkeys(pair_personas(train_pairs)))
    head = PalHead(
        model.config.hidden_size,
        personas,
        prototypes=config.pal_prototypes,
        dim=config.pal_dim,
        mlp_hidden=config.pal_mlp_hidden,
    )
    gen = torch.Generator().manual_seed(config.seed + 7919)
    with torch.no_grad():
        for layer in head.latent:
            if isinstance(layer, nn.Linear):
                fan_in = layer.weight.shape[1]
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) / fan_in**0.5)
                layer.bias.zero_()
        head.prototypes.copy_(torch.randn(head.prototypes.shape, generator=gen))
    w = model.score.weight
    model.score = head.to(w.device, w.dtype)
    return head


def backbone_prompts(head: PalHead, pairs: Sequence[PreferencePair], names: Sequence[str]):
    """The prompts the backbone reads in training: a persona prompt without its reader's
    preamble, as ``RewardModel.score`` reads it (``PalHead.read_prompt``); ValueError if a
    prompt names another persona than its pair's ``meta["persona"]``."""
    out = []
    for i, (p, u) in enumerate(zip(pairs, names, strict=True)):
        named, text = head.read_prompt(p.prompt)
        if named is not None and named != u:
            raise ValueError(
                f"objective pal: pair {i} (id {p.id!r}) has meta['{PERSONA_KEY}'] {u!r} but its "
                f"prompt is written for {named!r}"
            )
        out.append(text)
    return out


class PalTrainHead(RMHead):
    """PAL as a ``train.rm_loop.RMHead``: ``model.score`` a fresh ``PalHead``
    (:func:`build_pal_head`, at construction: the epoch-0 evaluation reads it), trained by the
    shared loop with Bradley-Terry on each pair's persona's reward; the mixture logits and the
    prototypes in their own AdamW group (``pal_weights_lr``, no weight decay), the gradient
    clipped over every parameter of the model.

    :meth:`report` (for goodhart_rm.json): the personas, their training pair counts and
    mixture weights, the training pairs' accuracy per persona.
    """

    desc = "train pal"
    eval_each_epoch = False

    def __init__(self, reward_model: RewardModel, train_pairs: list[PreferencePair], config):
        super().__init__(reward_model, config, items=len(train_pairs), batch=config.batch_size)
        self.head = build_pal_head(self.model, train_pairs, config)
        self.train_pairs = train_pairs
        self.names = pair_personas(train_pairs)
        self.users = torch.tensor([self.head.index(u) for u in self.names])
        prompts = backbone_prompts(self.head, train_pairs, self.names)
        self.ids_c = reward_model.input_ids(prompts, [p.chosen for p in train_pairs])
        self.ids_r = reward_model.input_ids(prompts, [p.rejected for p in train_pairs])

    def parameters(self) -> list[Tensor]:
        return list(self.model.parameters())

    def param_groups(self) -> list[dict[str, Any]]:
        mixture = [self.head.weight_logits, self.head.prototypes]
        rest = [p for p in self.parameters() if all(p is not q for q in mixture)]
        return [
            {"params": rest},
            {"params": mixture, "lr": self.config.pal_weights_lr, "weight_decay": 0.0},
        ]

    def loss(self, idx: list[int]) -> tuple[Tensor, dict[str, Tensor]]:
        device = self.config.device
        input_ids, mask = collate_rm_inputs(
            [self.ids_c[i] for i in idx] + [self.ids_r[i] for i in idx],
            self.reward_model.pad_token_id,
        )
        _, h_last = reward_at_last_token(
            self.model, input_ids.to(device), mask.to(device), return_hidden=True
        )
        u = self.users[idx].to(device)
        r = self.head.rewards_for(h_last, torch.cat([u, u]))
        return pal_loss(r[: len(idx)], r[len(idx) :])

    def evaluate(self, pairs: Sequence[PreferencePair]) -> dict[str, Any]:
        """:func:`evaluate_pal`: each pair scored for its own persona; {} without pairs."""
        if not pairs:
            return {}
        return evaluate_pal(self.reward_model, pairs, batch_size=self.config.eval_batch_size)

    def report(self) -> dict[str, Any]:
        head, names = self.head, self.names
        weights = head.weights()
        return {
            "pal": {
                "personas": list(head.personas),
                "train_pairs_by_persona": {u: names.count(u) for u in head.personas},
                "mixture_weights": {u: weights[i].tolist() for i, u in enumerate(head.personas)},
                "train_accuracy_by_persona": self.evaluate(self.train_pairs)["accuracy_by_persona"],
            }
        }


def pair_latents(
    reward_model: RewardModel, pairs: Sequence[PreferencePair], *, batch_size: int = 64
) -> tuple[Tensor, Tensor]:
    """f(x, y_c) and f(x, y_r) of ``pairs`` under a PAL model, without gradients.
    Shapes: (n, D), (n, D)"""
    head = reward_model.model.score
    assert isinstance(head, PalHead), type(head)
    n = len(pairs)
    prompts = [p.prompt for p in pairs]
    _, hidden = reward_model.score_with_latents(
        prompts + prompts,
        [p.chosen for p in pairs] + [p.rejected for p in pairs],
        batch_size=batch_size,
    )
    p0 = head.prototypes
    with torch.no_grad():
        f = head.latent(hidden.to(p0.device, p0.dtype))
    return f[:n], f[n:]


def fit_persona(
    reward_model: RewardModel,
    pairs: Sequence[PreferencePair],
    persona: str,
    config,
    *,
    population: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Few-shot: fit only a new persona's mixture logits θ_u on its ``pairs`` and add it to the
    PAL model (f, the prototypes and every other persona are left as they are).

    Minimises the mean −log σ(r_u(y_c) − r_u(y_r)) over θ_u ∈ R^K (from 0, uniform weights)
    plus, when ``config.pal_fewshot_prior`` λ > 0, the prior ``core.pal.mixture_prior_penalty``
    λ/(2n) ‖θ_u − θ̄‖² with θ̄ the mean logits of ``population`` (default: every persona the
    model knows), with ``config.pal_fewshot_steps`` full-batch Adam steps at
    ``config.pal_fewshot_lr``.

    Returns {"persona", "pairs", "initial_loss", "final_loss" (the pair loss, without the
    prior), "mixture_weights", "prior_strength"}.
    """
    pairs = list(pairs)
    if not pairs:
        raise ValueError(f"pairs: expected at least one pair of persona {persona!r} to fit")
    head = reward_model.model.score
    assert isinstance(head, PalHead), type(head)
    f_c, f_r = pair_latents(reward_model, pairs, batch_size=config.eval_batch_size)
    prototypes = head.prototypes.detach()
    theta = torch.zeros(1, prototypes.shape[0], device=prototypes.device, requires_grad=True)
    optimizer = torch.optim.Adam([theta], lr=config.pal_fewshot_lr)
    strength = float(config.pal_fewshot_prior)
    names = list(head.personas if population is None else population)
    if not names:
        raise ValueError("population: expected at least one persona for the prior's mean")
    rows = torch.tensor([head.index(u) for u in names], device=prototypes.device)
    prior = head.weight_logits.detach()[rows].mean(dim=0, keepdim=True)

    def loss_of(logits: Tensor) -> Tensor:
        a = (mixture_weights(logits) @ prototypes).expand_as(f_c)
        return pal_loss(ideal_point_reward(f_c, a), ideal_point_reward(f_r, a))[0]

    def full_batch_loss(_idx: list[int]) -> tuple[Tensor, None]:
        loss = loss_of(theta)
        if strength > 0:
            loss = loss + mixture_prior_penalty(theta, prior, strength, len(pairs))
        return loss, None

    with torch.no_grad():
        initial = float(loss_of(theta))
    run_epochs(
        full_batch_loss, optimizer, None, items=len(pairs), batch=len(pairs),
        epochs=config.pal_fewshot_steps, order_gen=None,
    )  # fmt: skip
    with torch.no_grad():
        final = float(loss_of(theta))
    head.add_persona(persona, theta.detach()[0])
    return {
        "persona": persona,
        "pairs": len(pairs),
        "initial_loss": initial,
        "final_loss": final,
        "mixture_weights": mixture_weights(theta.detach())[0].tolist(),
        "prior_strength": strength,
    }


def evaluate_pal(
    reward_model: RewardModel, pairs: Sequence[PreferencePair], *, batch_size: int = 64
) -> dict[str, Any]:
    """``train.rm.evaluate_reward_model`` per persona, each pair scored for its own persona.

    Returns the pair-weighted means of ``accuracy``, ``loss`` and (when every pair records
    ``flipped``) ``clean_accuracy``, with ``n`` and ``accuracy_by_persona`` (and
    ``clean_accuracy_by_persona``). The model's active persona is restored.
    """
    from goodhartlab.train.rm import evaluate_reward_model

    pairs = list(pairs)
    if not pairs:
        raise ValueError("pairs: expected at least one pair to evaluate")
    head = reward_model.model.score
    assert isinstance(head, PalHead), type(head)
    names = pair_personas(pairs)
    active = head.active
    by: dict[str, dict[str, Any]] = {}
    try:
        for u in dict.fromkeys(names):
            head.select(u)
            by[u] = evaluate_reward_model(
                reward_model, [p for p, v in zip(pairs, names, strict=True) if v == u],
                batch_size=batch_size,
            )  # fmt: skip
    finally:
        head.active = active
    n = len(pairs)
    out: dict[str, Any] = {"n": n}
    for key in ("accuracy", "loss", "clean_accuracy"):
        if all(key in m for m in by.values()):
            out[key] = sum(m[key] * m["n"] for m in by.values()) / n
    out["accuracy_by_persona"] = {u: m["accuracy"] for u, m in by.items()}
    if "clean_accuracy" in out:
        out["clean_accuracy_by_persona"] = {u: m["clean_accuracy"] for u, m in by.items()}
    return out
