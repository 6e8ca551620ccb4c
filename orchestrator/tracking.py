"""MLflow tracking of a sweep: exactly one run per cell, each epoch logged once.

Design: **every MLflow write comes from the driver** (a Ray Tune callback), never from the
trial processes. Trials report metrics to Tune; the driver turns them into MLflow calls. One
writer means no sqlite "database is locked" and no concurrent schema migration, whatever the
number of concurrent trials, and the same code works for a sqlite file or an ``http://``
tracking server shared by a cluster.

Guarantees and how they are kept:
    * One run per cell and configuration: a cell's run is found by its tags (``cell``,
      ``fingerprint``, ``phase``) and reused across Tune retries, driver restarts and
      ``--resume``; it is created only when none exists. A relaunch whose settings changed
      (another ``fingerprint``, :func:`trainers.prepare.cell_fingerprint`) gets a new run; the
      old one stays, findable by its fingerprint.
    * Each epoch once: the steps already logged are read back when a run is attached; a result
      for a logged step (a retried or resumed trial replaying an epoch) is skipped, so the first
      value of an epoch is the one kept (on CPU replays are bit-identical anyway).
    * Never FINISHED with missing epochs: a run is terminated FINISHED only after all its epoch
      writes succeeded, up to and including the epoch the trainer marked ``final`` (the budget
      ended or early stopping stopped it); otherwise FAILED with a ``failure_reason`` tag.
    * Tracking server down: writes go through an in-order queue. A failing write stays queued
      (with everything after it) and the writer thread retries it every ``retry_interval``
      seconds (5) and at the end of the sweep for up to ``flush_timeout`` seconds, so training
      continues while the server is away and the records land when it returns. If it never
      returns, the sweep exits non-zero and says how many writes are unsent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from orchestrator.store import check_db_driver, error_code
from results.uris import health_request, redact_text, redact_uri
from trainers.errors import ConfigError

# MLflow's HTTP client retries for minutes by default; our queue does the retrying instead.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
# MLflow prints "View run ... at: <tracking URI>" per finished run, credentials included.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

EPOCH_METRICS = ("accuracy", "macro_f1", "val_accuracy", "val_macro_f1", "val_loss",
                 "train_loss", "updates", "epoch_seconds", "examples_per_second",
                 "trial_seconds", "cpu_seconds", "peak_rss_mib", "gpu_peak_allocated_mib",
                 "gpu_peak_reserved_mib", "gpu_utilization")
MAX_METRICS_PER_BATCH = 1000  # MLflow's limit for one log_batch call
RESULT_METRICS = ("selected_epoch", "selected_updates", "stopped_early", "converged",
                  "test_accuracy", "test_macro_f1", "test_correct", "test_examples",
                  "test_ece", "test_nll", "test_brier",
                  "selected_val_accuracy", "selected_val_loss")
"""The cell's result (trainers.budget.result), logged once at the step of its final epoch."""
SECRET_WORDS = ("token", "secret", "password", "credential", "api_key", "apikey")


