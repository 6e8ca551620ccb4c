"""The training-budget policy (trainers/budget.py): update counts, selection on validation only,
early stopping, convergence, and the fingerprint that names a cell's configuration."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch import Tensor

from tests.conftest import FAST
from trainers import budget
from trainers.config import CellConfig
from trainers.errors import ConfigError
from trainers.resources import MEASURED

CPU = torch.device("cpu")


def quiet(_: str) -> None:
    pass


def cell(data_dir: Path, cache_dir: Path, **overrides) -> CellConfig:
    values = dict(FAST, data_dir=str(data_dir), cache_dir=str(cache_dir), head_lr=3e-3,
                  task="banking77", ratio=0.02, device="cpu")
    values.update(overrides)
    return CellConfig(**values).validate()


def epochs_of(*scores: tuple[float, float]) -> list[dict[str, float]]:
    return [{"val_accuracy": acc, "val_loss": loss} for acc, loss in scores]


# ----------------------------------------------------------------------------- pure policy


def test_faithful_mixup_counts_n_updates_per_batch():
    base = CellConfig(strategy="mixup", mix_samples=15, batch_size=32)
    assert budget.updates_per_epoch(base, 100) == 4 * 15
    shared = dataclasses.replace(base, mixup_variant="shared")
    assert budget.updates_per_epoch(shared, 100) == 4
    assert budget.updates_per_epoch(CellConfig(strategy="batchmixup", mix_samples=15), 100) == 4


def test_min_updates_raise_the_epoch_budget_and_leave_room_for_patience():
    none = CellConfig(epochs=10, min_updates=600, patience=5, selection="best_val")
    assert budget.min_epochs(none, 100) == 150  # 4 updates per epoch
    assert budget.budget_epochs(none, 100) == 155
    mixup = dataclasses.replace(none, strategy="mixup", mix_samples=15)
    assert budget.min_epochs(mixup, 100) == 10  # 60 updates per epoch
    assert budget.budget_epochs(mixup, 100) == 15
    big = dataclasses.replace(none, epochs=400)
    assert budget.budget_epochs(big, 100) == 400
    assert budget.budget_epochs(CellConfig(epochs=7), 100) == 7


def test_selection_takes_the_best_validation_score_earliest_on_ties():
    history = epochs_of((0.5, 1.0), (0.7, 0.9), (0.7, 0.8), (0.7, 0.8), (0.6, 0.5))
    assert budget.select(history, "best_val") == 2  # same accuracy: lower loss, then earliest
    assert budget.select(history, "last") == 4
    # patience counts from the first epoch at the best accuracy: a creeping loss is no gain
    assert budget.epochs_since_best(history) == 3


def test_early_stopping_waits_for_min_updates_and_patience():
    config = CellConfig(selection="best_val", patience=2, min_updates=40, batch_size=10,
                        epochs=3)
    flat = epochs_of(*[(0.5, 1.0)] * 3)  # no improvement after epoch 1
    assert not budget.should_stop(config, flat, n_train=100)  # 30 of 40 updates so far
    assert budget.should_stop(config, epochs_of(*[(0.5, 1.0)] * 4), n_train=100)
    rising = epochs_of(*[(0.1 * i, 1.0) for i in range(1, 5)])
    assert not budget.should_stop(config, rising, n_train=100)
    assert budget.converged(config, rising) is False
    assert budget.converged(config, epochs_of(*[(0.5, 1.0)] * 4)) is True
    assert budget.converged(CellConfig(), rising) is None  # no patience: not assessed


def test_result_reports_the_selected_epoch():
    config = CellConfig(selection="best_val", patience=1, epochs=3, batch_size=10)
    history = [{"val_accuracy": 0.4, "val_loss": 1.0, "accuracy": 0.30, "macro_f1": 0.2},
               {"val_accuracy": 0.6, "val_loss": 0.9, "accuracy": 0.35, "macro_f1": 0.3},
               {"val_accuracy": 0.5, "val_loss": 0.8, "accuracy": 0.90, "macro_f1": 0.9}]
    out = budget.result(config, history, n_train=20)
    assert out["selected_epoch"] == 2 and out["selected_updates"] == 4 and out["updates"] == 6
    assert out["test_accuracy"] == 0.35  # never the better test score of epoch 3
    assert out["converged"] == 1.0 and out["stopped_early"] == 0.0


@pytest.mark.parametrize("overrides, message", [
    ({"patience": 3}, "needs selection=best_val"),
    ({"patience": 3, "selection": "best_val", "epochs": 3}, "can never be met"),
    ({"selection": "best_fit"}, "unknown selection"),
    ({"min_updates": -1}, "min_updates must be an integer >= 0"),
    ({"val_max_fraction": 1.0}, "val_max_fraction must be in"),
    ({"val_min_examples": 0}, "val_min_examples must be an integer >= 1"),
])
def test_bad_budget_settings_are_rejected(overrides, message):
    with pytest.raises(ConfigError, match=message):
        CellConfig(**overrides).validate()


def test_a_validation_split_that_would_be_empty_is_an_error():
    from trainers.data import validation_split

    with pytest.raises(ConfigError, match="would be empty"):
        validation_split(list(range(3)), 0.2, 0, min_val=1, max_fraction=0.2)
    train, val = validation_split(list(range(100)), 0.2, 0, min_val=30, max_fraction=0.25)
    assert len(val) == 25 and len(train) == 75 and not set(train) & set(val)


# ----------------------------------------------------------------------------- real cells


def test_faithful_mixup_steps_the_optimizer_n_times_per_batch(data_dir, cache_dir):
    from trainers.loop import CellTrainer
    from trainers.prepare import prepare_cell

    config = cell(data_dir, cache_dir, strategy="mixup", mix_samples=5, epochs=1)
    trainer = CellTrainer(config, prepare_cell(config, CPU), CPU)
    steps = []
    step = trainer.scheduler.step
    trainer.scheduler.step = lambda: (steps.append(1), step())[1]  # count real steps
    trainer.train_epoch(1)
    batches = -(-len(trainer.train_targets) // config.batch_size)
    assert len(steps) == 5 * batches == budget.updates_per_epoch(config, trainer.n_train)


def test_best_val_cell_selects_on_validation_never_on_test(data_dir, cache_dir, tmp_path):
    from trainers.loop import PREDICTIONS_FILE, CellTrainer
    from trainers.prepare import prepare_cell

    config = cell(data_dir, cache_dir, selection="best_val", patience=3, min_updates=30,
                  epochs=4, checkpoint_every=0)
    prepared = prepare_cell(config, CPU)
    runs = []
    for flip in (False, True):  # scrambled test labels must not change what is selected
        data = dataclasses.replace(prepared)
        if flip:
            data.eval_targets = prepared.eval_targets[torch.randperm(
                len(prepared.eval_targets), generator=torch.Generator().manual_seed(1))]
        trainer = CellTrainer(config, data, CPU)
        history = trainer.fit(None, tmp_path / str(flip), log=quiet)
        runs.append((trainer, history))
    (trainer, history), (flipped, flipped_history) = runs
    final = history[-1]
    assert final["final"] == 1.0 and "final" not in history[0]
    assert [h["val_accuracy"] for h in history] == [h["val_accuracy"]
                                                    for h in flipped_history]
    assert final["selected_epoch"] == flipped_history[-1]["selected_epoch"]
    picked = history[int(final["selected_epoch"]) - 1]
    assert picked["val_accuracy"] == max(h["val_accuracy"] for h in history)
    assert final["test_accuracy"] == picked["accuracy"]
    per_epoch = budget.updates_per_epoch(config, trainer.n_train)
    assert len(history) >= budget.min_epochs(config, trainer.n_train)
    assert final["updates"] == len(history) * per_epoch
    assert final["selected_updates"] == final["selected_epoch"] * per_epoch
    first_best = [h["val_accuracy"] for h in history].index(picked["val_accuracy"]) + 1
    assert final["converged"] == float(len(history) - first_best >= 3)
    assert final["test_correct"] == round(final["test_accuracy"] * final["test_examples"])
    saved = json.loads((tmp_path / "False" / "artifacts" / PREDICTIONS_FILE).read_text())
    assert sum(p == g for p, g in zip(saved["pred"], saved["gold"], strict=True)) \
        == final["test_correct"]
    assert len(trainer.splits["val"][1]) == round(0.2 * (trainer.n_train / 0.8))


def test_best_val_tests_once_with_the_selected_epochs_weights(data_dir, cache_dir, tmp_path):
    """The test split is evaluated once, after the last epoch, with the weights the selected
    epoch ended with; the model (and its checkpoint) keeps the last epoch's weights."""
    from trainers.loop import CellTrainer, snapshot
    from trainers.prepare import prepare_cell

    config = cell(data_dir, cache_dir, selection="best_val", patience=2, epochs=8,
                  head_lr=3e-2)

    class Recording(CellTrainer):
        def __init__(self, *args) -> None:
            super().__init__(*args)
            self.weights: list[dict] = []
            self.tested = 0

        def train_epoch(self, epoch: int) -> dict[str, float]:
            out = super().train_epoch(epoch)
            self.weights.append(snapshot(self.model))
            return out

        def predict(self, split: str):
            self.tested += split == "test"
            return super().predict(split)

    trainer = Recording(config, prepare_cell(config, CPU), CPU)
    history = trainer.fit(None, tmp_path, log=quiet)
    selected = int(history[-1]["selected_epoch"])
    assert trainer.tested == 1
    assert selected < len(history)  # the test is about an earlier epoch's weights
    assert [("accuracy" in h) for h in history] == [i + 1 == selected
                                                    for i in range(len(history))]
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, trainer.weights[-1][name]), name
    trainer.model.load_state_dict(trainer.weights[selected - 1])
    assert trainer.evaluate(("test",))["accuracy"] == history[-1]["test_accuracy"]
    saved = torch.load(tmp_path / "state.pt", weights_only=True)
    assert all(torch.equal(saved["best_model"][k], v)
               for k, v in trainer.weights[selected - 1].items())


