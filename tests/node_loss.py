"""The two-node scenario: a real two-node Ray cluster on this machine loses its worker node
mid-sweep (every process of that node SIGKILLed). Used by
``tests/test_faults.py::test_two_node_cluster_survives_losing_the_worker_node`` and repeated
by ``python -m tests.node_loss_repeat`` (one run in a suite cannot show a flake).
"""

from __future__ import annotations

from pathlib import Path

from tests.sweep_helpers import LiveSweep, cell_runs, steps

STRATEGIES = ("none", "mixup", "nonlinear_mixup", "batchmixup")


def two_node_scenario(workdir: Path, data_dir: Path, cache_dir: Path,
                      epochs: int = 16) -> tuple[list[str], str]:
    """Run the scenario in ``workdir``; return (problems, sweep output).

    No problems means: exit 0, every cell's one MLflow run FINISHED with each epoch logged
    once, and some trial was really retried from its checkpoint.
    """
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    sweep = None
    try:
        worker = cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        sweep = LiveSweep(["--preset", "smoke", "--tasks", "banking77", "--ratios", "0.01",
                           "--seeds", "0", "--set", f"epochs={epochs}",
                           "--data-dir", str(data_dir), "--storage-path", str(workdir / "ray"),
                           "--address", cluster.address, "--cpus-per-trial", "1",
                           "--no-report"], workdir, cache_dir)
        sweep.wait_for(rf"epoch 4/{epochs}", timeout=900)  # a first run extracts features
        cluster.remove_node(worker, allow_graceful=False)  # SIGKILL the worker node's processes
        code = sweep.finish()
    finally:
        if sweep is not None and sweep.proc.poll() is None:
            sweep.kill_all()
        cluster.shutdown()
    output = "".join(sweep.lines)
    return check_outcome(code, output, f"sqlite:///{workdir / 'mlflow.db'}", epochs), output


def check_outcome(code: int, output: str, uri: str, epochs: int) -> list[str]:
    """What went wrong, if anything (see :func:`two_node_scenario`)."""
    problems = []
    if code != 0:
        problems.append(f"exit code {code}")
    if "retrying from its last checkpoint" not in output:
        problems.append("no trial was retried from its checkpoint")
    expected = {f"banking77/0.01/{s}/0" for s in STRATEGIES}
    runs = cell_runs(uri, "smoke")
    names = sorted(r.info.run_name for r in runs)
    if names != sorted(expected):
        problems.append(f"runs {names}, expected one per cell")
    for run in runs:
        if run.info.status != "FINISHED":
            reason = run.data.tags.get("failure_reason", "")[:300]
            problems.append(f"{run.info.run_name} {run.info.status}: {reason}")
        for key in ("epoch_seconds", "accuracy", "train_loss"):
            logged = steps(uri, run.info.run_id, key)
            if logged != list(range(1, epochs + 1)):
                problems.append(f"{run.info.run_name} {key} steps {logged}")
    return problems
