"""``python -m orchestrator.search``: tune alpha (and BatchMixup's temperature), then test.

The paper gives no alpha, and BatchMixup adds a second knob: with Beta draws in [0, 1] a
softmax at temperature 1 gives weights within a factor e of uniform, so mixed points sit close
to the batch mean; the temperature controls how far they spread. This driver searches both
without ever looking at the test set, then reruns the chosen values on it.

Phases (``--phase search|final|both``, default both):

search
    One Ray Tune run per (task, ratio, strategy) group: ``num_samples`` trials proposed by
    Optuna TPE (``ray.tune.search.optuna.OptunaSearch``, seeded; the first trial is the default
    values when ``include_default``), stopped early by ASHA on per-epoch ``val_accuracy``
    (``time_attr=epoch``, ``max_t`` = the longest epoch budget). Every search trial trains
    the cell of seed ``search.seed`` with ``eval_split=val``: a seeded validation split carved
    from the training subset, of ``max(min_val_examples, val_fraction * subset)`` examples,
    capped at ``max_val_fraction`` of the subset (``--dry-run`` prints the sizes). The test
    split is then not even evaluated; the leakage guard refuses any search cell whose
    ``eval_split`` is not ``val`` and any search result carrying test metrics.

    Selection: the highest ``val_accuracy`` at the last epoch among the trials that trained
    every epoch (ASHA-stopped trials are scored only at an earlier epoch, so they compete only
    when no trial finished), ties broken by ``val_macro_f1``, then by the earlier trial. The
    choices go to ``results/<name>/chosen.json`` (``--choices-file``), written after each
    group, so an interrupted search keeps its finished groups (rerunning skips them unless
    ``--redo-search``).

final
    The sweep's cells with the chosen values, seeds ``--final-seeds`` (default: the file's
    ``seeds``), ``eval_split=test``, run exactly like ``python -m orchestrator.sweep`` (same
    trainable, tracker, skip-if-FINISHED, terminal table and report). Groups with nothing to
    tune (strategy ``none``) run with their settings as they are.

MLflow layout (one experiment, the sweep's name):
    * a parent run per group, ``<task>/<ratio>/<arm>/search`` (tags ``kind=search_group``,
      ``phase=search``): the search's settings, split sizes and, at the end, the chosen values
      (params ``chosen.alpha`` ...), ``best_val_accuracy`` and the chosen trial;
    * nested under it one run per trial, ``<task>/<ratio>/<arm>/search-<k>-<trial id>``
      (tags ``kind=cell``, ``phase=search``, params with the sampled values, metrics
      ``val_accuracy``/``val_macro_f1`` only). ASHA-stopped trials end FINISHED with
      ``early_stopped=true``; the selected one has ``chosen=true``;
    * the final runs ``<task>/<ratio>/<arm>/<seed>`` (``phase=final``), which Table 1 of the
      report uses; its search section lists the search trials.
    Filter ``tags.phase = 'final'`` (or ``'search'``) in the UI to compare either phase alone.

Exit codes as for the sweep: 0 everything FINISHED, 1 some trial or cell FAILED (or tracking
writes unsent), 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator import sweep as sweep_cli
from orchestrator.spaces import Cell, Sweep, SweepError, parse_list
from orchestrator.tracking import (
    SweepTracker,
    TrackingError,
    check_tracking_uri,
    default_tracking_uri,
    standard_tags,
)
from trainers.config import CellConfig
from trainers.errors import CellError, ConfigError
from trainers.strategies import STRATEGIES

PHASES = ("search", "final", "both")
DISTRIBUTIONS = ("loguniform", "uniform", "choice", "randint")
TEST_METRICS = ("accuracy", "macro_f1", "test_accuracy", "test_macro_f1", "test_correct",
                "test_examples")
"""Metrics computed on the test split; a search trial must never report them."""
METRIC = "val_accuracy"
FIXED = {"task", "ratio", "strategy", "seed", "eval_split", "selection", "val_fraction",
         "val_min_examples", "val_max_fraction", "data_dir", "train_file", "test_file",
         "cache_dir", "device", "precision", "checkpoint_every", "eval_batch_size"}
"""Settings a search space may not vary (the cell identity, the split, paths). The budget
(``epochs``, ``min_updates``, ``patience``) and the learning rates may be searched, for every
arm including ``none``."""
SEARCH_DEFAULTS: dict[str, Any] = {
    "num_samples": 16, "seed": 0, "sampler_seed": 0, "startup_trials": 5,
    "include_default": True, "grace_period": 1, "reduction_factor": 3,
    "min_val_examples": 30, "max_val_fraction": 0.4, "space": None,
}
SELECTION_RULE = ("highest val_accuracy (at the trial's selected epoch; at its last epoch "
                  "for trials ASHA stopped) among trials that ran to their own end (all trials "
                  "if none did), ties: higher val_macro_f1, then earlier trial")

EPILOG = """examples:
  python -m orchestrator.search --preset alpha_search --data-dir ../shared/data
  python -m orchestrator.search --preset alpha_search --tasks banking77 --ratios 0.1 \\
      --strategies batchmixup --num-samples 8 --dry-run
  python -m orchestrator.search --preset alpha_search --phase search      # choose only
  python -m orchestrator.search --preset alpha_search --phase final --final-seeds 0,1,2
  # the defaults (alpha=1, temperature=1) with the same settings, for comparison:
  python -m orchestrator.sweep --preset alpha_search --name alpha_search-default

