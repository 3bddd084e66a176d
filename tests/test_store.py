"""IndexStore against both back ends (file:// and a real moto S3 server)."""

from __future__ import annotations

import collections
import datetime as dt
import errno
import itertools
import shutil
import signal
import threading
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytest

import tieredindex.layout
import tieredindex.store
from tieredindex import (
    CorruptFileError,
    FileState,
    IndexFile,
    IndexStore,
    RemoteError,
    RetryPolicy,
    StoreClosedError,
    StoreLockedError,
    TieredIndexError,
    crc32c,
    open_remote,
)
from tieredindex.journal import FileRecord, Journal
from tieredindex.layout import DATA_PREFIX, MANIFEST_PREFIX, OWNER_KEY, PROBE_KEY_PREFIX, data_key
from tieredindex.remote import READS_PER_UPLOAD, PutResult, Remote, S3Remote

from store_helpers import (
    FOREVER,
    Outage,
    SwitchableRemote,
    crash_in_process,
    open_upload,
    small_config,
    wait_until,
)


def disk_full(*args: object, **kwargs: object) -> None:
    """Stands in for a call that writes to a full disk."""
    raise OSError(errno.ENOSPC, "No space left on device")


def fill(store: IndexStore, n: int, *, topic: str = "orders", keys: int = 7, t0: int = 1_000) -> dict:
    """Puts n messages; returns the model: key -> list of (queue_id, offset, size, ts)."""
    model: dict[str, list[tuple[int, int, int, int]]] = {}
    for i in range(n):
        key = f"k{i % keys}"
        store.put(topic, key, queue_id=i % 4, offset=i, size=100 + i, timestamp_ms=t0 + i)
        model.setdefault(key, []).append((i % 4, i, 100 + i, t0 + i))
    return model


def expected(model: dict, key: str, begin: int = 0, end: int = FOREVER, max_count: int = 10_000) -> list:
    hits = [e for e in model.get(key, []) if begin <= e[3] <= end]
    return sorted(hits, key=lambda e: e[3], reverse=True)[:max_count]


def assert_answers(store: IndexStore, model: dict, topic: str = "orders") -> None:
    for key in model:
        assert [tuple(e) for e in store.query(topic, key, 0, FOREVER, 10_000)] == expected(model, key)
        got = store.query(topic, key, 1_050, 1_120, 5)
        assert [tuple(e) for e in got] == expected(model, key, 1_050, 1_120, 5)


def assert_remote_alone_answers(directory: Path, remote_url: str, model: dict) -> None:
    """A new store on the empty ``directory`` answers every query from the
    remote alone."""
    fresh = IndexStore(directory, remote_url, small_config())
    fresh.start()
    try:
        assert_answers(fresh, model)
    finally:
        fresh.shutdown(timeout_s=10)


def test_methods_before_start_raise(tmp_path: Path, remote_url: str) -> None:
    store = IndexStore(tmp_path / "d", remote_url, small_config())
    with pytest.raises(TieredIndexError, match="start"):
        store.put("t", "k", queue_id=0, offset=0, size=0, timestamp_ms=0)
    with pytest.raises(TieredIndexError, match="start"):
        store.query("t", "k", 0, 1)
    with pytest.raises(TieredIndexError, match="start"):
        store.install_signal_handlers()


def test_put_refuses_bytes_keys_naming_them(tmp_path: Path, remote_url: str) -> None:
    """bytes are iterable: each key would have been an int ("key must be a
    str, not int"), naming neither the argument nor the mistake."""
    with IndexStore(tmp_path / "d", remote_url, small_config()) as store:
        with pytest.raises(TypeError, match="keys must be a str or an iterable of str, not bytes"):
            store.put("t", b"k", queue_id=0, offset=0, size=1, timestamp_ms=1)  # type: ignore[arg-type]
        assert store.query("t", "k", 0, FOREVER) == []


def test_bad_arguments_are_refused_by_name(tmp_path: Path) -> None:
    """API.md: a bad argument raises TypeError naming it. A non-iterable
    ``keys`` said "'int' object is not iterable"; a directory that is no
    path, "expected str, bytes or os.PathLike object"; and a yes/no flag
    given as a string was truthy: ``verify(repair="no")`` repaired
    (deleted orphans)."""
    remote_url = (tmp_path / "remote").as_uri()
    with pytest.raises(TypeError, match=r"directory must be a str or os\.PathLike, not int"):
        IndexStore(5, remote_url, small_config())  # type: ignore[arg-type]
    with IndexStore(tmp_path / "d", remote_url, small_config()) as store:
        for keys in (5, None):
            with pytest.raises(
                TypeError, match=f"keys must be a str or an iterable of str, not {type(keys).__name__}"
            ):
                store.put("t", keys, queue_id=0, offset=0, size=1, timestamp_ms=1)  # type: ignore[arg-type]
        calls = {
            "strict": lambda: store.query("t", "k", 0, FOREVER, strict="yes"),  # type: ignore[arg-type]
            "deep": lambda: store.verify(deep="no"),  # type: ignore[arg-type]
            "repair": lambda: store.verify(repair="no"),  # type: ignore[arg-type]
            "exit": lambda: store.install_signal_handlers(exit=0),  # type: ignore[arg-type]
        }
        handler = signal.getsignal(signal.SIGTERM)
        for name, call in calls.items():
            with pytest.raises(TypeError, match=f"{name} must be a bool"):
                call()
        assert signal.getsignal(signal.SIGTERM) is handler  # refused before any handler was set


def test_a_topic_or_key_that_is_not_valid_text_is_refused_by_name(tmp_path: Path) -> None:
    """A lone surrogate has no UTF-8: the error named neither argument."""
    with IndexStore(tmp_path / "d", (tmp_path / "remote").as_uri(), small_config()) as store:
        for topic, key, name in (("t", "\ud800", "key"), ("\udc00", "k", "topic")):
            with pytest.raises(ValueError, match=f"^{name} is not valid text"):
                store.put(topic, key, queue_id=0, offset=0, size=1, timestamp_ms=1)
            with pytest.raises(ValueError, match=f"^{name} is not valid text"):
                store.query(topic, key, 0, FOREVER)
        with pytest.raises(ValueError, match=r"^key is not valid text"):
            store.put("t", ["ok", "\ud800"], queue_id=0, offset=0, size=1, timestamp_ms=1)
        assert store.query("t", "ok", 0, FOREVER) == []  # nothing of the refused put
    assert store.shutdown().clean


def test_put_query_across_rolled_files_and_reopen(tmp_path: Path, remote_url: str) -> None:
    store = IndexStore(tmp_path / "d", remote_url, small_config())
    store.start()
    model = fill(store, 480)  # capacity 50: ten files
    assert_answers(store, model)
    report = store.shutdown()
    assert report.clean, report
    data = open_remote(remote_url).list(DATA_PREFIX)
    assert len(data) == 10
    assert max(o.key for o in data).endswith(report.uploaded[-1] + ".tix")  # the last, partial file
    again = IndexStore(tmp_path / "d", remote_url, small_config())
    again.start()
    assert_answers(again, model)
    more = fill(again, 30, t0=5_000)
    assert [tuple(e) for e in again.query("orders", "k1", 5_000, FOREVER)] == expected(more, "k1")
    assert again.shutdown().clean


def ten_files_uploaded(directory: Path, remote_url: str) -> dict:
    """A store in ``directory`` puts 480 messages (ten files) and shuts down
    clean, every file uploaded; returns the model."""
    store = IndexStore(directory, remote_url, small_config())
    store.start()
    model = fill(store, 480)
    assert store.shutdown().clean
    return model


class ReadsInFlight(SwitchableRemote):
    """Counts ranged reads in flight at once; each is held a moment so that
    reads started together overlap."""

    def __init__(self, inner: Remote) -> None:
        super().__init__(inner)
        self._lock = threading.Lock()
        self.in_flight = 0
        self.most_at_once = 0

    def get_range(self, key: str, start: int, end: int) -> bytes:
        with self._lock:
            self.in_flight += 1
            self.most_at_once = max(self.most_at_once, self.in_flight)
        try:
            time.sleep(0.02)
            return super().get_range(key, start, end)
        finally:
            with self._lock:
                self.in_flight -= 1


def test_a_querys_remote_files_are_read_at_once(tmp_path: Path, remote_url: str) -> None:
    model = ten_files_uploaded(tmp_path / "a", remote_url)
    remote = ReadsInFlight(open_remote(remote_url))
    fresh = IndexStore(tmp_path / "b", remote, small_config())
    fresh.start()
    assert_answers(fresh, model)  # the same answers, order and de-duplication as a sequential read
    assert fresh.status().remote_files == 10
    assert remote.most_at_once > 1
    fresh.shutdown()


class RecordReads(SwitchableRemote):
    """Counts whole-object reads (manifest records): in flight at once, and
    per key. Each is held a moment so that reads started together overlap."""

    def __init__(self, inner: Remote) -> None:
        super().__init__(inner)
        self._lock = threading.Lock()
        self.in_flight = 0
        self.most_at_once = 0
        self.per_key: collections.Counter[str] = collections.Counter()
        self.fail: set[str] = set()  # keys whose read raises a retryable error

    def get(self, key: str) -> bytes:
        with self._lock:
            self.in_flight += 1
            self.most_at_once = max(self.most_at_once, self.in_flight)
            self.per_key[key] += 1
        try:
            time.sleep(0.02)
            if key in self.fail:
                raise Outage(f"cannot read {key} (test)")
            return super().get(key)
        finally:
            with self._lock:
                self.in_flight -= 1


def test_a_new_store_reads_the_manifest_records_at_once_and_once(tmp_path: Path, remote_url: str) -> None:
    """A store on an empty directory reads every file's record before its
    first query: at once (up to READS_PER_UPLOAD x upload_concurrency), not
    one round trip after another; and once, though its first query and its
    start-up reconciliation both load the catalog."""
    model = ten_files_uploaded(tmp_path / "a", remote_url)
    remote = RecordReads(open_remote(remote_url))
    config = small_config(upload_concurrency=4)
    fresh = IndexStore(tmp_path / "b", remote, config)
    fresh.start()
    assert_answers(fresh, model)
    assert fresh.status().remote_files == 10
    assert 1 < remote.most_at_once <= READS_PER_UPLOAD * config.upload_concurrency
    records = [key for key in remote.per_key if key.startswith(MANIFEST_PREFIX)]
    assert len(records) == 10
    assert all(remote.per_key[key] == 1 for key in records), remote.per_key
    fresh.shutdown()


def test_an_unreadable_record_fails_the_catalog_as_a_whole(tmp_path: Path, remote_url: str) -> None:
    """Read at once, the records still fail the load as one sequential read
    would: a strict query raises rather than answer without a file, and
    once the record reads again, every file answers."""
    model = ten_files_uploaded(tmp_path / "a", remote_url)
    remote = RecordReads(open_remote(remote_url))
    keys = sorted(info.key for info in remote.inner.list(MANIFEST_PREFIX))
    remote.fail.add(keys[len(keys) // 2])
    config = small_config(retry=RetryPolicy(attempts=2, base_delay_s=0.01, max_delay_s=0.01, deadline_s=1.0))
    fresh = IndexStore(tmp_path / "b", remote, config)
    fresh.start()
    with pytest.raises(RemoteError):
        fresh.query("orders", "k1", 0, FOREVER, strict=True)
    remote.fail.clear()
    wait_until(lambda: fresh.status().remote_files == 10, "the catalog loaded once the record reads")
    assert_answers(fresh, model)
    fresh.shutdown()


def test_shutdown_uploads_last_partial_file_and_new_store_answers(tmp_path: Path, remote_url: str) -> None:
    store = IndexStore(tmp_path / "a", remote_url, small_config())
    store.start()
    model = fill(store, 123)  # two full files and a partial one
    report = store.shutdown()
    assert report.clean and report.pending == []
    assert report.uploaded  # at least the last, partial file went up during shutdown
    with pytest.raises(StoreClosedError):
        store.put("orders", "k", queue_id=0, offset=0, size=0, timestamp_ms=0)
    assert store.shutdown() is report  # a second call returns the first report
    # Promise 3: a new store on an empty directory, the same remote.
    fresh = IndexStore(tmp_path / "b", remote_url, small_config())
    fresh.start()
    assert_answers(fresh, model)
    assert fresh.status().remote_files == 3
    assert fresh.shutdown().clean
    remote = open_remote(remote_url)
    data = [o for o in remote.list(DATA_PREFIX)]
    assert len(data) == 3 and all(o.size > 0 for o in data)
    assert len(remote.list(MANIFEST_PREFIX)) == 3


def test_empty_files_never_uploaded(tmp_path: Path, remote_url: str) -> None:
    for _ in range(3):  # restarts never upload an empty object (RocketMQ did)
        store = IndexStore(tmp_path / "d", remote_url, small_config())
        store.start()
        assert store.shutdown().clean
    store = IndexStore(tmp_path / "d", remote_url, small_config())
    store.start()
    store.put("t", "k", queue_id=0, offset=0, size=1, timestamp_ms=1)
    store.seal()
    store.seal()  # nothing to roll: the new file is empty
    assert store.shutdown().clean
    assert len(open_remote(remote_url).list(DATA_PREFIX)) == 1


def test_second_store_on_directory_is_locked(tmp_path: Path, remote_url: str) -> None:
    first = IndexStore(tmp_path / "d", remote_url, small_config())
    first.start()
    with pytest.raises(StoreLockedError):
        IndexStore(tmp_path / "d", remote_url, small_config()).start()
    first.shutdown()
    second = IndexStore(tmp_path / "d", remote_url, small_config())
    second.start()
    second.shutdown()


def test_max_file_age_rolls_a_quiet_file(tmp_path: Path, remote_url: str) -> None:
    store = IndexStore(tmp_path / "d", remote_url, small_config(max_file_age_s=0.2, capacity=10_000))
    store.start()
    store.put("t", "k", queue_id=1, offset=2, size=3, timestamp_ms=4)
    deadline = time.monotonic() + 15
    while store.status().files_by_state.get("UPLOADED", 0) < 1:
        assert time.monotonic() < deadline, store.status()
        time.sleep(0.05)
    assert store.query("t", "k", 0, 10) == [(1, 2, 3, 4)]
    assert store.shutdown().clean


def test_topic_and_key_do_not_collide(tmp_path: Path, remote_url: str) -> None:
    with IndexStore(tmp_path / "d", remote_url, small_config()) as store:
        store.put("a#b", "c", queue_id=1, offset=1, size=1, timestamp_ms=1)
        store.put("a", "b#c", queue_id=2, offset=2, size=1, timestamp_ms=1)
        store.put("t", ["x", "y"], queue_id=3, offset=3, size=1, timestamp_ms=1)
        assert [e.queue_id for e in store.query("a#b", "c", 0, 9)] == [1]
        assert [e.queue_id for e in store.query("a", "b#c", 0, 9)] == [2]
        assert store.query("t", "x", 0, 9) == store.query("t", "y", 0, 9) == [(3, 3, 1, 1)]


def test_bad_arguments(tmp_path: Path, remote_url: str) -> None:
    with IndexStore(tmp_path / "d", remote_url, small_config()) as store:
        with pytest.raises(ValueError, match="offset"):
            store.put("t", "k", queue_id=0, offset=-1, size=0, timestamp_ms=0)
        with pytest.raises(TypeError, match="topic"):
            store.put(5, "k", queue_id=0, offset=0, size=0, timestamp_ms=0)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="begin_ms"):
            store.query("t", "k", 5, 4)
        with pytest.raises(ValueError, match="max_count"):
            store.query("t", "k", 0, 4, max_count=0)
    with pytest.raises(TypeError, match="config"):
        IndexStore(tmp_path / "e", remote_url, config={"slots": 1})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="slots"):
        small_config(slots=0)


