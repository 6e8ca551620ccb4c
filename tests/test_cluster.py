"""A real two-node Ray cluster whose worker node does not have this project installed.

The head node is started with ``ray start --head`` from the test's own virtual environment
(the project installed); the worker node with ``ray start --address`` from a second virtual
environment of the same Python that has the project's dependencies but not the project
(``import trainers`` fails there). Both use a private ``--temp-dir``, their own ports and a
private token (Ray 2.60 clusters authenticate with one), so no other Ray on the machine is
touched, and both are stopped at the end by process id (never ``ray stop``, which stops every
Ray of the machine). Trials are pinned to the worker node with a custom resource
(``--trial-resources worker_node=1``); the code reaches the node through the sweep's runtime
environment (``orchestrator/runtime.py``).

The worker environment shares this environment's installed dependencies read-only (see
:func:`worker_venv`), so it takes a second to build.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from tests.sweep_helpers import REPO_ROOT, cell_runs, free_port, run_sweep, steps

PLUGIN_ROOT = REPO_ROOT / "examples" / "hidden_cutmix"  # the package hidden_cutmix lives here
SMOKE_ARMS = ("none", "mixup", "nonlinear_mixup", "batchmixup")

PROBE = """
import json, sys, time
import ray
runtime_env = None
if sys.argv[2] == "shipped":
    from orchestrator.runtime import code_runtime_env
    runtime_env = code_runtime_env()
start = time.monotonic()
ray.init(address=sys.argv[1], runtime_env=runtime_env, log_to_driver=False)
connected = time.monotonic() - start

@ray.remote(num_cpus=1, resources={"worker_node": 1})
def probe():
    import sys
    try:
        import trainers
        found = trainers.__file__
    except ModuleNotFoundError as exc:
        found = f"ModuleNotFoundError: {exc}"
    return sys.executable, found

executable, found = ray.get(probe.remote())
print(json.dumps({"executable": executable, "trainers": found, "init_s": connected,
                  "first_task_s": time.monotonic() - start - connected}))
"""


def worker_site_packages() -> list[str]:
    """This environment's site-packages folders (the dependencies, and the project's editable
    install hook, which only a processed ``.pth`` file activates)."""
    import site

    return [p for p in site.getsitepackages() if Path(p).is_dir()]


@pytest.fixture(scope="module")
def worker_venv(tmp_path_factory) -> Iterator[Path]:
    """A virtual environment of the same Python that sees the dependencies but not the project.

    Its ``deps.pth`` lists this environment's site-packages as plain paths: Python appends them
    to ``sys.path`` without processing the ``.pth`` files inside, so the project's editable
    install hook (``__editable__...pth``) never runs and ``import trainers`` fails, as on a node
    where only the dependencies were installed (a pip install of them took ~2-4 minutes and
    2.3 GB; sharing them read-only changes nothing the test checks).
    """
    venv = tmp_path_factory.mktemp("worker") / "venv"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv",
                    "--without-pip", str(venv)], check=True)
    (site_dir,) = venv.glob("lib/python*/site-packages")
    (site_dir / "deps.pth").write_text("\n".join(worker_site_packages()) + "\n")
    ray_cli = venv / "bin" / "ray"
    ray_cli.write_text(f"#!{venv / 'bin' / 'python'}\n"
                       "import sys\nfrom ray.scripts.scripts import main\nsys.exit(main())\n")
    ray_cli.chmod(0o755)
    # the precondition of the whole test: the project is not importable there
    neutral = tmp_path_factory.mktemp("neutral")
    proc = subprocess.run([str(venv / "bin" / "python"), "-c", "import trainers"], cwd=neutral,
                          env=node_env(), capture_output=True, text=True)
    assert proc.returncode != 0 and "No module named 'trainers'" in proc.stderr, proc.stderr
    proc = subprocess.run([str(venv / "bin" / "python"), "-c", "import ray, torch, mlflow"],
                          cwd=neutral, env=node_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    yield venv


def node_env(token: str | None = None) -> dict[str, str]:
    """A Ray node's environment: nothing that points at this checkout, a private token."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "RAY_ADDRESS", "VIRTUAL_ENV")}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    if token:
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    return env


def node_ports() -> list[str]:
    """Ports of one node's agents, chosen free (the defaults collide between two nodes on one
    machine and with other Ray instances)."""
    return ["--dashboard-agent-listen-port", str(free_port()),
            "--dashboard-agent-grpc-port", str(free_port()),
            "--runtime-env-agent-port", str(free_port()),
            "--metrics-export-port", str(free_port()),
            "--object-store-memory", str(100 * 1024 * 1024), "--disable-usage-stats"]


def stop_ray_processes(marker: str) -> None:
    """SIGTERM, then SIGKILL, the processes of the nodes started with ``--temp-dir marker``
    (found by that folder in their command line) and their children; nothing else."""
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if marker in " ".join(proc.info["cmdline"] or []):
                found[proc.pid] = proc
                found.update({c.pid: c for c in proc.children(recursive=True)})
        except psutil.Error:
            continue
    for proc in found.values():
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(list(found.values()), timeout=15)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass


