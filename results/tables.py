"""Tables of the report: Table 1 vs the paper, paired seed comparisons, efficiency, failures.

Every function takes the DataFrames built by :func:`results.runs.load_sweep` and returns a
DataFrame (written to CSV) or markdown text. Accuracies are stored by MLflow as fractions and
shown here in percent, like the paper.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats  # a hard dependency of mlflow

from results import paper

CELL_KEY = ["task", "ratio", "strategy", "seed"]
MIXUP_TYPES = ("mixup", "nonlinear_mixup")
"""Strategies whose cost depends on ``mix_samples`` and ``mixup_variant``."""

DASH = "—"
SIGNIFICANCE_LEVEL = 0.05
FEW_SEEDS = 5
"""Below this many paired seeds a t-test result is only called indicative."""


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
    """Paper ratios first (1.0, 0.75, 0.5, 0.25, 0.01), then any others descending."""
    present = sorted(set(values), reverse=True)
    known = [r for r in paper.RATIOS if any(math.isclose(r, v) for v in present)]
    others = [v for v in present if not any(math.isclose(r, v) for r in paper.RATIOS)]
    return known + others


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


# --------------------------------------------------------------------------- selections


def final_phase(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs of the final phase (tag phase=final or missing), any status."""
    return runs[runs["phase"] != "search"]


def search_phase(runs: pd.DataFrame) -> pd.DataFrame:
    """Hyperparameter-search trials (tag phase=search)."""
    return runs[runs["phase"] == "search"]


