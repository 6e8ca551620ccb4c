"""Calibration metrics (trainers/calibration.py) on numbers worked out by hand, against
torchmetrics' ECE where it is installed, and logged by a real cell."""

from __future__ import annotations

import math

import pytest
import torch

from trainers.calibration import (
    brier_score,
    calibration,
    expected_calibration_error,
    negative_log_likelihood,
)


def test_by_hand() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    targets = torch.tensor([0, 1, 1, 1])
    # confidences 0.9 (right), 0.6 (wrong), 0.7 (right), 0.8 (right); 15 bins of width 1/15:
    # each in its own bin -> ECE = 1/4 (0.1 + 0.6 + 0.3 + 0.2) = 0.3
    assert expected_calibration_error(probs, targets) == pytest.approx(0.3)
    # two bins: (0, .5], (.5, 1]: all four in bin 2, acc 3/4, mean conf 0.75 -> 0
    assert expected_calibration_error(probs, targets, bins=2) == pytest.approx(0.0, abs=1e-7)
    nll = -(math.log(0.9) + math.log(0.4) + math.log(0.7) + math.log(0.8)) / 4
    assert negative_log_likelihood(probs, targets) == pytest.approx(nll)
    brier = ((0.1**2 + 0.1**2) + (0.6**2 + 0.6**2) + (0.3**2 + 0.3**2) + (0.2**2 + 0.2**2)) / 4
    assert brier_score(probs, targets) == pytest.approx(brier)
    assert set(calibration(probs, targets)) == {"ece", "nll", "brier"}


def test_matches_torchmetrics() -> None:
    tm = pytest.importorskip("torchmetrics.functional.classification")
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(500, 7) * 2, dim=1)
    targets = torch.randint(0, 7, (500,))
    expected = tm.multiclass_calibration_error(probs, targets, num_classes=7, n_bins=15,
                                               norm="l1")
    assert expected_calibration_error(probs, targets) == pytest.approx(float(expected),
                                                                       abs=1e-5)


def test_a_cell_logs_the_selected_epochs_calibration(tmp_path, data_dir, cache_dir) -> None:
    from trainers.config import CellConfig
    from trainers.loop import train_cell

    config = CellConfig(task="rte", ratio=0.05, strategy="mixup", model="random:tiny",
                        mode="finetune", epochs=2, max_length=32, data_dir=str(data_dir),
                        cache_dir=str(cache_dir), seed=0).validate()
    trained = train_cell(config, checkpoint_dir=tmp_path / "ckpt", log=lambda _: None)
    final = trained.history[-1]
    for key in ("test_ece", "test_nll", "test_brier"):
        assert key in final and math.isfinite(final[key])
    assert final["test_ece"] == trained.history[int(final["selected_epoch"]) - 1]["ece"]
    import json

    saved = json.loads((tmp_path / "ckpt" / "artifacts" / "test_predictions.json").read_text())
    probs = torch.tensor(saved["probs"])
    assert probs.shape == (len(saved["gold"]), 2)
    pred = torch.tensor(saved["pred"]).view(-1, 1)
    assert torch.equal(probs.gather(1, pred).squeeze(1), probs.max(dim=1).values)  # argmax
