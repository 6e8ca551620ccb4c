"""Store-level tests of ``results.report`` on a real MLflow sqlite store.

One module-scoped store holds a sweep written with exactly the schema the sweep records
(orchestrator.tracking, trainers.loop, trainers.budget): 2 tasks × 2 ratios × 4 arms × 3 seeds,
3 epochs each, ``selection=best_val`` with patience 1, the cell's result logged at its last
epoch (selected epoch, updates, converged, ``test_accuracy`` with its integer counts), a
``test_predictions.json`` artifact per run, and the launch manifest on the summary run. Also:
one whole cell in the manifest without runs (banking77 / 1.0 / nonlinear_mixup), one FAILED
run, two runs of an older configuration (another fingerprint), and a few phase=search trials.
Expected numbers are computed here from the values that were logged.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

from results import paper, stats
from results.report import ReportError, main, write_report
from results.runs import resolve_tracking_uri

EXPERIMENT = "sweep-test"
TASKS = ("rte", "banking77")
RATIOS = ("1.0", "0.25")
ARMS = ("none", "mixup", "nonlinear_mixup", "batchmixup")
SEEDS = ("0", "1", "2")
EPOCHS = 3
N_TEST = {"rte": 277, "banking77": 300}
LABELS = {"rte": 2, "banking77": 77}
MODEL = {"rte": "roberta-large", "banking77": "FacebookAI/roberta-large"}  # two hub spellings
N_TRAIN = {"1.0": 400, "0.25": 100}
BATCH = 16
MISSING = ("banking77", "1.0", "nonlinear_mixup")
FAILED = ("rte", "0.25", "mixup", "2")
UNCONVERGED = ("rte", "0.25", "batchmixup", "1")
OLD = ("rte", "1.0", "none")
OLD_FINGERPRINT = "00000000deadbeef"
FAILURE_REASON = "CUDA out of memory in epoch 2"
HARDWARE = "NVIDIA H100 80GB HBM3, bf16"
BASE_SECONDS = {"none": 10.0, "mixup": 130.0, "nonlinear_mixup": 40.0, "batchmixup": 10.5}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fingerprint(task: str, ratio: str, arm: str) -> str:
    """The configuration's fingerprint: the same for every seed of a group."""
    return hashlib.sha256(f"{task}/{ratio}/{arm}".encode()).hexdigest()[:16]


def updates_per_epoch(arm: str, ratio: str) -> int:
    per_batch = 15 if arm == "mixup" else 1  # mixup is faithful with 15 samples
    return math.ceil(N_TRAIN[ratio] / BATCH) * per_batch


@dataclass
class Store:
    """The fixture store and what was logged to it."""

    uri: str
    tmp: Path
    result: dict[tuple[str, str, str, str], dict[str, float]] = field(default_factory=dict)
    last_accuracy: dict[tuple[str, str, str, str], float] = field(default_factory=dict)
    epoch_seconds: dict[tuple[str, str, str], list[list[float]]] = field(default_factory=dict)
    search_val: dict[tuple[str, str, str], list[tuple[float, str, str]]] = field(
        default_factory=dict
    )


def cell_params(task: str, ratio: str, strategy: str, **extra: str) -> dict[str, str]:
    """The applicable params of a cell, as CellConfig.params() and the trial log them."""
    values = {
        "task": task, "ratio": ratio, "strategy": strategy, "arm": strategy,
        "model": MODEL[task], "mode": "finetune", "pooling": "cls", "mlp_hidden": "0",
        "max_length": "128", "epochs": str(EPOCHS), "batch_size": str(BATCH), "lr": "1e-05",
        "head_lr": "0.001", "weight_decay": "0.01", "warmup_ratio": "0.1", "grad_clip": "1.0",
        "eval_split": "test", "selection": "best_val", "patience": "1", "min_updates": "0",
        "val_fraction": "0.2", "val_min_examples": "30", "val_max_fraction": "0.4",
        "dropout": "0.1", "precision": "bf16", "update_path": "autograd",
        "data_source": f"hub:{task}", "num_labels": str(LABELS[task]),
        "n_train": str(N_TRAIN.get(ratio, 100)), "n_val": "30", "n_test": str(N_TEST[task]),
    }
    if strategy != "none":
        values.update(alpha="0.4", loss="soft_ce", clean_loss="True")
    if strategy in ("mixup", "nonlinear_mixup"):
        values.update(mix_samples="15" if strategy == "mixup" else "4",
                      mixup_variant="faithful" if strategy == "mixup" else "shared")
    if strategy == "batchmixup":
        values.update(temperature="1.0", batchmix_points="0")
    values.update(extra)
    return values