exit codes: 0 every trial and cell FINISHED, 1 something FAILED (see the tables), 2 bad input.
"""


class LeakageError(SweepError):
    """A search cell would be scored on the test split."""


# --------------------------------------------------------------------------- the search plan


@dataclass(frozen=True)
class SearchParam:
    """One searched setting: its distribution and the strategies it applies to."""

    name: str
    distribution: str
    low: float | None = None
    high: float | None = None
    values: tuple[Any, ...] = ()
    strategies: tuple[str, ...] = STRATEGIES

    def domain(self) -> Any:
        from ray import tune

        if self.distribution == "loguniform":
            return tune.loguniform(self.low, self.high)
        if self.distribution == "uniform":
            return tune.uniform(self.low, self.high)
        if self.distribution == "randint":  # inclusive upper bound, like Optuna's
            return tune.randint(int(self.low), int(self.high) + 1)
        return tune.choice(list(self.values))

    def contains(self, value: Any) -> bool:
        if self.distribution == "choice":
            return value in self.values
        return isinstance(value, (int, float)) and self.low <= value <= self.high

    def describe(self) -> str:
        if self.distribution == "choice":
            return f"choice{list(self.values)}"
        return f"{self.distribution}({self.low:g}, {self.high:g})"


@dataclass(frozen=True)
class SearchPlan:
    """The validated ``search:`` field of a sweep file (see search_spaces/alpha_search.yaml)."""

    num_samples: int
    seed: int
    sampler_seed: int
    startup_trials: int
    include_default: bool
    grace_period: int
    reduction_factor: float
    min_val_examples: int
    max_val_fraction: float
    params: tuple[SearchParam, ...]

    def space_for(self, strategy: str) -> tuple[SearchParam, ...]:
        """The searched settings that apply to ``strategy`` (listed for it, and read by it:
        ``temperature`` is not searched for mixup, ``alpha`` not for none)."""
        return tuple(p for p in self.params if strategy in p.strategies
                     and applies(p.name, strategy))


def applies(setting: str, strategy: str) -> bool:
    """Whether ``strategy`` reads ``setting`` (:meth:`CellConfig.applicable`), in the setting
    a search trial trains in (validation split, early stopping, encoder fine-tuned or not)."""
    probe = CellConfig(strategy=strategy, eval_split="val", selection="best_val", patience=1,
                       epochs=2)
    return setting in probe.applicable() or setting in dataclasses.replace(
        probe, mode="finetune").applicable()


def parse_plan(sweep: Sweep, args: argparse.Namespace) -> SearchPlan:
    """Validate ``sweep.search`` (with CLI overrides); errors name the file and the field."""
    src = sweep.source
    raw = dict(sweep.search)
    unknown = sorted(set(raw) - set(SEARCH_DEFAULTS))
    if unknown:
        raise SweepError(f"{src}: field 'search': unknown key(s) {', '.join(unknown)}; allowed: "
                         f"{', '.join(sorted(SEARCH_DEFAULTS))}")
    values = {**SEARCH_DEFAULTS, **raw}
    if args.num_samples is not None:
        values["num_samples"] = args.num_samples
    if args.search_seed is not None:
        values["seed"] = args.search_seed

    def integer(key: str, low: int) -> int:
        value = values[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise SweepError(f"{src}: field 'search.{key}' must be an integer >= {low}, "
                             f"got {value!r}")
        return value

    rf = values["reduction_factor"]
    if isinstance(rf, bool) or not isinstance(rf, (int, float)) or not rf > 1:
        raise SweepError(f"{src}: field 'search.reduction_factor' must be a number > 1")
    mvf = values["max_val_fraction"]
    if isinstance(mvf, bool) or not isinstance(mvf, (int, float)) or not 0 < mvf < 1:
        raise SweepError(f"{src}: field 'search.max_val_fraction' must be in (0, 1)")
    if not isinstance(values["include_default"], bool):
        raise SweepError(f"{src}: field 'search.include_default' must be true or false")
    if not isinstance(values["space"], dict) or not values["space"]:
        raise SweepError(f"{src}: field 'search.space' must map setting names to "
                         "distributions, e.g. alpha: {distribution: loguniform, low: 0.05, "
                         "high: 4}")
    return SearchPlan(
        num_samples=integer("num_samples", 1), seed=integer("seed", 0),
        sampler_seed=integer("sampler_seed", 0), startup_trials=integer("startup_trials", 0),
        include_default=values["include_default"], grace_period=integer("grace_period", 1),
        reduction_factor=float(rf), min_val_examples=integer("min_val_examples", 1),
        max_val_fraction=float(mvf),
        params=tuple(_param(src, name, spec) for name, spec in values["space"].items()))


def _param(src: str, name: str, spec: Any) -> SearchParam:
    where = f"{src}: field 'search.space.{name}'"
    known = {f.name for f in dataclasses.fields(CellConfig)}
    if name not in known or name in FIXED:
        raise SweepError(f"{where}: not a searchable setting (searchable: "
                         f"{', '.join(sorted(known - FIXED))})")
    if not isinstance(spec, dict):
        raise SweepError(f"{where}: expected a mapping with 'distribution'")
    extra = sorted(set(spec) - {"distribution", "low", "high", "values", "strategies"})
    if extra:
        raise SweepError(f"{where}: unknown key(s) {', '.join(extra)}")
    dist = spec.get("distribution")
    if dist not in DISTRIBUTIONS:
        raise SweepError(f"{where}: distribution must be one of {', '.join(DISTRIBUTIONS)}, "
                         f"got {dist!r}")
    kwargs: dict[str, Any] = {}
    if "strategies" in spec:
        strategies = spec["strategies"]
        if (not isinstance(strategies, list) or not strategies
                or any(s not in STRATEGIES for s in strategies)):
            raise SweepError(f"{where}: strategies must be a non-empty list of "
                             f"{', '.join(STRATEGIES)}")
        kwargs["strategies"] = tuple(strategies)
    if dist == "choice":
        choices = spec.get("values")
        if not isinstance(choices, list) or not choices:
            raise SweepError(f"{where}: a choice needs a non-empty 'values' list")
        return SearchParam(name, dist, values=tuple(choices), **kwargs)
    low, high = spec.get("low"), spec.get("high")
    for label, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise SweepError(f"{where}: '{label}' must be a number, got {value!r}")
    if not low < high or (dist == "loguniform" and low <= 0):
        raise SweepError(f"{where}: need {'0 < ' if dist == 'loguniform' else ''}low < high, "
                         f"got low={low!r}, high={high!r}")
    if dist == "randint" and not (float(low).is_integer() and float(high).is_integer()):
        raise SweepError(f"{where}: randint bounds must be integers")
    return SearchParam(name, dist, low=float(low), high=float(high), **kwargs)


# --------------------------------------------------------------------------- groups


@dataclass(frozen=True)
class Group:
    """One (task, ratio, arm) search: its base cell (search seed, eval_split=val) and space.

    Attributes:
        key: ``task/ratio/arm``, the prefix of its run names and its key in chosen.json.
        base: the search cell before sampling (validated, ``eval_split == "val"``).
        space: the searched settings that apply to this strategy (empty: nothing to tune).
        train_examples / val_examples: sizes of the search split.
    """

    key: str
    task: str
    ratio: float
    arm: str
    strategy: str
    base: dict[str, Any]
    space: tuple[SearchParam, ...]
    train_examples: int
    val_examples: int

    def config(self, values: dict[str, Any]) -> CellConfig:
        """The search cell with sampled ``values``; raises LeakageError unless it is on val."""
        config = CellConfig.from_dict({**self.base, **values}).validate()
        check_no_leakage([config], self.key)
        return config

    def defaults(self) -> dict[str, Any]:
        """The base values of the searched settings (the sweep's, else CellConfig's)."""
        return {p.name: self.base[p.name] for p in self.space}

    def corners(self) -> list[dict[str, Any]]:
        """The defaults, and each end of each searched range on its own."""
        out = [self.defaults()]
        for param in self.space:
            ends = param.values if param.distribution == "choice" else (param.low, param.high)
            out += [{**self.defaults(), param.name: _typed(param, end)} for end in ends]
        return out

    def max_epochs(self) -> int:
        """The longest epoch budget a trial may get (ASHA's ``max_t``)."""
        from trainers.budget import budget_epochs

        return max(budget_epochs(self.config(values), self.train_examples)
                   for values in self.corners())


def check_no_leakage(configs: list[CellConfig], label: str) -> None:
    """The leakage guard: every search cell is scored on the validation split."""
    for config in configs:
        if config.eval_split != "val":
            raise LeakageError(f"{label}: search cell {config.cell_name} has eval_split="
                               f"{config.eval_split!r}; search trials must use eval_split=val "
                               "(a validation split carved from the training subset)")


def build_groups(sweep: Sweep, plan: SearchPlan) -> list[Group]:
    """One group per (task, ratio, arm) of the sweep, validated, with its split sizes."""
    from trainers.data import subsample_indices, validation_split
    from trainers.prepare import load_cell_data

    explicit = [sweep.settings, *sweep.strategy_settings.values(),
                *(a.settings for a in sweep.arms)]
    for settings in explicit:
        if settings.get("eval_split", "val") != "val":
            raise LeakageError(f"{sweep.source}: eval_split={settings['eval_split']!r}: search "
                               "trials are always scored on the validation split (the final "
                               "phase uses the test split); do not set eval_split")
    sizes: dict[tuple, int] = {}
    groups = []
    for cell in dataclasses.replace(sweep, seeds=[plan.seed]).cells():
        c = cell.config
        data_key = (c.task, c.data_dir, c.train_file, c.test_file, c.none_relations, c.seed)
        if data_key not in sizes:
            sizes[data_key] = len(load_cell_data(c).train)
        subset = subsample_indices(sizes[data_key], c.ratio, c.seed, c.task)
        split = val_settings(plan)
        try:
            train, val = validation_split(subset, c.val_fraction, c.seed,
                                          split["val_min_examples"], split["val_max_fraction"])
        except ConfigError as exc:
            raise SweepError(f"{cell.name}: {exc}") from None
        base = {**c.to_dict(), **split, "eval_split": "val"}
        key = cell.name.rsplit("/", 1)[0]
        group = Group(key, c.task, c.ratio, cell.arm, c.strategy, base,
                      plan.space_for(c.strategy), len(train), len(val))
        for values in group.corners():  # both ends of every range make a valid cell
            try:
                group.config(values)
            except ConfigError as exc:
                raise SweepError(f"{sweep.source}: field 'search.space': {exc}") from None
        groups.append(group)
    return groups


def val_settings(plan: SearchPlan) -> dict[str, Any]:
    """The validation split of search trials, also used by the final cells' ``best_val``
    selection, so that a final cell of the search seed validates on the very same examples:
    ``val_fraction`` of the training subset, at least ``min_val_examples``, at most
    ``max_val_fraction`` of it."""
    return {"val_min_examples": plan.min_val_examples,
            "val_max_fraction": plan.max_val_fraction}


def _typed(param: SearchParam, value: Any) -> Any:
    return int(value) if param.distribution == "randint" else value


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
            values = suggested["trial"]["cell"]
            config = group.config(values)
            suggested["trial"]["name"] = f"{group.key}/search-{self.made:03d}-{trial_id}"
            suggested["trial"]["params"] = {**config.params(), "arm": group.arm,
                                            "search_trial": self.made}
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
                    "search_trial": str(index), "mlflow.parentRunId": self.parent_run_id}
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


