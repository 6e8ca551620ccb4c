"""The tasks a cell can train on, each registered once with what the rest of the code needs.

A :class:`Task` says how to load its data and how its inputs reach the model: text tasks
(RTE, BANKING77, FewRel, your own CSV/JSONL) go through an encoder (frozen features or
fine-tuning, cached per model); the Figure 1 toy task brings its own 2-D features, generated
from the cell's seed, and writes its decision boundary after the last epoch. The training loop,
the data preparation, the fingerprint and the orchestrator ask the registry instead of testing
task names; adding a task is one entry here (and a loader in :mod:`trainers.data`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from trainers.data import TaskData, load_task

if TYPE_CHECKING:  # annotations only: trainers.config imports this module
    from trainers.config import CellConfig


@dataclass(frozen=True)
class Task:
    """One task.

    Attributes:
        name: the ``task`` setting.
        load: the whole task (train and test) for a cell's config.
        encoder: inputs are text for an encoder (``model``, ``mode``, ``pooling``,
            ``max_length`` apply and are cached); False: the task's own feature vectors.
        features: for ``encoder=False``, the ``[N, d]`` train and test features of its data.
        data_per_seed: the data itself is drawn from the cell's seed (not read from files).
        after_training: writes the task's own artifacts after the last epoch, given the
            model, the training inputs and targets and the artifacts folder.
    """

    name: str
    load: Callable[[CellConfig], TaskData]
    encoder: bool = True
    features: Callable[[TaskData], dict[str, torch.Tensor]] | None = None
    data_per_seed: bool = False
    after_training: Callable[[Any, torch.Tensor, torch.Tensor, Path], None] | None = None


def _load_text(config: CellConfig) -> TaskData:
    return load_task(config.task, config.data_dir, none_relations=config.none_relations,
                     train_file=config.train_file, test_file=config.test_file)


def _load_toy2d(config: CellConfig) -> TaskData:
    from trainers.toy2d import load_toy2d

    return load_toy2d(config.seed)


def _toy2d_features(data: TaskData) -> dict[str, torch.Tensor]:
    return {split: torch.tensor([e.features for e in examples], dtype=torch.float32)
            for split, examples in (("train", data.train), ("test", data.test))}


def _toy2d_boundary(model: Any, train_x: torch.Tensor, train_y: torch.Tensor,
                    folder: Path) -> None:
    from trainers.toy2d import write_decision_grid

    write_decision_grid(model, train_x, train_y, folder / "decision_grid.json")


REGISTRY: dict[str, Task] = {
    "rte": Task("rte", _load_text),
    "banking77": Task("banking77", _load_text),
    "fewrel": Task("fewrel", _load_text),
    "custom": Task("custom", _load_text),
    "toy2d": Task("toy2d", _load_toy2d, encoder=False, features=_toy2d_features,
                  data_per_seed=True, after_training=_toy2d_boundary),
}
TASKS: tuple[str, ...] = tuple(REGISTRY)


def task_of(config: CellConfig) -> Task:
    """The registered task of ``config`` (validated configs always have one)."""
    return REGISTRY[config.task]
