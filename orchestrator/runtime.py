"""What the driver gives a Ray cluster: the project's code, and the resources a trial asks for.

Code: a worker node needs Python, Ray (the driver's versions of both) and the project's
dependencies, not the project itself. When the sweep joins an existing cluster (``--address``)
it ships the packages the trials import (:data:`SHIPPED_PACKAGES`) with Ray's runtime
environment (``py_modules``): Ray zips them once, uploads them to the head node, and every
worker process on every node imports them from its own unpacked copy, before any installed
version. Data, caches, results, virtual environments and ``.git`` never travel: only these
package folders are zipped, minus bytecode.

Plug-in strategies (``package.module:NAME``, or an installed entry point) travel the same way:
the top-level package of each plug-in module in the sweep is added to ``py_modules``
(:func:`trainers.strategies.plugin_paths`); a plug-in that is a single ``.py`` file is shipped
as a package of that name (its ``__init__.py`` is the file, byte for byte, so the worker
computes the same content hash for the fingerprint). A worker that never installed the plug-in
imports it from there.

Resources: ``--trial-resources NAME=AMOUNT`` adds custom Ray resources to what each trial (and
the cache-warming task) asks for, so trials can be pinned to nodes started with
``ray start --resources '{"NAME": N}'``.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator.spaces import SweepError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# What trial processes import: trainers (the cell), orchestrator (the trainable, the cache task)
# and search_spaces (package data beside them). results/ runs on the driver only.
SHIPPED_PACKAGES = ("trainers", "orchestrator", "search_spaces")
EXCLUDES = ["__pycache__/", "*.pyc", "*.pyo"]
BUILTIN_RESOURCES = {"cpu", "gpu", "memory", "object_store_memory"}


def code_runtime_env(plugins: Sequence[str] = ()) -> dict[str, Any]:
    """The runtime environment that ships this project's packages, and the modules of the
    plug-in strategies among ``plugins`` (strategy names), to every Ray worker."""
    modules = [str(PROJECT_ROOT / name) for name in SHIPPED_PACKAGES]
    return {"py_modules": modules + plugin_modules(plugins), "excludes": list(EXCLUDES)}


def plugin_runtime_env(plugins: Sequence[str]) -> dict[str, Any] | None:
    """Only the plug-ins' modules (a local Ray's workers import the project from the driver's
    checkout); None when no strategy is a plug-in."""
    modules = plugin_modules(plugins)
    return {"py_modules": modules, "excludes": list(EXCLUDES)} if modules else None


def plugin_modules(plugins: Sequence[str]) -> list[str]:
    """Folders for ``py_modules``: each plug-in's top-level package; a single-file module
    wrapped as a package of its name in a temporary folder."""
    from trainers.strategies import plugin_paths

    out = []
    for path in plugin_paths(list(plugins)):
        if path.is_file():
            wrapper = Path(tempfile.mkdtemp(prefix="batchmixup-plugin-")) / path.stem
            wrapper.mkdir()
            shutil.copyfile(path, wrapper / "__init__.py")
            atexit.register(shutil.rmtree, wrapper.parent, True)
            path = wrapper
        out.append(str(path))
    return out


def parse_trial_resources(text: str | None) -> dict[str, float]:
    """``--trial-resources worker_node=1,big_mem=0.5`` -> ``{"worker_node": 1.0, ...}``."""
    if not text:
        return {}
    out: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",")):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise SweepError(f"--trial-resources expects NAME=AMOUNT[,NAME=AMOUNT], got {item!r}")
        if name.lower() in BUILTIN_RESOURCES:
            raise SweepError(f"--trial-resources: {name!r} is a built-in resource; use "
                             "--cpus-per-trial / --gpus-per-trial")
        try:
            amount = float(value)
        except ValueError:
            raise SweepError(f"--trial-resources: {name}: {value.strip()!r} is not a "
                             "number") from None
        if not amount > 0:
            raise SweepError(f"--trial-resources: {name} must be > 0, got {value.strip()}")
        out[name] = amount
    return out


def check_custom_resources(custom: dict[str, float], cluster: dict[str, float],
                           address: str | None) -> None:
    """Fail fast when no node offers a custom resource trials ask for (Tune would wait forever).

    Args:
        custom: the custom resources one trial asks for.
        cluster: ``ray.cluster_resources()``.
        address: the ``--address`` flag (for the message).
    """
    where = f"the Ray cluster at {address}" if address else "the local Ray"
    for name, amount in custom.items():
        total = cluster.get(name, 0.0)
        if total < amount:
            offered = ", ".join(sorted(k for k in cluster if not k.startswith("node:")))
            raise SweepError(f"--trial-resources {name}={amount:g}: {where} offers {total:g} "
                             f"{name} (it has: {offered}); start worker nodes with "
                             f"ray start --address HEAD:PORT --resources '{{\"{name}\": N}}'")


def describe_resources(resources: dict[str, Any]) -> str:
    """``1 CPU, 0.5 GPU, 1 worker_node`` for the sweep's start-up line."""
    parts = [f"{resources['cpu']:g} CPU", f"{resources['gpu']:g} GPU"]
    parts += [f"{v:g} {k}" for k, v in resources.get("custom_resources", {}).items()]
    return ", ".join(parts)