class TrackingError(ConfigError):
    """The tracking URI is malformed or unreachable."""


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def artifact_root(uri: str) -> str | None:
    """For a sqlite store, artifacts live beside the database in ``mlartifacts/``."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
    return None


def check_tracking_uri(uri: str, timeout: float = 5.0) -> None:
    """Raise :class:`TrackingError` within ``timeout`` seconds if the store is unusable."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(health_request(uri), timeout=timeout) as reply:
                if reply.status != 200:
                    raise TrackingError(f"tracking server {redact_uri(uri)} answered HTTP "
                                        f"{reply.status}")
        except (TimeoutError, urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingError(f"tracking server {redact_uri(uri)} is unreachable ({reason}); "
                                "start it "
                                "(mlflow server --host 127.0.0.1 ...) or pass --tracking-uri"
                                ) from None
        check_server_api(uri, timeout)
        return
    if parsed.scheme == "sqlite":
        db = Path(uri[len("sqlite:///"):].split("?", 1)[0])
        if uri == "sqlite://" or str(db) == ":memory:" or "mode=memory" in uri:
            raise TrackingError(f"tracking store {uri}: an in-memory database keeps no record "
                                "(each connection gets an empty one); give a file, e.g. "
                                "sqlite:///mlflow.db")
        if db.is_dir():
            raise TrackingError(f"tracking store {uri}: {db} is a folder, not a database file")
        if db.exists() and not os.access(db, os.W_OK):
            raise TrackingError(f"tracking store {uri}: the database file {db} is not writable")
        folder = db.parent if str(db.parent) else Path.cwd()
        if not folder.is_dir():
            raise TrackingError(f"tracking store {uri}: folder {folder} does not exist")
        if not os.access(folder, os.W_OK):
            raise TrackingError(f"tracking store {uri}: folder {folder} is not writable")
        return
    if parsed.scheme in ("", "file"):
        raise TrackingError(f"tracking URI {uri!r}: MLflow 3 needs a database or a server; use "
                            "sqlite:///path/mlflow.db or http://host:port")
    if parsed.scheme.split("+", 1)[0] not in ("postgresql", "mysql", "mssql", "databricks"):
        hint = "; write postgresql://" if parsed.scheme == "postgres" else ""
        raise TrackingError(f"tracking URI {redact_uri(uri)!r}: unsupported scheme "
                            f"{parsed.scheme!r}{hint}")
    check_db_driver(uri)  # a missing psycopg etc.: one line now, not a traceback later
    if parsed.scheme.split("+", 1)[0] == "postgresql":  # also postgresql+psycopg2:// etc.
        check_database(uri, timeout)


def check_server_api(uri: str, timeout: float = 5.0, read_timeout: float = 60.0) -> None:
    """One authenticated API call to an ``http(s)://`` tracking server, after ``/health``.

    ``/health`` answers 200 to anybody, but an MLflow 3 server refuses every API call (HTTP 403)
    whose ``Host`` header is not in its ``--allowed-hosts`` (by default localhost and private
    IP addresses: a host *name* such as ``http://head-node:5000`` is refused), and a server
    behind authentication answers 401/403 without the right credentials. The call uses
    MLflow's own client credentials (``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``,
    ``MLFLOW_TRACKING_TOKEN``, TLS settings), so it fails exactly when the sweep's writes would.
    A server's first API call may be slow (it opens its store; basic auth hashes the password:
    ~7 s measured on 2 busy cores), hence ``read_timeout`` beside the connect ``timeout``.
    """
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    endpoint = "/api/2.0/mlflow/experiments/search"
    try:
        reply = http_request(get_default_host_creds(uri.rstrip("/")), endpoint, "GET",
                             max_retries=0, timeout=(timeout, read_timeout),
                             raise_on_status=False,
                             params={"max_results": 1})
    except Exception as exc:  # noqa: BLE001 - connection errors of any client layer
        raise TrackingError(f"tracking server {redact_uri(uri)} did not answer GET {endpoint} "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
                            ) from None
    if 200 <= reply.status_code < 300:
        return
    raise TrackingError(server_refusal(redact_uri(uri), reply.status_code, reply.reason,
                                       reply.text, endpoint))


def server_refusal(shown: str, status: int, reason: str, body: str, endpoint: str) -> str:
    """The one-line cause of a non-2xx answer to the API check, naming the fix."""
    first = (body.strip().splitlines() or [""])[0][:200]
    answer = f"tracking server {shown} answered HTTP {status} {reason} to GET {endpoint}"
    host = urlparse(shown).netloc.rpartition("@")[2]
    credentials = ("MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or "
                   "MLFLOW_TRACKING_TOKEN)")
    if status == 403 and "Invalid Host header" in body:
        return (f"{answer} ({first}): the server does not accept the host name {host!r}; "
                f"restart it with --allowed-hosts {host} (the host:port of --tracking-uri), "
                "or use an address it allows")
    if status == 401:
        given = "rejected the credentials in" if _has_credentials() else "needs credentials:"
        return f"{answer} ({first}): the server {given} set {credentials}"
    if status == 403:
        return (f"{answer} ({first}): either its --allowed-hosts does not include {host!r} "
                f"(restart it with --allowed-hosts {host}) or the user of {credentials} may "
                "not use this server")
    return (f"{answer} ({first}); is --tracking-uri the address of an MLflow tracking server, "
            "with its path prefix if it has one?")


def _has_credentials() -> bool:
    return any(os.environ.get(name) for name in (
        "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"))


def check_database(uri: str, timeout: float = 5.0) -> None:
    """Connect once to a ``postgresql://`` store before anything starts.

    Without this a missing driver, a server that is down, a wrong password or a missing
    database surface later as a long traceback, or as minutes of MLflow's own connection
    retries. Plain ``postgresql://`` uses psycopg2 (``pip install -e ".[postgres]"``);
    ``postgresql+psycopg://`` selects psycopg 3.
    """
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    shown = redact_uri(uri)
    try:
        engine = sqlalchemy.create_engine(uri, poolclass=NullPool, connect_args={
            "connect_timeout": max(1, int(timeout))})
    except ModuleNotFoundError as exc:
        raise TrackingError(f"tracking store {shown}: its database driver ({exc.name}) is not "
                            "installed; pip install -e \".[postgres]\" (psycopg2 for "
                            "postgresql://)") from None
    except sqlalchemy.exc.ArgumentError as exc:
        raise TrackingError(f"tracking store {shown}: {str(exc).splitlines()[0]}") from None
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.DBAPIError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0][:300]
        raise TrackingError(f"tracking store {shown}: cannot connect ({reason}); "
                            f"{_database_hint(reason)}") from None
    finally:
        engine.dispose()


