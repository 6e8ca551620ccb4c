"""Verdicts that can say something (issue 24): detectable differences and seeds needed, the
paper's claimed difference tested, equivalence (TOST), checked against scipy and by hand."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats as scipy_stats

from results import paired, paper, stats
from tests.test_results_stats import N_RTE, _cells, _only_batchmixup_right, _predictions, _runs


@pytest.mark.parametrize("n", [3, 5, 10, 30])
def test_detectable_difference_has_80_percent_power(n: int) -> None:
    sd = 0.012
    delta = stats.detectable_t(sd, n)
    df, critical = n - 1, scipy_stats.t.ppf(0.975, n - 1)
    noncentral = delta * math.sqrt(n) / sd  # exact power of the two-sided t-test at delta
    power = scipy_stats.nct.sf(critical, df, noncentral) + scipy_stats.nct.cdf(-critical, df,
                                                                                noncentral)
    assert 0.75 <= power <= 0.82  # the (t + t) approximation, slightly low at n = 3
    assert stats.detectable_z(0.01) == pytest.approx((1.959964 + 0.841621) * 0.01, rel=1e-5)


def test_seeds_needed_is_the_fewest_that_reach_the_power() -> None:
    sd = 0.02
    for delta in (0.01, 0.005, 0.13):
        n = stats.seeds_needed(sd, delta)
        assert stats.detectable_t(sd, n) <= delta
        if n > stats.MIN_SEEDS:
            assert stats.detectable_t(sd, n - 1) > delta
    assert stats.seeds_needed(sd, 1e-7) is None  # beyond MAX_SEEDS
    assert stats.seeds_needed(math.nan, 0.01) is None


def test_one_sided_t_matches_scipy() -> None:
    diffs = [Fraction(3, 100), Fraction(1, 100), Fraction(5, 100), Fraction(2, 100)]
    values = [float(d) for d in diffs]
    for bound, alternative in ((0.13, "less"), (-0.01, "greater"), (0.01, "less")):
        expected = scipy_stats.ttest_1samp(values, bound, alternative=alternative).pvalue
        assert stats.t_one_sided(diffs, bound, alternative) == pytest.approx(expected)
    assert math.isnan(stats.t_one_sided(diffs[:2], 0.13, "less"))


def test_one_sided_bootstrap_against_a_bound() -> None:
    per_seed = [np.r_[np.ones(5), np.zeros(272)].astype(np.int8)] * 3  # +5 of 277 each
    boot = stats.paired_bootstrap(per_seed, resamples=2000, seed=1)
    assert boot.std > 0
    far = stats.bootstrap_one_sided(boot, 0.13, "less")  # +1.8 pp observed vs a +13 pp claim
    assert far == pytest.approx(1 / 2001)
    near = stats.bootstrap_one_sided(boot, boot.mean, "less")  # the bound is what was seen
    assert 0.4 < near < 0.7
    assert stats.bootstrap_one_sided(boot, -0.01, "greater") < 0.01


def _table(delta: list[int], margin: float = 1.0):
    seeds = len(delta)
    cells = _cells(seeds, [140 + s for s in range(seeds)], delta)
    wins = {}
    for s, d in enumerate(delta):  # |d| examples where only one arm is right, per seed
        one = _only_batchmixup_right(1, max(d, 0), max(-d, 0))["0"]
        wins[str(s)] = one
    return paired.paired_table(_runs(cells), _predictions(cells, wins).get, resamples=2000,
                               margin=margin).iloc[0]


def test_the_papers_claim_is_excluded_and_equivalence_shown() -> None:
    row = _table([0, 1, -1, 0, 1, -1, 0, 1])
    claimed = paper.paper_cell(0.25, "batchmixup", "rte")[0] \
        - paper.paper_cell(0.25, "mixup", "rte")[0]
    assert row["paper_delta"] == pytest.approx(claimed)  # +2.66 pp at RTE 25 %
    assert row["p_claim_t"] < 0.001 and row["p_claim_boot"] < 0.01
    assert row["claim"] == f"paper's {claimed:+.1f} pp excluded (in this setting)"
    assert row["equivalence"] == "within ±1 pp"
    sd = float(np.std([d / N_RTE for d in [0, 1, -1, 0, 1, -1, 0, 1]], ddof=1))
    assert row["sd_seed"] == pytest.approx(100 * sd)
    assert row["detectable_t"] == pytest.approx(100 * stats.detectable_t(sd, 8))
    assert row["seeds_1pp"] == stats.seeds_needed(sd, 0.01)
    assert row["seeds_paper"] == stats.seeds_needed(sd, claimed / 100)
    # a margin too small for the seeds: not shown
    assert _table([0, 1, -1, 0, 1, -1, 0, 1], margin=0.05)["equivalence"] == \
        "not shown within ±0.05 pp"


def test_a_difference_like_the_papers_is_not_excluded() -> None:
    row = _table([8, 9, 7])  # about +2.9 pp on each seed
    assert row["claim"].endswith("not excluded")
    assert row["equivalence"] == "not shown within ±1 pp"
    assert row["seeds_paper"] is not None and row["seeds_paper"] <= row["seeds_1pp"]


def test_no_difference_reads_with_its_detectable_size() -> None:
    cells = _cells(3, [145, 150, 140], [10, 24, 6])  # t-test does not reject
    wins = {str(s): _only_batchmixup_right(1, d, 0)["0"] for s, d in enumerate([10, 24, 6])}
    table = paired.paired_table(_runs(cells), _predictions(cells, wins).get, resamples=2000)
    assert table.iloc[0]["verdict"] == "no difference established"
    text = paired.paired_markdown(table)
    smaller = min(table.iloc[0]["detectable_t"], table.iloc[0]["detectable_boot"])
    assert f"no difference established (detectable at 80 % power: ±{smaller:.1f} pp)" in text
    assert "paper's" in paired.power_markdown(table)
