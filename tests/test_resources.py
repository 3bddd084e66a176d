"""The store when the process runs out of a resource (file descriptors, ...),
and after the resource is back. Limits are lowered in a child process, so
pytest itself is never short of them."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tieredindex import FileState, IndexStore, open_remote
from tieredindex.journal import Journal
from tieredindex.layout import JOURNAL_NAME, SEALED_DIR

from store_helpers import FOREVER, SwitchableRemote, crash_in_process, small_config, wait_until

TESTS = str(Path(__file__).parent)


def run_limited(script: str, *, nofile: int, timeout_s: float = 120) -> list[dict[str, Any]]:
    """Runs ``script`` in a child whose soft RLIMIT_NOFILE is ``nofile``
    (``raise_limit()`` there puts it back); returns the JSON lines it
    printed with ``report(...)``."""
    preamble = textwrap.dedent(
        f"""
        import json, resource, sys
        sys.path.insert(0, {TESTS!r})
        SOFT, HARD = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, ({nofile}, HARD))

        def raise_limit():
            resource.setrlimit(resource.RLIMIT_NOFILE, (SOFT, HARD))

        def report(**fields):
            print(json.dumps(fields), flush=True)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", preamble + textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def pending_files(tmp_path: Path, remote_url: str, files: int) -> None:
    """A crashed store in ``tmp_path / "d"`` with ``files`` sealed files of
    ten entries each (put i: key ``k<i % 10>``, offset i), none uploaded
    (the remote was down)."""
    remote = SwitchableRemote(open_remote(remote_url))
    remote.down.set()
    store = IndexStore(tmp_path / "d", remote, small_config(capacity=10))
    store.start()
    for i in range(files * 10):
        store.put("t", f"k{i % 10}", queue_id=0, offset=i, size=1, timestamp_ms=1_000 + i)
    store.seal()
    wait_until(lambda: store.journal.count_by_state().get(FileState.SEALED, 0) == files, "all sealed")
    crash_in_process(store)


def assert_remote_answers(tmp_path: Path, remote_url: str, puts: int) -> None:
    """A new store on an empty directory answers every put ``pending_files``
    made, and nothing else."""
    fresh = IndexStore(tmp_path / "fresh", remote_url, small_config())
    fresh.start()
    found = {k: [e.offset for e in fresh.query("t", f"k{k}", 0, FOREVER, puts)] for k in range(10)}
    fresh.shutdown()
    assert found == {k: list(range(puts - 10 + k, -1, -10)) for k in range(10)}


def test_start_out_of_descriptors_fails_and_changes_nothing(tmp_path: Path, remote_url: str) -> None:
    """start() opens every local file that waits for upload, a descriptor
    each. Out of descriptors (EMFILE), it took an intact sealed copy that
    would not open for a damaged one: deleted it, put the file back to
    ROLLED noted "sealed copy missing or damaged", and tried to salvage it.
    Now start() fails with the EMFILE, naming the file, and leaves every
    file as it was; with descriptors enough it starts, with nothing
    quarantined or salvaged, and uploads everything."""
    files = 80
    pending_files(tmp_path, remote_url, files)
    script = f"""
        from tieredindex import IndexStore
        from store_helpers import small_config

        store = IndexStore({str(tmp_path / "d")!r}, {remote_url!r}, small_config(capacity=10))
        try:
            store.start()
        except OSError as exc:
            report(errno=exc.errno, error=str(exc))
        else:
            report(errno=None, error="started")
            store.shutdown()
    """
    [failed] = run_limited(script, nofile=48)
    assert failed["errno"] == errno.EMFILE and "Too many open files" in failed["error"], failed
    assert str(tmp_path / "d") in failed["error"], failed
    assert len(list((tmp_path / "d" / SEALED_DIR).iterdir())) == files
    journal = Journal(tmp_path / "d" / JOURNAL_NAME)
    try:
        records = journal.files()
    finally:
        journal.close()
    assert [r.state for r in records] == [FileState.SEALED] * files
    assert not [r.error for r in records if "sealed copy" in (r.error or "")]

    store = IndexStore(tmp_path / "d", remote_url, small_config(capacity=10))
    recovery = store.start()
    assert recovery.quarantined == [] and recovery.salvaged == {}, recovery
    assert store.shutdown().clean
    assert_remote_answers(tmp_path, remote_url, files * 10)