@contextmanager
def two_venv_cluster(worker_venv: Path) -> Iterator[tuple[str, dict[str, str], Path]]:
    """Head from this environment (1 CPU), worker from ``worker_venv`` (2 CPUs and 2
    ``worker_node``). Yields the address, the token variables a driver needs, the temp dir."""
    temp = Path(tempfile.mkdtemp(prefix="wt-ray-two-venv-"))
    token = secrets.token_hex(32)
    port = free_port()
    address = f"127.0.0.1:{port}"
    neutral = temp / "worker-cwd"
    neutral.mkdir()
    head = [str(Path(sys.executable).parent / "ray"), "start", "--head",
            "--node-ip-address", "127.0.0.1", "--port", str(port), "--temp-dir", str(temp),
            "--num-cpus", "1", "--resources", json.dumps({"head_node": 1}),
            "--include-dashboard", "false", "--dashboard-port", str(free_port()), *node_ports()]
    worker = [str(worker_venv / "bin" / "ray"), "start", "--address", address,
              "--node-ip-address", "127.0.0.1", "--temp-dir", str(temp), "--num-cpus", "2",
              "--resources", json.dumps({"worker_node": 2}), *node_ports()]
    try:
        for cmd, cwd in ((head, temp), (worker, neutral)):
            proc = subprocess.run(cmd, cwd=cwd, env=node_env(token), capture_output=True,
                                  text=True, timeout=180)
            assert proc.returncode == 0, f"{cmd[0]} start failed:\n{proc.stdout[-2000:]}\n" \
                                         f"{proc.stderr[-3000:]}"
        yield address, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}, temp
    finally:
        stop_ray_processes(str(temp))
        shutil.rmtree(temp, ignore_errors=True)


def probe(address: str, how: str, cwd: Path, token_env: dict[str, str]) -> dict:
    """A driver (this environment, no runtime env or the sweep's) runs one task on the worker
    node: which Python runs it, and whether ``trainers`` imports there."""
    proc = subprocess.run([sys.executable, "-c", PROBE, address, how], cwd=cwd,
                          env={**node_env(), **token_env}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_worker_node_without_the_project_runs_the_sweep(worker_venv, tmp_path, data_dir,
                                                        cache_dir):
    epochs = 3
    with two_venv_cluster(worker_venv) as (address, token_env, _):
        # Without the runtime env the worker node cannot import the project ...
        bare = probe(address, "bare", tmp_path, token_env)
        assert Path(bare["executable"]).parent == worker_venv / "bin", bare
        assert bare["trainers"].startswith("ModuleNotFoundError"), bare
        # ... with the sweep's it imports the copy the driver shipped, not this checkout.
        shipped = probe(address, "shipped", tmp_path, token_env)
        assert Path(shipped["executable"]).parent == worker_venv / "bin", shipped
        assert not shipped["trainers"].startswith(("ModuleNotFoundError", str(REPO_ROOT))), \
            shipped
        print(f"\nruntime env: ray.init {shipped['init_s']:.2f}s (bare {bare['init_s']:.2f}s), "
              f"first task {shipped['first_task_s']:.2f}s (bare {bare['first_task_s']:.2f}s)")

        # A resource no node has: one line, exit 2 (Tune would wait for it forever).
        missing = run_sweep(["--preset", "smoke", "--tasks", "banking77", "--ratios", "0.01",
                             "--seeds", "0", "--data-dir", str(data_dir), "--address", address,
                             "--trial-resources", "gpu_node=1", "--no-report",
                             "--storage-path", str(tmp_path / "ray")], tmp_path, cache_dir,
                            env=token_env)
        assert missing.returncode == 2, missing.stdout[-2000:] + missing.stderr[-2000:]
        assert "--trial-resources gpu_node=1: the Ray cluster at" in missing.stderr
        assert "offers 0 gpu_node" in missing.stderr

        # A plug-in strategy by ``package:NAME``: importable on the driver (PYTHONPATH), not on
        # the worker node; the sweep ships its package with the project.
        assert "No module named 'hidden_cutmix'" in subprocess.run(
            [str(worker_venv / "bin" / "python"), "-c", "import hidden_cutmix"], cwd=tmp_path,
            env=node_env(), capture_output=True, text=True).stderr
        plugin_env = {**token_env, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{PLUGIN_ROOT}"}
        start = time.monotonic()
        proc = run_sweep(["--preset", "smoke", "--tasks", "banking77", "--ratios", "0.01",
                          "--strategies", f"{','.join(SMOKE_ARMS)},hidden_cutmix:HIDDEN_CUTMIX",
                          "--seeds", "0", "--set", f"epochs={epochs}", "--data-dir",
                          str(data_dir), "--cache-dir", str(cache_dir),  # shared by the nodes
                          "--address", address, "--trial-resources",
                          "worker_node=1", "--cpus-per-trial", "1", "--no-report",
                          "--storage-path", str(tmp_path / "ray")], tmp_path, cache_dir,
                         env=plugin_env)
        print(f"sweep on the two-venv cluster: {time.monotonic() - start:.1f}s")
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "trial resources: 1 CPU, 0 GPU, 1 worker_node" in proc.stdout
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = cell_runs(uri, "smoke")
    assert sorted(r.info.run_name for r in runs) == sorted(
        f"banking77/0.01/{s}/0" for s in (*SMOKE_ARMS, "hidden_cutmix"))
    for run in runs:
        assert run.info.status == "FINISHED", run.data.tags
        if run.data.tags["strategy"] == "hidden_cutmix":  # what the report reads of a plug-in
            tags = run.data.tags
            assert (tags["strategy_label"], tags["strategy_family"], tags["strategy_site"]) \
                == ("hidden CutMix", "pairwise", "pooled"), tags
            assert tags["strategy_source"].startswith("hidden_cutmix:HIDDEN_CUTMIX@"), tags
        assert steps(uri, run.info.run_id) == list(range(1, epochs + 1))
