"""A plug-in strategy installed as a user would: a fresh virtual environment, the project and
``examples/hidden_cutmix`` installed (not editable, no file of the project edited), a sweep from
a folder outside the checkout, and the report that shows the plug-in's arm.

The venv shares this environment's installed dependencies read-only through a ``deps.pth`` of
plain paths (as :func:`tests.test_cluster.worker_venv` does: the project's editable install
hook is not processed there), so only the two packages are installed (``pip install --no-deps
--no-build-isolation``, seconds instead of minutes and 2 GB).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.sweep_helpers import REPO_ROOT, cell_runs, steps
from tests.test_cluster import worker_site_packages

EXAMPLE = REPO_ROOT / "examples" / "hidden_cutmix"


def fresh_env(cache_dir: Path) -> dict[str, str]:
    """No PYTHONPATH, no pointer at this checkout: the venv's own installs only."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(HF_HUB_OFFLINE="1", BATCHMIXUP_CACHE_DIR=str(cache_dir), RAY_DEDUP_LOGS="0",
               RAY_USAGE_STATS_ENABLED="0")
    return env


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 600):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
def test_installed_plugin_runs_in_a_sweep_and_the_report(tmp_path, data_dir, cache_dir):
    venv = tmp_path / "venv"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv",
                    "--without-pip", str(venv)], check=True)
    (site_dir,) = venv.glob("lib/python*/site-packages")
    (site_dir / "deps.pth").write_text("\n".join(worker_site_packages()) + "\n")
    python = str(venv / "bin" / "python")
    neutral = tmp_path / "work"
    neutral.mkdir()
    env = fresh_env(cache_dir)
    missing = subprocess.run([python, "-c", "import trainers"], cwd=neutral, env=env,
                             capture_output=True, text=True)
    assert "No module named 'trainers'" in missing.stderr  # the precondition
    pip = [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
           "--no-index"]
    # from copies: setuptools builds in the source folder (build/, *.egg-info)
    ignore = shutil.ignore_patterns(".*", "venv", "build", "*.egg-info", "__pycache__",
                                    "ray_results", "mlruns", "mlflow.db", "examples")
    project = shutil.copytree(REPO_ROOT, tmp_path / "src" / "project", ignore=ignore)
    example = shutil.copytree(EXAMPLE, tmp_path / "src" / "hidden_cutmix", ignore=ignore)
    run([*pip, str(project)], neutral, env)
    run([*pip, str(example)], neutral, env)
    # installed, not this checkout; the entry point is what names it
    where = run([python, "-c", "import trainers, hidden_cutmix; print(trainers.__file__); "
                 "from trainers.strategies import known_names; print(known_names())"],
                neutral, env).stdout
    assert str(site_dir) in where.splitlines()[0] and "hidden_cutmix" in where, where

    # the example's own tests, against the installed project
    tests = run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 str(EXAMPLE / "tests")], neutral, env).stdout
    assert "3 passed" in tests, tests

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    report = tmp_path / "report"
    proc = run([python, "-m", "orchestrator.sweep", "--preset", "smoke", "--name", "plugin",
                "--tasks", "banking77", "--ratios", "0.01", "--strategies",
                "none,hidden_cutmix", "--seeds", "0,1", "--set", "epochs=2",
                "--data-dir", str(data_dir), "--cache-dir", str(cache_dir),
                "--num-cpus", "2", "--tracking-uri", uri, "--storage-path",
                str(tmp_path / "ray"), "--report-dir", str(report)], neutral, env)
    assert "4/4 cells ended (4 ok, 0 failed)" in proc.stdout, proc.stdout[-3000:]
    runs = cell_runs(uri, "plugin")
    assert sorted(r.info.run_name for r in runs) == sorted(
        f"banking77/0.01/{s}/{seed}" for s in ("none", "hidden_cutmix") for seed in (0, 1))
    for r in runs:
        assert r.info.status == "FINISHED" and steps(uri, r.info.run_id) == [1, 2]
    table1 = pd.read_csv(report / "table1.csv", dtype={"ratio": str})
    assert set(table1["strategy"]) == {"none", "hidden_cutmix"}
    text = (report / "report.md").read_text()
    assert "hidden CutMix" in text  # the declaration's label, read back from MLflow tags
    efficiency = pd.read_csv(report / "efficiency.csv")
    assert "hidden_cutmix" in set(efficiency["strategy"])
    paired = pd.read_csv(report / "paired.csv")
    assert any("hidden_cutmix" in str(v) for v in paired.to_numpy().ravel()), paired