@pytest.mark.parametrize(
    ("field", "value"),
    [("queue_id", -1), ("offset", 2**63), ("size", 2**32), ("timestamp_ms", -5), ("queue_id", True)],
)
def test_a_put_refused_by_its_arguments_makes_no_file(
    tmp_path: Path, remote_url: str, field: str, value: int
) -> None:
    """Arguments are checked before the store makes a file for them: a run
    whose only put was refused left an empty file and a journal row."""
    args = {"queue_id": 0, "offset": 0, "size": 0, "timestamp_ms": 0, field: value}
    store = IndexStore(tmp_path / "d", remote_url, small_config())
    store.start()
    with pytest.raises((ValueError, TypeError), match=field):
        store.put("t", "k", **args)
    assert store.journal.count_by_state() == {}
    assert store.shutdown().clean
    assert not list((tmp_path / "d").rglob("*.idx*")), list((tmp_path / "d").rglob("*"))


def test_remote_down_during_shutdown_keeps_deadline_then_recovers(tmp_path: Path, remote_url: str) -> None:
    remote = SwitchableRemote(open_remote(remote_url))
    store = IndexStore(tmp_path / "d", remote, small_config())
    store.start()
    model = fill(store, 70)
    remote.down.set()
    started = time.monotonic()
    report = store.shutdown(timeout_s=2)
    elapsed = time.monotonic() - started
    assert elapsed < 2 + 1.0, elapsed
    assert not report.clean and report.pending
    assert (
        report.error
        and f"deadline of 2 s reached with {len(report.pending)} file(s) not uploaded" in report.error
    )
    # Restart with the remote back: everything is uploaded, nothing lost.
    again = IndexStore(tmp_path / "d", remote_url, small_config())
    recovery = again.start()
    assert set(report.pending) <= set(recovery.resumed) | {r for r in report.pending}
    assert again.shutdown().clean
    assert_remote_alone_answers(tmp_path / "fresh", remote_url, model)


def resident_pages(path: Path) -> tuple[int, int]:
    """(pages of the file in the page cache, pages of the file), by mincore(2)."""
    import ctypes
    import mmap
    import os

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        pages = -(-size // mmap.PAGESIZE)
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, f.fileno(), 0)
        assert addr not in (None, ctypes.c_void_p(-1).value), ctypes.get_errno()
        try:
            vec = ctypes.create_string_buffer(pages)
            assert libc.mincore(addr, size, vec) == 0, ctypes.get_errno()
            return sum(b & 1 for b in vec.raw), pages
        finally:
            libc.munmap(addr, size)


def test_a_sealed_files_original_leaves_the_page_cache(tmp_path: Path, remote_url: str) -> None:
    """Once sealed, the unsealed original only waits on disk for the upload:
    its pages are dropped at once, not when it is deleted after the upload
    (here: never, the remote is down)."""
    remote = SwitchableRemote(open_remote(remote_url))
    remote.down.set()
    store = IndexStore(tmp_path / "d", remote, small_config(slots=1024, capacity=20_000))
    store.start()
    fill(store, 20_001)  # rolls once: the first file is sealed, its upload fails
    deadline = time.monotonic() + 10
    while (
        store.status().files_by_state.get("SEALED", 0) + store.status().files_by_state.get("UPLOADING", 0)
        == 0
    ):
        assert time.monotonic() < deadline, store.status()
        time.sleep(0.01)
    (first,) = [r.file_id for r in store.journal.files([FileState.SEALED, FileState.UPLOADING])]
    original = store._active_path(first)
    assert original.exists()
    while (resident := resident_pages(original))[0]:
        assert time.monotonic() < deadline, f"{resident[0]} of {resident[1]} pages still cached"
        time.sleep(0.01)
    assert resident[1] > 100  # a real file, not an empty one
    remote.down.clear()
    assert store.shutdown(timeout_s=20).clean
    assert not original.exists()


def sealed_not_uploaded(tmp_path: Path, remote_url: str) -> tuple[IndexStore, SwitchableRemote, dict, Path]:
    """A started store with one file sealed and its upload held back (the
    remote down): the store, its remote, the model, the sealed copy."""
    remote = SwitchableRemote(open_remote(remote_url))
    remote.down.set()
    store = IndexStore(tmp_path / "d", remote, small_config())
    store.start()
    model = fill(store, 10)
    store.seal()
    sealed_dir = tmp_path / "d" / "sealed"
    wait_until(lambda: list(sealed_dir.glob("*.sealed")), "the file was sealed")
    (sealed,) = sealed_dir.glob("*.sealed")
    return store, remote, model, sealed


def test_a_sealed_copy_that_rots_before_its_upload_is_sealed_again(tmp_path: Path, remote_url: str) -> None:
    """The upload re-hashes the local sealed copy; a copy that no longer
    matches its record is sealed again from the intact original and then
    uploaded, instead of failing every attempt as a remote error."""
    store, remote, model, sealed = sealed_not_uploaded(tmp_path, remote_url)
    with open(sealed, "r+b") as f:  # one flipped bit in the body
        f.seek(100)
        byte = f.read(1)[0]
        f.seek(100)
        f.write(bytes([byte ^ 0x10]))
    remote.down.clear()
    report = store.shutdown(timeout_s=20)
    assert report.clean, report
    assert len(report.uploaded) == 1
    assert_remote_alone_answers(tmp_path / "fresh", remote_url, model)


def test_start_during_outage_then_catch_up(tmp_path: Path, remote_url: str) -> None:
    remote = SwitchableRemote(open_remote(remote_url))
    remote.down.set()
    store = IndexStore(tmp_path / "d", remote, small_config())
    store.start()  # a broker must start during an outage
    model = fill(store, 60)
    time.sleep(0.3)
    status = store.status()
    assert status.last_error and "unreachable" in status.last_error
    assert status.pending_files
    assert_answers(store, model)  # local files answer meanwhile
    remote.down.clear()
    report = store.shutdown(timeout_s=20)
    assert report.clean, report


def test_foreign_object_at_our_key_is_reported_and_untouched(tmp_path: Path, remote_url: str) -> None:
    remote = open_remote(remote_url)
    store = IndexStore(tmp_path / "d", remote_url, small_config())
    store.start()
    store.put("t", "k", queue_id=0, offset=0, size=1, timestamp_ms=1)
    while not store.status().reconciled:  # its start-up cleanup would abort our write
        time.sleep(0.01)
    # Plant a foreign object at the key the current file will be uploaded to.
    file_id = store.journal.files([FileState.ACTIVE])[0].file_id
    foreign = b"not ours" * 10
    remote.put_if_absent(data_key(file_id), foreign, size=len(foreign), crc32c=crc32c(foreign))
    transition = store.journal.transition

    def slow_after_a_conflict(file_id: str, state: FileState, **fields: Any) -> FileRecord:
        record = transition(file_id, state, **fields)
        if state is FileState.CONFLICT:
            time.sleep(0.5)  # the shutdown sees the file final: its report must already say why
        return record

    store.journal.transition = slow_after_a_conflict  # type: ignore[method-assign]
    report = store.shutdown(timeout_s=10)
    assert not report.clean and report.pending == [file_id]
    assert report.elapsed_s < 5  # CONFLICT is final: nothing to wait the deadline out for
    assert report.error and data_key(file_id) in report.error, report.error
    assert remote.get(data_key(file_id)) == foreign
    again = IndexStore(tmp_path / "d", remote_url, small_config())
    again.start()
    status = again.status()
    assert status.files_by_state.get("CONFLICT") == 1
    assert file_id in status.pending_files
    assert again.query("t", "k", 0, 5) == [(0, 0, 1, 1)]  # still answered from the local copy
    again.shutdown(timeout_s=1)


def test_corrupt_remote_object_never_served_and_repaired(tmp_path: Path, remote_url: str) -> None:
    store = IndexStore(tmp_path / "d", remote_url, small_config(cache_bytes=10**9))
    store.start()
    model = fill(store, 40)
    assert store.shutdown().clean
    remote = open_remote(remote_url)
    [obj] = remote.list(DATA_PREFIX)
    good = remote.get(obj.key)
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x01
    remote.delete(obj.key)
    remote.put_if_absent(obj.key, bytes(bad), size=len(bad), crc32c=crc32c(bytes(bad)))

    fresh = IndexStore(tmp_path / "fresh", remote_url, small_config())
    fresh.start()
    for key in model:  # nothing from the damaged object is served
        assert fresh.query("orders", key, 0, FOREVER) == [] or all(
            tuple(e) in model[key] for e in fresh.query("orders", key, 0, FOREVER)
        )
    report = fresh.verify(deep=True)
    assert not report.ok
    assert {p.kind for p in report.problems} == {"checksum-mismatch"}
    with pytest.raises(StoreLockedError):  # repairs are the writer's
        fresh.verify(repair=True)
    fresh.shutdown()
    owner_id = (tmp_path / "d" / "STORE_ID").read_text().strip()
    taker = IndexStore(tmp_path / "taker", remote_url, small_config(store_id=owner_id))
    taker.start()
    assert taker.verify(repair=True).ok is False  # the writer's identity, but no local copy
    taker.shutdown()

    owner = IndexStore(tmp_path / "d", remote_url, small_config(cache_bytes=10**9))
    owner.start()
    fixed = owner.verify(deep=True, repair=True)
    assert [p.fixed for p in fixed.problems] == [True]
    assert owner.verify(deep=True).ok
    assert remote.get(obj.key) == good
    assert_answers(owner, model)
    owner.shutdown()


class DamagedOnTheWay(SwitchableRemote):
    """Flips one bit of chosen reads (the stored objects stay intact), as a
    link can that no TCP or HTTP check catches. ``ranged`` numbers the
    ranged reads of data objects to damage (1: the first, a file's tail with
    its footer: hit near its end), ``records`` the reads of manifest records;
    ``every`` damages every read of both kinds (damage that is stored)."""

    def __init__(
        self,
        inner: Remote,
        *,
        ranged: tuple[int, ...] = (),
        records: tuple[int, ...] = (),
        every: bool = False,
    ) -> None:
        super().__init__(inner)
        self._lock = threading.Lock()
        self.ranged, self.records, self.every = ranged, records, every
        self.reads: collections.Counter[str] = collections.Counter()
        self.damaged = 0

    def _maybe_damage(self, kind: str, data: bytes, numbers: tuple[int, ...], tail: bool) -> bytes:
        with self._lock:
            self.reads[kind] += 1
            if not (self.every or self.reads[kind] in numbers) or not data:
                return data
            self.damaged += 1
        at = len(data) - 10 if tail else len(data) // 2
        return data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1 :]

    def get_range(self, key: str, start: int, end: int) -> bytes:
        data = super().get_range(key, start, end)
        if not key.startswith(DATA_PREFIX):
            return data
        return self._maybe_damage("ranged", data, self.ranged, tail=self.reads["ranged"] == 0)

    def get(self, key: str) -> bytes:
        data = super().get(key)
        if not key.startswith(MANIFEST_PREFIX):
            return data
        return self._maybe_damage("record", data, self.records, tail=False)


@pytest.mark.parametrize(
    "damage",
    [{"ranged": (1,)}, {"ranged": (2,)}, {"ranged": (3,)}, {"records": (1,)}],
    ids=["footer", "slot", "entries", "record"],
)
def test_a_read_damaged_on_the_way_is_read_again_not_quarantined(
    tmp_path: Path, remote_url: str, damage: dict
) -> None:
    """One read's bytes fail a check (a bit flipped on the link): that says
    nothing for sure about the stored object, so it is read again; the
    second read passes, answers, and nothing is quarantined (a quarantine
    lasts until a deep verify, across restarts)."""
    store = IndexStore(tmp_path / "w", remote_url, small_config())
    store.start()
    model = fill(store, 40)
    assert store.shutdown().clean
    remote = DamagedOnTheWay(open_remote(remote_url), **damage)
    fresh = IndexStore(tmp_path / "r", remote, small_config())
    fresh.start()
    got = [tuple(e) for e in fresh.query("orders", "k3", 0, FOREVER, 10_000, strict=True)]
    assert remote.damaged == 1
    assert got == expected(model, "k3")
    assert fresh.status().quarantined == []
    assert_answers(fresh, model)
    fresh.shutdown()


