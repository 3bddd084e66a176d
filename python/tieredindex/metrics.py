"""Counters and gauges of one IndexStore, updated through a few hooks.

The store owns a :class:`StoreMetrics`. Its journal (``observe.py``)
reports every file's state change here, ``put`` counts entries, the retry
loop's logger counts retries, and failures and failed checks are counted
where the store records them. :meth:`StoreMetrics.snapshot` (what
``IndexStore.metrics()`` returns) needs no journal query, so it is cheap
to scrape and still answers after shutdown.

Counters only grow; gauges (files by state, pending bytes, oldest pending
age) describe the moment of the snapshot. Every method is thread-safe.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any

from tieredindex.journal import FileRecord
from tieredindex.states import UNFINISHED_STATES, FileState

UPLOAD_LATENCY_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Upper bounds of the upload latency histogram (seconds); +Inf is implied."""


@dataclasses.dataclass(frozen=True)
class MetricsSnapshot:
    """One reading of a store's metrics. ``as_dict()`` gives plain JSON."""

    # Counters.
    entries_put: int
    """Index entries written by ``put`` (one per key)."""
    state_changes: int
    """File state transitions recorded in the journal."""
    uploads: int
    """Files uploaded, verified and made visible."""
    upload_bytes: int
    """Bytes of those files."""
    upload_latency_s_sum: float
    """From the first upload intent to the manifest record, summed."""
    upload_latency_s_count: int
    upload_latency_s_max: float
    upload_latency_buckets: dict[str, int]
    """Cumulative histogram: upper bound (``"0.5"``, ..., ``"+Inf"``) -> uploads
    at most that slow."""
    retries: int
    """Remote operations retried after a transient failure."""
    failures: int
    """Errors recorded by the store (failed uploads, unreachable remote...)."""
    verification_failures: int
    """Files or objects that failed a size or checksum check."""
    # Gauges.
    files_by_state: dict[str, int]
    pending_files: int
    """Files whose entries are not yet in the remote store."""
    pending_bytes: int
    """Bytes of sealed files waiting for upload."""
    oldest_pending_age_s: float | None
    """Age of the oldest pending file; None when nothing is pending."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class _File:
    state: FileState
    size: int | None
    created_at: float
    attempts: int = 0
    upload_started: float | None = None


class StoreMetrics:
    """The live metrics of one store."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[str, _File] = {}
        self._entries_put = 0
        self._state_changes = 0
        self._uploads = 0
        self._upload_bytes = 0
        self._latency_sum = 0.0
        self._latency_count = 0
        self._latency_max = 0.0
        self._latency_buckets = [0] * (len(UPLOAD_LATENCY_BUCKETS_S) + 1)
        self._retries = 0
        self._failures = 0
        self._verification_failures = 0

    # ----------------------------------------------------------------- hooks

    def add_entries(self, n: int) -> None:
        with self._lock:
            self._entries_put += n

    def add_retry(self) -> None:
        with self._lock:
            self._retries += 1

    def add_failure(self) -> None:
        with self._lock:
            self._failures += 1

    def add_verification_failures(self, n: int = 1) -> None:
        with self._lock:
            self._verification_failures += n

    def load(self, records: list[FileRecord]) -> None:
        """The files a journal holds when it is opened (no state change)."""
        with self._lock:
            for rec in records:
                self._files[rec.file_id] = _File(rec.state, rec.size, rec.created_at)

    def state_of(self, file_id: str) -> FileState | None:
        with self._lock:
            f = self._files.get(file_id)
            return None if f is None else f.state

    def attempts_of(self, file_id: str) -> int:
        """Upload attempts of ``file_id`` in this process's life."""
        with self._lock:
            f = self._files.get(file_id)
            return 0 if f is None else f.attempts

    def file_changed(self, rec: FileRecord) -> int:
        """A file was added or changed state; returns its upload attempts."""
        now = time.monotonic()
        with self._lock:
            self._state_changes += 1
            f = self._files.get(rec.file_id)
            if f is None:
                f = self._files[rec.file_id] = _File(rec.state, rec.size, rec.created_at)
            f.state, f.size = rec.state, rec.size
            if rec.state is FileState.UPLOADING:
                f.attempts += 1
                if f.upload_started is None:
                    f.upload_started = now
            elif rec.state is FileState.UPLOADED:
                self._uploads += 1
                self._upload_bytes += rec.size or 0
                if f.upload_started is not None:  # unknown when the intent was before a restart
                    self._observe_latency(now - f.upload_started)
            return f.attempts

    def file_removed(self, file_id: str) -> None:
        with self._lock:
            self._files.pop(file_id, None)

    def _observe_latency(self, seconds: float) -> None:
        self._latency_sum += seconds
        self._latency_count += 1
        self._latency_max = max(self._latency_max, seconds)
        for i, bound in enumerate(UPLOAD_LATENCY_BUCKETS_S):
            if seconds <= bound:
                self._latency_buckets[i] += 1
                break
        else:
            self._latency_buckets[-1] += 1

    # -------------------------------------------------------------- reading

    def snapshot(self) -> MetricsSnapshot:
        now = time.time()
        with self._lock:
            by_state: dict[str, int] = {}
            pending = []
            for f in self._files.values():
                by_state[str(f.state)] = by_state.get(str(f.state), 0) + 1
                if f.state in UNFINISHED_STATES:
                    pending.append(f)
            buckets: dict[str, int] = {}
            running = 0
            for bound, n in zip((*UPLOAD_LATENCY_BUCKETS_S, "+Inf"), self._latency_buckets, strict=True):
                running += n
                buckets[str(bound)] = running
            return MetricsSnapshot(
                entries_put=self._entries_put,
                state_changes=self._state_changes,
                uploads=self._uploads,
                upload_bytes=self._upload_bytes,
                upload_latency_s_sum=self._latency_sum,
                upload_latency_s_count=self._latency_count,
                upload_latency_s_max=self._latency_max,
                upload_latency_buckets=buckets,
                retries=self._retries,
                failures=self._failures,
                verification_failures=self._verification_failures,
                files_by_state=dict(sorted(by_state.items())),
                pending_files=len(pending),
                pending_bytes=sum(f.size or 0 for f in pending),
                oldest_pending_age_s=max((max(0.0, now - f.created_at) for f in pending), default=None),
            )


class RetryCountingLogger(logging.Logger):
    """The logger handed to the retry loop: it logs one warning per retry
    (through the ``tieredindex`` logger's handlers) and counts it."""

    def __init__(self, metrics: StoreMetrics, parent: logging.Logger) -> None:
        super().__init__(f"{parent.name}.retry")
        self.parent = parent
        self._metrics = metrics

    def warning(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._metrics.add_retry()
        kwargs["stacklevel"] = int(kwargs.get("stacklevel", 1)) + 1
        super().warning(msg, *args, **kwargs)
