"""The training loop of one cell: setup, train, evaluate, checkpoint, report.

Shape (after torchtune's recipes): :func:`train_cell` takes a :class:`CellConfig`, sets up
data, model, optimizer and schedule, optionally resumes from a checkpoint, then trains epoch
after epoch within the budget of :mod:`trainers.budget` (a number of epochs, raised to a
minimum number of optimizer updates, and cut short by early stopping on a validation split).
After each epoch it evaluates, writes a checkpoint (every ``checkpoint_every`` epochs, or every
~10 s when it is 0) and hands the metrics and the checkpoint directory to a :class:`Reporter`
-- the seam through which the orchestrator plugs in Ray Tune and MLflow (this package imports
neither).

Checkpoint/resume story: ``<checkpoint_dir>/state.pt`` holds the model (head, plus encoder in
fine-tune mode), optimizer, scheduler, the epoch just finished, the metric history and the
config. Every source of randomness inside an epoch (data order, dropout, mixing policies) is
re-seeded from ``(seed, epoch)`` at the start of that epoch, so a cell resumed after epoch k
replays epoch k+1 exactly as an uninterrupted run would: on CPU the final metrics are identical.

Metrics after each epoch (training time excludes evaluation): ``accuracy`` and ``macro_f1`` on
the test split (unless ``eval_split == "val"``; with ``best_val`` selection once, after the
last epoch, with the weights of the selected epoch, into that epoch's entry of the history),
``val_accuracy``/``val_macro_f1``/``val_loss``
on the validation split (when there is one), ``train_loss`` (mean over updates), ``updates``
(optimizer updates so far), ``epoch_seconds``, ``examples_per_second`` (training examples of
the cell / epoch_seconds). The last epoch also carries ``final = 1`` and the cell's result
(:func:`trainers.budget.result`: the selected epoch, its test accuracy, update counts,
convergence) with ``test_correct``/``test_examples``, the integer counts behind
``test_accuracy``; the selected epoch's test predictions go to
``<checkpoint_dir>/artifacts/test_predictions.json`` (for per-example paired tests).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from trainers import budget
from trainers.budget import updates_per_batch
from trainers.cache import length_order, pad_batch
from trainers.calibration import calibration
from trainers.config import CellConfig
from trainers.device import hardware_name, pick_device
from trainers.errors import CellError, TrainingDiverged
from trainers.model import CellModel
from trainers.precision import autocast, resolve_precision
from trainers.prepare import PreparedCell, prepare_cell
from trainers.resources import ResourceMeter
from trainers.tasks import task_of
from trainers.updaters import UpdateContext, make_updater

CHECKPOINT_FILE = "state.pt"
DESCRIBED = ("update_path", "encoder_forward", "precision", "data_source", "num_labels",
             "n_train", "n_val", "n_test", "train_subset")
"""Set-up facts a trial reports with its results (:meth:`CellTrainer.describe`), logged as
params of its run; ``train_subset`` also as the run's MLflow dataset input."""
ARTIFACTS_DIR = "artifacts"  # files under <checkpoint_dir>/artifacts/ are logged by trackers
PREDICTIONS_FILE = "test_predictions.json"
NAN_CHECK_EVERY = 32  # steps between host checks of the non-finite-loss flag
CHECKPOINT_SECONDS = 10.0  # checkpoint_every=0: at most one checkpoint per this many seconds


class Reporter(Protocol):
    """Receives each epoch's metrics and the directory holding that epoch's checkpoint.

    A reporter may also have ``describe(info: dict[str, str])``: it is called once, before
    the first epoch, with what the set-up found (:meth:`CellTrainer.describe`)."""

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        """``checkpoint_dir`` is None for epochs without a checkpoint (``checkpoint_every``)."""


@dataclass
class CellResult:
    """What a finished cell returns: its config, per-epoch history and final metrics."""

    config: CellConfig
    history: list[dict[str, float]] = field(default_factory=list)
    hardware: str = ""
    cache_hits: dict[str, bool] = field(default_factory=dict)

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}

    def summary(self) -> dict[str, Any]:
        return {"cell": self.config.cell_name, **self.final, "hardware": self.hardware,
                "epochs_run": len(self.history), "cache_hits": self.cache_hits}


