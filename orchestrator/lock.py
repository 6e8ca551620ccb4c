"""One sweep per experiment at a time, across machines: a lock kept in the tracking store.

Two sweeps of one experiment running at once used to train the same cells twice, log each
epoch twice into one run and share one Tune folder. Two drivers on two machines share only
the tracking store, so the lock lives there: an MLflow registered model named
``batchmixup-lock.<experiment>``. Creating a registered model is atomic (its name is unique
on every backend: sqlite, PostgreSQL, ``mlflow server``) and deleting one is a hard delete,
so "create" is "acquire" and "delete" is "release".

The lock's tags name its holder (``host``, ``pid``, ``user``, ``started``, ``command``) and
carry a ``heartbeat`` (Unix time) that a daemon thread refreshes every
:data:`HEARTBEAT_S` seconds, and a random ``token`` that identifies this holding. A lock is
*stale*, and may be taken over, when its heartbeat is older than :data:`STALE_S` seconds or
when its holder ran on this host and that process is gone.

Taking over a stale lock must not race with another taker: the taker first creates a claim
``batchmixup-lock.<experiment>.takeover.<token of the stale holding>`` (atomic, so one taker
wins), checks that the lock still carries that token, deletes it, creates its own and
deletes the claim. A slower taker's claim comes after that and finds a different token.

A second launch either refuses at once (:class:`LockError`, exit 2, naming the holder) or,
with ``wait``, polls until the lock is free.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import math
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from orchestrator.store import error_code
from results.uris import redact_text, redact_uri
from trainers.errors import ConfigError

PREFIX = "batchmixup-lock."
HEARTBEAT_S = float(os.environ.get("BATCHMIXUP_LOCK_HEARTBEAT_S", "30"))
STALE_S = float(os.environ.get("BATCHMIXUP_LOCK_STALE_S", "300"))
POLL_S = 10.0
TRANSIENT_TRIES = 5


class _Quiet(logging.Filter):
    """Drops MLflow's own log records about store errors raised inside a lock operation on
    this thread: the lock retries them or turns them into one ``error:`` line (a busy sqlite
    file otherwise prints 60 lines of SQLAlchemy traceback per try)."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.local, "on", False)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        self.local.on = True
        try:
            yield
        finally:
            self.local.on = False


_QUIET = _Quiet()
logging.getLogger("mlflow.store.db.utils").addFilter(_QUIET)


class LockError(ConfigError):
    """Another sweep of the same experiment holds the lock (or the lock cannot be taken)."""


