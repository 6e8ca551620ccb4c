"""PNG plots of the report (matplotlib, Agg backend, no display needed).

Figures are built with :class:`matplotlib.figure.Figure` directly rather than ``pyplot``, so
no GUI backend or global figure state is involved; ``savefig`` renders PNGs with Agg.

* :func:`plot_accuracy_vs_ratio` — one subplot per task, accuracy (%) against the training
  fraction on a log axis, one line per arm (mean ± std over seeds as error bars); the paper's
  points (mean ± std) as hollow grey markers of the same shape, the legend naming their
  setting.
* :func:`plot_epoch_seconds` — one subplot per task, mean epoch time per arm and update path
  as grouped bars with ± std error bars, a log axis where the times span more than a decade,
  the legend below the plots.
* :func:`plot_curves_grid` — per-epoch accuracy of every (task, ratio) in a grid, one line per
  arm (mean over seeds, ± std band). :func:`plot_accuracy_curves` draws one (task, ratio).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator

from results import paper
from results.tables import format_ratio, ordered_ratios, ordered_strategies, ordered_tasks

DPI = 120
PAPER_COLOR = "0.45"
MARKERS = paper.MARKERS
HOLLOW = (0.0, 0.0, 0.0, 0.0)
"""A transparent marker face: the paper's points are drawn hollow."""
NO_LINE = ""
OTHER_MARKERS = ("v", "P", "X", "*", "h", "<", ">")
LOG_SPAN = 10.0
"""A log axis is used when the largest value is more than this many times the smallest."""


def _strategy_colors(strategies: list[str]) -> dict[str, tuple[float, ...]]:
    """Fixed colours: the paper's four strategies always get the same ones."""
    cmap = matplotlib.colormaps["tab10"]
    names = list(paper.STRATEGIES) + [s for s in strategies if s not in paper.STRATEGIES]
    return {name: cmap(i % 10) for i, name in enumerate(names)}


