"""The strategy registry: each mixing strategy is declared once, with everything the rest reads.

A :class:`Strategy` says what a strategy is called, where it mixes, which family it belongs
to, which settings it reads, how many optimizer updates and forward passes a batch costs it,
its default loss, whether the frozen head's fused update covers it, and the loss of one update.
Config validation, the logged params and the fingerprint, the training budget, the updaters,
the CLI help, search spaces and (through the MLflow tags of :func:`strategy_tags`) the report
read these declarations; no other module lists strategy names (the model is timm's
``register_model``: one declaration every layer reads).

A strategy name resolves (:func:`get_strategy`) in this order:

1. a built-in strategy: one file per strategy in :mod:`trainers.strategies.builtin`,
   registered when :mod:`trainers.strategies` is imported;
2. ``package.module:NAME``: the module is imported and its attribute ``NAME`` is the
   :class:`Strategy` (a plug-in in the user's own module, as torchtune's ``_component_``
   paths);
3. an entry point of the group :data:`ENTRY_POINT_GROUP` (an installed plug-in package):
   ``[project.entry-points."batchmixup_lab.strategies"] my_mix = "my_pkg.my_mix:MY_MIX"``.

A plug-in's cells carry its ``package.module:NAME`` (entry-point names are replaced by it,
:func:`canonical_name`), so any process that can import the module (a Ray worker that received
it through the runtime environment, :func:`plugin_paths`) resolves it without the package's
metadata, and the module's content hash (:meth:`Strategy.identity`) is part of each cell's
fingerprint: editing a plug-in retrains its cells.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.metadata
import inspect
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: trainers.config imports this module
    from torch import Tensor

    from trainers.config import CellConfig
    from trainers.model import CellModel

FAMILIES = ("unmixed", "pairwise", "batch")
"""No mixing (a baseline); each new point mixes two examples; each new point mixes the whole
mini-batch. The report compares every arm with an ``unmixed`` one, and ``batch`` arms with
``pairwise`` ones."""
SITES = ("nowhere", "pooled", "layer", "embeddings", "tokens")
"""Where a strategy mixes: nowhere; the pooled representation v(x) (the paper's frame, frozen
features can serve it); the hidden states after an encoder layer; the embedding output; the
input tokens."""
FROZEN_SITES = ("nowhere", "pooled")
"""Sites that frozen (pre-computed) encoder features can serve."""
FUSED_KINDS = ("plain", "scalar", "vector")
"""What :mod:`trainers.fused_head` computes for a strategy: no mixing, one coefficient per
pair, one coefficient per pair and dimension."""
ENTRY_POINT_GROUP = "batchmixup_lab.strategies"
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")


def _one(config: CellConfig) -> int:
    return 1


@dataclass(frozen=True)
class Batch:
    """What one update's loss is computed from.

    Attributes:
        model: the cell's :class:`trainers.model.CellModel` (in training mode).
        inputs: the batch: a dict of token tensors (fine-tuning) or ``[b, f]`` features.
        targets: ``[b]`` integer labels.
        config: the cell's settings.
        strategy: the cell's strategy (for its :attr:`Strategy.draws_per_update`).
    """

    model: CellModel
    inputs: Any
    targets: Tensor
    config: CellConfig
    strategy: Strategy


@dataclass(frozen=True)
class Strategy:
    """One strategy, declared once (see the module docstring).

    Attributes:
        name: the ``strategy`` setting (lower case, digits, ``_``); the arm's default name.
        label: how tables and plots name it (``BatchMixup``, ``TMix``).
        family: one of :data:`FAMILIES`.
        site: one of :data:`SITES`; a site inside the encoder needs ``mode=finetune``.
        loss: the loss of one update, with its graph (:mod:`trainers.strategies.sites` builds
            it from a mixing function); run under the cell's autocast.
        reads: the strategy settings of :class:`trainers.config.CellConfig` it reads (those
            marked ``STRATEGY`` there: ``alpha``, ``mix_samples``, ``loss``, ...): only these
            are logged and fingerprinted for its cells; each keeps its declared type and range.
        default_loss: the loss when ``loss=auto`` (``ce`` for a strategy that does not mix).
        updates_per_batch: optimizer updates per mini-batch (paper-faithful mixup: n).
        forward_passes: forward passes (of the encoder, or of the frozen head) per mini-batch.
        draws_per_update: mixed batches averaged into one update's loss (shared mixup: n).
        fused: what :mod:`trainers.fused_head` computes for it (:data:`FUSED_KINDS`); None
            when only autograd covers it.
        check: rules of its own between settings (and the model), returning the problem in
            one line or None; called by :meth:`CellConfig.validate`.
        cite: the paper(s), for the docs and ``--help``.
        ref: ``package.module:NAME`` of a plug-in (set when it is loaded); None for built-ins.
        source_hash: sha256 of the plug-in module's source file (None for built-ins, or for
            a module without a file).
    """

    name: str
    label: str
    family: str
    site: str
    loss: Callable[[Batch], Tensor]
    reads: tuple[str, ...] = ()
    default_loss: str = "soft_ce"
    updates_per_batch: Callable[[CellConfig], int] = _one
    forward_passes: Callable[[CellConfig], int] = _one
    draws_per_update: Callable[[CellConfig], int] = _one
    fused: str | None = None
    check: Callable[[CellConfig], str | None] | None = None
    cite: str = ""
    ref: str | None = None
    source_hash: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.name, str) or not NAME_PATTERN.fullmatch(self.name):
            problems.append(f"name {self.name!r} must match {NAME_PATTERN.pattern}")
        if self.family not in FAMILIES:
            problems.append(f"family {self.family!r} is not one of {', '.join(FAMILIES)}")
        if self.site not in SITES:
            problems.append(f"site {self.site!r} is not one of {', '.join(SITES)}")
        if self.fused is not None and self.fused not in FUSED_KINDS:
            problems.append(f"fused {self.fused!r} is not one of {', '.join(FUSED_KINDS)}")
        if (self.family == "unmixed") != (self.site == "nowhere"):
            problems.append("a strategy mixes nowhere (site nowhere) exactly when its family "
                            "is unmixed")
        if not callable(self.loss):
            problems.append("loss must be a function of a Batch")
        if problems:
            raise StrategyError(f"strategy {self.name!r}: {'; '.join(problems)}")

    @property
    def mixes(self) -> bool:
        return self.family != "unmixed"

    @property
    def frozen_ok(self) -> bool:
        """Whether frozen encoder features can serve it (it mixes at most the pooled output)."""
        return self.site in FROZEN_SITES

    @property
    def builtin(self) -> bool:
        return self.ref is None

    def identity(self) -> str | None:
        """What the fingerprint adds for a plug-in: ``module:NAME@<content hash>``; None for a
        built-in strategy (its code is the project's, versioned by FINGERPRINT_VERSION)."""
        if self.ref is None:
            return None
        return f"{self.ref}@{self.source_hash or 'nofile'}"


class StrategyError(ValueError):
    """An unknown strategy name, a plug-in that cannot be loaded, or a bad declaration."""


_BUILTIN: dict[str, Strategy] = {}
_LOADED: dict[str, Strategy] = {}  # plug-ins by the name they were asked for


def register_strategy(strategy: Strategy) -> Strategy:
    """Register a built-in strategy under its name (the files of
    :mod:`trainers.strategies.builtin` call this); returns it, for ``NAME = register(...)``."""
    if strategy.name in _BUILTIN and _BUILTIN[strategy.name] is not strategy:
        raise StrategyError(f"strategy {strategy.name!r} is registered twice")
    _BUILTIN[strategy.name] = strategy
    return strategy


def builtin_names() -> tuple[str, ...]:
    """The built-in strategies, in declaration order (none, mixup, ..., then TMix's)."""
    return tuple(_BUILTIN)


def entry_points() -> dict[str, str]:
    """Installed plug-ins: entry-point name -> ``module:NAME``."""
    found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    return {ep.name: ep.value.replace(" ", "") for ep in found}


def known_names() -> tuple[str, ...]:
    """Built-in strategies, then installed plug-ins (what an error message lists)."""
    return (*_BUILTIN, *sorted(set(entry_points()) - set(_BUILTIN)))


def canonical_name(name: str) -> str:
    """The ``strategy`` value a cell stores: a built-in name or ``module:NAME`` (an installed
    plug-in's entry-point name is replaced by its target, which resolves anywhere the module
    can be imported). Raises :class:`StrategyError` for what does not resolve."""
    if name in _BUILTIN:
        return name
    if ":" in name:
        get_strategy(name)
        return name
    target = entry_points().get(name)
    if target is None:
        raise _unknown(name)
    get_strategy(target)
    return target


def get_strategy(name: str) -> Strategy:
    """The strategy ``name`` resolves to (see the module docstring), loading a plug-in once."""
    found = _BUILTIN.get(name) or _LOADED.get(name)
    if found is not None:
        return found
    if not isinstance(name, str):
        raise StrategyError(f"strategy must be a name, got {type(name).__name__}")
    if ":" in name:
        return _load(name, name)
    target = entry_points().get(name)
    if target is None:
        raise _unknown(name)
    return _load(target, name)


def _unknown(name: str) -> StrategyError:
    shown = name if len(name) <= 80 else name[:77] + "..."
    return StrategyError(f"unknown strategy {shown!r}; choose from {', '.join(known_names())}, "
                         "or give a plug-in as package.module:NAME")


def _load(ref: str, key: str) -> Strategy:
    """Import ``module:NAME``, check it is a :class:`Strategy`, remember it under ``key``."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr.isidentifier():
        raise StrategyError(f"strategy {ref!r}: expected package.module:NAME")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise StrategyError(f"strategy {ref!r}: cannot import {module_name} ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - the plug-in's own import error, in one line
        raise StrategyError(f"strategy {ref!r}: importing {module_name} failed: "
                            f"{type(exc).__name__}: {exc}") from None
    found = getattr(module, attr, None)
    if not isinstance(found, Strategy):
        what = "nothing" if found is None else f"a {type(found).__name__}"
        raise StrategyError(f"strategy {ref!r}: {module_name}.{attr} is {what}, not a "
                            "trainers.strategies.Strategy")
    loaded = dataclasses.replace(found, ref=ref, source_hash=_source_hash(module))
    _LOADED[key] = loaded
    return loaded


def _source_hash(module: Any) -> str | None:
    try:
        path = inspect.getsourcefile(module)
    except TypeError:
        return None
    if not path or not Path(path).is_file():
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def strategy_tags(strategy: Strategy, config: CellConfig) -> dict[str, str]:
    """What a cell's MLflow run records about its strategy, for the report (which reads only
    MLflow): its label, family and site, updates and forward passes per batch, and a
    plug-in's source (``module:NAME@hash``)."""
    tags = {"strategy_label": strategy.label, "strategy_family": strategy.family,
            "strategy_site": strategy.site,
            "updates_per_batch": str(strategy.updates_per_batch(config)),
            "forward_passes_per_batch": str(strategy.forward_passes(config))}
    if strategy.ref is not None:
        tags["strategy_source"] = strategy.identity() or strategy.ref
    return tags


