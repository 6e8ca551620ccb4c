"""Fault tolerance with real kills: a trial worker, the driver, the tracking server; NaN cells.

Every scenario ends with the same promise: each cell has exactly one MLflow run holding each
epoch exactly once.
"""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import pytest
import torch

from orchestrator.spaces import load_sweep, resolve_source
from tests.node_loss import two_node_scenario
from tests.sweep_helpers import (
    LiveSweep,
    cell_runs,
    free_port,
    run_sweep,
    start_mlflow_server,
    steps,
    stop,
)
from trainers.loop import train_cell

pytestmark = pytest.mark.slow  # real Ray sweeps and kills


def base_args(data_dir: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["--preset", "smoke", "--tasks", "banking77", "--ratios", "0.01",
            "--data-dir", str(data_dir), "--storage-path", str(tmp_path / "ray"),
            "--num-cpus", "2", "--no-report", *extra]


def assert_one_run_per_cell_each_epoch_once(uri: str, names: set[str], epochs: int) -> list:
    runs = cell_runs(uri, "smoke")
    assert sorted(r.info.run_name for r in runs) == sorted(names)
    for run in runs:
        assert run.info.status == "FINISHED", (run.info.run_name, run.data.tags)
        for key in ("epoch_seconds", "accuracy", "train_loss"):
            assert steps(uri, run.info.run_id, key) == list(range(1, epochs + 1)), key
    return runs


def test_killed_worker_resumes_from_checkpoint_in_the_same_run(tmp_path, data_dir, cache_dir):
    epochs = 16
    cell = "banking77/0.01/batchmixup/0"
    sweep = LiveSweep(base_args(data_dir, tmp_path, "--strategies", "batchmixup", "--seeds", "0",
                                "--set", f"epochs={epochs}", "--max-concurrent", "1"),
                      tmp_path, cache_dir)
    sweep.wait_for(rf"{re.escape(cell)} epoch 4/{epochs}")
    victims = sweep.workers()
    assert victims, "no trial worker found"
    for proc in victims:
        proc.send_signal(signal.SIGKILL)  # a real kill, mid-training
    code = sweep.finish()
    output = "".join(sweep.lines)
    assert code == 0, output[-4000:]
    assert "retrying from its last checkpoint" in output
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (run,) = assert_one_run_per_cell_each_epoch_once(uri, {cell}, epochs)

    # Same final accuracy as an uninterrupted run of the same cell (one thread, like the trial).
    config = next(c.config for c in load_sweep(resolve_source("smoke", None), {
        "tasks": ["banking77"], "ratios": [0.01], "strategies": ["batchmixup"], "seeds": [0],
        "settings": {"epochs": str(epochs), "data_dir": str(data_dir)}}).cells())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        straight = train_cell(config, log=lambda _: None)
    finally:
        torch.set_num_threads(threads)
    assert run.data.metrics["accuracy"] == pytest.approx(straight.final["accuracy"], abs=1e-9)
    assert run.data.metrics["train_loss"] == pytest.approx(straight.final["train_loss"],
                                                           rel=1e-6)


def saved_progress(experiment: Path) -> dict[str, int]:
    """cell -> training iteration in the newest experiment state Tune saved on storage."""
    progress = {}
    for state in sorted(experiment.glob("experiment_state-*.json"))[-1:]:
        try:
            entries = json.loads(state.read_text())["trial_data"]
        except ValueError:  # being rewritten
            return {}
        for _, metadata in entries:
            last = json.loads(metadata).get("last_result") or {}
            if "config" in last and not last.get("done"):
                progress[last["config"]["trial"]["name"]] = last["training_iteration"]
    return progress


def test_killed_driver_then_resume_finishes_only_what_is_missing(tmp_path, data_dir, cache_dir):
    epochs = 40
    interrupted = "banking77/0.01/nonlinear_mixup/0"
    # batches of 8 and 40 epochs make a cell last seconds, not a fraction of one
    args = base_args(data_dir, tmp_path, "--seeds", "0", "--set", f"epochs={epochs}",
                     "--set", "batch_size=8", "--max-concurrent", "1")
    sweep = LiveSweep(args, tmp_path, cache_dir, env={"TUNE_GLOBAL_CHECKPOINT_S": "0.5"})
    sweep.wait_for(r"2/4 cells ended")
    # kill once Tune's *saved* state holds a checkpoint of the third cell, mid-training
    deadline = time.monotonic() + 120
    while saved_progress(tmp_path / "ray" / "smoke").get(interrupted, 0) < 3:
        assert time.monotonic() < deadline, "".join(sweep.lines)[-3000:]
        time.sleep(0.05)
    sweep.kill_all()  # SIGKILL the driver and its local Ray
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    before = {r.info.run_name: r for r in cell_runs(uri, "smoke")}
    done_before = {n for n, r in before.items() if r.info.status == "FINISHED"}
    assert 2 <= len(done_before) < 4, {n: r.info.status for n, r in before.items()}
    assert before[interrupted].info.status == "RUNNING"

    resumed = run_sweep([*args, "--resume"], tmp_path, cache_dir)
    assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-2000:]
    assert "resuming Tune state" in resumed.stdout
    names = {f"banking77/0.01/{s}/0" for s in ("none", "mixup", "nonlinear_mixup",
                                                "batchmixup")}
    runs = assert_one_run_per_cell_each_epoch_once(uri, names, epochs)
    for name in done_before:  # finished cells were not trained again
        assert f"{name} epoch" not in resumed.stdout
    # the interrupted cell continued from its checkpoint, not from epoch 1
    assert f"{interrupted} epoch 1/{epochs}:" not in resumed.stdout
    assert f"{interrupted} epoch {epochs}/{epochs}" in resumed.stdout
    for name, run in before.items():  # every cell kept its one run
        assert {r.info.run_id for r in runs if r.info.run_name == name} == {run.info.run_id}


