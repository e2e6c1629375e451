"""The score head of a PAL reward model: a latent MLP, K prototypes and each persona's mixture
weights, in one module that replaces a decoder's linear ``score`` head.

The formulas are in ``core.pal`` (Chen et al. 2024, arXiv 2406.08469). The head scores every
completion for one persona, its ``active`` one, so a PAL model is a plain ``RewardModel``
whose reward is r_u(x, y) = −‖f(x, y) − a_u‖² for that persona; :func:`select_persona`
changes it (the persona saved as active is the first in training order unless chosen).
:meth:`PalHead.rewards_for` scores each row for its own persona (training, evaluation).

A prompt that names its reader (a toy_text persona prompt, ``reader NAME , DESCRIPTION .
PROMPT``; ``testbeds.toy_text.personas.parse_persona_prompt``) is scored for that persona, on
the prompt without the reader's preamble (PAL learns the persona from ``meta["persona"]``, not
from the text): ``RewardModel.score`` groups a batch by :meth:`PalHead.group_prompts`. A
prompt naming no reader is scored for the active persona as before; one naming a reader this
model does not know is an error. So a saved PAL model is a proxy for persona prompts in
best-of-n and RL as it is.

A saved PAL model is the backbone with this head (safetensors, sealed as every reward model);
``goodhart_rm.json``'s ``head`` holds :meth:`PalHead.spec`, from which
``RewardModel.from_pretrained`` rebuilds the head before it reads the weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from goodhartlab.core.pal import ideal_point_reward, ideal_points, mixture_weights

HEAD_KIND = "pal"


class PalHead(nn.Module):
    """f(h) = MLP(h) in R^D, prototypes p (K, D), mixture logits θ (U, K) of ``personas``.

    Args:
        hidden_size: the backbone's hidden size H.
        personas: the personas' names, one row of θ each, in order.
        prototypes: K.
        dim: D, the latent dimension.
        mlp_hidden: width of the latent MLP's hidden layer.
        active: the persona whose reward ``forward`` returns.
    """

    def __init__(
        self,
        hidden_size: int,
        personas: Sequence[str],
        *,
        prototypes: int,
        dim: int,
        mlp_hidden: int,
        active: str | None = None,
    ):
        super().__init__()
        personas = list(personas)
        if not personas or len(set(personas)) != len(personas):
            raise ValueError(f"personas: expected distinct names, got {personas}")
        self.hidden_size, self.dim, self.mlp_hidden = hidden_size, dim, mlp_hidden
        self.personas = personas
        self.latent = nn.Sequential(
            nn.Linear(hidden_size, mlp_hidden), nn.GELU(), nn.Linear(mlp_hidden, dim)
        )
        self.prototypes = nn.Parameter(torch.zeros(prototypes, dim))
        self.weight_logits = nn.Parameter(torch.zeros(len(personas), prototypes))
        self.active = personas[0]
        if active is not None:
            self.select(active)

    def spec(self) -> dict[str, Any]:
        """What ``from_spec`` needs to rebuild this head (written to goodhart_rm.json)."""
        return {
            "kind": HEAD_KIND,
            "hidden_size": self.hidden_size,
            "personas": list(self.personas),
            "prototypes": int(self.prototypes.shape[0]),
            "dim": self.dim,
            "mlp_hidden": self.mlp_hidden,
            "active": self.active,
            "mixture_weights": {
                p: w for p, w in zip(self.personas, self.weights().tolist(), strict=True)
            },
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> PalHead:
        if spec.get("kind") != HEAD_KIND:
            raise ValueError(f"head: expected kind {HEAD_KIND!r}, got {spec.get('kind')!r}")
        return cls(
            spec["hidden_size"],
            spec["personas"],
            prototypes=spec["prototypes"],
            dim=spec["dim"],
            mlp_hidden=spec["mlp_hidden"],
            active=spec["active"],
        )

    def index(self, persona: str) -> int:
        if persona not in self.personas:
            raise ValueError(
                f"persona: {persona!r} is not one this PAL model knows ({', '.join(self.personas)})"
            )
        return self.personas.index(persona)

    def select(self, persona: str) -> None:
        """Score for ``persona`` from now on."""
        self.index(persona)
        self.active = persona

    def read_prompt(self, prompt: str) -> tuple[str | None, str]:
        """(the persona ``prompt`` names or None, the prompt the backbone reads: without the
        reader's preamble). ValueError for a persona prompt naming a reader this model does not
        know."""
        from goodhartlab.testbeds.toy_text.personas import parse_persona_prompt

        parsed = parse_persona_prompt(prompt)
        if parsed is None:
            return None, prompt
        self.index(parsed[0].name)
        return parsed[0].name, parsed[1]

    def group_prompts(self, prompts: Sequence[str]) -> dict[str, tuple[list[int], list[str]]]:
        """The rows of ``prompts`` by the persona each is scored for: {persona: (row indices,
        the prompts the backbone reads)}; a prompt naming no persona goes to the active one."""
        groups: dict[str, tuple[list[int], list[str]]] = {}
        for i, prompt in enumerate(prompts):
            named, text = self.read_prompt(prompt)
            rows, texts = groups.setdefault(named or self.active, ([], []))
            rows.append(i)
            texts.append(text)
        return groups

    def weights(self) -> Tensor:
        """Each persona's mixture weights over the prototypes. Shape: (U, K)"""
        with torch.no_grad():
            return mixture_weights(self.weight_logits).detach().cpu()

    def add_persona(self, persona: str, weight_logits: Tensor) -> None:
        """Append a persona with mixture logits θ_u (few-shot fitting). Shape: (K,)"""
        if persona in self.personas:
            raise ValueError(f"persona: {persona!r} is already in this PAL model")
        assert weight_logits.shape == (self.prototypes.shape[0],), weight_logits.shape
        row = weight_logits.detach().to(self.weight_logits.device, self.weight_logits.dtype)
        self.weight_logits = nn.Parameter(torch.cat([self.weight_logits.data, row[None]]))
        self.personas.append(persona)

    def rewards_for(self, h_last: Tensor, users: Tensor) -> Tensor:
        """r_u(x, y) of each row for its own persona (index into ``personas``).
        Shapes: h_last (B, H), users (B,) -> (B,)"""
        a = ideal_points(self.weight_logits, self.prototypes)
        return ideal_point_reward(self.latent(h_last), a[users])

    def forward(self, h_last: Tensor) -> Tensor:
        """The active persona's reward, shaped as a linear score head's output. Shape: (B, 1)"""
        users = torch.full((h_last.shape[0],), self.index(self.active), device=h_last.device)
        return self.rewards_for(h_last, users).unsqueeze(1)


def select_persona(reward_model, persona: str) -> None:
    """Make a PAL ``RewardModel`` score for ``persona`` (ValueError if it is not a PAL model
    or does not know the persona)."""
    head = getattr(reward_model.model, "score", None)
    if not isinstance(head, PalHead):
        raise ValueError(f"reward model {reward_model.name}: not a PAL model (no PalHead)")
    head.select(persona)


def attach_saved_head(model: nn.Module, path: str | Path, spec: dict[str, Any]) -> None:
    """Replace ``model.score`` by the head ``spec`` describes, with its weights read from the
    directory's safetensors files (transformers built a linear head there and left them out)."""
    from safetensors import safe_open

    head = PalHead.from_spec(spec)
    state: dict[str, Tensor] = {}
    for f in sorted(Path(path).glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for key in st.keys():
                if key.startswith("score."):
                    state[key[len("score.") :]] = st.get_tensor(key)
    try:
        head.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise ValueError(f"{path}: the PAL head's weights do not match its spec ({first})") from e
    w = model.score.weight
    model.score = head.to(w.device, w.dtype)