def cell_tags(task: str, ratio: str, strategy: str, seed: str, **extra: str) -> dict[str, str]:
    """The tags of a cell run (the arm is the strategy unless ``arm`` is given)."""
    tags = {
        "kind": "cell", "task": task, "ratio": ratio, "strategy": strategy, "arm": strategy,
        "seed": seed, "sweep": EXPERIMENT, "phase": "final", "hardware": HARDWARE,
        "git_commit": "abc1234", "ray_trial_id": f"trial_{task}_{ratio}_{strategy}_{seed}",
        "cell": f"{task}/{float(ratio):g}/{strategy}/{seed}",
        "fingerprint": fingerprint(task, ratio, strategy),
    }
    tags.update(extra)
    return tags


def log_cell(
    client: MlflowClient, exp_id: str, tags: dict[str, str], params: dict[str, str],
    epochs: list[dict[str, float]], result: dict[str, float] | None,
    predictions: dict[str, Any] | None, status: str = "FINISHED", tmp: Path | None = None,
) -> str:
    """One cell run as the sweep writes it: per-epoch metrics at step = epoch, the result at
    the last epoch's step, the predictions artifact; returns the run id."""
    run = client.create_run(exp_id, run_name=tags["cell"], tags=tags)
    run_id = run.info.run_id
    metrics = [Metric(k, v, 1000 + step, step) for step, values in enumerate(epochs, start=1)
               for k, v in values.items()]
    if result is not None:
        metrics += [Metric(k, v, 2000, len(epochs)) for k, v in result.items()]
    client.log_batch(run_id, metrics=metrics,
                     params=[Param(k, v) for k, v in params.items()])
    if predictions is not None and tmp is not None:
        folder = tmp / run_id
        folder.mkdir(parents=True)
        (folder / "test_predictions.json").write_text(json.dumps(predictions))
        client.log_artifacts(run_id, str(folder))
    client.set_terminated(run_id, status)
    return run_id


def record_manifest(client: MlflowClient, exp_id: str, cells: dict[str, str], tmp: Path) -> str:
    """The summary run with ``manifest.json``, as orchestrator.tracking.record_launch writes."""
    run_id = client.create_run(exp_id, run_name="summary",
                               tags={"kind": "summary", "sweep": EXPERIMENT}).info.run_id
    path = tmp / "manifest.json"
    path.write_text(json.dumps({"phase": "final", "launched": 1_700_000_000.0,
                                "command": "python -m orchestrator.sweep --preset test",
                                "cells": cells}))
    client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, "FINISHED")
    return run_id


def predictions_for(gold: list[int], correct: int, rng: np.random.Generator) -> dict[str, Any]:
    """Predictions right on exactly ``correct`` random examples."""
    right = np.zeros(len(gold), dtype=bool)
    right[rng.choice(len(gold), size=correct, replace=False)] = True
    pred = [g if ok else (g + 1) % 2 for g, ok in zip(gold, right, strict=True)]
    return {"split": "test", "selected_epoch": 2, "gold": gold, "pred": pred}


def _epochs(task: str, ratio: str, arm: str, correct: list[int], selected: int,
            rng: np.random.Generator) -> list[dict[str, float]]:
    n = N_TEST[task]
    out = []
    for epoch, count in enumerate(correct, start=1):
        secs = float(BASE_SECONDS[arm] * float(ratio) * rng.uniform(0.9, 1.1))
        val = 0.5 + 0.1 * epoch if epoch <= selected else 0.5 + 0.1 * selected - 0.05
        out.append({"accuracy": count / n, "macro_f1": count / n - 0.02,
                    "val_accuracy": val, "val_loss": 1.0 - val, "train_loss": 1.0 / epoch,
                    "updates": float(epoch * updates_per_epoch(arm, ratio)),
                    "epoch_seconds": secs, "examples_per_second": 1000.0 / secs})
    return out


