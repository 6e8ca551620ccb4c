"""PNG plots of the report (matplotlib, Agg backend, no display needed).

Figures are built with :class:`matplotlib.figure.Figure` directly rather than ``pyplot``, so
no GUI backend or global figure state is involved; ``savefig`` renders PNGs with Agg.

* :func:`plot_accuracy_vs_ratio` — one subplot per task, test accuracy (%) against the training
  fraction, one line per strategy with ±1 std error bars, the paper's means dashed.
* :func:`plot_epoch_seconds` — one subplot per task, mean seconds per epoch as grouped bars
  (training fraction × strategy/variant).
* :func:`plot_accuracy_curves` — per-epoch test accuracy of one (task, ratio), one line per
  strategy (mean over seeds, ±1 std band).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from results import paper
from results.tables import format_ratio, ordered_ratios, ordered_strategies

DPI = 120


def _strategy_colors(strategies: list[str]) -> dict[str, tuple[float, ...]]:
    """Fixed colours: the paper's four strategies always get the same ones."""
    cmap = matplotlib.colormaps["tab10"]
    names = list(paper.STRATEGIES) + [s for s in strategies if s not in paper.STRATEGIES]
    return {name: cmap(i % 10) for i, name in enumerate(names)}


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def plot_accuracy_vs_ratio(table1: pd.DataFrame, path: Path) -> Path:
    """Accuracy vs training fraction per task from the Table 1 DataFrame; returns ``path``."""
    tasks = list(dict.fromkeys(table1["task"]))
    ratios = ordered_ratios(table1["ratio"])
    strategies = ordered_strategies(table1["strategy"])
    colors = _strategy_colors(strategies)
    x = np.arange(len(ratios))
    fig = Figure(figsize=(5 * len(tasks), 4.2))
    axes = fig.subplots(1, len(tasks), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        rows = table1[table1["task"] == task]
        for strategy in strategies:
            cells = rows[rows["strategy"] == strategy].set_index("ratio").reindex(ratios)
            mean = cells["mean"].to_numpy(dtype=float)
            std = np.nan_to_num(cells["std"].to_numpy(dtype=float))
            if not np.isnan(mean).all():
                ax.errorbar(
                    x,
                    mean,
                    yerr=std,
                    marker="o",
                    capsize=3,
                    color=colors[strategy],
                    label=strategy,
                )
            ref = cells["paper_mean"].to_numpy(dtype=float)
            if not np.isnan(ref).all():
                ax.plot(x, ref, linestyle="--", marker="x", alpha=0.6, color=colors[strategy])
        ax.set_xticks(x, [format_ratio(r) for r in ratios])
        ax.set_xlabel("training data (fraction of train set)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{task}: accuracy vs training data")
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colors[s], marker="o", label=s) for s in strategies]
    handles += [
        Line2D([], [], color="grey", marker="o", label="ours (mean ± std over seeds)"),
        Line2D([], [], color="grey", linestyle="--", marker="x", label="paper (Table 1)"),
    ]
    fig.legend(
        handles=handles, loc="lower center", ncol=min(len(handles), 6), bbox_to_anchor=(0.5, -0.08)
    )
    fig.tight_layout()
    return _save(fig, path)


def plot_epoch_seconds(efficiency: pd.DataFrame, path: Path) -> Path:
    """Grouped bars of mean seconds per epoch, one subplot per task; returns ``path``."""
    tasks = list(dict.fromkeys(efficiency["task"]))
    labels = efficiency.assign(
        label=[
            r.strategy
            if not r.mixup_variant and not r.mix_samples
            else f"{r.strategy} ({r.mixup_variant or '?'}, {r.mix_samples or '?'} samples)"
            for r in efficiency.itertuples()
        ]
    )
    series = list(dict.fromkeys(labels["label"]))
    cmap = matplotlib.colormaps["tab10"]
    fig = Figure(figsize=(5.5 * len(tasks), 4.2))
    axes = fig.subplots(1, len(tasks), squeeze=False)
    width = 0.8 / max(len(series), 1)
    for ax, task in zip(axes[0], tasks, strict=True):
        rows = labels[labels["task"] == task]
        ratios = ordered_ratios(rows["ratio"])
        x = np.arange(len(ratios))
        for i, label in enumerate(series):
            bars = rows[rows["label"] == label].set_index("ratio").reindex(ratios)
            heights = bars["mean_epoch_seconds"].to_numpy(dtype=float)
            if np.isnan(heights).all():
                continue
            ax.bar(
                x + (i - (len(series) - 1) / 2) * width,
                np.nan_to_num(heights),
                width,
                color=cmap(i % 10),
                label=label,
            )
        ax.set_xticks(x, [format_ratio(r) for r in ratios])
        ax.set_xlabel("training data (fraction of train set)")
        ax.set_ylabel("mean seconds per epoch")
        ax.set_title(f"{task}: epoch time per strategy")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    return _save(fig, path)


def plot_accuracy_curves(curves: pd.DataFrame, task: str, ratio: float, path: Path) -> Path:
    """Per-epoch test accuracy of one (task, ratio), one line per strategy; returns ``path``."""
    colors = _strategy_colors(list(curves["strategy"].unique()))
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
    for strategy in ordered_strategies(curves["strategy"]):
        rows = curves[curves["strategy"] == strategy].sort_values("epoch")
        n = int(rows["n"].max())
        epochs = rows["epoch"].to_numpy(dtype=float)
        mean = rows["mean"].to_numpy(dtype=float)
        std = np.nan_to_num(rows["std"].to_numpy(dtype=float))
        ax.plot(epochs, mean, marker="o", color=colors[strategy], label=f"{strategy} (n={n})")
        ax.fill_between(epochs, mean - std, mean + std, color=colors[strategy], alpha=0.15)
    if not curves.empty and curves["epoch"].max() <= 20:
        ax.set_xticks(range(1, int(curves["epoch"].max()) + 1))
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ratio_text = format_ratio(ratio) if not math.isnan(ratio) else "?"
    ax.set_title(f"{task}, {ratio_text} training data: accuracy per epoch (mean ± std)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)
