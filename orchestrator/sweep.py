"""``python -m orchestrator.sweep``: run a sweep of cells with Ray Tune, tracked in MLflow.

Flow: validate the sweep file and flags (exit 2 on any problem, nothing started) -> check the
data, the tracking store, the storage path and the Ray address -> skip cells whose MLflow run
is already FINISHED -> fill the feature/token caches once per (task, model, max length) ->
``ray.tune.Tuner`` runs one trial per cell (or ``Tuner.restore`` with ``--resume``) while the
driver writes MLflow and prints progress -> a terminal table, the report
(``results.report``) and where to find everything.

Exit codes: 0 all cells FINISHED; 1 some cell FAILED or tracking writes could not be flushed;
2 bad input (one line on stderr naming the problem).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from orchestrator.lock import sweep_lock
from orchestrator.preflight import (
    check_num_cpus,
    check_resume_storage,
    check_schedulable,
    cluster_nodes,
    experiment_dir,
    finite_wait,
    local_totals,
)
from orchestrator.preflight import check_storage as check_storage_location
from orchestrator.runtime import (
    check_custom_resources,
    code_runtime_env,
    describe_resources,
    parse_trial_resources,
    plugin_runtime_env,
)
from orchestrator.spaces import (
    Cell,
    Sweep,
    SweepError,
    load_sweep,
    parse_list,
    parse_set,
    preset_names,
    resolve_source,
)
from orchestrator.store import check_not_deleted, prepare_store
from orchestrator.tracking import (
    SweepTracker,
    TrackingError,
    check_tracking_uri,
    default_tracking_uri,
    runs_url,
    standard_tags,
)
from results.uris import redact_text, redact_uri
from trainers.errors import CellError, ConfigError
from trainers.paths import check_writable_dir
from trainers.tasks import task_of

EPILOG = """examples:
  python -m orchestrator.sweep --preset smoke --data-dir ../shared/data
  python -m orchestrator.sweep --preset cpu_table1 --tasks rte --ratios 0.25,0.01 --seeds 0
  python -m orchestrator.sweep --sweep-file my_sweep.yaml --set alpha=0.4 --set epochs=5
  python -m orchestrator.sweep --preset paper_table1 --address auto \\
      --storage-path /shared/ray_results --tracking-uri http://head:5000 --gpus-per-trial 1

exit codes: 0 every cell FINISHED, 1 some cell FAILED (see the table), 2 bad input.
"""


def grid_flags(preset: str = "smoke", seeds: str = "comma-separated non-negative integers",
               dry_run: str = "list the cells and exit") -> argparse.ArgumentParser:
    """The flags that pick what runs (a parent parser: the sweep's and the search's)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("what to run")
    g.add_argument("--preset", default=None, help=f"a sweep in search_spaces/: "
                   f"{', '.join(preset_names())} (default: {preset})")
    g.add_argument("--sweep-file", help="path to your own sweep YAML (see search_spaces/)")
    g.add_argument("--name", help="experiment name (default: the sweep's name)")
    g.add_argument("--tasks", help="comma-separated, replaces the sweep's tasks")
    g.add_argument("--ratios", help="comma-separated, each in (0, 1]")
    g.add_argument("--strategies", help="comma-separated strategy names")
    g.add_argument("--seeds", help=seeds)
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any cell setting, e.g. --set alpha=0.4 (repeatable)")
    g.add_argument("--dry-run", action="store_true", help=dry_run)
    return p


def data_flags() -> argparse.ArgumentParser:
    """Where the data comes from and where caches go (a parent parser)."""
    p = argparse.ArgumentParser(add_help=False)
    d = p.add_argument_group("data and caches")
    d.add_argument("--data-dir", help="folder laid out like shared/data (default: "
                   "$BATCHMIXUP_DATA_DIR, else the Hugging Face hub)")
    d.add_argument("--cache-dir", help="feature/token cache; must be shared storage on a "
                   "multi-node cluster to be computed once (default: $BATCHMIXUP_CACHE_DIR or "
                   "~/.cache/batchmixup)")
    return p


