"""Real training cells on the real data: learning, resume, caching, divergence, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FAST
from trainers.config import CellConfig
from trainers.errors import TrainingDiverged
from trainers.loop import train_cell
from trainers.strategies import builtin_names, get_strategy

# ratio, epochs, head learning rate; chance is the evaluation set's majority class share.
TASK_SETTINGS = {"rte": (1.0, 6, 1e-3), "banking77": (0.1, 6, 3e-3), "fewrel": (0.1, 6, 3e-3)}
FROZEN_STRATEGIES = [name for name in builtin_names() if get_strategy(name).frozen_ok]


def quiet(_: str) -> None:
    pass


def cell(data_dir: Path, cache_dir: Path, **overrides) -> CellConfig:
    values = dict(FAST, data_dir=str(data_dir), cache_dir=str(cache_dir), head_lr=3e-3)
    values.update(overrides)
    return CellConfig(**values)


@pytest.mark.slow
@pytest.mark.parametrize("task", list(TASK_SETTINGS))
@pytest.mark.parametrize("strategy", FROZEN_STRATEGIES)
def test_each_strategy_learns_on_each_task(task, strategy, data_dir, cache_dir):
    ratio, epochs, head_lr = TASK_SETTINGS[task]
    config = cell(data_dir, cache_dir, task=task, strategy=strategy, ratio=ratio, epochs=epochs,
                  head_lr=head_lr)
    result = train_cell(config, log=quiet)
    history = result.history
    assert len(history) == epochs
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    from trainers.data import load_task

    test = load_task(task, data_dir).test
    counts = [0] * (max(e.label for e in test) + 1)
    for e in test:
        counts[e.label] += 1
    chance = max(counts) / len(test)
    assert history[-1]["accuracy"] > chance + (0.01 if task == "rte" else 0.2), history[-1]


@pytest.mark.slow
def test_finetune_mode_trains_the_encoder(data_dir, cache_dir):
    config = cell(data_dir, cache_dir, task="banking77", ratio=0.03, mode="finetune",
                  strategy="batchmixup", epochs=2, batch_size=16, lr=5e-5, head_lr=5e-3)
    result = train_cell(config, log=quiet)
    assert set(result.cache_hits) == {"tokens"}  # fine-tune mode caches token ids
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.history[-1]["accuracy"] > 0.1  # 77 classes: chance is ~1.3%


@pytest.mark.parametrize("mode", ["frozen", "finetune"])
def test_resume_reaches_the_same_result(mode, data_dir, cache_dir, tmp_path):
    model = "minilm" if mode == "frozen" else "random:tiny"
    config = cell(data_dir, cache_dir, task="banking77", ratio=0.05, strategy="batchmixup",
                  epochs=3, mode=mode, model=model, lr=1e-3, dropout=0.1)
    straight = train_cell(config, log=quiet)
    first = CellConfig(**{**config.to_dict(), "epochs": 3})
    ckpt = tmp_path / "ckpt"

    class StopAfterOne:
        def report(self, metrics, checkpoint_dir):
            if metrics["epoch"] == 1:
                raise KeyboardInterrupt  # an interruption right after epoch 1's checkpoint

    with pytest.raises(KeyboardInterrupt):
        train_cell(first, reporter=StopAfterOne(), checkpoint_dir=ckpt, log=quiet)
    resumed = train_cell(config, checkpoint_dir=ckpt, resume_from=ckpt, log=quiet)
    for a, b in zip(straight.history, resumed.history, strict=True):
        for key in ("accuracy", "macro_f1", "train_loss"):
            assert a[key] == b[key], (key, a, b)


def test_resume_refuses_another_cells_checkpoint(data_dir, cache_dir, tmp_path):
    config = cell(data_dir, cache_dir, task="banking77", ratio=0.02, epochs=1)
    train_cell(config, checkpoint_dir=tmp_path, log=quiet)
    other = cell(data_dir, cache_dir, task="banking77", ratio=0.02, epochs=2, alpha=0.3)
    from trainers.errors import CellError

    with pytest.raises(CellError, match="another cell"):
        train_cell(other, resume_from=tmp_path, log=quiet)


def test_resume_accepts_older_checkpoints_and_compares_resolved_precision(
        data_dir, cache_dir, tmp_path):
    import torch

    from trainers.errors import CellError
    from trainers.loop import CHECKPOINT_FILE, CellTrainer
    from trainers.precision import resolve_precision
    from trainers.prepare import prepare_cell

    config = cell(data_dir, cache_dir, task="banking77", ratio=0.02, epochs=1, device="cpu")
    train_cell(config, checkpoint_dir=tmp_path, log=quiet)
    state = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    saved = json.loads(state["config"])
    del saved["precision"]  # a checkpoint written before the field existed
    state["config"] = json.dumps(saved)
    torch.save(state, tmp_path / CHECKPOINT_FILE)

    cpu = torch.device("cpu")
    prepared = prepare_cell(config, cpu)
    trainer = CellTrainer(config, prepared, cpu)
    trainer.load(tmp_path)  # missing field = its default, "auto"
    assert len(trainer.history) == 1
    resolved = resolve_precision("auto", cpu)
    for precision in ("fp32", "bf16"):
        other = CellConfig(**{**config.to_dict(), "precision": precision})
        trainer = CellTrainer(other, prepared, cpu)  # same inputs: only load() is under test
        if precision == resolved:  # the same run as "auto" on this machine
            trainer.load(tmp_path)
        else:
            with pytest.raises(CellError, match="differs in precision"):
                trainer.load(tmp_path)


def test_frozen_features_are_cached_and_reused(data_dir, cache_dir):
    first = train_cell(cell(data_dir, cache_dir, task="rte", ratio=0.1, epochs=1), log=quiet)
    # (the cache may be shared with other test processes: compare files, not listings)
    files = {p: p.stat().st_mtime_ns for p in (cache_dir / "features").glob("rte-*.pt")}
    assert files
    second = train_cell(cell(data_dir, cache_dir, task="rte", ratio=0.25, epochs=1, seed=3,
                             strategy="mixup"), log=quiet)
    assert second.cache_hits == {"features": True}
    assert {p: p.stat().st_mtime_ns for p in files} == files  # nothing recomputed
    other_length = train_cell(cell(data_dir, cache_dir, task="rte", ratio=0.01, epochs=1,
                                   max_length=16), log=quiet)
    assert other_length.cache_hits == {"features": False}  # the key includes max_length
    assert first.history and second.history


def test_nan_loss_stops_the_cell_naming_epoch_and_step(data_dir, cache_dir):
    config = cell(data_dir, cache_dir, task="banking77", ratio=0.05, strategy="batchmixup",
                  loss="dot", head_lr=1e30, grad_clip=0.0, clean_loss=False, epochs=3)
    with pytest.raises(TrainingDiverged, match=r"epoch \d+, step \d+"):
        train_cell(config, log=quiet)


def run_cli(*args: str, env_cache: Path) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "BATCHMIXUP_CACHE_DIR": str(env_cache), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "trainers.run_cell", *args],
                          capture_output=True, text=True, env=env, timeout=300)


def test_cli_prints_epochs_and_a_final_json_line(data_dir, cache_dir):
    proc = run_cli("--task", "banking77", "--ratio", "0.01", "--strategy", "batchmixup",
                   "--epochs", "2", "--max-length", "64", "--data-dir", str(data_dir),
                   env_cache=cache_dir)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert sum("epoch " in line for line in lines) == 2
    final = json.loads(lines[-1])
    assert final["cell"] == "banking77/0.01/batchmixup/0"
    assert 0 <= final["accuracy"] <= 1 and final["epoch_seconds"] > 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--task", "nope"], "unknown task 'nope'"),
        (["--strategy", "cutmix"], "unknown strategy 'cutmix'"),
        (["--ratio", "0"], "ratio must be in (0, 1]"),
        (["--ratio", "1.5"], "ratio must be in (0, 1]"),
        (["--alpha", "0"], "alpha must be > 0"),
        (["--epochs", "0"], "epochs must be an integer >= 1"),
        (["--seed", "1.5"], "seed must be of type int"),
        (["--model", "no-such-org/no-such-model"], "hub is unreachable"),
        (["--data-dir", "/nonexistent/data"], "/nonexistent/data"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(args, needle, data_dir, cache_dir, capsys):
    from trainers.run_cell import main

    base = ["--task", "rte", "--epochs", "1", "--max-length", "64", "--data-dir", str(data_dir),
            "--cache-dir", str(cache_dir)]
    assert main([*base, *args]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], err


def test_length_sorted_evaluation_gives_each_example_its_own_prediction(data_dir, cache_dir):
    """predict() batches by token length; each prediction must land on its own example."""
    import dataclasses

    import torch

    from trainers.loop import CellTrainer
    from trainers.prepare import prepare_cell

    config = cell(data_dir, cache_dir, task="banking77", ratio=0.01, mode="finetune",
                  model="minilm", precision="fp32", eval_batch_size=64).validate()
    cpu = torch.device("cpu")
    full = prepare_cell(config, cpu)
    prepared = dataclasses.replace(full, eval_inputs=full.eval_inputs[:300],
                                   eval_targets=full.eval_targets[:300])
    trainer = CellTrainer(config, prepared, cpu)
    order = trainer.splits["test"][2]
    lengths = [len(prepared.eval_inputs[i]["input_ids"]) for i in order.tolist()]
    assert sorted(order.tolist()) == list(range(300))
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]
    pred, _, _ = trainer.predict("test")
    with torch.no_grad():  # reference: one example at a time, in file order, no padding
        alone = torch.stack([
            trainer.model.scores(trainer.model.represent(
                trainer.inputs(prepared.eval_inputs, torch.tensor([i])))).argmax(dim=-1)[0]
            for i in range(300)])
    assert len(set(alone.tolist())) > 5  # varied predictions, so misplacing them would show
    assert (pred == alone).float().mean() >= 0.98  # padding may flip a near-tie, no more
