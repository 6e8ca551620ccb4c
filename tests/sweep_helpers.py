"""Helpers for tests that run real sweeps: a CLI runner, a real MLflow server, run queries."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def sweep_env(cache_dir: Path) -> dict[str, str]:
    env = {**os.environ, "BATCHMIXUP_CACHE_DIR": str(cache_dir), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(REPO_ROOT), "RAY_DEDUP_LOGS": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    return env


def run_sweep(args: list[str], cwd: Path, cache_dir: Path, timeout: float = 600,
              module: str = "orchestrator.sweep",
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m orchestrator.sweep ARGS`` in ``cwd``; output is kept for assertions.
    ``env``: variables added to the sweep's environment."""
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd,
                          env={**sweep_env(cache_dir), **(env or {})}, capture_output=True,
                          text=True, timeout=timeout)
    (cwd / f"{module}.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def mlflow_server(folder: Path, port: int | None = None, backend: str | None = None,
                  extra: tuple[str, ...] = (), env: dict[str, str] | None = None):
    """A real ``mlflow server`` on 127.0.0.1 with a sqlite store in ``folder`` (or
    ``backend``, e.g. a ``postgresql://`` URI); ``extra``: more server flags."""
    port = port or free_port()
    proc = start_mlflow_server(folder, port, backend, extra, env)
    try:
        yield f"http://127.0.0.1:{port}", proc
    finally:
        stop(proc)


def start_mlflow_server(folder: Path, port: int, backend: str | None = None,
                        extra: tuple[str, ...] = (),
                        env: dict[str, str] | None = None) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    log = open(folder / f"server-{port}.log", "a")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", backend or f"sqlite:///{folder / 'mlflow.db'}",
         "--default-artifact-root", (folder / "artifacts").as_uri(), "--workers", "1",
         *extra],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=folder,
        env={**os.environ, **(env or {})})
    deadline = time.monotonic() + 90
    import urllib.request

    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited: {(folder / f'server-{port}.log').read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except OSError:
            time.sleep(0.5)
    stop(proc)
    pytest.fail("mlflow server did not start within 90 s")


def stop(proc: subprocess.Popen) -> None:
    import signal

    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def cell_runs(tracking_uri: str, experiment: str, phase: str = "final") -> list[Any]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r}"
    return list(client.search_runs([exp.experiment_id],
                                   filter_string=f"tags.kind = 'cell' and tags.phase = '{phase}'",
                                   max_results=5000))


def steps(tracking_uri: str, run_id: str, key: str = "epoch_seconds") -> list[int]:
    from mlflow import MlflowClient

    return sorted(m.step for m in MlflowClient(tracking_uri=tracking_uri)
                  .get_metric_history(run_id, key))


class LiveSweep:
    """``python -m orchestrator.sweep`` in its own process group, its output read live."""

    def __init__(self, args: list[str], cwd: Path, cache_dir: Path,
                 env: dict[str, str] | None = None) -> None:
        self.tag = uuid.uuid4().hex
        env = {**sweep_env(cache_dir), **(env or {}), "BATCHMIXUP_TEST_TAG": self.tag}
        self.proc = subprocess.Popen([sys.executable, "-m", "orchestrator.sweep", *args],
                                     cwd=cwd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.lines: list[str] = []
        self.log = cwd / f"live-{self.tag[:6]}.log"
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        with open(self.log, "w") as log:
            for line in self.proc.stdout:
                self.lines.append(line)
                log.write(line)
                log.flush()

    def wait_for(self, pattern: str, timeout: float = 300) -> None:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(regex.search(line) for line in list(self.lines)):
                return
            if self.proc.poll() is not None and not self.reader.is_alive():
                break
            time.sleep(0.1)
        pytest.fail(f"never saw {pattern!r}; output:\n{''.join(self.lines)[-4000:]}")

    def workers(self) -> list[psutil.Process]:
        """This sweep's Tune trial processes (found by the tag in their environment)."""
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            try:
                title = " ".join(proc.info["cmdline"] or [])
                mine = proc.environ().get("BATCHMIXUP_TEST_TAG") == self.tag
                if "ImplicitFunc" in title and mine:
                    found.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return found

    def finish(self, timeout: float = 600) -> int:
        code = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return code

    def kill_all(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.reader.join(timeout=10)


def peak_overlap(runs: list) -> int:
    """Most runs open at one instant, from the start and end times the store recorded (an end
    at the same millisecond as a start counts first)."""
    events = sorted([(r.info.start_time, 1) for r in runs] + [(r.info.end_time, -1) for r in runs])
    open_runs = peak = 0
    for _, delta in events:
        open_runs += delta
        peak = max(peak, open_runs)
    return peak
