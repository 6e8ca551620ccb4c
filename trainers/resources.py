"""What one trial's own process uses, measured inside it, per epoch.

MLflow's system-metrics monitor would measure the process that logs (the sweep's driver), so
the trial measures itself and reports the numbers with each epoch's metrics; the driver logs
them into the cell's MLflow run, the report's efficiency section reads them back.

Per epoch (training and its evaluation):

* ``cpu_seconds``: CPU time of the trial's process, all threads (``time.process_time``);
* ``peak_rss_mib``: the process's peak resident memory so far (``getrusage``'s
  ``ru_maxrss``). Ray may run several trials one after another in one worker process
  (``reuse_actors``); the peak then covers the earlier ones too, an upper bound;
* on CUDA, ``gpu_peak_allocated_mib`` and ``gpu_peak_reserved_mib``: the peaks of PyTorch's
  allocator during the epoch (``torch.cuda.max_memory_allocated`` / ``_reserved``, reset at
  the epoch's start): what ``--gpus-per-trial`` must leave room for;
* on CUDA with ``nvidia-ml-py`` importable, ``gpu_utilization``: the device's utilisation
  (percent of time a kernel ran, NVML's sample) at the epoch's end. It is the whole GPU's,
  shared trials included.
"""

from __future__ import annotations

import resource
import sys
import time
from typing import Any

import torch

MEASURED = ("epoch_seconds", "examples_per_second", "cpu_seconds", "peak_rss_mib",
            "gpu_peak_allocated_mib", "gpu_peak_reserved_mib", "gpu_utilization")
"""Per-epoch metrics that measure the machine, not the training: they differ between two runs
of the same cell (a resumed one, another node) and are never compared for equality."""
MIB = 2**20


def peak_rss_mib() -> float:
    """The process's peak resident set size in MiB (``ru_maxrss``: KiB on Linux, bytes on
    macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024


def _nvml_handle(device: torch.device) -> Any:
    """An NVML handle of ``device`` when ``nvidia-ml-py`` is importable, else None."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        index = device.index if device.index is not None else torch.cuda.current_device()
        return pynvml.nvmlDeviceGetHandleByIndex(index)
    except Exception:  # noqa: BLE001 - no driver access: no utilisation samples
        return None


class ResourceMeter:
    """Measures one epoch at a time: :meth:`start` at its beginning, :meth:`stop` at its end.

    Args:
        device: the trial's device.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self._nvml = _nvml_handle(device) if self.cuda else None
        self._cpu = 0.0

    def start(self) -> None:
        self._cpu = time.process_time()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def stop(self) -> dict[str, float]:
        out = {"cpu_seconds": time.process_time() - self._cpu, "peak_rss_mib": peak_rss_mib()}
        if self.cuda:
            out["gpu_peak_allocated_mib"] = torch.cuda.max_memory_allocated(self.device) / MIB
            out["gpu_peak_reserved_mib"] = torch.cuda.max_memory_reserved(self.device) / MIB
        if self._nvml is not None:
            try:
                import pynvml

                out["gpu_utilization"] = float(
                    pynvml.nvmlDeviceGetUtilizationRates(self._nvml).gpu)
            except Exception:  # noqa: BLE001 - a failed sample is no sample
                pass
        return out
