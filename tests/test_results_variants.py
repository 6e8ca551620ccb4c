"""The report on sweeps other than the paper's setting, each in its own real sqlite store:
no launch manifest, runs that predate fingerprints and results, a validation-only sweep, a
frozen CPU sweep whose arms ran different update paths, and several arms of one algorithm."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from results.report import main
from tests.test_results_report import (
    cell_params,
    cell_tags,
    log_cell,
    markdown_rows,
    predictions_for,
    section,
)


def _store(tmp: Path, name: str) -> tuple[MlflowClient, str, str]:
    uri = f"sqlite:///{tmp}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment(name, artifact_location=(tmp / "artifacts").as_uri())
    return client, exp_id, uri


def _report(uri: str, name: str, out: Path) -> Path:
    assert main(["--experiment", name, "--tracking-uri", uri, "--out", str(out),
                 "--no-log"]) == 0
    return out


def _result(correct: int, n: int, updates: float = 10.0) -> dict[str, float]:
    return {"selected_epoch": 1.0, "selected_updates": updates, "updates": updates,
            "stopped_early": 0.0, "test_accuracy": correct / n, "test_correct": float(correct),
            "test_examples": float(n)}


def test_without_manifest_latest_fingerprint_wins_and_legacy_runs_fall_back(
        tmp_path: Path) -> None:
    client, exp_id, uri = _store(tmp_path, "legacy")
    # rte/0.25/none: configuration "aaaa" first, then "bbbb" (latest started: current)
    for fingerprint, correct in (("aaaa000000000000", 100), ("bbbb000000000000", 150)):
        for seed in ("0", "1"):
            tags = cell_tags("rte", "0.25", "none", seed, fingerprint=fingerprint)
            log_cell(client, exp_id, tags, cell_params("rte", "0.25", "none"),
                     [{"accuracy": correct / 277}], _result(correct, 277), None)
    # rte/0.25/batchmixup: runs from before fingerprints and results (last-epoch accuracy)
    for seed, acc in (("0", 0.60), ("1", 0.62)):
        tags = cell_tags("rte", "0.25", "batchmixup", seed)
        del tags["fingerprint"]
        log_cell(client, exp_id, tags, {"model": "minilm", "epochs": "3"},
                 [{"accuracy": acc - 0.1}, {"accuracy": acc}], None, None)
    out = _report(uri, "legacy", tmp_path / "report")
    table = pd.read_csv(out / "table1.csv")
    none = table[table["strategy"] == "none"].iloc[0]
    assert none["n"] == 2 and none["mean"] == pytest.approx(100 * 150 / 277)
    legacy = table[table["strategy"] == "batchmixup"].iloc[0]
    assert legacy["mean"] == pytest.approx(61.0) and legacy["metric"] == "test_last_epoch"
    others = pd.read_csv(out / "configurations.csv", dtype=str)
    assert list(others["fingerprint"]) == ["aaaa000000000000"]
    text = (out / "report.md").read_text()
    assert "predate `test_accuracy`" in text
    assert "configuration of its latest-started run" in text
    paired = pd.read_csv(out / "paired.csv")
    assert paired.iloc[0]["verdict"] == "not tested: n < 3 paired seeds"
    assert paired.iloc[0]["mean_diff"] == pytest.approx(61.0 - 100 * 150 / 277)


def test_validation_only_sweep_reports_validation_accuracy(tmp_path: Path) -> None:
    client, exp_id, uri = _store(tmp_path, "val-only")
    vals = {"none": [0.50, 0.52, 0.54], "batchmixup": [0.60, 0.61, 0.66]}
    for arm, accs in vals.items():
        for seed, acc in enumerate(accs):
            params = cell_params("banking77", "0.01", arm, eval_split="val", n_val="50")
            epochs = [{"val_accuracy": acc - 0.1, "val_loss": 1.0},
                      {"val_accuracy": acc, "val_loss": 0.9}]
            result = {"selected_epoch": 2.0, "selected_updates": 8.0, "updates": 8.0,
                      "stopped_early": 0.0, "converged": 0.0, "selected_val_accuracy": acc,
                      "selected_val_loss": 0.9}
            log_cell(client, exp_id, cell_tags("banking77", "0.01", arm, str(seed)), params,
                     epochs, result, None)
    out = _report(uri, "val-only", tmp_path / "report")
    table = pd.read_csv(out / "table1.csv")
    for arm, accs in vals.items():
        row = table[table["strategy"] == arm].iloc[0]
        assert row["mean"] == pytest.approx(100 * statistics.mean(accs))
        assert row["metric"] == "val"
    text = (out / "report.md").read_text()
    assert "## Table 1: validation accuracy (%)" in text
    assert "—" not in markdown_rows(section(out, "Table 1"), ["1%", "none"])[0][2]
    paired = pd.read_csv(out / "paired.csv").iloc[0]
    assert paired["per_seed"] == "+5, +4, +6 of 50"  # counts from accuracy × n_val
    assert paired["test"] == "t-test" and paired["metric"] == "val"
    assert (out / "accuracy_curves.png").is_file()


def test_frozen_cpu_sweep_paths_and_paper_as_reference(tmp_path: Path) -> None:
    client, exp_id, uri = _store(tmp_path, "frozen")
    rng = np.random.default_rng(1)
    gold = [int(v) for v in rng.integers(0, 2, 277)]
    seconds = {"none": 0.002, "mixup": 0.006, "batchmixup": 0.03}
    paths = {"none": "fused", "mixup": "fused", "batchmixup": "autograd"}
    for arm in seconds:
        for seed in ("0", "1", "2"):
            params = cell_params("rte", "0.01", arm, model="minilm", mode="frozen",
                                 update_path=paths[arm])
            correct = 140 + int(rng.integers(0, 10))
            epochs = [{"accuracy": correct / 277, "epoch_seconds": seconds[arm] * f}
                      for f in (1.0, 1.1)]
            log_cell(client, exp_id, cell_tags("rte", "0.01", arm, seed), params, epochs,
                     _result(correct, 277), predictions_for(gold, correct, rng), tmp=tmp_path)
    out = _report(uri, "frozen", tmp_path / "report")
    eff = pd.read_csv(out / "efficiency.csv").set_index("strategy")
    assert eff.loc["mixup", "ratio_to_none"] == pytest.approx(0.006 / 0.002)
    assert math.isnan(eff.loc["batchmixup", "ratio_to_none"])
    assert eff.loc["batchmixup", "note"] == "none ran fused: not comparable"
    assert eff["paper_ratio"].isna().all()  # frozen rows never get the paper's claim
    rows = markdown_rows(section(out, "Efficiency"), ["rte", "1%", "none"])
    assert rows[0][9] == "2.1 ± 0.0 ms"  # small times in ms
    table = pd.read_csv(out / "table1.csv")
    assert not table["paper_setting"].any() and table["diff"].isna().all()
    text = (out / "report.md").read_text()
    assert "### Paper, Table 1 (RoBERTa-large fine-tuned; not this setting)" in text
    assert "Δ (pp)" not in section(out, "Table 1")
    assert "**not this setting** (model minilm, mode frozen" in section(out, "Setup")
    reference = pd.read_csv(out / "paper_reference.csv")
    assert list(reference["system"][:4]) == ["none", "mixup", "nonlinear_mixup", "batchmixup"]
    assert reference.loc[0, "rte"] == "50.41 ± 0.29"


def test_arms_of_one_algorithm_are_separate_rows(tmp_path: Path) -> None:
    """A sweep that runs mixup twice (faithful as ``mixup``, shared as ``mixup_shared``) and
    batchmixup twice gets one Table 1 row per arm, each the mean of its own runs."""
    client, exp_id, uri = _store(tmp_path, "arms")
    arms = {  # arm -> (algorithm, extra params, correct per seed, epoch seconds)
        "none": ("none", {}, [40, 42], 1.0),
        "mixup": ("mixup", {"mixup_variant": "faithful", "mix_samples": "15"}, [50, 52], 15.0),
        "mixup_shared": ("mixup", {"mixup_variant": "shared", "mix_samples": "15"}, [30, 34],
                         1.1),
        "batchmixup": ("batchmixup", {"loss": "soft_ce"}, [45, 47], 1.0),
        "batchmixup_dot": ("batchmixup", {"loss": "dot"}, [20, 22], 1.0),
    }
    for arm, (algorithm, extra, corrects, secs) in arms.items():
        for seed, correct in enumerate(corrects):
            tags = cell_tags("banking77", "0.01", algorithm, str(seed), arm=arm,
                             cell=f"banking77/0.01/{arm}/{seed}", fingerprint=f"fp-{arm}")
            params = cell_params("banking77", "0.01", algorithm, arm=arm, **extra)
            log_cell(client, exp_id, tags, params,
                     [{"accuracy": correct / 100, "epoch_seconds": secs}],
                     _result(correct, 100), None)
    out = _report(uri, "arms", tmp_path / "report")
    table = pd.read_csv(out / "table1.csv")
    for arm, (_, _, corrects, _) in arms.items():
        row = table[table["strategy"] == arm].iloc[0]
        assert row["n"] == 2 and row["mean"] == pytest.approx(statistics.mean(corrects))
    assert "finished runs of the current configuration" not in (out / "report.md").read_text()
    eff = pd.read_csv(out / "efficiency.csv", dtype={"mixup_variant": str, "mix_samples": str})
    paper_ratio = dict(zip(eff["strategy"], eff["paper_ratio"], strict=True))
    assert paper_ratio["mixup"] == pytest.approx(20 / 1.5)  # faithful, 15 samples: the claim
    assert math.isnan(paper_ratio["mixup_shared"])  # one update per batch: not the claim
    assert paper_ratio["batchmixup_dot"] == pytest.approx(1.0)
    setup = section(out, "Setup")
    arms_rows = {r[0]: r for r in markdown_rows(setup, []) if r[0] in arms}
    header = markdown_rows(setup, ["Arm"])[0]
    assert arms_rows["mixup_shared"][header.index("mixup variant")] == "shared"
    assert arms_rows["batchmixup_dot"][header.index("loss")] == "dot"
