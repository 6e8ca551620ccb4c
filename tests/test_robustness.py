"""Robustness from outside testing (issue 16): each row of its table, and the security gaps.

Bad input ends in one ``error:`` line and exit 2 before anything is created; double launches
refuse (or wait); Ray stays local and on 127.0.0.1; --resume trusts only private Tune state;
credentials never reach the terminal or the files. See docs/robustness.md.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

from orchestrator import sweep as sweep_cli
from orchestrator.lock import LockError, SweepLock, lock_name
from orchestrator.store import prepare_store
from results.uris import redact_text, redact_uri
from tests.sweep_helpers import (
    REPO_ROOT,
    LiveSweep,
    cell_runs,
    free_port,
    mlflow_server,
    run_sweep,
    steps,
    sweep_env,
)
from trainers import run_cell
from trainers.data import load_task

TINY = ["--preset", "smoke", "--tasks", "banking77", "--ratios", "0.01", "--strategies", "none",
        "--seeds", "0"]


def tiny(data_dir: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [*TINY, "--data-dir", str(data_dir), "--storage-path", str(tmp_path / "ray"),
            "--num-cpus", "2", "--no-report", *extra]


def one_error_line(err: str) -> None:
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err


def created(folder: Path, before: set[str]) -> set[str]:
    return {p.name for p in folder.iterdir()} - before


# --------------------------------------------------------------------------- encodings
def test_banking77_with_bom_and_crlf_loads_like_the_original(tmp_path, data_dir):
    """What Excel writes: a UTF-8 byte-order mark and CRLF line ends."""
    folder = tmp_path / "banking77"
    folder.mkdir()
    for name in ("train.csv", "test.csv"):  # records end in CRLF; LF inside quoted cells
        with open(data_dir / "banking77" / name, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        with open(folder / name, "w", newline="", encoding="utf-8-sig") as fh:
            csv.writer(fh, lineterminator="\r\n").writerows(rows)
        assert (folder / name).read_bytes().startswith(b"\xef\xbb\xbftext,category\r\n") or \
            (folder / name).read_bytes().startswith(b"\xef\xbb\xbf")
    if (data_dir / "banking77" / "categories.json").is_file():
        raw = (data_dir / "banking77" / "categories.json").read_bytes()
        (folder / "categories.json").write_bytes(b"\xef\xbb\xbf" + raw)
    excel = load_task("banking77", tmp_path)
    original = load_task("banking77", data_dir)
    assert excel.labels == original.labels
    assert excel.train == original.train and excel.test == original.test
    assert excel.fingerprint() == original.fingerprint()  # same feature-cache entries


def test_non_utf8_custom_csv_is_one_error_line(tmp_path, data_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train = tmp_path / "train.csv"
    train.write_bytes("text,label\nok,a\ncaf\xe9 latin-1,b\n".encode("latin-1"))
    test = tmp_path / "test.csv"
    test.write_text("text,label\nfine,a\n")
    code = run_cell.main(["--task", "custom", "--train-file", str(train), "--test-file",
                          str(test), "--epochs", "1", "--cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 2 and "not UTF-8 text (byte 0xe9 on line 3)" in err, err
    one_error_line(err)
    code = sweep_cli.main(["--tasks", "custom", "--ratios", "1", "--strategies", "none",
                           "--seeds", "0", "--set", f"train_file={train}",
                           "--set", f"test_file={test}", "--storage-path",
                           str(tmp_path / "ray"), "--no-report"])
    err = capsys.readouterr().err
    assert code == 2 and "not UTF-8 text" in err and str(train) in err, err
    one_error_line(err)
    assert not (tmp_path / "ray").exists() and not (tmp_path / "mlflow.db").exists()


# --------------------------------------------------------------------------- strict types
SWEEP = "tasks: [banking77]\nratios: [0.01]\nstrategies: [none]\nseeds: [0]\n"
STRICT_FILES = [
    ("settings: {epochs: true}\n", "field 'settings.epochs': epochs must be of type int, "
                                   "got True"),
    ("settings: {clean_loss: 0.7}\n", "field 'settings.clean_loss': clean_loss must be of type "
                                      "bool, got 0.7"),
    ("settings: {mlp_hidden: 2.0}\n", "field 'settings.mlp_hidden': mlp_hidden must be of type "
                                      "int, got 2.0"),
    ("settings: {alpha: yes}\n", "alpha must be of type float, got True"),
    ("strategy_settings: {mixup: {mix_samples: 1.5}}\n",
     "field 'strategy_settings.mixup.mix_samples'"),
    ("settings: {epochs: 0}\n", "field 'settings.epochs': epochs must be an integer >= 1"),
    ("name: ../escaped\n", "field 'name' must be a plain name"),
]


@pytest.mark.parametrize(("extra", "needle"), STRICT_FILES)
def test_sweep_files_are_strictly_typed(extra, needle, tmp_path, data_dir, capsys,
                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    file = tmp_path / "strict.yaml"
    file.write_text(SWEEP + extra)
    code = sweep_cli.main(["--sweep-file", str(file), "--data-dir", str(data_dir),
                           "--no-report"])
    err = capsys.readouterr().err
    assert code == 2 and f"{file}: " in err and needle in err, err
    one_error_line(err)


STRICT_FLAGS = [
    (["--set", "epochs=abc"], "error: --set epochs=abc: epochs must be of type int, got 'abc'"),
    (["--set", "epochs=true"], "error: --set epochs=true: epochs must be of type int"),
    (["--set", "clean_loss=0.7"], "error: --set clean_loss=0.7: clean_loss must be of type "
                                  "bool"),
    (["--set", "mlp_hidden=2.0"], "error: --set mlp_hidden=2.0: mlp_hidden must be of type int"),
    (["--set", "alpha=0"], "error: --set alpha=0: alpha must be > 0"),
    (["--set", "task=rte"], "error: --set task=rte: set task through the 'tasks' list"),
    (["--tasks", "nope"], "error: --tasks: unknown task 'nope'"),
    (["--seeds", "0,0"], "error: --seeds has duplicates"),
    (["--name", "x/../../escaped"], "error: --name must be a plain name"),
    (["--name", ".."], "error: --name must be a plain name"),
]


@pytest.mark.parametrize(("flags", "needle"), STRICT_FLAGS)
def test_flag_errors_name_the_flag_not_the_preset(flags, needle, tmp_path, data_dir, capsys,
                                                  monkeypatch):
    """``--set epochs=abc`` used to be blamed on smoke.yaml's strategy_settings.mixup."""
    monkeypatch.chdir(tmp_path)
    code = sweep_cli.main(["--data-dir", str(data_dir), "--storage-path", str(tmp_path / "ray"),
                           "--no-report", *flags])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(needle) and "smoke.yaml" not in err, err
    one_error_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing created, nothing escaped
    assert not (tmp_path.parent / "escaped").exists()


