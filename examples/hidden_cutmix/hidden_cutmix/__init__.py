"""``hidden_cutmix``: CutMix on the pooled representation, an example plug-in strategy.

CutMix (Yun, Han, Oh, Chun, Choe, Yoo. "CutMix: Regularization Strategy to Train Strong
Classifiers with Localizable Features". ICCV 2019) pastes a patch of one image into another and
mixes the labels by the patch's area. Here the "image" is the pooled representation
``v(x) in R^d`` and the patch is a contiguous block of its dimensions: for each pair (i, j),

    lam ~ Beta(alpha, alpha),  m_k = 0 for k in a random block of round((1 - lam) d) dims, else 1
    x~ = m * v_i + (1 - m) * v_j,   y~ = m * w_{y_i} + (1 - m) * w_{y_j}

and the soft label gives class y_i the share ``mean(m)`` (the kept fraction, Eq. 2 of Yin et
al. with a 0/1 mixing vector). It is nonlinear mixup (Guo 2020) with a binary, contiguous
coefficient vector, so the project's :func:`~trainers.strategies.mix_pairs` does the mixing.

This file is the whole plug-in: one mixing function and one :class:`Strategy` declaration.
The package's ``pyproject.toml`` registers it under the entry-point group
``batchmixup_lab.strategies``; without installing it, ``hidden_cutmix:HIDDEN_CUTMIX`` names
it wherever ``hidden_cutmix`` is importable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from trainers.strategies import MixedBatch, Strategy, mix_pairs, pooled, sample_beta

if TYPE_CHECKING:
    from trainers.config import CellConfig


def block_mask(lam: Tensor, d: int) -> Tensor:
    """``[b, d]`` 0/1 masks: row i keeps ``d - round((1 - lam_i) d)`` dimensions and takes a
    random contiguous block of the others (wrapping around) from its partner.

    Args:
        lam: ``[b, 1]`` Beta draws, the share of each example's own dimensions.
        d: the representation dimension.
    """
    b = lam.shape[0]
    cut = torch.round((1 - lam.squeeze(1)) * d).long()  # [b] dimensions taken from the partner
    start = torch.randint(0, d, (b,), device=lam.device)
    offset = (torch.arange(d, device=lam.device).unsqueeze(0) - start.unsqueeze(1)) % d
    return (offset >= cut.unsqueeze(1)).to(lam.dtype)


def hidden_cutmix(representations: Tensor, targets: Tensor, classifier: Tensor,
                  config: CellConfig) -> MixedBatch:
    """CutMix of the pooled representations (see the module docstring).

    Args:
        representations: ``[b, d]`` hidden states v(x).
        targets: ``[b]`` integer labels.
        classifier: ``[c, d]`` the label vectors W.
        config: the cell's settings; reads ``alpha``.
    """
    b, d = representations.shape
    lam = sample_beta(config.alpha, (b, 1), device=representations.device)
    partner = torch.randperm(b, device=representations.device)
    mask = block_mask(lam, d)
    onehot = F.one_hot(targets, classifier.shape[0]).float()
    return mix_pairs(representations, classifier[targets], onehot, partner, mask)


HIDDEN_CUTMIX = Strategy(
    name="hidden_cutmix",
    label="hidden CutMix",
    family="pairwise",
    site="pooled",  # the pooled output: frozen features can serve it
    loss=pooled(hidden_cutmix),
    reads=("alpha", "loss", "clean_loss"),
    default_loss="soft_ce",
    cite="Yun et al., ICCV 2019 (CutMix), on hidden dimensions",
)
