"""Running one search group on Ray Tune: the Optuna TPE searcher, the MLflow callback of search
trials (nested under the group's parent run, with the leakage guard), the Tune run itself and
the group's parent run. The plan it runs is :mod:`orchestrator.search_plan`.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from typing import Any

from orchestrator import sweep as sweep_cli
from orchestrator.search_plan import (
    METRIC,
    SELECTION_RULE,
    TEST_METRICS,
    Group,
    SearchPlan,
    TrialRecord,
    check_no_leakage,
    select,
    trial_score,
)
from orchestrator.spaces import Sweep
from orchestrator.tracking import SweepTracker, TrackingError
from trainers.config import CellConfig
from trainers.errors import CellError

# --------------------------------------------------------------------------- Tune pieces


def make_searcher(group: Group, plan: SearchPlan) -> Any:
    """An Optuna TPE searcher that also names each trial and fills its params."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    class GroupSearch(OptunaSearch):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.made = 0

        def suggest(self, trial_id: str) -> dict | None:
            suggested = super().suggest(trial_id)
            if not isinstance(suggested, dict):
                return suggested
            self.made += 1
            from trainers.prepare import resolved_params
            from trainers.strategies import strategy_tags

            values = suggested["trial"]["cell"]
            config = group.config(values)
            suggested["trial"]["name"] = f"{group.key}/search-{self.made:03d}-{trial_id}"
            suggested["trial"]["params"] = {**resolved_params(config), "arm": group.arm,
                                            "search_trial": self.made}
            suggested["trial"]["tags"] = strategy_tags(config.strategy_spec, config)
            return suggested

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            if METRIC in result:  # a failure report carries no score (see trainable.py)
                super().on_trial_result(trial_id, result)

    points = None
    defaults = group.defaults()
    if plan.include_default and all(p.contains(defaults[p.name]) for p in group.space):
        points = [{f"trial/cell/{k}": v for k, v in defaults.items()}]
    sampler = optuna.samplers.TPESampler(seed=plan.sampler_seed,
                                         n_startup_trials=plan.startup_trials)
    return GroupSearch(sampler=sampler, points_to_evaluate=points)


def search_callback_class() -> type:
    """The MLflow callback of search trials (a subclass, built lazily: it imports Ray)."""
    from orchestrator.callbacks import MlflowCellCallback, cell_of, spec

    class SearchMlflowCallback(MlflowCellCallback):
        """:class:`MlflowCellCallback` for search trials.

        Nests each trial under its group's parent run, records the sampled values, drops (and
        fails the trial on) any test metric, and ends ASHA-stopped trials FINISHED with
        ``early_stopped=true`` instead of FAILED for missing epochs.
        """

        def __init__(self, tracker: SweepTracker, group: Group, parent_run_id: str) -> None:
            super().__init__(tracker)
            self.group = group
            self.parent_run_id = parent_run_id
            self.trials: dict[str, dict[str, Any]] = {}

        def _attach(self, trial: Any) -> None:
            cfg = spec(trial)
            cell = cfg["cell"]
            check_no_leakage([CellConfig.from_dict(cell)], self.group.key)
            index = int(cfg["params"].get("search_trial", 0))
            self.trials.setdefault(cell_of(trial), {
                "index": index, "trial_id": trial.trial_id,
                "values": {p.name: cell[p.name] for p in self.group.space}})
            tags = {"task": cell["task"], "ratio": str(float(cell["ratio"])),
                    "strategy": cell["strategy"], "arm": cfg["arm"], "seed": str(cell["seed"]),
                    "ray_trial_id": trial.trial_id, "search_group": self.group.key,
                    "search_trial": str(index), "mlflow.parentRunId": self.parent_run_id,
                    **cfg.get("tags", {})}
            self.tracker.attach(cell_of(trial), int(cell["epochs"]), tags, cfg["params"])

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                            **info: Any) -> None:
            epochs = [result, *result.get("earlier_epochs", [])]
            leaked = sorted({k for epoch in epochs for k in TEST_METRICS if k in epoch})
            if leaked:  # never log a test metric for a search trial; fail it instead
                for epoch in epochs:
                    for key in leaked:
                        epoch.pop(key, None)
                result["failure_reason"] = (f"leakage guard: search trial reported test "
                                            f"metric(s) {', '.join(leaked)}")
            super().on_trial_result(iteration, trials, trial, result, **info)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any,
                              **info: Any) -> None:
            name = cell_of(trial)
            if name not in self.tracker.cells:
                self._attach(trial)
            state = self.tracker.cells[name]
            # ASHA stopped it before the trainer's final epoch (the trainer's own early
            # stopping ends with a final epoch): every epoch it ran is logged, it is complete
            stopped = (state.failure is None and state.final_step is None
                       and bool(state.logged_steps))
            self.trials[name]["early_stopped"] = stopped
            self.tracker.set_tag(name, "early_stopped", str(stopped).lower())
            if stopped:
                self.trials[name]["epochs_run"] = len(state.logged_steps)
                state.final_step = max(state.logged_steps)
            super().on_trial_complete(iteration, trials, trial, **info)

    return SearchMlflowCallback




