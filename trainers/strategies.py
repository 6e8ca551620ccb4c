"""Mixing strategies on hidden states: none, mixup, nonlinear mixup and BatchMixup.

Every strategy works on the representations ``v(x) in R^d`` that the encoder (plus the
optional MLP block) produces, and on the classifier ``W in R^{c x d}`` whose row ``w_y`` is
the representation of label ``y`` (Yin et al., Section 4). A strategy returns a
:class:`MixedBatch`: mixed inputs, the label vectors mixed with the *same* policy, and the share
of mixing weight each class receives (the soft target of Eq. 2). :func:`mixed_loss` then scores
the mixed points with one of three losses.

Papers:
    * mixup: Zhang, Cisse, Dauphin, Lopez-Paz. "mixup: Beyond Empirical Risk Minimization".
      ICLR 2018. On hidden states of a transformer: Sun et al. "Mixup-Transformer", COLING 2020.
    * nonlinear mixup: Guo. "Nonlinear Mixup: Out-Of-Manifold Data Augmentation for Text
      Classification". AAAI 2020.
    * BatchMixup: Yin, Wang, Qu, Xiong. "BatchMixup: Improving Training by Interpolating
      Hidden States of the Entire Mini-batch". Findings of ACL 2021. Equations 1-4 below refer
      to this paper.

Choices where the papers leave room (each documented where it lives):
    * mixup draws one beta per pair (the paper samples "n times per point pair"), partners come
      from a random permutation of the batch.
    * nonlinear mixup mixes the label vectors ``w_y`` with the same per-dimension policy as the
      inputs (Guo 2020 learns a separate label policy; here the policy is shared so that all
      three mixing strategies fit the paper's "label representation" view).
    * BatchMixup's softmax gets a ``temperature`` (1 reproduces Eq. 3). With Beta draws in
      [0, 1], temperature 1 gives weights within a factor e of uniform, so mixed points sit near
      the batch mean; lower temperatures spread them out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

STRATEGIES = ("none", "mixup", "nonlinear_mixup", "batchmixup")
LOSSES = ("dot", "soft_ce", "cosine")


@dataclass
class MixedBatch:
    """New points made by a strategy.

    Attributes:
        inputs: mixed representations x_hat, shape ``[n, d]``.
        labels: mixed label representations y_hat (rows of W mixed with the same policy),
            shape ``[n, d]``.
        class_weights: share of the mixing weight each class receives, shape ``[n, c]``; rows
            sum to one. This is Eq. 2's soft label, averaged over dimensions for per-dimension
            policies.
    """

    inputs: Tensor
    labels: Tensor
    class_weights: Tensor


def sample_beta(alpha: float, shape: tuple[int, ...], device: torch.device | str = "cpu") -> Tensor:
    """Independent Beta(alpha, alpha) draws of ``shape`` on ``device``.

    Drawn as ``G1 / (G1 + G2)`` with ``G1, G2 ~ Gamma(alpha, 1)`` in one batched call, on the
    device where they are used (no host round trip). ``alpha == 1`` is Uniform(0, 1), drawn
    directly. Uses torch's global generator, so ``torch.manual_seed`` makes draws repeatable.

    Args:
        alpha: concentration of the symmetric Beta distribution, > 0.
        shape: shape of the returned tensor.
        device: where to sample.
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if alpha == 1.0:
        return torch.rand(shape, device=device)
    concentration = torch.full((2, *shape), float(alpha), device=device)
    gammas = torch._standard_gamma(concentration)
    # Both gammas can underflow to 0 for tiny alpha; the 0/0 then means "all on one side".
    total = gammas[0] + gammas[1]
    return torch.where(total > 0, gammas[0] / total.clamp_min(torch.finfo(total.dtype).tiny),
                       (torch.rand(shape, device=device) < 0.5).to(total.dtype))


