"""tieredindex.remote on both back ends (a directory, and S3 through moto)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tieredindex._native import CorruptFileError, RemoteError, crc32c
from tieredindex.remote import (
    READS_PER_UPLOAD,
    ConditionalWriteIgnoredError,
    KeyEscapesError,
    LocalRemote,
    ObjectNotFoundError,
    ObjectVanishedError,
    Remote,
    RemoteRootMissingError,
    S3Remote,
    UploadCancelledError,
    crc32c_b64,
    open_remote,
    validate_key,
)
from tieredindex.retry import RetryBudget, RetryPolicy, classify, run_with_retry

MiB = 1024 * 1024


def blob(n: int, seed: int = 0) -> bytes:
    """Deterministic, incompressible-enough test data."""
    base = bytes((i * 131 + seed * 17 + (i >> 8)) & 0xFF for i in range(65536))
    reps = n // len(base) + 1
    return (base * reps)[:n]


def put(remote: Remote, key: str, data: bytes, **kw: Any) -> Any:
    return remote.put_if_absent(key, data, size=len(data), crc32c=crc32c(data), **kw)


def client_error(code: str, status: int, op: str) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},  # type: ignore[typeddict-item]
        op,
    )


@pytest.fixture
def big_remote(remote_url: str) -> Iterator[Remote]:
    """A remote whose multipart path starts at 5 MiB (S3's minimum part)."""
    r = open_remote(remote_url, multipart_threshold=5 * MiB, part_size=5 * MiB, upload_concurrency=2)
    yield r
    r.close()


# --------------------------------------------------------------------------
# put_if_absent / head / get


def test_put_creates_and_head_reports_size_crc_metadata(remote: Remote) -> None:
    data = blob(1000)
    res = put(remote, "files/a.tix", data, metadata={"tix-file": "a", "begin-ms": "17"})
    assert res.created and res.identical
    info = remote.head("files/a.tix")
    assert info is not None
    assert info.key == "files/a.tix"
    assert info.size == 1000
    assert info.crc32c == crc32c(data)
    assert info.metadata["tix-file"] == "a"
    assert info.metadata["begin-ms"] == "17"
    assert info.metadata["tix-size"] == "1000"
    assert int(info.metadata["tix-crc32c"], 16) == crc32c(data)
    assert info.last_modified.tzinfo is not None
    assert remote.get("files/a.tix") == data


def test_put_from_path(remote: Remote, tmp_path: Path) -> None:
    data = blob(4096, seed=3)
    src = tmp_path / "local.tix"
    src.write_bytes(data)
    res = remote.put_if_absent("files/p.tix", src, size=len(data), crc32c=crc32c(data))
    assert res.created
    assert remote.get("files/p.tix") == data
    res2 = remote.put_if_absent("files/p2.tix", str(src), size=len(data), crc32c=crc32c(data))
    assert res2.created


def test_put_empty_object(remote: Remote) -> None:
    assert put(remote, "empty", b"").created
    info = remote.head("empty")
    assert info is not None and info.size == 0 and info.crc32c == 0
    assert remote.get("empty") == b""


def test_put_identical_again_is_not_a_conflict(remote: Remote) -> None:
    data = blob(2000)
    assert put(remote, "k.tix", data).created
    res = put(remote, "k.tix", data)
    assert not res.created and res.identical
    assert res.existing is not None and res.existing.crc32c == crc32c(data)
    assert remote.get("k.tix") == data


def test_put_conflict_never_overwrites(remote: Remote) -> None:
    first, second = blob(2000, seed=1), blob(2000, seed=2)
    assert crc32c(first) != crc32c(second)
    assert put(remote, "k.tix", first).created
    res = put(remote, "k.tix", second)
    assert not res.created and not res.identical
    assert remote.get("k.tix") == first
    # a different size is a conflict too
    res = put(remote, "k.tix", first + b"x")
    assert not res.created and not res.identical
    assert remote.get("k.tix") == first
    info = remote.head("k.tix")
    assert info is not None and info.crc32c == crc32c(first)


def test_wrong_checksum_or_size_stores_nothing(remote: Remote, tmp_path: Path) -> None:
    data = blob(3000)
    with pytest.raises(ValueError, match="crc32c"):
        remote.put_if_absent("bad", data, size=len(data), crc32c=crc32c(data) ^ 1)
    with pytest.raises(ValueError, match="size"):
        remote.put_if_absent("bad", data, size=len(data) + 1, crc32c=crc32c(data))
    src = tmp_path / "f.tix"
    src.write_bytes(data)
    with pytest.raises(CorruptFileError, match=r"f\.tix"):
        remote.put_if_absent("bad", src, size=len(data), crc32c=crc32c(data) ^ 1)
    with pytest.raises(CorruptFileError, match=r"f\.tix"):
        remote.put_if_absent("bad", src, size=len(data) - 1, crc32c=crc32c(data))
    assert remote.head("bad") is None
    assert remote.list() == []
    assert remote.list_multipart_uploads() == []


def test_bad_put_arguments(remote: Remote) -> None:
    with pytest.raises(TypeError, match="source"):
        remote.put_if_absent("k", 123, size=0, crc32c=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="crc32c"):
        remote.put_if_absent("k", b"", size=0, crc32c=2**32)
    with pytest.raises(ValueError, match="metadata"):
        remote.put_if_absent("k", b"", size=0, crc32c=0, metadata={"Upper": "x"})
    with pytest.raises(ValueError, match="reserved"):
        remote.put_if_absent("k", b"", size=0, crc32c=0, metadata={"tix-crc32c": "0"})
    assert remote.head("k") is None


def test_missing_objects(remote: Remote) -> None:
    assert remote.head("nope/x.tix") is None
    with pytest.raises(ObjectNotFoundError) as info:
        remote.get("nope/x.tix")
    assert "nope/x.tix" in str(info.value)
    assert classify(info.value) == "fatal"
    with pytest.raises(ObjectNotFoundError):
        remote.get_range("nope/x.tix", 0, 10)


# --------------------------------------------------------------------------
# ranges, list, delete


def test_ranged_reads(remote: Remote) -> None:
    data = blob(10_000)
    put(remote, "r.tix", data)
    assert remote.get_range("r.tix", 0, 10) == data[:10]
    assert remote.get_range("r.tix", 1234, 5678) == data[1234:5678]
    assert remote.get_range("r.tix", 9990, 10_000) == data[9990:]
    assert remote.get_range("r.tix", 5, 5) == b""
    assert remote.get_range("r.tix", 9990, 20_000) == data[9990:]  # like slicing
    assert remote.get_range("r.tix", 10_000, 10_010) == b""
    assert remote.get_range("r.tix", 50_000, 60_000) == b""
    with pytest.raises(ValueError, match="end"):
        remote.get_range("r.tix", 10, 5)
    with pytest.raises(ValueError, match="start"):
        remote.get_range("r.tix", -1, 5)


def test_list_by_prefix_sorted(remote: Remote) -> None:
    keys = ["files/b.tix", "files/a.tix", "files/sub/c.tix", "manifest.json", "filesX"]
    for i, k in enumerate(keys):
        put(remote, k, blob(100 + i, seed=i))
    all_keys = [o.key for o in remote.list()]
    assert all_keys == sorted(keys)
    listed = remote.list("files/")
    assert [o.key for o in listed] == ["files/a.tix", "files/b.tix", "files/sub/c.tix"]
    assert [o.size for o in listed] == [101, 100, 102]
    assert all(o.crc32c is None for o in listed)
    assert [o.key for o in remote.list("files")] == [
        "files/a.tix",
        "files/b.tix",
        "files/sub/c.tix",
        "filesX",
    ]
    assert [o.key for o in remote.list("files/a")] == ["files/a.tix"]
    assert remote.list("nothing/") == []
    with pytest.raises(ValueError, match="prefix"):
        remote.list("../")


def test_delete_is_idempotent(remote: Remote) -> None:
    put(remote, "d/x.tix", b"abc")
    put(remote, "d/y.tix", b"def")
    remote.delete("d/x.tix")
    remote.delete("d/x.tix")
    remote.delete("d/never")
    assert remote.head("d/x.tix") is None
    assert [o.key for o in remote.list()] == ["d/y.tix"]
    # a deleted key can be written again
    assert put(remote, "d/x.tix", b"new").created
    assert remote.get("d/x.tix") == b"new"


@pytest.mark.parametrize(
    "key",
    ["", "/abs", "../x", "a/../../x", "a//b", "a/", "./a", "a/./b", "a\x00b", ".hidden", "a/.b", "a\\b"],
)
def test_bad_keys_rejected(remote: Remote, key: str) -> None:
    with pytest.raises(ValueError, match="key") as info:
        put(remote, key, b"x")
    assert repr(key) in str(info.value)
    with pytest.raises(ValueError):
        remote.head(key)
    with pytest.raises(ValueError):
        remote.get(key)
    assert remote.list() == []


@pytest.mark.parametrize("key", ["", "..", "../x", "a/../../x", ".", "./a", "a/./b", "a/.."])
def test_delete_and_abort_never_leave_the_prefix(remote: Remote, key: str) -> None:
    """delete and abort_multipart_upload take any key a listing reported,
    but one with a dot segment could leave the prefix: refused, by name."""
    with pytest.raises(ValueError, match="key") as info:
        remote.delete(key)
    assert repr(key) in str(info.value)
    with pytest.raises(ValueError, match="key"):
        remote.abort_multipart_upload(key, f".x.{'0' * 32}.tixtmp")


@pytest.mark.parametrize("key", ["/abs", "a//b", "a/", "a\x00b", ".hidden", "a/.b", "a/.b.tixmeta"])
def test_local_delete_refuses_keys_no_file_listing_gives(tmp_path: Path, key: str) -> None:
    """On file:// ``a//b`` would be ``a/b`` and dot-files are the back end's
    own: no listing reports such keys, and delete refuses them."""
    r = LocalRemote(tmp_path / "remote")
    put(r, "a/b", b"kept")
    with pytest.raises(ValueError, match="key"):
        r.delete(key)
    assert r.get("a/b") == b"kept"
    assert r.head("a/b") is not None and r.head("a/b").metadata  # type: ignore[union-attr]  # sidecar kept


def test_stray_objects_and_uploads_go_by_their_listed_names(remote: Remote, remote_url: str) -> None:
    """Another tool may leave objects and uploads under the prefix whose
    names are no valid keys; the names a listing reports delete and abort
    them (reconciliation and verify's repair depend on it)."""
    if isinstance(remote, S3Remote):
        client, bucket, prefix = remote.client, remote.bucket, remote.prefix
        names = ["junk//x", "/lead", "back\\slash", "dot/.file", "ctl\tname"]
        for name in names:
            client.put_object(Bucket=bucket, Key=prefix + name, Body=b"stray")
        upload_id = client.create_multipart_upload(Bucket=bucket, Key=prefix + "p9/junk//x")["UploadId"]
        expected_upload = ("p9/junk//x", upload_id)
    else:
        assert isinstance(remote, LocalRemote)
        root = os.fsencode(remote.root)
        os.mkdir(os.path.join(root, b"back\\slash"))
        raw_names = [b"stray\nname", b"bad\xffname", b"back\\slash/in\\side", b"tab\tname"]
        for raw in raw_names:
            with open(os.path.join(root, raw), "wb") as f:
                f.write(b"stray")
        names = [os.fsdecode(raw) for raw in raw_names]
        upload_id = f".we\\ird\udcff.{'0' * 32}.tixtmp"
        with open(os.path.join(root, b"back\\slash", os.fsencode(upload_id)), "wb") as f:
            f.write(b"partial")
        expected_upload = ("back\\slash/we\\ird\udcff", upload_id)
    put(remote, "ours.tix", b"ours")

    listed = [o.key for o in remote.list()]
    assert sorted(listed) == sorted([*names, "ours.tix"])
    [upload] = remote.list_multipart_uploads()
    assert (upload.key, upload.upload_id) == expected_upload
    for key in listed:
        if key != "ours.tix":
            remote.delete(key)
    remote.abort_multipart_upload(upload.key, upload.upload_id)
    remote.abort_multipart_upload(upload.key, upload.upload_id)  # already gone: no error
    assert [o.key for o in remote.list()] == ["ours.tix"]
    assert remote.list_multipart_uploads() == []
    assert remote.get("ours.tix") == b"ours"


def test_validate_key_types() -> None:
    assert validate_key("files/ok-1.tix") == "files/ok-1.tix"
    with pytest.raises(TypeError):
        validate_key(b"files/x")
    with pytest.raises(ValueError, match="200"):
        validate_key("a" * 201)


def test_closed_remote_refuses_work(remote_url: str) -> None:
    r = open_remote(remote_url)
    r.close()
    assert r.closed
    with pytest.raises(ValueError, match="closed"):
        r.head("x")


# --------------------------------------------------------------------------
# large objects (multipart on S3)


def test_large_put_roundtrip(big_remote: Remote, tmp_path: Path) -> None:
    data = blob(11 * MiB + 123, seed=5)
    src = tmp_path / "big.tix"
    src.write_bytes(data)
    res = big_remote.put_if_absent("files/big.tix", src, size=len(data), crc32c=crc32c(data))
    assert res.created and res.identical
    info = big_remote.head("files/big.tix")
    assert info is not None and info.size == len(data) and info.crc32c == crc32c(data)
    assert big_remote.get("files/big.tix") == data
    assert big_remote.get_range("files/big.tix", 5 * MiB - 3, 5 * MiB + 3) == data[5 * MiB - 3 : 5 * MiB + 3]
    assert big_remote.list_multipart_uploads() == []
    # again: identical; different: a conflict that is not stored, and no upload stays open
    res = big_remote.put_if_absent("files/big.tix", src, size=len(data), crc32c=crc32c(data))
    assert not res.created and res.identical
    other = blob(11 * MiB + 123, seed=6)
    res = big_remote.put_if_absent("files/big.tix", other, size=len(other), crc32c=crc32c(other))
    assert not res.created and not res.identical
    assert big_remote.get("files/big.tix") == data
    assert big_remote.list_multipart_uploads() == []


def test_large_put_with_wrong_crc_aborts(big_remote: Remote, tmp_path: Path) -> None:
    data = blob(6 * MiB)
    src = tmp_path / "big.tix"
    src.write_bytes(data)
    with pytest.raises(CorruptFileError, match=r"big\.tix"):
        big_remote.put_if_absent("files/big.tix", src, size=len(data), crc32c=crc32c(data) ^ 0xFF)
    assert big_remote.head("files/big.tix") is None
    assert big_remote.list_multipart_uploads() == []


def test_cancel_event_abandons_upload(big_remote: Remote) -> None:
    data = blob(11 * MiB)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(UploadCancelledError):
        put(big_remote, "files/c.tix", data, cancel=cancel)
    assert big_remote.head("files/c.tix") is None
    assert big_remote.list_multipart_uploads() == []


@pytest.fixture
def streaming_remote(remote_url: str) -> Iterator[Remote]:
    """A remote that sends anything below 64 MiB as one streamed PutObject."""
    r = open_remote(remote_url, multipart_threshold=64 * MiB)
    yield r
    r.close()


@pytest.mark.parametrize("flipped", ["first byte", "last byte"])
def test_single_put_of_a_changed_file_stores_nothing(
    streaming_remote: Remote, tmp_path: Path, flipped: str
) -> None:
    # Several stream chunks: the first ones are on their way before the
    # change can be seen, and the request must still die unfinished.
    data = blob(3 * MiB + 5, seed=7)
    changed = bytearray(data)
    changed[0 if flipped == "first byte" else -1] ^= 0x40
    src = tmp_path / "s.tix"
    src.write_bytes(changed)
    with pytest.raises(CorruptFileError, match=r"s\.tix.*expected crc32c"):
        streaming_remote.put_if_absent("files/s.tix", src, size=len(data), crc32c=crc32c(data))
    assert streaming_remote.head("files/s.tix") is None
    assert streaming_remote.list() == []
    assert streaming_remote.list_multipart_uploads() == []
    src.write_bytes(data)  # the intact file then goes up, whole
    assert streaming_remote.put_if_absent("files/s.tix", src, size=len(data), crc32c=crc32c(data)).created
    assert streaming_remote.get("files/s.tix") == data


def test_single_put_cancelled_mid_body_stores_nothing(streaming_remote: Remote, tmp_path: Path) -> None:
    data = blob(12 * MiB, seed=8)  # more than one read on either back end
    src = tmp_path / "c.tix"
    src.write_bytes(data)
    cancel = threading.Event()
    real_pread = os.pread
    reads = 0

    def pread(fd: int, n: int, offset: int) -> bytes:
        nonlocal reads
        reads += 1
        if offset >= 2 * MiB:  # a shutdown's deadline passes mid-upload
            cancel.set()
        return real_pread(fd, n, offset)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "pread", pread)
        with pytest.raises(UploadCancelledError):
            streaming_remote.put_if_absent(
                "files/c.tix", src, size=len(data), crc32c=crc32c(data), cancel=cancel
            )
    assert reads >= 2  # it was under way
    assert streaming_remote.head("files/c.tix") is None
    assert streaming_remote.list() == []