def ray_flags(resume: str = "continue an interrupted sweep from its Tune state: finished "
              "cells are kept, interrupted ones resume from their checkpoints"
              ) -> argparse.ArgumentParser:
    """Ray, resources and the experiment lock (a parent parser)."""
    p = argparse.ArgumentParser(add_help=False)
    r = p.add_argument_group("Ray")
    r.add_argument("--address", help="existing cluster: auto or host:port, from a process on "
                   "one of its nodes or a Ray job (default: start a local Ray); Ray Client "
                   "(ray://) is refused: Ray documents it as unreliable for Tune, submit "
                   "with ray job submit instead (docs/cluster.md)")
    r.add_argument("--storage-path", help="Tune storage (checkpoints, experiment state); on a "
                   "multi-node cluster it MUST be shared storage (NFS or s3://...) "
                   "(default: ./ray_results)")
    r.add_argument("--gpus-per-trial", type=float, help="GPUs per trial; fractions share a "
                   "GPU (default: 1 if the cluster has GPUs, else 0)")
    r.add_argument("--cpus-per-trial", type=float, help="CPUs per trial (default: 1)")
    r.add_argument("--max-concurrent", type=int, help="max trials at once (default: as many "
                   "as resources allow)")
    r.add_argument("--max-failures", type=int, default=3, help="retries of a trial whose "
                   "worker died, each from its last epoch checkpoint (default: 3)")
    r.add_argument("--num-cpus", type=int, help="CPUs of a local Ray (default: all)")
    r.add_argument("--num-gpus", type=int, help="GPUs of a local Ray (default: those CUDA "
                   "sees); on a machine without GPUs, N > 0 makes N logical GPUs, to try "
                   "--gpus-per-trial scheduling (trials then fall back to CPU)")
    r.add_argument("--trial-resources", metavar="NAME=AMOUNT[,...]", help="custom Ray "
                   "resources each trial asks for, e.g. worker_node=1 to run trials only on "
                   "nodes started with ray start --resources '{\"worker_node\": 4}'")
    r.add_argument("--resume", action="store_true", help=f"{resume}. Tune state is "
                   "unpickled: the storage folder must be yours and not writable by others, "
                   "or --resume refuses it")
    r.add_argument("--allow-pending", action="store_true", help="start even if no node of "
                   "the cluster can run a trial yet (an autoscaling cluster that adds nodes on "
                   "demand); without it such a request fails at once naming what is missing")
    r.add_argument("--wait-for-lock", type=float, nargs="?", const=math.inf, default=None,
                   metavar="SECONDS", help="if another sweep of the same experiment is "
                   "running against the same tracking store, wait for it to end (at most "
                   "SECONDS; no value: as long as it takes) instead of refusing")
    return p


def tracking_flags() -> argparse.ArgumentParser:
    """MLflow and the report (a parent parser)."""
    p = argparse.ArgumentParser(add_help=False)
    t = p.add_argument_group("tracking and report")
    t.add_argument("--tracking-uri", help="MLflow store: sqlite:///path.db or http://host:port "
                   "(default: $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db)")
    t.add_argument("--no-report", action="store_true", help="skip results.report at the end")
    t.add_argument("--report-dir", help="where the report goes (default: results/<name>/)")
    t.add_argument("--flush-timeout", type=float, default=600.0, help="seconds to keep "
                   "retrying MLflow writes at the end if the store is down (default: 600)")
    t.add_argument("--verbose", action="store_true", help="also stream the trials' own output")
    return p


def build_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="python -m orchestrator.sweep",
        description="Run a BatchMixup sweep: one Ray Tune trial per (task, ratio, strategy, "
                    "seed) cell, one MLflow run per cell, then a report.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[grid_flags(), data_flags(), ray_flags(), tracking_flags()])


