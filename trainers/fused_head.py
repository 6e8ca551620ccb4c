"""One update of the frozen-mode head, with its backward pass written out by hand.

In frozen mode the encoder's pooled features are fixed inputs, so an update touches only the
head of :class:`trainers.model.CellModel`: the MLP block ``h = tanh(A f + a)``, dropout
``v = h * keep``, the mixing strategy and the label vectors ``W``. Paper-faithful mixup runs
this update n = 15 times per batch (Section 5.3's "1.5 vs 20 minutes"), and on a CPU thread an
autograd update of this small head is mostly bookkeeping: 1.2-1.3 ms per update, of which the
arithmetic (five matrix products, tanh, dropout draws, AdamW) is about 0.4 ms. This module
computes the same loss and the same gradients with a few dozen tensor operations, then the
trainer clips (:func:`clip_grad_norm_`) and steps AdamW (:class:`HeadAdamW`) with the same
operations and kernel as torch's, without their per-call Python: 0.65 ms per faithful mixup
update (``python -m benchmarks.head_update``).

Scope (:func:`supports`): the strategies that declare a ``fused`` kind (``Strategy.fused``:
``plain`` for ``none``, ``scalar`` for ``mixup``, ``vector`` for ``nonlinear_mixup``) with the
cross-entropy losses (``ce`` for none; ``soft_ce``, Eq. 2's mixed cross-entropy, for the
pairwise strategies), with or without the clean loss, any number of draws per update. Other
cells (BatchMixup, the ``dot``/``cosine`` losses, fine-tuning) use autograd.

Random draws are made in the order the autograd path makes them (dropout's Bernoulli mask,
then per draw the Beta coefficients and the partner permutation), with the same calls, so a
cell trained here follows the autograd trajectory up to floating-point rounding
(``tests/test_fused_head.py`` checks gradients and a whole epoch against autograd).

Gradients, for ``r`` the rows scored (the mixed points, then the clean batch) and ``t`` their
target distributions, each row weighted ``s`` (1/(k b) for the k draws' mixed rows, 1/b for
the clean rows)::

    loss            = - sum_i s_i  t_i . log_softmax(r_i W^T)
    dloss/dlogits_i = s_i (softmax(r_i W^T) - t_i)       (rows of t sum to one)
    dW              = dlogits^T r,   dr = dlogits W
    x = lam v + (1 - lam) v[p]   =>  dv += lam dx,  dv[p] += (1 - lam) dx
    dh = dv * keep,  dpre = dh (1 - h^2),  dA = dpre^T f,  da = sum_rows dpre

That is the row path (:func:`_row_mix_backward`, nonlinear mixup). Mixup's one coefficient per
pair lets the same sums be taken on the batch's logits instead (:func:`_scalar_mix_backward`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from trainers.model import CellModel
from trainers.strategies import draw_pair


def head_layout_known(model: CellModel) -> bool:
    """Whether ``model``'s head is the one whose backward is written here: an optional
    ``Linear -> Tanh`` block, dropout, and a bias-free ``W`` (guards against a changed model)."""
    mlp_ok = isinstance(model.mlp, torch.nn.Identity) or (
        isinstance(model.mlp, torch.nn.Sequential) and len(model.mlp) == 2
        and isinstance(model.mlp[0], torch.nn.Linear) and isinstance(model.mlp[1], torch.nn.Tanh))
    return (model.encoder is None and mlp_ok and isinstance(model.dropout, torch.nn.Dropout)
            and model.classifier.bias is None)


def supports(fused: str | None, loss: str, frozen: bool) -> bool:
    """Whether a cell's update can run here (see the module docstring's scope).

    Args:
        fused: what its strategy declares the fused head computes for it
            (``Strategy.fused``: ``plain``, ``scalar``, ``vector``), None for nothing.
        loss: its resolved loss (``ce`` for none).
        frozen: True when the model has no encoder (frozen features or toy inputs).
    """
    return frozen and fused is not None and loss in ("ce", "soft_ce")


@dataclass
class PairDraw:
    """One draw of a pairwise strategy: coefficients ``lam`` (``[b, 1]`` or ``[b, d]``) and
    the partner index ``partner`` (``[b]``) of each example."""

    lam: Tensor
    partner: Tensor


def draw_dropout(shape: torch.Size, p: float, device: torch.device) -> Tensor | None:
    """Dropout's scaled keep mask, drawn exactly as ``F.dropout`` draws it on CPU
    (``bernoulli_(1 - p)`` then ``/ (1 - p)``); ``None`` when ``p == 0``."""
    if p == 0:
        return None
    return torch.empty(shape, device=device).bernoulli_(1 - p).div_(1 - p)


def draw_pairs(fused: str | None, b: int, d: int, alpha: float, draws: int,
               device: torch.device) -> list[PairDraw]:
    """``draws`` pairwise draws made by :func:`trainers.strategies.draw_pair`.

    Args:
        fused: the strategy's fused kind: ``scalar`` (one coefficient per pair, mixup),
            ``vector`` (one per dimension, nonlinear mixup); ``plain`` draws nothing.
        b: batch size.
        d: representation dimension.
        alpha: Beta concentration.
        draws: number of mixed batches per update (``mix_samples`` in the shared variant).
        device: where to draw.
    """
    if fused == "plain":
        return []
    width = d if fused == "vector" else 1
    return [PairDraw(*draw_pair(b, width, alpha, device)) for _ in range(draws)]


@torch.no_grad()
def head_update(model: CellModel, features: Tensor, onehot: Tensor, keep: Tensor | None,
                pairs: list[PairDraw], clean_loss: bool) -> Tensor:
    """Loss of one update; writes the gradients of the head's parameters to ``.grad``.

    Args:
        model: a frozen-mode :class:`CellModel` (no encoder), in training mode.
        features: ``[b, f]`` the batch's features.
        onehot: ``[b, c]`` one-hot labels (float), made once per batch by the caller: the
            repeated updates of a batch share them.
        keep: dropout's scaled keep mask ``[b, d]`` from :func:`draw_dropout`, or ``None``.
        pairs: the pairwise draws (empty for ``none``); their mixed losses are averaged.
        clean_loss: add the cross-entropy of the unmixed batch (always on for ``none``).

    Returns:
        The loss (a 0-d tensor), equal to the autograd path's loss for the same draws.
    """
    W = model.classifier.weight
    mlp = model.mlp[0] if isinstance(model.mlp, torch.nn.Sequential) else None
    h = torch.addmm(mlp.bias, features, mlp.weight.t()).tanh_() if mlp is not None \
        else features
    v = h * keep if keep is not None else h
    scalar = all(draw.lam.shape[1] == 1 for draw in pairs)  # mixup (and none)
    mix_backward = _scalar_mix_backward if scalar else _row_mix_backward
    loss, g_v = mix_backward(v, onehot, W, pairs, clean_loss)
    if keep is not None:
        g_v = g_v * keep
    if mlp is not None:
        g_pre = torch.ops.aten.tanh_backward(g_v, h)  # g (1 - h^2), as autograd's TanhBackward
        mlp.weight.grad = g_pre.t() @ features
        mlp.bias.grad = g_pre.sum(dim=0)
    return loss


def _scores(logits: list[Tensor], dists: list[Tensor], weights: list[float],
            b: int) -> tuple[Tensor, Tensor]:
    """Loss and its gradient w.r.t. the blocks of ``logits`` (stacked) against ``dists``, each
    block of ``b`` rows weighted by its entry of ``weights``."""
    z = torch.cat(logits) if len(logits) > 1 else logits[0]
    t = torch.cat(dists) if len(dists) > 1 else dists[0]
    s = torch.tensor(weights, dtype=z.dtype, device=z.device).repeat_interleave(b).unsqueeze(1) \
        if len(set(weights)) > 1 else weights[0]
    loss = -(t * torch.log_softmax(z, dim=1)).mul_(s).sum()
    # softmax(z), not log_softmax(z).exp(): torch's standalone exp is ~10x slower on the very
    # negative log-probabilities a trained head produces (50 vs 5 us at 64 x 77 on this CPU).
    return loss, torch.softmax(z, dim=1).sub_(t).mul_(s)


def _mix(x: Tensor, onehot: Tensor, pairs: list[PairDraw],
         clean_loss: bool) -> tuple[list[Tensor], list[Tensor], list[float]]:
    """The blocks to score: each draw's mixed ``x`` (Eq. 1) and target distribution (Eq. 2),
    then the clean ``x`` when it is scored (the clean loss; always for none), with each
    block's weight in the loss (1/(k b) for the k draws, 1/b for the clean batch).

    ``x`` is the batch's rows ``v`` or, for one coefficient per pair, its logits ``v W^T``.
    """
    b = x.shape[0]
    blocks, dists, weights = [], [], []
    for draw in pairs:
        share = draw.lam.mean(dim=1, keepdim=True)  # as trainers.strategies.mix_pairs
        blocks.append(torch.lerp(x[draw.partner], x, draw.lam))            # Eq. 1
        dists.append(torch.lerp(onehot[draw.partner], onehot, share))      # Eq. 2
        weights.append(1.0 / (len(pairs) * b))
    if clean_loss or not pairs:
        blocks.append(x)
        dists.append(onehot)
        weights.append(1.0 / b)
    return blocks, dists, weights


def _unmix(grads: Tensor, pairs: list[PairDraw], b: int) -> Tensor:
    """Back through :func:`_mix`: the gradient w.r.t. ``x`` of the stacked blocks' gradients
    ``grads``. Each mixed row sends ``lam`` of its gradient to ``x_i`` and ``1 - lam`` to
    ``x_p``; a clean block (the last ``b`` rows, when present) passes straight through."""
    n_mixed = len(pairs) * b
    g = grads[n_mixed:] if len(grads) > n_mixed else torch.zeros_like(grads[:b])
    for i, draw in enumerate(pairs):
        g_k = grads[i * b:(i + 1) * b]
        g = g.addcmul(draw.lam, g_k).index_add_(0, draw.partner, g_k * (1 - draw.lam))
    return g


def _row_mix_backward(v: Tensor, onehot: Tensor, W: Tensor, pairs: list[PairDraw],
                      clean_loss: bool) -> tuple[Tensor, Tensor]:
    """Loss and ``dloss/dv`` scoring the mixed rows themselves (any ``lam`` shape); sets
    ``W.grad``."""
    rows, dists, weights = _mix(v, onehot, pairs, clean_loss)
    r = torch.cat(rows) if len(rows) > 1 else rows[0]
    loss, g_logits = _scores([r @ W.t()], dists, weights, v.shape[0])
    W.grad = g_logits.t() @ r
    return loss, _unmix(g_logits @ W, pairs, v.shape[0])


def _scalar_mix_backward(v: Tensor, onehot: Tensor, W: Tensor, pairs: list[PairDraw],
                         clean_loss: bool) -> tuple[Tensor, Tensor]:
    """Loss and ``dloss/dv`` for one coefficient per pair (mixup, or none); sets ``W.grad``.

    With a scalar ``lam`` per pair the logits are linear in the mixed row,
    ``(lam v_i + (1 - lam) v_p) W^T = lam z_i + (1 - lam) z_p`` for ``z = v W^T``, so the batch
    is scored once and its logits are mixed: the three products with ``W`` run on ``b`` rows
    instead of ``k b`` (plus ``b`` with the clean loss). Backward, the logits' gradients are
    folded back onto the batch's rows first
    (``G = g_clean + sum_k lam g_k + scatter_p((1 - lam) g_k)``), then
    ``dW = G^T v`` and ``dv = G W``: the same sums as the row path, in another order.
    """
    logits, dists, weights = _mix(v @ W.t(), onehot, pairs, clean_loss)
    loss, g_logits = _scores(logits, dists, weights, v.shape[0])
    g_z = _unmix(g_logits, pairs, v.shape[0])
    W.grad = g_z.t() @ v
    return loss, g_z @ W


def clip_grad_norm_(grads: list[Tensor], max_norm: float) -> None:
    """Scale ``grads`` in place to total L2 norm <= ``max_norm``.

    The operations of ``torch.nn.utils.clip_grad_norm_`` (foreach path) on a list of
    gradients, without its per-call grouping by device and dtype; results are identical.
    Where the norm is clearly below ``max_norm`` the clamped factor would be exactly 1, and the
    multiplication by it is skipped (on CPU reading the norm costs no device synchronisation).
    """
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    if float(total) + 1e-6 < max_norm * (1 - 1e-4):  # margin >> float32 rounding: coef == 1
        return
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    torch._foreach_mul_(grads, coef)


class HeadAdamW:
    """AdamW steps of a one-group, ``fused=True`` optimizer, straight to its kernel.

    ``optimizer.step()`` spends ~70 µs of Python per call (hooks, grouping, state lookups)
    around a ~50 µs kernel for this head. This calls the same kernel
    (``torch._fused_adamw_``) on the same state tensors (``optimizer.state[p]``) with the same
    hyperparameters, so results and checkpoints are identical to ``optimizer.step()``. The
    first step (state not yet created) goes through ``optimizer.step()``.

    Args:
        optimizer: a ``torch.optim.AdamW`` built with ``fused=True`` and one parameter group.
    """

    def __init__(self, optimizer: torch.optim.AdamW) -> None:
        if not self.applies(optimizer):
            raise ValueError("HeadAdamW needs a fused AdamW with one parameter group")
        self.optimizer = optimizer

    @staticmethod
    def applies(optimizer: torch.optim.Optimizer) -> bool:
        """A ``fused=True`` AdamW (not AMSGrad, not maximizing) with one parameter group."""
        groups = optimizer.param_groups
        return (isinstance(optimizer, torch.optim.AdamW) and len(groups) == 1
                and bool(groups[0].get("fused")) and not groups[0]["amsgrad"]
                and not groups[0]["maximize"] and hasattr(torch, "_fused_adamw_"))

    def step(self) -> None:
        group = self.optimizer.param_groups[0]
        state = self.optimizer.state
        params = group["params"]
        if any(p not in state for p in params):
            self.optimizer.step()
            return
        entries = [state[p] for p in params]
        steps = [s["step"] for s in entries]
        torch._foreach_add_(steps, 1)
        beta1, beta2 = group["betas"]
        torch._fused_adamw_(
            params, [p.grad for p in params], [s["exp_avg"] for s in entries],
            [s["exp_avg_sq"] for s in entries], [], steps, amsgrad=False, lr=group["lr"],
            beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
            maximize=False, grad_scale=None, found_inf=None)
