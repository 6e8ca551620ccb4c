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

from results import paper, stats
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
    ordered_seeds,
    ordered_strategies,
    strategy_family,
    task_ratio_groups,
)

Predictions = Callable[[str], "dict[str, Any] | None"]
"""run id -> the run's ``test_predictions.json`` (``gold``, ``pred``), or None."""

COLUMNS = [
    "task", "ratio", "arm", "baseline", "metric", "n", "seeds", "per_seed", "mean_diff",
    "ci_low", "ci_high", "wins", "losses", "ties", "t", "p_t", "boot_mean", "boot_low",
    "boot_high", "p_boot", "resamples", "test", "p_holm_t", "p_holm_boot", "p_holm",
    "verdict",
    "selected_updates_arm", "selected_updates_baseline", "updates_arm", "updates_baseline",
    "sd_seed", "detectable_t", "detectable_boot", "seeds_1pp", "paper_delta", "seeds_paper",
    "p_claim_t", "p_claim_boot", "p_holm_claim_t", "p_holm_claim_boot", "claim",
    "margin", "p_tost_t", "p_tost_boot", "p_holm_tost_t", "p_holm_tost_boot", "equivalence",
]
EQUIVALENCE_MARGIN = 1.0
"""Default δ (pp) of the equivalence reading: "no difference larger than ±δ"."""


def families_of(cells: pd.DataFrame) -> dict[str, str]:
    """Each arm among ``cells`` -> its strategy family (what :func:`comparisons` pairs by)."""
    return dict(zip(cells["strategy"], strategy_family(cells), strict=False))


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
    keep += ["algorithm"] if "algorithm" in cells.columns else []
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
    seed: int = stats.BOOTSTRAP_SEED, margin: float = EQUIVALENCE_MARGIN,
) -> dict[str, Any]:
    """One comparison row (the Holm columns and the readings are filled by
    :func:`paired_table`)."""
    pairs = _paired_cells(cells, arm, baseline)
    n = len(pairs)
    row: dict[str, Any] = {c: math.nan for c in COLUMNS}
    row.update(task=task, ratio=ratio, arm=arm, baseline=baseline, n=n,
               seeds=" ".join(pairs["seed"]), per_seed=DASH, test="", verdict="", reason="",
               metric="val" if (pairs["metric_a"] == METRIC_VAL).any() else "test",
               wins=0, losses=0, ties=0, claim="", equivalence="", margin=margin,
               seeds_1pp=None, seeds_paper=None,
               paper_delta=_paper_delta(task, ratio, pairs, arm, baseline))
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
    _power(row, diffs)
    reason = ""
    boot = None
    if row["metric"] == "test" and predictions is not None:
        per_example, reason = _example_diffs(predictions, pairs)
        if per_example is not None:
            boot = stats.paired_bootstrap(per_example, resamples=resamples, seed=seed)
            row.update(boot_mean=boot.mean * 100, boot_low=boot.low * 100,
                       boot_high=boot.high * 100, resamples=boot.resamples,
                       detectable_boot=stats.detectable_z(boot.std) * 100)
            if n >= stats.MIN_SEEDS:
                row["p_boot"] = boot.p_value
    elif row["metric"] != "test":
        reason = "validation scores: no per-example predictions"
    _bounded_tests(row, diffs, boot if n >= stats.MIN_SEEDS else None)
    tests = [name for name, p in (("t-test", p_t), ("bootstrap", row["p_boot"]))
             if not math.isnan(p)]
    row["test"] = " + ".join(tests)
    if n < stats.MIN_SEEDS:
        row["reason"] = f"n < {stats.MIN_SEEDS} paired seeds"
    elif not tests:
        row["reason"] = ("differences identical over seeds and "
                         + (reason or "no per-example test"))
    return row