def fail(message: str) -> int:
    print(f"error: {redact_text(message)}", file=sys.stderr, flush=True)
    return 2


def build_sweep(args: argparse.Namespace) -> Sweep:
    source = resolve_source(args.preset, args.sweep_file)
    settings: dict[str, Any] = parse_set(args.set)
    data_dir = args.data_dir or os.environ.get("BATCHMIXUP_DATA_DIR")
    if data_dir:
        settings["data_dir"] = str(Path(data_dir).resolve())
    if args.cache_dir:
        settings["cache_dir"] = str(Path(args.cache_dir).resolve())
    strategies = parse_list("--strategies", args.strategies, str)
    sweep = load_sweep(source, {
        "name": args.name,
        "tasks": parse_list("--tasks", args.tasks, str),
        "ratios": parse_list("--ratios", args.ratios, float),
        "strategies": strategies,
        "seeds": parse_list("--seeds", args.seeds, int),
        "settings": settings,
    })
    # The strategies' plug-in modules travel with the runtime environment (start_ray).
    args.plugin_strategies = [arm.strategy for arm in sweep.arms]
    return sweep


def check_ray_args(args: argparse.Namespace) -> None:
    """The numeric Ray flags shared by the sweep and the search."""
    if args.max_failures < 0:
        raise SweepError("--max-failures must be >= 0")
    for flag in ("gpus_per_trial", "cpus_per_trial"):
        value = getattr(args, flag)
        if value is not None and value < 0:
            raise SweepError(f"--{flag.replace('_', '-')} must be >= 0")
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise SweepError("--max-concurrent must be >= 1")
    check_num_cpus(args.num_cpus)
    finite_wait(getattr(args, "wait_for_lock", None))
    if args.num_gpus is not None and args.num_gpus < 0:
        raise SweepError("--num-gpus must be >= 0")
    parse_trial_resources(args.trial_resources)


def check_inputs(cells: list[Cell]) -> None:
    """Load each task and find each model once on the driver: missing or malformed data or an
    unavailable model stops everything before Ray or MLflow start. Then give every cell the
    fingerprint of its configuration (settings, model identity, data content) and check that
    its training subset can hold its validation split."""
    from trainers.model import check_model
    from trainers.prepare import cell_fingerprint, cell_indices, load_cell_data

    for model in sorted({c.config.model for c in cells if task_of(c.config).encoder}):
        check_model(model)
    seen = set()
    for cell in cells:
        c = cell.config
        key = (c.task, c.data_dir, c.train_file, c.test_file, c.none_relations)
        if key in seen or task_of(c).data_per_seed:
            continue
        seen.add(key)
        load_cell_data(c)
    for cell in cells:
        if cell.config.has_val_split and not task_of(cell.config).data_per_seed:
            try:
                cell_indices(cell.config, len(load_cell_data(cell.config).train))
            except CellError as exc:
                raise SweepError(f"cell {cell.name}: {exc}") from None
        cell.fingerprint = cell_fingerprint(cell.config)


def resolve_storage(value: str | None) -> str:
    """The Tune storage location: a URI (``s3://...``, kept verbatim) or an absolute path.

    A string, not a ``Path``: ``Path("s3://bucket/x")`` collapses the ``//`` of a URI.
    """
    value = value or "ray_results"
    if "://" in value:
        return value.rstrip("/")
    return str(Path(value).expanduser().resolve())


def check_storage(location: str) -> None:
    """A local storage path must be (or become) a writable folder; creates nothing (Tune
    creates it when the sweep starts), so a rejected launch leaves no empty folder."""
    check_storage_location(location)


