"""The report's Setup section: what the runs recorded about how they were trained.

Read only from the params and tags of the current final-phase runs (see :mod:`results.configs`):
settings with one value everywhere are listed once, settings that differ only between arms go
in a per-arm table, the data facts (source, label set, split sizes) in a per-(task, ratio)
table, and anything that varies within an arm is listed with its values. Whether a task ran
the paper's setting (RoBERTa-large fine-tuned on the paper's label sets) is stated here; the
paper column and Δ of Table 1 depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from results import paper
from results.tables import (
    DASH,
    current_final,
    format_ratio,
    markdown_table,
    ordered_ratios,
    ordered_strategies,
    ordered_tasks,
    param,
)

SETTINGS: tuple[tuple[str, str], ...] = (
    ("model", "model"),
    ("mode", "mode"),
    ("pooling", "pooling"),
    ("pair_encoding", "pair encoding"),
    ("mlp_hidden", "MLP hidden units"),
    ("max_length", "max length"),
    ("dropout", "dropout"),
    ("epochs", "epochs (setting)"),
    ("min_updates", "min updates"),
    ("selection", "epoch selection"),
    ("refit", "select, then refit"),
    ("patience", "patience"),
    ("batch_size", "batch size"),
    ("lr", "encoder lr"),
    ("head_lr", "head lr"),
    ("weight_decay", "weight decay"),
    ("warmup_ratio", "warmup ratio"),
    ("grad_clip", "grad clip"),
    ("loss", "loss"),
    ("clean_loss", "clean loss"),
    ("alpha", "alpha"),
    ("temperature", "temperature"),
    ("batchmix_points", "BatchMixup points"),
    ("mix_samples", "mix samples"),
    ("mixup_variant", "mixup variant"),
    ("precision", "precision"),
    ("update_path", "update path"),
    ("encoder_forward", "encoder forward"),
    ("eval_split", "eval split"),
    ("val_fraction", "val fraction"),
    ("val_min_examples", "val min examples"),
    ("val_max_fraction", "val max fraction"),
)
"""Training settings in the order the Setup section lists them (param name, label)."""

DATA_PARAMS: tuple[tuple[str, str], ...] = (
    ("data_source", "data source"),
    ("num_labels", "labels"),
    ("none_relations", "None relations"),
    ("n_train", "train examples"),
    ("n_val", "val examples"),
    ("n_test", "test examples"),
)
"""Per (task, ratio) data facts."""

NOT_APPLICABLE = "n/a"


@dataclass
class Setting:
    """The Setup section's content."""

    runs: int
    common: list[tuple[str, str]] = field(default_factory=list)
    per_arm: pd.DataFrame = field(default_factory=pd.DataFrame)
    varying: list[tuple[str, str]] = field(default_factory=list)
    data: pd.DataFrame = field(default_factory=pd.DataFrame)
    hardware: list[tuple[str, int]] = field(default_factory=list)
    paper_tasks: dict[str, bool] = field(default_factory=dict)
    model: str = ""
    mode: str = ""


def _values(runs: pd.DataFrame, name: str) -> pd.Series:
    """A param per run, "" where the run did not log it (the setting does not apply);
    ``refit``, logged only when on, reads ``off`` on the other best_val runs."""
    values = param(runs, name)
    if name == "refit":
        values = values.mask((values == "") & (param(runs, "selection") == "best_val"), "off")
    return values


@dataclass
class _Split:
    """Settings sorted by where they vary."""

    common: list[tuple[str, str]] = field(default_factory=list)
    per_arm: list[str] = field(default_factory=list)
    per_task: list[str] = field(default_factory=list)
    varying: list[tuple[str, str]] = field(default_factory=list)


def _constant_within(values: pd.Series, groups: pd.Series) -> bool:
    return bool((values.groupby(groups).nunique() <= 1).all())


def _classify(runs: pd.DataFrame) -> _Split:
    """Sort :data:`SETTINGS` into common (label, value), per-arm and per-task names, and the
    ones that vary otherwise (label, "value (k runs), ...")."""
    split = _Split()
    for name, label in SETTINGS:
        values = _values(runs, name)
        if (values == "").all():
            continue
        if values.nunique() == 1:
            split.common.append((label, values.iloc[0]))
        elif _constant_within(values, runs["strategy"]):
            split.per_arm.append(name)
        elif _constant_within(values, runs["task"]):
            split.per_task.append(name)
        else:
            counts = values.replace("", NOT_APPLICABLE).value_counts()
            text = ", ".join(f"{v} ({c} runs)" for v, c in sorted(counts.items()))
            split.varying.append((label, text))
    return split


