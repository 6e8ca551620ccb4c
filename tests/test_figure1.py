"""Figure 1 end to end: the real ``figure1`` preset through the sweep CLI, Ray Tune and MLflow.

One module-scoped sweep (2 seeds × 4 strategies, 20 epochs; about a minute on 2 CPUs) is run
with ``python -m orchestrator.sweep --preset figure1`` in a subprocess; the tests then read what
MLflow recorded and what the report wrote. Determinism of the toy data per seed is tested in
``tests/test_toy2d.py``. The statistics helpers are also tested on small hand-made frames.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from results import figure1

REPO_ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STRATEGIES = ("none", "mixup", "nonlinear_mixup", "batchmixup")
SEEDS = ("0", "1")


class Sweep:
    """The finished sweep: its folder, tracking URI, report folder and CLI output."""

    def __init__(self, tmp: Path, proc: subprocess.CompletedProcess) -> None:
        self.tmp = tmp
        self.uri = f"sqlite:///{tmp / 'mlflow.db'}"
        self.report = tmp / "report"
        self.proc = proc
        self.client = MlflowClient(tracking_uri=self.uri)
        exp = self.client.get_experiment_by_name("figure1")
        assert exp is not None, self.output
        self.runs = self.client.search_runs([exp.experiment_id], max_results=1000)

    @property
    def output(self) -> str:
        return self.proc.stdout[-4000:] + "\n--- stderr ---\n" + self.proc.stderr[-4000:]

    def runs_of_kind(self, kind: str) -> list:
        return [r for r in self.runs if r.data.tags.get("kind") == kind]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    tmp = tmp_path_factory.mktemp("figure1")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT),
           "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    args = [
        "--preset", "figure1",
        "--seeds", ",".join(SEEDS),
        "--set", "epochs=20",
        "--num-cpus", "2",
        "--storage-path", str(tmp / "ray"),
        "--tracking-uri", f"sqlite:///{tmp / 'mlflow.db'}",
        "--report-dir", str(tmp / "report"),
    ]
    proc = subprocess.run([sys.executable, "-m", "orchestrator.sweep", *args], cwd=tmp, env=env,
                          capture_output=True, text=True, timeout=600)
    (tmp / "sweep.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return Sweep(tmp, proc)


def _assert_png(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image.shape[0] > 200 and image.shape[1] > 200
    assert float(image.std()) > 0.01  # not a blank canvas
    return image


@pytest.mark.slow
def test_all_cells_finished_with_decision_grid(sweep: Sweep) -> None:
    cells = sweep.runs_of_kind("cell")
    assert len(cells) == len(STRATEGIES) * len(SEEDS), sweep.output
    assert {r.info.status for r in cells} == {"FINISHED"}
    assert {(r.data.tags["strategy"], r.data.tags["seed"]) for r in cells} == {
        (s, seed) for s in STRATEGIES for seed in SEEDS
    }
    for run in cells:
        assert run.data.tags["task"] == "toy2d"
        assert 0.0 < run.data.metrics["accuracy"] <= 1.0
        paths = [a.path for a in sweep.client.list_artifacts(run.info.run_id)]
        assert figure1.GRID_ARTIFACT in paths, (run.info.run_name, paths)


@pytest.mark.slow
def test_figure_written_and_logged_to_summary_run(sweep: Sweep, tmp_path: Path) -> None:
    wide = _assert_png(sweep.report / figure1.FIGURE_PNG)
    assert wide.shape[1] > 2.5 * wide.shape[0]  # five panels side by side
    _assert_png(sweep.report / figure1.ACCURACY_PNG)

    summaries = sweep.runs_of_kind("summary")
    assert len(summaries) == 1
    run_id = summaries[0].info.run_id
    logged = {a.path for a in sweep.client.list_artifacts(run_id, "report")}
    for name in figure1.FILES:
        assert f"report/{name}" in logged, logged
    local = Path(sweep.client.download_artifacts(run_id, f"report/{figure1.FIGURE_PNG}",
                                                 str(tmp_path)))
    assert local.read_bytes() == (sweep.report / figure1.FIGURE_PNG).read_bytes()
    _assert_png(local)


@pytest.mark.slow
def test_report_has_figure1_section_and_accuracy_table(sweep: Sweep) -> None:
    text = (sweep.report / "report.md").read_text(encoding="utf-8")
    assert "## Figure 1" in text
    assert f"]({figure1.FIGURE_PNG})" in text and f"]({figure1.ACCURACY_PNG})" in text
    section = text.split("## Figure 1", 1)[1].split("\n## ", 1)[0]
    rows = {
        cells[1]: cells
        for line in section.splitlines()
        if line.startswith("| ") and not line.startswith("| Strategy")
        for cells in [[c.strip() for c in line.split("|")]]
    }
    assert set(rows) == set(STRATEGIES)
    assert all(row[2] == "2" for row in rows.values())  # n = 2 seeds per strategy
    assert rows["none"][7] == "—"
    for strategy in STRATEGIES[1:]:  # wins vs none out of the 2 paired seeds
        assert re.fullmatch(r"[0-2]/2 \(ties [0-2], losses [0-2]\)", rows[strategy][7])

    table = pd.read_csv(sweep.report / figure1.TABLE_CSV)
    assert list(table["strategy"]) == list(STRATEGIES)
    assert list(table["n"]) == [2, 2, 2, 2]
    finals = {
        (r.data.tags["strategy"], r.data.tags["seed"]): 100 * r.data.metrics["accuracy"]
        for r in sweep.runs_of_kind("cell")
    }
    for row in table.itertuples():
        values = [finals[(row.strategy, seed)] for seed in SEEDS]
        assert row.mean == pytest.approx(np.mean(values))
        assert row.std == pytest.approx(np.std(values, ddof=1))
        assert row.min == pytest.approx(min(values)) and row.max == pytest.approx(max(values))


# --------------------------------------------------------------------------- helpers, no MLflow


def _cells(acc: dict[tuple[str, str], float]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"strategy": s, "seed": seed, "accuracy_pct": v} for (s, seed), v in acc.items()]
    )


def test_accuracy_table_paired_counts() -> None:
    acc = {("none", "0"): 80.0, ("none", "1"): 70.0, ("none", "2"): 90.0,
           ("batchmixup", "0"): 82.0, ("batchmixup", "1"): 70.0, ("batchmixup", "2"): 85.0,
           ("mixup", "0"): 81.0}
    table = figure1.accuracy_table(_cells(acc)).set_index("strategy")
    assert list(table.index) == ["none", "mixup", "batchmixup"]
    bm = table.loc["batchmixup"]
    assert (bm["n"], bm["paired_n"], bm["wins"], bm["ties"], bm["losses"]) == (3, 3, 1, 1, 1)
    assert bm["mean_diff"] == pytest.approx((2.0 + 0.0 - 5.0) / 3)
    assert bm["min"] == 70.0 and bm["max"] == 85.0 and bm["median"] == 82.0
    assert table.loc["mixup", "paired_n"] == 1 and np.isnan(table.loc["mixup", "std"])
    assert np.isnan(table.loc["none", "wins"])


def test_choose_seed_default_median_and_fallback() -> None:
    acc = {("none", s): 80.0 for s in ("0", "1", "2", "3")}
    acc.update({("batchmixup", "0"): 83.0, ("batchmixup", "1"): 79.0,
                ("batchmixup", "2"): 81.0, ("batchmixup", "3"): 90.0})
    cells = _cells(acc)
    assert figure1.choose_seed(cells)[0] == "0"
    assert figure1.choose_seed(cells, "2")[0] == "2"
    # differences +3, -1, +1, +10: lower median is +1 (seed 2)
    seed, reason = figure1.choose_seed(cells, "median")
    assert seed == "2" and "median" in reason
    seed, reason = figure1.choose_seed(cells[cells["seed"] != "0"])
    assert seed == "1" and "no finished" in reason


def test_bayes_accuracy_of_separated_gaussians() -> None:
    means = np.array([[-1.0, 0.0], [1.0, 0.0]])
    covs = np.stack([np.eye(2), np.eye(2)])
    # equal isotropic covariances: Bayes boundary x1 = 0, accuracy Phi(1) = 84.13%
    assert figure1.bayes_accuracy(means, covs, per_class=50_000) == pytest.approx(84.13, abs=0.5)
