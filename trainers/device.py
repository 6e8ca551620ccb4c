"""Where a cell trains and how that machine is named in its records."""

from __future__ import annotations

import platform

import torch

from trainers.errors import CellError
from trainers.precision import resolve_precision


def pick_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else CPU."""
    if name == "cuda" and not torch.cuda.is_available():
        raise CellError("device 'cuda' requested but CUDA is not available")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def hardware_name(device: torch.device, precision: str | None = None) -> str:
    """GPU name, or ``cpu: <N> threads (<machine>)``; then ``, bf16`` or ``, fp32`` if given."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu: {torch.get_num_threads()} threads ({platform.machine()})"
    return f"{name}, {resolve_precision(precision, device)}" if precision else name