def test_the_read_cache_leaves_descriptors_for_new_files(tmp_path: Path, remote_url: str) -> None:
    """Every sealed copy the read cache keeps holds a descriptor (its map
    is checked against the file before each read), and the cache was
    bounded by cache_bytes alone: with room for every small file, the
    uploaded copies took all 64 descriptors after 55 files; from then on
    every upload, and every put that needed a new file, failed with
    EMFILE. Now the cache keeps at most a quarter of the open-file limit
    (the process peaks at 28 descriptors here), and puts go on."""
    files = 150
    script = f"""
        import os, time
        from tieredindex import IndexStore
        from store_helpers import small_config

        store = IndexStore(
            {str(tmp_path / "d")!r}, {remote_url!r}, small_config(capacity=10, cache_bytes=1 << 40)
        )
        store.start()
        most = 0
        try:
            for i in range({files} * 10):
                store.put("t", f"k{{i % 10}}", queue_id=0, offset=i, size=1, timestamp_ms=1_000 + i)
                if i % 10 == 9:  # a file full: sealed and uploaded before the next
                    store.seal()
                    deadline = time.monotonic() + 20
                    while (status := store.status()).pending_files:
                        if time.monotonic() > deadline:
                            raise OSError(f"not uploaded in 20 s: {{status.last_error}}")
                        time.sleep(0.01)
                    most = max(most, len(os.listdir("/proc/self/fd")))
        except OSError as exc:
            report(put=i, error=str(exc))
        else:
            report(put=None, error=None)
        report(most_descriptors=most, clean=store.shutdown().clean)
    """
    failed, shut = run_limited(script, nofile=64)
    assert failed == {"put": None, "error": None}, failed
    assert shut["clean"] and shut["most_descriptors"] < 64, shut
    assert_remote_answers(tmp_path, remote_url, files * 10)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB file system (tmpfs), so that a full disk is one."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (root needed): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def fill_up(disk: Path) -> Path:
    """Takes every free byte of ``disk``; returns the file to delete to free them."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as out, pytest.raises(OSError) as full:
        while True:
            out.write(b"\0" * 4096)
    assert full.value.errno == errno.ENOSPC
    return filler


def test_start_on_a_full_disk_says_the_disk_is_full(small_disk: Path, remote_url: str) -> None:
    """On a full disk SQLite cannot size the journal's WAL index and calls
    it "disk I/O error" (SQLITE_IOERR_SHMSIZE): start() failed with EIO,
    sending an operator to look for a failing drive. Now the journal's
    error says the disk is full (ENOSPC); once space is back, start()
    recovers everything."""
    directory = small_disk / "d"
    remote = SwitchableRemote(open_remote(remote_url))
    remote.down.set()
    store = IndexStore(directory, remote, small_config(capacity=10))
    store.start()
    for i in range(200):
        store.put("t", f"k{i % 10}", queue_id=0, offset=i, size=1, timestamp_ms=1_000 + i)
    store.seal()
    wait_until(lambda: store.journal.count_by_state().get(FileState.SEALED, 0) == 20, "all sealed")
    crash_in_process(store)
    filler = fill_up(small_disk)

    store = IndexStore(directory, remote_url, small_config(capacity=10))
    with pytest.raises(OSError) as failed:
        store.start()
    assert failed.value.errno == errno.ENOSPC, failed.value
    assert "journal" in str(failed.value) and "no space left" in str(failed.value), failed.value

    os.unlink(filler)
    recovery = store.start()
    assert recovery.quarantined == [] and recovery.salvaged == {}, recovery
    assert store.shutdown().clean
    assert_remote_answers(small_disk.parent, remote_url, 200)


def test_uploads_go_on_once_threads_can_be_started_again(tmp_path: Path, remote_url: str) -> None:
    """Out of threads ("can't start new thread": here no address space
    left for a thread's stack), the upload pool counted each thread it
    failed to start as one of its own and kept the upload queued for it:
    after eight, no upload ever ran again, the files stayed "in flight"
    for the rest of the process, and shutdown() ran out its deadline with
    them pending, though threads could be started again. Now a failed
    start queues nothing and takes no place in the pool: the upload is
    tried again, and once threads can be started everything goes up."""
    script = f"""
        import resource, threading, time
        from tieredindex import IndexStore
        from store_helpers import small_config

        store = IndexStore({str(tmp_path / "d")!r}, {remote_url!r}, small_config(capacity=10))
        store.start()
        # Every new thread's stack (256 MiB) is past what the address space allows.
        threading.stack_size(256 << 20)
        size = int(next(line for line in open("/proc/self/status") if line.startswith("VmSize")).split()[1])
        AS_SOFT, AS_HARD = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (size * 1024 + (128 << 20), AS_HARD))
        try:
            threading.Thread(target=print).start()
        except RuntimeError as exc:
            report(thread=str(exc))
        for i in range(200):
            store.put("t", f"k{{i % 10}}", queue_id=0, offset=i, size=1, timestamp_ms=1_000 + i)
        store.seal()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and "start new thread" not in str(store.status().last_error):
            time.sleep(0.01)
        time.sleep(1)  # the worker tries again every 0.05 s: many more than eight tries
        report(pending=len(store.status().pending_files), last_error=store.status().last_error)
        resource.setrlimit(resource.RLIMIT_AS, (AS_SOFT, AS_HARD))
        threading.stack_size(0)
        shut = store.shutdown(timeout_s=20)
        report(clean=shut.clean, pending=shut.pending)
    """
    no_thread, short, shut = run_limited(script, nofile=1024)
    assert no_thread == {"thread": "can't start new thread"}
    assert short["pending"] == 20 and "can't start new thread" in short["last_error"], short
    assert shut == {"clean": True, "pending": []}, shut
    assert_remote_answers(tmp_path, remote_url, 200)


def test_a_start_that_cannot_start_its_threads_can_be_called_again(tmp_path: Path, remote_url: str) -> None:
    """start() recovered, marked the store started, then started its three
    threads: out of threads, it raised with the store half started, the
    directory lock held and the recovered files open. A second start()
    was refused ("already called"), and so was any other store on the
    directory (StoreLockedError) for the rest of the process. Now a start
    that cannot start its threads undoes itself: called again once threads
    can be started, it uploads everything."""
    files = 3
    pending_files(tmp_path, remote_url, files)
    script = f"""
        import resource, threading
        from tieredindex import IndexStore
        from store_helpers import small_config

        store = IndexStore({str(tmp_path / "d")!r}, {remote_url!r}, small_config(capacity=10))
        # Every new thread's stack (256 MiB) is past what the address space allows.
        threading.stack_size(256 << 20)
        size = int(next(line for line in open("/proc/self/status") if line.startswith("VmSize")).split()[1])
        AS_SOFT, AS_HARD = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (size * 1024 + (128 << 20), AS_HARD))
        try:
            store.start()
        except RuntimeError as exc:
            report(first=str(exc))
        else:
            report(first="started")
        resource.setrlimit(resource.RLIMIT_AS, (AS_SOFT, AS_HARD))
        threading.stack_size(0)
        try:
            store.start()
        except Exception as exc:
            report(again=f"{{type(exc).__name__}}: {{exc}}")
        else:
            shut = store.shutdown(timeout_s=20)
            report(again="started", clean=shut.clean, pending=shut.pending)
    """
    first, again = run_limited(script, nofile=1024)
    assert first == {"first": "can't start new thread"}, first
    assert again == {"again": "started", "clean": True, "pending": []}, again
    assert_remote_answers(tmp_path, remote_url, files * 10)


def test_a_start_whose_second_thread_fails_stops_the_first(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same, when the first thread did start: it is stopped, and a
    store started on the directory afterwards is the only one at work."""
    import threading

    start = threading.Thread.start

    def failing_start(thread: threading.Thread) -> None:
        if thread.name == "tieredindex-worker":
            raise RuntimeError("can't start new thread")
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", failing_start)
    store = IndexStore(tmp_path / "d", remote_url, small_config(capacity=10))
    with pytest.raises(RuntimeError, match="can't start new thread"):
        store.start()
    assert not [t.name for t in threading.enumerate() if t.name.startswith("tieredindex-flusher")]
    monkeypatch.setattr(threading.Thread, "start", start)
    other = IndexStore(tmp_path / "d", remote_url, small_config(capacity=10))
    other.start()
    other.put("t", "k", queue_id=0, offset=1, size=1, timestamp_ms=1_000)
    assert [e.offset for e in other.query("t", "k", 0, FOREVER)] == [1]
    assert other.shutdown().clean
