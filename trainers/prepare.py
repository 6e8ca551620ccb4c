"""Turn a cell's config into tensors ready to train on: data, subset, encoder inputs.

``frozen`` mode: pooled encoder features of the whole task, cached on disk once per
(model, task data, max length, pooling, precision) and indexed by the cell's subset; the
encoder is loaded only on a cache miss. ``finetune`` mode: token ids cached once per
(model, task data, max length); the encoder is loaded for training.

The training subset is :func:`trainers.data.subsample_indices` (uniform, seeded by the cell seed,
identical for every strategy). With ``eval_split == "val"`` or ``selection == "best_val"`` a
validation split is carved from that subset (:func:`trainers.data.validation_split`); with
``eval_split == "val"`` the test set is never read into the cell, so a hyperparameter search
cannot select on test accuracy.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainers.cache import cache_key, cached, encode_rows, rows_of, tokenize
from trainers.config import CellConfig
from trainers.data import (
    TaskData,
    resolve_data_dir,
    subsample_indices,
    validation_split,
)
from trainers.model import Encoder, _default_pooling, _dir_identity, load_encoder, minilm_path
from trainers.precision import resolve_precision
from trainers.tasks import task_of


@dataclass
class PreparedCell:
    """Inputs of one cell.

    Attributes:
        labels: class names, index = class id.
        train_inputs / val_inputs / eval_inputs: ``[N, d]`` float features (frozen, toy2d) or
            a list of tokenized rows (finetune), of the training part of the subset, the
            validation split carved from it (None without one) and the test set (None when
            ``eval_split == "val"``: a search cell never sees it).
        train_targets / val_targets / eval_targets: ``[N]`` long tensors (or None, as above).
        input_dim: dimension of the features / the encoder's hidden size.
        encoder: the encoder to fine-tune (``None`` in frozen mode).
        pad_id: the tokenizer's padding id (finetune).
        cache_hits: which caches were hit, e.g. ``{"features": True}``.
        source: where the data came from.
    """

    labels: list[str]
    train_inputs: Any
    train_targets: torch.Tensor
    eval_inputs: Any
    eval_targets: torch.Tensor | None
    input_dim: int
    encoder: Encoder | None
    pad_id: int
    cache_hits: dict[str, bool]
    source: str
    val_inputs: Any = None
    val_targets: torch.Tensor | None = None
    subset_digest: str = ""


def subset_digest(train_idx: list[int], val_idx: list[int] | None) -> str:
    """16 hex chars naming which training examples the cell trains on (and which it holds out
    for validation): the sha256 of their positions in the task's training set. Two runs with
    the same digest (and fingerprint) trained on the same examples."""
    text = ",".join(map(str, sorted(train_idx))) + "|" + ",".join(map(str, sorted(val_idx or [])))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# Ray runs many cells in one worker process: the last few tasks it loaded from local files
# are kept (parsing and fingerprinting FewRel took ~0.5 s per cell), keyed by every file's
# path, size and modification time, so an edited file is read again.
_LOADED: OrderedDict[tuple, TaskData] = OrderedDict()
_LOADED_MAX = 4


def _local_files_key(config: CellConfig) -> tuple | None:
    """(task, options, (path, size, mtime) of each source file), or None for the hub."""
    if config.task == "custom":
        paths = [Path(str(config.train_file)), Path(str(config.test_file))]
    else:
        root = resolve_data_dir(config.data_dir)
        if root is None or not (root / config.task).is_dir():
            return None  # the hub (datasets has its own cache), or the loader's error to raise
        paths = sorted(p for p in (root / config.task).rglob("*") if p.is_file())
    try:
        stats = [(p.resolve(), p.stat()) for p in paths]
    except OSError:
        return None
    files = tuple((str(path), st.st_size, st.st_mtime_ns) for path, st in stats)
    return (config.task, config.none_relations, files)


def load_cell_data(config: CellConfig) -> TaskData:
    """The task's full data (train and test) from the configured source."""
    task = task_of(config)
    key = None if task.data_per_seed else _local_files_key(config)
    if key is not None and key in _LOADED:
        _LOADED.move_to_end(key)
        return _LOADED[key]
    data = task.load(config)
    if key is not None:
        _LOADED[key] = data
        while len(_LOADED) > _LOADED_MAX:
            _LOADED.popitem(last=False)
    return data