def _marker(arm: str, others: list[str]) -> str:
    """The paper systems' fixed markers; other arms cycle through the rest."""
    if arm in MARKERS:
        return MARKERS[arm]
    return OTHER_MARKERS[others.index(arm) % len(OTHER_MARKERS)] if arm in others else "o"


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def _ratio_axis(ax: Axes, ratios: list[float]) -> None:
    """A log-scaled training-fraction axis with ticks at the ratios shown, labelled in %."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(ratios))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([format_ratio(r) for r in ratios])
    low, high = min(ratios), max(ratios)
    ax.set_xlim(low / 1.6, high * 1.6)
    ax.set_xlabel("training data (fraction of the training set, log scale)")


def plot_accuracy_vs_ratio(table1: pd.DataFrame, path: Path, metric: str = "test accuracy",
                           paper_setting: bool = False) -> Path:
    """Accuracy vs training fraction per task from the Table 1 DataFrame; returns ``path``.

    ``paper_setting``: whether the runs used the paper's setting (names the paper points).
    """
    data = table1[table1["n"] > 0]
    tasks = ordered_tasks(data["task"])
    strategies = ordered_strategies(table1["strategy"])
    others = [s for s in strategies if s not in MARKERS]
    colors = _strategy_colors(strategies)
    fig = Figure(figsize=(5.2 * len(tasks), 4.4))
    axes = fig.subplots(1, len(tasks), squeeze=False)
    shown_paper: set[str] = set()
    for ax, task in zip(axes[0], tasks, strict=True):
        rows = data[data["task"] == task]
        ratios = ordered_ratios(rows["ratio"])
        for strategy in ordered_strategies(rows["strategy"]):
            cells = rows[rows["strategy"] == strategy].sort_values("ratio")
            ax.errorbar(cells["ratio"], cells["mean"], yerr=np.nan_to_num(cells["std"]),
                        marker=_marker(strategy, others), capsize=3, color=colors[strategy],
                        label=strategy)
        for system in paper.STRATEGIES if task in paper.TASKS else ():
            refs = [(r, paper.paper_cell(r, system, task)) for r in ratios]
            refs = [(r, ref) for r, ref in refs if ref is not None]
            if not refs:
                continue
            shown_paper.add(system)
            ax.errorbar([r * 1.08 for r, _ in refs], [ref[0] for _, ref in refs],
                        yerr=[ref[1] for _, ref in refs], fmt=MARKERS[system], mfc=HOLLOW,
                        mec=PAPER_COLOR, ecolor=PAPER_COLOR, capsize=2, linestyle=NO_LINE,
                        markersize=7)
        _ratio_axis(ax, ratios)
        ax.set_ylabel(f"{metric} (%)")
        ax.set_title(f"{task}: mean ± std over seeds")
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colors[s], marker=_marker(s, others), label=s)
               for s in strategies if s in set(data["strategy"])]
    setting = paper.SETTING if paper_setting else f"{paper.SETTING}; not this setting"
    handles += [Line2D([], [], color=PAPER_COLOR, marker=MARKERS[s], mfc=HOLLOW,
                       linestyle=NO_LINE, label=f"paper {s} ({setting})")
                for s in paper.STRATEGIES if s in shown_paper]
    fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 4),
               bbox_to_anchor=(0.5, 0.0), fontsize="small")
    fig.tight_layout()
    return _save(fig, path)


def _series_label(row: pd.Series) -> str:
    """Bar label: arm, its mixup variant/samples where they apply, and its update path."""
    extra = ""
    if row["mixup_variant"] or row["mix_samples"]:
        extra = f", {row['mixup_variant'] or '?'} ×{row['mix_samples'] or '?'}"
    return f"{row['strategy']}{extra} [{row['update_path']}]"


def plot_epoch_seconds(efficiency: pd.DataFrame, path: Path) -> Path:
    """Grouped bars of mean epoch time (± std over runs), one subplot per task."""
    table = efficiency.assign(label=[_series_label(r) for _, r in efficiency.iterrows()])
    tasks = ordered_tasks(table["task"])
    series = list(dict.fromkeys(table["label"]))
    arms = ordered_strategies(table["strategy"])
    colors = _strategy_colors(arms)
    seconds = table["mean_epoch_seconds"].to_numpy(dtype=float)
    scale, unit = (1000.0, "ms") if np.nanmax(seconds) < 1 else (1.0, "s")
    use_log = np.nanmax(seconds) > LOG_SPAN * np.nanmin(seconds[seconds > 0])
    fig = Figure(figsize=(max(5.5, 1.2 + 0.5 * len(series)) * len(tasks), 4.4))
    axes = fig.subplots(1, len(tasks), squeeze=False)
    width = 0.8 / max(len(series), 1)
    for ax, task in zip(axes[0], tasks, strict=True):
        rows = table[table["task"] == task]
        ratios = ordered_ratios(rows["ratio"])
        x = np.arange(len(ratios))
        for i, label in enumerate(series):
            bars = rows[rows["label"] == label]
            if bars.empty:
                continue
            where = [next(j for j, r in enumerate(ratios) if math.isclose(r, v))
                     for v in bars["ratio"]]
            first = bars.iloc[0]
            heights = bars["mean_epoch_seconds"].to_numpy(dtype=float) * scale
            std = np.nan_to_num(bars["std_epoch_seconds"].to_numpy(dtype=float)) * scale
            # on a log axis a bar cannot go below 0: clip the lower whisker at 90 % of it
            low = np.minimum(std, 0.9 * heights) if use_log else std
            ax.bar(x[where] + (i - (len(series) - 1) / 2) * width, heights, width,
                   yerr=np.vstack([low, std]),
                   capsize=2, color=colors[first["strategy"]],
                   hatch="//" if first["update_path"] == "autograd" else None,
                   edgecolor="black", linewidth=0.5)
        ax.set_xticks(x, [format_ratio(r) for r in ratios])
        ax.set_xlabel("training data (fraction of the training set)")
        ax.set_ylabel(f"epoch time ({unit}{', log scale' if use_log else ''})")
        if use_log:
            ax.set_yscale("log")
        ax.set_title(f"{task}: mean epoch time ± std over runs")
        ax.grid(axis="y", alpha=0.3, which="both")
    handles = [Patch(facecolor=colors[r["strategy"]], edgecolor="black",
                     hatch="//" if r["update_path"] == "autograd" else None, label=r["label"])
               for _, r in table.drop_duplicates("label").iterrows()]
    handles.append(Patch(facecolor="white", edgecolor="black", hatch="//",
                         label="hatched: autograd path (ratios only within one path)"))
    fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 3),
               bbox_to_anchor=(0.5, 0.0), fontsize="small")
    fig.tight_layout()
    return _save(fig, path)


def _draw_curves(ax: Axes, rows: pd.DataFrame, colors: dict[str, tuple[float, ...]],
                 others: list[str]) -> None:
    """One line per arm (mean) with a ± std band."""
    for strategy in ordered_strategies(rows["strategy"]):
        mine = rows[rows["strategy"] == strategy].sort_values("epoch")
        epochs = mine["epoch"].to_numpy(dtype=float)
        mean = mine["mean"].to_numpy(dtype=float)
        std = np.nan_to_num(mine["std"].to_numpy(dtype=float))
        n = int(mine["n"].max())
        ax.plot(epochs, mean, marker=_marker(strategy, others), markersize=3,
                color=colors[strategy], label=f"{strategy} (n={n})")
        ax.fill_between(epochs, mean - std, mean + std, color=colors[strategy], alpha=0.15)


def _curve_label(curves: pd.DataFrame) -> str:
    keys = set(curves["key"])
    if keys == {"val_accuracy"}:
        return "validation accuracy (%)"
    return "test accuracy (%)" if keys == {"accuracy"} else "accuracy (%; test or val)"


def plot_curves_grid(curves: pd.DataFrame, path: Path) -> Path:
    """Per-epoch accuracy of every (task, ratio): rows tasks, columns ratios."""
    tasks = ordered_tasks(curves["task"])
    ratios = ordered_ratios(curves["ratio"])
    arms = ordered_strategies(curves["strategy"])
    colors = _strategy_colors(arms)
    others = [s for s in arms if s not in MARKERS]
    fig = Figure(figsize=(3.6 * len(ratios) + 0.8, 3.0 * len(tasks) + 0.6))
    axes = fig.subplots(len(tasks), len(ratios), squeeze=False)
    for i, task in enumerate(tasks):
        for j, ratio in enumerate(ratios):
            ax = axes[i][j]
            rows = curves[(curves["task"] == task) & np.isclose(curves["ratio"], ratio)]
            if rows.empty:
                ax.set_axis_off()
                continue
            _draw_curves(ax, rows, colors, others)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_title(f"{task}, {format_ratio(ratio)}", fontsize="medium")
            ax.grid(alpha=0.3)
            if i == len(tasks) - 1:
                ax.set_xlabel("epoch")
            if j == 0:
                ax.set_ylabel(_curve_label(curves))
    handles = [Line2D([], [], color=colors[s], marker=_marker(s, others), label=s) for s in arms]
    fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 6),
               bbox_to_anchor=(0.5, 0.0))
    fig.suptitle("Accuracy per epoch: mean ± std over seeds")
    fig.tight_layout()
    return _save(fig, path)


def plot_accuracy_curves(curves: pd.DataFrame, task: str, ratio: float, path: Path) -> Path:
    """Per-epoch accuracy of one (task, ratio), one line per arm; returns ``path``."""
    arms = ordered_strategies(curves["strategy"])
    colors = _strategy_colors(arms)
    others = [s for s in arms if s not in MARKERS]
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
    _draw_curves(ax, curves, colors, others)
    if not curves.empty and curves["epoch"].max() <= 20:
        ax.set_xticks(range(1, int(curves["epoch"].max()) + 1))
    ax.set_xlabel("epoch")
    ax.set_ylabel(_curve_label(curves))
    ratio_text = format_ratio(ratio) if not math.isnan(ratio) else "?"
    ax.set_title(f"{task}, {ratio_text} training data: accuracy per epoch (mean ± std)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)
