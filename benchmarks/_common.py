"""Helpers shared by the benchmark scripts: hardware line, devices, timing, tables."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from trainers.config import CellConfig


def pick_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    return torch.device(name)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_line(device: torch.device) -> str:
    """GPU name or CPU model, plus torch/thread counts and the current load average."""
    parts = [f"torch {torch.__version__}", f"torch threads {torch.get_num_threads()}",
             f"cpu '{cpu_model()}' x{os.cpu_count()}"]
    if device.type == "cuda":
        parts.insert(0, f"gpu '{torch.cuda.get_device_name(device)}'")
    try:
        parts.append("loadavg " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    except OSError:
        pass
    return f"device {device}: " + ", ".join(parts)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, calls: int = 1) -> float:
    """Seconds per call of ``fn`` (mean over ``calls`` back-to-back calls, device-synced)."""
    sync(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    sync(device)
    return (time.perf_counter() - start) / calls


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain fixed-width text table."""
    cells = [[str(h) for h in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def default_data_dir() -> str:
    return os.environ.get("BATCHMIXUP_DATA_DIR") or str(Path("..") / "shared" / "data")


def cpu_table1_config(task: str, ratio: float, strategy: str, data_dir: str,
                      **overrides: object) -> CellConfig:
    """One cell of ``search_spaces/cpu_table1.yaml`` (its settings and the strategy's), on CPU,
    with ``overrides``: the frozen MiniLM head the frozen-mode benchmarks time."""
    from orchestrator.spaces import load_sweep, resolve_source

    sweep = load_sweep(resolve_source("cpu_table1", None))
    values = {**sweep.settings, **sweep.strategy_settings.get(strategy, {}), "task": task,
              "ratio": ratio, "strategy": strategy, "data_dir": data_dir, "device": "cpu",
              **overrides}
    return CellConfig.from_dict(values).validate()