def mix_pairs(
    representations: Tensor,
    label_vectors: Tensor,
    onehot: Tensor,
    partner: Tensor,
    lam: Tensor,
) -> MixedBatch:
    """Interpolate each example with its partner (Eq. 1 and Eq. 2).

    ``x_hat = lam * v_i + (1 - lam) * v_j`` and the same for the label vectors ``w_{y_i}``.

    Args:
        representations: ``[b, d]`` hidden states v(x).
        label_vectors: ``[b, d]`` rows of W for each example's label.
        onehot: ``[b, c]`` one-hot labels.
        partner: ``[b]`` index of each example's partner j.
        lam: ``[b, 1]`` (mixup: one scalar per pair) or ``[b, d]`` (nonlinear mixup: one value
            per dimension) mixing coefficients in [0, 1].
    """
    lam = lam.to(representations.dtype)
    inputs = lam * representations + (1 - lam) * representations[partner]
    labels = lam * label_vectors + (1 - lam) * label_vectors[partner]
    share = lam.mean(dim=1, keepdim=True).to(onehot.dtype)
    class_weights = share * onehot + (1 - share) * onehot[partner]
    return MixedBatch(inputs=inputs, labels=labels, class_weights=class_weights)


def mixup(representations: Tensor, targets: Tensor, classifier: Tensor, alpha: float) -> MixedBatch:
    """Standard mixup on hidden states (Zhang et al. 2018; Sun et al. 2020), Eq. 1-2.

    One ``beta ~ Beta(alpha, alpha)`` per pair; partners by a random permutation.

    Args:
        representations: ``[b, d]`` hidden states.
        targets: ``[b]`` integer labels.
        classifier: ``[c, d]`` weight W; row y is label y's representation.
        alpha: Beta concentration.
    """
    b = representations.shape[0]
    lam = sample_beta(alpha, (b, 1), device=representations.device)
    partner = torch.randperm(b, device=representations.device)
    onehot = F.one_hot(targets, classifier.shape[0]).float()
    return mix_pairs(representations, classifier[targets], onehot, partner, lam)


def nonlinear_mixup(
    representations: Tensor, targets: Tensor, classifier: Tensor, alpha: float
) -> MixedBatch:
    """Nonlinear mixup (Guo 2020) on hidden states: one Beta draw per hidden dimension.

    The scalar beta of Eq. 1 becomes a vector ``lam in [0, 1]^d``; the label vectors are mixed
    with the same per-dimension policy.

    Args:
        representations: ``[b, d]`` hidden states.
        targets: ``[b]`` integer labels.
        classifier: ``[c, d]`` weight W.
        alpha: Beta concentration.
    """
    b, d = representations.shape
    lam = sample_beta(alpha, (b, d), device=representations.device)
    partner = torch.randperm(b, device=representations.device)
    onehot = F.one_hot(targets, classifier.shape[0]).float()
    return mix_pairs(representations, classifier[targets], onehot, partner, lam)


def batchmixup_policy(
    n: int, d: int, b: int, alpha: float, temperature: float = 1.0,
    device: torch.device | str = "cpu",
) -> Tensor:
    """The softmax of BatchMixup's mixing policy M (Eq. 3).

    ``M in R^{n x d x b}`` holds independent Beta(alpha, alpha) draws; a softmax over the batch
    axis turns ``M[i, k, :]`` into convex weights over the b examples, for every new point i and
    every dimension k.

    Args:
        n: number of new points.
        d: representation dimension.
        b: batch size.
        alpha: Beta concentration.
        temperature: softmax temperature; 1 is the paper. The weights are
            ``softmax(M / temperature)``.
        device: where to sample.

    Returns:
        ``[n, d, b]`` tensor, non-negative, summing to one over the last axis.
    """
    policy = sample_beta(alpha, (n, d, b), device=device)
    return torch.softmax(policy / temperature, dim=-1)