def check_address(address: str, timeout: float = 5.0) -> None:
    """Fail within seconds when a ``host:port`` address does not answer; refuse Ray Client.

    Ray Client (``ray://``) "has architectural limitations and may not work as expected when
    using Ray for ML workloads (like Ray Tune or Ray Train)" (Ray's Ray Client page), and no
    test of this project exercises it: a sweep joins with ``host:port``/``auto`` from a node,
    or is submitted as a Ray job."""
    if address == "auto":
        return
    if address.startswith("ray://"):
        raise SweepError(f"--address {address!r}: Ray Client (ray://) is not supported for "
                         "sweeps (Ray documents it as unreliable for Tune); submit the sweep "
                         "as a job: ray job submit --address http://<head>:8265 "
                         "--working-dir . -- python -m orchestrator.sweep ... --address auto")
    parsed = urlparse(address if "://" in address else f"ray://{address}")
    if not parsed.hostname or not parsed.port:
        raise SweepError(f"--address {address!r}: expected auto or host:port")
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=timeout):
            pass
    except OSError as exc:
        raise SweepError(f"Ray cluster at {address} is unreachable ({exc.strerror or exc}); "
                         "start it with 'ray start --head' or drop --address for a local "
                         "Ray") from None


def start_ray(args: argparse.Namespace) -> None:
    if not args.address:
        loopback_only()
    import ray

    if ray.is_initialized():  # already connected by the pre-flight check of --address
        return
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Save Tune's experiment state often, so --resume after a driver crash loses little.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "5")
    # No TensorBoard event files per trial: writing them cost the driver ~4 ms per result
    # (the metrics are in MLflow); Tune's JSON and CSV result logs are added back explicitly
    # (tune_loggers). TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=0 restores all three.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    kwargs: dict[str, Any] = {"log_to_driver": args.verbose, "logging_level": "ERROR",
                              "configure_logging": True}
    plugins = getattr(args, "plugin_strategies", [])
    if args.address:
        try:
            # The cluster's workers get this project's code from the driver (runtime.py).
            ray.init(address=args.address, runtime_env=code_runtime_env(plugins), **kwargs)
        except (ConnectionError, RuntimeError) as exc:
            raise SweepError(f"cannot connect to Ray at {redact_uri(args.address)}: "
                             f"{redact_text(str(exc).splitlines()[0])}") from None
    else:
        # "local": always a new Ray of our own, never a cluster found through RAY_ADDRESS or the
        # address file a (possibly dead) `ray start` left in Ray's temp folder.
        os.environ.pop("RAY_ADDRESS", None)
        env = plugin_runtime_env(plugins)  # the plug-ins' modules, wherever they were found
        ray.init(address="local", num_cpus=args.num_cpus,
                 num_gpus=args.num_gpus, include_dashboard=False,
                 dashboard_host="127.0.0.1", **({"runtime_env": env} if env else {}),
                 **kwargs)


