"""The training budget of a cell: how long it trains, which epoch it reports, whether it converged.

A comparison of strategies is fair only when every arm had a budget a reviewer would accept
(Melis, Dyer & Blunsom 2018: well-tuned, well-trained baselines erase many reported gains).
Epochs are not that budget here: paper-faithful mixup (Sun et al. 2020; the paper's n = 15)
makes ``mix_samples`` optimizer updates per batch, so ten epochs are 40 updates for ``none`` at
1 % of BANKING77 and 600 for mixup. The policy, in three settings of
:class:`~trainers.config.CellConfig`:

* ``min_updates``: every cell makes at least this many optimizer updates whatever the ratio
  and strategy; its epoch budget is raised to fit them (:func:`budget_epochs`), and early
  stopping waits for them (:func:`min_epochs`).
* ``selection``: ``last`` reports the last epoch (the paper's protocol); ``best_val`` reports
  the epoch with the best score on a validation split carved from the training subset
  (:func:`trainers.data.validation_split`; the few-shot practice of Perez, Kiela & Cho 2021:
  validation data comes out of the training examples), never on test (:func:`select`).
* ``refit``: select, then refit (the few-shot practice when data is scarce: the validation
  split only chooses how long to train, then every example trains): after the ``best_val``
  selection phase the cell trains again from its initial weights on the whole subset for the
  selected length (:func:`refit_epochs`) and reports that model's test metrics
  (:func:`refit_result`). ``off`` (default): the selected epoch's model is the result.
* ``patience``: with ``best_val``, stop once ``patience`` epochs in a row did not beat the best
  score (:func:`should_stop`). A cell whose best epoch is at least ``patience`` epochs before
  its last is *converged* (:func:`converged`): its validation score had stopped improving.

Improvement means a higher validation accuracy: the patience counts epochs since the first
epoch that reached the best accuracy, so a validation loss that keeps creeping down on a
plateau of accuracy does not keep a cell training. The reported epoch is, among the epochs
with the best accuracy, the one with the lowest validation loss (a small validation split makes
such ties common), the earliest on equal losses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from trainers.config import CellConfig

Metrics = dict[str, float]


def updates_per_batch(config: CellConfig) -> int:
    """Optimizer updates per mini-batch, as the strategy declares them (paper-faithful mixup:
    ``mix_samples``; most strategies: 1)."""
    return config.strategy_spec.updates_per_batch(config)


def updates_per_epoch(config: CellConfig, n_train: int) -> int:
    """Optimizer updates in one epoch over ``n_train`` training examples."""
    return math.ceil(n_train / config.batch_size) * updates_per_batch(config)


def min_epochs(config: CellConfig, n_train: int) -> int:
    """Epochs needed for ``min_updates`` updates; early stopping never stops before them."""
    if config.min_updates <= 0:
        return 1
    return max(1, math.ceil(config.min_updates / updates_per_epoch(config, n_train)))


def budget_epochs(config: CellConfig, n_train: int) -> int:
    """The most epochs the cell may train: ``epochs``, raised to fit ``min_updates`` plus a
    ``patience`` window after them (so convergence can be observed)."""
    if config.min_updates <= 0:
        return config.epochs
    return max(config.epochs, min_epochs(config, n_train) + config.patience)


def score(metrics: Metrics) -> tuple[float, float]:
    """The selection score of one epoch: ``(val_accuracy, -val_loss)``, higher is better."""
    return (metrics["val_accuracy"], -metrics.get("val_loss", 0.0))


def select(history: Sequence[Metrics], selection: str) -> int:
    """Index into ``history`` of the reported epoch: the last one, or (``best_val``) among
    the epochs with the best validation accuracy the one with the lowest validation loss,
    the earliest on ties."""
    if selection == "last" or not history:
        return len(history) - 1
    best = 0
    for i, metrics in enumerate(history):
        if score(metrics) > score(history[best]):
            best = i
    return best


def epochs_since_best(history: Sequence[Metrics]) -> int:
    """Epochs trained after the first epoch that reached the best validation accuracy (0
    when the last epoch improved it)."""
    accuracies = [metrics["val_accuracy"] for metrics in history]
    return len(history) - 1 - accuracies.index(max(accuracies))


class BestEpoch:
    """:func:`select` (``best_val``) and :func:`epochs_since_best` of a growing history, kept up
    to date in O(1) per epoch (a cell of thousands of tiny epochs would otherwise rescan its
    whole history every epoch)."""

    def __init__(self, history: Sequence[Metrics] = ()) -> None:
        self.epochs = 0
        self.selected = -1  # index of the best-scoring epoch, earliest on ties
        self.first_best = -1  # index of the first epoch at the best validation accuracy
        self._best: Metrics = {}
        for metrics in history:
            self.add(metrics)

    def add(self, metrics: Metrics) -> None:
        index, self.epochs = self.epochs, self.epochs + 1
        if "val_accuracy" not in metrics:
            return
        if self.selected < 0 or score(metrics) > score(self._best):
            if self.first_best < 0 or metrics["val_accuracy"] > self._best["val_accuracy"]:
                self.first_best = index
            self.selected, self._best = index, metrics

    @property
    def since_best(self) -> int:
        return self.epochs - 1 - self.first_best


def should_stop(config: CellConfig, history: Sequence[Metrics], n_train: int,
                best: BestEpoch | None = None) -> bool:
    """Early stopping: ``patience`` epochs without a better validation score, once the cell
    has made its ``min_updates``. ``best``: the history's :class:`BestEpoch`, if kept."""
    if config.selection != "best_val" or config.patience <= 0:
        return False
    if len(history) < min_epochs(config, n_train):
        return False
    since = best.since_best if best is not None else epochs_since_best(history)
    return since >= config.patience