# --------------------------------------------------------------------------- selection


@dataclass
class TrialRecord:
    """What the driver saw of one search trial."""

    name: str
    index: int
    trial_id: str
    values: dict[str, Any]
    status: str | None
    early_stopped: bool
    val_accuracy: float | None
    val_macro_f1: float | None
    run_id: str | None = None
    failure: str | None = None


def trial_score(finals: dict[str, float]) -> float | None:
    """A trial's validation accuracy: at its selected epoch when it ended by its own budget or
    early stopping, else (stopped by ASHA) at its last epoch."""
    return finals.get("selected_val_accuracy", finals.get("val_accuracy"))


def select(records: list[TrialRecord]) -> TrialRecord | None:
    """The chosen trial (see :data:`SELECTION_RULE`); None when no trial has a score."""
    scored = [r for r in records if r.status == "FINISHED" and r.val_accuracy is not None
              and math.isfinite(r.val_accuracy)]
    full = [r for r in scored if not r.early_stopped]
    pool = full or scored
    if not pool:
        return None

    def key(r: TrialRecord) -> tuple:
        f1 = r.val_macro_f1 if r.val_macro_f1 is not None else -math.inf
        return (r.val_accuracy, f1, -r.index)

    return max(pool, key=key)


@dataclass
class Choices:
    """chosen.json: the values chosen per group, written after each group."""

    path: Path
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Choices:
        if not path.is_file():
            return cls(path, {"groups": {}})
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SweepError(f"cannot read choices file {path}: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("groups"), dict):
            raise SweepError(f"choices file {path} has no 'groups' mapping")
        return cls(path, data)

    @property
    def groups(self) -> dict[str, dict[str, Any]]:
        return self.data.setdefault("groups", {})

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True) + "\n")
        tmp.replace(self.path)


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
            max_concurrent_trials=concurrency(args, resources, plan.num_samples),
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


