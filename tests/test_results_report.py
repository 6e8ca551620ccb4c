"""Store-level tests of ``results.report`` on a real MLflow sqlite store.

One module-scoped store holds a small sweep written with exactly the cell-run schema:
2 tasks × 2 ratios × 4 strategies × 3 seeds with 3 epochs each, minus one whole missing cell
(banking77 / 1.0 / nonlinear_mixup), plus one FAILED run and a few phase=search trials.
Expected numbers are computed here from the values that were logged.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from results import paper
from results.report import ReportError, main, write_report
from results.runs import resolve_tracking_uri

EXPERIMENT = "sweep-test"
TASKS = ("rte", "banking77")
RATIOS = ("1.0", "0.25")
STRATEGIES = ("none", "mixup", "nonlinear_mixup", "batchmixup")
SEEDS = ("0", "1", "2")
EPOCHS = 3
MISSING = ("banking77", "1.0", "nonlinear_mixup")
FAILED = ("rte", "0.25", "mixup", "2")
FAILURE_REASON = "CUDA out of memory in epoch 2"
HARDWARE = "NVIDIA H100 80GB HBM3"
# Seconds per epoch by strategy; mixup is the faithful 15-sample variant.
BASE_SECONDS = {"none": 10.0, "mixup": 130.0, "nonlinear_mixup": 40.0, "batchmixup": 10.5}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class Store:
    """The fixture store and what was logged to it."""

    uri: str
    tmp: Path
    final_acc: dict[tuple[str, str, str, str], float] = field(default_factory=dict)
    epoch_seconds: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)
    search_val: dict[tuple[str, str, str], list[tuple[float, str, str]]] = field(
        default_factory=dict
    )


def _params(strategy: str, **extra: str) -> list[Param]:
    values = {
        "model": "roberta-large",
        "mode": "finetune",
        "alpha": "0.4",
        "mix_samples": "15" if strategy == "mixup" else "4",
        "mixup_variant": "faithful" if strategy == "mixup" else "shared",
        "loss": "dot",
        "temperature": "1.0",
        "lr": "1e-5",
        "epochs": str(EPOCHS),
        "batch_size": "16",
    }
    values.update(extra)
    return [Param(k, v) for k, v in values.items()]


def _tags(task: str, ratio: str, strategy: str, seed: str, **extra: str) -> dict[str, str]:
    tags = {
        "kind": "cell",
        "task": task,
        "ratio": ratio,
        "strategy": strategy,
        "seed": seed,
        "sweep": EXPERIMENT,
        "phase": "final",
        "hardware": HARDWARE,
        "git_commit": "abc1234",
        "ray_trial_id": f"trial_{task}_{ratio}_{strategy}_{seed}",
        "cell": f"{task}/{ratio}/{strategy}/{seed}",
    }
    tags.update(extra)
    return tags


def _build_store(tmp: Path) -> Store:
    store = Store(uri=f"sqlite:///{tmp}/mlflow.db", tmp=tmp)
    client = MlflowClient(tracking_uri=store.uri)
    exp_id = client.create_experiment(EXPERIMENT, artifact_location=(tmp / "artifacts").as_uri())
    client.create_experiment("empty-sweep", artifact_location=(tmp / "artifacts2").as_uri())
    rng = np.random.default_rng(0)
    strategy_bonus = {"none": 0.0, "mixup": 0.01, "nonlinear_mixup": 0.015, "batchmixup": 0.03}
    for task in TASKS:
        for ratio in RATIOS:
            for strategy in STRATEGIES:
                if (task, ratio, strategy) == MISSING:
                    continue
                for seed in SEEDS:
                    name = f"{task}/{ratio}/{strategy}/{seed}"
                    failed = (task, ratio, strategy, seed) == FAILED
                    extra = {"failure_reason": FAILURE_REASON} if failed else {}
                    run = client.create_run(
                        exp_id, run_name=name, tags=_tags(task, ratio, strategy, seed, **extra)
                    )
                    base = 0.6 + 0.2 * float(ratio) + strategy_bonus[strategy]
                    metrics = []
                    for epoch in range(1, (1 if failed else EPOCHS) + 1):
                        acc = float(base - 0.05 * (EPOCHS - epoch) + rng.normal(0, 0.02))
                        secs = float(BASE_SECONDS[strategy] * float(ratio) * rng.uniform(0.9, 1.1))
                        values = {
                            "accuracy": acc,
                            "macro_f1": acc - 0.02,
                            "train_loss": 1.0 / epoch,
                            "epoch_seconds": secs,
                            "examples_per_second": 1000.0 / secs,
                        }
                        metrics += [Metric(k, v, epoch, epoch) for k, v in values.items()]
                        if not failed:
                            store.epoch_seconds.setdefault((task, ratio, strategy), []).append(secs)
                    if not failed:
                        store.final_acc[(task, ratio, strategy, seed)] = acc
                    client.log_batch(run.info.run_id, metrics=metrics, params=_params(strategy))
                    client.set_terminated(run.info.run_id, "FAILED" if failed else "FINISHED")

    # Search trials for rte/0.25: they must stay out of Table 1. One also logs a (bogus)
    # accuracy of 0.99 to prove the phase tag, not the metric name, keeps it out.
    trials = [
        ("batchmixup", "0.1", "0.5", 0.70),
        ("batchmixup", "0.4", "1.0", 0.78),
        ("batchmixup", "0.8", "2.0", 0.74),
        ("mixup", "0.2", "1.0", 0.69),
    ]
    for i, (strategy, alpha, temperature, val) in enumerate(trials):
        tags = _tags("rte", "0.25", strategy, "0", phase="search", ray_trial_id=f"search_{i}")
        run = client.create_run(exp_id, run_name=f"rte/0.25/{strategy}/0", tags=tags)
        metrics = [Metric("val_accuracy", val - 0.1, 0, 1), Metric("val_accuracy", val, 0, 2)]
        if i == 0:
            metrics.append(Metric("accuracy", 0.99, 0, 2))
        params = _params(strategy, alpha=alpha, temperature=temperature)
        client.log_batch(run.info.run_id, metrics=metrics, params=params)
        client.set_terminated(run.info.run_id, "FINISHED")
        store.search_val.setdefault(("rte", "0.25", strategy), []).append((val, alpha, temperature))
    return store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return _build_store(tmp_path_factory.mktemp("mlflow"))


@pytest.fixture(scope="module")
def report_dir(store: Store) -> Path:
    out = store.tmp / "report"
    status = main(["--experiment", EXPERIMENT, "--tracking-uri", store.uri, "--out", str(out)])
    assert status == 0
    return out


def _table1(report_dir: Path) -> pd.DataFrame:
    return pd.read_csv(report_dir / "table1.csv", dtype={"seeds": str})


def _row(table: pd.DataFrame, task: str, ratio: str, strategy: str) -> pd.Series:
    rows = table[
        (table["task"] == task)
        & np.isclose(table["ratio"], float(ratio))
        & (table["strategy"] == strategy)
    ]
    assert len(rows) == 1
    return rows.iloc[0]


def _markdown_row(report_dir: Path, first_cells: list[str]) -> list[str]:
    """Cells of the first Table 1 markdown row that starts with ``first_cells``."""
    prefix = "| " + " | ".join(first_cells) + " |"
    for line in (report_dir / "report.md").read_text().splitlines():
        if line.startswith(prefix):
            return [cell.strip() for cell in line.strip().strip("|").split("|")]
    raise AssertionError(f"no row starting {prefix!r}")


def test_table1_numbers_are_mean_and_std_of_final_accuracies(
    store: Store, report_dir: Path
) -> None:
    table = _table1(report_dir)
    for task in TASKS:
        for ratio in RATIOS:
            for strategy in STRATEGIES:
                values = [
                    100 * store.final_acc[(task, ratio, strategy, seed)]
                    for seed in SEEDS
                    if (task, ratio, strategy, seed) in store.final_acc
                ]
                row = _row(table, task, ratio, strategy)
                assert row["n"] == len(values)
                if values:
                    assert row["mean"] == pytest.approx(statistics.mean(values))
                    assert row["std"] == pytest.approx(statistics.stdev(values))
    # The markdown shows the same numbers as "mean ± std (n)".
    values = [100 * store.final_acc[("rte", "1.0", "none", s)] for s in SEEDS]
    cells = _markdown_row(report_dir, ["100%", "none"])
    expected = f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} (3)"
    assert cells[2].strip("*") == expected


def test_best_strategy_is_bold(store: Store, report_dir: Path) -> None:
    table = _table1(report_dir)
    for (task, ratio), group in table[table["n"] > 0].groupby(["task", "ratio"]):
        best = group.loc[group["mean"].idxmax(), "strategy"]
        assert list(group.loc[group["best"], "strategy"]) == [best]
        label = "100%" if ratio == 1.0 else "25%"
        cells = _markdown_row(report_dir, [label, best])
        column = 2 if task == "rte" else 5
        assert cells[column].startswith("**") and cells[column].endswith("**")


def test_paper_column_and_difference(store: Store, report_dir: Path) -> None:
    table = _table1(report_dir)
    for task in TASKS:
        for ratio in RATIOS:
            for strategy in STRATEGIES:
                row = _row(table, task, ratio, strategy)
                mean, std = paper.TABLE1[(float(ratio), strategy)][task]
                assert row["paper_mean"] == mean
                assert row["paper_std"] == std
                if row["n"]:
                    assert row["diff"] == pytest.approx(row["mean"] - mean)
    cells = _markdown_row(report_dir, ["100%", "none"])
    assert cells[3] == "80.91 ± 1.47"
    assert cells[6] == "93.77 ± 0.44"
    baseline = _markdown_row(report_dir, ["—", "random/majority (paper)"])
    assert baseline[3] == "50.16" and baseline[6] == "1.29"


def test_missing_cell_is_dash_and_listed(report_dir: Path) -> None:
    cells = _markdown_row(report_dir, ["100%", "nonlinear_mixup"])
    assert cells[5] == "—"  # banking77 (ours)
    assert cells[6] == "94.29 ± 1.01"  # the paper's value is still shown
    assert cells[7] == "—"
    missing = pd.read_csv(report_dir / "missing.csv", dtype={"seed": str})
    no_run = missing[missing["latest_status"] == "no run"]
    assert set(zip(no_run["task"], no_run["strategy"], no_run["seed"], strict=True)) == {
        ("banking77", "nonlinear_mixup", seed) for seed in SEEDS
    }
    assert (missing["latest_status"] == "FAILED").sum() == 1


def test_failed_run_listed_with_reason_and_not_averaged(store: Store, report_dir: Path) -> None:
    failed = pd.read_csv(report_dir / "failed.csv", dtype={"seed": str})
    assert list(failed["run_name"]) == ["/".join(FAILED)]
    assert failed.loc[0, "status"] == "FAILED"
    assert failed.loc[0, "failure_reason"] == FAILURE_REASON
    text = (report_dir / "report.md").read_text()
    assert f"| {'/'.join(FAILED)} | FAILED | {FAILURE_REASON} | no |" in text
    assert _row(_table1(report_dir), *FAILED[:3])["n"] == 2


def test_search_runs_reported_separately(store: Store, report_dir: Path) -> None:
    row = _row(_table1(report_dir), "rte", "0.25", "batchmixup")
    values = [100 * store.final_acc[("rte", "0.25", "batchmixup", s)] for s in SEEDS]
    assert row["n"] == 3
    assert row["mean"] == pytest.approx(statistics.mean(values))
    search = pd.read_csv(report_dir / "search.csv", dtype=str)
    assert len(search) == 2
    for (task, ratio, strategy), trials in store.search_val.items():
        got = search[search["strategy"] == strategy].iloc[0]
        best_val, alpha, temperature = max(trials)
        assert got["task"] == task and float(got["ratio"]) == float(ratio)
        assert int(got["trials"]) == len(trials)
        assert float(got["best_val_accuracy"]) == pytest.approx(100 * best_val)
        assert got["alpha"] == alpha
        if strategy == "batchmixup":  # the only strategy with a temperature
            assert got["temperature"] == temperature
        else:
            assert pd.isna(got["temperature"])
    assert "## Search phase" in (report_dir / "report.md").read_text()


def test_efficiency_ratios_equal_logged_epoch_seconds(store: Store, report_dir: Path) -> None:
    eff = pd.read_csv(
        report_dir / "efficiency.csv", dtype={"mixup_variant": str, "mix_samples": str}
    )
    for (task, ratio, strategy), seconds in store.epoch_seconds.items():
        rows = eff[
            (eff["task"] == task)
            & np.isclose(eff["ratio"], float(ratio))
            & (eff["strategy"] == strategy)
        ]
        assert len(rows) == 1
        row = rows.iloc[0]
        none = statistics.mean(store.epoch_seconds[(task, ratio, "none")])
        assert row["mean_epoch_seconds"] == pytest.approx(statistics.mean(seconds))
        assert row["ratio_to_none"] == pytest.approx(statistics.mean(seconds) / none)
        assert row["epochs"] == len(seconds)
        assert row["hardware"] == HARDWARE
        if strategy == "mixup":
            assert (row["mixup_variant"], row["mix_samples"]) == ("faithful", "15")
            assert row["paper_ratio"] == pytest.approx(20 / 1.5)
        elif strategy == "nonlinear_mixup":
            assert (row["mixup_variant"], row["mix_samples"]) == ("shared", "4")
            assert math.isnan(row["paper_ratio"])  # the paper's claim is for 15 samples
        else:
            assert pd.isna(row["mixup_variant"])  # not part of the key for these strategies
            assert row["paper_ratio"] == pytest.approx(1.0)
    assert HARDWARE in (report_dir / "report.md").read_text()


def test_paired_comparison_by_seed(store: Store, report_dir: Path) -> None:
    paired = pd.read_csv(report_dir / "paired.csv")
    for task in TASKS:
        for ratio in RATIOS:
            for baseline in ("none", "mixup"):
                seeds = [
                    s
                    for s in SEEDS
                    if (task, ratio, "batchmixup", s) in store.final_acc
                    and (task, ratio, baseline, s) in store.final_acc
                ]
                diffs = [
                    100
                    * (
                        store.final_acc[(task, ratio, "batchmixup", s)]
                        - store.final_acc[(task, ratio, baseline, s)]
                    )
                    for s in seeds
                ]
                row = paired[
                    (paired["task"] == task)
                    & np.isclose(paired["ratio"], float(ratio))
                    & (paired["baseline"] == baseline)
                ].iloc[0]
                assert row["n"] == len(diffs)
                assert row["mean_diff"] == pytest.approx(statistics.mean(diffs))
                assert row["wins"] == sum(d > 0 for d in diffs)
                t = statistics.mean(diffs) / (statistics.stdev(diffs) / math.sqrt(len(diffs)))
                assert row["t"] == pytest.approx(t)
                assert 0.0 <= row["p_value"] <= 1.0
                if row["n"] < 5 and row["p_value"] >= 0.05:
                    assert "cannot establish significance" in row["verdict"]


def test_plots_are_valid_pngs(report_dir: Path) -> None:
    pngs = sorted(report_dir.glob("*.png"))
    names = {p.name for p in pngs}
    assert {"accuracy_vs_ratio.png", "epoch_seconds.png", "curves_rte_1.png"} <= names
    for png in pngs:
        assert png.read_bytes()[:8] == PNG_MAGIC
        image = matplotlib.image.imread(png)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
        assert f"]({png.name})" in (report_dir / "report.md").read_text()


def test_curve_cell_option(store: Store, tmp_path: Path) -> None:
    report = write_report(
        EXPERIMENT, store.uri, tmp_path, curve_cell=("banking77", 0.25), log_artifacts=False
    )
    assert (tmp_path / "curves_banking77_0.25.png").read_bytes()[:8] == PNG_MAGIC
    assert report == tmp_path / "report.md"


def test_artifacts_logged_to_one_summary_run(store: Store, report_dir: Path) -> None:
    client = MlflowClient(tracking_uri=store.uri)
    exp = client.get_experiment_by_name(EXPERIMENT)

    def summary_runs() -> list:
        return client.search_runs([exp.experiment_id], filter_string="tags.kind = 'summary'")

    assert len(summary_runs()) == 1
    first = {f.path for f in client.list_artifacts(summary_runs()[0].info.run_id, "report")}
    assert first == {f"report/{p.name}" for p in report_dir.iterdir()}
    # Rerun into another directory with another curve cell: the same summary run is reused
    # and its artifacts are replaced (the old curve plot is gone).
    report = write_report(EXPERIMENT, store.uri, store.tmp / "report2", ("banking77", 0.25))
    assert report.name == "report.md"
    runs = summary_runs()
    assert len(runs) == 1
    artifacts = {f.path for f in client.list_artifacts(runs[0].info.run_id, "report")}
    expected = {f"report/{p.name}" for p in (store.tmp / "report2").iterdir()}
    assert {"report/report.md", "report/table1.csv", "report/curves_banking77_0.25.png"} <= expected
    assert artifacts == expected
    assert "report/curves_rte_1.png" in first - artifacts
    # Summary runs are never read as cells.
    assert len(pd.read_csv(store.tmp / "report2" / "cells.csv")) == len(
        pd.read_csv(report_dir / "cells.csv")
    )


def test_unknown_experiment_exits_2_and_keeps_report(
    store: Store, report_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "kept"
    out.mkdir()
    (out / "report.md").write_text("earlier good report")
    argv = ["--experiment", "no-such-sweep", "--tracking-uri", store.uri, "--out", str(out)]
    assert main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    err = [line for line in lines if line.startswith("results.report:")]
    assert len(err) == 1 and err[0].startswith("results.report: error: unknown experiment")
    assert "'no-such-sweep'" in err[0] and EXPERIMENT in err[0]  # lists the known ones
    assert (out / "report.md").read_text() == "earlier good report"
    assert sorted(p.name for p in out.iterdir()) == ["report.md"]


def test_empty_experiment_and_missing_store(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert (
        main(["--experiment", "empty-sweep", "--tracking-uri", store.uri, "--out", str(out)]) == 2
    )
    assert "has no cell runs" in capsys.readouterr().err
    assert not out.exists()
    missing_db = tmp_path / "nowhere.db"
    with pytest.raises(ReportError, match="no MLflow store"):
        write_report(EXPERIMENT, f"sqlite:///{missing_db}", out)
    assert not missing_db.exists()


def test_tracking_uri_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None) == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env.db")
    assert resolve_tracking_uri(None) == "sqlite:///env.db"
    assert resolve_tracking_uri("sqlite:///flag.db") == "sqlite:///flag.db"


def test_help_describes_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--experiment",
        "--tracking-uri",
        "--out",
        "--curve-cell",
        "MLFLOW_TRACKING_URI",
    ):
        assert option in text


def test_arms_of_one_algorithm_are_separate_rows(tmp_path: Path) -> None:
    """A sweep that runs mixup twice (faithful as ``mixup``, shared as ``mixup_shared``) and
    batchmixup twice gets one Table 1 row per arm, each the mean of its own runs."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment("arms", artifact_location=(tmp_path / "a").as_uri())
    arms = {  # arm -> (algorithm, extra params, accuracy per seed, epoch seconds)
        "none": ("none", {}, [0.40, 0.42], 1.0),
        "mixup": ("mixup", {"mixup_variant": "faithful", "mix_samples": "15"}, [0.50, 0.52],
                  15.0),
        "mixup_shared": ("mixup", {"mixup_variant": "shared", "mix_samples": "15"},
                         [0.30, 0.34], 1.1),
        "batchmixup": ("batchmixup", {"loss": "soft_ce"}, [0.45, 0.47], 1.0),
        "batchmixup_dot": ("batchmixup", {"loss": "dot"}, [0.20, 0.22], 1.0),
    }
    for arm, (algorithm, extra, accs, secs) in arms.items():
        for seed, acc in enumerate(accs):
            tags = _tags("banking77", "0.01", algorithm, str(seed), arm=arm,
                         cell=f"banking77/0.01/{arm}/{seed}")
            run = client.create_run(exp_id, run_name=f"banking77/0.01/{arm}/{seed}", tags=tags)
            metrics = [Metric(k, v, 0, 1) for k, v in
                       {"accuracy": acc, "epoch_seconds": secs,
                        "examples_per_second": 100 / secs}.items()]
            client.log_batch(run.info.run_id, metrics=metrics,
                             params=_params(algorithm, **extra))
            client.set_terminated(run.info.run_id, "FINISHED")
    out = tmp_path / "report"
    assert main(["--experiment", "arms", "--tracking-uri", uri, "--out", str(out),
                 "--no-log"]) == 0
    table = _table1(out)
    for arm, (_, _, accs, _) in arms.items():
        row = _row(table, "banking77", "0.01", arm)
        assert row["n"] == 2
        assert row["mean"] == pytest.approx(100 * statistics.mean(accs))
    assert "finished runs; the latest one is used" not in (out / "report.md").read_text()
    eff = pd.read_csv(out / "efficiency.csv", dtype={"mixup_variant": str, "mix_samples": str})
    paper_ratio = dict(zip(eff["strategy"], eff["paper_ratio"], strict=True))
    assert paper_ratio["mixup"] == pytest.approx(20 / 1.5)  # faithful, 15 samples: the claim
    assert math.isnan(paper_ratio["mixup_shared"])  # one update per batch: not the claim
    assert paper_ratio["batchmixup_dot"] == pytest.approx(1.0)
