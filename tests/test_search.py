"""orchestrator.search: the plan, selection, the leakage guard, and a tiny real search + final."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from orchestrator import search, search_tune
from orchestrator import search_plan as sp
from orchestrator.spaces import load_sweep, resolve_source
from orchestrator.tracking import SweepTracker
from trainers.config import CellConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = ["--tasks", "banking77", "--ratios", "0.05", "--set", "model=minilm",
        "--set", "mode=frozen", "--set", "max_length=64", "--set", "epochs=3",
        "--set", "min_updates=0", "--set", "patience=1", "--set", "mlp_hidden=0",
        "--num-samples", "3"]


def run_cli(args: list[str], cwd: Path, cache_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "BATCHMIXUP_CACHE_DIR": str(cache_dir), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(REPO_ROOT), "TOKENIZERS_PARALLELISM": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run([sys.executable, "-m", "orchestrator.search", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)
    (cwd / "search.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    return proc


def all_runs(uri: str, experiment: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    return list(client.search_runs([exp.experiment_id], max_results=1000))


# --------------------------------------------------------------------------- no Ray


def record(index: int, acc: float | None, f1: float = 0.5, stopped: bool = False,
           status: str = "FINISHED") -> sp.TrialRecord:
    return sp.TrialRecord(f"t{index}", index, f"id{index}", {"alpha": index / 10}, status,
                              stopped, acc, f1)


def test_selection_rule():
    # early-stopped trials compete only when no trial trained every epoch
    assert sp.select([record(1, 0.5), record(2, 0.9, stopped=True)]).index == 1
    assert sp.select([record(1, 0.5, stopped=True), record(2, 0.6, stopped=True)]).index == 2
    # ties: higher val_macro_f1, then the earlier trial
    assert sp.select([record(1, 0.5, 0.3), record(2, 0.5, 0.4)]).index == 2
    assert sp.select([record(3, 0.5, 0.4), record(2, 0.5, 0.4)]).index == 2
    # failed or unscored trials never win; nothing scored -> None
    assert sp.select([record(1, 0.9, status="FAILED"), record(2, 0.1)]).index == 2
    assert sp.select([record(1, None), record(2, float("nan"))]) is None


def test_validation_split_size_rule():
    plan = sp.parse_plan(load_sweep(resolve_source("alpha_search", None)),
                             search.build_parser().parse_args([]))
    assert plan.min_val_examples == 30 and plan.max_val_fraction == 0.4
    from trainers.data import validation_split

    split = sp.val_settings(plan)
    sizes = {n: len(validation_split(list(range(n)), 0.2, 0, split["val_min_examples"],
                                     split["val_max_fraction"])[1]) for n in (1000, 100, 25)}
    assert sizes == {1000: 200, 100: 30, 25: 10}  # 20 %, at least 30, at most 40 %
    names = {p.name: p for p in plan.params}
    assert names["alpha"].describe() == "loguniform(0.05, 4)"
    assert names["temperature"].strategies == ("batchmixup",)
    # every arm tunes its learning rate, none included; mixing knobs only where they apply
    assert [p.name for p in plan.space_for("mixup")] == ["alpha", "head_lr"]
    assert [p.name for p in plan.space_for("batchmixup")] == ["alpha", "temperature",
                                                              "head_lr"]
    assert [p.name for p in plan.space_for("none")] == ["head_lr"]


def test_leakage_guard_and_bad_input_exit_2(tmp_path, data_dir, capsys):
    common = ["--data-dir", str(data_dir), "--tasks", "banking77", "--ratios", "0.05",
              "--strategies", "batchmixup", "--dry-run"]
    assert search.main([*common, "--set", "eval_split=test"]) == 2
    assert "eval_split='test'" in capsys.readouterr().err
    with pytest.raises(sp.LeakageError):
        sp.check_no_leakage([CellConfig(eval_split="test")], "x")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ntasks: [banking77]\nratios: [0.05]\nstrategies: [mixup]\n"
                   "seeds: [0]\nsearch:\n  space:\n    seed: {distribution: choice, "
                   "values: [1, 2]}\n")
    assert search.main(["--sweep-file", str(bad), "--data-dir", str(data_dir)]) == 2
    assert "search.space.seed" in capsys.readouterr().err
    # the final phase without a search refuses before Ray starts
    assert search.main(["--data-dir", str(data_dir), "--tasks", "banking77", "--ratios",
                        "0.05", "--strategies", "mixup", "--phase", "final", "--choices-file",
                        str(tmp_path / "none.json"), "--tracking-uri",
                        f"sqlite:///{tmp_path / 'm.db'}"]) == 2
    assert "run --phase search first" in capsys.readouterr().err
    # dry run: the search cells are on the validation split, with their sizes
    assert search.main(common) == 0
    out = capsys.readouterr().out
    assert "banking77/0.05/batchmixup: train 400, validation 100" in out


def test_callback_drops_test_metrics_and_finishes_early_stopped_trials(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = SweepTracker(uri, "cb", phase="search")
    base = CellConfig(task="banking77", ratio=0.05, strategy="batchmixup", epochs=3,
                      eval_split="val").to_dict()
    alpha = sp.SearchParam(name="alpha", distribution="loguniform", low=0.1, high=2)
    group = sp.Group("banking77/0.05/batchmixup", "banking77", 0.05, "batchmixup",
                     "batchmixup", base, (alpha,), 400, 100)
    callback = search_tune.search_callback_class()(tracker, group, parent_run_id="p" * 32)

    def trial(k: int) -> SimpleNamespace:
        cell = {**base, "alpha": 0.1 * k}
        return SimpleNamespace(trial_id=f"id{k}", checkpoint=None, num_failures=0,
                               config={"trial": {"cell": cell, "name": f"{group.key}/search-{k}",
                                                 "arm": "batchmixup",
                                                 "params": {"alpha": 0.1 * k, "search_trial": k}}})

    leaky, stopped = trial(1), trial(2)
    for t in (leaky, stopped):
        callback.on_trial_start(0, [], t)
    metrics = {"epoch": 1, "val_accuracy": 0.5, "val_macro_f1": 0.4, "train_loss": 1.0,
               "epoch_seconds": 0.1}
    callback.on_trial_result(0, [], leaky, {**metrics, "accuracy": 0.7, "macro_f1": 0.6})
    callback.on_trial_result(0, [], stopped, dict(metrics))
    callback.on_trial_complete(0, [], leaky)
    callback.on_trial_complete(0, [], stopped)
    assert tracker.queue.drain(30)
    runs = {r.info.run_name: r for r in all_runs(uri, "cb")}
    bad, ok = runs[f"{group.key}/search-1"], runs[f"{group.key}/search-2"]
    assert bad.info.status == "FAILED" and "leakage guard" in bad.data.tags["failure_reason"]
    assert "accuracy" not in bad.data.metrics and "macro_f1" not in bad.data.metrics
    assert ok.info.status == "FINISHED" and ok.data.tags["early_stopped"] == "true"
    assert ok.data.tags["mlflow.parentRunId"] == "p" * 32
    assert ok.data.tags["phase"] == "search" and ok.data.params["alpha"] == "0.2"
    assert callback.trials[f"{group.key}/search-2"]["values"] == {"alpha": 0.2}


def test_searcher_ignores_failure_reports_and_names_trials():
    base = CellConfig(task="banking77", ratio=0.05, strategy="mixup", eval_split="val").to_dict()
    group = sp.Group("banking77/0.05/mixup", "banking77", 0.05, "mixup", "mixup", base,
                         (sp.SearchParam(name="alpha", distribution="loguniform", low=0.1,
                                         high=2.0),), 400, 100)
    plan = sp.parse_plan(load_sweep(resolve_source("alpha_search", None)),
                             search.build_parser().parse_args([]))
    searcher = search_tune.make_searcher(group, plan)
    space = {"trial": {"cell": {**base, "alpha": group.space[0].domain()}, "name": "x",
                       "arm": "mixup", "params": {}}}
    assert searcher.set_search_properties("val_accuracy", "max", space)
    first = searcher.suggest("t1")
    assert first["trial"]["cell"] == {"alpha": 1.0}  # the default goes first
    assert first["trial"]["name"] == "banking77/0.05/mixup/search-001-t1"
    assert first["trial"]["params"]["alpha"] == 1.0
    assert first["trial"]["params"]["search_trial"] == 1
    searcher.on_trial_result("t1", {"failure_reason": "boom", "training_iteration": 1})
    searcher.on_trial_result("t1", {"val_accuracy": 0.5, "training_iteration": 1})
    second = searcher.suggest("t2")["trial"]
    assert second["name"].startswith("banking77/0.05/mixup/search-002-")
    assert 0.1 <= second["cell"]["alpha"] <= 2.0


# --------------------------------------------------------------------------- real Ray


@pytest.mark.slow
def test_tiny_search_chooses_and_final_phase_uses_it(tmp_path, data_dir, cache_dir):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [*TINY, "--strategies", "batchmixup", "--final-seeds", "0,1", "--data-dir",
            str(data_dir), "--tracking-uri", uri, "--num-cpus", "2", "--storage-path",
            str(tmp_path / "ray"), "--no-report"]
    proc = run_cli(args, tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "banking77/0.05/batchmixup: chose alpha=" in proc.stdout

    chosen = json.loads((tmp_path / "results" / "alpha_search" / "chosen.json").read_text())
    entry = chosen["groups"]["banking77/0.05/batchmixup"]
    assert set(entry["values"]) == {"alpha", "temperature", "head_lr"}
    assert 0.05 <= entry["values"]["alpha"] <= 4 and 0.05 <= entry["values"]["temperature"] <= 10
    assert entry["trials"] == 3 and entry["val_examples"] == 100
    # the first trial is the default, the chosen one has the best validation score
    scores = {t["trial"]: t for t in entry["trial_scores"]}
    assert scores[1]["values"] == {"alpha": 1.0, "temperature": 1.0, "head_lr": 0.001}
    full = [t["val_accuracy"] for t in scores.values() if not t["early_stopped"]]
    assert entry["val_accuracy"] == max(full)

    runs = all_runs(uri, "alpha_search")
    cells = [r for r in runs if r.data.tags.get("kind") == "cell"]
    trials = [r for r in cells if r.data.tags["phase"] == "search"]
    finals = [r for r in cells if r.data.tags["phase"] == "final"]
    parents = [r for r in runs if r.data.tags.get("kind") == "search_group"]
    assert len(trials) == 3 and len(finals) == 2 and len(parents) == 1
    parent = parents[0]
    assert parent.data.params["chosen.alpha"] == str(entry["values"]["alpha"])
    for run in trials:  # the leakage guard: validation metrics only, never test ones
        assert run.info.status == "FINISHED"
        assert run.data.params["eval_split"] == "val"
        assert "val_accuracy" in run.data.metrics
        assert not {"accuracy", "macro_f1"} & set(run.data.metrics)
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    marked = [r for r in trials if r.data.tags.get("chosen") == "true"]
    assert len(marked) == 1
    assert marked[0].data.params["alpha"] == str(entry["values"]["alpha"])
    for run in finals:  # the final phase uses the chosen values, on the test set
        assert run.info.status == "FINISHED"
        assert run.data.params["alpha"] == str(entry["values"]["alpha"])
        assert run.data.params["temperature"] == str(entry["values"]["temperature"])
        assert run.data.params["eval_split"] == "test"
        assert run.data.params["head_lr"] == str(entry["values"]["head_lr"])
        assert "test_accuracy" in run.data.metrics and "val_accuracy" in run.data.metrics
        assert run.data.params["val_min_examples"] == "30"  # the search's split rule
    assert sorted(r.info.run_name for r in finals) == ["banking77/0.05/batchmixup/0",
                                                       "banking77/0.05/batchmixup/1"]

    # Rerunning the same command searches nothing, trains nothing and creates no run.
    again = run_cli(args, tmp_path, cache_dir)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "1 already chosen" in again.stdout and "2 already FINISHED" in again.stdout
    assert len(all_runs(uri, "alpha_search")) == len(runs)