def _paper_delta(task: str, ratio: float, pairs: pd.DataFrame, arm: str,
                 baseline: str) -> float:
    """The paper's Table 1 difference (pp) of the two arms' algorithms at this task and
    ratio, NaN where the paper has no number for either."""
    def algorithm(side: str, name: str) -> str:
        column = f"algorithm_{side}"
        return str(pairs[column].iloc[0]) if column in pairs and len(pairs) else name

    a = paper.paper_cell(ratio, algorithm("a", arm), task)
    b = paper.paper_cell(ratio, algorithm("b", baseline), task)
    return math.nan if a is None or b is None else a[0] - b[0]


def _power(row: dict[str, Any], diffs: Sequence[Fraction]) -> None:
    """Detectable difference at 80 % power over the seeds, and the seeds 1 pp and the
    paper's Δ would need, from the observed per-seed sd (pp)."""
    n = len(diffs)
    if n < 2 or not stats.differences_vary(diffs):
        return
    sd = float(np.std(np.asarray(diffs, dtype=float), ddof=1))
    row.update(sd_seed=sd * 100, detectable_t=stats.detectable_t(sd, n) * 100,
               seeds_1pp=stats.seeds_needed(sd, 0.01))
    if not math.isnan(row["paper_delta"]):
        row["seeds_paper"] = stats.seeds_needed(sd, row["paper_delta"] / 100)


def _bounded_tests(row: dict[str, Any], diffs: Sequence[Fraction],
                   boot: stats.BootstrapResult | None) -> None:
    """The paper's claim (H0: Δ at least the paper's, in its direction) and the equivalence
    test (TOST: H0 |Δ| >= margin), each by t-test and bootstrap (raw p; Holm later)."""
    def both(bound: float, alternative: str) -> tuple[float, float]:
        p_boot = stats.bootstrap_one_sided(boot, bound, alternative) if boot else math.nan
        return stats.t_one_sided(diffs, bound, alternative), p_boot

    claimed = row["paper_delta"]
    if not math.isnan(claimed) and claimed != 0:
        row["p_claim_t"], row["p_claim_boot"] = both(
            claimed / 100, "less" if claimed > 0 else "greater")
    delta = row["margin"] / 100
    lower, upper = both(-delta, "greater"), both(delta, "less")
    row["p_tost_t"], row["p_tost_boot"] = (max(lower[0], upper[0]), max(lower[1], upper[1]))


def _largest(*adjusted: float) -> float:
    available = [p for p in adjusted if not math.isnan(p)]
    return max(available) if available else math.nan


def claim_reading(row: dict[str, Any], alpha: float = stats.ALPHA) -> str:
    """Is the paper's claimed difference excluded here (every test rejects after Holm)?"""
    if math.isnan(row["paper_delta"]):
        return ""
    claimed = f"paper's {row['paper_delta']:+.1f} pp"
    p = _largest(row["p_holm_claim_t"], row["p_holm_claim_boot"])
    if math.isnan(p):
        return f"{claimed}: not tested"
    return f"{claimed} excluded (in this setting)" if p < alpha else f"{claimed} not excluded"


def equivalence_reading(row: dict[str, Any], alpha: float = stats.ALPHA) -> str:
    """TOST: "within ±δ pp" where every test rejects |Δ| >= δ after Holm."""
    p = _largest(row["p_holm_tost_t"], row["p_holm_tost_boot"])
    if math.isnan(p):
        return ""
    return f"within ±{row['margin']:g} pp" if p < alpha else \
        f"not shown within ±{row['margin']:g} pp"


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
    margin: float = EQUIVALENCE_MARGIN,
) -> pd.DataFrame:
    """Every comparison of the report (see the module docstring).

    Holm's adjustment runs over each test's family (all t-tests of the report; all
    bootstraps); ``p_holm`` is the larger adjusted p of a row's tests, so a verdict needs
    every available test to reject (an intersection-union test: still level alpha).
    ``predictions`` reads a run's test predictions (None: no bootstrap, the t-test decides).
    Columns: :data:`COLUMNS` plus ``reason`` (why a comparison was not tested).
    """
    rows: list[dict[str, Any]] = []
    for task, ratio, here in task_ratio_groups(finished_cells(runs)):
        for arm, baseline in comparisons(families_of(here)):
            rows.append(compare(task, ratio, arm, baseline, here, predictions, resamples, seed,
                                margin))
    holm_t = stats.holm([r["p_t"] for r in rows])
    holm_boot = stats.holm([r["p_boot"] for r in rows])
    for row, p_t, p_boot in zip(rows, holm_t, holm_boot, strict=True):
        available = [p for p in (p_t, p_boot) if not math.isnan(p)]
        row.update(p_holm_t=p_t, p_holm_boot=p_boot,
                   p_holm=max(available) if available else math.nan)
        row["verdict"] = verdict(row)
    # The claim tests and the equivalence tests are families of their own (Holm in each).
    for kind in ("claim", "tost"):
        for test in ("t", "boot"):
            adjusted = stats.holm([r[f"p_{kind}_{test}"] for r in rows])
            for row, p in zip(rows, adjusted, strict=True):
                row[f"p_holm_{kind}_{test}"] = p
    for row in rows:
        row["claim"] = claim_reading(row)
        row["equivalence"] = equivalence_reading(row)
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


