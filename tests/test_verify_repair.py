"""verify(): what it reports and repairs on a remote other tools share.

Run on both back ends through :func:`tieredindex.remotecheck.verify_url`,
the same check ``IndexStore.verify`` and ``tieredindex verify`` run.
"""

from __future__ import annotations

import collections
import datetime as dt
import errno
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tieredindex import IndexStore, open_remote, verifier
from tieredindex._native import crc32c
from tieredindex.layout import ManifestRecord, data_key, manifest_key
from tieredindex.remote import LocalRemote, Remote, S3Remote
from tieredindex.remotecheck import verify_url
from tieredindex.retry import RetryPolicy

from store_helpers import open_upload, small_config

FAST = RetryPolicy(attempts=2, base_delay_s=0.0, max_delay_s=0.0, deadline_s=10.0)
NO_GRACE = -3600.0  # a server clock a little ahead must not make an object "young"


def plant(remote: Remote, names: list[str], body: bytes = b"stray") -> list[str]:
    """Stores objects by their raw names, as another tool would (bypassing
    key validation); returns the keys a listing reports for them."""
    if isinstance(remote, S3Remote):
        for name in names:
            remote.client.put_object(Bucket=remote.bucket, Key=remote.prefix + name, Body=body)
        return names
    assert isinstance(remote, LocalRemote)
    root = os.fsencode(remote.root)
    keys = []
    for name in names:
        raw = os.fsencode(name)
        os.makedirs(os.path.dirname(os.path.join(root, raw)), exist_ok=True)
        with open(os.path.join(root, raw), "wb") as f:
            f.write(body)
        keys.append(os.fsdecode(raw))
    return keys


def odd_names(remote: Remote) -> list[str]:
    """Legal stored names that are no valid keys on this back end."""
    if isinstance(remote, S3Remote):
        return ["a//b", "/lead", "back\\slash", "dir/.dot", "ctl\tname", "index/junk//x.tix"]
    return ["stray\nname", os.fsdecode(b"bad\xffname"), "back\\slash", "index/ctl\tx.tix"]


def test_repair_removes_stray_objects_whatever_their_names(remote: Remote) -> None:
    stray = plant(remote, odd_names(remote))
    ours = b"ours"
    remote.put_if_absent("OWNER.json", ours, size=len(ours), crc32c=crc32c(ours))
    assert sorted(o.key for o in remote.list()) == sorted([*stray, "OWNER.json"])

    report = verify_url(remote, deep=True, repair=False, grace_s=NO_GRACE, policy=FAST)
    assert sorted((p.kind, p.key, p.fixed) for p in report.problems) == sorted(
        ("orphan", k, False) for k in stray
    )
    assert not report.ok

    report = verify_url(remote, deep=True, repair=True, grace_s=NO_GRACE, policy=FAST)
    assert sorted((p.kind, p.key, p.action, p.fixed) for p in report.problems) == sorted(
        ("orphan", k, "deleted", True) for k in stray
    )
    assert report.ok
    assert [o.key for o in remote.list()] == ["OWNER.json"]
    assert verify_url(remote, deep=True, repair=False, grace_s=NO_GRACE, policy=FAST).problems == []


