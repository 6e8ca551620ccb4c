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
    resources: {cpus_per_trial: 1, gpus_per_trial: 0, max_concurrent: 4}  # CLI flags win
    search: {...}                    # only for hyperparameter searches (orchestrator.search)

The file is read into :class:`SweepFile`, a pydantic model: strict types, unknown fields
refused; ``settings``, ``strategy_settings.<s>``, each arm's settings and ``--set`` are checked
against CellConfig's own field declarations (:class:`Settings`), ``resources`` against
:class:`Resources` (read by the sweep: the CLI flags override it), ``search`` by
:class:`orchestrator.search_plan.SearchPlan`. Errors are one line naming the file and the
field (``<file>: field 'strategies[1].alpha': alpha must be > 0, got 0``) or the flag.

Every cell's :class:`~trainers.config.CellConfig` is built and validated before anything
starts, so a bad value anywhere in the grid stops the sweep with exit code 2.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from trainers.config import FIELD_TYPES, CellConfig, StrategyName, check_setting, parse_setting
from trainers.errors import ConfigError
from trainers.schema import Count, NonNegative, PositiveInt, Ratio, Text, bounds_of, problem
from trainers.strategies import get_strategy
from trainers.tasks import TASKS

SPACES_DIR = Path(__file__).resolve().parents[1] / "search_spaces"
CELL_AXES = {"task", "ratio", "strategy", "seed"}


class SweepError(ConfigError):
    """A sweep file or override is invalid; the message names the file and the field."""


@dataclass(frozen=True)
class Arm:
    """One strategy column of a sweep: a base strategy plus its own settings.

    Attributes:
        name: label in run names and tables (the strategy's declared name unless given).
        strategy: a registered strategy or ``package.module:NAME``
            (:mod:`trainers.strategies.registry`), as the cell stores it.
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


# --------------------------------------------------------------------------- the schema
class StrictLoader(yaml.SafeLoader):
    """YAML for sweep files: no aliases (``*name``: a 600-byte file of nested aliases expands
    to gigabytes), no key given twice in one mapping (the last one would silently win)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(f"line {event.start_mark.line + 1}: YAML aliases (*name) are "
                                 "not allowed in sweep files; write the value out")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                shown = repr(key)[:60]
                raise yaml.YAMLError(f"line {key_node.start_mark.line + 1}: key {shown} is "
                                     "given twice in one mapping")
            seen.add(key)
        return super().construct_mapping(node, deep)


def strict_yaml(text: str) -> Any:
    """Parse a sweep file with :class:`StrictLoader`."""
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass


NAME_MAX_BYTES = 128
NAME_FORBIDDEN = "/\\:*?\"<>|'%"
"""Characters no sweep or arm name may hold: path separators, what shells and file systems
treat specially, and ``%`` (MLflow percent-decodes artifact paths: ``%2F`` would become a
``/`` after the check)."""


def safe_name(value: str, what: str = "name") -> str:
    """A sweep or arm name that round-trips unchanged through a path component, an MLflow
    experiment or run name and an artifact path; raises ValueError (one line) otherwise.

    The one rule every name reaching a path passes: printable, no leading or trailing space,
    no leading ``.``, no ``..``, none of :data:`NAME_FORBIDDEN`, at most
    :data:`NAME_MAX_BYTES` bytes of UTF-8 (file systems allow 255 per component, and the name
    is joined with others)."""
    shown = value if len(value) <= 60 else value[:57] + "..."
    if len(value.encode("utf-8", "surrogatepass")) > NAME_MAX_BYTES:
        raise ValueError(f"{what} {shown!r} is longer than {NAME_MAX_BYTES} bytes")
    if (not value or value.strip() != value or value.startswith(".") or ".." in value
            or any(c in value for c in NAME_FORBIDDEN) or not value.isprintable()):
        raise ValueError(f"must be a plain {what} (letters, digits, '-', '_', '.'; no '/', "
                         f"'%' or '..'), got {shown!r}")
    return value


def _plain_name(value: str) -> str:
    """The experiment name: also a folder name under --storage-path and results/."""
    return safe_name(value, "name")


def _arm_name(value: str) -> str:
    """An arm's name: part of each run name and of the report's file names."""
    return safe_name(value, "arm name")


def _unique(values: list[Any]) -> list[Any]:
    if len(set(values)) != len(values):
        raise ValueError(f"has duplicates: {values}")
    return values


def _text_settings(values: Any) -> Any:
    """Command-line text (``--set epochs=5``) parsed for its field; other values as given."""
    if isinstance(values, dict):
        return {k: parse_setting(k, v) if k in FIELD_TYPES else v for k, v in values.items()}
    return values


