"""Build the report of one BatchMixup sweep from what MLflow recorded.

Usage::

    python -m results.report --experiment NAME [--tracking-uri URI] [--out DIR]
                             [--curve-cell TASK/RATIO] [--no-log]

Reads the sweep's runs (one experiment per sweep, one run per cell tagged ``kind=cell``; per
(task, ratio, arm) only its current configuration, see :mod:`results.configs`), writes
``report.md`` (Setup, Table 1, training budget, paired comparisons, efficiency, plots, failures,
other configurations, search phase), ``report.html`` (the same with the plots inline), CSV
tables and PNG plots to DIR (default ``results/<experiment>/``) and logs them under ``report/``
of the experiment's summary run (tag ``kind=summary``, created by the sweep at launch or here,
reused on later runs), with Table 1, the paired, budget and efficiency tables as MLflow tables,
counts as metrics and Table 1 as the run's description. The sweep calls :func:`write_report`
when it ends. How every number is computed: ``docs/report.md``.

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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, RunTag
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from results import (
    calibration,
    configs,
    efficiency,
    figure1,
    html,
    paired,
    paper,
    plots,
    stats,
    tables,
)
from results import setting as setting_mod
from results.runs import (
    DEFAULT_TRACKING_URI,
    ReportError,
    SweepData,
    load_sweep,
    read_predictions,
)
from results.uris import redact_text, redact_uri

__all__ = ["ReportError", "build_report", "main", "write_report"]

ARTIFACT_DIR = "report"
TABLES_DIR = "report/tables"
SUMMARY_RUN_NAME = "summary"
REPORT_FILE = "report.md"
REPORT_HTML = "report.html"
CSV_FILES = {
    "cells": "cells.csv",
    "table1": "table1.csv",
    "paper_reference": "paper_reference.csv",
    "budget": "budget.csv",
    "paired": "paired.csv",
    "efficiency": "efficiency.csv",
    "calibration": "calibration.csv",
    "calibration_paired": "calibration_paired.csv",
    "failed": "failed.csv",
    "missing": "missing.csv",
    "configurations": "configurations.csv",
    "search": "search.csv",
}
MLFLOW_TABLES = ("table1", "paired", "budget", "efficiency")
"""Frames also logged with ``MlflowClient.log_table`` (under ``report/tables/``)."""
PLOT_ACCURACY = "accuracy_vs_ratio.png"
PLOT_EPOCH_SECONDS = "epoch_seconds.png"
PLOT_CURVES = "accuracy_curves.png"
NOTE_TAG = "mlflow.note.content"
"""The run description the MLflow UI renders as markdown on the run's page."""
NOTE_LIMIT = 8000
"""MLflow's limit on a tag value."""


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


def _curve_file(task: str, ratio: float) -> str:
    return f"curves_{task}_{ratio:g}.png"


@dataclass
class Report:
    """Everything computed for one report (frames are also the CSVs)."""

    data: SweepData
    runs: pd.DataFrame
    frames: dict[str, pd.DataFrame]
    setting: setting_mod.Setting
    pngs: set[str] = field(default_factory=set)
    figure1_md: str | None = None
    curve_cell: tuple[str, float] | None = None


# --------------------------------------------------------------------------- sections


def _header(report: Report) -> list[str]:
    """Title and where the numbers come from."""
    data, runs = report.data, report.runs
    finals = tables.current_final(runs)
    status = ", ".join(f"{s} {c}" for s, c in finals["status"].value_counts().sort_index().items())
    finished = len(tables.finished_cells(runs))
    sweeps = ", ".join(sorted(set(runs["sweep"]) - {""})) or "—"
    commits = ", ".join(sorted(set(finals["git_commit"]) - {""})) or "—"
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        f"# BatchMixup sweep report: {data.experiment}",
        "",
        f"- Generated {now} from MLflow `{redact_uri(data.tracking_uri)}`, experiment id "
        f"{data.experiment_id}.",
        f"- Final-phase runs of the current configurations: {len(finals)} ({status or 'no runs'}); "
        f"finished cells used: {finished}; search trials: {len(tables.search_phase(runs))}.",
        f"- Sweep tag(s): {sweeps}. Git commit(s): {commits}.",
        f"- In the MLflow UI, whose markdown viewer shows no images, open `{REPORT_HTML}` "
        "(this report with its plots inline) or the PNGs beside this file.",
    ]
    manifest = data.manifest
    if manifest:
        launched = dt.datetime.fromtimestamp(float(manifest.get("launched", 0)), dt.timezone.utc)
        out.append(f"- Latest launch ({launched:%Y-%m-%d %H:%M UTC}, {len(manifest['cells'])} "
                   f"cells): `{manifest.get('command') or 'command not recorded'}`.")
    else:
        out.append("- No launch manifest on the summary run: each (task, ratio, arm) shows the "
                   "configuration of its latest-started run.")
    return out + [""]


