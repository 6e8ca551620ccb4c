"""Tables of the report: Table 1, the paper's reference numbers, the training budget,
failures, missing cells, the search phase and per-epoch curves.

Every function takes the DataFrames built by :func:`results.runs.load_sweep` (after
:func:`prepare_runs`) and returns a DataFrame (written to CSV) or markdown text. Accuracies
are stored by MLflow as fractions and shown here in percent, like the paper. The paired
comparisons live in :mod:`results.paired`, efficiency in :mod:`results.efficiency`, the setup
in :mod:`results.setup`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from results import configs, paper

CELL_KEY = ["task", "ratio", "strategy", "seed"]
UNMIXED = "unmixed"
"""The ``strategy_family`` of a strategy that does not mix (``trainers.strategies.FAMILIES``):
the baseline every arm is compared with."""
PAIRWISE = "pairwise"
"""The family of strategies whose new points mix two examples."""
BATCH = "batch"
"""The family of strategies whose new points mix the whole mini-batch (BatchMixup's idea)."""

DASH = "—"

METRIC_TEST = "test"
METRIC_TEST_LAST = "test_last_epoch"
METRIC_VAL = "val"
METRIC_LABELS = {
    METRIC_TEST: "test accuracy at the selected epoch (`test_accuracy`)",
    METRIC_TEST_LAST: "test accuracy at the last epoch (`accuracy`; runs that predate "
                      "`test_accuracy`)",
    METRIC_VAL: "validation accuracy at the selected epoch (`selected_val_accuracy`; "
                "eval_split=val: the test set was never evaluated)",
}


# --------------------------------------------------------------------------- ordering


def ordered_tasks(values: Iterable[str]) -> list[str]:
    """Paper tasks first (rte, fewrel, banking77), then any others alphabetically."""
    present = set(values)
    return [t for t in paper.TASKS if t in present] + sorted(present - set(paper.TASKS))


def ordered_strategies(values: Iterable[str]) -> list[str]:
    """Paper strategies first (none, mixup, nonlinear_mixup, batchmixup), then others."""
    present = set(values)
    known = [s for s in paper.STRATEGIES if s in present]
    return known + sorted(present - set(paper.STRATEGIES))


def ordered_ratios(values: Iterable[float]) -> list[float]:
    """Distinct ratios, largest first (100 %, 75 %, 50 %, 25 %, 10 %, 1 %)."""
    out: list[float] = []
    for value in sorted({float(v) for v in values}, reverse=True):
        if not any(math.isclose(value, seen) for seen in out):
            out.append(value)
    return out


def format_ratio(ratio: float) -> str:
    """Show a training fraction as the paper does: 0.25 -> "25%"."""
    return f"{ratio * 100:g}%"


def _seed_sort_key(seed: str) -> tuple[int, float, str]:
    try:
        return (0, float(seed), "")
    except ValueError:
        return (1, 0.0, seed)


def ordered_seeds(values: Iterable[str]) -> list[str]:
    """Numeric seeds in numeric order, then any others alphabetically."""
    return sorted(set(values), key=_seed_sort_key)


def sort_rows(table: pd.DataFrame, extra: Sequence[str] = ()) -> pd.DataFrame:
    """Rows by task (paper order), ratio (descending), arm (paper order), then ``extra``."""
    if table.empty:
        return table.reset_index(drop=True)
    tasks = ordered_tasks(table["task"])
    ratios = ordered_ratios(table["ratio"])
    arms = ordered_strategies(table["strategy"])
    order = table.assign(
        _t=table["task"].map(tasks.index),
        _r=table["ratio"].map(
            lambda v: next(i for i, r in enumerate(ratios) if math.isclose(r, v))),
        _s=table["strategy"].map(arms.index),
    )
    order = order.sort_values(["_t", "_r", "_s", *extra], kind="stable")
    return order.drop(columns=["_t", "_r", "_s"]).reset_index(drop=True)


# --------------------------------------------------------------------------- values


def param(runs: pd.DataFrame, name: str) -> pd.Series:
    """A logged param as strings ("" where a run did not log it)."""
    column = f"param.{name}"
    if column in runs.columns:
        return runs[column].fillna("").astype(str)
    return pd.Series("", index=runs.index, dtype=object)


def _metric(runs: pd.DataFrame, column: str) -> pd.Series:
    if column in runs.columns:
        return pd.to_numeric(runs[column], errors="coerce")
    return pd.Series(math.nan, index=runs.index, dtype=float)


def _count_from(score: float, size: str) -> tuple[float, float]:
    """(correct, examples) recovered from an accuracy and its logged split size."""
    try:
        n = int(size)
    except ValueError:
        return math.nan, math.nan
    if math.isnan(score) or n <= 0:
        return math.nan, math.nan
    return float(round(score * n)), float(n)


def _score_row(row: dict[str, Any]) -> tuple[float, str, float, float]:
    """(score, metric kind, correct, examples) of one run; NaN score when it has none."""
    test = row.get("result.test_accuracy", math.nan)
    if not math.isnan(test):
        correct = row.get("result.test_correct", math.nan)
        examples = row.get("result.test_examples", math.nan)
        if math.isnan(correct) or math.isnan(examples):
            correct, examples = _count_from(test, row.get("param.n_test", ""))
        return test, METRIC_TEST, correct, examples
    if row.get("param.eval_split", "") == "val":
        val = row.get("result.selected_val_accuracy", math.nan)
        if math.isnan(val):
            val = row.get("final.val_accuracy", math.nan)
        return (val, METRIC_VAL, *_count_from(val, row.get("param.n_val", "")))
    last = row.get("final.accuracy", math.nan)
    if not math.isnan(last):
        return (last, METRIC_TEST_LAST, *_count_from(last, row.get("param.n_test", "")))
    return math.nan, "", math.nan, math.nan


def add_scores(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with the report's value of each run: ``score`` (fraction), ``metric`` (see
    :data:`METRIC_LABELS`), and the integer ``correct`` / ``examples`` behind it (NaN when
    not recorded: runs that predate the counts and logged no split size)."""
    columns = ["result.test_accuracy", "result.test_correct", "result.test_examples",
               "result.selected_val_accuracy", "final.val_accuracy", "final.accuracy"]
    frame = pd.DataFrame({c: _metric(runs, c) for c in columns}, index=runs.index)
    for name in ("eval_split", "n_test", "n_val"):
        frame[f"param.{name}"] = param(runs, name)
    scored = [_score_row(row) for row in frame.to_dict("records")]
    score, metric, correct, examples = zip(*scored, strict=True) if scored else ([], [], [], [])
    return runs.assign(score=list(score), metric=list(metric), correct=list(correct),
                       examples=list(examples))


def prepare_runs(runs: pd.DataFrame, manifest: dict[str, Any] | None) -> pd.DataFrame:
    """Mark each run's configuration as current or not and add its score."""
    return add_scores(configs.mark_current(runs, manifest))


def _prepared(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with ``current`` and ``score`` columns (all runs current when not marked)."""
    if "current" not in runs.columns:
        runs = runs.assign(current=True)
    if "score" not in runs.columns:
        runs = add_scores(runs)
    return runs


# --------------------------------------------------------------------------- selections


def final_phase(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs of the final phase (tag phase=final or missing), any status."""
    return runs[runs["phase"] != "search"]


def current_final(runs: pd.DataFrame) -> pd.DataFrame:
    """Final-phase runs of the current configuration of their (task, ratio, arm), any status."""
    finals = final_phase(_prepared(runs))
    return finals[finals["current"].astype(bool)]


def search_phase(runs: pd.DataFrame) -> pd.DataFrame:
    """Hyperparameter-search trials (tag phase=search)."""
    return runs[runs["phase"] == "search"]


def _usable(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[(runs["status"] == "FINISHED") & runs["score"].notna()]


def task_ratio_groups(cells: pd.DataFrame) -> Iterator[tuple[str, float, pd.DataFrame]]:
    """``(task, ratio, its rows)`` in report order (paper tasks first, ratios descending)."""
    for task in ordered_tasks(cells["task"]):
        mine = cells[cells["task"] == task]
        for ratio in ordered_ratios(mine["ratio"]):
            yield task, ratio, mine[np.isclose(mine["ratio"], ratio)]


def finished_cells(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per cell with a usable result, ``accuracy_pct`` (= score × 100) added.

    Keeps final-phase runs of the current configuration with status FINISHED and a score. If
    a cell (task, ratio, arm, seed) has several such runs, the latest started one is kept.
    """
    done = _usable(current_final(runs))
    done = done.sort_values("start_time").drop_duplicates(CELL_KEY, keep="last")
    return done.assign(accuracy_pct=done["score"] * 100.0)


def duplicate_cells(runs: pd.DataFrame) -> pd.DataFrame:
    """Cells with more than one finished current run (only the latest one is used)."""
    done = _usable(current_final(runs))
    counts = done.groupby(CELL_KEY).size().rename("runs").reset_index()
    return counts[counts["runs"] > 1]


def metric_kinds(cells: pd.DataFrame) -> list[str]:
    """The metric kinds present among ``cells`` (test first)."""
    present = set(cells["metric"])
    return [m for m in (METRIC_TEST, METRIC_TEST_LAST, METRIC_VAL) if m in present]


def accuracy_name(cells: pd.DataFrame) -> str:
    """What Table 1 measures: "test accuracy", "validation accuracy" or both."""
    kinds = metric_kinds(cells)
    if kinds == [METRIC_VAL]:
        return "validation accuracy"
    if METRIC_VAL in kinds:
        return "test or validation accuracy (see the metric column)"
    return "test accuracy"


# --------------------------------------------------------------------------- Table 1


def paper_setting_groups(runs: pd.DataFrame) -> dict[Any, bool]:
    """Does a group's setting match the paper's (:func:`results.paper.matches_setting` for
    every current final run)? Keys: (task, ratio, arm) group keys, and each task alone (for
    groups of the launch without any run yet)."""
    finals = current_final(runs)
    model, mode, labels = param(finals, "model"), param(finals, "mode"), param(finals,
                                                                                "num_labels")
    out: dict[Any, bool] = {}
    for i, (task, ratio, arm) in enumerate(
            zip(finals["task"], finals["ratio"], finals["strategy"], strict=True)):
        ok = paper.matches_setting(task, model.iloc[i], mode.iloc[i], labels.iloc[i])
        for key in (configs.group_key(task, ratio, arm), task):
            out[key] = out.get(key, True) and ok
    return out


def _grid(runs: pd.DataFrame, manifest: dict[str, Any] | None) -> list[tuple[str, float, str]]:
    """(task, ratio, arm) of every current final run and every manifest cell, in order."""
    finals = current_final(runs)
    keys = {(t, float(r), a) for t, r, a in
            zip(finals["task"], finals["ratio"], finals["strategy"], strict=True)}
    keys |= {(t, r, a) for t, r, a, _ in configs.manifest_cells(manifest)}
    frame = pd.DataFrame(sorted(keys), columns=["task", "ratio", "strategy"])
    frame = frame.drop_duplicates().assign(
        _k=[configs.group_key(t, r, a) for t, r, a in
            zip(frame["task"], frame["ratio"], frame["strategy"], strict=True)])
    frame = frame.drop_duplicates("_k").drop(columns="_k")
    return list(sort_rows(frame).itertuples(index=False, name=None))


TABLE1_COLUMNS = ["task", "ratio", "strategy", "n", "mean", "std", "seeds", "metric",
                  "updates", "selected_updates", "paper_setting", "paper_mean", "paper_std",
                  "diff"]


def table1(runs: pd.DataFrame, manifest: dict[str, Any] | None = None) -> pd.DataFrame:
    """Mean and sample std (ddof=1) of each cell's score (%) per (task, ratio, arm).

    Rows: every (task, ratio, arm) with a current final-phase run or a cell in the launch
    manifest (``n = 0`` when none finished), ordered by task, ratio (descending) and arm.
    ``metric`` names what was averaged (:data:`METRIC_LABELS`); ``updates`` and
    ``selected_updates`` are means over the seeds (all updates made / those up to the
    selected epoch). The paper's (mean, std) and ``diff`` (ours − paper, percentage points)
    are filled only where ``paper_setting`` is True (the group ran the paper's setting).
    """
    cells = finished_cells(runs)
    matches = paper_setting_groups(runs)
    rows = []
    for task, ratio, arm in _grid(runs, manifest):
        here = cells[(cells["task"] == task) & np.isclose(cells["ratio"], ratio)
                     & (cells["strategy"] == arm)]
        values = here["accuracy_pct"]
        n = int(values.size)
        mean = float(values.mean()) if n else math.nan
        match = matches.get(configs.group_key(task, ratio, arm), matches.get(task, False))
        ref = paper.paper_cell(ratio, arm, task) if match else None
        rows.append({
            "task": task,
            "ratio": ratio,
            "strategy": arm,
            "n": n,
            "mean": mean,
            "std": float(values.std(ddof=1)) if n >= 2 else math.nan,
            "seeds": " ".join(ordered_seeds(here["seed"])),
            "metric": ",".join(metric_kinds(here)),
            "updates": float(here["result.updates"].mean()) if n else math.nan,
            "selected_updates": float(here["result.selected_updates"].mean()) if n else math.nan,
            "paper_setting": match,
            "paper_mean": ref[0] if ref else math.nan,
            "paper_std": ref[1] if ref else math.nan,
            "diff": mean - ref[0] if ref and n else math.nan,
        })
    return pd.DataFrame(rows, columns=TABLE1_COLUMNS)


def format_mean_std(mean: float, std: float, n: int) -> str:
    """ "mean ± std (n)" in percent with two decimals; "—" without data, "± —" for n = 1."""
    if n == 0 or math.isnan(mean):
        return DASH
    std_text = DASH if math.isnan(std) else f"{std:.2f}"
    return f"{mean:.2f} ± {std_text} ({n})"


def _format_signed(value: float) -> str:
    return DASH if math.isnan(value) else f"{value:+.2f}"


def format_count(value: float) -> str:
    """A whole number (mean over seeds, rounded) or "—"."""
    return DASH if value is None or math.isnan(value) else f"{value:,.0f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Render a GitHub-flavoured markdown table (``|`` inside cells is escaped)."""
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def table1_markdown(table: pd.DataFrame) -> str:
    """Table 1 as markdown, one table per task: rows ratio (descending) × arm; the paper's
    column and Δ only for a task with at least one group in the paper's setting."""
    if table.empty:
        return "_No final-phase cell runs._"
    parts: list[str] = []
    for task in ordered_tasks(table["task"]):
        rows_t = table[table["task"] == task]
        with_paper = bool(rows_t["paper_setting"].any())
        headers = ["Training data", "Arm", "Accuracy (%) mean ± std (n)",
                   "Updates: selected / total"]
        if with_paper:
            headers += [f"Paper ({paper.SETTING})", "Δ (pp)"]
        rows = []
        for r in rows_t.itertuples():
            row = [format_ratio(r.ratio), r.strategy, format_mean_std(r.mean, r.std, r.n),
                   f"{format_count(r.selected_updates)} / {format_count(r.updates)}"]
            if with_paper:
                ref = DASH if math.isnan(r.paper_mean) else \
                    f"{r.paper_mean:.2f} ± {r.paper_std:.2f}"
                row += [ref, _format_signed(r.diff)]
            rows.append(row)
        parts += [f"**{task}**", "", markdown_table(headers, rows), ""]
    return "\n".join(parts).rstrip()


def paper_reference(table: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 1 for the tasks and ratios of ``table`` whose groups did not run the
    paper's setting (shown as reference, without Δ). Columns: ratio, system, one per task."""
    unmatched = table[~table["paper_setting"].astype(bool)]
    tasks = [t for t in ordered_tasks(unmatched["task"]) if t in paper.TASKS]
    ratios = [r for r in ordered_ratios(unmatched["ratio"])
              if any(math.isclose(r, p) for p in paper.RATIOS)]
    rows = []
    for ratio in ratios:
        for system in paper.STRATEGIES:
            row: dict[str, Any] = {"ratio": ratio, "system": system}
            for task in tasks:
                ref = paper.paper_cell(ratio, system, task)
                row[task] = f"{ref[0]:.2f} ± {ref[1]:.2f}" if ref else DASH
            rows.append(row)
    if rows:
        rows.append({"ratio": math.nan, "system": "random/majority baseline",
                     **{task: f"{paper.BASELINE[task]:.2f}" for task in tasks}})
    return pd.DataFrame(rows, columns=["ratio", "system", *tasks])


def paper_reference_markdown(reference: pd.DataFrame) -> str:
    """The paper's reference numbers as markdown."""
    tasks = list(reference.columns[2:])
    rows = [[DASH if math.isnan(r["ratio"]) else format_ratio(r["ratio"]), r["system"],
             *[r[t] for t in tasks]] for _, r in reference.iterrows()]
    return markdown_table(["Training data", "System", *tasks], rows)


# --------------------------------------------------------------------------- budget


def _span(values: pd.Series, fmt: str = "{:,.0f}") -> str:
    """"a" when all values are equal, "a–b" for a range, "—" without values."""
    values = pd.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return DASH
    low, high = fmt.format(values.min()), fmt.format(values.max())
    return low if low == high else f"{low}–{high}"


BUDGET_COLUMNS = ["task", "ratio", "strategy", "n", "epochs_budget", "min_updates",
                  "selection", "patience", "epochs_run", "updates", "selected_epoch",
                  "selected_updates", "stopped_early", "converged", "assessed", "unconverged"]


def _one(values: pd.Series) -> str:
    distinct = sorted({v for v in values if v})
    return ", ".join(distinct) if distinct else DASH


def budget(runs: pd.DataFrame) -> pd.DataFrame:
    """The training budget of every (task, ratio, arm) over its finished seeds.

    The budget params (``epochs``, ``min_updates``, ``selection``, ``patience``) as logged;
    ranges over seeds of epochs run, updates made (``updates``), the selected epoch and the
    updates up to it; counts of seeds that stopped early and that converged (of those
    assessed: ``converged`` is only logged under ``selection=best_val`` with patience).
    ``unconverged`` counts assessed seeds that did not converge: a flag for the reader.
    """
    cells = finished_cells(runs)
    rows = []
    for (task, ratio, arm), group in cells.groupby(["task", "ratio", "strategy"], sort=False):
        conv = pd.to_numeric(group["result.converged"], errors="coerce").dropna()
        early = pd.to_numeric(group["result.stopped_early"], errors="coerce").dropna()
        rows.append({
            "task": task,
            "ratio": ratio,
            "strategy": arm,
            "n": len(group),
            "epochs_budget": _one(param(group, "epochs")),
            "min_updates": _one(param(group, "min_updates")),
            "selection": _one(param(group, "selection")),
            "patience": _one(param(group, "patience")),
            "epochs_run": _span(group["epochs_run"]),
            "updates": _span(group["result.updates"]),
            "selected_epoch": _span(group["result.selected_epoch"]),
            "selected_updates": _span(group["result.selected_updates"]),
            "stopped_early": f"{int((early == 1).sum())}/{len(early)}" if len(early) else DASH,
            "converged": int((conv == 1).sum()),
            "assessed": len(conv),
            "unconverged": int((conv == 0).sum()),
        })
    return sort_rows(pd.DataFrame(rows, columns=BUDGET_COLUMNS))


def budget_markdown(table: pd.DataFrame) -> str:
    """The budget table as markdown; unconverged cells are flagged."""
    if table.empty:
        return "_No finished cells._"
    headers = ["Task", "Training data", "Arm", "n", "epochs (setting)", "min updates",
               "selection", "epochs run", "updates made", "selected epoch",
               "updates at selected", "stopped early", "converged"]
    rows = []
    for r in table.itertuples():
        if r.assessed:
            converged = f"{r.converged}/{r.assessed}"
            if r.unconverged:
                converged += " ⚠ unconverged"
        else:
            converged = "not assessed"
        selection = r.selection if r.patience == DASH else f"{r.selection}, patience {r.patience}"
        rows.append([r.task, format_ratio(r.ratio), r.strategy, str(r.n), r.epochs_budget,
                     r.min_updates, selection, r.epochs_run, r.updates, r.selected_epoch,
                     r.selected_updates, r.stopped_early, converged])
    return markdown_table(headers, rows)


# --------------------------------------------------------------------------- robustness


def failed_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Current final-phase runs that did not produce a result, with their failure_reason.

    Includes FAILED, KILLED and RUNNING runs and FINISHED runs without a score.
    ``superseded`` is True when another run of the same cell finished.
    """
    finals = current_final(runs)
    bad = finals[(finals["status"] != "FINISHED") | finals["score"].isna()]
    done = finished_cells(runs)
    done_keys = set(zip(done["task"], done["ratio"], done["strategy"], done["seed"], strict=True))
    reasons = [
        reason if reason else ("no accuracy metric logged" if status == "FINISHED" else "")
        for reason, status in zip(bad["failure_reason"], bad["status"], strict=True)
    ]
    table = bad.assign(
        failure_reason=reasons,
        superseded=[
            key in done_keys
            for key in zip(bad["task"], bad["ratio"], bad["strategy"], bad["seed"], strict=True)
        ],
    )
    columns = ["run_name", "task", "ratio", "strategy", "seed", "status", "failure_reason"]
    return table[columns + ["superseded", "run_id"]].sort_values("run_name").reset_index(drop=True)


def missing_cells(runs: pd.DataFrame, manifest: dict[str, Any] | None = None) -> pd.DataFrame:
    """Cells of the sweep's grid without a finished run of the current configuration.

    The grid is the latest launch's cells (manifest) plus every combination of the tasks,
    ratios, arms and seeds seen in current final-phase runs when there is no manifest, or the
    current runs' own cells when there is one. ``latest_status`` is the status of the cell's
    latest current run, or "no run".
    """
    finals = current_final(runs)
    done = finished_cells(runs)
    done_keys = {(t, round(r, 9), s, d) for t, r, s, d in
                 zip(done["task"], done["ratio"], done["strategy"], done["seed"], strict=True)}
    latest = finals.sort_values("start_time").drop_duplicates(CELL_KEY, keep="last")
    latest_status = {
        (t, round(r, 9), s, d): status
        for t, r, s, d, status in zip(latest["task"], latest["ratio"], latest["strategy"],
                                      latest["seed"], latest["status"], strict=True)
    }
    listed = configs.manifest_cells(manifest)
    grid = {(t, round(r, 9), s, d) for t, r, s, d in listed}
    if listed:
        grid |= set(latest_status)
    else:
        grid |= {(t, round(r, 9), s, d)
                 for t in set(finals["task"]) for r in set(finals["ratio"])
                 for s in set(finals["strategy"]) for d in set(finals["seed"])}
    rows = [{"task": t, "ratio": r, "strategy": s, "seed": d,
             "latest_status": latest_status.get((t, r, s, d), "no run")}
            for t, r, s, d in grid if (t, r, s, d) not in done_keys]
    table = pd.DataFrame(rows, columns=["task", "ratio", "strategy", "seed", "latest_status"])
    if table.empty:
        return table
    table = table.assign(_seed=table["seed"].map(_seed_sort_key))
    return sort_rows(table, extra=["_seed"]).drop(columns="_seed")


# --------------------------------------------------------------------------- search phase


def strategy_family(runs: pd.DataFrame) -> pd.Series:
    """Each run's ``strategy_family`` (:data:`UNMIXED`, :data:`PAIRWISE`, :data:`BATCH`, or
    ``unknown``), from its tag, else from the paper's strategies for frames without it."""
    known = _algorithm(runs).map(lambda name: paper.DESCRIPTIONS.get(name, ("", "unknown"))[1])
    if "strategy_family" in runs.columns:
        return runs["strategy_family"].replace("", np.nan).fillna(known).astype(str)
    return known


def _algorithm(runs: pd.DataFrame) -> pd.Series:
    """The algorithm of each run (tag ``strategy``); the arm name for frames without it."""
    if "algorithm" in runs.columns:
        return runs["algorithm"].fillna(runs["strategy"]).astype(str)
    return runs["strategy"].astype(str)


def search_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Search trials per (task, ratio, strategy): counts, best val_accuracy, best trial's params.

    A trial's score is its ``val_accuracy`` at the last logged step. The best trial is the one
    orchestrator.search selected (tag ``chosen=true``) when a group has one, else the highest
    score. Columns: task, ratio, strategy, trials, finished, best_val_accuracy (%), best_trial,
    alpha, temperature (blank for strategies that do not read it: their runs do not log it).
    """
    columns = ["task", "ratio", "strategy", "trials", "finished", "best_val_accuracy",
               "best_trial", "alpha", "temperature"]
    trials = search_phase(runs)
    trials = trials.assign(alpha=param(trials, "alpha"), temperature=param(trials, "temperature"))
    rows = []
    for task in ordered_tasks(trials["task"]):
        for ratio in ordered_ratios(trials.loc[trials["task"] == task, "ratio"]):
            here = trials[(trials["task"] == task) & np.isclose(trials["ratio"], ratio)]
            for strategy in ordered_strategies(here["strategy"]):
                group = here[here["strategy"] == strategy]
                rows.append(_search_row(task, ratio, strategy, group))
    return pd.DataFrame(rows, columns=columns)


def _search_row(task: str, ratio: float, strategy: str, group: pd.DataFrame) -> dict[str, Any]:
    """One row of :func:`search_summary`."""
    scored = group[group["final.val_accuracy"].notna()]
    row: dict[str, Any] = {
        "task": task, "ratio": ratio, "strategy": strategy, "trials": len(group),
        "finished": int((group["status"] == "FINISHED").sum()),
        "best_val_accuracy": math.nan, "best_trial": "", "alpha": "", "temperature": "",
    }
    chosen = scored[scored["chosen"] == "true"] if "chosen" in scored else scored[:0]
    if scored.empty:
        return row
    best = scored.loc[scored["final.val_accuracy"].idxmax()] if chosen.empty else chosen.iloc[0]
    row.update(
        best_val_accuracy=float(best["final.val_accuracy"]) * 100.0,
        best_trial=best["ray_trial_id"] or best["run_name"],
        alpha=best["alpha"],
        temperature=best["temperature"],  # logged only by the strategies that read it
    )
    return row


def search_markdown(table: pd.DataFrame) -> str:
    """The search summary as markdown."""
    headers = ["Task", "Training data", "Strategy", "trials", "finished", "best val acc (%)",
               "best trial", "alpha", "temperature"]
    rows = []
    for _, r in table.iterrows():
        rows.append([
            r["task"], format_ratio(r["ratio"]), r["strategy"], str(r["trials"]),
            str(r["finished"]),
            DASH if math.isnan(r["best_val_accuracy"]) else f"{r['best_val_accuracy']:.2f}",
            r["best_trial"] or DASH, r["alpha"] or DASH, r["temperature"] or DASH,
        ])
    return markdown_table(headers, rows)


# --------------------------------------------------------------------------- curves


def accuracy_curves(
    runs: pd.DataFrame, history: pd.DataFrame, task: str | None = None,
    ratio: float | None = None,
) -> pd.DataFrame:
    """Per-epoch accuracy (%) of the finished cells, mean and std over seeds per arm.

    ``val_accuracy`` where it was logged (selection on a validation split, where the test set
    is evaluated only at epochs that became the selected one), else the test ``accuracy``.
    ``task``/``ratio`` restrict to one (task, ratio). Columns: task, ratio, strategy, key,
    epoch, mean, std, n.
    """
    columns = ["task", "ratio", "strategy", "key", "epoch", "mean", "std", "n"]
    cells = finished_cells(runs)
    if task is not None:
        cells = cells[cells["task"] == task]
    if ratio is not None:
        cells = cells[np.isclose(cells["ratio"], ratio)]
    mine = history[history["run_id"].isin(cells["run_id"])]
    val = mine[mine["key"] == "val_accuracy"]
    test = mine[(mine["key"] == "accuracy") & ~mine["run_id"].isin(val["run_id"])]
    acc = pd.concat([val, test]).sort_values("timestamp")
    acc = acc.drop_duplicates(["run_id", "key", "step"], keep="last")
    acc = acc.merge(cells[["run_id", "task", "ratio", "strategy"]], on="run_id")
    if acc.empty:
        return pd.DataFrame(columns=columns)
    acc = acc.assign(value=acc["value"] * 100.0)
    grouped = acc.groupby(["task", "ratio", "strategy", "key", "step"])["value"]
    curves = pd.DataFrame(
        {"mean": grouped.mean(), "std": grouped.std(ddof=1), "n": grouped.size()}
    ).reset_index()
    return curves.rename(columns={"step": "epoch"})[columns]
