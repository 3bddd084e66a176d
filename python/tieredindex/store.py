"""IndexStore: the index service a broker embeds.

One writer file at a time (ACTIVE); full or old files roll, are sealed in
the background, uploaded put-if-absent, verified, and made visible by a
manifest record. Every state change is journaled (``journal.py``) before
the side effect it announces; ``states.py`` documents the states.

Threads: callers (put, query, ...), one flusher (msync every
``flush_interval_s``, age rolls), one worker (seal, schedule uploads,
cache), one for remote upkeep (reconcile, the catalog, retention), an
upload pool of ``upload_concurrency`` threads, and a read pool of
READS_PER_UPLOAD times that (a query's remote files, the catalog's
records, retention's deletes: small calls, each a round trip). Every remote
call runs under the retry policy with the shutdown deadline, and every wait
is on an event, so shutdown can always cut them short.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import errno
import fcntl
import http.client
import logging
import math
import os
import resource
import signal
import sqlite3
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, wait
from functools import partial
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Protocol, TypeVar

from tieredindex._entry import Entry
from tieredindex._native import (
    CorruptFileError,
    IndexFile,
    RemoteError,
    SealedIndex,
    StoreClosedError,
    StoreLockedError,
    TieredIndexError,
    check_entry_args,
    crc32c,
    salvage,
)
from tieredindex.config import StoreConfig, check_seconds
from tieredindex.faults import fault_point
from tieredindex.fetcher import FooterCache, RemoteIndexFile
from tieredindex.journal import FileRecord, Journal, RemoteQuarantine
from tieredindex.layout import (
    ACTIVE_DIR,
    JOURNAL_NAME,
    LOCK_NAME,
    MANIFEST_PREFIX,
    OWNER_KEY,
    QUARANTINE_DIR,
    SEALED_DIR,
    STORE_ID_NAME,
    ManifestRecord,
    data_key,
    file_id_of_key,
    index_key,
    is_file_id,
    is_layout_key,
    manifest_key,
    new_file_id,
    owner_of,
    owner_record,
)
from tieredindex.metrics import MetricsSnapshot, RetryCountingLogger, StoreMetrics
from tieredindex.observe import ObservedJournal
from tieredindex.pool import DaemonThreadPool
from tieredindex.remote import (
    META_SIZE,
    READS_PER_UPLOAD,
    MultipartUpload,
    ObjectInfo,
    PutResult,
    Remote,
    crc32c_of_file,
    open_remote,
)
from tieredindex.reports import RecoveryReport, ShutdownReport, StoreStatus, VerifyReport
from tieredindex.retry import RetryBudget, classify, is_not_found, run_with_retry
from tieredindex.states import PENDING_STATES, UNFINISHED_STATES, FileState

_LOG = logging.getLogger("tieredindex")
T = TypeVar("T")


@dataclasses.dataclass
class _SignalExit:
    """A signal-started shutdown (install_signal_handlers): requested by the
    handler, done when shutdown() returned, and the exit code it earned."""

    exit: bool
    requested: threading.Event = dataclasses.field(default_factory=threading.Event)
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    signum: int | None = None
    code: int | None = None
    # Set when the store shut down without a signal: the handlers pass
    # signals on to those they replaced, and the waiting thread ends.
    retired: bool = False
    previous: dict[int, Any] = dataclasses.field(default_factory=dict)
    handler: Any = None
    at_exit: Callable[[], None] | None = None


MAX_TIME = 2**63 - 1
# A refused claim is not asked again for this long (see _claim_locked).
CLAIM_REFUSED_S = 30.0
# verify() problem kinds that mean a remote file's bytes (or record) are bad
_DAMAGE_KINDS = frozenset({"missing", "size-mismatch", "checksum-mismatch", "corrupt", "bad-manifest"})
# After a failed manifest listing, queries wait this long to try again.
CATALOG_RETRY_S = 5.0
# A query asks again while damaged local files are withdrawn and replaced
# under it (each round waits for those in flight), at most this many times.
QUERY_ROUNDS = 4
# An upload no checksum vouches for is read back this much at a time.
READ_BACK_CHUNK = 8 * 1024 * 1024
# After a new index file could not be created (a full disk), puts fail at
# once for this long instead of trying (and journalling) again each time.
CREATE_RETRY_S = 1.0
# start() on an empty directory waits this long at most for the remote
# manifest's file ids, so that new files sort after them (a clock behind).
START_LISTING_WAIT_S = 2.0
# Retention deletes a file once it has looked expired this long by the
# monotonic clock: a wall clock stepped ahead for a moment (a bad NTP
# answer) must not delete for good what is to be kept.
RETENTION_CONFIRM_S = 300.0
# A retention round deletes this many files at most; the rest go in the next
# rounds, so the upkeep thread gets back to the catalog and reconciliation.
RETENTION_PER_ROUND = 256
# The read cache keeps at most one sealed copy (a descriptor) for every
# this many descriptors the open-file limit allows.
DESCRIPTORS_PER_CACHED_FILE = 4


def retention_at_once(upload_concurrency: int) -> int:
    """How many expired files retention deletes at once: half the read pool
    (READS_PER_UPLOAD x upload_concurrency), so queries keep the rest."""
    return max(1, READS_PER_UPLOAD * upload_concurrency // 2)


# The error a salvage's new file is recorded with until it is made: a crash
# before leaves a ROLLED record with no file that lost nothing (the damaged
# original is still there, salvaged again), unlike any other ROLLED record.
SALVAGE_TARGET_NOTE = "salvage target of "
# The error a new current file is recorded with until it is made (then
# cleared): a crash before leaves an ACTIVE record with no file and no
# entries. A record without it whose file is missing at start lost its
# entries (the file was deleted): reported, not taken for a creation cut short.
CREATING_NOTE = "being created"
# The longest pause between tries of a salvage the disk keeps failing.
SALVAGE_PAUSE_CAP_S = 60.0
# Journal meta: the URL of the remote this store claimed (see _claim_locked).
REMOTE_URL_META = "remote_url"


def _pass_on(signum: int, frame: FrameType | None, previous: Any) -> None:
    """Handles a signal as the handler ours replaced would have (we are on
    the main thread: signal handlers run there)."""
    signal.signal(signum, previous)
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_DFL:
        os.kill(os.getpid(), signum)  # the default action, now in place


def _past_retired(handler: Any, signum: int) -> Any:
    """The handler a signal reaches through ``handler``, past those of
    stores already shut down (which only pass signals on). Installing over
    them as they are would grow the chain by one per start/shutdown cycle
    whose shutdown ran off the main thread (which cannot put handlers
    back): after some hundreds, passing a signal on overflowed the stack
    and SIGTERM no longer ended the process."""
    while (exiting := getattr(handler, "tix_signal_exit", None)) is not None and exiting.retired:
        handler = exiting.previous.get(signum, signal.SIG_DFL)
    return handler


# Stores started in this process, for the fork hook below.
_STARTED_STORES: weakref.WeakSet[IndexStore] = weakref.WeakSet()


def _disown_after_fork() -> None:
    """In a child just forked: its copies of this process's stores are not
    its own (IndexStore._disown)."""
    for store in list(_STARTED_STORES):
        store._disown()


os.register_at_fork(after_in_child=_disown_after_fork)


def _check_flag(name: str, value: object) -> bool:
    """A yes/no argument must be a bool: ``repair="no"`` is truthy, and
    would repair (delete orphans) when it says not to."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool (True or False), not {type(value).__name__} {value!r}")
    return value


def _sealed_fields(sealed: SealedIndex) -> dict[str, int]:
    """What the journal records of a sealed copy (its manifest record is
    made of it). The begin time is the file's own: a salvage from a damaged
    header began the new file at its oldest entry, and a sealed copy adopted
    without its row is recorded from its header (the record it writes must
    be the same)."""
    return {
        "count": sealed.count,
        "size": sealed.size,
        "crc32c": sealed.crc32c,
        "min_ms": sealed.min_timestamp_ms,
        "max_ms": sealed.end_ms,
        "begin_ms": sealed.begin_ms,
    }


