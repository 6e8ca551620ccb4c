"""The report's calibration table: ECE, NLL and Brier score per arm, and paired ECE tests.

Each finished cell logged the calibration of its selected epoch's test probabilities
(``test_ece`` with 15 equal-width bins, ``test_nll``, ``test_brier``: ``trainers/calibration.py``).
Per (task, ratio, arm) the table gives their mean ± sample std over seeds (ECE in percent);
the comparisons are those of the accuracy table (:func:`results.paired.comparisons`), paired
by seed, on ECE: mean Δ with a 95 % t-interval, a paired t-test over seeds only with at least
3 seeds whose differences vary, Holm over every ECE test of the report, and a direction only
where the adjusted p is below 0.05 (lower ECE is better calibrated).
"""

from __future__ import annotations

import math

import pandas as pd

from results import paired, stats
from results.tables import (
    DASH,
    finished_cells,
    format_mean_std,
    format_ratio,
    markdown_table,
    ordered_strategies,
    task_ratio_groups,
)

METRICS = ("test_ece", "test_nll", "test_brier")
COLUMNS = ["task", "ratio", "strategy", "n", "ece_mean", "ece_std", "nll_mean", "nll_std",
           "brier_mean", "brier_std"]
PAIRED_COLUMNS = ["task", "ratio", "arm", "baseline", "n", "mean_diff", "ci_low", "ci_high",
                  "p_t", "p_holm", "verdict"]


def _cells(runs: pd.DataFrame) -> pd.DataFrame:
    cells = finished_cells(runs)
    for key in METRICS:
        column = f"result.{key}"
        cells[key] = cells[column] if column in cells.columns else math.nan
    return cells[cells["test_ece"].notna()]


def calibration_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds of ECE (%), NLL and Brier score per (task, ratio, arm)."""
    rows = []
    for task, ratio, here in task_ratio_groups(_cells(runs)):
        for arm in ordered_strategies(here["strategy"]):
            group = here[here["strategy"] == arm]
            row = {"task": task, "ratio": ratio, "strategy": arm, "n": len(group)}
            for key, scale in (("ece", 100.0), ("nll", 1.0), ("brier", 1.0)):
                values = group[f"test_{key}"].astype(float) * scale
                row[f"{key}_mean"] = float(values.mean())
                row[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
            rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def ece_comparisons(runs: pd.DataFrame) -> pd.DataFrame:
    """Paired ECE differences (pp of ECE: arm − baseline) with t-tests and Holm."""
    rows = []
    for task, ratio, here in task_ratio_groups(_cells(runs)):
        for arm, baseline in paired.comparisons(paired.families_of(here)):
            a = here[here["strategy"] == arm][["seed", "test_ece"]]
            b = here[here["strategy"] == baseline][["seed", "test_ece"]]
            both = a.merge(b, on="seed", suffixes=("_a", "_b"))
            diffs = list(both["test_ece_a"].astype(float) - both["test_ece_b"].astype(float))
            interval = stats.t_interval(diffs)
            _, p_t = stats.paired_t(diffs)
            rows.append({"task": task, "ratio": ratio, "arm": arm, "baseline": baseline,
                         "n": len(diffs), "mean_diff": interval.mean * 100,
                         "ci_low": interval.low * 100, "ci_high": interval.high * 100,
                         "p_t": p_t})
    for row, adjusted in zip(rows, stats.holm([r["p_t"] for r in rows]), strict=True):
        row["p_holm"] = adjusted
        if row["n"] < stats.MIN_SEEDS or math.isnan(row["p_t"]):
            row["verdict"] = f"not tested: n < {stats.MIN_SEEDS} paired seeds" \
                if row["n"] < stats.MIN_SEEDS else "not tested: differences do not vary"
        elif adjusted < stats.ALPHA:
            row["verdict"] = f"{row['arm']} {'lower' if row['mean_diff'] < 0 else 'higher'} ECE"
        else:
            row["verdict"] = "no difference established"
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def _std(value: float) -> str:
    return DASH if math.isnan(value) else f"{value:.3f}"


def calibration_markdown(table: pd.DataFrame, comparisons: pd.DataFrame) -> str:
    """Both tables as markdown (the explanation is the report's)."""
    if table.empty:
        return "_No run logged calibration metrics (runs that predate them)._"
    rows = [[r["task"], format_ratio(r["ratio"]), r["strategy"],
             format_mean_std(r["ece_mean"], r["ece_std"], int(r["n"])),
             f"{r['nll_mean']:.3f} ± {_std(r['nll_std'])}",
             f"{r['brier_mean']:.3f} ± {_std(r['brier_std'])}"] for _, r in table.iterrows()]
    out = markdown_table(["Task", "Training data", "Arm", "ECE (%) mean ± std (n)",
                          "NLL mean ± std", "Brier mean ± std"], rows)
    if comparisons.empty:
        return out
    rows = []
    for _, r in comparisons.iterrows():
        rows.append([r["task"], format_ratio(r["ratio"]), f"{r['arm']} − {r['baseline']}",
                     str(r["n"]), paired.interval_text(r["mean_diff"], r["ci_low"], r["ci_high"]),
                     paired.p_pair(r["p_t"], r["p_holm"]), r["verdict"]])
    return out + "\n\n" + markdown_table(
        ["Task", "Training data", "Comparison", "n", "mean Δ ECE (pp) [95% t-CI]",
         "t-test p / Holm", "reading"], rows)
