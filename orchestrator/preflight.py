"""Checks that run before a sweep creates anything: storage, resume trust, schedulability.

Each check raises a :class:`~orchestrator.spaces.SweepError` (one ``error:`` line, exit 2).
None of them creates a file or a folder: Tune creates the storage folder once the sweep
really starts.
"""

from __future__ import annotations

import math
import os
import pwd
import stat
from pathlib import Path
from typing import Any

from orchestrator.spaces import SweepError
from trainers.errors import ConfigError
from trainers.paths import check_writable_dir

RESOURCE_NAMES = {"cpu": "CPU", "gpu": "GPU"}


# --------------------------------------------------------------------------- storage
def check_storage(location: str) -> None:
    """A local ``--storage-path`` must be (or become) a writable folder; nothing is created."""
    if "://" in location:
        return
    try:
        check_writable_dir("storage path", location)
    except ConfigError as exc:
        raise SweepError(str(exc)) from None


def experiment_dir(storage: str, name: str) -> str:
    """``<storage>/<name>``, refused if it would resolve outside the storage folder."""
    if "://" in storage:
        return f"{storage}/{name}"
    root = Path(storage).resolve()
    path = (root / name).resolve()
    if path.parent != root:
        raise SweepError(f"experiment name {name!r} would put Tune state outside "
                         f"--storage-path {root}")
    return str(path)


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _untrusted(path: Path, allow_sticky: bool = False) -> str | None:
    """Why ``path`` could have been written by someone else, or None."""
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        return "is a symbolic link"
    if info.st_uid != os.getuid():
        return f"is owned by {_owner(info.st_uid)}, not by you ({_owner(os.getuid())})"
    writable = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if writable and not (allow_sticky and info.st_mode & stat.S_ISVTX):
        who = " and ".join(w for w, bit in (("its group", stat.S_IWGRP),
                                            ("all users", stat.S_IWOTH)) if writable & bit)
        return f"is writable by {who} (mode {stat.S_IMODE(info.st_mode):04o})"
    return None


def check_resume_storage(storage: str, name: str) -> None:
    """Refuse ``--resume`` from Tune state that someone else could have written.

    ``--resume`` unpickles Tune's state (``tuner.pkl``, the experiment state) from
    ``<storage>/<name>``: whoever can write there can run code in this driver. The storage
    folder, the experiment folder and everything in it must belong to the current user and
    not be writable by group or others (a sticky storage folder such as /tmp is allowed:
    others cannot replace what is yours in it). ``s3://``-style storage is trusted as
    configured (its access policy is the boundary).
    """
    if "://" in storage:
        return
    root = Path(storage).resolve()
    experiment = root / name
    if not experiment.is_dir():
        return
    entries = [(root, True), (experiment, False)]
    entries += [(p, False) for p in sorted(experiment.rglob("*"))]
    for path, sticky_ok in entries:
        reason = _untrusted(path, allow_sticky=sticky_ok)
        if reason:
            raise SweepError(
                f"--resume refuses {path}: it {reason}. Tune state under --storage-path is "
                "unpickled by --resume, so whoever can write it can run code as you; fix "
                f"the ownership/permissions (e.g. chmod -R go-w {experiment}) or start a "
                "fresh sweep without --resume")


# --------------------------------------------------------------------------- resources
def local_totals(num_cpus: int | None, num_gpus: float | None = None) -> dict[str, float]:
    """What a local Ray started by the sweep will have: ``--num-cpus`` (else every CPU) and
    ``--num-gpus`` (else the GPUs this process sees)."""
    cpus = num_cpus if num_cpus is not None else (os.cpu_count() or 1)
    if num_gpus is not None:
        return {"CPU": float(cpus), "GPU": float(num_gpus)}
    try:
        import torch

        gpus = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no usable CUDA: no GPUs
        gpus = 0
    return {"CPU": float(cpus), "GPU": float(gpus)}


def cluster_nodes() -> list[dict[str, float]]:
    """The resources of each live node of the connected Ray cluster."""
    import ray

    return [dict(node.get("Resources", {})) for node in ray.nodes() if node.get("Alive")]


def check_schedulable(request: dict[str, float], nodes: list[dict[str, Any]],
                      where: str) -> None:
    """Raise unless one node can run a trial asking for ``request`` (``cpu``, ``gpu``).

    Args:
        request: per-trial ``{"cpu": n, "gpu": n}``.
        nodes: each node's resources (``{"CPU": n, "GPU": n, ...}``).
        where: "the local Ray" or "the Ray cluster at ...", for the message.
    """
    def fits(node: dict[str, Any]) -> bool:
        return all(float(node.get(key, 0.0)) + 1e-9 >= request.get(res, 0.0)
                   for res, key in RESOURCE_NAMES.items())

    if any(fits(node) for node in nodes):
        return
    best = max(nodes, key=lambda n: (float(n.get("GPU", 0.0)), float(n.get("CPU", 0.0))),
               default={})
    have = {res: float(best.get(key, 0.0)) for res, key in RESOURCE_NAMES.items()}
    missing = [f"{request[res] - have[res]:g} {key}" for res, key in RESOURCE_NAMES.items()
               if request.get(res, 0.0) > have[res] + 1e-9]
    asked = " and ".join(f"{request.get(r, 0.0):g} {k}" for r, k in RESOURCE_NAMES.items())
    largest = " and ".join(f"{have[r]:g} {k}" for r, k in RESOURCE_NAMES.items())
    raise SweepError(
        f"each trial asks for {asked}, but the largest node of {where} has {largest} "
        f"(missing {', '.join(missing)}): no trial could ever start. Lower --cpus-per-trial/"
        "--gpus-per-trial (or the sweep file's resources), give a local Ray more with "
        "--num-cpus, or pass --allow-pending on an autoscaling cluster that will add such "
        "nodes")


def check_num_cpus(value: int | None) -> None:
    """``--num-cpus`` of a local Ray: at least 1."""
    if value is not None and (not isinstance(value, int) or value < 1):
        raise SweepError(f"--num-cpus must be >= 1, got {value}")


def finite_wait(value: float | None) -> float | None:
    """``--wait-for-lock`` seconds (None: refuse at once; inf: wait as long as it takes)."""
    if value is None:
        return None
    if math.isnan(value) or value < 0:
        raise SweepError(f"--wait-for-lock must be >= 0 seconds, got {value}")
    return value