def loopback_only() -> None:
    """Make a local Ray listen on 127.0.0.1 only (GCS, raylet, object manager, workers).

    Ray binds every gRPC server to all interfaces unless the node's IP is 127.0.0.1, and
    ``ray.init`` turns a requested 127.0.0.1 into the machine's address unless "clusters" are
    disabled, as they are by default on macOS and Windows. The same switch here: the
    environment variable for Ray's processes, the constant for an already imported Ray.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    if "ray._private.ray_constants" in sys.modules:
        sys.modules["ray._private.ray_constants"].ENABLE_RAY_CLUSTER = False


def tune_loggers() -> list:
    """Tune's per-trial ``result.json`` and ``progress.csv`` loggers (what ``ResultGrid``
    reads), without the TensorBoard one; empty when Tune adds its default loggers itself."""
    if os.environ.get("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "0") != "1":
        return []
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    return [JsonLoggerCallback(), CSVLoggerCallback()]


def warm_caches(cells: list[Cell], resources: dict[str, float]) -> None:
    """Compute features/tokens once per cache group, as Ray tasks, before the trials."""
    import ray

    from orchestrator.trainable import warm_cache_task
    from trainers.prepare import cache_group

    groups: dict[tuple, Cell] = {}
    for cell in cells:
        if task_of(cell.config).encoder:
            groups.setdefault(cache_group(cell.config), cell)
    if not groups:
        return
    # Feature extraction is the one heavy CPU step and runs before any trial: it asks for a
    # trial's resources (always schedulable) but uses as many threads as the largest node has.
    threads = max(int(node["Resources"].get("CPU", 1)) for node in ray.nodes() if node["Alive"])
    task = ray.remote(num_cpus=resources["cpu"], num_gpus=resources["gpu"],
                      resources=resources.get("custom_resources") or None)(warm_cache_task)
    for cell in groups.values():
        c = cell.config
        label = f"{c.task} ({c.model}, {c.mode}, max_length={c.max_length})"
        start = time.monotonic()
        print(f"[cache] preparing {label} ...", flush=True)
        try:
            hits, precision = ray.get(task.remote(c.to_dict(), threads))
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) else exc
            if isinstance(cause, CellError):
                raise cause from None
            raise
        state = "cache hit" if all(hits.values()) else "computed"
        print(f"[cache] {label}: {state} in {time.monotonic() - start:.1f}s ({precision})",
              flush=True)


def trial_resources(args: argparse.Namespace, sweep: Sweep,
                    totals: dict[str, float] | None = None) -> dict[str, Any]:
    """What one trial asks Ray for: ``cpu``, ``gpu`` and ``custom_resources`` (a dict, maybe
    empty), the form ``tune.with_resources`` takes. CPUs and GPUs: the flags, else the sweep
    file's, else defaults fitted to ``totals`` (the cluster's resources; by default read from
    the connected Ray); custom resources must exist in the cluster."""
    if totals is None:
        import ray

        totals = ray.cluster_resources()
    gpus = args.gpus_per_trial
    if gpus is None:
        gpus = sweep.resources.get("gpus_per_trial")
        has_gpu = totals.get("GPU", 0) > 0
        gpus = (gpus if gpus is not None else 1.0) if has_gpu else 0.0
    cpus = args.cpus_per_trial
    if cpus is None:
        cpus = sweep.resources.get("cpus_per_trial", 1.0)
        cpus = min(cpus, max(1.0, totals.get("CPU", 1.0)))
    custom = parse_trial_resources(args.trial_resources)
    check_custom_resources(custom, totals, args.address)
    return {"cpu": float(cpus), "gpu": float(gpus), "custom_resources": custom}


def preflight(args: argparse.Namespace, sweep: Sweep, storage: str,
              tune_names: list[str] | None = None) -> None:
    """The checks after the flags, data and services, before anything is created.

    ``--resume`` trusts only Tune state the current user alone can write; every trial's
    request must fit one node (the local Ray's known size, or the cluster's nodes: this
    connects to ``--address``) unless ``--allow-pending``. ``tune_names``: the Tune runs under
    ``storage`` (default: the sweep's name).
    """
    if getattr(args, "cache_dir", None):
        try:
            check_writable_dir("--cache-dir", args.cache_dir)
        except ConfigError as exc:
            raise SweepError(str(exc)) from None
    for name in tune_names or [sweep.name]:
        experiment_dir(storage, name)
        if args.resume:
            check_resume_storage(storage, name)
    if args.allow_pending:
        return
    if args.address:
        start_ray(args)
        check_schedulable(trial_resources(args, sweep), cluster_nodes(),
                          f"the Ray cluster at {redact_uri(args.address)}")
    else:
        totals = local_totals(args.num_cpus, args.num_gpus)
        check_schedulable(trial_resources(args, sweep, totals), [totals], "the local Ray")


def hold_sweep_lock(args: argparse.Namespace, tracking_uri: str, experiment: str) -> None:
    """Initialise the store once (safe against a concurrent launch), then hold the
    experiment's lock (orchestrator/lock.py) until :func:`main` returns."""
    prepare_store(tracking_uri)
    check_not_deleted(tracking_uri, experiment)
    cleanup = getattr(args, "cleanup", None)
    if cleanup is None:
        raise RuntimeError("run() holds the sweep lock on main()'s cleanup stack")
    cleanup.enter_context(sweep_lock(tracking_uri, experiment, wait=args.wait_for_lock,
                                     log=lambda line: print(line, flush=True)))


def run(args: argparse.Namespace) -> int:
    sweep = build_sweep(args)
    cells = sweep.cells()
    if args.dry_run:
        for cell in cells:
            print(cell.name)
        print(f"{len(cells)} cells in sweep {sweep.name!r} ({sweep.source})")
        return 0
    check_ray_args(args)
    check_inputs(cells)
    tracking_uri = args.tracking_uri or default_tracking_uri()
    check_tracking_uri(tracking_uri)
    storage = resolve_storage(args.storage_path)
    check_storage(storage)
    if args.address:
        check_address(args.address)
    preflight(args, sweep, storage)
    hold_sweep_lock(args, tracking_uri, sweep.name)

    tracker = SweepTracker(tracking_uri, sweep.name, phase="final",
                           base_tags={"sweep": sweep.name,
                                      **standard_tags("orchestrator.sweep")})
    todo = cells_to_run(sweep, cells, tracker, tracking_uri)
    if args.resume:
        check_resume_manifest(f"{storage}/{sweep.name}", todo)
    tracker.record_launch({c.name: c.fingerprint for c in cells})
    print(f"[{sweep.name}] runs: {runs_url(tracking_uri, tracker.experiment_id())}", flush=True)

    start_ray(args)
    resources = trial_resources(args, sweep)
    print(f"[{sweep.name}] trial resources: {describe_resources(resources)}", flush=True)
    outcome = execute(args, sweep, todo, tracker, storage, resources) if todo else {}
    return finish(args, sweep, cells, tracker, tracking_uri, outcome)


def cells_to_run(sweep: Sweep, cells: list[Cell], tracker: SweepTracker,
                 tracking_uri: str) -> list[Cell]:
    """The cells without a FINISHED run of the same configuration (fingerprint); prints what is
    skipped and what changed since the last launch."""
    finished = tracker.finished_cells()
    done_names = {name for name, _ in finished}
    todo = [c for c in cells if (c.name, c.fingerprint) not in finished]
    changed = sum(c.name in done_names for c in todo)
    print(f"[{sweep.name}] {len(cells)} cells from {sweep.source}; {len(cells) - len(todo)} "
          f"already FINISHED with these settings in MLflow ({redact_uri(tracking_uri)}), "
          f"{len(todo)} to run"
          + (f" ({changed} of them finished before with other settings: new runs, the old "
             "ones stay)" if changed else ""), flush=True)
    return todo


MANIFEST_FILE = "batchmixup_cells.json"
"""In the Tune experiment folder: the cells (name -> fingerprint) that folder's state runs."""


def check_resume_manifest(experiment_path: str, todo: list[Cell]) -> None:
    """``--resume`` restores the trials Tune saved, with the settings they were launched with:
    refuse when this launch's cells differ from them (changed settings or new cells)."""
    path = Path(experiment_path) / MANIFEST_FILE
    if "://" in experiment_path or not path.is_file():
        return
    saved = json.loads(path.read_text())
    changed = [c.name for c in todo if c.name in saved and saved[c.name] != c.fingerprint]
    new = [c.name for c in todo if c.name not in saved]
    if changed or new:
        what = (f"{len(changed)} cell(s) changed settings (e.g. {changed[0]})" if changed
                else f"{len(new)} cell(s) are not in it (e.g. {new[0]})")
        raise SweepError(f"--resume: the Tune state in {experiment_path} was launched with "
                         f"other cells: {what}; drop --resume to train this sweep's cells "
                         "(finished ones are skipped)")


def write_manifest(experiment_path: str, todo: list[Cell]) -> None:
    if "://" in experiment_path:
        return
    folder = Path(experiment_path)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{MANIFEST_FILE}.tmp"
    tmp.write_text(json.dumps({c.name: c.fingerprint for c in todo}, indent=1, sort_keys=True))
    tmp.replace(folder / MANIFEST_FILE)


def execute(args: argparse.Namespace, sweep: Sweep, todo: list[Cell], tracker: SweepTracker,
            storage: str, resources: dict[str, float]) -> dict[str, str]:
    from ray import tune

    from orchestrator.callbacks import MlflowCellCallback, ProgressCallback
    from orchestrator.retention import CheckpointRetention, keep_latest
    from orchestrator.trainable import cell_trainable

    experiment_path = f"{storage}/{sweep.name}"
    resume = bool(args.resume and tune.Tuner.can_restore(experiment_path))
    warm_caches(todo, resources)
    # A resumed Tune run restarts trials its last saved state had not seen end; the cells
    # among them that MLflow has FINISHED since (with the same settings) are skipped.
    todo_names = {c.name for c in todo}
    skip = frozenset(name for name, _ in tracker.finished_cells() if name not in todo_names) \
        if resume else frozenset()
    trainable = tune.with_resources(cell_trainable(skip), resources)
    mlflow_cb = MlflowCellCallback(tracker, skip=skip)
    progress = ProgressCallback(sweep.name, len(todo), skip=skip)
    # Old checkpoints are deleted by CheckpointRetention, not by Tune's num_to_keep, whose
    # deletions can run ahead of the saved experiment state and break --resume (retention.py).
    retention = CheckpointRetention(experiment_path)
    callbacks = [mlflow_cb, progress, retention, *tune_loggers()]
    if resume:
        print(f"[{sweep.name}] resuming Tune state from {experiment_path}", flush=True)
        tuner = tune.Tuner.restore(experiment_path, trainable=trainable, resume_errored=True)
        # Tune restores the callbacks it pickled into tuner.pkl; use this process's live ones.
        tuner._local_tuner.get_run_config().callbacks = callbacks  # noqa: SLF001
    else:
        write_manifest(experiment_path, todo)
        space = {"trial": tune.grid_search([trial_spec(c) for c in todo])}
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent(args, sweep),
                                        reuse_actors=reuse_actors(args),
                                        trial_name_creator=_trial_name,
                                        trial_dirname_creator=_trial_name),
            run_config=tune.RunConfig(
                name=sweep.name, storage_path=storage, verbose=0,
                callbacks=callbacks,
                failure_config=tune.FailureConfig(max_failures=args.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=None)),
        )
    results = tuner.fit()
    keep_latest(results)
    return mlflow_cb.outcomes


