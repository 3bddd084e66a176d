"""IndexStore.query's rules where files meet: max_count after
de-duplication, the order of equal timestamps across files, quarantine of
remote files (strict queries, restarts, verify), files that expire under a
reader, and queries while the remote is down. Each test failed before its
fix (found in review), except the last: a stress check of read-your-writes
while files roll, seal, upload and leave the disk, which found nothing to
fix and stays as a guard. Both back ends unless the case is local."""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tieredindex import CorruptFileError, Entry, FileState, IndexStore, RemoteError, crc32c, open_remote
from tieredindex.layout import DATA_PREFIX, MANIFEST_PREFIX, data_key, manifest_key
from tieredindex.remote import Remote

from store_helpers import FOREVER, SwitchableRemote, small_config, wait_until


def offsets(entries: list[Any]) -> list[int]:
    return [e.offset for e in entries]


def fail_for_manifest_keys(monkeypatch: pytest.MonkeyPatch, remote: Remote, method: str) -> Any:
    """Makes ``remote.<method>`` raise a connection error for manifest keys
    (the remote failing for a moment); returns the real method."""
    real = getattr(remote, method)

    def failing(key: str) -> Any:
        if key.startswith(MANIFEST_PREFIX):
            raise ConnectionError("connection reset (test)")
        return real(key)

    monkeypatch.setattr(remote, method, failing)
    return real


def corrupt_object(remote: Remote, key: str, at: int) -> None:
    """Replaces the object at ``key`` with one whose byte ``at`` is flipped."""
    bad = bytearray(remote.get(key))
    bad[at] ^= 0x40
    remote.delete(key)
    remote.put_if_absent(key, bytes(bad), size=len(bad), crc32c=crc32c(bytes(bad)))


# ---------------------------------------------------------------- max_count


@pytest.mark.parametrize("where", ["local", "remote"])
def test_max_count_counts_distinct_messages(tmp_path: Path, remote_url: str, where: str) -> None:
    """Copies of one message in one file (a key listed twice, a message put
    again) must not use up max_count: the answer is the newest max_count
    distinct (queue_id, offset), whichever file holds them."""
    store = IndexStore(tmp_path / "d", remote_url, small_config(capacity=1000))
    store.start()
    store.put("t", "k", queue_id=0, offset=1, size=1, timestamp_ms=100)
    store.put("t", "k", queue_id=0, offset=2, size=1, timestamp_ms=200)
    store.put("t", ["k", "k"], queue_id=0, offset=3, size=1, timestamp_ms=300)
    for _ in range(3):  # a broker re-putting after a crash
        store.put("t", "k", queue_id=0, offset=3, size=1, timestamp_ms=300)
    if where == "remote":
        assert store.shutdown().clean
        store = IndexStore(tmp_path / "fresh", remote_url, small_config())
        store.start()
    assert offsets(store.query("t", "k", 0, FOREVER, max_count=2)) == [3, 2]
    assert offsets(store.query("t", "k", 0, FOREVER, max_count=3)) == [3, 2, 1]
    assert offsets(store.query("t", "k", 0, FOREVER, max_count=1)) == [3]
    store.shutdown()


def test_max_count_across_files_with_copies_in_the_newest(tmp_path: Path, remote_url: str) -> None:
    """The newest file's share is all copies of one message; an older file's
    entries fill the rest, and an entry of the newest file past its first
    share (older, but newer than the older file's) comes before them."""
    store = IndexStore(tmp_path / "d", remote_url, small_config(capacity=1000))
    store.start()
    store.put("t", "k", queue_id=0, offset=1, size=1, timestamp_ms=100)
    store.seal()
    store.put("t", "k", queue_id=0, offset=2, size=1, timestamp_ms=200)
    for _ in range(4):
        store.put("t", "k", queue_id=0, offset=3, size=1, timestamp_ms=300)
    assert offsets(store.query("t", "k", 0, FOREVER, max_count=2)) == [3, 2]
    assert offsets(store.query("t", "k", 0, FOREVER, max_count=3)) == [3, 2, 1]
    store.shutdown()


# ------------------------------------------------------------- file order


def test_equal_timestamps_across_files_later_put_first(tmp_path: Path, remote_url: str) -> None:
    """Files are taken newest first by id. Ids made in one millisecond (a
    roll inside a put) or after the wall clock stepped back must still sort
    in creation order, or equal timestamps come out oldest first."""
    import tieredindex.store as store_module

    clock = [1_800_000_000_000]
    real = store_module._now_ms
    store_module._now_ms = lambda: clock[0]
    try:
        store = IndexStore(tmp_path / "d", remote_url, small_config(capacity=1))
        store.start()
        for offset in range(6):
            store.put("t", "k", queue_id=0, offset=offset, size=1, timestamp_ms=5)
            if offset == 2:
                clock[0] -= 60_000  # NTP steps the clock back a minute
        assert offsets(store.query("t", "k", 0, FOREVER)) == [5, 4, 3, 2, 1, 0]
        assert store.shutdown().clean
    finally:
        store_module._now_ms = real
    fresh = IndexStore(tmp_path / "fresh", remote_url, small_config())
    fresh.start()
    assert offsets(fresh.query("t", "k", 0, FOREVER)) == [5, 4, 3, 2, 1, 0]
    fresh.shutdown()


# -------------------------------------------------------------- quarantine


