"""``mixup`` on the pooled representation (Zhang, Cisse, Dauphin, Lopez-Paz. "mixup: Beyond
Empirical Risk Minimization". ICLR 2018; on a transformer's hidden states: Sun et al.
"Mixup-Transformer: Dynamic Data Augmentation for NLP Tasks". COLING 2020).

Eq. 1-2 of Yin et al.: ``x_hat = b v_i + (1 - b) v_j`` with one ``b ~ Beta(alpha, alpha)`` per
pair, partners from a random permutation of the batch, the label vectors (and the soft label)
mixed alike. The paper samples b ``n = mix_samples`` times per pair; ``mixup_variant`` says
what n means:

* ``faithful`` (the paper, Sun et al.'s code): n forward passes and n optimizer updates per
  batch, each on its own draw;
* ``shared`` (beyond the paper): one forward pass, the mean of the n mixed losses, one update.

The helpers :func:`updates_per_batch`, :func:`forward_passes` and :func:`draws_per_update` are
shared with ``nonlinear_mixup``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch.nn.functional as F
from torch import Tensor

from trainers.strategies.mixing import MixedBatch, draw_pair, mix_pairs
from trainers.strategies.registry import Strategy, register_strategy
from trainers.strategies.sites import pooled

if TYPE_CHECKING:
    from trainers.config import CellConfig

PAIRWISE_READS = ("alpha", "mix_samples", "mixup_variant", "loss", "clean_loss")


def updates_per_batch(config: CellConfig) -> int:
    """n optimizer updates per batch in the faithful variant, else 1."""
    return config.mix_samples if config.mixup_variant == "faithful" else 1


def forward_passes(config: CellConfig) -> int:
    """One forward pass per update."""
    return updates_per_batch(config)


def draws_per_update(config: CellConfig) -> int:
    """Mixed batches averaged in one update: n in the shared variant, else 1."""
    return config.mix_samples if config.mixup_variant == "shared" else 1


def mixup(representations: Tensor, targets: Tensor, classifier: Tensor,
          config: CellConfig) -> MixedBatch:
    """Standard mixup on hidden states, Eq. 1-2: one ``beta ~ Beta(alpha, alpha)`` per pair.

    Args:
        representations: ``[b, d]`` hidden states v(x).
        targets: ``[b]`` integer labels.
        classifier: ``[c, d]`` weight W; row y is label y's representation.
        config: the cell's settings (``alpha``).
    """
    b = representations.shape[0]
    lam, partner = draw_pair(b, 1, config.alpha, representations.device)
    onehot = F.one_hot(targets, classifier.shape[0]).float()
    return mix_pairs(representations, classifier[targets], onehot, partner, lam)


MIXUP = register_strategy(Strategy(
    name="mixup",
    label="mixup",
    family="pairwise",
    site="pooled",
    loss=pooled(mixup),
    reads=PAIRWISE_READS,
    default_loss="soft_ce",  # Zhang et al.'s mixed cross-entropy (Eq. 2)
    updates_per_batch=updates_per_batch,
    forward_passes=forward_passes,
    draws_per_update=draws_per_update,
    fused="scalar",
    cite="Zhang et al., ICLR 2018; Sun et al., COLING 2020",
))
