"""The plan of a hyperparameter search, without Ray: the validated ``search:`` field of a sweep
file, its (task, ratio, arm) groups with their validation splits, the leakage guard, and the
rule that picks a group's winning trial. :mod:`orchestrator.search_tune` runs the plan on Ray
Tune; :mod:`orchestrator.search` is the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orchestrator.spaces import Sweep, SweepError
from trainers.config import FIELD_TYPES, CellConfig, StrategyName
from trainers.errors import ConfigError
from trainers.schema import (
    Count,
    Flag,
    Number,
    OpenShare,
    PositiveInt,
    Text,
    bounds_of,
    problem,
)

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
SELECTION_RULE = ("highest val_accuracy (at the trial's selected epoch; at its last epoch "
                  "for trials ASHA stopped) among trials that ran to their own end (all trials "
                  "if none did), ties: higher val_macro_f1, then earlier trial")

class LeakageError(SweepError):
    """A search cell would be scored on the test split."""


# --------------------------------------------------------------------------- the search plan


class SearchParam(BaseModel):
    """One searched setting (an entry of ``search.space``): its distribution and the
    strategies it applies to. ``name`` comes from the entry's key."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Text = ""
    distribution: Literal[DISTRIBUTIONS]
    low: Number | None = None
    high: Number | None = None
    values: tuple[Any, ...] = ()
    strategies: Annotated[tuple[StrategyName, ...], Field(min_length=1)] | None = None
    """The strategies it is searched for; None: every strategy that reads it."""

    @model_validator(mode="after")
    def _bounds(self) -> SearchParam:
        if self.distribution == "choice":
            if not self.values:
                raise ValueError("a choice needs a non-empty 'values' list")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"{self.distribution} needs 'low' and 'high' numbers")
        if not self.low < self.high or (self.distribution == "loguniform" and self.low <= 0):
            raise ValueError(f"need {'0 < ' if self.distribution == 'loguniform' else ''}low "
                             f"< high, got low={self.low:g}, high={self.high:g}")
        if self.distribution == "randint" and not (self.low.is_integer()
                                                   and self.high.is_integer()):
            raise ValueError("randint bounds must be integers")
        return self

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


SEARCHABLE = tuple(sorted(set(FIELD_TYPES) - FIXED))


class SearchPlan(BaseModel):
    """The validated ``search:`` field of a sweep file (see search_spaces/alpha_search.yaml).

    Attributes:
        num_samples: trials per (task, ratio, arm) group.
        seed: the cell seed of every search trial.
        sampler_seed, startup_trials: Optuna TPE's seed and its random trials before it
            models the results.
        include_default: the first trial evaluates the sweep's own values.
        grace_period, reduction_factor: ASHA's epochs before a trial can be stopped, and the
            share it keeps at each rung (1 / reduction_factor).
        min_val_examples, max_val_fraction: the validation split's floor and cap.
        space: the searched settings by name (any CellConfig field but :data:`FIXED`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    num_samples: PositiveInt = 16
    seed: Count = 0
    sampler_seed: Count = 0
    startup_trials: Count = 5
    include_default: Flag = True
    grace_period: PositiveInt = 1
    reduction_factor: Annotated[Number, Field(gt=1)] = 3.0
    min_val_examples: PositiveInt = 30
    max_val_fraction: OpenShare = 0.4
    space: Annotated[dict[Literal[SEARCHABLE], SearchParam], Field(min_length=1)]

    @field_validator("space", mode="before")
    @classmethod
    def _named(cls, space: Any) -> Any:
        if not isinstance(space, dict):
            return space
        return {name: {**spec, "name": name} if isinstance(spec, dict) else spec
                for name, spec in space.items()}

    @property
    def params(self) -> tuple[SearchParam, ...]:
        return tuple(self.space.values())

    def space_for(self, strategy: str) -> tuple[SearchParam, ...]:
        """The searched settings that apply to ``strategy`` (listed for it, and read by it:
        ``temperature`` is not searched for mixup, ``alpha`` not for none)."""
        return tuple(p for p in self.params
                     if (p.strategies is None or strategy in p.strategies)
                     and applies(p.name, strategy))


def applies(setting: str, strategy: str) -> bool:
    """Whether ``strategy`` reads ``setting`` (:meth:`CellConfig.applicable`), in the setting
    a search trial trains in (validation split, early stopping, encoder fine-tuned or not)."""
    probe = CellConfig(strategy=strategy, eval_split="val", selection="best_val", patience=1,
                       epochs=2)
    return setting in probe.applicable() or setting in dataclasses.replace(
        probe, mode="finetune").applicable()


def parse_plan(sweep: Sweep, args: argparse.Namespace) -> SearchPlan:
    """Validate ``sweep.search`` (with the CLI's ``--num-samples``, ``--search-seed``); errors
    name the file and the field."""
    raw = dict(sweep.search)
    if args.num_samples is not None:
        raw["num_samples"] = args.num_samples
    if args.search_seed is not None:
        raw["seed"] = args.search_seed
    try:
        return SearchPlan.model_validate(raw)
    except ValidationError as exc:
        raise SweepError(f"{sweep.source}: {_plan_problem(exc)}") from None


_BOUNDS = {name: bounds_of(info) for model in (SearchPlan, SearchParam)
           for name, info in model.model_fields.items()}


def _plan_problem(exc: ValidationError) -> str:
    """Pydantic's first error in the ``search`` field as ``field 'search.<...>': <what>``."""
    error = exc.errors(include_url=False)[0]
    loc = tuple(str(p) for p in error["loc"])
    names = [p for p in loc if not p.isdigit() and p != "[key]"]
    where = "search" + "".join(f".{p}" for p in names[:2])
    if loc[:1] == ("space",) and loc[2:3] == ("[key]",):
        return (f"field 'search.space.{loc[1]}': not a searchable setting (searchable: "
                f"{', '.join(SEARCHABLE)})")
    if error["type"] == "missing" and loc == ("space",):
        return ("field 'search.space' must map setting names to distributions, e.g. alpha: "
                "{distribution: loguniform, low: 0.05, high: 4}")
    if error["type"] == "extra_forbidden":
        model = SearchParam if len(loc) > 1 else SearchPlan
        allowed = sorted(set(model.model_fields) - {"name"})
        return (f"field '{'.'.join(['search', *loc[:-1]])}': unknown key {loc[-1]}; "
                f"allowed: {', '.join(allowed)}")
    name = "strategy" if names[-1:] == ["strategies"] else names[-1] if names else None
    text = problem(exc, name, _BOUNDS.get(names[-1]) if names else None)
    return f"field '{where}': {text}"


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


