"""The configuration of one cell: (task, ratio, strategy, seed) plus every hyperparameter.

A cell is the unit the paper's Table 1 averages over seeds. :class:`CellConfig` is the single
source of truth for its settings: the CLI builds it from flags, the orchestrator from a sweep
file, and :meth:`CellConfig.params` is what gets logged.

Each field declares its type and range (the aliases of :mod:`trainers.schema`: ``Ratio`` is
(0, 1], ``PositiveInt`` an integer >= 1, ...); pydantic checks them, strictly, in
:meth:`CellConfig.from_dict` and :meth:`CellConfig.validate`, and the sweep file's settings and
``--set`` reuse the same declarations (:data:`FIELD_TYPES`). The few rules between fields
(``patience`` needs ``selection=best_val``, ...) are written out in :meth:`CellConfig.validate`.
"""

from __future__ import annotations

import functools
import os
import typing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, TypeAdapter, ValidationError

from trainers.errors import ConfigError
from trainers.precision import PRECISIONS
from trainers.schema import (
    STRATEGY,
    Count,
    Flag,
    LayerSet,
    NonNegative,
    OpenShare,
    PathText,
    Positive,
    PositiveInt,
    Ratio,
    Share,
    Text,
    bounds_of,
    from_text,
    has_role,
    problem,
)
from trainers.strategies import LOSSES, Strategy, StrategyError, canonical_name, get_strategy
from trainers.tasks import TASKS, task_of

MODES = ("finetune", "frozen")
MIXUP_VARIANTS = ("faithful", "shared")
POOLINGS = ("auto", "cls", "mean")
PAIR_ENCODINGS = ("siamese", "joint")
EVAL_SPLITS = ("test", "val")
SELECTIONS = ("last", "best_val")
REFITS = ("off", "epochs", "updates")
DEVICES = ("auto", "cpu", "cuda")
LOSS_CHOICES = (*LOSSES, "auto")


def _strategy_name(name: str) -> str:
    """A registered strategy (:mod:`trainers.strategies.registry`), as its canonical name."""
    try:
        return canonical_name(name)
    except StrategyError as exc:
        raise ValueError(str(exc)) from None


StrategyName = Annotated[Text, AfterValidator(_strategy_name)]
"""A built-in strategy, ``package.module:NAME``, or an installed plug-in's entry-point name."""


