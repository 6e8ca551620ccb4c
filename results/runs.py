"""Read one sweep's MLflow runs into pandas DataFrames.

Only what MLflow recorded is used; nothing from ``trainers`` or ``orchestrator`` is imported.
The schema (one experiment per sweep, one run per cell tagged ``kind=cell``, per-epoch metrics
with ``step = epoch``) is described in :mod:`results.report`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# MLflow's HTTP client retries for minutes by default (an unreachable server took 254 s to
# fail); open_client probes the server itself, so one quick attempt per request is enough.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
# MLflow prints "View run ... at: <tracking URI>" per finished run, credentials included.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

import pandas as pd  # noqa: E402 - after the MLflow settings above
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Run, ViewType  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

from results import paper  # noqa: E402
from results.uris import health_request, redact_text, redact_uri  # noqa: E402

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
STORE_TIMEOUT_S = 5.0

CELL_TAGS = ("task", "ratio", "strategy", "seed")
"""Tags a cell run needs to be placed in the tables."""

INFO_TAGS = (
    "fingerprint",
    "command",
    "sweep",
    "phase",
    "hardware",
    "git_commit",
    "ray_trial_id",
    "cell",
    "failure_reason",
    "chosen",
    "updates_per_batch",
    "forward_passes_per_batch",
    "strategy_source",
)
STRATEGY_TAGS = ("strategy_label", "strategy_family", "strategy_site")
"""What a cell's strategy declared (``trainers.strategies.strategy_tags``); runs recorded
before these tags get the paper's strategies' values (:data:`results.paper.DESCRIPTIONS`)."""
UNKNOWN = "unknown"

HISTORY_METRICS = (
    "accuracy",
    "macro_f1",
    "train_loss",
    "epoch_seconds",
    "examples_per_second",
    "val_accuracy",
)
"""Per-epoch metrics whose full history is read (step = epoch)."""

RESOURCE_METRICS = ("cpu_seconds", "peak_rss_mib", "gpu_peak_allocated_mib",
                    "gpu_peak_reserved_mib", "gpu_utilization")
"""What the trial measured of its own process (trainers/resources.py), read as each run's
latest value (no history call: the peaks only grow, or are per epoch): ``resource.<key>``."""

RESULT_METRICS = (
    "selected_epoch",
    "selected_updates",
    "updates",
    "stopped_early",
    "converged",
    "test_accuracy",
    "test_macro_f1",
    "test_correct",
    "test_examples",
    "test_ece",
    "test_nll",
    "test_brier",
    "selected_val_accuracy",
    "selected_val_loss",
)
"""The cell's result, logged once at the step of its final epoch (``result.<name>`` columns;
NaN where a run did not log it: runs that predate it, or ``converged`` when not assessed)."""

MANIFEST_FILE = "manifest.json"
"""The summary run's record of the latest launch: ``{"phase", "launched", "command",
"cells": {cell name: fingerprint}}``."""

PREDICTIONS_FILE = "test_predictions.json"
"""A cell run's selected-epoch test predictions: ``{"split", "selected_epoch", "gold",
"pred"}``, the same example order in every run of a task."""

PARAM_PREFIX = "param."


class ReportError(Exception):
    """The report cannot be made (unknown experiment, no cell runs, no store); one-line message.

    Its text never shows credentials of a tracking URI (``http://user:***@host``)."""

    def __str__(self) -> str:
        return redact_text(super().__str__())


@dataclass
class SweepData:
    """Everything the report needs from one experiment.

    ``runs`` has one row per ``kind=cell`` run: ``run_id``, ``run_name``, ``status``,
    ``start_time`` (ms), the tags ``task``, ``ratio`` (float), ``ratio_tag`` (as logged),
    ``strategy`` (the sweep's arm name, tag ``arm``; the strategy tag when there is none),
    ``algorithm`` (tag ``strategy``: a built-in strategy or a plug-in's ``module:NAME``),
    ``strategy_label``, ``strategy_family``, ``strategy_site`` (:data:`STRATEGY_TAGS`),
    ``seed``,
    ``fingerprint`` ("" for runs that predate it), ``command``, ``sweep``, ``phase`` (missing
    -> ``final``), ``hardware``, ``git_commit``, ``ray_trial_id``, ``cell``,
    ``failure_reason``, one ``param.<name>`` column per logged param, one ``final.<metric>``
    column (value at the last step) per metric in :data:`HISTORY_METRICS`, one
    ``result.<metric>`` column per metric in :data:`RESULT_METRICS`, one ``resource.<metric>``
    column (latest value) per metric in :data:`RESOURCE_METRICS`, and ``epochs_run`` (the
    last step any per-epoch metric was logged at).

    ``history`` has one row per logged metric value: ``run_id``, ``key``, ``step``, ``value``.
    ``manifest`` is the summary run's ``manifest.json`` (None when absent or unreadable).
    """

    experiment: str
    experiment_id: str
    tracking_uri: str
    runs: pd.DataFrame
    history: pd.DataFrame
    summary_run_id: str | None = None
    notes: list[str] = field(default_factory=list)
    manifest: dict[str, Any] | None = None


def resolve_tracking_uri(tracking_uri: str | None) -> str:
    """Return the URI to use: the argument, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db."""
    if tracking_uri:
        return tracking_uri
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def _check_sqlite_store_exists(tracking_uri: str) -> None:
    """Refuse a ``sqlite:///`` URI whose file does not exist (MLflow would create an empty one)."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return
    db_path = Path(tracking_uri[len(prefix) :].split("?", 1)[0])
    if not db_path.exists():
        raise ReportError(f"no MLflow store at {db_path} (tracking URI {tracking_uri})")


def _check_server_reachable(tracking_uri: str) -> None:
    """An ``http(s)://`` store must answer ``/health`` within :data:`STORE_TIMEOUT_S`."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(health_request(tracking_uri), timeout=STORE_TIMEOUT_S):
            pass
    except (TimeoutError, urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ReportError(f"tracking server {redact_uri(tracking_uri)} is unreachable "
                          f"({reason})") from None


def open_client(tracking_uri: str) -> MlflowClient:
    """Return a client for an existing, reachable store.

    Raises ReportError (one line, within seconds) for a missing sqlite file, a server that does
    not answer, or a store MLflow cannot open (a missing database driver, a bad URI).
    """
    _check_sqlite_store_exists(tracking_uri)
    _check_server_reachable(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        client.search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - any store failure is one line, not a traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ReportError(f"cannot read the MLflow store {redact_uri(tracking_uri)}: "
                          f"{type(exc).__name__}: {first[:300]}") from None
    return client


def _search_all_runs(client: MlflowClient, experiment_id: str) -> list[Run]:
    """Return every active run of the experiment, following pagination."""
    runs: list[Run] = []
    page_token: str | None = None
    while True:
        page = client.search_runs(
            [experiment_id],
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=1000,
            page_token=page_token,
        )
        runs.extend(page)
        page_token = page.token
        if not page_token:
            return runs


def _parse_ratio(text: str) -> float | None:
    """Parse a ratio tag such as "0.25"; None if it is not a finite number."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _history_rows(client: MlflowClient, run: Run) -> list[dict[str, object]]:
    """Return the metric history of one run as row dicts (only :data:`HISTORY_METRICS`)."""
    rows: list[dict[str, object]] = []
    for key in HISTORY_METRICS:
        if key not in run.data.metrics:
            continue
        for metric in client.get_metric_history(run.info.run_id, key):
            rows.append(
                {
                    "run_id": run.info.run_id,
                    "key": key,
                    "step": int(metric.step),
                    "value": float(metric.value),
                    "timestamp": int(metric.timestamp),
                }
            )
    return rows


def _final_values(history: pd.DataFrame) -> pd.DataFrame:
    """Return one row per run with the value at the last step of each metric (``final.<key>``).

    Several values at the same last step are resolved by the latest timestamp, as MLflow does.
    """
    if history.empty:
        return pd.DataFrame({"run_id": pd.Series(dtype=object)})
    ordered = history.sort_values(["run_id", "key", "step", "timestamp"])
    last = ordered.groupby(["run_id", "key"], as_index=False).last()
    wide = last.pivot(index="run_id", columns="key", values="value")
    wide.columns = [f"final.{key}" for key in wide.columns]
    return wide.reset_index()


def _run_row(run: Run) -> dict[str, object] | str:
    """One ``runs`` row for a cell run, or a note saying why it is skipped."""
    tags = run.data.tags
    missing = [tag for tag in CELL_TAGS if not tags.get(tag)]
    ratio = _parse_ratio(tags.get("ratio", ""))
    if missing or ratio is None:
        what = f"missing tags {missing}" if missing else f"bad ratio {tags.get('ratio')!r}"
        return f"skipped run {run.info.run_name or run.info.run_id}: {what}"
    row: dict[str, object] = {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "status": run.info.status,
        "start_time": run.info.start_time or 0,
        "task": tags["task"],
        "ratio": ratio,
        "ratio_tag": tags["ratio"],
        # A sweep may run one algorithm as several arms (e.g. mixup and mixup_shared):
        # tables group by the arm; the algorithm itself is kept in ``algorithm``.
        "strategy": tags.get("arm") or tags["strategy"],
        "algorithm": tags["strategy"],
        "seed": tags["seed"],
    }
    for tag in INFO_TAGS:
        row[tag] = tags.get(tag, "")
    known = paper.DESCRIPTIONS.get(tags["strategy"], (tags["strategy"], UNKNOWN, UNKNOWN))
    for tag, fallback in zip(STRATEGY_TAGS, known, strict=True):
        row[tag] = tags.get(tag) or fallback
    row["phase"] = row["phase"] or "final"
    for name, value in run.data.params.items():
        row[PARAM_PREFIX + name] = value
    for key in RESULT_METRICS:
        row[f"result.{key}"] = float(run.data.metrics.get(key, math.nan))
    for key in RESOURCE_METRICS:
        row[f"resource.{key}"] = float(run.data.metrics.get(key, math.nan))
    return row


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """Silence MLflow's per-download progress bar (one per small JSON otherwise)."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def read_json_artifact(client: MlflowClient, run_id: str, path: str) -> Any:
    """Parse one JSON artifact of a run; None when it is absent or unreadable."""
    with tempfile.TemporaryDirectory() as tmp, _no_progress_bars():
        try:
            local = client.download_artifacts(run_id, path, tmp)
            return json.loads(Path(local).read_text(encoding="utf-8"))
        except (MlflowException, OSError, ValueError):  # absent, unreadable or not JSON
            return None


def read_manifest(client: MlflowClient, summary_run_id: str | None) -> dict[str, Any] | None:
    """The summary run's ``manifest.json`` when it has a ``cells`` mapping, else None."""
    if summary_run_id is None:
        return None
    manifest = read_json_artifact(client, summary_run_id, MANIFEST_FILE)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("cells"), dict):
        return None
    return manifest


def read_predictions(tracking_uri: str, run_id: str) -> dict[str, Any] | None:
    """A cell run's ``test_predictions.json`` (``gold`` and ``pred`` lists), or None."""
    found = read_json_artifact(MlflowClient(tracking_uri=tracking_uri), run_id,
                               PREDICTIONS_FILE)
    if not isinstance(found, dict) or not {"gold", "pred"} <= set(found):
        return None
    if len(found["gold"]) != len(found["pred"]):
        return None
    return found


def _epochs_run(history: pd.DataFrame) -> pd.DataFrame:
    """``epochs_run`` per run: the last step at which a per-epoch metric was logged."""
    if history.empty:
        return pd.DataFrame({"run_id": pd.Series(dtype=object), "epochs_run": []})
    last = history.groupby("run_id")["step"].max().rename("epochs_run")
    return last.astype(float).reset_index()


def load_sweep(experiment: str, tracking_uri: str | None = None) -> SweepData:
    """Read the cell runs, metric histories and launch manifest of ``experiment``.

    Raises ReportError when the store or the experiment does not exist or has no cell runs.
    Runs tagged ``kind=summary`` (the report's own run; the earliest one when there are
    several, as the sweep does) and runs without ``kind=cell`` are not read as cells; cell
    runs lacking a task, ratio, strategy or seed tag are skipped with a note.
    """
    uri = resolve_tracking_uri(tracking_uri)
    client = open_client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None or exp.lifecycle_stage != "active":
        names = sorted(e.name for e in client.search_experiments())
        known = ", ".join(names) if names else "no experiments"
        raise ReportError(f"unknown experiment {experiment!r} in {uri} (known: {known})")

    notes: list[str] = []
    summaries: list[Run] = []
    run_rows: list[dict[str, object]] = []
    history_rows: list[dict[str, object]] = []
    for run in _search_all_runs(client, exp.experiment_id):
        kind = run.data.tags.get("kind")
        if kind == "summary":
            summaries.append(run)
        if kind != "cell":
            continue
        row = _run_row(run)
        if isinstance(row, str):
            notes.append(row)
            continue
        run_rows.append(row)
        history_rows.extend(_history_rows(client, run))

    if not run_rows:
        raise ReportError(f"experiment {experiment!r} in {uri} has no cell runs (tag kind=cell)")

    runs = pd.DataFrame(run_rows)
    history = pd.DataFrame(history_rows, columns=["run_id", "key", "step", "value", "timestamp"])
    runs = runs.merge(_final_values(history), on="run_id", how="left")
    runs = runs.merge(_epochs_run(history), on="run_id", how="left")
    for key in HISTORY_METRICS:
        if f"final.{key}" not in runs.columns:
            runs[f"final.{key}"] = float("nan")
    summaries.sort(key=lambda r: (r.info.start_time or 0, r.info.run_id))
    summary_run_id = summaries[0].info.run_id if summaries else None
    return SweepData(
        experiment=experiment,
        experiment_id=exp.experiment_id,
        tracking_uri=uri,
        runs=runs,
        history=history,
        summary_run_id=summary_run_id,
        notes=notes,
        manifest=read_manifest(client, summary_run_id),
    )
