"""Epoch times of the report: like with like only.

An epoch time is comparable with another only when both ran the same code path on the same
hardware: on CPU the frozen arms whose strategy declares a fused head update (``Strategy.fused``:
the baseline, mixup, nonlinear mixup) update their head with the fused closed-form backward
(``update_path=fused``) while the others (BatchMixup, every fine-tuned arm) run autograd
(``update_path=autograd``). So ``× none`` is computed only against a baseline row (a strategy
of family ``unmixed``) of the same (task, ratio, update path, hardware), and the paper's claim
(Section 5: BatchMixup ≈ 1× and 15-sample mixup ≈ 13× the plain model, per RTE epoch of
RoBERTa-large fine-tuning on a V100) is set only beside fine-tuned rows whose strategy and
sample count match it (:func:`results.paper.paper_time_ratio`). Each row also says how many
forward passes and optimizer updates a batch costs its strategy, as the strategy declared them.
"""

from __future__ import annotations

import math

import pandas as pd

from results import paper
from results.tables import (
    DASH,
    UNMIXED,
    _algorithm,
    current_final,
    format_ratio,
    markdown_table,
    param,
    sort_rows,
    strategy_family,
)

COLUMNS = [
    "task", "ratio", "strategy", "update_path", "mode", "mixup_variant", "mix_samples",
    "passes", "hardware", "runs", "epochs", "mean_epoch_seconds", "std_epoch_seconds",
    "mean_examples_per_second", "ratio_to_none", "paper_ratio", "note",
    "peak_rss_mib", "gpu_peak_allocated_mib", "gpu_peak_reserved_mib", "cpu_seconds",
]
PEAKS = ("peak_rss_mib", "gpu_peak_allocated_mib", "gpu_peak_reserved_mib")
"""Peak memory the trials measured of themselves (trainers/resources.py): max over runs."""
KEY = ["task", "ratio", "strategy", "update_path", "mode", "mixup_variant", "mix_samples",
       "hardware"]
UNKNOWN = "unknown"


