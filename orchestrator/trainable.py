"""The Ray Tune function trainable: runs :func:`trainers.loop.train_cell` for one cell.

Each epoch the trainer writes its checkpoint and this module reports the epoch's metrics to
Tune together with that checkpoint. When Tune restores the trial (a retry after the worker
died, or ``--resume`` after the driver died) the latest checkpoint comes back through
``tune.get_checkpoint()`` and the cell continues after its last finished epoch.

Problems that a retry cannot fix (bad data, NaN loss) are reported as a result carrying
``failure_reason`` and the function returns normally, so Tune does not retry them; the driver
marks the cell's MLflow run FAILED with that reason. A crash of the worker process is an
ordinary Tune failure and is retried up to ``--max-failures`` times.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from ray import tune

from trainers.config import CellConfig
from trainers.errors import CellError, TrainingDiverged

REPORT_SECONDS = 2.0
"""Epochs without a checkpoint are sent to Tune together, at most one result per this many
seconds (a cell of 2,000 tiny epochs would otherwise make 2,000 round trips to the driver)."""


class TuneReporter:
    """Bridges the trainer's :class:`trainers.loop.Reporter` seam to ``tune.report``.

    Every epoch with a checkpoint, the final one, and otherwise the latest epoch every
    :data:`REPORT_SECONDS`, is one Tune result; epochs not yet sent ride along in its
    ``earlier_epochs`` list (the driver logs each of them; a trial restored from an older
    checkpoint replays them identically, and the driver skips epochs it has already logged).

    Adds ``trial_seconds``: wall time inside this trainable so far (data, model set-up,
    training, evaluation, checkpoints), the numerator of the orchestration-overhead benchmark.
    """

    def __init__(self, extra: dict[str, Any]) -> None:
        self.extra = extra
        self.start = self.sent = time.perf_counter()
        self.pending: list[dict[str, float]] = []

    def describe(self, info: dict[str, str]) -> None:
        """The trainer's set-up facts (update path, resolved precision, data source, split
        sizes) ride along with every result; the driver logs them as params."""
        self.extra.update(info)

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        now = time.perf_counter()
        self.pending.append({**metrics, "trial_seconds": now - self.start})
        if (checkpoint_dir is None and not metrics.get("final")
                and now - self.sent < REPORT_SECONDS):
            return
        *earlier, latest = self.pending
        result = {**latest, **self.extra}
        if earlier:
            result["earlier_epochs"] = earlier
        checkpoint = None
        if checkpoint_dir is not None:
            checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir))
        tune.report(result, checkpoint=checkpoint)
        self.pending, self.sent = [], now


def run_cell_trial(trial_config: dict[str, Any]) -> None:
    """Tune entry point; ``trial_config["trial"] = {"cell": CellConfig dict, "name": ...}``."""
    from trainers.device import hardware_name, pick_device
    from trainers.loop import train_cell

    config = CellConfig.from_dict(trial_config["trial"]["cell"])
    workdir = Path(tempfile.mkdtemp(prefix="batchmixup-trial-"))
    reporter = TuneReporter({})
    try:
        resume_from = None
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            resume_from = Path(checkpoint.to_directory(str(workdir / "restored")))
        device = pick_device(config.device)
        gpu_ids = ray_gpu_ids()
        hardware = hardware_label(hardware_name(device, config.precision), device.type, gpu_ids)
        reporter.extra.update(hardware=hardware, ray_gpu_ids=",".join(gpu_ids))
        try:
            train_cell(config, reporter=reporter, checkpoint_dir=workdir / "checkpoint",
                       resume_from=resume_from, log=lambda line: print(line, flush=True))
        except (CellError, TrainingDiverged) as exc:
            tune.report({"failure_reason": str(exc), "hardware": hardware})
        except Exception as exc:  # noqa: BLE001 - deterministic code errors: report, no retry
            if isinstance(exc, (MemoryError, KeyboardInterrupt)):
                raise
            last = traceback.format_exc().strip().splitlines()[-1]
            tune.report({"failure_reason": f"{type(exc).__name__}: {exc} ({last})"[:2000],
                         "hardware": hardware})
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def ray_gpu_ids() -> list[str]:
    """The GPU ids Ray assigned to this trial (empty without ``--gpus-per-trial``).

    Ray also sets ``CUDA_VISIBLE_DEVICES`` to them, so ``cuda:0`` inside the trial is the first
    assigned GPU; a fractional ``--gpus-per-trial`` gives several trials the same id.
    """
    import ray

    return [str(gpu) for gpu in ray.get_gpu_ids()]


def hardware_label(hardware: str, device_type: str, gpu_ids: list[str]) -> str:
    """The ``hardware`` tag: the device the cell ran on, saying so when Ray assigned GPUs but
    the cell ran on the CPU (no CUDA on the node, or ``device=cpu``).

    The same for every trial of a node type (the ids themselves go to ``ray_gpu_ids``), so the
    report's per-hardware grouping is not split by GPU index. No ``;`` (the report joins
    hardware names with ``; ``).
    """
    if not gpu_ids or device_type == "cuda":
        return hardware
    import torch

    reason = "CUDA not available" if not torch.cuda.is_available() else "device=cpu"
    return f"{hardware} (Ray assigned GPU(s), {reason}: ran on CPU)"


def cell_trainable(finished: frozenset[str] = frozenset()) -> Any:
    """The function Tune runs: :func:`run_cell_trial`, except for cells in ``finished``.

    On ``--resume`` Tune restarts every trial that its saved experiment state (written every
    few seconds) had not yet seen end, including cells that finished in MLflow after that last
    save. Those are returned from at once instead of being trained again.

    Args:
        finished: names of cells whose MLflow run is FINISHED.
    """

    def trial(trial_config: dict[str, Any]) -> None:
        if trial_config["trial"]["name"] in finished:
            return
        run_cell_trial(trial_config)

    # Tune's saved trials name their trainable; keep the name the sweep started with.
    trial.__name__ = trial.__qualname__ = run_cell_trial.__name__
    return trial


def warm_cache_task(cell: dict[str, Any], threads: int = 1) -> tuple[dict[str, bool], str]:
    """Ray task body: fill the feature/token cache for one cache group.

    Returns the cache hits and the precision ``auto`` resolved to on the node that ran it
    (a trial on a node that resolves differently computes its own entry).
    """
    import torch

    from trainers.device import pick_device
    from trainers.precision import resolve_precision
    from trainers.prepare import warm_cache

    torch.set_num_threads(max(1, threads))
    config = CellConfig.from_dict(cell)
    return warm_cache(config), resolve_precision(config.precision, pick_device(config.device))
