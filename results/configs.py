"""Which configuration of each (task, ratio, arm) the report shows, and the others.

Every cell run carries a ``fingerprint`` tag naming its whole configuration except the seed
(settings, model identity, data content). A relaunch with changed settings makes new runs with
a new fingerprint and leaves the old ones in the experiment, so one (task, ratio, arm) can
hold several configurations. The report shows one per group, the *current* one:

1. the fingerprint the latest launch recorded for the group's cells in the summary run's
   ``manifest.json`` (``{"cells": {"task/ratio/arm/seed": fingerprint}}``), else
2. the fingerprint of the group's latest-started run.

Runs that predate fingerprints have ``fingerprint == ""``, which counts as one configuration
of its own. Every other configuration stays out of the tables and is listed by
:func:`other_configurations`.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pandas as pd

GroupKey = tuple[str, float, str]
"""(task, ratio rounded to 9 digits, arm)."""

PARAM_PREFIX = "param."
IGNORED_PARAMS = {"seed", "n_train", "n_val", "n_test", "train_subset"}  # vary by seed
"""Params that differ between runs of one configuration (seed and the seed's split sizes)."""


def group_key(task: str, ratio: float, arm: str) -> GroupKey:
    """The key of a (task, ratio, arm) group; ratios compared to 9 decimals."""
    return (task, round(float(ratio), 9), arm)


def parse_cell_name(name: str) -> tuple[str, float, str, str] | None:
    """``task/ratio/arm/seed`` -> its parts (ratio as a float); None if it is not one."""
    parts = name.split("/")
    if len(parts) != 4 or not all(parts):
        return None
    try:
        ratio = float(parts[1])
    except ValueError:
        return None
    if not math.isfinite(ratio):
        return None
    return parts[0], ratio, parts[2], parts[3]


def manifest_fingerprints(manifest: dict[str, Any] | None) -> dict[GroupKey, str]:
    """The fingerprint the latest final-phase launch recorded per group (most frequent one
    should a group's cells disagree, which a well-formed manifest never does)."""
    if not manifest or manifest.get("phase", "final") != "final":
        return {}
    votes: dict[GroupKey, Counter[str]] = {}
    for name, fingerprint in manifest.get("cells", {}).items():
        parts = parse_cell_name(str(name))
        if parts is None:
            continue
        key = group_key(parts[0], parts[1], parts[2])
        votes.setdefault(key, Counter())[str(fingerprint)] += 1
    return {key: count.most_common(1)[0][0] for key, count in votes.items()}


def manifest_cells(manifest: dict[str, Any] | None) -> list[tuple[str, float, str, str]]:
    """The (task, ratio, arm, seed) cells of the latest final-phase launch."""
    if not manifest or manifest.get("phase", "final") != "final":
        return []
    cells = [parse_cell_name(str(name)) for name in manifest.get("cells", {})]
    return [cell for cell in cells if cell is not None]


def _keys(runs: pd.DataFrame) -> list[GroupKey]:
    return [group_key(t, r, a) for t, r, a in
            zip(runs["task"], runs["ratio"], runs["strategy"], strict=True)]


def current_fingerprints(runs: pd.DataFrame,
                         manifest: dict[str, Any] | None) -> dict[GroupKey, tuple[str, str]]:
    """Per group of final-phase runs: (current fingerprint, where it came from)."""
    from_manifest = manifest_fingerprints(manifest)
    finals = runs[runs["phase"] != "search"]
    ordered = finals.assign(_key=_keys(finals)).sort_values(["start_time", "run_id"])
    latest = ordered.drop_duplicates("_key", keep="last")
    chosen: dict[GroupKey, tuple[str, str]] = {}
    for key, fingerprint in zip(latest["_key"], latest["fingerprint"], strict=True):
        if key in from_manifest:
            chosen[key] = (from_manifest[key], "manifest")
        else:
            chosen[key] = (str(fingerprint), "latest run")
    for key, fingerprint in from_manifest.items():
        chosen.setdefault(key, (fingerprint, "manifest"))
    return chosen


def mark_current(runs: pd.DataFrame, manifest: dict[str, Any] | None) -> pd.DataFrame:
    """``runs`` with a boolean ``current`` column: search trials and the final-phase runs of
    their group's current configuration."""
    chosen = current_fingerprints(runs, manifest)
    current = [
        phase == "search" or chosen.get(key, (None, ""))[0] == str(fingerprint)
        for key, phase, fingerprint in
        zip(_keys(runs), runs["phase"], runs["fingerprint"], strict=True)
    ]
    return runs.assign(current=current)


def _param_values(runs: pd.DataFrame) -> dict[str, set[str]]:
    """Every param's set of values over ``runs`` ("" where a run did not log it)."""
    out: dict[str, set[str]] = {}
    for column in runs.columns:
        if not column.startswith(PARAM_PREFIX):
            continue
        name = column[len(PARAM_PREFIX):]
        if name in IGNORED_PARAMS:
            continue
        values = {"" if isinstance(v, float) and math.isnan(v) else str(v) for v in runs[column]}
        out[name] = values
    return out


def param_differences(other: pd.DataFrame, current: pd.DataFrame) -> str:
    """The params whose values differ between two sets of runs, as ``name: a (current b)``."""
    mine, theirs = _param_values(other), _param_values(current)
    parts = []
    for name in sorted(set(mine) | set(theirs)):
        a, b = mine.get(name, {""}), theirs.get(name, {""})
        if a != b:
            show_a = ", ".join(sorted(v or "unset" for v in a))
            show_b = ", ".join(sorted(v or "unset" for v in b))
            parts.append(f"{name}: {show_a} (current {show_b})")
    return "; ".join(parts)


def other_configurations(runs: pd.DataFrame) -> pd.DataFrame:
    """Final-phase runs that are not of their group's current configuration, one row per
    (task, ratio, arm, fingerprint): run counts, seeds, the params that differ from the
    current configuration, and the MLflow search that finds them."""
    columns = ["task", "ratio", "strategy", "fingerprint", "runs", "finished", "seeds",
               "differs", "query"]
    finals = runs[runs["phase"] != "search"]
    others = finals[~finals["current"]]
    rows = []
    for (task, ratio, arm, fingerprint), group in others.groupby(
            ["task", "ratio", "strategy", "fingerprint"], sort=False):
        current = finals[finals["current"] & (finals["task"] == task)
                         & (finals["ratio"] == ratio) & (finals["strategy"] == arm)]
        differs = param_differences(group, current) if not current.empty else ""
        rows.append({
            "task": task,
            "ratio": ratio,
            "strategy": arm,
            "fingerprint": fingerprint,
            "runs": len(group),
            "finished": int((group["status"] == "FINISHED").sum()),
            "seeds": " ".join(sorted(set(group["seed"]), key=_seed_key)),
            "differs": differs or "no logged param differs",
            "query": f"tags.fingerprint = '{fingerprint}'" if fingerprint else
            f"tags.cell LIKE '{task}/{ratio:g}/{arm}/%' and tags.fingerprint IS NULL",
        })
    return pd.DataFrame(rows, columns=columns)


def _seed_key(seed: str) -> tuple[int, float, str]:
    try:
        return (0, float(seed), "")
    except ValueError:
        return (1, 0.0, seed)
