"""Folders given on the command line, checked before anything is written.

A checkpoint or cache folder that is really a file, or that sits under a file or a read-only
folder, is a one-line :class:`~trainers.errors.ConfigError` naming the option, instead of a
``FileExistsError``/``NotADirectoryError`` traceback halfway through training. Nothing is
created by the check: the nearest existing parent is probed with a temporary folder that is
removed at once.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from trainers.errors import ConfigError


def nearest_existing(path: Path) -> Path:
    """``path`` itself or its closest ancestor that exists."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor or ".")


def check_writable_dir(option: str, value: str | os.PathLike) -> Path:
    """Raise :class:`ConfigError` unless ``value`` is (or can become) a writable folder.

    Returns the absolute path. Creates nothing.
    """
    path = Path(value).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path} is not a directory (a file is in the way)")
    base = nearest_existing(path)
    if not base.is_dir():
        raise ConfigError(f"{option} {path}: {base} is a file, not a directory")
    try:
        probe = tempfile.mkdtemp(prefix=".write-probe-", dir=base)
        os.rmdir(probe)
    except OSError as exc:
        where = "" if base == path else f" ({base} is the nearest existing folder)"
        raise ConfigError(f"{option} {path} is not writable{where}: "
                          f"{exc.strerror or exc}") from None
    return path
