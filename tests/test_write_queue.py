"""The MLflow write queue: in order on one background thread, held back while the store fails."""

from __future__ import annotations

import pickle
import threading
import time

from orchestrator.callbacks import MlflowCellCallback
from orchestrator.tracking import SweepTracker, WriteQueue


class Store:
    """A fake store: records writes, can be taken down."""

    def __init__(self) -> None:
        self.down = False
        self.written: list[int] = []
        self.threads: set[str] = set()

    def op(self, value: int, delay: float = 0.0):
        def write() -> None:
            if self.down:
                raise ConnectionError("store down")
            time.sleep(delay)
            self.threads.add(threading.current_thread().name)
            self.written.append(value)
        return write


def test_writes_run_in_order_off_the_calling_thread():
    store, queue = Store(), WriteQueue()
    for i in range(20):
        queue.put(f"w{i}", store.op(i, delay=0.001))
    assert queue.wait_idle()
    assert store.written == list(range(20))
    assert store.threads == {"mlflow-writes"}
    assert not queue.pending


def test_put_wait_returns_after_that_write():
    store, queue = Store(), WriteQueue()
    queue.put("slow", store.op(0, delay=0.2))
    queue.put("mine", store.op(1), wait=True)
    assert store.written == [0, 1]


def test_failing_write_holds_back_the_rest_until_the_store_returns(capsys):
    store, queue = Store(), WriteQueue(retry_interval=0.2)
    store.down = True
    start = time.monotonic()
    queue.put("a", store.op(0), wait=True)  # does not block while the store is failing
    queue.put("b", store.op(1))
    assert time.monotonic() - start < 1.0
    assert not queue.wait_idle()
    assert store.written == [] and len(queue.pending) == 2
    assert "write failed, queued for retry" in capsys.readouterr().out
    store.down = False  # retried by the writer itself every retry_interval
    deadline = time.monotonic() + 5
    while queue.pending and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.written == [0, 1]
    assert "store reachable again" in capsys.readouterr().out


def test_drain_gives_up_after_its_timeout_and_succeeds_once_the_store_is_back():
    store, queue = Store(), WriteQueue(retry_interval=60)
    store.down = True
    queue.put("a", store.op(0))
    assert not queue.drain(0.3, interval=0.1)
    threading.Timer(0.3, lambda: setattr(store, "down", False)).start()
    assert queue.drain(5, interval=0.1)  # drain retries every interval, not retry_interval
    assert store.written == [0]


def test_callback_state_save_waits_for_queued_writes(tmp_path):
    tracker = SweepTracker(f"sqlite:///{tmp_path / 'm.db'}", "q")
    store = Store()
    tracker.queue.put("slow", store.op(0, delay=0.3))
    assert MlflowCellCallback(tracker).get_state() is None
    assert store.written == [0]


def test_queue_and_tracker_pickle_without_their_thread(tmp_path):
    tracker = SweepTracker(f"sqlite:///{tmp_path / 'm.db'}", "q")
    tracker.queue.put("x", Store().op(0))
    copy = pickle.loads(pickle.dumps(tracker))
    assert not copy.queue.pending
    store = Store()
    copy.queue.put("y", store.op(1), wait=True)
    assert store.written == [1]


def test_a_write_the_store_refuses_for_good_is_dropped_not_retried_forever(capsys):
    """A param logged again with another value is refused by MLflow (INVALID_PARAMETER_VALUE):
    retrying cannot help, so the queue reports it once and goes on with the later writes
    (it used to retry it every 5 s and the sweep never ended)."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    store, queue = Store(), WriteQueue(retry_interval=0.1)

    def conflicting() -> None:
        raise MlflowException("Changing param values is not allowed.",
                              error_code=INVALID_PARAMETER_VALUE)

    queue.put("a", store.op(0))
    queue.put("params", conflicting)
    queue.put("b", store.op(1), wait=True)
    assert queue.wait_idle() and not queue.pending
    assert store.written == [0, 1]
    assert queue.rejected == ["params: MlflowException: Changing param values is not allowed."]
    out = capsys.readouterr().out
    assert out.count("write rejected by the store, not retried") == 1
    assert "queued for retry" not in out


def test_a_busy_sqlite_store_is_retried_not_dropped():
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

    store, queue = Store(), WriteQueue(retry_interval=0.1)
    tries = []

    def busy_then_ok() -> None:
        tries.append(1)
        if len(tries) < 3:
            raise MlflowException("database is locked", error_code=TEMPORARILY_UNAVAILABLE)
        store.written.append(7)

    queue.put("busy", busy_then_ok)
    assert queue.drain(timeout=5, interval=0.1)
    assert store.written == [7] and len(tries) == 3 and not queue.rejected