def _table1_section(report: Report) -> list[str]:
    """Table 1, the metric it uses, and the paper's numbers (matched or as reference)."""
    t1 = report.frames["table1"]
    cells = tables.finished_cells(report.runs)
    name = tables.accuracy_name(cells) if not cells.empty else "test accuracy"
    kinds = tables.metric_kinds(cells) if not cells.empty else []
    out = [
        f"## Table 1: {name} (%)",
        "",
        "Each cell is the mean ± sample std (ddof=1) over seeds of "
        + "; ".join(tables.METRIC_LABELS[k] for k in kinds or [tables.METRIC_TEST])
        + ", ×100, with the number of seeds in parentheses (a single seed shows ± —; no "
        "finished run: —). Updates: optimizer updates up to the selected epoch / in all, mean "
        "over seeds. No winner is marked here: the paired comparisons below say which "
        "differences the seeds and test examples support.",
        "",
    ]
    if tables.METRIC_TEST_LAST in kinds:
        out += ["Some runs predate `test_accuracy` (the selected epoch's): their value is the "
                "last epoch's `accuracy`.", ""]
    out += [tables.table1_markdown(t1), ""]
    if t1["paper_setting"].any():
        out += [f"Paper: {paper.CITATION} Δ = ours − paper (percentage points), only for "
                f"groups that ran the paper's setting ({paper.SETTING_LONG}).", ""]
    reference = report.frames["paper_reference"]
    if not reference.empty:
        out += [
            f"### Paper, Table 1 ({paper.SETTING}; not this setting)",
            "",
            f"Reference only: {paper.SETTING_LONG}, mean ± std over three seeds. These runs "
            "used another setting (see Setup), so no Δ is computed against these numbers.",
            "",
            tables.paper_reference_markdown(reference),
            "",
        ]
    return out


def _budget_section(report: Report) -> list[str]:
    table = report.frames["budget"]
    out = [
        "## Training budget",
        "",
        "Per task × training data × arm over its finished seeds: the budget as configured "
        "(epochs, `min_updates`, epoch selection and patience), then what the runs did: epochs "
        "run, optimizer updates made, the selected epoch and the updates up to it (ranges over "
        "seeds), seeds stopped early, and seeds converged (validation score no better for "
        "`patience` epochs before the end; assessed only with `selection=best_val` and "
        "patience > 0). An arm with more updates may score higher for that reason alone: read "
        "accuracy differences next to these counts.",
        "",
        tables.budget_markdown(table),
        "",
    ]
    flagged = table[table["unconverged"] > 0] if not table.empty else table
    if not flagged.empty:
        names = ", ".join(f"{r.task}/{tables.format_ratio(r.ratio)}/{r.strategy}"
                          f" ({r.unconverged} of {r.assessed})" for r in flagged.itertuples())
        out += [f"⚠ Unconverged: {names}. Their accuracy may still have been rising when the "
                "budget ended.", ""]
    return out


