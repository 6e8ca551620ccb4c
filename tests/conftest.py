"""Shared pytest fixtures: the real data folder and one feature/token cache per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]


def _hermetic_environment() -> None:
    """Make the session independent of where pytest runs and of what else runs here.

    * ``BATCHMIXUP_DATA_DIR=../shared/data`` (the README's command) is resolved once, against
      the folder pytest was started from, before any test changes its working directory:
      subprocesses run in temporary folders and inherit the absolute path.
    * A ``RAY_ADDRESS`` left in the environment (or a live or dead ``ray start`` cluster) must
      not be joined: every Ray a test starts is its own (``address="local"``, or an explicit
      cluster address).
    """
    data = os.environ.get("BATCHMIXUP_DATA_DIR")
    if data:
        os.environ["BATCHMIXUP_DATA_DIR"] = str(Path(data).expanduser().resolve())
    os.environ.pop("RAY_ADDRESS", None)


_hermetic_environment()

# Settings every test cell shares, so that frozen features are extracted once per task.
FAST = {"model": "minilm", "mode": "frozen", "max_length": 64}


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real-data folder: ``$BATCHMIXUP_DATA_DIR``, else ``<repo>/../shared/data``.

    Missing data skips locally but fails under CI (``CI=true``), where it must be present.
    """
    path = Path(os.environ.get("BATCHMIXUP_DATA_DIR") or REPO_ROOT.parent / "shared" / "data")
    if not path.is_dir():
        message = f"real data folder {path} not found (set BATCHMIXUP_DATA_DIR)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the whole session (``$BATCHMIXUP_TEST_CACHE`` keeps it across sessions)."""
    keep = os.environ.get("BATCHMIXUP_TEST_CACHE")
    if keep:
        path = Path(keep)
    elif os.environ.get("PYTEST_XDIST_WORKER"):  # one cache for all workers (file-locked)
        path = tmp_path_factory.getbasetemp().parent / "cache"
    else:
        path = tmp_path_factory.mktemp("cache")
    path.mkdir(parents=True, exist_ok=True)
    os.environ["BATCHMIXUP_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server on 127.0.0.1 for the session (``tests/postgres.py``):
    ``postgres.new_database()`` gives a fresh ``postgresql://`` URI, ``postgres.restart()``
    stops and starts the server. Skips (fails under CI) where PostgreSQL cannot be run."""
    from tests.postgres import postgres_server

    yield from postgres_server()