def test_best_val_cell_resumes_to_the_same_result(data_dir, cache_dir, tmp_path):
    from trainers.loop import train_cell

    config = cell(data_dir, cache_dir, strategy="batchmixup", selection="best_val",
                  patience=2, epochs=6)
    straight = train_cell(config, log=quiet)

    class StopAfterTwo:
        def report(self, metrics, checkpoint_dir):
            if metrics["epoch"] == 2:
                raise KeyboardInterrupt

    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        train_cell(config, reporter=StopAfterTwo(), checkpoint_dir=ckpt, log=quiet)
    resumed = train_cell(config, checkpoint_dir=ckpt, resume_from=ckpt, log=quiet)
    assert untimed(straight.history) == untimed(resumed.history)
    assert "final" in resumed.history[-1]
    again = train_cell(config, checkpoint_dir=ckpt, resume_from=ckpt, log=quiet)
    assert again.history == resumed.history  # a finished checkpoint trains no further


def untimed(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in h.items() if k not in MEASURED} for h in history]


# ----------------------------------------------------------------------------- fingerprint


def test_fingerprint_names_the_configuration_not_the_seed(data_dir, cache_dir, tmp_path):
    import shutil

    from trainers.prepare import cell_fingerprint

    base = cell(data_dir, cache_dir, strategy="batchmixup")
    same = {cell_fingerprint(dataclasses.replace(base, **change)) for change in (
        {}, {"seed": 4}, {"mix_samples": 15}, {"eval_batch_size": 7}, {"checkpoint_every": 0},
        {"cache_dir": str(tmp_path)}, {"loss": "soft_ce"})}  # auto resolves to soft_ce
    assert len(same) == 1
    changed = {cell_fingerprint(dataclasses.replace(base, **change)) for change in (
        {"epochs": 4}, {"head_lr": 0.01}, {"temperature": 0.5}, {"loss": "dot"},
        {"selection": "best_val"}, {"ratio": 0.5}, {"strategy": "none"})}
    assert len(changed) == 7 and not changed & same
    # the same files elsewhere are the same data; an edited file is another configuration
    copy = tmp_path / "data"
    shutil.copytree(data_dir / "banking77", copy / "banking77")
    assert cell_fingerprint(dataclasses.replace(base, data_dir=str(copy))) in same
    train = copy / "banking77" / "train.csv"
    train.write_text(train.read_text().replace("card", "kard", 1))
    assert cell_fingerprint(dataclasses.replace(base, data_dir=str(copy))) not in same


