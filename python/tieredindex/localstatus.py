"""A store directory's state from its journal, read-only.

Opens ``journal.db`` with a read-only SQLite connection and never touches
the directory lock, so it is safe beside a live store (WAL readers do not
block the writer) and on the directory of a stopped or crashed one. Whether
a live store holds the directory is read from ``/proc/locks`` (taking the
lock to find out could make that store's ``start()`` fail).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sqlite3
import time
import urllib.parse
from pathlib import Path
from typing import Any

from tieredindex._native import CorruptFileError
from tieredindex.journal import RECORD_COLUMNS, SELECT_RECORDS, FileRecord, _is_damage
from tieredindex.layout import ACTIVE_DIR, JOURNAL_NAME, LOCK_NAME, QUARANTINE_DIR, SEALED_DIR
from tieredindex.states import UNFINISHED_STATES, FileState


class NotAStoreError(Exception):
    """The directory holds no store journal."""


@dataclasses.dataclass(frozen=True)
class JournalView:
    records: list[FileRecord]
    """Oldest file first."""
    meta: dict[str, str]
    unknown_states: dict[str, str] = dataclasses.field(default_factory=dict)
    """file id -> state, for rows in a state this version does not know
    (only with ``read_journal(skip_unknown=True)``; they are not in
    ``records``)."""
    remote_quarantine: list[str] = dataclasses.field(default_factory=list)
    """Remote files quarantined after failing a check (never served)."""

    def get(self, file_id: str) -> FileRecord | None:
        return next((r for r in self.records if r.file_id == file_id), None)


def read_journal(directory: str | os.PathLike[str], *, skip_unknown: bool = False) -> JournalView:
    """Every record and meta value of the store in ``directory``.
    :class:`NotAStoreError` when there is no journal; one that cannot be
    read raises :class:`CorruptFileError` when it is damaged, else
    ``OSError``. A row whose state is not a :class:`FileState` (a damaged
    row, or a journal of a newer version) raises :class:`CorruptFileError`
    naming the journal, the file and the state, as the store's own open of
    the journal does; with ``skip_unknown`` it is left out of ``records``
    and listed in ``unknown_states`` instead."""
    path = Path(directory) / JOURNAL_NAME
    if not Path(directory).is_dir():
        problem = "not a directory" if Path(directory).exists() else "no such directory"
        raise NotAStoreError(f"{directory}: {problem}")
    if not path.is_file():
        raise NotAStoreError(f"{directory}: not a store directory (no {JOURNAL_NAME})")
    uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True, timeout=10)
    except sqlite3.Error as exc:
        raise _unreadable(path, exc) from None
    try:
        rows = db.execute(f"{SELECT_RECORDS} ORDER BY file_id").fetchall()
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        has_quarantine = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'remote_quarantine'"
        ).fetchone()
        remote_bad = (
            [str(fid) for (fid,) in db.execute("SELECT file_id FROM remote_quarantine ORDER BY file_id")]
            if has_quarantine
            else []
        )
    except sqlite3.Error as exc:
        raise _unreadable(path, exc) from None
    finally:
        db.close()
    records = []
    unknown: dict[str, str] = {}
    for row in rows:
        values: dict[str, Any] = dict(zip(RECORD_COLUMNS, row, strict=True))
        try:
            values["state"] = FileState(values["state"])
        except ValueError:
            if skip_unknown:
                unknown[str(values["file_id"])] = str(values["state"])
                continue
            raise CorruptFileError(
                f"{path}: file {values['file_id']} is in state {values['state']!r}, which this version "
                f"does not know (known: {', '.join(FileState)}): the row is damaged or was written by "
                "a newer version; the store will not open this journal either"
            ) from None
        records.append(FileRecord(**values))
    return JournalView(records, {str(k): str(v) for k, v in meta.items()}, unknown, remote_bad)


def _unreadable(path: Path, exc: sqlite3.Error) -> Exception:
    """A journal that is there but cannot be read: damaged (CorruptFileError,
    as the store's own open says), or the system's trouble (OSError: no
    permission, an I/O error, ...). Neither is a wrong directory."""
    if _is_damage(exc):
        return CorruptFileError(f"{path}: journal is damaged: {exc}")
    return OSError(f"{path}: cannot read the journal: {exc}")


def holder_pid(directory: str | os.PathLike[str]) -> int | None:
    """The pid of the live store holding ``directory``'s lock, if any."""
    return flock_holder(Path(directory) / LOCK_NAME)


def flock_holder(path: str | os.PathLike[str]) -> int | None:
    """The pid holding an ``flock`` on ``path`` (Linux: read from
    /proc/locks; None when no one holds it or it cannot be told)."""
    try:
        st = os.stat(path)
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if "FLOCK" not in parts or "->" in parts:
            continue
        try:
            i = parts.index("FLOCK")
            pid, where = int(parts[i + 3]), parts[i + 4]
            major, minor, inode = where.split(":")
            same = int(inode) == st.st_ino and (int(major, 16), int(minor, 16)) == (
                os.major(st.st_dev),
                os.minor(st.st_dev),
            )
        except (IndexError, ValueError):
            continue
        if same:
            return pid
    return None


def _dir_bytes(path: Path) -> int:
    total = 0
    if path.is_dir():
        for child in path.iterdir():
            if child.is_file():
                total += child.stat().st_size
    return total


@dataclasses.dataclass(frozen=True)
class LocalStatus:
    directory: str
    live_pid: int | None
    """The live store holding the directory, if any."""
    files_by_state: dict[str, int]
    pending_files: list[str]
    """Files whose entries are not yet in the remote store."""
    pending_bytes: int
    """Bytes of sealed files waiting for upload (unsealed files have no
    size until they are sealed)."""
    oldest_pending_age_s: float | None
    last_error: str | None
    """The newest error: the store's own (an unreachable remote...) or one
    recorded on a file."""
    last_error_file: str | None
    """The file the last error was recorded on; None for a store error."""
    last_error_age_s: float | None
    last_shutdown: str | None
    quarantined: list[str]
    conflicts: list[str]
    local_bytes: dict[str, int]
    """Bytes on disk under active/, sealed/ and quarantine/."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _meta_error(value: str | None) -> tuple[float | None, str] | None:
    """(unix time or None when unreadable, message) of the journal's
    ``last_error`` meta value."""
    if not value:
        return None
    stamp, _, message = value.partition(" ")
    try:
        at = float(stamp)
    except ValueError:
        return None, value
    return (at, message) if math.isfinite(at) and message else (None, value)


def local_status(directory: str | os.PathLike[str]) -> LocalStatus:
    view = read_journal(directory)
    now = time.time()
    by_state: dict[str, int] = {}
    for r in view.records:
        by_state[str(r.state)] = by_state.get(str(r.state), 0) + 1
    pending = [r for r in view.records if r.state in UNFINISHED_STATES]
    # The newest of: the store's last error (journal meta, "<unix time>
    # <message>", written by the store when its error changes: an
    # unreachable remote fails no file in particular) and the newest error
    # recorded on a file.
    errors: list[tuple[float | None, str, str | None]] = [
        (r.updated_at, r.error, r.file_id) for r in view.records if r.error
    ]
    store_error = _meta_error(view.meta.get("last_error"))
    if store_error is not None:
        errors.append((*store_error, None))
    last = max(errors, key=lambda e: -math.inf if e[0] is None else e[0], default=None)
    root = Path(directory)
    return LocalStatus(
        directory=str(directory),
        live_pid=holder_pid(directory),
        files_by_state=dict(sorted(by_state.items())),
        pending_files=[r.file_id for r in pending],
        pending_bytes=sum(r.size or 0 for r in pending),
        oldest_pending_age_s=max((r.age_s(now) for r in pending), default=None),
        last_error=last[1] if last else None,
        last_error_file=last[2] if last else None,
        last_error_age_s=max(0.0, now - last[0]) if last and last[0] is not None else None,
        last_shutdown=view.meta.get("last_shutdown"),
        quarantined=sorted(
            {r.file_id for r in view.records if r.state is FileState.QUARANTINED}
            | set(view.remote_quarantine)
        ),
        conflicts=[r.file_id for r in view.records if r.state is FileState.CONFLICT],
        local_bytes={sub: _dir_bytes(root / sub) for sub in (ACTIVE_DIR, SEALED_DIR, QUARANTINE_DIR)},
    )
