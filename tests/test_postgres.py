"""MLflow on a real PostgreSQL server, the backend teams use: as the sweep's own store
(``--tracking-uri postgresql://...``) and behind ``mlflow server``; 4 concurrent trials, and
PostgreSQL restarted mid-sweep (nothing lost, nothing duplicated).

The server comes from the ``postgres`` fixture (``tests/postgres.py``): Debian's binaries, a
private cluster on 127.0.0.1, one fresh database per test.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sweep_helpers import cell_runs, mlflow_server, peak_overlap, run_sweep, steps
from tests.test_faults import LiveSweep, assert_one_run_per_cell_each_epoch_once

STRATEGIES = ("none", "mixup", "nonlinear_mixup", "batchmixup")
CELLS = {f"banking77/0.01/{s}/0" for s in STRATEGIES}


@contextlib.contextmanager
def tracking(via: str, database: str, folder: Path) -> Iterator[str]:
    """The sweep's --tracking-uri: the database itself, or an mlflow server in front of it."""
    if via == "postgresql":
        yield database
        return
    with mlflow_server(folder, backend=database) as (uri, _):
        yield uri


def sweep_args(data_dir: Path, tmp_path: Path, uri: str, *extra: str) -> list[str]:
    return ["--preset", "smoke", "--tasks", "banking77", "--ratios", "0.01", "--seeds", "0",
            "--data-dir", str(data_dir), "--storage-path", str(tmp_path / "ray"),
            "--tracking-uri", uri, "--no-report", *extra]


@pytest.mark.slow
@pytest.mark.parametrize("via", ["postgresql", "mlflow-server"])
def test_four_concurrent_trials_on_postgresql(via, postgres, tmp_path, data_dir, cache_dir):
    epochs = 8
    database = postgres.new_database()
    with tracking(via, database, tmp_path / "server") as uri:
        proc = run_sweep(sweep_args(data_dir, tmp_path, uri, "--set", f"epochs={epochs}",
                                    "--num-cpus", "4", "--cpus-per-trial", "1",
                                    "--max-concurrent", "4"), tmp_path, cache_dir)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        runs = cell_runs(uri, "smoke")
        assert sorted(r.info.run_name for r in runs) == sorted(CELLS)  # one run per cell
        for run in runs:
            assert run.info.status == "FINISHED"
            for key in ("epoch_seconds", "accuracy", "train_loss"):
                assert steps(uri, run.info.run_id, key) == list(range(1, epochs + 1)), key
        assert peak_overlap(runs) == 4
    # the records are in PostgreSQL itself (read back without the server)
    assert {r.info.run_name for r in cell_runs(database, "smoke")} == CELLS
    assert not (tmp_path / "mlflow.db").exists()  # nothing went to the default sqlite store


@pytest.mark.slow
@pytest.mark.parametrize("via", ["postgresql", "mlflow-server"])
def test_postgresql_restarted_mid_sweep_loses_and_duplicates_nothing(via, postgres, tmp_path,
                                                                      data_dir, cache_dir):
    epochs = 12
    database = postgres.new_database()
    try:
        with tracking(via, database, tmp_path / "server") as uri:
            sweep = LiveSweep(sweep_args(data_dir, tmp_path, uri, "--strategies",
                                         "none,batchmixup", "--set", f"epochs={epochs}",
                                         "--num-cpus", "2", "--max-concurrent", "1"),
                              tmp_path, cache_dir)
            try:
                sweep.wait_for(rf"none/0 epoch 3/{epochs}")
                postgres.stop()  # fast shutdown: open connections are cut, as in a restart
                sweep.wait_for(r"\[tracking\] write failed, queued for retry", timeout=120)
                postgres.start()
                code = sweep.finish()
            finally:
                if sweep.proc.poll() is None:
                    sweep.kill_all()
    finally:
        if not postgres.running():
            postgres.start()
    output = "".join(sweep.lines)
    assert code == 0, output[-4000:]
    assert "store reachable again" in output
    assert_one_run_per_cell_each_epoch_once(
        database, {"banking77/0.01/none/0", "banking77/0.01/batchmixup/0"}, epochs)


@pytest.mark.slow
@pytest.mark.parametrize("via", ["postgresql", "mlflow-server"])
def test_double_launch_refused_on_postgresql(via, postgres, tmp_path, data_dir, cache_dir):
    """The one-sweep-per-experiment lock (orchestrator/lock.py) holds on PostgreSQL too: two
    launches at the same instant on a fresh database, one runs, the other refuses naming it."""
    from tests.test_robustness import two_launches_at_once

    database = postgres.new_database()
    with tracking(via, database, tmp_path / "server") as uri:
        args = sweep_args(data_dir, tmp_path, uri, "--strategies", "none", "--set", "epochs=3",
                          "--num-cpus", "2")
        two_launches_at_once(args, tmp_path, cache_dir, uri)