def test_cli_strings_still_parse():
    from orchestrator.spaces import parse_set

    assert parse_set(["epochs=5", "clean_loss=false", "alpha=1e-1", "data_dir=/x"]) == {
        "epochs": 5, "clean_loss": False, "alpha": 0.1, "data_dir": "/x"}


# --------------------------------------------------------------------------- fail fast
def _gpus() -> int:
    import torch

    return torch.cuda.device_count()


UNSCHEDULABLE = [
    (["--gpus-per-trial", str(_gpus() + 1)], "missing 1 GPU"),
    (["--cpus-per-trial", "8", "--num-cpus", "2"], "missing 6 CPU"),
    (["--num-cpus", "-1"], "--num-cpus must be >= 1, got -1"),
    (["--num-cpus", "0"], "--num-cpus must be >= 1, got 0"),
    (["--wait-for-lock", "-5"], "--wait-for-lock must be >= 0 seconds"),
    (["--cache-dir", "/dev/null"], "--cache-dir /dev/null is not a directory"),
]


@pytest.mark.parametrize(("flags", "needle"), UNSCHEDULABLE)
def test_unschedulable_requests_fail_fast(flags, needle, tmp_path, data_dir, capsys,
                                          monkeypatch):
    """Used to hang at '[cache] preparing' (or crash after Ray started) with the experiment
    already created."""
    monkeypatch.chdir(tmp_path)
    start = time.monotonic()
    args = [a for a in tiny(data_dir, tmp_path) if a not in ("--num-cpus", "2")]
    code = sweep_cli.main([*args, *flags])
    err = capsys.readouterr().err
    assert code == 2 and needle in err, err
    one_error_line(err)
    assert time.monotonic() - start < 60
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.slow
def test_unschedulable_on_a_cluster_names_the_largest_node(tmp_path, data_dir, cache_dir):
    """Compared with the cluster's nodes (2 + 1 CPUs: 3 in total, none with 3); nothing is
    created. --allow-pending skips the check (an autoscaler would add the node)."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        args = [a for a in tiny(data_dir, tmp_path) if a not in ("--num-cpus", "2")]
        proc = run_sweep([*args, "--address", cluster.address, "--cpus-per-trial", "3"],
                         tmp_path, cache_dir, timeout=180)
        assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
        one_error_line(proc.stderr)
        assert "asks for 3 CPU and 0 GPU, but the largest node of the Ray cluster" in proc.stderr
        assert "has 2 CPU and 0 GPU (missing 1 CPU)" in proc.stderr
        assert "--allow-pending" in proc.stderr
        assert not (tmp_path / "ray").exists() and not (tmp_path / "mlflow.db").exists()
        assert "--allow-pending" in sweep_cli.build_parser().format_help()
    finally:
        cluster.shutdown()


def _driver_missing(uri: str) -> bool:
    from sqlalchemy.engine import make_url

    try:
        make_url(uri).get_dialect().import_dbapi()
    except ImportError:
        return True
    return False


LEFTOVERS = [
    ["--address", "127.0.0.1:9"],
    ["--tracking-uri", "postgresql://user:secret@127.0.0.1:5432/mlflow"],
    ["--tracking-uri", "postgresql+pg8000://user:secret@127.0.0.1:5432/mlflow"],
    ["--tracking-uri", "mysql://user:secret@127.0.0.1/mlflow"],
]


@pytest.mark.parametrize("flags", LEFTOVERS)
def test_rejected_launch_leaves_no_storage_folder(flags, tmp_path, data_dir, capsys,
                                                  monkeypatch):
    """A missing database driver, an unreachable Ray: one line, no empty storage folder."""
    if flags[0] == "--tracking-uri" and not _driver_missing(flags[1]):
        pytest.skip(f"the driver of {flags[1]} is installed here")
    monkeypatch.chdir(tmp_path)
    code = sweep_cli.main(tiny(data_dir, tmp_path, *flags))
    err = capsys.readouterr().err
    assert code == 2, err
    one_error_line(err)
    assert "secret" not in err
    if flags[0] == "--tracking-uri":
        assert "needs the Python driver" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_report_against_an_unreachable_server_fails_in_seconds(tmp_path):
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "results.report", "--experiment", "smoke",
                           "--tracking-uri", f"http://user:secret@127.0.0.1:{free_port()}"],
                          cwd=tmp_path, env=sweep_env(tmp_path), capture_output=True,
                          text=True, timeout=120)
    assert time.monotonic() - start < 30
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "is unreachable" in proc.stderr, proc.stderr
    assert "secret" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("flag", ["--checkpoint-dir", "--cache-dir"])
def test_run_cell_folder_that_is_a_file(flag, tmp_path, data_dir, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for value, needle in ((blocker, "is not a directory"),
                          (blocker / "below", "is a file, not a directory")):
        code = run_cell.main(["--task", "banking77", "--ratio", "0.01", "--epochs", "1",
                              "--data-dir", str(data_dir), flag, str(value)])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith(f"error: {flag} ") and needle in err, err
        one_error_line(err)


# --------------------------------------------------------------------------- security
def _plant_pickle(experiment: Path, marker: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    experiment.mkdir(parents=True)
    (experiment / "tuner.pkl").write_bytes(pickle.dumps(Payload()))
    (experiment / "experiment_state-2026-01-01_00-00-00.json").write_text("{}")
    os.chmod(experiment / "experiment_state-2026-01-01_00-00-00.json", 0o644)


@pytest.mark.parametrize("how", ["group-writable folder", "world-writable file",
                                 "other owner"])
def test_resume_refuses_tune_state_others_could_write(how, tmp_path, data_dir, capsys,
                                                      monkeypatch):
    """A pickle planted in --storage-path must never run: --resume refuses such state."""
    monkeypatch.chdir(tmp_path)
    storage = tmp_path / "ray"
    storage.mkdir(mode=0o755)
    os.chmod(storage, 0o755)
    marker = tmp_path / "pwned"
    experiment = storage / "smoke"
    _plant_pickle(experiment, marker)
    os.chmod(experiment, 0o755)
    os.chmod(experiment / "tuner.pkl", 0o644)
    if how == "group-writable folder":
        os.chmod(experiment, 0o775)
        expect = "is writable by its group (mode 0775)"
    elif how == "world-writable file":
        os.chmod(experiment / "tuner.pkl", 0o666)
        expect = "is writable by its group and all users (mode 0666)"
    else:
        if os.getuid() != 0:
            pytest.skip("changing a file's owner needs root")
        os.chown(experiment / "tuner.pkl", 65534, 65534)
        expect = "is owned by"
    code = sweep_cli.main([*tiny(data_dir, tmp_path), "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and "--resume refuses" in err and expect in err, err
    assert "unpickled by --resume" in err
    one_error_line(err)
    assert not marker.exists()
    assert not (tmp_path / "mlflow.db").exists()


def test_resume_trusts_private_state_and_sticky_storage(tmp_path):
    from orchestrator.preflight import check_resume_storage

    storage = tmp_path / "shared"
    storage.mkdir()
    (storage / "smoke").mkdir()
    (storage / "smoke" / "tuner.pkl").write_bytes(b"x")
    os.chmod(storage / "smoke", 0o700)
    os.chmod(storage / "smoke" / "tuner.pkl", 0o600)
    os.chmod(storage, 0o1777)  # like /tmp: others cannot replace what is yours
    check_resume_storage(str(storage), "smoke")
    check_resume_storage(str(storage), "not-there-yet")


@pytest.mark.slow
def test_local_ray_listens_on_loopback_only(tmp_path):
    """Every listening socket of a local Ray started by the sweep is on 127.0.0.1."""
    script = textwrap.dedent("""
        import argparse, json, psutil, ray
        from orchestrator.sweep import start_ray
        start_ray(argparse.Namespace(address=None, num_cpus=1, num_gpus=None, verbose=False))
        ray.get(ray.remote(lambda: 1).remote())
        me = psutil.Process()
        pids = {p.pid for p in me.children(recursive=True)} | {me.pid}
        found = [(c.laddr.ip, c.laddr.port, c.pid) for c in psutil.net_connections("inet")
                 if c.status == "LISTEN" and c.pid in pids]
        print(json.dumps({"listening": found, "node_ip": ray.util.get_node_ip_address()}))
        ray.shutdown()
    """)
    env = {**sweep_env(tmp_path), "RAY_ADDRESS": "127.0.0.1:9"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["node_ip"] == "127.0.0.1"
    assert report["listening"], report
    for ip, port, pid in report["listening"]:
        assert ip in ("127.0.0.1", "::ffff:127.0.0.1", "::1"), (ip, port, pid)


def test_redact_uri_and_text():
    assert redact_uri("http://user:secret@host:5000/x") == "http://***@host:5000/x"
    assert redact_uri("postgresql://u:p@db/mlflow?sslmode=require&password=pw") == (
        "postgresql://***@db/mlflow?sslmode=require&password=***")
    assert redact_uri("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"
    assert redact_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    text = "cannot reach https://tok@h/api and mysql://a:b@c/d?token=t&x=1"
    assert redact_text(text) == "cannot reach https://***@h/api and mysql://***@c/d?token=***&x=1"


@pytest.mark.slow
def test_credentials_never_printed_logged_or_written(tmp_path, data_dir, cache_dir):
    """A sweep and its report against a server URI with user:password: the secret is in no
    output, no report file, no Tune state (tuner.pkl), no MLflow tag or param."""
    with mlflow_server(tmp_path / "server") as (uri, _):
        secret_uri = uri.replace("http://", "http://alice:s3cr3t-pw@")
        proc = run_sweep([*TINY, "--set", "epochs=2", "--data-dir", str(data_dir),
                          "--storage-path", str(tmp_path / "ray"), "--num-cpus", "2",
                          "--tracking-uri", secret_uri], tmp_path, cache_dir)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "http://***@127.0.0.1" in proc.stdout
        runs = cell_runs(uri, "smoke")
        assert len(runs) == 1 and runs[0].info.status == "FINISHED"
        stored = json.dumps([r.to_dictionary() for r in runs])
        from mlflow import MlflowClient

        assert not MlflowClient(uri).search_registered_models()  # the sweep lock is gone
    assert "s3cr3t" not in proc.stdout + proc.stderr + stored
    for path in [*tmp_path.rglob("*.md"), *tmp_path.rglob("*.pkl"), *tmp_path.rglob("*.json"),
                 *tmp_path.rglob("*.log")]:
        if "server" not in path.parts:
            assert b"s3cr3t" not in path.read_bytes(), path
    assert (tmp_path / "results" / "smoke" / "report.md").is_file()


# --------------------------------------------------------------------------- the lock
def launch(args: list[str], cwd: Path, cache_dir: Path, name: str,
           env: dict[str, str] | None = None) -> subprocess.Popen:
    out = open(cwd / f"{name}.log", "w")  # noqa: SIM115 - closed by the process
    return subprocess.Popen([sys.executable, "-m", "orchestrator.sweep", *args], cwd=cwd,
                            env={**sweep_env(cache_dir), **(env or {})}, stdout=out,
                            stderr=subprocess.STDOUT, text=True)


def two_launches_at_once(args: list[str], cwd: Path, cache_dir: Path, uri: str) -> None:
    """Start the same sweep twice at the same instant: one runs (its one cell FINISHED with
    epochs 1-3 once), the other exits 2 with one line naming the first; no traceback."""
    procs = [launch(args, cwd, cache_dir, f"launch-{i}") for i in (1, 2)]
    codes = [p.wait(timeout=900) for p in procs]
    logs = [(cwd / f"launch-{i}.log").read_text() for i in (1, 2)]
    print("\n".join(f"--- launch {i + 1}: exit {c}\n{log[-1500:]}"
                    for i, (c, log) in enumerate(zip(codes, logs, strict=True))))
    assert sorted(codes) == [0, 2], logs
    winner = procs[codes.index(0)]
    refused = logs[codes.index(2)]
    assert "Traceback" not in logs[0] + logs[1]
    one_error_line(refused[refused.index("error: "):])
    assert "error: another sweep of experiment 'smoke' is running against" in refused
    assert f"pid {winner.pid} on {socket.gethostname()}" in refused
    (run,) = cell_runs(uri, "smoke")
    assert run.info.status == "FINISHED"
    assert steps(uri, run.info.run_id) == [1, 2, 3]


@pytest.mark.slow
def test_two_launches_at_once_on_a_fresh_store(tmp_path, data_dir, cache_dir):
    """The same sweep started twice at the same instant on a store that does not exist yet:
    the store is initialised once (no 'duplicate column' crash), one sweep runs, the other
    refuses naming it; the cell has one run with each epoch once."""
    two_launches_at_once(tiny(data_dir, tmp_path, "--set", "epochs=3"), tmp_path, cache_dir,
                         f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.mark.slow
def test_second_launch_refuses_or_waits_while_the_first_runs(tmp_path, data_dir, cache_dir):
    """Launched again while the first still runs (the '20 s later' case): refused at once
    naming the first; with --wait-for-lock it queues, then finds the cell FINISHED. The first
    driver is paused (SIGSTOP) meanwhile, so "still running" does not depend on timing; the
    store is an ``mlflow server``, so the paused driver holds no database lock (a driver
    paused inside a sqlite write transaction would keep every process off a sqlite file)."""
    with mlflow_server(tmp_path / "server") as (uri, _):
        args = tiny(data_dir, tmp_path, "--set", "epochs=6", "--tracking-uri", uri)
        first = LiveSweep(args, tmp_path, cache_dir)
        third = None
        try:
            first.wait_for(r"epoch 2/6")
            os.kill(first.proc.pid, signal.SIGSTOP)
            second = run_sweep(args, tmp_path, cache_dir)
            print(f"--- second launch: exit {second.returncode}\n{second.stderr}")
            assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-2000:]
            one_error_line(second.stderr)
            assert f"pid {first.proc.pid} on {socket.gethostname()}" in second.stderr
            assert "--wait-for-lock" in second.stderr
            third = launch([*args, "--wait-for-lock"], tmp_path, cache_dir, "third")
            deadline = time.monotonic() + 300
            while "[lock] experiment 'smoke' is being run by" not in (tmp_path / "third.log"
                                                                      ).read_text():
                assert third.poll() is None and time.monotonic() < deadline, (
                    (tmp_path / "third.log").read_text()[-3000:])
                time.sleep(0.5)
            os.kill(first.proc.pid, signal.SIGCONT)
            assert first.finish() == 0, "".join(first.lines)[-3000:]
            assert third.wait(timeout=600) == 0, (tmp_path / "third.log").read_text()[-3000:]
        finally:
            if first.proc.poll() is None:
                os.kill(first.proc.pid, signal.SIGCONT)
                first.kill_all()
            if third is not None and third.poll() is None:
                third.kill()
        log = (tmp_path / "third.log").read_text()
        print(f"--- third launch (--wait-for-lock):\n{log[-1500:]}")
        assert "1 already FINISHED" in log and "epoch 1/6" not in log
        (run,) = cell_runs(uri, "smoke")
        assert steps(uri, run.info.run_id) == list(range(1, 7))
    assert len(list((tmp_path / "ray" / "smoke").glob("banking77_0.01_none_0_*"))) == 1


@pytest.fixture(scope="module")
def lock_store(tmp_path_factory) -> str:
    uri = f"sqlite:///{tmp_path_factory.mktemp('lock') / 'mlflow.db'}"
    prepare_store(uri)
    return uri


def _plant_lock(uri: str, experiment: str, **tags: str) -> None:
    from mlflow import MlflowClient

    now = str(time.time())
    values = {"token": "planted", "host": socket.gethostname(), "pid": str(os.getpid()),
              "user": "someone", "started": now, "heartbeat": now, **tags}
    MlflowClient(uri, registry_uri=uri).create_registered_model(lock_name(experiment),
                                                                tags=values)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize(("experiment", "tags", "reason"), [
    ("dead-pid", {"pid": str(_dead_pid())}, "is gone"),
    ("old-heartbeat", {"host": "elsewhere", "heartbeat": str(time.time() - 3600)},
     "no heartbeat for more than"),
])
def test_stale_lock_is_taken_over(experiment, tags, reason, lock_store):
    _plant_lock(lock_store, experiment, **tags)
    lines: list[str] = []
    lock = SweepLock(lock_store, experiment, log=lines.append)
    lock.acquire()
    try:
        assert lock.holder().token == lock.token
        assert any("took over" in line and reason in line for line in lines), lines
    finally:
        lock.release()
    assert lock.holder() is None


def test_live_lock_refuses_and_wait_gives_up(lock_store, monkeypatch):
    _plant_lock(lock_store, "live", host="other-host", pid="4242", user="bob")
    with pytest.raises(LockError, match=r"pid 4242 on other-host \(user bob\)"):
        SweepLock(lock_store, "live").acquire()
    monkeypatch.setattr("orchestrator.lock.POLL_S", 0.2)
    lines: list[str] = []
    start = time.monotonic()
    with pytest.raises(LockError, match="still runs after the wait"):
        SweepLock(lock_store, "live", log=lines.append).acquire(wait=1.0)
    assert 0.9 < time.monotonic() - start < 30
    assert any("waiting for it to end" in line for line in lines)


def test_one_of_two_takers_of_a_stale_lock_wins(lock_store):
    _plant_lock(lock_store, "race", host="elsewhere", heartbeat="1")
    results: list[str] = []
    locks = [SweepLock(lock_store, "race", log=lambda _: None) for _ in range(2)]

    def take(lock: SweepLock) -> None:
        try:
            lock.acquire()
            results.append("won")
        except LockError:
            results.append("refused")

    threads = [threading.Thread(target=take, args=(lock,)) for lock in locks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for lock in locks:
        lock.release()
    assert sorted(results) == ["refused", "won"], results


def test_fresh_sqlite_store_initialised_by_three_processes_at_once(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = f"from orchestrator.store import prepare_store; prepare_store({uri!r}); print('ok')"
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT,
                              env=sweep_env(tmp_path), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    assert all(out.strip().endswith("ok") for out in outputs), outputs


# --------------------------------------------------------------------------- hermetic Ray
@pytest.mark.slow
def test_sweep_starts_its_own_ray_beside_dead_and_live_clusters(tmp_path, data_dir, cache_dir):
    """A dead `ray start` (its address file and RAY_ADDRESS left behind), then a live
    cluster in RAY_ADDRESS: the sweep without --address starts its own local Ray each time
    (with --num-cpus, which joining a cluster would reject)."""
    from ray.cluster_utils import Cluster

    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths
    try:
        (ray_tmp / "ray").mkdir()
        (ray_tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:9")
        dead = LiveSweep(tiny(data_dir, tmp_path, "--set", "epochs=1", "--name", "dead"),
                         tmp_path, cache_dir, env={"RAY_TMPDIR": str(ray_tmp),
                                                   "RAY_ADDRESS": "127.0.0.1:9"})
        assert dead.finish(timeout=600) == 0, "".join(dead.lines)[-3000:]
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        live = LiveSweep(tiny(data_dir, tmp_path, "--set", "epochs=1", "--name", "live"),
                         tmp_path, cache_dir, env={"RAY_ADDRESS": cluster.address})
        assert live.finish(timeout=600) == 0, "".join(live.lines)[-3000:]
    finally:
        cluster.shutdown()


def test_conftest_made_the_data_dir_absolute():
    """The README's `BATCHMIXUP_DATA_DIR=../shared/data` works for tests that run
    subprocesses in temporary folders: conftest resolved it where pytest started."""
    value = os.environ.get("BATCHMIXUP_DATA_DIR")
    if value is None:
        pytest.skip("BATCHMIXUP_DATA_DIR not set")
    assert Path(value).is_absolute()
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert 'DATA="${BATCHMIXUP_DATA_DIR:-../shared/data}"' in ci
    assert 'HF_HUB_OFFLINE=1 BATCHMIXUP_DATA_DIR="$DATA" python -m pytest -q' in ci


@pytest.mark.slow
def test_relative_data_dir_from_another_working_directory(tmp_path, data_dir, cache_dir):
    """--data-dir relative to the directory the command runs in, wherever that is."""
    cwd = tmp_path / "somewhere" / "else"
    cwd.mkdir(parents=True)
    relative = os.path.relpath(data_dir, cwd)
    proc = subprocess.run([sys.executable, "-m", "trainers.run_cell", "--task", "banking77",
                           "--ratio", "0.01", "--epochs", "1", "--max-length", "64",
                           "--data-dir", relative], cwd=cwd, env=sweep_env(cache_dir),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["accuracy"] > 0


# --------------------------------------------------------------------------- round 3 (issue 25)
def _bomb(levels: int) -> str:
    """A YAML alias bomb: each level lists the one below 9 times (9**levels leaves)."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + f"\nsettings: {{epochs: *a{levels}}}\n"