def _per_arm_table(runs: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """One row per arm: its algorithm, what its declaration says (label, family, where it
    mixes; a plug-in's ``module:NAME@hash``), and the value of each per-arm setting."""
    labels = dict(SETTINGS)
    sources = runs["strategy_source"] if "strategy_source" in runs else pd.Series(dtype=str)
    plugins = bool((sources.fillna("") != "").any())
    rows = []
    for arm in ordered_strategies(runs["strategy"]):
        mine = runs[runs["strategy"] == arm]
        first = mine.iloc[0]
        row = {"Arm": arm, "Algorithm": str(first["algorithm"]),
               "Label": str(first["strategy_label"]), "Family": str(first["strategy_family"]),
               "Mixes at": str(first["strategy_site"])}
        if plugins:
            row["Plug-in source"] = str(first.get("strategy_source") or "") or "built-in"
        for name in names:
            value = _values(mine, name).iloc[0]
            row[labels[name]] = value or NOT_APPLICABLE
        rows.append(row)
    return pd.DataFrame(rows)


def _data_table(runs: pd.DataFrame, per_task: list[str]) -> pd.DataFrame:
    """One row per (task, ratio): the data facts and the ``per_task`` settings (distinct
    values joined by ", "; n/a where the setting does not apply to the task)."""
    labels = dict(SETTINGS)
    rows = []
    for task in ordered_tasks(runs["task"]):
        mine = runs[runs["task"] == task]
        for ratio in ordered_ratios(mine["ratio"]):
            here = mine[mine["ratio"] == ratio]
            row = {"task": task, "ratio": ratio}
            for name, label in DATA_PARAMS:
                distinct = sorted(set(_values(here, name)) - {""}, key=_numeric_first)
                row[label] = ", ".join(distinct) if distinct else DASH
            label_count = row["labels"]
            if task in paper.LABELS:
                row["labels"] = f"{label_count} (paper: {paper.LABELS[task]})"
            for name in per_task:
                row[labels[name]] = _values(here, name).iloc[0] or NOT_APPLICABLE
            rows.append(row)
    return pd.DataFrame(rows)


def _numeric_first(text: str) -> tuple[int, float, str]:
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def paper_tasks(runs: pd.DataFrame) -> dict[str, bool]:
    """Per task: did every current run of it use the paper's setting?"""
    out: dict[str, bool] = {}
    model, mode, labels = param(runs, "model"), param(runs, "mode"), param(runs, "num_labels")
    for i, task in enumerate(runs["task"]):
        ok = paper.matches_setting(task, model.iloc[i], mode.iloc[i], labels.iloc[i])
        out[task] = out.get(task, True) and ok
    return {task: out[task] for task in ordered_tasks(out)}


def describe(runs: pd.DataFrame) -> Setting:
    """The Setup of the current final-phase runs (any status)."""
    finals = current_final(runs)
    split = _classify(finals)
    hardware = finals["hardware"].replace("", "unknown").value_counts()
    return Setting(
        runs=len(finals),
        common=split.common,
        per_arm=_per_arm_table(finals, split.per_arm),
        varying=split.varying,
        data=_data_table(finals, split.per_task),
        hardware=sorted(hardware.items(), key=lambda kv: (-kv[1], kv[0])),
        paper_tasks=paper_tasks(finals),
        model=", ".join(sorted(set(param(finals, "model")) - {""})) or "not recorded",
        mode=", ".join(sorted(set(param(finals, "mode")) - {""})) or "not recorded",
    )


def _paper_line(facts: Setting) -> str:
    """Whether (and for which tasks) the runs used the paper's setting."""
    matched = [t for t, ok in facts.paper_tasks.items() if ok]
    theirs = ", ".join(f"{t} {n}" for t, n in paper.LABELS.items())
    base = (f"**Paper setting** ({paper.MODEL}, mode {paper.MODE}, label sets {theirs}): ")
    if not matched:
        return (base + f"**not this setting** (model {facts.model}, mode {facts.mode}; see the "
                "label counts below). The paper's numbers are shown as reference only, "
                "without Δ.")
    unmatched = [t for t, ok in facts.paper_tasks.items() if not ok]
    text = base + f"matched for {', '.join(matched)}: Table 1 shows the paper's column and Δ"
    if unmatched:
        text += f"; not for {', '.join(unmatched)} (reference only)"
    return text + "."


def setup_markdown(facts: Setting) -> str:
    """The Setup section's body as markdown."""
    out = [
        f"From the params and tags of the {facts.runs} final-phase runs of the current "
        "configurations. A setting an arm does not use is not logged for it (n/a).",
        "",
        _paper_line(facts),
        "",
    ]
    if facts.common:
        out += ["Common to every run:", ""]
        out += [markdown_table(["Setting", "Value"], [[k, v] for k, v in facts.common]), ""]
    if not facts.per_arm.empty:
        out += ["Per arm:", ""]
        headers = list(facts.per_arm.columns)
        rows = [[str(v) for v in row] for row in facts.per_arm.itertuples(index=False)]
        out += [markdown_table(headers, rows), ""]
    if facts.varying:
        out += ["Varies within an arm and a task (e.g. tuned per training size):", ""]
        out += [f"- {label}: {text}" for label, text in facts.varying] + [""]
    if not facts.data.empty:
        out += ["Data and per-task settings (sizes: distinct values over seeds):", ""]
        headers = ["Task", "Training data", *facts.data.columns[2:]]
        rows = [[r[0], format_ratio(r[1]), *[str(v) for v in r[2:]]]
                for r in facts.data.itertuples(index=False)]
        out += [markdown_table(headers, rows), ""]
    hardware = "; ".join(f"{name} ({count} runs)" for name, count in facts.hardware)
    out += [f"Hardware: {hardware or 'not recorded'}.", ""]
    return "\n".join(out).rstrip()
