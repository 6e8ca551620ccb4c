"""Paired comparisons of arms within each (task, ratio): which arm is better, and how sure.

Per (task, ratio) every arm is compared with the baseline arm (the first arm whose strategy
does not mix: family ``unmixed``, recorded by the strategy's tags), and every arm that mixes
the whole batch (family ``batch``, BatchMixup) with every arm that mixes pairs (family
``pairwise``: mixup, nonlinear mixup, TMix, ...). Runs are paired by seed: the same seed is the same
training subset and validation split in every arm. The statistics (see :mod:`results.stats`
and ``docs/report.md``):

* per-seed differences from the integer correct counts (``test_correct / test_examples``);
* their mean with a 95 % t-interval over seeds;
* a paired t-test over seeds, only with at least 3 seeds whose differences vary;
* a paired bootstrap over seeds and test examples from the runs' ``test_predictions.json``
  (the primary test where the predictions exist; the t-test otherwise);
* Holm-Bonferroni over every tested comparison of the report; a verdict only where the
  adjusted p is below 0.05, and never with fewer than 3 paired seeds.

Update counts of both arms stand next to every difference: an arm that made more updates
may be better for that reason alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd

from results import stats
from results.tables import (
    BATCH,
    DASH,
    METRIC_VAL,
    PAIRWISE,
    UNMIXED,
    finished_cells,
    format_count,
    format_ratio,
    markdown_table,
    ordered_ratios,
    ordered_seeds,
    ordered_strategies,
    ordered_tasks,
    strategy_family,
)

Predictions = Callable[[str], "dict[str, Any] | None"]
"""run id -> the run's ``test_predictions.json`` (``gold``, ``pred``), or None."""

COLUMNS = [
    "task", "ratio", "arm", "baseline", "metric", "n", "seeds", "per_seed", "mean_diff",
    "ci_low", "ci_high", "wins", "losses", "ties", "t", "p_t", "boot_mean", "boot_low",
    "boot_high", "p_boot", "resamples", "test", "p_holm_t", "p_holm_boot", "p_holm",
    "verdict",
    "selected_updates_arm", "selected_updates_baseline", "updates_arm", "updates_baseline",
]


def comparisons(families: dict[str, str]) -> list[tuple[str, str]]:
    """(arm, baseline) pairs for one (task, ratio), given each arm's strategy family.

    Every arm against the baseline (the first arm, in table order, of family ``unmixed``),
    then every ``batch`` arm against every ``pairwise`` arm.
    """
    arms = ordered_strategies(families)
    baselines = [a for a in arms if families[a] == UNMIXED]
    pairs: list[tuple[str, str]] = []
    if baselines:
        pairs += [(arm, baselines[0]) for arm in arms if arm != baselines[0]]
    batch = [a for a in arms if families[a] == BATCH]
    pairwise = [a for a in arms if families[a] == PAIRWISE]
    pairs += [(a, b) for a in batch for b in pairwise]
    return pairs


def _per_seed_text(diffs: Sequence[Fraction], examples: Sequence[int],
                   correct_diffs: Sequence[int]) -> str:
    """ "+8, +8 of 277" (one test-set size) or "+8/277, +7/276"."""
    if len(set(examples)) == 1:
        return ", ".join(f"{d:+d}" for d in correct_diffs) + f" of {examples[0]}"
    return ", ".join(f"{d:+d}/{n}" for d, n in zip(correct_diffs, examples, strict=True))


def _example_diffs(
    predictions: Predictions, pairs: pd.DataFrame
) -> tuple[list[np.ndarray] | None, str]:
    """Per-seed per-example differences from the runs' predictions, or None and the reason.

    Checks that both runs of a seed have predictions over the same gold labels, of the size
    and correct counts their metrics recorded, and that every seed saw the same test set.
    """
    out: list[np.ndarray] = []
    for r in pairs.itertuples():
        a, b = predictions(r.run_id_a), predictions(r.run_id_b)
        if a is None or b is None:
            return None, "test predictions missing"
        if list(a["gold"]) != list(b["gold"]):
            return None, "test predictions of paired runs disagree on the gold labels"
        diff = stats.example_differences(a["gold"], a["pred"], b["pred"])
        right_a = int(np.sum(np.asarray(a["pred"]) == np.asarray(a["gold"])))
        right_b = int(np.sum(np.asarray(b["pred"]) == np.asarray(b["gold"])))
        if (len(diff), right_a, right_b) != (r.examples_a, r.correct_a, r.correct_b):
            return None, "test predictions do not match the logged counts"
        out.append(diff)
    if len({len(d) for d in out}) > 1:
        return None, "seeds were evaluated on test sets of different sizes"
    return out, ""