def _database_hint(reason: str) -> str:
    """What to do about a failed PostgreSQL connection, from the server's message."""
    if "password authentication failed" in reason or "no password supplied" in reason:
        return "check the user and password in the URI"
    if "does not exist" in reason:
        return "create the database (createdb) or fix its name in the URI"
    return ("is PostgreSQL running and listening on that host and port (listen_addresses, "
            "port, pg_hba.conf)?")


def standard_tags(entry_point: str) -> dict[str, str]:
    """MLflow's own source/user tags (the UI shows them) and the redacted command line."""
    import getpass
    import shlex
    import sys

    commit = git_commit()
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    command = " ".join(["python -m", entry_point, *(shlex.quote(a) for a in sys.argv[1:])])
    return {"mlflow.source.name": entry_point, "mlflow.source.type": "LOCAL",
            "mlflow.source.git.commit": commit, "mlflow.user": user, "git_commit": commit,
            "command": redact_text(command)[:5000]}


def runs_url(uri: str, experiment_id: str) -> str:
    """Where a browser shows the experiment's runs: the server's page, or for a local store
    the page of ``mlflow ui`` started as the README says."""
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else \
        "http://127.0.0.1:5000"
    # workflowType=machine_learning: MLflow 3's UI shows the runs table, not the GenAI overview
    url = f"{redact_uri(base)}/#/experiments/{experiment_id}/runs" \
          "?workflowType=machine_learning"
    if base != uri.rstrip("/"):
        url += f" (after: mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000)"
    return url


def git_commit() -> str:
    """The project's git commit (``unknown`` outside a checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def safe_params(params: dict[str, Any]) -> dict[str, str]:
    """Stringify params, dropping anything that looks like a credential."""
    return {k: str(v) for k, v in params.items()
            if not any(word in k.lower() for word in SECRET_WORDS)}


@dataclass
class CellRun:
    """What the driver knows of one cell's MLflow run."""

    cell: str
    epochs: int
    fingerprint: str = ""
    final_step: int | None = None
    run_id: str | None = None
    status: str | None = None
    logged_steps: set[int] = field(default_factory=set)
    params_logged: bool = False
    hardware_tagged: bool = False
    failure: str | None = None
    finals: dict[str, float] = field(default_factory=dict)