@pytest.mark.parametrize("what", ["object", "record"])
def test_verify_reads_again_what_fails_a_check_before_calling_it_damaged(
    tmp_path: Path, remote_url: str, what: str
) -> None:
    """A deep verify's read of an object, or of a manifest record, damaged
    on its way (the stored bytes intact): it was reported as damage, and the
    store quarantined the file on that one read. It is read again: no
    problem, nothing quarantined. Stored damage is still found (below)."""
    store = IndexStore(tmp_path / "w", remote_url, small_config())
    store.start()
    model = fill(store, 40)
    assert store.shutdown().clean
    remote = DamagedOnTheWay(open_remote(remote_url))
    fresh = IndexStore(tmp_path / "r", remote, small_config())
    fresh.start()
    fresh.query("orders", "k3", 0, FOREVER)  # the catalog loaded, intact
    if what == "object":
        remote.ranged = (remote.reads["ranged"] + 1,)
    else:
        remote.records = (remote.reads["record"] + 1,)
    report = fresh.verify(deep=True)
    assert remote.damaged == 1
    assert report.ok, report.problems
    assert fresh.status().quarantined == []
    assert_answers(fresh, model)
    # Stored damage: every later read of the same kind finds it.
    if what == "object":
        remote.ranged = tuple(range(remote.reads["ranged"] + 1, remote.reads["ranged"] + 100))
    else:
        remote.records = tuple(range(remote.reads["record"] + 1, remote.reads["record"] + 100))
    report = fresh.verify(deep=True)
    damage = {"object": "checksum-mismatch", "record": "bad-manifest"}[what]
    assert [p.kind for p in report.problems if p.kind != "unchecked"] == [damage], report.problems
    fresh.shutdown()


@pytest.mark.parametrize("what", ["object", "record"])
def test_damage_that_a_second_read_confirms_is_quarantined(
    tmp_path: Path, remote_url: str, what: str
) -> None:
    """Every read fails its check: the damage is stored. The file is
    quarantined after the second read, and a strict query raises."""
    store = IndexStore(tmp_path / "w", remote_url, small_config())
    store.start()
    fill(store, 40)
    assert store.shutdown().clean
    remote = DamagedOnTheWay(open_remote(remote_url))
    fresh = IndexStore(tmp_path / "r", remote, small_config())
    if what == "record":
        remote.every = True
    fresh.start()
    fresh.query("orders", "k3", 0, FOREVER)  # the catalog loaded (the object read intact)
    remote.every = True
    before = remote.reads["ranged"]
    with pytest.raises(CorruptFileError):
        fresh.query("orders", "k3", 0, FOREVER, strict=True)
    if what == "record":
        assert remote.reads["record"] >= 2  # read twice before the verdict
    else:
        assert remote.reads["ranged"] - before >= 2
    assert len(fresh.status().quarantined) == 1
    fresh.shutdown()