def p_pair(p: float, adjusted: float) -> str:
    """ "p / Holm-adjusted p", or "—" without a test."""
    return DASH if math.isnan(p) else f"{_p_text(p)} / {_p_text(adjusted)}"


def interval_text(mean: float, low: float, high: float) -> str:
    """ "+1.23 [-0.50, +2.96]", "+1.23" without an interval, "—" without a mean."""
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
            r["per_seed"], interval_text(r["mean_diff"], r["ci_low"], r["ci_high"]),
            p_pair(r["p_t"], r["p_holm_t"]),
            interval_text(r["boot_mean"], r["boot_low"], r["boot_high"]),
            p_pair(r["p_boot"], r["p_holm_boot"]), updates, _reading(r),
        ])
    return markdown_table(headers, rows)


def _detectable(row: pd.Series) -> float:
    """The smaller detectable difference of the row's tests (pp; NaN without one)."""
    values = [v for v in (row["detectable_t"], row["detectable_boot"]) if not pd.isna(v)]
    return min(values) if values else math.nan


def _reading(row: pd.Series) -> str:
    """The verdict; "no difference established" with the size its tests could detect."""
    detectable = _detectable(row)
    if row["verdict"] == "no difference established" and not math.isnan(detectable):
        return (f"{row['verdict']} (detectable at {100 * stats.POWER:.0f} % power: "
                f"±{detectable:.1f} pp)")
    return row["verdict"]


def _seeds_text(value: Any) -> str:
    if value is None or pd.isna(value):
        return DASH
    return f"{int(value):,}"


def power_markdown(table: pd.DataFrame) -> str:
    """Detectable differences, seeds needed, the paper's claim and equivalence, per row."""
    if table.empty:
        return "_No comparisons._"
    headers = ["Task", "Training data", "Comparison", "n", "sd over seeds (pp)",
               "detectable Δ, t-test / bootstrap (pp)", "seeds for 1 pp", "paper Δ (pp)",
               "seeds for paper Δ", "paper Δ test: t p / Holm", "bootstrap p / Holm",
               "paper's claim", "equivalence (TOST)"]
    rows = []
    for _, r in table.iterrows():
        detectable = " / ".join(DASH if pd.isna(v) else f"±{v:.1f}"
                                for v in (r["detectable_t"], r["detectable_boot"]))
        rows.append([
            r["task"], format_ratio(r["ratio"]), f"{r['arm']} − {r['baseline']}", str(r["n"]),
            DASH if pd.isna(r["sd_seed"]) else f"{r['sd_seed']:.2f}", detectable,
            _seeds_text(r["seeds_1pp"]),
            DASH if pd.isna(r["paper_delta"]) else f"{r['paper_delta']:+.2f}",
            _seeds_text(r["seeds_paper"]),
            p_pair(r["p_claim_t"], r["p_holm_claim_t"]),
            p_pair(r["p_claim_boot"], r["p_holm_claim_boot"]),
            r["claim"] or DASH, r["equivalence"] or DASH,
        ])
    return markdown_table(headers, rows)