# MLflow error codes that no retry can change: the request itself is wrong (e.g. a param
# logged again with another value), not the store unreachable. Connection errors, 5xx and a
# busy sqlite file ("database is locked": TEMPORARILY_UNAVAILABLE) stay retryable.
PERMANENT_ERRORS = frozenset({"INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS",
                              "RESOURCE_DOES_NOT_EXIST", "INVALID_STATE"})


def rejected(exc: BaseException) -> bool:
    """True when the store refused a write for good (retrying would block the queue forever)."""
    return error_code(exc) in PERMANENT_ERRORS


class WriteQueue:
    """In-order MLflow writes; a failing write and everything after it wait for a retry.

    The writes run on one background thread (started at the first write), so the Tune driver's
    event loop does not wait for the store after each epoch result: a sqlite commit or an HTTP
    round trip per write would otherwise delay every trial's next epoch (each ``tune.report``
    blocks its trial until the driver has processed the result). Still one writer, still in
    order. ``put(..., wait=True)`` blocks until that write ran, unless the store is failing;
    :meth:`wait_idle` blocks until everything queued so far ran, unless the store is failing;
    :meth:`drain` retries until the queue is empty or a timeout passes.
    """

    def __init__(self, retry_interval: float = 5.0) -> None:
        self.pending: deque[tuple[str, Callable[[], None]]] = deque()
        self.last_error: str | None = None
        self.failed_since: float | None = None
        self.retry_interval = retry_interval
        self.last_attempt = 0.0
        self.rejected: list[str] = []  # writes the store refused for good (see rejected())
        self._init_thread_state()

    def _init_thread_state(self) -> None:
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._queued = 0  # writes ever queued
        self._done = 0  # writes ever completed (in order: the first _done of them)
        self._retry_now = False

    def __getstate__(self) -> dict[str, Any]:  # pickled with the tracker into tuner.pkl
        state = self.__dict__.copy()
        for key in ("_cond", "_thread", "_queued", "_done", "_retry_now"):
            state.pop(key)
        state["pending"] = deque()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_thread_state()

    def put(self, label: str, op: Callable[[], None], wait: bool = False) -> None:
        """Queue ``op``; with ``wait``, return once it ran (or the store is failing)."""
        with self._cond:
            self.pending.append((label, op))
            self._queued += 1
            ticket = self._queued
            self._cond.notify_all()
        self._ensure_thread()
        if wait:
            self._wait(lambda: self._done >= ticket)

    def _ensure_thread(self) -> None:
        with self._cond:  # one writer even if two threads put at once
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._writer, name="mlflow-writes",
                                                daemon=True)
                self._thread.start()

    def _wait(self, ready: Callable[[], bool], timeout: float | None = None) -> bool:
        """Block until ``ready()`` or the store is failing; True when ``ready()``."""
        with self._cond:
            self._cond.wait_for(lambda: ready() or self.failed_since is not None, timeout)
            return ready()

    def wait_idle(self) -> bool:
        """Block until every write queued so far ran; returns at once while the store is
        failing (those writes stay queued). True when nothing queued so far is left."""
        with self._cond:
            ticket = self._queued
        return self._wait(lambda: self._done >= ticket)

    def _writer(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self.pending and self.failed_since is None:
                        break
                    if self.pending and self._retry_now:
                        self._retry_now = False
                        break
                    timeout = None
                    if self.pending:  # failing: retry every retry_interval seconds
                        timeout = self.last_attempt + self.retry_interval - time.monotonic()
                        if timeout <= 0:
                            break
                    self._cond.wait(timeout)
                self._retry_now = False
            self._run()

    def _run(self) -> bool:
        """Run queued writes in order until one fails; True when the queue is empty."""
        self.last_attempt = time.monotonic()
        while True:
            with self._cond:
                if not self.pending:
                    return True
                label, op = self.pending[0]
            try:
                op()
            except Exception as exc:  # noqa: BLE001 - a store error means "retry later"...
                first = redact_text(str(exc).splitlines()[0][:200]) if str(exc) else ""
                message = f"{label}: {type(exc).__name__}: {first}"
                if rejected(exc):  # ...unless the store refused this write for good
                    print(f"[tracking] write rejected by the store, not retried ({message})",
                          flush=True)
                    with self._cond:
                        self.rejected.append(message)
                        self.pending.popleft()
                        self._done += 1
                        self._cond.notify_all()
                    continue
                with self._cond:
                    if self.failed_since is None:
                        self.failed_since = time.monotonic()
                        print(f"[tracking] write failed, queued for retry ({message})",
                              flush=True)
                    self.last_error = message
                    self._cond.notify_all()
                return False
            with self._cond:
                self.pending.popleft()
                self._done += 1
                if self.failed_since is not None:
                    print(f"[tracking] store reachable again; flushed the queue "
                          f"(down {time.monotonic() - self.failed_since:.0f}s)", flush=True)
                    self.failed_since = None
                self._cond.notify_all()

    def flush(self, force: bool = False) -> bool:
        """True when the queue is empty; otherwise make sure the writer thread runs and, with
        ``force``, ask it for an immediate retry of a failing store. Does not wait."""
        with self._cond:
            if force and self.pending:
                self._retry_now = True
                self._cond.notify_all()
            empty = not self.pending
        if not empty:
            self._ensure_thread()
        return empty

    def drain(self, timeout: float, interval: float = 2.0) -> bool:
        """Retry until empty or ``timeout`` seconds pass (every ``interval`` s while failing)."""
        deadline = time.monotonic() + timeout
        while not self.flush(force=True):
            with self._cond:
                # wake on every completed write; retry a failing store every `interval`
                done = self._done
                self._cond.wait_for(lambda done=done: not self.pending or self._done != done,
                                    max(0.0, min(interval, deadline - time.monotonic())))
                if not self.pending:
                    return True
            if time.monotonic() > deadline:
                return False
        return True


class SweepTracker:
    """The single MLflow writer of a sweep (used by :class:`MlflowCellCallback`).

    Args:
        tracking_uri: MLflow store.
        experiment: experiment name (the sweep name).
        phase: ``final`` or ``search``.
        base_tags: tags every cell run gets (sweep, git commit, ...).
    """

    def __init__(self, tracking_uri: str, experiment: str, phase: str = "final",
                 base_tags: dict[str, str] | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.phase = phase
        self.base_tags = dict(base_tags or {})
        self.queue = WriteQueue()
        self.cells: dict[str, CellRun] = {}
        self._client: Any = None
        self._experiment_id: str | None = None

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks into tuner.pkl
        state = self.__dict__.copy()
        state.update(_client=None, _experiment_id=None, queue=WriteQueue(), cells={},
                     tracking_uri=redact_uri(self.tracking_uri))  # no credentials on disk
        return state

    # ---------------------------------------------------------------- store access
    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def experiment_id(self) -> str:
        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                # custom_model_development: MLflow 3's UI opens such an experiment on its runs
                # table instead of the (empty) GenAI overview
                self._experiment_id = self.client.create_experiment(
                    self.experiment, artifact_location=_experiment_artifacts(
                        self.tracking_uri, self.experiment),
                    tags={"mlflow.experimentKind": "custom_model_development"})
            else:
                if found.lifecycle_stage == "deleted":
                    self.client.restore_experiment(found.experiment_id)
                self._experiment_id = found.experiment_id
        return self._experiment_id

    def existing_runs(self, cell: str | None = None,
                      fingerprint: str | None = None) -> dict[str, Any]:
        """Active cell runs of this sweep and phase, by cell name (latest wins).

        With ``cell``, only that cell's runs are searched: the store then reads a handful of
        runs instead of the whole experiment (one lookup per cell would otherwise cost
        O(cells) each, O(cells²) per sweep). With ``fingerprint``, only runs of that
        configuration.
        """
        query = f"tags.kind = 'cell' and tags.phase = '{self.phase}'"
        if fingerprint is not None:
            query += f" and tags.fingerprint = '{fingerprint}'"
        if cell is not None:
            if "'" in cell or "\\" in cell:  # not expressible in a filter string: scan all
                found = self.existing_runs(fingerprint=fingerprint).get(cell)
                return {cell: found} if found is not None else {}
            query += f" and tags.cell = '{cell}'"
        runs: dict[str, Any] = {}
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id()], filter_string=query,
                max_results=1000, page_token=token, order_by=["attributes.start_time ASC"])
            for run in page:
                runs[run.data.tags.get("cell", run.info.run_name)] = run
            token = page.token
            if not token:
                return runs

    def finished_cells(self) -> set[tuple[str, str]]:
        """(cell, fingerprint) of every FINISHED run: a relaunch skips a cell only when its run
        of the same configuration finished."""
        query = f"tags.kind = 'cell' and tags.phase = '{self.phase}'"
        done: set[tuple[str, str]] = set()
        token = None
        while True:
            page = self.client.search_runs([self.experiment_id()], filter_string=query,
                                           max_results=1000, page_token=token)
            for run in page:
                if run.info.status == "FINISHED":
                    tags = run.data.tags
                    done.add((tags.get("cell", run.info.run_name), tags.get("fingerprint", "")))
            token = page.token
            if not token:
                return done

    def record_launch(self, cells: dict[str, str]) -> str:
        """Write this launch's cells (name -> configuration fingerprint) as ``manifest.json``
        of the experiment's summary run (tag ``kind=summary``, created once): the report
        shows exactly these configurations. Returns the summary run id."""
        import json
        import tempfile

        query = "tags.kind = 'summary'"
        found = self.client.search_runs([self.experiment_id()], filter_string=query,
                                        max_results=1, order_by=["attributes.start_time ASC"])
        if found:
            run_id = found[0].info.run_id
        else:
            run_id = self.client.create_run(
                self.experiment_id(), run_name="summary",
                tags={**self.base_tags, "kind": "summary", "sweep": self.experiment}).info.run_id
            self.client.set_terminated(run_id, "FINISHED")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "manifest.json"
            path.write_text(json.dumps({"phase": self.phase, "launched": time.time(),
                                        "command": self.base_tags.get("command", ""),
                                        "cells": cells}, indent=1, sort_keys=True))
            self.client.log_artifact(run_id, str(path))
        return run_id

    # ---------------------------------------------------------------- cell lifecycle
    def attach(self, cell: str, epochs: int, tags: dict[str, str], params: dict[str, Any]) -> None:
        """Find or create the cell's run (queued: works while the store is down)."""
        if cell in self.cells:
            self.queue.put(f"{cell}: tags", lambda: self._set_tags(cell, tags))
            return
        fingerprint = tags.get("fingerprint", "")
        state = self.cells[cell] = CellRun(cell, epochs, fingerprint)

        def open_run() -> None:
            existing = self.existing_runs(cell, fingerprint or None).get(cell)
            if existing is not None:
                state.run_id = existing.info.run_id
                state.logged_steps = {m.step for m in self.client.get_metric_history(
                    state.run_id, "epoch_seconds")}
                state.params_logged = bool(existing.data.params)
                if existing.info.status != "RUNNING":
                    self.client.update_run(state.run_id, status="RUNNING")
            else:
                run = self.client.create_run(self.experiment_id(), run_name=cell,
                                             tags={**self.base_tags, **tags, "cell": cell,
                                                   "kind": "cell", "phase": self.phase})
                state.run_id = run.info.run_id
            if not state.params_logged:
                from mlflow.entities import Param

                self.client.log_batch(state.run_id, params=[
                    Param(k, v) for k, v in safe_params(params).items()])
                state.params_logged = True
            self._set_tags(cell, tags)

        # Waits for the run (unless the store is failing): the steps it already holds must be
        # known before this cell's first epoch result is deduplicated against them.
        self.queue.put(f"{cell}: open run", open_run, wait=True)

    @staticmethod
    def incomplete(state: CellRun) -> str | None:
        """Why the cell's epochs are incomplete, or None when every epoch up to the final one
        was logged."""
        if state.final_step is None:
            return (f"only {len(state.logged_steps)} epochs were reported and none was final "
                    f"(budget {state.epochs} epochs)")
        missing = set(range(1, state.final_step + 1)) - state.logged_steps
        if missing:
            return f"epochs {sorted(missing)[:10]} of {state.final_step} were never reported"
        return None

    def _set_tags(self, cell: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        run_id = self.cells[cell].run_id
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_epochs(self, cell: str, results: list[dict[str, Any]]) -> int:
        """Queue the metrics of several epochs (step = epoch) as few writes as MLflow allows
        (``log_batch`` takes up to 1,000 metrics), skipping steps already logged; returns how
        many epochs were new. A cell of thousands of tiny epochs is then a handful of store
        round trips, not one per epoch."""
        from mlflow.entities import Metric

        state = self.cells[cell]
        timestamp = int(time.time() * 1000)
        rows: list[Metric] = []
        steps: list[int] = []
        for result in results:
            step = int(result["epoch"])
            if result.get("final"):
                state.final_step = step
            if step in state.logged_steps:
                continue
            state.logged_steps.add(step)
            steps.append(step)
            keys = EPOCH_METRICS + (RESULT_METRICS if result.get("final") else ())
            metrics = {k: float(result[k]) for k in keys if k in result}
            state.finals.update(metrics)
            rows += [Metric(k, v, timestamp, step) for k, v in metrics.items()]
        for start in range(0, len(rows), MAX_METRICS_PER_BATCH):
            chunk = rows[start:start + MAX_METRICS_PER_BATCH]
            label = f"{cell}: epochs {chunk[0].step}-{chunk[-1].step}"
            self.queue.put(label, lambda chunk=chunk: self.client.log_batch(state.run_id,
                                                                          metrics=chunk))
        return len(steps)

    def log_params(self, cell: str, params: dict[str, Any]) -> None:
        """Queue params learnt after the run opened (e.g. the precision ``auto`` resolved to
        on the trial's machine)."""
        from mlflow.entities import Param

        self.queue.put(f"{cell}: params", lambda: self.client.log_batch(
            self.cells[cell].run_id, params=[Param(k, v) for k, v in safe_params(params).items()]))

    def log_subset(self, cell: str, digest: str, source: str) -> None:
        """Queue the cell's training subset as the run's MLflow dataset input (name
        ``<task> train subset``, the digest of its example positions): the run page and
        ``mlflow.search_runs`` show which runs trained on the same examples."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        task = cell.split("/", 1)[0]
        dataset = Dataset(name=f"{task} train subset", digest=digest,
                          source_type="batchmixup-lab", source=source or task)
        inputs = [DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])]
        self.queue.put(f"{cell}: dataset input", lambda: self.client.log_inputs(
            self.cells[cell].run_id, datasets=inputs))

    def set_tag(self, cell: str, key: str, value: str) -> None:
        self.queue.put(f"{cell}: tag {key}",
                       lambda: self.client.set_tag(self.cells[cell].run_id, key, value))

    def log_artifacts(self, cell: str, folder: Path, remove_after: bool = False) -> None:
        """Queue an upload of ``folder``; ``remove_after`` deletes it once uploaded."""
        if not (folder.is_dir() and any(folder.iterdir())):
            if remove_after:
                shutil.rmtree(folder, ignore_errors=True)
            return

        def upload() -> None:
            self.client.log_artifacts(self.cells[cell].run_id, str(folder))
            if remove_after:
                shutil.rmtree(folder, ignore_errors=True)

        self.queue.put(f"{cell}: artifacts", upload)

    def finish(self, cell: str, failure: str | None = None) -> str:
        """Terminate the run: FINISHED only with every epoch logged, else FAILED with a reason."""
        state = self.cells[cell]
        if failure is None:
            failure = self.incomplete(state)
        state.failure = failure
        status = "FAILED" if failure else "FINISHED"
        state.status = status

        def close() -> None:
            if failure:
                self.client.set_tag(state.run_id, "failure_reason", failure[:4000])
            self.client.set_terminated(state.run_id, status=status)

        self.queue.put(f"{cell}: {status}", close)
        return status


def _experiment_artifacts(uri: str, experiment: str) -> str | None:
    root = artifact_root(uri)
    return f"{root}/{experiment}" if root else None
