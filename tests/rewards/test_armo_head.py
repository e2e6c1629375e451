"""rewards.armo_head: the prompt's position, the forward against the formulas written out, and
the head rebuilt from its spec inside a decoder reward model scores through the one RM path."""

from __future__ import annotations

import torch

from goodhartlab.rewards.armo_head import ArmoHead
from goodhartlab.rewards.reward_model import reward_at_last_token


def _head(hidden: int = 8, gate_token_id: int = 7) -> ArmoHead:
    torch.manual_seed(0)
    head = ArmoHead(
        hidden, ["a", "b"], gate_hidden=5, gate_layers=1, temperature=2.0,
        gate_token_id=gate_token_id,
    )  # fmt: skip
    with torch.no_grad():
        head.target_mean.copy_(torch.tensor([1.0, -1.0, 10.0]))
        head.target_std.copy_(torch.tensor([2.0, 0.5, 3.0]))
        head.verbosity_penalty.copy_(torch.tensor([0.1, -0.2]))
        head.logit_scale.fill_(3.0)
    return head


def test_prompt_position_is_the_first_gate_token_or_zero():
    head = _head(gate_token_id=7)
    ids = torch.tensor([[3, 7, 4, 7, 0], [3, 4, 5, 6, 0], [7, 1, 1, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    assert head.prompt_positions(ids, mask).tolist() == [1, 0, 0]


def test_forward_is_the_gated_decorrelated_mixture():
    head = _head()
    gen = torch.Generator().manual_seed(1)
    h_last, h_prompt = torch.randn(4, 8, generator=gen), torch.randn(4, 8, generator=gen)
    with torch.no_grad():
        z = h_last @ head.regression.weight.T + head.regression.bias  # (B, 3)
        r = head.target_mean + head.target_std * z  # raw units, verbosity last
        r_dec = r[:, :2] - head.verbosity_penalty * r[:, 2:3]
        g = 3.0 * torch.softmax(head.gate(h_prompt) / 2.0, dim=1)
        expected = (g * r_dec).sum(dim=1, keepdim=True)
        torch.testing.assert_close(head(h_last, h_prompt), expected)


def test_head_in_a_decoder_reads_the_prompt_state(tiny_reward_model):
    model = tiny_reward_model
    hidden = model.config.hidden_size
    model.score = _head(hidden, gate_token_id=5)
    ids = torch.tensor([[2, 5, 9, 11], [2, 6, 9, 11]])
    mask = torch.ones_like(ids)
    r = reward_at_last_token(model, ids, mask)
    with torch.no_grad():
        states = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
        expected = model.score(states[:, -1], states[[0, 1], [1, 0]])[:, 0]
    torch.testing.assert_close(r, expected)
    assert ArmoHead.from_spec(model.score.spec()).spec() == model.score.spec()
