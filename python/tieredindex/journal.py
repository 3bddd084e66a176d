"""The crash-safe journal: one row per index file, in SQLite.

Why SQLite with ``synchronous=FULL`` rather than an atomically replaced
file: a store tracks many files whose rows change independently, and each
change must be durable before the side effect it announces (intent before
upload, outcome after verification). SQLite gives that as one small fsynced
transaction per change, with the state check inside the same transaction,
where a rewritten JSON file would rewrite every row on every change.

WAL mode keeps readers (status, queries) from blocking the writer; with
``synchronous=FULL`` every commit is on stable storage when it returns.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tieredindex._native import CorruptFileError, crc32c
from tieredindex.faults import fault_point
from tieredindex.states import FileState, check_transition

SCHEMA_VERSION = 1

# The first piece of a WAL index (the journal's -shm file) SQLite sizes.
WAL_INDEX_BYTES = 32 * 1024
# SQLite's primary result codes for the local disk failing, as errno values.
_DISK_ERRNO = {
    8: errno.EROFS,  # SQLITE_READONLY
    10: errno.EIO,  # SQLITE_IOERR (and its extended codes)
    13: errno.ENOSPC,  # SQLITE_FULL
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
    file_id     TEXT PRIMARY KEY,  -- creation time (ms, 13 digits) '-' random hex: sorts by age
    state       TEXT NOT NULL,
    begin_ms    INTEGER NOT NULL,  -- the file's begin time (its creation time)
    min_ms      INTEGER,           -- smallest timestamp in it; NULL until sealed
    max_ms      INTEGER,           -- largest timestamp in it; NULL until sealed
    count       INTEGER,           -- entries; NULL until sealed
    size        INTEGER,           -- sealed object bytes; NULL until sealed
    crc32c      INTEGER,           -- CRC32C of the sealed object; NULL until sealed
    object_key  TEXT,              -- remote key; set with the upload intent
    attempt_id  TEXT,              -- fresh for every upload attempt
    error       TEXT,              -- last error, for status()
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    fields_crc  INTEGER            -- CRC-32C of the row's CHECKED_COLUMNS (_row_crc); see below
);
-- Remote files (ours or another writer's) that failed a check when read or
-- verified: never served, reported by status(), until a deep verify finds
-- the object intact again (or a repair replaces it, or retention deletes
-- it). Kept here so that a restart does not serve them again. A table added
-- after schema 1 shipped: IF NOT EXISTS creates it in older journals.
CREATE TABLE IF NOT EXISTS remote_quarantine (
    file_id  TEXT PRIMARY KEY,
    reason   TEXT NOT NULL,
    min_ms   INTEGER,             -- the file's time range, when its manifest record
    max_ms   INTEGER,             -- could be read (NULL: overlaps every query)
    at       REAL NOT NULL
);
-- The background loops ask for the few files in a pending state every
-- round; a broker that keeps its files for ever holds one UPLOADED row a
-- file, so those questions must not read every row. Added after schema 1
-- shipped, as the table above.
CREATE INDEX IF NOT EXISTS files_by_state ON files (state, file_id);
"""


@dataclasses.dataclass(frozen=True)
class RemoteQuarantine:
    file_id: str
    reason: str
    min_ms: int | None
    max_ms: int | None

    def overlaps(self, begin_ms: int, end_ms: int) -> bool:
        if self.min_ms is None or self.max_ms is None:
            return True
        return self.min_ms <= end_ms and self.max_ms >= begin_ms


@dataclasses.dataclass(frozen=True)
class FileRecord:
    file_id: str
    state: FileState
    begin_ms: int
    min_ms: int | None
    max_ms: int | None
    count: int | None
    size: int | None
    crc32c: int | None
    object_key: str | None
    attempt_id: str | None
    error: str | None
    created_at: float
    updated_at: float

    def age_s(self, now: float) -> float:
        """Seconds since the record was made (``now`` from ``time.time()``);
        never negative, though the wall clock may have stepped back since."""
        return max(0.0, now - self.created_at)


