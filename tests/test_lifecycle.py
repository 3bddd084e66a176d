"""Calls racing the store's own lifecycle: queries, status() and verify()
while shutdown() closes, a read cache evicted as an upload ends, verify()
while retention deletes, and signal handlers after a shutdown no signal
started. Each race is held open on purpose, so each test is deterministic."""

from __future__ import annotations

import gc
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import tieredindex.store
from tieredindex import CorruptFileError, FileState, IndexStore, StoreClosedError, open_remote
from tieredindex.layout import DATA_PREFIX, MANIFEST_PREFIX, manifest_key

from store_helpers import FOREVER, Outage, SwitchableRemote, small_config, wait_until

N = 60  # entries of key "k", 12 files of 5


def asking(call: Callable[[], Any], name: str = "asker") -> tuple[threading.Thread, list[Any]]:
    """Runs ``call`` on a thread of its own (``name``), started now; its
    result, or the exception it raised, lands in the list."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, name=name)
    thread.start()
    return thread, outcome


def uploaded_store(tmp_path: Path, remote_url: str, **config: Any) -> IndexStore:
    """A store whose N entries are all in remote files (no local copies)."""
    store = IndexStore(tmp_path / "d", remote_url, small_config(capacity=5, cache_bytes=0, **config))
    store.start()
    for i in range(N):
        store.put("t", "k", queue_id=0, offset=i, size=1, timestamp_ms=1_000 + i)
    store.seal()
    wait_until(lambda: not store.status().pending_files and not store._sealed, "all uploaded, copies evicted")
    assert len(store.query("t", "k", 0, FOREVER, 1000)) == N
    return store


def hold_reads(store: IndexStore, monkeypatch: pytest.MonkeyPatch, seconds: float) -> threading.Event:
    """Ranged reads of data objects sleep ``seconds``; the event is set when
    the first one starts."""
    reading = threading.Event()
    real = store.remote.get_range

    def slow(key: str, start: int, end: int) -> bytes:
        if key.startswith(DATA_PREFIX):
            reading.set()
            time.sleep(seconds)
        return real(key, start, end)

    monkeypatch.setattr(store.remote, "get_range", slow)
    return reading


@pytest.mark.parametrize("strict", [False, True])
def test_a_query_in_flight_finishes_before_shutdown_closes(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch, strict: bool
) -> None:
    """shutdown() closed the remote under a query still reading it: the
    query answered without those files (strict: RemoteError). It now waits
    for queries in flight, to its deadline, and refuses new ones."""
    store = uploaded_store(tmp_path, remote_url)
    reading = hold_reads(store, monkeypatch, 0.3)
    answers: list[Any] = []
    query = threading.Thread(target=lambda: answers.append(store.query("t", "k", 0, FOREVER, 1000, strict)))
    query.start()
    assert reading.wait(10)
    assert store.shutdown(timeout_s=30).clean
    query.join()
    assert [len(a) for a in answers] == [N]
    with pytest.raises(StoreClosedError):
        store.query("t", "k", 0, FOREVER)


@pytest.mark.parametrize("strict", [False, True])
def test_a_query_cut_by_the_deadline_raises_store_closed(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch, strict: bool
) -> None:
    """A query still reading at the shutdown's deadline has what it reads
    closed under it: it raises StoreClosedError, never a short answer."""
    store = uploaded_store(tmp_path, remote_url)
    reading = hold_reads(store, monkeypatch, 1.0)
    query, outcome = asking(lambda: len(store.query("t", "k", 0, FOREVER, 1000, strict)))
    assert reading.wait(10)
    store.shutdown(timeout_s=0.2)
    query.join()
    (result,) = outcome
    assert result == N or isinstance(result, StoreClosedError), result


def test_status_during_the_close_gives_the_final_status(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """status() read the journal as shutdown() closed it (ProgrammingError:
    Cannot operate on a closed database). Asked while the store closes, it
    waits for the final status."""
    store = IndexStore(tmp_path / "d", remote_url, small_config())
    store.start()
    store.put("t", "k", queue_id=0, offset=1, size=1, timestamp_ms=1_000)
    recording = threading.Event()
    real_set_meta = store.journal.set_meta

    def slow_record(key: str, value: str) -> None:
        if key == "last_shutdown":  # the shutdown's own record (the claim writes one too)
            recording.set()
            time.sleep(0.3)  # shutdown is past the close of calls, the journal still open
        real_set_meta(key, value)

    monkeypatch.setattr(store.journal, "set_meta", slow_record)
    statuses: list[Any] = []
    closer = threading.Thread(target=lambda: statuses.append(store.shutdown(timeout_s=20)))
    closer.start()
    assert recording.wait(20)
    status = store.status()
    closer.join()
    assert status.closed and status.pending_files == [] and status.files_by_state == {"UPLOADED": 1}
    assert statuses[0].clean


def test_an_upload_ending_is_never_evicted_out_of_every_view(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the journal's UPLOADED and the remote view's arrival, cache
    eviction dropped the local copy: the file's entries were in no view,
    and queries missed acknowledged puts. Eviction now waits for the
    remote view."""
    store = IndexStore(tmp_path / "d", remote_url, small_config(capacity=1000, cache_bytes=0))
    store.start()
    for i in range(10):
        store.put("t", "k", queue_id=0, offset=i, size=1, timestamp_ms=1_000 + i)
    arrived, go_on = threading.Event(), threading.Event()
    real_add = store._add_remote

    def late_add(*args: Any) -> None:
        arrived.set()
        assert go_on.wait(20)
        real_add(*args)

    monkeypatch.setattr(store, "_add_remote", late_add)
    store.seal()
    assert arrived.wait(20)
    (rec,) = store.journal.files()
    assert rec.state is FileState.UPLOADED
    store._evict_cache()
    assert len(store.query("t", "k", 0, FOREVER)) == 10
    go_on.set()
    assert store.shutdown(timeout_s=20).clean


