"""Tests for goodhartlab.core.kl."""

import math

import numpy as np
import pytest
import torch

from goodhartlab.core.kl import bon_kl, sequence_kl, token_kl


def test_token_kl_hand_computed():
    # logp = log 0.5, logp_ref = log 0.25: log r = log 0.5 = -0.693147..., r = 0.5.
    # k1 = -log r = log 2; k2 = (log 2)^2 / 2; k3 = (0.5 - 1) - log 0.5 = log 2 - 0.5.
    logp = torch.tensor([math.log(0.5)], dtype=torch.float64)
    logp_ref = torch.tensor([math.log(0.25)], dtype=torch.float64)
    assert token_kl(logp, logp_ref, "k1").item() == pytest.approx(math.log(2))
    assert token_kl(logp, logp_ref, "k2").item() == pytest.approx(math.log(2) ** 2 / 2)
    assert token_kl(logp, logp_ref, "k3").item() == pytest.approx(math.log(2) - 0.5)


def test_token_kl_equal_policies_is_zero():
    logp = torch.log(torch.tensor([[0.1, 0.7], [0.2, 0.9]]))
    for est in ("k1", "k2", "k3"):
        assert token_kl(logp, logp, est).abs().max().item() == 0.0


def test_k3_accurate_for_tiny_log_ratio():
    # e^x - 1 - x = x^2/2 + x^3/6 + ...; for x = 1e-6 that is 5e-13 (1 + 3.3e-7).
    # Naive exp(x) - 1 - x in float32 returns 0 or garbage here.
    x = torch.tensor([1e-6, -1e-6, 3e-3, -3e-3], dtype=torch.float32)
    got = token_kl(torch.zeros_like(x), x, "k3")
    xd = x.double()
    expected = xd**2 / 2 + xd**3 / 6 + xd**4 / 24 + xd**5 / 120
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=0)
    # Series and expm1 branches agree where they meet.
    edge = torch.tensor([0.0099999, 0.0100001], dtype=torch.float64)
    exact = torch.expm1(edge) - edge
    torch.testing.assert_close(
        token_kl(torch.zeros_like(edge), edge, "k3"), exact, rtol=1e-12, atol=0
    )


def test_k1_and_k3_unbiased_for_true_kl():
    # Exact expectation over a categorical π: Σ_x π(x) k(x) equals KL(π‖π_ref) for k1, k3.
    p = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    q = torch.tensor([0.2, 0.2, 0.6], dtype=torch.float64)
    kl = (p * (p / q).log()).sum()
    for est in ("k1", "k3"):
        assert (p * token_kl(p.log(), q.log(), est)).sum().item() == pytest.approx(kl.item())
    assert bool((token_kl(p.log(), q.log(), "k3") >= 0).all())


def test_sequence_kl_sums_masked_tokens():
    # Row 0: k1 on tokens 1, 2 only = (0.3 - 0.1) + (0.5 - 0.2) = 0.5;
    # row 1: token 0 only = 1.0 - 0.0 = 1.0; padding holds -inf and is ignored.
    logp = torch.tensor([[9.0, 0.3, 0.5], [1.0, -math.inf, -math.inf]], dtype=torch.float64)
    logp_ref = torch.tensor([[0.0, 0.1, 0.2], [0.0, 0.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[0, 1, 1], [1, 0, 0]])
    torch.testing.assert_close(
        sequence_kl(logp, logp_ref, mask), torch.tensor([0.5, 1.0], dtype=torch.float64)
    )
    torch.testing.assert_close(
        sequence_kl(logp, logp_ref, mask.bool()), torch.tensor([0.5, 1.0], dtype=torch.float64)
    )


def test_sequence_kl_matches_token_sum_for_each_estimator():
    gen = torch.Generator().manual_seed(0)
    logp, logp_ref = torch.randn(3, 5, generator=gen), torch.randn(3, 5, generator=gen)
    mask = torch.ones(3, 5)
    for est in ("k1", "k2", "k3"):
        torch.testing.assert_close(
            sequence_kl(logp, logp_ref, mask, est), token_kl(logp, logp_ref, est).sum(-1)
        )


def test_bon_kl_hand_computed_and_vectorized():
    # n = 1: log 1 - 0 = 0; n = 2: log 2 - 1/2; n = 4: log 4 - 3/4.
    expected = torch.tensor([0.0, math.log(2) - 0.5, math.log(4) - 0.75], dtype=torch.float64)
    torch.testing.assert_close(bon_kl([1, 2, 4]), expected)
    torch.testing.assert_close(bon_kl(np.array([1, 2, 4])), expected)
    torch.testing.assert_close(bon_kl(torch.tensor([1, 2, 4])), expected)
    assert bon_kl(2).item() == pytest.approx(math.log(2) - 0.5)
    assert bon_kl(2).shape == ()


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: token_kl(torch.zeros(2, 3), torch.zeros(2, 4)), "logp_ref"),
        (lambda: token_kl(torch.zeros(2), torch.zeros(2), "k4"), "estimator"),
        (lambda: sequence_kl(torch.zeros(3), torch.zeros(3), torch.ones(3)), "logp"),
        (lambda: sequence_kl(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 2)), "mask"),
        (
            lambda: sequence_kl(torch.zeros(2, 3), torch.zeros(2, 3), torch.full((2, 3), 0.5)),
            "mask",
        ),
        (lambda: bon_kl(0), "n"),
        (lambda: bon_kl([1, 2, -3]), "n"),
        (lambda: bon_kl(2.5), "n"),
    ],
)
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()