RECORD_COLUMNS = [f.name for f in dataclasses.fields(FileRecord)]
# Whole records (see _record), here and in localstatus.py's read-only view.
SELECT_RECORDS = f"SELECT {', '.join(RECORD_COLUMNS)} FROM files"
_MUTABLE = frozenset(RECORD_COLUMNS) - {"file_id", "state", "created_at", "updated_at"}
# SQLite keeps no checksum of the values it stores: a flipped bit in a sealed
# file's max_ms passes every check of the database, and would become the
# file's manifest record (the range readers choose files by, and retention
# deletes by). So each row carries a CRC-32C of what it says, checked at
# open: a row that fails it makes the journal damaged (the store sets it
# aside and rebuilds it from its files and the remote). Not the error note
# and the times, which say nothing a file's fate depends on. Rows written
# before the column existed get it at their first open, trusted as before.
CHECKED_COLUMNS = (
    "file_id",
    "state",
    "begin_ms",
    "min_ms",
    "max_ms",
    "count",
    "size",
    "crc32c",
    "object_key",
    "attempt_id",
)
# The columns this version reads and writes, by table (checked at open).
_COLUMNS = {
    "meta": frozenset({"key", "value"}),
    "files": frozenset(RECORD_COLUMNS),
    "remote_quarantine": frozenset({"file_id", "reason", "min_ms", "max_ms", "at"}),
}


def _space_left(path: Path) -> int:
    """Bytes free to this process on the file system holding ``path``."""
    try:
        fs = os.statvfs(path.parent)
    except OSError:
        return sys.maxsize  # unknown: not known to be full
    return fs.f_bavail * fs.f_frsize


def _disk_errno(exc: Exception) -> int | None:
    """The errno of an SQLite error that is the local disk failing, else None."""
    return _DISK_ERRNO.get(getattr(exc, "sqlite_errorcode", 0) & 0xFF)


def _is_damage(exc: Exception) -> bool:
    """Whether an error opening the journal means the journal is damaged: a
    failed integrity_check, a column missing from the schema, text that is
    not UTF-8 or a state no version wrote (raised without an SQLite code,
    the decoding error by Python's sqlite3 itself), or SQLite's own word that
    the file is no sound database (CORRUPT, NOTADB, an "unsupported file
    format" in its header). Anything else (FULL,
    IOERR, CANTOPEN, READONLY, ...) is the disk's or the system's trouble,
    not the journal's."""
    code = getattr(exc, "sqlite_errorname", None)
    if code == "SQLITE_ERROR" and "unsupported file format" in str(exc):
        # A header whose format numbers are garbage (no SQLite writes them).
        return True
    return code is None or code == "SQLITE_NOTADB" or code.startswith("SQLITE_CORRUPT")


def _row_crc(values: Iterable[Any]) -> int:
    """The CRC-32C of CHECKED_COLUMNS' values, in that order, each int as
    SQLite gives it back, whatever integer type it was written from."""
    return _plain_row_crc(tuple(v if v is None or type(v) in (int, str) else int(v) for v in values))


def _plain_row_crc(values: tuple[int | str | None, ...]) -> int:
    """As _row_crc, for values as SQLite gives them (no conversion: start-up
    checks every row): the CRC-32C of their tuple's repr (None, an int and a
    str never read alike)."""
    return crc32c(repr(values).encode())


def _in_states(states: Iterable[FileState]) -> tuple[str, tuple[str, ...]]:
    """``state IN (?, ...)`` and its arguments (the index files_by_state answers it)."""
    wanted = tuple(sorted({str(FileState(s)) for s in states}))
    return f"state IN ({', '.join('?' * len(wanted))})", wanted


def _record(row: tuple[Any, ...]) -> FileRecord:
    values = dict(zip(RECORD_COLUMNS, row, strict=True))
    values["state"] = FileState(values["state"])
    return FileRecord(**values)


