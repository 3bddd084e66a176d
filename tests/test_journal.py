"""The journal's own failure reporting (SQLite, synchronous=FULL)."""

from __future__ import annotations

import errno
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tieredindex import CorruptFileError
from tieredindex.journal import _SCHEMA, Journal
from tieredindex.states import FileState

# A child, so that the file-size limit that makes SQLite's writes fail
# (EFBIG, as a full disk would) never touches the test process.
FAILING_COMMIT = textwrap.dedent(
    """
    import resource, signal, sys
    from tieredindex.journal import Journal
    from tieredindex.states import FileState
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    j = Journal(sys.argv[1])
    j.add("0000000000001-deadbeef", FileState.ACTIVE, begin_ms=1)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1, hard))
    try:
        j.transition("0000000000001-deadbeef", FileState.ROLLED)
    except Exception as exc:
        err = exc
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    print(type(err).__name__, getattr(err, "errno", None), err)
    print(j.get("0000000000001-deadbeef").state)
    """
)


def test_a_failed_commit_reports_its_own_error(tmp_path: Path) -> None:
    """SQLite has already rolled back a COMMIT that failed; the journal must
    not then raise "cannot rollback - no transaction is active" in place of
    the disk error that names the problem. It raises that error as an
    OSError naming the journal (not a bare sqlite3 error); the state is
    unchanged."""
    done = subprocess.run(
        [sys.executable, "-c", FAILING_COMMIT, str(tmp_path / "journal.db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    error, state = done.stdout.strip().splitlines()
    kind, code, message = error.split(" ", 2)
    assert kind == "OSError" and "cannot rollback" not in message, error
    assert message.startswith(f"[Errno {code}] {tmp_path / 'journal.db'}: the journal failed:"), error
    assert ("disk I/O error" in message and int(code) == errno.EIO) or (
        "full" in message and int(code) == errno.ENOSPC
    ), error
    assert state == "ACTIVE"


def test_a_full_journal_raises_enospc_naming_it(tmp_path: Path) -> None:
    """SQLite's "database or disk is full" (here: the database may not grow
    past its current pages) is an OSError with ENOSPC, naming the journal,
    and the rows written before it are intact."""
    path = tmp_path / "journal.db"
    journal = Journal(path)
    journal.add("0000000000001-00000000", FileState.ACTIVE, begin_ms=1)
    pages = journal._db.execute("PRAGMA page_count").fetchone()[0]
    journal._db.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(OSError) as raised:
        for n in range(2, 10_000):
            journal.add(f"{n:013d}-{'0' * 8}", FileState.ACTIVE, begin_ms=n)
    assert raised.value.errno == errno.ENOSPC
    assert str(path) in str(raised.value) and "full" in str(raised.value)
    assert isinstance(raised.value.__cause__, sqlite3.OperationalError)
    journal.close()
    again = Journal(path)
    assert again.get("0000000000001-00000000").state == FileState.ACTIVE
    again.close()


def _uploaded(journal: Journal, file_id: str, max_ms: int) -> None:
    journal.add(file_id, FileState.ACTIVE, begin_ms=1)
    for state in (FileState.ROLLED, FileState.SEALED):
        journal.transition(file_id, state)
    journal.transition(file_id, FileState.UPLOADING, max_ms=max_ms)
    journal.transition(file_id, FileState.UPLOADED)


def test_questions_by_state_read_only_the_rows_asked_for(tmp_path: Path) -> None:
    """The background loops ask for the files in a state every round. They
    read every row (one per file ever uploaded, when files are kept for
    ever) and filtered in Python: at 50,000 files an idle store used 28% of
    a core and shutdown() took 3.7 s. A journal made before the index came
    gets it when opened."""
    path = tmp_path / "journal.db"
    old = sqlite3.connect(path)
    old.executescript(_SCHEMA.split("CREATE INDEX")[0])
    old.close()
    journal = Journal(path)
    _uploaded(journal, "0000000000001-00000001", max_ms=100)
    _uploaded(journal, "0000000000002-00000002", max_ms=300)
    journal.add("0000000000003-00000003", FileState.ACTIVE, begin_ms=3)
    assert [r.file_id for r in journal.files([FileState.ACTIVE])] == ["0000000000003-00000003"]
    assert journal.file_ids([FileState.UPLOADED]) == ["0000000000001-00000001", "0000000000002-00000002"]
    assert [r.file_id for r in journal.uploaded_before(200)] == ["0000000000001-00000001"]
    assert journal.count_by_state() == {FileState.UPLOADED: 2, FileState.ACTIVE: 1}
    assert journal.states_of(["0000000000003-00000003", "0000000000009-00000009"]) == {
        "0000000000003-00000003": FileState.ACTIVE
    }
    plan = journal._db.execute(
        "EXPLAIN QUERY PLAN SELECT file_id FROM files WHERE state IN (?) ORDER BY file_id", ("ACTIVE",)
    ).fetchall()
    assert any("files_by_state" in str(step) for step in plan), plan


# An older journal (before the files_by_state index), opened on a disk that
# refuses every write: the index is the first write of the open. The file
# size limit makes writes fail (EFBIG, as a full disk would) once SQLite's
# shared-memory file exists, which a reader's connection makes beforehand.
OPEN_ON_A_FULL_DISK = textwrap.dedent(
    """
    import resource, signal, sqlite3, sys
    from tieredindex.journal import Journal
    from tieredindex.states import FileState
    path = sys.argv[1]
    j = Journal(path)
    j.add("0000000000001-deadbeef", FileState.ACTIVE, begin_ms=1)
    j._db.execute("DROP INDEX files_by_state")
    j.close()
    reader = sqlite3.connect(path)
    reader.execute("SELECT COUNT(*) FROM files").fetchone()
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1, hard))
    try:
        Journal(path)
    except Exception as exc:
        print(type(exc).__name__, exc)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    print([r.file_id for r in Journal(path).files()])
    """
)


def test_a_full_disk_at_open_is_not_a_damaged_journal(tmp_path: Path) -> None:
    """Creating the new index in an older journal on a full disk raised
    CorruptFileError, and the store then set the whole journal aside and
    rebuilt it from local files (forgetting every uploaded file). A write
    that fails at open is the disk's trouble: an OSError naming the
    journal, which stays as it was."""
    done = subprocess.run(
        [sys.executable, "-c", OPEN_ON_A_FULL_DISK, str(tmp_path / "journal.db")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    error, rows = done.stdout.strip().splitlines()
    assert error.startswith("OSError ") and "journal.db: the journal could not be opened" in error, error
    assert rows == "['0000000000001-deadbeef']"


SEALED_ID = "0000000000001-deadbeef"


def _sealed_journal(path: Path) -> None:
    j = Journal(path)
    j.add(SEALED_ID, FileState.ACTIVE, begin_ms=1_000)
    j.transition(SEALED_ID, FileState.ROLLED)
    j.transition(SEALED_ID, FileState.SEALED, count=7, size=4096, crc32c=0xABCD, min_ms=1_000, max_ms=2_000)
    j.note_error(SEALED_ID, "a note changes no checked field")
    j.close()


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("max_ms", 1_000 ^ 512),
        ("min_ms", 1_000 ^ 1),
        ("count", 7 ^ 4),
        ("size", 4096 ^ 1),
        ("state", "UPLOADED"),
    ],
)
def test_a_row_value_changed_behind_the_journals_back_is_damage(
    tmp_path: Path, column: str, value: object
) -> None:
    """SQLite keeps no checksum of its values: a flipped bit in a sealed
    file's max_ms passed every check, and became the manifest record that
    queries choose files by and retention deletes by. Each row carries a
    CRC-32C of what it says; one that fails it makes the journal damaged
    (set aside and rebuilt by the store, as for any other damage)."""
    path = tmp_path / "journal.db"
    _sealed_journal(path)
    assert Journal(path).get(SEALED_ID) is not None  # intact: opens
    db = sqlite3.connect(path)
    db.execute(f"UPDATE files SET {column} = ? WHERE file_id = ?", (value, SEALED_ID))
    db.commit()
    db.close()
    with pytest.raises(CorruptFileError, match=rf"journal is damaged.*{SEALED_ID}.*checksum"):
        Journal(path)


def test_a_journal_from_before_row_checksums_gets_them(tmp_path: Path) -> None:
    """A journal written before rows had checksums opens as it is (its
    values trusted, as before), and its rows are checked from then on."""
    path = tmp_path / "journal.db"
    _sealed_journal(path)
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE files DROP COLUMN fields_crc")
    db.commit()
    db.close()
    j = Journal(path)
    rec = j.get(SEALED_ID)
    assert rec is not None and rec.max_ms == 2_000 and rec.state is FileState.SEALED
    j.close()
    db = sqlite3.connect(path)
    db.execute("UPDATE files SET max_ms = 3000 WHERE file_id = ?", (SEALED_ID,))
    db.commit()
    db.close()
    with pytest.raises(CorruptFileError, match="checksum"):
        Journal(path)