def test_tracking_server_down_mid_sweep_loses_nothing(tmp_path, data_dir, cache_dir):
    epochs = 10
    port = free_port()
    server_dir = tmp_path / "server"
    server = start_mlflow_server(server_dir, port)
    uri = f"http://127.0.0.1:{port}"
    sweep = LiveSweep(base_args(data_dir, tmp_path, "--strategies", "none,batchmixup",
                                "--seeds", "0", "--set", f"epochs={epochs}",
                                "--tracking-uri", uri, "--max-concurrent", "1"),
                      tmp_path, cache_dir)
    try:
        sweep.wait_for(rf"epoch 3/{epochs}")
        stop(server)  # the tracking server goes away mid-sweep
        sweep.wait_for(r"\[tracking\] write failed, queued for retry", timeout=120)
        sweep.wait_for(rf"batchmixup/0 epoch {epochs}/{epochs}", timeout=300)  # training went on
        server = start_mlflow_server(server_dir, port)  # ... and comes back
        code = sweep.finish()
    finally:
        if sweep.proc.poll() is None:
            sweep.kill_all()
        stop(server)
    output = "".join(sweep.lines)
    assert code == 0, output[-4000:]
    assert "store reachable again" in output
    # read what the server stored straight from its database (no third server start)
    assert_one_run_per_cell_each_epoch_once(
        f"sqlite:///{server_dir / 'mlflow.db'}",
        {"banking77/0.01/none/0", "banking77/0.01/batchmixup/0"}, epochs)


def test_nan_loss_fails_that_cell_and_the_sweep_goes_on(tmp_path, data_dir, cache_dir):
    sweep_file = tmp_path / "nan.yaml"
    sweep_file.write_text(
        "name: smoke\ntasks: [banking77]\nratios: [0.01]\nseeds: [0]\n"
        "settings: {model: minilm, mode: frozen, max_length: 64, epochs: 2}\n"
        "strategies:\n  - none\n"
        "  - {name: diverges, strategy: batchmixup, loss: dot, head_lr: 1.0e+30,\n"
        "     grad_clip: 0, clean_loss: false}\n")
    proc = run_sweep(["--sweep-file", str(sweep_file), "--data-dir", str(data_dir),
                      "--storage-path", str(tmp_path / "ray"), "--num-cpus", "2",
                      "--no-report"], tmp_path, cache_dir)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "FAILED banking77/0.01/diverges/0: non-finite loss" in proc.stdout
    runs = {r.info.run_name: r for r in cell_runs(f"sqlite:///{tmp_path / 'mlflow.db'}",
                                                  "smoke")}
    assert runs["banking77/0.01/none/0"].info.status == "FINISHED"
    failed = runs["banking77/0.01/diverges/0"]
    assert failed.info.status == "FAILED"
    assert re.search(r"non-finite loss .* epoch 1, step \d+", failed.data.tags["failure_reason"])


def test_two_node_cluster_survives_losing_the_worker_node(tmp_path, data_dir, cache_dir):
    """A real two-node Ray cluster on this machine; the worker node dies mid-sweep.

    One run here; ``python -m tests.node_loss_repeat --runs 10`` repeats it (tests/node_loss.py).
    """
    problems, output = two_node_scenario(tmp_path, data_dir, cache_dir)
    assert not problems, "\n".join(problems) + "\n" + output[-4000:]
