"""Build the report of one BatchMixup sweep from what MLflow recorded.

Usage::

    python -m results.report --experiment NAME [--tracking-uri URI] [--out DIR]
                             [--curve-cell TASK/RATIO] [--no-log]

Reads the sweep's runs (one experiment per sweep, one run per cell tagged ``kind=cell``),
writes ``report.md``, CSV tables and PNG plots to DIR (default ``results/<experiment>/``) and
logs them as artifacts (under ``report/``) of the experiment's summary run (tag
``kind=summary``), which is created once and reused on later runs. The sweep calls
:func:`write_report` when it ends.

Nothing is written when the store, the experiment or its cell runs are missing: the CLI prints
one line on stderr and exits with status 2, so an earlier good report is never replaced by an
empty one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from results import figure1, paper, plots, tables
from results.runs import DEFAULT_TRACKING_URI, ReportError, SweepData, load_sweep
from results.uris import redact_uri

__all__ = ["ReportError", "build_report", "main", "write_report"]

ARTIFACT_DIR = "report"
SUMMARY_RUN_NAME = "summary"
REPORT_FILE = "report.md"
CSV_FILES = {
    "cells": "cells.csv",
    "table1": "table1.csv",
    "paired": "paired.csv",
    "efficiency": "efficiency.csv",
    "failed": "failed.csv",
    "missing": "missing.csv",
    "search": "search.csv",
}
PLOT_ACCURACY = "accuracy_vs_ratio.png"
PLOT_EPOCH_SECONDS = "epoch_seconds.png"


def default_out_dir(experiment: str) -> Path:
    """``results/<experiment>/`` relative to the working directory (path separators replaced)."""
    safe = experiment.replace("/", "_").replace("\\", "_")
    if safe in {"", ".", ".."}:
        safe = "_" + safe
    return Path("results") / safe


def parse_curve_cell(text: str) -> tuple[str, float]:
    """Parse ``task/ratio`` (e.g. ``rte/0.25``) for ``--curve-cell``."""
    task, sep, ratio = text.rpartition("/")
    try:
        value = float(ratio)
    except ValueError:
        value = math.nan
    if not sep or not task or math.isnan(value):
        raise ReportError(f"--curve-cell must look like TASK/RATIO (e.g. rte/0.25), got {text!r}")
    return task, value


def _default_curve_cell(table1: pd.DataFrame) -> tuple[str, float] | None:
    """First (task, ratio) with data, in task order then ratio order."""
    with_data = table1[table1["n"] > 0]
    for task in tables.ordered_tasks(with_data["task"]):
        ratios = tables.ordered_ratios(with_data.loc[with_data["task"] == task, "ratio"])
        if ratios:
            return task, ratios[0]
    return None


def _curve_file(task: str, ratio: float) -> str:
    return f"curves_{task}_{ratio:g}.png"


def _markdown(
    data: SweepData,
    frames: dict[str, pd.DataFrame],
    accuracy_png: str | None,
    curve_cell: tuple[str, float] | None,
    curve_png: str | None,
    figure1_md: str | None = None,
) -> str:
    """Compose report.md from the computed tables (``figure1_md``: the toy2d section)."""
    runs = data.runs
    finals = tables.final_phase(runs)
    trials = tables.search_phase(runs)
    t1 = frames["table1"]
    status_counts = ", ".join(
        f"{status} {count}"
        for status, count in finals["status"].value_counts().sort_index().items()
    )
    sweeps = ", ".join(sorted(set(runs["sweep"]) - {""})) or "—"
    commits = ", ".join(sorted(set(runs["git_commit"]) - {""})) or "—"
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out: list[str] = [
        f"# BatchMixup sweep report: {data.experiment}",
        "",
        f"- Generated {now} from MLflow `{redact_uri(data.tracking_uri)}`, "
        f"experiment id {data.experiment_id}.",
        f"- Final-phase cell runs: {len(finals)} ({status_counts or 'none'}); "
        f"finished cells used: {int(t1['n'].sum())}; search trials: {len(trials)}.",
        f"- Sweep tag(s): {sweeps}. Git commit(s): {commits}.",
        "- Hardware (all cell runs, search included): "
        + "; ".join(f"{r.hardware} ({r.runs} runs)" for r in frames["hardware"].itertuples()),
        "",
        *([figure1_md, ""] if figure1_md else []),
        "## Table 1: test accuracy (%)",
        "",
        "Final test accuracy = the `accuracy` metric at a run's last epoch, ×100. Each cell is "
        "mean ± sample std (ddof=1) over seeds, with the number of seeds in parentheses; with a "
        "single seed the std is shown as —; a cell without a finished run is —. Bold: best mean "
        "of its (training data, task) when at least two strategies have data. "
        "Paper: " + paper.CITATION + " Δ = ours − paper (percentage points).",
        "",
        tables.table1_markdown(t1),
        "",
        "## Does batchmixup beat none and mixup? (paired by seed)",
        "",
        "Runs with the same seed share the training subset, so batchmixup and each baseline are "
        "compared seed by seed: mean difference (percentage points), seeds won, and a two-sided "
        "paired t-test. With a handful of seeds the test has little power; a large p-value "
        "means 'not established', not 'no effect'.",
        "",
        tables.paired_markdown(frames["paired"]),
        "",
        "## Efficiency: seconds per epoch",
        "",
        "Mean `epoch_seconds` over all epochs and seeds of finished final-phase runs; "
        "mixup-type rows are split by `mixup_variant` and `mix_samples`. × none = ratio to "
        "`none` at the same task and training data. Paper claim (Section 5): on one "
        f"{paper.EFFICIENCY_HARDWARE}, an RTE epoch takes about 1.5 min for RoBERTa-large and "
        "for BatchMixup, and about 20 min for MIXUP and Nonlinear MIXUP with "
        f"{paper.EFFICIENCY_MIX_SAMPLES} β samples per pair (≈13×); the paper column is shown "
        "only where the strategy (and sample count) matches that claim. Ratios are comparable "
        "only between rows on the same hardware.",
        "",
        tables.efficiency_markdown(frames["efficiency"]),
        "",
        "## Plots",
        "",
    ]
    if accuracy_png:
        out += [f"![accuracy vs training data]({accuracy_png})", ""]
    else:
        out += ["_No finished final-phase cells: no accuracy plot._", ""]
    if (frames["efficiency"]).empty:
        out += ["_No epoch_seconds logged: no epoch-time plot._", ""]
    else:
        out += [f"![seconds per epoch]({PLOT_EPOCH_SECONDS})", ""]
    if curve_png and curve_cell:
        out += [
            f"Per-epoch test accuracy for {curve_cell[0]} at "
            f"{tables.format_ratio(curve_cell[1])} (mean ± std over seeds):",
            "",
            f"![accuracy per epoch]({curve_png})",
            "",
        ]
    elif curve_cell:
        out += [f"_No accuracy history for {curve_cell[0]}/{curve_cell[1]:g}: no curve plot._", ""]

    failed = frames["failed"]
    out += ["## Failed or incomplete runs", ""]
    if failed.empty:
        out += ["None.", ""]
    else:
        rows = [
            [
                r.run_name,
                r.status,
                (r.failure_reason or "—").replace("|", "/").replace("\n", " "),
                "yes" if r.superseded else "no",
            ]
            for r in failed.itertuples()
        ]
        out += [
            tables.markdown_table(["Cell", "Status", "Reason", "Finished on rerun"], rows),
            "",
        ]

    missing = frames["missing"]
    out += [
        "## Cells without a finished run",
        "",
        "Grid: every task × training data × strategy × seed seen in final-phase runs.",
        "",
    ]
    if missing.empty:
        out += ["None: the grid is complete.", ""]
    else:
        rows = [
            [r.task, tables.format_ratio(r.ratio), r.strategy, r.seed, r.latest_status]
            for r in missing.itertuples()
        ]
        out += [
            tables.markdown_table(
                ["Task", "Training data", "Strategy", "Seed", "Latest run"], rows
            ),
            "",
        ]

    out += ["## Search phase", ""]
    if frames["search"].empty:
        out += ["No search trials (tag phase=search) in this experiment.", ""]
    else:
        out += [
            "Hyperparameter-search trials (tag phase=search) are kept out of every table above. "
            "A trial's score is its `val_accuracy` at its last epoch.",
            "",
            tables.search_markdown(frames["search"]),
            "",
        ]

    notes = list(data.notes)
    dups = tables.duplicate_cells(runs)
    for r in dups.itertuples():
        notes.append(
            f"{r.task}/{r.ratio:g}/{r.strategy}/{r.seed} has {r.runs} finished runs; "
            "the latest one is used."
        )
    eff = frames["efficiency"]
    for (task, ratio), group in eff.groupby(["task", "ratio"], sort=False):
        hardware = sorted(set("; ".join(group["hardware"]).split("; ")))
        if len(hardware) > 1:
            notes.append(
                f"{task}/{ratio:g}: epoch times come from different hardware "
                f"({', '.join(hardware)}); its × none ratios are not like-for-like."
            )
    if notes:
        out += ["## Notes", ""] + [f"- {note}" for note in notes] + [""]
    out += [
        "## Files",
        "",
        ", ".join(f"`{name}`" for name in CSV_FILES.values())
        + " hold the tables above (accuracies in %, `cells.csv` holds one row per run).",
        "",
    ]
    if figure1_md:
        out[-1:-1] = [
            f"`{figure1.TABLE_CSV}` holds the Figure 1 accuracy table; `{figure1.FIGURE_PNG}` "
            f"and `{figure1.ACCURACY_PNG}` are its plots.",
            "",
        ]
    return "\n".join(out)


def build_report(
    data: SweepData,
    out_dir: Path,
    curve_cell: tuple[str, float] | None = None,
    figure1_seed: str | None = None,
) -> list[Path]:
    """Write report.md, CSVs and PNGs for ``data`` into ``out_dir``; return the files written.

    report.md is the first path returned. When the experiment has toy2d runs, the Figure 1
    section and its files (see :mod:`results.figure1`; ``figure1_seed`` picks the seed drawn)
    are added.
    """
    runs, history = data.runs, data.history
    frames: dict[str, pd.DataFrame] = {
        "table1": tables.table1(runs),
        "paired": tables.paired_comparison(runs),
        "efficiency": tables.efficiency(runs, history),
        "failed": tables.failed_runs(runs),
        "missing": tables.missing_cells(runs),
        "search": tables.search_summary(runs),
        "hardware": tables.hardware_counts(runs),
    }
    frames["cells"] = runs.drop(columns=["start_time"]).assign(
        **{"final.accuracy_pct": runs["final.accuracy"] * 100.0}
    )
    if curve_cell is None:
        curve_cell = _default_curve_cell(frames["table1"])

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for key, name in CSV_FILES.items():
        path = out_dir / name
        frames[key].to_csv(path, index=False)
        written.append(path)

    accuracy_png: str | None = None
    if (frames["table1"]["n"] > 0).any():
        accuracy_png = PLOT_ACCURACY
        written.append(plots.plot_accuracy_vs_ratio(frames["table1"], out_dir / accuracy_png))
    if not frames["efficiency"].empty:
        written.append(plots.plot_epoch_seconds(frames["efficiency"], out_dir / PLOT_EPOCH_SECONDS))
    curve_png: str | None = None
    if curve_cell is not None:
        curves = tables.accuracy_curves(runs, history, *curve_cell)
        if not curves.empty:
            curve_png = _curve_file(*curve_cell)
            written.append(
                plots.plot_accuracy_curves(
                    curves, curve_cell[0], curve_cell[1], out_dir / curve_png
                )
            )

    figure1_md: str | None = None
    if figure1.has_toy2d(runs):
        section = figure1.build_figure1(data, out_dir, figure1_seed)
        figure1_md = section.markdown
        written.extend(section.files)

    report = out_dir / REPORT_FILE
    text = _markdown(data, frames, accuracy_png, curve_cell, curve_png, figure1_md)
    report.write_text(text, encoding="utf-8")
    return [report, *written]


def log_to_summary_run(data: SweepData, files: Sequence[Path]) -> str:
    """Log ``files`` under ``report/`` of the experiment's summary run; return its run id.

    The summary run (tag ``kind=summary``) is created on the first call and reused afterwards;
    its previous ``report/`` artifacts are deleted first where the artifact store allows it
    (otherwise same-named files are overwritten).
    """
    client = MlflowClient(tracking_uri=data.tracking_uri)
    run_id = data.summary_run_id
    if run_id is None:
        run = client.create_run(
            data.experiment_id,
            run_name=SUMMARY_RUN_NAME,
            tags={"kind": "summary", "sweep": data.experiment},
        )
        run_id = run.info.run_id
    else:
        run = client.get_run(run_id)
        try:
            get_artifact_repository(run.info.artifact_uri).delete_artifacts(ARTIFACT_DIR)
        except (NotImplementedError, OSError, MlflowException):
            pass  # the store cannot delete: same-named files are overwritten below
    for path in files:
        client.log_artifact(run_id, str(path), ARTIFACT_DIR)
    finals = tables.final_phase(data.runs)
    client.set_tag(run_id, "report_cells_finished", str(len(tables.finished_cells(data.runs))))
    client.set_tag(run_id, "report_cells_total", str(len(finals)))
    client.set_terminated(run_id, "FINISHED")
    return run_id


def write_report(
    experiment: str,
    tracking_uri: str | None = None,
    out_dir: Path | None = None,
    curve_cell: tuple[str, float] | None = None,
    log_artifacts: bool = True,
    figure1_seed: str | None = None,
) -> Path:
    """Read ``experiment``, write the report files and log them to the summary run.

    ``tracking_uri`` None means $MLFLOW_TRACKING_URI, else ``sqlite:///mlflow.db``; ``out_dir``
    None means ``results/<experiment>/``. Returns the path of report.md. Raises ReportError,
    before writing anything, for a missing store, an unknown experiment or one without cell
    runs. ``figure1_seed``: the seed of the Figure 1 panels (toy2d experiments only; None =
    seed 0, or ``"median"``).
    """
    data = load_sweep(experiment, tracking_uri)
    files = build_report(
        data, out_dir or default_out_dir(experiment), curve_cell, figure1_seed=figure1_seed
    )
    if log_artifacts:
        log_to_summary_run(data, files)
    return files[0]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m results.report",
        description=(
            "Report of one BatchMixup sweep, read only from MLflow. Writes report.md (Table 1 "
            "vs the paper with mean ± std over seeds, paired batchmixup-vs-baseline tests, "
            "epoch-time efficiency vs the paper's claim, failed and missing cells, a separate "
            "search-phase summary), CSV tables (cells, table1, paired, efficiency, failed, "
            "missing, search) and PNG plots (accuracy vs training data, seconds per epoch, "
            "per-epoch accuracy curves) to --out, and logs them as artifacts of the "
            "experiment's summary run (tag kind=summary, reused on reruns)."
        ),
        epilog=(
            "Exit status: 0 on success; 2 with a one-line message on stderr when the store, "
            "the experiment or its cell runs are missing (nothing is written then, so an "
            "earlier report is kept)."
        ),
    )
    parser.add_argument("--experiment", required=True, help="MLflow experiment name of the sweep.")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help=(
            "MLflow tracking URI. Default: $MLFLOW_TRACKING_URI if set, else "
            f"{DEFAULT_TRACKING_URI} (mlflow.db in the current directory)."
        ),
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="Output directory. Default: results/<experiment>/.",
    )
    parser.add_argument(
        "--curve-cell",
        default=None,
        metavar="TASK/RATIO",
        help=(
            "(task, training ratio) whose per-epoch accuracy curves are plotted, e.g. rte/0.25. "
            "Default: the first task/ratio with finished runs."
        ),
    )
    parser.add_argument(
        "--figure1-seed",
        default=None,
        metavar="SEED|median",
        help=(
            "Seed whose decision boundaries the Figure 1 panels draw (experiments with toy2d "
            "runs only). Default: 0. 'median': the seed whose batchmixup − none accuracy "
            "difference is the median over seeds."
        ),
    )
    parser.add_argument(
        "--no-log",
        action="store_true",
        help="Only write files; do not log them to the summary run.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        curve_cell = parse_curve_cell(args.curve_cell) if args.curve_cell else None
        report = write_report(
            args.experiment,
            args.tracking_uri,
            args.out,
            curve_cell=curve_cell,
            log_artifacts=not args.no_log,
            figure1_seed=args.figure1_seed,
        )
    except ReportError as exc:
        print(f"results.report: error: {exc}", file=sys.stderr)
        return 2
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
