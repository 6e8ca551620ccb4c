"""A tracking server that answers but refuses: one ``error:`` line naming the fix, exit 2,
before Ray starts. Real MLflow servers (host check, basic auth) and, for a bare non-2xx answer,
a small HTTP server of the test's own."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from orchestrator.sweep import main
from orchestrator.tracking import TrackingError, check_tracking_uri
from tests.sweep_helpers import free_port, mlflow_server

ADMIN_PASSWORD = "s3cret-admin-pw-123"


def sweep_fails_fast(tracking_uri: str, tmp_path: Path, data_dir: Path, capsys,
                     monkeypatch) -> str:
    """Run the sweep in-process against ``tracking_uri``; it must exit 2 with one line, within
    seconds, with nothing written and no Ray started. Returns the line."""
    import ray

    monkeypatch.chdir(tmp_path)
    ray_before = ray.is_initialized()
    start = time.monotonic()
    code = main(["--tasks", "banking77", "--strategies", "none", "--seeds", "0", "--ratios",
                 "0.01", "--data-dir", str(data_dir), "--storage-path", str(tmp_path / "ray"),
                 "--tracking-uri", tracking_uri, "--no-report"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert time.monotonic() - start < 30
    assert ray.is_initialized() == ray_before  # this sweep did not start Ray
    assert not (tmp_path / "ray").exists() and not (tmp_path / "mlflow.db").exists()
    return err


@pytest.mark.slow
def test_host_name_outside_allowed_hosts_names_the_flag(tmp_path, data_dir, capsys,
                                                        monkeypatch):
    """MLflow 3 answers /health to anybody but 403 to API calls whose Host header it does not
    allow: reaching a server by a name it was not started with (--allowed-hosts)."""
    port = free_port()
    with mlflow_server(tmp_path / "server", port,
                       extra=("--allowed-hosts", f"127.0.0.1:{port}")) as (uri, _):
        check_tracking_uri(uri)  # the allowed address works
        err = sweep_fails_fast(f"http://localhost:{port}", tmp_path, data_dir, capsys,
                               monkeypatch)
    assert "HTTP 403" in err and "Invalid Host header" in err, err
    assert f"--allowed-hosts localhost:{port}" in err, err


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory) -> Iterator[str]:
    """A real ``mlflow server --app-name basic-auth`` (needs Flask-WTF: ``mlflow[auth]``)."""
    pytest.importorskip("flask_wtf", reason="mlflow[auth] (in the dev extra) is not installed")
    folder = tmp_path_factory.mktemp("auth-server")
    config = folder / "basic_auth.ini"
    config.write_text(f"[mlflow]\ndefault_permission = READ\n"
                      f"database_uri = sqlite:///{folder / 'auth.db'}\n"
                      f"admin_username = admin\nadmin_password = {ADMIN_PASSWORD}\n"
                      "authorization_function = mlflow.server.auth:"
                      "authenticate_request_basic_auth\n")
    with mlflow_server(folder, extra=("--app-name", "basic-auth"),
                       env={"MLFLOW_AUTH_CONFIG_PATH": str(config),
                            "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-only-csrf-key"}) as (uri, _):
        yield uri


@pytest.mark.slow
def test_missing_credentials_name_the_variables(auth_server, tmp_path, data_dir, capsys,
                                                monkeypatch):
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                 "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    err = sweep_fails_fast(auth_server, tmp_path, data_dir, capsys, monkeypatch)
    assert "HTTP 401" in err and "needs credentials" in err, err
    assert "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in err, err


@pytest.mark.slow
def test_wrong_credentials_are_named_not_printed(auth_server, tmp_path, data_dir, capsys,
                                                 monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-the-password")
    err = sweep_fails_fast(auth_server, tmp_path, data_dir, capsys, monkeypatch)
    assert "HTTP 401" in err and "rejected the credentials" in err, err
    assert "not-the-password" not in err


@pytest.mark.slow
def test_right_credentials_pass_the_check(auth_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
    check_tracking_uri(auth_server)


class _Handler(http.server.BaseHTTPRequestHandler):
    """/health 200, everything else the status the server was made with."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        status = 200 if self.path == "/health" else self.server.status  # type: ignore[attr-defined]
        body = b"OK" if status == 200 else b"upstream says no\nsecond line"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def answering(status: int) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.status = status  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("status", "needle"), [
    (401, "needs credentials: set MLFLOW_TRACKING_USERNAME"),
    (403, "--allowed-hosts"),
    (404, "is --tracking-uri the address of an MLflow tracking server"),
    (502, "HTTP 502"),
])
def test_other_refusals_are_one_line(status, needle, monkeypatch):
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                 "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with answering(status) as uri:
        with pytest.raises(TrackingError) as info:
            check_tracking_uri(uri)
    message = str(info.value)
    assert "\n" not in message and needle in message and "upstream says no" in message, message
