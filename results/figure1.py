"""Figure 1 of the paper: the 2-D five-shot toy experiment (task ``toy2d``), read from MLflow.

The ``figure1`` preset (``search_spaces/figure1.yaml``) trains every strategy on the same 10
training points per seed (5 per class, drawn from two 2-D Gaussians) and evaluates on one fixed
test set. After the last epoch each toy2d cell run logs ``decision_grid.json`` as an MLflow
artifact: the model's P(blue) on a regular grid, the training points and labels, and the means
and covariances of the two generating Gaussians. This module reads only those runs and artifacts
(nothing from ``trainers`` is imported) and writes, into the report folder:

* ``figure1.png`` — one seed drawn as the paper's Figure 1, five panels side by side: (a) the
  data (an illustrative sample of the test distribution, regenerated from the stored means and
  covariances with a fixed numpy seed, plus the 10 training points), then the learned decision
  function of ``none``, ``mixup``, ``nonlinear_mixup`` and ``batchmixup`` (filled P(blue), the
  P = 0.5 boundary as a solid line, the training points, and the Bayes-optimal boundary of the
  true Gaussians dashed). Titles give the strategy and that seed's test accuracy.
* ``figure1_accuracy.png`` — the distribution over all seeds of final test accuracy per strategy
  (box plot, one dot per seed, thin grey lines joining the runs of one seed, the drawn seed
  highlighted, the Bayes-optimal accuracy as a dashed reference).
* ``figure1.csv`` — per strategy: n, mean, sample std, min, median, max (accuracy in %), and
  the paired comparison with ``none`` on the same seeds (wins/ties/losses, mean difference).

The paper shows a single picture; the table and the distribution plot show how much one seed
can be trusted.

Which seed is drawn (``seed`` argument, CLI ``python -m results.report --figure1-seed``):

* default ``"0"`` (:data:`DEFAULT_SEED`) — seed 0, the first seed of the preset; when it has no
  finished runs the lowest seed with the most strategies is used instead (with a note);
* any other seed tag, e.g. ``"7"``;
* ``"median"`` — the seed whose ``batchmixup − none`` accuracy difference is the median over
  the seeds where both finished (the lower median for an even count, ties broken by the lower
  seed), i.e. a typical rather than a hand-picked seed.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from results import plots, tables
from results.runs import SweepData

TASK = "toy2d"
GRID_ARTIFACT = "decision_grid.json"
GRID_KEYS = ("x", "y", "prob_blue", "train", "means", "covariances")
"""Keys of decision_grid.json that the panels need."""
_PROGRESS_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
FIGURE_PNG = "figure1.png"
ACCURACY_PNG = "figure1_accuracy.png"
TABLE_CSV = "figure1.csv"
FILES = (FIGURE_PNG, ACCURACY_PNG, TABLE_CSV)
BASELINE = "none"
DEFAULT_SEED = "0"
MEDIAN = "median"
SAMPLE_PER_CLASS = 300
"""Points per class of the illustrative data sample of panel (a)."""
SAMPLE_SEED = 0
BAYES_MC_PER_CLASS = 100_000
"""Monte Carlo points per class for the Bayes-optimal accuracy reference."""
LETTERS = "abcdefghijklmnopqrstuvwxyz"
"""Panel letters: (a) the data, (b) onwards one per strategy."""
CLASS_COLORS = ("tab:orange", "tab:blue")
CLASS_MARKERS = ("o", "s")
PROB_CMAP = LinearSegmentedColormap.from_list(
    "orange_white_blue", [matplotlib.colors.to_rgb("tab:orange"), (1, 1, 1),
                          matplotlib.colors.to_rgb("tab:blue")]
)

__all__ = [
    "Figure1Section",
    "accuracy_table",
    "bayes_accuracy",
    "build_figure1",
    "choose_seed",
    "has_toy2d",
    "load_grids",
    "plot_accuracy_distribution",
    "plot_decision_panels",
    "toy2d_cells",
]


@dataclass
class Figure1Section:
    """What :func:`build_figure1` produced: report markdown and the files written."""

    markdown: str
    files: list[Path] = field(default_factory=list)


# --------------------------------------------------------------------------- selection


def has_toy2d(runs: pd.DataFrame) -> bool:
    """True when the experiment has final-phase cell runs of task ``toy2d`` (any status)."""
    return bool((tables.final_phase(runs)["task"] == TASK).any())


def toy2d_cells(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Finished toy2d cells (latest run per cell, ``accuracy_pct`` added) and notes.

    toy2d always trains on all its points (ratio 1); should other ratios appear, only the
    first in paper order (1.0 first) is used and a note says so.
    """
    cells = tables.finished_cells(runs)
    cells = cells[cells["task"] == TASK]
    notes: list[str] = []
    ratios = tables.ordered_ratios(cells["ratio"])
    if len(ratios) > 1:
        notes.append(
            f"toy2d runs with several training ratios; Figure 1 uses {ratios[0]:g} only."
        )
    if ratios:
        cells = cells[np.isclose(cells["ratio"], ratios[0])]
    return cells, notes


