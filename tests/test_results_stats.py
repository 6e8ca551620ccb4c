"""The report's statistics (results.stats, results.paired) on numbers worked out by hand.

Among them the case of issue 15: RTE 25 %, batchmixup − mixup over 2 seeds, exactly +8 of
277 test examples on both seeds. From float accuracies the spread was float noise and the
old report printed t = 969081, p = 0.000, "batchmixup higher"; from integer counts there is
no spread, and with 2 seeds nothing is tested at all.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from results import paired, stats

N_RTE = 277


# --------------------------------------------------------------------------- stats.py


def test_float_accuracies_made_a_huge_t_and_counts_make_none() -> None:
    # What MLflow stored (float32 accuracies of 153/277 and 145/277, with a second seed whose
    # floats came out a hair different): the float differences have a tiny spread.
    float_diffs = [np.float32(153 / 277) - np.float32(145 / 277),
                   np.float32(160 / 277) - np.float32(152 / 277) + 4e-8]
    values = np.asarray(float_diffs, dtype=float)
    t_old = values.mean() / (values.std(ddof=1) / math.sqrt(2))
    assert t_old > 1e5  # the old report's "t = 969081"-style artefact
    exact = stats.count_differences([153, 160], [145, 152], [N_RTE, N_RTE])
    assert exact == [Fraction(8, N_RTE), Fraction(8, N_RTE)]
    assert not stats.differences_vary(exact)
    assert all(math.isnan(v) for v in stats.paired_t(exact))
    interval = stats.t_interval(exact)
    assert interval.mean == pytest.approx(8 / N_RTE)
    assert math.isnan(interval.low) and math.isnan(interval.high)


def test_t_interval_and_paired_t_by_hand() -> None:
    diffs = [Fraction(3, 100), Fraction(1, 100), Fraction(5, 100)]
    mean, sd = 0.03, 0.02  # sample sd of 0.03 ± 0.02
    half = scipy_stats.t.ppf(0.975, 2) * sd / math.sqrt(3)  # 4.3027 * 0.011547
    interval = stats.t_interval(diffs)
    assert interval.mean == pytest.approx(mean)
    assert interval.low == pytest.approx(mean - half)
    assert interval.high == pytest.approx(mean + half)
    assert half == pytest.approx(0.049683, abs=1e-6)
    t, p = stats.paired_t(diffs)
    assert t == pytest.approx(mean / (sd / math.sqrt(3)))  # 2.598
    reference = scipy_stats.ttest_rel([0.53, 0.51, 0.55], [0.50, 0.50, 0.50])
    assert t == pytest.approx(reference.statistic) and p == pytest.approx(reference.pvalue)
    # Two seeds: an interval, but no test.
    assert not math.isnan(stats.t_interval(diffs[:2]).low)
    assert all(math.isnan(v) for v in stats.paired_t(diffs[:2]))


def test_holm_by_hand() -> None:
    # sorted: 0.005 x4 = 0.02; 0.01 x3 = 0.03; 0.03 x2 = 0.06; 0.04 x1 = 0.04 -> max 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # NaN entries are not part of the family (m = 2 here) and stay NaN.
    adjusted = stats.holm([0.02, math.nan, 0.04])
    assert adjusted[0] == pytest.approx(0.04) and adjusted[2] == pytest.approx(0.04)
    assert math.isnan(adjusted[1])
    assert stats.holm([0.3, 0.6]) == pytest.approx([0.6, 0.6])
    assert stats.holm([0.9, 0.8]) == [1.0, 1.0]  # capped at 1


def _diffs(plus: int, minus: int, n: int = N_RTE) -> np.ndarray:
    out = np.zeros(n, dtype=np.int8)
    out[:plus] = 1
    out[plus:plus + minus] = -1
    return out


def test_bootstrap_is_reproducible_with_its_seed() -> None:
    per_seed = [_diffs(20, 12), _diffs(15, 14), _diffs(18, 10)]
    first = stats.paired_bootstrap(per_seed, resamples=2000, seed=7)
    again = stats.paired_bootstrap(per_seed, resamples=2000, seed=7)
    other = stats.paired_bootstrap(per_seed, resamples=2000, seed=8)
    assert first == again
    assert (first.low, first.high) != (other.low, other.high)
    assert first.mean == pytest.approx((8 + 1 + 8) / (3 * N_RTE))
    assert first.low < first.mean < first.high
    assert first.resamples == 2000


def test_bootstrap_without_differences_and_with_a_clear_one() -> None:
    none = stats.paired_bootstrap([_diffs(0, 0)] * 3, resamples=500)
    assert (none.mean, none.low, none.high, none.p_value) == (0.0, 0.0, 0.0, 1.0)
    clear = stats.paired_bootstrap([_diffs(40, 0)] * 3, resamples=1000)
    assert clear.p_value == pytest.approx(1 / 1001)  # no resample reached 0
    assert clear.low > 0


# --------------------------------------------------------------------------- paired.py


def _runs(cells: dict[tuple[str, str], tuple[int, int]], task: str = "rte") -> pd.DataFrame:
    """A prepared-looking runs frame: (arm, seed) -> (correct, examples)."""
    rows = []
    for i, ((arm, seed), (correct, examples)) in enumerate(sorted(cells.items())):
        rows.append({
            "run_id": f"{arm}-{seed}", "run_name": f"{task}/0.25/{arm}/{seed}",
            "status": "FINISHED", "start_time": i, "phase": "final", "task": task,
            "ratio": 0.25, "strategy": arm, "algorithm": arm, "seed": seed,
            "fingerprint": f"fp-{arm}", "current": True,
            "result.test_accuracy": correct / examples, "result.test_correct": float(correct),
            "result.test_examples": float(examples), "result.selected_updates": 60.0,
            "result.updates": 60.0, "result.selected_val_accuracy": math.nan,
            "final.accuracy": correct / examples, "final.val_accuracy": math.nan,
        })
    return pd.DataFrame(rows)


def _predictions(cells: dict[tuple[str, str], tuple[int, int]],
                 wins: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Predictions where mixup is right on its first ``correct`` examples and batchmixup
    differs from mixup by ``wins[seed]`` (1: only batchmixup right, -1: only mixup right)."""
    gold = [i % 2 for i in range(N_RTE)]
    out = {}
    for (arm, seed), (correct, _) in cells.items():
        right = np.zeros(N_RTE, dtype=bool)
        if arm == "mixup":
            right[:correct] = True
        else:
            base = np.zeros(N_RTE, dtype=bool)
            base[:cells[("mixup", seed)][0]] = True
            right = (base & (wins[seed] != -1)) | (wins[seed] == 1)
        assert int(right.sum()) == correct
        pred = [g if ok else 1 - g for g, ok in zip(gold, right, strict=True)]
        out[f"{arm}-{seed}"] = {"gold": gold, "pred": pred}
    return out


