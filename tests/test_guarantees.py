"""Guarantees that a mutation of the code once survived: each test here
failed on a copy of the store with that one guarantee broken (an empty
file uploaded, a salvage skipped, a remote file chosen by its start time,
a HEAD trusted by a deep verify, another file's bytes served, a flush that
did nothing, a record written before verification, retention deleting in
the wrong order, an illegal state transition, a journal not synchronous,
an object renamed into place with no directory fsync, a swapped sealed
copy trusted at start), and passes on the code as it is."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tieredindex import FileState, IndexStore, crc32c, open_remote
from tieredindex.journal import Journal
from tieredindex.layout import DATA_PREFIX, MANIFEST_PREFIX
from tieredindex.states import IllegalTransitionError

from store_helpers import FOREVER, SwitchableRemote, small_config, wait_until

TESTS = Path(__file__).resolve().parent


def offsets(store: IndexStore, key: str = "k", begin: int = 0, end: int = FOREVER) -> list[int]:
    return sorted(e.offset for e in store.query("t", key, begin, end, 10_000))


def test_an_empty_file_is_never_uploaded(tmp_path: Path, remote_url: str) -> None:
    """A current file made and left empty (as one whose first put failed
    after the file was made): the shutdown must not upload it (RocketMQ
    uploads an empty 40 MB file at every restart)."""
    store = IndexStore(tmp_path / "d", remote_url, small_config())
    store.start()
    with store._write_lock:
        store._writer_locked()  # as a first put makes it
    assert len(list((tmp_path / "d" / "active").glob("*.tix"))) == 1  # made, and empty
    report = store.shutdown(timeout_s=20)
    assert report.clean and report.uploaded == [], report
    assert open_remote(remote_url).list(DATA_PREFIX) == []


@pytest.mark.parametrize("damaged", ["entry", "header"])
def test_start_salvages_a_damaged_unsealed_file(tmp_path: Path, remote_url: str, damaged: str) -> None:
    """A writer flushed 30 entries and was killed; one entry then rots (or
    one bit of the static header, which gives the file's geometry: every
    entry was lost). The next start salvages the intact ones (quarantining
    the original), and uploads them."""
    child = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(TESTS)!r})
        from tieredindex import IndexStore
        from store_helpers import small_config
        store = IndexStore({str(tmp_path / "d")!r}, {remote_url!r}, small_config(capacity=1000))
        store.start()
        for i in range(30):
            store.put("t", f"k{{i % 3}}", queue_id=0, offset=i, size=1, timestamp_ms=1_000 + i)
        store.flush()
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", child], env=os.environ.copy(), timeout=60)
    assert done.returncode == -signal.SIGKILL
    (active,) = (tmp_path / "d" / "active").glob("*.tix")
    raw = bytearray(active.read_bytes())
    if damaged == "entry":
        raw[128 + 10 * 40 + 9] ^= 1  # entry 10 (64-byte header, 16 slots of 4 bytes, 40-byte entries)
    else:
        raw[16] ^= 0x04  # the capacity, in the static header (bytes 0..28, checked by the CRC at 28)
    active.write_bytes(bytes(raw))
    store = IndexStore(tmp_path / "d", remote_url, small_config(capacity=1000))
    report = store.start()
    assert report.quarantined == [active.stem]
    lost = [10] if damaged == "entry" else []
    assert list(report.salvaged.values()) == [30 - len(lost)]
    assert store.shutdown(timeout_s=20).clean
    fresh = IndexStore(tmp_path / "fresh", remote_url, small_config())
    fresh.start()
    found = sorted(o for k in ("k0", "k1", "k2") for o in offsets(fresh, k))
    assert found == [i for i in range(30) if i not in lost]
    fresh.shutdown()


def test_a_remote_file_is_chosen_by_its_time_range(tmp_path: Path, remote_url: str) -> None:
    """A query from 150 to 250 must find the entry at 200 of a remote file
    made (and so begun) long after its entries' times (RocketMQ chose files
    by start time and missed results, its #10268)."""
    with IndexStore(tmp_path / "d", remote_url, small_config()) as store:
        for t in (100, 200, 300):
            store.put("t", "k", queue_id=0, offset=t, size=1, timestamp_ms=t)
    fresh = IndexStore(tmp_path / "fresh", remote_url, small_config())
    fresh.start()
    assert offsets(fresh, begin=150, end=250) == [200]
    assert offsets(fresh, begin=300, end=300) == [300]
    fresh.shutdown()