def describe_strategies() -> str:
    """One line per known strategy: name, site, the settings it reads, its paper (``--help``)."""
    lines = []
    for name in known_names():
        try:
            spec = get_strategy(name)
        except StrategyError as exc:
            lines.append(f"  {name}: cannot be loaded ({exc})")
            continue
        reads = ", ".join(spec.reads) or "nothing"
        cite = f"; {spec.cite}" if spec.cite else ""
        lines.append(f"  {name:<16} {spec.site}; reads {reads}{cite}")
    return "\n".join(lines)


def plugin_paths(names: list[str]) -> list[Path]:
    """Local folders that carry the plug-in modules of ``names`` to a Ray cluster
    (``runtime_env["py_modules"]``): the top-level package of each plug-in module. A plug-in
    that is a single top-level ``.py`` file is returned as that file (the caller wraps it)."""
    out: list[Path] = []
    for name in dict.fromkeys(names):
        strategy = get_strategy(name)
        if strategy.ref is None:
            continue
        top = strategy.ref.partition(":")[0].split(".")[0]
        module = sys.modules.get(top) or importlib.import_module(top)
        paths = list(getattr(module, "__path__", []))
        path = Path(paths[0]) if paths else Path(inspect.getsourcefile(module) or "")
        if path.exists() and path not in out:
            out.append(path)
    return out