PARSERS = [
    ("tasks: [rte]\n", "key 'tasks' is given twice in one mapping"),
    ("settings: {epochs: abc, epochs: 2}\n", "key 'epochs' is given twice in one mapping"),
    (None, "YAML aliases (*name) are not allowed"),  # the alias bomb, 9**9 leaves
    ("name: 'x%2F%2e%2e%2Fescaped'\n", "no '/', '%' or '..'"),
    ("strategies: [{name: 'a%2Fb', strategy: none}]\n", "must be a plain arm name"),
    (f"name: {'n' * 200}\n", "is longer than 128 bytes"),
]


@pytest.mark.parametrize(("extra", "needle"), PARSERS)
def test_sweep_file_parser_failures_are_one_bounded_line(extra, needle, tmp_path, data_dir,
                                                         capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    file = tmp_path / "bad.yaml"
    base = SWEEP.replace("strategies: [none]\n", "") if extra and extra.startswith(
        "strategies:") else SWEEP
    file.write_text(base + (extra if extra is not None else _bomb(9)))
    start = time.monotonic()
    code = sweep_cli.main(["--sweep-file", str(file), "--data-dir", str(data_dir),
                           "--no-report"])
    err = capsys.readouterr().err
    assert code == 2 and needle in err, err
    one_error_line(err)
    assert len(err) < 400 and time.monotonic() - start < 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]  # nothing created