def _log_grid(store: Store, client: MlflowClient, exp_id: str,
              rng: np.random.Generator) -> dict[str, str]:
    """The current configuration's cells; returns the manifest's cells."""
    bonus = {"none": 0.0, "mixup": 0.02, "nonlinear_mixup": 0.03, "batchmixup": 0.05}
    manifest: dict[str, str] = {}
    for task in TASKS:
        gold = [int(v) for v in rng.integers(0, 2, N_TEST[task])]
        for ratio in RATIOS:
            for arm in ARMS:
                for seed in SEEDS:
                    key = (task, ratio, arm, seed)
                    tags = cell_tags(task, ratio, arm, seed)
                    manifest[tags["cell"]] = tags["fingerprint"]
                    if (task, ratio, arm) == MISSING:
                        continue
                    n = N_TEST[task]
                    base = 0.6 + 0.2 * float(ratio) + bonus[arm]
                    correct = [int(round(n * (base + rng.normal(0, 0.02) - 0.05 * (3 - e))))
                               for e in range(1, EPOCHS + 1)]
                    selected = 3 if key[:4] == UNCONVERGED else 2
                    epochs = _epochs(task, ratio, arm, correct, selected, rng)
                    params = cell_params(task, ratio, arm)
                    if key == FAILED:
                        log_cell(client, exp_id, {**tags, "failure_reason": FAILURE_REASON},
                                 params, epochs[:1], None, None, "FAILED")
                        continue
                    upe = updates_per_epoch(arm, ratio)
                    result = {"selected_epoch": float(selected),
                              "selected_updates": float(selected * upe),
                              "updates": float(EPOCHS * upe), "stopped_early": 0.0,
                              "converged": float(EPOCHS - selected >= 1),
                              "test_accuracy": correct[selected - 1] / n,
                              "test_macro_f1": correct[selected - 1] / n - 0.02,
                              "test_correct": float(correct[selected - 1]),
                              "test_examples": float(n),
                              "selected_val_accuracy": epochs[selected - 1]["val_accuracy"],
                              "selected_val_loss": epochs[selected - 1]["val_loss"]}
                    log_cell(client, exp_id, tags, params, epochs, result,
                             predictions_for(gold, correct[selected - 1], rng), tmp=store.tmp)
                    store.result[key] = result
                    store.last_accuracy[key] = correct[-1] / n
                    store.epoch_seconds.setdefault(key[:3], []).append(
                        [e["epoch_seconds"] for e in epochs])
    return manifest


def _log_old_configuration(store: Store, client: MlflowClient, exp_id: str) -> None:
    """Two runs of an older rte/1.0/none configuration (epochs=5, better accuracy), logged
    after the current ones: the manifest, not the start time, makes them old."""
    task, ratio, arm = OLD
    for seed in SEEDS[:2]:
        tags = cell_tags(task, ratio, arm, seed, fingerprint=OLD_FINGERPRINT)
        result = {"selected_epoch": 5.0, "selected_updates": 125.0, "updates": 125.0,
                  "stopped_early": 0.0, "test_accuracy": 0.99, "test_correct": 274.0,
                  "test_examples": 277.0}
        log_cell(client, exp_id, tags, cell_params(task, ratio, arm, epochs="5"),
                 [{"accuracy": 0.99, "epoch_seconds": 1.0}], result, None)


def _log_search(store: Store, client: MlflowClient, exp_id: str) -> None:
    """Search trials for rte/0.25: they must stay out of Table 1. One also logs a (bogus)
    accuracy of 0.99 to prove the phase tag, not the metric name, keeps it out."""
    trials = [("batchmixup", "0.1", "0.5", 0.70), ("batchmixup", "0.4", "1.0", 0.78),
              ("batchmixup", "0.8", "2.0", 0.74), ("mixup", "0.2", "1.0", 0.69)]
    for i, (arm, alpha, temperature, val) in enumerate(trials):
        tags = cell_tags("rte", "0.25", arm, "0", phase="search", ray_trial_id=f"search_{i}",
                         fingerprint=f"search{i}")
        run = client.create_run(exp_id, run_name=f"rte/0.25/{arm}/0", tags=tags)
        metrics = [Metric("val_accuracy", val - 0.1, 0, 1), Metric("val_accuracy", val, 0, 2)]
        if i == 0:
            metrics.append(Metric("accuracy", 0.99, 0, 2))
        # A strategy logs only the settings it reads (CellConfig.applicable): mixup no temperature.
        extra = {"temperature": temperature} if arm == "batchmixup" else {}
        params = cell_params("rte", "0.25", arm, alpha=alpha, **extra)
        client.log_batch(run.info.run_id, metrics=metrics,
                         params=[Param(k, v) for k, v in params.items()])
        client.set_terminated(run.info.run_id, "FINISHED")
        store.search_val.setdefault(("rte", "0.25", arm), []).append((val, alpha, temperature))