# --------------------------------------------------------------------------
# S3 specifics


@pytest.fixture
def s3_remote(moto_server: Any) -> Iterator[S3Remote]:
    import uuid

    r = S3Remote(
        moto_server.bucket,
        f"mp-{uuid.uuid4().hex[:12]}",
        endpoint_url=moto_server.endpoint_url,
        multipart_threshold=5 * MiB,
        part_size=5 * MiB,
        upload_concurrency=2,
    )
    yield r
    r.close()


def wrap_client(
    monkeypatch: pytest.MonkeyPatch, remote: S3Remote, method: str, wrapper: Callable[..., Any]
) -> None:
    real = getattr(remote.client, method)
    monkeypatch.setattr(remote.client, method, lambda **kw: wrapper(real, **kw))


def test_s3_client_settings(s3_remote: S3Remote, moto_server: Any) -> None:
    cfg: Any = s3_remote.client.meta.config
    assert cfg.retries == {"total_max_attempts": 1, "mode": "standard"}
    assert cfg.connect_timeout == 10.0 and cfg.read_timeout == 60.0
    assert cfg.request_checksum_calculation == "when_required"
    assert cfg.response_checksum_validation == "when_required"
    assert cfg.s3 == {"addressing_style": "path"}
    # A store's uploads (upload_concurrency at once), its small reads (READS_PER_UPLOAD
    # times that) and its upkeep never wait for a connection.
    with S3Remote(moto_server.bucket, endpoint_url=moto_server.endpoint_url, upload_concurrency=8) as wide:
        assert wide.client.meta.config.max_pool_connections == 8 + READS_PER_UPLOAD * 8 + 2  # type: ignore[attr-defined]
    assert s3_remote.client.meta.endpoint_url == moto_server.endpoint_url
    assert s3_remote.url == f"s3://{moto_server.bucket}/{s3_remote.prefix}"
    assert s3_remote.prefix.endswith("/")


