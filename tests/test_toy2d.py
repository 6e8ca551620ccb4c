"""Tests of the Figure 1 toy task: seeded 2-D Gaussian data, decision grid, a short training run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from trainers.model import CellModel
from trainers.toy2d import (
    COVARIANCES,
    LABELS,
    MEANS,
    ToyExample,
    decision_grid,
    load_toy2d,
    write_decision_grid,
)


def _points(examples: list[ToyExample]) -> np.ndarray:
    return np.array([e.features for e in examples])


def test_same_seed_gives_identical_data() -> None:
    first, second = load_toy2d(3), load_toy2d(3)
    assert first.train == second.train
    assert first.test == second.test
    assert first.fingerprint() == second.fingerprint()


def test_seeds_change_training_points_but_not_test_set() -> None:
    a, b = load_toy2d(0), load_toy2d(1)
    assert not np.allclose(_points(a.train), _points(b.train))
    assert a.test == b.test  # fixed test set, independent of the cell seed
    assert a.fingerprint() != b.fingerprint()


def test_task_metadata_and_balanced_shots() -> None:
    data = load_toy2d(0)
    assert data.name == "toy2d"
    assert data.labels == ["orange", "blue"] == list(LABELS)
    assert data.is_pair is False
    assert data.source == "synthetic:toy2d"
    assert len(data.train) == 10
    assert [e.label for e in data.train].count(0) == 5
    assert [e.label for e in data.train].count(1) == 5
    assert len(data.test) == 4000
    assert [e.label for e in data.test].count(1) == 2000
    example = data.train[0]
    assert isinstance(example.features, tuple) and len(example.features) == 2
    assert all(isinstance(v, float) for v in example.features)
    assert example.text_pair is None and isinstance(example.text, str)


def test_custom_sizes_and_sample_statistics() -> None:
    data = load_toy2d(0, shots=3, test_per_class=50)
    assert len(data.train) == 6 and len(data.test) == 100
    test = load_toy2d(0).test
    pts, labels = _points(test), np.array([e.label for e in test])
    for label in (0, 1):
        np.testing.assert_allclose(pts[labels == label].mean(axis=0), MEANS[label], atol=0.25)
        np.testing.assert_allclose(np.cov(pts[labels == label].T), COVARIANCES[label],
                                   rtol=0.15, atol=0.15)
    with pytest.raises(ValueError):
        load_toy2d(0, shots=0)


def test_decision_grid_shape_range_and_json(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = CellModel(2, 2, mlp_hidden=8, dropout=0.5)
    model.train()
    data = load_toy2d(0)
    x = torch.tensor([e.features for e in data.train], dtype=torch.float32)
    y = torch.tensor([e.label for e in data.train])
    grid = decision_grid(model, x, y, resolution=20)
    assert model.training  # the mode is restored
    assert len(grid["x"]) == len(grid["y"]) == 20
    probs = np.array(grid["prob_blue"])
    assert probs.shape == (20, 20)
    assert ((probs >= 0) & (probs <= 1)).all()
    assert grid["train"]["label"] == y.tolist()
    assert np.allclose(grid["train"]["x"], x.numpy())
    # covers the training points and the means, with the margin
    for axis, key in ((0, "x"), (1, "y")):
        low = min(x[:, axis].min().item(), MEANS[:, axis].min())
        high = max(x[:, axis].max().item(), MEANS[:, axis].max())
        assert grid[key][0] == pytest.approx(low - 1.0)
        assert grid[key][-1] == pytest.approx(high + 1.0)
    assert np.allclose(grid["means"], MEANS) and np.allclose(grid["covariances"], COVARIANCES)
    json.dumps(grid)
    # eval mode: dropout off, so the grid is deterministic
    assert decision_grid(model, x, y, resolution=20)["prob_blue"] == grid["prob_blue"]

    path = write_decision_grid(model, x, y, tmp_path / "artifacts" / "decision_grid.json")
    loaded = json.loads(path.read_text())
    assert np.array(loaded["prob_blue"]).shape == (150, 150)
    assert all(round(v, 4) == v for v in loaded["x"])


def test_short_training_run_learns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("BATCHMIXUP_CACHE_DIR", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: extra intra-op threads only add contention
    try:
        _train_both(tmp_path)
    finally:
        torch.set_num_threads(threads)


def _train_both(tmp_path: Path) -> None:
    from trainers.config import CellConfig
    from trainers.loop import train_cell

    for strategy in ("none", "batchmixup"):
        config = CellConfig(task="toy2d", strategy=strategy, seed=2, mode="frozen", mlp_hidden=16,
                            epochs=15, batch_size=10, head_lr=3e-2, dropout=0.0, device="cpu",
                            temperature=0.2)
        result = train_cell(config, checkpoint_dir=tmp_path / strategy, log=lambda _: None)
        assert len(result.history) == 15
        assert result.final["accuracy"] > 0.6, (strategy, result.final)
        grid_file = tmp_path / strategy / "artifacts" / "decision_grid.json"
        # written by the loop after the final epoch
        assert len(json.loads(grid_file.read_text())["prob_blue"]) == 150
