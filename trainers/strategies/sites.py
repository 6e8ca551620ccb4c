"""Where a strategy mixes, as the loss of one update: the functions a declaration's ``loss`` is.

A strategy file writes one small *mixing function* and wraps it here:

* :func:`plain_loss`: no mixing, the cross-entropy of the batch (``none``).
* :func:`pooled`: the paper's frame. ``mix(v, targets, W, config)`` turns the pooled
  representations ``v(x) [b, d]`` and the label vectors ``W`` into a
  :class:`~trainers.strategies.mixing.MixedBatch`; the update's loss is the mean of
  ``draws_per_update`` mixed losses (:func:`~trainers.strategies.mixing.mixed_loss`) plus, with
  ``clean_loss``, the cross-entropy of the same ``v``. Frozen features can serve it.
* :func:`in_encoder`: ``draw(batch)`` returns an
  :class:`~trainers.encoder_mixing.EncoderMix` (the layer k, each example's partner and
  weight); the encoder mixes there (:mod:`trainers.encoder_mixing`), the pooled output of the
  mixed sequences is scored against the pair's mixed label vectors (Eq. 2, with the same
  weights), plus, with ``clean_loss``, the cross-entropy of a second, unmixed forward pass.
  Fine-tuning only.

Every loss is a function of one :class:`~trainers.strategies.registry.Batch` and keeps its
graph; the updater runs it under the cell's autocast and calls ``backward()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch.nn.functional as F
from torch import Tensor

from trainers.strategies.mixing import MixedBatch, mix_targets, mixed_loss
from trainers.strategies.registry import Batch

if TYPE_CHECKING:
    from trainers.config import CellConfig
    from trainers.encoder_mixing import EncoderMix

PooledMix = Callable[[Tensor, Tensor, Tensor, "CellConfig"], MixedBatch]
"""``mix(v, targets, W, config)``: representations ``[b, d]``, labels ``[b]``, the classifier
``W [c, d]`` and the cell's settings -> the mixed points and their targets."""
EncoderDraw = Callable[[Batch], "EncoderMix"]
"""``draw(batch)``: where and how this batch mixes inside the encoder."""


def clean_cross_entropy(batch: Batch, representations: Tensor) -> Tensor:
    """Cross-entropy of the scores ``v(x) . w_y`` of unmixed ``representations``."""
    return F.cross_entropy(batch.model.scores(representations).float(), batch.targets)


def plain_loss(batch: Batch) -> Tensor:
    """The cross-entropy of the batch, nothing mixed (the ``none`` baseline)."""
    return clean_cross_entropy(batch, batch.model.represent(batch.inputs))


def pooled(mix: PooledMix) -> Callable[[Batch], Tensor]:
    """The loss of a strategy that mixes the pooled representations v(x).

    Args:
        mix: the strategy's mixing function (see :data:`PooledMix`).
    """

    def loss(batch: Batch) -> Tensor:
        model, config = batch.model, batch.config
        v = model.represent(batch.inputs)
        W = model.label_vectors
        draws = batch.strategy.draws_per_update(config)
        mixed = sum(mixed_loss(mix(v, batch.targets, W, config), W, config.resolved_loss)
                    for _ in range(draws)) / draws
        if config.clean_loss:
            mixed = mixed + clean_cross_entropy(batch, v)
        return mixed

    loss.__doc__ = f"Pooled-output loss around {getattr(mix, '__name__', 'mix')}."
    return loss


def in_encoder(draw: EncoderDraw) -> Callable[[Batch], Tensor]:
    """The loss of a strategy that mixes pairs inside the encoder (layer k or embeddings).

    The mixed sequence ``i`` carries the targets of Eq. 2 with its own weights:
    ``lam_i * w_{y_i} + (1 - lam_i) * w_{y_partner(i)}`` and the same share of each class.

    Args:
        draw: the strategy's draw of the mixing point (see :data:`EncoderDraw`).
    """

    def loss(batch: Batch) -> Tensor:
        model, config, targets = batch.model, batch.config, batch.targets
        mix = draw(batch)
        v = model.represent(batch.inputs, mix=mix)
        W = model.label_vectors
        onehot = F.one_hot(targets, W.shape[0]).float()
        mixed = mix_targets(v, W[targets], onehot, mix.partner, mix.lam.to(v.dtype))
        total = mixed_loss(mixed, W, config.resolved_loss)
        if config.clean_loss:
            total = total + clean_cross_entropy(batch, model.represent(batch.inputs))
        return total

    loss.__doc__ = f"In-encoder loss around {getattr(draw, '__name__', 'draw')}."
    return loss