def _build_store(tmp: Path) -> Store:
    store = Store(uri=f"sqlite:///{tmp}/mlflow.db", tmp=tmp)
    client = MlflowClient(tracking_uri=store.uri)
    exp_id = client.create_experiment(EXPERIMENT, artifact_location=(tmp / "artifacts").as_uri())
    client.create_experiment("empty-sweep", artifact_location=(tmp / "artifacts2").as_uri())
    rng = np.random.default_rng(0)
    manifest = _log_grid(store, client, exp_id, rng)
    record_manifest(client, exp_id, manifest, tmp)
    _log_old_configuration(store, client, exp_id)
    _log_search(store, client, exp_id)
    return store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return _build_store(tmp_path_factory.mktemp("mlflow"))


@pytest.fixture(scope="module")
def report_dir(store: Store) -> Path:
    out = store.tmp / "report"
    status = main(["--experiment", EXPERIMENT, "--tracking-uri", store.uri, "--out", str(out)])
    assert status == 0
    return out


def _table1(report_dir: Path) -> pd.DataFrame:
    return pd.read_csv(report_dir / "table1.csv", dtype={"seeds": str})


def _row(table: pd.DataFrame, task: str, ratio: str, strategy: str) -> pd.Series:
    rows = table[
        (table["task"] == task)
        & np.isclose(table["ratio"], float(ratio))
        & (table["strategy"] == strategy)
    ]
    assert len(rows) == 1
    return rows.iloc[0]


def section(report_dir: Path, title: str) -> str:
    """The text of the report section whose heading starts with ``## title``."""
    text = (report_dir / "report.md").read_text(encoding="utf-8")
    return text.split(f"\n## {title}", 1)[1].split("\n## ", 1)[0]


def markdown_rows(text: str, first_cells: list[str]) -> list[list[str]]:
    """Cells of every markdown table row of ``text`` starting with ``first_cells``."""
    prefix = "| " + " | ".join(first_cells) + " |" if first_cells else "| "
    return [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith(prefix)]


def _values(store: Store, task: str, ratio: str, arm: str, key: str = "test_accuracy"
            ) -> list[float]:
    return [100 * store.result[(task, ratio, arm, s)][key] for s in SEEDS
            if (task, ratio, arm, s) in store.result]


# --------------------------------------------------------------------------- Table 1


def test_table1_is_test_accuracy_at_the_selected_epoch(store: Store, report_dir: Path) -> None:
    table = _table1(report_dir)
    for task in TASKS:
        for ratio in RATIOS:
            for arm in ARMS:
                values = _values(store, task, ratio, arm)
                row = _row(table, task, ratio, arm)
                assert row["n"] == len(values)
                if values:
                    assert row["mean"] == pytest.approx(statistics.mean(values))
                    assert row["std"] == pytest.approx(statistics.stdev(values))
                    assert row["metric"] == "test"
                    upe = updates_per_epoch(arm, ratio)
                    assert row["selected_updates"] == pytest.approx(
                        statistics.mean(store.result[(task, ratio, arm, s)]["selected_updates"]
                                        for s in SEEDS if (task, ratio, arm, s) in store.result))
                    assert row["updates"] == pytest.approx(EPOCHS * upe)
    # Not the last epoch's accuracy: the selected epoch (2) differs from the last (3).
    last = [100 * store.last_accuracy[("rte", "1.0", "none", s)] for s in SEEDS]
    assert _row(table, "rte", "1.0", "none")["mean"] != pytest.approx(statistics.mean(last))
    # The markdown shows "mean ± std (n)" and the updates.
    values = _values(store, "rte", "1.0", "none")
    rows = markdown_rows(section(report_dir, "Table 1"), ["100%", "none"])
    assert rows[0][2] == f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} (3)"
    assert rows[0][3] == f"{2 * updates_per_epoch('none', '1.0')} / " \
                         f"{3 * updates_per_epoch('none', '1.0')}"


def test_rows_ordered_by_ratio_descending_then_paper_arms(report_dir: Path) -> None:
    table = _table1(report_dir)
    rte = table[table["task"] == "rte"]
    assert list(rte["ratio"]) == [1.0] * 4 + [0.25] * 4
    assert list(rte["strategy"]) == list(ARMS) * 2
    assert list(dict.fromkeys(table["task"])) == ["rte", "banking77"]


