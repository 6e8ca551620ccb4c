"""Checkpoint retention (orchestrator/retention.py) against a real local Ray and real Tune runs.

The property that matters for ``--resume``: at every moment, the checkpoint that the experiment
state saved on storage names as a trial's latest still exists. The oracle reads that state the
way ``Tuner.restore`` does (Tune's own ``_TrainingRunMetadata``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
from ray import tune  # noqa: E402
from ray.tune.experiment.trial import _TrainingRunMetadata  # noqa: E402

from orchestrator.retention import CheckpointRetention, keep_latest, saved_iterations  # noqa: E402

pytestmark = pytest.mark.slow  # real Ray sweeps and kills

ITERATIONS = 40


@pytest.fixture(scope="module")
def local_ray():
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def fast_trainable(config: dict) -> None:
    """A checkpoint every iteration, faster than Tune saves its experiment state."""
    import time

    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            start = int(Path(folder, "step").read_text())
    for step in range(start + 1, ITERATIONS + 1):
        time.sleep(0.03)
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, "step").write_text(str(step))
            tune.report({"step": step, "started_at": start},
                        checkpoint=tune.Checkpoint.from_directory(folder))


def saved_latest(experiment: Path) -> dict[str, str]:
    """trial_id -> the checkpoint path the newest saved experiment state would restore."""
    states = sorted(experiment.glob("experiment_state-*.json"))
    if not states:
        return {}
    try:
        state = json.loads(states[-1].read_text())
    except ValueError:  # being rewritten right now
        return {}
    latest = {}
    for _, metadata in state["trial_data"]:
        meta = _TrainingRunMetadata.from_json_state(metadata)
        result = meta.checkpoint_manager.latest_checkpoint_result
        if result is not None:
            latest[json.loads(metadata)["last_result"]["trial_id"]] = result.checkpoint.path
    return latest


class Probe(CheckpointRetention):
    """Retention that, after each prune, checks what a crash at that instant would restore."""

    def __init__(self, experiment_uri: str, crash_copy: Path | None = None) -> None:
        super().__init__(experiment_uri, poll_seconds=0.0)
        self.checks = 0
        self.missing: list[str] = []
        self.crash_copy = crash_copy

    def prune(self) -> int:
        count = super().prune()
        for path in saved_latest(Path(self.experiment_uri)).values():
            self.checks += 1
            if not Path(path).is_dir():
                self.missing.append(path)
        if count and self.crash_copy is not None and not self.crash_copy.exists():
            # what storage holds right after a deletion: a driver crash now leaves this
            shutil.copytree(self.experiment_uri, self.crash_copy)
        return count


def run(tmp_path: Path, name: str, callbacks: list) -> tune.ResultGrid:
    tuner = tune.Tuner(
        fast_trainable, param_space={"arm": tune.grid_search([0, 1])},
        run_config=tune.RunConfig(name=name, storage_path=str(tmp_path), verbose=0,
                                  callbacks=callbacks,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=None)))
    return tuner.fit()


def checkpoint_dirs(results: tune.ResultGrid) -> list[list[str]]:
    return [sorted(p.name for p in Path(r.path).glob("checkpoint_*")) for r in results]


def test_saved_state_never_names_a_deleted_checkpoint(local_ray, tmp_path):
    probe = Probe(str(tmp_path / "fast"))
    results = run(tmp_path, "fast", [probe])
    assert not results.errors
    assert probe.checks > 0, "the saved experiment state was never read during the run"
    assert probe.missing == []
    assert probe.deleted > 0, "nothing was deleted while the trials ran"
    # both trials ran to the end and the saved state knows it
    assert set(saved_iterations(str(tmp_path / "fast")).values()) == {ITERATIONS}

    assert keep_latest(results) > 0
    for result, names in zip(results, checkpoint_dirs(results), strict=True):
        assert names == [Path(result.checkpoint.path).name]  # only the latest is left


def test_a_crash_right_after_a_deletion_resumes_from_a_checkpoint(local_ray, tmp_path):
    """Storage as a driver crash would leave it just after retention deleted something."""
    crash = tmp_path / "crash" / "mid"
    probe = Probe(str(tmp_path / "mid"), crash_copy=crash)
    assert not run(tmp_path, "mid", [probe]).errors
    assert crash.is_dir(), "retention deleted nothing while the trials ran"
    # what the crashed state would restore each trial from (paths name the original folder)
    expected = {trial: int(Path(crash, Path(path).relative_to(tmp_path / "mid"), "step")
                           .read_text())
                for trial, path in saved_latest(crash).items()}
    assert expected, "the saved state named no checkpoint"
    restored = tune.Tuner.restore(str(crash), trainable=fast_trainable,
                                  resume_unfinished=True, resume_errored=True).fit()
    assert not restored.errors, [str(e) for e in restored.errors]
    assert [r.metrics["step"] for r in restored] == [ITERATIONS, ITERATIONS]
    # each trial with a saved checkpoint continued right after it, not from scratch
    started = {r.metrics["trial_id"]: r.metrics["started_at"] for r in restored}
    for trial, step in expected.items():
        assert started[trial] == step > 0, (trial, started, expected)