def test_verify_racing_retention_finds_no_damage(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retention deleted a file (record, then object) between verify()'s
    listing and its HEAD: verify reported it missing and quarantined it,
    and strict queries then raised CorruptFileError. A file whose record is
    gone too has expired: no problem."""
    store = uploaded_store(tmp_path, remote_url)
    remote = open_remote(remote_url)
    victim = sorted(o.key for o in remote.list(DATA_PREFIX))[0]
    real_head = store.remote.head

    def head_after_retention(key: str) -> Any:
        if key == victim and remote.head(victim) is not None:
            fid = victim[len(DATA_PREFIX) : -len(".tix")]
            remote.delete(manifest_key(fid))  # retention's order: record, then object
            remote.delete(victim)
        return real_head(key)

    monkeypatch.setattr(store.remote, "head", head_after_retention)
    report = store.verify(deep=False)
    assert report.ok, report.problems
    assert store.status().quarantined == []
    assert len(store.query("t", "k", 0, FOREVER, 1000, strict=True)) == N - 5
    store.shutdown()


def test_a_record_expiring_during_the_catalog_load_is_skipped(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A manifest record deleted between the listing and its read failed the
    whole catalog load with RemoteError."""
    writer = uploaded_store(tmp_path, remote_url)
    writer.shutdown()
    remote = open_remote(remote_url)
    first = sorted(o.key for o in remote.list(MANIFEST_PREFIX))[0]
    reader = IndexStore(tmp_path / "r", remote_url, small_config(reconcile_interval_s=3600.0))
    real_get = reader.remote.get

    def get_after_expiry(key: str) -> bytes:
        if key == first and remote.head(first) is not None:
            remote.delete(first)
        return real_get(key)

    monkeypatch.setattr(reader.remote, "get", get_after_expiry)
    reader.start()
    assert len(reader.query("t", "k", 0, FOREVER, 1000, strict=True)) == N - 5
    assert reader.status().last_error is None
    reader.shutdown()


def test_signal_handlers_are_given_back_after_a_shutdown(tmp_path: Path, remote_url: str) -> None:
    """install_signal_handlers() left, for every store shut down by a call,
    a thread waiting for ever, an atexit hook and the store itself alive,
    and its handlers in place. They now go with the shutdown."""
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    refs = []
    for n in range(3):
        store = IndexStore(tmp_path / "d", remote_url, small_config())
        store.start()
        store.install_signal_handlers()
        assert signal.getsignal(signal.SIGTERM) is not before[signal.SIGTERM]
        store.put("t", "k", queue_id=0, offset=n, size=1, timestamp_ms=1_000 + n)
        assert store.shutdown(timeout_s=20).clean
        refs.append(weakref.ref(store))
        del store
    wait_until(
        lambda: not [t for t in threading.enumerate() if t.name == "tix-signal"], "signal threads ended"
    )
    gc.collect()
    assert [r() for r in refs] == [None, None, None]
    assert {signum: signal.getsignal(signum) for signum in before} == before


SHUTDOWN_OFF_THE_MAIN_THREAD = """
import os, signal, sys, threading
from tieredindex import IndexStore, StoreConfig
sys.setrecursionlimit(120)  # what a few hundred cycles took without it
root = sys.argv[1]
for n in range(60):
    store = IndexStore(root + "/d", "file://" + root + "/remote", StoreConfig(shutdown_timeout_s=20))
    store.start()
    store.install_signal_handlers()
    done = threading.Thread(target=store.shutdown)
    done.start()
    done.join()
os.kill(os.getpid(), signal.SIGTERM)
print("still alive after SIGTERM", flush=True)
"""


def test_signal_handlers_of_stores_shut_down_off_the_main_thread_do_not_pile_up(tmp_path: Path) -> None:
    """A shutdown off the main thread cannot give the handlers back, so each
    start/shutdown cycle added a link to the chain a signal passes through.
    After enough cycles SIGTERM overflowed the stack and the process went
    on. New handlers now skip the links of stores already shut down."""
    done = subprocess.run(
        [sys.executable, "-c", SHUTDOWN_OFF_THE_MAIN_THREAD, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -signal.SIGTERM, (done.returncode, done.stdout, done.stderr[-2000:])
    assert "still alive" not in done.stdout


SIGNALLED_SHUTDOWNS_WITHOUT_EXIT = """
import gc, os, signal, sys, threading
from tieredindex import IndexStore, StoreConfig
import tieredindex.store
root = sys.argv[1]
signal.signal(signal.SIGTERM, lambda signum, frame: (print("original handler", flush=True), os._exit(0)))
for n in range(30):
    store = IndexStore(root + "/d", "file://" + root + "/remote", StoreConfig(shutdown_timeout_s=20))
    store.start()
    store.install_signal_handlers(exit=False)
    store.put("t", "k", queue_id=0, offset=n, size=1, timestamp_ms=1_000 + n)
    os.kill(os.getpid(), signal.SIGTERM)
    assert store._signal_exit.done.wait(30)
    del store
gc.collect()
alive = sum(isinstance(o, tieredindex.store._SignalExit) for o in gc.get_objects())
print("alive", alive, "threads", threading.active_count(), flush=True)
os.kill(os.getpid(), signal.SIGTERM)
print("still alive after SIGTERM", flush=True)
"""


def test_signal_started_shutdowns_without_exit_do_not_pile_up(tmp_path: Path) -> None:
    """With exit=False, a shutdown a signal started left its handler in
    place and its atexit hook registered: each such cycle kept one more
    link alive, and a later SIGTERM, past the new store's handler, met a
    link whose shutdown was long over and took it for a second signal
    (os._exit(1)) instead of reaching the application's handler. The
    handlers of such a shutdown now retire with it, as after a call."""
    done = subprocess.run(
        [sys.executable, "-c", SIGNALLED_SHUTDOWNS_WITHOUT_EXIT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr[-2000:])
    # One link stays: the last store's handler, installed until a signal
    # passes it on or another install replaces it.
    assert "alive 1 threads 1\n" in done.stdout, done.stdout
    assert done.stdout.endswith("original handler\n"), done.stdout


def test_status_in_flight_keeps_the_journal_open(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A status() reading the journal when shutdown() closed it raised
    sqlite3.ProgrammingError. shutdown() now waits for it."""
    store = IndexStore(tmp_path / "d", remote_url, small_config())
    store.start()
    store.put("t", "k", queue_id=0, offset=1, size=1, timestamp_ms=1_000)
    reading = threading.Event()
    real_files = store.journal.files
    asker = threading.current_thread

    def slow_files(*args: Any) -> Any:
        if asker().name == "status-asker":
            reading.set()
            time.sleep(0.5)  # shutdown runs meanwhile
        return real_files(*args)

    monkeypatch.setattr(store.journal, "files", slow_files)
    thread, outcome = asking(store.status, name="status-asker")
    assert reading.wait(10)
    assert store.shutdown(timeout_s=20).clean
    thread.join()
    (status,) = outcome
    assert not isinstance(status, Exception), status
    assert sum(status.files_by_state.values()) == 1  # the one file, in whatever state it was read


def test_puts_after_a_shutdown_raise_with_handlers_installed(tmp_path: Path, remote_url: str) -> None:
    """With signal handlers installed, a put after a shutdown no signal
    started waited for ever for a signal's exit that was never coming."""
    store = IndexStore(tmp_path / "d", remote_url, small_config())
    store.start()
    store.install_signal_handlers()
    assert store.shutdown(timeout_s=20).clean
    with pytest.raises(StoreClosedError):
        store.put("t", "k", queue_id=0, offset=1, size=1, timestamp_ms=1_000)
    with pytest.raises(StoreClosedError):
        store.seal()


class SlowManifestListing(SwitchableRemote):
    """Its manifest listings take ``delay`` seconds (a query's catalog load,
    verify's listing), so a shutdown can begin while one is running."""

    def __init__(self, inner: Any, delay: float) -> None:
        super().__init__(inner)
        self.delay = delay
        self.listing = threading.Event()

    def list(self, prefix: str = "") -> list:
        self.listing.set()
        time.sleep(self.delay)
        return super().list(prefix)


def test_a_query_in_flight_is_not_cut_while_the_shutdown_has_time(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader's first query loads the catalog (or waits for the load the
    worker began at start). A shutdown begun meanwhile set its stop event
    first, which cut the listing; the query answered [] from local files
    alone. Calls in flight now finish first (to the deadline)."""
    # start() returns before the manifest is listed, so the query needs it.
    monkeypatch.setattr(tieredindex.store, "START_LISTING_WAIT_S", 0.0)
    with IndexStore(tmp_path / "w", remote_url, small_config()) as writer:
        writer.put("t", "k", queue_id=0, offset=1, size=1, timestamp_ms=1_000)
    remote = SlowManifestListing(open_remote(remote_url), 1.0)
    reader = IndexStore(tmp_path / "r", remote, small_config(reconcile_interval_s=3600.0))
    reader.start()
    answers: list[Any] = []
    asker = threading.Thread(target=lambda: answers.append(reader.query("t", "k", 0, FOREVER)))
    asker.start()
    wait_until(lambda: reader._calls == 1, "the query in flight")
    assert remote.listing.wait(10)
    assert reader.shutdown(timeout_s=20).clean
    asker.join()
    assert [[e.offset for e in a] for a in answers] == [[1]]


def test_a_verify_in_flight_is_not_cut_while_the_shutdown_has_time(tmp_path: Path, remote_url: str) -> None:
    with IndexStore(tmp_path / "w", remote_url, small_config()) as writer:
        writer.put("t", "k", queue_id=0, offset=1, size=1, timestamp_ms=1_000)
    remote = SlowManifestListing(open_remote(remote_url), 1.0)
    reader = IndexStore(tmp_path / "r", remote, small_config(reconcile_interval_s=3600.0))
    reader.start()
    wait_until(lambda: reader.status().remote_files == 1, "the catalog loaded")
    reports: list[Any] = []
    checker = threading.Thread(target=lambda: reports.append(reader.verify(deep=True)))
    remote.listing.clear()
    checker.start()
    assert remote.listing.wait(10)
    assert reader.shutdown(timeout_s=20).clean
    checker.join()
    assert [r.ok for r in reports] == [True] and reports[0].checked_files == 1


def test_a_query_past_the_deadline_never_answers_short(tmp_path: Path, remote_url: str) -> None:
    """The shutdown's deadline passes while a query loads the catalog; the
    shutdown then closes the current file, holding the only entry. The
    query skipped the closed file and answered []: now it raises
    StoreClosedError (or answers in full)."""
    remote = SlowManifestListing(open_remote(remote_url), 1.0)
    store = IndexStore(tmp_path / "d", remote, small_config(reconcile_interval_s=3600.0))
    store.start()
    wait_until(lambda: store.status().reconciled, "start-up reconciliation ran")
    store._catalog_loaded_at = None  # the next query loads the catalog again
    store.put("t", "k", queue_id=0, offset=1, size=1, timestamp_ms=1_000)
    remote.listing.clear()
    asker, outcome = asking(lambda: [e.offset for e in store.query("t", "k", 0, FOREVER)])
    assert remote.listing.wait(10)
    store.shutdown(timeout_s=0)
    asker.join()
    (result,) = outcome
    assert result == [1] or isinstance(result, StoreClosedError), result


def test_a_damaged_file_found_past_the_deadline_raises_store_closed(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A query still running when the shutdown closed the journal found a
    damaged file: noting it in the journal raised sqlite3.ProgrammingError
    out of query(). It is StoreClosedError, as for any query the close cut."""
    store = IndexStore(tmp_path / "d", remote_url, small_config())
    store.start()
    store.put("t", "k", queue_id=0, offset=1, size=1, timestamp_ms=1_000)
    closed = threading.Event()

    def answer_after_the_close(views: Any, *rest: Any) -> Any:
        assert closed.wait(20)  # the shutdown returned: the journal is closed
        file_id, view = views[0]
        store._on_corrupt(file_id, view, CorruptFileError("damaged (test)"))
        return []

    monkeypatch.setattr(store, "_answer", answer_after_the_close)
    asker, outcome = asking(lambda: store.query("t", "k", 0, FOREVER))
    time.sleep(0.2)
    store.shutdown(timeout_s=0)
    closed.set()
    asker.join()
    (result,) = outcome
    assert isinstance(result, StoreClosedError), result


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc/self/maps (Linux)")
def test_a_shut_down_store_holds_no_file_of_its_directory(tmp_path: Path, remote_url: str) -> None:
    """After shutdown() the process kept the sealed copies mapped: their
    filesystem stayed busy (an unmount failed) until the process ended."""
    store = IndexStore(tmp_path / "d", remote_url, small_config(capacity=5, cache_bytes=10**9))
    store.start()
    for i in range(20):
        store.put("t", "k", queue_id=0, offset=i, size=1, timestamp_ms=1_000 + i)
    assert len(store.query("t", "k", 0, FOREVER, 100)) == 20
    assert store.shutdown(timeout_s=20).clean
    gc.collect()
    root = str(tmp_path / "d")
    mapped = [line for line in Path("/proc/self/maps").read_text().splitlines() if root in line]
    opened = [p for p in Path("/proc/self/fd").iterdir() if root in str(p.resolve(strict=False))]
    assert mapped == [] and opened == [], (mapped, opened)


class SlowRecordsAfterAFailedListing(SwitchableRemote):
    """Its manifest listings fail until ``listable`` is set (the worker's
    load at start fails for good, so the catalog is loaded by the first
    query); every record read takes ``delay`` seconds."""

    def __init__(self, inner: Any, delay: float) -> None:
        super().__init__(inner)
        self.delay = delay
        self.failed_listings = 0
        self.listable = threading.Event()
        self.reading = threading.Event()

    def list(self, prefix: str = "") -> list:
        if not self.listable.is_set():
            self.failed_listings += 1
            raise Outage("listing fails (test)")
        return super().list(prefix)

    def get(self, key: str) -> bytes:
        self.reading.set()
        record = super().get(key)
        time.sleep(self.delay)  # read, then slow to answer: it succeeds, past the shutdown's deadline
        return record


def test_a_catalog_load_cut_by_the_deadline_raises_store_closed(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A query loading the catalog when the shutdown's deadline passes: the
    record reads still queued are cancelled with the read pool. The query
    raised concurrent.futures.CancelledError; it raises StoreClosedError,
    as every call cut by the shutdown does."""
    monkeypatch.setattr(tieredindex.store, "START_LISTING_WAIT_S", 0.0)
    with IndexStore(tmp_path / "w", remote_url, small_config(capacity=1)) as writer:
        for i in range(12):  # twelve files
            writer.put("t", "k", queue_id=0, offset=i, size=1, timestamp_ms=1_000 + i)
    remote = SlowRecordsAfterAFailedListing(open_remote(remote_url), 0.5)
    # upload_concurrency=1: READS_PER_UPLOAD records read at once, the rest queued.
    config = small_config(upload_concurrency=1, reconcile_interval_s=3600.0)
    reader = IndexStore(tmp_path / "r", remote, config)
    reader.start()
    wait_until(lambda: remote.failed_listings >= config.retry.attempts, "the worker's load failed")
    time.sleep(0.2)  # its last attempt's error handled
    remote.listable.set()
    asker, outcome = asking(lambda: reader.query("t", "k", 0, FOREVER))
    assert remote.reading.wait(10)
    reader.shutdown(timeout_s=0.2)
    asker.join(10)
    [answer] = outcome
    assert isinstance(answer, StoreClosedError), answer
