"""The mathematics the mixing strategies share: Beta draws, interpolation, losses.

Every strategy of the paper's frame works on the representations ``v(x) in R^d`` that the
encoder (plus the optional MLP block) produces, and on the classifier ``W in R^{c x d}`` whose
row ``w_y`` is the representation of label ``y`` (Yin et al., Section 4). Mixing makes a
:class:`MixedBatch`: mixed inputs, the label vectors mixed with the *same* policy, and the
share of mixing weight each class receives (the soft target of Eq. 2). :func:`mixed_loss` then
scores the mixed points with one of three losses. Each strategy is declared in its own file
under :mod:`trainers.strategies.builtin` and uses these functions.

Papers:
    * mixup: Zhang, Cisse, Dauphin, Lopez-Paz. "mixup: Beyond Empirical Risk Minimization".
      ICLR 2018. On hidden states of a transformer: Sun et al. "Mixup-Transformer", COLING 2020.
    * BatchMixup: Yin, Wang, Qu, Xiong. "BatchMixup: Improving Training by Interpolating
      Hidden States of the Entire Mini-batch". Findings of ACL 2021. Equations 1-4 below refer
      to this paper.

Choices where the papers leave room (each documented where it lives):
    * pairwise mixing draws one beta per pair (the paper samples "n times per point pair"),
      partners come from a random permutation of the batch (:func:`draw_pair`).
    * BatchMixup's softmax gets a ``temperature`` (1 reproduces Eq. 3). With Beta draws in
      [0, 1], temperature 1 gives weights within a factor e of uniform, so mixed points sit near
      the batch mean; lower temperatures spread them out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

LOSSES = ("dot", "soft_ce", "cosine")
DEFAULT_LABEL_VECTOR_LOSS = "soft_ce"
"""The default loss of the strategies that mix label vectors (every built-in mixing strategy but
mixup, whose default is always soft_ce, i.e. Zhang et al.'s mixed cross-entropy of Eq. 2) when
``loss=auto``. Chosen from measurements recorded in docs/design.md ("Choosing batchmixup's
loss")."""


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

    Exact samplers for the *symmetric* Beta built from ``torch.rand`` only, on the device where
    the draws are used (no host round trip); much cheaper than the Gamma ratio
    ``G1 / (G1 + G2)`` (``torch._standard_gamma`` is scalar-per-element on CPU: ~50 ms for
    BatchMixup's 32 x 384 x 32 policy on a 2-core CPU vs ~3-6 ms here, measured by
    ``python -m benchmarks.beta_sampling``):

    * ``alpha == 1``: Uniform(0, 1).
    * ``alpha > 1/2``: Ulrich's polar method (Ulrich 1984; Devroye 1986, IX.4):
      ``X = 1/2 + R cos(2 pi V) / 2`` with ``R = sqrt(1 - U^(2 / (2 alpha - 1)))`` is exactly
      Beta(alpha, alpha). Evaluated as ``T / (2 (1 + R)) + R cos^2(pi V)`` with
      ``T = U^(2 / (2 alpha - 1)) = 1 - R^2``, which keeps full relative precision near 0 and 1.
    * ``alpha == 1/2``: the arcsine law, ``cos^2(pi V)`` (the ``R = 1`` limit of the above).
    * ``alpha < 1/2``: Johnk's rejection method in log space (accept ``U^(1/a) + V^(1/a) <= 1``,
      return ``U^(1/a) / (U^(1/a) + V^(1/a))``); acceptance is >= 78.5% for these alphas and
      rejected entries are redrawn vectorised until none is left.

    Uses torch's global generator (of ``device``), so ``torch.manual_seed`` makes draws
    repeatable. Returns the default float dtype.

    Args:
        alpha: concentration of the symmetric Beta distribution, > 0.
        shape: shape of the returned tensor.
        device: where to sample.
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    alpha = float(alpha)
    if alpha == 1.0:
        return torch.rand(shape, device=device)
    if alpha == 0.5:
        return torch.cos(torch.rand(shape, device=device).mul_(math.pi)).square_()
    if alpha > 0.5:
        return _beta_polar(alpha, shape, device)
    return _beta_johnk(alpha, shape, device)


def _beta_polar(alpha: float, shape: tuple[int, ...], device: torch.device | str) -> Tensor:
    """Beta(alpha, alpha) for alpha > 1/2 by Ulrich's polar method (see :func:`sample_beta`)."""
    u = torch.rand((2, *shape), device=device)
    t = u[0].pow_(2.0 / (2.0 * alpha - 1.0))  # T = 1 - R^2, in [0, 1]
    r = torch.sqrt(1.0 - t)
    c = torch.cos(u[1].mul_(math.pi)).square_()  # cos^2(pi V)
    return t.div_(r.add(1.0).mul_(2.0)).addcmul_(r, c).clamp_(0.0, 1.0)


def _beta_johnk(alpha: float, shape: tuple[int, ...], device: torch.device | str) -> Tensor:
    """Beta(alpha, alpha) for alpha < 1/2 by Johnk's rejection method (see :func:`sample_beta`)."""
    out = torch.empty(shape, device=device)
    flat = out.view(-1)
    pending = None  # indices of flat still to fill; None = all of them (first round)
    count = flat.numel()
    while count:
        # log(U^(1/a)) with U in (0, 1]: 1 - torch.rand never hits 0.
        logs = torch.log1p(-torch.rand((2, count), device=device)).div_(alpha)
        ok = torch.logaddexp(logs[0], logs[1]) <= 0
        draws = torch.sigmoid(logs[0] - logs[1])  # X / (X + Y), correctly rounded near 0 and 1
        if pending is None:
            flat.copy_(draws)
            pending = (~ok).nonzero().squeeze(1)
        else:
            flat[pending[ok]] = draws[ok]
            pending = pending[~ok]
        count = pending.numel()
    return out


def draw_pair(b: int, width: int, alpha: float,
              device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """One pairwise draw: coefficients ``lam ~ Beta(alpha, alpha)`` of shape ``[b, width]``,
    then a random permutation ``partner`` of the batch (in this order).

    ``width`` is 1 for mixup and d for nonlinear mixup. :mod:`trainers.fused_head` draws through
    this function too, so both training paths consume the random stream identically.
    """
    lam = sample_beta(alpha, (b, width), device=device)
    return lam, torch.randperm(b, device=device)


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
    return mix_targets(inputs, label_vectors, onehot, partner, lam)


def mix_targets(inputs: Tensor, label_vectors: Tensor, onehot: Tensor, partner: Tensor,
                lam: Tensor) -> MixedBatch:
    """The targets of points mixed pairwise (Eq. 2): label vectors ``lam * w_{y_i} + (1 - lam)
    * w_{y_j}`` and each class's share of the mixing weight, beside the mixed ``inputs``.

    Strategies that mix inside the encoder (:mod:`trainers.strategies.sites`) get their mixed
    representations from the encoder and their targets here.

    Args:
        inputs: ``[b, d]`` the mixed representations.
        label_vectors: ``[b, d]`` rows of W for each example's label.
        onehot: ``[b, c]`` one-hot labels.
        partner: ``[b]`` index of each example's partner j.
        lam: ``[b, 1]`` or ``[b, d]`` coefficients, in the label vectors' dtype.
    """
    labels = lam * label_vectors + (1 - lam) * label_vectors[partner]
    share = lam.mean(dim=1, keepdim=True).to(onehot.dtype)
    class_weights = share * onehot + (1 - share) * onehot[partner]
    return MixedBatch(inputs=inputs, labels=labels, class_weights=class_weights)


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
    if temperature != 1.0:  # a full pass over n * d * b entries; skipped for the paper's 1
        policy.div_(temperature)
    return torch.softmax(policy, dim=-1)


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
    # Eq. 2's soft label per new point: the policy's share of each class, from the policy in
    # its own precision and elementwise (autocast would round a matmul to bf16).
    share = weights.mean(dim=1).to(onehot.dtype)
    class_weights = (share.unsqueeze(-1) * onehot.unsqueeze(0)).sum(dim=1)
    weights = weights.to(representations.dtype)
    # A broadcast product summed over the batch axis, not ``einsum("ndb,bd->nd")``: einsum
    # lowers to d batched (n x b) @ (b x 1) products and its backward to a slower einsum again;
    # forward + backward cost 2-3x less on CPU (python -m benchmarks.batch_mixing). Autocast
    # does not lower elementwise products: under bf16 autocast each output takes the wider
    # dtype of its operands (einsum's batched product used to round them to bf16).
    inputs = (weights * representations.t().contiguous()).sum(dim=-1)
    labels = (weights * label_vectors.t().contiguous()).sum(dim=-1)
    return MixedBatch(inputs=inputs, labels=labels, class_weights=class_weights)


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