def _one_uploaded_file(tmp_path: Path, remote_url: str, n: int = 300) -> tuple[str, str]:
    """A remote holding one file of n entries (keys k0..k{n-1}); returns its
    data key and the id. The writer keeps no local copy."""
    store = IndexStore(tmp_path / "writer", remote_url, small_config(capacity=n, slots=64, cache_bytes=0))
    store.start()
    for i in range(n):
        store.put("t", f"k{i}", queue_id=0, offset=i, size=1, timestamp_ms=1_000 + i)
    assert store.shutdown().clean
    (obj,) = open_remote(remote_url).list(DATA_PREFIX)
    return obj.key, obj.key[len(DATA_PREFIX) : -len(".tix")]


def test_quarantined_remote_file_stays_quarantined(tmp_path: Path, remote_url: str) -> None:
    """One bad block quarantines the file: later strict queries keep raising
    (they would answer without it), non-strict ones never serve any of its
    entries (not even from its intact blocks), status reports it once, and
    all of that survives a restart."""
    key, file_id = _one_uploaded_file(tmp_path, remote_url)
    remote = open_remote(remote_url)
    corrupt_object(remote, key, 100)  # the first block: the slot table

    store = IndexStore(tmp_path / "reader", remote_url, small_config())
    store.start()
    with pytest.raises(CorruptFileError, match=file_id):
        store.query("t", "k1", 0, FOREVER, strict=True)
    for _ in range(2):
        with pytest.raises(CorruptFileError, match=f"{file_id} is quarantined"):
            store.query("t", "k299", 0, FOREVER, strict=True)
    assert store.query("t", "k299", 0, FOREVER) == []
    assert store.status().quarantined == [file_id]
    # Outside its time range a strict query has nothing to miss.
    assert store.query("t", "k299", 5_000, 6_000, strict=True) == []
    store.shutdown()

    again = IndexStore(tmp_path / "reader", remote_url, small_config())
    again.start()
    assert again.status().quarantined == [file_id]
    assert again.query("t", "k299", 0, FOREVER) == []
    with pytest.raises(CorruptFileError, match=f"{file_id} is quarantined"):
        again.query("t", "k299", 0, FOREVER, strict=True)
    again.shutdown()


