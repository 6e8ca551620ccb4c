"""The sweep end to end on a real local Ray, a real sqlite store and a real MLflow server."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from orchestrator.sweep import main
from tests.sweep_helpers import cell_runs, mlflow_server, run_sweep, steps

PARAMS = {"task", "ratio", "strategy", "seed", "arm", "model", "mode", "pooling", "head_lr",
          "epochs", "batch_size", "max_length", "selection", "min_updates", "precision",
          "update_path", "encoder_forward", "data_source", "num_labels", "n_train", "n_test",
          "train_subset",
          "eval_split", "mlp_hidden", "dropout", "weight_decay", "grad_clip", "warmup_ratio"}
ARM_PARAMS = {"none": set(), "mixup": {"alpha", "loss", "clean_loss", "mix_samples",
                                       "mixup_variant"},
              "batchmixup": {"alpha", "loss", "clean_loss", "temperature", "batchmix_points"}}
ARM_PARAMS["nonlinear_mixup"] = ARM_PARAMS["mixup"]
TAGS = {"task", "ratio", "strategy", "seed", "sweep", "git_commit", "ray_trial_id", "hardware",
        "cell", "phase", "kind", "fingerprint", "mlflow.source.name", "mlflow.user", "command"}


@pytest.mark.slow
def test_smoke_sweep_end_to_end(tmp_path, data_dir, cache_dir):
    proc = run_sweep(["--preset", "smoke", "--data-dir", str(data_dir), "--num-cpus", "4",
                      "--cpus-per-trial", "1", "--storage-path", str(tmp_path / "ray")],
                     tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = cell_runs(uri, "smoke")
    expected = {f"{t}/{r}/{s}/{seed}" for t, r, s, seed in itertools.product(
        ["rte", "banking77"], ["0.25", "0.01"],
        ["none", "mixup", "nonlinear_mixup", "batchmixup"], [0, 1])}
    names = [run.info.run_name for run in runs]
    assert sorted(names) == sorted(expected)  # exactly one run per cell
    for run in runs:
        assert run.info.status == "FINISHED"
        task, ratio, strategy, seed = run.info.run_name.split("/")
        # only the settings this arm reads, resolved (frozen MiniLM: mean pooling, no lr)
        pairs = {"pair_encoding"} if task == "rte" else set()  # frozen RTE encodes pairs
        assert set(run.data.params) == PARAMS | ARM_PARAMS[strategy] | pairs, run.data.params
        assert run.data.params["pooling"] == "mean" and run.data.params["precision"] != "auto"
        assert run.data.params["update_path"] == ("autograd" if strategy == "batchmixup"
                                                  else "fused")
        assert TAGS <= set(run.data.tags), run.data.tags
        assert run.data.tags["task"] == task and run.data.tags["strategy"] == strategy
        assert float(run.data.tags["ratio"]) == float(ratio) and run.data.tags["seed"] == seed
        for key in ("accuracy", "macro_f1", "train_loss", "updates", "epoch_seconds",
                    "examples_per_second", "cpu_seconds", "peak_rss_mib"):
            assert steps(uri, run.info.run_id, key) == [1, 2, 3], (run.info.run_name, key)
        # its training subset as an MLflow dataset input, the digest also a param
        (dataset,) = [d.dataset for d in run.inputs.dataset_inputs]
        assert dataset.digest == run.data.params["train_subset"]
        assert dataset.name == f"{task} train subset"
        # measured inside the trial process: a MiniLM worker holds > 100 MiB, uses CPU time
        assert run.data.metrics["peak_rss_mib"] > 100 and run.data.metrics["cpu_seconds"] > 0
        assert steps(uri, run.info.run_id, "test_accuracy") == [3]  # the result, once
    # terminal table, MLflow location and the report
    assert "test acc % (mean±std, n)" in proc.stdout
    assert "32/32 cells FINISHED" in proc.stdout
    report = tmp_path / "results" / "smoke" / "report.md"
    assert report.is_file() and "Table 1" in report.read_text()
    check_report_numbers(tmp_path / "results" / "smoke", runs, uri)

    # Relaunching the same sweep reruns nothing and creates no run.
    again = run_sweep(["--preset", "smoke", "--data-dir", str(data_dir), "--num-cpus", "2",
                       "--no-report", "--storage-path", str(tmp_path / "ray")],
                      tmp_path, cache_dir)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "32 already FINISHED" in again.stdout
    assert len(cell_runs(uri, "smoke")) == 32


def check_report_numbers(folder: Path, runs: list, uri: str) -> None:
    """The report of a real sweep restates exactly what MLflow logged."""
    import json
    import math
    import statistics

    import matplotlib.image
    import pandas as pd

    from results.paper import paper_cell

    client = MlflowClient(tracking_uri=uri)
    table = pd.read_csv(folder / "table1.csv")
    by_arm: dict[tuple, list[float]] = {}
    seconds: dict[tuple, list[float]] = {}
    paths: dict[tuple, str] = {}
    correct: dict[tuple, float] = {}
    for run in runs:
        t = run.data.tags
        key = (t["task"], float(t["ratio"]), t["strategy"])
        # Table 1 is the selected epoch's test accuracy (the smoke preset selects the last)
        assert run.data.metrics["test_accuracy"] == run.data.metrics["accuracy"]
        by_arm.setdefault(key, []).append(run.data.metrics["test_accuracy"] * 100)
        history = client.get_metric_history(run.info.run_id, "epoch_seconds")
        seconds.setdefault(key, []).append(statistics.mean(m.value for m in history))
        paths[key] = run.data.params["update_path"]
        correct[(*key, t["seed"])] = run.data.metrics["test_correct"]
    for _, row in table.iterrows():
        values = by_arm[(row["task"], float(row["ratio"]), row["strategy"])]
        assert row["n"] == len(values)
        assert row["mean"] == pytest.approx(statistics.mean(values), abs=1e-9)
        assert row["std"] == pytest.approx(statistics.stdev(values), abs=1e-9)
        assert not row["paper_setting"] and math.isnan(row["paper_mean"])  # MiniLM, frozen
    assert len(table) == len(by_arm)
    # The paper's Table 1 is shown as reference (values typed from the paper), without Δ.
    reference = pd.read_csv(folder / "paper_reference.csv")
    indexed = reference.set_index(["ratio", "system"])
    paper_values = {("banking77", 0.25, "none"): "80.95 ± 2.22",
                    ("banking77", 0.25, "batchmixup"): "87.71 ± 1.38",
                    ("rte", 0.25, "mixup"): "71.70 ± 5.66",
                    ("banking77", 0.01, "batchmixup"): "55.21 ± 1.77",
                    ("rte", 0.01, "nonlinear_mixup"): "51.41 ± 0.43"}
    for (task, ratio, system), text in paper_values.items():
        assert indexed.loc[(ratio, system), task] == text
        assert paper_cell(ratio, system, task) is not None
    text = (folder / "report.md").read_text()
    assert "## Setup" in text and "not this setting" in text
    assert " MiB" in text.split("## Efficiency")[1].split("## Plots")[0]  # peak memory column
    # calibration: the mean over seeds of what each run logged
    calibration = pd.read_csv(folder / "calibration.csv")
    assert len(calibration) == len(pd.read_csv(folder / "table1.csv"))
    for _, row in calibration.iterrows():
        logged = [r.data.metrics["test_ece"] for r in runs
                  if (r.data.tags["task"], float(r.data.tags["ratio"]), r.data.tags["arm"])
                  == (row["task"], float(row["ratio"]), row["strategy"])]
        assert row["ece_mean"] == pytest.approx(100 * statistics.mean(logged))
    assert "## Calibration" in text and "### Power, the paper's claim" in text
    # Epoch times: ratios only against `none` on the same update path.
    efficiency = pd.read_csv(folder / "efficiency.csv")
    for _, row in efficiency.iterrows():
        key = (row["task"], float(row["ratio"]), row["strategy"])
        none_key = (row["task"], float(row["ratio"]), "none")
        assert row["update_path"] == paths[key]
        assert row["mean_epoch_seconds"] == pytest.approx(statistics.mean(seconds[key]))
        peaks = [r.data.metrics["peak_rss_mib"] for r in runs
                 if (r.data.tags["task"], float(r.data.tags["ratio"]), r.data.tags["arm"])
                 == key]
        assert row["peak_rss_mib"] == pytest.approx(max(peaks))
        if paths[key] == paths[none_key]:
            expected = statistics.mean(seconds[key]) / statistics.mean(seconds[none_key])
            assert row["ratio_to_none"] == pytest.approx(expected)
        else:
            assert math.isnan(row["ratio_to_none"])
    # Paired differences from the integer counts; 2 seeds: nothing is tested.
    paired = pd.read_csv(folder / "paired.csv", dtype={"seeds": str})
    for _, row in paired.iterrows():
        key = (row["task"], float(row["ratio"]))
        diffs = [int(correct[(*key, row["arm"], s)] - correct[(*key, row["baseline"], s)])
                 for s in row["seeds"].split()]
        assert row["per_seed"].startswith(", ".join(f"{d:+d}" for d in diffs) + " of ")
        assert row["verdict"] == "not tested: n < 3 paired seeds"
    for png in folder.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert matplotlib.image.imread(png).ndim == 3
    # The summary run holds the tables and the report.
    exp = client.get_experiment_by_name("smoke")
    summary = client.search_runs([exp.experiment_id], "tags.kind = 'summary'")
    assert len(summary) == 1
    logged = json.loads(summary[0].data.tags["mlflow.loggedArtifacts"])
    assert {"path": "report/tables/table1.json", "type": "table"} in logged
    assert summary[0].data.metrics["cells_finished"] == len(runs)


@pytest.mark.slow
def test_four_concurrent_trials_against_a_real_mlflow_server(tmp_path, data_dir, cache_dir):
    with mlflow_server(tmp_path / "server") as (uri, _):
        proc = run_sweep(["--preset", "smoke", "--tasks", "banking77", "--ratios", "0.01",
                          "--seeds", "0,1", "--set", "epochs=12", "--data-dir", str(data_dir),
                          "--tracking-uri", uri, "--num-cpus", "4", "--cpus-per-trial", "1",
                          "--max-concurrent", "4", "--no-report",
                          "--storage-path", str(tmp_path / "ray")], tmp_path, cache_dir)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        runs = cell_runs(uri, "smoke")
        assert len(runs) == 8 and {r.info.status for r in runs} == {"FINISHED"}
        for run in runs:
            assert steps(uri, run.info.run_id) == list(range(1, 13))
            assert steps(uri, run.info.run_id, "accuracy") == list(range(1, 13))
        # the runs really overlapped: at some instant 4 were open at once
        events = sorted([(r.info.start_time, 1) for r in runs]
                        + [(r.info.end_time, -1) for r in runs])
        open_runs = peak = 0
        for _, delta in events:
            open_runs += delta
            peak = max(peak, open_runs)
        assert peak >= 4, events
    assert not (tmp_path / "mlflow.db").exists()  # nothing written to the default store


BAD = [
    (["--preset", "nope"], "unknown preset 'nope'"),
    (["--tasks", "rte,nope"], "unknown task 'nope'"),
    (["--ratios", "0"], "each ratio must be in (0, 1]"),
    (["--ratios", "1.5"], "each ratio must be in (0, 1]"),
    (["--ratios", "abc"], "'abc' is not a valid float"),
    (["--seeds", "0,x"], "'x' is not a valid int"),
    (["--strategies", "cutmix"], "unknown strategy 'cutmix'"),
    (["--set", "alpha=0"], "alpha must be > 0"),
    (["--set", "epochs=0"], "epochs must be an integer >= 1"),
    (["--set", "nosuch=1"], "unknown setting"),
    (["--set", "model=no-org/no-model", "--strategies", "none"], "hub is unreachable"),
    (["--set", "noequals"], "--set expects key=value"),
    (["--max-failures", "-1"], "--max-failures must be >= 0"),
    # the budget policy's bad input: unknown settings, a patience that cannot be met, a
    # validation split that would be empty
    (["--set", "budget=600"], "unknown setting"),
    (["--set", "patience=3"], "needs selection=best_val"),
    (["--set", "selection=best_val", "--set", "patience=3", "--set", "epochs=3"],
     "can never be met"),
    (["--tasks", "rte", "--ratios", "0.01", "--set", "selection=best_val",
      "--set", "val_max_fraction=0.01"], "would be empty"),
    (["--set", "selection=best"], "unknown selection"),
    (["--address", "ray://127.0.0.1:10001"], "Ray Client (ray://) is not supported"),
]


@pytest.mark.parametrize(("args", "needle"), BAD)
def test_bad_flags_exit_2_and_start_nothing(args, needle, tmp_path, data_dir, capsys,
                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["--data-dir", str(data_dir), "--storage-path", str(tmp_path / "ray"),
                 "--no-report", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and needle in err and err.count("\n") == 1, err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray").exists()


BAD_FILES = [
    ("tasks: [rte]\nratios: [0.5]\nstrategies: [none]\nseeds: [0]\nbogus: 1\n",
     "unknown field(s) bogus"),
    ("tasks: [rte]\nratios: [2]\nstrategies: [none]\nseeds: [0]\n", "field 'ratios'"),
    ("tasks: [rte]\nratios: [0.5]\nstrategies: [none]\nseeds: [-1]\n", "field 'seeds'"),
    ("tasks: [rte]\nratios: [0.5]\nstrategies: [none]\nseeds: [0]\nsettings: {alpa: 1}\n",
     "field 'settings.alpa'"),
    ("tasks: [rte]\nratios: [0.5]\nstrategies: [none]\nseeds: [0]\n"
     "strategy_settings: {mixup: {alpha: -2}}\n", "alpha must be > 0"),
    ("tasks: [rte\n", "cannot read YAML"),
    ("ratios: [0.5]\nstrategies: [none]\nseeds: [0]\n", "field 'tasks' is required"),
]


@pytest.mark.parametrize(("text", "needle"), BAD_FILES)
def test_bad_sweep_files_name_file_and_field(text, needle, tmp_path, data_dir, capsys,
                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    file = tmp_path / "bad.yaml"
    file.write_text(text)
    code = main(["--sweep-file", str(file), "--data-dir", str(data_dir), "--no-report"])
    err = capsys.readouterr().err
    assert code == 2 and str(file) in err and needle in err, err
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--address", "127.0.0.1:9"], "Ray cluster at 127.0.0.1:9 is unreachable"),
        (["--tracking-uri", "http://127.0.0.1:9"], "tracking server http://127.0.0.1:9 is "
                                                   "unreachable"),
        (["--tracking-uri", "sqlite:////nonexistent-dir/x.db"], "does not exist"),
        (["--tracking-uri", "./mlruns"], "MLflow 3 needs a database or a server"),
        (["--storage-path", "/proc/no-such/ray"], "is not writable"),
        (["--data-dir", "/nonexistent/data"], "/nonexistent/data"),
    ],
)
def test_unreachable_services_fail_fast(flags, needle, tmp_path, data_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    start = time.monotonic()
    code = main(["--tasks", "rte", "--strategies", "none", "--seeds", "0", "--ratios", "0.01",
                 "--data-dir", str(data_dir), "--storage-path", str(tmp_path / "ray"), *flags])
    err = capsys.readouterr().err
    assert code == 2 and needle in err, err
    assert time.monotonic() - start < 15
    assert not Path(tmp_path / "mlflow.db").exists()


def test_sweep_file_max_concurrent_is_honoured_and_the_flag_wins(tmp_path):
    from orchestrator.spaces import load_sweep
    from orchestrator.sweep import build_parser, max_concurrent

    file = tmp_path / "s.yaml"
    file.write_text("tasks: [rte]\nratios: [0.5]\nstrategies: [none]\nseeds: [0]\n"
                    "resources: {max_concurrent: 3}\n")
    sweep = load_sweep(file)
    assert max_concurrent(build_parser().parse_args([]), sweep) == 3
    assert max_concurrent(build_parser().parse_args(["--max-concurrent", "1"]), sweep) == 1
    file.write_text("tasks: [rte]\nratios: [0.5]\nstrategies: [none]\nseeds: [0]\n")
    assert max_concurrent(build_parser().parse_args([]), load_sweep(file)) is None
