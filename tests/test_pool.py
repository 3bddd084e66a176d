"""DaemonThreadPool: an Executor whose threads never hold the process at exit."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from tieredindex.pool import DaemonThreadPool


def test_results_errors_and_the_worker_bound() -> None:
    pool = DaemonThreadPool(3, "t")
    running = 0
    most = 0
    lock = threading.Lock()

    def work(i: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.01)
        with lock:
            running -= 1
        if i == 7:
            raise KeyError(i)
        return i * i

    futures = [pool.submit(work, i) for i in range(20)]
    assert [f.result() for f in futures if f is not futures[7]] == [i * i for i in range(20) if i != 7]
    with pytest.raises(KeyError):
        futures[7].result()
    assert most <= 3
    assert all(t.daemon for t in pool._threads) and len(pool._threads) <= 3
    pool.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(work, 1)


def test_shutdown_cancels_what_has_not_started() -> None:
    pool = DaemonThreadPool(1, "t")
    gate = threading.Event()
    first = pool.submit(gate.wait, 10)
    queued = [pool.submit(time.sleep, 0) for _ in range(5)]
    pool.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued)
    gate.set()
    assert first.result(timeout=10) is True


def test_a_stuck_thread_does_not_hold_the_interpreter_at_exit() -> None:
    """The reason it exists: ThreadPoolExecutor joins its threads at exit."""
    code = (
        "import time\n"
        "from tieredindex.pool import DaemonThreadPool\n"
        "pool = DaemonThreadPool(1, 'stuck')\n"
        "pool.submit(time.sleep, 60)\n"
        "pool.shutdown(wait=False)\n"
    )
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
    assert time.monotonic() - started < 20
