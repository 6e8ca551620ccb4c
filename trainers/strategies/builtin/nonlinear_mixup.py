"""``nonlinear_mixup`` on the pooled representation (Guo. "Nonlinear Mixup: Out-Of-Manifold
Data Augmentation for Text Classification". AAAI 2020).

The scalar b of Eq. 1 becomes a vector ``lam in [0, 1]^d`` of d Beta draws, one per hidden
dimension; the label vectors are mixed with the same per-dimension policy and the soft label
is the mean share over dimensions. ``mix_samples`` and ``mixup_variant`` as for ``mixup``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch.nn.functional as F
from torch import Tensor

from trainers.strategies.builtin.mixup import (
    PAIRWISE_READS,
    draws_per_update,
    forward_passes,
    updates_per_batch,
)
from trainers.strategies.mixing import DEFAULT_LABEL_VECTOR_LOSS, MixedBatch, draw_pair, mix_pairs
from trainers.strategies.registry import Strategy, register_strategy
from trainers.strategies.sites import pooled

if TYPE_CHECKING:
    from trainers.config import CellConfig


def nonlinear_mixup(representations: Tensor, targets: Tensor, classifier: Tensor,
                    config: CellConfig) -> MixedBatch:
    """Nonlinear mixup on hidden states: one Beta(alpha, alpha) draw per pair and dimension.

    Args:
        representations: ``[b, d]`` hidden states v(x).
        targets: ``[b]`` integer labels.
        classifier: ``[c, d]`` weight W.
        config: the cell's settings (``alpha``).
    """
    b, d = representations.shape
    lam, partner = draw_pair(b, d, config.alpha, representations.device)
    onehot = F.one_hot(targets, classifier.shape[0]).float()
    return mix_pairs(representations, classifier[targets], onehot, partner, lam)


NONLINEAR_MIXUP = register_strategy(Strategy(
    name="nonlinear_mixup",
    label="nonlinear mixup",
    family="pairwise",
    site="pooled",
    loss=pooled(nonlinear_mixup),
    reads=PAIRWISE_READS,
    default_loss=DEFAULT_LABEL_VECTOR_LOSS,
    updates_per_batch=updates_per_batch,
    forward_passes=forward_passes,
    draws_per_update=draws_per_update,
    fused="vector",
    cite="Guo, AAAI 2020",
))