def _paired_section(report: Report) -> list[str]:
    table = report.frames["paired"]
    tested, t_family, boot_family = paired.family_sizes(table)
    significant = int(table["verdict"].str.endswith(("higher", "lower")).sum()) \
        if not table.empty else 0
    return [
        "## Paired comparisons",
        "",
        "Per task and training data: every arm against the baseline that does not mix (the "
        "first arm of family `unmixed`), and every arm that mixes the whole batch against "
        "every pairwise one (families as each run's `strategy_family` tag records them), "
        "paired by seed (same seed = same training subset and "
        "validation split). Per-seed Δ: difference of the integer correct counts over the "
        "shared test set. Mean Δ with a 95 % t-interval over seeds; a paired t-test over seeds "
        f"only with ≥ {stats.MIN_SEEDS} seeds whose differences vary; beside it a paired "
        f"bootstrap over seeds and test examples ({stats.BOOTSTRAP_RESAMPLES:,} resamples, "
        f"seed {stats.BOOTSTRAP_SEED}) from each run's `test_predictions.json`, with its 95 % "
        f"percentile interval. No test and no verdict with fewer than {stats.MIN_SEEDS} "
        "paired seeds.",
        "",
        f"Multiple comparisons: {tested} comparison(s) tested; Holm-Bonferroni adjusted "
        f"p-values are shown after each raw p, over the {t_family} t-test(s) and over the "
        f"{boot_family} bootstrap(s) of this report. A reading names a direction only where "
        f"every test the comparison has gives an adjusted p < {stats.ALPHA} ({significant} "
        "here); where the differences are identical over seeds the t-test is undefined and "
        "the bootstrap decides. The updates column gives both arms' optimizer updates up to "
        "their selected epochs (mean over the paired seeds): more updates alone can make an "
        "arm better. Details: docs/report.md.",
        "",
        paired.paired_markdown(table),
        "",
        *_power_section(table),
    ]


def _power_section(table: pd.DataFrame) -> list[str]:
    """What the comparisons could detect, the seeds a sweep would need, the paper's claimed
    differences tested, and equivalence readings."""
    if table.empty:
        return []
    margin = float(table["margin"].iloc[0])
    claimed = int(table["p_claim_t"].notna().sum() + table["p_claim_boot"].notna().sum())
    tost = int(table["p_tost_t"].notna().sum() + table["p_tost_boot"].notna().sum())
    return [
        "### Power, the paper's claim, equivalence",
        "",
        f"Detectable Δ: the smallest true difference each test would detect with "
        f"{100 * stats.POWER:.0f} % power at two-sided α = {stats.ALPHA} before the "
        "multiple-comparison adjustment (a lower bound for the report's rule), from the "
        "observed spread: the t-test's from the sd of the per-seed differences, "
        "(t₀.₉₇₅ + t₀.₈₀) sd / √n; the bootstrap's from its standard error, "
        "(z₀.₉₇₅ + z₀.₈₀) SE. Seeds for 1 pp and for the "
        "paper's Δ: the fewest paired seeds whose t-test would reach that power if the "
        "per-seed sd stayed as observed. Paper's claim: where the paper's Table 1 has both "
        "arms' algorithms at this task and ratio, H0 \"the difference is at least the "
        "paper's (in its direction)\" is tested one-sided by t-test and bootstrap (Holm over "
        f"the report's {claimed} claim tests); \"excluded\" needs every test to reject. The "
        "claim is tested in this setting, which the Setup section compares with the paper's. "
        f"Equivalence (TOST, two one-sided tests of H0 |Δ| ≥ {margin:g} pp; Holm over the "
        f"report's {tost}; `--equivalence-margin` sets δ): \"within ±{margin:g} pp\" needs "
        "every test to reject.",
        "",
        paired.power_markdown(table),
        "",
    ]


def _calibration_section(report: Report) -> list[str]:
    return [
        "## Calibration",
        "",
        "Of each cell's selected-epoch test probabilities (`trainers/calibration.py`): expected "
        "calibration error with 15 equal-width confidence bins (Guo et al. 2017), in percent; "
        "mean negative log-likelihood; multi-class Brier score; mean ± sample std over seeds. "
        "Mixup's claimed second benefit (Zhang et al., ICML 2022; Park & Caragea, ACL 2022). "
        "Below, the same pairs as the accuracy comparisons on ECE (lower is better), paired "
        f"by seed: a t-test over seeds only with ≥ {stats.MIN_SEEDS} seeds whose differences "
        "vary, Holm over every ECE test of this report, a direction only where the adjusted "
        f"p < {stats.ALPHA}.",
        "",
        calibration.calibration_markdown(report.frames["calibration"],
                                         report.frames["calibration_paired"]),
        "",
    ]