def test_a_deep_verify_reads_the_bytes(tmp_path: Path) -> None:
    """Bit rot in place (same size, same mtime) is invisible to a HEAD: only
    a deep verify, which re-hashes the bytes, finds it."""
    url = (tmp_path / "remote").as_uri()
    with IndexStore(tmp_path / "d", url, small_config()) as store:
        for i in range(30):
            store.put("t", f"k{i % 3}", queue_id=0, offset=i, size=1, timestamp_ms=1_000 + i)
    (obj,) = open_remote(url).list(DATA_PREFIX)
    path = tmp_path / "remote" / obj.key
    before = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 1]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    fresh = IndexStore(tmp_path / "fresh", url, small_config())
    fresh.start()
    assert [p.kind for p in fresh.verify(deep=True).problems] == ["checksum-mismatch"]
    fresh.shutdown()


def test_an_object_holding_another_files_bytes_is_never_served(tmp_path: Path, remote_url: str) -> None:
    """File A's key replaced by file B's bytes (valid on their own, the same
    size): the footer does not match A's manifest record, so A is
    quarantined and nothing of B's is served twice or as A's."""
    store = IndexStore(tmp_path / "d", remote_url, small_config())
    store.start()
    store.put("t", "k", queue_id=0, offset=1, size=1, timestamp_ms=100)
    store.seal()
    store.put("t", "k", queue_id=7, offset=999, size=1, timestamp_ms=100)
    assert store.shutdown(timeout_s=20).clean
    remote = open_remote(remote_url)
    a, b = sorted(o.key for o in remote.list(DATA_PREFIX))
    other = remote.get(b)
    remote.delete(a)
    remote.put_if_absent(a, other, size=len(other), crc32c=crc32c(other))
    fresh = IndexStore(tmp_path / "fresh", remote_url, small_config())
    fresh.start()
    assert [(e.queue_id, e.offset) for e in fresh.query("t", "k", 0, FOREVER)] == [(7, 999)]
    assert len(fresh.status().quarantined) == 1
    from tieredindex import CorruptFileError

    with pytest.raises(CorruptFileError):
        fresh.query("t", "k", 0, FOREVER, strict=True)
    fresh.shutdown()


def _dirty_kib(path: Path) -> int:
    """Dirty KiB of this process's mappings of ``path`` (/proc/self/smaps)."""
    dirty, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if fields and "-" in fields[0] and len(fields) >= 5:  # a mapping's first line
                inside = fields[-1] == str(path)
            elif inside and fields[0] in ("Shared_Dirty:", "Private_Dirty:"):
                dirty += int(fields[1])
    return dirty


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs /proc/self/smaps (Linux)")
def test_flush_leaves_no_dirty_page(tmp_path: Path, remote_url: str) -> None:
    """flush() is msync: afterwards no page of the current file's mapping is
    dirty (a flush that did nothing passed every other test: the crash
    tests kill processes, and the kernel writes a dead process's pages)."""
    store = IndexStore(tmp_path / "d", remote_url, small_config(capacity=10_000, flush_interval_s=3600.0))
    store.start()
    for i in range(5_000):
        store.put("t", f"k{i % 97}", queue_id=0, offset=i, size=1, timestamp_ms=1_000 + i)
    (active,) = (tmp_path / "d" / "active").glob("*.tix")
    assert _dirty_kib(active) > 0
    store.flush()
    assert _dirty_kib(active) == 0
    store.shutdown(timeout_s=20)