def choose_seed(cells: pd.DataFrame, seed: str | None = None) -> tuple[str | None, str]:
    """The seed to draw and a one-line reason (see the module docstring for the rules)."""
    if cells.empty:
        return None, "no finished toy2d runs"
    wanted = DEFAULT_SEED if seed is None else str(seed)
    if wanted == MEDIAN:
        by_seed = cells.pivot_table(index="seed", columns="strategy", values="accuracy_pct")
        if {BASELINE, "batchmixup"} <= set(by_seed.columns):
            diff = (by_seed["batchmixup"] - by_seed[BASELINE]).dropna()
            if not diff.empty:
                order = sorted(diff.items(), key=lambda kv: (kv[1], tables._seed_sort_key(kv[0])))
                chosen, value = order[(len(order) - 1) // 2]
                return str(chosen), (
                    f"seed {chosen}: median batchmixup − none difference ({value:+.2f} pp) "
                    f"over {len(order)} paired seeds"
                )
        wanted = DEFAULT_SEED  # no pairs: fall back to the default seed
    counts = cells.groupby("seed")["strategy"].nunique()
    if wanted in counts.index:
        return wanted, f"seed {wanted}"
    best = max(counts)
    fallback = tables.ordered_seeds(s for s, c in counts.items() if c == best)[0]
    return fallback, f"seed {fallback} (seed {wanted} has no finished toy2d runs)"


# --------------------------------------------------------------------------- statistics


def accuracy_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Per strategy: accuracy (%) n, mean, std (ddof=1), min, median, max, and vs ``none``.

    The paired columns compare each strategy with ``none`` on the seeds where both finished:
    ``paired_n``, ``wins`` / ``ties`` / ``losses`` (higher / equal / lower accuracy than none)
    and ``mean_diff`` (percentage points). They are empty for ``none`` itself.
    """
    columns = ["strategy", "n", "mean", "std", "min", "median", "max", "seeds",
               "paired_n", "wins", "ties", "losses", "mean_diff"]
    by_seed = cells.pivot_table(index="seed", columns="strategy", values="accuracy_pct")
    rows = []
    for strategy in tables.ordered_strategies(cells["strategy"]):
        values = cells.loc[cells["strategy"] == strategy, "accuracy_pct"]
        n = int(values.size)
        row: dict[str, Any] = {
            "strategy": strategy,
            "n": n,
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if n >= 2 else math.nan,
            "min": float(values.min()),
            "median": float(values.median()),
            "max": float(values.max()),
            "seeds": " ".join(tables.ordered_seeds(cells.loc[values.index, "seed"])),
            "paired_n": math.nan,
            "wins": math.nan,
            "ties": math.nan,
            "losses": math.nan,
            "mean_diff": math.nan,
        }
        if strategy != BASELINE and BASELINE in by_seed.columns:
            diff = (by_seed[strategy] - by_seed[BASELINE]).dropna()
            # accuracies are counts over a fixed test set: equal up to float noise is a tie
            tie = np.isclose(diff.to_numpy(), 0.0, atol=1e-6)
            row.update(
                paired_n=int(diff.size),
                wins=int(((diff > 0) & ~tie).sum()),
                ties=int(tie.sum()),
                losses=int(((diff < 0) & ~tie).sum()),
                mean_diff=float(diff.mean()) if diff.size else math.nan,
            )
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def _log_density(points: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Log density of N(mean, cov) at ``points`` ([..., 2])."""
    inv = np.linalg.inv(cov)
    d = points - mean
    maha = np.einsum("...i,ij,...j->...", d, inv, d)
    return -0.5 * (maha + math.log(np.linalg.det(cov)) + 2 * math.log(2 * math.pi))


def bayes_log_ratio(points: np.ndarray, means: np.ndarray, covs: np.ndarray) -> np.ndarray:
    """log p(x | blue) − log p(x | orange); the Bayes boundary (equal priors) is where it is 0."""
    return _log_density(points, means[1], covs[1]) - _log_density(points, means[0], covs[0])


def bayes_accuracy(means: np.ndarray, covs: np.ndarray, per_class: int = BAYES_MC_PER_CLASS,
                   seed: int = SAMPLE_SEED) -> float:
    """Monte Carlo accuracy (%) of the Bayes-optimal classifier of the two Gaussians."""
    rng = np.random.default_rng(seed)
    correct = 0
    for label in (0, 1):
        points = rng.multivariate_normal(means[label], covs[label], size=per_class)
        predicted = (bayes_log_ratio(points, means, covs) > 0).astype(int)
        correct += int((predicted == label).sum())
    return 100.0 * correct / (2 * per_class)


# --------------------------------------------------------------------------- artifacts


def _read_grid(client: MlflowClient, run_id: str, folder: Path) -> dict[str, Any]:
    """Download ``decision_grid.json`` of one run into ``folder`` and parse it."""
    local = client.download_artifacts(run_id, GRID_ARTIFACT, str(folder))
    grid = json.loads(Path(local).read_text(encoding="utf-8"))
    missing = [key for key in GRID_KEYS if key not in grid]
    if missing:
        raise ValueError(f"{GRID_ARTIFACT} lacks {missing}")
    return grid


def load_grids(
    tracking_uri: str, cells: pd.DataFrame, seed: str
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Download and parse ``decision_grid.json`` of each strategy's run for ``seed``.

    Returns ``{strategy: grid}`` and notes for runs whose artifact is missing or unreadable.
    """
    client = MlflowClient(tracking_uri=tracking_uri)
    grids: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    previous = os.environ.get(_PROGRESS_ENV)
    os.environ[_PROGRESS_ENV] = "false"  # no progress bar per small JSON file
    try:
        with tempfile.TemporaryDirectory(prefix="figure1-") as tmp:
            for row in cells[cells["seed"] == seed].itertuples():
                folder = Path(tmp) / row.run_id
                folder.mkdir()
                try:
                    grids[row.strategy] = _read_grid(client, row.run_id, folder)
                except (MlflowException, OSError, ValueError) as exc:
                    lines = str(exc).strip().splitlines() or [type(exc).__name__]
                    notes.append(f"{row.run_name}: no usable {GRID_ARTIFACT} ({lines[0][:200]})")
    finally:
        if previous is None:
            os.environ.pop(_PROGRESS_ENV, None)
        else:
            os.environ[_PROGRESS_ENV] = previous
    return grids, notes


# --------------------------------------------------------------------------- plots


def _scatter_train(ax: Any, grid: dict[str, Any]) -> None:
    points = np.asarray(grid["train"]["x"], dtype=float).reshape(-1, 2)
    labels = np.asarray(grid["train"]["label"], dtype=int)
    for label in (0, 1):
        sel = labels == label
        ax.scatter(points[sel, 0], points[sel, 1], s=70, marker=CLASS_MARKERS[label],
                   color=CLASS_COLORS[label], edgecolors="black", linewidths=1.2, zorder=5)


def _bayes_contour(ax: Any, grid: dict[str, Any]) -> None:
    gx, gy = np.meshgrid(np.asarray(grid["x"], dtype=float), np.asarray(grid["y"], dtype=float))
    ratio = bayes_log_ratio(np.stack([gx, gy], axis=-1), np.asarray(grid["means"], dtype=float),
                            np.asarray(grid["covariances"], dtype=float))
    if ratio.min() < 0 < ratio.max():
        ax.contour(gx, gy, ratio, levels=[0.0], colors="dimgray", linestyles="--",
                   linewidths=1.5, zorder=4)


def plot_decision_panels(
    grids: dict[str, dict[str, Any]],
    strategies: list[str],
    accuracy: dict[str, float],
    seed: str,
    path: Path,
) -> Path:
    """The Figure 1 panels of one seed (see the module docstring); returns ``path``.

    ``grids`` maps strategy -> parsed decision_grid.json (at least one); ``accuracy`` maps
    strategy -> that seed's test accuracy in %. A strategy without a grid gets an empty panel.
    """
    ref = next(iter(grids.values()))
    xs, ys = np.asarray(ref["x"], dtype=float), np.asarray(ref["y"], dtype=float)
    means = np.asarray(ref["means"], dtype=float)
    covs = np.asarray(ref["covariances"], dtype=float)
    names = list(ref.get("labels") or ["orange", "blue"])
    extent = (xs.min(), xs.max(), ys.min(), ys.max())

    n_panels = 1 + len(strategies)
    fig = Figure(figsize=(3.5 * n_panels + 0.8, 4.6))
    axes = fig.subplots(1, n_panels, sharex=True, sharey=True)

    ax = axes[0]
    rng = np.random.default_rng(SAMPLE_SEED)
    for label in (0, 1):
        sample = rng.multivariate_normal(means[label], covs[label], size=SAMPLE_PER_CLASS)
        ax.scatter(sample[:, 0], sample[:, 1], s=6, color=CLASS_COLORS[label], alpha=0.35,
                   linewidths=0, zorder=2)
    _scatter_train(ax, ref)
    _bayes_contour(ax, ref)
    ax.set_title(f"(a) data, seed {seed}\n{SAMPLE_PER_CLASS} samples/class + 10 training points",
                 fontsize="medium")

    filled = None
    for i, strategy in enumerate(strategies, start=1):
        ax = axes[i]
        grid = grids.get(strategy)
        acc = accuracy.get(strategy, math.nan)
        acc_text = "—" if math.isnan(acc) else f"{acc:.1f}%"
        ax.set_title(f"({LETTERS[i]}) {strategy}\ntest accuracy {acc_text}", fontsize="medium")
        if grid is None:
            ax.text(0.5, 0.5, f"no {GRID_ARTIFACT}", transform=ax.transAxes, ha="center",
                    va="center", color="gray")
            continue
        gx, gy = np.meshgrid(np.asarray(grid["x"], dtype=float),
                             np.asarray(grid["y"], dtype=float))
        prob = np.asarray(grid["prob_blue"], dtype=float)
        filled = ax.contourf(gx, gy, prob, levels=np.linspace(0.0, 1.0, 11), cmap=PROB_CMAP,
                             vmin=0.0, vmax=1.0, alpha=0.85, zorder=1)
        if prob.min() < 0.5 < prob.max():
            ax.contour(gx, gy, prob, levels=[0.5], colors="black", linewidths=2.0, zorder=3)
        _bayes_contour(ax, grid)
        _scatter_train(ax, grid)

    for i, ax in enumerate(axes):
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlabel("$x_1$")
        if i == 0:
            ax.set_ylabel("$x_2$")
        ax.grid(alpha=0.2)

    handles = [
        Line2D([], [], marker=CLASS_MARKERS[k], linestyle="", markersize=8,
               color=CLASS_COLORS[k], markeredgecolor="black", label=f"training: {names[k]}")
        for k in (0, 1)
    ] + [
        Line2D([], [], marker="o", linestyle="", markersize=4, alpha=0.5,
               color=CLASS_COLORS[k], label=f"data sample: {names[k]}")
        for k in (0, 1)
    ] + [
        Line2D([], [], color="black", linewidth=2.0, label="learned boundary (P(blue) = 0.5)"),
        Line2D([], [], color="dimgray", linestyle="--", linewidth=1.5,
               label="Bayes-optimal boundary"),
    ]
    fig.suptitle(
        f"Figure 1, toy 2-D task: 5 training points per class, decision boundaries of seed {seed}",
        fontsize="large",
    )
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize="small",
               bbox_to_anchor=(0.5, -0.02), frameon=False)
    fig.tight_layout(rect=(0.0, 0.06, 0.93, 1.0))
    if filled is not None:
        cax = fig.add_axes((0.94, 0.2, 0.012, 0.6))
        bar = fig.colorbar(filled, cax=cax)
        bar.set_label("P(blue) learned")
    return plots._save(fig, path)


def plot_accuracy_distribution(
    cells: pd.DataFrame, seed: str | None, bayes: float | None, path: Path
) -> Path:
    """Box plot plus one dot per seed of test accuracy (%) per strategy; returns ``path``."""
    strategies = tables.ordered_strategies(cells["strategy"])
    colors = plots._strategy_colors(strategies)
    by_seed = cells.pivot_table(index="seed", columns="strategy", values="accuracy_pct")
    by_seed = by_seed.reindex(columns=strategies)
    x = np.arange(len(strategies))
    # one horizontal offset per seed, shared by its runs, so the grey lines join its dots
    offsets = np.random.default_rng(0).uniform(-0.12, 0.12, size=len(by_seed))
    fig = Figure(figsize=(max(7.0, 1.6 * len(strategies) + 3.5), 4.6))
    ax = fig.subplots()
    for offset, (_, values) in zip(offsets, by_seed.iterrows(), strict=True):
        ax.plot(x + offset, values.to_numpy(dtype=float), color="lightgray", linewidth=0.8,
                zorder=1)
    data = [by_seed[s].dropna().to_numpy(dtype=float) for s in strategies]
    ax.boxplot(data, positions=x, widths=0.5, showfliers=False, zorder=2,
               medianprops={"color": "black"}, whiskerprops={"color": "gray"},
               boxprops={"color": "gray"}, capprops={"color": "gray"})
    for i, strategy in enumerate(strategies):
        values = by_seed[strategy].to_numpy(dtype=float)
        ax.scatter(i + offsets, values, s=22, color=colors[strategy], edgecolors="black",
                   linewidths=0.4, zorder=3)
        if data[i].size:
            ax.scatter([i], [float(data[i].mean())], marker="D", s=45, color="white",
                       edgecolors="black", zorder=4)
    handles = [
        Line2D([], [], marker="o", linestyle="", color="gray", markeredgecolor="black",
               label="one seed"),
        Line2D([], [], marker="D", linestyle="", color="white", markeredgecolor="black",
               label="mean"),
        Line2D([], [], color="lightgray", label="same seed"),
    ]
    if seed is not None and seed in by_seed.index:
        shown = by_seed.loc[seed].to_numpy(dtype=float)
        offset = offsets[list(by_seed.index).index(seed)]
        ax.scatter(x + offset, shown, marker="*", s=160, color="gold", edgecolors="black", zorder=5)
        handles.append(Line2D([], [], marker="*", linestyle="", markersize=12, color="gold",
                              markeredgecolor="black", label=f"seed {seed} (Figure 1 panels)"))
    if bayes is not None and not math.isnan(bayes):
        ax.axhline(bayes, color="dimgray", linestyle="--", linewidth=1.2)
        handles.append(Line2D([], [], color="dimgray", linestyle="--",
                              label=f"Bayes-optimal ≈ {bayes:.1f}%"))
    counts = [int(v.size) for v in data]
    ax.set_xticks(x, [f"{s}\n(n={n})" for s, n in zip(strategies, counts, strict=True)])
    ax.set_xlabel("strategy")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Figure 1 toy task: final test accuracy over seeds")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return plots._save(fig, path)


# --------------------------------------------------------------------------- section


def _fmt(value: float, fmt: str = ".2f") -> str:
    return tables.DASH if value is None or math.isnan(value) else format(value, fmt)


def table_markdown(table: pd.DataFrame) -> str:
    """The accuracy table as markdown (accuracies in %)."""
    rows = []
    for r in table.itertuples():
        paired = (
            tables.DASH
            if math.isnan(r.paired_n)
            else f"{int(r.wins)}/{int(r.paired_n)} (ties {int(r.ties)}, losses {int(r.losses)})"
        )
        rows.append([
            r.strategy,
            str(r.n),
            tables.format_mean_std(r.mean, r.std, r.n).rsplit(" (", 1)[0],
            _fmt(r.min),
            _fmt(r.median),
            _fmt(r.max),
            paired,
            tables._format_signed(r.mean_diff),
        ])
    return tables.markdown_table(
        ["Strategy", "n", "mean ± std", "min", "median", "max", "wins vs none",
         "mean Δ vs none (pp)"],
        rows,
    )


def build_figure1(data: SweepData, out_dir: Path, seed: str | None = None) -> Figure1Section:
    """Write the Figure 1 files into ``out_dir``; return the report section and files.

    ``seed``: the seed drawn in the panels (None = :data:`DEFAULT_SEED`, or ``"median"``).
    Missing artifacts never raise: the section says what could not be drawn.
    """
    cells, notes = toy2d_cells(data.runs)
    out = [
        "## Figure 1: the 2-D five-shot toy experiment",
        "",
        "Task `toy2d`: two overlapping 2-D Gaussian classes (orange, blue), 5 training points "
        "per class drawn per seed, one fixed test set for every seed and strategy. The paper "
        "shows one picture; here the panels draw one seed and the table and box plot give "
        "the distribution over all seeds.",
        "",
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    if cells.empty:
        out += ["_No finished toy2d runs: no Figure 1._", ""]
        return Figure1Section("\n".join(out + [f"- {n}" for n in notes]), files)

    table = accuracy_table(cells)
    csv_path = out_dir / TABLE_CSV
    table.to_csv(csv_path, index=False)
    files.append(csv_path)

    chosen, reason = choose_seed(cells, seed)
    strategies = tables.ordered_strategies(cells["strategy"])
    grids, grid_notes = load_grids(data.tracking_uri, cells, chosen) if chosen else ({}, [])
    notes += grid_notes
    bayes: float | None = None
    if grids:
        ref = next(iter(grids.values()))
        bayes = bayes_accuracy(np.asarray(ref["means"], dtype=float),
                               np.asarray(ref["covariances"], dtype=float))
        seed_rows = cells[cells["seed"] == chosen]
        accuracy = dict(zip(seed_rows["strategy"], seed_rows["accuracy_pct"], strict=True))
        files.append(plot_decision_panels(grids, strategies, accuracy, str(chosen),
                                          out_dir / FIGURE_PNG))
        out += [
            f"Decision boundaries of {reason}. (a) The data: {SAMPLE_PER_CLASS} points per "
            "class sampled from the stored class means and covariances (illustrative, not the "
            "test set itself) and the seed's 10 training points (shared by all strategies). "
            f"(b)–({LETTERS[len(strategies)]}): each strategy's learned P(blue) (filled), its "
            "P = 0.5 boundary (solid) and "
            "the Bayes-optimal boundary of the true Gaussians (dashed); titles give that "
            "seed's final test accuracy.",
            "",
            f"![Figure 1: decision boundaries]({FIGURE_PNG})",
            "",
        ]
    else:
        out += [f"_No {GRID_ARTIFACT} artifact could be read for seed {chosen}: "
                "no decision-boundary panels._", ""]
    files.append(plot_accuracy_distribution(cells, chosen, bayes, out_dir / ACCURACY_PNG))
    bayes_text = (
        f" The Bayes-optimal classifier of the true Gaussians reaches ≈ {bayes:.1f}% "
        f"(Monte Carlo, {2 * BAYES_MC_PER_CLASS:,} points)." if bayes is not None else ""
    )
    out += [
        "Final test accuracy (%) over all seeds per strategy: mean ± sample std (ddof=1), "
        "min, median, max; wins vs none = seeds where the strategy beats `none` on the same "
        f"training points, out of the seeds where both finished.{bayes_text}",
        "",
        table_markdown(table),
        "",
        f"![Figure 1: accuracy over seeds]({ACCURACY_PNG})",
        "",
        f"Files: `{FIGURE_PNG}`, `{ACCURACY_PNG}`, `{TABLE_CSV}`.",
        "",
    ]
    if notes:
        out += [f"- {note}" for note in notes] + [""]
    return Figure1Section("\n".join(out), files)