class Journal:
    """Thread-safe; every method is one durable transaction."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            # A damaged journal must be found now, not half way through a
            # transition; integrity_check reads every page (small: one row a
            # file) and, unlike quick_check, compares every index with its
            # table: an index entry a flipped bit changed is well formed, and
            # only an UPDATE of its row found it ("disk image is malformed").
            verdict = self._db.execute("PRAGMA integrity_check").fetchone()
            if verdict is None or verdict[0] != "ok":
                raise sqlite3.DatabaseError(f"integrity_check: {verdict}")
            self._db.executescript(_SCHEMA)
            if "fields_crc" not in {row[1] for row in self._db.execute("PRAGMA table_info(files)")}:
                self._db.execute("ALTER TABLE files ADD COLUMN fields_crc INTEGER")  # an older journal
            # A flipped bit in the schema's text that still parses renames a
            # column: sound pages, and "no such column" at the first use.
            for table, wanted in _COLUMNS.items():
                have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
                if not wanted <= have:
                    raise sqlite3.DatabaseError(f"schema: table {table} lacks {sorted(wanted - have)}")
                if table != "files":  # read in _check_rows
                    # Every value read once: a flipped bit can leave text that is
                    # not UTF-8 in a sound database, which only a read finds.
                    self._db.execute(f"SELECT * FROM {table}").fetchall()
            self._check_rows()
        except (sqlite3.DatabaseError, ValueError) as exc:
            self._db.close()
            if not _is_damage(exc):
                # A full disk or an I/O error (the schema's new index is a
                # write on an older journal) is no reason to set the journal
                # aside and rebuild it: the caller fails, the journal stays.
                raise self._disk_failure(exc, "could not be opened") from exc
            raise CorruptFileError(f"{self.path}: journal is damaged: {exc}") from exc
        version = self.get_meta("schema_version")
        if version is None:
            self.set_meta("schema_version", str(SCHEMA_VERSION))
        elif int(version) != SCHEMA_VERSION:
            raise RuntimeError(f"{self.path}: journal schema {version}, this version reads {SCHEMA_VERSION}")

    def _check_rows(self) -> None:
        """Every row of ``files`` read once (its text must decode), its state
        one this version knows, its values against its CRC-32C; rows from
        before the column get one. One pass: its cost is start-up's."""
        unchecked = []
        n = len(CHECKED_COLUMNS)
        others = [c for c in RECORD_COLUMNS if c not in CHECKED_COLUMNS]
        states = {str(state) for state in FileState}
        for row in self._db.execute(
            f"SELECT {', '.join(CHECKED_COLUMNS)}, fields_crc, {', '.join(others)} FROM files"
        ):
            checked, stored = row[:n], row[n]
            if checked[1] not in states:
                FileState(checked[1])  # raises, naming it
            if stored is None:
                unchecked.append((_row_crc(checked), checked[0]))
            elif stored != _plain_row_crc(checked):
                raise sqlite3.DatabaseError(f"the row of file {checked[0]} fails its checksum")
        if unchecked:
            self._db.executemany("UPDATE files SET fields_crc = ? WHERE file_id = ?", unchecked)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The journal's lock, held for one statement or transaction. The
        local disk failing under it (full, I/O error, gone read-only)
        raises ``OSError`` naming the journal and the cause, as a failing
        index file does, instead of a bare ``sqlite3.OperationalError``."""
        with self._lock:
            try:
                yield
            except sqlite3.OperationalError as exc:
                if _disk_errno(exc) is None:
                    raise
                raise self._disk_failure(exc, "failed") from exc

    def _disk_failure(self, exc: Exception, what: str) -> OSError:
        """``exc``, an SQLite error that is not the journal's own damage, as
        an OSError naming the journal (with the errno of a failing disk)."""
        message = f"{self.path}: the journal {what}: {exc}"
        code = _disk_errno(exc)
        if code == errno.EIO and _space_left(self.path) < WAL_INDEX_BYTES:
            # SQLite calls a WAL index it cannot size on a full disk a "disk
            # I/O error" (SQLITE_IOERR_SHMSIZE): name the real trouble.
            code, message = errno.ENOSPC, f"{message} (no space left on the disk holding it)"
        return OSError(message) if code is None else OSError(code, message)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def get_meta(self, key: str) -> str | None:
        with self._locked():
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._locked():
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def add(self, file_id: str, state: FileState, *, begin_ms: int, error: str | None = None) -> FileRecord:
        """A new file: ACTIVE (written by puts) or ROLLED (salvaged or adopted)."""
        if state not in (FileState.ACTIVE, FileState.ROLLED):
            raise ValueError(f"a file starts ACTIVE or ROLLED, not {state}")
        now = time.time()
        checked = {c: None for c in CHECKED_COLUMNS} | {
            "file_id": file_id,
            "state": str(state),
            "begin_ms": begin_ms,
        }
        with self._locked():
            self._db.execute(
                "INSERT INTO files (file_id, state, begin_ms, error, created_at, updated_at, fields_crc) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (file_id, str(state), begin_ms, error, now, now, _row_crc(checked.values())),
            )
            return self._get_locked(file_id)

    def transition(self, file_id: str, new: FileState, **fields: Any) -> FileRecord:
        """Moves ``file_id`` to ``new`` (checked against the state table) and
        sets ``fields``, atomically and durably."""
        unknown = set(fields) - _MUTABLE
        if unknown:
            raise ValueError(f"journal fields {sorted(unknown)} cannot be set")
        with self._locked():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                old = self._get_locked(file_id)
                check_transition(file_id, old.state, new)
                after = dataclasses.asdict(old) | fields | {"state": str(new)}
                row_crc = _row_crc(after[c] for c in CHECKED_COLUMNS)
                sets = "".join(f", {k} = ?" for k in fields)
                sql = f"UPDATE files SET state = ?, updated_at = ?, fields_crc = ?{sets} WHERE file_id = ?"
                self._db.execute(sql, (str(new), time.time(), row_crc, *fields.values(), file_id))
                fault_point("journal.before_commit")
                self._db.execute("COMMIT")
            except BaseException:
                # A failed COMMIT (disk full, I/O error) may already have
                # rolled back: a bare ROLLBACK would then raise "no
                # transaction is active" and hide the real error.
                if self._db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                raise
            fault_point("journal.after_commit")
            return self._get_locked(file_id)

    def note_error(self, file_id: str, error: str | None) -> None:
        """Records the last error of a file (no state change)."""
        with self._locked():
            self._db.execute(
                "UPDATE files SET error = ?, updated_at = ? WHERE file_id = ?", (error, time.time(), file_id)
            )

    def remove(self, file_id: str) -> None:
        """Forgets a file (after retention deleted it remotely)."""
        with self._locked():
            self._db.execute("DELETE FROM files WHERE file_id = ?", (file_id,))

    def quarantine_remote(self, entry: RemoteQuarantine) -> None:
        with self._locked():
            self._db.execute(
                "INSERT OR REPLACE INTO remote_quarantine (file_id, reason, min_ms, max_ms, at) "
                "VALUES (?, ?, ?, ?, ?)",
                (entry.file_id, entry.reason, entry.min_ms, entry.max_ms, time.time()),
            )

    def release_remote(self, file_id: str) -> None:
        with self._locked():
            self._db.execute("DELETE FROM remote_quarantine WHERE file_id = ?", (file_id,))

    def remote_quarantine(self) -> list[RemoteQuarantine]:
        with self._locked():
            rows = self._db.execute(
                "SELECT file_id, reason, min_ms, max_ms FROM remote_quarantine ORDER BY file_id"
            ).fetchall()
        return [RemoteQuarantine(*row) for row in rows]

    def get(self, file_id: str) -> FileRecord | None:
        with self._locked():
            row = self._db.execute(f"{SELECT_RECORDS} WHERE file_id = ?", (file_id,)).fetchone()
        return None if row is None else _record(row)

    def _get_locked(self, file_id: str) -> FileRecord:
        row = self._db.execute(f"{SELECT_RECORDS} WHERE file_id = ?", (file_id,)).fetchone()
        if row is None:
            raise KeyError(f"no journal record for file {file_id}")
        return _record(row)

    def files(self, states: Iterable[FileState] | None = None) -> list[FileRecord]:
        """Records, oldest file first, optionally only in ``states``."""
        args: tuple[str, ...] = ()
        if states is None:
            sql = f"{SELECT_RECORDS} ORDER BY file_id"
        else:
            clause, args = _in_states(states)
            sql = f"{SELECT_RECORDS} WHERE {clause} ORDER BY file_id"
        with self._locked():
            rows = self._db.execute(sql, args).fetchall()
        return [_record(r) for r in rows]

    def file_ids(self, states: Iterable[FileState]) -> list[str]:
        """The ids of the files in ``states``, oldest first (no records built)."""
        clause, args = _in_states(states)
        with self._locked():
            rows = self._db.execute(
                f"SELECT file_id FROM files WHERE {clause} ORDER BY file_id", args
            ).fetchall()
        return [file_id for (file_id,) in rows]

    def uploaded_before(self, horizon_ms: int) -> list[FileRecord]:
        """UPLOADED records whose newest entry is older than ``horizon_ms``
        (what retention deletes), oldest file first."""
        with self._locked():
            rows = self._db.execute(
                f"{SELECT_RECORDS} WHERE state = ? AND max_ms < ? ORDER BY file_id",
                (str(FileState.UPLOADED), horizon_ms),
            ).fetchall()
        return [_record(r) for r in rows]

    def count_by_state(self) -> dict[FileState, int]:
        with self._locked():
            rows = self._db.execute("SELECT state, COUNT(*) FROM files GROUP BY state").fetchall()
        return {FileState(state): n for state, n in rows}

    def states_of(self, file_ids: Iterable[str]) -> dict[str, FileState]:
        """The state of each of ``file_ids`` that has a record."""
        out: dict[str, FileState] = {}
        ids = list(file_ids)
        with self._locked():
            for start in range(0, len(ids), 500):  # SQLite caps the ? marks of one statement
                chunk = ids[start : start + 500]
                rows = self._db.execute(
                    f"SELECT file_id, state FROM files WHERE file_id IN ({', '.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
                out.update((file_id, FileState(state)) for file_id, state in rows)
        return out