def _efficiency_section(report: Report) -> list[str]:
    return [
        "## Efficiency: time per epoch",
        "",
        "Mean over runs of each run's mean `epoch_seconds` (± sample std over runs), per arm, "
        "update path (`fused`: closed-form head update of frozen CPU features; `autograd`: "
        "everything else) and hardware. × none divides by the `none` row of the same task, "
        "training data, update path and hardware only; across paths the ratio measures the "
        "code path, not the method, and is not shown. Paper claim (Section 5): on one "
        f"{paper.EFFICIENCY_HARDWARE}, an RTE epoch of RoBERTa-large fine-tuning takes about "
        "1.5 min with or without BatchMixup and about 20 min for MIXUP and Nonlinear MIXUP "
        f"with {paper.EFFICIENCY_MIX_SAMPLES} β samples per pair (≈13×); the paper column is "
        "filled only for fine-tuned rows whose strategy (and sample count) match that claim.",
        "",
        efficiency.efficiency_markdown(report.frames["efficiency"]),
        "",
    ]


def _plots_section(report: Report) -> list[str]:
    pngs = report.pngs
    out = ["## Plots", "",
           "The PNGs lie next to this file (in MLflow: under `report/` of the summary run, "
           f"where `{REPORT_HTML}` shows this report with its plots inline).", ""]
    if PLOT_ACCURACY in pngs:
        out += [f"![accuracy vs training data]({PLOT_ACCURACY})", ""]
    else:
        out += ["_No finished final-phase cells: no accuracy plot._", ""]
    if PLOT_EPOCH_SECONDS in pngs:
        out += [f"![time per epoch]({PLOT_EPOCH_SECONDS})", ""]
    else:
        out += ["_No epoch_seconds logged: no epoch-time plot._", ""]
    if PLOT_CURVES in pngs:
        out += ["Accuracy per epoch for every task and training data (mean ± std over seeds):",
                "", f"![accuracy per epoch]({PLOT_CURVES})", ""]
    if report.curve_cell:
        task, ratio = report.curve_cell
        name = _curve_file(task, ratio)
        if name in pngs:
            out += [f"Per-epoch accuracy for {task} at {tables.format_ratio(ratio)}:", "",
                    f"![accuracy per epoch, {task}]({name})", ""]
        else:
            out += [f"_No accuracy history for {task}/{ratio:g}: no curve plot._", ""]
    return out


def _failed_section(report: Report) -> list[str]:
    failed = report.frames["failed"]
    out = ["## Failed or incomplete runs", ""]
    if failed.empty:
        return out + ["None.", ""]
    rows = [[r.run_name, r.status, (r.failure_reason or "—").replace("\n", " "),
             "yes" if r.superseded else "no"] for r in failed.itertuples()]
    return out + [tables.markdown_table(["Cell", "Status", "Reason", "Finished on rerun"], rows),
                  ""]


def _missing_section(report: Report) -> list[str]:
    missing = report.frames["missing"]
    grid = ("the latest launch's cells (manifest)" if report.data.manifest
            else "every task × training data × arm × seed seen in current final-phase runs")
    out = ["## Cells without a finished run", "", f"Grid: {grid}.", ""]
    if missing.empty:
        return out + ["None: the grid is complete.", ""]
    rows = [[r.task, tables.format_ratio(r.ratio), r.strategy, r.seed, r.latest_status]
            for r in missing.itertuples()]
    return out + [tables.markdown_table(
        ["Task", "Training data", "Arm", "Seed", "Latest run"], rows), ""]


def _configurations_section(report: Report) -> list[str]:
    others = report.frames["configurations"]
    out = ["## Other configurations", ""]
    if others.empty:
        return out + ["None: every final-phase run belongs to its group's current "
                      "configuration.", ""]
    rows = [[r.task, tables.format_ratio(r.ratio), r.strategy, f"`{r.fingerprint or '(none)'}`",
             f"{r.finished}/{r.runs}", r.seeds, r.differs, f"`{r.query}`"]
            for r in others.itertuples()]
    return out + [
        "Runs of earlier configurations of a (task, training data, arm) (another "
        "`fingerprint`: changed settings, model or data) are kept in MLflow but left out of "
        "every table above. Find them in the MLflow runs view with the search shown. "
        "Fingerprint (none): runs that predate fingerprints.",
        "",
        tables.markdown_table(["Task", "Training data", "Arm", "Fingerprint",
                               "finished/runs", "seeds", "differs from current",
                               "MLflow search"], rows),
        "",
    ]


