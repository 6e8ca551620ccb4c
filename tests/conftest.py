"""Shared pytest fixtures."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # the project is not installed in the venv
    sys.path.insert(0, str(REPO_ROOT))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real-data folder: ``$BATCHMIXUP_DATA_DIR``, else ``<repo>/../shared/data``."""
    path = Path(os.environ.get("BATCHMIXUP_DATA_DIR") or REPO_ROOT.parent / "shared" / "data")
    if not path.is_dir():
        pytest.skip(f"real data folder {path} not found (set BATCHMIXUP_DATA_DIR)")
    return path
