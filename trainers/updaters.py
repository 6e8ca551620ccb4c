"""One optimizer update of a cell: gradients, clipping, AdamW, schedule.

Two implementations behind one small interface, :class:`Updater`, chosen once per cell by
:func:`make_updater`:

* :class:`AutogradUpdater`: the strategy's declared loss (``Strategy.loss``, built by
  :mod:`trainers.strategies.sites`), ``backward()``, ``clip_grad_norm_``, ``optimizer.step()``.
  Every strategy, loss, mode and device.
* :class:`FusedHeadUpdater`: :mod:`trainers.fused_head`'s hand-written backward of the frozen
  head (frozen features on CPU; the strategies that declare a ``fused`` kind, with the
  cross-entropy losses),
  the same clipping and fused-AdamW kernel without their per-call Python. It makes the same
  random draws in the same order as the autograd path, so a cell follows the same trajectory
  up to float rounding (tests/test_fused_head.py).

Both return the update's loss, detached and on the device (the caller checks it for NaN in
batches). The updater owns nothing the checkpoint needs: model, optimizer and scheduler are the
cell's (:class:`UpdateContext`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from trainers.config import CellConfig
from trainers.errors import CellError
from trainers.fused_head import (
    HeadAdamW,
    clip_grad_norm_,
    draw_dropout,
    draw_pairs,
    head_layout_known,
    head_update,
    supports,
)
from trainers.model import CellModel
from trainers.strategies import Batch
from trainers.tasks import task_of

PATHS = ("autograd", "fused")


@dataclass
class UpdateContext:
    """What an update works on: the cell's config, model, optimizer, schedule, autocast
    context and label count."""

    config: CellConfig
    model: CellModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    autocast: Any
    num_labels: int


class Updater(Protocol):
    """One optimizer update on a batch."""

    path: str
    """``autograd`` or ``fused``: epoch times compare like with like only on one path."""

    def step(self, inputs: Any, targets: Tensor) -> Tensor:
        """Compute the gradients, clip, step AdamW and the schedule; the loss (detached)."""


def draws_per_update(config: CellConfig) -> int:
    """Mixed batches averaged in one update, as the strategy declares them (shared mixup:
    ``mix_samples``; most strategies: 1)."""
    return config.strategy_spec.draws_per_update(config)


def fusable(config: CellConfig, device: torch.device) -> bool:
    """Whether :mod:`trainers.fused_head` covers this cell: frozen features (or toy inputs) on
    CPU, a strategy that declares a ``fused`` kind, losses ce/soft_ce. On CUDA the head runs
    under autocast and kernel launches are asynchronous: autograd is as fast there."""
    frozen = config.mode == "frozen" or not task_of(config).encoder
    return device.type == "cpu" and supports(config.strategy_spec.fused, config.resolved_loss,
                                             frozen)


class AutogradUpdater:
    """The loss by autograd: the strategy's declared ``loss`` of the batch."""

    path = "autograd"

    def __init__(self, ctx: UpdateContext) -> None:
        self.ctx = ctx
        self.strategy = ctx.config.strategy_spec

    def loss(self, inputs: Any, targets: Tensor) -> Tensor:
        """The loss of one update, with its graph."""
        batch = Batch(self.ctx.model, inputs, targets, self.ctx.config, self.strategy)
        with self.ctx.autocast:
            return self.strategy.loss(batch)

    def step(self, inputs: Any, targets: Tensor) -> Tensor:
        ctx = self.ctx
        ctx.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(inputs, targets)
        loss.backward()
        if ctx.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(ctx.model.parameters(), ctx.config.grad_clip)
        ctx.optimizer.step()
        ctx.scheduler.step()
        return loss.detach()


class FusedHeadUpdater:
    """The frozen head's update by :mod:`trainers.fused_head` (no autograd)."""

    path = "fused"

    def __init__(self, ctx: UpdateContext) -> None:
        self.ctx = ctx
        self.head_params = ctx.model.head_parameters()
        self._onehot: tuple[Tensor | None, int, Tensor | None] = (None, -1, None)
        # optimizer.step() where the kernel is not available (torch without CPU fused AdamW)
        self.head_adamw = HeadAdamW(ctx.optimizer) if HeadAdamW.applies(ctx.optimizer) \
            else None

    def loss(self, features: Tensor, targets: Tensor) -> Tensor:
        """The loss of one update; writes every head parameter's ``.grad``."""
        config, model = self.ctx.config, self.ctx.model
        b = features.shape[0]
        keep = draw_dropout((b, model.dim), model.dropout.p, features.device)
        pairs = draw_pairs(config.strategy_spec.fused, b, model.dim, config.alpha,
                           draws_per_update(config), features.device)
        return head_update(model, features, self.onehot(targets), keep, pairs, config.clean_loss)

    def onehot(self, targets: Tensor) -> Tensor:
        """``targets`` one-hot, in the head's dtype, kept while the same unchanged batch is
        updated again (the n updates of paper-faithful mixup run on one batch)."""
        seen, version, rows = self._onehot
        if seen is not targets or version != targets._version:  # _version: in-place changes
            dtype = self.ctx.model.classifier.weight.dtype
            rows = F.one_hot(targets, self.ctx.num_labels).to(dtype)
            self._onehot = (targets, targets._version, rows)
        return rows

    def step(self, inputs: Any, targets: Tensor) -> Tensor:
        """Same clipping operations and AdamW kernel as the autograd path, called directly."""
        ctx = self.ctx
        loss = self.loss(inputs, targets)
        if ctx.config.grad_clip > 0:
            clip_grad_norm_([p.grad for p in self.head_params], ctx.config.grad_clip)
        (self.head_adamw or ctx.optimizer).step()
        ctx.scheduler.step()
        return loss


def make_updater(ctx: UpdateContext, device: torch.device,
                 fused: bool | None = None) -> Updater:
    """The cell's updater: fused wherever it applies (``fused=None``), or as forced."""
    possible = fusable(ctx.config, device) and head_layout_known(ctx.model)
    if fused and not possible:
        raise CellError(f"{ctx.config.cell_name}: the fused head update covers frozen "
                        "features on CPU with strategies that declare a fused kind and losses "
                        "ce/soft_ce")
    use_fused = possible if fused is None else fused
    return FusedHeadUpdater(ctx) if use_fused else AutogradUpdater(ctx)
