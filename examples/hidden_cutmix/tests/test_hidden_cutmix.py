"""The example plug-in's own tests: its mixing is what its docstring says, and the project
finds it (by its entry point once installed, by ``module:NAME`` always)."""

from __future__ import annotations

import importlib.metadata

import pytest
import torch
from hidden_cutmix import HIDDEN_CUTMIX, block_mask, hidden_cutmix

from trainers.config import CellConfig
from trainers.strategies import get_strategy


def test_block_mask_keeps_lam_of_the_dimensions_in_one_block():
    torch.manual_seed(0)
    lam = torch.tensor([[1.0], [0.0], [0.75], [0.5]])
    mask = block_mask(lam, 8)
    assert mask.sum(dim=1).tolist() == [8.0, 0.0, 6.0, 4.0]
    for row in mask:  # the taken dimensions form one block (cyclically): <= 2 edges
        assert int((row != row.roll(1)).sum()) <= 2


def test_mixed_points_take_whole_dimensions_from_the_partner():
    torch.manual_seed(1)
    v, W = torch.randn(6, 10), torch.randn(3, 10)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    mixed = hidden_cutmix(v, y, W, CellConfig(alpha=1.0))
    # every coordinate of a mixed point is that of one of the batch's examples
    assert all(((mixed.inputs[i].unsqueeze(0) - v).abs() < 1e-6).any(dim=0).all()
               for i in range(6))
    torch.testing.assert_close(mixed.class_weights.sum(dim=1), torch.ones(6))


def test_the_project_resolves_the_plugin():
    assert get_strategy("hidden_cutmix:HIDDEN_CUTMIX").loss is HIDDEN_CUTMIX.loss
    found = {ep.name for ep in importlib.metadata.entry_points(group="batchmixup_lab.strategies")}
    if "hidden_cutmix" not in found:
        pytest.skip("the package is not installed (pip install examples/hidden_cutmix)")
    config = CellConfig(strategy="hidden_cutmix").validate()
    assert config.strategy == "hidden_cutmix:HIDDEN_CUTMIX"  # the entry point's target
    assert config.cell_name.endswith("/hidden_cutmix/0")