def test_paper_column_only_in_the_papers_setting_and_no_bold(store: Store,
                                                             report_dir: Path) -> None:
    table = _table1(report_dir)
    assert table["paper_setting"].all()  # RoBERTa-large (both spellings), fine-tuned, labels
    for task in TASKS:
        for ratio in RATIOS:
            for arm in ARMS:
                row = _row(table, task, ratio, arm)
                mean, std = paper.TABLE1[(float(ratio), arm)][task]
                assert (row["paper_mean"], row["paper_std"]) == (mean, std)
                if row["n"]:
                    assert row["diff"] == pytest.approx(row["mean"] - mean)
    text = section(report_dir, "Table 1")
    assert "Paper (RoBERTa-large fine-tuned)" in text and "Δ (pp)" in text
    rows = markdown_rows(text, ["100%", "none"])
    assert rows[0][4] == "80.91 ± 1.47" and rows[1][4] == "93.77 ± 0.44"
    assert "not this setting" not in text  # no separate reference table
    assert not any(cell.startswith("**") for line in text.splitlines() if line.startswith("|")
                   for cell in line.split("|"))
    setup = section(report_dir, "Setup")
    assert "matched for rte, banking77" in setup


def test_missing_cell_is_dash_and_listed(report_dir: Path) -> None:
    rows = markdown_rows(section(report_dir, "Table 1"), ["100%", "nonlinear_mixup"])
    assert rows[1][2] == "—"  # banking77 (ours)
    assert rows[1][4] == "94.29 ± 1.01"  # the paper's value is still shown
    assert rows[1][5] == "—"
    missing = pd.read_csv(report_dir / "missing.csv", dtype={"seed": str})
    no_run = missing[missing["latest_status"] == "no run"]
    assert set(zip(no_run["task"], no_run["strategy"], no_run["seed"], strict=True)) == {
        ("banking77", "nonlinear_mixup", seed) for seed in SEEDS
    }
    assert (missing["latest_status"] == "FAILED").sum() == 1
    assert "the latest launch's cells (manifest)" in section(report_dir, "Cells without")


def test_failed_run_listed_with_reason_and_not_averaged(report_dir: Path) -> None:
    failed = pd.read_csv(report_dir / "failed.csv", dtype={"seed": str})
    assert list(failed["run_name"]) == ["rte/0.25/mixup/2"]
    assert failed.loc[0, "status"] == "FAILED"
    assert failed.loc[0, "failure_reason"] == FAILURE_REASON
    assert f"| rte/0.25/mixup/2 | FAILED | {FAILURE_REASON} | no |" in section(
        report_dir, "Failed")
    assert _row(_table1(report_dir), *FAILED[:3])["n"] == 2


