"""The journal's own failure reporting (SQLite, synchronous=FULL)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

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
    print(type(err).__name__, err)
    print(j.get("0000000000001-deadbeef").state)
    """
)


def test_a_failed_commit_reports_its_own_error(tmp_path: Path) -> None:
    """SQLite has already rolled back a COMMIT that failed; the journal must
    not then raise "cannot rollback - no transaction is active" in place of
    the disk error that names the problem. The state is unchanged."""
    done = subprocess.run(
        [sys.executable, "-c", FAILING_COMMIT, str(tmp_path / "journal.db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    error, state = done.stdout.strip().splitlines()
    assert error.startswith("OperationalError") and "cannot rollback" not in error, error
    assert "disk I/O error" in error or "full" in error, error
    assert state == "ACTIVE"