def _only_batchmixup_right(seed_count: int, plus: int, minus: int) -> dict[str, np.ndarray]:
    wins = np.zeros(N_RTE, dtype=np.int8)
    wins[200:200 + plus] = 1
    wins[100:100 + minus] = -1
    return {str(s): wins for s in range(seed_count)}


def _cells(seeds: int, mixup: list[int], delta: list[int]) -> dict:
    cells = {}
    for s in range(seeds):
        cells[("mixup", str(s))] = (mixup[s], N_RTE)
        cells[("batchmixup", str(s))] = (mixup[s] + delta[s], N_RTE)
    return cells


def test_issue_case_two_seeds_plus_8_of_277_is_not_tested() -> None:
    cells = _cells(2, [145, 150], [8, 8])
    preds = _predictions(cells, _only_batchmixup_right(2, 8, 0))
    table = paired.paired_table(_runs(cells), preds.get, resamples=1000)
    row = table.iloc[0]
    assert (row["arm"], row["baseline"], row["n"]) == ("batchmixup", "mixup", 2)
    assert row["per_seed"] == "+8, +8 of 277"
    assert row["mean_diff"] == pytest.approx(800 / N_RTE)
    assert math.isnan(row["t"]) and math.isnan(row["p_t"]) and math.isnan(row["ci_low"])
    assert math.isnan(row["p_boot"]) and math.isnan(row["p_holm"])
    assert row["verdict"] == "not tested: n < 3 paired seeds"
    assert row["boot_low"] < row["boot_high"]  # the interval is shown, without a test
    assert paired.family_size(table) == 0
    text = paired.paired_markdown(table)
    assert "969081" not in text and "higher" not in text


def test_three_identical_differences_no_t_test_the_bootstrap_decides() -> None:
    cells = _cells(3, [145, 150, 140], [8, 8, 8])
    # only batchmixup right on 8 examples, never the other way: a clear per-example result
    preds = _predictions(cells, _only_batchmixup_right(3, 8, 0))
    row = paired.paired_table(_runs(cells), preds.get, resamples=2000).iloc[0]
    assert math.isnan(row["t"]) and math.isnan(row["p_t"])
    assert row["test"] == "bootstrap"
    assert row["p_boot"] == row["p_holm_boot"] == row["p_holm"]  # a family of one
    assert row["p_boot"] < 0.05 and row["verdict"] == "batchmixup higher"
    # The same +8 as 30 wins and 22 losses per seed: the examples do not support it.
    noisy = paired.paired_table(_runs(cells), _predictions(
        cells, _only_batchmixup_right(3, 30, 22)).get, resamples=2000).iloc[0]
    assert math.isnan(noisy["t"])
    assert noisy["p_boot"] > 0.05 and noisy["verdict"] == "no difference established"
    # Without predictions nothing can decide.
    bare = paired.paired_table(_runs(cells), None).iloc[0]
    assert bare["verdict"].startswith("not tested: differences identical over seeds")


