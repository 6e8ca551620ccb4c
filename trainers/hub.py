"""Fail-fast check of the Hugging Face hub, so an offline machine errors in seconds, not ~50 s."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse


def hub_offline_requested() -> bool:
    """True when the user asked for offline mode (``HF_HUB_OFFLINE`` or ``HF_DATASETS_OFFLINE``)."""
    return any(
        os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}
        for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub endpoint opens within ``timeout`` seconds."""
    if hub_offline_requested():
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False
