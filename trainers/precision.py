"""Numeric precision of the encoder's forward passes: fp32, or bf16 autocast.

``precision`` applies to feature extraction (frozen mode) and to the training forward pass
(``torch.autocast``: matrix multiplies in bf16, the losses from logits cast to fp32, weights and
optimizer state fp32; on CUDA the head and the mixing run under the same autocast). ``auto``
picks bf16 where the hardware runs it natively -- GPUs from Ampere (A100, H100) on, and CPUs
with AVX512-BF16 or AMX -- and fp32 elsewhere (V100, T4, older CPUs), where bf16 is emulated or
missing.

Measured on this project's 2-core AMD EPYC (AVX512-BF16), MiniLM, batch 128 x 40 tokens:
feature extraction 1.01 s (fp32) vs 0.49 s (bf16); a fine-tuning step at batch 32 x 40 tokens
0.80 s vs 0.49 s. The pooled features of the two agree to cosine similarity >= 0.99997.

On CPU the small head of frozen mode (MLP + W on cached features) always trains in fp32: its
updates are bound by per-operation overhead, which casts would only add to.
"""

from __future__ import annotations

import torch

PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16(device: torch.device) -> bool:
    """True on GPUs with native bf16 (Ampere and later) and CPUs with AVX512-BF16 or AMX."""
    if device.type == "cuda":
        try:
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # torch < 2.4 has no emulation flag and reports native support only
            return torch.cuda.is_bf16_supported()
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``fp32`` or ``bf16``: ``auto`` resolved for ``device`` (see :func:`native_bf16`)."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def autocast(device: torch.device, precision: str, enabled: bool = True) -> torch.autocast:
    """An autocast context: bf16 when ``precision`` resolves to bf16 (and ``enabled``)."""
    on = enabled and resolve_precision(precision, device) == "bf16"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=on)