def _cached_files_allowed() -> int:
    """The most sealed copies the read cache keeps: each holds a descriptor
    open (its map is checked against the file before every read), so a
    quarter of the open-file limit, read now (it may have been raised),
    whatever cache_bytes allows. The rest stay for new files, uploads and
    the broker's own."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return sys.maxsize
    return max(1, soft // DESCRIPTORS_PER_CACHED_FILE)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _drop_page_cache(path: Path) -> None:
    """Asks the kernel to drop the file's cached pages (a hint; clean pages
    only). Missing files and platforms without posix_fadvise are fine."""
    if not hasattr(os, "posix_fadvise"):
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _View(Protocol):
    """Anything a query can search."""

    def query(self, key: bytes, begin_ms: int, end_ms: int, max_count: int) -> list[Entry]: ...


class IndexStore:
    """The index service: ``put`` and ``query`` locally, upload to ``remote``.

    ``remote`` is a :class:`~tieredindex.remote.Remote` or a URL
    (``file:///abs/dir`` or ``s3://bucket/prefix``).
    """

    def __init__(
        self, directory: str | os.PathLike[str], remote: Remote | str, config: StoreConfig | None = None
    ):
        self.config = config if config is not None else StoreConfig()
        if not isinstance(self.config, StoreConfig):
            raise TypeError(f"config must be a StoreConfig, not {type(self.config).__name__}")
        if not isinstance(directory, str | os.PathLike):
            raise TypeError(f"directory must be a str or os.PathLike, not {type(directory).__name__}")
        self.directory = Path(directory)
        if isinstance(remote, str):
            remote = open_remote(
                remote,
                endpoint_url=self.config.endpoint_url,
                region=self.config.region,
                connect_timeout=self.config.connect_timeout_s,
                read_timeout=self.config.read_timeout_s,
                multipart_threshold=self.config.multipart_threshold,
                part_size=self.config.part_size,
                upload_concurrency=self.config.upload_concurrency,
            )
        if not isinstance(remote, Remote):
            raise TypeError(f"remote must be a Remote or a URL string, not {type(remote).__name__}")
        self.remote = remote
        self._budget = RetryBudget.for_policy(self.config.retry)
        self._metrics = StoreMetrics()
        self._retry_log = RetryCountingLogger(self._metrics, _LOG)
        self._started = False
        self._closed = False
        self._lock_fd: int | None = None
        self._pid = os.getpid()  # the process that made it (see _disown)
        self._forked_from: int | None = None
        self._journal: Journal | None = None
        self._store_id = ""
        # Puts, rolls and the close of intake; re-entrant so a signal handler
        # that interrupts a put on the main thread can still shut down.
        self._write_lock = threading.RLock()
        # The maps below.
        self._state_lock = threading.RLock()
        self._current: str | None = None
        self._current_since = 0.0  # time.monotonic() when the current file was created
        self._unsealed: dict[str, IndexFile] = {}
        self._ranges: dict[str, tuple[int, int]] = {}  # ACTIVE file -> (min, max) put
        self._sealed: dict[str, SealedIndex] = {}
        self._remote_files: dict[str, RemoteIndexFile] = {}
        self._access: dict[str, float] = {}
        self._bad: dict[str, str] = {}  # file id -> why it is never served
        # Remote files that failed a check (a subset of _bad, kept in the
        # journal so a restart does not serve them again); strict queries
        # that overlap one raise instead of answering without it.
        self._bad_remote: dict[str, RemoteQuarantine] = {}
        self._last_id_ms = 0  # the newest file id's time: new ids sort after it
        self._ids_listed = threading.Event()  # the remote manifest's ids are noted
        self._remote_wake = threading.Event()  # the remote loop's next round is due now
        self._expired_since: dict[str, float] = {}  # retention: monotonic time first seen expired
        # Retention: files the local view (a journal row) called expired and
        # their manifest record did not, by the record's max_ms.
        self._kept_by_record: dict[str, int] = {}
        # Local files withdrawn from queries and replaced (salvaged, sealed
        # again from the original, or answered by the remote copy) so far: a
        # query that overlapped one asks again.
        self._view_changes = 0
        self._in_flight: set[str] = set()
        self._sealed_originals: list[Path] = []  # page cache still to drop (worker only)
        # Files whose creation failed and whose record could not be removed
        # then (a full disk fails the journal too): removed later.
        self._never_created: set[str] = set()
        # ROLLED records whose file another thread is still making or opening
        # (a salvage, a reseal): the worker's seal leaves them alone till
        # then, and queries wait for them (_prepared).
        self._preparing: set[str] = set()
        self._prepared = threading.Condition(self._state_lock)
        # Damaged files whose salvage the disk failed (file id -> why): out
        # of queries, their intact entries in no file until it is tried
        # again; a strict query may not answer without them.
        self._withheld: dict[str, str] = {}
        self._create_failed: tuple[float, OSError] | None = None  # the last failed creation
        # Set when a flush of the current file failed: the disk may have
        # dropped what was put, so later puts are refused (see _put_locked).
        self._disk_failed: str | None = None
        self._work_at_start = False  # files to upload when start() began: reconcile sweeps
        # Queries, status() and verify() running now: shutdown() waits for
        # them (to its deadline) before it closes the journal, the remote and
        # the files they read, and refuses new ones from then on (_closing).
        self._calls = 0
        self._calls_done = threading.Condition()
        self._closing = False
        self._final_ready = threading.Event()  # set once shutdown() has its final status
        self._retry_after: dict[str, float] = {}  # uploads: a failed file's next try
        # Salvages the disk failed: the next try. Apart from the uploads' (an
        # upload that ends in a failed salvage returns normally, and its
        # success clears its own backoff, not this one).
        self._salvage_after: dict[str, float] = {}
        self._salvage_failures: dict[str, int] = {}  # in a row: the pause doubles with each
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._progress = threading.Condition()
        self._deadline: float | None = None
        self._claimed = False
        self._claim_lock = threading.Lock()
        self._refused: tuple[float, str] | None = None
        self._retention_left_to_owner = False  # a reader's retention: said once in the log
        # The remote holds what this store uploaded (_confirm_remote): once
        # seen, for the rest of its life.
        self._remote_confirmed = False
        # When, and why, _confirm_remote last refused it: queries take that
        # for CATALOG_RETRY_S rather than list the manifest for every file.
        self._not_ours: tuple[float, str] | None = None
        self._reconciled = False
        self._catalog_loaded_at: float | None = None
        # One catalog load at a time: a first query and the worker's start-up
        # reconciliation would otherwise each read every record.
        self._catalog_lock = threading.Lock()
        self._catalog_loads = 0  # loads ended, loaded or failed
        self._catalog_error: RemoteError | None = None  # why the last load failed
        self._catalog_failed: tuple[float, str] | None = None  # when, why
        self._remote_added: dict[str, float] = {}  # when each remote file was learnt of
        self._footers = FooterCache()  # of remote files, bounded: shared by all of them
        self._aborted_mpus = 0
        self._last_error: str | None = None
        self._last_eviction = 0.0
        self._leaky: set[str] = set()  # files with a failed upload attempt: sweep their key once up
        self._threads: list[threading.Thread] = []
        self._uploads: DaemonThreadPool | None = None
        self._reads: DaemonThreadPool | None = None  # a query's remote files, read at once
        self._shutdown_lock = threading.Lock()
        self._shutdown_report: ShutdownReport | None = None
        self._final_status: StoreStatus | None = None
        self._signal_exit: _SignalExit | None = None

    # ------------------------------------------------------------------ paths

    def _active_path(self, file_id: str) -> Path:
        return self.directory / ACTIVE_DIR / f"{file_id}.tix"

    def _sealed_path(self, file_id: str) -> Path:
        return self.directory / SEALED_DIR / f"{file_id}.sealed"

    @property
    def journal(self) -> Journal:
        if self._journal is None:
            raise TieredIndexError("the store is not started: call start() first")
        return self._journal

    # ------------------------------------------------------------- lifecycle

    def __enter__(self) -> IndexStore:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()

    def start(self) -> RecoveryReport:
        """Takes the directory lock, recovers local files and starts the
        background work. Never fails because the remote is unreachable."""
        if self._started:
            raise TieredIndexError("start() was already called")
        for sub in (ACTIVE_DIR, SEALED_DIR, QUARANTINE_DIR):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        self._take_lock()
        self._pid = os.getpid()
        _STARTED_STORES.add(self)
        try:
            journal_path = self.directory / JOURNAL_NAME
            moved: str | None = None
            try:
                self._journal = ObservedJournal(journal_path, self._metrics)
            except CorruptFileError as exc:
                moved = self._quarantine_journal(journal_path, exc)
                self._journal = ObservedJournal(journal_path, self._metrics)
            self._store_id = self._load_store_id()
            self._journal.set_meta("store_id", self._store_id)
            report = self._recover()
            fresh = not self._journal.count_by_state()
            # Decided now, before uploads start: one that finishes before
            # reconciliation looks must not skip the sweep of this start.
            self._work_at_start = bool(self._journal.files(PENDING_STATES))
            if moved is not None:
                report = dataclasses.replace(report, journal_quarantined=moved)
        except BaseException:
            self._undo_recovery()
            self._release_lock()
            raise
        self._started = True
        # Daemon threads (see pool.py): one stuck in a hung SDK call must not
        # keep the process alive after shutdown() returned.
        self._uploads = DaemonThreadPool(self.config.upload_concurrency, "tieredindex-upload")
        self._reads = DaemonThreadPool(READS_PER_UPLOAD * self.config.upload_concurrency, "tieredindex-read")
        try:
            for name, target in (
                ("flusher", self._flusher_loop),
                ("worker", self._worker_loop),
                ("remote", self._remote_loop),
            ):
                thread = threading.Thread(target=target, name=f"tieredindex-{name}", daemon=True)
                thread.start()
                self._threads.append(thread)
        except BaseException:
            # Out of threads ("can't start new thread"): left half started,
            # the store kept the directory lock and refused a second start.
            self._undo_start()
            raise
        if fresh and not self._ids_listed.wait(START_LISTING_WAIT_S):
            _LOG.warning(
                "the remote manifest was not listed within %.0f s of start: until it is, new files "
                "may sort before the remote's if this host's clock is behind",
                START_LISTING_WAIT_S,
            )
        _LOG.info("store %s started: %s", self.directory, report)
        return report

    def _undo_start(self) -> None:
        """After start() failed to start its threads: stops those it did
        start, then undoes the recovery and lets go of the lock, so that
        start() may be called again."""
        self._stop_background(None)
        self._threads.clear()
        self._uploads = self._reads = None
        self._stop.clear()
        self._started = False
        self._undo_recovery()
        self._release_lock()

    def _undo_recovery(self) -> None:
        """After a failed start(): closes what recovery opened (the files,
        each holding its file lock, and the journal) and forgets what it
        learnt, so that start() may be called again, on this store or a
        new one on the directory."""
        with self._state_lock:
            files: list[IndexFile] = list(self._unsealed.values())
            self._unsealed.clear()
            self._sealed.clear()
            self._ranges.clear()
            self._remote_files.clear()
            self._remote_added.clear()
            self._access.clear()
            self._bad.clear()
            self._bad_remote.clear()
            self._leaky.clear()
            self._retry_after.clear()
            self._salvage_after.clear()
            self._salvage_failures.clear()
            self._withheld.clear()
        for f in files:
            with contextlib.suppress(Exception):
                f.close()
        if self._journal is not None:
            with contextlib.suppress(Exception):
                self._journal.close()
            self._journal = None

    def _quarantine_journal(self, path: Path, exc: CorruptFileError) -> str:
        """Moves a damaged journal (and its WAL) aside. Recovery then adopts
        every unsealed file as ROLLED, so its upload is redone; put-if-absent
        finds what already went up identical."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        dest = self.directory / QUARANTINE_DIR / f"{path.name}.{stamp}"
        for suffix in ("", "-wal", "-shm"):
            part = path.with_name(path.name + suffix)
            if part.exists():
                os.replace(part, dest.with_name(dest.name + suffix))
        _fsync_dir(self.directory)
        _LOG.error("journal quarantined to %s and rebuilt from local files: %s", dest, exc)
        return str(dest)

    def _load_store_id(self) -> str:
        """This writer's identity: from the config, else the STORE_ID file
        (which outlives a damaged journal), else new."""
        if self.config.store_id:
            return self.config.store_id
        path = self.directory / STORE_ID_NAME
        if path.exists():
            text = path.read_text().strip()
            if text:
                return text
        store_id = (self._journal.get_meta("store_id") if self._journal else None) or uuid.uuid4().hex
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as out:
            out.write(store_id + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        _fsync_dir(self.directory)
        return store_id

    def _take_lock(self) -> None:
        path = self.directory / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreLockedError(f"{self.directory}: another live store holds this directory") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _stop_background(self, deadline: float | None) -> None:
        """Stops the store's threads (joined until ``deadline``, or for as
        long as they take) and its pools (queued work cancelled)."""
        self._stop.set()  # cuts backoff sleeps and cancels uploads in flight
        self._remote_wake.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()) + 0.05)
        for pool in (self._uploads, self._reads):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    def _has_files_to_upload(self) -> bool:
        """Whether the journal has files whose entries are not yet remote
        (ids only: no records built)."""
        return bool(self.journal.file_ids(PENDING_STATES))

    def _disown(self) -> None:
        """In a child just forked (multiprocessing's default on Linux, a
        pre-fork server): the child has the store's memory, maps and
        descriptors but none of its threads, and a lock a thread held at the
        fork stays held for good. Every call is refused from now on
        (_refuse_if_forked), before it takes any lock; the child's copy of
        the directory lock's descriptor is closed, which leaves the
        parent's lock in place but no longer keeps it after the parent lets
        go (a restarted store was refused while such a child lived). Runs
        in the fork hook: takes no lock, raises nothing."""
        self._forked_from = self._pid
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None

    def _refuse_if_forked(self) -> None:
        if self._forked_from is not None:
            raise TieredIndexError(
                f"{self.directory}: this store was started by process {self._forked_from}, which "
                "forked this process; a forked child cannot use its parent's store (start one of "
                "its own after the fork, on another directory)"
            )

    def _require_open(self, *, writing: bool) -> None:
        self._refuse_if_forked()
        if not self._started:
            raise TieredIndexError("the store is not started: call start() first")
        if self._closed and writing:
            raise StoreClosedError(f"{self.directory}: the store is shutting down or shut down")
        if self._shutdown_report is not None:
            raise StoreClosedError(f"{self.directory}: the store is shut down")

    @contextlib.contextmanager
    def _gate(self) -> Iterator[None]:
        """One query, status() or verify() in flight (see _calls)."""
        with self._calls_done:
            if self._closing:
                raise StoreClosedError(f"{self.directory}: the store is shut down")
            self._calls += 1
        try:
            yield
        finally:
            with self._calls_done:
                self._calls -= 1
                self._calls_done.notify_all()

    def _closed_under(self, what: str, exc: BaseException | None = None) -> StoreClosedError:
        cause = "" if exc is None else f": {exc}"
        return StoreClosedError(f"{self.directory}: the store shut down during {what}{cause}")

    @contextlib.contextmanager
    def _making(self, file_id: str) -> Iterator[bool]:
        """Marks a rolled file another thread is making or reopening (a
        salvage, a reseal), so the worker's seal leaves it alone till then,
        and wakes the worker after. Yields False, marking nothing, when
        another thread is on it already."""
        with self._state_lock:
            mine = file_id not in self._preparing
            if mine:
                self._preparing.add(file_id)
        if not mine:
            yield False
            return
        try:
            yield True
        finally:
            with self._state_lock:
                self._preparing.discard(file_id)
                self._view_changes += 1
                self._prepared.notify_all()
            self._wake.set()  # the worker may seal it now

    # -------------------------------------------------------------- recovery

    def _recover(self) -> RecoveryReport:
        journal = self.journal
        removed = 0
        # Temporary files of a seal, of a file creation (rust/index.rs
        # IndexFile::create) or of a RocketMQ import (rocketmq.py, which
        # starts a store on the directory when it is done) a crash cut
        # short: no put reached any of them, and each may be full size.
        for sub in (ACTIVE_DIR, SEALED_DIR):
            for pattern in (".*.sealing", ".*.creating", ".rocketmq-import-*.tmp"):
                for leftover in (self.directory / sub).glob(pattern):
                    leftover.unlink()
                    removed += 1
        # One listing of each directory, not a stat per journal row: a
        # broker that keeps its files for ever has one row per file.
        unsealed_here = {path.stem for path in (self.directory / ACTIVE_DIR).glob("*.tix")}
        sealed_here = {path.stem for path in (self.directory / SEALED_DIR).glob("*.sealed")}
        known = set(journal.file_ids(FileState))
        # An unsealed file not in the journal: created, then a crash before
        # its record? Records are written first, so this is an operator's
        # copy; adopt it if it holds entries.
        for stem in sorted(unsealed_here - known):
            if is_file_id(stem):
                journal.add(stem, FileState.ROLLED, begin_ms=int(stem[:13]))
                known.add(stem)
        quarantined: list[str] = []
        for stem in sorted(sealed_here - known):
            if stem not in unsealed_here:
                # No record (the journal was lost) and no original: a cached
                # copy of an uploaded file, or the only copy of one never
                # uploaded. Not to be told apart here: kept either way.
                if not self._adopt_sealed_copy(stem):
                    sealed_here.discard(stem)
                    if is_file_id(stem):
                        quarantined.append(stem)
                known.add(stem)
        reopened: list[str] = []
        salvaged: dict[str, int] = {}
        resumed: list[str] = []
        dropped = 0
        for bad in journal.remote_quarantine():
            self._bad_remote[bad.file_id] = bad
            self._bad[bad.file_id] = bad.reason
        for rec in journal.files():
            self._note_file_id(rec.file_id)
            if rec.state in (FileState.ACTIVE, FileState.ROLLED):
                path = self._active_path(rec.file_id)
                never_made = (rec.error or "").startswith((SALVAGE_TARGET_NOTE, CREATING_NOTE))
                if rec.state is FileState.ACTIVE:
                    rec = journal.transition(rec.file_id, FileState.ROLLED)
                if not path.exists() and not never_made:
                    # The file was made and written (deleted since): its entries are lost.
                    self._quarantine_and_salvage(rec, "file missing at start: its entries are lost")
                    quarantined.append(rec.file_id)
                    salvaged[rec.file_id] = 0
                    continue
                if not path.exists():
                    # The record was written, the crash came before the file:
                    # no put can have reached it.
                    journal.transition(rec.file_id, FileState.EMPTY, error="file was never created")
                    continue
                try:
                    f = IndexFile.open(path)
                except CorruptFileError as exc:
                    kept = self._quarantine_and_salvage(rec, str(exc))
                    if kept is None:
                        resumed.append(rec.file_id)  # its salvage is tried again
                    else:
                        salvaged[rec.file_id] = kept
                        quarantined.append(rec.file_id)
                    continue
                if f.recovered:
                    reopened.append(rec.file_id)
                    dropped += f.dropped_entries
                self._unsealed[rec.file_id] = f
                resumed.append(rec.file_id)
            elif rec.state in (FileState.SEALED, FileState.UPLOADING):
                if rec.state is FileState.UPLOADING:
                    self._leaky.add(rec.file_id)  # its interrupted attempt may have left an upload open
                kept = None
                if self._open_sealed_copy(rec) is None:
                    kept = self._reseal_or_quarantine(rec, "sealed copy missing or damaged")
                if kept is None:
                    resumed.append(rec.file_id)
                else:
                    quarantined.append(rec.file_id)
                    salvaged[rec.file_id] = kept
            elif rec.state is FileState.CONFLICT:
                self._open_sealed_copy(rec)  # still answers queries locally
            elif rec.state is FileState.QUARANTINED:
                # A crash between the record and the move into quarantine/.
                for path, here in (
                    (self._active_path(rec.file_id), unsealed_here),
                    (self._sealed_path(rec.file_id), sealed_here),
                ):
                    if rec.file_id in here:
                        os.replace(path, self.directory / QUARANTINE_DIR / path.name)
                        _fsync_dir(self.directory / QUARANTINE_DIR)
            elif rec.state is FileState.EMPTY:
                # A crash between the record and the deletes: no entries to keep.
                if rec.file_id in unsealed_here:
                    self._active_path(rec.file_id).unlink(missing_ok=True)
                if rec.file_id in sealed_here:
                    self._sealed_path(rec.file_id).unlink(missing_ok=True)
            elif rec.state is FileState.UPLOADED:
                if rec.file_id in unsealed_here:
                    self._active_path(rec.file_id).unlink(missing_ok=True)  # crash before the local delete
                if rec.file_id in sealed_here and self._open_sealed_copy(rec) is None:
                    self._sealed_path(rec.file_id).unlink(missing_ok=True)
                if rec.file_id not in self._bad_remote:
                    self._add_remote(rec.file_id, self._manifest_of(rec))
        return RecoveryReport(
            files=sum(journal.count_by_state().values()),
            reopened=reopened,
            dropped_entries=dropped,
            quarantined=quarantined,
            salvaged=salvaged,
            resumed=resumed,
            removed_temp_files=removed,
        )

    def _adopt_sealed_copy(self, file_id: str) -> bool:
        """A sealed copy with neither a journal record nor its original:
        recorded SEALED if it passes verification (so it is uploaded:
        put-if-absent finds the object of an uploaded file identical),
        else moved to quarantine/ (and recorded QUARANTINED). Never
        deleted: it may be the only copy of its entries. Returns whether it
        was adopted."""
        path = self._sealed_path(file_id)
        why = None if is_file_id(file_id) else "not named as an index file"
        if why is None:
            try:
                sealed = SealedIndex.open(path)
                sealed.verify()
            except CorruptFileError as exc:  # not an OSError (EMFILE): that is no damage
                why = str(exc)
        if why is None and sealed.count == 0:
            path.unlink()  # no entries: nothing to keep (empty files are never uploaded)
            return False
        if why is None:
            self.journal.add(file_id, FileState.ROLLED, begin_ms=sealed.begin_ms)
            self.journal.transition(file_id, FileState.SEALED, **_sealed_fields(sealed))
            _LOG.warning("file %s: a sealed copy with no journal record, adopted for upload", file_id)
            return True
        why = f"a sealed copy with no journal record failed verification: {why}"
        os.replace(path, self.directory / QUARANTINE_DIR / path.name)
        _fsync_dir(self.directory / QUARANTINE_DIR)
        if is_file_id(file_id):
            self.journal.add(file_id, FileState.ROLLED, begin_ms=int(file_id[:13]))
            self.journal.transition(file_id, FileState.QUARANTINED, error=why)
            with self._state_lock:
                self._bad[file_id] = why
        _LOG.error("file %s quarantined: %s", file_id, why)
        return False

    def _open_sealed_copy(self, rec: FileRecord) -> SealedIndex | None:
        """Opens the local sealed copy if it matches the journal's size and
        CRC32C, and registers it for queries."""
        path = self._sealed_path(rec.file_id)
        try:
            sealed = SealedIndex.open(path)
        except (FileNotFoundError, CorruptFileError):
            # Missing or damaged. Any other OSError (out of descriptors:
            # EMFILE) says nothing of the copy: raised, not taken for
            # damage, which would delete an intact copy.
            return None
        if sealed.size != rec.size or sealed.crc32c != rec.crc32c:
            return None
        with self._state_lock:
            self._sealed[rec.file_id] = sealed
            self._access.setdefault(rec.file_id, time.monotonic())
        return sealed

    def _reseal_or_quarantine(self, rec: FileRecord, why: str) -> int | None:
        """The sealed copy of a not-yet-uploaded file is bad: seal again from
        the unsealed original (kept until upload), or salvage it. Returns
        the entries salvaged if it was quarantined, else None."""
        with self._making(rec.file_id) as mine:
            if not mine:
                return None  # another thread is resealing or salvaging it
            current = self.journal.get(rec.file_id)
            if current is None or current.state not in (FileState.SEALED, FileState.UPLOADING):
                return None  # resealed (or quarantined) meanwhile
            _LOG.warning("file %s: %s", rec.file_id, why)
            with self._state_lock:
                self._sealed.pop(rec.file_id, None)
            self._sealed_path(rec.file_id).unlink(missing_ok=True)
            rolled = self.journal.transition(rec.file_id, FileState.ROLLED, error=why)
            try:
                f = IndexFile.open(self._active_path(rec.file_id))
            except (OSError, CorruptFileError) as exc:
                return self._quarantine_and_salvage(rolled, f"{why}; unsealed original: {exc}")
            with self._state_lock:
                self._unsealed[rec.file_id] = f
        return None

    def _salvage_into(self, rec: FileRecord, path: Path, new_id: str) -> tuple[int, str]:
        """The intact entries of ``path`` into the new ROLLED file ``new_id``;
        returns how many, and what to add to the quarantine's reason.

        Raises ``OSError`` when the disk failed the salvage (full, an I/O
        error): that says nothing about ``path``, so the caller keeps it and
        tries again later; the half-made new file is then EMPTY."""
        self.journal.add(
            new_id, FileState.ROLLED, begin_ms=rec.begin_ms, error=SALVAGE_TARGET_NOTE + rec.file_id
        )
        target = self._active_path(new_id)
        try:
            try:
                kept, damaged = salvage(path, target)
            except CorruptFileError as exc:
                kept, damaged, note = 0, -1, f"; nothing salvageable: {exc}"
            else:
                note = ""
            salvaged = IndexFile.open(target) if kept else None
        except OSError:
            # Never held anything: forgotten, not left EMPTY (a disk that
            # keeps failing would add a row at every try).
            target.unlink(missing_ok=True)
            self.journal.remove(new_id)
            raise
        if salvaged is not None:
            with self._state_lock:
                self._unsealed[new_id] = salvaged
            _LOG.warning(
                "file %s: salvaged %d entries into %s (%d damaged)", rec.file_id, kept, new_id, damaged
            )
        else:
            target.unlink(missing_ok=True)
            self.journal.transition(new_id, FileState.EMPTY, error="nothing to salvage")
        return kept, note

    def _quarantine_and_salvage(self, rec: FileRecord, why: str) -> int | None:
        """Copies the intact entries of a damaged unsealed file into a new
        file (ROLLED, so it is sealed and uploaded), then quarantines the
        original. Returns the entries kept; None if the disk failed the
        salvage: the original then stays ROLLED, where it is, and the
        worker tries again (a full disk must not lose its entries)."""
        path = self._active_path(rec.file_id)
        kept = 0
        if path.exists():
            # The salvaged entries sort where the original's did (queries
            # take files by id, newest first; equal timestamps: later put
            # first), not after files made since.
            new_id = new_file_id(int(rec.file_id[:13]))
            try:
                with self._making(new_id):
                    kept, note = self._salvage_into(rec, path, new_id)
            except (OSError, sqlite3.Error) as exc:
                # sqlite3: the new file's record could not be written (a
                # full disk fails the journal too); nothing was made.
                self._salvage_failed(rec.file_id, f"{why}; salvage failed, to be tried again: {exc}")
                return None
            why += note
        self.journal.transition(rec.file_id, FileState.QUARANTINED, error=why)
        if path.exists():
            os.replace(path, self.directory / QUARANTINE_DIR / path.name)
            _fsync_dir(self.directory / QUARANTINE_DIR)
        with self._state_lock:
            self._unsealed.pop(rec.file_id, None)
            self._retry_after.pop(rec.file_id, None)
            self._salvage_after.pop(rec.file_id, None)
            self._salvage_failures.pop(rec.file_id, None)
            self._withheld.pop(rec.file_id, None)
            self._bad[rec.file_id] = why
        _LOG.error("file %s quarantined: %s", rec.file_id, why)
        return kept

    def _salvage_failed(self, file_id: str, why: str) -> None:
        """A damaged file's salvage failed on the disk: it stays ROLLED (and
        pending), out of queries; the worker's seal finds it damaged again
        and salvages it once its backoff is over."""
        with contextlib.suppress(Exception):  # the journal may be on the failing disk too
            self.journal.note_error(file_id, why)
        with self._state_lock:
            failures = self._salvage_failures.get(file_id, 0) + 1
            self._salvage_failures[file_id] = failures
            # Each try preallocates a full-size file: on a disk that stays
            # full, not every few seconds for as long as it lasts.
            pause = min(SALVAGE_PAUSE_CAP_S, self.config.reconcile_interval_s * 2 ** min(failures - 1, 30))
            if self._deadline is not None:
                pause = 0.05  # the shutdown's last chance
            f = self._unsealed.pop(file_id, None)
            self._salvage_after[file_id] = time.monotonic() + pause
            self._withheld[file_id] = why
        if f is not None:
            with contextlib.suppress(Exception):
                f.close()
        self._last_error = f"file {file_id}: {why}"
        self._metrics.add_failure()
        _LOG.error("file %s: %s", file_id, why)

    # ------------------------------------------------------------------ puts

    def put(
        self,
        topic: str,
        keys: str | Iterable[str],
        *,
        queue_id: int,
        offset: int,
        size: int,
        timestamp_ms: int,
    ) -> None:
        """Indexes one message under each key. Returns once every key is in
        the mapped file: it survives a crash of this process from then on."""
        self._refuse_if_forked()
        if isinstance(keys, bytes | bytearray | memoryview) or not isinstance(keys, str | Iterable):
            # bytes: iterating would give ints
            raise TypeError(f"keys must be a str or an iterable of str, not {type(keys).__name__}")
        encoded = [index_key(topic, keys)] if isinstance(keys, str) else [index_key(topic, k) for k in keys]
        # Before a file is made for it: a refused put leaves no file behind.
        check_entry_args(queue_id, offset, size, timestamp_ms)
        try:
            self._put_locked(encoded, queue_id, offset, size, timestamp_ms)
        except StoreClosedError:
            self._exit_if_signalled()
            raise

    def _put_locked(
        self, encoded: list[bytes], queue_id: int, offset: int, size: int, timestamp_ms: int
    ) -> None:
        with self._write_lock:
            self._require_open(writing=True)
            if self._disk_failed is not None:
                raise OSError(
                    errno.EIO,
                    f"{self._disk_failed}; what was put may not be on disk, so puts are refused "
                    "until the store is restarted on a working disk",
                )
            for key in encoded:
                damaged = False
                while True:
                    file_id, f = self._writer_locked()
                    try:
                        stored = f.put(key, queue_id, offset, size, timestamp_ms)
                    except CorruptFileError as exc:
                        if damaged:
                            raise  # a new file failed at once: not this file's damage
                        # The current file was changed under us (cut short,
                        # overwritten): salvage it, as a query would, and go on
                        # in a new file.
                        damaged = True
                        self._on_corrupt(file_id, f, exc)
                        continue
                    if stored:
                        low, high = self._ranges.get(file_id, (timestamp_ms, timestamp_ms))
                        self._ranges[file_id] = (min(low, timestamp_ms), max(high, timestamp_ms))
                        self._metrics.add_entries(1)
                        break
                    self._roll_locked()
            fault_point("put.after_write")

    def _next_file_id(self, now_ms: int) -> str:
        """An id that sorts after every file this store knows of, even if the
        wall clock stepped back: queries take files newest id first, so equal
        timestamps in two files keep "later put first"."""
        with self._state_lock:
            self._last_id_ms = max(now_ms, self._last_id_ms + 1)
            return new_file_id(self._last_id_ms)

    def _note_file_id(self, file_id: str) -> None:
        with self._state_lock:
            self._last_id_ms = max(self._last_id_ms, int(file_id[:13]))

    def _writer_locked(self) -> tuple[str, IndexFile]:
        if self._current is None:
            failed = self._create_failed
            wait_s = CREATE_RETRY_S - (time.monotonic() - failed[0]) if failed is not None else 0.0
            if failed is not None and wait_s > 0:
                # A full disk fails every put: say so without touching the
                # disk or the journal again at each one.
                raise OSError(
                    failed[1].errno,
                    f"a new index file could not be created ({failed[1]}); "
                    f"trying again in {wait_s:.2f} s, not at every put",
                )
            now = _now_ms()
            file_id = self._next_file_id(now)
            # Record first: a crash before the file exists leaves a record
            # (noted as being created) that recovery marks EMPTY: no put can
            # have reached it.
            self.journal.add(file_id, FileState.ACTIVE, begin_ms=now, error=CREATING_NOTE)
            try:
                f = IndexFile.create(
                    self._active_path(file_id),
                    slots=self.config.slots,
                    capacity=self.config.capacity,
                    begin_ms=now,
                )
            except BaseException as exc:
                if isinstance(exc, OSError):
                    self._create_failed = (time.monotonic(), exc)
                # Disk full or unwritable: no put reached the file, so its
                # record goes (it would stay pending for the rest of this
                # run); if the journal cannot take that now, the worker
                # removes it later.
                self._forget_never_created(file_id)
                raise
            self._create_failed = None
            try:
                self.journal.note_error(file_id, None)  # made: missing from now on means lost
            except Exception:
                # A journal that cannot take it now (a full disk): the note
                # stays, and a missing file is taken for one never made, as
                # it was before the note existed. Not worth failing the put.
                _LOG.warning("file %s: could not record that it was created", file_id, exc_info=True)
            with self._state_lock:
                self._unsealed[file_id] = f
                # A full-size file was just made: the disk has room again, so
                # a salvage it failed need not sit out its pause (up to a minute).
                if self._salvage_after:
                    self._salvage_after.clear()
                    self._wake.set()
            self._current = file_id
            self._current_since = time.monotonic()
            if not self._claimed:
                self._remote_wake.set()  # claim the prefix now (_claim_when_writing)
        return self._current, self._unsealed[self._current]

    def _forget_never_created(self, file_id: str) -> None:
        """Removes the record of a file whose creation failed (no put reached
        it), now or, if the journal fails too, at the worker's next round."""
        try:
            self._active_path(file_id).unlink(missing_ok=True)
            self.journal.remove(file_id)
        except Exception:
            with self._state_lock:
                self._never_created.add(file_id)
        else:
            with self._state_lock:
                self._never_created.discard(file_id)

    def _forget_never_created_files(self) -> None:
        with self._state_lock:
            pending = list(self._never_created)
        for file_id in pending:
            self._forget_never_created(file_id)

    def _roll_locked(self) -> None:
        """The current file stops taking puts; the worker seals it."""
        if self._current is None:
            return
        file_id = self._current
        # Recorded first: if the journal cannot be written, the file stays
        # current (and sealable by a later roll) instead of being dropped.
        self.journal.transition(file_id, FileState.ROLLED)
        self._current = None
        fault_point("roll.after_journal")
        self._wake.set()

    def flush(self) -> None:
        """msync of the current file: on return every entry put so far
        survives power loss."""
        self._require_open(writing=False)
        with self._write_lock, self._state_lock:
            files = list(self._unsealed.values())
        for f in files:
            try:
                f.flush()
            except ValueError:
                if not f.closed:
                    raise
                # Sealed and closed by the worker meanwhile: seal synced it.
            except OSError as exc:
                self._flush_failed(exc)
                raise

    def _flush_failed(self, exc: OSError) -> None:
        """A flush of a mapped file failed (EIO, a filesystem gone read-only):
        the kernel may drop the pages it could not write, so what was put
        is not known to be on disk. Refuse later puts rather than
        acknowledge more of them (a restart on a working disk goes on)."""
        if self._disk_failed is None:
            self._disk_failed = f"flush failed: {exc}"
            _LOG.error("local disk failed, puts refused from now on: %s", exc)

    def seal(self) -> None:
        """Rolls the current file now if it holds anything."""
        self._refuse_if_forked()
        try:
            with self._write_lock:
                self._require_open(writing=True)
                if self._current is not None and self._unsealed[self._current].count > 0:
                    self._roll_locked()
        except StoreClosedError:
            self._exit_if_signalled()
            raise

    # --------------------------------------------------------------- queries

    def query(
        self, topic: str, key: str, begin_ms: int, end_ms: int, max_count: int = 64, strict: bool = False
    ) -> list[Entry]:
        """Entries of ``key`` in ``topic`` with ``begin_ms <= t <= end_ms``,
        newest first, from local and remote files whose time range overlaps,
        de-duplicated by (queue_id, offset). A file that fails a check is
        quarantined and skipped (``strict=True`` raises instead). Files
        another writer uploaded are found by listing the remote manifest,
        every ``StoreConfig.catalog_refresh_s``: until then they answer nothing."""
        self._require_open(writing=False)
        raw = index_key(topic, key)
        _check_flag("strict", strict)
        for name, value in (("begin_ms", begin_ms), ("end_ms", end_ms), ("max_count", max_count)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, not {type(value).__name__}")
        if begin_ms < 0 or end_ms < 0:
            raise ValueError("begin_ms and end_ms must not be negative")
        if begin_ms > end_ms:
            raise ValueError(f"begin_ms ({begin_ms}) is after end_ms ({end_ms})")
        if max_count < 1:
            raise ValueError(f"max_count must be at least 1, got {max_count}")
        with self._gate():
            try:
                self._ensure_catalog(strict)
                for _ in range(QUERY_ROUNDS):
                    changes_before = self._view_changes
                    views = self._views(begin_ms, end_ms)
                    if strict:
                        self._raise_if_quarantined(begin_ms, end_ms)
                    answer = self._answer(views, raw, begin_ms, end_ms, max_count, strict)
                    if not self._views_changed_since(changes_before):
                        break
                    # A damaged local file was withdrawn while this query
                    # ran, and its entries are now elsewhere (salvaged into a
                    # new file, the original reopened, the remote copy): ask
                    # again, so this answer has them too.
            except (ValueError, RemoteError, sqlite3.Error) as exc:
                # Past shutdown's deadline it closes what this query reads
                # (files, the remote, the journal a damaged file is noted in).
                if self._closing:
                    raise self._closed_under("this query", exc) from exc
                raise
        return answer

    def _views_changed_since(self, changes_before: int) -> bool:
        """Waits for the salvages and reseals in flight (the file they
        withdrew answers nothing until they end), then tells whether any
        file was withdrawn and replaced since ``changes_before``."""
        with self._prepared:
            while self._preparing:
                if self._closing:
                    raise self._closed_under("this query")
                self._prepared.wait(0.1)
            return self._view_changes != changes_before

    def _raise_if_quarantined(self, begin_ms: int, end_ms: int) -> None:
        """A strict query may not answer without a quarantined remote file
        that could hold some of its entries, nor without a damaged local
        file whose salvage is still to be done (its range unknown)."""
        with self._state_lock:
            hit = next((b for b in self._bad_remote.values() if b.overlaps(begin_ms, end_ms)), None)
            withheld = next(iter(sorted(self._withheld.items())), None)
        if hit is not None:
            raise CorruptFileError(f"file {hit.file_id} is quarantined: {hit.reason}")
        if withheld is not None:
            raise CorruptFileError(f"file {withheld[0]} is damaged and not salvaged yet: {withheld[1]}")

    def _answer(
        self,
        views: list[tuple[str, _View]],
        key: bytes,
        begin_ms: int,
        end_ms: int,
        max_count: int,
        strict: bool,
    ) -> list[Entry]:
        """Each file's newest matches, merged newest first, de-duplicated.
        A file is asked for max_count entries at first; one whose answer was
        cut there and could hide entries the merged answer lacks (copies of
        one message use up its share) is asked again for more."""
        limits = {file_id: max_count for file_id, _ in views}
        batches: dict[str, list[Entry]] = {}
        todo = views
        while True:
            batches.update(self._read_views(todo, key, begin_ms, end_ms, limits, strict))
            ranked = [  # newest first; equal timestamps: newer file, then later put, first
                (-e.timestamp_ms, rank, i, e)
                for rank, (file_id, _) in enumerate(views)
                for i, e in enumerate(batches.get(file_id, ()))
            ]
            ranked.sort(key=lambda r: r[:3])
            seen: set[tuple[int, int]] = set()
            out: list[Entry] = []
            cut = len(ranked)
            for at, (*_, e) in enumerate(ranked):
                if (e.queue_id, e.offset) not in seen:
                    seen.add((e.queue_id, e.offset))
                    out.append(e)
                    if len(out) == max_count:
                        cut = at
                        break
            # A file cut at its limit hides only entries ranked after its last
            # one: harmless if that one is at or after the answer's last.
            position = {(r[1], r[2]): at for at, r in enumerate(ranked)}
            todo = [
                (file_id, view)
                for rank, (file_id, view) in enumerate(views)
                if len(batches.get(file_id, ())) >= limits[file_id]
                and position[(rank, limits[file_id] - 1)] < cut
            ]
            if not todo:
                return out
            for file_id, _ in todo:
                limits[file_id] *= 4

    def _read_views(
        self,
        views: list[tuple[str, _View]],
        key: bytes,
        begin_ms: int,
        end_ms: int,
        limits: dict[str, int],
        strict: bool,
    ) -> dict[str, list[Entry]]:
        """Queries each file (remote ones at once); a file that fails a check
        is quarantined and left out (strict: raised)."""
        started = self._read_remote_views(views, key, begin_ms, end_ms, limits)
        batches: dict[str, list[Entry]] = {}
        for file_id, view in views:
            try:
                batch: list[Entry] | None = None
                reading = started.get(file_id)
                if reading is not None:
                    with contextlib.suppress(CancelledError):  # by shutdown, before it ran
                        batch = reading.result()
                if batch is None:
                    batch = self._query_view(file_id, view, key, begin_ms, end_ms, limits[file_id])
                batches[file_id] = batch
            except CorruptFileError as exc:
                self._on_corrupt(file_id, view, exc)
                if strict:
                    raise
            except RemoteError as exc:
                if self._closing:  # not the file's failure: never answer without it
                    raise self._closed_under("this query", exc) from exc
                if isinstance(view, RemoteIndexFile) and is_not_found(exc):
                    verdict = self._object_missing(file_id, view, exc)
                    if verdict == "expired":
                        continue
                    if verdict == "missing":
                        if strict:
                            raise CorruptFileError(f"{view.name}: object missing: {exc}") from exc
                        continue
                    if isinstance(verdict, RemoteError):  # the remote is not this store's
                        self._record_error(verdict)
                        if strict:
                            raise verdict from exc
                        continue
                self._record_error(exc)
                if strict:
                    raise
            else:
                with self._state_lock:
                    self._access[file_id] = time.monotonic()
        return batches

    def _object_missing(self, file_id: str, view: RemoteIndexFile, exc: RemoteError) -> str | RemoteError:
        """A remote file's object was not found. If its manifest record is
        gone too, retention expired it meanwhile: forgotten, no error (its
        entries are past retention): "expired", unless the remote is not
        this store's (_confirm_remote): that error, the file kept. Otherwise
        the object is missing: the file is quarantined: "missing".
        "unknown" when the record could not be looked at (the read's error
        stands)."""
        # Each file of each query would ask again: a HEAD, the owner record
        # and a listing of the whole manifest, per file.
        if self._refused_lately() and (refusal := self._remote_refusal()) is not None:
            return refusal
        mkey = manifest_key(file_id)
        try:
            still_listed = self._read_call(partial(self.remote.head, mkey), f"head {mkey}") is not None
        except RemoteError as head_exc:
            self._record_error(head_exc)
            return "unknown"
        if not still_listed:
            if (refusal := self._remote_refusal()) is not None:
                return refusal
            with self._state_lock:
                self._remote_files.pop(file_id, None)
                self._remote_added.pop(file_id, None)
            self._footers.discard(data_key(file_id))
            _LOG.info("file %s: expired while being read; forgotten", file_id)
            return "expired"
        _LOG.error("file %s: its object is missing and the file is quarantined: %s", file_id, exc)
        self._metrics.add_verification_failures()
        self._quarantine_remote(file_id, view.record, f"object missing: {exc}")
        return "missing"

    def _read_remote_views(
        self, views: list[tuple[str, _View]], key: bytes, begin_ms: int, end_ms: int, limits: dict[str, int]
    ) -> dict[str, Future[list[Entry]]]:
        """Starts the queries of a query's remote files all at once (up to
        READS_PER_UPLOAD x ``upload_concurrency`` in flight): each costs two
        ranged GETs, which would otherwise add up, round trip after round
        trip, file by file.
        The caller takes the results in the views' order, so the answer and
        its errors are those of a sequential read."""
        remote = [(file_id, view) for file_id, view in views if isinstance(view, RemoteIndexFile)]
        if len(remote) < 2 or self._reads is None:
            return {}
        started: dict[str, Future[list[Entry]]] = {}
        for file_id, view in remote:
            try:
                started[file_id] = self._reads.submit(
                    self._query_view, file_id, view, key, begin_ms, end_ms, limits[file_id]
                )
            except RuntimeError:  # shutdown closed the pool meanwhile: the rest are read in line
                break
        return started

    def _query_view(
        self, file_id: str, view: _View, key: bytes, begin_ms: int, end_ms: int, max_count: int
    ) -> list[Entry]:
        """Queries one file. An unsealed file the worker sealed and closed
        since the views were taken answers through its sealed copy (or the
        remote one, once uploaded): the same entries."""
        try:
            return view.query(key, begin_ms, end_ms, max_count)
        except ValueError:
            if not (isinstance(view, IndexFile) and view.closed):
                raise
        with self._state_lock:
            successor: _View | None = self._sealed.get(file_id) or self._remote_files.get(file_id)
        if successor is None:
            if self._closing:  # closed by the shutdown, not emptied: never answer without it
                raise self._closed_under("this query")
            return []  # emptied (EMPTY) or quarantined meanwhile
        return successor.query(key, begin_ms, end_ms, max_count)

    def _views(self, begin_ms: int, end_ms: int) -> list[tuple[str, _View]]:
        """Files whose time range overlaps [begin_ms, end_ms], newest first.
        One view per file: unsealed, else the local sealed copy, else remote."""
        views: dict[str, _View] = {}
        with self._state_lock:
            for file_id, r in self._remote_files.items():
                if r.record.min_ms <= end_ms and r.record.max_ms >= begin_ms:
                    views[file_id] = r
            for file_id, s in self._sealed.items():
                views.pop(file_id, None)
                if s.min_timestamp_ms <= end_ms and s.end_ms >= begin_ms:
                    views[file_id] = s
            for file_id, f in self._unsealed.items():
                if f.closed:
                    if self._closing:  # perhaps closed by the shutdown, with entries
                        raise self._closed_under("this query")
                    continue
                low, high = self._ranges.get(file_id, (0, MAX_TIME))  # unknown after a crash: search it
                views.pop(file_id, None)
                if f.count and low <= end_ms and high >= begin_ms:
                    views[file_id] = f
            for file_id in self._bad:
                views.pop(file_id, None)
        return sorted(views.items(), key=lambda kv: kv[0], reverse=True)

    def _on_corrupt(self, file_id: str, view: _View, exc: CorruptFileError) -> None:
        _LOG.error("file %s failed a check and is quarantined: %s", file_id, exc)
        self._metrics.add_verification_failures()
        rec = self.journal.get(file_id)
        if isinstance(view, RemoteIndexFile):
            self._quarantine_remote(file_id, view.record, f"remote object: {exc}")
            return
        with self._state_lock:
            if isinstance(view, SealedIndex):
                self._sealed.pop(file_id, None)
                # Withdrawn: the original (sealed again) or the remote copy answers for it.
                self._view_changes += 1
        if isinstance(view, SealedIndex):
            self._sealed_path(file_id).unlink(missing_ok=True)
            if rec is not None and rec.state in (FileState.SEALED, FileState.UPLOADING):
                self._reseal_or_quarantine(rec, f"sealed copy failed a check: {exc}")
            return
        # An unsealed file: roll it if current, then salvage what is intact.
        # The worker leaves it alone meanwhile (the roll wakes it).
        with self._write_lock, self._making(file_id):
            if self._current == file_id:
                self._roll_locked()
            with self._state_lock:
                f = self._unsealed.pop(file_id, None)
            if f is not None:
                with contextlib.suppress(Exception):
                    f.close()
            rec = self.journal.get(file_id)
            if rec is not None and rec.state not in (FileState.QUARANTINED,):
                self._quarantine_and_salvage(rec, str(exc))

    def _quarantine_remote(self, file_id: str, record: ManifestRecord | None, why: str) -> None:
        """A remote file failed a check: never served again, here or after a
        restart, until a deep verify finds it intact (or it is repaired or
        expires)."""
        bad = RemoteQuarantine(
            file_id, why, None if record is None else record.min_ms, None if record is None else record.max_ms
        )
        with self._state_lock:
            self._bad[file_id] = why
            self._bad_remote[file_id] = bad
            self._remote_files.pop(file_id, None)
        try:
            self.journal.quarantine_remote(bad)
        except Exception as exc:  # still quarantined for this run
            self._record_error(exc)

    def _release_remote(self, file_id: str) -> bool:
        """Lifts a remote file's quarantine (True if it had one)."""
        with self._state_lock:
            if self._bad_remote.pop(file_id, None) is None:
                return False
            self._bad.pop(file_id, None)
        self.journal.release_remote(file_id)
        _LOG.info("file %s: out of quarantine", file_id)
        return True

    def _ensure_catalog(self, strict: bool = False, reload: bool = False) -> None:
        """A store that has not listed the remote manifest yet does so now
        (``reload``: again, even if it has). If the remote cannot be read,
        local files still answer; a strict query raises instead of passing
        "unreadable" off as "not found". After a failed listing, queries do
        not try again for CATALOG_RETRY_S (the worker keeps trying): during
        an outage each would otherwise wait out the retry policy."""
        if reload:
            # Not loaded until reloaded: a reload that fails must leave the
            # catalog to be loaded again (by queries, the worker), not one
            # "loaded" without the files it was to add.
            self._catalog_loaded_at = None
        elif self._catalog_loaded_at is not None:
            return
        failed = self._catalog_failed
        if failed is not None and time.monotonic() - failed[0] < CATALOG_RETRY_S:
            if strict:
                raise RemoteError(f"the remote manifest is unreadable (listed {failed[1]})")
            return
        try:
            self._load_catalog(unless_loaded=not reload)
        except RemoteError as exc:
            if reload:
                # Not left "loaded" by a load that ended while this one
                # waited for it: that load did not have what this was to add.
                self._catalog_loaded_at = None
            if self._closing:  # cut by the shutdown: not the remote's state
                raise self._closed_under("this query", exc) from exc
            self._catalog_failed = (time.monotonic(), str(exc))
            self._record_error(exc)
            if strict:
                raise

    def _load_catalog(self, unless_loaded: bool = False) -> None:
        """Adds every file the remote manifest lists (the remote layout
        describes itself: a new store on an empty directory finds it all),
        and forgets those whose record is gone (expired by the writer's
        retention: a reader of its prefix would otherwise read them for
        ever, and fail). ``unless_loaded``: nothing if another thread's load
        finished while this one waited for it, and its error if that load
        failed (queries waiting in a remote outage would otherwise each wait
        out a load of their own, one after another)."""
        ended = self._catalog_loads
        with self._catalog_lock:
            if unless_loaded and self._catalog_loaded_at is not None:
                return
            if unless_loaded and self._catalog_loads != ended and self._catalog_error is not None:
                raise RemoteError(str(self._catalog_error)) from self._catalog_error
            self._catalog_error = None
            try:
                self._load_catalog_once()
            except RemoteError as exc:
                self._catalog_error = exc
                raise
            finally:
                self._catalog_loads += 1

    def _load_catalog_once(self) -> None:
        started = time.monotonic()
        files = self._list_manifest(self._call)
        # Every id before any record is read: start() on an empty directory
        # waits for this, so that its first file sorts after the remote's.
        for _, file_id in files:
            self._note_file_id(file_id)
        self._ids_listed.set()
        present: set[str] = {file_id for _, file_id in files}
        self._confirm_remote(present)

        def to_read(file_id: str) -> tuple[bool, RemoteQuarantine | None] | None:
            """(known, its quarantine) if the file's record is to be read:
            a file new to the catalog, or one quarantined with no range."""
            with self._state_lock:
                known = file_id in self._remote_files or file_id in self._bad
                bad = self._bad_remote.get(file_id)
            return (known, bad) if not known or (bad is not None and bad.max_ms is None) else None

        unread = [(info, file_id) for info, file_id in files if to_read(file_id) is not None]
        reads, futures = self._read_records([info.key for info, _ in unread])
        for (info, file_id), read in zip(unread, reads, strict=True):
            try:
                raw = read()
                record = self._record_of(info.key, raw)
            except RemoteError as exc:
                if is_not_found(exc):  # expired between the listing and now
                    present.discard(file_id)
                    continue
                for future in futures:  # the load stops here: the reads still queued are not done
                    future.cancel()
                raise
            # Asked again now that the record is here: an upload or a
            # quarantine may have made the file known while it was read.
            wanted = to_read(file_id)
            if wanted is None:
                continue
            known, bad = wanted
            if isinstance(record, ValueError):
                if not known:
                    _LOG.error("%s", record)
                    self._quarantine_remote(file_id, None, f"manifest record: {record}")
                continue
            if bad is not None:
                # Quarantined before its range was known (verify() ahead of
                # the catalog): strict queries elsewhere need not miss it.
                self._quarantine_remote(file_id, record, bad.reason)
                continue
            self._add_remote(file_id, record)
        with self._state_lock:
            gone = [
                fid
                for fid in [*self._remote_files, *self._bad_remote]
                if fid not in present and self._remote_added.get(fid, 0.0) < started
            ]
            for fid in gone:
                self._remote_files.pop(fid, None)
                self._remote_added.pop(fid, None)
        for fid in gone:
            self._footers.discard(data_key(fid))
            if fid in self._bad_remote:
                self._release_remote(fid)
        self._catalog_loaded_at = time.monotonic()
        self._catalog_failed = None

    def _record_of(self, key: str, raw: bytes) -> ManifestRecord | ValueError:
        """The manifest record ``raw`` read from ``key``; if it fails its
        checks, the record read once more (bytes can be damaged on their
        way): the ValueError only if that read fails them too."""
        try:
            return ManifestRecord.from_bytes(raw, key)
        except ValueError as exc:
            first = exc
        try:
            record = ManifestRecord.from_bytes(self._call(partial(self.remote.get, key), f"get {key}"), key)
        except ValueError as exc:
            return exc
        _LOG.warning("%s (read again, it passes: damaged on the way?)", first)
        return record

    def _read_records(self, keys: list[str]) -> tuple[list[Callable[[], bytes]], list[Future[bytes]]]:
        """Starts reading the manifest records ``keys``, up to
        READS_PER_UPLOAD x ``upload_concurrency`` at a time: a new store over
        a prefix of N files would otherwise wait N round trips, one record
        after another, before its first query (100 s for 2,000 files over a
        50 ms link). Returns, in order, a call that gives each record or
        raises its error, so the catalog is built, and fails, as a
        sequential read would; and the reads started in the pool (to cancel
        those still queued)."""

        def read(key: str) -> bytes:
            return self._call(partial(self.remote.get, key), f"get {key}")

        def outcome(key: str, reading: Future[bytes]) -> bytes:
            try:
                return reading.result()
            except CancelledError:  # by shutdown, before it ran: read in line (its stop event cuts it)
                return read(key)

        if len(keys) < 2 or self._reads is None:
            return [partial(read, key) for key in keys], []
        started: list[Callable[[], bytes]] = []
        futures: list[Future[bytes]] = []
        for key in keys:
            try:
                futures.append(self._reads.submit(read, key))
                started.append(partial(outcome, key, futures[-1]))
            except RuntimeError:  # shutdown closed the pool meanwhile: the rest are read in line
                started.append(partial(read, key))
        return started, futures

    def _add_remote(self, file_id: str, record: ManifestRecord) -> None:
        with self._state_lock:
            self._remote_files[file_id] = RemoteIndexFile(self.remote, record, self._read_call, self._footers)
            self._remote_added[file_id] = time.monotonic()

    def _manifest_of(self, rec: FileRecord) -> ManifestRecord:
        assert rec.size is not None and rec.crc32c is not None and rec.count is not None
        assert rec.min_ms is not None and rec.max_ms is not None
        return ManifestRecord(
            file_id=rec.file_id,
            key=data_key(rec.file_id),
            size=rec.size,
            crc32c=rec.crc32c,
            count=rec.count,
            begin_ms=rec.begin_ms,
            min_ms=rec.min_ms,
            max_ms=rec.max_ms,
        )

    # ------------------------------------------------------ remote plumbing

    def _call(self, op: Callable[[], T], describe: str) -> T:
        """One remote operation under the retry policy and any shutdown
        deadline; cut short by the stop event."""
        return run_with_retry(
            op,
            policy=self.config.retry,
            budget=self._budget,
            stop_event=self._stop,
            deadline=self._deadline,
            describe=describe,
            log=self._retry_log,
        )

    def _read_call(self, op: Callable[[], T], describe: str) -> T:
        """A query's remote read, under the retry policy but not cut short
        by a shutdown in progress: a broker may query while its store shuts
        down (queries are refused once it is shut down), and a read failed
        by the stop event would pass "unread" off as "not found"."""
        return run_with_retry(
            op, policy=self.config.retry, budget=self._budget, describe=describe, log=self._retry_log
        )

    def _record_error(self, exc: BaseException) -> None:
        if isinstance(exc, RemoteError) and (self._stop.is_set() or getattr(exc, "attempts", None) == 0):
            # Cut short by shutdown (its stop, or its deadline before the
            # call's first attempt): the cause, if any, is already recorded.
            return
        message = f"{type(exc).__name__}: {exc}"
        if message != self._last_error:
            _LOG.warning("%s", message)
            # Kept in the journal too, so `tieredindex status` sees it; only
            # when it changes, so a long outage costs one write.
            with contextlib.suppress(Exception):
                self.journal.set_meta("last_error", f"{time.time():.3f} {message}")
        self._last_error = message
        self._metrics.add_failure()

    def _notify(self) -> None:
        with self._progress:
            self._progress.notify_all()

    # ------------------------------------------------------ background work

    def _flusher_loop(self) -> None:
        while not self._stop.wait(self.config.flush_interval_s):
            try:
                with self._write_lock:
                    if self._closed:
                        return
                    current = self._current
                    f = self._unsealed.get(current) if current else None
                    if current is None or f is None:
                        continue
                    try:
                        f.flush()
                    except OSError as exc:
                        self._flush_failed(exc)
                        raise
                    except CorruptFileError as exc:
                        self._on_corrupt(current, f, exc)  # salvaged; the next put starts a file
                        continue
                    # Aged by the monotonic clock: a wall clock that stepped
                    # back (or was ahead when the file began) must not keep
                    # a quiet broker's index local until it catches up. The
                    # current file is always one this process created.
                    age_s = time.monotonic() - self._current_since
                    if f.count and age_s >= self.config.max_file_age_s:
                        self._roll_locked()
            except Exception as exc:  # keep flushing; the error shows in status()
                self._record_error(exc)

    def _worker_loop(self) -> None:
        """Local work: seal rolled files, hand sealed ones to the upload
        pool, evict the read cache. Never waits on the remote (that is the
        remote loop's), so a call hung on a dead connection cannot hold back
        the seal of the last file at shutdown."""
        while not self._stop.is_set():
            self._wake.clear()
            for step in (
                self._seal_rolled,
                self._schedule_uploads,
                self._release_sealed_originals,
                self._evict_cache_now_and_then,
            ):
                try:
                    step()
                except Exception as exc:
                    self._record_error(exc)
            self._notify()
            self._wake.wait(self._until_next_retry())

    def _until_next_retry(self) -> float:
        """How long the worker may sleep: the reconcile interval, or less if
        a failed upload's backoff ends sooner."""
        now = time.monotonic()
        with self._state_lock:
            due = min(
                (t for t in (*self._retry_after.values(), *self._salvage_after.values()) if t > now),
                default=math.inf,
            )
        return max(0.01, min(self.config.reconcile_interval_s, due - now))

    def _remote_loop(self) -> None:
        """Remote upkeep, each step on its own: reconcile (then uploads may
        start), refresh the catalog, retention."""
        while not self._stop.is_set():
            was_reconciled = self._reconciled
            for step in (self._reconcile, self._claim_when_writing, self._retain_now_and_then):
                if self._stop.is_set():
                    return
                try:
                    step()
                except Exception as exc:
                    self._record_error(exc)
            if self._reconciled and not was_reconciled:
                self._wake.set()  # the worker may schedule uploads now
            self._notify()
            self._remote_wake.wait(self.config.reconcile_interval_s)
            self._remote_wake.clear()

    def _claim_when_writing(self) -> None:
        """Claims the prefix once there is a file to upload, not at its first
        upload: for a broker stopped before its first file filled, that is
        the shutdown, where the claim's round trip would hold back the last
        file. A store that never puts (a reader) never claims."""
        if not self._claimed and self._refused is None and self._current is not None:
            self._ensure_claimed()

    def _reconcile(self) -> None:
        """Once: list the manifest; if there is upload work, claim the prefix
        and abort multipart uploads left by an earlier life of this store."""
        if self._reconciled:
            loaded = self._catalog_loaded_at
            if loaded is None or time.monotonic() - loaded > self.config.catalog_refresh_s:
                self._load_catalog()
            return
        self._load_catalog()
        if self._work_at_start or self._has_files_to_upload():
            self._ensure_claimed()
            try:
                listed = self._call(self.remote.list_multipart_uploads, "list multipart uploads")
            except RemoteError as exc:
                if exc.__cause__ is None or classify(exc.__cause__) != "fatal":
                    raise  # an outage: the next round lists again
                # Refused for good (credentials without
                # s3:ListBucketMultipartUploads): cleanup must not hold back
                # the rest (retention waits for reconciliation). Reported;
                # verify() lists what is left, where it is allowed to.
                self._record_error(exc)
                _LOG.warning("multipart uploads of an earlier life not swept: %s", exc)
                listed = []
            # Uploads do not wait for this (a hung call here must not hold
            # them back): skip the keys they are using, taken after the
            # listing, so an upload begun since has a newer id anyway. A
            # resumed upload sweeps its own key's leftovers once it is up.
            # Only keys of our layout: anything else under the prefix (another
            # tool's upload, a store nested under a longer prefix) is not ours.
            busy = self._keys_in_use()
            self._abort_uploads(
                [u for u in listed if is_layout_key(u.key) and u.key not in busy], "an orphaned"
            )
        self._reconciled = True

    def _abort_uploads(self, uploads: list[MultipartUpload], what: str) -> None:
        """Aborts each upload. One that cannot be aborted must not hold the
        others (or any upload) back: it is reported, and verify() lists it."""
        for upload in uploads:
            try:
                self._call(
                    partial(self.remote.abort_multipart_upload, upload.key, upload.upload_id),
                    f"abort multipart upload of {upload.key}",
                )
            except RemoteError as exc:
                self._record_error(exc)
                continue
            self._aborted_mpus += 1
            _LOG.info("aborted %s multipart upload of %s", what, upload.key)

    def _keys_in_use(self) -> set[str]:
        """Keys uploads may be writing now (their temp files are what a
        file:// remote lists as open uploads): the data object and manifest
        record of every file in flight, and the owner record until the
        claim is made (once made, it is never written again)."""
        with self._state_lock:
            files = list(self._in_flight)
        owner = set() if self._claimed else {OWNER_KEY}
        return owner | {data_key(f) for f in files} | {manifest_key(f) for f in files}

    def _ensure_claimed(self) -> None:
        """Claims the prefix for this writer (put-if-absent of OWNER.json).
        A refusal is remembered for a while rather than asked again at every
        retry."""
        if self._claimed:
            return
        with self._claim_lock:  # one claim at a time: _claimed means no claim is being written
            self._claim_locked()

    def _claim_locked(self) -> None:
        if self._claimed:
            return
        self._confirm_remote()  # never claim (then fill) a remote that is not this store's
        if self._refused is not None and time.monotonic() - self._refused[0] < CLAIM_REFUSED_S:
            raise StoreLockedError(self._refused[1])
        # Another writer's prefix is refused by a read, before the probe and
        # the claim write anything there (a reader may hold read-only keys).
        other = self._owner_now()
        if other is None and not self._has_files_to_upload():
            # Claimed by the first file a writer uploads. A store with none
            # (a reader's repair or retention, beside a writer yet to put)
            # would take the prefix from that writer, whose uploads would
            # then be refused for good.
            raise StoreLockedError(
                f"{self.remote.url}: no writer has claimed it, and this store has nothing to upload "
                "there: it claims no prefix (repairs and retention are its writer's)"
            )
        if other is None or other == self._store_id:
            # On a store that ignores If-None-Match the claim below would
            # overwrite another writer's record, and every upload its objects.
            self._call(self.remote.check_put_if_absent, f"check that {self.remote.url} refuses overwrites")
            body = owner_record(self._store_id)
            result = self._call(
                lambda: self.remote.put_if_absent(OWNER_KEY, body, size=len(body), crc32c=crc32c(body)),
                f"claim {OWNER_KEY}",
            )
            # Not identical: claimed meanwhile by another (or not in our bytes).
            other = None if result.identical else self._owner_now() or f"<{OWNER_KEY} gone meanwhile>"
        if other is not None:
            why = (
                f"{self.remote.url}: owned by writer {other}, this store is {self._store_id}; "
                "reads work, uploads are refused (set StoreConfig.store_id to take over)"
            )
            self._refused = (time.monotonic(), why)
            raise StoreLockedError(why)
        self._claimed = True
        # Which remote this store writes to, for the tools that start it on
        # the command line (a mistyped --remote would take its uploads).
        try:
            if self.journal.get_meta(REMOTE_URL_META) != self.remote.url:
                self.journal.set_meta(REMOTE_URL_META, self.remote.url)
        except Exception as exc:  # a note for tools: the claim stands without it
            _LOG.warning("could not record the remote in the journal: %s", exc)

    def _owner_now(self, call: Callable[[Callable[[], bytes], str], bytes] | None = None) -> str | None:
        """The store id in the remote's owner record, or None if it has none
        (read through ``call``: ``_call`` by default)."""
        try:
            raw = (call or self._call)(partial(self.remote.get, OWNER_KEY), f"get {OWNER_KEY}")
        except RemoteError as exc:
            if not is_not_found(exc):
                raise
            return None
        return owner_of(raw)

    def _confirm_remote(self, listed: set[str] | None = None, *, reading: bool = False) -> None:
        """Raises RemoteError when the remote holds nothing of what this
        store uploaded: the journal has uploaded files, the manifest lists
        none of them (``listed``: the ids it lists, if just listed) and the
        owner record is not this store's (or there is none). A mistyped
        URL, or a volume not mounted: read as it is, those files would be
        taken for expired and dropped from every answer, strict ones
        included, and the next uploads would split the store across two
        remotes. So nothing is claimed, written or forgotten there; local
        files wait, and every round asks again. Once confirmed, for the
        rest of the store's life. ``reading``: for a query (its reads are
        not cut short by a shutdown)."""
        if self._remote_confirmed:
            return
        if reading and self._refused_lately():
            assert self._not_ours is not None
            raise RemoteError(self._not_ours[1])  # the upkeep's rounds ask again
        call = self._read_call if reading else self._call
        uploaded = set(self.journal.file_ids([FileState.UPLOADED]))  # ids only: one row a file, kept for ever
        if not uploaded or (listed is not None and uploaded & listed):
            self._remote_confirmed = True
            return
        owner = self._owner_now(call)
        if owner != self._store_id:
            if listed is None:  # a store may have lost its owner record, or been taken over
                listed = {file_id for _, file_id in self._list_manifest(call)}
            if not uploaded & listed:
                claimed = self.journal.get_meta(REMOTE_URL_META)
                whose = f"it has no {OWNER_KEY}" if owner is None else f"it is writer {owner}'s"
                why = (
                    f"{self.remote.url} is not this store's remote: {whose} and holds none of "
                    f"the {len(uploaded)} files this store uploaded"
                    + (f" to {claimed}" if claimed and claimed != self.remote.url else "")
                    + " (a mistyped URL, or a volume not mounted?). Nothing is written to it; "
                    "local files wait for their upload, and the store asks again every round"
                )
                self._not_ours = (time.monotonic(), why)
                raise RemoteError(why)
        self._remote_confirmed = True

    def _remote_refusal(self) -> RemoteError | None:
        """For a query: why the remote is not taken for this store's (see
        _confirm_remote), or None."""
        try:
            self._confirm_remote(reading=True)
        except RemoteError as not_ours:
            return not_ours
        return None

    def _list_manifest(
        self, call: Callable[[Callable[[], list[ObjectInfo]], str], list[ObjectInfo]]
    ) -> list[tuple[ObjectInfo, str]]:
        """The manifest's records, each with the file id it names."""
        listed = call(partial(self.remote.list, MANIFEST_PREFIX), f"list {MANIFEST_PREFIX}")
        return [(info, file_id) for info in listed if (file_id := file_id_of_key(info.key)) is not None]

    def _refused_lately(self) -> bool:
        """Whether _confirm_remote refused the remote less than
        CATALOG_RETRY_S ago (and has not confirmed it since)."""
        refused = self._not_ours
        return (
            not self._remote_confirmed
            and refused is not None
            and time.monotonic() - refused[0] < CATALOG_RETRY_S
        )

    def _seal_rolled(self) -> None:
        self._forget_never_created_files()
        for rec in self.journal.files([FileState.ROLLED]):
            if self._stop.is_set():
                return
            with self._state_lock:
                if rec.file_id in self._preparing:
                    continue  # its file is still being made: the next round
                if self._salvage_after.get(rec.file_id, 0.0) > time.monotonic():
                    continue  # its salvage failed on the disk: after the pause
            current = self.journal.get(rec.file_id)
            if current is None or current.state is not FileState.ROLLED:
                continue  # moved on since the listing (salvaged, quarantined)
            try:
                self._seal_one(current)
            except Exception as exc:  # one file's failure must not hold back the others
                self._record_error(exc)

    def _seal_one(self, rec: FileRecord) -> None:
        with self._state_lock:
            f = self._unsealed.get(rec.file_id)
        if f is None:
            path = self._active_path(rec.file_id)
            if not path.exists():
                if not (rec.error or "").startswith((SALVAGE_TARGET_NOTE, CREATING_NOTE)):
                    # As recovery treats it: a file that was made (a damaged
                    # one waiting for its salvage, say) and is gone lost its
                    # entries: reported, and no longer withheld.
                    self._quarantine_and_salvage(rec, "file missing: its entries are lost")
                    return
                # Its creation failed or was cut short: no put reached it.
                self.journal.transition(rec.file_id, FileState.EMPTY, error="no such file to seal")
                return
            try:
                f = IndexFile.open(path)
            except CorruptFileError as exc:
                # Damaged (found at start, or its salvage failed on the disk
                # then): salvage it now.
                self._quarantine_and_salvage(rec, str(exc))
                return
            with self._state_lock:
                self._unsealed[rec.file_id] = f
                self._withheld.pop(rec.file_id, None)
        fault_point("seal.before")
        dest = self._sealed_path(rec.file_id)
        dest.unlink(missing_ok=True)  # a copy from before a crash: never recorded, redo it
        try:
            # No fsync of the sealed copy: the unsealed original (synced by
            # seal) stays until the upload is verified, the upload re-hashes
            # the copy against the CRC32C recorded below, and recovery checks
            # it too; a copy lost to power loss is sealed again.
            sealed = f.seal(dest, durable=False)
        except CorruptFileError as exc:
            self._on_corrupt(rec.file_id, f, exc)
            return
        fault_point("seal.after_file")
        if sealed.count == 0:
            self.journal.transition(rec.file_id, FileState.EMPTY)
            with self._state_lock:
                self._unsealed.pop(rec.file_id, None)
            f.close()
            dest.unlink(missing_ok=True)
            self._active_path(rec.file_id).unlink(missing_ok=True)
            return
        self.journal.transition(rec.file_id, FileState.SEALED, **_sealed_fields(sealed), error=None)
        fault_point("seal.after_journal")
        with self._state_lock:
            self._sealed[rec.file_id] = sealed
            self._unsealed.pop(rec.file_id, None)
            self._ranges.pop(rec.file_id, None)
        f.close()  # the unsealed file stays on disk until the upload is verified
        self._sealed_originals.append(self._active_path(rec.file_id))
        _LOG.info("file %s sealed: %d entries, %d bytes", rec.file_id, sealed.count, sealed.size)

    def _schedule_uploads(self) -> None:
        if self._uploads is None or self._stop.is_set():
            return
        now = time.monotonic()
        for rec in self.journal.files([FileState.SEALED, FileState.UPLOADING]):
            with self._state_lock:
                if rec.file_id in self._in_flight or self._retry_after.get(rec.file_id, 0) > now:
                    continue
                self._in_flight.add(rec.file_id)
            try:
                future: Future[None] = self._uploads.submit(self._upload_one, rec.file_id)
            except RuntimeError:
                # No thread to run it (out of threads): not in flight, so
                # the next round tries again.
                with self._state_lock:
                    self._in_flight.discard(rec.file_id)
                raise
            future.add_done_callback(partial(self._upload_done, rec.file_id))

    def _release_sealed_originals(self) -> None:
        """Drops the page cache of unsealed files that have been sealed.

        No read goes to them any more (the sealed copy answers) and their
        pages are clean (the seal synced them), so until the upload is
        verified and they are deleted they only crowd the broker's page
        cache. Runs after the uploads are scheduled, so the drop (a few ms
        for an 80 MB file) happens beside the upload rather than in the
        delete at its end, where a shutdown's last journal write waits.
        """
        while self._sealed_originals:
            _drop_page_cache(self._sealed_originals.pop())

    def _upload_done(self, file_id: str, _future: Future[None]) -> None:
        with self._state_lock:
            self._in_flight.discard(file_id)
        self._wake.set()
        self._notify()

    def _upload_one(self, file_id: str) -> None:
        try:
            self._upload(file_id)
        except Exception as exc:
            # During a shutdown (which cleared every backoff once) the next
            # try comes soon, or the file would sit out the deadline.
            pause = self.config.reconcile_interval_s if self._deadline is None else 0.05
            with self._state_lock:
                self._retry_after[file_id] = time.monotonic() + pause
            self._record_error(exc)
            with contextlib.suppress(Exception):
                self.journal.note_error(file_id, f"{type(exc).__name__}: {exc}")
        else:
            with self._state_lock:
                self._retry_after.pop(file_id, None)  # one entry per failed file, for good, otherwise

    def _upload(self, file_id: str) -> None:
        """Intent, put-if-absent, verify, manifest record, outcome."""
        self._ensure_claimed()
        rec = self.journal.get(file_id)
        if rec is None or rec.state not in (FileState.SEALED, FileState.UPLOADING):
            return
        assert rec.size is not None and rec.crc32c is not None
        key, mkey = data_key(file_id), manifest_key(file_id)
        path = self._sealed_path(file_id)
        if not path.exists():
            # Deleted under us: seal again from the original (kept until
            # the upload is verified), rather than fail every attempt.
            self._reseal_or_quarantine(rec, "sealed copy is missing")
            return
        # Intent, durably, before any remote side effect.
        rec = self.journal.transition(
            file_id, FileState.UPLOADING, object_key=key, attempt_id=uuid.uuid4().hex
        )
        fault_point("upload.after_intent")
        size, crc = rec.size, rec.crc32c
        assert size is not None and crc is not None
        metadata = {"tix-file-id": file_id, "tix-count": str(rec.count)}

        def put() -> PutResult:
            try:
                return self.remote.put_if_absent(
                    key, path, size=size, crc32c=crc, metadata=metadata, cancel=self._stop, retry=self._call
                )
            except BaseException:
                # It may leave a multipart upload open: one it could not
                # abort, or whose id it never learnt (the answer to
                # CreateMultipartUpload lost). Swept once the key is up.
                with self._state_lock:
                    self._leaky.add(file_id)
                raise

        try:
            result = self._call(put, f"upload {key}")
        except CorruptFileError as exc:
            # The local sealed copy no longer matches its record: seal again.
            self._reseal_or_quarantine(rec, f"sealed copy changed before upload: {exc}")
            return
        if result.identical:
            fault_point("upload.after_put")
            try:
                why, info = self._verify_upload(key, size, crc, result)
            except RemoteError:
                # Not there, or not checked: a put answered as done with no
                # object behind it (botocore takes an empty 200 to
                # CompleteMultipartUpload for success) may have left its
                # upload open. Swept once the file is up.
                with self._state_lock:
                    self._leaky.add(file_id)
                raise
        else:
            # Found taken by an object of another size or CRC-32C (the
            # store's own, for a multipart upload: what it got of the parts).
            why, info = f"{result.existing}", result.existing
        if why is not None:
            # Ours: written by this attempt, or by an earlier one of this
            # store (interrupted before it could check it: it names this
            # file and its size). Anything else is never deleted or overwritten.
            earlier_ours = (
                info is not None
                and info.metadata.get("tix-file-id") == file_id
                and info.metadata.get(META_SIZE) == str(size)
            )
            if not result.identical and not earlier_ours:
                self._conflict(file_id, f"{key} already holds a different object ({why}); not overwritten")
                return
            if not (result.created or earlier_ours):
                self._conflict(file_id, f"{key} holds other bytes than this file: {why}")
                return
            # An object a manifest record names is never deleted: readers
            # would find it missing and quarantine the file for good. (An
            # earlier attempt wrote the record after this object verified.)
            if self._call(partial(self.remote.head, mkey), f"head {mkey}") is not None:
                self._conflict(
                    file_id,
                    f"{key} holds other bytes than this file ({why}) and {mkey} names it; not deleted",
                )
                return
            # This attempt's own object, damaged on the way to a store that
            # did not check it: removed, and the upload tried again.
            self._call(partial(self.remote.delete, key), f"delete damaged {key}")
            raise RemoteError(
                f"{key}: uploaded object does not verify ({why}); deleted, to be uploaded again"
            )
        fault_point("upload.after_verify")
        manifest = self._manifest_of(rec).to_bytes()
        made = self._call(
            lambda: self.remote.put_if_absent(mkey, manifest, size=len(manifest), crc32c=crc32c(manifest)),
            f"write {mkey}",
        )
        if not made.identical:
            self._conflict(file_id, f"{mkey} already holds a different record; not overwritten")
            return
        fault_point("manifest.after_write")
        if file_id in self._leaky:
            # Before UPLOADED (a crash here leaves it to the next start): what
            # interrupted attempts left open under either key, a data object
            # or a manifest record whose write was cut short.
            self._sweep_multipart_uploads({key, mkey})
            with self._state_lock:
                self._leaky.discard(file_id)
        rec = self.journal.transition(file_id, FileState.UPLOADED, error=None)
        # A waiting shutdown may go on now; the local delete below is cleanup
        # (recovery redoes it), not part of the verified copy.
        self._notify()
        fault_point("upload.after_journal")
        self._add_remote(file_id, self._manifest_of(rec))
        with self._state_lock:
            self._access[file_id] = time.monotonic()
        fault_point("local.before_delete")
        self._active_path(file_id).unlink(missing_ok=True)
        _LOG.info("file %s uploaded and verified: %s (%d bytes)", file_id, key, size)

    def _verify_upload(
        self, key: str, size: int, crc: int, result: PutResult
    ) -> tuple[str | None, ObjectInfo | None]:
        """Why the object at ``key`` is not this file's bytes (None when it
        verifies), and what its HEAD said; RemoteError when it is gone, or
        when reads of it disagree. A HEAD gives its size and, from a store
        that checks what it is sent (S3), the CRC-32C the store computed
        over what it holds. A store that reports no checksum of its own (moto for single
        PUTs, some S3-compatibles) only echoes the uploader's claim; then
        the ETag (the MD5 of what it stored) is compared with the MD5 of
        what was sent, and failing that the object is read back and hashed
        (a read cut short is read again; a wrong hash counts once a second
        read finds it too)."""
        info = self._call(lambda: self.remote.head(key), f"verify {key}")
        if info is None:
            # Deleted since the put found it or made it (by a verify(repair=True)
            # that took it for an orphan, say): neither this file's bytes nor
            # another's, so not a conflict. The upload is tried again.
            raise RemoteError(f"{key}: gone before it could be checked; to be uploaded again")
        if info.size != size:
            return f"{info.size} bytes, expected {size}", info
        if info.crc32c_by_store:
            if info.crc32c == crc:
                return None, info
            return f"CRC-32C {info.crc32c:#010x}, expected {crc:#010x}", info
        if result.sent_md5 is not None and info.etag is not None and info.etag.strip('"') == result.sent_md5:
            return None, info

        def read_range(start: int, end: int) -> bytes:
            # The HEAD gave the size: a read cut short is the transfer's
            # fault, raised as one for the retry policy to read again.
            data = self.remote.get_range(key, start, end)
            if len(data) != end - start:
                raise http.client.IncompleteRead(data, end - start - len(data))
            return data

        def read_back() -> int:
            found = 0
            for start in range(0, size, READ_BACK_CHUNK):
                end = min(size, start + READ_BACK_CHUNK)
                found = crc32c(self._call(partial(read_range, start, end), f"read back {key}"), found)
            return found

        found = read_back()
        if found == crc:
            return None, info
        # One read is no proof of damage (its bytes may have been damaged on
        # their way here); a second read finding the same bytes is.
        again = read_back()
        if again == crc:
            return None, info
        if again != found:
            raise RemoteError(
                f"{key}: read back twice, CRC-32C {found:#010x} then {again:#010x}, "
                f"expected {crc:#010x}; to be checked again"
            )
        return f"read back twice, its CRC-32C is {found:#010x}, expected {crc:#010x}", info

    def _sweep_multipart_uploads(self, keys: set[str]) -> None:
        """Aborts every multipart upload still open for ``keys``, whose
        objects are now in place: what failed attempts left behind (start()
        aborts such uploads only when there is upload work, and none is left
        once the retry succeeded). One that cannot be aborted is reported,
        and verify() lists it.

        Cleanup, not part of the upload: a listing that fails (for good,
        with credentials lacking s3:ListBucketMultipartUploads) is reported
        and the file goes on to UPLOADED; what it would have found stays
        for verify() or a later start's reconciliation to list and abort."""
        try:
            listed = self._call(self.remote.list_multipart_uploads, "list multipart uploads")
        except RemoteError as exc:
            self._record_error(exc)
            _LOG.warning("leftover multipart uploads of %s not swept: %s", " and ".join(sorted(keys)), exc)
            return
        self._abort_uploads([u for u in listed if u.key in keys], "a leftover")

    def _conflict(self, file_id: str, why: str) -> None:
        """A different object holds one of this file's keys: reported, kept
        local, never overwritten."""
        # Said before the state changes: a shutdown stops waiting for the
        # file once it is final, and its report must already say why.
        self._last_error = why
        self.journal.transition(file_id, FileState.CONFLICT, error=why)
        _LOG.error("file %s: %s", file_id, why)

    def _evict_cache_now_and_then(self) -> None:
        now = time.monotonic()
        if now - self._last_eviction >= self.config.reconcile_interval_s:
            self._last_eviction = now
            self._evict_cache()

    def _retain_now_and_then(self) -> None:
        if self.config.retention_s is not None and self._reconciled:
            self._apply_retention(self.config.retention_s)

    def _evict_cache(self) -> None:
        if not self._remote_confirmed:
            # Not yet known to hold this store's files (_confirm_remote):
            # it may not (a mistyped URL), and then the local copies are
            # all that answers.
            return
        with self._state_lock:
            candidates = list(self._sealed)
            # Reads stamp every file they touch; only sealed copies are ever
            # evicted, so the stamps of others would pile up for good.
            self._access = {fid: at for fid, at in self._access.items() if fid in self._sealed}
        states = self.journal.states_of(candidates)
        uploaded = {fid for fid, state in states.items() if state is FileState.UPLOADED}
        with self._state_lock:
            # Only once the remote copy answers queries: a file just recorded
            # UPLOADED, whose remote view is not added yet, would be in none.
            cached = [
                (self._access.get(fid, 0.0), fid, s.size)
                for fid, s in self._sealed.items()
                if fid in uploaded and fid in self._remote_files
            ]
        total = sum(size for _, _, size in cached)
        kept = len(cached)
        most = _cached_files_allowed()
        for _, file_id, size in sorted(cached):
            if total <= self.config.cache_bytes and kept <= most:
                break
            with self._state_lock:
                self._sealed.pop(file_id, None)
                self._access.pop(file_id, None)
            self._sealed_path(file_id).unlink(missing_ok=True)
            total -= size
            kept -= 1

    def _apply_retention(self, retention_s: float) -> None:
        horizon = _now_ms() - int(retention_s * 1000)
        with self._state_lock:
            expired = [
                (fid, r.record.key) for fid, r in self._remote_files.items() if r.record.max_ms < horizon
            ]
            # Quarantined files expire too (their range is known when their
            # manifest record could be read): never served, but still stored.
            # Each file once: two deletions of one file at once would race.
            expired += [
                (fid, data_key(fid))
                for fid, bad in self._bad_remote.items()
                if bad.max_ms is not None and bad.max_ms < horizon and fid not in self._remote_files
            ]
        # Our own expired files whose deletion was cut short (a crash, or a
        # failed object delete, after their record went): the catalog no
        # longer lists them, the journal still does. Deletes are idempotent.
        listed = {file_id for file_id, _ in expired}
        expired += [
            (r.file_id, data_key(r.file_id))
            for r in self.journal.uploaded_before(horizon)
            if r.file_id not in listed
        ]
        expired = [(fid, key) for fid, key in expired if self._kept_by_record.get(fid, -1) < horizon]
        now = time.monotonic()
        since = {file_id: self._expired_since.get(file_id, now) for file_id, _ in expired}
        self._expired_since = since  # a file no longer expired starts again
        expired = [(fid, key) for fid, key in expired if now - since[fid] >= RETENTION_CONFIRM_S]
        if not expired:
            return
        # Deleting is a writer's act: claim the prefix first (a store
        # with nothing to upload since its start has not claimed it yet);
        # a reader of another writer's prefix is refused here.
        try:
            self._ensure_claimed()
        except StoreLockedError as exc:
            if self._current is not None or self._has_files_to_upload():
                raise  # a writer refused its prefix: an error, as its uploads say too
            # A reader: the prefix's owner deletes what expired. Working as
            # meant, not a failure for status() and the metrics.
            if not self._retention_left_to_owner:
                self._retention_left_to_owner = True
                _LOG.info("retention: expired files are left to the prefix's writer (%s)", exc)
            return
        left = len(expired) > RETENTION_PER_ROUND
        self._delete_expired(expired[:RETENTION_PER_ROUND], horizon)
        if left:  # the next round at once (not after a failure: that waits, as before)
            self._remote_wake.set()

    def _delete_expired(self, expired: list[tuple[str, str]], horizon: int) -> None:
        """Deletes the files at once in the read pool, each in its order
        (three round trips a file, which one after another took hours for
        a backlog of 100k files over a 50 ms link). At most half the pool
        at a time, so queries keep the rest. After a failure no other file
        starts (as the sequential round ended there); those in flight
        finish, and the first error is raised. On stop none starts; those
        in flight end at their next call (the stop event)."""
        at_once = retention_at_once(self.config.upload_concurrency)
        todo = iter(expired)
        running: set[Future[None]] = set()
        failure: BaseException | None = None
        while True:
            while failure is None and len(running) < at_once and not self._stop.is_set():
                item = next(todo, None)
                if item is None:
                    break
                running.add(self._start_deletion(*item, horizon))
            if not running:
                break
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                exc = None if future.cancelled() else future.exception()
                if exc is None:
                    continue
                if failure is None:
                    failure = exc
                else:  # counted and reported as the first one will be
                    self._record_error(exc)
        if failure is not None:
            raise failure

    def _start_deletion(self, file_id: str, key: str, horizon: int) -> Future[None]:
        if self._reads is not None:
            with contextlib.suppress(RuntimeError):  # closed by shutdown: in line (it stops at once)
                return self._reads.submit(self._delete_if_expired, file_id, key, horizon)
        done: Future[None] = Future()
        try:
            self._delete_if_expired(file_id, key, horizon)
        except BaseException as exc:
            done.set_exception(exc)
        else:
            done.set_result(None)
        return done

    def _delete_if_expired(self, file_id: str, key: str, horizon: int) -> None:
        """One expired file: its record checked, then deleted, then its
        object, then its local state. Runs in the read pool, files at once."""
        if self._stop.is_set() or not self._expired_by_record(file_id, horizon):
            return
        # Out of queries first: none answers from a file half deleted.
        with self._state_lock:
            view = self._remote_files.pop(file_id, None)
            added = self._remote_added.pop(file_id, None)
            cached = self._sealed.pop(file_id, None)
        try:
            # Manifest record first: a crash between leaves an orphan
            # object, never a record naming a missing object.
            self._call(partial(self.remote.delete, manifest_key(file_id)), f"delete {manifest_key(file_id)}")
            fault_point("retention.after_record_delete")
            self._call(partial(self.remote.delete, key), f"delete {key}")
        except BaseException:
            # Back in place, so the next round tries again (with its
            # record gone, the catalog would never find it again).
            with self._state_lock:
                if view is not None:
                    self._remote_files[file_id] = view
                    self._remote_added[file_id] = added if added is not None else time.monotonic()
                if cached is not None:
                    self._sealed[file_id] = cached
            raise
        self._sealed_path(file_id).unlink(missing_ok=True)
        self._footers.discard(key)
        self._release_remote(file_id)
        self.journal.remove(file_id)
        self._kept_by_record.pop(file_id, None)
        _LOG.info("file %s expired and deleted", file_id)

    def _expired_by_record(self, file_id: str, horizon: int) -> bool:
        """Whether the file's manifest record (read now) says it expired.
        A deletion is for good, so a local row or view (whose max_ms one
        flipped bit on disk may have changed) is not enough. No record: a
        deletion cut short, the object may go. A record that cannot be read
        or fails its checks: not this round."""
        key = manifest_key(file_id)
        try:
            raw = self._call(partial(self.remote.get, key), f"get {key}")
        except RemoteError as exc:
            if is_not_found(exc):
                return True
            _LOG.warning(
                "retention: file %s kept this round, its manifest record is unreadable: %s", file_id, exc
            )
            return False
        try:
            record = ManifestRecord.from_bytes(raw, key)
        except ValueError as exc:
            _LOG.warning("retention: file %s kept this round: %s", file_id, exc)
            return False
        if record.max_ms < horizon:
            return True
        _LOG.error(
            "retention: file %s is not expired by its manifest record (newest entry at %d ms), "
            "though the local journal said so: kept",
            file_id,
            record.max_ms,
        )
        with self._state_lock:
            self._kept_by_record[file_id] = record.max_ms
            if file_id in self._remote_files:
                # The view, built from the same row, chose the file by that range.
                self._add_remote(file_id, record)
        return False

    # ---------------------------------------------------------------- status

    def metrics(self) -> MetricsSnapshot:
        """Counters and gauges (:mod:`tieredindex.metrics`): entries put,
        files by state, pending bytes and age, uploads, retries, failures.
        Cheap (no journal query); still answers after shutdown."""
        self._refuse_if_forked()
        return self._metrics.snapshot()

    def status(self) -> StoreStatus:
        """Files by state, what is pending, errors. After ``shutdown()``: the
        status as the shutdown left it."""
        self._refuse_if_forked()
        if self._final_status is not None:
            return self._final_status
        try:
            with self._gate():
                return self._status_now()
        except StoreClosedError:
            # Asked while shutdown() closes: its final status comes shortly.
            deadline = self._deadline if self._deadline is not None else time.monotonic()
            self._final_ready.wait(max(0.0, deadline - time.monotonic()) + 5.0)
            if self._final_status is not None:
                return self._final_status
            raise

    def _status_now(self) -> StoreStatus:
        by_state = {str(state): n for state, n in sorted(self.journal.count_by_state().items())}
        pending = self.journal.files(UNFINISHED_STATES)
        now = time.time()
        with self._state_lock:
            bad = sorted(self._bad)
            remote_files = len(self._remote_files)
        return StoreStatus(
            files_by_state=by_state,
            pending_files=[r.file_id for r in pending],
            pending_bytes=sum(r.size or 0 for r in pending),
            oldest_pending_age_s=max((r.age_s(now) for r in pending), default=None),
            last_error=self._last_error,
            reconciled=self._reconciled,
            aborted_multipart_uploads=self._aborted_mpus,
            remote_files=remote_files,
            # A damaged local file is in both (_bad keeps it out of queries).
            quarantined=sorted({*bad, *self.journal.file_ids([FileState.QUARANTINED])}),
            closed=self._closed,
        )

    def verify(self, deep: bool = True, repair: bool = False) -> VerifyReport:
        """Checks every remote object against the manifest (and, deep, its
        bytes); repairs only when asked. See :mod:`tieredindex.verifier`."""
        _check_flag("deep", deep)
        _check_flag("repair", repair)
        self._require_open(writing=False)
        with self._gate():
            try:
                report = self._verify(deep, repair)
            except Exception as exc:
                if self._stop.is_set():
                    raise self._closed_under("verify()", exc) from exc
                raise
            if self._stop.is_set() and any(p.kind == "unchecked" for p in report.problems):
                # Checks cut short by the shutdown: a partial report.
                raise self._closed_under("verify()")
            return report

    def _verify(self, deep: bool, repair: bool) -> VerifyReport:
        self._confirm_remote()  # an empty remote that is not this store's is not a healthy one
        if repair:
            # Repairs write and delete: a writer's act. A reader of another
            # writer's prefix, or of one no writer claimed yet, is refused
            # (StoreLockedError), as for retention.
            self._ensure_claimed()
        from tieredindex.verifier import verify_remote

        def local_copy(file_id: str) -> Path | None:
            rec = self.journal.get(file_id)
            path = self._sealed_path(file_id)
            if rec is None or rec.crc32c is None or not path.exists():
                return None
            return path if crc32c_of_file(path) == rec.crc32c else None

        # Not orphans: the objects of uploads under way, and of uploads that
        # will resume (sealed or uploading in the journal, perhaps put before
        # a crash long ago): their manifest record is still to come.
        resuming = {data_key(r.file_id) for r in self.journal.files([FileState.SEALED, FileState.UPLOADING])}

        class InFlight:
            """Asked when verify() is about to act on a key (a deep verify
            takes long: an upload may have begun since it started)."""

            def __contains__(_, key: object) -> bool:
                return key in resuming or key in self._keys_in_use()

        in_flight = InFlight()
        report = verify_remote(
            self.remote,
            call=self._call,
            deep=deep,
            repair=repair,
            local_copy=local_copy,
            in_flight=in_flight,
            grace_s=self.config.orphan_grace_s,
            concurrency=self.config.upload_concurrency,
        )
        self._metrics.add_verification_failures(sum(p.kind != "orphan" for p in report.problems))
        self._ensure_catalog()  # what verify() finds is quarantined against the catalog
        released, rangeless = self._quarantine_from(report, deep)
        # Reload: repaired or released files are served again, and a file the
        # catalog did not have yet gets its quarantine's time range.
        if repair or released or rangeless:
            with self._state_lock:
                for p in report.problems:
                    fid = file_id_of_key(p.key)
                    if p.fixed and fid is not None and fid not in self._bad_remote:
                        self._bad.pop(fid, None)
            self._ensure_catalog(reload=True)
        return report

    def _quarantine_from(self, report: VerifyReport, deep: bool) -> tuple[bool, bool]:
        """What verify() found damaged (and did not repair) is never served,
        as if a query had found it; what a repair replaced, or a deep verify
        found intact, is served again. A shallow verify clears nothing: a
        HEAD vouches for the recorded checksum, not for the bytes."""
        damaged: set[str] = set()
        released = rangeless = False
        for p in report.problems:
            fid = file_id_of_key(p.key)
            if fid is None or p.kind not in _DAMAGE_KINDS:
                continue
            if p.fixed:
                released |= self._release_remote(fid)
                continue
            damaged.add(fid)
            with self._state_lock:
                view = self._remote_files.get(fid)
                known = fid in self._bad_remote
            if not known:
                # With its range from the catalog; without one (the remote
                # was unreadable a moment ago) every strict query may miss it.
                _LOG.error("file %s failed verification and is quarantined: %s", fid, p.detail)
                self._quarantine_remote(fid, None if view is None else view.record, f"{p.kind}: {p.detail}")
                rangeless |= view is None
        if deep:
            unsure = {file_id_of_key(p.key) for p in report.problems if p.kind == "unchecked"}
            for fid in list(self._bad_remote):
                if fid not in damaged and fid not in unsure:
                    released |= self._release_remote(fid)
        return released, rangeless

    # -------------------------------------------------------------- shutdown

    def shutdown(self, timeout_s: float | None = None) -> ShutdownReport:
        """Stops intake, seals the last file (unless empty), uploads every
        pending file and records the outcome, all within ``timeout_s``.

        Always returns a report, and releases the directory lock: a step
        that fails (the local disk unwritable, the journal unreadable) is
        named in ``error`` and makes the report unclean; the next
        ``start()`` finishes the job."""
        self._refuse_if_forked()
        if timeout_s is not None:
            check_seconds("timeout_s", timeout_s, allow_zero=True)
        with self._shutdown_lock:
            if self._shutdown_report is not None:
                return self._shutdown_report
            if not self._started:
                raise TieredIndexError("the store is not started: call start() first")
            timeout = self.config.shutdown_timeout_s if timeout_s is None else timeout_s
            started = time.monotonic()
            deadline = started + timeout
            self._deadline = deadline
            failures: list[str] = []

            def attempt(what: str, step: Callable[[], T], default: T) -> T:
                try:
                    return step()
                except Exception as exc:
                    failures.append(f"{what}: {type(exc).__name__}: {exc}")
                    _LOG.error("shutdown: %s failed: %s: %s", what, type(exc).__name__, exc)
                    return default

            def uploaded_ids() -> set[str]:
                return set(self.journal.file_ids([FileState.UPLOADED]))

            uploaded_before: set[str] = attempt("read the journal", uploaded_ids, set())
            with self._write_lock:  # waits for puts in flight
                self._closed = True
                current = self._current
                if current is not None:
                    # Flushed first: the worker may seal and close it as soon
                    # as it is rolled.
                    attempt("flush the last file", self._unsealed[current].flush, None)
                    # Sealed by the worker; an empty one becomes EMPTY.
                    attempt("roll the last file", self._roll_locked, None)
            with self._state_lock:
                self._retry_after.clear()  # the last chance: no file waits out its backoff
                self._salvage_after.clear()
            self._wake.set()

            def can_progress() -> bool:
                # Files that uploads can still move on (not CONFLICT: final);
                # a journal read that fails counts as "yes" until the deadline.
                try:
                    return self._has_files_to_upload()
                except Exception:
                    return True

            with self._progress:
                while time.monotonic() < deadline and can_progress():
                    self._progress.wait(min(0.05, max(0.0, deadline - time.monotonic())))
            with self._calls_done:
                self._closing = True  # new queries, status() and verify() are refused
                # Those in flight finish first (to the deadline), before the
                # stop event cuts their remote calls and the close their files.
                self._calls_done.wait_for(lambda: self._calls == 0, max(0.0, deadline - time.monotonic()))
            self._stop_background(deadline)
            with self._state_lock:
                unsealed = list(self._unsealed.values())
            for f in unsealed:
                with contextlib.suppress(Exception):
                    f.close()  # msync: pending entries survive power loss too
            uploaded = sorted(attempt("read the journal", uploaded_ids, uploaded_before) - uploaded_before)
            pending: list[str] | None = attempt("read the journal", self._pending_ids, None)
            if pending is None:
                failures.append("the files still pending are unknown (the journal could not be read)")
            if pending and time.monotonic() >= deadline:
                # Uploads were still running (or stuck in a hung call):
                # say so, even when no attempt has failed yet.
                failures.append(f"deadline of {timeout:g} s reached with {len(pending)} file(s) not uploaded")
            error = "; ".join(dict.fromkeys(failures)) or None
            if pending and self._last_error:
                error = f"{error}; {self._last_error}" if error else self._last_error
            fault_point("shutdown.before_record")
            report = ShutdownReport(
                clean=pending == [] and not failures,
                uploaded=uploaded,
                pending=pending or [],
                elapsed_s=time.monotonic() - started,
                error=error,
            )
            attempt(
                "record the shutdown",
                lambda: self.journal.set_meta(
                    "last_shutdown",
                    f"clean={report.clean} pending={','.join(report.pending)} at={time.time():.3f}",
                ),
                None,
            )
            self._final_status = attempt("read the journal", self._status_now, None)
            self._final_ready.set()
            self._shutdown_report = report
            with contextlib.suppress(Exception):
                self.journal.close()
            with contextlib.suppress(Exception):
                self.remote.close()
            with self._state_lock:
                # The maps of sealed copies and the remote footers: nothing
                # reads them once shut down, and a mapped file keeps its
                # filesystem busy (an unmount failed until the process ended).
                self._sealed.clear()
                self._unsealed.clear()
                self._remote_files.clear()
            self._footers.clear()
            self._release_lock()
            self._retire_signal_handlers()
            _LOG.info("store %s shut down: %s", self.directory, report)
            return report

    def _pending_ids(self) -> list[str]:
        return self.journal.file_ids(UNFINISHED_STATES)

    def install_signal_handlers(self, exit: bool = True) -> None:
        """SIGTERM and SIGINT start a graceful shutdown; then the process
        exits 0 if it was clean, 1 if not (``exit=False``: shutdown only).
        A second signal exits at once (the journal is consistent after
        every transaction). Call from the main thread.

        The handler only wakes a thread that runs ``shutdown()``: a handler
        runs on the main thread between two bytecodes, perhaps inside
        ``put()`` or ``shutdown()`` holding a lock that ``shutdown()``
        needs, where calling it would deadlock. The exit is then raised in
        the main thread (``SystemExit``, as ``sys.exit`` there), so
        ``finally`` blocks and ``atexit`` run; a ``put()`` on the main thread
        meanwhile waits for the shutdown and exits with it, as if the signal
        had interrupted it; and an interpreter exiting meanwhile waits for
        the shutdown to end (it has its deadline)."""
        self._refuse_if_forked()
        _check_flag("exit", exit)
        if not self._started:
            raise TieredIndexError("the store is not started: call start() first")
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("install_signal_handlers() must be called from the main thread")
        exiting = _SignalExit(exit=exit)
        self._signal_exit = exiting
        installed_in = os.getpid()
        main = threading.main_thread().ident
        assert main is not None

        def handler(signum: int, frame: FrameType | None) -> None:
            # Shut down by a call, or a forked child's copy of the handler
            # (it has no shutdown thread, and the store is not its own): the
            # signal is not ours. A child that took it would not die of
            # SIGTERM (multiprocessing's terminate()).
            if exiting.retired or os.getpid() != installed_in:
                _pass_on(signum, frame, exiting.previous.get(signum, signal.SIG_DFL))
                return
            if exiting.code is not None:  # the shutdown is done: exit from the main thread
                sys.stdout.flush()
                sys.exit(exiting.code)
            if exiting.requested.is_set():
                _LOG.warning("second signal %d: exiting at once", signum)
                os._exit(1)
            exiting.signum = signum
            exiting.requested.set()

        def run_shutdown() -> None:
            exiting.requested.wait()
            if exiting.retired:
                return
            _LOG.info("signal %s: shutting down", exiting.signum)
            try:
                clean = self.shutdown().clean
            except Exception:
                _LOG.exception("shutdown after signal %s failed", exiting.signum)
                clean = False
            if exit:
                exiting.code = 0 if clean else 1
            else:
                # No exit follows: retire as after a call (off the main
                # thread, so the handlers pass signals on and the next
                # install skips them), or each such cycle kept its link,
                # and a later signal was taken for a second one (os._exit).
                exiting.retired = True
                atexit.unregister(wait_at_exit)
            exiting.done.set()
            if exit:
                with contextlib.suppress(OSError):
                    signal.pthread_kill(main, exiting.signum or signal.SIGTERM)

        def wait_at_exit() -> None:
            if exiting.requested.is_set() and os.getpid() == installed_in:
                exiting.done.wait()

        threading.Thread(target=run_shutdown, name="tix-signal", daemon=True).start()
        atexit.register(wait_at_exit)
        exiting.handler, exiting.at_exit = handler, wait_at_exit
        handler.tix_signal_exit = exiting  # type: ignore[attr-defined]  # for _past_retired
        for signum in (signal.SIGTERM, signal.SIGINT):
            exiting.previous[signum] = _past_retired(signal.signal(signum, handler), signum)

    def _retire_signal_handlers(self) -> None:
        """After a shutdown no signal started: end the waiting thread, drop
        the atexit hook, and give the signals back to the handlers they had
        (from the main thread; elsewhere ours pass them on). Each store that
        installed handlers was otherwise kept alive for good."""
        exiting = self._signal_exit
        if exiting is None or exiting.requested.is_set():
            return  # a signal's shutdown: its thread exits the process
        exiting.retired = True
        exiting.requested.set()
        exiting.done.set()
        if exiting.at_exit is not None:
            atexit.unregister(exiting.at_exit)
        if threading.current_thread() is threading.main_thread():
            for signum, previous in exiting.previous.items():
                if signal.getsignal(signum) is exiting.handler:
                    signal.signal(signum, previous)

    def _exit_if_signalled(self) -> None:
        """A write refused because a signal started the shutdown: on the main
        thread, with ``exit``, wait for the shutdown and exit with it."""
        exiting = self._signal_exit
        if (
            exiting is not None
            and exiting.exit
            and exiting.requested.is_set()
            and not exiting.retired  # shut down by a call: no exit is coming
            and threading.current_thread() is threading.main_thread()
        ):
            exiting.done.wait()
            sys.stdout.flush()
            sys.exit(exiting.code if exiting.code is not None else 1)

    def __repr__(self) -> str:
        return f"IndexStore({str(self.directory)!r}, {self.remote.url!r})"
