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