def default_cache_dir() -> Path:
    """``$BATCHMIXUP_CACHE_DIR``, else ``~/.cache/batchmixup``."""
    env = os.environ.get("BATCHMIXUP_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "batchmixup"


@dataclass
class CellConfig:
    """Everything that defines one training run.

    Attributes:
        task: rte, banking77, fewrel, custom (your own CSV/JSONL) or toy2d (Figure 1).
        ratio: share of the training set used, in (0, 1]; the paper uses 1, .75, .5, .25, .01.
        strategy: a registered strategy (:func:`trainers.strategies.known_names`: the
            built-ins, installed plug-ins) or ``package.module:NAME``; see
            :mod:`trainers.strategies.registry`.
        seed: seeds the training subset, initialisation, data order and mixing policies.
        model: ``minilm`` (the packaged all-MiniLM-L6-v2), a hub name such as
            ``roberta-large``, a local directory, or ``random:<name>`` (random init from a
            built-in config: ``tiny``, ``minilm``, ``roberta-large``; for tests and timing).
        mode: ``finetune`` trains the encoder (the paper); ``frozen`` trains only MLP and W on
            cached encoder features.
        pooling: ``cls``, ``mean`` or ``auto`` (mean for MiniLM/sentence-transformers, CLS
            otherwise).
        pair_encoding: frozen mode, sentence-pair tasks (RTE): ``siamese`` encodes the two
            sentences separately and feeds ``[u, v, |u - v|, u * v]`` (Reimers & Gurevych 2019;
            a frozen joint encoding of the pair scores at chance on RTE with MiniLM, measured),
            ``joint`` encodes the pair in one pass as fine-tuning does. Fine-tune mode is
            always joint.
        mlp_hidden: width of the optional MLP block between encoder and W; 0 disables it.
        max_length: tokenizer truncation length.
        epochs, batch_size: the epoch budget (the exact number of epochs unless ``patience``
            stops the cell earlier or ``min_updates`` raises it); mini-batch size b.
        lr, head_lr: AdamW learning rates of the encoder and of the head (MLP + W).
        weight_decay, warmup_ratio, grad_clip: AdamW decay, linear warmup share of all
            steps (then linear decay to 0), max gradient norm (0 disables clipping).
        alpha, mix_samples, mixup_variant, batchmix_points, temperature, mix_layers, loss,
        clean_loss: the strategy settings (marked ``STRATEGY``): a cell logs and
            fingerprints only those its strategy reads (``Strategy.reads``).
        alpha: Beta(alpha, alpha) concentration of every mixing strategy.
        mix_samples: n for mixup and nonlinear mixup: beta is drawn n times per batch.
        mixup_variant: ``faithful`` (the paper: n forward passes and n updates per batch) or
            ``shared`` (beyond the paper: one forward, the mean of n mixed losses, one update).
        batchmix_points: BatchMixup's n (new points per batch); 0 means the batch size.
        temperature: BatchMixup's softmax temperature; 1 is Eq. 3.
        mix_layers: the encoder layers k a strategy that mixes inside the encoder draws from
            (``tmix``): ``auto`` (its default set) or ``7,9,12``.
        loss: ``dot`` (the paper), ``soft_ce``, ``cosine``, or ``auto`` (the strategy's
            ``default_loss``).
        clean_loss: add the ordinary cross-entropy on the original batch to the mixed loss. The
            paper does not say; Sun et al. (2020) add it. Default True.
        eval_split: ``test`` (Table 1) or ``val`` (hyperparameter search: a validation split
            carved from the training subset; the test set is never touched).
        selection: which epoch a cell's result comes from (see :mod:`trainers.budget`):
            ``last`` (the paper: the last epoch) or ``best_val`` (the epoch with the best
            validation accuracy, ties to the lower validation loss; a validation split is
            carved from the training subset and the test set never influences the choice).
        refit: ``best_val`` only: select, then refit (see :mod:`trainers.budget`). ``off``
            (default): the selected epoch's model is the result; ``epochs``/``updates``: after
            selection, train again from the initial weights on the whole subset (validation
            examples included) for the selected number of epochs / optimizer updates, and
            report that model. Logged and fingerprinted only when not ``off``.
        patience: ``best_val`` only: stop once this many epochs in a row did not improve on
            the best validation score (0: never stop early). A cell whose best epoch is at
            least ``patience`` epochs before its last is *converged*.
        min_updates: the cell makes at least this many optimizer updates whatever the ratio:
            its epoch budget is raised to ``ceil(min_updates / updates per epoch) + patience``
            and early stopping waits for them. Makes small-data arms comparable to
            paper-faithful mixup, which updates ``mix_samples`` times per batch.
        val_fraction, val_min_examples, val_max_fraction: the validation split (``eval_split
            == "val"`` or ``selection == "best_val"``) holds ``round(val_fraction * n)`` of
            the n training-subset examples, at least ``val_min_examples``, at most
            ``val_max_fraction * n`` (and always leaves one example to train on).
        none_relations: FewRel relations relabelled "None" (paper: 5 of 80; default 1 of the
            16 local ones).
        data_dir, train_file, test_file: data sources (see :mod:`trainers.data`).
        cache_dir: where frozen features and tokenized data are cached.
        device: auto (CUDA when available), cpu or cuda.
        precision: encoder forward passes (feature extraction, fine-tuning) in ``fp32`` or
            ``bf16`` autocast; ``auto`` is bf16 on GPUs and CPUs with native bf16, else fp32
            (see :mod:`trainers.precision`).
        dropout: dropout on the representation before mixing/classification.
        eval_batch_size: batch size for evaluation and feature extraction.
        checkpoint_every: write a checkpoint every k epochs (and after the last); 0: at most
            one every ~10 seconds (and after the last), for cells of many tiny epochs. Metrics
            are reported every epoch regardless.
    """

    task: Literal[TASKS] = "rte"
    ratio: Ratio = 1.0
    strategy: StrategyName = "none"
    seed: Count = 0
    model: Text = "minilm"
    mode: Literal[MODES] = "frozen"
    pooling: Literal[POOLINGS] = "auto"
    pair_encoding: Literal[PAIR_ENCODINGS] = "siamese"
    mlp_hidden: Count = 0
    max_length: PositiveInt = 128
    epochs: PositiveInt = 3
    batch_size: PositiveInt = 32
    lr: Positive = 2e-5
    head_lr: Positive = 1e-3
    weight_decay: NonNegative = 0.01
    warmup_ratio: Share = 0.1
    grad_clip: NonNegative = 1.0
    alpha: Annotated[Positive, STRATEGY] = 1.0
    mix_samples: Annotated[PositiveInt, STRATEGY] = 1
    mixup_variant: Annotated[Literal[MIXUP_VARIANTS], STRATEGY] = "faithful"
    batchmix_points: Annotated[Count, STRATEGY] = 0
    temperature: Annotated[Positive, STRATEGY] = 1.0
    mix_layers: Annotated[LayerSet, STRATEGY] = "auto"
    loss: Annotated[Literal[LOSS_CHOICES], STRATEGY] = "auto"
    clean_loss: Annotated[Flag, STRATEGY] = True
    eval_split: Literal[EVAL_SPLITS] = "test"
    selection: Literal[SELECTIONS] = "last"
    refit: Literal[REFITS] = "off"
    patience: Count = 0
    min_updates: Count = 0
    val_fraction: OpenShare = 0.2
    val_min_examples: PositiveInt = 1
    val_max_fraction: OpenShare = 0.5
    none_relations: Count = 1
    dropout: Share = 0.1
    eval_batch_size: PositiveInt = 128
    checkpoint_every: Count = 1
    device: Literal[DEVICES] = "auto"
    precision: Literal[PRECISIONS] = "auto"
    data_dir: PathText = None
    train_file: PathText = None
    test_file: PathText = None
    cache_dir: PathText = None

    # ----------------------------------------------------------------- derived values
    @property
    def strategy_spec(self) -> Strategy:
        """The declaration of this cell's strategy (:func:`trainers.strategies.get_strategy`)."""
        return get_strategy(self.strategy)

    @property
    def resolved_loss(self) -> str:
        """The loss actually used: ``loss``, or with ``auto`` (and for a strategy that does not
        read ``loss``) the strategy's ``default_loss`` (``ce`` for ``none``)."""
        spec = self.strategy_spec
        if self.loss != "auto" and "loss" in spec.reads:
            return self.loss
        return spec.default_loss

    @property
    def has_val_split(self) -> bool:
        """Whether a validation split is carved from the training subset."""
        return self.eval_split == "val" or self.selection == "best_val"

    @property
    def cell_name(self) -> str:
        """``task/ratio/strategy/seed``: the cell's name in MLflow and in tables."""
        return f"{self.task}/{self.ratio:g}/{self.strategy_spec.name}/{self.seed}"

    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else default_cache_dir()

    # ----------------------------------------------------------------- validation
    def validate(self) -> CellConfig:
        """Raise :class:`ConfigError` naming the first invalid field; return self.

        Each field's type and range are declared on it (:mod:`trainers.schema`, checked by
        pydantic, strictly); the rules between fields are here."""
        check_fields(asdict(self))
        # an installed plug-in's entry-point name -> its module:NAME, which any process that
        # can import the module resolves (a Ray worker without the package's metadata)
        self.strategy = canonical_name(self.strategy)
        if self.refit != "off" and (self.selection != "best_val" or self.eval_split != "test"):
            raise ConfigError(f"refit={self.refit} needs selection=best_val and eval_split=test "
                              "(it refits for the length selected on the validation split)")
        if self.patience and self.selection != "best_val":
            raise ConfigError(f"patience={self.patience} needs selection=best_val (early "
                              "stopping watches the validation split)")
        if self.patience and not self.min_updates and self.patience >= self.epochs:
            raise ConfigError(f"patience={self.patience} can never be met within epochs="
                              f"{self.epochs}; use patience < epochs (or set min_updates)")
        if self.task == "custom" and not (self.train_file and self.test_file):
            raise ConfigError("task 'custom' needs --train-file and --test-file")
        spec = self.strategy_spec
        unknown = [name for name in spec.reads if name not in STRATEGY_SETTINGS]
        if unknown:
            raise ConfigError(f"strategy {spec.name} reads {', '.join(unknown)}, which "
                              f"{'is not a' if len(unknown) == 1 else 'are not'} strategy "
                              f"setting(s); choose from {', '.join(STRATEGY_SETTINGS)}")
        if not spec.frozen_ok and (self.mode == "frozen" or not task_of(self).encoder):
            where = "mode=frozen" if task_of(self).encoder else f"task {self.task}"
            raise ConfigError(f"strategy {spec.name} mixes inside the encoder (site "
                              f"{spec.site}): it needs mode=finetune, not {where}")
        found = spec.check(self) if spec.check is not None else None
        if found:
            raise ConfigError(f"strategy {spec.name}: {found}")
        return self

    # ----------------------------------------------------------------- serialisation
    def applicable(self) -> dict[str, Any]:
        """The settings that change what this cell trains, ``loss`` resolved.

        Leaves out the cell's seed, paths and cosmetics (data and cache locations, device,
        evaluation batch size, checkpoint cadence) and every setting its strategy, mode, task
        and selection do not read (e.g. ``mix_samples`` for batchmixup, ``lr`` in frozen
        mode). What is left is what gets logged as params and what
        :func:`trainers.prepare.cell_fingerprint` hashes.
        """
        skip = {"seed", "data_dir", "train_file", "test_file", "cache_dir", "device",
                "eval_batch_size", "checkpoint_every"}
        skip |= set(STRATEGY_SETTINGS) - set(self.strategy_spec.reads)
        if not task_of(self).encoder:  # the task's own features (toy2d)
            skip |= {"model", "mode", "pooling", "pair_encoding", "max_length", "lr",
                     "precision", "none_relations"}
        elif self.mode == "frozen":
            skip.add("lr")
        if self.mode == "finetune" or self.task not in ("rte", "custom"):
            skip.add("pair_encoding")
        if self.task != "fewrel":
            skip.add("none_relations")
        if not self.has_val_split:
            skip |= {"val_fraction", "val_min_examples", "val_max_fraction"}
        if self.selection != "best_val":
            skip.add("patience")
        if self.refit == "off":  # so that cells recorded before the setting keep their names
            skip.add("refit")
        out = {k: v for k, v in asdict(self).items() if k not in skip}
        if "loss" in out:
            out["loss"] = self.resolved_loss
        return out

    def params(self) -> dict[str, Any]:
        """What gets logged as params: :meth:`applicable` and the seed."""
        return {**self.applicable(), "seed": self.seed}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CellConfig:
        """Build from a mapping: unknown keys are refused, command-line text is parsed
        (:func:`trainers.schema.from_text`), every value is checked against its field's type
        and range. The rules between fields are :meth:`validate`'s."""
        unknown = sorted(set(values) - set(FIELD_TYPES))
        if unknown:
            raise ConfigError(
                f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(FIELD_TYPES))}"
            )
        return check_fields({k: parse_setting(k, v) for k, v in values.items()})


