"""A thread pool whose threads do not hold the process at exit.

``concurrent.futures.ThreadPoolExecutor`` joins its threads when the
interpreter exits. A thread inside an SDK call on a hung connection stays
there until the call's read timeout (30 s by default), so a process whose
``shutdown()`` returned on its deadline, or that a SIGTERM asked to stop,
lived on that long. These threads are daemons: nothing they do needs them to
finish (a remote write is atomic; an interrupted multipart upload is aborted
by the next start, or swept once its key is uploaded), and the journal is
consistent after every transaction.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

T = TypeVar("T")

_Work = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class DaemonThreadPool(Executor):
    """At most ``workers`` daemon threads, started as work arrives."""

    def __init__(self, workers: int, name: str) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self._workers = workers
        self._name = name
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            future: Future[T] = Future()
            self._queue.put((future, fn, args, kwargs))
            if self._idle == 0 and len(self._threads) < self._workers:
                thread = threading.Thread(
                    target=self._run, name=f"{self._name}_{len(self._threads)}", daemon=True
                )
                try:
                    thread.start()
                except RuntimeError:
                    # Out of threads ("can't start new thread"). Counted as
                    # one of ours, it took a place for good, and once all
                    # were lost no work ever ran. A thread of ours takes
                    # the work in its turn; with none, the caller is told,
                    # and the work (the only one queued) is taken back.
                    if not self._threads:
                        self._queue.get_nowait()
                        raise
                    self._idle -= 1
                else:
                    self._threads.append(thread)
            else:
                self._idle -= 1  # one idle thread takes it
            return future

    def _run(self) -> None:
        while True:
            work = self._queue.get()
            if work is None:
                return
            future, fn, args, kwargs = work
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:  # handed to whoever waits on the future
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del work, future, fn, args, kwargs
            with self._lock:
                self._idle += 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = list(self._threads)
        if cancel_futures:
            while True:
                try:
                    work = self._queue.get_nowait()
                except queue.Empty:
                    break
                if work is not None:
                    work[0].cancel()
        for _ in threads:
            self._queue.put(None)
        if wait:
            for thread in threads:
                thread.join()