def test_older_configuration_left_out_and_listed(store: Store, report_dir: Path) -> None:
    row = _row(_table1(report_dir), *OLD)
    assert row["n"] == 3
    assert row["mean"] == pytest.approx(statistics.mean(_values(store, *OLD)))  # no 99 %
    others = pd.read_csv(report_dir / "configurations.csv", dtype=str)
    assert len(others) == 1
    other = others.iloc[0]
    assert (other["task"], other["strategy"], other["fingerprint"]) == ("rte", "none",
                                                                        OLD_FINGERPRINT)
    assert (other["runs"], other["finished"], other["seeds"]) == ("2", "2", "0 1")
    assert other["differs"] == "epochs: 5 (current 3)"
    assert other["query"] == f"tags.fingerprint = '{OLD_FINGERPRINT}'"
    text = section(report_dir, "Other configurations")
    assert OLD_FINGERPRINT in text and "epochs: 5 (current 3)" in text
    # The query finds exactly those runs in MLflow.
    client = MlflowClient(tracking_uri=store.uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    assert len(client.search_runs([exp.experiment_id], other["query"])) == 2


def test_search_runs_reported_separately(store: Store, report_dir: Path) -> None:
    row = _row(_table1(report_dir), "rte", "0.25", "batchmixup")
    assert row["n"] == 3
    search = pd.read_csv(report_dir / "search.csv", dtype=str)
    assert len(search) == 2
    for (task, ratio, strategy), trials in store.search_val.items():
        got = search[search["strategy"] == strategy].iloc[0]
        best_val, alpha, temperature = max(trials)
        assert got["task"] == task and float(got["ratio"]) == float(ratio)
        assert int(got["trials"]) == len(trials)
        assert float(got["best_val_accuracy"]) == pytest.approx(100 * best_val)
        assert got["alpha"] == alpha
        if strategy == "batchmixup":  # the only strategy with a temperature
            assert got["temperature"] == temperature
        else:
            assert pd.isna(got["temperature"])


# --------------------------------------------------------------------------- Setup, budget


def test_setup_states_what_was_run(report_dir: Path) -> None:
    text = section(report_dir, "Setup")
    common = dict((r[0], r[1]) for r in markdown_rows(text, []) if len(r) == 2)
    assert common["mode"] == "finetune" and common["epochs (setting)"] == "3"
    assert common["precision"] == "bf16" and common["update path"] == "autograd"
    assert common["epoch selection"] == "best_val" and common["patience"] == "1"
    arms = {r[0]: r for r in markdown_rows(text, []) if r[0] in ARMS}
    assert arms["none"][1] == "none"
    header = markdown_rows(text, ["Arm"])[0]
    assert arms["mixup"][header.index("mix samples")] == "15"
    assert arms["batchmixup"][header.index("mix samples")] == "n/a"
    assert arms["batchmixup"][header.index("temperature")] == "1.0"
    data_header = markdown_rows(text, ["Task"])[0]
    data = markdown_rows(text, ["rte", "100%"])[0]
    assert data[data_header.index("labels")] == "2 (paper: 2)"
    assert data[data_header.index("test examples")] == "277"
    assert data[data_header.index("model")] == "roberta-large"  # the spelling differs by task
    assert f"Hardware: {HARDWARE} (45 runs)." in text


def test_budget_table_counts_updates_and_flags_unconverged(store: Store,
                                                           report_dir: Path) -> None:
    budget = pd.read_csv(report_dir / "budget.csv", dtype=str)
    row = budget[(budget["task"] == "rte") & (budget["ratio"] == "0.25")
                 & (budget["strategy"] == "mixup")].iloc[0]
    upe = updates_per_epoch("mixup", "0.25")
    assert (row["n"], row["epochs_run"], row["updates"]) == ("2", "3", f"{3 * upe:,}")
    assert (row["selected_epoch"], row["selected_updates"]) == ("2", f"{2 * upe:,}")
    assert (row["converged"], row["assessed"], row["unconverged"]) == ("2", "2", "0")
    flagged = budget[budget["unconverged"] != "0"]
    assert list(zip(flagged["task"], flagged["strategy"], strict=True)) == [
        ("rte", "batchmixup")]
    text = section(report_dir, "Training budget")
    rows = markdown_rows(text, ["rte", "25%", "batchmixup"])
    assert rows[0][-1] == "2/3 ⚠ unconverged" and rows[0][-4] == "2–3"
    assert "⚠ Unconverged: rte/25%/batchmixup (1 of 3)" in text


# --------------------------------------------------------------------------- paired


def test_paired_comparisons_from_counts_with_holm(store: Store, report_dir: Path) -> None:
    table = pd.read_csv(report_dir / "paired.csv", dtype={"seeds": str})
    pairs = set(zip(table["arm"], table["baseline"], strict=True))
    assert pairs == {("mixup", "none"), ("nonlinear_mixup", "none"), ("batchmixup", "none"),
                     ("batchmixup", "mixup"), ("batchmixup", "nonlinear_mixup")}
    for row in table.itertuples():
        ratio = "1.0" if row.ratio == 1.0 else "0.25"
        seeds = [s for s in SEEDS if (row.task, ratio, row.arm, s) in store.result
                 and (row.task, ratio, row.baseline, s) in store.result]
        diffs = [int(store.result[(row.task, ratio, row.arm, s)]["test_correct"]
                     - store.result[(row.task, ratio, row.baseline, s)]["test_correct"])
                 for s in seeds]
        assert row.n == len(seeds) and row.seeds == " ".join(seeds)
        if not seeds:
            continue
        assert row.per_seed == ", ".join(f"{d:+d}" for d in diffs) + f" of {N_TEST[row.task]}"
        assert row.mean_diff == pytest.approx(100 * statistics.mean(diffs) / N_TEST[row.task])
        if len(seeds) >= stats.MIN_SEEDS:
            assert row.test in ("t-test + bootstrap", "bootstrap") and row.resamples == 10_000
            assert row.boot_low <= row.mean_diff <= row.boot_high
        else:
            assert row.verdict == "not tested: n < 3 paired seeds" and math.isnan(row.p_holm)
    for test, holm in (("p_t", "p_holm_t"), ("p_boot", "p_holm_boot")):
        tested = table[table[test].notna()]
        assert list(tested[holm]) == pytest.approx(stats.holm(list(tested[test])))
    for row in table.itertuples():
        adjusted = [p for p in (row.p_holm_t, row.p_holm_boot) if not math.isnan(p)]
        if not adjusted:
            continue
        assert row.p_holm == max(adjusted)
        direction = "higher" if row.mean_diff > 0 else "lower"
        expected = f"{row.arm} {direction}" if max(adjusted) < 0.05 else \
            "no difference established"
        assert row.verdict == expected
    text = section(report_dir, "Paired comparisons")
    t_family, boot_family = int(table["p_t"].notna().sum()), int(table["p_boot"].notna().sum())
    assert f"over the {t_family} t-test(s) and over the {boot_family} bootstrap(s)" in text


def test_paired_table_shows_update_counts(report_dir: Path) -> None:
    rows = markdown_rows(section(report_dir, "Paired comparisons"),
                         ["rte", "100%", "batchmixup − mixup"])
    ours, theirs = 2 * updates_per_epoch("batchmixup", "1.0"), 2 * updates_per_epoch("mixup",
                                                                                   "1.0")
    assert rows[0][-2] == f"{ours:,} vs {theirs:,}"


# --------------------------------------------------------------------------- efficiency


def test_efficiency_ratios_within_one_path(store: Store, report_dir: Path) -> None:
    eff = pd.read_csv(report_dir / "efficiency.csv",
                      dtype={"mixup_variant": str, "mix_samples": str})
    for (task, ratio, arm), per_run in store.epoch_seconds.items():
        rows = eff[(eff["task"] == task) & np.isclose(eff["ratio"], float(ratio))
                   & (eff["strategy"] == arm)]
        assert len(rows) == 1
        row = rows.iloc[0]
        means = [statistics.mean(seconds) for seconds in per_run]
        none = statistics.mean(statistics.mean(s) for s in store.epoch_seconds[(task, ratio,
                                                                                "none")])
        assert row["mean_epoch_seconds"] == pytest.approx(statistics.mean(means))
        assert row["std_epoch_seconds"] == pytest.approx(statistics.stdev(means))
        assert row["ratio_to_none"] == pytest.approx(statistics.mean(means) / none)
        assert row["epochs"] == EPOCHS * len(per_run)
        assert (row["hardware"], row["update_path"], row["mode"]) == (HARDWARE, "autograd",
                                                                     "finetune")
        if arm == "mixup":
            assert (row["mixup_variant"], row["mix_samples"]) == ("faithful", "15")
            assert row["paper_ratio"] == pytest.approx(20 / 1.5)
        elif arm == "nonlinear_mixup":
            assert math.isnan(row["paper_ratio"])  # the paper's claim is for 15 samples
        else:
            assert pd.isna(row["mixup_variant"])
            assert row["paper_ratio"] == pytest.approx(1.0)
    rows = markdown_rows(section(report_dir, "Efficiency"), ["rte", "25%", "none"])
    assert rows[0][9].endswith(" s") and rows[0][11] == "1.00×"


# --------------------------------------------------------------------------- files, MLflow


def test_plots_and_html(report_dir: Path) -> None:
    names = {p.name for p in report_dir.glob("*.png")}
    assert {"accuracy_vs_ratio.png", "epoch_seconds.png", "accuracy_curves.png"} <= names
    text = (report_dir / "report.md").read_text()
    page = (report_dir / "report.html").read_text()
    for name in names:
        png = report_dir / name
        assert png.read_bytes()[:8] == PNG_MAGIC
        image = matplotlib.image.imread(png)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
        assert f"]({name})" in text
    assert page.count('src="data:image/png;base64,') == len(names)
    assert "<table>" in page and "<h2>Setup</h2>" in page


def test_curve_cell_option(store: Store, tmp_path: Path) -> None:
    report = write_report(
        EXPERIMENT, store.uri, tmp_path, curve_cell=("banking77", 0.25), log_artifacts=False
    )
    assert (tmp_path / "curves_banking77_0.25.png").read_bytes()[:8] == PNG_MAGIC
    assert "](curves_banking77_0.25.png)" in report.read_text()


def _summary(client: MlflowClient) -> list:
    exp = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([exp.experiment_id], filter_string="tags.kind = 'summary'")


def test_summary_run_holds_tables_metrics_and_description(store: Store, report_dir: Path,
                                                          tmp_path: Path) -> None:
    client = MlflowClient(tracking_uri=store.uri)
    runs = _summary(client)
    assert len(runs) == 1  # the sweep's own summary run, reused
    run = runs[0]
    listed = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert "manifest.json" in listed  # the launch manifest is kept
    logged = {f.path for f in client.list_artifacts(run.info.run_id, "report")}
    assert {f"report/{p.name}" for p in report_dir.iterdir()} | {"report/tables"} == logged
    tables = json.loads(run.data.tags["mlflow.loggedArtifacts"])
    assert {t["path"] for t in tables} == {f"report/tables/{k}.json" for k in
                                           ("table1", "paired", "budget", "efficiency")}
    local = client.download_artifacts(run.info.run_id, "report/tables/table1.json", tmp_path)
    table = pd.read_json(local, orient="split")
    assert len(table) == len(_table1(report_dir))
    metrics = run.data.metrics
    assert metrics["cells_finished"] == 44 and metrics["cells_total"] == 48
    assert metrics["groups"] == 16  # task x ratio x arm, the launched one without runs included
    assert metrics["other_configurations"] == 1 and metrics["runs_other_configurations"] == 2
    mean = statistics.mean(_values(store, "rte", "1.0", "none"))
    assert metrics["table1/rte/1/none/accuracy_mean"] == pytest.approx(mean)
    assert run.data.tags["report.model"] == "FacebookAI/roberta-large, roberta-large"
    assert "rte" in run.data.tags["report.paper_setting"]
    note = run.data.tags["mlflow.note.content"]
    assert "Table 1" in note and "report/report.html" in note and len(note) <= 8000


def test_rerun_replaces_artifacts_and_tables(store: Store, report_dir: Path) -> None:
    client = MlflowClient(tracking_uri=store.uri)
    before = {f.path for f in client.list_artifacts(_summary(client)[0].info.run_id, "report")}
    report = write_report(EXPERIMENT, store.uri, store.tmp / "report2", ("banking77", 0.25))
    runs = _summary(client)
    assert len(runs) == 1
    run_id = runs[0].info.run_id
    after = {f.path for f in client.list_artifacts(run_id, "report")}
    assert "report/curves_banking77_0.25.png" in after - before
    assert report.name == "report.md"
    local = client.download_artifacts(run_id, "report/tables/paired.json", str(store.tmp))
    assert len(pd.read_json(local, orient="split")) == len(
        pd.read_csv(report_dir / "paired.csv"))  # replaced, not appended
    # Summary runs are never read as cells.
    assert len(pd.read_csv(store.tmp / "report2" / "cells.csv")) == len(
        pd.read_csv(report_dir / "cells.csv"))


def test_a_store_that_refuses_writes_keeps_the_previous_report(store: Store, report_dir: Path,
                                                               monkeypatch, capsys) -> None:
    """As on a database that turned read-only: one line, and the summary run's report
    artifacts are the old ones, all of them (they used to be deleted first)."""
    client = MlflowClient(tracking_uri=store.uri)
    run_id = _summary(client)[0].info.run_id
    before = {f.path for f in client.list_artifacts(run_id, "report")}

    def refuse(self, *args, **kwargs):
        raise MlflowException("(sqlite3.OperationalError) attempt to write a readonly database")

    monkeypatch.setattr(MlflowClient, "set_tag", refuse)
    status = main(["--experiment", EXPERIMENT, "--tracking-uri", store.uri, "--out",
                   str(store.tmp / "report-refused")])
    err = capsys.readouterr().err
    assert status == 2 and "refused it" in err and "readonly database" in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert (store.tmp / "report-refused" / "report.md").exists()  # the local copy is written
    assert {f.path for f in client.list_artifacts(run_id, "report")} == before


# --------------------------------------------------------------------------- CLI


def test_unknown_experiment_exits_2_and_keeps_report(
    store: Store, report_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "kept"
    out.mkdir()
    (out / "report.md").write_text("earlier good report")
    argv = ["--experiment", "no-such-sweep", "--tracking-uri", store.uri, "--out", str(out)]
    assert main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    err = [line for line in lines if line.startswith("results.report:")]
    assert len(err) == 1 and err[0].startswith("results.report: error: unknown experiment")
    assert "'no-such-sweep'" in err[0] and EXPERIMENT in err[0]  # lists the known ones
    assert (out / "report.md").read_text() == "earlier good report"
    assert sorted(p.name for p in out.iterdir()) == ["report.md"]


def test_empty_experiment_and_missing_store(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert (
        main(["--experiment", "empty-sweep", "--tracking-uri", store.uri, "--out", str(out)]) == 2
    )
    assert "has no cell runs" in capsys.readouterr().err
    assert not out.exists()
    missing_db = tmp_path / "nowhere.db"
    with pytest.raises(ReportError, match="no MLflow store"):
        write_report(EXPERIMENT, f"sqlite:///{missing_db}", out)
    assert not missing_db.exists()


def test_tracking_uri_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None) == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env.db")
    assert resolve_tracking_uri(None) == "sqlite:///env.db"
    assert resolve_tracking_uri("sqlite:///flag.db") == "sqlite:///flag.db"


def test_help_describes_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in ("--experiment", "--tracking-uri", "--out", "--curve-cell",
                   "MLFLOW_TRACKING_URI"):
        assert option in text
