"""Retention over many expired files: the files go at once (a bounded number
in flight, a bounded number a round), each in its own order (record read,
record deleted, object deleted, local state dropped); one failing file
holds back none of the others; a shutdown does not wait for the backlog."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

import tieredindex.store
from tieredindex import IndexStore, open_remote
from tieredindex.layout import DATA_PREFIX, MANIFEST_PREFIX, data_key, file_id_of_key, manifest_key
from tieredindex.remote import READS_PER_UPLOAD, Remote

from store_helpers import FOREVER, SwitchableRemote, small_config, wait_until

T = TypeVar("T")
FILES = 40
ENTRIES_PER_FILE = 5
UPLOADS = 2  # upload_concurrency: retention's bound is then small, and easy to exceed
AT_ONCE = READS_PER_UPLOAD * UPLOADS // 2


class Watched(SwitchableRemote):
    """Logs retention's calls (GETs of manifest records, deletes), counts
    how many are in flight at once, and can slow them or refuse deletes."""

    def __init__(self, inner: Remote) -> None:
        super().__init__(inner)
        self.log: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most = 0
        self.delay_s = 0.0
        self.refused: set[str] = set()

    def _watched(self, op: str, key: str, call: Callable[[str], T]) -> T:
        with self.lock:
            self.log.append((op, key))
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        try:
            if self.delay_s:
                time.sleep(self.delay_s)
            if op == "delete" and key in self.refused:
                raise PermissionError(13, "delete denied (test)", key)
            return call(key)
        finally:
            with self.lock:
                self.in_flight -= 1

    def get(self, key: str) -> bytes:
        if not key.startswith(MANIFEST_PREFIX):
            return super().get(key)
        return self._watched("get", key, super().get)

    def delete(self, key: str) -> None:
        self._watched("delete", key, super().delete)

    def seen(self) -> list[tuple[str, str]]:
        with self.lock:
            return list(self.log)


def uploaded_then_expired(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch, delay_s: float = 0.0
) -> tuple[IndexStore, Watched, list[str]]:
    """A store with FILES uploaded files (no local copies), all of which
    expire at once once everything is up. Returns it, its remote, the ids
    (the clock moved on is ``store.clock``)."""
    monkeypatch.setattr(tieredindex.store, "RETENTION_CONFIRM_S", 0.0)
    clock = [time.time_ns() // 1_000_000]  # retention's wall clock, moved by hand
    monkeypatch.setattr(tieredindex.store, "_now_ms", lambda: clock[0])
    remote = Watched(open_remote(remote_url))
    config = small_config(
        capacity=ENTRIES_PER_FILE, cache_bytes=0, retention_s=60.0, upload_concurrency=UPLOADS
    )
    store = IndexStore(tmp_path / "d", remote, config)
    store.start()
    for i in range(FILES * ENTRIES_PER_FILE):
        store.put("t", "k", queue_id=0, offset=i, size=1, timestamp_ms=clock[0])
    store.seal()
    wait_until(
        lambda: not store.status().pending_files and len(store._remote_files) == FILES and not store._sealed,
        "all uploaded, copies evicted",
        timeout_s=60,
    )
    ids = sorted(store._remote_files)
    store.clock = clock  # type: ignore[attr-defined]
    with remote.lock:
        remote.log.clear()
        remote.delay_s = delay_s
    clock[0] += 61_000
    return store, remote, ids


def objects(remote_url: str, prefix: str) -> list[str]:
    return sorted(o.key for o in open_remote(remote_url).list(prefix))


def test_many_expired_files_go_at_once_each_record_before_its_object(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, remote, ids = uploaded_then_expired(tmp_path, remote_url, monkeypatch, delay_s=0.02)
    wait_until(lambda: not store.journal.files(), "retention deleted every file", timeout_s=60)
    assert objects(remote_url, MANIFEST_PREFIX) == [] and objects(remote_url, DATA_PREFIX) == []
    assert store._remote_files == {} and store.query("t", "k", 0, FOREVER, 1000) == []
    log = remote.seen()
    for file_id in ids:
        steps = [
            log.index(("get", manifest_key(file_id))),
            log.index(("delete", manifest_key(file_id))),
            log.index(("delete", data_key(file_id))),
        ]
        assert steps == sorted(steps), (file_id, steps)
    # Several files at once, never more than half the read pool (queries keep the rest).
    assert 1 < remote.most <= AT_ONCE, remote.most
    assert store.shutdown().clean


def test_a_delete_that_fails_holds_back_only_its_own_file(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failing file is put back (its record is gone already: only this
    store can still delete its object), answers queries as before, and is
    tried again each round; every other file goes, local state and all."""
    store, remote, ids = uploaded_then_expired(tmp_path, remote_url, monkeypatch)
    victim = ids[FILES // 2]
    with remote.lock:
        remote.refused.add(data_key(victim))
    wait_until(lambda: len(store.journal.files()) == 1, "retention deleted every other file", timeout_s=60)
    wait_until(
        lambda: remote.seen().count(("delete", data_key(victim))) >= 2, "the failed delete tried again"
    )
    assert [r.file_id for r in store.journal.files()] == [victim]
    assert objects(remote_url, MANIFEST_PREFIX) == []
    assert objects(remote_url, DATA_PREFIX) == [data_key(victim)]
    at = ids.index(victim) * ENTRIES_PER_FILE
    # Put back between rounds (each round takes it out of queries again while it tries).
    wait_until(
        lambda: (
            list(store._remote_files) == [victim]
            and sorted(e.offset for e in store.query("t", "k", 0, FOREVER, 1000))
            == list(range(at, at + ENTRIES_PER_FILE))
        ),
        "the file put back answers queries",
    )
    assert "delete denied (test)" in (store.status().last_error or "")
    with remote.lock:
        remote.refused.clear()
    wait_until(lambda: not store.journal.files(), "the next round deleted it")
    assert objects(remote_url, DATA_PREFIX) == []
    assert store._remote_files == {} and store.query("t", "k", 0, FOREVER, 1000) == []
    assert store.shutdown().clean


def test_a_round_deletes_a_bounded_number_of_files(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upkeep thread comes back to its other work (catalog, reconcile)
    between rounds; the rest of a backlog goes in the rounds after."""
    monkeypatch.setattr(tieredindex.store, "RETENTION_PER_ROUND", 7)
    store, remote, _ = uploaded_then_expired(tmp_path, remote_url, monkeypatch)
    per_round: list[int] = []
    real = store._apply_retention

    def counted(retention_s: float) -> None:
        before = len(remote.seen())
        try:
            real(retention_s)
        finally:
            done = remote.seen()[before:]
            per_round.append(sum(op == "delete" and k.startswith(DATA_PREFIX) for op, k in done))

    store._apply_retention = counted  # type: ignore[method-assign]
    wait_until(lambda: not store.journal.files(), "retention deleted every file", timeout_s=60)
    assert store.shutdown().clean
    assert sum(per_round) == FILES
    assert max(per_round) == 7, per_round


def test_shutdown_does_not_wait_for_a_retention_backlog(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deleting the whole backlog takes seconds here (3 slow calls a file,
    AT_ONCE files at a time); the shutdown ends the calls in flight and
    starts no other, and what it leaves is consistent: every record left
    names an object that is there."""
    store, remote, _ = uploaded_then_expired(tmp_path, remote_url, monkeypatch, delay_s=0.2)
    wait_until(lambda: any(op == "delete" for op, _ in remote.seen()), "retention began")
    started = time.monotonic()
    report = store.shutdown(timeout_s=20)
    elapsed = time.monotonic() - started
    backlog_s = (FILES / AT_ONCE) * 3 * 0.2
    assert elapsed < backlog_s / 2, elapsed
    assert report.clean, report
    assert not any(t.is_alive() for t in store._threads)
    made = len(remote.seen())
    time.sleep(0.5)
    assert len(remote.seen()) == made, "retention went on after the shutdown"
    records = objects(remote_url, MANIFEST_PREFIX)
    data = set(objects(remote_url, DATA_PREFIX))
    assert records, "the backlog was all deleted: nothing was cut short"
    assert all(data_key(file_id_of_key(k) or "") in data for k in records), (records, data)
    again = IndexStore(tmp_path / "d", open_remote(remote_url), small_config(retention_s=60.0))
    again.start()
    wait_until(lambda: not again.journal.files(), "the next life deleted the rest", timeout_s=60)
    assert objects(remote_url, MANIFEST_PREFIX) == [] and objects(remote_url, DATA_PREFIX) == []
    assert again.shutdown().clean


def test_queries_keep_read_threads_while_retention_deletes(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retention's deletions run in the read pool, which a query's remote
    files use too: a backlog takes at most half of it, so a query's reads
    do not queue behind the backlog's (40 files x 3 slow calls here)."""
    store, remote, _ = uploaded_then_expired(tmp_path, remote_url, monkeypatch, delay_s=0.5)
    now = store.clock[0]  # type: ignore[attr-defined]
    for i in range(4 * ENTRIES_PER_FILE):  # four files not expired, read from the remote too
        store.put("t", "fresh", queue_id=1, offset=i, size=1, timestamp_ms=now)
    store.seal()
    wait_until(lambda: not store.status().pending_files and not store._sealed, "the fresh files uploaded")
    wait_until(lambda: remote.in_flight >= AT_ONCE, "retention's deletions in flight")
    started = time.monotonic()
    got = store.query("t", "fresh", now, now, 1000, strict=True)
    took = time.monotonic() - started
    assert sorted(e.offset for e in got) == list(range(4 * ENTRIES_PER_FILE))
    # Behind the backlog, its reads would wait for whole files' deletions (1.5 s each).
    assert took < 1.5, took
    assert len(store.journal.files()) > 4, "the backlog was gone before the query"
    assert store.shutdown().clean
