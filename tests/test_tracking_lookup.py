"""A cell's existing MLflow run is found by its cell tag alone (no scan of the experiment)."""

from __future__ import annotations

from orchestrator.tracking import SweepTracker

NAMES = ["banking77/0.01/none/0", "banking77/0.01/none/01", 'rte/0.5/we"ird_%/1',
         "rte/0.5/it's/2", "rte/0.5/back\\slash/3"]


def test_existing_runs_of_one_cell_finds_exactly_its_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = SweepTracker(uri, "lookup")
    for name in NAMES:
        tracker.attach(name, 2, {"seed": "0"}, {"alpha": 1.0})
    assert tracker.queue.drain(30)
    for name in NAMES:
        found = tracker.existing_runs(name)
        assert list(found) == [name]
        assert found[name].info.run_id == tracker.cells[name].run_id
    assert tracker.existing_runs("banking77/0.01/none/9") == {}
    assert set(tracker.existing_runs()) == set(NAMES)
    # a new driver reattaches each cell to its run instead of creating another
    again = SweepTracker(uri, "lookup")
    for name in NAMES:
        again.attach(name, 2, {"seed": "0"}, {"alpha": 1.0})
    assert again.queue.drain(30)
    assert {n: again.cells[n].run_id for n in NAMES} == {n: tracker.cells[n].run_id
                                                         for n in NAMES}
    # another phase of the same experiment is a different run
    search = SweepTracker(uri, "lookup", phase="search")
    assert search.existing_runs(NAMES[0]) == {}


def test_many_epochs_are_logged_in_few_batches_each_once(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = SweepTracker(uri, "epochs")
    tracker.attach("rte/0.01/none/0", 250, {"seed": "0"}, {})
    assert tracker.queue.drain(30)
    epochs = [{"epoch": e, "accuracy": e / 1000, "train_loss": 1 / e, "updates": e,
               "epoch_seconds": 0.01} for e in range(1, 251)]
    epochs[-1].update(final=1.0, test_accuracy=0.5, selected_epoch=200.0)
    calls = tracker.queue._queued
    assert tracker.log_epochs("rte/0.01/none/0", epochs[:100]) == 100
    assert tracker.log_epochs("rte/0.01/none/0", epochs[50:]) == 150  # 50 already logged
    assert tracker.queue._queued - calls == 2  # 400 and 602 metrics: one write each
    assert tracker.queue.drain(30)
    run_id = tracker.cells["rte/0.01/none/0"].run_id
    history = MlflowClient(uri).get_metric_history(run_id, "accuracy")
    assert sorted(m.step for m in history) == list(range(1, 251))
    assert [m.step for m in MlflowClient(uri).get_metric_history(run_id, "test_accuracy")] \
        == [250]
    assert tracker.finish("rte/0.01/none/0") == "FINISHED"
