"""GARDO's formulas (core.gardo; He et al. 2025, arXiv 2512.24138): win rates, the two
uncertainties, the gate, nearest-neighbour diversity and the advantage multiplier."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from goodhartlab.core.gardo import (
    adapted_gate_fraction,
    diversity_weights,
    mean_nonnegative_uncertainty,
    member_disagreement,
    nearest_neighbour_distance,
    proxy_overestimation,
    uncertainty_gate,
    win_rates,
)


def _naive_win_rates(r: list[float]) -> list[float]:
    B = len(r)
    return [
        sum(1.0 if r[i] > r[j] else 0.5 if r[i] == r[j] else 0.0 for j in range(B) if j != i)
        / (B - 1)
        for i in range(B)
    ]


def test_win_rates_by_hand_with_a_tie():
    # r = [3, 1, 3, 0]: item 0 beats 1 and 3, ties 2 -> (2 + ½)/3; item 1 beats 3 -> 1/3;
    # item 3 beats nobody -> 0.
    w = win_rates(torch.tensor([[3.0, 1.0, 3.0, 0.0]]))
    assert w[0].tolist() == pytest.approx([2.5 / 3, 1 / 3, 2.5 / 3, 0.0])


def test_win_rates_against_naive_and_invariant_to_offset_and_scale():
    g = torch.Generator().manual_seed(0)
    r = torch.randint(0, 5, (3, 9), generator=g).double()  # many ties
    w = win_rates(r)
    for m in range(3):
        assert w[m].tolist() == pytest.approx(_naive_win_rates(r[m].tolist()))
    # Bradley-Terry offsets and scales do not move a rank.
    shifted = r * torch.tensor([[2.0], [0.5], [7.0]]) + torch.tensor([[100.0], [-3.0], [0.1]])
    assert torch.allclose(win_rates(shifted), w)
    with pytest.raises(ValueError, match="B >= 2"):
        win_rates(torch.zeros(2, 1))


def test_member_disagreement_by_hand():
    # Two members over B = 3. Member 0 ranks [a, b, c] = [1, ½, 0]; member 1 reverses it
    # [0, ½, 1]. The std of {1, 0} is ½, of {½, ½} is 0.
    r = torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    assert member_disagreement(r).tolist() == pytest.approx([0.5, 0.0, 0.5])
    # Members that agree up to offset and scale: no disagreement at all.
    agree = torch.stack([r[0], 10 * r[0] - 4])
    assert member_disagreement(agree).tolist() == pytest.approx([0.0, 0.0, 0.0])
    assert member_disagreement(r[:1]).tolist() == pytest.approx([0.0, 0.0, 0.0])  # M = 1


def test_proxy_overestimation_by_hand():
    # Proxy ranks [a, b, c] as [1, ½, 0]; two auxiliaries rank them [0, ½, 1] and [½, 1, 0].
    # U = w_proxy − mean w_aux = [1 − ¼, ½ − ¾, 0 − ½] = [¾, −¼, −½]: a is the suspect.
    proxy = torch.tensor([3.0, 2.0, 1.0])
    aux = torch.tensor([[1.0, 2.0, 3.0], [2.0, 3.0, 1.0]])
    assert proxy_overestimation(proxy, aux).tolist() == pytest.approx([0.75, -0.25, -0.5])
    # An auxiliary identical to the proxy: no gap anywhere.
    assert proxy_overestimation(proxy, proxy[None]).abs().max() == 0


def test_uncertainty_gate_top_fraction_and_threshold():
    u = torch.tensor([0.1, 0.9, 0.5, 0.9, 0.0, 0.3, 0.2, 0.4, 0.6, 0.7])
    # 10 % of 10 rows: exactly one, the first of the two tied 0.9s.
    assert uncertainty_gate(u, 0.1).nonzero().flatten().tolist() == [1]
    # 25 % of 10 = 2.5 -> ⌈2.5⌉ = 3 rows: 0.9, 0.9, 0.7.
    assert uncertainty_gate(u, 0.25).nonzero().flatten().tolist() == [1, 3, 9]
    assert uncertainty_gate(u, 1.0).all()
    # A threshold replaces the fraction: U > 0.55.
    assert uncertainty_gate(u, 0.1, threshold=0.55).nonzero().flatten().tolist() == [1, 3, 8, 9]
    with pytest.raises(ValueError, match="fraction"):
        uncertainty_gate(u, 0.0)


def test_mean_nonnegative_uncertainty_by_hand():
    # U = [−0.5, 0, 0.25, 0.5]: the non-negative ones are 0, 0.25, 0.5, mean 0.25.
    assert mean_nonnegative_uncertainty(torch.tensor([-0.5, 0.0, 0.25, 0.5])) == 0.25
    with pytest.raises(ValueError, match="no uncertainty is >= 0"):
        mean_nonnegative_uncertainty(torch.tensor([-0.1, -0.2]))
    # proxy_gap's gaps sum to 0 (win rates sum to B/2 under every model): one is always >= 0.
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        u = proxy_overestimation(torch.randn(7, generator=g), torch.randn(3, 7, generator=g))
        assert float(u.sum()) == pytest.approx(0.0, abs=1e-6)
        assert mean_nonnegative_uncertainty(u) >= 0.0


def test_adapted_gate_fraction_by_hand():
    h = torch.tensor([0.2, 0.4], dtype=torch.float64)  # previous signals: min 0.2, max 0.4
    # A new high: f·(1 + α) = 0.1 · 1.1 = 0.11; a new low: 0.1 · 0.9 = 0.09; in between, or
    # equal to an extreme (the comparisons are strict): unchanged.
    assert adapted_gate_fraction(0.1, 0.5, h) == pytest.approx(0.11)
    assert adapted_gate_fraction(0.1, 0.1, h) == pytest.approx(0.09)
    assert adapted_gate_fraction(0.1, 0.3, h) == 0.1
    assert adapted_gate_fraction(0.1, 0.4, h) == 0.1 and adapted_gate_fraction(0.1, 0.2, h) == 0.1
    # Clipped to [0.02, 0.2]: 0.19 · 1.1 = 0.209 -> 0.2; 0.021 · 0.9 = 0.0189 -> 0.02.
    assert adapted_gate_fraction(0.19, 0.5, h) == 0.2
    assert adapted_gate_fraction(0.021, 0.1, h) == 0.02
    # No history (the first step): the fraction itself, clipped; α and the bounds are parameters.
    assert adapted_gate_fraction(0.1, 9.0, torch.zeros(0)) == 0.1
    assert adapted_gate_fraction(0.5, 9.0, torch.zeros(0)) == 0.2
    assert adapted_gate_fraction(0.1, 0.5, h, rate=0.5, low=0.01, high=1.0) == pytest.approx(0.15)
    with pytest.raises(ValueError, match="rate"):
        adapted_gate_fraction(0.1, 0.5, h, rate=1.0)
    with pytest.raises(ValueError, match="low, high"):
        adapted_gate_fraction(0.1, 0.5, h, low=0.3, high=0.2)


def test_adapted_gate_fraction_rises_geometrically_to_its_cap():
    # Signals 1, 2, 3, ...: every step after the first is a new high, so f_k = 0.1 · 1.1^(k−1)
    # until 0.1 · 1.1^8 = 0.214 > 0.2 is capped (step 9), and it stays at 0.2.
    f, history = 0.1, []
    fractions = []
    for s in range(1, 12):
        f = adapted_gate_fraction(f, float(s), torch.tensor(history, dtype=torch.float64))
        history.append(float(s))
        fractions.append(f)
    expected = [min(0.1 * 1.1**k, 0.2) for k in range(11)]
    assert fractions == pytest.approx(expected)
    assert fractions[7] < 0.2 and fractions[8:] == [0.2, 0.2, 0.2]


def test_nearest_neighbour_distance_by_hand():
    # Group 0: e0 = (1, 0), e1 = (1, 0), e2 = (0, 1). e0 and e1 coincide (distance 0); e2's
    # nearest is either, cos = 0 -> 1. Group 1: (1, 1) and (1, 0): cos = 1/√2.
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="group_size"):
        nearest_neighbour_distance(emb, 4)
    d = nearest_neighbour_distance(emb[:4], 2)
    # Groups of 2: (e0, e1) -> 0, 0; (e2, e3): cos((0,1),(1,1)) = 1/√2.
    assert d.tolist() == pytest.approx([0.0, 0.0, 1 - 1 / math.sqrt(2), 1 - 1 / math.sqrt(2)])
    d3 = nearest_neighbour_distance(emb, 3)
    # Second group of 3: (1,1), (1,0), (0,0); the zero vector has cos 0 with both.
    c = 1 - 1 / math.sqrt(2)
    assert d3.tolist() == pytest.approx([0.0, 0.0, 1.0, c, c, 1.0])


def test_nearest_neighbour_distance_against_naive():
    g = torch.Generator().manual_seed(1)
    emb, G = torch.randn(12, 5, generator=g), 4
    d = nearest_neighbour_distance(emb, G)
    for i in range(12):
        group = range(i // G * G, i // G * G + G)
        cos = [
            torch.nn.functional.cosine_similarity(emb[i], emb[j], dim=0) for j in group if j != i
        ]
        assert float(d[i]) == pytest.approx(float(1 - max(cos)), abs=1e-6)


def test_diversity_weights_by_hand():
    # One group of 4: rewards [4, 2, 1, 1] (mean 2), diversities [0.2, 0.6, 0.4, 0.0]
    # (mean 0.3). Rows 0 and 1 are at or above the mean: 0.2/0.3 and 0.6/0.3 = 2; rows 2 and
    # 3 below: 1. A second group with all-identical samples (d = 0): all 1.
    r = torch.tensor([4.0, 2.0, 1.0, 1.0, 5.0, 1.0, 3.0, 3.0])
    d = torch.tensor([0.2, 0.6, 0.4, 0.0, 0.0, 0.0, 0.0, 0.0])
    m = diversity_weights(r, d, 4)
    assert m.tolist() == pytest.approx([2 / 3, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])


def test_diversity_weights_keep_the_sign_and_the_order_of_advantages():
    # Multiplying by m > 0 never flips an advantage; rows below the mean are untouched.
    g = torch.Generator().manual_seed(2)
    for _ in range(5):
        r, d = torch.randn(16, generator=g), torch.rand(16, generator=g)
        m = diversity_weights(r, d, 8)
        assert (m > 0).all()
        below = r < r.view(2, 8).mean(dim=1).repeat_interleave(8)
        assert torch.equal(m[below], torch.ones(int(below.sum())))
    # Within a group, the amplified rows average d/d̄ over themselves: equal diversities
    # everywhere give m = 1 (no bonus without a difference).
    r = torch.tensor(list(itertools.chain(range(4), range(4))), dtype=torch.float32)
    assert torch.equal(diversity_weights(r, torch.full((8,), 0.3), 4), torch.ones(8))