def _search_section(report: Report) -> list[str]:
    out = ["## Search phase", ""]
    if report.frames["search"].empty:
        return out + ["No search trials (tag phase=search) in this experiment.", ""]
    return out + [
        "Hyperparameter-search trials (tag phase=search) are kept out of every table above. "
        "A trial's score is its `val_accuracy` at its last epoch.",
        "",
        tables.search_markdown(report.frames["search"]),
        "",
    ]


def _notes(report: Report) -> list[str]:
    notes = list(report.data.notes)
    for r in tables.duplicate_cells(report.runs).itertuples():
        notes.append(f"{r.task}/{r.ratio:g}/{r.strategy}/{r.seed} has {r.runs} finished runs "
                     "of the current configuration; the latest one is used.")
    for r in report.frames["paired"].itertuples():
        if r.reason and r.n >= stats.MIN_SEEDS and r.reason.startswith("differences"):
            notes.append(f"{r.task}/{r.ratio:g} {r.arm} − {r.baseline}: {r.reason}.")
    return ["## Notes", ""] + [f"- {n}" for n in notes] + [""] if notes else []


def _files_section(report: Report) -> list[str]:
    out = ["## Files", "",
           ", ".join(f"`{name}`" for name in CSV_FILES.values())
           + " hold the tables above (accuracies in %; `cells.csv` holds one row per run, "
           "with its configuration's `current` flag). In MLflow, Table 1, the paired "
           "comparisons, the budget and the efficiency table are also logged as tables "
           "(`report/tables/*.json`) of the summary run.", ""]
    if report.figure1_md:
        out += [f"`{figure1.TABLE_CSV}` holds the Figure 1 accuracy table; "
                f"`{figure1.FIGURE_PNG}` and `{figure1.ACCURACY_PNG}` are its plots.", ""]
    return out


def _markdown(report: Report) -> str:
    """Compose report.md from the computed tables."""
    out = _header(report)
    out += ["## Setup", "", setting_mod.setup_markdown(report.setting), ""]
    if report.figure1_md:
        out += [report.figure1_md, ""]
    for section in (_table1_section, _budget_section, _paired_section, _calibration_section,
                    _efficiency_section,
                    _plots_section, _failed_section, _missing_section,
                    _configurations_section, _search_section, _notes, _files_section):
        out += section(report)
    return "\n".join(out)


# --------------------------------------------------------------------------- build


def compute(data: SweepData, predictions: paired.Predictions | None = None,
            resamples: int = stats.BOOTSTRAP_RESAMPLES,
            margin: float = paired.EQUIVALENCE_MARGIN) -> Report:
    """Every table of the report (no file written)."""
    runs = tables.prepare_runs(data.runs, data.manifest)
    history = data.history
    t1 = tables.table1(runs, data.manifest)
    frames: dict[str, pd.DataFrame] = {
        "table1": t1,
        "paper_reference": tables.paper_reference(t1),
        "budget": tables.budget(runs),
        "paired": paired.paired_table(runs, predictions, resamples=resamples, margin=margin),
        "efficiency": efficiency.efficiency(runs, history),
        "calibration": calibration.calibration_table(runs),
        "calibration_paired": calibration.ece_comparisons(runs),
        "failed": tables.failed_runs(runs),
        "missing": tables.missing_cells(runs, data.manifest),
        "configurations": configs.other_configurations(runs),
        "search": tables.search_summary(runs),
        "curves": tables.accuracy_curves(runs, history),
    }
    frames["cells"] = runs.drop(columns=["start_time"]).assign(accuracy_pct=runs["score"] * 100)
    return Report(data=data, runs=runs, frames=frames, setting=setting_mod.describe(runs))


