"""Calibration of a cell's test probabilities: expected calibration error, NLL, Brier score.

Mixup's second claimed benefit beside accuracy is calibration (Thulasidasan et al., NeurIPS
2019; Zhang, Deng, Kawaguchi, Zou, "When and How Mixup Improves Calibration", ICML 2022; for
text, Park & Caragea, ACL 2022). Every cell logs, for the selected epoch's test predictions:

* ``test_ece``: expected calibration error with :data:`ECE_BINS` equal-width confidence bins
  (Guo, Pleiss, Sun, Weinberger, ICML 2017, Eq. 3):
  ``ECE = sum_m |B_m| / n * |acc(B_m) - conf(B_m)|``, confidence = the largest probability,
  bin m = ``((m-1)/M, m/M]``;
* ``test_nll``: mean negative log-likelihood of the gold labels;
* ``test_brier``: the multi-class Brier score ``mean_i sum_c (p_ic - [y_i = c])^2`` (Brier
  1950), in [0, 2].
"""

from __future__ import annotations

import torch
from torch import Tensor

ECE_BINS = 15


def expected_calibration_error(probs: Tensor, targets: Tensor, bins: int = ECE_BINS) -> float:
    """ECE of ``probs`` ``[n, c]`` (rows sum to 1) against integer ``targets`` ``[n]``.

    Args:
        probs: predicted class probabilities.
        targets: gold labels.
        bins: the number of equal-width confidence bins over (0, 1].
    """
    confidence, pred = probs.float().max(dim=1)
    correct = (pred == targets).float()
    # bin m holds confidences in ((m-1)/M, m/M]; a confidence of exactly 0 cannot occur
    index = torch.clamp(torch.ceil(confidence * bins).long() - 1, 0, bins - 1)
    n = len(targets)
    total = torch.zeros((), dtype=torch.float64)
    for m in range(bins):
        members = index == m
        count = int(members.sum())
        if count:
            gap = (correct[members].mean() - confidence[members].mean()).abs()
            total += count / n * gap.double().cpu()
    return float(total)


def negative_log_likelihood(probs: Tensor, targets: Tensor) -> float:
    """Mean ``-log p(y_i)``, probabilities clamped at 1e-12."""
    gold = probs.float().gather(1, targets.view(-1, 1)).squeeze(1)
    return float(-torch.log(gold.clamp_min(1e-12)).mean())


def brier_score(probs: Tensor, targets: Tensor) -> float:
    """Mean over examples of the squared distance between ``probs`` and the one-hot label."""
    onehot = torch.zeros_like(probs, dtype=torch.float32)
    onehot.scatter_(1, targets.view(-1, 1), 1.0)
    return float(((probs.float() - onehot) ** 2).sum(dim=1).mean())


def calibration(probs: Tensor, targets: Tensor) -> dict[str, float]:
    """``ece``, ``nll`` and ``brier`` of one split's probabilities."""
    return {"ece": expected_calibration_error(probs, targets),
            "nll": negative_log_likelihood(probs, targets),
            "brier": brier_score(probs, targets)}