@dataclass
class Holder:
    """Who holds a lock, from its tags."""

    token: str
    host: str
    pid: int
    user: str
    started: float
    heartbeat: float
    command: str

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> Holder:
        def number(key: str) -> float:
            try:
                return float(tags.get(key, "nan"))
            except ValueError:
                return math.nan

        pid = number("pid")
        return cls(token=tags.get("token", ""), host=tags.get("host", "?"),
                   pid=int(pid) if math.isfinite(pid) else -1, user=tags.get("user", "?"),
                   started=number("started"), heartbeat=number("heartbeat"),
                   command=tags.get("command", ""))

    def describe(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        started = (datetime.fromtimestamp(self.started, timezone.utc).strftime(
            "%Y-%m-%d %H:%M:%S UTC") if math.isfinite(self.started) else "?")
        beat = f"{now - self.heartbeat:.0f}s ago" if math.isfinite(self.heartbeat) else "never"
        return (f"pid {self.pid} on {self.host} (user {self.user}), started {started}, "
                f"last heartbeat {beat}")


def lock_name(experiment: str) -> str:
    """The registered model that is the lock of ``experiment``."""
    return PREFIX + experiment


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_reason(holder: Holder, now: float | None = None, host: str | None = None) -> str | None:
    """Why ``holder``'s lock may be taken over, or None while it looks alive."""
    now = time.time() if now is None else now
    host = host or socket.gethostname()
    if holder.host == host and not _pid_alive(holder.pid):
        return f"its process {holder.pid} on {host} is gone"
    if not math.isfinite(holder.heartbeat) or now - holder.heartbeat > STALE_S:
        return f"no heartbeat for more than {STALE_S:.0f}s"
    return None


class SweepLock:
    """The lock of one experiment in one tracking store (see the module docstring).

    Args:
        tracking_uri: the MLflow store (its model registry holds the lock).
        experiment: the experiment (sweep) name.
        log: where progress lines go (waiting, takeover, lost lock).
    """

    def __init__(self, tracking_uri: str, experiment: str,
                 log: Callable[[str], None] = print) -> None:
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.name = lock_name(experiment)
        self.token = uuid.uuid4().hex
        self.log = log
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.held = False

    # ---------------------------------------------------------------- store access
    def _tags(self) -> dict[str, str]:
        now = str(time.time())
        return {"token": self.token, "host": socket.gethostname(), "pid": str(os.getpid()),
                "user": getpass.getuser(), "started": now, "heartbeat": now,
                "experiment": self.experiment,
                "command": redact_text(" ".join(sys.argv))[:1000]}

    def _retry(self, op: Callable[[], Any]) -> Any:
        """Run a store call, retrying transient errors (sqlite 'database is locked', ...)."""
        for attempt in range(TRANSIENT_TRIES):
            try:
                with _QUIET.active():
                    return op()
            except Exception as exc:
                if error_code(exc) in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                    raise
                if attempt == TRANSIENT_TRIES - 1:
                    raise LockError(f"cannot use the sweep lock in {redact_uri(self.tracking_uri)}"
                                    f": {type(exc).__name__}: "
                                    f"{redact_text(str(exc).splitlines()[0][:200])}") from None
                time.sleep(0.5 * (attempt + 1))
        return None  # unreachable

    def _create(self, name: str, tags: dict[str, str]) -> bool:
        """Create a registered model; False when the name is taken."""
        try:
            self._retry(lambda: self.client.create_registered_model(name, tags=tags))
        except Exception as exc:
            if error_code(exc) == "RESOURCE_ALREADY_EXISTS":
                return False
            raise
        return True

    def _delete(self, name: str) -> None:
        try:
            self._retry(lambda: self.client.delete_registered_model(name))
        except Exception as exc:
            if error_code(exc) != "RESOURCE_DOES_NOT_EXIST":
                raise

    def holder(self) -> Holder | None:
        """The current holder, or None when the lock is free."""
        try:
            model = self._retry(lambda: self.client.get_registered_model(self.name))
        except Exception as exc:
            if error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        return Holder.from_tags(dict(model.tags or {}))

    # ---------------------------------------------------------------- acquire / release
    def acquire(self, wait: float | None = None) -> None:
        """Take the lock; raise :class:`LockError` naming the holder if it is held.

        Args:
            wait: None refuses at once; otherwise wait up to ``wait`` seconds (``math.inf``:
                as long as it takes), polling every :data:`POLL_S` seconds.
        """
        deadline = time.monotonic() + (wait or 0.0)
        announced = None
        vanished = 0
        while True:
            if self._create(self.name, self._tags()):
                break
            holder = self.holder()
            if holder is None:  # released in between: try again at once
                vanished += 1
                if vanished > 20:
                    raise LockError(f"the sweep lock {self.name} in "
                                    f"{redact_uri(self.tracking_uri)} exists and does not")
                continue
            reason = stale_reason(holder)
            if reason is not None:
                if self._take_over(holder, reason):
                    break
                continue
            remaining = deadline - time.monotonic()
            if wait is None or remaining <= 0:
                raise LockError(self._refusal(holder, waited=wait is not None))
            if announced != holder.token:
                self.log(f"[lock] experiment {self.experiment!r} is being run by "
                         f"{holder.describe()}; waiting for it to end")
                announced = holder.token
            time.sleep(min(POLL_S, remaining))
        self.held = True
        self._start_heartbeat()

    def _refusal(self, holder: Holder, waited: bool) -> str:
        what = "still runs after the wait" if waited else "is running"
        return (f"another sweep of experiment {self.experiment!r} {what} against "
                f"{redact_uri(self.tracking_uri)}: {holder.describe()}; wait for it to end, "
                "pass --wait-for-lock to queue behind it, or use --name for another "
                "experiment")

    def _take_over(self, stale: Holder, reason: str) -> bool:
        """Replace a stale lock; False when another launch got there first."""
        claim = f"{self.name}.takeover.{stale.token or 'untokened'}"
        if not self._create(claim, {"token": self.token}):
            time.sleep(1.0)
            return False
        try:
            current = self.holder()
            if current is None or current.token != stale.token:
                return False
            self._delete(self.name)
            if not self._create(self.name, self._tags()):
                return False
            self.log(f"[lock] took over the lock of experiment {self.experiment!r} from "
                     f"{stale.describe()}: {reason}")
            return True
        finally:
            self._delete(claim)

    def release(self) -> None:
        """Stop the heartbeat and delete the lock if it is still this holding's."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if not self.held:
            return
        self.held = False
        try:
            current = self.holder()
            if current is not None and current.token == self.token:
                self._delete(self.name)
        except Exception as exc:  # noqa: BLE001 - the lock goes stale and is taken over
            self.log(f"warning: could not release the sweep lock {self.name} "
                     f"({type(exc).__name__}); the next launch takes it over after "
                     f"{STALE_S:.0f}s")

    # ---------------------------------------------------------------- heartbeat
    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="sweep-lock-heartbeat",
                                        daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                with _QUIET.active():
                    current = self.client.get_registered_model(self.name)
                mine = (current.tags or {}).get("token") == self.token
            except Exception as exc:  # noqa: BLE001 - store down: beat again next time
                if error_code(exc) != "RESOURCE_DOES_NOT_EXIST":
                    continue
                mine = False
            if not mine:
                self.log(f"warning: the sweep lock of experiment {self.experiment!r} was taken "
                         "over or removed by another launch (this one looked stale); two "
                         "sweeps may now run the same cells")
                self.held = False
                return
            with contextlib.suppress(Exception), _QUIET.active():
                self.client.set_registered_model_tag(self.name, "heartbeat", str(time.time()))


@contextlib.contextmanager
def sweep_lock(tracking_uri: str, experiment: str, wait: float | None = None,
               log: Callable[[str], None] = print) -> Iterator[SweepLock]:
    """Hold the experiment's lock for the ``with`` block (see :class:`SweepLock`)."""
    lock = SweepLock(tracking_uri, experiment, log=log)
    lock.acquire(wait)
    try:
        yield lock
    finally:
        lock.release()
