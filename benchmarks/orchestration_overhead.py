"""Orchestration overhead of a sweep on local Ray, and proof that caches are computed once.

Runs ``python -m orchestrator.sweep`` on 16 short cells in a fresh temporary folder (fresh
MLflow store, fresh Tune storage, the feature/token cache given by ``--cache-dir``), then reads
what MLflow recorded:

* ``busy / (tune_wall × slots)``: the sum over cells of ``trial_seconds`` (time inside the
  trainable: data, model set-up, training, evaluation, checkpoints) divided by the Tune phase's
  wall time (first cell run opened → last closed) times the number of concurrent slots. This is
  the share of the slots' time spent in cells, i.e. 1 − orchestration overhead. Target ≥ 0.85.
* ``train / (tune_wall × slots)``: the same with only ``epoch_seconds`` (pure training steps).
* the end-to-end wall time of the command (Ray start, checks, cache warm-up included);
* the cache lines the sweep printed: one ``[cache] ...`` line per (task, model, max length), and
  every trial reads that entry (``cache hit`` on a second run).

Command::

    python -m benchmarks.orchestration_overhead --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# 16 short cells: banking77 x 2 ratios x 4 strategies x 2 seeds, frozen MiniLM, 20 epochs.
DEFAULT_SWEEP = ["--preset", "smoke", "--tasks", "banking77", "--ratios", "0.25,0.1",
                 "--seeds", "0,1", "--set", "epochs=20"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("BATCHMIXUP_DATA_DIR"))
    parser.add_argument("--cache-dir", default=None, help="default: a fresh temporary folder")
    parser.add_argument("--slots", type=int, default=2, help="concurrent trials (= --num-cpus)")
    parser.add_argument("sweep_args", nargs="*", help="override the sweep flags (after --)")
    args = parser.parse_args()
    sweep_args = args.sweep_args or DEFAULT_SWEEP
    work = Path(tempfile.mkdtemp(prefix="bench-orch-"))
    cache = args.cache_dir or str(work / "cache")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "orchestrator.sweep", *sweep_args, "--name", "overhead",
           "--data-dir", args.data_dir, "--cache-dir", cache, "--tracking-uri", uri,
           "--storage-path", str(work / "ray"), "--num-cpus", str(args.slots),
           "--cpus-per-trial", "1", "--no-report"]
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"sweep failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    print("\n".join(line for line in proc.stdout.splitlines() if line.startswith("[cache]")))

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("overhead")
    runs = client.search_runs([exp.experiment_id], "tags.kind = 'cell'", max_results=1000)
    busy = sum(r.data.metrics["trial_seconds"] for r in runs)
    train = sum(sum(m.value for m in client.get_metric_history(r.info.run_id, "epoch_seconds"))
                for r in runs)
    tune_wall = (max(r.info.end_time for r in runs) - min(r.info.start_time for r in runs)) / 1e3
    slots = args.slots
    print(f"cells: {len(runs)} ({sum(r.info.status == 'FINISHED' for r in runs)} FINISHED), "
          f"slots: {slots}, load average at end: {os.getloadavg()[0]:.2f}")
    print(f"end-to-end wall: {wall:.1f} s; Tune phase wall: {tune_wall:.1f} s")
    print(f"busy in cells: {busy:.1f} s; in training steps: {train:.1f} s")
    ratio = busy / (tune_wall * slots)
    print(f"busy / (tune_wall x slots)  = {ratio:.3f}  target >= 0.85  "
          f"{'PASS' if ratio >= 0.85 else 'FAIL'}")
    print(f"train / (tune_wall x slots) = {train / (tune_wall * slots):.3f}")
    print(f"busy / (end-to-end wall x slots) = {busy / (wall * slots):.3f}")


if __name__ == "__main__":
    main()
