"""Properties of the mixing strategies (Eq. 1-4) and of their losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from trainers.config import CellConfig
from trainers.strategies import (
    LOSSES,
    MixedBatch,
    batchmixup_policy,
    mix_batch,
    mix_pairs,
    mixed_loss,
    sample_beta,
)
from trainers.strategies.builtin import batchmixup as batchmixup_file
from trainers.strategies.builtin import mixup as mixup_file
from trainers.strategies.builtin import nonlinear_mixup as nonlinear_file


def mixup(v, y, W, alpha):
    """The built-in mixup's mixing function with only ``alpha`` set."""
    return mixup_file.mixup(v, y, W, CellConfig(alpha=alpha))


def nonlinear_mixup(v, y, W, alpha):
    return nonlinear_file.nonlinear_mixup(v, y, W, CellConfig(alpha=alpha))


def batchmixup(v, y, W, alpha, n_points=None, temperature=1.0):
    config = CellConfig(alpha=alpha, batchmix_points=n_points or 0, temperature=temperature)
    return batchmixup_file.batchmixup(v, y, W, config)

dims = st.integers(min_value=1, max_value=12)
alphas = st.floats(min_value=0.05, max_value=8.0)
temperatures = st.floats(min_value=0.05, max_value=10.0)


def batch(b: int, d: int, c: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(b, d, generator=gen)
    y = torch.randint(0, c, (b,), generator=gen)
    W = torch.randn(c, d, generator=gen)
    return v, y, W


@settings(max_examples=40, deadline=None)
@given(n=dims, d=dims, b=dims, alpha=alphas, temperature=temperatures)
def test_batchmixup_weights_are_convex_per_point_and_dimension(n, d, b, alpha, temperature):
    weights = batchmixup_policy(n, d, b, alpha, temperature)
    assert weights.shape == (n, d, b)
    assert bool((weights >= 0).all())
    torch.testing.assert_close(weights.sum(-1), torch.ones(n, d))


@settings(max_examples=30, deadline=None)
@given(n=dims, d=dims, b=dims, c=st.integers(2, 6), alpha=alphas)
def test_batchmixup_shapes_for_any_n_d_b(n, d, b, c, alpha):
    v, y, W = batch(b, d, c)
    mixed = batchmixup(v, y, W, alpha, n_points=n)
    assert mixed.inputs.shape == (n, d)
    assert mixed.labels.shape == (n, d)
    assert mixed.class_weights.shape == (n, c)
    torch.testing.assert_close(mixed.class_weights.sum(-1), torch.ones(n))


def test_batchmixup_n_defaults_to_batch_size():
    v, y, W = batch(7, 5, 3)
    assert batchmixup(v, y, W, alpha=1.0).inputs.shape == (7, 5)


@settings(max_examples=30, deadline=None)
@given(b=dims, d=dims, n=dims, alpha=alphas, temperature=temperatures)
def test_identical_rows_mix_to_that_row(b, d, n, alpha, temperature):
    row = torch.randn(1, d)
    label_row = torch.randn(1, d)
    weights = batchmixup_policy(n, d, b, alpha, temperature)
    mixed = mix_batch(weights, row.expand(b, d), label_row.expand(b, d), torch.ones(b, 1))
    torch.testing.assert_close(mixed.inputs, row.expand(n, d))
    torch.testing.assert_close(mixed.labels, label_row.expand(n, d))


def test_inputs_and_labels_share_the_policy():
    """Eq. 3 and Eq. 4 use the same softmax(M): check against an explicit loop."""
    torch.manual_seed(3)
    n, d, b, c = 4, 6, 5, 3
    v, y, W = batch(b, d, c, seed=1)
    weights = batchmixup_policy(n, d, b, alpha=0.7, temperature=0.5)
    mixed = mix_batch(weights, v, W[y], F.one_hot(y, c).float())
    for i in range(n):
        for k in range(d):
            expected_x = sum(weights[i, k, j] * v[j, k] for j in range(b))
            expected_y = sum(weights[i, k, j] * W[y[j], k] for j in range(b))
            torch.testing.assert_close(mixed.inputs[i, k], expected_x)
            torch.testing.assert_close(mixed.labels[i, k], expected_y)
    # The class share is the policy's weight, averaged over dimensions, summed per class.
    share = weights.mean(1)
    for cls in range(c):
        torch.testing.assert_close(mixed.class_weights[:, cls], share[:, y == cls].sum(-1))


def test_batch_mixing_gradients_match_the_einsum_definition():
    """Eq. 3-4 written as einsum (their definition) and as mix_batch computes them agree in
    value and in the gradients they send to the representations and the label vectors."""
    torch.manual_seed(5)
    n, d, b, c = 6, 9, 7, 4
    v, y, W = batch(b, d, c, seed=2)
    weights = batchmixup_policy(n, d, b, alpha=0.3)
    grads = {}
    for how in ("einsum", "mix_batch"):
        rep = v.clone().requires_grad_(True)
        lab = W[y].clone().requires_grad_(True)
        if how == "einsum":
            x = torch.einsum("ndb,bd->nd", weights, rep)
            t = torch.einsum("ndb,bd->nd", weights, lab)
        else:
            mixed = mix_batch(weights, rep, lab, F.one_hot(y, c).float())
            x, t = mixed.inputs, mixed.labels
        probe = torch.randn(n, d, generator=torch.Generator().manual_seed(9))
        ((x * probe).sum() + (x * t).sum()).backward()
        grads[how] = (x.detach(), t.detach(), rep.grad, lab.grad)
    for ref, got in zip(grads["einsum"], grads["mix_batch"], strict=True):
        torch.testing.assert_close(got, ref)


def test_batch_mixing_under_bf16_autocast_keeps_soft_labels_exact():
    """Under bf16 autocast (GPU, or CPU fine-tuning) the class shares stay in the labels'
    dtype and sum to one; the mixed points stay close to the fp32 ones."""
    torch.manual_seed(4)
    n, d, b, c = 8, 16, 8, 5
    v, y, W = batch(b, d, c, seed=3)
    onehot = F.one_hot(y, c).float()
    weights = batchmixup_policy(n, d, b, alpha=1.0)
    exact = mix_batch(weights, v, W[y], onehot)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = mix_batch(weights, v.bfloat16(), W[y], onehot)
    assert low.class_weights.dtype == torch.float32
    torch.testing.assert_close(low.class_weights.sum(-1), torch.ones(n))
    torch.testing.assert_close(low.class_weights, exact.class_weights, rtol=1e-2, atol=1e-3)
    torch.testing.assert_close(low.inputs.float(), exact.inputs, rtol=2e-2, atol=2e-2)


def test_batchmixup_is_deterministic_under_a_seed():
    v, y, W = batch(8, 4, 3)
    torch.manual_seed(11)
    first = batchmixup(v, y, W, alpha=0.5)
    torch.manual_seed(11)
    second = batchmixup(v, y, W, alpha=0.5)
    torch.manual_seed(12)
    other = batchmixup(v, y, W, alpha=0.5)
    torch.testing.assert_close(first.inputs, second.inputs)
    torch.testing.assert_close(first.labels, second.labels)
    assert not torch.allclose(first.inputs, other.inputs)


def test_temperature_spreads_mixed_points():
    """Lower temperature -> weights further from uniform -> points further from the batch mean."""
    torch.manual_seed(0)
    v, y, W = batch(32, 16, 4)
    mean = v.mean(0)
    spread = {}
    for t in (1.0, 0.1):
        torch.manual_seed(0)
        spread[t] = (batchmixup(v, y, W, 1.0, temperature=t).inputs - mean).norm(dim=-1).mean()
    assert spread[0.1] > 2 * spread[1.0]


@settings(max_examples=30, deadline=None)
@given(b=dims, d=dims, c=st.integers(2, 5))
def test_mixup_with_beta_one_is_the_identity(b, d, c):
    v, y, W = batch(b, d, c)
    onehot = F.one_hot(y, c).float()
    partner = torch.randperm(b)
    mixed = mix_pairs(v, W[y], onehot, partner, torch.ones(b, 1))
    torch.testing.assert_close(mixed.inputs, v)
    torch.testing.assert_close(mixed.labels, W[y])
    torch.testing.assert_close(mixed.class_weights, onehot)


@settings(max_examples=30, deadline=None)
@given(b=st.integers(2, 12), d=dims, c=st.integers(2, 5), alpha=alphas)
def test_mixup_points_lie_on_the_segment_between_partners(b, d, c, alpha):
    from trainers.strategies import draw_pair

    v, y, W = batch(b, d, c)
    torch.manual_seed(b * 100 + d)
    mixed = mixup(v, y, W, alpha)
    torch.manual_seed(b * 100 + d)  # replay mixup's draws: one coefficient and one partner
    lam, partner = draw_pair(b, 1, alpha)
    assert bool(((lam >= 0) & (lam <= 1)).all())
    # Eq. 1: x_hat = lam v_i + (1 - lam) v_j, on the segment between the partners
    torch.testing.assert_close(mixed.inputs, lam * v + (1 - lam) * v[partner])
    torch.testing.assert_close(mixed.labels, lam * W[y] + (1 - lam) * W[y][partner])
    onehot = F.one_hot(y, c).float()  # Eq. 2: the same lam on the labels
    torch.testing.assert_close(mixed.class_weights, lam * onehot + (1 - lam) * onehot[partner])
    # distances add up along the segment: |x_hat - v_i| + |x_hat - v_j| = |v_i - v_j|
    along = (mixed.inputs - v).norm(dim=1) + (mixed.inputs - v[partner]).norm(dim=1)
    torch.testing.assert_close(along, (v - v[partner]).norm(dim=1), rtol=1e-4, atol=1e-5)


def test_nonlinear_mixup_uses_one_draw_per_dimension():
    torch.manual_seed(0)
    b, d, c = 16, 8, 3
    v = torch.zeros(b, d)
    v[:8] = 1.0  # half the batch is all ones, half all zeros
    y = torch.zeros(b, dtype=torch.long)
    W = torch.randn(c, d)
    linear = mixup(v, y, W, alpha=1.0).inputs
    nonlinear = nonlinear_mixup(v, y, W, alpha=1.0).inputs
    # Standard mixup: every coordinate of a mixed point is the same scalar; nonlinear: not.
    assert torch.allclose(linear, linear[:, :1].expand(b, d))
    assert not torch.allclose(nonlinear, nonlinear[:, :1].expand(b, d))


@settings(max_examples=20, deadline=None)
@given(alpha=alphas)
def test_sample_beta_is_in_unit_interval_with_mean_half(alpha):
    torch.manual_seed(0)
    draws = sample_beta(alpha, (20_000,))
    assert bool(((draws >= 0) & (draws <= 1)).all())
    assert abs(float(draws.mean()) - 0.5) < 0.03


def test_sample_beta_matches_beta_variance():
    torch.manual_seed(0)
    for alpha in (0.2, 1.0, 4.0):
        draws = sample_beta(alpha, (200_000,))
        expected = 1 / (4 * (2 * alpha + 1))  # Var of Beta(a, a)
        assert abs(float(draws.var()) / expected - 1) < 0.02, alpha


def test_sample_beta_follows_the_beta_distribution():
    """Kolmogorov-Smirnov against scipy's Beta(alpha, alpha) CDF, on every sampler branch
    (Johnk below 1/2, arcsine at 1/2, uniform at 1, Ulrich's polar method above 1/2), with the
    power to reject a wrong concentration.

    The draws are float32: near 1 they round to exactly 1.0 (9.5 % of Beta(0.1, 0.1) draws lie
    within float32's spacing of 1), a spurious atom that KS would flag. So the test uses the
    lower half, where float32 resolves the density, against the CDF conditioned on X < 1/2
    (2 F(x), by symmetry), and checks the symmetry itself with a binomial test."""
    from scipy import stats

    torch.manual_seed(0)
    for alpha in (0.1, 0.3, 0.5, 0.7, 1.0, 2.0, 8.0):
        draws = sample_beta(alpha, (40_000,)).double().numpy()
        lower = draws[draws < 0.5]
        assert stats.binomtest(len(lower), len(draws), 0.5).pvalue > 1e-3, alpha

        def half_cdf(a):
            return lambda x: 2 * stats.beta.cdf(x, a, a)

        assert stats.kstest(lower, half_cdf(alpha)).pvalue > 1e-3, alpha
        assert stats.kstest(lower, half_cdf(alpha * 1.2)).pvalue < 1e-3, alpha


def test_losses_on_a_perfectly_matched_point():
    W = torch.eye(3)
    x = W[[0]] * 5
    mixed = MixedBatch(inputs=x, labels=W[[0]], class_weights=torch.tensor([[1.0, 0.0, 0.0]]))
    assert float(mixed_loss(mixed, W, "dot")) == -5.0
    assert abs(float(mixed_loss(mixed, W, "cosine"))) < 1e-6
    assert float(mixed_loss(mixed, W, "soft_ce")) < 0.02
    for kind in LOSSES:
        assert torch.isfinite(mixed_loss(mixed, W, kind))


def test_mixup_soft_ce_equals_zhang_mixed_cross_entropy():
    """For one-hot labels, soft CE on Eq. 2's label is lam*CE(y_i) + (1-lam)*CE(y_j)."""
    torch.manual_seed(0)
    v, y, W = batch(6, 4, 3)
    partner = torch.randperm(6)
    lam = torch.rand(6, 1)
    mixed = mix_pairs(v, W[y], F.one_hot(y, 3).float(), partner, lam)
    logits = mixed.inputs @ W.t()
    expected = (lam[:, 0] * F.cross_entropy(logits, y, reduction="none")
                + (1 - lam[:, 0]) * F.cross_entropy(logits, y[partner], reduction="none")).mean()
    torch.testing.assert_close(mixed_loss(mixed, W, "soft_ce"), expected)