@pytest.mark.parametrize(("uri", "needle"), [
    ("sqlite:///:memory:", "an in-memory database keeps no record"),
    ("sqlite://", "an in-memory database keeps no record"),
    ("sqlite:///{tmp}/folder", "is a folder, not a database file"),
])
def test_stores_that_cannot_keep_records_are_refused(uri, needle, tmp_path, data_dir, capsys,
                                                     monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    start = time.monotonic()
    code = sweep_cli.main(tiny(data_dir, tmp_path, "--tracking-uri",
                               uri.format(tmp=tmp_path)))
    err = capsys.readouterr().err
    assert code == 2 and needle in err, err
    one_error_line(err)
    assert time.monotonic() - start < 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]  # no lock file, no ray/
    assert list((tmp_path / "folder").iterdir()) == []


def test_duplicate_csv_columns_are_refused(tmp_path, data_dir, capsys):
    data = tmp_path / "two.csv"
    data.write_text("text,label,label\nhello,a,same\nbye,b,same\n")
    code = run_cell.main(["--task", "custom", "--train-file", str(data), "--test-file",
                          str(data), "--model", "random:tiny", "--epochs", "1",
                          "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 2 and "column(s) 'label' appear more than once in the header" in err, err
    one_error_line(err)


def test_a_deleted_experiment_of_the_same_name_is_named_not_restored(tmp_path, data_dir,
                                                                      capsys, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    prepare_store(uri)
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("smoke")
    client.create_run(experiment_id, run_name="another tool's run")
    client.delete_experiment(experiment_id)
    capsys.readouterr()  # the set-up's own MLflow log lines
    code = sweep_cli.main(tiny(data_dir, tmp_path, "--tracking-uri", uri))
    err = capsys.readouterr().err
    assert code == 2 and "experiment 'smoke' was deleted" in err, err
    assert f"--experiment-id {experiment_id}" in err and "another --name" in err
    one_error_line(err)
    assert client.get_experiment(experiment_id).lifecycle_stage == "deleted"
    assert not (tmp_path / "ray").exists()
