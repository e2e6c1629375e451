"""The one epoch loop of reward-model training, and the head protocol its variants share.

A variant (Bradley-Terry and its scalar objectives in ``train.rm``, ArmoRM in
``train.rm_armo``, PAL in ``train.rm_pal``) is an :class:`RMHead`: it is built on a
``RewardModel`` (its modules installed on the model, which is what is saved: ``model.score``,
``RewardModel.feature_head``), names its trained parameters and their AdamW groups, gives the
loss on a batch of training items, evaluates held-out pairs and reports what it learned.
:meth:`RMHead.fit` trains it with the recipe every variant shares (AdamW at ``lr``, the
``lr_schedule`` over all steps, the gradient clipped to ``max_grad_norm``), through
:func:`run_epochs`, which the variants' other stages (ArmoRM's gating, the features-only fit,
PAL's few-shot fit) call directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

#: A batch's loss and its stats (``accuracy`` shown on the progress bar), or None for stats.
BatchLoss = Callable[[list[int]], tuple[Tensor, dict[str, Tensor] | None]]


def lr_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, kind: str
) -> torch.optim.lr_scheduler.LambdaLR:
    """'linear': the learning rate decays from its peak to 0 over ``total_steps``;
    'constant': it stays at its peak."""
    if kind == "linear":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 - s / total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)


def run_epochs(
    batch_loss: BatchLoss,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    *,
    items: int,
    batch: int,
    epochs: int,
    order_gen: torch.Generator | None,
    clip: Sequence[Tensor] = (),
    max_grad_norm: float | None = None,
    module: nn.Module | None = None,
    desc: str | None = None,
    progress: bool = False,
    on_epoch: Callable[[int, float], None] | None = None,
) -> list[float]:
    """``epochs`` passes over ``items`` training items in batches of ``batch``.

    Each epoch puts ``module`` (if given) in training mode and draws the order from
    ``order_gen`` (None: items in order); each step minimises ``batch_loss(indices)``, clips
    the gradient norm of ``clip`` to ``max_grad_norm`` (None: no clipping) and steps the
    optimizer and the scheduler. After each epoch ``on_epoch(epoch, mean loss)`` (epochs from
    1); at the end ``module`` is put in eval mode. A tqdm bar is shown with ``desc`` and
    ``progress``. Returns the per-epoch mean losses (item-weighted).
    """
    steps = -(-items // batch) * epochs
    bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False) if desc else None
    losses = []
    for epoch in range(1, epochs + 1):
        if module is not None:
            module.train()
        if order_gen is None:
            order = list(range(items))
        else:
            order = torch.randperm(items, generator=order_gen).tolist()
        total = 0.0
        for start in range(0, items, batch):
            idx = order[start : start + batch]
            loss, stats = batch_loss(idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(list(clip), max_grad_norm)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total += loss.item() * len(idx)
            if bar is not None:
                bar.update(1)
                if stats is not None:
                    bar.set_postfix(
                        loss=f"{loss.item():.3f}", acc=f"{stats['accuracy'].item():.2f}"
                    )
        losses.append(total / items)
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
    if bar is not None:
        bar.close()
    if module is not None:
        module.eval()
    return losses


class RMHead:
    """A reward-model variant as training sees it (subclasses fill in the blanks).

    Built on ``reward_model`` (``config`` an ``RMTrainConfig``), with ``items`` training items
    an epoch (pairs; ArmoRM's first stage: completions) in batches of ``batch``.
    ``eval_each_epoch``: the trainer evaluates held-out pairs after every epoch (else once,
    after :meth:`fit`).
    """

    desc = "train rm"
    eval_each_epoch = True

    def __init__(self, reward_model, config, *, items: int, batch: int):
        self.reward_model = reward_model
        self.model: nn.Module = reward_model.model
        self.config = config
        self.items = items
        self.batch = batch

    def parameters(self) -> list[Tensor]:
        """Every trained tensor, in the order their gradient norm is clipped."""
        raise NotImplementedError

    def param_groups(self) -> list[dict[str, Any]]:
        """AdamW's parameter groups (a group may set its own ``lr``, ``weight_decay``)."""
        return [{"params": self.parameters()}]

    def loss(self, idx: list[int]) -> tuple[Tensor, dict[str, Tensor] | None]:
        """The training loss on the items ``idx`` and its stats (None: none)."""
        raise NotImplementedError

    def evaluate(self, pairs: Sequence) -> dict[str, Any]:
        """Held-out metrics (``train.rm.evaluate_reward_model``); {} without pairs."""
        if not pairs:
            return {}
        from goodhartlab.train.rm import evaluate_reward_model

        return evaluate_reward_model(
            self.reward_model, pairs, batch_size=self.config.eval_batch_size
        )

    def report(self) -> dict[str, Any]:
        """Entries for ``pair_inputs`` (and goodhart_rm.json) after training."""
        return {}

    def fit(
        self, *, progress: bool, on_epoch: Callable[[int, float], None] | None = None
    ) -> list[float]:
        """Train with the shared recipe; returns the per-epoch mean train losses."""
        config = self.config
        # The data order's own generator (ArmoRM's gating stage draws on from it).
        self.order_gen = torch.Generator().manual_seed(config.seed)
        optimizer = torch.optim.AdamW(
            self.param_groups(), lr=config.lr, weight_decay=config.weight_decay
        )
        steps = -(-self.items // self.batch) * config.epochs
        return run_epochs(
            self.loss,
            optimizer,
            lr_schedule(optimizer, steps, config.lr_schedule),
            items=self.items,
            batch=self.batch,
            epochs=config.epochs,
            order_gen=self.order_gen,
            clip=self.parameters(),
            max_grad_norm=config.max_grad_norm,
            module=self.model,
            desc=self.desc,
            progress=progress,
            on_epoch=on_epoch,
        )