def finished_cells(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per cell with a usable final result, with ``accuracy_pct`` added.

    Keeps final-phase runs with status FINISHED and an ``accuracy`` metric. If a cell
    (task, ratio, strategy, seed) has several such runs, the latest started one is kept.
    """
    runs = final_phase(runs)
    done = runs[(runs["status"] == "FINISHED") & runs["final.accuracy"].notna()]
    done = done.sort_values("start_time").drop_duplicates(CELL_KEY, keep="last")
    return done.assign(accuracy_pct=done["final.accuracy"] * 100.0)


def duplicate_cells(runs: pd.DataFrame) -> pd.DataFrame:
    """Cells with more than one finished final-phase run (only the latest one is used)."""
    runs = final_phase(runs)
    done = runs[(runs["status"] == "FINISHED") & runs["final.accuracy"].notna()]
    counts = done.groupby(CELL_KEY).size().rename("runs").reset_index()
    return counts[counts["runs"] > 1]


# --------------------------------------------------------------------------- Table 1


def table1(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std (ddof=1) of final test accuracy (%) per (ratio, strategy, task).

    The grid is every task, ratio and strategy that appears in a final-phase run (whatever its
    status), so cells without a finished run appear with ``n = 0``. Columns: task, ratio,
    strategy, n, mean, std (NaN when n < 2), seeds, paper_mean, paper_std, diff (ours − paper,
    percentage points), best (highest mean for its (ratio, task) among at least two strategies).
    """
    grid_runs = final_phase(runs)
    cells = finished_cells(runs)
    rows = []
    for ratio in ordered_ratios(grid_runs["ratio"]):
        for strategy in ordered_strategies(grid_runs["strategy"]):
            for task in ordered_tasks(grid_runs["task"]):
                mask = (
                    np.isclose(cells["ratio"], ratio)
                    & (cells["strategy"] == strategy)
                    & (cells["task"] == task)
                )
                values = cells.loc[mask, "accuracy_pct"]
                seeds = ordered_seeds(cells.loc[mask, "seed"])
                ref = paper.paper_cell(ratio, strategy, task)
                n = int(values.size)
                mean = float(values.mean()) if n else math.nan
                rows.append(
                    {
                        "task": task,
                        "ratio": ratio,
                        "strategy": strategy,
                        "n": n,
                        "mean": mean,
                        "std": float(values.std(ddof=1)) if n >= 2 else math.nan,
                        "seeds": " ".join(seeds),
                        "paper_mean": ref[0] if ref else math.nan,
                        "paper_std": ref[1] if ref else math.nan,
                        "diff": mean - ref[0] if ref and n else math.nan,
                    }
                )
    table = pd.DataFrame(
        rows,
        columns=[
            "task",
            "ratio",
            "strategy",
            "n",
            "mean",
            "std",
            "seeds",
            "paper_mean",
            "paper_std",
            "diff",
        ],
    )
    table["best"] = False
    for _, group in table[table["n"] > 0].groupby(["task", "ratio"]):
        if len(group) >= 2:
            top = group["mean"].max()
            table.loc[group.index[np.isclose(group["mean"], top)], "best"] = True
    return table


def format_mean_std(mean: float, std: float, n: int) -> str:
    """ "mean ± std (n)" in percent with two decimals; "—" without data, "± —" for n = 1."""
    if n == 0 or math.isnan(mean):
        return DASH
    std_text = DASH if math.isnan(std) else f"{std:.2f}"
    return f"{mean:.2f} ± {std_text} ({n})"


def _format_signed(value: float) -> str:
    return DASH if math.isnan(value) else f"{value:+.2f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Render a GitHub-flavoured markdown table (cells must not contain ``|``)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def table1_markdown(table: pd.DataFrame) -> str:
    """Table 1 as markdown: per task our cell, the paper's cell and the difference."""
    tasks = list(dict.fromkeys(table["task"]))
    headers = ["Training data", "System"]
    for task in tasks:
        headers.append(f"{task} (ours)")
        if task in paper.TASKS:
            headers += [f"{task} (paper)", f"{task} Δ"]
    rows: list[list[str]] = []
    for (ratio, strategy), group in table.groupby(["ratio", "strategy"], sort=False):
        row = [format_ratio(ratio), strategy]
        by_task = group.set_index("task")
        for task in tasks:
            cell = by_task.loc[task]
            text = format_mean_std(cell["mean"], cell["std"], int(cell["n"]))
            row.append(f"**{text}**" if cell["best"] else text)
            if task in paper.TASKS:
                ref = (
                    DASH
                    if math.isnan(cell["paper_mean"])
                    else f"{cell['paper_mean']:.2f} ± {cell['paper_std']:.2f}"
                )
                row += [ref, _format_signed(cell["diff"])]
        rows.append(row)
    if table.empty:
        return "_No final-phase cell runs._"
    if any(task in paper.TASKS for task in tasks):
        baseline = ["—", "random/majority (paper)"]
        for task in tasks:
            baseline.append(DASH)
            if task in paper.TASKS:
                baseline += [f"{paper.BASELINE[task]:.2f}", ""]
        rows.append(baseline)
    return markdown_table(headers, rows)


# --------------------------------------------------------------------------- paired tests


def paired_verdict(n: int, mean_diff: float, p_value: float) -> str:
    """Plain-language reading of a paired comparison, careful about few seeds."""
    if n == 0:
        return "no paired seeds"
    if n == 1:
        return "n=1 paired seed: no test possible"
    if math.isnan(p_value):
        return f"n={n} paired seeds: all differences equal, t-test undefined"
    if p_value < SIGNIFICANCE_LEVEL:
        direction = "higher" if mean_diff > 0 else "lower"
        text = f"batchmixup {direction} (p={p_value:.3f}, n={n})"
        if n < FEW_SEEDS:
            text += "; few seeds, treat as indicative"
        return text
    if n < FEW_SEEDS:
        return f"n={n} paired seeds: cannot establish significance (p={p_value:.2f})"
    return f"no significant difference (p={p_value:.2f}, n={n})"


def paired_comparison(
    runs: pd.DataFrame, challenger: str = "batchmixup", baselines: Sequence[str] = ("none", "mixup")
) -> pd.DataFrame:
    """Compare ``challenger`` with each baseline per (task, ratio), pairing runs by seed.

    Runs with the same seed share the training subset, so the per-seed differences
    (challenger − baseline, percentage points) are tested with a two-sided paired t-test.
    Columns: task, ratio, baseline, n, mean_diff, sd_diff, wins, losses, ties, t, p_value,
    verdict. ``t`` and ``p_value`` are NaN for n < 2 or when all differences are equal.
    """
    cells = finished_cells(runs)
    columns = [
        "task",
        "ratio",
        "baseline",
        "n",
        "mean_diff",
        "sd_diff",
        "wins",
        "losses",
        "ties",
        "t",
        "p_value",
        "verdict",
    ]
    rows = []
    for task in ordered_tasks(cells["task"]):
        for ratio in ordered_ratios(cells.loc[cells["task"] == task, "ratio"]):
            here = cells[(cells["task"] == task) & np.isclose(cells["ratio"], ratio)]
            by_seed = here.pivot(index="seed", columns="strategy", values="accuracy_pct")
            if challenger not in by_seed.columns:
                continue
            for baseline in baselines:
                if baseline not in by_seed.columns:
                    continue
                pairs = by_seed[[challenger, baseline]].dropna()
                diffs = (pairs[challenger] - pairs[baseline]).to_numpy(dtype=float)
                n = int(diffs.size)
                t_stat, p_value = math.nan, math.nan
                if n >= 2 and np.ptp(diffs) > 0:
                    result = stats.ttest_rel(pairs[challenger], pairs[baseline])
                    t_stat, p_value = float(result.statistic), float(result.pvalue)
                mean_diff = float(diffs.mean()) if n else math.nan
                rows.append(
                    {
                        "task": task,
                        "ratio": ratio,
                        "baseline": baseline,
                        "n": n,
                        "mean_diff": mean_diff,
                        "sd_diff": float(diffs.std(ddof=1)) if n >= 2 else math.nan,
                        "wins": int((diffs > 0).sum()),
                        "losses": int((diffs < 0).sum()),
                        "ties": int((diffs == 0).sum()),
                        "t": t_stat,
                        "p_value": p_value,
                        "verdict": paired_verdict(n, mean_diff, p_value),
                    }
                )
    return pd.DataFrame(rows, columns=columns)


def paired_markdown(table: pd.DataFrame, challenger: str = "batchmixup") -> str:
    """The paired comparison as markdown."""
    headers = ["Task", "Training data", "vs", "mean Δ (pp)", "wins/n", "t", "p", "reading"]
    rows = []
    for _, r in table.iterrows():
        rows.append(
            [
                r["task"],
                format_ratio(r["ratio"]),
                r["baseline"],
                _format_signed(r["mean_diff"]),
                f"{r['wins']}/{r['n']}",
                DASH if math.isnan(r["t"]) else f"{r['t']:.2f}",
                DASH if math.isnan(r["p_value"]) else f"{r['p_value']:.3f}",
                r["verdict"],
            ]
        )
    return (
        markdown_table(headers, rows)
        if rows
        else f"_No cell has both {challenger} and a baseline._"
    )


# --------------------------------------------------------------------------- efficiency


def _param(runs: pd.DataFrame, name: str) -> pd.Series:
    column = f"param.{name}"
    if column in runs.columns:
        return runs[column].fillna("").astype(str)
    return pd.Series("", index=runs.index, dtype=object)


def efficiency(runs: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """Mean seconds per epoch per (task, ratio, strategy, mixup_variant, mix_samples).

    Uses every epoch of every FINISHED final-phase run (pooled over seeds). ``mixup_variant``
    and ``mix_samples`` are part of the key only for mixup and nonlinear_mixup (empty
    otherwise), so faithful and shared-forward runs are separate rows. ``ratio_to_none`` divides
    by the ``none`` row of the same (task, ratio); ``paper_ratio`` is the paper's claim
    (≈1× for batchmixup, ≈20/1.5 for pairwise mixup with 15 samples, else NaN).
    """
    columns = [
        "task",
        "ratio",
        "strategy",
        "mixup_variant",
        "mix_samples",
        "runs",
        "epochs",
        "mean_epoch_seconds",
        "mean_examples_per_second",
        "ratio_to_none",
        "paper_ratio",
        "hardware",
    ]
    done = final_phase(runs)
    done = done[done["status"] == "FINISHED"]
    algorithm = _algorithm(done)
    is_mixup = algorithm.isin(MIXUP_TYPES)
    keyed = done[["run_id", "task", "ratio", "strategy", "hardware"]].assign(
        algorithm=algorithm,
        mixup_variant=_param(done, "mixup_variant").where(is_mixup, ""),
        mix_samples=_param(done, "mix_samples").where(is_mixup, ""),
    )
    epochs = history[history["key"].isin(["epoch_seconds", "examples_per_second"])]
    wide = epochs.pivot_table(index=["run_id", "step"], columns="key", values="value")
    wide = wide.reset_index()
    for key in ("epoch_seconds", "examples_per_second"):
        if key not in wide.columns:
            wide[key] = math.nan
    merged = keyed.merge(wide, on="run_id", how="inner")
    merged = merged[merged["epoch_seconds"].notna()]
    key = ["task", "ratio", "strategy", "mixup_variant", "mix_samples"]
    rows = []
    for values, group in merged.groupby(key, sort=False):
        row = dict(zip(key, values, strict=True))
        row.update(
            algorithm=str(group["algorithm"].iloc[0]),
            runs=int(group["run_id"].nunique()),
            epochs=int(len(group)),
            mean_epoch_seconds=float(group["epoch_seconds"].mean()),
            mean_examples_per_second=float(group["examples_per_second"].mean()),
            hardware="; ".join(sorted(set(group["hardware"].replace("", "unknown")))),
        )
        rows.append(row)
    table = pd.DataFrame(rows, columns=[*columns, "algorithm"])
    if table.empty:
        return table[columns]
    none_rows = table[table["strategy"] == "none"].set_index(["task", "ratio"])
    table["ratio_to_none"] = [
        r.mean_epoch_seconds / none_rows.loc[(r.task, r.ratio), "mean_epoch_seconds"]
        if (r.task, r.ratio) in none_rows.index
        else math.nan
        for r in table.itertuples()
    ]
    table["paper_ratio"] = [_paper_ratio(r.algorithm, r.mixup_variant, r.mix_samples)
                            for r in table.itertuples()]
    return _sort_efficiency(table[columns])


def _paper_ratio(algorithm: str, variant: str, mix_samples: str) -> float:
    """The paper's epoch-time ratio for a row, or NaN where the paper's setting differs.

    The paper's ≈13× for (nonlinear) mixup is for 15 beta samples per pair, each its own
    update (``mixup_variant=faithful``); shared-forward rows get no paper value.
    """
    claim = paper.paper_time_ratio(algorithm)
    if claim is None:
        return math.nan
    if algorithm in MIXUP_TYPES and (mix_samples != str(paper.EFFICIENCY_MIX_SAMPLES)
                                     or variant not in ("faithful", "")):
        return math.nan
    return claim


def _algorithm(runs: pd.DataFrame) -> pd.Series:
    """The algorithm of each run (tag ``strategy``); the arm name for frames without it."""
    if "algorithm" in runs.columns:
        return runs["algorithm"].fillna(runs["strategy"]).astype(str)
    return runs["strategy"].astype(str)


def _sort_efficiency(table: pd.DataFrame) -> pd.DataFrame:
    tasks = ordered_tasks(table["task"])
    ratios = ordered_ratios(table["ratio"])
    strategies = ordered_strategies(table["strategy"])
    order = table.assign(
        _t=table["task"].map(tasks.index),
        _r=table["ratio"].map(
            lambda v: next(i for i, r in enumerate(ratios) if math.isclose(r, v))
        ),
        _s=table["strategy"].map(strategies.index),
    )
    order = order.sort_values(["_t", "_r", "_s", "mixup_variant", "mix_samples"])
    return order.drop(columns=["_t", "_r", "_s"]).reset_index(drop=True)


def efficiency_markdown(table: pd.DataFrame) -> str:
    """The efficiency table as markdown."""
    headers = [
        "Task",
        "Training data",
        "Strategy",
        "variant",
        "mix samples",
        "runs",
        "epochs",
        "s/epoch",
        "examples/s",
        "× none",
        "paper × none",
        "hardware",
    ]
    rows = []
    for _, r in table.iterrows():
        rows.append(
            [
                r["task"],
                format_ratio(r["ratio"]),
                r["strategy"],
                r["mixup_variant"] or DASH,
                r["mix_samples"] or DASH,
                str(r["runs"]),
                str(r["epochs"]),
                f"{r['mean_epoch_seconds']:.2f}",
                DASH
                if math.isnan(r["mean_examples_per_second"])
                else f"{r['mean_examples_per_second']:.1f}",
                DASH if math.isnan(r["ratio_to_none"]) else f"{r['ratio_to_none']:.2f}×",
                DASH if math.isnan(r["paper_ratio"]) else f"≈{r['paper_ratio']:.1f}×",
                r["hardware"],
            ]
        )
    return markdown_table(headers, rows) if rows else "_No epoch_seconds were logged._"


def hardware_counts(runs: pd.DataFrame) -> pd.DataFrame:
    """How many cell runs (both phases) reported each ``hardware`` tag."""
    hardware = runs["hardware"].replace("", "unknown")
    counts = hardware.value_counts().rename_axis("hardware").rename("runs").reset_index()
    return counts.sort_values(["runs", "hardware"], ascending=[False, True]).reset_index(drop=True)


# --------------------------------------------------------------------------- robustness


def failed_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Final-phase runs that did not produce a result, with their failure_reason.

    Includes FAILED, KILLED and RUNNING runs and FINISHED runs without an ``accuracy`` metric.
    ``superseded`` is True when another run of the same cell finished.
    """
    finals = final_phase(runs)
    bad = finals[(finals["status"] != "FINISHED") | finals["final.accuracy"].isna()]
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


def missing_cells(runs: pd.DataFrame) -> pd.DataFrame:
    """Cells of the sweep's grid without a finished final run.

    The grid is every combination of the tasks, ratios, strategies and seeds seen in final-phase
    runs. ``latest_status`` is the status of the cell's latest run, or "no run".
    """
    finals = final_phase(runs)
    done = finished_cells(runs)
    done_keys = set(zip(done["task"], done["ratio"], done["strategy"], done["seed"], strict=True))
    latest = finals.sort_values("start_time").drop_duplicates(CELL_KEY, keep="last")
    latest_status = {
        key: status
        for key, status in zip(
            zip(latest["task"], latest["ratio"], latest["strategy"], latest["seed"], strict=True),
            latest["status"],
            strict=True,
        )
    }
    rows = []
    for task in ordered_tasks(finals["task"]):
        for ratio in ordered_ratios(finals["ratio"]):
            for strategy in ordered_strategies(finals["strategy"]):
                for seed in ordered_seeds(finals["seed"]):
                    key = (task, ratio, strategy, seed)
                    if key not in done_keys:
                        rows.append(
                            {
                                "task": task,
                                "ratio": ratio,
                                "strategy": strategy,
                                "seed": seed,
                                "latest_status": latest_status.get(key, "no run"),
                            }
                        )
    return pd.DataFrame(rows, columns=["task", "ratio", "strategy", "seed", "latest_status"])


# --------------------------------------------------------------------------- search phase


def search_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Search trials per (task, ratio, strategy): counts, best val_accuracy, best trial's params.

    A trial's score is its ``val_accuracy`` at the last logged step. The best trial is the one
    orchestrator.search selected (tag ``chosen=true``) when a group has one, else the highest
    score. Columns: task, ratio, strategy, trials, finished, best_val_accuracy (%), best_trial,
    alpha, temperature (only for batchmixup, the one strategy that uses it).
    """
    columns = [
        "task",
        "ratio",
        "strategy",
        "trials",
        "finished",
        "best_val_accuracy",
        "best_trial",
        "alpha",
        "temperature",
    ]
    trials = search_phase(runs)
    trials = trials.assign(
        alpha=_param(trials, "alpha"),
        temperature=_param(trials, "temperature"),
    )
    rows = []
    for task in ordered_tasks(trials["task"]):
        for ratio in ordered_ratios(trials.loc[trials["task"] == task, "ratio"]):
            here = trials[(trials["task"] == task) & np.isclose(trials["ratio"], ratio)]
            for strategy in ordered_strategies(here["strategy"]):
                group = here[here["strategy"] == strategy]
                scored = group[group["final.val_accuracy"].notna()]
                row = {
                    "task": task,
                    "ratio": ratio,
                    "strategy": strategy,
                    "trials": len(group),
                    "finished": int((group["status"] == "FINISHED").sum()),
                    "best_val_accuracy": math.nan,
                    "best_trial": "",
                    "alpha": "",
                    "temperature": "",
                }
                chosen = scored[scored["chosen"] == "true"] if "chosen" in scored else scored[:0]
                if not scored.empty:
                    if chosen.empty:
                        best = scored.loc[scored["final.val_accuracy"].idxmax()]
                    else:
                        best = chosen.iloc[0]
                    row.update(
                        best_val_accuracy=float(best["final.val_accuracy"]) * 100.0,
                        best_trial=best["ray_trial_id"] or best["run_name"],
                        alpha=best["alpha"],
                        temperature=best["temperature"]
                        if _algorithm(group).iloc[0] == "batchmixup" else "",
                    )
                rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def search_markdown(table: pd.DataFrame) -> str:
    """The search summary as markdown."""
    headers = [
        "Task",
        "Training data",
        "Strategy",
        "trials",
        "finished",
        "best val acc (%)",
        "best trial",
        "alpha",
        "temperature",
    ]
    rows = []
    for _, r in table.iterrows():
        rows.append(
            [
                r["task"],
                format_ratio(r["ratio"]),
                r["strategy"],
                str(r["trials"]),
                str(r["finished"]),
                DASH if math.isnan(r["best_val_accuracy"]) else f"{r['best_val_accuracy']:.2f}",
                r["best_trial"] or DASH,
                r["alpha"] or DASH,
                r["temperature"] or DASH,
            ]
        )
    return markdown_table(headers, rows)


# --------------------------------------------------------------------------- curves


def accuracy_curves(
    runs: pd.DataFrame, history: pd.DataFrame, task: str, ratio: float
) -> pd.DataFrame:
    """Per-epoch test accuracy (%) of one (task, ratio), mean and std over seeds per strategy.

    Uses the finished cells of that (task, ratio). Columns: strategy, epoch, mean, std, n.
    """
    cells = finished_cells(runs)
    cells = cells[(cells["task"] == task) & np.isclose(cells["ratio"], ratio)]
    acc = history[(history["key"] == "accuracy") & history["run_id"].isin(cells["run_id"])]
    acc = acc.sort_values("timestamp").drop_duplicates(["run_id", "step"], keep="last")
    acc = acc.merge(cells[["run_id", "strategy"]], on="run_id")
    acc = acc.assign(value=acc["value"] * 100.0)
    grouped = acc.groupby(["strategy", "step"])["value"]
    curves = pd.DataFrame(
        {"mean": grouped.mean(), "std": grouped.std(ddof=1), "n": grouped.size()}
    ).reset_index()
    return curves.rename(columns={"step": "epoch"})