_ADAPTER = TypeAdapter(CellConfig)
FIELD_TYPES: dict[str, Any] = typing.get_type_hints(CellConfig, include_extras=True)
"""Each field's declared type (an ``Annotated`` alias of :mod:`trainers.schema`)."""
STRATEGY_SETTINGS: tuple[str, ...] = tuple(
    name for name, kind in FIELD_TYPES.items() if has_role(kind, STRATEGY))
"""The settings marked ``STRATEGY``: what a strategy's ``reads`` may name."""


def parse_setting(name: str, value: Any) -> Any:
    """``value`` for field ``name``, parsed when it is command-line text (``"5"`` -> 5)."""
    kind = _base_type(FIELD_TYPES[name])
    return from_text(kind, value) if isinstance(value, str) and kind is not str else value


def check_fields(values: dict[str, Any]) -> CellConfig:
    """A :class:`CellConfig` from ``values`` (missing ones default) with every field's type
    and range checked; :class:`ConfigError` names the first problem."""
    try:
        return _ADAPTER.validate_python(values)
    except ValidationError as exc:
        loc = exc.errors(include_url=False)[0]["loc"]
        name = str(loc[0]) if loc else None
        raise ConfigError(problem(exc, name, bounds_of(FIELD_TYPES.get(name)))) from None


def check_setting(name: str, value: Any) -> Any:
    """One setting's value, parsed and checked against its field's type and range."""
    value = parse_setting(name, value)
    try:
        return _setting_adapter(name).validate_python(value)
    except ValidationError as exc:
        raise ConfigError(problem(exc, name, bounds_of(FIELD_TYPES[name]))) from None


@functools.cache
def _setting_adapter(name: str) -> TypeAdapter:
    return TypeAdapter(FIELD_TYPES[name])


def _base_type(annotation: Any) -> Any:
    """int, float, bool or str: what command-line text for this field is parsed into."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) is Literal:
        return str
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return _base_type(args[0]) if args else annotation
