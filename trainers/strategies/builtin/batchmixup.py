"""``batchmixup`` (Yin, Wang, Qu, Xiong. "BatchMixup: Improving Training by Interpolating
Hidden States of the Entire Mini-batch". Findings of ACL 2021), Eq. 3-4.

n new points (``batchmix_points``; 0 means the batch size b), each mixing the *entire*
mini-batch: a policy ``M in R^{n x d x b}`` of Beta(alpha, alpha) draws, a softmax over the
batch axis (with a ``temperature``; 1 is Eq. 3), and the same convex weights applied to the
representations ``v(x_j)`` (Eq. 3) and to the label vectors ``w_{y_j}`` (Eq. 4). One forward
pass and one optimizer update per batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch.nn.functional as F
from torch import Tensor

from trainers.strategies.mixing import (
    DEFAULT_LABEL_VECTOR_LOSS,
    MixedBatch,
    batchmixup_policy,
    mix_batch,
)
from trainers.strategies.registry import Strategy, register_strategy
from trainers.strategies.sites import pooled

if TYPE_CHECKING:
    from trainers.config import CellConfig


def batchmixup(representations: Tensor, targets: Tensor, classifier: Tensor,
               config: CellConfig) -> MixedBatch:
    """BatchMixup, Eq. 3-4: n new points, each a convex combination of the whole batch.

    Args:
        representations: ``[b, d]`` hidden states v(x).
        targets: ``[b]`` integer labels.
        classifier: ``[c, d]`` weight W.
        config: the cell's settings (``alpha``, ``batchmix_points``, ``temperature``).
    """
    b, d = representations.shape
    n = config.batchmix_points or b
    weights = batchmixup_policy(n, d, b, config.alpha, config.temperature,
                                device=representations.device)
    onehot = F.one_hot(targets, classifier.shape[0]).float()
    return mix_batch(weights, representations, classifier[targets], onehot)


BATCHMIXUP = register_strategy(Strategy(
    name="batchmixup",
    label="BatchMixup",
    family="batch",
    site="pooled",
    loss=pooled(batchmixup),
    reads=("alpha", "batchmix_points", "temperature", "loss", "clean_loss"),
    default_loss=DEFAULT_LABEL_VECTOR_LOSS,
    cite="Yin et al., Findings of ACL 2021",
))