_SETTING_FIELDS: dict[str, Any] = {
    name: (annotation, None) for name, annotation in FIELD_TYPES.items()
    if name not in CELL_AXES}
Settings = create_model(
    "Settings", __config__=ConfigDict(extra="forbid"),
    __validators__={"_text": model_validator(mode="before")(_text_settings)},
    **_SETTING_FIELDS)
"""CellConfig overrides (``settings``, ``strategy_settings.<s>``, ``--set``): every field but
the cell's axes, each with its own type and range; only the ones given count."""


class ArmSpec(Settings):
    """One entry of ``strategies``: a strategy name, or a mapping ``{name, strategy, <setting>:
    value, ...}``."""

    name: Annotated[Text, AfterValidator(_arm_name)] | None = None
    strategy: StrategyName

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"strategy": value} if isinstance(value, str) else value

    @property
    def arm_name(self) -> str:
        """The arm's name: given, or the strategy's declared name."""
        return self.name or get_strategy(self.strategy).name

    def arm(self) -> Arm:
        settings = self.model_dump(exclude_unset=True, exclude={"name", "strategy"})
        return Arm(self.arm_name, self.strategy, settings)


class Resources(BaseModel):
    """``resources``: what each trial asks for and how many run at once (the CLI flags
    ``--cpus-per-trial``, ``--gpus-per-trial``, ``--max-concurrent`` override them)."""

    model_config = ConfigDict(extra="forbid")
    cpus_per_trial: NonNegative | None = None
    gpus_per_trial: NonNegative | None = None
    max_concurrent: PositiveInt | None = None


def _non_empty(item: Any) -> Any:
    return Annotated[list[item], Field(min_length=1)]


class SweepFile(BaseModel):
    """A sweep file (see the module docstring); strict, unknown fields refused."""

    model_config = ConfigDict(extra="forbid")
    name: Annotated[Text, AfterValidator(_plain_name)] | None = None
    description: Text = ""
    tasks: Annotated[_non_empty(Literal[TASKS]), AfterValidator(_unique)]
    ratios: Annotated[_non_empty(Ratio), AfterValidator(_unique)]
    strategies: _non_empty(ArmSpec)
    seeds: Annotated[_non_empty(Count), AfterValidator(_unique)]
    settings: Settings = Field(default_factory=Settings)
    strategy_settings: dict[StrategyName, Settings] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    search: dict[str, Any] = Field(default_factory=dict)
    """Read by :func:`orchestrator.search_plan.parse_plan` (its own schema)."""

    @field_validator("settings", "strategy_settings", "resources", "search", mode="before")
    @classmethod
    def _empty(cls, value: Any) -> Any:
        return {} if value is None else value  # a key left empty in YAML ("settings:")

    @field_validator("strategies")
    @classmethod
    def _unique_arms(cls, arms: list[ArmSpec]) -> list[ArmSpec]:
        _unique([a.arm_name for a in arms])
        return arms


ITEM_NAMES = {"tasks": "task", "ratios": "ratio", "seeds": "seed"}
_BOUNDS = {"ratios": bounds_of(Ratio), "seeds": bounds_of(Count), **{
    name: bounds_of(info) for name, info in Resources.model_fields.items()},
    **{name: bounds_of(kind) for name, kind in FIELD_TYPES.items()}}


def _schema_error(exc: ValidationError, where: dict[str, str], source: str) -> SweepError:
    """Pydantic's first error as one line naming the flag or the file's field
    (``field 'strategy_settings.mixup.alpha'``, ``field 'strategies[1].alpha'``)."""
    error = exc.errors(include_url=False)[0]
    loc, kind = tuple(error["loc"]), error["type"]
    top = str(loc[0]) if loc else ""
    if kind == "extra_forbidden" and len(loc) == 1:
        return SweepError(f"{source}: unknown field(s) {top}; allowed: "
                          f"{', '.join(sorted(SweepFile.model_fields))}")
    if top in ITEM_NAMES and len(loc) == 2:  # one item of a plain list
        text = problem(exc, ITEM_NAMES[top], _BOUNDS.get(top))
        return SweepError(f"{where[top]}: {text if text.startswith('unknown') else 'each ' + text}")
    path = top + "".join(f"[{p}]" if isinstance(p, int) else "" if p == "[key]" else f".{p}"
                         for p in loc[1:])
    label = where.get(top) if len(loc) == 1 else f"{source}: field '{path}'"
    key = str(loc[-1]) if loc else ""
    if kind == "extra_forbidden":
        allowed = Resources.model_fields if top == "resources" else _SETTING_FIELDS
        if key in CELL_AXES:
            return SweepError(f"{label}: set {key} through the '{key}s' list")
        return SweepError(f"{label}: unknown setting; allowed: {', '.join(sorted(allowed))}")
    if top == "strategy_settings" and len(loc) >= 2 and loc[-1] == "[key]":
        return SweepError(f"{source}: field 'strategy_settings.{error['input']}': "
                          f"{problem(exc, 'strategy')}")
    text = problem(exc, None, _BOUNDS.get(key))
    if kind == "missing" or (kind == "value_error" and text.startswith(("has ", "must "))):
        return SweepError(f"{label} {text.removeprefix(key + ' ')}")
    return SweepError(f"{label}: {text}")


