"""Our GRPO, RLOO and DPO-family losses against TRL 1.16's, on identical inputs.

TRL computes its losses inside the trainers' ``_compute_loss`` methods. We call those
methods unbound, on a stub ``self`` that carries only the attributes they read and a stub
model whose "forward pass" returns our per-token log-probabilities, so TRL's own arithmetic
runs on our tensors. Values and gradients (with respect to the per-token log-probabilities)
must match. The stubs are written against trl==1.16.0 (the version the dev extra pins).
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("trl")
from trl.trainer.dpo_trainer import DPOTrainer
from trl.trainer.grpo_trainer import GRPOTrainer
from trl.trainer.rloo_trainer import RLOOTrainer
from trl.trainer.utils import nanstd

from goodhartlab.core.advantages import group_normalized_advantages
from goodhartlab.core.losses import (
    dpo_loss,
    grpo_loss,
    ipo_loss,
    rloo_loss,
    rpo_loss,
    slic_loss,
)

DT = torch.float64


def _accelerator():
    identity = lambda x, **_: x  # noqa: E731 (single-process: gather and reduce are no-ops)
    return SimpleNamespace(
        device=torch.device("cpu"),
        num_processes=1,
        gather=identity,
        gather_for_metrics=identity,
        reduce=identity,
    )


def _metrics():
    return defaultdict(lambda: defaultdict(list))


def _policy_batch(seed: int, B: int = 6, T: int = 5, P: int = 2):
    """Per-token log-probs (current, old, ref) over right-padded completions, and TRL inputs."""
    gen = torch.Generator().manual_seed(seed)
    logp = (-3 * torch.rand(B, T, generator=gen, dtype=DT)).requires_grad_()
    logp_old = logp.detach() + 0.25 * torch.randn(B, T, generator=gen, dtype=DT)
    logp_ref = logp.detach() + 0.5 * torch.randn(B, T, generator=gen, dtype=DT)
    lengths = torch.randint(1, T + 1, (B,), generator=gen)
    lengths[0] = T  # one full-length row
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    inputs = {
        "prompt_ids": torch.zeros(B, P, dtype=torch.long),
        "prompt_mask": torch.ones(B, P, dtype=torch.long),
        "completion_ids": torch.zeros(B, T, dtype=torch.long),
        "completion_mask": mask,
    }
    return gen, logp, logp_old, logp_ref, mask, inputs


def _stub_logps_fn(logp: torch.Tensor):
    # TRL's _get_per_token_logps_and_entropies returns (per_token_logps, entropies, aux_loss).
    return lambda *args, **kwargs: (logp, torch.zeros_like(logp.detach()), None)


# -------------------------------------------------------------------------------- GRPO


def _trl_grpo(logp, logp_old, logp_ref, advantages, inputs, *, loss_type, beta, eps, eps_high):
    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=_accelerator(),
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        loss_type=loss_type,
        beta=beta,
        epsilon_low=eps,
        epsilon_high=eps_high,
        importance_sampling_level="token",
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        use_vllm=False,
        current_gradient_accumulation_steps=1,
        _entropy_bonus_enabled=False,
        aux_loss_enabled=False,
        _metrics=_metrics(),
        _get_per_token_logps_and_entropies=_stub_logps_fn(logp),
    )
    inputs = {
        **inputs,
        "advantages": advantages,
        "old_per_token_logps": logp_old,
        "ref_per_token_logps": logp_ref,
        "num_items_in_batch": inputs["completion_mask"].sum(),
    }
    loss = GRPOTrainer._compute_loss(trainer, None, inputs)
    return loss, trainer._metrics["train"]


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dapo"])
@pytest.mark.parametrize(
    ("kl_coef", "eps_high"),
    [(0.0, None), (0.04, None), (0.04, 0.28)],
    ids=["nokl", "kl", "kl-high"],
)
def test_grpo_loss_matches_trl(loss_type, kl_coef, eps_high):
    gen, logp, logp_old, logp_ref, mask, inputs = _policy_batch(seed=10)
    rewards = torch.randn(6, generator=gen, dtype=DT)
    adv = group_normalized_advantages(rewards, group_size=3)

    ours, stats = grpo_loss(
        logp,
        logp_old,
        logp_ref,
        adv,
        mask,
        clip_coef=0.2,
        clip_coef_high=eps_high,
        kl_coef=kl_coef,
        loss_type=loss_type,
    )
    (our_grad,) = torch.autograd.grad(ours, logp)
    theirs, metrics = _trl_grpo(
        logp,
        logp_old,
        logp_ref,
        adv,
        inputs,
        loss_type=loss_type,
        beta=kl_coef,
        eps=0.2,
        eps_high=0.2 if eps_high is None else eps_high,
    )
    (their_grad,) = torch.autograd.grad(theirs, logp)

    # Some tokens are clipped, so the comparison covers both branches of the surrogate.
    assert 0.0 < stats["clipfrac"].item() < 1.0
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(our_grad, their_grad, rtol=1e-12, atol=1e-14)
    assert stats["clipfrac"].item() == pytest.approx(metrics["clip_ratio/region_mean"][0])
    if kl_coef > 0:
        assert stats["kl"].item() == pytest.approx(metrics["kl"][0], rel=1e-12)


def test_group_normalized_advantages_use_trls_std():
    # TRL (scale_rewards="group"): (r − mean) / (nanstd + 1e-4), nanstd Bessel-corrected.
    rewards = torch.tensor([0.0, 1.0, 1.0, 3.0, -2.0, 2.0, 2.0, 2.0], dtype=DT)
    grouped = rewards.view(-1, 4)
    theirs = (grouped - grouped.mean(1, keepdim=True)) / (nanstd(grouped, dim=1)[:, None] + 1e-4)
    torch.testing.assert_close(group_normalized_advantages(rewards, 4), theirs.reshape(-1))


# -------------------------------------------------------------------------------- RLOO


@pytest.mark.parametrize("eps_high", [None, 0.28])
def test_rloo_loss_matches_trl(eps_high):
    gen, logp, _, _, mask, inputs = _policy_batch(seed=11)
    # Sequence-level ratios: perturb the summed old log-probs so some rows are clipped.
    logp_old = logp.detach() + 0.15 * torch.randn(logp.shape, generator=gen, dtype=DT)
    adv = torch.randn(6, generator=gen, dtype=DT)

    ours, stats = rloo_loss(logp, logp_old, adv, mask, clip_coef=0.2, clip_coef_high=eps_high)
    (our_grad,) = torch.autograd.grad(ours, logp)

    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=_accelerator(),
        epsilon_low=0.2,
        epsilon_high=0.2 if eps_high is None else eps_high,
        aux_loss_enabled=False,
        _metrics=_metrics(),
        _get_per_token_logps_and_entropies=_stub_logps_fn(logp),
    )
    old_logps = (logp_old * mask).sum(1)  # TRL stores the summed sequence log-prob
    theirs = RLOOTrainer._compute_loss(
        trainer, None, {**inputs, "old_logps": old_logps, "advantages": adv}
    )
    (their_grad,) = torch.autograd.grad(theirs, logp)

    assert 0.0 < stats["clipfrac"].item() < 1.0
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(our_grad, their_grad, rtol=1e-12, atol=1e-14)
    assert stats["clipfrac"].item() == pytest.approx(
        trainer._metrics["train"]["clip_ratio/region_mean"][0]
    )


# ------------------------------------------------------------------------ DPO family


def _pair_batch(seed: int, chosen_lengths: list[int], rejected_lengths: list[int], T: int = 6):
    """Per-token log-probs of B chosen and B rejected completions (prompt at position 0)."""
    gen = torch.Generator().manual_seed(seed)
    B = len(chosen_lengths)
    lengths = torch.tensor(chosen_lengths + rejected_lengths)
    # completion_mask over the full sequence (T tokens): position 0 is the prompt.
    completion_mask = (torch.arange(T)[None] >= 1) & (torch.arange(T)[None] <= lengths[:, None])
    completion_mask = completion_mask.long()
    shift_mask = completion_mask[:, 1:].bool()
    # Log-probs of tokens 1..T−1 (the shifted labels); 0 off the completion, as TRL's fused
    # LM head gives for labels = −100.
    per_token = -2 * torch.rand(2 * B, T - 1, generator=gen, dtype=DT)
    per_token = torch.where(shift_mask, per_token, torch.zeros((), dtype=DT)).requires_grad_()
    ref_per_token = torch.where(
        shift_mask,
        -2 * torch.rand(2 * B, T - 1, generator=gen, dtype=DT),
        torch.zeros((), dtype=DT),
    )
    return per_token, ref_per_token, completion_mask, shift_mask


def _trl_dpo(
    per_token,
    ref_per_token,
    completion_mask,
    *,
    loss_type,
    beta,
    label_smoothing=0.0,
    loss_weights=None,
):
    ref_logps = ref_per_token.sum(1)
    ref_chosen, ref_rejected = ref_logps.chunk(2)
    outputs = SimpleNamespace(
        log_probs=per_token,
        entropy=torch.zeros_like(per_token.detach()),
        mean_logits=torch.zeros_like(per_token.detach()),
        is_top1=torch.zeros_like(per_token.detach(), dtype=torch.bool),
    )
    model = SimpleNamespace(training=False)
    model_fn = lambda **kwargs: outputs  # noqa: E731
    loss_types = loss_type if isinstance(loss_type, list) else [loss_type]
    trainer = SimpleNamespace(
        model=model,
        accelerator=_accelerator(),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=loss_types,
        loss_weights=loss_weights or [1.0] * len(loss_types),
        beta=beta,
        label_smoothing=label_smoothing,
        use_weighting=False,
        _metrics=_metrics(),
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {
        "input_ids": torch.zeros_like(completion_mask),
        "attention_mask": torch.ones_like(completion_mask),
        "completion_mask": completion_mask,
        "ref_chosen_logps": ref_chosen,
        "ref_rejected_logps": ref_rejected,
    }
    loss = DPOTrainer._compute_loss(trainer, model_fn, inputs, return_outputs=False)
    return loss, trainer._metrics["eval"]


def _our_pairs(per_token, ref_per_token):
    policy_chosen, policy_rejected = per_token.sum(1).chunk(2)
    ref_chosen, ref_rejected = ref_per_token.sum(1).chunk(2)
    return policy_chosen, policy_rejected, ref_chosen, ref_rejected


@pytest.mark.parametrize(("loss_type", "ours_fn"), [("sigmoid", dpo_loss), ("hinge", slic_loss)])
def test_dpo_and_hinge_match_trl(loss_type, ours_fn):
    per_token, ref, cmask, _ = _pair_batch(20, [3, 5, 2, 4], [5, 1, 4, 4])
    # β = 2 puts some hinge terms past the margin (inactive) and some inside it.
    ours, stats = ours_fn(*_our_pairs(per_token, ref), beta=2.0)
    (our_grad,) = torch.autograd.grad(ours, per_token)
    theirs, metrics = _trl_dpo(per_token, ref, cmask, loss_type=loss_type, beta=2.0)
    (their_grad,) = torch.autograd.grad(theirs, per_token)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(our_grad, their_grad, rtol=1e-12, atol=1e-14)
    for ours_key, trl_key in [
        ("reward_chosen", "rewards/chosen"),
        ("reward_rejected", "rewards/rejected"),
        ("reward_accuracy", "rewards/accuracies"),
        ("reward_margin", "rewards/margins"),
    ]:
        assert stats[ours_key].item() == pytest.approx(metrics[trl_key][0], rel=1e-12)
    if loss_type == "hinge":
        assert 0.0 < stats["reward_accuracy"].item()  # the batch is not degenerate


def test_ipo_matches_trl_on_length_averaged_log_probs():
    # TRL's "ipo" divides each completion's log-ratio by its token count; our ipo_loss on
    # per-token mean log-probs is the same loss (see ipo_loss's docstring).
    per_token, ref, cmask, shift_mask = _pair_batch(21, [3, 5, 2, 4], [5, 1, 4, 4])
    n = shift_mask.sum(1).to(DT)
    pc, pr = (per_token.sum(1) / n).chunk(2)
    rc, rr = (ref.sum(1) / n).chunk(2)
    ours, _ = ipo_loss(pc, pr, rc, rr, beta=0.4)
    (our_grad,) = torch.autograd.grad(ours, per_token)
    theirs, _ = _trl_dpo(per_token, ref, cmask, loss_type="ipo", beta=0.4)
    (their_grad,) = torch.autograd.grad(theirs, per_token)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(our_grad, their_grad, rtol=1e-12, atol=1e-14)
    # On summed log-probs (the paper's form) they differ when lengths differ.
    summed, _ = ipo_loss(*_our_pairs(per_token, ref), beta=0.4)
    assert abs(summed.item() - theirs.item()) > 1e-3


@pytest.mark.parametrize("eta", [1.0, 0.5])
def test_rpo_matches_trl_sigmoid_plus_sft_with_equal_lengths(eta):
    per_token, ref, cmask, shift_mask = _pair_batch(22, [4, 4, 4], [2, 5, 3])
    chosen_tokens, _ = per_token.chunk(2)
    chosen_mask, _ = shift_mask.chunk(2)
    chosen_nll = -(chosen_tokens * chosen_mask).sum(1) / chosen_mask.sum(1)
    ours, _ = rpo_loss(*_our_pairs(per_token, ref), beta=0.3, eta=eta, chosen_nll=chosen_nll)
    (our_grad,) = torch.autograd.grad(ours, per_token)
    theirs, _ = _trl_dpo(
        per_token, ref, cmask, loss_type=["sigmoid", "sft"], beta=0.3, loss_weights=[1.0, eta]
    )
    (their_grad,) = torch.autograd.grad(theirs, per_token)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(our_grad, their_grad, rtol=1e-12, atol=1e-14)


def test_rpo_differs_from_trl_sft_by_length_weighting():
    # Unequal chosen lengths: TRL's "sft" term is the token mean over the batch, Σ n_i NLL_i / Σ n_i;
    # ours the mean of per-completion means. TRL equals DPO + η · (token-weighted NLL).
    per_token, ref, cmask, shift_mask = _pair_batch(23, [1, 5, 3], [2, 5, 3])
    chosen_tokens, _ = per_token.chunk(2)
    chosen_mask, _ = shift_mask.chunk(2)
    n = chosen_mask.sum(1).to(DT)
    chosen_nll = -(chosen_tokens * chosen_mask).sum(1) / n
    pairs = _our_pairs(per_token, ref)
    ours, stats = rpo_loss(*pairs, beta=0.3, eta=1.0, chosen_nll=chosen_nll)
    theirs, _ = _trl_dpo(per_token, ref, cmask, loss_type=["sigmoid", "sft"], beta=0.3)
    token_weighted = (n * chosen_nll).sum() / n.sum()
    torch.testing.assert_close(theirs, stats["dpo_loss"] + token_weighted, rtol=1e-12, atol=1e-14)
    assert abs(ours.item() - theirs.item()) > 1e-3


def test_cdpo_matches_trl_aot_for_a_single_pair():
    # TRL 1.16 ignores label_smoothing for "sigmoid". Its "aot" loss applies the cDPO
    # smoothing to sorted log-ratio differences; for B = 1 sorting is the identity and "aot" is
    # exactly conservative DPO: (1 − ε)(−log σ(βh)) + ε(−log σ(−βh)).
    per_token, ref, cmask, _ = _pair_batch(24, [3], [4])
    ours, _ = dpo_loss(*_our_pairs(per_token, ref), beta=0.5, label_smoothing=0.2)
    theirs, _ = _trl_dpo(per_token, ref, cmask, loss_type="aot", beta=0.5, label_smoothing=0.2)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)
    sigmoid, _ = _trl_dpo(per_token, ref, cmask, loss_type="sigmoid", beta=0.5, label_smoothing=0.2)
    plain, _ = dpo_loss(*_our_pairs(per_token, ref), beta=0.5)
    torch.testing.assert_close(sigmoid, plain, rtol=1e-12, atol=1e-14)