def test_one_failing_object_is_reported_and_the_rest_are_handled(
    remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operation that fails for good on one object is reported on that
    object; verify goes on with the others instead of raising."""
    plant(remote, ["a-stray", "b-stray", "c-stray"])
    plant(remote, ["manifest/0000000000001-0000000a.json", "manifest/0000000000002-0000000b.json"], b"{}")
    real_delete, real_get = remote.delete, remote.get

    def delete(key: str) -> None:
        if key == "b-stray":
            raise PermissionError(errno.EACCES, "denied by policy", key)
        real_delete(key)

    def get(key: str) -> bytes:
        if key == "manifest/0000000000001-0000000a.json":
            raise PermissionError(errno.EACCES, "denied by policy", key)
        return real_get(key)

    monkeypatch.setattr(remote, "delete", delete)
    monkeypatch.setattr(remote, "get", get)
    report = verify_url(remote, deep=True, repair=True, grace_s=NO_GRACE, policy=FAST)

    by_key = {p.key: p for p in report.problems}
    assert not report.ok
    assert (by_key["a-stray"].action, by_key["a-stray"].fixed) == ("deleted", True)
    assert (by_key["c-stray"].action, by_key["c-stray"].fixed) == ("deleted", True)
    failed = by_key["b-stray"]
    assert failed.kind == "orphan" and not failed.fixed
    assert "could not delete it" in failed.action and "denied by policy" in failed.action
    unreadable = by_key["manifest/0000000000001-0000000a.json"]
    assert unreadable.kind == "unchecked" and "could not read it" in unreadable.detail  # unread, not damaged
    assert "denied by policy" in unreadable.detail
    assert by_key["manifest/0000000000002-0000000b.json"].kind == "bad-manifest"  # still checked
    assert sorted(o.key for o in remote.list()) == [
        "b-stray",
        "manifest/0000000000001-0000000a.json",
        "manifest/0000000000002-0000000b.json",
    ]


def test_a_failing_abort_is_reported_and_the_rest_are_aborted(
    remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    if isinstance(remote, S3Remote):
        for key in ("index/u1.tix", "index/u2.tix"):
            remote.client.create_multipart_upload(Bucket=remote.bucket, Key=remote.prefix + key)
    else:
        assert isinstance(remote, LocalRemote)
        os.makedirs(os.path.join(remote.root, "index"))
        for n in (1, 2):
            with open(os.path.join(remote.root, "index", f".u{n}.tix.{'0' * 32}.tixtmp"), "wb") as f:
                f.write(b"partial")
    real_abort = remote.abort_multipart_upload

    def abort(key: str, upload_id: str) -> None:
        if key == "index/u1.tix":
            raise PermissionError(errno.EACCES, "denied by policy", key)
        real_abort(key, upload_id)

    monkeypatch.setattr(remote, "abort_multipart_upload", abort)
    report = verify_url(remote, deep=True, repair=True, grace_s=NO_GRACE, policy=FAST)
    assert sorted((p.kind, p.key, p.fixed) for p in report.problems) == [
        ("open-multipart-upload", "index/u1.tix", False),
        ("open-multipart-upload", "index/u2.tix", True),
    ]
    assert "could not abort it" in report.problems[0].action + report.problems[1].action
    [left] = remote.list_multipart_uploads()
    assert left.key == "index/u1.tix"
    real_abort(left.key, left.upload_id)


@pytest.mark.parametrize("damage", ["garbage", "unreadable"])
def test_repair_keeps_the_data_of_a_damaged_manifest_record(
    remote: Remote, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    """The object a damaged manifest record names is no orphan: deleting it
    would make the rebuild the report promises impossible."""
    kept, orphan = "0000000000001-0000000a", "0000000000002-0000000b"
    plant(remote, [f"index/{kept}.tix", f"index/{orphan}.tix"], b"sealed bytes")
    plant(remote, [f"manifest/{kept}.json"], b'{"count": 11, "truncated')
    if damage == "unreadable":
        real_get = remote.get

        def get(key: str) -> bytes:
            if key == f"manifest/{kept}.json":
                raise PermissionError(errno.EACCES, "denied by policy", key)
            return real_get(key)

        monkeypatch.setattr(remote, "get", get)

    report = verify_url(remote, deep=True, repair=True, grace_s=NO_GRACE, policy=FAST)

    by_key = {p.key: p for p in report.problems}
    assert set(by_key) == {f"manifest/{kept}.json", f"index/{kept}.tix", f"index/{orphan}.tix"}
    # a record that could not be read is unchecked (unread is not damaged)
    assert by_key[f"manifest/{kept}.json"].kind == ("unchecked" if damage == "unreadable" else "bad-manifest")
    data = by_key[f"index/{kept}.tix"]
    assert (data.kind, data.fixed) == ("unchecked", False)
    assert f"manifest/{kept}.json" in data.detail and "left as is" in data.action
    assert (by_key[f"index/{orphan}.tix"].action, by_key[f"index/{orphan}.tix"].fixed) == ("deleted", True)
    assert not report.ok
    assert sorted(o.key for o in remote.list()) == [f"index/{kept}.tix", f"manifest/{kept}.json"]
    assert remote.get(f"index/{kept}.tix") == b"sealed bytes"


def _record_of(file_id: str, body: bytes) -> ManifestRecord:
    """The manifest record of a one-entry file whose object is ``body``."""
    return ManifestRecord(
        file_id=file_id,
        key=data_key(file_id),
        size=len(body),
        crc32c=crc32c(body),
        count=1,
        begin_ms=0,
        min_ms=1000,
        max_ms=1000,
    )


def _record_object(remote: Remote, file_id: str, body: bytes) -> ManifestRecord:
    """A data object and its manifest record, as the store uploads them."""
    record = _record_of(file_id, body)
    remote.put_if_absent(record.key, body, size=len(body), crc32c=crc32c(body))
    raw = record.to_bytes()
    remote.put_if_absent(manifest_key(file_id), raw, size=len(raw), crc32c=crc32c(raw))
    return record


def _rewrite_without_checksum(remote: Remote, key: str, body: bytes) -> None:
    """Replace an object's bytes leaving no recorded CRC32C behind (S3: a
    plain PutObject; file://: the file rewritten, its sidecar gone)."""
    if isinstance(remote, S3Remote):
        remote.client.put_object(Bucket=remote.bucket, Key=remote.prefix + key, Body=body)
    else:
        assert isinstance(remote, LocalRemote)
        path = os.path.join(remote.root, *key.split("/"))
        os.unlink(os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tixmeta"))
        os.unlink(path)
        with open(path, "wb") as f:
            f.write(body)


def test_shallow_verify_rehashes_an_object_with_no_recorded_checksum(remote: Remote) -> None:
    """verify(deep=False) compares the recorded CRC32C; where the remote
    has none, only the bytes can tell, so they are re-hashed."""
    body = bytes(range(256)) * 40
    bad = _record_object(remote, "0000000000001-0000000a", body)
    good = _record_object(remote, "0000000000002-0000000b", body[::-1])
    _rewrite_without_checksum(remote, bad.key, bytes(len(body)))  # same size, other bytes
    _rewrite_without_checksum(remote, good.key, body[::-1])  # same bytes, no metadata either
    info = remote.head(bad.key)
    assert info is not None and info.size == bad.size

    report = verify_url(remote, deep=False, repair=False, grace_s=NO_GRACE, policy=FAST)

    assert [(p.kind, p.key) for p in report.problems] == [("checksum-mismatch", bad.key)]
    assert f"{crc32c(bytes(len(body))):#010x}" in report.problems[0].detail
    assert not report.ok
    assert report.checked_files == 2
    if isinstance(remote, S3Remote):  # file:// hashes in head(), so both are known there
        assert report.checked_bytes == 2 * len(body)


def test_repair_from_a_parent_prefix_leaves_a_nested_store_alone(tmp_path: Path, remote_url: str) -> None:
    """verify --repair pointed at a parent of a store's prefix deleted that
    store's owner record, data and manifest as orphans (no record at the
    parent names them). They are another store's: reported, never touched."""
    nested = remote_url.rstrip("/") + "/sub/"
    with IndexStore(tmp_path / "d", nested, small_config()) as store:
        for i in range(120):
            store.put("t", f"k{i % 7}", queue_id=0, offset=i, size=1, timestamp_ms=1_000 + i)
    parent = open_remote(remote_url)
    open_upload(parent, f"sub/{data_key('0000000000009-0000000f')}")  # its upload under way
    open_upload(parent, "other/index/0000000000008-0000000e.tix")  # a store with no owner record yet
    before = sorted(o.key for o in parent.list())
    assert len(before) == 1 + 3 + 3  # OWNER.json, 3 data objects, 3 manifest records

    report = verify_url(parent, deep=True, repair=True, grace_s=NO_GRACE, policy=FAST)

    assert sorted(p.key for p in report.problems if p.kind == "orphan") == before
    assert sorted(p.key for p in report.problems if p.kind == "open-multipart-upload") == [
        "other/index/0000000000008-0000000e.tix",
        "sub/index/0000000000009-0000000f.tix",
    ]
    assert all(p.action == "left as is: another store's" and not p.fixed for p in report.problems)
    assert not report.ok
    assert sorted(o.key for o in parent.list()) == before
    assert len(parent.list_multipart_uploads()) == 2
    fresh = IndexStore(tmp_path / "fresh", nested, small_config())
    fresh.start()
    assert [e.offset for e in fresh.query("t", "k3", 0, 2**63 - 1, 1000)] == list(range(115, 0, -7))
    assert not fresh.verify(deep=True).ok  # from its own prefix, the upload planted there is found
    fresh.shutdown()
    parent.close()


def test_a_young_upload_is_not_aborted(remote: Remote, monkeypatch: pytest.MonkeyPatch) -> None:
    """A live writer in another process (which the caller's in-flight set
    does not know) may have an upload open: the orphan grace covers uploads
    as it covers objects."""
    open_upload(remote, data_key("0000000000001-0000000a"))
    if isinstance(remote, S3Remote):
        # moto reports every upload as begun on 2010-11-10; S3 says when.
        listed = remote.list_multipart_uploads
        now = dt.datetime.now(dt.UTC)
        monkeypatch.setattr(
            remote, "list_multipart_uploads", lambda: [u._replace(initiated=now) for u in listed()]
        )
    report = verify_url(remote, deep=True, repair=True, grace_s=3600.0, policy=FAST)
    assert report.problems == [] and report.ok
    assert [u.key for u in remote.list_multipart_uploads()] == ["index/0000000000001-0000000a.tix"]
    report = verify_url(remote, deep=True, repair=True, grace_s=NO_GRACE, policy=FAST)
    assert [(p.kind, p.action, p.fixed) for p in report.problems] == [
        ("open-multipart-upload", "aborted", True)
    ]
    assert remote.list_multipart_uploads() == []


def test_folder_markers_and_stray_keys_under_manifest(remote: Remote) -> None:
    """Zero-byte "folder" objects (the S3 console makes them) are no data;
    a stray object under manifest/ is no record: an orphan, not a damaged
    record that verify could never clear (it failed every run on its name)."""
    good = _record_object(remote, "0000000000001-0000000a", b"sealed bytes")
    if isinstance(remote, S3Remote):
        for marker in ("", "manifest/", "index/"):
            remote.client.put_object(Bucket=remote.bucket, Key=remote.prefix + marker, Body=b"")
    plant(remote, ["manifest/README.txt"], b"notes")
    report = verify_url(remote, deep=True, repair=False, grace_s=NO_GRACE, policy=FAST)
    assert [(p.kind, p.key) for p in report.problems] == [("orphan", "manifest/README.txt")]
    assert "unknown object" in report.problems[0].detail
    report = verify_url(remote, deep=True, repair=True, grace_s=NO_GRACE, policy=FAST)
    assert [(p.kind, p.key, p.fixed) for p in report.problems] == [("orphan", "manifest/README.txt", True)]
    assert report.ok
    assert verify_url(remote, deep=True, repair=False, grace_s=NO_GRACE, policy=FAST).ok
    assert remote.get(good.key) == b"sealed bytes"


def test_a_record_stored_under_another_files_key_is_damage(remote: Remote) -> None:
    """A manifest record copied to another file's key is a bad record: read
    as good, retention would delete the file it names and leave its own key
    naming nothing."""
    a = _record_object(remote, "0000000000001-0000000a", b"file a")
    b = _record_object(remote, "0000000000002-0000000b", b"file b")
    raw = b.to_bytes()
    remote.delete(manifest_key(a.file_id))
    remote.put_if_absent(manifest_key(a.file_id), raw, size=len(raw), crc32c=crc32c(raw))
    with pytest.raises(ValueError, match=r"names file 0000000000002-0000000b, not this key's"):
        ManifestRecord.from_bytes(raw, manifest_key(a.file_id))
    report = verify_url(remote, deep=True, repair=True, grace_s=NO_GRACE, policy=FAST)
    by_key = {p.key: p for p in report.problems}
    assert by_key[manifest_key(a.file_id)].kind == "bad-manifest"
    assert by_key[a.key].kind == "unchecked"  # its record is what is damaged: kept
    assert remote.get(a.key) == b"file a" and remote.get(b.key) == b"file b"


def test_an_upload_recorded_since_the_listing_is_no_orphan(
    remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upload that wrote its manifest record after verify's listing saw
    only its object: repair deleted it as an orphan, leaving the new record
    naming nothing. The record is looked for again before a delete."""
    body = b"sealed bytes"
    record = _record_of("0000000000001-0000000a", body)
    remote.put_if_absent(record.key, body, size=len(body), crc32c=crc32c(body))
    real_list = remote.list

    def list_then_record(prefix: str = "") -> list:
        listed = real_list(prefix)
        raw = record.to_bytes()
        remote.put_if_absent(manifest_key(record.file_id), raw, size=len(raw), crc32c=crc32c(raw))
        return listed

    monkeypatch.setattr(remote, "list", list_then_record)
    report = verify_url(remote, deep=True, repair=True, grace_s=NO_GRACE, policy=FAST)
    assert report.problems == [] and report.ok
    assert remote.get(record.key) == body


def test_a_store_nested_at_index_does_not_shield_this_stores_own_keys(remote: Remote) -> None:
    """A store nested at ``<prefix>/index/`` owns ``index/OWNER.json`` and
    ``index/index/...``, never ``index/<file-id>.tix``: those stay this
    store's orphans and stale uploads, repaired as such (they were left as
    "another store's" for ever)."""
    plant(remote, ["index/OWNER.json"], b'{"store_id": "nested"}')
    orphan = data_key("1700000000000-deadbeef")
    plant(remote, [orphan], b"orphan bytes")
    open_upload(remote, data_key("1700000000000-cafebabe"))
    report = verify_url(remote, deep=True, repair=True, grace_s=NO_GRACE, policy=FAST)
    by_key = {p.key: p for p in report.problems}
    assert (by_key[orphan].action, by_key[orphan].fixed) == ("deleted", True)
    upload = by_key[data_key("1700000000000-cafebabe")]
    assert (upload.kind, upload.action, upload.fixed) == ("open-multipart-upload", "aborted", True)
    assert by_key["index/OWNER.json"].action == "left as is: another store's"
    assert [o.key for o in remote.list()] == ["index/OWNER.json"]
    assert remote.list_multipart_uploads() == []


def uploaded_files(directory: Path, remote_url: str, files: int) -> Remote:
    """A store in ``directory`` uploads ``files`` files of ten entries and
    shuts down; returns its remote, opened anew."""
    store = IndexStore(directory, remote_url, small_config(capacity=10))
    store.start()
    for i in range(10 * files):
        store.put("orders", f"k{i % 7}", queue_id=0, offset=i, size=10, timestamp_ms=1_000 + i)
    assert store.shutdown().clean
    return open_remote(remote_url)


class InFlight:
    """Remote calls wrapped by kind: the most in flight at once, the threads
    they ran on and their keys, in call order. Each is held 20 ms so that
    calls started together overlap."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._now: collections.Counter[str] = collections.Counter()
        self.most: collections.Counter[str] = collections.Counter()
        self.threads: collections.defaultdict[str, set[int]] = collections.defaultdict(set)
        self.keys: collections.defaultdict[str, list[str]] = collections.defaultdict(list)

    def wrap(self, kind: str, real: Any) -> Any:
        def call(key: str, *args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self._now[kind] += 1
                self.most[kind] = max(self.most[kind], self._now[kind])
                self.threads[kind].add(threading.get_ident())
                self.keys[kind].append(key)
            try:
                time.sleep(0.02)
                return real(key, *args, **kwargs)
            finally:
                with self._lock:
                    self._now[kind] -= 1

        return call


def test_checks_run_at_once_and_repairs_one_at_a_time(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over many files, verify reads (records, HEADs, re-hashes) several at
    a time, where one after another they would add up to two round trips a
    file; its repairs, which delete and write, still run one at a time and
    in the manifest's order, and each is reported on its own file."""
    remote = uploaded_files(tmp_path / "d", remote_url, 10)
    records = sorted(info.key for info in remote.list("manifest/"))
    assert len(records) == 10
    damaged = [ManifestRecord.from_bytes(remote.get(records[n]), records[n]).key for n in (2, 7)]
    for key in damaged:  # same size, other bytes, stored as another tool would
        size = next(info.size for info in remote.list(key))
        remote.delete(key)
        plant(remote, [key], b"\x00" * size)

    calls = InFlight()
    monkeypatch.setattr(remote, "head", calls.wrap("reads", remote.head))
    monkeypatch.setattr(remote, "get", calls.wrap("reads", remote.get))
    monkeypatch.setattr(remote, "put_if_absent", calls.wrap("writes", remote.put_if_absent))
    report = verify_url(
        remote, deep=False, repair=True, directory=tmp_path / "d", grace_s=NO_GRACE, policy=FAST
    )

    assert [(p.kind, p.key, p.fixed) for p in report.problems] == [
        ("checksum-mismatch", key, True) for key in damaged
    ]
    assert calls.most["reads"] > 1
    assert calls.most["writes"] == 1 and calls.keys["writes"] == damaged
    monkeypatch.undo()
    again = verify_url(remote, deep=True, repair=False, grace_s=NO_GRACE, policy=FAST)
    assert again.ok and again.problems == []
    remote.close()


def test_a_deep_verify_rehashes_few_objects_at_once(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each deep re-hash holds a chunk, and each thread's allocator keeps
    what it read: however many checks run at once, objects are downloaded
    DEEP_READS_AT_ONCE at a time, on as many threads."""
    remote = uploaded_files(tmp_path / "d", remote_url, 10)
    calls = InFlight()
    monkeypatch.setattr(remote, "head", calls.wrap("head", remote.head))
    monkeypatch.setattr(remote, "get_range", calls.wrap("get_range", remote.get_range))
    report = verify_url(remote, deep=True, repair=False, grace_s=NO_GRACE, policy=FAST)
    assert report.ok and report.checked_files == 10
    assert calls.most["head"] > 1
    assert 1 <= calls.most["get_range"] <= verifier.DEEP_READS_AT_ONCE
    assert len(calls.threads["get_range"]) <= verifier.DEEP_READS_AT_ONCE < len(calls.threads["head"])
    remote.close()


def test_a_file_expired_between_its_head_and_its_rehash_is_no_damage(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HEADs all run before the re-hashes: retention may delete a file
    (record first, then object) after its HEAD, before its bytes are read.
    As for one gone before its HEAD, that is no damage."""
    remote = uploaded_files(tmp_path / "d", remote_url, 10)
    last = sorted(o.key for o in remote.list("") if o.key.startswith("index/"))[-1]
    file_id = last.rsplit("/", 1)[-1].split(".")[0]
    real = remote.get_range
    expired = threading.Event()
    lock = threading.Lock()

    def get_range(key: str, start: int, end: int) -> bytes:
        with lock:
            if not expired.is_set():  # retention runs once the HEADs are done
                remote.delete(manifest_key(file_id))
                remote.delete(data_key(file_id))
                expired.set()
        return real(key, start, end)

    monkeypatch.setattr(remote, "get_range", get_range)
    report = verify_url(remote, deep=True, repair=False, grace_s=NO_GRACE, policy=FAST)
    assert expired.is_set()
    assert report.ok, report.problems
    remote.close()


def test_a_file_expired_between_a_damaged_read_and_its_second_is_no_damage(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A re-hash that fails its check is read again; retention may delete
    the file (record first, then object) between the two reads. As between
    its HEAD and its first read, that is no damage (it was "unchecked")."""
    remote = uploaded_files(tmp_path / "d", remote_url, 1)
    (key,) = [o.key for o in remote.list("") if o.key.startswith("index/")]
    file_id = key.rsplit("/", 1)[-1].split(".")[0]
    real = remote.get_range
    reads = [0]

    def get_range(key: str, start: int, end: int) -> bytes:
        reads[0] += 1
        data = real(key, start, end)
        if reads[0] == 1:  # the first read damaged on its way; then retention runs
            remote.delete(manifest_key(file_id))
            remote.delete(data_key(file_id))
            return bytes([data[0] ^ 1]) + data[1:]
        return data

    monkeypatch.setattr(remote, "get_range", get_range)
    report = verify_url(remote, deep=True, repair=False, grace_s=NO_GRACE, policy=FAST)
    assert reads[0] >= 2
    assert report.ok, report.problems
    remote.close()


def test_a_verify_that_raises_midway_stops_its_rehashes(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller's progress raising ends the verify: the re-hashes still
    queued are not done in the background, even while the error is kept."""
    remote = uploaded_files(tmp_path / "d", remote_url, 20)
    real = remote.get_range
    reads = [0]

    def get_range(key: str, start: int, end: int) -> bytes:
        reads[0] += 1
        time.sleep(0.02)
        return real(key, start, end)

    def progress(n: int, total: int) -> None:
        if n == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(remote, "get_range", get_range)
    with pytest.raises(KeyboardInterrupt) as raised:
        verify_url(remote, deep=True, repair=False, grace_s=NO_GRACE, policy=FAST, progress=progress)
    then = reads[0]
    time.sleep(0.3)
    assert raised.value is not None  # the error (and its traceback) still held
    assert reads[0] <= then + verifier.DEEP_READS_AT_ONCE < 20
    remote.close()
