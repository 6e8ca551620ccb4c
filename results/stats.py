"""Statistics of the report's paired comparisons (see ``docs/report.md`` for the reasoning).

Everything here is pure numpy/scipy on numbers the caller got from MLflow:

* :func:`count_differences` — per-seed differences of two arms from integer correct counts.
* :func:`t_interval` and :func:`paired_t` — the mean difference over seeds with its 95 %
  t-interval, and the two-sided paired t-test (only with at least :data:`MIN_SEEDS` seeds and
  differences that vary: a test over identical differences is undefined, not "infinitely
  significant").
* :func:`paired_bootstrap` — the per-example paired bootstrap over seeds *and* test examples
  (Koehn 2004; Berg-Kirkpatrick, Burkett & Klein 2012), seeded for reproducibility.
* :func:`holm` — Holm-Bonferroni adjusted p-values over a family of comparisons (Holm 1979).
* :func:`t_one_sided` and :func:`bootstrap_one_sided` — one-sided tests against a bound
  other than 0: the paper's claimed difference (H0: Δ >= Δ_paper), and the two halves of an
  equivalence test (TOST, Schuirmann 1987: H0: |Δ| >= δ).
* :func:`detectable_t`, :func:`detectable_z` and :func:`seeds_needed` — the smallest
  difference a test detects with 80 % power at the variance observed, and the seeds a sweep
  would need for a given one (normal/t approximation, two-sided alpha).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
from scipy import stats as scipy_stats  # a hard dependency of mlflow

CONFIDENCE = 0.95
"""Level of every interval in the report."""

ALPHA = 0.05
"""Family-wise error rate: a verdict needs a Holm-adjusted p below it."""

MIN_SEEDS = 3
"""No test and no verdict with fewer paired seeds than this."""

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
POWER = 0.80
"""Power at which the report states detectable differences."""
MAX_SEEDS = 10_000
"""seeds_needed gives up above this (returns None)."""
"""At most this many (seed, example) cells are gathered per bootstrap chunk (memory bound)."""


@dataclass(frozen=True)
class Interval:
    """A mean with the bounds of its confidence interval (NaN bounds: no interval)."""

    mean: float
    low: float
    high: float


@dataclass(frozen=True)
class BootstrapResult:
    """Observed mean difference, its percentile interval, the two-sided p, B, the resampled
    means (``values``) and their standard deviation (the bootstrap standard error)."""

    mean: float
    low: float
    high: float
    p_value: float
    resamples: int
    values: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)

    @property
    def std(self) -> float:
        return float(np.std(self.values, ddof=1)) if len(self.values) > 1 else math.nan


def count_differences(
    correct_a: Sequence[int], correct_b: Sequence[int], examples: Sequence[int]
) -> list[Fraction]:
    """Per-seed accuracy differences ``(a - b) / n`` as exact fractions.

    Exact arithmetic keeps "8 of 277 on every seed" identical on every seed, so the spread of
    such differences is exactly zero rather than float noise.
    """
    return [
        Fraction(int(a) - int(b), int(n))
        for a, b, n in zip(correct_a, correct_b, examples, strict=True)
    ]


def differences_vary(diffs: Sequence[Fraction | float]) -> bool:
    """True when not every difference is the same value."""
    return len(set(diffs)) > 1


def t_interval(diffs: Sequence[Fraction | float], level: float = CONFIDENCE) -> Interval:
    """Mean of ``diffs`` and its two-sided t-interval over seeds (df = n - 1).

    The bounds are NaN with fewer than two differences or when they do not vary (a zero-width
    interval would claim a certainty the seeds cannot give).
    """
    n = len(diffs)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan)
    mean = float(sum(Fraction(d) for d in diffs) / n)
    if n < 2 or not differences_vary(diffs):
        return Interval(mean, math.nan, math.nan)
    sd = float(np.std(np.asarray(diffs, dtype=float), ddof=1))
    half = float(scipy_stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half)


def paired_t(diffs: Sequence[Fraction | float]) -> tuple[float, float]:
    """Two-sided paired t-test of the per-seed differences against 0: ``(t, p)``.

    NaN, NaN with fewer than :data:`MIN_SEEDS` differences or when they do not vary.
    """
    n = len(diffs)
    if n < MIN_SEEDS or not differences_vary(diffs):
        return math.nan, math.nan
    values = np.asarray(diffs, dtype=float)
    sd = float(np.std(values, ddof=1))
    t = float(values.mean()) / (sd / math.sqrt(n))
    p = float(2 * scipy_stats.t.sf(abs(t), n - 1))
    return t, p


def example_differences(gold: Sequence[int], pred_a: Sequence[int],
                        pred_b: Sequence[int]) -> np.ndarray:
    """Per test example: 1 where only ``a`` is right, -1 where only ``b`` is, else 0."""
    gold_arr = np.asarray(gold)
    right_a = np.asarray(pred_a) == gold_arr
    right_b = np.asarray(pred_b) == gold_arr
    return right_a.astype(np.int8) - right_b.astype(np.int8)


def paired_bootstrap(
    per_seed: Sequence[np.ndarray],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = CONFIDENCE,
) -> BootstrapResult:
    """Paired bootstrap of the mean accuracy difference over seeds and test examples.

    ``per_seed``: one array per paired seed of per-example differences (see
    :func:`example_differences`), all over the same test examples in the same order. Each
    resample draws the seeds with replacement and, independently, the test examples with
    replacement (one draw of examples shared by the drawn seeds: they were evaluated on the
    same examples), and takes the mean difference. The interval is the percentile interval;
    the two-sided p-value is the share of resamples at least as far from the observed mean as
    the observed mean is from 0 (the resampling distribution shifted to the null, as in
    Berg-Kirkpatrick et al. 2012), with the usual +1 correction: ``(1 + hits) / (1 + B)``.
    """
    diffs = np.stack([np.asarray(d, dtype=np.int8) for d in per_seed])
    k, n = diffs.shape
    observed = float(diffs.mean(dtype=np.float64))
    rng = np.random.default_rng(seed)
    # Resampling n examples with replacement only matters through how many of each *kind* of
    # example it draws: a kind is an example's column of differences over the seeds (at most
    # 3^k kinds). The draw of kinds is multinomial with the kinds' shares, so each resample is
    # a multinomial draw over a handful of kinds instead of n indices: the same distribution,
    # thousands of times cheaper (the report's 75 comparisons took a minute).
    kinds, sizes = np.unique(diffs.T, axis=0, return_counts=True)  # (K, k), (K,)
    drawn_kinds = rng.multinomial(n, sizes / n, size=resamples)  # (B, K)
    per_seed_sum = drawn_kinds @ kinds.astype(np.int64)  # (B, k): each seed's summed difference
    seeds = rng.integers(0, k, size=(resamples, k))  # the seeds, with replacement
    values = np.take_along_axis(per_seed_sum, seeds, axis=1).sum(axis=1) / (k * n)
    tail = (1 - level) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    hits = int(np.count_nonzero(np.abs(values - observed) >= abs(observed) - 1e-12))
    p_value = (1 + hits) / (1 + resamples)
    return BootstrapResult(observed, float(low), float(high), min(1.0, p_value), resamples,
                           values)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order; NaN entries stay NaN and are
    not counted in the family.

    With the m finite p-values sorted ascending, ``p_(i)`` becomes
    ``max_{j <= i} min(1, (m - j + 1) p_(j))``; rejecting where the adjusted value is below
    alpha controls the family-wise error rate at alpha.
    """
    finite = [(p, i) for i, p in enumerate(p_values) if not math.isnan(p)]
    finite.sort()
    m = len(finite)
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def t_one_sided(diffs: Sequence[Fraction | float], bound: float, alternative: str) -> float:
    """One-sided paired t-test of the mean difference against ``bound`` (a fraction, not pp).

    ``alternative="less"``: H1 mean < bound (H0 mean >= bound), e.g. "the paper's claimed gain
    is excluded"; ``"greater"``: H1 mean > bound. NaN under the conditions of :func:`paired_t`.
    """
    n = len(diffs)
    if n < MIN_SEEDS or not differences_vary(diffs):
        return math.nan
    values = np.asarray(diffs, dtype=float)
    t = (float(values.mean()) - bound) / (float(np.std(values, ddof=1)) / math.sqrt(n))
    tail = scipy_stats.t.cdf if alternative == "less" else scipy_stats.t.sf
    return float(tail(t, n - 1))


