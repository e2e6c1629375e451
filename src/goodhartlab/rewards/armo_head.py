"""The score head of an ArmoRM reward model: attribute regression, verbosity decorrelation and
the prompt-conditioned gating, in one module that replaces a decoder's linear ``score`` head.

The formulas are in ``core.armo``. The head reads two hidden states: the last token's (the
attribute regression) and the prompt's last token's (the gating). The prompt's end is found in
the input ids as the first occurrence of ``gate_token_id`` (toy_text prompts all end with
" :"), as ArmoRM's reference model finds the assistant header's tokens to place its gating;
with no such token (the prompt truncated away) the first token is used.

A saved ArmoRM is the backbone with this head (safetensors, sealed as every reward model);
``goodhart_rm.json``'s ``head`` holds :meth:`ArmoHead.spec`, from which
``RewardModel.from_pretrained`` rebuilds the head before it reads the weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from goodhartlab.core.armo import decorrelate_verbosity, gated_score, gating_weights

HEAD_KIND = "armo"


class ArmoHead(nn.Module):
    """r(x, y) = Σ_k g_k(x) (r_k(y) − λ_k r_v(y)), r = μ + σ ⊙ (W h_y + b), g = β softmax(MLP(h_x)/τ).

    Args:
        hidden_size: H, the backbone's hidden size.
        attributes: names of the K attributes the gating mixes; the regression has one more
            output, the verbosity attribute (last).
        gate_hidden: width of the gating MLP's hidden layers.
        gate_layers: number of hidden layers (the reference code: 3).
        temperature: τ of the gating softmax (the reference code: 10).
        gate_token_id: the token id that ends every prompt.
    """

    def __init__(
        self,
        hidden_size: int,
        attributes: Sequence[str],
        *,
        gate_hidden: int,
        gate_layers: int,
        temperature: float,
        gate_token_id: int,
    ):
        super().__init__()
        self.attributes = list(attributes)
        k = len(self.attributes)
        self.gate_hidden, self.gate_layers = gate_hidden, gate_layers
        self.temperature, self.gate_token_id = float(temperature), int(gate_token_id)
        self.regression = nn.Linear(hidden_size, k + 1)
        self.register_buffer("target_mean", torch.zeros(k + 1))
        self.register_buffer("target_std", torch.ones(k + 1))
        self.register_buffer("verbosity_penalty", torch.zeros(k))
        layers: list[nn.Module] = []
        width = hidden_size
        for _ in range(gate_layers):
            layers += [nn.Linear(width, gate_hidden), nn.ReLU()]
            width = gate_hidden
        layers.append(nn.Linear(width, k))
        self.gate = nn.Sequential(*layers)
        self.logit_scale = nn.Parameter(torch.ones(1))

    def spec(self) -> dict[str, Any]:
        """What ``from_spec`` needs to rebuild this head (written to goodhart_rm.json)."""
        return {
            "kind": HEAD_KIND,
            "hidden_size": self.regression.in_features,
            "attributes": self.attributes,
            "gate_hidden": self.gate_hidden,
            "gate_layers": self.gate_layers,
            "temperature": self.temperature,
            "gate_token_id": self.gate_token_id,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> ArmoHead:
        if spec.get("kind") != HEAD_KIND:
            raise ValueError(f"head: expected kind {HEAD_KIND!r}, got {spec.get('kind')!r}")
        return cls(
            spec["hidden_size"],
            spec["attributes"],
            gate_hidden=spec["gate_hidden"],
            gate_layers=spec["gate_layers"],
            temperature=spec["temperature"],
            gate_token_id=spec["gate_token_id"],
        )

    def prompt_positions(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Index of each sequence's prompt end (first ``gate_token_id``; 0 if absent). (B,)"""
        assert input_ids.ndim == 2, input_ids.shape
        hit = (input_ids == self.gate_token_id) & attention_mask.bool()
        return torch.where(
            hit.any(dim=1), hit.float().argmax(dim=1), torch.zeros_like(hit[:, 0], dtype=torch.long)
        )

    def standardized_attributes(self, h_last: Tensor) -> Tensor:
        """Standardized attribute predictions (K + 1 rows, verbosity last). Shape: (K + 1, B)"""
        return self.regression(h_last).T

    def attribute_rewards(self, h_last: Tensor) -> Tensor:
        """Attribute rewards in the targets' units, verbosity last. Shape: (K + 1, B)"""
        z = self.standardized_attributes(h_last)
        return self.target_mean.unsqueeze(1) + self.target_std.unsqueeze(1) * z

    def decorrelated(self, h_last: Tensor) -> Tensor:
        """r'_k = r_k − λ_k r_v. Shape: (K, B)"""
        r = self.attribute_rewards(h_last)
        return decorrelate_verbosity(r[:-1], r[-1], self.verbosity_penalty)

    def gating(self, h_prompt: Tensor) -> Tensor:
        """g(x). Shape: (B, K)"""
        return gating_weights(self.gate(h_prompt), self.temperature, self.logit_scale)

    def forward(self, h_last: Tensor, h_prompt: Tensor) -> Tensor:
        """The score, shaped as a linear score head's output. Shape: (B, 1)"""
        return gated_score(self.gating(h_prompt), self.decorrelated(h_last)).unsqueeze(1)


def attach_saved_head(model: nn.Module, path: str | Path, spec: dict[str, Any]) -> None:
    """Replace ``model.score`` by the head ``spec`` describes, with its weights read from the
    directory's safetensors files (transformers built a linear head there and left them out)."""
    from safetensors import safe_open

    head = ArmoHead.from_spec(spec)
    files = sorted(Path(path).glob("*.safetensors"))
    state: dict[str, Tensor] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for key in st.keys():
                if key.startswith("score."):
                    state[key[len("score.") :]] = st.get_tensor(key)
    try:
        head.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise ValueError(
            f"{path}: the ArmoRM head's weights do not match its spec ({first})"
        ) from e
    w = model.score.weight
    model.score = head.to(w.device, w.dtype)