def cell_indices(config: CellConfig, n_train: int) -> tuple[list[int], list[int] | None]:
    """(training indices, validation indices or None) of the cell."""
    subset = subsample_indices(n_train, config.ratio, config.seed, config.task)
    if config.has_val_split:
        return validation_split(subset, config.val_fraction, config.seed,
                                config.val_min_examples, config.val_max_fraction)
    return subset, None


FINGERPRINT_VERSION = 1  # bump when the meaning of a setting changes what is trained


def cell_fingerprint(config: CellConfig) -> str:
    """16 hex chars naming what this cell trains, the same for every seed of it.

    Hashes :meth:`CellConfig.applicable` (the settings that matter, ``loss`` resolved), the
    encoder's identity (config and weight files of a local checkpoint, else its name) with
    ``pooling`` resolved, and the content fingerprint of the task's data
    (:meth:`trainers.data.TaskData.fingerprint`: every example and label), and for a plug-in
    strategy its module and source hash (:meth:`trainers.strategies.Strategy.identity`: editing
    the plug-in retrains its cells; built-ins are versioned by FINGERPRINT_VERSION). A
    relaunch whose cell has another fingerprint trains a new run; tables never average across
    fingerprints.
    """
    settings = config.applicable()
    task = task_of(config)
    if task.data_per_seed:
        data = task.name  # generated from the seed (the same generator for every seed)
    else:
        data = load_cell_data(config).fingerprint()
    if task.encoder:
        known = encoder_identity(config.model, config.pooling)
        if known is not None:
            settings["model"], settings["pooling"] = known
    content = {"v": FINGERPRINT_VERSION, "settings": settings, "data": data}
    code = config.strategy_spec.identity()  # a plug-in's module and content hash
    if code is not None:
        content["strategy_code"] = code
    blob = json.dumps(content, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def resolved_params(config: CellConfig) -> dict[str, Any]:
    """:meth:`CellConfig.params` with ``pooling`` resolved where the encoder is local
    (``precision`` resolves on the machine that trains: the trial reports it)."""
    params = config.params()
    if params.get("precision") == "auto":
        params.pop("precision")  # logged by the trial, resolved on its machine
    if "pooling" in params:
        known = encoder_identity(config.model, config.pooling)
        if known is not None:
            params["pooling"] = known[1]
    return params


def encoder_identity(model: str, pooling: str) -> tuple[str, str] | None:
    """(identity, resolved pooling) for local encoders without loading them; None otherwise."""
    if model.startswith("random:"):
        return None
    path = minilm_path() if model == "minilm" else Path(model).expanduser()
    if not path.is_dir():
        return None
    resolved = _default_pooling(str(path)) if pooling == "auto" else pooling
    return f"{path.name}-{_dir_identity(path)}", resolved


def frozen_features(
    config: CellConfig, data: TaskData, device: torch.device
) -> tuple[dict[str, torch.Tensor], bool]:
    """Pooled features of every train and test example, from the cache or computed once."""
    known = encoder_identity(config.model, config.pooling)
    encoder: Encoder | None = None
    if known is None:
        encoder = load_encoder(config.model, config.pooling, seed=0)
        known = (encoder.identity, encoder.pooling)
    identity, pooling = known
    siamese = data.is_pair and config.pair_encoding == "siamese"
    precision = resolve_precision(config.precision, device)
    key = cache_key("features", identity, data.fingerprint(), config.max_length, pooling,
                    "siamese" if siamese else "joint", precision)
    path = config.resolved_cache_dir() / "features" / f"{data.name}-{key}.pt"

    def compute() -> dict[str, torch.Tensor]:
        enc = encoder or load_encoder(config.model, config.pooling, seed=0)

        def embed(texts: list[str], pairs: list[str] | None) -> torch.Tensor:
            tokens = tokenize(enc.tokenizer, texts, pairs, config.max_length)
            return encode_rows(enc.model, rows_of(tokens), enc.tokenizer.pad_token_id,
                               pooling, device, config.eval_batch_size, precision)

        out = {}
        for split, examples in (("train", data.train), ("test", data.test)):
            firsts = [e.text for e in examples]
            seconds = [e.text_pair or "" for e in examples]
            if siamese:
                u, v = embed(firsts, None), embed(seconds, None)
                out[split] = torch.cat([u, v, (u - v).abs(), u * v], dim=1)
            else:
                out[split] = embed(firsts, seconds if data.is_pair else None)
        return out

    return cached(path, compute)


def tokenized(config: CellConfig, data: TaskData, encoder: Encoder) -> tuple[dict, bool]:
    """Token ids of every train and test example, from the cache or computed once."""
    key = cache_key("tokens", encoder.identity, data.fingerprint(), config.max_length)
    path = config.resolved_cache_dir() / "tokens" / f"{data.name}-{key}.pt"

    def compute() -> dict:
        return {
            split: tokenize(encoder.tokenizer, [e.text for e in examples],
                            [e.text_pair for e in examples] if data.is_pair else None,
                            config.max_length)
            for split, examples in (("train", data.train), ("test", data.test))
        }

    return cached(path, compute)


def prepare_cell(config: CellConfig, device: torch.device) -> PreparedCell:
    """Load data, pick the cell's subset and build its model inputs."""
    data = load_cell_data(config)
    train_idx, val_idx = cell_indices(config, len(data.train))
    train_y = torch.tensor([e.label for e in data.train], dtype=torch.long)
    test_y = torch.tensor([e.label for e in data.test], dtype=torch.long)

    def pick(values: Any, idx: list[int] | None) -> Any:
        if idx is None:
            return values
        if isinstance(values, torch.Tensor):
            return values[torch.tensor(idx, dtype=torch.long)]
        return [values[i] for i in idx]

    targets = {"train": train_y, "test": test_y}
    hits: dict[str, bool] = {}
    encoder = None
    pad_id = 0
    task = task_of(config)
    if task.features is not None:  # the task's own feature vectors (toy2d)
        inputs: dict[str, Any] = task.features(data)
    elif config.mode == "frozen":
        inputs, hits["features"] = frozen_features(config, data, device)
    else:
        encoder = load_encoder(config.model, config.pooling, seed=config.seed)
        tokens, hits["tokens"] = tokenized(config, data, encoder)
        inputs = {split: rows_of(tokens[split]) for split in ("train", "test")}
        pad_id = int(encoder.tokenizer.pad_token_id or 0)
    input_dim = encoder.hidden_size if encoder else int(inputs["train"].shape[1])
    return PreparedCell(
        labels=list(data.labels),
        train_inputs=pick(inputs["train"], train_idx),
        train_targets=pick(targets["train"], train_idx),
        eval_inputs=None if config.eval_split == "val" else inputs["test"],
        eval_targets=None if config.eval_split == "val" else targets["test"],
        val_inputs=None if val_idx is None else pick(inputs["train"], val_idx),
        val_targets=None if val_idx is None else pick(targets["train"], val_idx),
        input_dim=input_dim,
        encoder=encoder,
        pad_id=pad_id,
        cache_hits=hits,
        source=data.source,
        subset_digest=subset_digest(train_idx, val_idx),
    )


def warm_cache(config: CellConfig) -> dict[str, bool]:
    """Compute (or find) the cell's cached encoder inputs without training.

    The orchestrator calls this once per (task, model, max length, ...) before the trials start,
    so trials only read the cache. Returns which caches were already there.
    """
    from trainers.device import pick_device

    config.validate()
    if not task_of(config).encoder:
        return {}
    data = load_cell_data(config)
    if config.mode == "frozen":
        _, hit = frozen_features(config, data, pick_device(config.device))
        return {"features": hit}
    _, hit = tokenized(config, data, load_encoder(config.model, config.pooling, seed=0))
    return {"tokens": hit}


def cache_group(config: CellConfig) -> tuple:
    """Cells with equal groups share one cache entry (see :func:`warm_cache`)."""
    return (config.task, config.data_dir, config.train_file, config.test_file,
            config.none_relations, config.model, config.mode, config.max_length, config.pooling,
            config.pair_encoding, config.precision, config.resolved_cache_dir())