# ----------------------------------------------------------------------------- presets


def test_every_preset_loads_and_validates_every_cell():
    from orchestrator.search import build_parser
    from orchestrator.search_plan import parse_plan
    from orchestrator.spaces import load_sweep, preset_names, resolve_source

    names = preset_names()
    assert {"smoke", "cpu_table1", "paper_table1", "alpha_search", "figure1"} <= set(names)
    for name in names:
        sweep = load_sweep(resolve_source(name, None))
        cells = sweep.cells()  # every cell's config validated
        assert cells and len({c.name for c in cells}) == len(cells), name
        if sweep.search:
            assert parse_plan(sweep, build_parser().parse_args([])).params, name


def test_finetuned_cell_is_tested_only_at_epochs_that_become_selected(data_dir, cache_dir):
    """Fine-tuning evaluates the test split only where the selection moves to (testing a big
    encoder every epoch costs); the result is the same selected epoch's test accuracy."""
    from trainers.loop import train_cell

    config = cell(data_dir, cache_dir, mode="finetune", model="random:tiny", lr=1e-3,
                  selection="best_val", patience=2, epochs=6, batch_size=16)
    history = train_cell(config, log=quiet).history
    tested = [i for i, h in enumerate(history) if "accuracy" in h]
    became_best = [i for i in range(len(history))
                   if budget.select(history[: i + 1], "best_val") == i]
    assert tested == became_best and tested[0] == 0
    assert len(tested) < len(history)  # epochs after the best were never tested
    final = history[-1]
    assert final["test_accuracy"] == history[int(final["selected_epoch"]) - 1]["accuracy"]