def _paired_cells(cells: pd.DataFrame, arm: str, baseline: str) -> pd.DataFrame:
    """One row per seed where both arms finished: run ids, counts, updates, scores."""
    keep = ["seed", "run_id", "correct", "examples", "score", "metric",
            "result.selected_updates", "result.updates"]
    a = cells.loc[cells["strategy"] == arm, keep]
    b = cells.loc[cells["strategy"] == baseline, keep]
    pairs = a.merge(b, on="seed", suffixes=("_a", "_b"))
    pairs = pairs.rename(columns=lambda c: c.replace("result.", ""))
    order = ordered_seeds(pairs["seed"])
    return pairs.set_index("seed").loc[order].reset_index()


def _has_counts(pairs: pd.DataFrame) -> bool:
    """Integer counts for both arms of every seed, over the same number of examples."""
    columns = ["correct_a", "correct_b", "examples_a", "examples_b"]
    if pairs.empty or pairs[columns].isna().any().any():
        return False
    return bool((pairs["examples_a"] == pairs["examples_b"]).all())


def compare(
    task: str, ratio: float, arm: str, baseline: str, cells: pd.DataFrame,
    predictions: Predictions | None, resamples: int = stats.BOOTSTRAP_RESAMPLES,
    seed: int = stats.BOOTSTRAP_SEED,
) -> dict[str, Any]:
    """One comparison row (``p_holm`` and ``verdict`` are filled by :func:`paired_table`)."""
    pairs = _paired_cells(cells, arm, baseline)
    n = len(pairs)
    row: dict[str, Any] = {c: math.nan for c in COLUMNS}
    row.update(task=task, ratio=ratio, arm=arm, baseline=baseline, n=n,
               seeds=" ".join(pairs["seed"]), per_seed=DASH, test="", verdict="", reason="",
               metric="val" if (pairs["metric_a"] == METRIC_VAL).any() else "test",
               wins=0, losses=0, ties=0)
    if n == 0:
        return row
    for side in ("a", "b"):
        name = "arm" if side == "a" else "baseline"
        row[f"selected_updates_{name}"] = float(pairs[f"selected_updates_{side}"].mean())
        row[f"updates_{name}"] = float(pairs[f"updates_{side}"].mean())
    if not _has_counts(pairs):
        diffs_pp = (pairs["score_a"] - pairs["score_b"]) * 100
        reason = f"n < {stats.MIN_SEEDS} paired seeds" if n < stats.MIN_SEEDS else \
            "no integer counts recorded"
        row.update(mean_diff=float(diffs_pp.mean()), reason=reason)
        return row
    correct_a = pairs["correct_a"].astype(int).tolist()
    correct_b = pairs["correct_b"].astype(int).tolist()
    examples = pairs["examples_a"].astype(int).tolist()
    diffs = stats.count_differences(correct_a, correct_b, examples)
    interval = stats.t_interval(diffs)
    t, p_t = stats.paired_t(diffs)
    row.update(
        per_seed=_per_seed_text(diffs, examples,
                                [x - y for x, y in zip(correct_a, correct_b, strict=True)]),
        mean_diff=interval.mean * 100, ci_low=interval.low * 100, ci_high=interval.high * 100,
        wins=sum(d > 0 for d in diffs), losses=sum(d < 0 for d in diffs),
        ties=sum(d == 0 for d in diffs), t=t, p_t=p_t,
    )
    reason = ""
    if row["metric"] == "test" and predictions is not None:
        per_example, reason = _example_diffs(predictions, pairs)
        if per_example is not None:
            boot = stats.paired_bootstrap(per_example, resamples=resamples, seed=seed)
            row.update(boot_mean=boot.mean * 100, boot_low=boot.low * 100,
                       boot_high=boot.high * 100, resamples=boot.resamples)
            if n >= stats.MIN_SEEDS:
                row["p_boot"] = boot.p_value
    elif row["metric"] != "test":
        reason = "validation scores: no per-example predictions"
    tests = [name for name, p in (("t-test", p_t), ("bootstrap", row["p_boot"]))
             if not math.isnan(p)]
    row["test"] = " + ".join(tests)
    if n < stats.MIN_SEEDS:
        row["reason"] = f"n < {stats.MIN_SEEDS} paired seeds"
    elif not tests:
        row["reason"] = ("differences identical over seeds and "
                         + (reason or "no per-example test"))
    return row


