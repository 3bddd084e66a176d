"""The store in a real child process: SIGTERM shutdown, SIGKILL at every
named fault point, and recovery from the remote alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tieredindex import IndexStore, open_remote
from tieredindex.faults import WRITE_PATH_POINTS
from tieredindex.layout import (
    ACTIVE_DIR,
    DATA_PREFIX,
    MANIFEST_PREFIX,
    QUARANTINE_DIR,
    data_key,
    file_id_of_key,
)

from store_helpers import FOREVER, small_config, wait_until

CHILD = str(Path(__file__).with_name("broker_child.py"))


def run_child(
    directory: Path,
    remote_url: str,
    count: int,
    *,
    faults: str = "",
    then: str = "shutdown",
    capacity: int = 40,
    part_size: int = 8 << 20,
    retention_s: float | None = None,
) -> subprocess.Popen[str]:
    env = dict(
        os.environ,
        TIEREDINDEX_FAULTS=faults,
        TIX_CAPACITY=str(capacity),
        TIX_PART_SIZE=str(part_size),
        TIX_RETENTION_S="" if retention_s is None else str(retention_s),
    )
    return subprocess.Popen(
        [sys.executable, CHILD, str(directory), remote_url, str(count), "--then", then],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def lines_until_done(child: subprocess.Popen[str]) -> list[str]:
    """The child's output lines up to and including its "done"."""
    assert child.stdout is not None
    lines = []
    for line in child.stdout:
        lines.append(line.strip())
        if lines[-1] == "done":
            break
    return lines


def acknowledged(output: str) -> list[int]:
    return [int(line) for line in output.splitlines() if line.isdigit()]


def assert_remote_has(tmp_path: Path, remote_url: str, acked: list[int]) -> None:
    """A new store on an empty directory answers every acknowledged put,
    and nothing that was never put."""
    fresh = IndexStore(tmp_path / f"fresh-{time.monotonic_ns()}", remote_url, small_config())
    fresh.start()
    found: dict[int, tuple] = {}
    for k in range(13):
        for e in fresh.query("orders", f"k{k}", 0, FOREVER, 100_000):
            assert e.offset % 13 == k and e == (e.offset % 3, e.offset, 10, 1_000 + e.offset)
            found[e.offset] = tuple(e)
    fresh.shutdown()
    missing = sorted(set(acked) - set(found))
    assert not missing, f"{len(missing)} acknowledged puts missing from the remote: {missing[:10]}"


def test_sigterm_shuts_down_cleanly_with_everything_remote(tmp_path: Path, remote_url: str) -> None:
    child = run_child(tmp_path / "d", remote_url, 150, then="wait")
    lines = lines_until_done(child)
    started = time.monotonic()
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=30)
    elapsed = time.monotonic() - started
    assert child.returncode == 0, err[-3000:]
    assert elapsed < 20, elapsed
    assert_remote_has(tmp_path, remote_url, acknowledged("\n".join(lines)))


@pytest.mark.parametrize(
    ("point", "then"),
    [
        # Inside put(), mid-roll (the write lock is reentrant: no hang, but
        # shutdown() must not run inside a half-done roll either).
        ("roll.after_journal:term:3", "wait"),
        # Inside a journal transaction of put()'s roll, holding the journal lock.
        ("journal.before_commit:term:1", "wait"),
        # Inside the program's own shutdown(), holding its lock.
        ("shutdown.before_record:term", "shutdown"),
    ],
    ids=["in-put", "in-journal", "in-shutdown"],
)
def test_sigterm_landing_where_the_main_thread_holds_a_store_lock(
    tmp_path: Path, remote_url: str, point: str, then: str
) -> None:
    """The signal handler runs on the main thread wherever it is; if it
    called shutdown() there, a lock that thread already holds would hang
    the process for ever. A fault point sends the SIGTERM at exactly such
    a place: the child still exits 0 at once with every acknowledged put
    remote."""
    child = run_child(tmp_path / "d", remote_url, 200, faults=point, then=then, capacity=8)
    try:
        out, err = child.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        child.kill()
        out, err = child.communicate()
        pytest.fail(f"the child hung after SIGTERM at {point}: {err[-2000:]}")
    assert child.returncode == 0, err[-3000:]
    acked = acknowledged(out)
    assert acked, err[-2000:]
    assert_remote_has(tmp_path, remote_url, acked)


