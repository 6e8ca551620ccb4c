"""Encoder precision: bf16 and fp32 features are cached apart, agree closely, and are named."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from trainers.config import CellConfig
from trainers.device import hardware_name
from trainers.errors import ConfigError
from trainers.precision import autocast, native_bf16, resolve_precision
from trainers.prepare import load_cell_data, prepare_cell


def test_resolution_and_autocast() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    assert resolve_precision("auto", cpu) == ("bf16" if native_bf16(cpu) else "fp32")
    with autocast(cpu, "bf16"):
        assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.bfloat16
    with autocast(cpu, "fp32"):
        assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.float32
    with autocast(cpu, "bf16", enabled=False):
        assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.float32
    assert hardware_name(cpu, "fp32").endswith(", fp32")
    with pytest.raises(ConfigError, match="unknown precision 'fp16'"):
        CellConfig(precision="fp16").validate()


def small_banking(data_dir: Path, tmp_path: Path, rows: int = 48) -> Path:
    """A small custom task file cut from the real Banking77 training file."""
    with (data_dir / "banking77" / "train.csv").open(newline="") as fh:
        reader = list(csv.DictReader(fh))
    picked = reader[:: max(1, len(reader) // rows)][:rows]
    path = tmp_path / "small.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows({"text": r["text"], "label": r["category"]} for r in picked)
    return path


def test_bf16_and_fp32_features_are_separate_cache_entries_that_agree(data_dir, tmp_path):
    small = str(small_banking(data_dir, tmp_path))
    base = dict(task="custom", train_file=small, test_file=small, model="minilm",
                mode="frozen", max_length=32, device="cpu", cache_dir=str(tmp_path / "cache"))
    cpu = torch.device("cpu")
    fp32 = prepare_cell(CellConfig(**base, precision="fp32").validate(), cpu)
    bf16 = prepare_cell(CellConfig(**base, precision="bf16").validate(), cpu)
    again = prepare_cell(CellConfig(**base, precision="bf16").validate(), cpu)
    assert fp32.cache_hits == {"features": False}
    assert bf16.cache_hits == {"features": False}  # not served fp32's entry
    assert again.cache_hits == {"features": True}
    assert torch.equal(again.train_inputs, bf16.train_inputs)
    assert not torch.equal(fp32.train_inputs, bf16.train_inputs)
    assert fp32.train_inputs.dtype == bf16.train_inputs.dtype == torch.float32
    cosine = torch.nn.functional.cosine_similarity(fp32.train_inputs, bf16.train_inputs, dim=1)
    assert float(cosine.min()) > 0.999
    assert len(fp32.train_targets) == len(load_cell_data(CellConfig(**base).validate()).train)