def _write_plots(report: Report, out_dir: Path) -> list[Path]:
    """The PNGs of the report; their names go to ``report.pngs``."""
    frames, written = report.frames, []
    cells = tables.finished_cells(report.runs)
    if (frames["table1"]["n"] > 0).any():
        matched = bool(frames["table1"]["paper_setting"].any())
        written.append(plots.plot_accuracy_vs_ratio(
            frames["table1"], out_dir / PLOT_ACCURACY, tables.accuracy_name(cells), matched))
    if not frames["efficiency"].empty:
        written.append(plots.plot_epoch_seconds(frames["efficiency"],
                                                out_dir / PLOT_EPOCH_SECONDS))
    if not frames["curves"].empty:
        written.append(plots.plot_curves_grid(frames["curves"], out_dir / PLOT_CURVES))
    if report.curve_cell is not None:
        task, ratio = report.curve_cell
        curves = tables.accuracy_curves(report.runs, report.data.history, task, ratio)
        if not curves.empty:
            written.append(plots.plot_accuracy_curves(curves, task, ratio,
                                                      out_dir / _curve_file(task, ratio)))
    report.pngs = {p.name for p in written}
    return written


def _build(
    data: SweepData,
    out_dir: Path,
    curve_cell: tuple[str, float] | None = None,
    figure1_seed: str | None = None,
    predictions: paired.Predictions | None = None,
    margin: float = paired.EQUIVALENCE_MARGIN,
) -> tuple[Report, list[Path]]:
    """Compute the report and write its files; return it and the files, report.md first."""
    if predictions is None:
        predictions = _artifact_predictions(data.tracking_uri)
    report = compute(data, predictions, margin=margin)
    report.curve_cell = curve_cell
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for key, name in CSV_FILES.items():
        path = out_dir / name
        report.frames[key].to_csv(path, index=False)
        written.append(path)
    written += _write_plots(report, out_dir)
    if figure1.has_toy2d(report.runs):
        section = figure1.build_figure1(replace(data, runs=report.runs), out_dir, figure1_seed)
        report.figure1_md = section.markdown
        written.extend(section.files)
    text = _markdown(report)
    path = out_dir / REPORT_FILE
    path.write_text(text, encoding="utf-8")
    page = out_dir / REPORT_HTML
    page.write_text(html.to_html(text, out_dir, f"BatchMixup report: {data.experiment}"),
                    encoding="utf-8")
    return report, [path, page, *written]


def build_report(
    data: SweepData,
    out_dir: Path,
    curve_cell: tuple[str, float] | None = None,
    figure1_seed: str | None = None,
    predictions: paired.Predictions | None = None,
) -> list[Path]:
    """Write report.md, report.html, CSVs and PNGs for ``data`` into ``out_dir``; return the
    files written, report.md first.

    ``predictions`` reads a run's test predictions for the paired bootstrap (default: from
    the run's MLflow artifacts). When the experiment has toy2d runs, the Figure 1 section and
    its files (see :mod:`results.figure1`; ``figure1_seed`` picks the seed drawn) are added.
    """
    return _build(data, out_dir, curve_cell, figure1_seed, predictions)[1]


def _artifact_predictions(tracking_uri: str) -> paired.Predictions:
    """A cached reader of runs' ``test_predictions.json`` artifacts."""
    cache: dict[str, dict[str, Any] | None] = {}

    def read(run_id: str) -> dict[str, Any] | None:
        if run_id not in cache:
            cache[run_id] = read_predictions(tracking_uri, run_id)
        return cache[run_id]

    return read


# --------------------------------------------------------------------------- MLflow


def _cell_counts(report: Report) -> dict[str, int]:
    """Cells with a finished run, and all cells of the grid (finished + without one)."""
    finished = len(tables.finished_cells(report.runs))
    return {"cells_finished": finished,
            "cells_total": finished + len(report.frames["missing"])}


def _summary_metrics(report: Report) -> dict[str, float]:
    """Counts and per-cell numbers logged as metrics of the summary run."""
    frames = report.frames
    finals = tables.final_phase(report.runs)
    table = frames["paired"]
    out: dict[str, float] = {
        **{k: float(v) for k, v in _cell_counts(report).items()},
        "runs_failed": float(len(frames["failed"])),
        "groups": float(len(frames["table1"])),
        "other_configurations": float(len(frames["configurations"])),
        "runs_other_configurations": float((~finals["current"].astype(bool)).sum()),
        "comparisons": float(len(table)),
        "comparisons_tested": float(paired.family_size(table)),
        "comparisons_significant": float(
            table["verdict"].str.endswith(("higher", "lower")).sum()) if not table.empty
        else 0.0,
    }
    for r in frames["table1"].itertuples():
        key = f"table1/{r.task}/{r.ratio:g}/{r.strategy}"
        out[f"{key}/accuracy_mean"] = r.mean
        out[f"{key}/accuracy_std"] = r.std
        out[f"{key}/n"] = float(r.n)
        out[f"{key}/selected_updates"] = r.selected_updates
    for r in table.itertuples():
        key = f"paired/{r.task}/{r.ratio:g}/{r.arm}-vs-{r.baseline}"
        out[f"{key}/mean_diff_pp"] = r.mean_diff
        out[f"{key}/p_holm"] = r.p_holm
    for r in frames["efficiency"].itertuples():
        key = f"epoch_seconds/{r.task}/{r.ratio:g}/{r.strategy}/{r.update_path}"
        out[key] = r.mean_epoch_seconds
    return {k: float(v) for k, v in out.items() if not math.isnan(float(v))}