def reuse_actors(args: argparse.Namespace) -> bool:
    """Reuse trial actors only on a local (single-node) Ray.

    On a cluster a node can die: Tune then restores the trial into a cached actor that lived
    on that node (Ray has not yet declared it dead), the restore fails while the trial is
    PENDING, and Tune errors the trial at once instead of retrying it (its --max-failures
    unused). Fresh actors are placed only on live nodes.
    """
    return not args.address


def max_concurrent(args: argparse.Namespace, sweep: Sweep) -> int | None:
    """``--max-concurrent``, else the sweep file's ``resources.max_concurrent``, else None (as
    many trials as resources allow)."""
    if args.max_concurrent is not None:
        return args.max_concurrent
    value = sweep.resources.get("max_concurrent")
    return int(value) if value is not None else None


def trial_spec(cell: Cell) -> dict[str, Any]:
    """What a Tune trial carries: the cell's config, name, arm, fingerprint, MLflow params and
    the strategy's tags (:func:`trainers.strategies.strategy_tags`: label, family, site, ...,
    which the report reads)."""
    from trainers.prepare import resolved_params
    from trainers.strategies import strategy_tags

    return {"cell": cell.config.to_dict(), "name": cell.name, "arm": cell.arm,
            "fingerprint": cell.fingerprint,
            "params": {**resolved_params(cell.config), "arm": cell.arm},
            "tags": strategy_tags(cell.config.strategy_spec, cell.config)}


