"""GPU scheduling without a GPU: a local Ray with logical GPUs (``--num-gpus 4`` on this CPU
machine). Ray hands out GPU ids and sets ``CUDA_VISIBLE_DEVICES`` exactly as on a GPU node;
the trials find no CUDA and fall back to CPU, and say so in the ``hardware`` tag."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from orchestrator.sweep import main
from tests.sweep_helpers import cell_runs, peak_overlap, run_sweep, steps

CPU_FALLBACK = "(Ray assigned GPU(s), CUDA not available: ran on CPU)"


def overlapping(a, b) -> bool:
    return a.info.start_time < b.info.end_time and b.info.start_time < a.info.end_time


@pytest.mark.slow
@pytest.mark.parametrize(("gpus_per_trial", "at_once"), [(0.5, 8), (1.0, 4)])
def test_gpus_per_trial_sets_how_many_trials_run_at_once(gpus_per_trial, at_once, tmp_path,
                                                         data_dir, cache_dir):
    # Tune starts the 8 trials one after another over seconds: 20 epochs of batches of 8 keep
    # each cell busy well past the last start, so the overlap is not a matter of luck.
    epochs = 20
    proc = run_sweep(["--preset", "smoke", "--tasks", "banking77", "--ratios", "0.01",
                      "--seeds", "0,1", "--set", f"epochs={epochs}", "--set", "batch_size=8",
                      "--data-dir", str(data_dir),
                      "--num-cpus", "8", "--num-gpus", "4", "--cpus-per-trial", "1",
                      "--gpus-per-trial", f"{gpus_per_trial:g}", "--no-report",
                      "--storage-path", str(tmp_path / "ray")], tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"trial resources: 1 CPU, {gpus_per_trial:g} GPU" in proc.stdout
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = cell_runs(uri, "smoke")
    assert len(runs) == 8
    for run in runs:
        assert run.info.status == "FINISHED"
        assert steps(uri, run.info.run_id) == list(range(1, epochs + 1))
        # each trial records the id Ray gave it, and that it ran on the CPU
        assert run.data.tags["ray_gpu_ids"] in {"0", "1", "2", "3"}, run.data.tags
        assert run.data.tags["hardware"].endswith(CPU_FALLBACK), run.data.tags["hardware"]
    peak = peak_overlap(runs)
    print(f"\n--gpus-per-trial {gpus_per_trial:g} on 4 logical GPUs: at most {peak} of 8 trials "
          "at once")
    assert peak == at_once
    # a GPU id is never shared by more trials at once than fit on it
    per_gpu = round(1 / gpus_per_trial)
    for group in itertools.combinations(runs, per_gpu + 1):
        if all(overlapping(a, b) for a, b in itertools.combinations(group, 2)):
            assert len({r.data.tags["ray_gpu_ids"] for r in group}) > 1, \
                [(r.info.run_name, r.data.tags["ray_gpu_ids"]) for r in group]
    if gpus_per_trial == 0.5:  # all 8 at once: two trials on each of the 4 GPUs
        assert Counter(r.data.tags["ray_gpu_ids"] for r in runs) == {str(i): 2 for i in range(4)}


@pytest.mark.parametrize(("flags", "needle"), [
    (["--num-gpus", "-1"], "--num-gpus must be >= 0"),
    (["--trial-resources", "worker_node"], "--trial-resources expects NAME=AMOUNT"),
    (["--trial-resources", "GPU=1"], "'GPU' is a built-in resource"),
    (["--trial-resources", "worker_node=0"], "worker_node must be > 0"),
    (["--trial-resources", "worker_node=x"], "'x' is not a number"),
])
def test_bad_resource_flags_exit_2(flags, needle, tmp_path, data_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["--tasks", "banking77", "--strategies", "none", "--seeds", "0", "--ratios",
                 "0.01", "--data-dir", str(data_dir), "--storage-path", str(tmp_path / "ray"),
                 "--no-report", *flags])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and needle in err, err
    assert not (tmp_path / "mlflow.db").exists()