def test_incremental_best_epoch_agrees_with_the_definitions():
    import random

    rng = random.Random(0)
    history = epochs_of(*[(rng.choice([0.5, 0.6, 0.7]), rng.choice([1.0, 0.9, 0.8]))
                          for _ in range(60)])
    best = budget.BestEpoch()
    for n in range(1, len(history) + 1):
        best.add(history[n - 1])
        assert best.selected == budget.select(history[:n], "best_val")
        assert best.since_best == budget.epochs_since_best(history[:n])


def test_subset_digest_names_the_examples_not_the_run(data_dir, cache_dir):
    """Same (task, ratio, seed): the same digest in every arm; another seed: another subset."""
    from trainers.config import CellConfig
    from trainers.prepare import cell_indices, subset_digest

    def digest(**kw):
        config = CellConfig(task="banking77", ratio=0.01, data_dir=str(data_dir), **kw)
        return subset_digest(*cell_indices(config, 10003))

    assert digest(seed=0) == digest(seed=0, strategy="batchmixup", alpha=0.3)
    assert digest(seed=0) != digest(seed=1)
    assert digest(seed=0) != digest(seed=0, selection="best_val")  # a validation split carved


# ----------------------------------------------------------------------------- refit


@pytest.mark.parametrize("refit", ["epochs", "updates"])
def test_refit_trains_on_every_subset_example_for_the_selected_length(
        refit, data_dir, cache_dir, tmp_path):
    """Select, then refit: after the selection phase the cell starts again from its initial
    weights on training + validation examples, for the selected epochs (or updates), and
    reports the refit model's test metrics; the selected model's stay as best_val_test_*."""
    from trainers.loop import CellTrainer, snapshot
    from trainers.prepare import prepare_cell

    config = cell(data_dir, cache_dir, selection="best_val", patience=2, epochs=6,
                  refit=refit, head_lr=3e-2)
    prepared = prepare_cell(config, CPU)
    subset = torch.cat([prepared.train_inputs, prepared.val_inputs])
    n_select, n_all = len(prepared.train_targets), len(subset)

    class Recording(CellTrainer):
        def __init__(self, *args) -> None:
            super().__init__(*args)
            self.first = snapshot(self.model)
            self.seen: list[tuple[bool, Tensor, dict]] = []

        def train_epoch(self, epoch: int) -> dict[str, float]:
            self.seen.append((self.refit_from is not None, self.data.train_inputs.clone(),
                              snapshot(self.model)))
            return super().train_epoch(epoch)

    trainer = Recording(config, dataclasses.replace(prepared), CPU)
    history = trainer.fit(None, tmp_path, log=quiet)
    final = history[-1]
    selecting = trainer.refit_from
    refit_epochs = [h for h in history if h.get("refit")]
    assert selecting and len(refit_epochs) == len(history) - selecting == final["refit_epochs"]
    selected = int(final["selected_epoch"])
    assert selected <= selecting
    expected = (selected if refit == "epochs" else
                -(-selected * budget.updates_per_epoch(config, n_select)
                  // budget.updates_per_epoch(config, n_all)))
    assert final["refit_epochs"] == expected
    assert final["refit_updates"] == expected * budget.updates_per_epoch(config, n_all)
    for refitting, inputs, _ in trainer.seen:
        assert len(inputs) == (n_all if refitting else n_select)
    first_refit = next(i for i, (refitting, _, _) in enumerate(trainer.seen) if refitting)
    assert torch.equal(trainer.seen[first_refit][1], subset)  # every subset example
    for name, value in trainer.seen[first_refit][2].items():  # from the initial weights
        assert torch.equal(value, trainer.first[name]), name
    assert "val" not in trainer.splits and "val_accuracy" not in refit_epochs[0]
    assert final["test_accuracy"] == final["accuracy"]  # the refit model's
    assert "best_val_test_accuracy" in final
    assert final["test_correct"] == round(final["test_accuracy"] * final["test_examples"])


def test_refit_cell_resumes_in_its_refit_phase_to_the_same_result(
        data_dir, cache_dir, tmp_path):
    from trainers.loop import train_cell

    config = cell(data_dir, cache_dir, selection="best_val", patience=2, epochs=6,
                  refit="epochs", checkpoint_every=1)
    straight = train_cell(config, log=quiet)
    selecting = len(straight.history) - int(straight.history[-1]["refit_epochs"])

    class StopInRefit:
        def report(self, metrics, checkpoint_dir):
            if metrics.get("refit"):
                raise KeyboardInterrupt  # right after the first refit epoch's checkpoint

    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        train_cell(config, reporter=StopInRefit(), checkpoint_dir=ckpt, log=quiet)
    assert torch.load(ckpt / "state.pt", weights_only=True)["refit_from"] == selecting
    resumed = train_cell(config, checkpoint_dir=ckpt, resume_from=ckpt, log=quiet)
    assert untimed(straight.history) == untimed(resumed.history)


def test_refit_needs_best_val_selection_and_is_fingerprinted_only_when_on():
    with pytest.raises(ConfigError, match="refit=epochs needs selection=best_val"):
        CellConfig(refit="epochs").validate()
    assert "refit" not in CellConfig(selection="best_val").applicable()
    assert CellConfig(selection="best_val", refit="updates").applicable()["refit"] == "updates"