def _trial_name(trial: Any) -> str:
    """Readable trial names: ``rte_0.25_batchmixup_1_<id>``."""
    return f"{trial.config['trial']['name'].replace('/', '_')}_{trial.trial_id}"


def finish(args: argparse.Namespace, sweep: Sweep, cells: list[Cell], tracker: SweepTracker,
           tracking_uri: str, outcome: dict[str, str]) -> int:
    """Flush tracking, print the table and the report location; return the exit code."""
    from orchestrator.callbacks import summary_table

    flushed = tracker.queue.drain(args.flush_timeout) if tracker.queue.pending else True
    rows = []
    runs: dict[str, Any] = {}
    for fingerprint in sorted({c.fingerprint for c in cells}) if flushed else ():
        for name, run in tracker.existing_runs(fingerprint=fingerprint).items():
            runs[f"{name}|{fingerprint}"] = run
    for cell in cells:
        state = tracker.cells.get(cell.name)
        run = runs.get(f"{cell.name}|{cell.fingerprint}")
        status = run.info.status if run is not None else (state.status if state else None)
        row = {"task": cell.config.task, "ratio": cell.config.ratio, "arm": cell.arm,
               "status": status}
        if run is not None and status == "FINISHED":
            row.update(result_row(run.data.metrics))
            seconds = [m.value for m in tracker.client.get_metric_history(
                run.info.run_id, "epoch_seconds")]
            row["epoch_seconds"] = sum(seconds) / max(1, len(seconds))
        rows.append(row)
    print()
    print(summary_table(rows))
    failed = [(c, s) for c, s in tracker.cells.items() if s.status == "FAILED"]
    for cell, state in failed:
        print(f"FAILED {cell}: {state.failure}")
    finished = sum(r["status"] == "FINISHED" for r in rows)
    print(f"\n[{sweep.name}] {finished}/{len(cells)} cells FINISHED; MLflow experiment "
          f"{sweep.name!r} at {redact_uri(tracking_uri)}")
    if tracking_uri.startswith("sqlite:///"):
        print(f"  open the UI: mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1 "
              "--port 5000")
    if not flushed:
        print(f"error: {len(tracker.queue.pending)} MLflow writes could not be sent "
              f"({tracker.queue.last_error}); rerun the same command when the store is back "
              "(finished cells are skipped)", file=sys.stderr)
        return 1
    if not args.no_report and finished:
        try:
            from results.report import write_report

            path = write_report(sweep.name, tracking_uri,
                                Path(args.report_dir) if args.report_dir else None)
            print(f"  report: {path}")
        except Exception as exc:  # noqa: BLE001 - the sweep's records are safe; say why
            print(f"warning: report not written: {redact_text(str(exc))}", file=sys.stderr)
    return 0 if finished == len(cells) else 1


def result_row(metrics: dict[str, float]) -> dict[str, Any]:
    """A finished run's result for the terminal table: test accuracy at the selected epoch
    (``accuracy`` of the last epoch for runs that predate the budget policy), or the selected
    validation accuracy of a validation-only cell; updates and convergence."""
    nan = float("nan")
    if "test_accuracy" in metrics or "accuracy" in metrics:
        accuracy, metric = metrics.get("test_accuracy", metrics.get("accuracy", nan)), "test"
    else:
        accuracy = metrics.get("selected_val_accuracy", metrics.get("val_accuracy", nan))
        metric = "val"
    return {"accuracy": accuracy, "metric": metric, "updates": metrics.get("updates", nan),
            "converged": metrics.get("converged", nan)}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with contextlib.ExitStack() as cleanup:  # the sweep lock is released on every exit
        args.cleanup = cleanup
        try:
            return run(args)
        except (SweepError, TrackingError, CellError) as exc:
            return fail(str(exc))
        except KeyboardInterrupt:
            print("interrupted; rerun the same command with --resume to continue",
                  file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