class Recording(SwitchableRemote):
    """Records (operation, key) of every call that reaches the remote."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.log: list[tuple[str, str]] = []

    def put_if_absent(self, key: str, source: Any, **kwargs: Any) -> Any:
        self.log.append(("put", key))
        return super().put_if_absent(key, source, **kwargs)

    def head(self, key: str) -> Any:
        self.log.append(("head", key))
        return super().head(key)

    def get(self, key: str) -> bytes:
        self.log.append(("get", key))
        return super().get(key)

    def get_range(self, key: str, start: int, end: int) -> bytes:
        self.log.append(("get", key))
        return super().get_range(key, start, end)

    def delete(self, key: str) -> None:
        self.log.append(("delete", key))
        super().delete(key)


def test_the_manifest_record_is_written_after_the_object_is_verified(tmp_path: Path, remote_url: str) -> None:
    remote = Recording(open_remote(remote_url))
    store = IndexStore(tmp_path / "d", remote, small_config())
    store.start()
    store.put("t", "k", queue_id=0, offset=1, size=1, timestamp_ms=1_000)
    assert store.shutdown(timeout_s=20).clean
    (data,) = [k for op, k in remote.log if op == "put" and k.startswith(DATA_PREFIX)]
    (record,) = [k for op, k in remote.log if op == "put" and k.startswith(MANIFEST_PREFIX)]
    put_at = remote.log.index(("put", data))
    checks = [i for i, (op, k) in enumerate(remote.log) if k == data and op in ("head", "get") and i > put_at]
    assert checks and checks[0] < remote.log.index(("put", record)), remote.log


@pytest.mark.usefixtures("prompt_retention")
def test_retention_deletes_the_record_before_the_object(tmp_path: Path, remote_url: str) -> None:
    """A crash between the two deletes leaves an orphan object (found and
    removed by verify), never a record naming a missing object."""
    remote = Recording(open_remote(remote_url))
    now = int(time.time() * 1000)
    store = IndexStore(tmp_path / "d", remote, small_config(retention_s=3600.0))
    store.start()
    store.put("t", "old", queue_id=0, offset=1, size=1, timestamp_ms=now - 7_200_000)
    store.seal()
    wait_until(lambda: any(op == "delete" and k.startswith(DATA_PREFIX) for op, k in remote.log), "retention")
    store.shutdown(timeout_s=20)
    deletes = [k for op, k in remote.log if op == "delete"]
    assert [k.split("/")[0] + "/" for k in deletes] == [MANIFEST_PREFIX, DATA_PREFIX], deletes


def test_the_journal_refuses_an_illegal_transition(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    journal.add("0000000000001-0000000a", FileState.ROLLED, begin_ms=1)
    journal.transition("0000000000001-0000000a", FileState.EMPTY)
    with pytest.raises(IllegalTransitionError):
        journal.transition("0000000000001-0000000a", FileState.SEALED, count=1, size=1, crc32c=0)
    assert journal.get("0000000000001-0000000a").state is FileState.EMPTY  # type: ignore[union-attr]
    journal.close()


def test_the_journal_commits_with_a_full_sync(tmp_path: Path) -> None:
    """synchronous=FULL: a committed transition survives power loss (the
    crash tests kill processes; only a real power cut would tell)."""
    journal = Journal(tmp_path / "journal.db")
    assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    journal.close()


def spy_directory_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the directories fsynced from now on (in this test)."""
    synced_dirs: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            synced_dirs.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return synced_dirs


def test_a_file_remote_fsyncs_the_directory_it_renames_into(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An object made visible by a link or rename is durable only once its
    directory is fsynced (a crash tests cannot show, as power loss would)."""
    remote = open_remote((tmp_path / "remote").as_uri())
    synced_dirs = spy_directory_fsyncs(monkeypatch)
    body = b"sealed bytes"
    remote.put_if_absent("index/0000000000001-0000000a.tix", body, size=len(body), crc32c=crc32c(body))
    assert str(tmp_path / "remote" / "index") in synced_dirs
    remote.close()


def test_a_sealed_copy_swapped_before_its_upload_is_sealed_again(tmp_path: Path, remote_url: str) -> None:
    """A store stopped with a file sealed but not uploaded (remote down)
    finds at start a sealed copy that is another valid sealed file: it
    does not match the journal's size and CRC, so it is sealed again from
    the original, and only the original's entries are uploaded."""
    other = IndexStore(tmp_path / "other", (tmp_path / "elsewhere").as_uri(), small_config())
    other.start()
    other.put("t", "k", queue_id=9, offset=999, size=1, timestamp_ms=1_000)
    other.seal()
    wait_until(lambda: not other.status().pending_files, "the other file uploaded")
    (foreign,) = (tmp_path / "other" / "sealed").glob("*.sealed")
    foreign_bytes = foreign.read_bytes()
    other.shutdown()

    remote = SwitchableRemote(open_remote(remote_url))
    remote.down.set()
    store = IndexStore(tmp_path / "d", remote, small_config())
    store.start()
    store.put("t", "k", queue_id=0, offset=1, size=1, timestamp_ms=1_000)
    report = store.shutdown(timeout_s=1)
    assert not report.clean
    (copy,) = (tmp_path / "d" / "sealed").glob("*.sealed")
    copy.write_bytes(foreign_bytes)  # another valid sealed file
    again = IndexStore(tmp_path / "d", remote_url, small_config())
    again.start()
    assert [(e.queue_id, e.offset) for e in again.query("t", "k", 0, FOREVER)] == [(0, 1)]
    assert again.shutdown(timeout_s=20).clean
    fresh = IndexStore(tmp_path / "fresh", remote_url, small_config())
    fresh.start()
    assert [(e.queue_id, e.offset) for e in fresh.query("t", "k", 0, FOREVER)] == [(0, 1)]
    fresh.shutdown()


def test_the_store_id_is_durable_before_it_is_used(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new store writes its identity (the owner record names it) and
    fsyncs the directory that holds its name, or power loss could give the
    same store another identity, locked out of its own prefix."""
    synced_dirs = spy_directory_fsyncs(monkeypatch)
    store = IndexStore(tmp_path / "d", remote_url, small_config())
    store.start()
    assert (tmp_path / "d" / "STORE_ID").read_text().strip()
    assert str(tmp_path / "d") in synced_dirs
    store.shutdown()