def load_sweep(file: Path, overrides: dict[str, Any] | None = None) -> Sweep:
    """Read, override and validate a sweep file.

    Args:
        file: the YAML file.
        overrides: ``tasks``, ``ratios``, ``strategies``, ``seeds`` (lists, replacing the
            file's), ``settings`` (a dict merged over the file's, already checked by
            :func:`parse_set`), ``name``. An error in an override names its flag
            (``--tasks``, ``--set``, ...), not the file.
    """
    source = str(file)
    try:
        raw = strict_yaml(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise SweepError(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})") \
            from None
    except (OSError, yaml.YAMLError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise SweepError(f"{source}: cannot read YAML: {first}") from None
    if not isinstance(raw, dict):
        raise SweepError(f"{source}: expected a mapping of fields, got {type(raw).__name__}")
    overrides = overrides or {}
    where = {key: f"{source}: field '{key}'" for key in SweepFile.model_fields}
    for key in ("tasks", "ratios", "strategies", "seeds", "name"):
        if overrides.get(key) is not None:
            raw[key] = overrides[key]
            where[key] = f"--{key}"
    try:
        spec = SweepFile.model_validate(raw)
    except ValidationError as exc:
        raise _schema_error(exc, where, source) from None
    file_settings = spec.settings.model_dump(exclude_unset=True)
    extra = overrides.get("settings") or {}
    sweep = Sweep(
        name=spec.name or _name(where["name"], file.stem),
        description=spec.description,
        source=source,
        tasks=list(spec.tasks),
        ratios=[float(r) for r in spec.ratios],
        arms=[a.arm() for a in spec.strategies],
        seeds=list(spec.seeds),
        settings={**file_settings, **extra},
        strategy_settings={k: v.model_dump(exclude_unset=True)
                           for k, v in spec.strategy_settings.items()},
        resources=spec.resources.model_dump(exclude_none=True),
        search=spec.search,
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


def _name(where: str, value: str) -> str:
    try:
        return _plain_name(value)
    except ValueError as exc:
        raise SweepError(f"{where} {exc}") from None


def _check_settings(sweep: Sweep, file_settings: dict[str, Any], extra: dict[str, Any]) -> None:
    """Validate the shared settings, blaming the file's 'settings' or the overrides (--set)."""
    def problem_of(values: dict[str, Any]) -> str | None:
        try:
            CellConfig.from_dict({**values, "task": sweep.tasks[0]}).validate()
        except ConfigError as exc:
            return str(exc)
        return None

    combined = problem_of({**file_settings, **extra})
    if combined is None:
        return
    if problem_of(file_settings) == combined or not extra:
        raise SweepError(f"{sweep.source}: field 'settings': {combined}")
    for key, value in extra.items():  # the override that alone brings the error
        if problem_of({**file_settings, key: value}) == combined:
            shown = format(value, "g") if isinstance(value, float) else value
            raise SweepError(f"--set {key}={shown}: {combined}")
    raise SweepError(f"--set: {combined}")


def parse_set(items: list[str]) -> dict[str, Any]:
    """``--set key=value`` pairs -> dict of typed values.

    Each value is parsed and checked for its CellConfig field here (strictly: ``epochs=2.5``
    and ``clean_loss=0.7`` are errors), so a bad value is blamed on ``--set key=value``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        label = f"--set {item.strip()}"
        if not sep or not key:
            raise SweepError(f"--set expects key=value, got {item!r}")
        if key in CELL_AXES:
            raise SweepError(f"{label}: set {key} through the '{key}s' list (or --{key}s)")
        if key not in _SETTING_FIELDS:
            raise SweepError(f"{label}: unknown setting; allowed: "
                             f"{', '.join(sorted(_SETTING_FIELDS))}")
        try:
            out[key] = check_setting(key, value.strip())
        except ConfigError as exc:
            raise SweepError(f"{label}: {exc}") from None
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
