"""Model FLOPs of encoder training, and model FLOP utilisation (MFU) of a measured epoch.

MFU (Chowdhery et al. 2022, "PaLM", Appendix B) is the FLOPs the model needs for the tokens it
trained on, divided by the time taken and the accelerator's peak. Here the model is a BERT-style
encoder (MiniLM, RoBERTa-large); per layer and per token of an example of ``L`` tokens, with
hidden size ``h`` and feed-forward size ``i``, one forward pass costs

* ``8 h^2``: the Q, K, V and output projections (four ``h x h`` products, 2 FLOPs per
  multiply-add),
* ``4 h i``: the two feed-forward products,
* ``4 L h``: attention scores ``Q K^T`` and their weighted sum of ``V``,

and training (forward + backward) three times that. Only the example's own tokens count, not
padding (wasted work is not utilisation); embeddings (lookups), layer norms, softmax, the
pooler and the head are left out (< 1 % at these sizes). ``tests/test_mfu.py`` checks the count
against ``torch.utils.flop_counter.FlopCounterMode`` on a real forward + backward.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's datasheets, in TFLOP/s. An entry
# applies when all its words are words of torch.cuda.get_device_name(); first match wins.
PEAK_BF16_TFLOPS: list[tuple[tuple[str, ...], float]] = [
    (("H200", "NVL"), 835.5),
    (("H200",), 989.4),
    (("H100", "PCIe"), 756.0),
    (("H100", "NVL"), 835.5),
    (("H100",), 989.4),  # SXM ("NVIDIA H100 80GB HBM3")
    (("A100",), 312.0),
    (("L40S",), 362.1),
    (("L40",), 181.0),
    (("L4",), 121.0),
]


def encoder_training_flops(config: object, lengths: Sequence[int], passes: int = 1) -> float:
    """Model FLOPs of training a BERT-style encoder on examples of the given token lengths.

    Args:
        config: the Hugging Face model config (``hidden_size``, ``intermediate_size``,
            ``num_hidden_layers``).
        lengths: real (unpadded) token count of every training example.
        passes: forward + backward passes per example (n for paper-faithful mixup, else 1).
    """
    h = int(config.hidden_size)
    i = int(config.intermediate_size)
    layers = int(config.num_hidden_layers)
    per_layer = sum(n * (8 * h * h + 4 * h * i) + 4 * n * n * h for n in lengths)
    return 3.0 * layers * per_layer * passes


def peak_tflops(device: torch.device, override: float | None = None) -> float | None:
    """The device's dense bf16 peak in TFLOP/s: ``override`` if given, else the datasheet
    value for a known GPU, else ``None`` (CPUs and unknown GPUs: pass ``--peak-tflops``)."""
    if override:
        return override
    if device.type != "cuda":
        return None
    return peak_for_name(torch.cuda.get_device_name(device))


def peak_for_name(name: str) -> float | None:
    """Datasheet dense bf16 peak of the GPU called ``name`` (``None`` if not listed)."""
    words = set(name.replace("-", " ").split())
    for keys, tflops in PEAK_BF16_TFLOPS:
        if words.issuperset(keys):
            return tflops
    return None


def mfu(flops: float, seconds: float, peak: float | None) -> float | None:
    """Achieved FLOP/s over the peak (a fraction), or ``None`` without a peak."""
    if not peak or seconds <= 0:
        return None
    return flops / seconds / (peak * 1e12)