def test_s3_clock_is_the_servers_and_a_closed_remote_leaves_the_client(moto_server: Any) -> None:
    """Ages of remote objects are measured against the server's Date header,
    kept from its latest answer; the hook that keeps it must go with the
    remote, or a client handed to many remotes keeps them all alive."""
    import datetime as dt
    import gc
    import weakref

    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3", endpoint_url=moto_server.endpoint_url, config=Config(s3={"addressing_style": "path"})
    )
    r = S3Remote(moto_server.bucket, "clock", client=client)
    r.put_if_absent("a", b"x", size=1, crc32c=crc32c(b"x"))
    assert r._server_date is not None
    assert abs((r.clock() - dt.datetime.now(dt.UTC)).total_seconds()) < 5
    gone = weakref.ref(r)
    r.close()
    del r
    gc.collect()
    assert gone() is None  # the client, still held here, no longer holds the remote


@pytest.mark.parametrize(
    ("endpoint", "signed"), [("https://s3.example.test", False), ("http://127.0.0.1:9", True)]
)
def test_s3_body_is_hashed_for_signing_only_without_tls(
    _fake_aws_env: None, endpoint: str, signed: bool
) -> None:
    """Over https the precomputed CRC-32C in a signed header covers the body,
    so SigV4 does not read and SHA-256 it before sending (plain http does)."""
    import hashlib

    from botocore.awsrequest import AWSResponse

    sent: list[tuple[str, Any]] = []

    class Empty:
        def stream(self, *args: Any, **kwargs: Any) -> Iterator[bytes]:
            yield b""

    def answer(request: Any, **_: Any) -> AWSResponse:  # nothing leaves the process
        sent.append((request.method, request.headers.get("X-Amz-Content-SHA256")))
        return AWSResponse(request.url, 200, {"ETag": '"e"'}, Empty())  # type: ignore[arg-type]

    r = S3Remote("bucket", "p", endpoint_url=endpoint, region="us-east-1")
    r.client.meta.events.register("before-send.s3", answer)
    data = b"index bytes"
    try:
        assert r.put_if_absent("k", data, size=len(data), crc32c=crc32c(data)).created
    finally:
        r.close()
    expected = hashlib.sha256(data).hexdigest().encode() if signed else b"UNSIGNED-PAYLOAD"
    assert sent == [("PUT", expected)]