@pytest.mark.parametrize("how", ["removed", "renamed"])
def test_a_file_remote_whose_root_is_gone_is_unreadable_not_empty(
    tmp_path: Path, how: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The remote directory removed or renamed under a reader: its files
    are unreadable, not expired. A strict query raises, naming the root; the
    files stay in the catalog; and once the directory is back, they answer."""
    root = tmp_path / "remote"
    url = f"file://{root}"
    model = ten_files_uploaded(tmp_path / "w", url)
    reader = IndexStore(tmp_path / "r", url, small_config())
    reader.start()
    assert_answers(reader, model)
    files = reader.status().remote_files
    moved = tmp_path / "elsewhere"
    root.rename(moved)
    if how == "removed":
        shutil.rmtree(moved)
    with pytest.raises(RemoteError, match=str(root)):
        reader.query("orders", "k3", 0, FOREVER, strict=True)
    with pytest.raises(RemoteError, match=str(root)):
        reader._ensure_catalog(strict=True, reload=True)  # the catalog's periodic reload
    with pytest.raises(RemoteError, match=str(root)):
        reader.verify(deep=False)
    assert reader.status().remote_files == files
    assert not any("expired" in m or "forgotten" in m for m in caplog.messages)
    if how == "renamed":
        moved.rename(root)
        assert_answers(reader, model)
    reader.shutdown()


def test_verify_finds_orphans_and_open_uploads(tmp_path: Path, remote_url: str) -> None:
    with IndexStore(tmp_path / "d", remote_url, small_config()) as store:
        fill(store, 10)
    remote = open_remote(remote_url)
    junk = b"orphan bytes"
    remote.put_if_absent(
        f"{DATA_PREFIX}0000000000001-deadbeef.tix", junk, size=len(junk), crc32c=crc32c(junk)
    )
    store = IndexStore(tmp_path / "d", remote_url, small_config())
    store.start()
    report = store.verify(deep=True)
    assert not report.ok
    assert [p.kind for p in report.problems] == ["orphan"]
    assert store.verify(repair=True).ok
    assert store.verify().ok
    store.shutdown()


def test_verify_leaves_the_object_of_an_upload_that_will_resume(tmp_path: Path, remote_url: str) -> None:
    """An upload stopped after its object was put and before its manifest
    record: the object is not an orphan, repair leaves it, and the upload
    then completes."""
    from tieredindex import faults

    store = IndexStore(tmp_path / "d", remote_url, small_config(reconcile_interval_s=30.0))
    store.start()
    model = fill(store, 10)
    with faults.armed("upload.after_put:raise"):
        store.seal()
        deadline = time.monotonic() + 20
        while "InjectedFault" not in (store.status().last_error or ""):
            assert time.monotonic() < deadline, store.status()
            time.sleep(0.01)
    remote = open_remote(remote_url)
    (obj,) = remote.list(DATA_PREFIX)
    assert remote.list(MANIFEST_PREFIX) == []
    report = store.verify(repair=True)
    assert [p for p in report.problems if p.key == obj.key] == [], report
    assert remote.head(obj.key) is not None
    assert store.shutdown(timeout_s=20).clean
    assert_remote_alone_answers(tmp_path / "fresh", remote_url, model)


def test_second_writer_refused_reader_welcome(tmp_path: Path, remote_url: str) -> None:
    with IndexStore(tmp_path / "a", remote_url, small_config()) as first:
        model = fill(first, 60)
    intruder = IndexStore(tmp_path / "b", remote_url, small_config())
    intruder.start()
    intruder.put("orders", "k0", queue_id=9, offset=999_999, size=1, timestamp_ms=5)
    report = intruder.shutdown(timeout_s=3)
    assert not report.clean and report.pending
    assert report.error and "owned by writer" in report.error
    # A reader (queries only, nothing to upload) is welcome, and the
    # intruder's entry never reached the remote.
    reader = IndexStore(tmp_path / "c", remote_url, small_config())
    reader.start()
    assert_answers(reader, model)
    assert all(e.offset != 999_999 for e in reader.query("orders", "k0", 0, FOREVER))
    assert reader.shutdown().clean
    # The owner, or a store configured with its identity, keeps writing.
    owner = IndexStore(tmp_path / "a", remote_url, small_config())
    owner.start()
    owner.put("orders", "k0", queue_id=1, offset=70, size=1, timestamp_ms=7)
    assert owner.shutdown().clean


def test_a_shutdowns_report_names_the_refusal_not_the_calls_its_deadline_cut(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the deadline and the stop of the background threads, the
    remote loop may start a round whose calls are cut before their first
    attempt ("deadline exceeded after 0 attempts"). That says nothing about
    the remote: the report must still name why the file was not uploaded."""
    with IndexStore(tmp_path / "a", remote_url, small_config()) as first:
        fill(first, 10)
    intruder = IndexStore(tmp_path / "b", remote_url, small_config())
    intruder.start()
    intruder.put("orders", "k0", queue_id=9, offset=999_999, size=1, timestamp_ms=5)
    stop_background = intruder._stop_background

    def after_a_few_rounds(deadline: float) -> None:
        time.sleep(20 * small_config().reconcile_interval_s)  # rounds started past the deadline
        stop_background(deadline)

    monkeypatch.setattr(intruder, "_stop_background", after_a_few_rounds)
    report = intruder.shutdown(timeout_s=1)
    assert not report.clean and report.pending
    assert report.error and "owned by writer" in report.error, report.error
    assert "0 attempts" not in report.error


@pytest.mark.usefixtures("prompt_retention")
def test_retention_deletes_manifest_then_object(tmp_path: Path, remote_url: str) -> None:
    store = IndexStore(tmp_path / "d", remote_url, small_config(retention_s=3600.0))
    store.start()
    now = int(time.time() * 1000)
    store.put("t", "old", queue_id=0, offset=1, size=1, timestamp_ms=now - 7_200_000)  # two hours old
    store.seal()
    store.put("t", "new", queue_id=0, offset=2, size=1, timestamp_ms=now)
    store.seal()
    remote = open_remote(remote_url)
    deadline = time.monotonic() + 20
    while len(remote.list(MANIFEST_PREFIX)) != 1 or len(remote.list(DATA_PREFIX)) != 1:
        assert time.monotonic() < deadline, (remote.list(MANIFEST_PREFIX), remote.list(DATA_PREFIX))
        time.sleep(0.05)
    assert store.query("t", "old", 0, FOREVER) == []
    assert store.query("t", "new", 0, FOREVER) == [(0, 2, 1, now)]
    assert store.shutdown().clean


@pytest.mark.usefixtures("prompt_retention")
def test_files_retention_deleted_leave_nothing_behind(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broker runs for months, and retention deletes its files as fast as
    it makes them: nothing of a deleted file may stay (journal row, local
    file, the per-file maps). The footers its queries read stayed in the
    footer cache: one per file, for good, till it held 64 MiB of them."""
    clock = [time.time_ns() // 1_000_000]  # retention's wall clock, moved by hand
    monkeypatch.setattr(tieredindex.store, "_now_ms", lambda: clock[0])
    store = IndexStore(tmp_path / "d", remote_url, small_config(capacity=5, cache_bytes=0, retention_s=60.0))
    store.start()
    for i in range(100):  # 20 files
        store.put("t", "k", queue_id=0, offset=i, size=1, timestamp_ms=clock[0])
    store.seal()
    wait_until(lambda: not store.status().pending_files and not store._sealed, "all uploaded, copies evicted")
    assert len(store.query("t", "k", 0, FOREVER, 1000)) == 100  # read from the 20 remote files
    assert len(store._footers) == 20
    clock[0] += 61_000
    wait_until(lambda: not store.journal.files() and not store._remote_files, "retention deleted every file")
    wait_until(lambda: not store._expired_since, "a retention round after the deletes")
    assert store.query("t", "k", 0, FOREVER, 1000) == []
    left = {
        name: len(getattr(store, name))
        for name in (
            "_remote_added",
            "_access",
            "_sealed",
            "_kept_by_record",
            "_retry_after",
            "_bad",
            "_footers",
        )
    }
    assert left == dict.fromkeys(left, 0)
    local = [p.name for sub in ("active", "sealed", "quarantine") for p in (tmp_path / "d" / sub).iterdir()]
    assert local == []
    assert store.shutdown().clean


def test_shutdown_with_the_journal_unwritable_returns_a_report_and_start_finishes(
    tmp_path: Path, remote_url: str
) -> None:
    """The local disk fails under the shutdown's own journal writes: it
    still returns an unclean report naming the failure and releases the
    directory; the next start() uploads everything."""
    import sqlite3

    store = IndexStore(tmp_path / "d", remote_url, small_config())
    store.start()
    model = fill(store, 30)  # the current file, not full: the shutdown rolls it

    def disk_error(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    with pytest.MonkeyPatch.context() as disk:
        disk.setattr(store.journal, "transition", disk_error)
        disk.setattr(store.journal, "set_meta", disk_error)
        report = store.shutdown(timeout_s=1)
    assert not report.clean
    assert (
        report.error is not None and "roll the last file" in report.error and "disk I/O error" in report.error
    )
    assert report.pending  # the last file, still local
    assert store.status().closed
    with pytest.raises(StoreClosedError):
        store.put("orders", "k", queue_id=0, offset=0, size=0, timestamp_ms=0)
    again = IndexStore(tmp_path / "d", remote_url, small_config())  # the lock was released
    again.start()
    assert again.shutdown(timeout_s=20).clean
    assert_remote_alone_answers(tmp_path / "fresh", remote_url, model)


def test_a_file_that_cannot_be_created_leaves_nothing_pending(tmp_path: Path, remote_url: str) -> None:
    """A full disk at the creation of a new file fails that put and leaves
    no journal record: a later shutdown neither waits for it nor reports
    it pending."""

    import tieredindex.store as store_module

    store = IndexStore(tmp_path / "d", remote_url, small_config())
    store.start()

    with pytest.MonkeyPatch.context() as disk:
        disk.setattr(store_module.IndexFile, "create", disk_full)
        with pytest.raises(OSError, match="No space"):
            store.put("orders", "k", queue_id=0, offset=0, size=0, timestamp_ms=1_000)
    assert store.journal.files() == []  # the record of a file never made is gone
    assert not list((tmp_path / "d" / "active").glob("*"))
    time.sleep(store_module.CREATE_RETRY_S)
    model = fill(store, 10)
    report = store.shutdown(timeout_s=20)
    assert report.clean and report.pending == [] and len(report.uploaded) == 1, report
    assert report.elapsed_s < 10
    assert_remote_alone_answers(tmp_path / "fresh", remote_url, model)


def test_the_read_cache_keeps_the_sealed_copies_used_last_within_its_budget(
    tmp_path: Path, remote_url: str
) -> None:
    """StoreConfig.cache_bytes: local disk kept for sealed files after their
    upload is verified, least recently used first out. Room for two copies:
    after F1 and F2 are uploaded a query reads F1, so when F3's upload
    makes three, F2 (used least recently, not the oldest) goes."""
    from tieredindex.layout import SEALED_DIR, index_key

    probe = IndexFile.create(tmp_path / "probe.tix", slots=16, capacity=10, begin_ms=0)
    for i in range(10):
        probe.put(index_key("t", "k"), 0, i, 1, 1_000 + i)
    size = probe.seal(tmp_path / "probe.sealed").size  # every file below seals to this size
    probe.close()
    store = IndexStore(
        tmp_path / "d", remote_url, small_config(capacity=10, cache_bytes=2 * size + size // 2)
    )
    store.start()
    files = []
    for n in range(3):
        for i in range(10):
            store.put("t", "k", queue_id=0, offset=n * 10 + i, size=1, timestamp_ms=(n + 1) * 1_000 + i)
        store.seal()
        wait_until(
            lambda n=n: store.status().files_by_state.get("UPLOADED", 0) == n + 1, f"file {n} uploaded"
        )
        files.append(max(store.journal.file_ids([FileState.UPLOADED])))
        if n == 1:
            assert [e.offset for e in store.query("t", "k", 1_000, 1_009)] == list(range(9, -1, -1))
    sealed = tmp_path / "d" / SEALED_DIR
    wait_until(lambda: len(list(sealed.iterdir())) == 2, "one sealed copy evicted")
    assert sorted(p.stem for p in sealed.iterdir()) == [files[0], files[2]]
    assert store.shutdown().clean


def test_status_after_shutdown_is_the_final_one(tmp_path: Path, remote_url: str) -> None:
    store = IndexStore(tmp_path / "d", remote_url, small_config())
    store.start()
    fill(store, 10)
    assert store.shutdown(timeout_s=20).clean
    status = store.status()
    assert status.closed and status.pending_files == [] and status.files_by_state == {"UPLOADED": 1}


@pytest.mark.parametrize(
    ("timeout_s", "error"),
    [
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        (1e300, ValueError),
        (-1, ValueError),
        ("2", TypeError),
        (True, TypeError),
    ],
)
def test_shutdown_timeout_is_checked_before_anything_stops(
    tmp_path: Path, remote_url: str, timeout_s: object, error: type[Exception]
) -> None:
    store = IndexStore(tmp_path / "d", remote_url, small_config())
    store.start()
    with pytest.raises(error, match="timeout_s"):
        store.shutdown(timeout_s=timeout_s)  # type: ignore[arg-type]
    store.put("orders", "k", queue_id=0, offset=0, size=0, timestamp_ms=1_000)  # still open
    assert store.shutdown(timeout_s=20).clean


@pytest.mark.usefixtures("prompt_retention")
def test_retention_runs_after_a_restart_with_nothing_to_upload(tmp_path: Path, remote_url: str) -> None:
    """A writer restarted with every file already uploaded still applies
    retention (it claims its prefix for the deletes)."""
    now = int(time.time() * 1000)
    store = IndexStore(tmp_path / "d", remote_url, small_config())
    store.start()
    store.put("t", "old", queue_id=0, offset=1, size=1, timestamp_ms=now - 7_200_000)  # two hours old
    assert store.shutdown(timeout_s=20).clean
    remote = open_remote(remote_url)
    assert len(remote.list(DATA_PREFIX)) == 1
    again = IndexStore(tmp_path / "d", remote_url, small_config(retention_s=3600.0))
    again.start()
    deadline = time.monotonic() + 20
    while remote.list(MANIFEST_PREFIX) or remote.list(DATA_PREFIX):
        assert time.monotonic() < deadline, (remote.list(MANIFEST_PREFIX), remote.list(DATA_PREFIX))
        time.sleep(0.05)
    assert again.query("t", "old", 0, FOREVER) == []
    assert again.shutdown(timeout_s=20).clean


def old_and_new_file_uploaded(directory: Path, remote_url: str) -> int:
    """A store that uploaded two files, key "old" two hours old and key
    "new" now, and shut down; returns now (ms)."""
    now = int(time.time() * 1000)
    store = IndexStore(directory, remote_url, small_config())
    store.start()
    store.put("t", "old", queue_id=0, offset=1, size=1, timestamp_ms=now - 7_200_000)
    store.seal()
    store.put("t", "new", queue_id=0, offset=2, size=1, timestamp_ms=now)
    assert store.shutdown(timeout_s=20).clean
    return now


@pytest.mark.usefixtures("prompt_retention")
def test_retention_finishes_a_deletion_cut_short(tmp_path: Path, remote_url: str) -> None:
    """Retention deletes an expired file's manifest record, then its object.
    Stopped between the two (a crash, or deletes failing for longer than a
    catalog refresh), the record is gone, so the catalog no longer lists the
    file: the object and the journal row stayed for ever. The journal still
    knows the file: the next round finishes from there."""
    now = old_and_new_file_uploaded(tmp_path / "d", remote_url)
    remote = open_remote(remote_url)
    old_record = sorted(o.key for o in remote.list(MANIFEST_PREFIX))[0]
    remote.delete(old_record)  # where a retention round was cut short
    again = IndexStore(tmp_path / "d", remote_url, small_config(retention_s=3600.0))
    again.start()
    wait_until(lambda: len(remote.list(DATA_PREFIX)) == 1, "retention deleted the old object")
    wait_until(lambda: len(again.journal.files()) == 1, "the journal forgot the old file")
    assert [o.key for o in remote.list(MANIFEST_PREFIX)] != [old_record]
    assert again.query("t", "new", 0, FOREVER) == [(0, 2, 1, now)]
    assert again.shutdown(timeout_s=20).clean


def test_start_aborts_only_uploads_of_its_own_layout(tmp_path: Path, remote_url: str) -> None:
    """start() aborts the multipart uploads a crash of this store left
    open, and no other: not another tool's upload under the prefix, nor one
    of a store nested under a longer prefix (a live upload of it, on
    file:// a temp file deleted under its writer)."""
    down = SwitchableRemote(open_remote(remote_url))
    down.down.set()
    store = IndexStore(tmp_path / "d", down, small_config())
    store.start()
    fill(store, 10)
    assert not store.shutdown(timeout_s=0.5).clean  # upload work is left for the next start
    remote = open_remote(remote_url)
    ours = f"{DATA_PREFIX}0000000000001-0000000a.tix"
    foreign = ["backup/tool-upload.bin", f"sub/{DATA_PREFIX}0000000000002-0000000b.tix"]
    for key in [ours, *foreign]:
        open_upload(remote, key)

    class SlowFirstListing(SwitchableRemote):
        """Reconciliation lists the manifest first: the upload, not held
        back by it, is done before it looks (the sweep then depended on
        that race: upload work left or not)."""

        def list(self, prefix: str = "") -> list:
            if prefix == MANIFEST_PREFIX and self.calls < 2:
                time.sleep(1.0)
            return super().list(prefix)

    again = IndexStore(tmp_path / "d", SlowFirstListing(open_remote(remote_url)), small_config())
    again.start()
    wait_until(lambda: again.status().reconciled, "start-up reconciliation ran")
    assert again.shutdown(timeout_s=20).clean
    assert again.status().aborted_multipart_uploads == 1
    assert sorted(u.key for u in remote.list_multipart_uploads()) == foreign


def test_a_readers_repair_is_refused(tmp_path: Path, remote_url: str) -> None:
    """verify(repair=True) deletes and re-uploads: a writer's act. A reader
    of another writer's prefix is refused, as its retention is, and the
    writer's objects are left as they are."""
    with IndexStore(tmp_path / "w", remote_url, small_config(store_id="writer")) as writer:
        fill(writer, 60)
    remote = open_remote(remote_url)
    junk = b"orphan bytes"
    orphan = f"{DATA_PREFIX}0000000000001-deadbeef.tix"
    remote.put_if_absent(orphan, junk, size=len(junk), crc32c=crc32c(junk))
    reader = IndexStore(tmp_path / "r", remote_url, small_config(store_id="reader"))
    reader.start()
    assert [p.key for p in reader.verify(deep=True).problems] == [orphan]  # checking is reading
    with pytest.raises(StoreLockedError, match="owned by writer writer"):
        reader.verify(repair=True)
    assert remote.get(orphan) == junk
    reader.shutdown()


def test_a_full_disk_is_not_tried_again_at_every_put(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every put failed for want of space tried to create a file and left a
    journal row (three fsynced commits each; 10,000 rows in 5 s in the
    review's run, slowing every later journal read). Now a failed creation
    is not tried again for CREATE_RETRY_S, and leaves no row."""
    import errno

    import tieredindex.store as store_module

    monkeypatch.setattr(store_module, "CREATE_RETRY_S", 0.5)
    store = IndexStore(tmp_path / "d", remote_url, small_config())
    store.start()
    tries: list[int] = []

    def disk_full(*args: object, **kwargs: object) -> None:
        tries.append(1)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.MonkeyPatch.context() as disk:
        disk.setattr(store_module.IndexFile, "create", disk_full)
        for i in range(200):
            with pytest.raises(OSError, match="No space left on device"):
                store.put("orders", "k", queue_id=0, offset=i, size=0, timestamp_ms=1_000)
        assert len(tries) == 1
        assert store.journal.files() == []
        time.sleep(0.5)
        with pytest.raises(OSError, match="No space"):
            store.put("orders", "k", queue_id=0, offset=0, size=0, timestamp_ms=1_000)
        assert len(tries) == 2  # tried again once the pause is over
    time.sleep(0.5)
    model = fill(store, 10)
    assert store.shutdown(timeout_s=20).clean
    assert_remote_alone_answers(tmp_path / "fresh", remote_url, model)


def test_a_record_of_a_file_never_made_does_not_hold_back_the_rest(tmp_path: Path, remote_url: str) -> None:
    """The disk full for the journal too when a file could not be created:
    its record stayed, and a rolled record with no file made the seal loop
    fail on it at every round, before the files after it. Such records go
    (EMPTY, as recovery ends them), and every other file is sealed and
    uploaded."""
    import sqlite3

    import tieredindex.store as store_module

    store = IndexStore(tmp_path / "d", remote_url, small_config(capacity=20))
    store.start()

    def full(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    def no_file(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    with pytest.MonkeyPatch.context() as disk:
        disk.setattr(store_module.IndexFile, "create", no_file)
        disk.setattr(store.journal, "remove", full)
        with pytest.raises(OSError, match="No space"):
            store.put("orders", "k", queue_id=0, offset=0, size=0, timestamp_ms=1_000)
    (stuck,) = store.journal.files()
    assert stuck.state is FileState.ACTIVE
    # Rolled, never made: noted as being created, as every new record is
    # until its file is (one with no note and no file lost its entries).
    store.journal.add(
        "0000000000001-0000000a", FileState.ROLLED, begin_ms=1, error=store_module.CREATING_NOTE
    )
    time.sleep(store_module.CREATE_RETRY_S)
    model = fill(store, 50)  # three files
    wait_until(lambda: store.journal.get(stuck.file_id) is None, "the stuck record was removed")
    wait_until(
        lambda: store.journal.get("0000000000001-0000000a").state is FileState.EMPTY,  # type: ignore[union-attr]
        "the rolled record with no file ended EMPTY",
    )
    report = store.shutdown(timeout_s=20)
    assert report.clean and report.pending == [] and len(report.uploaded) == 3, report
    assert_remote_alone_answers(tmp_path / "fresh", remote_url, model)


def test_a_full_journal_refuses_puts_with_an_oserror_naming_it(tmp_path: Path, remote_url: str) -> None:
    """The local disk full under the journal (here: SQLite may not grow it):
    the put that needs a journal row raises OSError (ENOSPC) naming the
    journal, not a bare sqlite3 error; nothing acknowledged is lost, and
    once there is room again the store finishes its work."""
    store = IndexStore(tmp_path / "d", remote_url, small_config(capacity=10))
    store.start()
    model: dict[str, list[tuple[int, int, int, int]]] = {}
    journal_db = store.journal._db
    pages = journal_db.execute("PRAGMA page_count").fetchone()[0]
    journal_db.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(OSError) as raised:
        for i in range(10_000):  # files roll every 10 puts; each needs a row
            store.put("orders", f"k{i % 7}", queue_id=0, offset=i, size=100, timestamp_ms=1_000 + i)
            model.setdefault(f"k{i % 7}", []).append((0, i, 100, 1_000 + i))
    assert raised.value.errno == errno.ENOSPC, raised.value
    assert str(tmp_path / "d") in str(raised.value) and "journal" in str(raised.value)
    assert model  # some puts were acknowledged before the journal filled
    journal_db.execute("PRAGMA max_page_count = 1073741823")  # room again
    report = store.shutdown(timeout_s=20)
    assert report.clean, report
    assert_remote_alone_answers(tmp_path / "fresh", remote_url, model)


def test_puts_go_on_in_a_new_file_when_the_current_one_is_cut_short(tmp_path: Path, remote_url: str) -> None:
    """The current file truncated under the store (another process, a bad
    restore): puts raised CorruptFileError until a query happened to salvage
    it. The put that finds it salvages it and goes on in a new file."""
    store = IndexStore(tmp_path / "d", remote_url, small_config(capacity=1000, flush_interval_s=3600.0))
    store.start()
    model = fill(store, 30)
    (active,) = (tmp_path / "d" / "active").glob("*.tix")
    size = active.stat().st_size
    with open(active, "r+b") as f:
        f.truncate(size - 4096)  # the tail: free entry slots only
    store.put("orders", "k0", queue_id=0, offset=30, size=130, timestamp_ms=1_030)
    model["k0"].append((0, 30, 130, 1_030))
    assert len(store.status().quarantined) == 1
    assert_answers(store, model)
    assert store.shutdown(timeout_s=20).clean
    assert_remote_alone_answers(tmp_path / "fresh", remote_url, model)


def test_a_deleted_sealed_copy_is_sealed_again(tmp_path: Path, remote_url: str) -> None:
    """The sealed copy of a file waiting for upload deleted under the store
    failed every upload attempt as a remote error, until a restart. It is
    sealed again from the original (kept until the upload is verified)."""
    store, remote, model, sealed = sealed_not_uploaded(tmp_path, remote_url)
    sealed.unlink()
    remote.down.clear()
    report = store.shutdown(timeout_s=20)
    assert report.clean, report
    assert_remote_alone_answers(tmp_path / "fresh", remote_url, model)


def test_a_failed_flush_stops_puts(tmp_path: Path, remote_url: str) -> None:
    """A flush of the current file failed (EIO: the disk, or ext4 gone
    read-only after an I/O error): the kernel may drop those pages, so
    what was put is not known to be on disk. Puts went on being
    acknowledged, and were lost. They are refused now, naming the failure;
    a restart on a working disk goes on, with nothing earlier lost that
    reached the disk."""
    import errno

    import tieredindex.store as store_module

    store = IndexStore(tmp_path / "d", remote_url, small_config(capacity=1000))
    store.start()
    model = fill(store, 20)
    store.flush()

    def eio(*args: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    with pytest.MonkeyPatch.context() as disk:
        disk.setattr(store_module.IndexFile, "flush", eio)
        wait_until(lambda: "Input/output error" in (store.status().last_error or ""), "the flusher failed")
        with pytest.raises(OSError, match=r"flush failed: .*Input/output error.*puts are refused"):
            store.put("orders", "k0", queue_id=0, offset=99, size=1, timestamp_ms=2_000)
    assert store.shutdown(timeout_s=20).clean  # the seal syncs on its own; nothing refused was taken
    again = IndexStore(tmp_path / "d", remote_url, small_config(capacity=1000))
    again.start()
    again.put("orders", "k0", queue_id=0, offset=100, size=1, timestamp_ms=2_001)
    model["k0"].append((0, 100, 1, 2_001))
    assert again.shutdown(timeout_s=20).clean
    assert_remote_alone_answers(tmp_path / "fresh", remote_url, model)


def test_a_manifest_write_cut_short_leaves_no_upload_open(tmp_path: Path, remote_url: str) -> None:
    """A crash while a manifest record was being written leaves an open
    upload under the manifest key (file://: its temp file). The resumed
    upload swept leftovers of the data key only, so a clean shutdown left
    it open (a flaky SIGKILL test, 9 runs in 25)."""
    from tieredindex.layout import manifest_key

    from store_helpers import Outage

    class DataPutsFail(SwitchableRemote):
        def put_if_absent(self, key: str, source: Any, **kwargs: Any) -> Any:
            if key.startswith(DATA_PREFIX):
                raise Outage("data puts fail (test)")
            return super().put_if_absent(key, source, **kwargs)

    store = IndexStore(tmp_path / "d", DataPutsFail(open_remote(remote_url)), small_config())
    store.start()
    model = fill(store, 10)
    assert not store.shutdown(timeout_s=0.5).clean
    (rec,) = [r for r in Journal(tmp_path / "d" / "journal.db").files() if r.state is FileState.UPLOADING]
    remote = open_remote(remote_url)
    open_upload(remote, manifest_key(rec.file_id))

    class HidesUploadsAtFirst(SwitchableRemote):
        """Start-up reconciliation's sweep sees no upload (it may run before
        or after the resumed upload begins): the upload's own sweep must."""

        def list_multipart_uploads(self) -> list:
            return super().list_multipart_uploads() if self.calls > 3 else []

    again = IndexStore(tmp_path / "d", HidesUploadsAtFirst(open_remote(remote_url)), small_config())
    again.start()
    assert again.shutdown(timeout_s=20).clean
    assert remote.list_multipart_uploads() == []
    assert_remote_alone_answers(tmp_path / "fresh", remote_url, model)


def test_an_object_deleted_before_its_check_is_uploaded_again_not_a_conflict(
    tmp_path: Path, remote_url: str
) -> None:
    """An earlier attempt put the object and died before checking it; the
    retry finds the key taken, and the object is deleted before the HEAD
    that checks it (say, by a verify(repair=True) that took it for an
    orphan). Gone is neither this file's bytes nor another's: it used to
    make the file a CONFLICT; it is uploaded again."""
    from tieredindex import faults

    class DeletedBeforeTheCheck(SwitchableRemote):
        def __init__(self, inner: Remote) -> None:
            super().__init__(inner)
            self.deleted: list[str] = []

        def head(self, key: str) -> Any:
            if key.startswith(DATA_PREFIX) and not self.deleted:
                self.deleted.append(key)
                self.inner.delete(key)
            return super().head(key)

    remote = DeletedBeforeTheCheck(open_remote(remote_url))
    store = IndexStore(tmp_path / "d", remote, small_config())
    store.start()
    model = fill(store, 10)
    with faults.armed("upload.after_put:raise"):
        report = store.shutdown(timeout_s=20)
    assert report.clean, report
    (file_id,) = report.uploaded
    assert remote.deleted == [data_key(file_id)]
    assert_remote_alone_answers(tmp_path / "fresh", remote_url, model)


def test_salvages_by_puts_record_no_errors(tmp_path: Path, remote_url: str) -> None:
    """The current file cut short again and again, each time found by a put:
    the salvage raced the worker's seal round (woken by the roll) and left
    errors that mean a bug (QUARANTINED -> EMPTY, "locked by another
    writer"). The worker now leaves the file alone until the salvage is done,
    and re-reads a record before sealing it."""
    store = IndexStore(tmp_path / "d", remote_url, small_config(capacity=1000, flush_interval_s=3600.0))
    store.start()
    acked: list[int] = []
    for round_ in range(25):
        for _ in range(5):
            store.put("t", "k", queue_id=0, offset=len(acked), size=1, timestamp_ms=1_000 + len(acked))
            acked.append(len(acked))
        active = tmp_path / "d" / "active" / f"{store._current}.tix"
        with open(active, "r+b") as f:
            f.truncate(active.stat().st_size - 4096)  # free slots only: no entry lost
        store.put("t", "k", queue_id=0, offset=len(acked), size=1, timestamp_ms=1_000 + len(acked))
        acked.append(len(acked))
        assert store.status().last_error is None, (round_, store.status().last_error)
    assert sorted(e.offset for e in store.query("t", "k", 0, FOREVER, 10_000)) == acked
    assert store.shutdown(timeout_s=30).clean
    assert store.status().last_error is None


def test_per_file_bookkeeping_goes_with_the_file(tmp_path: Path, remote_url: str) -> None:
    """Look inside: the read stamps of files no longer cached and the
    backoffs of files uploaded since stayed, one entry per file for the
    life of the process (1,999 after 2,000 rolls in a reviewer's soak)."""
    remote = SwitchableRemote(open_remote(remote_url))
    remote.down.set()
    store = IndexStore(tmp_path / "d", remote, small_config(cache_bytes=0))
    store.start()
    for n in range(3):
        store.put("t", f"k{n}", queue_id=0, offset=n, size=1, timestamp_ms=1_000 + n)
        store.seal()
    wait_until(lambda: len(store._retry_after) == 3, "three uploads failed")
    remote.down.clear()
    wait_until(lambda: store.status().remote_files == 3, "all three up")
    for n in range(3):
        assert [e.offset for e in store.query("t", f"k{n}", 0, FOREVER)] == [n]
    store._evict_cache()
    assert (store._retry_after, store._access) == ({}, {})
    assert store.shutdown(timeout_s=20).clean


def test_the_prefix_is_claimed_at_the_first_put_not_at_the_first_upload(
    tmp_path: Path, remote_url: str
) -> None:
    """A broker stopped before its first file filled paid for the claim of
    its prefix (a round trip) at shutdown, on the way of its last file. The
    claim now follows the first put; a store that only reads never claims."""
    remote = open_remote(remote_url)
    reader = IndexStore(tmp_path / "r", remote_url, small_config())
    reader.start()
    reader.query("t", "k", 0, FOREVER)
    store = IndexStore(tmp_path / "d", remote_url, small_config(reconcile_interval_s=3600.0))
    store.start()
    time.sleep(0.2)
    assert remote.head(OWNER_KEY) is None
    store.put("t", "k", queue_id=0, offset=1, size=1, timestamp_ms=1_000)
    wait_until(lambda: remote.head(OWNER_KEY) is not None, "the prefix claimed")
    assert [r.state for r in store.journal.files()] == [FileState.ACTIVE]  # nothing uploaded yet
    assert store.shutdown(timeout_s=20).clean
    assert reader.shutdown(timeout_s=20).clean


class FailingManifestListing(SwitchableRemote):
    """Its listings of the manifest fail while ``failing`` is set."""

    def __init__(self, inner: Remote) -> None:
        super().__init__(inner)
        self.failing = threading.Event()

    def list(self, prefix: str = "") -> list:
        if self.failing.is_set() and prefix == MANIFEST_PREFIX:
            raise Outage("manifest listing fails (test)")
        return super().list(prefix)


def test_a_repair_whose_reload_fails_leaves_the_catalog_unloaded(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """verify(repair=True) lifts the quarantine of what it repaired and
    reloads the catalog to serve it again. A reload that failed kept the
    catalog "loaded" without the repaired file: a strict query answered
    without its entries instead of raising, for up to a catalog refresh (StoreConfig.catalog_refresh_s)."""
    store = IndexStore(tmp_path / "d", remote_url, small_config(cache_bytes=10**9))
    store.start()
    model = fill(store, 10)
    assert store.shutdown().clean
    remote = open_remote(remote_url)
    (obj,) = remote.list(DATA_PREFIX)
    good = remote.get(obj.key)
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x01
    remote.delete(obj.key)
    remote.put_if_absent(obj.key, bytes(bad), size=len(bad), crc32c=crc32c(bytes(bad)))

    flaky = FailingManifestListing(open_remote(remote_url))
    owner = IndexStore(tmp_path / "d", flaky, small_config(cache_bytes=10**9, reconcile_interval_s=3600.0))
    owner.start()
    assert [p.kind for p in owner.verify(deep=True).problems] == ["checksum-mismatch"]  # quarantined
    flaky.failing.set()  # the reload after the repair fails
    assert [p.fixed for p in owner.verify(deep=True, repair=True).problems] == [True]
    key = next(iter(model))
    with pytest.raises(RemoteError):  # not an answer without the repaired file
        owner.query("orders", key, 0, FOREVER, strict=True)
    flaky.failing.clear()
    monkeypatch.setattr(tieredindex.store, "CATALOG_RETRY_S", 0.0)
    assert_answers(owner, model)
    owner.shutdown()


def test_a_failed_catalog_load_leaves_no_record_reads_behind(tmp_path: Path, remote_url: str) -> None:
    """A catalog load that fails on one record stops there, as a sequential
    read did: the reads of the records after it, queued in the read pool,
    are cancelled. They went on, and each load tried again (every
    reconcile_interval_s while the catalog is not loaded) read every record
    after the bad one once more."""
    store = IndexStore(tmp_path / "a", remote_url, small_config(capacity=1))
    store.start()
    for i in range(40):  # forty files
        store.put("t", "k", queue_id=0, offset=i, size=1, timestamp_ms=1_000 + i)
    assert store.shutdown().clean
    remote = RecordReads(open_remote(remote_url))
    keys = sorted(info.key for info in remote.inner.list(MANIFEST_PREFIX))
    assert len(keys) == 40
    denied = keys[0]
    real_get = remote.inner.get

    def get(key: str) -> bytes:
        if key == denied:
            raise PermissionError(f"AccessDenied: {key} (test)")  # fatal: not retried
        return real_get(key)

    remote.inner.get = get  # type: ignore[method-assign]
    config = small_config(upload_concurrency=1, reconcile_interval_s=3600.0)
    fresh = IndexStore(tmp_path / "b", remote, config)
    fresh.start()
    wait_until(lambda: "AccessDenied" in (fresh.status().last_error or ""), "the worker's load failed")
    time.sleep(0.5)  # what the pool still had would be read by now (40 x 20 ms / 4 at once)
    read = sum(remote.per_key[key] for key in keys)
    assert read <= 2 * READS_PER_UPLOAD * config.upload_concurrency, read
    fresh.shutdown()


class SlowFailingManifestListing(SwitchableRemote):
    """Its manifest listings fail, each after ``delay`` seconds (a remote
    that times out); counted."""

    def __init__(self, inner: Remote, delay: float) -> None:
        super().__init__(inner)
        self.delay = delay
        self.listings = 0

    def list(self, prefix: str = "") -> list:
        if prefix == MANIFEST_PREFIX:
            self.listings += 1
            time.sleep(self.delay)
            raise TimeoutError("manifest listing timed out (test)")
        return super().list(prefix)


def test_first_queries_in_an_outage_share_the_failed_catalog_load(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Queries that wait for a catalog load take its outcome, failed too:
    they each waited for the lock, then ran a failing load of their own,
    one after another (the n-th query waited n loads)."""
    monkeypatch.setattr(tieredindex.store, "START_LISTING_WAIT_S", 0.0)
    remote = SlowFailingManifestListing(open_remote(remote_url), 0.5)
    policy = RetryPolicy(attempts=1, base_delay_s=0.01, max_delay_s=0.01, deadline_s=5.0)
    store = IndexStore(tmp_path / "d", remote, small_config(reconcile_interval_s=3600.0, retry=policy))
    store.start()
    wait_until(lambda: "timed out" in (store.status().last_error or ""), "the worker's load failed")
    before = remote.listings
    askers = [threading.Thread(target=store.query, args=("t", "k", 0, FOREVER)) for _ in range(4)]
    for asker in askers:
        asker.start()
    for asker in askers:
        asker.join(30)
    assert remote.listings - before <= 2, remote.listings - before
    store.shutdown(timeout_s=1)


class BlockingManifestListing(FailingManifestListing):
    """The first manifest listing after ``arm()`` waits for ``release``;
    the ones after it fail."""

    def __init__(self, inner: Remote) -> None:
        super().__init__(inner)
        self.armed = False
        self.listing = threading.Event()
        self.release = threading.Event()

    def list(self, prefix: str = "") -> list:
        if self.armed and prefix == MANIFEST_PREFIX:
            self.armed = False
            self.listing.set()
            self.release.wait(10)
            result = super().list(prefix)
            self.failing.set()
            return result
        return super().list(prefix)


def test_a_failed_reload_leaves_the_catalog_unloaded_even_after_a_load_under_way(
    tmp_path: Path, remote_url: str
) -> None:
    """A reload (verify's, after a repair) asked while another load is under
    way waits for it; if the reload then fails, the catalog is unloaded, as
    when no load was under way: the load before it did not have what the
    reload was to add, and a strict query must raise, not answer without it."""
    store = IndexStore(tmp_path / "d", remote_url, small_config())
    store.start()
    model = fill(store, 10)
    assert store.shutdown().clean
    remote = BlockingManifestListing(open_remote(remote_url))
    reader = IndexStore(tmp_path / "r", remote, small_config(reconcile_interval_s=3600.0))
    reader.start()
    wait_until(lambda: reader._catalog_loaded_at is not None, "the catalog loaded")
    remote.armed = True
    reader._catalog_loaded_at = None  # a query's load, under way
    loading = threading.Thread(target=reader._ensure_catalog)
    loading.start()
    assert remote.listing.wait(10)
    reloading = threading.Thread(target=reader._ensure_catalog, kwargs={"reload": True})
    reloading.start()
    time.sleep(0.2)  # the reload waits for the load
    remote.release.set()
    loading.join(10)
    reloading.join(10)
    with pytest.raises(RemoteError):
        reader.query("orders", next(iter(model)), 0, FOREVER, strict=True)
    remote.failing.clear()
    reader.shutdown()


def crashed_with_a_damaged_current_file(directory: Path, remote_url: str) -> tuple[dict, str]:
    """A store that wrote 95 entries (two full files of 40, a current one of
    15) with the remote down, then crashed; the current file was then cut
    short (damaged, its entries intact). Returns the model and its id."""
    remote = SwitchableRemote(open_remote(remote_url))
    remote.down.set()
    store = IndexStore(directory, remote, small_config(capacity=40))
    store.start()
    model = fill(store, 95)
    crash_in_process(store)
    current = sorted((directory / "active").glob("*.tix"))[-1]
    current.write_bytes(current.read_bytes()[:-100])
    return model, current.stem


def test_a_salvage_failing_on_the_disk_is_tried_again_not_quarantined(
    tmp_path: Path, remote_url: str
) -> None:
    """The disk full while a damaged file is salvaged (the new file is
    preallocated full size): the file was quarantined for good as if nothing
    were salvageable, its 15 intact entries never uploaded, and the
    shutdown said clean. It stays ROLLED where it is, the shutdown says it
    is pending, and once there is room the salvage is done."""
    model, damaged = crashed_with_a_damaged_current_file(tmp_path / "d", remote_url)

    with pytest.MonkeyPatch.context() as disk:
        disk.setattr(tieredindex.store, "salvage", disk_full)
        store = IndexStore(tmp_path / "d", remote_url, small_config(capacity=40))
        report = store.start()
        assert report.quarantined == [] and report.salvaged == {}, report
        rec = store.journal.get(damaged)
        assert rec is not None and rec.state is FileState.ROLLED and "No space" in (rec.error or ""), rec
        assert (tmp_path / "d" / "active" / f"{damaged}.tix").exists()
        shut = store.shutdown(timeout_s=1)
        assert not shut.clean and shut.pending == [damaged], shut
        assert not list((tmp_path / "d" / "quarantine").iterdir())

        # Room again, while the store runs: the worker salvages it.
        store = IndexStore(tmp_path / "d", remote_url, small_config(capacity=40))
        store.start()
        assert store.journal.get(damaged).state is FileState.ROLLED  # type: ignore[union-attr]
    wait_until(
        lambda: store.journal.get(damaged).state is FileState.QUARANTINED,  # type: ignore[union-attr]
        "the salvage was tried again",
    )
    assert_answers(store, model)
    shut = store.shutdown(timeout_s=20)
    assert shut.clean, shut
    assert [p.name for p in (tmp_path / "d" / "quarantine").iterdir()] == [f"{damaged}.tix"]
    assert_remote_alone_answers(tmp_path / "fresh", remote_url, model)


def test_a_salvage_the_disk_keeps_failing_backs_off_and_adds_no_rows(tmp_path: Path, remote_url: str) -> None:
    """Each failed try left an EMPTY journal row (its new file's), and tries
    came every reconcile interval, each preallocating a full-size file: a
    disk full for a day added a row every few seconds. Now the half-made
    file's row is removed, and the pause doubles with each failure."""
    model, damaged = crashed_with_a_damaged_current_file(tmp_path / "d", remote_url)
    rows_before = len(Journal(tmp_path / "d" / "journal.db").files())
    tries: list[float] = []

    def full_disk_counted(*args: object, **kwargs: object) -> None:
        tries.append(time.monotonic())
        disk_full()

    with pytest.MonkeyPatch.context() as disk:
        disk.setattr(tieredindex.store, "salvage", full_disk_counted)
        store = IndexStore(tmp_path / "d", remote_url, small_config(capacity=40, reconcile_interval_s=0.05))
        store.start()
        wait_until(lambda: len(tries) >= 4, "the salvage tried four times")
        assert len(store.journal.files()) == rows_before
        pauses = [later - earlier for earlier, later in itertools.pairwise(tries)]
        # Doubling from 0.05 s: 0.05, 0.1, 0.2 at least (a constant pause
        # gives 0.05 each time; a loaded machine only lengthens them).
        assert pauses[2] >= 0.2 - 0.01, pauses
    wait_until(
        lambda: store.journal.get(damaged).state is FileState.QUARANTINED,  # type: ignore[union-attr]
        "the salvage done once the disk has room",
    )
    assert_answers(store, model)
    assert store.shutdown(timeout_s=20).clean


def test_a_new_file_made_ends_a_failed_salvage_s_pause(tmp_path: Path, remote_url: str) -> None:
    """A salvage the disk failed waits out a pause that doubles up to a
    minute; a full-size file made meanwhile shows the disk has room again,
    and the salvage is tried then, not a minute later (its file's entries
    out of every answer till then)."""
    model, damaged = crashed_with_a_damaged_current_file(tmp_path / "d", remote_url)
    config = small_config(capacity=40, reconcile_interval_s=60.0)  # a first pause of a minute
    with pytest.MonkeyPatch.context() as disk:
        disk.setattr(tieredindex.store, "salvage", disk_full)
        store = IndexStore(tmp_path / "d", remote_url, config)
        store.start()  # its salvage fails
    assert store.journal.get(damaged).state is FileState.ROLLED  # type: ignore[union-attr]
    store.put("orders", "new", queue_id=0, offset=1_000, size=1, timestamp_ms=2_000)  # a new file
    wait_until(
        lambda: store.journal.get(damaged).state is FileState.QUARANTINED,  # type: ignore[union-attr]
        "the salvage tried again once a new file was made",
    )
    model.setdefault("new", []).append((0, 1_000, 1, 2_000))
    assert_answers(store, model)
    assert store.shutdown(timeout_s=20).clean


@pytest.mark.parametrize("interruption", [OSError(errno.EIO, "injected I/O error"), KeyboardInterrupt()])
def test_a_start_that_fails_in_recovery_leaves_nothing_open(
    tmp_path: Path, remote_url: str, interruption: BaseException
) -> None:
    """A start() that failed after recovery had opened files released only
    the directory lock: the journal and the reopened files (each holding
    its file lock) stayed open, so starting again in the same process, on
    the same store or a new one, failed with StoreLockedError. Everything
    recovery opened is closed, and either starts cleanly."""
    remote = SwitchableRemote(open_remote(remote_url))
    remote.down.set()
    store = IndexStore(tmp_path / "d", remote, small_config(capacity=40))
    store.start()
    model = fill(store, 95)
    crash_in_process(store)

    def fail(*args: object, **kwargs: object) -> None:
        raise interruption

    failed = IndexStore(tmp_path / "d", remote_url, small_config(capacity=40))
    with pytest.MonkeyPatch.context() as broken:
        broken.setattr(Journal, "count_by_state", fail)  # recovery's last step
        with pytest.raises(type(interruption)):
            failed.start()
    again = IndexStore(tmp_path / "d", remote_url, small_config(capacity=40))
    again.start()
    assert_answers(again, model)
    assert again.shutdown(timeout_s=20).clean
    failed.start()  # the same store, tried again
    assert_answers(failed, model)
    assert failed.shutdown(timeout_s=20).clean
    assert_remote_alone_answers(tmp_path / "fresh", remote_url, model)


@pytest.mark.usefixtures("prompt_retention")
def test_retention_goes_by_the_remote_record_not_the_journal_row(tmp_path: Path, remote_url: str) -> None:
    """Retention deleted a remote file for good on its local journal row
    alone: a row whose max_ms was wrong (here 2^40 ms less, one flipped bit)
    deleted a file whose entries were seconds old. The file's own manifest
    record decides. (A row changed on disk fails its own checksum at open,
    and the journal is rebuilt; this one is written wrong with a checksum
    to match, as a bug or a change while the store runs would leave it.)"""
    import sqlite3

    from tieredindex.journal import CHECKED_COLUMNS, _row_crc

    now = old_and_new_file_uploaded(tmp_path / "d", remote_url)
    db = sqlite3.connect(tmp_path / "d" / "journal.db")
    with db:
        db.execute("UPDATE files SET max_ms = max_ms - (1 << 40) WHERE max_ms = ?", (now,))
        for *values, file_id in db.execute(
            f"SELECT {', '.join(CHECKED_COLUMNS)}, file_id FROM files"
        ).fetchall():
            db.execute("UPDATE files SET fields_crc = ? WHERE file_id = ?", (_row_crc(values), file_id))
    db.close()
    again = IndexStore(tmp_path / "d", remote_url, small_config(retention_s=3600.0))
    rounds = threading.Semaphore(0)
    real = again._apply_retention

    def counted(retention_s: float) -> None:
        try:
            real(retention_s)
        finally:
            rounds.release()

    again._apply_retention = counted  # type: ignore[method-assign]
    again.start()
    for _ in range(3):
        assert rounds.acquire(timeout=20), "a retention round ended"
    remote = open_remote(remote_url)
    assert len(remote.list(MANIFEST_PREFIX)) == 1 and len(remote.list(DATA_PREFIX)) == 1
    assert again.query("t", "old", 0, FOREVER) == []
    assert again.query("t", "new", 0, FOREVER) == [(0, 2, 1, now)]
    assert again.shutdown(timeout_s=20).clean
    fresh = IndexStore(tmp_path / "fresh", remote_url, small_config())
    fresh.start()
    assert fresh.query("t", "new", 0, FOREVER) == [(0, 2, 1, now)]
    fresh.shutdown(timeout_s=20)


def crashed_with_two_sealed_files(directory: Path, remote_url: str) -> tuple[dict, list[str], str]:
    """A store that wrote 120 entries (two files of 50 sealed, not uploaded,
    and a current one of 20) with the remote down, then crashed. Returns
    the model, the sealed files' ids and the current one's."""
    remote = SwitchableRemote(open_remote(remote_url))
    remote.down.set()
    store = IndexStore(directory, remote, small_config())
    store.start()
    model = fill(store, 120)
    wait_until(lambda: len(store.journal.files([FileState.SEALED, FileState.UPLOADING])) == 2, "two sealed")
    sealed = [r.file_id for r in store.journal.files([FileState.SEALED, FileState.UPLOADING])]
    current = store._current
    assert current is not None
    crash_in_process(store)
    return model, sealed, current


def entries_of(model: dict, offsets: Collection[int]) -> dict:
    return {key: [e for e in entries if e[1] in offsets] for key, entries in model.items()}


@pytest.mark.parametrize(("original", "kept"), [("deleted", 0), ("cut short", 47)])
def test_a_sealed_file_quarantined_at_start_is_reported_so(
    tmp_path: Path, remote_url: str, original: str, kept: int
) -> None:
    """A sealed file waiting for upload whose sealed copy is gone and whose
    original is gone or damaged is quarantined (and salvaged) at start: the
    report listed it as resumed, with nothing quarantined or salvaged."""
    model, (first, _), _ = crashed_with_two_sealed_files(tmp_path / "d", remote_url)
    (tmp_path / "d" / "sealed" / f"{first}.sealed").unlink()
    active = tmp_path / "d" / "active" / f"{first}.tix"
    if original == "deleted":
        active.unlink()
    else:
        active.write_bytes(active.read_bytes()[:-100])  # its last three entries (of 40 bytes) damaged
    store = IndexStore(tmp_path / "d", remote_url, small_config())
    report = store.start()
    assert report.quarantined == [first] and report.salvaged == {first: kept}, report
    assert first not in report.resumed, report
    assert first in store.status().quarantined
    assert store.shutdown(timeout_s=20).clean
    survivors = entries_of(model, {*range(kept), *range(50, 120)})
    assert_remote_alone_answers(tmp_path / "fresh", remote_url, survivors)


def test_a_rolled_file_missing_at_start_is_reported_lost(tmp_path: Path, remote_url: str) -> None:
    """A rolled file (its entries not yet sealed) missing at start ended
    EMPTY, 'file was never created', silently: its entries are lost. It is
    quarantined with the reason, reported and shown in status()."""
    model, _, current = crashed_with_two_sealed_files(tmp_path / "d", remote_url)
    journal = Journal(tmp_path / "d" / "journal.db")
    journal.transition(current, FileState.ROLLED)
    journal.close()
    (tmp_path / "d" / "active" / f"{current}.tix").unlink()
    store = IndexStore(tmp_path / "d", remote_url, small_config())
    report = store.start()
    assert report.quarantined == [current] and report.salvaged == {current: 0}, report
    rec = store.journal.get(current)
    assert rec is not None and rec.state is FileState.QUARANTINED and "missing" in (rec.error or ""), rec
    assert current in store.status().quarantined
    assert store.shutdown(timeout_s=20).clean
    assert_remote_alone_answers(tmp_path / "fresh", remote_url, entries_of(model, range(100)))


def test_an_active_file_missing_at_start_is_reported_lost(tmp_path: Path, remote_url: str) -> None:
    """The current file (ACTIVE: written by puts, then a crash) missing at
    start ended EMPTY, 'file was never created': its acknowledged puts were
    lost without a word, and shutdown() said clean. A record now says while
    its file is being created, so a missing file that was made is lost
    data: quarantined, reported and shown in status()."""
    model, _, current = crashed_with_two_sealed_files(tmp_path / "d", remote_url)
    (tmp_path / "d" / "active" / f"{current}.tix").unlink()
    store = IndexStore(tmp_path / "d", remote_url, small_config())
    report = store.start()
    assert report.quarantined == [current] and report.salvaged == {current: 0}, report
    assert current in store.status().quarantined
    assert store.shutdown(timeout_s=20).clean
    assert_remote_alone_answers(tmp_path / "fresh", remote_url, entries_of(model, range(100)))


def test_a_file_whose_creation_a_crash_cut_short_is_empty_not_lost(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record of a new file is written before the file: a crash between
    leaves a record with no file, and no put reached it. It ends EMPTY, and
    nothing is reported lost."""
    import tieredindex.store as store_module

    def crash(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    store = IndexStore(tmp_path / "d", remote_url, small_config())
    store.start()
    with monkeypatch.context() as cut:
        cut.setattr(store_module.IndexFile, "create", crash)
        cut.setattr(store, "_forget_never_created", lambda file_id: None)  # the process is gone
        with pytest.raises(KeyboardInterrupt):
            store.put("t", "k", queue_id=0, offset=0, size=1, timestamp_ms=1_000)
    (made,) = [r for r in store.journal.files() if r.state is FileState.ACTIVE]
    crash_in_process(store)
    store = IndexStore(tmp_path / "d", remote_url, small_config())
    report = store.start()
    assert report.quarantined == [] and report.salvaged == {}, report
    rec = store.journal.get(made.file_id)
    assert rec is not None and rec.state is FileState.EMPTY, rec
    assert store.shutdown(timeout_s=20).clean


def test_a_salvage_cut_short_is_not_reported_lost(tmp_path: Path, remote_url: str) -> None:
    """A salvage's new file is recorded ROLLED before it is made: a crash
    between leaves a rolled record with no file that lost nothing (the
    damaged original is salvaged again), not a lost file."""
    model, damaged = crashed_with_a_damaged_current_file(tmp_path / "d", remote_url)

    def crash(src: object, dest: object) -> None:
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as cut:
        cut.setattr(tieredindex.store, "salvage", crash)
        with pytest.raises(KeyboardInterrupt):
            IndexStore(tmp_path / "d", remote_url, small_config(capacity=40)).start()
    store = IndexStore(tmp_path / "d", remote_url, small_config(capacity=40))
    report = store.start()
    assert report.quarantined == [damaged] and report.salvaged == {damaged: 15}, report
    assert store.status().quarantined == [damaged]
    assert store.shutdown(timeout_s=20).clean
    assert_remote_alone_answers(tmp_path / "fresh", remote_url, model)


@pytest.mark.parametrize("copy", ["intact", "damaged"])
def test_a_sealed_copy_with_neither_record_nor_original_is_kept(
    tmp_path: Path, remote_url: str, copy: str
) -> None:
    """The journal lost, and a sealed file waiting for upload has lost its
    original: recovery took the sealed copy for a cached copy of an uploaded
    file and deleted it, though it was the only copy of 50 entries. It is
    verified and uploaded (put-if-absent: a copy of an uploaded file finds
    its object identical); one that fails verification is quarantined."""
    model, (first, _), _ = crashed_with_two_sealed_files(tmp_path / "d", remote_url)
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / "d" / f"journal.db{suffix}").unlink(missing_ok=True)
    (tmp_path / "d" / "active" / f"{first}.tix").unlink()
    sealed = tmp_path / "d" / "sealed" / f"{first}.sealed"
    if copy == "damaged":
        raw = bytearray(sealed.read_bytes())
        raw[200] ^= 4
        sealed.write_bytes(bytes(raw))
    store = IndexStore(tmp_path / "d", remote_url, small_config())
    report = store.start()
    if copy == "intact":
        assert first in report.resumed and report.quarantined == [], report
        survivors = model
    else:
        assert report.quarantined == [first], report
        assert [p.name for p in (tmp_path / "d" / "quarantine").iterdir()] == [sealed.name]
        assert store.status().quarantined == [first]
        survivors = entries_of(model, range(50, 120))
    assert_answers(store, survivors)
    assert store.shutdown(timeout_s=20).clean
    assert_remote_alone_answers(tmp_path / "fresh", remote_url, survivors)


def test_cached_copies_adopted_after_the_journal_is_lost_find_their_uploads(
    tmp_path: Path, remote_url: str
) -> None:
    """The sealed copies kept in the cache after their upload, adopted when
    the journal was lost, are uploaded again put-if-absent: object and
    manifest record are found identical, no conflict."""
    store = IndexStore(tmp_path / "d", remote_url, small_config(cache_bytes=10**9))
    store.start()
    model = fill(store, 120)
    assert store.shutdown(timeout_s=20).clean
    cached = sorted(p.stem for p in (tmp_path / "d" / "sealed").glob("*.sealed"))
    assert len(cached) == 3 and not list((tmp_path / "d" / "active").glob("*.tix"))
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / "d" / f"journal.db{suffix}").unlink(missing_ok=True)
    again = IndexStore(tmp_path / "d", remote_url, small_config(cache_bytes=10**9))
    report = again.start()
    assert report.resumed == cached and report.quarantined == [], report
    shut = again.shutdown(timeout_s=20)
    assert shut.clean, shut
    assert again.status().files_by_state == {"UPLOADED": 3}
    assert_remote_alone_answers(tmp_path / "fresh", remote_url, model)


def test_a_quarantine_cut_short_by_a_crash_is_finished_at_start(tmp_path: Path, remote_url: str) -> None:
    """A crash between a file's QUARANTINED record and its move into
    quarantine/ left the full-size file in active/ for good (recovery
    skips files in final states). Recovery moves it."""
    _, _, current = crashed_with_two_sealed_files(tmp_path / "d", remote_url)
    journal = Journal(tmp_path / "d" / "journal.db")
    journal.transition(current, FileState.QUARANTINED, error="damaged")  # then the crash
    journal.close()
    store = IndexStore(tmp_path / "d", remote_url, small_config())
    store.start()
    assert not (tmp_path / "d" / "active" / f"{current}.tix").exists()
    assert [p.name for p in (tmp_path / "d" / "quarantine").iterdir()] == [f"{current}.tix"]
    assert store.status().quarantined == [current]
    assert store.shutdown(timeout_s=20).clean


def test_an_empty_files_deletes_cut_short_by_a_crash_are_finished_at_start(
    tmp_path: Path, remote_url: str
) -> None:
    """A crash between an empty file's EMPTY record and the deletes of its
    original and sealed copy left both, the original full size, for good.
    Recovery deletes them."""
    remote = SwitchableRemote(open_remote(remote_url))
    remote.down.set()
    store = IndexStore(tmp_path / "d", remote, small_config())
    store.start()
    with store._write_lock:
        store._writer_locked()  # the current file is made, as a first put makes it; left empty
    current = store._current
    assert current is not None
    crash_in_process(store)
    original = tmp_path / "d" / "active" / f"{current}.tix"
    sealed = tmp_path / "d" / "sealed" / f"{current}.sealed"
    with IndexFile.open(original) as f:
        f.seal(sealed)
    journal = Journal(tmp_path / "d" / "journal.db")
    journal.transition(current, FileState.ROLLED)
    journal.transition(current, FileState.EMPTY)  # then the crash
    journal.close()
    again = IndexStore(tmp_path / "d", remote_url, small_config())
    again.start()
    assert not original.exists() and not sealed.exists()
    assert again.shutdown(timeout_s=20).clean


def test_a_strict_query_raises_while_a_salvage_the_disk_failed_withholds_a_file(
    tmp_path: Path, remote_url: str
) -> None:
    """A damaged file whose salvage the disk failed stays ROLLED, out of
    queries, until the salvage is tried again: its intact entries are
    answered by no file meanwhile. A strict query answered without them, as
    if complete; it must raise, naming the file (a lenient one may answer
    without it, the file being reported)."""
    model, damaged = crashed_with_a_damaged_current_file(tmp_path / "d", remote_url)

    with pytest.MonkeyPatch.context() as disk:
        disk.setattr(tieredindex.store, "salvage", disk_full)
        store = IndexStore(tmp_path / "d", remote_url, small_config(capacity=40, reconcile_interval_s=3600))
        store.start()
        assert store.journal.get(damaged).state is FileState.ROLLED  # type: ignore[union-attr]
        key = next(iter(model))
        with pytest.raises(CorruptFileError, match=damaged):
            store.query("orders", key, 0, FOREVER, 10_000, strict=True)
        lenient = store.query("orders", key, 0, FOREVER, 10_000)
        assert len(lenient) < len(expected(model, key))
        store.shutdown(timeout_s=1)


def test_an_upload_that_ends_in_a_failed_salvage_keeps_the_salvage_s_backoff(
    tmp_path: Path, remote_url: str
) -> None:
    """An upload finds its sealed copy gone and its original damaged; the
    salvage the disk fails sets the file's backoff (_salvage_failed), then
    the upload returns normally and its success cleared the same entry of
    _retry_after: the worker salvaged again at once, not after the pause."""
    directory = tmp_path / "d"
    remote = SwitchableRemote(open_remote(remote_url))
    remote.down.set()
    store = IndexStore(directory, remote, small_config(capacity=40))
    store.start()
    fill(store, 95)
    wait_until(lambda: len(store.journal.files([FileState.SEALED, FileState.UPLOADING])) == 2, "two sealed")
    crash_in_process(store)
    victim = sorted(p.stem for p in (directory / "sealed").glob("*.sealed"))[0]

    remote = SwitchableRemote(open_remote(remote_url))
    remote.down.set()
    store = IndexStore(directory, remote, small_config(capacity=40, reconcile_interval_s=3600))
    store.start()
    # Its first upload here failed (the remote down) and waits out its backoff.
    wait_until(lambda: victim in store._retry_after and victim not in store._in_flight, "an upload failed")

    salvages: list[str] = []

    def disk_full(src: object, dest: object) -> None:
        salvages.append(str(src))
        raise OSError(errno.ENOSPC, "No space left on device")

    rounds = [0, 0]  # worker rounds started, ended
    seal_rolled = store._seal_rolled

    def counted() -> None:
        rounds[0] += 1
        seal_rolled()
        rounds[1] += 1

    with pytest.MonkeyPatch.context() as disk:
        disk.setattr(tieredindex.store, "salvage", disk_full)
        disk.setattr(store, "_seal_rolled", counted)
        original = directory / "active" / f"{victim}.tix"
        original.write_bytes(original.read_bytes()[:-100])
        (directory / "sealed" / f"{victim}.sealed").unlink()
        remote.down.clear()
        store._upload_one(victim)
        assert len(salvages) == 1, salvages
        assert store.journal.get(victim).state is FileState.ROLLED  # type: ignore[union-attr]
        begun = rounds[0]
        store._wake.set()
        wait_until(lambda: rounds[1] > begun, "a worker round after the upload")
        assert len(salvages) == 1, "salvaged again before its backoff was over"
        store.shutdown(timeout_s=1)


def test_the_cached_copy_of_a_file_salvaged_from_a_damaged_header_is_adopted_without_a_conflict(
    tmp_path: Path, remote_url: str
) -> None:
    """A file whose static header was damaged is salvaged into a new file
    whose header begins at the oldest entry (the begin time was in the
    damaged header); its journal row kept the original's begin time, and its
    manifest record said so. Once uploaded, the journal lost: the cached
    sealed copy is adopted with its header's begin time, the manifest record
    it would write differed, and the file went CONFLICT (every shutdown
    unclean from then on). The row takes the sealed file's begin time."""
    directory = tmp_path / "d"
    store = IndexStore(directory, remote_url, small_config(capacity=1000))
    store.start()
    for i in range(30):
        store.put("t", f"k{i % 3}", queue_id=0, offset=i, size=1, timestamp_ms=1_000 + i)
    store.flush()
    crash_in_process(store)
    (active,) = (directory / "active").glob("*.tix")
    raw = bytearray(active.read_bytes())
    raw[16] ^= 0x04  # the capacity, in the static header (bytes 0..28, checked by the CRC at 28)
    active.write_bytes(bytes(raw))
    store = IndexStore(directory, remote_url, small_config(capacity=1000))
    assert list(store.start().salvaged.values()) == [30]
    assert store.shutdown(timeout_s=20).clean
    assert [p.name for p in (directory / "sealed").iterdir()]  # the cached copy

    (directory / "journal.db").unlink()  # lost
    store = IndexStore(directory, remote_url, small_config(capacity=1000))
    store.start()
    shut = store.shutdown(timeout_s=20)
    assert shut.clean, shut
    assert not Journal(directory / "journal.db").files([FileState.CONFLICT])


def test_a_damaged_file_gone_while_it_waits_for_its_salvage_is_reported_lost(
    tmp_path: Path, remote_url: str
) -> None:
    """A damaged file waits for its salvage (the disk failed the first), and
    is deleted meanwhile. The worker's seal took it for a file never made:
    EMPTY, its entries lost without a word, and strict queries kept raising
    for a file that no longer was. As at start: quarantined, reported."""
    model, damaged = crashed_with_a_damaged_current_file(tmp_path / "d", remote_url)

    with pytest.MonkeyPatch.context() as disk:
        disk.setattr(tieredindex.store, "salvage", disk_full)
        store = IndexStore(tmp_path / "d", remote_url, small_config(capacity=40))
        store.start()
        key = next(iter(model))
        with pytest.raises(CorruptFileError, match=damaged):
            store.query("orders", key, 0, FOREVER, 10_000, strict=True)
        (tmp_path / "d" / "active" / f"{damaged}.tix").unlink()
        # The journal's record is written first, then the store's own maps
        # (no longer withheld): a strict query between the two still raised.
        wait_until(
            lambda: (
                store.journal.get(damaged).state is not FileState.ROLLED  # type: ignore[union-attr]
                and damaged in store._bad
            ),
            "the worker's seal found it gone",
        )
    assert store.journal.get(damaged).state is FileState.QUARANTINED  # type: ignore[union-attr]
    assert damaged in store.status().quarantined
    store.query("orders", key, 0, FOREVER, 10_000, strict=True)  # nothing withheld any more
    assert store.shutdown(timeout_s=20).clean


def _elsewhere(remote_url: str, tmp_path: Path) -> str:
    """Another, empty remote on the same back end: a mistyped URL."""
    if remote_url.startswith("file:"):
        return (tmp_path / "mistyped").as_uri()
    return remote_url.rstrip("/") + "-mistyped/"


def _check_refused_then_back(tmp_path: Path, remote_url: str, away: Any, back: Any) -> None:
    """A store restarted on a remote that holds none of its uploaded files
    (``away()`` makes the URL it is given) took them for expired: strict
    queries answered without them, verify() called the remote healthy with
    0 files, retention forgot them, and the next uploads went there. Now
    nothing is read as expired, claimed or written there, and all of it is
    there once the store is back on its remote (after ``back()``)."""
    directory = tmp_path / "store"
    config = small_config(cache_bytes=0)
    with IndexStore(directory, remote_url, config) as store:
        model = fill(store, 120)
    assert [r.state for r in Journal(directory / "journal.db").files()] == [FileState.UPLOADED] * 3
    wrong = away()
    before = open_remote(wrong).list()
    store = IndexStore(directory, wrong, small_config(cache_bytes=0, retention_s=1.0))
    store.start()
    store.put("orders", "new", queue_id=0, offset=1_000, size=1, timestamp_ms=2_000)
    with pytest.raises(RemoteError, match="is not this store's remote") as raised:
        store.query("orders", "k1", 0, FOREVER, strict=True)
    assert "none of the 3 files this store uploaded" in str(raised.value)
    # Answered from what is local (a sealed copy not evicted yet) and no error.
    assert {tuple(e) for e in store.query("orders", "k1", 0, FOREVER)} <= set(expected(model, "k1"))
    assert store.query("orders", "new", 0, FOREVER) != []  # local files still answer
    with pytest.raises(RemoteError, match="is not this store's remote"):
        store.verify(deep=False)
    status = store.status()
    assert "is not this store's remote" in (status.last_error or "") and not status.reconciled
    report = store.shutdown(timeout_s=2)
    assert not report.clean and len(report.pending) == 1
    assert open_remote(wrong).list() == before  # no owner record, no object, no manifest record
    assert [r.state for r in Journal(directory / "journal.db").files()].count(FileState.UPLOADED) == 3
    back()
    with IndexStore(directory, remote_url, config) as store:
        assert_answers(store, model)
    assert store.shutdown().clean
    model.setdefault("new", []).append((0, 1_000, 1, 2_000))
    with IndexStore(tmp_path / "fresh", remote_url, config) as fresh:
        assert_answers(fresh, model)


def test_a_mistyped_remote_is_refused_and_nothing_is_lost(
    tmp_path: Path, remote_url: str, prompt_retention: None
) -> None:
    _check_refused_then_back(tmp_path, remote_url, lambda: _elsewhere(remote_url, tmp_path), lambda: None)


def test_another_stores_remote_is_refused_and_nothing_is_lost(
    tmp_path: Path, remote_url: str, prompt_retention: None
) -> None:
    """A URL mistyped into another store's prefix: it has an owner record,
    another writer's, and none of this store's files."""
    wrong = _elsewhere(remote_url, tmp_path)

    def away() -> str:
        with IndexStore(tmp_path / "other", wrong, small_config()) as other:
            fill(other, 60, topic="payments")
        assert other.shutdown().clean
        return wrong

    _check_refused_then_back(tmp_path, remote_url, away, lambda: None)


def test_a_volume_not_mounted_is_refused_and_nothing_is_lost(tmp_path: Path, prompt_retention: None) -> None:
    """file://: an empty directory in place of the remote's volume."""
    mounted, volume = tmp_path / "remote", tmp_path / "volume"

    def unmount() -> str:
        mounted.rename(volume)
        mounted.mkdir()
        return mounted.as_uri()

    def mount() -> None:
        mounted.rmdir()
        volume.rename(mounted)

    _check_refused_then_back(tmp_path, mounted.as_uri(), unmount, mount)


def test_a_refused_remote_does_not_evict_the_local_copies(tmp_path: Path, remote_url: str) -> None:
    """On a remote that holds none of its files, the store evicted its
    local sealed copies as usual (cache_bytes): the files were then
    answered by nothing until the store was back on its remote."""
    directory = tmp_path / "store"
    with IndexStore(directory, remote_url, small_config()) as store:  # keeps its sealed copies
        model = fill(store, 120)
    cached = sorted(p.name for p in (directory / "sealed").iterdir())
    assert len(cached) == 3
    store = IndexStore(directory, _elsewhere(remote_url, tmp_path), small_config(cache_bytes=0))
    store.start()
    wait_until(lambda: "is not this store's remote" in (store.status().last_error or ""), "the refusal")
    store._evict_cache()  # as the worker's next round would
    assert sorted(p.name for p in (directory / "sealed").iterdir()) == cached
    for key in model:  # every entry still answered, from the local copies
        assert [tuple(e) for e in store.query("orders", key, 0, FOREVER, 10_000)] == expected(model, key)
    store.shutdown(timeout_s=2)


class AnswersDoneWithoutObject(SwitchableRemote):
    """Its first put of a data object opens a multipart upload and answers
    done without completing it: botocore takes an empty 200 answer to
    CompleteMultipartUpload for success."""

    def __init__(self, inner: Remote) -> None:
        super().__init__(inner)
        self.faked = False

    def put_if_absent(self, key: str, source: Any, **kwargs: Any) -> Any:
        if not self.faked and key.startswith(DATA_PREFIX):
            self.faked = True
            open_upload(self.inner, key)
            return PutResult(created=True, identical=True)
        return super().put_if_absent(key, source, **kwargs)


def test_an_upload_answered_done_without_its_object_leaves_no_upload_open(
    tmp_path: Path, remote_url: str
) -> None:
    """The HEAD after it found no object and the upload was done again, but
    the multipart upload the answered-done attempt left open stayed open
    (until the next start's reconciliation, or for ever if the store never
    starts again): it is now swept before the file is recorded uploaded."""
    remote = AnswersDoneWithoutObject(open_remote(remote_url))
    with IndexStore(tmp_path / "d", remote, small_config()) as store:
        model = fill(store, 30)
    assert store.shutdown().clean and remote.faked
    assert open_remote(remote_url).list_multipart_uploads() == []
    assert_remote_alone_answers(tmp_path / "fresh", remote_url, model)


def test_a_remote_copied_whole_to_a_new_url_is_the_stores(tmp_path: Path, remote_url: str) -> None:
    """Moving a store's remote (every object copied, its owner record
    included) is not a mistake: the store goes on there."""
    directory = tmp_path / "store"
    config = small_config(cache_bytes=0)
    with IndexStore(directory, remote_url, config) as store:
        model = fill(store, 120)
    old, new = open_remote(remote_url), open_remote(_elsewhere(remote_url, tmp_path))
    for info in old.list():
        body = old.get(info.key)
        new.put_if_absent(info.key, body, size=len(body), crc32c=crc32c(body))
    with IndexStore(directory, new.url, config) as store:
        assert_answers(store, model)
        store.put("orders", "new", queue_id=0, offset=1_000, size=1, timestamp_ms=2_000)
        assert store.verify(deep=True).ok
    assert store.shutdown().clean
    assert len([i for i in new.list(MANIFEST_PREFIX)]) == 4


class _CountingRemote(SwitchableRemote):
    """Counts the listings and HEADs asked of the remote."""

    def __init__(self, inner: Remote) -> None:
        super().__init__(inner)
        self.asked: collections.Counter[str] = collections.Counter()

    def list(self, prefix: str = "") -> list[Any]:
        self.asked["list"] += 1
        return super().list(prefix)

    def head(self, key: str) -> Any:
        self.asked["head"] += 1
        return super().head(key)


def test_queries_on_a_refused_remote_do_not_list_it_for_every_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a remote refused as not this store's, each remote file a query
    read (missing there) asked again whether the remote was the store's: a
    HEAD, the owner record and a listing of the whole manifest per file per
    query, so a query cost as many listings as the store has files. The
    refusal now stands for the queries until the next check is due."""
    monkeypatch.setattr(tieredindex.store, "CATALOG_RETRY_S", 3600.0)  # no check falls due in the test
    directory = tmp_path / "store"
    with IndexStore(
        directory, (tmp_path / "remote").as_uri(), small_config(capacity=5, cache_bytes=0)
    ) as store:
        for i in range(50):  # 10 files
            store.put("orders", "k", queue_id=0, offset=i, size=1, timestamp_ms=1_000 + i)
    assert store.shutdown().clean
    for cached in (directory / "sealed").iterdir():  # every file answered by the remote alone
        cached.unlink()
    (tmp_path / "mistyped").mkdir()
    wrong = _CountingRemote(open_remote((tmp_path / "mistyped").as_uri()))
    # One round of upkeep (refused), then none while the queries run.
    store = IndexStore(directory, wrong, small_config(capacity=5, cache_bytes=0, reconcile_interval_s=3600.0))
    store.start()
    wait_until(lambda: "is not this store's remote" in (store.status().last_error or ""), "refused")
    wrong.asked.clear()
    for _ in range(3):
        assert store.query("orders", "k", 0, FOREVER, 100) == []  # the files are elsewhere
    with pytest.raises(RemoteError, match="is not this store's remote"):
        store.query("orders", "k", 0, FOREVER, 100, strict=True)
    # The first query's catalog load lists the manifest once; no file asks.
    assert wrong.asked["head"] == 0 and wrong.asked["list"] <= 1, wrong.asked
    assert [r.state for r in store.journal.files()] == [FileState.UPLOADED] * 10  # nothing forgotten
    assert store.shutdown(timeout_s=5).clean


def test_verify_during_the_claims_overwrite_check_takes_its_probe_for_no_orphan(
    tmp_path: Path, moto_server: Any
) -> None:
    """The claim writes a probe object (and deletes it) to check that the
    remote refuses overwrites. A verify() listing the prefix meanwhile
    reported it as an orphan (and with repair=True deleted it), so a
    verify soon after a store's first put could say unhealthy. Probes get a
    grace of their own."""
    import uuid

    url = f"s3://{moto_server.bucket}/probe-{uuid.uuid4().hex[:12]}/"
    store = IndexStore(tmp_path / "d", url, small_config(endpoint_url=moto_server.endpoint_url))
    store.start()
    remote = store.remote
    assert isinstance(remote, S3Remote)
    real_check = remote.check_put_if_absent
    seen: list[Any] = []

    def check_with_a_verify_in_the_middle() -> None:
        probe = remote.prefix + PROBE_KEY_PREFIX + "seen-by-verify"
        remote.client.put_object(Bucket=remote.bucket, Key=probe, Body=b"")  # as the check's own probe
        try:
            seen.append(store.verify(deep=False))
        finally:
            remote.client.delete_object(Bucket=remote.bucket, Key=probe)
        real_check()

    remote.check_put_if_absent = check_with_a_verify_in_the_middle  # type: ignore[method-assign]
    store.put("t", "k", queue_id=0, offset=1, size=1, timestamp_ms=1_000)
    wait_until(lambda: bool(seen), "a verify ran during the check")
    assert seen[0].ok, seen[0]
    # A listing that caught a probe the claim has finished with since: no orphan
    # either; one left behind for longer than PROBE_GRACE_S is.
    wait_until(lambda: store._claimed, "the claim made")
    leftover = remote.prefix + PROBE_KEY_PREFIX + "left-behind"
    remote.client.put_object(Bucket=remote.bucket, Key=leftover, Body=b"")
    assert store.verify(deep=False).ok
    real_clock = remote.clock
    later = dt.timedelta(seconds=tieredindex.layout.PROBE_GRACE_S + 60)
    remote.clock = lambda: real_clock() + later  # type: ignore[method-assign]
    report = store.verify(deep=False)
    assert [(p.kind, p.key) for p in report.problems] == [("orphan", PROBE_KEY_PREFIX + "left-behind")]
    remote.clock = real_clock  # type: ignore[method-assign]
    remote.client.delete_object(Bucket=remote.bucket, Key=leftover)
    assert store.shutdown(timeout_s=20).clean


def _ignore_if_none_match(remote: S3Remote, monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes ``remote`` a store that takes If-None-Match and overwrites anyway."""
    real_put = remote.client.put_object
    monkeypatch.setattr(
        remote.client,
        "put_object",
        lambda **kw: real_put(**{k: v for k, v in kw.items() if k != "IfNoneMatch"}),
    )


def test_a_store_that_ignores_if_none_match_never_takes_another_writers_prefix(
    tmp_path: Path, moto_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An S3-compatible that accepts If-None-Match: * and overwrites anyway
    would let the claim replace another writer's OWNER record (and then
    both write the prefix). The store reads the owner record first and is
    refused without writing (on an empty prefix it checks the condition
    before its claim), and says why."""
    import uuid

    from tieredindex.layout import owner_record
    from tieredindex.remote import S3Remote

    remote = S3Remote(
        moto_server.bucket, f"inm-{uuid.uuid4().hex[:12]}", endpoint_url=moto_server.endpoint_url
    )
    theirs = owner_record("another-writer")
    remote.put_if_absent(OWNER_KEY, theirs, size=len(theirs), crc32c=crc32c(theirs))
    _ignore_if_none_match(remote, monkeypatch)
    store = IndexStore(tmp_path / "d", remote, small_config())
    store.start()
    store.put("t", "k", queue_id=0, offset=1, size=1, timestamp_ms=1_000)
    refused = "owned by writer another-writer"
    wait_until(lambda: refused in (store.status().last_error or ""), "the owner record refused the store")
    report = store.shutdown(timeout_s=2)
    assert not report.clean and report.pending
    stored = moto_server.client.list_objects_v2(Bucket=moto_server.bucket, Prefix=remote.prefix)
    # Nothing of this store's went up (a probe may still be in flight as shutdown gives up).
    keys = [o["Key"] for o in stored["Contents"] if PROBE_KEY_PREFIX not in o["Key"]]
    assert keys == [remote.prefix + OWNER_KEY]
    owner = moto_server.client.get_object(Bucket=moto_server.bucket, Key=remote.prefix + OWNER_KEY)
    assert owner["Body"].read() == theirs
    # An empty prefix on such a store: the check before the claim refuses it.
    empty = S3Remote(
        moto_server.bucket, f"inm-{uuid.uuid4().hex[:12]}", endpoint_url=moto_server.endpoint_url
    )
    _ignore_if_none_match(empty, monkeypatch)
    store = IndexStore(tmp_path / "e", empty, small_config())
    store.start()
    store.put("t", "k", queue_id=0, offset=1, size=1, timestamp_ms=1_000)
    wait_until(lambda: "If-None-Match" in (store.status().last_error or ""), "the check refused the store")
    assert not store.shutdown(timeout_s=2).clean
    stored = moto_server.client.list_objects_v2(Bucket=moto_server.bucket, Prefix=empty.prefix)
    assert [o["Key"] for o in stored.get("Contents", []) if PROBE_KEY_PREFIX not in o["Key"]] == []