def seed_all(seed: int, device: torch.device) -> None:
    """Seed the CPU generator (and CUDA's on a GPU): what ``torch.manual_seed`` does for the
    devices a cell uses, without its per-call overhead (~1 ms in torch 2.13, which a cell of
    thousands of one-batch epochs paid every epoch)."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of every random draw inside ``epoch`` (data order, dropout, policies)."""
    return (seed * 1_000_003 + epoch * 7_919) % (2**63 - 1)


def linear_schedule(warmup: int, total: int) -> Callable[[int], float]:
    """Linear warmup to 1 over ``warmup`` steps, then linear decay to 0 at ``total``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def build_optimizer(model: CellModel, config: CellConfig) -> torch.optim.AdamW:
    """AdamW with the encoder at ``lr`` and the head (MLP + W) at ``head_lr``.

    Biases and LayerNorm weights get no weight decay (the usual transformer recipe).
    """
    groups: list[dict[str, Any]] = []
    if model.encoder is not None:
        decay, no_decay = [], []
        for name, param in model.encoder.named_parameters():
            (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
        groups += [
            {"params": decay, "lr": config.lr, "weight_decay": config.weight_decay},
            {"params": no_decay, "lr": config.lr, "weight_decay": 0.0},
        ]
    groups.append({"params": model.head_parameters(), "lr": config.head_lr,
                   "weight_decay": config.weight_decay})
    try:
        # Fused AdamW: CUDA, and CPU since torch 2.4. On CPU the per-tensor default took 159 ms
        # of a MiniLM step against 16 ms fused (benchmarks/trainer_throughput.py --profile).
        return torch.optim.AdamW(groups, fused=True)
    except RuntimeError:  # a torch whose fused kernel does not cover this device
        return torch.optim.AdamW(groups, foreach=True)


class CellTrainer:
    """Owns the model, optimizer and data of one cell; :meth:`fit` runs the epochs.

    Args:
        config: the cell.
        prepared: its data (:func:`trainers.prepare.prepare_cell`).
        device: where to train.
        fused: compute frozen-head updates with :mod:`trainers.fused_head` (same draws, same
            gradients up to rounding, ~2-3x fewer CPU cycles) instead of autograd. ``None``:
            wherever it applies (:func:`trainers.updaters.make_updater`).
    """

    def __init__(self, config: CellConfig, prepared: PreparedCell, device: torch.device,
                 fused: bool | None = None) -> None:
        self.config = config
        self.data = prepared
        self.device = device
        torch.manual_seed(config.seed)
        encoder = prepared.encoder.model if prepared.encoder else None
        pooling = prepared.encoder.pooling if prepared.encoder else "cls"
        self.model = CellModel(prepared.input_dim, len(prepared.labels), encoder, pooling,
                               config.mlp_hidden, config.dropout, unpadded=True).to(device)
        self.optimizer = build_optimizer(self.model, config)
        self.n_train = n_train = len(prepared.train_targets)
        self.batches_per_epoch = math.ceil(n_train / config.batch_size)
        self.max_epochs = budget.budget_epochs(config, n_train)
        total = self.batches_per_epoch * updates_per_batch(config) * self.max_epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, linear_schedule(int(config.warmup_ratio * total), total))
        self.history: list[dict[str, float]] = []
        # bf16 autocast per ``precision``; on CPU only around an encoder (trainers.precision)
        self.autocast = autocast(device, config.precision,
                                 enabled=device.type == "cuda" or encoder is not None)
        if isinstance(prepared.train_inputs, Tensor):  # frozen/toy: keep features on device
            self.data.train_inputs = prepared.train_inputs.to(device)
            if prepared.eval_inputs is not None:
                self.data.eval_inputs = prepared.eval_inputs.to(device)
            if prepared.val_inputs is not None:
                self.data.val_inputs = prepared.val_inputs.to(device)
        self.train_targets = prepared.train_targets.to(device)
        # the evaluated splits: name -> (inputs, targets on the device, evaluation order)
        self.splits: dict[str, tuple[Any, Tensor, Tensor]] = {}
        for name, inputs, targets in (("val", self.data.val_inputs, prepared.val_targets),
                                      ("test", self.data.eval_inputs, prepared.eval_targets)):
            if targets is not None:
                self.splits[name] = (inputs, targets.to(device), eval_order(inputs))
        # With best_val selection the test split is evaluated once, at the end, with the
        # weights of the selected epoch (kept in memory whenever an epoch becomes the selected
        # one): testing a fine-tuned encoder at every newly selected epoch cost more than
        # training it (a 20-example validation split re-selects on lower loss most epochs).
        # With the paper's last-epoch protocol the test split is evaluated every epoch.
        self.test_every_epoch = config.selection == "last"
        self.best_model: dict[str, Tensor] | None = None  # weights of the selected epoch
        self.best_pred: Tensor | None = None  # test predictions of the selected epoch
        self.last_pred: Tensor | None = None  # test predictions of the latest epoch
        self.best_probs: Tensor | None = None  # test probabilities of the selected epoch
        self.last_probs: Tensor | None = None  # test probabilities of the latest epoch
        self.context = UpdateContext(config, self.model, self.optimizer, self.scheduler,
                                     self.autocast, len(prepared.labels))
        self.fused = fused
        self.updater = make_updater(self.context, device, fused)
        # select, then refit: the initial weights to start again from; the selection phase's
        # epoch count once the refit phase has begun (:meth:`start_refit`)
        self.initial = snapshot(self.model) if config.refit != "off" else {}
        self.refit_from: int | None = None
        self.n_select = self.n_train

    def describe(self) -> dict[str, str]:
        """What the set-up found, as strings (the keys of :data:`DESCRIBED`): the update path
        (``fused`` or ``autograd``), the encoder's training forward (``unpadded``:
        :mod:`trainers.unpadded`; ``padded``: the encoder's own, also for strategies that mix
        inside it; ``none``: frozen features), the resolved precision, the data source, the
        label count, split sizes and the digest of the training subset."""
        sizes = {f"n_{name}": str(len(targets)) for name, (_, targets, _) in self.splits.items()}
        inside = not self.config.strategy_spec.frozen_ok  # it mixes inside the encoder
        forward = ("none" if self.model.encoder is None else
                   "unpadded" if self.model.unpadded and not inside else "padded")
        return {"update_path": self.updater.path, "encoder_forward": forward,
                "precision": resolve_precision(self.config.precision, self.device),
                "data_source": self.data.source, "num_labels": str(len(self.data.labels)),
                "n_train": str(self.n_train), **sizes,
                "train_subset": self.data.subset_digest}

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": len(self.history),
            "history": self.history,
            "best_pred": self.best_pred.cpu() if self.best_pred is not None else None,
            "best_probs": self.best_probs.cpu() if self.best_probs is not None else None,
            "best_model": self.best_model,
            "initial": self.initial or None,
            "refit_from": self.refit_from,
            "config": json.dumps(self.config.to_dict(), sort_keys=True),
            # No RNG state: train_epoch reseeds every device's generator from (seed, epoch)
            # at the start of each epoch, so a resumed epoch draws what the original would have
            # (tests/test_loop.py's resume equivalence); older checkpoints' torch_rng is ignored.
        }

    def save(self, directory: Path) -> Path:
        """Write ``state.pt`` atomically into ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
        os.close(fd)
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, directory / CHECKPOINT_FILE)
        return directory

    def load(self, directory: Path) -> None:
        """Restore from ``directory/state.pt``; the config's cell must match."""
        # To CPU first: load_state_dict copies into the live tensors on the device, so a GPU
        # never holds a second full copy of model and optimizer state.
        state = torch.load(directory / CHECKPOINT_FILE, map_location="cpu",
                           weights_only=True)
        # Fields a checkpoint predates take their defaults; precision is compared as resolved
        # on this device (``auto`` and ``bf16`` are the same run on a bf16-native machine).
        saved = {**CellConfig().to_dict(), **json.loads(state["config"])}
        mine = self.config.to_dict()
        volatile = {"data_dir", "cache_dir", "device", "train_file", "test_file", "precision",
                    "checkpoint_every", "eval_batch_size"}
        diff = sorted(k for k in mine if k not in volatile and saved[k] != mine[k])
        if (resolve_precision(saved["precision"], self.device)
                != resolve_precision(mine["precision"], self.device)):
            diff.append("precision")
        if diff:
            raise CellError(f"checkpoint in {directory} belongs to another cell (differs in "
                            f"{', '.join(diff)})")
        self.history = list(state["history"])
        if state.get("initial") is not None:
            self.initial = {k: v.to(self.device) for k, v in state["initial"].items()}
        if state.get("refit_from") is not None:  # resumed in the refit phase: its data, budget
            self.start_refit(int(state["refit_from"]))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.history = list(state["history"])
        best = state.get("best_pred")
        self.best_pred = best.to(self.device) if best is not None else None
        probs = state.get("best_probs")  # absent from checkpoints that predate it
        self.best_probs = probs.to(self.device) if probs is not None else None
        kept = state.get("best_model")  # absent from checkpoints that tested every selection
        self.best_model = ({k: v.to(self.device) for k, v in kept.items()}
                           if kept is not None else None)

    # ------------------------------------------------------------------ data
    def batches(self, epoch: int) -> Iterator[tuple[Any, Tensor]]:
        """Shuffled training batches of epoch ``epoch`` (order seeded by (seed, epoch))."""
        gen = torch.Generator().manual_seed(epoch_seed(self.config.seed, epoch))
        order = torch.randperm(len(self.train_targets), generator=gen)
        on_device = order.to(self.device)  # one copy per epoch: no per-batch copy that waits
        for start in range(0, len(order), self.config.batch_size):
            stop = start + self.config.batch_size
            yield (self.inputs(self.data.train_inputs, order[start:stop]),
                   self.train_targets[on_device[start:stop]])

    def inputs(self, source: Any, idx: Tensor) -> Any:
        if isinstance(source, Tensor):
            # non_blocking: a blocking host-to-GPU copy waits for all queued GPU work
            return source[idx.to(source.device, non_blocking=True)]
        batch = pad_batch([source[i] for i in idx.tolist()], self.data.pad_id)
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    # ------------------------------------------------------------------ one update
    def update(self, inputs: Any, targets: Tensor) -> Tensor:
        """One optimizer update on a batch (:class:`trainers.updaters.Updater`); its loss."""
        return self.updater.step(inputs, targets)

    # ------------------------------------------------------------------ epochs
    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One epoch of training; returns train_loss, epoch_seconds, examples_per_second."""
        seed_all(epoch_seed(self.config.seed, epoch), self.device)
        self.model.train()
        repeats = updates_per_batch(self.config)
        # Every update's loss stays on the device; the host looks at them every
        # NAN_CHECK_EVERY batches and at the end (no per-step synchronisation).
        losses = torch.empty(self.batches_per_epoch * repeats, device=self.device)
        updates = 0
        self._sync()
        start = time.perf_counter()
        for step, (inputs, targets) in enumerate(self.batches(epoch), start=1):
            for _ in range(repeats):
                losses[updates] = self.update(inputs, targets)
                updates += 1
            if step % NAN_CHECK_EVERY == 0:
                self._check_finite(losses[:updates], repeats, epoch)
        self._sync()
        seconds = time.perf_counter() - start
        self._check_finite(losses[:updates], repeats, epoch)
        n = len(self.train_targets)
        return {"train_loss": float(losses[:updates].mean()) if updates else 0.0,
                "epoch_seconds": seconds,
                "examples_per_second": n / seconds if seconds > 0 else float("inf")}

    def _check_finite(self, losses: Tensor, repeats: int, epoch: int) -> None:
        """Raise :class:`TrainingDiverged` naming the first batch whose loss is NaN or inf."""
        bad = (~torch.isfinite(losses)).nonzero()
        if len(bad):
            bad_step = int(bad[0]) // repeats + 1
            raise TrainingDiverged(
                f"non-finite loss (NaN or inf) in {self.config.cell_name} at epoch {epoch}, "
                f"step {bad_step}; lower the learning rate or pick a bounded loss")

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.no_grad()
    def predict(self, split: str) -> tuple[Tensor, float, Tensor]:
        """Predicted class of every example of ``split`` (``val`` or ``test``), in the split's
        order (on the device), the mean cross-entropy of the scores, and the class
        probabilities (``[n, c]`` float32, same order).

        Token inputs are run in order of length (:func:`eval_order`), so each batch is padded
        to little more than its own rows; predictions go back to their places.
        """
        inputs, targets, order = self.splits[split]
        self.model.eval()
        pred = torch.empty_like(targets)
        probs = torch.empty((len(targets), len(self.data.labels)), device=self.device)
        loss = torch.zeros((), device=self.device)
        size = self.config.eval_batch_size
        for start in range(0, len(order), size):
            idx = order[start : start + size]
            on_device = idx.to(self.device)
            with self.autocast:
                scores = self.model.scores(self.model.represent(self.inputs(inputs, idx)))
            pred[on_device] = scores.argmax(dim=-1)
            probs[on_device] = torch.softmax(scores.float(), dim=-1)
            loss += F.cross_entropy(scores.float(), targets[on_device], reduction="sum")
        return pred, float(loss) / max(1, len(order)), probs

    def evaluate(self, splits: tuple[str, ...] = ("val", "test")) -> dict[str, float]:
        """Accuracy and macro-F1 on the test split (``accuracy``, ``macro_f1``) and on the
        validation split (``val_accuracy``, ``val_macro_f1``, ``val_loss``), where present.
        Keeps this epoch's test predictions and probabilities in ``self.last_pred`` and
        ``self.last_probs``."""
        out: dict[str, float] = {}
        n_classes = len(self.data.labels)
        for split in (s for s in splits if s in self.splits):
            targets = self.splits[split][1]
            pred, loss, probs = self.predict(split)
            prefix = "val_" if split == "val" else ""
            out[f"{prefix}accuracy"] = float((pred == targets).float().mean())
            out[f"{prefix}macro_f1"] = macro_f1(pred, targets, n_classes)
            if split == "val":
                out["val_loss"] = loss
            else:
                self.last_pred, self.last_probs = pred, probs
                out.update(calibration(probs, targets))  # ece, nll, brier
        return out

    def fit(self, reporter: Reporter | None, checkpoint_dir: Path,
            log: Callable[[str], None] = print) -> list[dict[str, float]]:
        """Train until the budget ends or early stopping stops the cell (a no-op for a
        checkpoint whose last epoch was final); returns the history."""
        if self.history and self.history[-1].get("final"):
            return self.history
        last_save = time.monotonic()
        best = budget.BestEpoch(self.history)
        meter = ResourceMeter(self.device)
        epoch = len(self.history)
        while epoch < self.max_epochs:
            epoch += 1
            meter.start()
            refitting = self.refit_from is not None
            metrics = {"epoch": float(epoch), **self.train_epoch(epoch),
                       **self.evaluate(("val",)), "updates": float(self.updates_after(epoch)),
                       "max_epochs": float(self.max_epochs)}
            self.history.append(metrics)
            if refitting:
                metrics["refit"] = 1.0
            else:
                best.add(metrics)
            selected = (best.selected if self.config.selection == "best_val" and not refitting
                        else len(self.history) - 1) == epoch - 1
            if "test" in self.splits and (self.test_every_epoch or refitting):
                if not refitting or epoch == self.max_epochs:
                    metrics.update(self.evaluate(("test",)))
                    self.best_pred, self.best_probs = self.last_pred, self.last_probs
            elif "test" in self.splits and selected:
                self.best_model = snapshot(self.model)
            final = epoch == self.max_epochs or (not refitting and budget.should_stop(
                self.config, self.history, self.n_train, best))
            if final and self.best_model is not None and not refitting:
                self.test_selected(self.history[best.selected])
            if final and not refitting and self.config.refit != "off":
                self.start_refit()  # select, then refit: train on the whole subset
                final = False
            metrics.update(meter.stop())  # this epoch's own use (trainers.resources)
            if final:
                metrics.update(self.finish(checkpoint_dir))
            every = self.config.checkpoint_every
            saved = final or (epoch % every == 0 if every else
                              time.monotonic() - last_save >= CHECKPOINT_SECONDS)
            if saved:
                self.save(checkpoint_dir)
                last_save = time.monotonic()
            log(format_epoch(self.config, metrics, self.max_epochs))
            if reporter is not None:
                reporter.report(dict(metrics), checkpoint_dir if saved else None)
            if final:
                break
        return self.history

    def updates_after(self, epoch: int) -> int:
        """Optimizer updates made by the end of ``epoch`` (both phases of a refit cell)."""
        if self.refit_from is None:
            return epoch * budget.updates_per_epoch(self.config, self.n_train)
        selecting = self.refit_from * budget.updates_per_epoch(self.config, self.n_select)
        return selecting + (epoch - self.refit_from) * budget.updates_per_epoch(
            self.config, self.n_train)

    def start_refit(self, selecting: int | None = None) -> None:
        """Select, then refit (``refit`` setting): after the selection phase (its first
        ``selecting`` epochs, default all so far) train again from the initial weights on the
        whole subset (training + validation examples) for as long as the selected epoch
        trained: as many epochs (``refit=epochs``) or as many optimizer updates, rounded up
        to whole epochs (``refit=updates``); :func:`trainers.budget.refit_epochs`."""
        self.refit_from = len(self.history) if selecting is None else selecting
        chosen = budget.select(self.history[: self.refit_from], self.config.selection)
        val_inputs, val_targets, _ = self.splits.pop("val")
        if isinstance(self.data.train_inputs, Tensor):
            self.data.train_inputs = torch.cat([self.data.train_inputs, val_inputs])
        else:
            self.data.train_inputs = list(self.data.train_inputs) + list(val_inputs)
        self.train_targets = torch.cat([self.train_targets, val_targets])
        self.n_select, self.n_train = self.n_train, len(self.train_targets)
        self.batches_per_epoch = math.ceil(self.n_train / self.config.batch_size)
        length = budget.refit_epochs(self.config, chosen + 1, self.n_select, self.n_train)
        self.max_epochs = self.refit_from + length
        self.model.load_state_dict(self.initial)
        self.optimizer = build_optimizer(self.model, self.config)
        total = self.batches_per_epoch * updates_per_batch(self.config) * length
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, linear_schedule(int(self.config.warmup_ratio * total), total))
        self.context = UpdateContext(self.config, self.model, self.optimizer, self.scheduler,
                                     self.autocast, len(self.data.labels))
        self.updater = make_updater(self.context, self.device, self.fused)

    def test_selected(self, selected: dict[str, float]) -> None:
        """Evaluate the test split with the selected epoch's weights (``best_model``), add its
        metrics to that epoch's entry ``selected``, keep its predictions; the model goes back
        to the last epoch's weights (what the checkpoint holds)."""
        assert self.best_model is not None
        last = snapshot(self.model)
        self.model.load_state_dict(self.best_model)
        selected.update(self.evaluate(("test",)))
        self.best_pred, self.best_probs = self.last_pred, self.last_probs
        self.model.load_state_dict(last)

    def finish(self, checkpoint_dir: Path) -> dict[str, float]:
        """The cell's result (:func:`trainers.budget.result`) with the integer counts behind
        its test accuracy; writes the selected epoch's test predictions as an artifact."""
        if self.refit_from is None:
            out = {"final": 1.0, **budget.result(self.config, self.history, self.n_train)}
        else:
            out = {"final": 1.0, **budget.refit_result(
                self.config, self.history, self.refit_from, self.n_select, self.n_train)}
        if self.best_pred is not None:
            gold = self.splits["test"][1]
            out["test_correct"] = float((self.best_pred == gold).sum())
            out["test_examples"] = float(len(gold))
            folder = checkpoint_dir / ARTIFACTS_DIR
            folder.mkdir(parents=True, exist_ok=True)
            (folder / PREDICTIONS_FILE).write_text(json.dumps({
                "split": "test", "selected_epoch": int(out["selected_epoch"]),
                "gold": gold.tolist(), "pred": self.best_pred.tolist(),
                **({"probs": torch.round(self.best_probs.cpu(), decimals=5).tolist()}
                   if self.best_probs is not None else {})}))
        after = task_of(self.config).after_training
        if after is not None:  # the task's own artifacts (toy2d: its decision boundary)
            after(self.model, self.data.train_inputs, self.train_targets,
                  checkpoint_dir / ARTIFACTS_DIR)
        return out