def test_s3_objects_live_under_the_prefix(s3_remote: S3Remote, moto_server: Any) -> None:
    put(s3_remote, "files/a.tix", b"hello")
    resp = moto_server.client.head_object(Bucket=moto_server.bucket, Key=s3_remote.prefix + "files/a.tix")
    assert resp["ContentLength"] == 5
    assert resp["Metadata"]["tix-crc32c"] == f"{crc32c(b'hello'):08x}"


def test_s3_single_put_sends_checksum_and_if_none_match(
    s3_remote: S3Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict[str, Any]] = []

    def spy(real: Callable[..., Any], **kw: Any) -> Any:
        seen.append(kw)
        return real(**kw)

    wrap_client(monkeypatch, s3_remote, "put_object", spy)
    put(s3_remote, "a", b"123456789")
    (kw,) = seen
    assert kw["IfNoneMatch"] == "*"
    assert kw["ChecksumCRC32C"] == "4waSgw=="  # base64(be32(0xE3069283))
    assert kw["Metadata"]["tix-size"] == "9"


def test_s3_single_put_reports_the_local_file_over_the_servers_answer(
    s3_remote: S3Remote, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = blob(3000)
    src = tmp_path / "f.tix"
    src.write_bytes(data)

    def server_rejects(real: Callable[..., Any], **kw: Any) -> Any:
        with contextlib.suppress(CorruptFileError):  # the body fails its CRC as it is sent
            while kw["Body"].read(1024):
                pass
        raise client_error("BadDigest", 400, "PutObject")

    wrap_client(monkeypatch, s3_remote, "put_object", server_rejects)
    with pytest.raises(CorruptFileError, match=r"f\.tix.*expected crc32c"):
        s3_remote.put_if_absent("f.tix", src, size=len(data), crc32c=crc32c(data) ^ 1)


def test_s3_multipart_bounded_concurrency_and_checksums(
    s3_remote: S3Remote, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = blob(21 * MiB, seed=9)  # 5 parts of 5 MiB (the last 1 MiB)
    src = tmp_path / "big.tix"
    src.write_bytes(data)
    lock = threading.Lock()
    active = 0
    peak = 0
    parts: list[dict[str, Any]] = []
    completes: list[dict[str, Any]] = []

    def slow_part(real: Callable[..., Any], **kw: Any) -> Any:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
            parts.append({k: v for k, v in kw.items() if k != "Body"})
        try:
            time.sleep(0.05)
            return real(**kw)
        finally:
            with lock:
                active -= 1

    def spy_complete(real: Callable[..., Any], **kw: Any) -> Any:
        completes.append(kw)
        return real(**kw)

    wrap_client(monkeypatch, s3_remote, "upload_part", slow_part)
    wrap_client(monkeypatch, s3_remote, "complete_multipart_upload", spy_complete)
    res = s3_remote.put_if_absent("big", src, size=len(data), crc32c=crc32c(data))
    assert res.created
    assert peak <= 2  # upload_concurrency
    assert sorted(p["PartNumber"] for p in parts) == [1, 2, 3, 4, 5]
    import base64
    import struct

    for p in parts:
        n = p["PartNumber"]
        chunk = data[(n - 1) * 5 * MiB : n * 5 * MiB]
        assert p["ContentLength"] == len(chunk)
        assert struct.unpack(">I", base64.b64decode(p["ChecksumCRC32C"]))[0] == crc32c(chunk)
    (kw,) = completes
    assert kw["IfNoneMatch"] == "*"
    assert kw["MpuObjectSize"] == len(data)
    assert struct.unpack(">I", base64.b64decode(kw["ChecksumCRC32C"]))[0] == crc32c(data)
    assert [p["PartNumber"] for p in kw["MultipartUpload"]["Parts"]] == [1, 2, 3, 4, 5]
    assert s3_remote.get("big") == data


@pytest.mark.parametrize(
    ("size", "settings", "limit"),
    [
        # One PutObject: a chunk of the file at a time.
        pytest.param(24 * MiB, {"multipart_threshold": 64 * MiB}, 4 * MiB, id="single-put"),
        # 4 parts of 16 MiB at once, each read from the file as it is sent: a
        # chunk each (and botocore's 1 MiB reads), not 64 MiB. Whole parts in
        # memory measured 40 MiB and more here; streamed ones 8 to 12.
        pytest.param(
            80 * MiB,
            {"multipart_threshold": 16 * MiB, "part_size": 16 * MiB, "upload_concurrency": 4},
            24 * MiB,
            id="multipart",
        ),
    ],
)
def test_s3_upload_streams_the_file_in_bounded_memory(
    moto_server: Any, tmp_path: Path, size: int, settings: dict[str, int], limit: int
) -> None:
    import tracemalloc
    import uuid

    data = blob(size, seed=9)
    src = tmp_path / "s.tix"
    src.write_bytes(data)
    with S3Remote(
        moto_server.bucket,
        f"st-{uuid.uuid4().hex[:12]}",
        endpoint_url=moto_server.endpoint_url,
        **settings,  # type: ignore[arg-type]
    ) as r:
        r.head("warm-up")  # the client's own first-call allocations
        tracemalloc.start()
        try:
            assert r.put_if_absent("s.tix", src, size=len(data), crc32c=crc32c(data)).created
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert r.list_multipart_uploads() == []
        info = r.head("s.tix")
        assert info is not None and info.size == len(data) and info.crc32c == crc32c(data)
        assert r.get("s.tix") == data
    assert peak < limit, f"a {size // MiB} MiB upload ({settings}) held {peak / MiB:.1f} MiB"


def test_s3_multipart_part_whose_bytes_change_while_sent_fails_the_upload_as_corrupt(
    s3_remote: S3Remote, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A part is read twice: for its CRC-32C, then as it is sent. The file
    changed in between (the store's sealed copy damaged on disk): the part's
    body fails its check before its last byte, the upload is aborted and the
    error names the local file, so the store seals again."""
    data = blob(12 * MiB, seed=5)  # parts of 5, 5 and 2 MiB
    src = tmp_path / "c.tix"
    src.write_bytes(data)
    sent: list[int] = []

    def damage_then_send(real: Callable[..., Any], **kw: Any) -> Any:
        sent.append(kw["PartNumber"])
        if kw["PartNumber"] == 2:
            with open(src, "r+b") as f:  # after the part's CRC was taken
                f.seek(6 * MiB)
                f.write(b"\xff" * 16)
        return real(**kw)

    wrap_client(monkeypatch, s3_remote, "upload_part", damage_then_send)
    with pytest.raises(CorruptFileError, match=r"c\.tix: bytes 5242880\.\.10485760 changed while uploading"):
        s3_remote.put_if_absent("c.tix", src, size=len(data), crc32c=crc32c(data))
    assert 2 in sent
    assert s3_remote.list_multipart_uploads() == []
    assert s3_remote.head("c.tix") is None


def test_s3_failed_part_aborts_the_upload(s3_remote: S3Remote, monkeypatch: pytest.MonkeyPatch) -> None:
    data = blob(16 * MiB)

    def fail_part_3(real: Callable[..., Any], **kw: Any) -> Any:
        if kw["PartNumber"] == 3:
            raise client_error("InternalError", 500, "UploadPart")
        return real(**kw)

    wrap_client(monkeypatch, s3_remote, "upload_part", fail_part_3)
    with pytest.raises(ClientError, match="InternalError"):
        put(s3_remote, "big", data)
    assert s3_remote.list_multipart_uploads() == []
    assert s3_remote.head("big") is None


def test_s3_failed_complete_aborts_the_upload(s3_remote: S3Remote, monkeypatch: pytest.MonkeyPatch) -> None:
    data = blob(6 * MiB)

    def fail(real: Callable[..., Any], **kw: Any) -> Any:
        raise client_error("ServiceUnavailable", 503, "CompleteMultipartUpload")

    wrap_client(monkeypatch, s3_remote, "complete_multipart_upload", fail)
    with pytest.raises(ClientError):
        put(s3_remote, "big", data)
    assert s3_remote.list_multipart_uploads() == []


def test_s3_interrupt_still_aborts(s3_remote: S3Remote, monkeypatch: pytest.MonkeyPatch) -> None:
    data = blob(11 * MiB)

    def interrupt(real: Callable[..., Any], **kw: Any) -> Any:
        if kw["PartNumber"] == 2:
            raise KeyboardInterrupt
        return real(**kw)

    wrap_client(monkeypatch, s3_remote, "upload_part", interrupt)
    with pytest.raises(KeyboardInterrupt):
        put(s3_remote, "big", data)
    assert s3_remote.list_multipart_uploads() == []


def test_s3_no_such_upload_on_complete_with_object_present(
    s3_remote: S3Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = blob(6 * MiB)

    def lost_response(real: Callable[..., Any], **kw: Any) -> Any:
        real(**kw)  # it went through, but we only see NoSuchUpload
        raise client_error("NoSuchUpload", 404, "CompleteMultipartUpload")

    wrap_client(monkeypatch, s3_remote, "complete_multipart_upload", lost_response)
    res = put(s3_remote, "big", data)
    assert res.identical and not res.created
    assert s3_remote.get("big") == data


def test_s3_no_such_upload_without_object_is_retryable(
    s3_remote: S3Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = blob(6 * MiB)
    calls = 0

    def vanished_once(real: Callable[..., Any], **kw: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            s3_remote.client.abort_multipart_upload(
                Bucket=kw["Bucket"], Key=kw["Key"], UploadId=kw["UploadId"]
            )
            raise client_error("NoSuchUpload", 404, "CompleteMultipartUpload")
        return real(**kw)

    wrap_client(monkeypatch, s3_remote, "complete_multipart_upload", vanished_once)
    res = run_with_retry(
        lambda: put(s3_remote, "big", data),
        policy=RetryPolicy(base_delay_s=0.0, max_delay_s=0.0),
        budget=RetryBudget(),
        describe="put big",
    )
    assert res.created and calls == 2
    assert s3_remote.get("big") == data
    assert s3_remote.list_multipart_uploads() == []


def test_s3_leftover_uploads_listed_and_aborted(s3_remote: S3Remote) -> None:
    full = s3_remote.prefix + "files/x.tix"
    up = s3_remote.client.create_multipart_upload(Bucket=s3_remote.bucket, Key=full)["UploadId"]
    other = s3_remote.client.create_multipart_upload(Bucket=s3_remote.bucket, Key="elsewhere/y")["UploadId"]
    try:
        uploads = s3_remote.list_multipart_uploads()
        assert [(u.key, u.upload_id) for u in uploads] == [("files/x.tix", up)]
        s3_remote.abort_multipart_upload("files/x.tix", up)
        s3_remote.abort_multipart_upload("files/x.tix", up)  # idempotent
        assert s3_remote.list_multipart_uploads() == []
    finally:
        s3_remote.client.abort_multipart_upload(Bucket=s3_remote.bucket, Key="elsewhere/y", UploadId=other)


def test_s3_endpoint_from_environment(moto_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint_url)
    with open_remote(f"s3://{moto_server.bucket}/env-test") as r:
        assert isinstance(r, S3Remote)
        assert r.client.meta.endpoint_url == moto_server.endpoint_url
        assert put(r, "k", b"via env").created
        assert r.get("k") == b"via env"


def test_s3_fatal_error_raises_remote_error_fast(moto_server: Any) -> None:
    r = S3Remote("no-such-bucket-here", "p", endpoint_url=moto_server.endpoint_url)
    calls = 0

    def op() -> Any:
        nonlocal calls
        calls += 1
        return put(r, "k", b"data")

    started = time.monotonic()
    with pytest.raises(RemoteError, match="NoSuchBucket") as info:
        run_with_retry(op, policy=RetryPolicy(), budget=RetryBudget(), describe=f"put k to {r.url}")
    assert calls == 1
    assert time.monotonic() - started < 10
    assert "put k to s3://no-such-bucket-here/p/" in str(info.value)
    assert "testing" not in str(info.value)  # the fake secret never shows
    r.close()


def test_s3_unreachable_endpoint_is_retried_then_remote_error() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = S3Remote("bucket", endpoint_url=f"http://127.0.0.1:{port}", connect_timeout=1, read_timeout=1)
    calls = 0

    def op() -> Any:
        nonlocal calls
        calls += 1
        return r.head("k")

    sends = 0

    def count(**kw: Any) -> None:
        nonlocal sends
        sends += 1

    r.client.meta.events.register("before-send.s3.*", count)
    with pytest.raises(RemoteError, match=r"3 attempts.*EndpointConnectionError"):
        run_with_retry(
            op,
            policy=RetryPolicy(attempts=3, base_delay_s=0.0, max_delay_s=0.0),
            budget=None,
            describe="head k",
        )
    assert calls == 3
    assert sends == 3  # botocore itself never retries
    r.close()


@contextlib.contextmanager
def s3_remote_served_by(handler: type) -> Iterator[S3Remote]:
    """An S3Remote whose endpoint is a plain HTTP server on 127.0.0.1 with
    ``handler`` (a ``BaseHTTPRequestHandler``): answers moto never gives."""
    import socketserver

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    r = S3Remote("bucket", endpoint_url=f"http://127.0.0.1:{server.server_address[1]}")
    try:
        yield r
    finally:
        r.close()
        server.shutdown()
        server.server_close()


def test_s3_get_takes_a_chunked_body_and_refuses_one_cut_short(_fake_aws_env: None) -> None:
    """A GET answered with Transfer-Encoding: chunked has no Content-Length
    (a proxy or an S3-compatible store may send it so). Its chunks say where
    the body ends, so a whole one is the object, not a truncated response;
    one cut short is still an error, and a retryable one."""
    import http.server

    body = blob(3000)
    cut = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "binary/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for at in range(0, len(body), 1000):
                chunk = body[at : at + 1000]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                if cut.is_set():
                    self.close_connection = True
                    return
            self.wfile.write(b"0\r\n\r\n")

        def log_message(self, *args: Any) -> None:
            pass

    with s3_remote_served_by(Handler) as r:
        assert r.get("k") == body
        assert r.get_range("k", 0, len(body)) == body
        cut.set()
        with pytest.raises(Exception) as info:
            r.get("k")
        assert classify(info.value) == "retry"


def test_s3_ranged_get_from_a_server_that_ignores_range(_fake_aws_env: None) -> None:
    """HTTP lets a server ignore Range and answer 200 with the whole object
    (some proxies and S3-compatible stores do). The bytes asked for are
    taken from it; the whole object served as the range failed the
    fetcher's block checks, twice, and the file was quarantined."""
    import http.server

    body = blob(3000)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "binary/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with s3_remote_served_by(Handler) as r:
        assert r.get_range("k", 100, 1100) == body[100:1100]
        assert r.get_range("k", 2900, 3500) == body[2900:]  # past the end: what there is
        assert r.get("k") == body


# --------------------------------------------------------------------------
# file:// specifics


def test_local_layout_and_leftovers(tmp_path: Path) -> None:
    root = tmp_path / "remote"
    r = LocalRemote(root)
    data = b"payload"
    put(r, "files/a.tix", data)
    assert (root / "files" / "a.tix").read_bytes() == data
    # no temp files remain; the sidecar is hidden from list()
    assert sorted(p.name for p in (root / "files").iterdir()) == [".a.tix.tixmeta", "a.tix"]
    assert [o.key for o in r.list()] == ["files/a.tix"]
    # a crash leftover is reported as an unfinished upload and can be aborted
    leftover = root / "files" / f".b.tix.{'0' * 32}.tixtmp"
    leftover.write_bytes(b"partial")
    uploads = r.list_multipart_uploads()
    assert [(u.key, u.upload_id) for u in uploads] == [("files/b.tix", leftover.name)]
    with pytest.raises(ValueError, match="upload_id"):
        r.abort_multipart_upload("files/a.tix", leftover.name)
    with pytest.raises(ValueError, match="upload_id"):
        r.abort_multipart_upload("files/b.tix", "../../etc/passwd")
    r.abort_multipart_upload("files/b.tix", leftover.name)
    r.abort_multipart_upload("files/b.tix", leftover.name)
    assert not leftover.exists()
    assert r.list_multipart_uploads() == []
    assert r.head("files/b.tix") is None


def test_local_missing_sidecar_falls_back_to_content(tmp_path: Path) -> None:
    """A crash between linking the object and writing its sidecar."""
    root = tmp_path / "remote"
    r = LocalRemote(root)
    data = blob(5000)
    put(r, "a.tix", data)
    (root / ".a.tix.tixmeta").unlink()
    info = r.head("a.tix")
    assert info is not None and info.crc32c == crc32c(data) and info.size == 5000
    res = put(r, "a.tix", data)
    assert not res.created and res.identical
    assert not put(r, "a.tix", blob(5000, seed=1)).identical


def test_local_stale_sidecar_is_not_trusted(tmp_path: Path) -> None:
    root = tmp_path / "remote"
    r = LocalRemote(root)
    put(r, "a.tix", b"first")
    sidecar = (root / ".a.tix.tixmeta").read_bytes()
    r.delete("a.tix")
    assert not (root / ".a.tix.tixmeta").exists()
    (root / "a.tix").write_bytes(b"other")  # placed by hand, old sidecar put back
    (root / ".a.tix.tixmeta").write_bytes(sidecar)
    info = r.head("a.tix")
    assert info is not None and info.crc32c == crc32c(b"other")
    # even when the new file reuses the old inode number and size
    st = os.stat(root / "a.tix")
    record = json.loads(sidecar)
    record["ino"] = st.st_ino
    (root / ".a.tix.tixmeta").write_text(json.dumps(record))
    info = r.head("a.tix")
    assert info is not None and info.crc32c == crc32c(b"other")


def test_local_keys_cannot_escape(tmp_path: Path) -> None:
    root = tmp_path / "remote"
    r = LocalRemote(root)
    for key in ("../escape", "a/../../escape", "/tmp/escape"):
        with pytest.raises(ValueError, match="key"):
            put(r, key, b"x")
    assert not (tmp_path / "escape").exists()
    assert list(tmp_path.iterdir()) == [root]


def test_local_symlinks_never_lead_out_of_the_root(tmp_path: Path) -> None:
    """Keys are walked from the root without following links: a linked
    directory or file below the root is refused (naming the key), never
    written, read, deleted or listed through."""
    root, outside = tmp_path / "remote", tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"outside-data")
    (outside / f".x.tix.{'0' * 32}.tixtmp").write_bytes(b"not ours")
    r = LocalRemote(root)
    put(r, "files/a.tix", b"inside")
    (root / "index").symlink_to(outside)  # a linked directory
    (root / "leak").symlink_to(outside / "secret.txt")  # a linked file
    (root / "files" / "alias.tix").symlink_to(root / "files" / "a.tix")  # even one inside the root

    with pytest.raises(KeyEscapesError, match=re.escape("'index/written.tix'")):
        put(r, "index/written.tix", b"hello")
    with pytest.raises(KeyEscapesError, match=re.escape("'index/new/deeper.tix'")):
        put(r, "index/new/deeper.tix", b"hello")
    with pytest.raises(KeyEscapesError, match="'leak'"):
        put(r, "leak", b"hello")
    for key in ("leak", "index/secret.txt", "files/alias.tix"):
        with pytest.raises(KeyEscapesError, match=re.escape(repr(key))):
            r.get(key)
        with pytest.raises(KeyEscapesError, match=re.escape(repr(key))):
            r.get_range(key, 0, 4)
        with pytest.raises(KeyEscapesError, match=re.escape(repr(key))):
            r.head(key)
        with pytest.raises(KeyEscapesError, match=re.escape(repr(key))):
            r.delete(key)
    with pytest.raises(KeyEscapesError, match="'index/'"):
        r.list("index/")
    assert [o.key for o in r.list()] == ["files/a.tix"]
    assert r.list_multipart_uploads() == []
    assert sorted(p.name for p in outside.iterdir()) == [f".x.tix.{'0' * 32}.tixtmp", "secret.txt"]
    assert (outside / "secret.txt").read_bytes() == b"outside-data"
    assert (root / "leak").is_symlink() and (root / "files" / "alias.tix").is_symlink()
    assert r.get("files/a.tix") == b"inside"
    # a missing key under a linked directory is refused too, not "absent"
    with pytest.raises(KeyEscapesError):
        r.head("index/nothing.tix")
    with pytest.raises(RemoteError, match="symbolic link"):
        run_with_retry(lambda: r.get("leak"), policy=RetryPolicy(), budget=None, describe="get leak")


def test_local_listings_fail_on_a_folder_they_cannot_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder under the root that cannot be opened fails the listing,
    naming its path: a listing that left it out would look complete, and
    the store, verify and the CLI all trust listings."""
    root = tmp_path / "remote"
    r = LocalRemote(root)
    put(r, "index/a.tix", b"data")
    put(r, "manifest/0000000000001-00000000.json", b"record")
    put(r, "manifest/deeper/x.json", b"record")
    (root / "manifest" / "deeper" / f".y.json.{'0' * 32}.tixtmp").write_bytes(b"partial")
    locked = root / "manifest" / "deeper"
    locked_st = locked.stat()
    locked.chmod(0)
    # Root's CAP_DAC_OVERRIDE ignores the mode: refuse it as the kernel does for anyone else.
    real_open = os.open

    def open_as_a_user(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.stat(path, dir_fd=dir_fd, follow_symlinks=False), locked_st):
                raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", open_as_a_user)
    try:
        for listing in (
            r.list,
            lambda: r.list("manifest/"),
            lambda: r.list("manifest/d"),
            lambda: r.list("manifest/deeper/"),
        ):
            with pytest.raises(PermissionError, match=re.escape(f"'{locked}'")):
                listing()
        assert [o.key for o in r.list("index/")] == ["index/a.tix"]  # a readable folder still lists
        # Uploads are looked for over the whole root, where a folder no store
        # made may be unreadable (lost+found): skipped, or reconciliation
        # (and so retention) never got done. The others are still listed.
        (root / "index" / f".b.tix.{'1' * 32}.tixtmp").write_bytes(b"partial")
        assert [u.key for u in r.list_multipart_uploads()] == ["index/b.tix"]
    finally:
        locked.chmod(0o755)


def test_local_concurrent_puts_have_one_winner(tmp_path: Path) -> None:
    r = LocalRemote(tmp_path / "remote")
    payloads = [blob(50_000, seed=i) for i in range(8)]
    results: list[Any] = [None] * len(payloads)
    barrier = threading.Barrier(len(payloads))

    def worker(i: int) -> None:
        barrier.wait()
        results[i] = put(r, "race.tix", payloads[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(payloads))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, res in enumerate(results) if res.created]
    assert len(winners) == 1
    stored = r.get("race.tix")
    assert stored == payloads[winners[0]]
    for i, res in enumerate(results):
        if i != winners[0]:
            assert not res.created and not res.identical
    info = r.head("race.tix")
    assert info is not None and info.crc32c == crc32c(stored)
    assert r.list_multipart_uploads() == []


def test_local_transient_os_error_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import tieredindex.remote as remote_mod

    r = LocalRemote(tmp_path / "remote")
    real_link = remote_mod._link_noreplace
    calls = 0

    def flaky_link(src: str, dst: str, *args: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError(errno.EIO, "I/O error", dst)
        real_link(src, dst, *args)

    monkeypatch.setattr(remote_mod, "_link_noreplace", flaky_link)
    res = run_with_retry(
        lambda: put(r, "k", b"data"),
        policy=RetryPolicy(base_delay_s=0.0, max_delay_s=0.0),
        budget=None,
        describe="put k",
    )
    assert res.created and calls == 2
    assert r.get("k") == b"data"
    assert r.list_multipart_uploads() == []  # the failed attempt left no temp file


# --------------------------------------------------------------------------
# URLs


def test_open_remote_file_urls(tmp_path: Path) -> None:
    r = open_remote((tmp_path / "a dir").as_uri())
    assert isinstance(r, LocalRemote)
    assert r.root == str(tmp_path / "a dir")
    assert (tmp_path / "a dir").is_dir()
    assert open_remote(r.url).root == r.root  # type: ignore[attr-defined]
    assert isinstance(open_remote(f"file://localhost{tmp_path}"), LocalRemote)


def test_open_remote_s3_urls(moto_server: Any) -> None:
    ep = moto_server.endpoint_url
    r = open_remote("s3://my-bucket/some/prefix", endpoint_url=ep, region="eu-west-1")
    assert isinstance(r, S3Remote)
    assert (r.bucket, r.prefix, r.url) == ("my-bucket", "some/prefix/", "s3://my-bucket/some/prefix/")
    assert r.client.meta.region_name == "eu-west-1"
    r2 = open_remote("s3://my-bucket", endpoint_url=ep)
    assert isinstance(r2, S3Remote) and r2.prefix == ""
    r.close()
    r2.close()


@pytest.mark.parametrize(
    ("setting", "value", "error"),
    [
        ("endpoint_url", 9000, TypeError),
        ("endpoint_url", "notaurl", ValueError),
        ("endpoint_url", "", ValueError),
        ("region", 1, TypeError),
        ("region", "", ValueError),
    ],
)
def test_open_remote_names_a_bad_s3_setting(setting: str, value: object, error: type[Exception]) -> None:
    """Not botocore's words for it ("'int' object is not iterable",
    "Invalid endpoint: https://s3..amazonaws.com"): the argument's name."""
    with pytest.raises(error, match=setting):
        open_remote("s3://bucket/p", **{setting: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    [
        "",
        "relative/path",
        "file://relative/path",
        "file:relative",
        "file:///tmp/x?y=1",
        "file:///tmp/x#frag",
        "http://example.com/x",
        "s3://",
        "s3://Bad_Bucket!/p",
        "s3://ab/p",
        "s3://key:secret@bucket/p",
        "s3://bucket:9000/p",
        "s3://bucket//p",
        "s3://bucket/../p",
        "s3://bucket/a/./b",
    ],
)
def test_open_remote_rejects_bad_urls(url: str) -> None:
    with pytest.raises(ValueError) as info:
        open_remote(url)
    if "@" in url:
        assert "secret" not in str(info.value)
        assert "s3://<redacted>@bucket/p" in str(info.value)
    else:
        assert repr(url) in str(info.value)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("file:///tmp/tix\tremote", "control character '\\t'"),
        ("file:///tmp/tix-remote\n", "control character '\\n'"),
        ("file:///tmp/tix\r-remote", "control character '\\r'"),
        ("file:///tmp/tix\x7fremote", "control character '\\x7f'"),
        ("s3://buc\nket/p", "control character '\\n'"),
        ("s3://bucket/p\t", "control character '\\t'"),
        ("file:///tmp/tix%ffremote", "not valid UTF-8"),
        ("file:///tmp/tix%C3", "not valid UTF-8"),
        ("file:///tmp/tix%00remote", "NUL"),
    ],
)
def test_open_remote_never_turns_a_bad_url_into_another_location(url: str, problem: str) -> None:
    """urlsplit drops tabs and line breaks, and a lenient unquote turns bad
    escapes into U+FFFD: either would open some other directory or prefix."""
    with pytest.raises(ValueError) as info:
        open_remote(url)
    assert repr(url) in str(info.value)
    assert problem in str(info.value)


@pytest.mark.parametrize(
    "url", ["file:///", "file:////", "file:///..", "file:///tmp/..", "file://localhost/"]
)
def test_open_remote_refuses_the_filesystem_root(url: str, tmp_path: Path) -> None:
    """verify(repair=True) deletes what no manifest names under the root, so
    the root of the filesystem (or a link to it) is never a remote."""
    with pytest.raises(ValueError, match="filesystem root") as info:
        open_remote(url)
    assert repr(url) in str(info.value)
    link = tmp_path / "to-root"
    link.symlink_to("/")
    with pytest.raises(ValueError, match="filesystem root"):
        open_remote(f"file://{link}")
    with pytest.raises(ValueError, match="root"):
        LocalRemote(link)


@pytest.mark.parametrize("how", ["removed", "renamed", "a file"])
def test_a_file_remote_whose_root_is_gone_is_no_empty_remote(tmp_path: Path, how: str) -> None:
    """The root is made when the remote is opened: a missing root is never
    an empty remote (listing nothing, every object "not found": the store
    would forget its files). Every operation raises an error naming the
    root, one no retry can help and no "not found"."""
    root = tmp_path / "remote"
    r = LocalRemote(root)
    r.put_if_absent("index/a.tix", b"abc", size=3, crc32c=crc32c(b"abc"))
    if how == "removed":
        for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        root.rmdir()
    else:
        root.rename(tmp_path / "elsewhere")
        if how == "a file":
            root.write_bytes(b"")
    operations: dict[str, Callable[[], object]] = {
        "list": lambda: r.list(""),
        "list prefix": lambda: r.list("index/"),
        "head": lambda: r.head("index/a.tix"),
        "get": lambda: r.get("index/a.tix"),
        "get_range": lambda: r.get_range("index/a.tix", 0, 2),
        "list_multipart_uploads": r.list_multipart_uploads,
        "put_if_absent": lambda: r.put_if_absent("index/b.tix", b"x", size=1, crc32c=crc32c(b"x")),
        "delete": lambda: r.delete("index/a.tix"),
    }
    for name, op in operations.items():
        with pytest.raises(RemoteRootMissingError) as info:
            op()
        assert str(root) in str(info.value), name
        assert not isinstance(info.value, FileNotFoundError), name
        assert classify(info.value) == "fatal", name
    assert not root.is_dir()  # nothing made it again


def test_s3_head_trusts_the_stores_own_checksum_over_the_metadata(
    s3_remote: S3Remote, moto_server: Any
) -> None:
    """An object whose tix-crc32c metadata vouches for other bytes than it
    holds (a foreign writer, or bytes damaged after the checksum was
    taken) is not taken for ours: S3's own full-object CRC-32C of what it
    stores wins, so a put-if-absent of the bytes the metadata names is a
    conflict, never an identical object."""
    ours, theirs = blob(6 * MiB, seed=1), blob(6 * MiB, seed=2)
    key = s3_remote.prefix + "index/x.tix"
    client = moto_server.client
    upload_id = client.create_multipart_upload(
        Bucket=moto_server.bucket,
        Key=key,
        ChecksumAlgorithm="CRC32C",
        ChecksumType="FULL_OBJECT",
        Metadata={"tix-size": str(len(ours)), "tix-crc32c": f"{crc32c(ours):08x}"},  # the lie
    )["UploadId"]
    parts = []
    for number, (start, end) in enumerate(((0, 5 * MiB), (5 * MiB, len(theirs))), start=1):
        checksum = crc32c_b64(crc32c(theirs[start:end]))
        etag = client.upload_part(
            Bucket=moto_server.bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=theirs[start:end],
            ChecksumCRC32C=checksum,
        )["ETag"]
        parts.append({"PartNumber": number, "ETag": etag, "ChecksumCRC32C": checksum})
    client.complete_multipart_upload(
        Bucket=moto_server.bucket,
        Key=key,
        UploadId=upload_id,
        MultipartUpload={"Parts": parts},
        ChecksumCRC32C=crc32c_b64(crc32c(theirs)),
        ChecksumType="FULL_OBJECT",
        MpuObjectSize=len(theirs),
    )
    info = s3_remote.head("index/x.tix")
    assert info is not None and info.size == len(ours)
    assert info.crc32c == crc32c(theirs) != crc32c(ours)
    result = put(s3_remote, "index/x.tix", ours)
    assert not result.created and not result.identical
    assert s3_remote.get("index/x.tix") == theirs  # untouched


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        ({"ChecksumCRC32C": "4waSgw==", "ChecksumType": "FULL_OBJECT"}, 0xE3069283),
        ({"ChecksumCRC32C": "4waSgw=="}, 0xE3069283),  # single PutObject: no type reported
        ({"ChecksumCRC32C": "4waSgw==-3", "ChecksumType": "COMPOSITE"}, None),  # part checksums
        ({"ChecksumCRC32C": "not base64!"}, None),
        ({"ChecksumCRC32C": "AAAAAAA="}, None),  # five bytes
        ({}, None),
    ],
)
def test_only_a_whole_object_crc_from_the_store_is_taken(head: dict[str, str], expected: int | None) -> None:
    from tieredindex.remote import _full_object_crc

    assert _full_object_crc(head) == expected