def converged(config: CellConfig, history: Sequence[Metrics]) -> bool | None:
    """Whether the validation score had stopped improving for ``patience`` epochs by the end;
    None when the policy cannot tell (no early stopping, hence no stated window)."""
    if config.selection != "best_val" or config.patience <= 0 or not history:
        return None
    return epochs_since_best(history) >= config.patience


def refit_epochs(config: CellConfig, selected_epoch: int, n_select: int, n_all: int) -> int:
    """Epochs of the refit phase: the selected epoch count (``refit=epochs``), or the epochs
    on all ``n_all`` subset examples that make at least the selected epoch's optimizer updates
    on the ``n_select`` training examples of the selection phase (``refit=updates``)."""
    if config.refit == "epochs":
        return selected_epoch
    updates = selected_epoch * updates_per_epoch(config, n_select)
    return max(1, math.ceil(updates / updates_per_epoch(config, n_all)))


def refit_result(config: CellConfig, history: Sequence[Metrics], selecting: int,
                 n_select: int, n_all: int) -> Metrics:
    """The result of a refit cell: the selection phase's :func:`result` (its first
    ``selecting`` epochs: selected epoch and updates, convergence, validation scores), with
    its selected model's test metrics kept as ``best_val_test_*``, and the refit model's test
    metrics as the cell's ``test_*``; ``refit_epochs``/``refit_updates`` (the refit phase's
    length), ``updates`` (both phases)."""
    out = result(config, history[:selecting], n_select)
    for key in [k for k in out if k.startswith("test_")]:
        out[f"best_val_{key}"] = out.pop(key)
    last = history[-1]
    refit = len(history) - selecting
    out.update({"refit_epochs": float(refit),
                "refit_updates": float(refit * updates_per_epoch(config, n_all)),
                "updates": float(selecting * updates_per_epoch(config, n_select)
                                 + refit * updates_per_epoch(config, n_all))})
    if "accuracy" in last:
        out["test_accuracy"], out["test_macro_f1"] = last["accuracy"], last["macro_f1"]
        for key in ("ece", "nll", "brier"):
            if key in last:
                out[f"test_{key}"] = last[key]
    return out


def result(config: CellConfig, history: Sequence[Metrics], n_train: int) -> Metrics:
    """The cell's result, logged once with its last epoch.

    ``selected_epoch`` and ``selected_updates`` (where the reported metrics come from),
    ``updates`` (made in all), ``stopped_early`` (0/1), ``converged`` (0/1, absent when not
    assessed), and the metrics of the selected epoch: ``test_accuracy``/``test_macro_f1``
    and the calibration ``test_ece``/``test_nll``/``test_brier`` (when the test split was
    evaluated) and ``selected_val_accuracy``/``selected_val_loss``
    (when there is a validation split).
    """
    i = select(history, config.selection)
    chosen = history[i]
    per_epoch = updates_per_epoch(config, n_train)
    out: Metrics = {
        "selected_epoch": float(i + 1),
        "selected_updates": float((i + 1) * per_epoch),
        "updates": float(len(history) * per_epoch),
        "stopped_early": float(len(history) < budget_epochs(config, n_train)),
    }
    done = converged(config, history)
    if done is not None:
        out["converged"] = float(done)
    if "accuracy" in chosen:
        out["test_accuracy"] = chosen["accuracy"]
        out["test_macro_f1"] = chosen["macro_f1"]
        for key in ("ece", "nll", "brier"):  # trainers.calibration, same epoch
            if key in chosen:
                out[f"test_{key}"] = chosen[key]
    if "val_accuracy" in chosen:
        out["selected_val_accuracy"] = chosen["val_accuracy"]
        out["selected_val_loss"] = chosen.get("val_loss", math.nan)
    return out