def mix_batch(
    weights: Tensor, representations: Tensor, label_vectors: Tensor, onehot: Tensor
) -> MixedBatch:
    """Apply a BatchMixup policy to inputs (Eq. 3) and label vectors (Eq. 4).

    ``x_hat_i = sum_j softmax(M[i])[:, j] * v(x_j)`` and
    ``y_hat_i = sum_j softmax(M[i])[:, j] * w_{y_j}``.

    Args:
        weights: ``[n, d, b]`` convex weights from :func:`batchmixup_policy`.
        representations: ``[b, d]`` hidden states (the paper's X, transposed).
        label_vectors: ``[b, d]`` rows of W for each example's label (the paper's Y).
        onehot: ``[b, c]`` one-hot labels.
    """
    weights = weights.to(representations.dtype)
    inputs = torch.einsum("ndb,bd->nd", weights, representations)
    labels = torch.einsum("ndb,bd->nd", weights, label_vectors)
    class_weights = weights.mean(dim=1).to(onehot.dtype) @ onehot
    return MixedBatch(inputs=inputs, labels=labels, class_weights=class_weights)


def batchmixup(
    representations: Tensor,
    targets: Tensor,
    classifier: Tensor,
    alpha: float,
    n_points: int | None = None,
    temperature: float = 1.0,
) -> MixedBatch:
    """BatchMixup (Yin et al., Eq. 3-4): n new points, each mixing the entire mini-batch.

    Args:
        representations: ``[b, d]`` hidden states.
        targets: ``[b]`` integer labels.
        classifier: ``[c, d]`` weight W.
        alpha: Beta concentration of the policy entries.
        n_points: number of new points n; ``None`` means the batch size.
        temperature: softmax temperature (1 = paper).
    """
    b, d = representations.shape
    n = b if n_points is None else n_points
    weights = batchmixup_policy(n, d, b, alpha, temperature, device=representations.device)
    onehot = F.one_hot(targets, classifier.shape[0]).float()
    return mix_batch(weights, representations, classifier[targets], onehot)


def mixed_loss(mixed: MixedBatch, classifier: Tensor, kind: str) -> Tensor:
    """Loss of mixed points against their mixed labels.

    Args:
        mixed: output of a strategy.
        classifier: ``[c, d]`` weight W (for ``soft_ce``).
        kind: ``dot``: the paper's negative dot product ``-x_hat . y_hat`` (unbounded below in
            the norms of v and W); ``soft_ce``: cross-entropy of the logits ``W x_hat`` against
            ``class_weights`` (Eq. 2's soft label; for mixup this is exactly Zhang et al.'s mixed
            cross-entropy); ``cosine``: ``1 - cos(x_hat, y_hat)``, bounded in [0, 2].
    """
    if kind == "dot":
        return -(mixed.inputs * mixed.labels).sum(dim=-1).float().mean()
    if kind == "soft_ce":
        logits = (mixed.inputs @ classifier.t()).float()
        return -(mixed.class_weights * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()
    if kind == "cosine":
        return (1 - F.cosine_similarity(mixed.inputs.float(), mixed.labels.float(), dim=-1)).mean()
    raise ValueError(f"unknown loss {kind!r}; choose from {', '.join(LOSSES)}")


def make_mixed_batch(
    strategy: str,
    representations: Tensor,
    targets: Tensor,
    classifier: Tensor,
    alpha: float,
    n_points: int | None = None,
    temperature: float = 1.0,
) -> MixedBatch:
    """Dispatch to the strategy named ``strategy`` (one of mixup, nonlinear_mixup, batchmixup)."""
    if strategy == "mixup":
        return mixup(representations, targets, classifier, alpha)
    if strategy == "nonlinear_mixup":
        return nonlinear_mixup(representations, targets, classifier, alpha)
    if strategy == "batchmixup":
        return batchmixup(representations, targets, classifier, alpha, n_points, temperature)
    raise ValueError(f"strategy {strategy!r} does not mix; choose from {', '.join(STRATEGIES[1:])}")
