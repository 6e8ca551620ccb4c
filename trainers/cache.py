"""On-disk caches shared by every cell: tokenized datasets and frozen encoder features.

Both are keyed by content: the encoder's identity (name plus config/weights fingerprint), the
task data's fingerprint (every example and label), ``max_length`` and, for features, the
pooling. A cell computes an entry once, under a file lock, writes it atomically, and every later
cell with the same key (any strategy, ratio or seed) reads it. The cache directory is
``--cache-dir`` / ``$BATCHMIXUP_CACHE_DIR`` / ``~/.cache/batchmixup``; never the data directory,
which may be read-only. Entries are read with ``torch.load(weights_only=True)``: plain tensors and
lists, nothing arbitrary is unpickled.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock


def cache_key(*parts: object) -> str:
    """A short sha256 over the parts' string forms."""
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:24]


def cached(path: Path, compute: Callable[[], Any]) -> tuple[Any, bool]:
    """Load ``path`` if it exists, else compute, save atomically and return it.

    Returns:
        ``(value, hit)`` where ``hit`` tells whether the value came from disk.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return torch.load(path, weights_only=True), True
    with FileLock(str(path) + ".lock"):
        if path.exists():  # another process computed it while we waited
            return torch.load(path, weights_only=True), True
        value = compute()
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            torch.save(value, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return value, False


def tokenize(tokenizer: Any, texts: list[str], pairs: list[str] | None, max_length: int) -> dict:
    """Tokenize without padding (padding is dynamic, per batch) into lists of ids."""
    encoded = tokenizer(texts, pairs, truncation=True, max_length=max_length, padding=False)
    keep = ("input_ids", "token_type_ids")
    return {k: [list(map(int, ids)) for ids in encoded[k]] for k in keep if k in encoded}


def pad_batch(rows: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Dynamic padding: pad a list of tokenized rows to the longest row of the batch."""
    width = max(len(r["input_ids"]) for r in rows)
    out: dict[str, torch.Tensor] = {}
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r["input_ids"])] = torch.tensor(r["input_ids"])
        mask[i, : len(r["input_ids"])] = 1
    out["input_ids"], out["attention_mask"] = ids, mask
    if "token_type_ids" in rows[0]:
        types = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            types[i, : len(r["token_type_ids"])] = torch.tensor(r["token_type_ids"])
        out["token_type_ids"] = types
    return out


def rows_of(tokens: dict[str, list[list[int]]]) -> list[dict[str, list[int]]]:
    """Column lists -> one dict per example."""
    keys = list(tokens)
    return [dict(zip(keys, values, strict=True)) for values in zip(*tokens.values(), strict=True)]


def length_order(rows: list[dict[str, list[int]]]) -> list[int]:
    """Indices of ``rows`` from shortest to longest (stable), so dynamic padding wastes little."""
    return sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))


@torch.no_grad()
def encode_rows(
    model: torch.nn.Module,
    rows: list[dict[str, list[int]]],
    pad_id: int,
    pooling: str,
    device: torch.device,
    batch_size: int,
    precision: str = "auto",
) -> torch.Tensor:
    """Pooled encoder outputs for tokenized rows, in their original order (float32, CPU).

    Rows are processed in order of length so that dynamic padding wastes little compute.
    ``precision`` is the forward pass's (:mod:`trainers.precision`); the result is float32.
    """
    from trainers.model import pool
    from trainers.precision import autocast as precision_autocast

    model.eval().to(device)
    order = length_order(rows)
    out = torch.empty((len(rows), model.config.hidden_size), dtype=torch.float32)
    autocast = precision_autocast(device, precision)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = {k: v.to(device) for k, v in pad_batch([rows[i] for i in idx], pad_id).items()}
        with autocast:
            hidden = model(**batch).last_hidden_state
        out[idx] = pool(hidden.float(), batch["attention_mask"], pooling).cpu()
    return out
