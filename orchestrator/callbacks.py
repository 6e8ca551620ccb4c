"""Driver-side Tune callbacks: MLflow tracking and live progress."""

from __future__ import annotations

import math
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from ray.tune import Callback

from orchestrator.tracking import CellRun, SweepTracker
from trainers.loop import DESCRIBED

_SCRATCH: list[Path] = []
def artifact_scratch() -> Path:
    """This driver's folder for artifact copies waiting in the upload queue.

    Removed when the process exits, so copies whose upload never happened (the store stayed
    down past ``--flush-timeout``) do not pile up in the temp directory.
    """
    if not _SCRATCH:
        import atexit
        import shutil
        import tempfile

        _SCRATCH.append(Path(tempfile.mkdtemp(prefix="batchmixup-artifacts-")))
        atexit.register(shutil.rmtree, _SCRATCH[0], ignore_errors=True)
    return _SCRATCH[0]


def spec(trial: Any) -> dict[str, Any]:
    """The sweep's description of a trial: cell config, name, arm, params."""
    return trial.config["trial"]


def cell_of(trial: Any) -> str:
    return spec(trial)["name"]


class MlflowCellCallback(Callback):
    """Turns Tune events into MLflow writes through one :class:`SweepTracker` (see tracking.py)."""

    def __init__(self, tracker: SweepTracker, skip: frozenset[str] = frozenset()) -> None:
        """``skip``: cells already FINISHED in MLflow that a resumed Tune run may restart
        (see :func:`orchestrator.trainable.cell_trainable`); their runs are left alone."""
        self.tracker = tracker
        self.skip = skip
        self.outcomes: dict[str, str] = {}

    def _attach(self, trial: Any) -> None:
        cfg = spec(trial)
        cell = cfg["cell"]
        tags = {"task": cell["task"], "ratio": str(float(cell["ratio"])),
                "strategy": cell["strategy"], "arm": cfg["arm"], "seed": str(cell["seed"]),
                "fingerprint": cfg.get("fingerprint", ""), "ray_trial_id": trial.trial_id,
                **cfg.get("tags", {})}
        self.tracker.attach(cell_of(trial), int(cell["epochs"]), tags, cfg["params"])

    def _state(self, trial: Any) -> tuple[str, CellRun]:
        """The trial's cell name and run state, attaching the run on first sight."""
        cell = cell_of(trial)
        if cell not in self.tracker.cells:
            self._attach(trial)
        return cell, self.tracker.cells[cell]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if cell_of(trial) not in self.skip:
            self._attach(trial)

    def on_trial_restore(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if cell_of(trial) not in self.skip:
            self._attach(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        if cell_of(trial) in self.skip:
            return
        cell, state = self._state(trial)
        if "hardware" in result and not state.hardware_tagged:
            self.tracker.set_tag(cell, "hardware", str(result["hardware"]))
            learnt = {k: result.get(k) for k in DESCRIBED}
            if spec(trial)["cell"].get("precision") != "auto":
                learnt.pop("precision")  # logged as configured at the start
            self.tracker.log_params(cell, {k: str(v) for k, v in learnt.items() if v})
            if learnt.get("train_subset"):  # which examples it trained on, as MLflow shows it
                self.tracker.log_subset(cell, str(learnt["train_subset"]),
                                        str(learnt.get("data_source") or ""))
            if result.get("ray_gpu_ids"):  # the GPU ids Ray assigned the trial (trainable.py)
                self.tracker.set_tag(cell, "ray_gpu_ids", str(result["ray_gpu_ids"]))
            state.hardware_tagged = True
        if result.get("failure_reason"):
            state.failure = str(result["failure_reason"])
        elif "epoch" in result and not math.isnan(float(result.get("epoch", math.nan))):
            # epochs sent together (trainable.py), logged together
            self.tracker.log_epochs(cell, [*result.get("earlier_epochs", []), result])

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if cell_of(trial) in self.skip:
            self.outcomes[cell_of(trial)] = "FINISHED"
            return
        cell, state = self._state(trial)
        if state.failure is None and trial.checkpoint is not None:
            with trial.checkpoint.as_directory() as folder:
                artifacts = Path(folder) / "artifacts"
                if artifacts.is_dir():
                    # copy out: the checkpoint folder may be temporary, and the upload is
                    # queued; the copy is removed once uploaded, or when the driver exits
                    import shutil
                    import tempfile

                    keep = Path(tempfile.mkdtemp(prefix="cell-", dir=artifact_scratch()))
                    shutil.copytree(artifacts, keep, dirs_exist_ok=True)
                    self.tracker.log_artifacts(cell, keep, remove_after=True)
        self.outcomes[cell] = self.tracker.finish(cell, state.failure)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if cell_of(trial) in self.skip:
            return
        cell, _ = self._state(trial)
        self.outcomes[cell] = self.tracker.finish(cell, _error_line(trial))

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self.tracker.queue.pending:
            self.tracker.queue.flush()

    def get_state(self) -> dict | None:
        """Called by Tune while it saves its experiment state (what ``--resume`` restores),
        before that state reaches storage: wait until the MLflow writes of every result
        processed so far are done, so no saved result can have its epoch missing in MLflow
        after a driver crash. Returns at once while the store is failing (as before, those
        writes wait in the queue). Nothing to save: returns None."""
        self.tracker.queue.wait_idle()
        return None


def _error_line(trial: Any) -> str:
    """The last line of a trial's error (Tune keeps it in error.txt)."""
    text = ""
    path = getattr(trial, "error_file", None) or ""
    for candidate in (path, getattr(trial, "pickled_error_file", None) or ""):
        if candidate and Path(candidate).is_file() and candidate.endswith(".txt"):
            text = Path(candidate).read_text(errors="replace")
            break
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else "trial process failed"
    return f"trial failed after {trial.num_failures} attempt(s): {last}"[:2000]


class ProgressCallback(Callback):
    """Live progress: a line per epoch result, ``cell epoch e/E: ...`` with E the cell's
    epoch budget (for cells of more than ``every_epoch_up_to`` epochs at most one line every
    ``epoch_every`` seconds, and always the final one), and a status line every ``every``
    seconds."""

    def __init__(self, sweep: str, total: int, every: float = 15.0,
                 skip: frozenset[str] = frozenset(), epoch_every: float = 5.0,
                 every_epoch_up_to: int = 50) -> None:
        self.sweep = sweep
        self.epoch_every = epoch_every
        self.every_epoch_up_to = every_epoch_up_to
        self.total = total
        self.skip = skip
        self.every = every
        self.start = time.monotonic()
        self.last = 0.0
        self.done: set[str] = set()
        self.failed: set[str] = set()
        self.running: set[str] = set()
        self.printed: dict[str, float] = {}  # cell -> when its last epoch line was printed

    def _status(self) -> str:
        elapsed = time.monotonic() - self.start
        finished = len(self.done) + len(self.failed)
        eta = ""
        if finished:
            remaining = elapsed / finished * (self.total - finished)
            eta = f", ~{_clock(remaining)} left"
        return (f"[{self.sweep}] {finished}/{self.total} cells ended ({len(self.done)} ok, "
                f"{len(self.failed)} failed), {len(self.running)} running, "
                f"elapsed {_clock(elapsed)}{eta}")

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if cell_of(trial) in self.skip:
            print(f"  {cell_of(trial)}: already FINISHED in MLflow, not trained again",
                  flush=True)
            return
        self.running.add(cell_of(trial))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        cell = cell_of(trial)
        if result.get("failure_reason"):
            print(f"  {cell}: FAILED: {result['failure_reason']}", flush=True)
            return
        if "epoch" not in result:
            return
        now = time.monotonic()
        final = bool(result.get("final"))
        budget = int(result.get("max_epochs", spec(trial)["cell"]["epochs"]))
        if (budget > self.every_epoch_up_to and not final
                and now - self.printed.get(cell, -math.inf) < self.epoch_every):
            return  # cells of many tiny epochs: one line per epoch_every seconds
        self.printed[cell] = now
        scores = " ".join(f"{name}={result[key]:.4f}" for key, name in
                          (("val_accuracy", "val_acc"), ("accuracy", "acc")) if key in result)
        line = (f"  {cell} epoch {int(result['epoch'])}/{budget}: {scores} "
                f"loss={result.get('train_loss', float('nan')):.4f} "
                f"updates={int(result.get('updates', 0))} "
                f"{result.get('epoch_seconds', 0.0):.2f}s")
        if final:
            line += f" | final: selected epoch {int(result.get('selected_epoch', 0))}"
            if "test_accuracy" in result:
                line += f", test acc {result['test_accuracy']:.4f}"
            if "converged" in result:
                line += ", converged" if result["converged"] else ", NOT converged"
        print(line, flush=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        cell = cell_of(trial)
        if cell in self.skip:
            return
        self.running.discard(cell)
        failed = trial.last_result.get("failure_reason") if trial.last_result else None
        (self.failed if failed else self.done).add(cell)
        print(self._status(), flush=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        cell = cell_of(trial)
        self.running.discard(cell)
        self.failed.add(cell)
        print(f"  {cell}: trial errored ({trial.num_failures} failures)", flush=True)
        print(self._status(), flush=True)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        print(f"  {cell_of(trial)}: worker failed, retrying from its last checkpoint "
              f"(failure {trial.num_failures})", flush=True)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            print(self._status(), flush=True)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s"


def summary_table(rows: list[dict[str, Any]]) -> str:
    """Terminal table per task × ratio × arm: the result accuracy (test accuracy at the
    selected epoch, or the selected validation accuracy of a validation-only sweep) as
    mean±std, mean optimizer updates, converged cells and mean epoch seconds."""
    groups: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        key = (row["task"], row["ratio"], row["arm"])
        if row.get("status") == "FINISHED" and not math.isnan(row.get("accuracy", math.nan)):
            groups[key]["acc"].append(row["accuracy"] * 100)
            groups[key]["sec"].append(row["epoch_seconds"])
            groups[key]["upd"].append(row.get("updates", math.nan))
            if not math.isnan(row.get("converged", math.nan)):
                groups[key]["conv"].append(row["converged"])
        groups[key]["n"].append(1.0)
    metric = "val acc %" if any(r.get("metric") == "val" for r in rows) else "test acc %"
    lines = [f"{'task':<10} {'ratio':>6} {'strategy':<22} {metric + ' (mean±std, n)':<28} "
             f"{'updates':>8} {'converged':>9} {'epoch s':>8}"]
    for (task, ratio, arm), values in sorted(groups.items(),
                                             key=lambda kv: (kv[0][0], -kv[0][1], kv[0][2])):
        acc, sec, conv = values["acc"], values["sec"], values["conv"]
        if acc:
            std = statistics.stdev(acc) if len(acc) > 1 else 0.0
            text = f"{statistics.mean(acc):6.2f} ± {std:5.2f} ({len(acc)}/{len(values['n'])})"
            secs = f"{statistics.mean(sec):8.2f}"
            upd = f"{statistics.mean(values['upd']):8.0f}"
            done = f"{int(sum(conv))}/{len(conv)}" if conv else "—"
        else:
            text, secs, upd, done = f"— (0/{len(values['n'])})", "—", "—", "—"
        lines.append(f"{task:<10} {ratio:>6g} {arm:<22} {text:<28} {upd:>8} {done:>9} "
                     f"{secs:>8}")
    return "\n".join(lines)