def _summary_tags(report: Report) -> dict[str, str]:
    """Descriptive tags of the summary run (tags, not params: they may change on reruns)."""
    facts = report.setting
    hardware = "; ".join(f"{name} ({count} runs)" for name, count in facts.hardware)
    return {
        "report.model": facts.model,
        "report.mode": facts.mode,
        "report.hardware": hardware[:NOTE_LIMIT],
        "report.paper_setting": ", ".join(t for t, ok in facts.paper_tasks.items() if ok)
        or "no task",
        **{f"report_{k}": str(v) for k, v in _cell_counts(report).items()},
    }


def _note(report: Report) -> str:
    """The summary run's description: Table 1 and the paired readings, within the limit."""
    head = [f"**BatchMixup sweep report: {report.data.experiment}.** Full report: artifacts "
            f"`{ARTIFACT_DIR}/{REPORT_HTML}` (with plots) and `{ARTIFACT_DIR}/{REPORT_FILE}`; "
            f"tables in `{TABLES_DIR}/`.", ""]
    parts = [
        "\n".join(_table1_section(report)[:1] + ["", tables.table1_markdown(
            report.frames["table1"]), ""]),
        "\n".join(["## Paired comparisons", "", paired.paired_markdown(report.frames["paired"]),
                   ""]),
    ]
    text = "\n".join(head)
    for part in parts:
        if len(text) + len(part) + 1 > NOTE_LIMIT:
            text += "\n_(more in the report: too long for the description)_"
            break
        text += "\n" + part
    return text[:NOTE_LIMIT]


def _log_tables(client: MlflowClient, run_id: str, report: Report, out_dir: Path) -> None:
    """Log the main frames as MLflow tables; overwrite in place where one already exists
    (``log_table`` would append to it) because the old artifacts could not be deleted."""
    existing = {f.path for f in client.list_artifacts(run_id, TABLES_DIR)}
    for key in MLFLOW_TABLES:
        frame = report.frames[key]
        artifact = f"{TABLES_DIR}/{key}.json"
        if artifact in existing:
            local = out_dir / f"{key}.json"
            frame.to_json(local, orient="split", index=False)
            client.log_artifact(run_id, str(local), TABLES_DIR)
            local.unlink()
        else:
            client.log_table(run_id, frame, artifact)


def _summary_run(client: MlflowClient, data: SweepData) -> str:
    """The summary run's id (created when missing)."""
    if data.summary_run_id is None:
        run = client.create_run(data.experiment_id, run_name=SUMMARY_RUN_NAME,
                                tags={"kind": "summary", "sweep": data.experiment})
        return run.info.run_id
    return data.summary_run_id


def _remove_stale(client: MlflowClient, run_id: str, keep: set[str]) -> None:
    """Delete the summary run's old ``report/`` files that the new report did not write
    (called after the new ones are stored: a failure before never loses the old report);
    nothing where the artifact store cannot delete."""
    try:
        old = [f.path for f in client.list_artifacts(run_id, ARTIFACT_DIR) if not f.is_dir]
        repo = get_artifact_repository(client.get_run(run_id).info.artifact_uri)
        for path in old:
            if path not in keep:
                repo.delete_artifacts(path)
    except (NotImplementedError, OSError, MlflowException):
        pass  # the store cannot delete: the stale files stay beside the new ones


