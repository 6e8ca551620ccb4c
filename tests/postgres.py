"""A real PostgreSQL server for the tests: Debian's binaries, a private cluster on 127.0.0.1.

:func:`postgres_server` (the session fixture ``postgres`` in ``conftest.py`` wraps it) runs
``initdb`` in a fresh folder under the system temp directory, starts the server on a free port
listening on 127.0.0.1 only (its Unix socket in that folder, never the system's), with
password authentication for one superuser, and removes everything at the end. PostgreSQL
refuses to run as root: as root (CI) the server runs as the ``postgres`` user that Debian's
package creates. Each test takes its own database (:meth:`PostgresServer.new_database`), so
tests never see each other's runs.

Missing binaries or driver skip the tests that need them with the reason, except under CI
(``CI=true``, set by ``.ci/run``'s caller), where ``.ci/run`` installs both and they must run.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sweep_helpers import free_port

USER = "mlflow"


def _unavailable(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def find_bin_dir() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: on PATH, else Debian's newest version."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                      key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(versions[-1]).parent if versions else None


class PostgresServer:
    """A private PostgreSQL cluster: start, stop, restart, and one database per test.

    Args:
        bin_dir: folder with ``initdb`` and ``pg_ctl``.
        root: an empty folder this server owns (data, socket, log).
        run_as: user to run the server as when this process is root (PostgreSQL refuses root).
    """

    def __init__(self, bin_dir: Path, root: Path, run_as: str | None) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.data = root / "data"
        self.log = root / "server.log"
        self.run_as = run_as
        self.port = free_port()
        self.password = secrets.token_hex(12)
        self._databases = 0

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if self.run_as:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              cwd=self.root, env={**os.environ, "LC_ALL": "C.UTF-8"})
        if proc.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed: {proc.stderr or proc.stdout}\n"
                               f"{log}")
        return proc

    def init(self) -> None:
        """``initdb``: one superuser with a password, md5/scram over TCP only."""
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.run_as:
            user = pwd.getpwnam(self.run_as)
            os.chown(self.root, user.pw_uid, user.pw_gid)
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}",
                  "--auth=scram-sha-256", "-E", "UTF8", "--no-instructions")
        pwfile.unlink()

    def start(self) -> None:
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} "
                   f"-c unix_socket_directories={self.root}")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
                  "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop``: ``fast`` ends open connections (what a restart by an admin does)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        try:
            self._run("pg_ctl", "-D", str(self.data), "status")
        except RuntimeError:
            return False
        return True

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop, stay down ``down_seconds``, start again on the same port with the same data."""
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def uri(self, database: str = "postgres", scheme: str = "postgresql") -> str:
        return f"{scheme}://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def new_database(self, prefix: str = "mlflow") -> str:
        """Create an empty database; returns its ``postgresql://`` URI (with the password)."""
        import sqlalchemy

        self._databases += 1
        name = f"{prefix}_{os.getpid()}_{self._databases}"
        # through SQLAlchemy's default driver for postgresql://, the one MLflow will use
        engine = sqlalchemy.create_engine(self.uri(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return self.uri(name)


def postgres_server() -> Iterator[PostgresServer]:
    """Start a private server for the test session (generator for a fixture); skip if the
    binaries, the driver or (as root) the ``postgres`` user are missing."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        _unavailable("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install "
                     "postgresql (.ci/run does)")
    try:
        import sqlalchemy

        sqlalchemy.create_engine("postgresql://")  # imports the default driver
    except ImportError:
        _unavailable("no PostgreSQL driver for postgresql://: pip install -e \".[postgres]\"")
    run_as = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root and there is no 'postgres' user to run PostgreSQL "
                         "as (PostgreSQL refuses root); apt-get install postgresql creates it")
        run_as = "postgres"
    # Not under pytest's tmp folder: its parents are private to root, the server user must
    # reach its own folder.
    root = Path(tempfile.mkdtemp(prefix="batchmixup-pg-"))
    server = PostgresServer(bin_dir, root, run_as)
    try:
        server.init()
        server.start()
        yield server
    finally:
        try:
            server.stop("immediate")
        except (RuntimeError, subprocess.SubprocessError):
            pass
        shutil.rmtree(root, ignore_errors=True)
