"""Checkpoint retention that never deletes a checkpoint Tune's saved experiment state needs.

Tune's own ``CheckpointConfig(num_to_keep=N)`` deletes a trial's older checkpoint the moment a
newer one is registered on the driver, but the experiment state that ``Tuner.restore`` reads
(``experiment_state-*.json`` under the storage path) is written every few seconds and uploaded
in the background. When the driver dies in between, the saved state names a checkpoint that is
already gone and the resumed trial fails with "Could not recover from checkpoint as it does not
exist on storage anymore" (ray-project/ray#27790; our ``tests/test_faults.py`` hit it with
fast frozen-feature epochs).

So the sweep runs Tune with ``num_to_keep=None`` and :class:`CheckpointRetention` deletes
instead, lagging behind what is *saved*: it reads the experiment state on storage, and deletes a
trial's checkpoint only once that state has recorded a result after a newer checkpoint of the
same trial. Tune processes a result that carries a checkpoint and registers the checkpoint
before it accepts the trial's next result, so "a later result is saved" implies "the newer
checkpoint is saved". The newest checkpoint the saved state may point to is therefore never
deleted. After ``Tuner.fit`` returns (the final state is saved by then), :func:`keep_latest`
removes everything but each trial's latest checkpoint, including leftovers of a resumed run.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import pyarrow.fs
from ray.tune import Callback

STATE_PREFIX = "experiment_state-"
CHECKPOINT_PREFIX = "checkpoint_"


@dataclass(frozen=True)
class Held:
    """One checkpoint this driver registered: the trial iteration of the result carrying it."""

    iteration: int
    path: str
    filesystem: Any


def _filesystem(uri: str) -> tuple[pyarrow.fs.FileSystem, str]:
    return pyarrow.fs.FileSystem.from_uri(uri)


def _delete(filesystem: pyarrow.fs.FileSystem, path: str) -> None:
    try:
        filesystem.delete_dir(path)
    except (FileNotFoundError, OSError):
        pass  # already gone: retention is best effort, never an error for the sweep


def saved_iterations(experiment_uri: str) -> dict[str, int]:
    """``trial_id -> training_iteration`` of each trial's last result in the saved state.

    Reads the newest ``experiment_state-*.json`` on storage (a local path or a URI such as
    ``s3://bucket/sweeps/name``). Returns ``{}`` when none is readable yet; a state being
    rewritten at this moment is read again at the next poll.
    """
    filesystem, root = _filesystem(experiment_uri)
    try:
        infos = filesystem.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    except OSError:
        return {}
    states = sorted(i.path for i in infos
                    if i.base_name.startswith(STATE_PREFIX) and i.base_name.endswith(".json"))
    if not states:
        return {}
    try:
        with filesystem.open_input_stream(states[-1]) as stream:
            state = json.loads(stream.read())
    except (OSError, ValueError):
        return {}
    iterations: dict[str, int] = {}
    for entry in state.get("trial_data", []):
        try:
            _, metadata = entry
            last = json.loads(metadata).get("last_result") or {}
        except (TypeError, ValueError):
            continue
        if "trial_id" in last and "training_iteration" in last:
            iterations[str(last["trial_id"])] = int(last["training_iteration"])
    return iterations


class CheckpointRetention(Callback):
    """Deletes superseded checkpoints once the saved experiment state no longer needs them.

    Args:
        experiment_uri: the experiment folder on storage (``<storage_path>/<name>``).
        poll_seconds: how often to read the saved experiment state (Tune writes it every
            ``TUNE_GLOBAL_CHECKPOINT_S`` seconds).
    """

    def __init__(self, experiment_uri: str, poll_seconds: float = 5.0) -> None:
        self.experiment_uri = experiment_uri
        self.poll_seconds = poll_seconds
        self.held: dict[str, list[Held]] = defaultdict(list)
        self.deleted = 0
        self._last_poll = 0.0

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any,
                      **info: Any) -> None:
        # Tune updates trial.last_result before it asks for the checkpoint of that result.
        carried = int(trial.last_result.get("training_iteration", 0))
        self.held[trial.trial_id].append(Held(carried, checkpoint.path, checkpoint.filesystem))

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if time.monotonic() - self._last_poll >= self.poll_seconds:
            self.prune()

    def prune(self) -> int:
        """Delete what the saved state has moved past; returns how many were deleted."""
        self._last_poll = time.monotonic()
        if not any(len(h) > 1 for h in self.held.values()):
            return 0
        saved = saved_iterations(self.experiment_uri)
        count = 0
        for trial_id, held in self.held.items():
            if trial_id not in saved:
                continue
            # the newest checkpoint the saved state certainly knows about ...
            known = [i for i, h in enumerate(held) if h.iteration < saved[trial_id]]
            if not known or known[-1] == 0:
                continue
            # ... stays; everything older goes
            for old in held[:known[-1]]:
                _delete(old.filesystem, old.path)
                count += 1
            del held[:known[-1]]
        self.deleted += count
        return count


def keep_latest(results: Any) -> int:
    """After ``Tuner.fit``: delete each trial's checkpoints except its latest one.

    Args:
        results: the ``ResultGrid`` that ``Tuner.fit`` returned.

    Returns how many checkpoint folders were deleted.
    """
    count = 0
    for result in results:
        latest = result.checkpoint
        if latest is None or result.path is None:
            continue
        filesystem = result.filesystem
        try:
            infos = filesystem.get_file_info(pyarrow.fs.FileSelector(result.path))
        except OSError:
            continue
        for info in infos:
            if (info.type == pyarrow.fs.FileType.Directory
                    and info.base_name.startswith(CHECKPOINT_PREFIX)
                    and info.path.rstrip("/") != latest.path.rstrip("/")):
                _delete(filesystem, info.path)
                count += 1
    return count