def log_to_summary_run(data: SweepData, files: Sequence[Path],
                       report: Report | None = None) -> str:
    """Log ``files`` under ``report/`` of the experiment's summary run; return its run id.

    The summary run (tag ``kind=summary``) is created on the first call and reused afterwards
    (the sweep creates it at launch with the manifest, which is kept); the new ``report/``
    files overwrite the old ones, and only then are old files the new report lacks deleted
    (where the artifact store allows it): a store that refuses writes keeps the old report.
    With ``report`` (the tables behind ``files``), Table 1,
    the paired comparisons, the budget and the efficiency table are logged as MLflow tables,
    counts and per-cell numbers as metrics, descriptive tags, and Table 1 with the paired
    readings as the run's description.
    """
    client = MlflowClient(tracking_uri=data.tracking_uri)
    run_id = _summary_run(client, data)
    # A write to the database first: a store that cannot take one (read-only) fails here,
    # before any artifact is touched.
    client.set_tag(run_id, "report_written_at", dt.datetime.now(dt.timezone.utc).isoformat())
    for path in files:
        client.log_artifact(run_id, str(path), ARTIFACT_DIR)
    _remove_stale(client, run_id, {f"{ARTIFACT_DIR}/{Path(p).name}" for p in files})
    if report is None:
        report = compute(data)
    folder = Path(files[0]).parent if files else Path(".")
    _log_tables(client, run_id, report, folder)
    now = int(dt.datetime.now().timestamp() * 1000)
    metrics = [Metric(k, v, now, 0) for k, v in _summary_metrics(report).items()]
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[start:start + 1000])
    tags = {**_summary_tags(report), NOTE_TAG: _note(report)}
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    client.set_terminated(run_id, "FINISHED")
    return run_id


def write_report(
    experiment: str,
    tracking_uri: str | None = None,
    out_dir: Path | None = None,
    curve_cell: tuple[str, float] | None = None,
    log_artifacts: bool = True,
    figure1_seed: str | None = None,
    margin: float = paired.EQUIVALENCE_MARGIN,
) -> Path:
    """Read ``experiment``, write the report files and log them to the summary run.

    ``tracking_uri`` None means $MLFLOW_TRACKING_URI, else ``sqlite:///mlflow.db``; ``out_dir``
    None means ``results/<experiment>/``. Returns the path of report.md. Raises ReportError,
    before writing anything, for a missing store, an unknown experiment or one without cell
    runs. ``figure1_seed``: the seed of the Figure 1 panels (toy2d experiments only; None =
    seed 0, or ``"median"``). ``margin``: δ (pp) of the equivalence readings.
    """
    if not (math.isfinite(margin) and margin > 0):
        raise ReportError(f"--equivalence-margin must be a positive number of pp, got {margin}")
    data = load_sweep(experiment, tracking_uri)
    report, files = _build(
        data, out_dir or default_out_dir(experiment), curve_cell, figure1_seed=figure1_seed,
        margin=margin,
    )
    if log_artifacts:
        try:
            log_to_summary_run(data, files, report)
        except (MlflowException, OSError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ReportError(f"the report is in {files[0].parent}, but the tracking store "
                              f"refused it ({redact_text(first)}); the summary run keeps its "
                              "previous report (--no-log skips MLflow)") from None
    return files[0]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m results.report",
        description=(
            "Report of one BatchMixup sweep, read only from MLflow. Writes report.md and "
            "report.html (the setup the runs recorded; Table 1 as mean ± std over seeds, with "
            "the paper's numbers as Δ only in the paper's setting, else as reference; the "
            "training budget; paired comparisons from integer counts with t-intervals, "
            "t-tests, a paired bootstrap and Holm's correction; epoch times compared within "
            "one update path; failed and missing cells; other configurations; the search "
            "phase), CSV tables and PNG plots (accuracy vs training data, epoch time, "
            "per-epoch accuracy curves) to --out, and logs them to the experiment's summary "
            "run (tag kind=summary), with MLflow tables, metrics and a description."
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
        "--equivalence-margin", type=float, default=paired.EQUIVALENCE_MARGIN, metavar="PP",
        help="δ of the equivalence readings (TOST: no difference larger than ±δ "
             f"percentage points). Default: {paired.EQUIVALENCE_MARGIN:g}.",
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
            margin=args.equivalence_margin,
        )
    except ReportError as exc:
        print(f"results.report: error: {exc}", file=sys.stderr)
        return 2
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