# --------------------------------------------------------------------------- search phase


def search_group(args: argparse.Namespace, sweep: Sweep, plan: SearchPlan, group: Group,
                 tracker: SweepTracker, storage: str, resources: dict[str, float]
                 ) -> dict[str, Any]:
    """Run one group's Tune search; return its chosen.json entry."""
    from ray import tune
    from ray.tune.error import TuneError
    from ray.tune.schedulers import ASHAScheduler

    from orchestrator.callbacks import ProgressCallback

    epochs = group.max_epochs()
    entry: dict[str, Any] = {
        "task": group.task, "ratio": group.ratio, "arm": group.arm, "strategy": group.strategy,
        "search_seed": plan.seed, "train_examples": group.train_examples,
        "val_examples": group.val_examples, "val_fraction": group.base["val_fraction"],
        "space": {p.name: p.describe() for p in group.space}, "selection": SELECTION_RULE}
    if not group.space:
        print(f"[search] {group.key}: nothing to tune for strategy {group.strategy!r}; the "
              "final phase uses its settings as they are", flush=True)
        return {**entry, "values": {}, "trials": 0, "note": "nothing to tune"}

    discard_previous(tracker, group)
    parent = open_parent(tracker, sweep, plan, group)
    callback = search_callback_class()(tracker, group, parent)
    progress = ProgressCallback(f"{sweep.name} search {group.key}", plan.num_samples)
    cell = {**group.base, **{p.name: p.domain() for p in group.space}}
    space = {"trial": {"cell": cell, "name": f"{group.key}/search", "arm": group.arm,
                       "params": {}}}
    print(f"[search] {group.key}: {plan.num_samples} trials, "
          f"{', '.join(f'{p.name} ~ {p.describe()}' for p in group.space)}; train "
          f"{group.train_examples} / validation {group.val_examples} examples (seed "
          f"{plan.seed}); MLflow parent run {parent}", flush=True)
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"  # failure results carry no metric
    tuner = tune.Tuner(
        tune.with_resources(_trainable(), resources),
        param_space=space,
        tune_config=tune.TuneConfig(
            metric=METRIC, mode="max", num_samples=plan.num_samples,
            search_alg=make_searcher(group, plan),
            scheduler=ASHAScheduler(time_attr="epoch", max_t=epochs,
                                    grace_period=min(plan.grace_period, epochs),
                                    reduction_factor=plan.reduction_factor),
            max_concurrent_trials=concurrency(args, sweep, resources, plan.num_samples),
            reuse_actors=sweep_cli.reuse_actors(args),
            trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
        run_config=tune.RunConfig(
            name=f"{sweep.name}-search-{group.key.replace('/', '_')}",
            storage_path=storage, verbose=0,
            callbacks=[callback, progress, *sweep_cli.tune_loggers()],
            failure_config=tune.FailureConfig(max_failures=args.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
    )
    try:
        tuner.fit()
    except TuneError as exc:  # a driver-side failure of this group's run: report, go on
        lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
        close_parent(tracker, parent, None, {**entry, "trials": len(callback.trials),
                                             "finished": 0, "early_stopped": 0, "failed": 0})
        raise CellError(f"{group.key}: the Tune run failed: "
                        f"{lines[-1] if lines else type(exc).__name__}") from None

    records = []
    for name, seen in callback.trials.items():
        state = tracker.cells.get(name)
        records.append(TrialRecord(
            name=name, index=seen["index"], trial_id=seen["trial_id"], values=seen["values"],
            status=state.status if state else None,
            early_stopped=bool(seen.get("early_stopped")),
            val_accuracy=trial_score(state.finals) if state else None,
            val_macro_f1=state.finals.get("val_macro_f1") if state else None,
            run_id=state.run_id if state else None,
            failure=state.failure if state else None))
    best = select(records)
    entry.update(
        trials=len(records), parent_run_id=parent,
        finished=sum(r.status == "FINISHED" for r in records),
        early_stopped=sum(r.early_stopped for r in records),
        failed=sum(r.status == "FAILED" for r in records),
        trial_scores=[{"trial": r.index, "values": r.values, "val_accuracy": r.val_accuracy,
                       "early_stopped": r.early_stopped, "status": r.status}
                      for r in sorted(records, key=lambda r: r.index)])
    if best is None:
        close_parent(tracker, parent, None, entry)
        raise CellError(f"{group.key}: no search trial produced a validation score "
                        f"({entry['failed']} failed); see the FAILED runs in MLflow")
    entry.update(values=best.values, val_accuracy=best.val_accuracy,
                 val_macro_f1=best.val_macro_f1, chosen_trial=best.index,
                 chosen_run=best.name, chosen_ray_trial_id=best.trial_id)
    tracker.set_tag(best.name, "chosen", "true")
    close_parent(tracker, parent, best, entry)
    shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in best.values.items())
    print(f"[search] {group.key}: chose {shown} (trial {best.index}, val_accuracy "
          f"{best.val_accuracy:.4f}; {entry['finished']} finished, {entry['early_stopped']} "
          f"stopped early, {entry['failed']} failed)", flush=True)
    return entry


def concurrency(args: argparse.Namespace, sweep: Sweep, resources: dict[str, float],
                samples: int) -> int:
    """Trials at once: ``--max-concurrent`` (else the sweep file's ``resources``), else as many
    as the cluster's CPUs/GPUs fit.

    Always explicit: without it Tune keeps a single pending trial for a search algorithm, so
    short trials would run one after the other."""
    chosen = sweep_cli.max_concurrent(args, sweep)
    if chosen:
        return min(chosen, samples)
    import ray

    total = ray.cluster_resources()
    slots = total.get("CPU", 1.0) / resources["cpu"] if resources["cpu"] else math.inf
    if resources["gpu"]:
        slots = min(slots, total.get("GPU", 0.0) / resources["gpu"])
    return max(1, min(samples, int(slots) if math.isfinite(slots) else samples))


def _trainable() -> Any:
    from orchestrator.trainable import run_cell_trial

    return run_cell_trial


def _trial_name(trial: Any) -> str:
    return trial.config["trial"]["name"].replace("/", "_")[-120:]


def discard_previous(tracker: SweepTracker, group: Group) -> None:
    """Soft-delete an earlier search of this group (interrupted, or --redo-search), so the
    report and the UI show one search per group. Deleted runs can be restored in MLflow."""
    client = tracker.client
    runs = client.search_runs(  # the parent run and its trials all carry search_group
        [tracker.experiment_id()], max_results=5000,
        filter_string=f"tags.phase = 'search' and tags.search_group = '{group.key}'")
    if runs:
        print(f"[search] {group.key}: deleting {len(runs)} run(s) of an earlier search of "
              "this group (restorable in MLflow)", flush=True)
    for run in runs:
        client.delete_run(run.info.run_id)


def open_parent(tracker: SweepTracker, sweep: Sweep, plan: SearchPlan, group: Group) -> str:
    """Create the group's parent run (tags kind=search_group, phase=search)."""
    from mlflow.entities import Param

    try:
        run = tracker.client.create_run(
            tracker.experiment_id(), run_name=f"{group.key}/search",
            tags={**tracker.base_tags, "kind": "search_group", "phase": "search",
                  "search_group": group.key, "task": group.task,
                  "ratio": str(float(group.ratio)), "strategy": group.strategy,
                  "arm": group.arm})
        params = {"search.algorithm": "optuna_tpe", "search.scheduler": "asha",
                  "search.metric": METRIC, "search.num_samples": plan.num_samples,
                  "search.seed": plan.seed, "search.sampler_seed": plan.sampler_seed,
                  "search.startup_trials": plan.startup_trials,
                  "search.include_default": plan.include_default,
                  "search.grace_period": plan.grace_period,
                  "search.reduction_factor": plan.reduction_factor,
                  "search.selection": SELECTION_RULE,
                  "search.train_examples": group.train_examples,
                  "search.val_examples": group.val_examples,
                  "search.val_fraction": group.base["val_fraction"],
                  **{f"space.{p.name}": p.describe() for p in group.space}}
        tracker.client.log_batch(run.info.run_id,
                                 params=[Param(k, str(v)) for k, v in params.items()])
    except Exception as exc:  # noqa: BLE001 - any store error: stop with one line
        raise TrackingError(f"cannot create the search parent run of {group.key}: "
                            f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
    return run.info.run_id


def close_parent(tracker: SweepTracker, parent: str, best: TrialRecord | None,
                 entry: dict[str, Any]) -> None:
    """Log the choice on the parent run and end it (through the tracker's write queue)."""
    from mlflow.entities import Metric, Param, RunTag

    def write() -> None:
        client = tracker.client
        now = int(time.time() * 1000)
        if best is not None:
            client.log_batch(parent, params=[
                Param(f"chosen.{k}", str(v)) for k, v in best.values.items()],
                metrics=[Metric("best_val_accuracy", float(best.val_accuracy), now, 0)],
                tags=[RunTag("chosen_trial", best.name), RunTag("chosen_run_id",
                                                                best.run_id or "")])
        client.log_batch(parent, metrics=[
            Metric(k, float(entry[k]), now, 0)
            for k in ("trials", "finished", "early_stopped", "failed")])
        client.set_terminated(parent, status="FINISHED" if best is not None else "FAILED")

    tracker.queue.put(f"{entry['task']}/{entry['ratio']:g}/{entry['arm']}: search choice",
                      write)