def _keyed_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Finished current runs with their efficiency key columns."""
    done = current_final(runs)
    done = done[done["status"] == "FINISHED"]
    # A strategy logs only the settings it reads: mixup_variant and mix_samples are "" for
    # the others.
    return done[["run_id", "task", "ratio", "strategy"]].assign(
        algorithm=_algorithm(done),
        family=strategy_family(done),
        update_path=param(done, "update_path").replace("", UNKNOWN),
        mode=param(done, "mode"),
        mixup_variant=param(done, "mixup_variant"),
        mix_samples=param(done, "mix_samples"),
        hardware=done["hardware"].replace("", UNKNOWN),
        passes=_passes(done),
    )


def _passes(runs: pd.DataFrame) -> pd.Series:
    """``forward passes / updates`` per batch, as the run's strategy declared them (tags
    ``forward_passes_per_batch``, ``updates_per_batch``); "" for runs without the tags."""
    def column(name: str) -> pd.Series:
        values = runs[name] if name in runs.columns else pd.Series("", index=runs.index)
        return values.fillna("").astype(str)

    forward, updates = column("forward_passes_per_batch"), column("updates_per_batch")
    return (forward + " / " + updates).where((forward != "") & (updates != ""), "")


def _per_run_times(runs: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """Mean epoch_seconds and examples_per_second of each run over its epochs."""
    keys = ["epoch_seconds", "examples_per_second"]
    epochs = history[history["key"].isin(keys)]
    epochs = epochs.sort_values("timestamp").drop_duplicates(["run_id", "key", "step"],
                                                              keep="last")
    per_run = epochs.pivot_table(index="run_id", columns="key", values="value",
                                 aggfunc=["mean", "count"])
    out = pd.DataFrame(index=per_run.index)
    for key in keys:
        out[key] = per_run[("mean", key)] if ("mean", key) in per_run.columns else math.nan
    out["epochs"] = (per_run[("count", "epoch_seconds")]
                     if ("count", "epoch_seconds") in per_run.columns else 0)
    return out.reset_index()


def efficiency(runs: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """Seconds per epoch per (task, ratio, arm, update path, mode, mixup variant and samples,
    hardware) over the finished current runs.

    ``mean_epoch_seconds`` / ``std_epoch_seconds``: mean and sample std over runs of each
    run's mean epoch time; ``ratio_to_none``: divided by the baseline row (a strategy of
    family ``unmixed``) with the same
    (task, ratio, update path, hardware), NaN (with a ``note``) when there is none;
    ``paper_ratio``: the paper's claim where it applies (:func:`paper_ratio`).
    """
    keyed = _keyed_runs(runs)
    measured = pd.DataFrame({"run_id": runs["run_id"]})
    for key in (*PEAKS, "cpu_seconds"):
        column = f"resource.{key}"
        measured[key] = runs[column].to_numpy() if column in runs.columns else math.nan
    keyed = keyed.merge(measured, on="run_id", how="left")
    merged = keyed.merge(_per_run_times(runs, history), on="run_id", how="inner")
    merged = merged[merged["epoch_seconds"].notna()]
    rows = []
    for values, group in merged.groupby(KEY, sort=False):
        row = dict(zip(KEY, values, strict=True))
        row.update(
            algorithm=str(group["algorithm"].iloc[0]),
            passes=str(group["passes"].iloc[0]),
            family=str(group["family"].iloc[0]),
            runs=int(len(group)),
            epochs=int(group["epochs"].sum()),
            mean_epoch_seconds=float(group["epoch_seconds"].mean()),
            std_epoch_seconds=float(group["epoch_seconds"].std(ddof=1))
            if len(group) > 1 else math.nan,
            mean_examples_per_second=float(group["examples_per_second"].mean()),
            cpu_seconds=float(group["cpu_seconds"].mean()),
            **{key: float(group[key].max()) for key in PEAKS},
        )
        rows.append(row)
    table = pd.DataFrame(rows, columns=[*COLUMNS, "algorithm", "family"])
    if table.empty:
        return table[COLUMNS]
    _add_ratios(table)
    return sort_rows(table[COLUMNS], extra=["update_path", "mixup_variant", "mix_samples"])


def _add_ratios(table: pd.DataFrame) -> None:
    """Fill ``ratio_to_none``, ``paper_ratio`` and ``note`` in place."""
    nones = table[table["family"] == UNMIXED]
    same = {(r.task, round(r.ratio, 9), r.update_path, r.hardware): r.mean_epoch_seconds
            for r in nones.itertuples()}
    ratio, note = [], []
    for r in table.itertuples():
        base = same.get((r.task, round(r.ratio, 9), r.update_path, r.hardware))
        ratio.append(r.mean_epoch_seconds / base if base else math.nan)
        if base or r.family == UNMIXED:
            note.append("")
            continue
        others = nones[(nones["task"] == r.task) & (nones["ratio"] == r.ratio)]
        paths = sorted(set(others["update_path"]))
        note.append(f"none ran {', '.join(paths)}: not comparable" if paths else "no none row")
    table["ratio_to_none"] = ratio
    table["note"] = note
    table["paper_ratio"] = [
        paper_ratio(r.algorithm, r.mode, r.mixup_variant, r.mix_samples)
        for r in table.itertuples()
    ]


def paper_ratio(algorithm: str, mode: str, variant: str, mix_samples: str) -> float:
    """The paper's epoch-time ratio for a row, or NaN where the paper's setting differs.

    Only fine-tuned rows (the paper fine-tunes RoBERTa-large; a frozen encoder removes the
    cost the claim is about). The ≈13× of (nonlinear) mixup is for 15 beta samples per pair,
    each its own update (``mixup_variant=faithful``).
    """
    claim = paper.paper_time_ratio(algorithm, mix_samples, variant)
    if claim is None or mode != paper.MODE:
        return math.nan
    return claim


def format_seconds(seconds: float, std: float = math.nan) -> str:
    """Seconds in a readable unit: "12.3 ms" below one second, "4.56 s" above; ± std."""
    if math.isnan(seconds):
        return DASH
    scale, unit, digits = (1000.0, "ms", 1) if seconds < 1 else (1.0, "s", 2)
    text = f"{seconds * scale:.{digits}f}"
    if not math.isnan(std):
        text += f" ± {std * scale:.{digits}f}"
    return f"{text} {unit}"


def format_memory(row: pd.Series) -> str:
    """ "RSS 812 MiB" and, on CUDA, "GPU 5.10 / 6.00 GiB (allocated / reserved)"."""
    def number(key: str) -> float:
        value = row.get(key, math.nan)
        return math.nan if value is None or pd.isna(value) else float(value)

    parts = []
    if not math.isnan(number("peak_rss_mib")):
        parts.append(f"RSS {number('peak_rss_mib'):,.0f} MiB")
    if not math.isnan(number("gpu_peak_allocated_mib")):
        parts.append(f"GPU {number('gpu_peak_allocated_mib') / 1024:.2f} / "
                     f"{number('gpu_peak_reserved_mib') / 1024:.2f} GiB (allocated / reserved)")
    return "; ".join(parts) or DASH


def efficiency_markdown(table: pd.DataFrame) -> str:
    """The efficiency table as markdown."""
    if table.empty:
        return "_No epoch_seconds were logged._"
    headers = ["Task", "Training data", "Arm", "update path", "mode", "variant", "mix samples",
               "forward passes / updates per batch", "runs", "epoch time (mean ± std over runs)",
               "examples/s", "× none", "paper × none", "peak memory (max over runs)",
               "hardware"]
    rows = []
    for _, r in table.iterrows():
        times = DASH if math.isnan(r["ratio_to_none"]) else f"{r['ratio_to_none']:.2f}×"
        if r["note"]:
            times = f"{DASH} ({r['note']})"
        rows.append([
            r["task"], format_ratio(r["ratio"]), r["strategy"], r["update_path"],
            r["mode"] or DASH, r["mixup_variant"] or DASH, r["mix_samples"] or DASH,
            r["passes"] or DASH, str(r["runs"]),
            format_seconds(r["mean_epoch_seconds"], r["std_epoch_seconds"]),
            DASH if math.isnan(r["mean_examples_per_second"])
            else f"{r['mean_examples_per_second']:,.0f}",
            times,
            DASH if math.isnan(r["paper_ratio"]) else f"≈{r['paper_ratio']:.1f}×",
            format_memory(r),
            r["hardware"],
        ])
    return markdown_table(headers, rows)

