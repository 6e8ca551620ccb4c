"""Sweep definitions: load a YAML file from ``search_spaces/``, apply CLI overrides, expand cells.

A sweep file has these fields (anything else is an error naming the file and the field)::

    name: smoke                      # the MLflow experiment and the Tune run name
    description: ...                 # free text
    tasks: [rte, banking77]          # trainers.config.TASKS
    ratios: [0.25, 0.01]             # each in (0, 1]
    strategies: [none, batchmixup]   # names, or arms: {name, strategy, <setting>: value, ...}
    seeds: [0, 1]                    # non-negative integers
    settings: {model: minilm, ...}   # CellConfig fields shared by every cell
    strategy_settings:               # per-strategy overrides, e.g. mixup: {mix_samples: 15}
      mixup: {mix_samples: 15}
    resources: {cpus_per_trial: 1, gpus_per_trial: 0}   # defaults for the CLI flags
    search: {...}                    # only for hyperparameter searches (orchestrator.search)

Every cell's :class:`~trainers.config.CellConfig` is built and validated before anything
starts, so a bad value anywhere in the grid stops the sweep with exit code 2.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from trainers.config import TASKS, CellConfig
from trainers.errors import ConfigError
from trainers.strategies import STRATEGIES

SPACES_DIR = Path(__file__).resolve().parents[1] / "search_spaces"
TOP_LEVEL = {"name", "description", "tasks", "ratios", "strategies", "seeds", "settings",
             "strategy_settings", "resources", "search"}
CELL_AXES = {"task", "ratio", "strategy", "seed"}
RESOURCE_KEYS = {"cpus_per_trial", "gpus_per_trial", "max_concurrent"}


class SweepError(ConfigError):
    """A sweep file or override is invalid; the message names the file and the field."""


@dataclass(frozen=True)
class Arm:
    """One strategy column of a sweep: a base strategy plus its own settings.

    Attributes:
        name: label in run names and tables (the strategy name unless given).
        strategy: one of ``trainers.strategies.STRATEGIES``.
        settings: CellConfig overrides specific to this arm.
    """

    name: str
    strategy: str
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class Cell:
    """One trial: its name (``task/ratio/arm/seed``), arm label, full config and, once the
    driver computed it, the fingerprint of its configuration
    (:func:`trainers.prepare.cell_fingerprint`)."""

    name: str
    arm: str
    config: CellConfig
    fingerprint: str = ""


@dataclass
class Sweep:
    """A validated sweep definition."""

    name: str
    description: str
    source: str
    tasks: list[str]
    ratios: list[float]
    arms: list[Arm]
    seeds: list[int]
    settings: dict[str, Any]
    strategy_settings: dict[str, dict[str, Any]]
    resources: dict[str, float]
    search: dict[str, Any]

    def cells(self) -> list[Cell]:
        """Every (task, ratio, arm, seed) cell with its validated config, in grid order."""
        out = []
        for task, ratio, arm, seed in itertools.product(self.tasks, self.ratios, self.arms,
                                                        self.seeds):
            values = {**self.settings, **self.strategy_settings.get(arm.strategy, {}),
                      **arm.settings, "task": task, "ratio": ratio, "strategy": arm.strategy,
                      "seed": seed}
            try:
                config = CellConfig.from_dict(values).validate()
            except ConfigError as exc:
                raise SweepError(f"{self.source}: cell {task}/{ratio:g}/{arm.name}/{seed}: "
                                 f"{exc}") from None
            out.append(Cell(f"{task}/{ratio:g}/{arm.name}/{seed}", arm.name, config))
        return out


def preset_names() -> list[str]:
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def resolve_source(preset: str | None, path: str | None) -> Path:
    """The YAML file of ``--preset NAME`` or ``--sweep-file PATH``."""
    if path:
        file = Path(path)
        if not file.is_file():
            raise SweepError(f"sweep file {file} does not exist")
        return file
    name = preset or "smoke"
    file = SPACES_DIR / f"{name}.yaml"
    if not file.is_file():
        raise SweepError(f"unknown preset {name!r}; choose from {', '.join(preset_names())} "
                         "or pass --sweep-file PATH")
    return file


def load_sweep(file: Path, overrides: dict[str, Any] | None = None) -> Sweep:
    """Read, override and validate a sweep file.

    Args:
        file: the YAML file.
        overrides: ``tasks``, ``ratios``, ``strategies``, ``seeds`` (lists, replacing the
            file's), ``settings`` (a dict merged over the file's), ``name``.
    """
    source = str(file)
    try:
        raw = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SweepError(f"{source}: cannot read YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise SweepError(f"{source}: expected a mapping of fields, got {type(raw).__name__}")
    unknown = sorted(set(raw) - TOP_LEVEL)
    if unknown:
        raise SweepError(f"{source}: unknown field(s) {', '.join(unknown)}; allowed: "
                         f"{', '.join(sorted(TOP_LEVEL))}")
    overrides = overrides or {}
    for key in ("tasks", "ratios", "strategies", "seeds", "name"):
        if overrides.get(key) is not None:
            raw[key] = overrides[key]
    settings = dict(_mapping(source, "settings", raw.get("settings", {})))
    settings.update(overrides.get("settings") or {})
    sweep = Sweep(
        name=_name(source, raw.get("name", file.stem)),
        description=str(raw.get("description", "")),
        source=source,
        tasks=_tasks(source, raw.get("tasks")),
        ratios=_ratios(source, raw.get("ratios")),
        arms=_arms(source, raw.get("strategies")),
        seeds=_seeds(source, raw.get("seeds")),
        settings=_settings(source, "settings", settings),
        strategy_settings=_strategy_settings(source, raw.get("strategy_settings", {})),
        resources=_resources(source, raw.get("resources", {})),
        search=dict(_mapping(source, "search", raw.get("search", {}))),
    )
    # Per-strategy settings are checked even for strategies the grid (or --strategies) omits.
    for strategy, extra in sweep.strategy_settings.items():
        try:
            CellConfig.from_dict({**sweep.settings, **extra, "task": sweep.tasks[0],
                                  "strategy": strategy}).validate()
        except ConfigError as exc:
            raise SweepError(f"{source}: field 'strategy_settings.{strategy}': {exc}") from None
    return sweep


# ---------------------------------------------------------------------- field validators
def _list(source: str, name: str, value: Any) -> list[Any]:
    if value is None:
        raise SweepError(f"{source}: field '{name}' is required")
    if not isinstance(value, list) or not value:
        raise SweepError(f"{source}: field '{name}' must be a non-empty list, got {value!r}")
    return value


def _mapping(source: str, name: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SweepError(f"{source}: field '{name}' must be a mapping, got {value!r}")
    return value


def _name(source: str, value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in "\\:*?\"<>|") or text.startswith("."):
        raise SweepError(f"{source}: field 'name' must be a plain name, got {value!r}")
    return text


def _tasks(source: str, value: Any) -> list[str]:
    tasks = _list(source, "tasks", value)
    for task in tasks:
        if task not in TASKS:
            raise SweepError(f"{source}: field 'tasks': unknown task {task!r}; allowed: "
                             f"{', '.join(TASKS)}")
    return [str(t) for t in tasks]


def _ratios(source: str, value: Any) -> list[float]:
    out = []
    for ratio in _list(source, "ratios", value):
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
            raise SweepError(f"{source}: field 'ratios': each ratio must be a number in (0, 1], "
                             f"got {ratio!r}")
        out.append(float(ratio))
    return out


def _seeds(source: str, value: Any) -> list[int]:
    seeds = _list(source, "seeds", value)
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise SweepError(f"{source}: field 'seeds': each seed must be a non-negative "
                             f"integer, got {seed!r}")
    if len(set(seeds)) != len(seeds):
        raise SweepError(f"{source}: field 'seeds' has duplicates: {seeds}")
    return list(seeds)


def _settings(source: str, name: str, value: dict[str, Any]) -> dict[str, Any]:
    known = {f.name for f in fields(CellConfig)} - CELL_AXES
    for key in value:
        if key in CELL_AXES:
            raise SweepError(f"{source}: field '{name}.{key}': set {key} through the "
                             f"'{key}s' list (or --{key}s), not in {name}")
        if key not in known:
            raise SweepError(f"{source}: field '{name}.{key}': unknown setting; allowed: "
                             f"{', '.join(sorted(known))}")
    return dict(value)


def _arms(source: str, value: Any) -> list[Arm]:
    arms = []
    for entry in _list(source, "strategies", value):
        if isinstance(entry, str):
            arm = Arm(entry, entry)
        elif isinstance(entry, dict) and "strategy" in entry:
            extra = {k: v for k, v in entry.items() if k not in {"name", "strategy"}}
            arm = Arm(str(entry.get("name", entry["strategy"])), str(entry["strategy"]),
                      _settings(source, f"strategies.{entry.get('name', '?')}", extra))
        else:
            raise SweepError(f"{source}: field 'strategies': each entry is a strategy name or "
                             f"a mapping with 'strategy', got {entry!r}")
        if arm.strategy not in STRATEGIES:
            raise SweepError(f"{source}: field 'strategies': unknown strategy "
                             f"{arm.strategy!r}; allowed: {', '.join(STRATEGIES)}")
        if "/" in arm.name:
            raise SweepError(f"{source}: field 'strategies': name {arm.name!r} contains '/'")
        arms.append(arm)
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise SweepError(f"{source}: field 'strategies' has duplicate names: {names}")
    return arms


def _strategy_settings(source: str, value: Any) -> dict[str, dict[str, Any]]:
    out = {}
    for strategy, settings in _mapping(source, "strategy_settings", value).items():
        if strategy not in STRATEGIES:
            raise SweepError(f"{source}: field 'strategy_settings.{strategy}': unknown "
                             f"strategy; allowed: {', '.join(STRATEGIES)}")
        out[strategy] = _settings(source, f"strategy_settings.{strategy}",
                                  _mapping(source, f"strategy_settings.{strategy}", settings))
    return out


def _resources(source: str, value: Any) -> dict[str, float]:
    out = {}
    for key, amount in _mapping(source, "resources", value).items():
        if key not in RESOURCE_KEYS:
            raise SweepError(f"{source}: field 'resources.{key}': unknown; allowed: "
                             f"{', '.join(sorted(RESOURCE_KEYS))}")
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
            raise SweepError(f"{source}: field 'resources.{key}' must be a number >= 0")
        out[key] = float(amount)
    return out


def parse_set(items: list[str]) -> dict[str, str]:
    """``--set key=value`` pairs -> dict (values stay strings; CellConfig coerces them)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SweepError(f"--set expects key=value, got {item!r}")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def parse_list(flag: str, text: str | None, kind: type) -> list[Any] | None:
    """Comma-separated CLI list -> typed list (``--ratios 0.25,0.01``)."""
    if text is None:
        return None
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            raise SweepError(f"{flag}: empty item in {text!r}")
        try:
            if kind is int and not part.lstrip("-").isdigit():
                raise ValueError(part)
            out.append(kind(part))
        except ValueError:
            raise SweepError(f"{flag}: {part!r} is not a valid {kind.__name__}") from None
    return out