def bootstrap_one_sided(boot: BootstrapResult, bound: float, alternative: str) -> float:
    """One-sided bootstrap p of the mean difference against ``bound``: the resampling
    distribution shifted to the null (centred on ``bound``), the share of it at least as far
    beyond the observed mean in the alternative's direction, with the +1 correction."""
    if len(boot.values) == 0:
        return math.nan
    centred = boot.values - boot.mean
    gap = boot.mean - bound
    hits = np.count_nonzero(centred <= gap + 1e-12) if alternative == "less" \
        else np.count_nonzero(centred >= gap - 1e-12)
    return min(1.0, (1 + int(hits)) / (1 + len(boot.values)))


def detectable_t(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true mean difference a two-sided paired t-test over ``n`` seeds detects
    with probability ``power`` at level ``alpha``, given the per-seed sd of the differences:
    ``(t_{1-alpha/2, n-1} + t_{power, n-1}) sd / sqrt(n)`` (NaN with n < 2 or sd unknown)."""
    if n < 2 or not math.isfinite(sd):
        return math.nan
    df = n - 1
    factor = float(scipy_stats.t.ppf(1 - alpha / 2, df) + scipy_stats.t.ppf(power, df))
    return factor * sd / math.sqrt(n)


def detectable_z(se: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The same for a test whose estimate has standard error ``se`` (the bootstrap's):
    ``(z_{1-alpha/2} + z_{power}) se``."""
    if not math.isfinite(se):
        return math.nan
    return float(scipy_stats.norm.ppf(1 - alpha / 2) + scipy_stats.norm.ppf(power)) * se


def seeds_needed(sd: float, delta: float, alpha: float = ALPHA,
                 power: float = POWER) -> int | None:
    """The fewest seeds (at least :data:`MIN_SEEDS`) whose paired t-test detects a true
    difference ``delta`` with ``power``, if the per-seed sd stays ``sd``; None when unknown
    or above :data:`MAX_SEEDS`."""
    if not math.isfinite(sd) or not math.isfinite(delta) or delta == 0:
        return None
    if sd == 0:
        return MIN_SEEDS
    def enough(n: int) -> bool:
        return detectable_t(sd, n, alpha, power) <= abs(delta)

    if not enough(MAX_SEEDS):
        return None
    low, high = MIN_SEEDS, MAX_SEEDS  # detectable_t falls with n: bisect for the first
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid + 1, high)
    return low