def concurrency(args: argparse.Namespace, resources: dict[str, float], samples: int) -> int:
    """Trials at once: ``--max-concurrent``, else as many as the cluster's CPUs/GPUs fit.

    Always explicit: without it Tune keeps a single pending trial for a search algorithm, so
    short trials would run one after the other."""
    if args.max_concurrent:
        return min(args.max_concurrent, samples)
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


def run_search(args: argparse.Namespace, sweep: Sweep, plan: SearchPlan, groups: list[Group],
               choices: Choices, tracking_uri: str, storage: str) -> int:
    todo = [g for g in groups if args.redo_search or g.key not in choices.groups]
    kept = len(groups) - len(todo)
    print(f"[{sweep.name}] search: {len(groups)} groups x {plan.num_samples} trials; {kept} "
          f"already chosen in {choices.path}, {len(todo)} to search", flush=True)
    if not todo:
        return 0
    tracker = SweepTracker(tracking_uri, sweep.name, phase="search",
                           base_tags={"sweep": sweep.name,
                                      **standard_tags("orchestrator.search")})
    ensure_ray(args)
    resources = sweep_cli.trial_resources(args, sweep)
    cells = [Cell(f"{g.key}/search", g.arm, CellConfig.from_dict(g.base)) for g in todo]
    sweep_cli.warm_caches(cells, resources)
    choices.data.update(name=sweep.name, source=sweep.source, selection=SELECTION_RULE)
    failed = 0
    for group in todo:
        try:
            entry = search_group(args, sweep, plan, group, tracker, storage, resources)
        except CellError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            failed += 1
            continue
        choices.groups[group.key] = entry
        choices.save()
        if entry.get("failed"):
            failed += 1
        if tracker.queue.pending and not tracker.queue.drain(args.flush_timeout):
            print(f"error: {len(tracker.queue.pending)} MLflow writes could not be sent "
                  f"({tracker.queue.last_error})", file=sys.stderr)
            return 1
    print()
    print(choices_table(choices, groups))
    print(f"\n[{sweep.name}] choices written to {choices.path}")
    return 1 if failed else 0


