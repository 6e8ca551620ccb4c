"""The configuration of one cell: (task, ratio, strategy, seed) plus every hyperparameter.

A cell is the unit the paper's Table 1 averages over seeds. :class:`CellConfig` is the single
source of truth for its settings: the CLI builds it from flags, the orchestrator from a sweep
file, and :meth:`CellConfig.params` is what gets logged.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from trainers.errors import ConfigError
from trainers.precision import PRECISIONS
from trainers.strategies import LOSSES, STRATEGIES
from trainers.tasks import TASKS, task_of

MODES = ("finetune", "frozen")
MIXUP_VARIANTS = ("faithful", "shared")
POOLINGS = ("auto", "cls", "mean")
PAIR_ENCODINGS = ("siamese", "joint")
EVAL_SPLITS = ("test", "val")
SELECTIONS = ("last", "best_val")
DEVICES = ("auto", "cpu", "cuda")

# Default loss of the label-vector strategies (nonlinear_mixup, batchmixup) when loss="auto".
# Chosen from measurements recorded in README.md ("Choosing batchmixup's loss"); mixup's
# "auto" is always soft_ce, i.e. Zhang et al.'s mixed cross-entropy (Eq. 2).
DEFAULT_LABEL_VECTOR_LOSS = "soft_ce"


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
        strategy: none, mixup, nonlinear_mixup or batchmixup.
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
        alpha: Beta(alpha, alpha) concentration of every mixing strategy.
        mix_samples: n for mixup and nonlinear mixup: beta is drawn n times per batch.
        mixup_variant: ``faithful`` (the paper: n forward passes and n updates per batch) or
            ``shared`` (beyond the paper: one forward, the mean of n mixed losses, one update).
        batchmix_points: BatchMixup's n (new points per batch); 0 means the batch size.
        temperature: BatchMixup's softmax temperature; 1 is Eq. 3.
        loss: ``dot`` (the paper), ``soft_ce``, ``cosine``, or ``auto`` (mixup: soft_ce, the
            other two: :data:`DEFAULT_LABEL_VECTOR_LOSS`).
        clean_loss: add the ordinary cross-entropy on the original batch to the mixed loss. The
            paper does not say; Sun et al. (2020) add it. Default True.
        eval_split: ``test`` (Table 1) or ``val`` (hyperparameter search: a validation split
            carved from the training subset; the test set is never touched).
        selection: which epoch a cell's result comes from (see :mod:`trainers.budget`):
            ``last`` (the paper: the last epoch) or ``best_val`` (the epoch with the best
            validation accuracy, ties to the lower validation loss; a validation split is
            carved from the training subset and the test set never influences the choice).
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

    task: str = "rte"
    ratio: float = 1.0
    strategy: str = "none"
    seed: int = 0
    model: str = "minilm"
    mode: str = "frozen"
    pooling: str = "auto"
    pair_encoding: str = "siamese"
    mlp_hidden: int = 0
    max_length: int = 128
    epochs: int = 3
    batch_size: int = 32
    lr: float = 2e-5
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    grad_clip: float = 1.0
    alpha: float = 1.0
    mix_samples: int = 1
    mixup_variant: str = "faithful"
    batchmix_points: int = 0
    temperature: float = 1.0
    loss: str = "auto"
    clean_loss: bool = True
    eval_split: str = "test"
    selection: str = "last"
    patience: int = 0
    min_updates: int = 0
    val_fraction: float = 0.2
    val_min_examples: int = 1
    val_max_fraction: float = 0.5
    none_relations: int = 1
    dropout: float = 0.1
    eval_batch_size: int = 128
    checkpoint_every: int = 1
    device: str = "auto"
    precision: str = "auto"
    data_dir: str | None = None
    train_file: str | None = None
    test_file: str | None = None
    cache_dir: str | None = None

    # ----------------------------------------------------------------- derived values
    @property
    def resolved_loss(self) -> str:
        """The loss actually used (``auto`` resolved per strategy; ``ce`` for ``none``)."""
        if self.strategy == "none":
            return "ce"
        if self.loss != "auto":
            return self.loss
        return "soft_ce" if self.strategy == "mixup" else DEFAULT_LABEL_VECTOR_LOSS

    @property
    def has_val_split(self) -> bool:
        """Whether a validation split is carved from the training subset."""
        return self.eval_split == "val" or self.selection == "best_val"

    @property
    def cell_name(self) -> str:
        """``task/ratio/strategy/seed``: the cell's name in MLflow and in tables."""
        return f"{self.task}/{self.ratio:g}/{self.strategy}/{self.seed}"

    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else default_cache_dir()

    # ----------------------------------------------------------------- validation
    def validate(self) -> CellConfig:
        """Raise :class:`ConfigError` naming the first invalid field; return self."""
        _choice("task", self.task, TASKS)
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("mode", self.mode, MODES)
        _choice("pooling", self.pooling, POOLINGS)
        _choice("pair_encoding", self.pair_encoding, PAIR_ENCODINGS)
        _choice("mixup_variant", self.mixup_variant, MIXUP_VARIANTS)
        _choice("loss", self.loss, (*LOSSES, "auto"))
        _choice("eval_split", self.eval_split, EVAL_SPLITS)
        _choice("selection", self.selection, SELECTIONS)
        _choice("device", self.device, DEVICES)
        _choice("precision", self.precision, PRECISIONS)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not _finite(self.ratio) or not 0 < self.ratio <= 1:
            raise ConfigError(f"ratio must be in (0, 1], got {self.ratio!r}")
        if not _finite(self.alpha) or self.alpha <= 0:
            raise ConfigError(f"alpha must be > 0, got {self.alpha!r}")
        if not _finite(self.temperature) or self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature!r}")
        for name in ("epochs", "batch_size", "mix_samples", "max_length", "eval_batch_size",
                     "val_min_examples"):
            _positive_int(name, getattr(self, name))
        for name in ("mlp_hidden", "batchmix_points", "none_relations", "patience",
                     "min_updates", "checkpoint_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
        for name in ("lr", "head_lr"):
            if not _finite(getattr(self, name)) or getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("weight_decay", "grad_clip"):
            if not _finite(getattr(self, name)) or getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("warmup_ratio", "dropout"):
            if not _finite(getattr(self, name)) or not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if not _finite(self.val_fraction) or not 0 < self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        if not _finite(self.val_max_fraction) or not 0 < self.val_max_fraction < 1:
            raise ConfigError(f"val_max_fraction must be in (0, 1), got "
                              f"{self.val_max_fraction!r}")
        if self.patience and self.selection != "best_val":
            raise ConfigError(f"patience={self.patience} needs selection=best_val (early "
                              "stopping watches the validation split)")
        if self.patience and not self.min_updates and self.patience >= self.epochs:
            raise ConfigError(f"patience={self.patience} can never be met within epochs="
                              f"{self.epochs}; use patience < epochs (or set min_updates)")
        if self.task == "custom" and not (self.train_file and self.test_file):
            raise ConfigError("task 'custom' needs --train-file and --test-file")
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
        if self.strategy == "none":
            skip |= {"alpha", "mix_samples", "mixup_variant", "batchmix_points", "temperature",
                     "loss", "clean_loss"}
        elif self.strategy == "batchmixup":
            skip |= {"mix_samples", "mixup_variant"}
        else:
            skip |= {"batchmix_points", "temperature"}
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
        """Build from a mapping, rejecting unknown keys and coercing obvious types."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(
                f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        kwargs = {k: coerce(k, v, known[k].type) for k, v in values.items()}
        return cls(**kwargs)


def coerce(name: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against the field's type; parse it when it is a string (CLI flags, --set).

    Strict: a non-string value must already have the field's type (no ``True`` from ``0.7``,
    no ``1`` from ``true`` or ``2.0``); ``None`` only for optional fields. Strings are parsed
    whole (``"2"`` for an int, ``"0.5"`` or ``"1e-3"`` for a float, ``true``/``false`` (also
    ``yes``/``no``, ``1``/``0``) for a bool). Raises :class:`ConfigError` naming the field.
    """
    kind = str(annotation)
    base = kind.replace("| None", "").replace("None |", "").strip()
    if value is None:
        if "None" in kind:
            return None
        raise ConfigError(f"{name} must be of type {base}, got None")
    parse = _PARSERS.get(base)
    if parse is None:
        return value
    try:
        return parse(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be of type {base}, got {value!r}") from None


def _as_str(value: Any) -> str:
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    raise TypeError(value)


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in {"true", "yes", "1"}:
            return True
        if lowered in {"false", "no", "0"}:
            return False
    raise ValueError(value)


def _as_int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value.strip())
    raise ValueError(value)


def _as_float(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError(value)
    if isinstance(value, (numbers.Real, str)):
        return float(value)
    raise TypeError(value)


_PARSERS = {"str": _as_str, "bool": _as_bool, "int": _as_int, "float": _as_float}


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"unknown {name} {value!r}; choose from {', '.join(allowed)}")


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
