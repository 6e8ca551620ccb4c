"""The model-FLOP count behind the MFU benchmark, checked against torch's FLOP counter."""

from __future__ import annotations

import re

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import epoch_ratios
from benchmarks.mfu import encoder_training_flops, mfu, peak_for_name, peak_tflops
from trainers.model import load_encoder


@pytest.mark.parametrize("length", [16, 48])
def test_training_flops_match_torchs_flop_counter(length):
    """Forward + backward of a real (random-init) encoder on a batch without padding."""
    encoder = load_encoder("random:tiny")
    model = encoder.model
    batch = 3
    ids = torch.randint(1000, 2000, (batch, length))
    with FlopCounterMode(display=False) as counter:
        hidden = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
        hidden[:, 0].sum().backward()
    counted = counter.get_total_flops()
    # torch also counts the pooler's forward (2 h^2 per example), which the formula leaves out
    h = model.config.hidden_size
    pooler = batch * 2 * h * h + batch * 2 * h  # its matmul and bias (addmm)
    expected = encoder_training_flops(model.config, [length] * batch)
    assert counted - pooler == pytest.approx(expected, rel=1e-3)
    # faithful mixup's n passes are n times the work
    assert encoder_training_flops(model.config, [length] * batch, passes=15) == 15 * expected


def test_peak_lookup_and_mfu():
    assert peak_tflops(torch.device("cpu")) is None
    assert peak_tflops(torch.device("cpu"), override=50.0) == 50.0
    assert peak_for_name("NVIDIA H100 80GB HBM3") == 989.4
    assert peak_for_name("NVIDIA H100 PCIe") == 756.0
    assert peak_for_name("NVIDIA H200 NVL") == 835.5
    assert peak_for_name("NVIDIA L40") == 181.0  # not L4's peak
    assert peak_for_name("NVIDIA L4") == 121.0
    assert peak_for_name("Tesla V100-SXM2-16GB") is None  # no bf16: pass --peak-tflops
    assert mfu(2e12, 2.0, 1.0) == pytest.approx(1.0)
    assert mfu(2e12, 2.0, None) is None


def test_mfu_table_values():
    """Each strategy's row: model TFLOP per epoch (n passes for faithful mixup), TFLOP/s from
    its median epoch, and their share of the peak, written out by hand here."""
    config = type("Config", (), dict(hidden_size=8, intermediate_size=32, num_hidden_layers=2))
    lengths = [3, 5]
    per_pass = 3 * 2 * sum(n * (8 * 64 + 4 * 8 * 32) + 4 * n * n * 8 for n in lengths)
    chosen = [v for v in epoch_ratios.variants(15) if v[0] in ("none", "mixup/faithful")]
    seconds = {"none": [1e-6, 2e-6, 3e-6], "mixup/faithful": [3e-5]}
    out = epoch_ratios.mfu_table(chosen, seconds, config, lengths, peak=1e-3)
    rows = {m.group(1): [float(x) for x in m.groups()[1:]] for m in re.finditer(
        r"^(none|mixup/faithful)\s+(\S+)\s+(\S+)\s+(\S+) %", out, re.M)}
    for label, passes, median_s in (("none", 1, 2e-6), ("mixup/faithful", 15, 3e-5)):
        flops = per_pass * passes
        assert rows[label] == pytest.approx(
            [flops / 1e12, flops / median_s / 1e12, 100 * flops / median_s / 1e9], rel=1e-3)


def test_epoch_ratios_prints_mfu_and_the_epoch_check(capsys, data_dir):
    epoch_ratios.main(["--model", "random:tiny", "--task", "rte", "--data-dir", str(data_dir),
                       "--examples", "32", "--max-length", "32", "--repeats", "1",
                       "--strategies", "batchmixup", "--device", "cpu", "--mfu",
                       "--peak-tflops", "1", "--epoch-target", "600"])
    out = capsys.readouterr().out
    rows = {m.group(1): float(m.group(2)) for m in
            re.finditer(r"^(none|batchmixup)\s+\S+\s+\S+\s+(\S+) %", out, re.M)}
    assert set(rows) == {"none", "batchmixup"} and all(v > 0 for v in rows.values())
    assert re.search(r"none: one epoch of 32 examples in [\d.]+ s \(median\); target <= 600 s: "
                     r"PASS", out)