def choices_table(choices: Choices, groups: list[Group]) -> str:
    lines = [f"{'task':<10} {'ratio':>6} {'strategy':<18} {'trials':>6} {'val n':>6} "
             f"{'val acc %':>9}  chosen"]
    for g in groups:
        e = choices.groups.get(g.key)
        if e is None:
            continue
        acc = e.get("val_accuracy")
        values = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in e.get("values", {}).items()) or "(nothing to tune)"
        acc_text = f"{acc * 100:9.2f}" if isinstance(acc, (int, float)) else f"{'—':>9}"
        lines.append(f"{g.task:<10} {g.ratio:>6g} {g.arm:<18} {e.get('trials', 0):>6} "
                     f"{g.val_examples:>6} {acc_text}  {values}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- final phase


def final_cells(sweep: Sweep, plan: SearchPlan, groups: list[Group],
                choices: Choices) -> list[Cell]:
    """The sweep's cells (final seeds, eval_split=test) with each group's chosen values."""
    missing = [g.key for g in groups if g.key not in choices.groups]
    if missing:
        raise SweepError(f"no chosen values for {', '.join(missing)} in {choices.path}; run "
                         "--phase search first (or --phase both)")
    by_key = {g.key: g for g in groups}
    cells = []
    for cell in sweep.cells():
        key = cell.name.rsplit("/", 1)[0]
        values = dict(choices.groups[key].get("values", {}))
        unknown = sorted(set(values) - {p.name for p in by_key[key].space})
        if unknown:
            raise SweepError(f"{choices.path}: {key} chose {', '.join(unknown)}, which the "
                             "search space does not vary for this strategy")
        config = CellConfig.from_dict({**cell.config.to_dict(), **values,
                                       **val_settings(plan), "eval_split": "test"}).validate()
        cells.append(Cell(cell.name, cell.arm, config))
    return cells


def run_final(args: argparse.Namespace, sweep: Sweep, plan: SearchPlan, groups: list[Group],
              choices: Choices, tracking_uri: str, storage: str) -> int:
    cells = final_cells(sweep, plan, groups, choices)
    sweep_cli.check_inputs(cells)  # fingerprints of the cells with the chosen values
    tracker = SweepTracker(tracking_uri, sweep.name, phase="final",
                           base_tags={"sweep": sweep.name,
                                      **standard_tags("orchestrator.search")})
    # other chosen values are another configuration: new runs, never mixed with the old
    todo = sweep_cli.cells_to_run(sweep, cells, tracker, tracking_uri)
    if args.resume:
        sweep_cli.check_resume_manifest(f"{storage}/{sweep.name}-final", todo)
    tracker.record_launch({c.name: c.fingerprint for c in cells})
    resources: dict[str, float] = {}
    if todo:
        ensure_ray(args)
        resources = sweep_cli.trial_resources(args, sweep)
    run_as = dataclasses.replace(sweep, name=f"{sweep.name}-final")  # its own Tune folder
    outcome = sweep_cli.execute(args, run_as, todo, tracker, storage, resources) if todo else {}
    return sweep_cli.finish(args, sweep, cells, tracker, tracking_uri, outcome)


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """The sweep's flags (same meaning) plus the search's own."""
    p = sweep_cli.build_parser()
    p.prog = "python -m orchestrator.search"
    p.description = ("Tune alpha (and BatchMixup's temperature) per (task, ratio, strategy) on "
                     "a validation split with Optuna TPE + ASHA, then rerun the chosen values "
                     "on the test set with several seeds. Search and final runs share one "
                     "MLflow experiment, separated by the tag phase=search|final.")
    p.epilog = EPILOG
    p.set_defaults(preset="alpha_search")
    for action in p._actions:  # noqa: SLF001 - reword the inherited help where it differs
        if action.dest == "preset":
            action.help = ("a sweep in search_spaces/ with a 'search:' field "
                           "(default: alpha_search)")
        elif action.dest == "seeds":
            action.help = "same as --final-seeds"
        elif action.dest == "resume":
            action.help = ("final phase: continue an interrupted final run from its Tune "
                           "state (the search phase always skips groups already chosen)")
        elif action.dest == "dry_run":
            action.help = "list the search groups (with split sizes) and final cells, then exit"
    s = p.add_argument_group("search")
    s.add_argument("--phase", choices=PHASES, default="both",
                   help="search: choose values; final: test runs with the chosen values; "
                   "both (default)")
    s.add_argument("--num-samples", type=int, help="trials per (task, ratio, strategy) "
                   "(default: the file's search.num_samples)")
    s.add_argument("--final-seeds", help="comma-separated seeds of the final phase (default: "
                   "the file's seeds)")
    s.add_argument("--search-seed", type=int, help="cell seed of the search trials: their "
                   "training subset and validation split (default: search.seed)")
    s.add_argument("--choices-file", help="where the chosen values are written and read "
                   "(default: <report dir>/chosen.json, i.e. results/<name>/chosen.json)")
    s.add_argument("--redo-search", action="store_true", help="search groups again even if "
                   "the choices file has them (their earlier search runs are deleted)")
    return p


def check_args(args: argparse.Namespace) -> None:
    sweep_cli.check_ray_args(args)
    if args.num_samples is not None and args.num_samples < 1:
        raise SweepError("--num-samples must be >= 1")
    if args.search_seed is not None and args.search_seed < 0:
        raise SweepError("--search-seed must be >= 0")
    if args.final_seeds is not None:
        if args.seeds is not None and args.seeds != args.final_seeds:
            raise SweepError("--seeds and --final-seeds disagree; give one")
        args.seeds = args.final_seeds
    parse_list("--final-seeds", args.seeds, int)


def ensure_ray(args: argparse.Namespace) -> None:
    """Start (or connect to) Ray once, only when there is something to run."""
    import ray

    if not ray.is_initialized():
        sweep_cli.start_ray(args)


def run(args: argparse.Namespace) -> int:
    check_args(args)
    sweep = sweep_cli.build_sweep(args)
    if not sweep.search:
        raise SweepError(f"{sweep.source}: no 'search:' field; use a search file such as "
                         "search_spaces/alpha_search.yaml")
    plan = parse_plan(sweep, args)
    final = sweep.cells()
    sweep_cli.check_inputs(final)
    groups = build_groups(sweep, plan)
    check_no_leakage([CellConfig.from_dict(g.base) for g in groups], sweep.source)
    report_dir = Path(args.report_dir) if args.report_dir else Path("results") / sweep.name
    choices = Choices.load(Path(args.choices_file) if args.choices_file
                           else report_dir / "chosen.json")
    if args.dry_run:
        print(f"search groups (seed {plan.seed}, eval_split=val, {plan.num_samples} trials "
              "each):")
        for g in groups:
            space = ", ".join(f"{p.name} ~ {p.describe()}" for p in g.space) or "nothing"
            print(f"  {g.key}: train {g.train_examples}, validation {g.val_examples} "
                  f"(val_fraction {g.base['val_fraction']:.3g}); {space}")
        print(f"final cells (eval_split=test): {len(final)}")
        for cell in final:
            print(f"  {cell.name}")
        return 0
    tracking_uri = args.tracking_uri or default_tracking_uri()
    check_tracking_uri(tracking_uri)
    storage = sweep_cli.resolve_storage(args.storage_path)
    sweep_cli.check_storage(storage)
    if args.address:
        sweep_cli.check_address(args.address)
    sweep_cli.preflight(args, sweep, storage, [f"{sweep.name}-final"])
    sweep_cli.hold_sweep_lock(args, tracking_uri, sweep.name)  # both phases, one experiment
    if args.phase == "final":
        final_cells(sweep, plan, groups, choices)  # fail before Ray starts: missing choices
    code = 0
    if args.phase in ("search", "both"):
        code = run_search(args, sweep, plan, groups, choices, tracking_uri, storage)
    if args.phase in ("final", "both"):
        if any(g.key not in choices.groups for g in groups):
            print("error: the search did not choose values for every group; the final phase "
                  "is skipped", file=sys.stderr)
            return 1
        code = max(code, run_final(args, sweep, plan, groups, choices, tracking_uri, storage))
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with contextlib.ExitStack() as cleanup:  # the sweep lock is released on every exit
        args.cleanup = cleanup
        try:
            return run(args)
        except (SweepError, TrackingError, CellError, ConfigError) as exc:
            return sweep_cli.fail(str(exc))
        except KeyboardInterrupt:
            print("interrupted; rerun the same command: groups already chosen are kept, "
                  "final cells already FINISHED are skipped", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