def snapshot(model: torch.nn.Module) -> dict[str, Tensor]:
    """A copy of ``model``'s weights (on its device)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def eval_order(inputs: Any) -> Tensor:
    """Evaluation order: by token length for tokenized rows (stable), else as stored."""
    if isinstance(inputs, Tensor):
        return torch.arange(len(inputs))
    return torch.tensor(length_order(inputs), dtype=torch.long)


def macro_f1(pred: Tensor, gold: Tensor, num_classes: int) -> float:
    """Macro-averaged F1 over the classes that occur in gold or predictions."""
    tp = torch.bincount(gold[pred == gold], minlength=num_classes).float()
    pred_count = torch.bincount(pred, minlength=num_classes).float()
    gold_count = torch.bincount(gold, minlength=num_classes).float()
    present = (pred_count + gold_count) > 0
    f1 = 2 * tp / (pred_count + gold_count).clamp_min(1)
    return float(f1[present].mean()) if bool(present.any()) else 0.0


def format_epoch(config: CellConfig, metrics: dict[str, float], max_epochs: int) -> str:
    scores = " ".join(f"{key}={metrics[key]:.4f}" for key in ("val_accuracy", "accuracy")
                      if key in metrics)
    line = (f"[{config.cell_name}] epoch {int(metrics['epoch'])}/{max_epochs} {scores} "
            f"train_loss={metrics['train_loss']:.4f} updates={int(metrics['updates'])} "
            f"epoch_seconds={metrics['epoch_seconds']:.2f} "
            f"examples/s={metrics['examples_per_second']:.1f}")
    if metrics.get("final"):
        line += f" | selected epoch {int(metrics['selected_epoch'])}"
        if "test_accuracy" in metrics:
            line += f", test_accuracy={metrics['test_accuracy']:.4f}"
        if "converged" in metrics:
            line += ", converged" if metrics["converged"] else ", NOT converged"
    return line


def train_cell(
    config: CellConfig,
    reporter: Reporter | None = None,
    checkpoint_dir: str | Path | None = None,
    resume_from: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> CellResult:
    """Train and evaluate one cell.

    Args:
        config: the cell; validated here.
        reporter: gets each epoch's metrics and checkpoint directory.
        checkpoint_dir: where ``state.pt`` is written after each epoch (a temporary directory
            when omitted).
        resume_from: a directory holding ``state.pt`` of this same cell; training continues
            after its last epoch.
        log: where the one-line-per-epoch progress goes.
    """
    config.validate()
    device = pick_device(config.device)
    prepared = prepare_cell(config, device)
    threads = torch.get_num_threads()
    if device.type == "cpu" and isinstance(prepared.train_inputs, Tensor):
        # Frozen features / toy inputs train a linear layer or small MLP: far too small for
        # intra-op threads. On a busy 2-core machine two threads made a frozen banking77 epoch
        # 20x slower and a toy cell ~150x slower than one thread (measured).
        torch.set_num_threads(1)
    try:
        trainer = CellTrainer(config, prepared, device)
        if resume_from is not None and (Path(resume_from) / CHECKPOINT_FILE).exists():
            trainer.load(Path(resume_from))
            log(f"[{config.cell_name}] resumed after epoch {len(trainer.history)}")
        result = CellResult(config, hardware=hardware_name(device, config.precision),
                            cache_hits=prepared.cache_hits)
        describe = getattr(reporter, "describe", None)
        if describe is not None:
            describe(trainer.describe())
        if checkpoint_dir is None:
            with tempfile.TemporaryDirectory(prefix="batchmixup-ckpt-") as tmp:
                result.history = trainer.fit(reporter, Path(tmp), log)
        else:
            result.history = trainer.fit(reporter, Path(checkpoint_dir), log)
    finally:
        torch.set_num_threads(threads)
    return result