@pytest.mark.crash
@pytest.mark.parametrize("point", sorted(WRITE_PATH_POINTS))
def test_sigkill_at_fault_point_loses_nothing(tmp_path: Path, remote_url: str, point: str) -> None:
    nth = {"put.after_write": 37, "shutdown.before_record": 1}.get(point, 2)
    count, capacity = 200, 40
    if remote_url.startswith("s3://") and point in ("upload.part", "upload.complete"):
        # Exercise the multipart path: S3 parts are 5 MiB at least, so the
        # first file must seal to more than that (32 bytes an entry).
        # The owner claim is the first small upload, so the second hit of
        # upload.part is the first data part.
        count, capacity = 190_000, 180_000
        nth = 2 if point == "upload.part" else 1
    child = run_child(
        tmp_path / "d", remote_url, count, faults=f"{point}:kill:{nth}", capacity=capacity, part_size=5 << 20
    )
    out, err = child.communicate(timeout=60)
    acked = acknowledged(out)
    assert child.returncode == -signal.SIGKILL, f"the fault did not fire: {err[-2000:]}"
    assert acked, err[-2000:]
    # Restart on the same directory, shut down cleanly: promise 4.
    store = IndexStore(tmp_path / "d", remote_url, small_config(capacity=capacity))
    store.start()
    report = store.shutdown()
    assert report.clean, report
    assert_remote_has(tmp_path, remote_url, acked)
    remote = open_remote(remote_url)
    assert remote.list_multipart_uploads() == []


@pytest.mark.crash
@pytest.mark.usefixtures("prompt_retention")
def test_sigkill_between_a_records_delete_and_its_objects_leaves_an_orphan_the_next_start_deletes(
    tmp_path: Path, remote_url: str
) -> None:
    """Retention deletes a file's manifest record, then its object. Killed
    between the two, it leaves an object no record names: never served (no
    reader finds it), and the journal still names the file, so the next
    start's retention deletes the object. Nothing is left behind."""
    child = run_child(
        tmp_path / "d",
        remote_url,
        100,  # two full files and a third, every entry long past retention (timestamps in 1970)
        faults="retention.after_record_delete:kill:1",
        then="wait",
        retention_s=60.0,
    )
    out, err = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL, f"the fault did not fire: {err[-2000:]}"
    assert len(acknowledged(out)) == 100
    remote = open_remote(remote_url)

    def file_ids(prefix: str) -> set[str | None]:
        return {file_id_of_key(o.key) for o in remote.list(prefix)}

    orphans = file_ids(DATA_PREFIX) - file_ids(MANIFEST_PREFIX)
    assert orphans, "the kill came between a record's delete and its object's"
    # A reader serves what the records name and reports the rest as orphans.
    reader = IndexStore(tmp_path / "reader", remote_url, small_config())
    reader.start()
    wait_until(lambda: reader.status().reconciled, "the reader's catalog loaded (in the background)")
    assert reader.status().remote_files == len(file_ids(MANIFEST_PREFIX))
    problems = reader.verify(deep=True).problems
    assert sorted((p.kind, p.key) for p in problems) == sorted(
        ("orphan", data_key(file_id)) for file_id in orphans if file_id is not None
    ), problems
    assert reader.status().quarantined == []
    assert reader.shutdown().clean
    store = IndexStore(tmp_path / "d", remote_url, small_config(capacity=40, retention_s=60.0))
    store.start()
    store.seal()  # the last, partly filled file too: then every file expires
    wait_until(
        lambda: not (file_ids(DATA_PREFIX) or file_ids(MANIFEST_PREFIX) or store.journal.files()),
        "retention deleted every file, the orphan's object too",
        timeout_s=30,
    )
    report = store.verify(deep=True)
    assert report.ok and report.problems == [], report
    assert store.shutdown().clean
    assert remote.list_multipart_uploads() == []


@pytest.mark.crash
@pytest.mark.parametrize("delay", [0.4, 1.2])
def test_sigkill_at_random_moment(tmp_path: Path, remote_url: str, delay: float) -> None:
    child = run_child(tmp_path / "d", remote_url, 100_000)
    assert child.stdout is not None
    first = child.stdout.readline()  # started: the kill lands among puts, seals and uploads
    assert first.strip().isdigit()
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    out, _ = child.communicate(timeout=30)
    acked = acknowledged(first + out)
    assert acked
    store = IndexStore(tmp_path / "d", remote_url, small_config(capacity=40))
    store.start()
    assert store.shutdown(timeout_s=60).clean
    assert_remote_has(tmp_path, remote_url, acked)
    assert open_remote(remote_url).list_multipart_uploads() == []