def _vanishing(remote: Remote, method: str, key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The object at ``key`` is deleted just before the first call of
    ``method`` (the HEAD after a put found the key taken) looks at it."""
    real = getattr(remote, method)
    calls: list[int] = []

    def vanish(*args: Any, **kwargs: Any) -> Any:
        if not calls:
            calls.append(1)
            remote.delete(key)
        return real(*args, **kwargs)

    monkeypatch.setattr(remote, method, vanish)


@pytest.mark.parametrize("backend", ["file", "s3"])
def test_a_key_gone_between_the_412_and_its_head_is_retried_not_a_conflict(
    backend: str, tmp_path: Path, moto_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deleted in between, the object is neither ours nor different: the put
    raises ObjectVanishedError, which the retry policy retries, and the
    retry stores the object (before, it was reported as a conflict, a final
    state that no retry undoes)."""
    import uuid

    remote: Remote
    if backend == "file":
        remote = LocalRemote(tmp_path / "remote")
        method = "_head_at"
    else:
        remote = S3Remote(
            moto_server.bucket, f"v-{uuid.uuid4().hex[:12]}", endpoint_url=moto_server.endpoint_url
        )
        method = "head"
    put(remote, "index/x.tix", b"theirs")
    _vanishing(remote, method, "index/x.tix", monkeypatch)
    with pytest.raises(ObjectVanishedError, match=r"index/x\.tix") as caught:
        put(remote, "index/x.tix", b"ours")
    assert classify(caught.value) == "retry"
    result = run_with_retry(
        lambda: put(remote, "index/x.tix", b"ours"),
        policy=RetryPolicy(attempts=3, base_delay_s=0.001, max_delay_s=0.01, deadline_s=5),
        budget=None,
        describe="put",
    )
    assert result.created and remote.get("index/x.tix") == b"ours"
    remote.close()


def test_s3_put_if_absent_check_passes_on_a_store_that_refuses_overwrites(s3_remote: S3Remote) -> None:
    s3_remote.check_put_if_absent()
    assert s3_remote.list() == []  # the probe object is gone again


def test_s3_a_store_that_ignores_if_none_match_is_detected(
    s3_remote: S3Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some S3-compatibles (older MinIO, emulators) accept ``If-None-Match: *``
    and overwrite anyway: every put-if-absent would then replace what is
    stored (another writer's OWNER record included) without a word. The
    check writes a probe twice and refuses such a store."""

    def ignore_condition(real: Callable[..., Any], **kw: Any) -> Any:
        kw.pop("IfNoneMatch", None)
        return real(**kw)

    puts: list[str] = []

    def ignore_condition_counted(real: Callable[..., Any], **kw: Any) -> Any:
        puts.append(kw["Key"])
        return ignore_condition(real, **kw)

    wrap_client(monkeypatch, s3_remote, "put_object", ignore_condition_counted)
    with pytest.raises(ConditionalWriteIgnoredError, match=re.escape(s3_remote.url)) as caught:
        s3_remote.check_put_if_absent()
    assert classify(caught.value) == "fatal"
    assert s3_remote.list() == []
    assert len(puts) == 2
    # Asked again (each upload of the refused store asks): the verdict stands, no new probe.
    with pytest.raises(ConditionalWriteIgnoredError):
        s3_remote.check_put_if_absent()
    assert len(puts) == 2


def test_a_file_remote_needs_no_put_if_absent_check(tmp_path: Path) -> None:
    remote = LocalRemote(tmp_path / "remote")
    remote.check_put_if_absent()
    assert remote.list() == []
