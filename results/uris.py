"""Credentials out of URIs before they are printed, logged or written.

``redact_uri("http://user:secret@host:5000")`` -> ``"http://***@host:5000"``; query values
whose names look like secrets (``password=``, ``token=``, ...) become ``***`` too. Standard
library only, so the orchestrator and the report share it without importing each other's
dependencies.
"""

from __future__ import annotations

import base64
import re
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit
from urllib.request import Request

MASK = "***"
SECRET_QUERY_WORDS = ("password", "passwd", "secret", "token", "key", "credential", "auth",
                      "signature")
_URI = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>()\[\]{},;]+")


def redact_uri(uri: str | None) -> str:
    """``uri`` with its user:password part and secret-looking query values masked."""
    if not uri or "://" not in uri:
        return uri or ""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return redact_text(uri)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if "@" not in parts.netloc and not any(_secret_key(k) for k, _ in pairs):
        return uri  # nothing to hide (and urlunsplit would turn sqlite://// into sqlite://)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    query = urlencode([(k, MASK if _secret_key(k) else v) for k, v in pairs], safe="*") \
        if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """Every URI inside free text (an error message, a command line) redacted."""
    return _URI.sub(lambda m: redact_uri(m.group(0)), text)


def _secret_key(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in SECRET_QUERY_WORDS)


def health_request(uri: str) -> Request:
    """A GET of an MLflow server's ``/health``, with a URI's ``user:password`` sent as basic
    auth (urllib would take ``user:password@host`` for the host name)."""
    parts = urlsplit(uri.rstrip("/"))
    host = parts.netloc.rsplit("@", 1)[-1]
    url = urlunsplit((parts.scheme, host, f"{parts.path}/health", "", ""))
    request = Request(url)
    if "@" in parts.netloc:
        userinfo = unquote(parts.netloc.rsplit("@", 1)[0])
        request.add_header("Authorization",
                           "Basic " + base64.b64encode(userinfo.encode()).decode())
    return request
