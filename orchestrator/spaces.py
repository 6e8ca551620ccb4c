"""Sweep definitions: load a YAML file from ``search_spaces/``, apply CLI overrides, expand cells.

A sweep file has these fields (anything else is an error naming the file and the field)::

    name: smoke                      # the MLflow experiment and the Tune run name
    description: ...                 # free text
    tasks: [rte, banking77]          # trainers.tasks.TASKS
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

from trainers.config import CellConfig, coerce
from trainers.errors import ConfigError
from trainers.strategies import STRATEGIES
from trainers.tasks import TASKS

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
            file's), ``settings`` (a dict merged over the file's), ``name``. An error in an
            override names its flag (``--tasks``, ``--set``, ...), not the file.
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
    where = {key: f"{source}: field '{key}'" for key in TOP_LEVEL}
    for key in ("tasks", "ratios", "strategies", "seeds", "name"):
        if overrides.get(key) is not None:
            raw[key] = overrides[key]
            where[key] = f"--{key}"
    file_settings = _settings(source, "settings",
                              dict(_mapping(source, "settings", raw.get("settings", {}))))
    extra = overrides.get("settings") or {}
    sweep = Sweep(
        name=_name(where["name"], raw.get("name", file.stem)),
        description=str(raw.get("description", "")),
        source=source,
        tasks=_tasks(where["tasks"], raw.get("tasks")),
        ratios=_ratios(where["ratios"], raw.get("ratios")),
        arms=_arms(source, where["strategies"], raw.get("strategies")),
        seeds=_seeds(where["seeds"], raw.get("seeds")),
        settings={**file_settings, **_settings("--set", "", extra)},
        strategy_settings=_strategy_settings(source, raw.get("strategy_settings", {})),
        resources=_resources(source, raw.get("resources", {})),
        search=dict(_mapping(source, "search", raw.get("search", {}))),
    )
    _check_settings(sweep, file_settings, extra)
    # Per-strategy settings are checked even for strategies the grid (or --strategies) omits.
    for strategy, settings in sweep.strategy_settings.items():
        try:
            CellConfig.from_dict({**sweep.settings, **settings, "task": sweep.tasks[0],
                                  "strategy": strategy}).validate()
        except ConfigError as exc:
            raise SweepError(f"{source}: field 'strategy_settings.{strategy}': {exc}") from None
    return sweep


def _check_settings(sweep: Sweep, file_settings: dict[str, Any], extra: dict[str, Any]) -> None:
    """Validate the shared settings, blaming the file's 'settings' or the overrides (--set)."""
    def problem(values: dict[str, Any]) -> str | None:
        try:
            CellConfig.from_dict({**values, "task": sweep.tasks[0]}).validate()
        except ConfigError as exc:
            return str(exc)
        return None

    combined = problem({**file_settings, **extra})
    if combined is None:
        return
    if problem(file_settings) == combined or not extra:
        raise SweepError(f"{sweep.source}: field 'settings': {combined}")
    for key, value in extra.items():  # the override that alone brings the error
        if problem({**file_settings, key: value}) == combined:
            shown = format(value, "g") if isinstance(value, float) else value
            raise SweepError(f"--set {key}={shown}: {combined}")
    raise SweepError(f"--set: {combined}")


# ---------------------------------------------------------------------- field validators
def _list(where: str, value: Any) -> list[Any]:
    if value is None:
        raise SweepError(f"{where} is required")
    if not isinstance(value, list) or not value:
        raise SweepError(f"{where} must be a non-empty list, got {value!r}")
    return value


def _mapping(source: str, name: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SweepError(f"{source}: field '{name}' must be a mapping, got {value!r}")
    return value


def _name(where: str, value: Any) -> str:
    """The experiment name: also a folder name under --storage-path and results/, so no path
    separators, no '..', nothing a shell or a filesystem treats specially."""
    text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    if (not text or text.strip() != text or text.startswith(".") or ".." in text
            or any(c in text for c in "/\\:*?\"<>|'") or not text.isprintable()):
        raise SweepError(f"{where} must be a plain name (letters, digits, '-', '_', '.'; no "
                         f"'/' or '..'), got {value!r}")
    return text


def _tasks(where: str, value: Any) -> list[str]:
    tasks = _list(where, value)
    for task in tasks:
        if task not in TASKS:
            raise SweepError(f"{where}: unknown task {task!r}; allowed: {', '.join(TASKS)}")
    return [str(t) for t in tasks]


def _ratios(where: str, value: Any) -> list[float]:
    out = []
    for ratio in _list(where, value):
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
            raise SweepError(f"{where}: each ratio must be a number in (0, 1], got {ratio!r}")
        out.append(float(ratio))
    return out


def _seeds(where: str, value: Any) -> list[int]:
    seeds = _list(where, value)
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise SweepError(f"{where}: each seed must be a non-negative integer, got {seed!r}")
    if len(set(seeds)) != len(seeds):
        raise SweepError(f"{where} has duplicates: {seeds}")
    return list(seeds)


def _settings(source: str, name: str, value: dict[str, Any]) -> dict[str, Any]:
    """Check the keys and the type of each value (strict: no bool from 0.7, no int from 2.0).

    ``source`` "--set" with an empty ``name`` labels errors as ``--set key=value``."""
    known = {f.name: f for f in fields(CellConfig)}
    out = {}
    for key, item in value.items():
        label = f"--set {key}={item}" if source == "--set" else f"{source}: field '{name}.{key}'"
        if key in CELL_AXES:
            raise SweepError(f"{label}: set {key} through the '{key}s' list (or --{key}s)")
        if key not in known:
            raise SweepError(f"{label}: unknown setting; allowed: "
                             f"{', '.join(sorted(set(known) - CELL_AXES))}")
        try:
            out[key] = coerce(key, item, known[key].type)
        except ConfigError as exc:
            raise SweepError(f"{label}: {exc}") from None
    return out


def _arms(source: str, where: str, value: Any) -> list[Arm]:
    arms = []
    for entry in _list(where, value):
        if isinstance(entry, str):
            arm = Arm(entry, entry)
        elif isinstance(entry, dict) and "strategy" in entry:
            extra = {k: v for k, v in entry.items() if k not in {"name", "strategy"}}
            arm = Arm(str(entry.get("name", entry["strategy"])), str(entry["strategy"]),
                      _settings(source, f"strategies.{entry.get('name', '?')}", extra))
        else:
            raise SweepError(f"{where}: each entry is a strategy name or a mapping with "
                             f"'strategy', got {entry!r}")
        if arm.strategy not in STRATEGIES:
            raise SweepError(f"{where}: unknown strategy {arm.strategy!r}; allowed: "
                             f"{', '.join(STRATEGIES)}")
        if "/" in arm.name or ".." in arm.name:
            raise SweepError(f"{where}: name {arm.name!r} contains '/' or '..'")
        arms.append(arm)
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise SweepError(f"{where} has duplicate names: {names}")
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
        if key == "max_concurrent" and (not isinstance(amount, int) or amount < 1):
            raise SweepError(f"{source}: field 'resources.max_concurrent' must be an integer "
                             ">= 1")
        out[key] = float(amount)
    return out


def parse_set(items: list[str]) -> dict[str, Any]:
    """``--set key=value`` pairs -> dict of typed values.

    Each value is parsed for its CellConfig field here (strictly: ``epochs=2.5`` and
    ``clean_loss=0.7`` are errors), so a bad value is blamed on ``--set key=value``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SweepError(f"--set expects key=value, got {item!r}")
        out[key.strip().replace("-", "_")] = value.strip()
    return _settings("--set", "", out)


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