def test_a_real_difference_is_called_and_holm_counts_the_family() -> None:
    delta = [31, 36, 29, 40, 33]
    cells = _cells(5, [140, 150, 145, 138, 147], delta)
    cells.update({("none", str(s)): (130 + s, N_RTE) for s in range(5)})
    wins = {str(s): _only_batchmixup_right(1, d, 0)["0"] for s, d in enumerate(delta)}
    preds = _predictions({k: v for k, v in cells.items() if k[0] != "none"}, wins)
    gold = preds["mixup-0"]["gold"]
    for s in range(5):  # none: right on its first 130 + s examples
        right = np.arange(N_RTE) < 130 + s
        preds[f"none-{s}"] = {"gold": gold,
                              "pred": [g if ok else 1 - g for g, ok in zip(gold, right,
                                                                           strict=True)]}
    runs = _runs(cells)
    runs.loc[runs["strategy"] == "none", "algorithm"] = "none"
    table = paired.paired_table(runs, preds.get, resamples=2000)
    assert list(zip(table["arm"], table["baseline"], strict=True)) == [
        ("mixup", "none"), ("batchmixup", "none"), ("batchmixup", "mixup")]
    assert paired.family_sizes(table) == (3, 3, 3)
    assert list(table["p_holm_t"]) == pytest.approx(stats.holm(list(table["p_t"])))
    assert list(table["p_holm_boot"]) == pytest.approx(stats.holm(list(table["p_boot"])))
    assert list(table["p_holm"]) == [max(a, b) for a, b in
                                     zip(table["p_holm_t"], table["p_holm_boot"], strict=True)]
    assert set(table["test"]) == {"t-test + bootstrap"}
    main = table.iloc[2]
    diffs = [d / N_RTE for d in delta]
    expected = scipy_stats.ttest_1samp(diffs, 0.0)
    assert main["t"] == pytest.approx(expected.statistic)
    assert main["p_t"] == pytest.approx(expected.pvalue)
    assert main["mean_diff"] == pytest.approx(100 * np.mean(diffs))
    assert main["wins"] == 5 and main["losses"] == 0
    assert main["verdict"] == "batchmixup higher"
    assert main["per_seed"] == "+31, +36, +29, +40, +33 of 277"


def test_both_tests_must_agree_for_a_verdict() -> None:
    # Every seed favours batchmixup example by example, but by +10, +24 and +6: the
    # bootstrap over examples rejects, the t-test over 3 varying seeds does not.
    cells = _cells(3, [145, 150, 140], [10, 24, 6])
    wins = {str(s): _only_batchmixup_right(1, d, 0)["0"] for s, d in enumerate([10, 24, 6])}
    row = paired.paired_table(_runs(cells), _predictions(cells, wins).get,
                              resamples=2000).iloc[0]
    assert row["test"] == "t-test + bootstrap"
    assert row["p_boot"] < 0.05 < row["p_t"]
    assert row["p_holm"] == row["p_t"] and row["verdict"] == "no difference established"


def test_without_predictions_the_t_test_decides() -> None:
    cells = _cells(4, [140, 150, 145, 138], [10, 14, 9, 12])
    row = paired.paired_table(_runs(cells), None).iloc[0]
    assert row["test"] == "t-test" and row["p_holm"] == row["p_t"] and row["p_t"] < 0.01
    assert row["verdict"] == "batchmixup higher"
    assert math.isnan(row["p_boot"])


def test_predictions_that_disagree_with_the_counts_are_not_used() -> None:
    cells = _cells(3, [145, 150, 140], [8, 8, 8])
    preds = _predictions(cells, _only_batchmixup_right(3, 8, 0))
    preds["batchmixup-1"] = {**preds["batchmixup-1"], "pred": preds["mixup-1"]["pred"]}
    row = paired.paired_table(_runs(cells), preds.get).iloc[0]
    assert math.isnan(row["p_boot"])
    assert "do not match the logged counts" in row["verdict"]


def test_comparisons_per_arm_set() -> None:
    families = {"none": "unmixed", "mixup": "pairwise", "mixup_shared": "pairwise",
                "nonlinear_mixup": "pairwise", "batchmixup": "batch", "batchmixup_dot": "batch",
                "tmix": "pairwise"}
    pairs = paired.comparisons(families)
    assert pairs[:6] == [(arm, "none") for arm in
                         ["mixup", "nonlinear_mixup", "batchmixup", "batchmixup_dot",
                          "mixup_shared", "tmix"]]
    assert set(pairs[6:]) == {(b, m) for b in ("batchmixup", "batchmixup_dot")
                              for m in ("mixup", "nonlinear_mixup", "mixup_shared", "tmix")}
    assert paired.comparisons({"batchmixup": "batch"}) == []
    # the baseline is whichever arm does not mix, whatever it is called
    assert paired.comparisons({"plain": "unmixed", "mine": "pairwise"}) == [("mine", "plain")]