def test_verify_quarantines_what_it_finds_and_releases_what_is_mended(
    tmp_path: Path, remote_url: str
) -> None:
    """verify() finding a damaged object quarantines it at once (before any
    query tripped over it); a deep verify that finds it intact again (the
    writer repaired it) serves it again."""
    key, file_id = _one_uploaded_file(tmp_path, remote_url)
    remote = open_remote(remote_url)
    good = remote.get(key)
    corrupt_object(remote, key, len(good) // 3)

    store = IndexStore(tmp_path / "reader", remote_url, small_config())
    store.start()
    report = store.verify(deep=True)
    assert [p.kind for p in report.problems] == ["checksum-mismatch"]
    assert store.status().quarantined == [file_id]
    assert store.query("t", "k299", 0, FOREVER) == []
    with pytest.raises(CorruptFileError, match="quarantined"):
        store.query("t", "k299", 0, FOREVER, strict=True)

    remote.delete(key)
    remote.put_if_absent(key, good, size=len(good), crc32c=crc32c(good))
    store.verify(deep=False)  # a HEAD vouches for a checksum, not for the bytes
    assert store.status().quarantined == [file_id]
    assert store.verify(deep=True).ok
    assert store.status().quarantined == []
    assert offsets(store.query("t", "k299", 0, FOREVER, strict=True)) == [299]
    store.shutdown()
    again = IndexStore(tmp_path / "reader", remote_url, small_config())
    again.start()
    assert again.status().quarantined == []
    assert offsets(again.query("t", "k299", 0, FOREVER, strict=True)) == [299]
    again.shutdown()


def test_damaged_manifest_record_fails_strict_queries(tmp_path: Path, remote_url: str) -> None:
    """A manifest record that cannot be read hides a file whose time range
    is unknown: every strict query may be missing its entries."""
    _, file_id = _one_uploaded_file(tmp_path, remote_url, n=20)
    remote = open_remote(remote_url)
    mkey = manifest_key(file_id)
    remote.delete(mkey)
    remote.put_if_absent(mkey, b"{not json", size=9, crc32c=crc32c(b"{not json"))
    store = IndexStore(tmp_path / "reader", remote_url, small_config())
    store.start()
    assert store.query("t", "k3", 0, FOREVER) == []
    with pytest.raises(CorruptFileError, match=file_id):
        store.query("t", "k3", 0, 10, strict=True)
    assert store.status().quarantined == [file_id]
    store.shutdown()


def store_with_entry_10_damaged(tmp_path: Path, remote_url: str) -> tuple[IndexStore, Path]:
    """A started store whose current file holds 20 entries of key "k"
    (offsets 0-19), entry 10's timestamp changed in place (through the file:
    the store's map sees it); and that file's path."""
    store = IndexStore(tmp_path / "d", remote_url, small_config(capacity=100))
    store.start()
    for i in range(20):
        store.put("t", "k", queue_id=0, offset=i, size=1, timestamp_ms=1_000 + i)
    (path,) = (tmp_path / "d" / "active").glob("*.tix")
    at = path.read_bytes().index((1_010).to_bytes(8, "little"))  # entry 10's timestamp
    with open(path, "r+b") as f:
        f.seek(at)
        f.write((5).to_bytes(8, "little"))
    return store, path


def test_damaged_local_file_salvaged_and_answered_in_the_same_query(tmp_path: Path, remote_url: str) -> None:
    """A query that finds an entry of the current file damaged quarantines the
    file and salvages the intact entries into a new one: this very query
    answers from the salvaged file (it answered nothing before), and
    status() lists the damaged file once (it listed it twice)."""
    store, path = store_with_entry_10_damaged(tmp_path, remote_url)
    want = [i for i in reversed(range(20)) if i != 10]
    assert offsets(store.query("t", "k", 0, FOREVER)) == want
    assert store.status().quarantined == [path.stem]
    assert store.shutdown().clean
    fresh = IndexStore(tmp_path / "fresh", remote_url, small_config())
    fresh.start()
    assert offsets(fresh.query("t", "k", 0, FOREVER)) == want
    fresh.shutdown()


def test_a_query_during_another_threads_salvage_waits_for_it(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A salvage withdraws the damaged file from queries before it makes the
    new one. Another query in that window answered without the file's
    entries, strict ones too (it asked again only for a salvage already
    done). It now waits for the salvage and asks again."""
    import threading

    import tieredindex.store as store_module

    store, _ = store_with_entry_10_damaged(tmp_path, remote_url)
    salvaging, go = threading.Event(), threading.Event()
    real_salvage = store_module.salvage

    def held_salvage(src: Any, dest: Any) -> Any:
        salvaging.set()
        assert go.wait(20)
        return real_salvage(src, dest)

    monkeypatch.setattr(store_module, "salvage", held_salvage)
    finder = threading.Thread(target=store.query, args=("t", "k", 0, FOREVER))  # finds the damage
    finder.start()
    assert salvaging.wait(20)
    real_answer = store._answer

    def answer_then_let_the_salvage_go(*args: Any, **kwargs: Any) -> list[Any]:
        try:
            return real_answer(*args, **kwargs)
        finally:
            go.set()  # this round answered while the salvage was held

    monkeypatch.setattr(store, "_answer", answer_then_let_the_salvage_go)
    want = [i for i in reversed(range(20)) if i != 10]
    assert offsets(store.query("t", "k", 0, FOREVER, strict=True)) == want
    finder.join(20)
    assert offsets(store.query("t", "k", 0, FOREVER)) == want
    assert store.shutdown(timeout_s=20).clean


def test_a_damaged_sealed_copy_is_answered_from_its_original_in_the_same_query(
    tmp_path: Path, remote_url: str
) -> None:
    """A query that finds a not-yet-uploaded file's sealed copy damaged
    seals it again from the original, and answers from it in the same query
    (it answered without the file's entries, as if it were lost)."""
    remote = SwitchableRemote(open_remote(remote_url))
    remote.down.set()  # nothing is uploaded: the sealed copy is the file's only view
    store = IndexStore(tmp_path / "d", remote, small_config(capacity=20))
    store.start()
    for i in range(30):
        store.put("t", "k", queue_id=0, offset=i, size=1, timestamp_ms=1_000 + i)
    sealed_dir = tmp_path / "d" / "sealed"
    wait_until(lambda: any(sealed_dir.glob("*.sealed")), "the first file sealed")
    (path,) = sealed_dir.glob("*.sealed")
    raw = path.read_bytes()
    at = raw.index((1_005).to_bytes(8, "little"))  # entry 5's timestamp
    with open(path, "r+b") as f:
        f.seek(at)
        f.write((7).to_bytes(8, "little"))
    want = list(reversed(range(30)))
    assert offsets(store.query("t", "k", 0, FOREVER)) == want
    remote.down.clear()
    assert store.shutdown(timeout_s=20).clean


def test_local_sealed_copy_is_checked_on_every_read(tmp_path: Path) -> None:
    """A sealed file's blocks are checked each time a query reads them, not
    only the first time: the file can change under its map (rot read back
    after eviction, another process writing it)."""
    from tieredindex import IndexFile, SealedIndex

    with IndexFile.create(tmp_path / "a.tix", slots=64, capacity=100, begin_ms=0) as f:
        for i in range(50):
            f.put(f"k{i}", 7, 1_000_003 * i + 77, 1, 1_000 + i)  # offsets with distinct bytes
        f.seal(tmp_path / "a.sealed")
    sealed = SealedIndex.open(tmp_path / "a.sealed")
    third = 1_000_003 * 3 + 77
    assert offsets(sealed.query("k3", 0, FOREVER, 8)) == [third]
    raw = (tmp_path / "a.sealed").read_bytes()
    at = raw.index(third.to_bytes(8, "little"))
    with open(tmp_path / "a.sealed", "r+b") as out:  # rewrite entry 3's offset in place
        out.seek(at)
        out.write((999_999).to_bytes(8, "little"))
    with pytest.raises(CorruptFileError):
        sealed.query("k3", 0, FOREVER, 8)
    # A buffer cannot change under it: its blocks are checked once.
    held = SealedIndex.open(raw)
    assert offsets(held.query("k3", 0, FOREVER, 8)) == [third]


# ------------------------------------------------------------ expiry, outage


def test_reader_forgets_files_the_writer_expired(tmp_path: Path, remote_url: str) -> None:
    """A reader of another writer's prefix learns files from the manifest;
    when the writer's retention deletes one (record first, then object), the
    reader neither fails queries for ever nor keeps it listed."""
    _, file_id = _one_uploaded_file(tmp_path, remote_url, n=20)
    reader = IndexStore(tmp_path / "reader", remote_url, small_config())
    reader.start()
    assert offsets(reader.query("t", "k3", 0, FOREVER)) == [3]
    remote = open_remote(remote_url)
    remote.delete(manifest_key(file_id))  # what retention does, in its order
    remote.delete(data_key(file_id))
    for strict in (False, True):  # expired meanwhile: not an error, and nothing left to answer
        assert reader.query("t", "k3", 0, FOREVER, strict=strict) == []
    assert reader.status().remote_files == 0
    assert reader.status().quarantined == []
    reader.shutdown()


def test_missing_object_with_a_record_is_quarantined(tmp_path: Path, remote_url: str) -> None:
    key, file_id = _one_uploaded_file(tmp_path, remote_url, n=20)
    reader = IndexStore(tmp_path / "reader", remote_url, small_config())
    reader.start()
    assert offsets(reader.query("t", "k3", 0, FOREVER)) == [3]
    open_remote(remote_url).delete(key)
    with pytest.raises(CorruptFileError, match="missing"):
        reader.query("t", "k3", 0, FOREVER, strict=True)
    assert reader.status().quarantined == [file_id]
    reader.shutdown()


def test_queries_during_an_outage_do_not_each_wait_for_the_remote(tmp_path: Path, remote_url: str) -> None:
    """A store started while the remote is down: local files answer, and
    after one failed listing the next queries do not try the remote again
    (each would wait out the retry policy); a strict query says why."""
    remote = SwitchableRemote(open_remote(remote_url))
    remote.down.set()
    store = IndexStore(tmp_path / "d", remote, small_config(reconcile_interval_s=3600.0))
    store.start()
    store.put("t", "k", queue_id=0, offset=1, size=1, timestamp_ms=5)
    assert offsets(store.query("t", "k", 0, FOREVER)) == [1]
    # The remote upkeep thread's own first listing (retried) may still be
    # under way: wait until it has given up too.
    calls = -1
    while calls != remote.calls:
        calls = remote.calls
        time.sleep(0.5)
    for _ in range(5):
        assert offsets(store.query("t", "k", 0, FOREVER)) == [1]
    assert remote.calls == calls
    with pytest.raises(RemoteError, match="manifest"):
        store.query("t", "k", 0, FOREVER, strict=True)
    remote.down.clear()
    store.shutdown(timeout_s=10)


def test_queries_still_read_remote_files_while_the_store_shuts_down(tmp_path: Path, remote_url: str) -> None:
    """From the shutdown's deadline until it returns, background work is
    stopped (the stop event cuts remote calls short); a query in that window
    must still read remote files, not pass "unread" off as "not found"."""
    _, _file_id = _one_uploaded_file(tmp_path, remote_url, n=20)
    store = IndexStore(tmp_path / "reader", remote_url, small_config())
    store.start()
    assert offsets(store.query("t", "k3", 0, FOREVER)) == [3]  # the catalog is loaded
    store._stop.set()  # the window: stop set, report not yet made
    fresh_view = store.query("t", "k4", 0, FOREVER, strict=True)  # k4's blocks not read yet
    assert offsets(fresh_view) == [4]
    store._stop.clear()
    store.shutdown()


def test_remote_footers_are_kept_within_a_budget(tmp_path: Path, remote_url: str) -> None:
    """Each remote file's footer is read once and kept, but all of them
    together stay within the footer cache's budget (before, every footer a
    store ever read stayed for its whole life); an evicted one is read
    again, verified as the first time."""
    store = IndexStore(tmp_path / "d", remote_url, small_config(capacity=10, cache_bytes=0))
    store.start()
    for i in range(60):  # six files
        store.put("t", "k", queue_id=0, offset=i, size=1, timestamp_ms=1_000 + i)
    assert store.shutdown().clean
    reader = IndexStore(tmp_path / "reader", remote_url, small_config())
    reader.start()
    footers = reader._footers
    assert offsets(reader.query("t", "k", 0, FOREVER, 100)) == list(reversed(range(60)))
    assert len(footers) == 6
    one = footers.nbytes // 6
    footers.resize(2 * one)  # room for two
    assert len(footers) == 2
    for _ in range(2):
        assert offsets(reader.query("t", "k", 0, FOREVER, 100)) == list(reversed(range(60)))
        assert len(footers) <= 2 and footers.nbytes <= 2 * one
    reader.shutdown()


def test_verify_that_cannot_read_a_record_quarantines_nothing(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A manifest record verify() could not read (the remote failing for a
    moment) is unchecked, not damaged: its file is not quarantined."""
    _, _file_id = _one_uploaded_file(tmp_path, remote_url, n=20)
    reader = IndexStore(tmp_path / "reader", remote_url, small_config())
    reader.start()
    assert offsets(reader.query("t", "k7", 0, FOREVER)) == [7]
    real_get = fail_for_manifest_keys(monkeypatch, reader.remote, "get")
    report = reader.verify(deep=True)
    assert [p.kind for p in report.problems] == ["unchecked", "unchecked"]  # the record, and its object
    assert reader.status().quarantined == []
    monkeypatch.setattr(reader.remote, "get", real_get)
    assert offsets(reader.query("t", "k7", 0, FOREVER, strict=True)) == [7]
    reader.shutdown()


def test_strict_query_raises_when_a_missing_object_cannot_be_told_expired(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, _ = _one_uploaded_file(tmp_path, remote_url, n=20)
    reader = IndexStore(tmp_path / "reader", remote_url, small_config())
    reader.start()
    assert offsets(reader.query("t", "k7", 0, FOREVER)) == [7]
    open_remote(remote_url).delete(key)
    fail_for_manifest_keys(monkeypatch, reader.remote, "head")
    with pytest.raises(RemoteError, match=r"not found|No such|NoSuchKey|ObjectNotFound"):
        reader.query("t", "k6", 0, FOREVER, strict=True)
    reader.shutdown()


def test_verify_before_the_catalog_loaded_still_quarantines(tmp_path: Path, remote_url: str) -> None:
    """A store started while the remote was down has no catalog; a verify()
    once it is back must still keep what it found damaged out of queries."""
    key, file_id = _one_uploaded_file(tmp_path, remote_url)
    corrupt_object(open_remote(remote_url), key, 5_000)
    remote = SwitchableRemote(open_remote(remote_url))
    remote.down.set()
    reader = IndexStore(tmp_path / "reader", remote, small_config(reconcile_interval_s=3600.0))
    reader.start()
    wait_until(lambda: reader.status().last_error is not None, "the first listing failed")
    remote.down.clear()
    assert [p.kind for p in reader.verify(deep=True).problems] == ["checksum-mismatch"]
    assert reader.status().quarantined == [file_id]
    with pytest.raises(CorruptFileError, match="quarantined"):
        reader.query("t", "k299", 0, FOREVER, strict=True)
    assert reader.query("t", "k299", 0, FOREVER) == []
    reader.shutdown()


def test_reconcile_leaves_the_temp_files_of_uploads_in_flight(tmp_path: Path) -> None:
    """On file:// the temp files of writes under way are what the remote
    lists as open uploads. Reconciliation (no longer waited for by uploads)
    must not abort those of the owner record or of a manifest record being
    written, or that write fails for good."""
    remote_url = (tmp_path / "remote").as_uri()
    store = IndexStore(tmp_path / "d", remote_url, small_config())
    store.start()
    store._in_flight.add("1795000000000-0000abcd")
    in_use = store._keys_in_use()
    assert {"manifest/1795000000000-0000abcd.json", "index/1795000000000-0000abcd.tix"} <= in_use
    assert ("OWNER.json" in in_use) is not store._claimed  # written only while the claim is made
    store._in_flight.clear()
    store.shutdown()


def test_an_upload_that_fails_during_shutdown_is_tried_again_at_once(tmp_path: Path, remote_url: str) -> None:
    """A failed upload waits out a backoff of reconcile_interval_s before
    its next try. The shutdown clears the backoffs when it begins, but an
    attempt that fails after that must not wait one out either (here an
    hour: the shutdown would end at its deadline, unclean)."""
    remote = SwitchableRemote(open_remote(remote_url))
    real_put = remote.put_if_absent
    failures = []

    def put_failing_once(key: str, source: Any, **kwargs: Any) -> Any:
        if key.startswith(DATA_PREFIX) and not failures:
            failures.append(key)
            raise PermissionError(13, "denied once (test)", key)  # not retried by the policy
        return real_put(key, source, **kwargs)

    remote.put_if_absent = put_failing_once  # type: ignore[method-assign]
    store = IndexStore(tmp_path / "d", remote, small_config(reconcile_interval_s=3600.0))
    store.start()
    store.put("t", "k", queue_id=0, offset=1, size=1, timestamp_ms=5)
    report = store.shutdown(timeout_s=20)
    assert failures and report.clean, report
    assert report.elapsed_s < 10


def test_catalog_refresh_resumes_after_a_failed_reload(tmp_path: Path, remote_url: str) -> None:
    """verify() reloads the catalog; if that reload fails (remote down),
    the upkeep thread's periodic refresh must take over (it only refreshed
    a catalog loaded once, so it never tried again)."""
    _, _file_id = _one_uploaded_file(tmp_path, remote_url, n=20)
    remote = SwitchableRemote(open_remote(remote_url))
    reader = IndexStore(tmp_path / "reader", remote, small_config())
    reader.start()
    wait_until(lambda: reader.status().remote_files == 1, "the catalog loaded")
    remote.down.set()
    with reader._state_lock:
        reader._remote_files.clear()
    reader._catalog_loaded_at = None  # what verify() does before its reload
    time.sleep(0.3)
    remote.down.clear()
    wait_until(lambda: reader.status().remote_files == 1, "the upkeep thread reloaded the catalog")
    reader.shutdown()


@pytest.mark.usefixtures("prompt_retention")
def test_retention_tries_again_after_a_failed_delete(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retention takes an expired file out of queries, then deletes its
    record and its object. When the object's delete fails, the file goes
    back, and the next round finishes (with its record already gone, the
    catalog could never bring it back)."""
    now = int(time.time() * 1000)
    store = IndexStore(tmp_path / "d", remote_url, small_config(retention_s=3600.0, cache_bytes=0))
    store.start()
    store.put("t", "old", queue_id=0, offset=1, size=1, timestamp_ms=now - 7_200_000)
    real_delete = store.remote.delete
    failed: list[str] = []

    def delete_failing_once(key: str) -> None:
        if key.startswith(DATA_PREFIX) and not failed:
            failed.append(key)
            raise PermissionError(13, "denied once (test)", key)
        real_delete(key)

    monkeypatch.setattr(store.remote, "delete", delete_failing_once)
    store.seal()
    remote = open_remote(remote_url)
    wait_until(lambda: failed and not remote.list(DATA_PREFIX), "the second round deleted the object")
    wait_until(lambda: not store.journal.files(), "the journal forgot the file")
    assert remote.list(MANIFEST_PREFIX) == []
    assert store.shutdown().clean
    again = IndexStore(tmp_path / "d", remote_url, small_config())
    again.start()
    assert again.query("t", "old", 0, FOREVER) == []
    again.shutdown()


def test_a_quarantine_made_ahead_of_the_catalog_gets_its_range(tmp_path: Path, remote_url: str) -> None:
    """A reader's catalog can be up to a refresh behind the writer. A file
    verify() finds damaged before the catalog knows it was quarantined with
    no time range, failing every strict query, for ever."""
    writer = IndexStore(tmp_path / "w", remote_url, small_config(capacity=300, cache_bytes=0))
    writer.start()
    writer.put("t", "first", queue_id=0, offset=0, size=1, timestamp_ms=10)
    writer.seal()
    # Up before the reader lists (it lists once an hour here).
    wait_until(lambda: not writer.status().pending_files, "the first file uploaded")
    reader = IndexStore(tmp_path / "r", remote_url, small_config(reconcile_interval_s=3600.0))
    reader.start()
    wait_until(lambda: reader.status().remote_files == 1, "the reader's catalog loaded")
    for i in range(300):
        writer.put("t", f"k{i}", queue_id=0, offset=i, size=1, timestamp_ms=1_000 + i)
    assert writer.shutdown().clean
    remote = open_remote(remote_url)
    newest = sorted(o.key for o in remote.list(DATA_PREFIX))[-1]
    corrupt_object(remote, newest, 5_000)
    assert [p.kind for p in reader.verify(deep=True).problems] == ["checksum-mismatch"]
    (bad,) = reader._bad_remote.values()
    assert (bad.min_ms, bad.max_ms) == (1_000, 1_299)
    assert offsets(reader.query("t", "first", 0, 100, strict=True)) == [0]  # outside its range
    with pytest.raises(CorruptFileError, match="quarantined"):
        reader.query("t", "k5", 0, FOREVER, strict=True)
    reader.shutdown()


def test_one_claim_at_a_time(tmp_path: Path, remote_url: str) -> None:
    """The upload threads and reconciliation claim the prefix concurrently.
    Once one has claimed it, no other claim may still be writing the owner
    record (reconciliation would then abort its temp file as a leftover)."""
    import threading

    remote = SwitchableRemote(open_remote(remote_url))
    real_put = remote.put_if_absent
    claims: list[float] = []

    def slow_claim(key: str, source: Any, **kwargs: Any) -> Any:
        if key == "OWNER.json":
            claims.append(time.monotonic())
            time.sleep(0.3)
        return real_put(key, source, **kwargs)

    remote.put_if_absent = slow_claim  # type: ignore[method-assign]
    store = IndexStore(tmp_path / "d", remote, small_config(reconcile_interval_s=3600.0))
    store.start()
    # A store with nothing to upload claims nothing: this one has a file.
    store.put("t", "k", queue_id=0, offset=1, size=1, timestamp_ms=5)
    threads = [threading.Thread(target=store._ensure_claimed) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store._claimed
    assert len(claims) <= 1, claims  # a reconcile may have claimed before them: then none
    store.shutdown()


def test_verify_repair_leaves_an_upload_begun_while_it_ran(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """verify(repair=True) aborts open uploads that no upload of the store
    is using, asked when it gets to them (at the end of a deep verify that
    may have taken long), not when it began."""
    from tieredindex.remote import MultipartUpload

    store = IndexStore(tmp_path / "d", remote_url, small_config(reconcile_interval_s=3600.0))
    store.start()
    store.put("t", "k", queue_id=0, offset=1, size=1, timestamp_ms=5)  # a writer: it may claim, and repair
    file_id = "1795000000000-0000beef"
    key = data_key(file_id)
    aborted: list[str] = []

    def listing() -> list[MultipartUpload]:
        store._in_flight.add(file_id)  # an upload that began during the verify
        return [MultipartUpload(key, "upload-1", datetime.datetime.now(datetime.UTC))]

    monkeypatch.setattr(store.remote, "list_multipart_uploads", listing)
    monkeypatch.setattr(store.remote, "abort_multipart_upload", lambda k, u: aborted.append(k))
    report = store.verify(deep=True, repair=True)
    assert aborted == [], report.problems
    store._in_flight.discard(file_id)
    store.shutdown()


def test_a_seal_round_during_a_salvage_leaves_the_salvage_alone(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A salvage records its new file (ROLLED) before it makes it. A seal
    round in between found a rolled record with no file and ended it EMPTY:
    the salvaged entries were answered, then never uploaded (a CI run
    caught it). The worker now leaves a file being made alone."""
    import tieredindex.store as store_module

    store, _ = store_with_entry_10_damaged(tmp_path, remote_url)
    real_salvage = store_module.salvage

    def salvage_after_a_seal_round(src: Any, dest: Any) -> Any:
        # The worker's round, between the record and the file, as it finds
        # the salvage's record (ROLLED, no file yet).
        made = [r for r in store.journal.files([FileState.ROLLED]) if r.file_id == Path(dest).stem]
        assert made and not Path(dest).exists()
        with monkeypatch.context() as worker_sees:
            worker_sees.setattr(store.journal, "files", lambda states=None: made)
            store._seal_rolled()
        return real_salvage(src, dest)

    monkeypatch.setattr(store_module, "salvage", salvage_after_a_seal_round)
    want = [i for i in reversed(range(20)) if i != 10]
    assert offsets(store.query("t", "k", 0, FOREVER)) == want
    assert store.shutdown(timeout_s=20).clean
    fresh = IndexStore(tmp_path / "fresh", remote_url, small_config())
    fresh.start()
    assert offsets(fresh.query("t", "k", 0, FOREVER)) == want
    fresh.shutdown()


def test_a_salvage_the_journal_fails_is_tried_again_and_the_query_answers(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk fails the journal too: the new file's record could not be
    written when a query's salvage began. The sqlite3 error escaped the
    lenient query (which must answer from the healthy files), and the damaged
    file, withdrawn from queries, was not withheld: strict queries answered
    without it. It is now a salvage the disk failed, like any other: the
    query answers, strict ones raise naming the file, the salvage is tried
    again and then every intact entry is answered."""
    import sqlite3

    store, path = store_with_entry_10_damaged(tmp_path, remote_url)
    real_add = store.journal.add
    full = [True]

    def add(file_id: str, state: FileState, *, begin_ms: int, error: str | None = None) -> Any:
        if full[0]:
            raise sqlite3.OperationalError("database or disk is full")
        return real_add(file_id, state, begin_ms=begin_ms, error=error)

    monkeypatch.setattr(store.journal, "add", add)
    assert store.query("t", "k", 0, FOREVER) == []  # the only file is withheld
    with pytest.raises(CorruptFileError, match=path.stem):
        store.query("t", "k", 0, FOREVER, strict=True)
    full[0] = False
    wait_until(
        lambda: store.journal.get(path.stem).state is FileState.QUARANTINED,  # type: ignore[union-attr]
        "the salvage was tried again",
    )
    assert offsets(store.query("t", "k", 0, FOREVER, strict=True)) == [
        i for i in reversed(range(20)) if i != 10
    ]
    assert store.shutdown(timeout_s=20).clean


# ------------------------------------------- read-your-writes under a moving pipeline


@dataclasses.dataclass(frozen=True)
class _Acknowledged:
    entry: Entry
    began: int  # put order: a put that returned before another began is older
    returned: int


class _PutLog:
    """Every entry the writers tried to put, and those whose put returned."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._sequence = itertools.count()
        self.tried: set[tuple[str, Entry]] = set()
        self.acknowledged: dict[str, list[_Acknowledged]] = {}

    def begin(self, keys: list[str], entry: Entry) -> int:
        with self.lock:
            self.tried.update((key, entry) for key in keys)
            return next(self._sequence)

    def returned(self, keys: list[str], entry: Entry, began: int) -> None:
        with self.lock:
            done = _Acknowledged(entry, began, next(self._sequence))
            for key in keys:
                self.acknowledged.setdefault(key, []).append(done)

    def acknowledged_of(self, key: str) -> list[_Acknowledged]:
        with self.lock:
            return list(self.acknowledged.get(key, ()))


def _put_before(a: _Acknowledged | None, b: _Acknowledged | None) -> bool:
    """Whether put ``a`` surely came before put ``b`` (unknown or
    overlapping puts: no order)."""
    return a is not None and b is not None and a.returned < b.began


def _read_your_writes_problems(
    log: _PutLog,
    key: str,
    before: list[_Acknowledged],
    begin_ms: int,
    end_ms: int,
    max_count: int,
    answer: list[Entry],
) -> list[str]:
    """What is wrong with ``answer``, given ``before``: the puts of ``key``
    that returned before the query began."""
    problems: list[str] = []
    if len({(e.queue_id, e.offset) for e in answer}) != len(answer):
        problems.append(f"a (queue_id, offset) twice: {answer}")
    with log.lock:
        problems += [f"never put: {e}" for e in answer if (key, e) not in log.tried]
    problems += [
        f"outside [{begin_ms}, {end_ms}]: {e}" for e in answer if not begin_ms <= e.timestamp_ms <= end_ms
    ]
    if len(answer) > max_count:
        problems.append(f"{len(answer)} entries, max_count {max_count}")
    put_of = {done.entry: done for done in log.acknowledged_of(key)}
    for at, newer in enumerate(answer):
        for older in answer[at + 1 :]:
            if older.timestamp_ms > newer.timestamp_ms or (
                older.timestamp_ms == newer.timestamp_ms and _put_before(put_of.get(newer), put_of.get(older))
            ):
                problems.append(f"out of order: {newer} before {older}")
    answered = set(answer)
    last = answer[-1] if len(answer) == max_count else None  # cut there: older entries may be left out

    def ranks_after_last(done: _Acknowledged) -> bool:
        assert last is not None
        return done.entry.timestamp_ms < last.timestamp_ms or (
            done.entry.timestamp_ms == last.timestamp_ms and not _put_before(put_of.get(last), done)
        )

    for done in before:
        wanted = begin_ms <= done.entry.timestamp_ms <= end_ms
        if wanted and done.entry not in answered and (last is None or not ranks_after_last(done)):
            problems.append(f"missing: {done.entry}, acknowledged before the query began")
    return problems


@pytest.mark.parametrize("outage", [False, True], ids=["remote-up", "remote-flapping"])
def test_a_query_sees_every_put_that_returned_before_it_began(
    tmp_path: Path, remote_url: str, outage: bool
) -> None:
    """Writers put while files roll every 25 entries (or 50 ms), are sealed,
    uploaded and their local copies evicted at once; seal() and flush() come
    from another thread, and (remote-flapping) the remote goes down and up.
    Each strict query, whole range, cut in time or by a small max_count,
    must answer every put of its key that returned before it began (the
    newest max_count of them), nothing never put, nothing twice, newest
    first (equal timestamps: the later put first). During an outage it may
    raise instead, never answer short."""
    switch = SwitchableRemote(open_remote(remote_url))
    config = small_config(
        capacity=25, max_file_age_s=0.05, cache_bytes=0, flush_interval_s=0.02, reconcile_interval_s=0.05
    )
    store = IndexStore(tmp_path / "d", switch, config)
    store.start()
    log = _PutLog()
    keys = [f"k{i}" for i in range(150)]
    writers, puts_per_writer, readers, queries_per_reader = 3, 200, 3, 100
    writers_done = threading.Event()
    problems: list[str] = []
    failures: list[BaseException] = []

    def write(queue_id: int) -> None:
        rnd = random.Random(queue_id)
        try:
            for offset in range(puts_per_writer):
                message_keys = rnd.sample(keys, rnd.choice((1, 1, 2)))
                # Out of order by up to 20 ms, and equal timestamps across writers.
                entry = Entry(queue_id, offset, offset % 97, 1_000_000 + offset // 2 - rnd.randint(0, 20))
                began = log.begin(message_keys, entry)
                store.put(
                    "t",
                    message_keys,
                    queue_id=entry.queue_id,
                    offset=entry.offset,
                    size=entry.size,
                    timestamp_ms=entry.timestamp_ms,
                )
                log.returned(message_keys, entry, began)
                time.sleep(0.002)  # spread the puts over the pipeline's moves
        except BaseException as exc:
            failures.append(exc)

    def read(seed: int) -> None:
        rnd = random.Random(seed)
        answered = 0
        try:
            while answered < queries_per_reader or not writers_done.is_set():
                key = rnd.choice(keys)
                before = log.acknowledged_of(key)
                begin_ms, end_ms, max_count = 0, FOREVER, 100_000
                shape = rnd.random()
                if shape < 0.3 and before:
                    begin_ms, end_ms = sorted(
                        rnd.choice(before).entry.timestamp_ms + rnd.randint(-15, 15) for _ in "ab"
                    )
                elif shape < 0.5:
                    max_count = rnd.randint(1, 4)
                try:
                    answer = store.query("t", key, begin_ms, end_ms, max_count=max_count, strict=True)
                except (RemoteError, CorruptFileError):
                    if not outage:
                        raise
                    continue
                answered += 1
                found = _read_your_writes_problems(log, key, before, begin_ms, end_ms, max_count, answer)
                problems.extend(f"{key} [{begin_ms}, {end_ms}] max_count={max_count}: {p}" for p in found)
        except BaseException as exc:
            failures.append(exc)

    def disturb() -> None:
        try:
            for round_ in itertools.count():
                if writers_done.wait(0.01):
                    break
                store.seal() if round_ % 3 == 0 else store.flush()
                if outage and round_ % 10 == 0:
                    if switch.down.is_set():
                        switch.down.clear()
                    else:
                        switch.down.set()
        except BaseException as exc:
            failures.append(exc)
        finally:
            switch.down.clear()

    writing = [threading.Thread(target=write, args=(queue_id,)) for queue_id in range(writers)]
    others = [threading.Thread(target=read, args=(seed,)) for seed in range(readers)]
    others.append(threading.Thread(target=disturb))
    for thread in writing + others:
        thread.start()
    for thread in writing:
        thread.join()
    writers_done.set()
    for thread in others:
        thread.join()
    assert not failures, failures
    assert not problems, problems[:10]

    # Every file moved all the way: uploaded, and its local copies gone.
    wait_until(lambda: not store.status().pending_files, "every file uploaded")
    entries = sum(len(log.acknowledged_of(key)) for key in keys)
    assert store.status().files_by_state.get("UPLOADED", 0) >= entries // config.capacity
    wait_until(lambda: not list((tmp_path / "d").rglob("*.sealed")), "every sealed copy evicted")
    for key in keys[::10]:  # now from the remote copies alone
        want = log.acknowledged_of(key)
        answer = store.query("t", key, 0, FOREVER, max_count=100_000, strict=True)
        assert set(answer) == {done.entry for done in want}
        assert _read_your_writes_problems(log, key, want, 0, FOREVER, 100_000, answer) == []
    assert store.shutdown().clean
