"""A cell is its configuration: relaunching a sweep retrains exactly the cells whose settings or
data changed, keeps the old runs, and never reports them together (real Ray, real sqlite)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.sweep_helpers import cell_runs, run_sweep

pytestmark = pytest.mark.slow

CELLS = ["--preset", "smoke", "--tasks", "rte", "--ratios", "0.01",
         "--strategies", "none,batchmixup", "--seeds", "0,1", "--num-cpus", "2"]


def launch(tmp_path: Path, cache_dir: Path, data: Path, *extra: str, report: bool = False):
    args = [*CELLS, "--data-dir", str(data), "--storage-path", str(tmp_path / "ray"),
            "--report-dir", str(tmp_path / "report"), *extra]
    return run_sweep(args if report else [*args, "--no-report"], tmp_path, cache_dir)


def by_fingerprint(uri: str) -> dict[str, list]:
    groups: dict[str, list] = {}
    for run in cell_runs(uri, "smoke"):
        groups.setdefault(run.data.tags["fingerprint"], []).append(run)
    return groups


def test_relaunch_retrains_changed_settings_and_data_only(tmp_path, data_dir, cache_dir):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = launch(tmp_path, cache_dir, data_dir, "--set", "epochs=2")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "4 to run" in first.stdout
    assert [len(v) for v in by_fingerprint(uri).values()] == [2, 2]  # one per arm

    same = launch(tmp_path, cache_dir, data_dir, "--set", "epochs=2")
    assert same.returncode == 0 and "4 already FINISHED with these settings" in same.stdout
    assert len(cell_runs(uri, "smoke")) == 4

    changed = launch(tmp_path, cache_dir, data_dir, "--set", "epochs=3", report=True)
    assert changed.returncode == 0, changed.stdout[-3000:] + changed.stderr[-3000:]
    assert "0 already FINISHED" in changed.stdout and "4 of them finished before" in changed.stdout
    groups = by_fingerprint(uri)
    assert len(groups) == 4 and all(len(runs) == 2 for runs in groups.values())
    client = MlflowClient(tracking_uri=uri)
    new = [r for runs in groups.values() for r in runs if r.data.params["epochs"] == "3"]
    assert len(new) == 4 and all(r.info.status == "FINISHED" for r in new)
    for run in new:  # the new runs trained the new budget
        assert [m.step for m in client.get_metric_history(run.info.run_id, "epoch_seconds")] \
            == [1, 2, 3]
    # the report shows the new configuration only: two seeds per arm, their mean
    table = pd.read_csv(tmp_path / "report" / "table1.csv")
    for arm in ("none", "batchmixup"):
        row = table[table["strategy"] == arm].iloc[0]
        runs = [r for r in new if r.data.tags["arm"] == arm]
        assert row["n"] == 2
        assert row["mean"] == pytest.approx(
            sum(r.data.metrics["test_accuracy"] for r in runs) * 50)

    # an edited data file is another configuration: retrained, not skipped (RTE: its
    # features are the cheapest to extract again)
    copy = tmp_path / "data"
    shutil.copytree(data_dir / "rte", copy / "rte")
    train = copy / "rte" / "train.tsv"
    lines = train.read_text().splitlines(keepends=True)
    train.write_text("".join(lines[:1] + lines[2:]))  # one example fewer
    edited = launch(tmp_path, cache_dir, copy, "--set", "epochs=3")
    assert edited.returncode == 0, edited.stdout[-3000:] + edited.stderr[-3000:]
    assert "0 already FINISHED" in edited.stdout
    assert len(cell_runs(uri, "smoke")) == 12

    # --resume restores the Tune state of the last launch: other settings are refused
    refused = launch(tmp_path, cache_dir, copy, "--set", "epochs=4", "--resume")
    assert refused.returncode == 2
    assert "launched with other cells" in refused.stderr and refused.stderr.count("\n") == 1
    assert len(cell_runs(uri, "smoke")) == 12


def test_validation_only_sweep_reports_validation_accuracy(tmp_path, data_dir, cache_dir):
    """``--set eval_split=val``: every cell scores on its validation split and never reads the
    test set; the terminal table and the report show that validation accuracy."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = launch(tmp_path, cache_dir, data_dir, "--set", "epochs=2", "--set", "eval_split=val",
                  report=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "val acc % (mean±std, n)" in proc.stdout and "nan" not in proc.stdout
    runs = cell_runs(uri, "smoke")
    assert len(runs) == 4
    for run in runs:
        assert "selected_val_accuracy" in run.data.metrics
        assert not {"accuracy", "test_accuracy", "test_correct"} & set(run.data.metrics)
    table = pd.read_csv(tmp_path / "report" / "table1.csv")
    assert table["n"].tolist() == [2, 2] and table["mean"].notna().all()