@pytest.mark.crash
def test_exit_without_shutdown_during_background_work(tmp_path: Path) -> None:
    """A program that ends without shutdown() while seals and uploads run in
    the store's daemon threads exits 0, every time, and a restart answers
    every put it made. (CPython before 3.14 ends a daemon thread that takes
    the GIL back during finalization with pthread_exit; its unwind through
    the native module's frames aborted the process: SIGABRT, "FATAL:
    exception not rethrown".) Capacity 1: each put rolls a file, so the
    exit always lands among seals and uploads."""
    for run in range(10):
        directory = tmp_path / f"d{run}"
        remote_url = f"file://{tmp_path / f'remote{run}'}"
        child = run_child(directory, remote_url, 200, then="exit", capacity=1)
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, f"run {run}: exit status {child.returncode}: {err[-2000:]}"
        acked = acknowledged(out)
        assert len(acked) == 200, err[-2000:]
        store = IndexStore(directory, remote_url, small_config(capacity=1))
        store.start()
        found = {e.offset for k in range(13) for e in store.query("orders", f"k{k}", 0, FOREVER, 100_000)}
        store.shutdown(timeout_s=0)
        assert found == set(acked), f"run {run}: lost {sorted(set(acked) - found)[:10]}"


@pytest.mark.crash
def test_sigkill_inside_file_creation_quarantines_nothing(tmp_path: Path) -> None:
    """A kill while IndexFile.create makes the second file (its space taken,
    its header not yet written) leaves nothing for recovery to take for a
    damaged file: no quarantine, no temporary file left, no put lost. (The
    file of zeros was quarantined for good, 782 MB at the default geometry.)"""
    directory, remote_url = tmp_path / "d", f"file://{tmp_path / 'remote'}"
    child = run_child(directory, remote_url, 200, faults="create.after_preallocate:kill:2", capacity=40)
    out, err = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL, f"the fault did not fire: {err[-2000:]}"
    acked = acknowledged(out)
    assert len(acked) == 40, err[-2000:]
    store = IndexStore(directory, remote_url, small_config(capacity=40))
    report = store.start()
    assert report.quarantined == []
    assert report.removed_temp_files == 1
    assert store.status().quarantined == []
    assert list((directory / QUARANTINE_DIR).iterdir()) == []
    assert [p.name for p in (directory / ACTIVE_DIR).iterdir() if p.name.startswith(".")] == []
    found = {e.offset for k in range(13) for e in store.query("orders", f"k{k}", 0, FOREVER, 100_000)}
    assert found == set(acked)
    assert store.shutdown().clean
    assert_remote_has(tmp_path, remote_url, acked)


HUNG_UPLOAD_CHILD = """
import sys, threading, time
sys.path.insert(0, sys.argv[3])
from tieredindex import IndexStore, StoreConfig, open_remote
from tieredindex.layout import DATA_PREFIX
from store_helpers import SwitchableRemote

class HungUploads(SwitchableRemote):
    def put_if_absent(self, key, source, **kwargs):
        if key.startswith(DATA_PREFIX):
            print("uploading", flush=True)
            threading.Event().wait()  # the upload never answers
        return super().put_if_absent(key, source, **kwargs)

store = IndexStore(sys.argv[1], HungUploads(open_remote(sys.argv[2])), StoreConfig(
    slots=16, capacity=1000, flush_interval_s=0.05, reconcile_interval_s=0.05, shutdown_timeout_s=300))
store.start()
store.install_signal_handlers()
for i in range(20):
    store.put("orders", f"k{i % 13}", queue_id=i % 3, offset=i, size=10, timestamp_ms=1_000 + i)
    print(i, flush=True)
print("done", flush=True)
while True:
    time.sleep(0.1)
"""


@pytest.mark.crash
def test_a_second_signal_exits_at_once_with_the_journal_consistent(tmp_path: Path) -> None:
    """SIGINT starts the graceful shutdown as SIGTERM does; while it waits
    on an upload that never answers (its deadline is minutes away), a
    second signal ends the process at once, unclean. The journal it leaves
    is consistent: a restart finishes the upload and loses no put."""
    directory, remote_url = tmp_path / "d", f"file://{tmp_path / 'remote'}"
    child = subprocess.Popen(
        [sys.executable, "-c", HUNG_UPLOAD_CHILD, str(directory), remote_url, str(Path(__file__).parent)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = lines_until_done(child)
        child.send_signal(signal.SIGINT)
        assert child.stdout.readline().strip() == "uploading"  # the shutdown's upload of the last file
        started = time.monotonic()
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert time.monotonic() - started < 5
    assert child.returncode == 1, err[-3000:]  # unclean, and not killed by the signal
    acked = acknowledged("\n".join(lines))
    assert len(acked) == 20
    store = IndexStore(directory, remote_url, small_config(capacity=1000))
    store.start()
    assert store.shutdown().clean
    assert_remote_has(tmp_path, remote_url, acked)