def verdict(row: dict[str, Any], alpha: float = stats.ALPHA) -> str:
    """The reading of a row: a direction only where every test it has rejects after Holm's
    adjustment (``p_holm``, the largest adjusted p, is below alpha)."""
    if row["n"] == 0:
        return "no paired seeds"
    if not row["test"]:
        return f"not tested: {row.get('reason') or 'no test'}"
    if row["p_holm"] < alpha:
        return f"{row['arm']} {'higher' if row['mean_diff'] > 0 else 'lower'}"
    return "no difference established"


def paired_table(
    runs: pd.DataFrame, predictions: Predictions | None = None,
    resamples: int = stats.BOOTSTRAP_RESAMPLES, seed: int = stats.BOOTSTRAP_SEED,
) -> pd.DataFrame:
    """Every comparison of the report (see the module docstring).

    Holm's adjustment runs over each test's family (all t-tests of the report; all
    bootstraps); ``p_holm`` is the larger adjusted p of a row's tests, so a verdict needs
    every available test to reject (an intersection-union test: still level alpha).
    ``predictions`` reads a run's test predictions (None: no bootstrap, the t-test decides).
    Columns: :data:`COLUMNS` plus ``reason`` (why a comparison was not tested).
    """
    cells = finished_cells(runs)
    rows: list[dict[str, Any]] = []
    for task in ordered_tasks(cells["task"]):
        for ratio in ordered_ratios(cells.loc[cells["task"] == task, "ratio"]):
            here = cells[(cells["task"] == task) & np.isclose(cells["ratio"], ratio)]
            families = dict(zip(here["strategy"], strategy_family(here), strict=False))
            for arm, baseline in comparisons(families):
                rows.append(compare(task, ratio, arm, baseline, here, predictions,
                                    resamples, seed))
    holm_t = stats.holm([r["p_t"] for r in rows])
    holm_boot = stats.holm([r["p_boot"] for r in rows])
    for row, p_t, p_boot in zip(rows, holm_t, holm_boot, strict=True):
        available = [p for p in (p_t, p_boot) if not math.isnan(p)]
        row.update(p_holm_t=p_t, p_holm_boot=p_boot,
                   p_holm=max(available) if available else math.nan)
        row["verdict"] = verdict(row)
    return pd.DataFrame(rows, columns=[*COLUMNS, "reason"])


def family_sizes(table: pd.DataFrame) -> tuple[int, int, int]:
    """(comparisons tested, t-tests, bootstraps): the Holm families."""
    if table.empty:
        return 0, 0, 0
    return (int(table["p_holm"].notna().sum()), int(table["p_t"].notna().sum()),
            int(table["p_boot"].notna().sum()))


def family_size(table: pd.DataFrame) -> int:
    """How many comparisons were tested."""
    return family_sizes(table)[0]


def _p_text(p: float) -> str:
    if math.isnan(p):
        return DASH
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _p_pair(p: float, adjusted: float) -> str:
    """ "p / Holm-adjusted p", or "—" without a test."""
    return DASH if math.isnan(p) else f"{_p_text(p)} / {_p_text(adjusted)}"


def _interval_text(mean: float, low: float, high: float) -> str:
    if math.isnan(mean):
        return DASH
    if math.isnan(low):
        return f"{mean:+.2f}"
    return f"{mean:+.2f} [{low:+.2f}, {high:+.2f}]"


def paired_markdown(table: pd.DataFrame) -> str:
    """The paired comparisons as markdown."""
    if table.empty:
        return "_No (task, ratio) has two arms to compare._"
    headers = ["Task", "Training data", "Comparison", "n", "per-seed Δ correct",
               "mean Δ (pp) [95% t-CI]", "t-test p / Holm", "bootstrap Δ (pp) [95% CI]",
               "bootstrap p / Holm", "updates at selected epoch", "reading"]
    rows = []
    for _, r in table.iterrows():
        updates = (f"{format_count(r['selected_updates_arm'])} vs "
                   f"{format_count(r['selected_updates_baseline'])}")
        rows.append([
            r["task"], format_ratio(r["ratio"]), f"{r['arm']} − {r['baseline']}", str(r["n"]),
            r["per_seed"], _interval_text(r["mean_diff"], r["ci_low"], r["ci_high"]),
            _p_pair(r["p_t"], r["p_holm_t"]),
            _interval_text(r["boot_mean"], r["boot_low"], r["boot_high"]),
            _p_pair(r["p_boot"], r["p_holm_boot"]), updates, r["verdict"],
        ])
    return markdown_table(headers, rows)
