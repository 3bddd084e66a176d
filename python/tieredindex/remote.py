"""Remote object stores for sealed index files: ``file://`` and ``s3://``.

A :class:`Remote` stores immutable objects under relative keys such as
``"files/abc.tix"``; the remote adds its own prefix. Writes are
*put-if-absent*: an existing object is never overwritten. Every object records
its size and CRC-32C (``tix-size`` / ``tix-crc32c`` metadata), which
:meth:`Remote.head` returns, so a caller can verify an upload (an ETag is not
enough) and recognise its own earlier upload after a crash.

Operations raise plain exceptions (botocore, ``OSError``, ...) and never retry
by themselves; wrap them in :func:`tieredindex.retry.run_with_retry`.

Keys are validated the same way on every back end: non-empty ``/``-separated
segments, none ``"."``/``".."`` or starting with ``"."`` (reserved for the
``file://`` back end's temporary and sidecar files), no leading ``/``, no
control characters, at most 200 UTF-8 bytes per segment and 900 in all.

Listings report what is really stored, valid key or not: a stray object or
upload another tool left under the prefix (``a//b`` is an ordinary S3 key; a
file name may hold a newline, a backslash or bytes that are not UTF-8) is
listed by its raw name, and :meth:`Remote.delete` and
:meth:`Remote.abort_multipart_upload` take such a *listed* key as it is,
checking only that it stays under the prefix (see :func:`_listed_key`).
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import ctypes
import ctypes.util
import dataclasses
import datetime as dt
import email.utils
import errno
import hashlib
import json
import logging
import os
import re
import stat
import struct
import threading
import time
import urllib.parse
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

from tieredindex._native import CorruptFileError, TieredIndexError, crc32c
from tieredindex.faults import fault_point
from tieredindex.layout import PROBE_KEY_PREFIX
from tieredindex.pool import DaemonThreadPool
from tieredindex.retry import RetryPolicy, run_with_retry

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

__all__ = [
    "DEFAULT_MULTIPART_THRESHOLD",
    "DEFAULT_PART_SIZE",
    "ConditionalWriteIgnoredError",
    "KeyEscapesError",
    "LocalRemote",
    "MultipartUpload",
    "ObjectInfo",
    "ObjectNotFoundError",
    "ObjectVanishedError",
    "PutResult",
    "Remote",
    "RemoteRootMissingError",
    "S3Remote",
    "Source",
    "UploadCancelledError",
    "open_remote",
    "validate_key",
]

_LOG = logging.getLogger("tieredindex")

MiB = 1024 * 1024
# Small reads (manifest records, a query's slot records and runs of entries)
# run this many times `upload_concurrency` at once: each is a round trip of
# latency, not bandwidth, so a query over N remote files or a catalog of N
# records takes N / (reads at once) round trips. Measured over 200 files on a
# 50 ms link: a wide query 2.6 s at 8 at once, 0.96 s at 32.
READS_PER_UPLOAD = 4
# AWS's guidance: "when your object size reaches 100 MB, you should consider
# using multipart uploads". Below it one PutObject is two round trips and one
# request fewer to fail than create + parts + complete, which shortens the
# shutdown that uploads the last file.
DEFAULT_MULTIPART_THRESHOLD = 100 * 1000 * 1000
DEFAULT_PART_SIZE = 8 * MiB
# How hard the abort of a failed multipart upload is tried (_abort_quietly).
ABORT_POLICY = RetryPolicy(attempts=3, base_delay_s=0.05, max_delay_s=0.2, deadline_s=1.0)
S3_MIN_PART_SIZE = 5 * MiB
S3_MAX_PARTS = 10_000
_READ_CHUNK = 8 * MiB
_STREAM_CHUNK = 1 * MiB  # a single PutObject's body is read from the file this much at a time

META_SIZE = "tix-size"
META_CRC32C = "tix-crc32c"
_RESERVED_META = frozenset({META_SIZE, META_CRC32C})
_META_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")

Source = str | os.PathLike[str] | bytes | bytearray | memoryview
"""What :meth:`Remote.put_if_absent` uploads: a local file path, or the bytes."""


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
    """One remote object.

    ``size`` is the stored object's actual length. ``crc32c`` is the
    object's CRC-32C as the store itself computed it over the stored bytes,
    when it reports one for the whole object (S3 ``HeadObject`` with
    ``ChecksumMode=ENABLED``: real S3 for every object uploaded with one,
    moto for FULL_OBJECT multipart uploads only); otherwise the checksum
    recorded at upload (``tix-crc32c``, which only the uploader vouches
    for); ``None`` when unknown: always from :meth:`Remote.list`, which
    does not read metadata, and for foreign objects.
    ``metadata`` holds all user metadata, ``tix-size``/``tix-crc32c`` included
    (empty from :meth:`Remote.list`).
    ``crc32c_by_store`` tells the two apart: True when the store computed
    ``crc32c`` over the bytes it holds (S3's own checksum; a file:// object,
    hashed as it was written or read), False when it is the uploader's claim.
    """

    key: str
    size: int
    crc32c: int | None
    last_modified: dt.datetime
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict, hash=False)
    etag: str | None = None
    crc32c_by_store: bool = False


@dataclasses.dataclass(frozen=True)
class PutResult:
    """Outcome of :meth:`Remote.put_if_absent`.

    * ``created=True, identical=True``: this call wrote the object.
    * ``created=False, identical=True``: the object already existed with the
      same size and CRC-32C (e.g. an earlier, interrupted upload of ours).
    * ``created=False, identical=False``: a *conflict*: a different object is
      stored under the key. It was not overwritten.

    A key found taken whose object is gone by the time it is compared
    raises :class:`ObjectVanishedError` (retried) instead.

    ``existing`` is the stored object's :class:`ObjectInfo` when known.
    ``sent_md5`` is the hex MD5 of the bytes a single-request upload sent:
    an S3 server that reports no checksum of its own still reports the MD5
    of what it stored as the ETag (unless it encrypts with KMS), so the two
    show that it stored exactly those bytes.
    """

    created: bool
    identical: bool
    existing: ObjectInfo | None = None
    sent_md5: str | None = None


RetryCall = Callable[[Callable[[], Any], str], Any]
"""``retry(op, describe)`` runs ``op()`` under the caller's retry policy and
returns its result (what :func:`tieredindex.retry.run_with_retry` does; a
failure for good raises ``RemoteError`` naming ``describe``)."""


class MultipartUpload(NamedTuple):
    key: str
    upload_id: str
    initiated: dt.datetime


ObjectList = list[ObjectInfo]
UploadList = list[MultipartUpload]


class ObjectNotFoundError(FileNotFoundError):
    """:meth:`Remote.get` / :meth:`Remote.get_range` of a key with no object."""

    def __init__(self, key: str, where: str) -> None:
        super().__init__(errno.ENOENT, f"no object {key!r} in {where}", key)
        self.key = key


class UploadCancelledError(Exception):
    """``put_if_absent`` stopped because its ``cancel`` event was set."""


class _UploadGone(Exception):
    """A part was answered NoSuchUpload: the upload was aborted or completed
    meanwhile, so the part is not sent again (the upload is begun again)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _part_error(exc: Exception) -> Exception:
    """What a part's retry raised, as the error the part itself met: the
    retry's RemoteError wraps it (its cause), and a vanished upload is the
    server's NoSuchUpload."""
    cause = exc.__cause__ if isinstance(exc, TieredIndexError) and exc.__cause__ is not None else exc
    if isinstance(cause, _UploadGone):
        return cause.error
    return cause if isinstance(cause, Exception) else exc


# --------------------------------------------------------------------------
# Validation helpers


def _bad_key(what: str, key: object, why: str) -> ValueError:
    return ValueError(f"invalid {what} {key!r}: {why}")


def _check_segments(what: str, key: str, text: str) -> None:
    for seg in text.split("/"):
        if not seg:
            raise _bad_key(what, key, "empty path segment")
        if seg in (".", ".."):
            raise _bad_key(what, key, f"segment {seg!r} is not allowed")
        if seg.startswith("."):
            raise _bad_key(what, key, "segments may not start with '.'")
        if len(seg.encode("utf-8", "surrogatepass")) > 200:
            raise _bad_key(what, key, "a segment is longer than 200 bytes")


def validate_key(key: object, what: str = "key") -> str:
    """Return ``key`` if it is a valid relative object key, else raise.

    ``TypeError`` if it is not a ``str``; ``ValueError`` naming the key if it is
    empty, absolute, has empty/``.``/``..``/dot-prefixed segments, control
    characters (NUL included) or is too long.
    """
    if not isinstance(key, str):
        raise TypeError(f"{what} must be a str, got {type(key).__name__}")
    if not key:
        raise _bad_key(what, key, "empty")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        raise _bad_key(what, key, "control characters (NUL included) are not allowed")
    if key.startswith("/"):
        raise _bad_key(what, key, "absolute keys are not allowed")
    if "\\" in key:
        raise _bad_key(what, key, "backslashes are not allowed")
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad_key(what, key, "not valid UTF-8") from None
    if len(encoded) > 900:
        raise _bad_key(what, key, "longer than 900 bytes")
    _check_segments(what, key, key)
    return key


def _listed_key(key: object, *, empty_segments: bool) -> str:
    """Return ``key`` if it can name an object under the prefix, else raise.

    For keys as :meth:`Remote.list` and :meth:`Remote.list_multipart_uploads`
    report them, which need not pass :func:`validate_key`: only confinement
    is checked. Never empty or with a ``"."``/``".."`` segment (a path
    resolver, or an HTTP layer that resolves dot segments, would leave the
    prefix); with ``empty_segments=False`` (directories, where ``a//b`` would
    be ``a/b`` and ``/a`` absolute) no empty or dot-prefixed segment and no
    NUL either.
    """
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, got {type(key).__name__}")
    if not key:
        raise _bad_key("key", key, "empty")
    segments = key.split("/")
    if any(seg in (".", "..") for seg in segments):
        raise _bad_key("key", key, "'.' and '..' segments would leave the prefix")
    if not empty_segments:
        if "\x00" in key:
            raise _bad_key("key", key, "NUL is not allowed")
        if not all(segments):
            raise _bad_key("key", key, "an empty segment cannot name a file")
        if any(seg.startswith(".") for seg in segments):
            raise _bad_key("key", key, "segments may not start with '.'")
    return key


def _validate_prefix(prefix: object) -> str:
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
    if prefix == "":
        return prefix
    validate_key(prefix[:-1] if prefix.endswith("/") else prefix, "prefix")
    return prefix


def _check_int(name: str, value: object, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not minimum <= value <= maximum:
        raise ValueError(f"{name} must be in [{minimum}, {maximum}], got {value}")
    return value


# botocore's own rule for a region (a host label), which it would raise
# InvalidRegionError for; empty is refused too (it makes "s3..amazonaws.com").
_REGION_RE = re.compile(r"^(?![0-9]+$)(?!-)[a-zA-Z0-9-]{1,63}(?<!-)$")


def check_endpoint_url(value: object, name: str = "endpoint_url") -> str | None:
    """``value`` if it is None or an http:// or https:// URL with a host
    (an S3 endpoint); else TypeError or ValueError naming ``name``, before
    botocore says "Invalid endpoint" or "'int' object is not iterable"."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(
            f"{name} must be a str (an http:// or https:// URL) or None, got {type(value).__name__}"
        )
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 (urlsplit checks the port only when asked)
    except ValueError as exc:
        raise ValueError(f"{name} {value!r} is not a valid URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{name} must be an http:// or https:// URL with a host, got {value!r}")
    return value


def check_region(value: object, name: str = "region") -> str | None:
    """``value`` if it is None or a region name botocore takes; else
    TypeError or ValueError naming ``name``."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str or None, got {type(value).__name__}")
    if not _REGION_RE.match(value):
        raise ValueError(f"{name} must be a region name such as 'us-east-1', got {value!r}")
    return value


def _user_metadata(metadata: Mapping[str, str] | None, size: int, crc: int) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in (metadata or {}).items():
        if not isinstance(k, str) or not _META_KEY_RE.match(k):
            raise ValueError(f"metadata key {k!r} must match [a-z0-9][a-z0-9-]*")
        if k in _RESERVED_META:
            raise ValueError(f"metadata key {k!r} is reserved")
        if not isinstance(v, str) or not v.isascii() or not v.isprintable():
            raise ValueError(f"metadata value for {k!r} must be printable ASCII text")
        out[k] = v
    out[META_SIZE] = str(size)
    out[META_CRC32C] = f"{crc:08x}"
    return out


def _parse_crc(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        crc = int(value, 16)
    except ValueError:
        return None
    return crc if 0 <= crc <= 0xFFFFFFFF else None


def _full_object_crc(head: Mapping[str, Any]) -> int | None:
    """The CRC-32C S3 reports for a whole object (HeadObject with
    ``ChecksumMode=ENABLED``), or None: none reported, or a COMPOSITE one
    (a checksum of part checksums, ``<base64>-<parts>``)."""
    value = head.get("ChecksumCRC32C")
    if not isinstance(value, str) or head.get("ChecksumType", "FULL_OBJECT") != "FULL_OBJECT" or "-" in value:
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        return None
    return int.from_bytes(raw, "big") if len(raw) == 4 else None


def crc32c_of_file(path: str | os.PathLike[str]) -> int:
    """CRC32C of a whole file, read in chunks (memory stays bounded)."""
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(_READ_CHUNK):
            crc = crc32c(chunk, crc)
    return crc


def crc32c_b64(crc: int) -> str:
    """The ``x-amz-checksum-crc32c`` form of a CRC: base64 of big-endian u32."""
    return base64.b64encode(struct.pack(">I", crc)).decode("ascii")


class _Payload:
    """A validated upload source: bytes in memory or an open file."""

    def __init__(self, source: Source, size: int, crc: int) -> None:
        self.size = _check_int("size", size, 0, 2**63 - 1)
        self.crc = _check_int("crc32c", crc, 0, 0xFFFFFFFF)
        self.data: memoryview | None = None
        self.path: str | None = None
        self.fd: int | None = None
        if isinstance(source, (bytes, bytearray, memoryview)):
            view = memoryview(source)
            if not view.c_contiguous:
                raise ValueError("source buffer must be contiguous")
            view = view.cast("B")
            if view.nbytes != size:
                raise ValueError(f"size={size} does not match the source's {view.nbytes} bytes")
            self.data = view
        elif isinstance(source, (str, os.PathLike)):
            self.path = os.fsdecode(source)
            self.fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            try:
                actual = os.fstat(self.fd).st_size
            except BaseException:
                self.close()
                raise
            if actual != size:
                self.close()
                raise CorruptFileError(f"{self.path}: local file is {actual} bytes, expected size {size}")
        else:
            raise TypeError(f"source must be a path or a bytes-like object, got {type(source).__name__}")

    @property
    def name(self) -> str:
        return self.path if self.path is not None else "<bytes>"

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset`` (a short file is corrupt)."""
        if self.data is not None:
            return bytes(self.data[offset : offset + length])
        assert self.fd is not None
        chunks: list[bytes] = []
        got = 0
        while got < length:
            chunk = os.pread(self.fd, length - got, offset + got)
            if not chunk:
                raise CorruptFileError(
                    f"{self.name}: local file shrank while uploading "
                    f"(short read at offset {offset + got}, expected size {self.size})"
                )
            chunks.append(chunk)
            got += len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def chunks(
        self, chunk_size: int = _READ_CHUNK, start: int = 0, length: int | None = None
    ) -> Iterator[bytes]:
        """The payload, or ``length`` bytes of it from ``start``, ``chunk_size`` at a time."""
        end = self.size if length is None else start + length
        for offset in range(start, end, chunk_size):
            yield self.read(offset, min(chunk_size, end - offset))

    def stream(self, cancel: threading.Event | None = None) -> _CheckedStream:
        """The whole payload as a file-like request body (see :class:`_CheckedStream`)."""
        return _CheckedStream(self, cancel)

    def stream_part(
        self, offset: int, length: int, crc: int, cancel: threading.Event | None = None
    ) -> _CheckedStream:
        """``length`` bytes from ``offset`` as a request body, checked
        against ``crc`` (see :class:`_CheckedStream`); no MD5."""
        return _CheckedStream(self, cancel, start=offset, length=length, crc=crc, md5=False)

    def check_crc(self, actual: int) -> None:
        if actual != self.crc:
            raise (CorruptFileError if self.path is not None else ValueError)(
                f"{self.name}: content CRC-32C is {actual:08x}, expected crc32c {self.crc:08x}"
            )

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> _Payload:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _CheckedStream:
    """A request body read from the payload as the request is sent: the whole
    payload (a single PutObject) or one range of it (a part).

    Memory stays at one chunk whatever the size. The CRC-32C runs over what
    was read, and the read that reaches the end checks it *before* returning
    the last chunk (against the payload's CRC, or the part's, taken from the
    file just before): a file that changed since raises there, the request
    dies short of its Content-Length, and the server stores nothing (moto,
    unlike S3, does not check the checksum header). ``cancel`` is looked at
    before every chunk, so a shutdown can stop the upload mid-body the same
    way. ``failure`` keeps the error, because the HTTP stack wraps what a
    body raises in its own connection error. The MD5 (the ETag a single
    PutObject is answered with) is taken only when asked for.
    """

    def __init__(
        self,
        payload: _Payload,
        cancel: threading.Event | None,
        *,
        start: int = 0,
        length: int | None = None,
        crc: int | None = None,
        md5: bool = True,
    ) -> None:
        self._payload = payload
        self._cancel = cancel
        self._start = start
        self._length = payload.size - start if length is None else length
        self._expected_crc = crc  # None: the whole payload's, checked by the payload
        self._offset = 0  # bytes of the range read into the buffer so far
        self._crc = 0
        self._md5 = hashlib.md5(usedforsecurity=False) if md5 else None
        self._buffer = memoryview(b"")
        self.failure: Exception | None = None

    @property
    def md5_hex(self) -> str | None:
        """The MD5 of the whole body, once it has all been read (if taken)."""
        if self._md5 is None or self._offset != self._length:
            return None
        return self._md5.hexdigest()

    def read(self, size: int = -1) -> bytes:
        if not self._buffer:
            self._fill()
        if size is None or size < 0:
            size = len(self._buffer)
        chunk, self._buffer = self._buffer[:size], self._buffer[size:]
        return bytes(chunk)

    def _fill(self) -> None:
        payload = self._payload
        if self._offset >= self._length:
            return
        try:
            if self._cancel is not None and self._cancel.is_set():
                raise UploadCancelledError(f"upload of {payload.name} cancelled")
            data = payload.read(self._start + self._offset, min(_STREAM_CHUNK, self._length - self._offset))
            self._offset += len(data)
            self._crc = crc32c(data, self._crc)
            if self._md5 is not None:
                self._md5.update(data)
            if self._offset == self._length:
                self._check_crc()
        except Exception as exc:
            self.failure = exc
            raise
        self._buffer = memoryview(data)

    def _check_crc(self) -> None:
        if self._expected_crc is None:
            self._payload.check_crc(self._crc)
        elif self._crc != self._expected_crc:
            end = self._start + self._length
            raise CorruptFileError(
                f"{self._payload.name}: bytes {self._start}..{end} changed while uploading "
                f"(CRC-32C {self._crc:08x}, read as {self._expected_crc:08x} just before)"
            )

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        # botocore rewinds a body before it sends it (and after hashing it
        # for the signature over plain http): only the start is allowed.
        if (offset, whence) != (0, os.SEEK_SET):
            raise OSError(errno.ESPIPE, "a checked upload stream can only rewind to its start")
        self._offset, self._crc, self._buffer = 0, 0, memoryview(b"")
        if self._md5 is not None:
            self._md5 = hashlib.md5(usedforsecurity=False)
        return 0

    def tell(self) -> int:
        return self._offset - len(self._buffer)


class ObjectVanishedError(OSError):
    """A put-if-absent found the key taken (412, or the name exists), and
    the HEAD that followed found nothing: the object was deleted in between.
    Neither created nor a conflict: the put is to be tried again (``errno``
    is ``EAGAIN``, which the retry policy retries)."""

    def __init__(self, key: str) -> None:
        super().__init__(
            errno.EAGAIN,
            f"{key}: the key was taken, then gone before it could be compared (deleted meanwhile); try again",
        )
        self.key = key


class ConditionalWriteIgnoredError(TieredIndexError):
    """The store took a second ``If-None-Match: *`` put of a key: it ignores
    the condition (older MinIO, some emulators), so every put-if-absent
    would silently overwrite what is stored. Not retried."""

    def __init__(self, url: str) -> None:
        super().__init__(
            f"{url}: the store overwrote an object despite If-None-Match: *; "
            "put-if-absent is not safe on it, so nothing is written"
        )


def _compare(key: str, existing: ObjectInfo | None, size: int, crc: int) -> PutResult:
    """The outcome of a put that found ``key`` taken, from a HEAD of it."""
    if existing is None:
        raise ObjectVanishedError(key)
    identical = existing.size == size and existing.crc32c == crc
    return PutResult(created=False, identical=identical, existing=existing)


# --------------------------------------------------------------------------
# The interface


class Remote(ABC):
    """An object store holding immutable objects under relative keys.

    Thread-safe: one instance may serve many threads. Methods raise the back
    end's own exceptions; :class:`ObjectNotFoundError` for a missing object
    on ``get``/``get_range``; ``ValueError`` naming a bad key.
    """

    def __init__(self) -> None:
        self._closed = False

    @property
    @abstractmethod
    def url(self) -> str:
        """``file:///abs/dir`` or ``s3://bucket/prefix/`` (no credentials)."""

    @abstractmethod
    def put_if_absent(
        self,
        key: str,
        source: Source,
        *,
        size: int,
        crc32c: int,
        metadata: Mapping[str, str] | None = None,
        cancel: threading.Event | None = None,
        retry: RetryCall | None = None,
    ) -> PutResult:
        """Store ``source`` under ``key`` unless an object is already there.

        ``size`` and ``crc32c`` describe the whole source and are checked
        while it is sent: a path source that differs raises
        ``CorruptFileError`` naming it, a bytes source ``ValueError``; nothing
        is stored then. If the key exists, the existing object is compared by
        size and CRC-32C (see :class:`PutResult`); it is never overwritten.
        ``metadata`` keys are lower-case ``[a-z0-9-]``, values printable
        ASCII. A set ``cancel`` event abandons the upload between parts
        (``UploadCancelledError``). ``retry``, when given, runs each request
        of an upload sent in parts, so that one failed part is sent again
        rather than the whole upload (a back end that sends one request
        ignores it).
        """

    @abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """The object's info, or ``None`` if there is none."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The whole object."""

    @abstractmethod
    def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the object, like slicing: fewer (maybe
        none) when the object ends before ``end``."""

    @abstractmethod
    def list(self, prefix: str = "") -> ObjectList:
        """Objects whose key starts with ``prefix`` (a plain string prefix),
        sorted by key, with ``crc32c=None`` and empty metadata."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; no error if it does not exist. ``key`` may be
        any key :meth:`list` reported, valid or not; it is only checked to
        stay under this remote's prefix (root)."""

    @abstractmethod
    def list_multipart_uploads(self) -> UploadList:
        """Unfinished uploads under this remote's prefix."""

    @abstractmethod
    def abort_multipart_upload(self, key: str, upload_id: str) -> None:
        """Abort one unfinished upload; no error if it is already gone.
        ``key`` is taken as :meth:`list_multipart_uploads` reported it (only
        checked to stay under the prefix, as for :meth:`delete`)."""

    def check_put_if_absent(self) -> None:
        """Raise :class:`ConditionalWriteIgnoredError` if this store lets a
        put-if-absent overwrite an object. Nothing to check by default: the
        back end enforces it itself."""
        self._check_open()

    def clock(self) -> dt.datetime:
        """The remote's time now (UTC): the clock its ``last_modified`` and
        ``initiated`` stamps come from. Ages of remote objects are measured
        against it, never against this host's clock, which may be skewed
        from the server's by more than any grace period."""
        return dt.datetime.now(dt.UTC)

    def close(self) -> None:
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"remote {self.url} is closed")

    def __enter__(self) -> Remote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


def _check_range(start: int, end: int) -> None:
    _check_int("start", start, 0, 2**63 - 1)
    _check_int("end", end, 0, 2**63 - 1)
    if end < start:
        raise ValueError(f"end ({end}) must be >= start ({start})")


# --------------------------------------------------------------------------
# file://

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_TMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<token>[0-9a-f]{32})\.(?:tixtmp|tixmeta-tmp)$")
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
# A FIFO planted under the root must not hang a read: with O_NONBLOCK its
# open returns at once, and fstat shows it is no regular file.
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_READ_FLAGS = os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC


class KeyEscapesError(OSError):
    """A ``file://`` key whose path goes through a symbolic link.

    :class:`LocalRemote` never follows a link below its root: one could lead
    out of the remote directory (or make one key an alias of another).
    ``key`` is the key (or list prefix) asked for, ``link`` the linked part of
    its path. Not retried: ``errno`` is ``ELOOP``.
    """

    def __init__(self, key: str, link: str, root: str) -> None:
        super().__init__(
            errno.ELOOP,
            f"key {key!r} goes through the symbolic link {link!r} in the remote directory {root}; "
            "links there are never followed",
        )
        self.key = key
        self.link = link


class RemoteRootMissingError(OSError):
    """The root directory of a :class:`LocalRemote` is gone: removed,
    renamed, or replaced by something that is not a directory.

    The root is made when the remote is opened, so a missing one is never
    an empty remote: it is no :class:`FileNotFoundError` (which a read of an
    object that is not there raises, and the store takes for a file retention
    expired), and is not retried (``errno`` is ``ENOENT`` or ``ENOTDIR``),
    like S3's ``NoSuchBucket``. ``root`` names the directory.
    """

    def __init__(self, root: str, err: int) -> None:
        super().__init__(
            err,
            f"the remote directory {root} is missing ({os.strerror(err)}): removed, renamed or unmounted? "
            "It is not made again (that would pass its files off as gone)",
        )
        self.root = root


def _rename_noreplace(src: str, dst: str, dir_fd: int = _AT_FDCWD) -> None:
    """``renameat2(RENAME_NOREPLACE)`` of names in ``dir_fd``; raises
    ``OSError`` (EEXIST if taken)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    func = getattr(libc, "renameat2", None)
    if func is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    rc = func(dir_fd, os.fsencode(src), dir_fd, os.fsencode(dst), _RENAME_NOREPLACE)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), dst)


def _link_noreplace(src: str, dst: str, dir_fd: int = _AT_FDCWD) -> None:
    """Give ``src`` the name ``dst`` (both in ``dir_fd``) only if ``dst`` does
    not exist.

    ``linkat`` (exclusive, atomic); where hard links are unsupported,
    ``renameat2(RENAME_NOREPLACE)``. ``FileExistsError`` if ``dst`` exists.
    """
    fd = None if dir_fd == _AT_FDCWD else dir_fd
    try:
        os.link(src, dst, src_dir_fd=fd, dst_dir_fd=fd, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise
        try:
            _rename_noreplace(src, dst, dir_fd)
        except OSError as exc2:
            if exc2.errno == errno.EEXIST:
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst) from None
            raise exc from None


def _mtime(st: os.stat_result) -> dt.datetime:
    return dt.datetime.fromtimestamp(st.st_mtime, tz=dt.UTC)


def _crc32c_of_fd(fd: int) -> int:
    crc, pos = 0, 0
    while chunk := os.pread(fd, _READ_CHUNK, pos):
        crc = crc32c(chunk, crc)
        pos += len(chunk)
    return crc


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class LocalRemote(Remote):
    """A directory as a remote store (the embedded default).

    Layout, for key ``a/b.tix``:

    * ``ROOT/a/b.tix``: the object's bytes.
    * ``ROOT/a/.b.tix.tixmeta``: JSON sidecar ``{"size", "crc32c", "ino",
      "mtime_ns", "metadata"}`` written after the object (temp file, fsync,
      rename, directory fsync) and removed before it on delete. It is trusted
      only while its ``ino``, ``size`` and ``mtime_ns`` match the object's
      (inode numbers alone get reused); otherwise (a crash
      between object and sidecar, or an object placed by hand) ``head``
      computes the CRC-32C by reading the object and reports no user metadata.
    * ``ROOT/a/.b.tix.<hex>.tixtmp``: an upload in progress, or left over by a
      crash; :meth:`list_multipart_uploads` reports these, and
      :meth:`abort_multipart_upload` deletes them.

    The object appears atomically and exclusively: the temp file is written
    and fsynced, then hard-linked to its final name (``renameat2``
    ``RENAME_NOREPLACE`` where links are unsupported), which fails if the name
    exists; then the directory is fsynced.

    Nothing below the root is reached through a symbolic link: every path is
    walked from the root one directory at a time (``O_NOFOLLOW``, each
    operation relative to its directory's descriptor), so a link raises
    :class:`KeyEscapesError` naming the key, whether it points out of the
    root or not; :meth:`list` neither reports links nor descends into them.
    The root itself may be a link, but not the filesystem root (nor a link
    to it): repair deletes what no manifest names under the root.
    """

    def __init__(self, root: str | os.PathLike[str], *, create: bool = True) -> None:
        super().__init__()
        path = os.fsdecode(root)
        if not os.path.isabs(path):
            raise ValueError(f"root must be an absolute path, got {path!r}")
        self._root = os.path.normpath(path)
        if os.path.realpath(self._root) == "/":
            # verify(repair=True) deletes whatever under the root no manifest
            # names: with "/" as the root that would be the whole filesystem
            raise ValueError(f"root must not be the filesystem root, got {path!r}")
        if create:
            os.makedirs(self._root, exist_ok=True)

    @property
    def root(self) -> str:
        return self._root

    @property
    def url(self) -> str:
        return "file://" + urllib.parse.quote(self._root)

    # -- paths, walked without following links

    def _refuse_link(self, parent: int, name: str, key: str, link: str) -> None:
        """Raise :class:`KeyEscapesError` if ``name`` in ``parent`` is a link."""
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            raise KeyEscapesError(key, link, self._root)

    def _open_dir(self, key: str, dirs: list[str], *, create: bool) -> int | None:
        """A descriptor of ``ROOT/dirs...``, each directory opened relative to
        the one before with ``O_NOFOLLOW`` (a link raises
        :class:`KeyEscapesError`). Missing ones are created (each new entry
        fsynced) with ``create``, else ``None`` (also for a non-directory).
        A missing root raises :class:`RemoteRootMissingError`: never made
        again, nor taken for an empty remote."""
        try:
            fd = os.open(self._root, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise RemoteRootMissingError(self._root, exc.errno or errno.ENOENT) from None
        try:
            for i, seg in enumerate(dirs):
                if create:
                    try:
                        os.mkdir(seg, dir_fd=fd)
                        os.fsync(fd)
                    except FileExistsError:
                        pass
                try:
                    sub = os.open(seg, os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                        self._refuse_link(fd, seg, key, "/".join(dirs[: i + 1]))
                    if create or exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                        raise self._named(exc, "/".join(dirs[: i + 1])) from None
                    os.close(fd)
                    return None
                os.close(fd)
                fd = sub
        except BaseException:
            os.close(fd)
            raise
        return fd

    @contextlib.contextmanager
    def _parent(
        self, key: str, *, create: bool = False, listed: bool = False
    ) -> Iterator[tuple[int | None, str]]:
        """``(descriptor of the key's directory or None, last segment)``.
        ``listed``: a key as a listing reported it (see :func:`_listed_key`)."""
        checked = _listed_key(key, empty_segments=False) if listed else validate_key(key)
        segments = checked.split("/")
        fd = self._open_dir(key, segments[:-1], create=create)
        try:
            yield fd, segments[-1]
        finally:
            if fd is not None:
                os.close(fd)

    def _lstat(self, parent: int, name: str, key: str) -> os.stat_result | None:
        """The entry's own stat (``None`` if absent); a link raises."""
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(st.st_mode):
            raise KeyEscapesError(key, key, self._root)
        return st

    def _open_file(self, parent: int, name: str, key: str) -> int | None:
        """A read descriptor of the regular file ``name``, or ``None``."""
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise KeyEscapesError(key, key, self._root) from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        return fd

    # -- writes

    def put_if_absent(
        self,
        key: str,
        source: Source,
        *,
        size: int,
        crc32c: int,
        metadata: Mapping[str, str] | None = None,
        cancel: threading.Event | None = None,
        retry: RetryCall | None = None,
    ) -> PutResult:
        self._check_open()
        validate_key(key)
        with _Payload(source, size, crc32c) as payload:
            meta = _user_metadata(metadata, payload.size, payload.crc)
            with self._parent(key, create=True) as (parent, name):
                assert parent is not None
                if self._lstat(parent, name, key) is not None:
                    return self._taken(parent, name, key, payload)
                token = uuid.uuid4().hex
                tmp = f".{name}.{token}.tixtmp"
                try:
                    ino, mtime_ns = self._write_temp(parent, tmp, payload, cancel)
                    fault_point("upload.part")
                    try:
                        _link_noreplace(tmp, name, parent)
                    except FileExistsError:
                        return self._taken(parent, name, key, payload)
                    fault_point("upload.complete")
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp, dir_fd=parent)
                    sidecar = {
                        "v": 1,
                        "size": payload.size,
                        "crc32c": f"{payload.crc:08x}",
                        "ino": ino,
                        "mtime_ns": mtime_ns,
                        "metadata": meta,
                    }
                    self._write_sidecar(parent, name, token, sidecar)
                    os.fsync(parent)
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp, dir_fd=parent)
                st = os.stat(name, dir_fd=parent, follow_symlinks=False)
                info = ObjectInfo(key, st.st_size, payload.crc, _mtime(st), dict(meta), crc32c_by_store=True)
                return PutResult(created=True, identical=True, existing=info)

    def _taken(self, parent: int, name: str, key: str, payload: _Payload) -> PutResult:
        """The outcome of a put that found ``name`` taken: a directory or
        other non-file there is a conflict; a file is compared."""
        st = self._lstat(parent, name, key)
        if st is not None and not stat.S_ISREG(st.st_mode):
            return PutResult(created=False, identical=False)
        return _compare(key, self._head_at(parent, name, key), payload.size, payload.crc)

    @staticmethod
    def _write_temp(
        parent: int, tmp: str, payload: _Payload, cancel: threading.Event | None
    ) -> tuple[int, int]:
        """Write and fsync the temp file; return its inode and mtime_ns."""
        fd = os.open(tmp, _NEW_FILE_FLAGS, 0o644, dir_fd=parent)
        try:
            crc = 0
            for chunk in payload.chunks():
                if cancel is not None and cancel.is_set():
                    raise UploadCancelledError(f"upload of {payload.name} cancelled")
                crc = crc32c(chunk, crc)
                _write_all(fd, chunk)
            payload.check_crc(crc)
            os.fsync(fd)
            st = os.fstat(fd)
            return st.st_ino, st.st_mtime_ns
        finally:
            os.close(fd)

    @staticmethod
    def _write_sidecar(parent: int, name: str, token: str, content: dict[str, Any]) -> None:
        tmp = f".{name}.{token}.tixmeta-tmp"
        blob = json.dumps(content, sort_keys=True).encode("utf-8")
        try:
            fd = os.open(tmp, _NEW_FILE_FLAGS, 0o644, dir_fd=parent)
            try:
                _write_all(fd, blob)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, f".{name}.tixmeta", src_dir_fd=parent, dst_dir_fd=parent)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=parent)

    def delete(self, key: str) -> None:
        self._check_open()
        with self._parent(key, listed=True) as (parent, name):
            if parent is None:
                return
            st = self._lstat(parent, name, key)
            if st is not None and stat.S_ISDIR(st.st_mode):
                return
            removed = False
            for entry in (f".{name}.tixmeta", name):  # sidecar first: see class doc
                try:
                    os.unlink(entry, dir_fd=parent)
                    removed = True
                except FileNotFoundError:
                    pass
            if removed:
                os.fsync(parent)

    # -- reads

    @staticmethod
    def _read_sidecar(parent: int, name: str, st: os.stat_result) -> tuple[int, dict[str, str]] | None:
        try:
            fd = os.open(f".{name}.tixmeta", _READ_FLAGS, dir_fd=parent)
            with open(fd, "rb", closefd=True) as f:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    return None
                content = json.loads(f.read())
            if (content.get("ino"), content.get("size"), content.get("mtime_ns")) != (
                st.st_ino,
                st.st_size,
                st.st_mtime_ns,
            ):
                return None
            crc = _parse_crc(content.get("crc32c"))
            metadata = content.get("metadata")
            if crc is None or not isinstance(metadata, dict):
                return None
            return crc, {str(k): str(v) for k, v in metadata.items()}
        except (OSError, ValueError, AttributeError):
            return None

    def _head_at(self, parent: int, name: str, key: str) -> ObjectInfo | None:
        st = self._lstat(parent, name, key)
        if st is None or not stat.S_ISREG(st.st_mode):
            return None
        side = self._read_sidecar(parent, name, st)
        if side is not None:
            crc, metadata = side
        else:
            fd = self._open_file(parent, name, key)
            if fd is None:
                return None
            try:
                crc, metadata = _crc32c_of_fd(fd), {}
            finally:
                os.close(fd)
        # The sidecar's CRC was taken over the bytes as they were written
        # (and is trusted only while the file is unchanged), or computed now.
        return ObjectInfo(key, st.st_size, crc, _mtime(st), metadata, crc32c_by_store=True)

    def head(self, key: str) -> ObjectInfo | None:
        self._check_open()
        with self._parent(key) as (parent, name):
            return None if parent is None else self._head_at(parent, name, key)

    def _open_object(self, key: str) -> int:
        with self._parent(key) as (parent, name):
            fd = None if parent is None else self._open_file(parent, name, key)
        if fd is None:
            raise ObjectNotFoundError(key, self.url)
        return fd

    def get(self, key: str) -> bytes:
        self._check_open()
        fd = self._open_object(key)
        with open(fd, "rb", closefd=True) as f:
            return f.read()

    def get_range(self, key: str, start: int, end: int) -> bytes:
        self._check_open()
        _check_range(start, end)
        fd = self._open_object(key)
        try:
            out: list[bytes] = []
            pos = start
            while pos < end:
                chunk = os.pread(fd, min(end - pos, _READ_CHUNK), pos)
                if not chunk:
                    break
                out.append(chunk)
                pos += len(chunk)
            return b"".join(out)
        finally:
            os.close(fd)

    def _walk(
        self, what: str, dirs: list[str], *, strict: bool = True
    ) -> Iterator[tuple[str, list[str], int]]:
        """``(relative directory, names of what is not a directory, its
        descriptor)`` for every directory below ``ROOT/dirs...``, top down,
        skipping dot-directories and never descending into a link; nothing
        if it is missing (the root itself: :class:`RemoteRootMissingError`). A directory that cannot be read raises the
        ``OSError``, naming its path: a listing that left it out would look
        complete, and the store, verify and the CLI all trust listings.
        Not ``strict``: a folder below the top that cannot be read is
        skipped with a warning instead."""
        top = self._open_dir(what, dirs, create=False)
        if top is None:
            return
        yield from self._walk_from(top, "/".join(dirs), strict)

    def _walk_from(self, fd: int, rel: str, strict: bool = True) -> Iterator[tuple[str, list[str], int]]:
        """:meth:`_walk` from the open directory ``fd`` (closed at the end)."""
        try:
            try:
                with os.scandir(fd) as it:
                    entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
            except OSError as exc:
                if strict or not rel:
                    raise self._named(exc, rel) from None
                _LOG.warning("%s", self._named(exc, rel))
                return
            yield rel, [name for name, is_dir in entries if not is_dir], fd
            for name, is_dir in entries:
                if not is_dir or name.startswith("."):
                    continue
                sub_rel = f"{rel}/{name}" if rel else name
                try:
                    sub = os.open(name, os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                        continue  # removed, or replaced by a file or a link, since the scan
                    if strict:
                        raise self._named(exc, sub_rel) from None
                    _LOG.warning("%s", self._named(exc, sub_rel))
                    continue
                yield from self._walk_from(sub, sub_rel, strict)
        finally:
            os.close(fd)

    def _named(self, exc: OSError, rel: str) -> OSError:
        """``exc`` naming ``ROOT/rel`` (the OS names only the last segment)."""
        return OSError(exc.errno, exc.strerror, os.path.join(self._root, rel))

    def list(self, prefix: str = "") -> ObjectList:
        self._check_open()
        _validate_prefix(prefix)
        # Walk only the deepest directory the prefix names.
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        found: list[ObjectInfo] = []
        for rel_dir, filenames, dirfd in self._walk(prefix, base.split("/") if base else []):
            for name in filenames:
                if name.startswith("."):
                    continue
                key = f"{rel_dir}/{name}" if rel_dir else name
                if not key.startswith(prefix):
                    continue
                try:
                    st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise self._named(exc, key) from None
                if stat.S_ISREG(st.st_mode):  # never a link, whatever it points at
                    found.append(ObjectInfo(key, st.st_size, None, _mtime(st)))
        found.sort(key=lambda info: info.key.encode("utf-8", "surrogateescape"))
        return found

    # -- leftovers

    def list_multipart_uploads(self) -> UploadList:
        self._check_open()
        out: list[MultipartUpload] = []
        # Not strict: it walks the whole root, where a folder no store made
        # (lost+found at a volume's root) may be unreadable; a store's own
        # uploads are where it could write. Object listings stay strict.
        for rel_dir, filenames, dirfd in self._walk("", [], strict=False):
            for name in filenames:
                m = _TMP_RE.match(name)
                if m is None:
                    continue
                key = f"{rel_dir}/{m['name']}" if rel_dir else m["name"]
                try:
                    st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise self._named(exc, f"{rel_dir}/{name}" if rel_dir else name) from None
                if stat.S_ISREG(st.st_mode):
                    out.append(MultipartUpload(key, name, _mtime(st)))
        out.sort(key=lambda u: (u.key, u.upload_id))
        return out

    def abort_multipart_upload(self, key: str, upload_id: str) -> None:
        self._check_open()
        last = _listed_key(key, empty_segments=False).rsplit("/", 1)[-1]
        m = _TMP_RE.match(upload_id) if isinstance(upload_id, str) else None
        if m is None or m["name"] != last:
            raise ValueError(f"upload_id {upload_id!r} is not an upload of key {key!r}")
        with self._parent(key, listed=True) as (parent, _name):
            if parent is None:
                return
            try:
                os.unlink(upload_id, dir_fd=parent)
            except FileNotFoundError:
                return
            os.fsync(parent)


# --------------------------------------------------------------------------
# s3://


def _error_code(exc: Any) -> tuple[str, int | None]:
    response = getattr(exc, "response", None) or {}
    code = str((response.get("Error") or {}).get("Code") or "")
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return code, status if isinstance(status, int) else None


def _check_page(page: Mapping[str, Any], what: str, fields: tuple[str, ...]) -> None:
    """Raise a (retryable) ``ConnectionError`` if a listing's page lacks a
    field S3 always sends. A response cut off in its head reads as a
    success with an empty body: the paginator, seeing no ``IsTruncated``,
    would end the listing there, and an empty listing says "nothing
    stored" (the store forgets its remote files)."""
    missing = [field for field in fields if field not in page]
    if missing:
        raise ConnectionError(f"{what}: a page without {', '.join(missing)} (truncated response?)")


class S3Remote(Remote):
    """``s3://bucket/prefix`` through boto3.

    The client makes a single attempt per call (retries belong to
    :mod:`tieredindex.retry`), with connect and read timeouts, no SDK-added
    checksums (``when_required``, which S3-compatible stores accept) and path
    addressing. Endpoint and region come from the arguments, else from the
    AWS environment as boto3 reads it (``AWS_ENDPOINT_URL``, ``AWS_REGION``,
    ...), as do the credentials.

    Objects below ``multipart_threshold`` go up in one ``PutObject``
    (``If-None-Match: *``, ``x-amz-checksum-crc32c``), its body streamed from
    the file and checked as it goes (:class:`_CheckedStream`); larger ones in a
    multipart upload with a FULL_OBJECT CRC-32C, parts of ``part_size``
    sent ``upload_concurrency`` at a time, each streamed from the file and
    checked the same way against its CRC-32C, taken just before (so one
    chunk of each part in memory, whatever the part size), completed with
    ``If-None-Match: *``. Each part is sent under the caller's ``retry``
    when one is given, so a part that fails is sent again on its own. A
    failed multipart upload is always aborted.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        part_size: int = DEFAULT_PART_SIZE,
        upload_concurrency: int = 8,
        client: S3Client | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(bucket, str) or not _BUCKET_RE.match(bucket):
            raise ValueError(f"invalid bucket name {bucket!r}")
        prefix = _validate_prefix(prefix)
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        for name, value in (("connect_timeout", connect_timeout), ("read_timeout", read_timeout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        check_endpoint_url(endpoint_url)
        check_region(region)
        self._bucket = bucket
        self._prefix = prefix
        self._honours_if_none_match: bool | None = None  # unknown till check_put_if_absent()
        self._threshold = _check_int("multipart_threshold", multipart_threshold, 1, 5 * 1024**3)
        self._part_size = _check_int("part_size", part_size, S3_MIN_PART_SIZE, 5 * 1024**3)
        self._concurrency = _check_int("upload_concurrency", upload_concurrency, 1, 64)
        if client is None:
            import boto3
            from botocore.config import Config

            s3_settings: Any = {"addressing_style": "path"}
            config = Config(
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                # One send per call: botocore's "max_attempts" counts *retries*
                # (max_attempts=1 would send twice); total_max_attempts does not.
                retries={"total_max_attempts": 1, "mode": "standard"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                s3=s3_settings,
                # A store's uploads run `upload_concurrency` at once, its reads
                # READS_PER_UPLOAD times that; two more for its upkeep.
                max_pool_connections=max(10, (1 + READS_PER_UPLOAD) * self._concurrency + 2),
            )
            client = boto3.session.Session().client(
                "s3", endpoint_url=endpoint_url, region_name=region, config=config
            )
            # botocore sends "Expect: 100-continue" with every body, which
            # costs a round trip per PutObject and UploadPart; our bodies are
            # checksummed and bounded, so send them at once.
            from botocore.handlers import add_expect_header

            client.meta.events.unregister("before-call.s3", add_expect_header)
            # SigV4 hashes every body byte (SHA-256) before the first is sent,
            # unless botocore computed the checksum itself. Ours is precomputed
            # and sent in a signed header, so over TLS the body is covered
            # without it (AWS's own rule: TLS + checksum). Plain http keeps
            # the signed payload.
            if client.meta.endpoint_url.startswith("https:"):
                s3_settings["payload_signing_enabled"] = False  # botocore reads it per request
        self._client: S3Client = client
        # The server's Date header of the latest answer, and time.monotonic()
        # when it came: clock() reads the server's time without a call.
        self._server_date: tuple[dt.datetime, float] | None = None
        client.meta.events.register("after-call.s3", self._note_server_date)

    def _note_server_date(self, http_response: Any = None, **_: Any) -> None:
        try:
            date = email.utils.parsedate_to_datetime(http_response.headers["Date"])
        except Exception:  # no answer, no header, or one we cannot read
            return
        if date.tzinfo is not None:
            self._server_date = (date.astimezone(dt.UTC), time.monotonic())

    def clock(self) -> dt.datetime:
        """The server's time: its latest ``Date`` header plus the time since
        (whole seconds, so at most a second behind: ages come out short,
        never long). One HeadBucket if no answer has come yet; this host's
        clock if the server sends no date."""
        if self._server_date is None:
            self._check_open()
            self._client.head_bucket(Bucket=self._bucket)
        if self._server_date is None:
            return super().clock()
        date, at = self._server_date
        return date + dt.timedelta(seconds=time.monotonic() - at)

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def client(self) -> S3Client:
        return self._client

    @property
    def url(self) -> str:
        return f"s3://{self._bucket}/{self._prefix}"

    def close(self) -> None:
        if not self._closed:
            super().close()
            # A client handed in may outlive this remote: it must not keep
            # it (and run its hook on every call) for good.
            self._client.meta.events.unregister("after-call.s3", self._note_server_date)
            self._client.close()

    def _full(self, key: str) -> str:
        return self._prefix + validate_key(key)

    def _full_listed(self, key: str) -> str:
        """The full name of a key as a listing reported it (``a//b`` is an
        ordinary S3 key): only checked to stay under the prefix."""
        _listed_key(key, empty_segments=True)
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise _bad_key("key", key, "not valid UTF-8") from None
        return self._prefix + key

    # -- writes

    def put_if_absent(
        self,
        key: str,
        source: Source,
        *,
        size: int,
        crc32c: int,
        metadata: Mapping[str, str] | None = None,
        cancel: threading.Event | None = None,
        retry: RetryCall | None = None,
    ) -> PutResult:
        self._check_open()
        full = self._full(key)
        with _Payload(source, size, crc32c) as payload:
            meta = _user_metadata(metadata, payload.size, payload.crc)
            if payload.size < self._threshold:
                return self._put_single(key, full, payload, meta, cancel)
            return self._put_multipart(key, full, payload, meta, cancel, retry)

    def check_put_if_absent(self) -> None:
        """Put an empty probe object twice with ``If-None-Match: *``: the
        second must be refused (412). A store that takes both ignores the
        condition. The probe (a dot name, which no valid key has) is
        deleted again. Its verdict is kept: a store does not change its
        ways while it runs, and each upload of a refused store asks."""
        self._check_open()
        if self._honours_if_none_match is not None:
            if not self._honours_if_none_match:
                raise ConditionalWriteIgnoredError(self.url)
            return
        from botocore.exceptions import ClientError

        probe = f"{self._prefix}{PROBE_KEY_PREFIX}{uuid.uuid4().hex}"
        try:
            for attempt in (1, 2):
                try:
                    self._client.put_object(Bucket=self._bucket, Key=probe, Body=b"", IfNoneMatch="*")
                except ClientError as exc:
                    code, status = _error_code(exc)
                    if attempt == 2 and (status == 412 or code == "PreconditionFailed"):
                        self._honours_if_none_match = True
                        return
                    raise
            self._honours_if_none_match = False
            raise ConditionalWriteIgnoredError(self.url)
        finally:
            with contextlib.suppress(Exception):  # a leftover probe is an orphan, swept by verify
                self._client.delete_object(Bucket=self._bucket, Key=probe)

    def _put_single(
        self,
        key: str,
        full: str,
        payload: _Payload,
        meta: dict[str, str],
        cancel: threading.Event | None,
    ) -> PutResult:
        from botocore.exceptions import ClientError

        body = payload.stream(cancel)
        fault_point("upload.part")
        try:
            self._client.put_object(
                Bucket=self._bucket,
                Key=full,
                Body=body,  # type: ignore[arg-type]  # file-like: read, seek, tell
                ContentLength=payload.size,
                IfNoneMatch="*",
                ChecksumCRC32C=crc32c_b64(payload.crc),
                Metadata=meta,
            )
        except Exception as exc:
            if body.failure is not None:  # the local file failed, whatever the remote said
                raise body.failure from None
            if isinstance(exc, ClientError):
                code, status = _error_code(exc)
                if status == 412 or code == "PreconditionFailed":
                    return _compare(key, self.head(key), payload.size, payload.crc)
            raise
        return PutResult(created=True, identical=True, sent_md5=body.md5_hex)

    def _put_multipart(
        self,
        key: str,
        full: str,
        payload: _Payload,
        meta: dict[str, str],
        cancel: threading.Event | None,
        retry: RetryCall | None,
    ) -> PutResult:
        from botocore.exceptions import ClientError

        # Equal parts, and whole rounds of `concurrency` parts where the part
        # size allows: a small last part would cost an extra round trip of
        # parts on the link.
        count = max(1, -(-payload.size // max(self._part_size, -(-payload.size // S3_MAX_PARTS))))
        rounded = -(-count // self._concurrency) * self._concurrency
        if rounded <= S3_MAX_PARTS and -(-payload.size // rounded) >= S3_MIN_PART_SIZE:
            count = rounded
        part_size = max(S3_MIN_PART_SIZE, -(-payload.size // count))
        created = self._client.create_multipart_upload(
            Bucket=self._bucket,
            Key=full,
            ChecksumAlgorithm="CRC32C",
            ChecksumType="FULL_OBJECT",
            Metadata=meta,
        )
        upload_id = created["UploadId"]
        with contextlib.ExitStack() as cleanup:
            # Registered the moment the upload exists: any failure below,
            # KeyboardInterrupt included, aborts it.
            cleanup.callback(self._abort_quietly, full, upload_id)
            parts = self._upload_parts(full, upload_id, payload, part_size, cancel, retry)
            fault_point("upload.complete")
            try:
                self._client.complete_multipart_upload(
                    Bucket=self._bucket,
                    Key=full,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                    IfNoneMatch="*",
                    ChecksumCRC32C=crc32c_b64(payload.crc),
                    ChecksumType="FULL_OBJECT",
                    MpuObjectSize=payload.size,
                )
            except ClientError as exc:
                code, status = _error_code(exc)
                if status == 412 or code == "PreconditionFailed":
                    # The upload stays open after a 412: abort it first.
                    cleanup.close()
                    return _compare(key, self.head(key), payload.size, payload.crc)
                if code == "NoSuchUpload":
                    cleanup.pop_all()  # nothing left to abort
                    existing = self.head(key)  # did an earlier attempt complete it?
                    if existing is not None:
                        result = _compare(key, existing, payload.size, payload.crc)
                        if result.identical:
                            return result
                raise
            cleanup.pop_all()
        return PutResult(created=True, identical=True)

    def _upload_parts(
        self,
        full: str,
        upload_id: str,
        payload: _Payload,
        part_size: int,
        cancel: threading.Event | None,
        retry: RetryCall | None,
    ) -> list[CompletedPartTypeDef]:
        # Set once this attempt has failed: parts still being retried stop
        # (the upload is aborted anyway).
        failed = threading.Event()

        from botocore.exceptions import ClientError

        def send(number: int, offset: int, length: int, crc: int) -> CompletedPartTypeDef:
            checksum = crc32c_b64(crc)

            def once() -> str:
                if failed.is_set():
                    raise UploadCancelledError(f"part {number} of {full}: the upload failed")
                fault_point("upload.part")
                # Read from the file as it is sent, each attempt anew: a
                # part costs one chunk of memory, not its size.
                body = payload.stream_part(offset, length, crc, cancel)
                try:
                    resp = self._client.upload_part(
                        Bucket=self._bucket,
                        Key=full,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=body,  # type: ignore[arg-type]  # file-like: read, seek, tell
                        ContentLength=length,
                        ChecksumCRC32C=checksum,
                    )
                except Exception as exc:
                    if body.failure is not None:  # the local file failed, whatever the remote said
                        raise body.failure from None
                    if isinstance(exc, ClientError) and _error_code(exc)[0] == "NoSuchUpload":
                        raise _UploadGone(exc) from exc  # sending the part again cannot help
                    raise
                return resp["ETag"]

            try:
                etag: str = once() if retry is None else retry(once, f"upload part {number} of {full}")
            except Exception as exc:
                # The part's own error, for the caller's policy to judge the
                # whole upload by (a vanished upload is begun again; a part
                # that ran out of retries is not a fatal error of the upload).
                # Its chain already holds the rest: kept as it is, no cycle.
                error = _part_error(exc)
                if error is exc:
                    raise
                raise error from None
            return {"PartNumber": number, "ETag": etag, "ChecksumCRC32C": checksum}

        done: list[CompletedPartTypeDef] = []
        running: set[concurrent.futures.Future[CompletedPartTypeDef]] = set()
        whole_crc = 0
        # Daemon threads, not waited for when a part fails or the upload is
        # cancelled: a part stuck on a hung connection would hold the caller
        # (and the shutdown behind it) until its read timeout.
        pool = DaemonThreadPool(self._concurrency, "tix-upload")
        try:
            for number, offset in enumerate(range(0, payload.size, part_size), start=1):
                while len(running) >= self._concurrency:
                    finished, running = concurrent.futures.wait(
                        running, return_when=concurrent.futures.FIRST_COMPLETED
                    )
                    done.extend(f.result() for f in finished)
                if cancel is not None and cancel.is_set():
                    raise UploadCancelledError(f"upload of {payload.name} cancelled")
                # The part's CRC-32C (its checksum header, and what its body
                # is checked against as it is sent), and the whole file's, in
                # one pass a chunk at a time.
                length = min(part_size, payload.size - offset)
                part_crc = 0
                for chunk in payload.chunks(_STREAM_CHUNK, offset, length):
                    part_crc = crc32c(chunk, part_crc)
                    whole_crc = crc32c(chunk, whole_crc)
                running.add(pool.submit(send, number, offset, length, part_crc))
            while running:  # the first failure ends the upload: the rest stop retrying
                finished, running = concurrent.futures.wait(
                    running, return_when=concurrent.futures.FIRST_EXCEPTION
                )
                done.extend(f.result() for f in finished)
        except BaseException:
            failed.set()
            for f in running:
                f.cancel()
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        payload.check_crc(whole_crc)
        done.sort(key=lambda p: p["PartNumber"])
        return done

    def _abort_quietly(self, full: str, upload_id: str) -> None:
        from tieredindex.retry import describe_error

        try:
            # A few quick tries: an abort that fails (a 500) leaves the upload
            # and its parts stored until reconciliation sweeps them. Bounded,
            # so that a dead remote does not hold back the original error.
            run_with_retry(
                partial(self._abort, full, upload_id),
                policy=ABORT_POLICY,
                budget=None,
                describe=f"abort upload of {full}",
            )
        except Exception as exc:  # never mask the original failure
            _LOG.warning(
                "%s: could not abort multipart upload of %r (%s); it stays listed until aborted: %s",
                self.url,
                full,
                upload_id,
                describe_error(exc),
            )

    def _abort(self, full: str, upload_id: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self._client.abort_multipart_upload(Bucket=self._bucket, Key=full, UploadId=upload_id)
        except ClientError as exc:
            if _error_code(exc)[0] != "NoSuchUpload":
                raise

    def delete(self, key: str) -> None:
        self._check_open()
        from botocore.exceptions import ClientError

        try:
            self._client.delete_object(Bucket=self._bucket, Key=self._full_listed(key))
        except ClientError as exc:
            if _error_code(exc)[0] != "NoSuchKey":
                raise

    # -- reads

    def head(self, key: str) -> ObjectInfo | None:
        self._check_open()
        from botocore.exceptions import ClientError

        try:
            # ChecksumMode: the store's own CRC-32C of what it holds, when it
            # has one, is better evidence than the metadata we sent.
            resp = self._client.head_object(Bucket=self._bucket, Key=self._full(key), ChecksumMode="ENABLED")
        except ClientError as exc:
            code, status = _error_code(exc)
            if status == 404 or code in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        metadata = {str(k).lower(): str(v) for k, v in resp.get("Metadata", {}).items()}
        stored_crc = _full_object_crc(resp)
        if "ContentLength" not in resp or "LastModified" not in resp:
            # http.client takes headers cut off between lines as complete:
            # a truncated response, worth another try.
            raise ConnectionError(
                f"HEAD {key}: response without Content-Length or Last-Modified (truncated?)"
            )
        return ObjectInfo(
            key,
            int(resp["ContentLength"]),
            stored_crc if stored_crc is not None else _parse_crc(metadata.get(META_CRC32C)),
            resp["LastModified"],
            metadata,
            resp.get("ETag"),
            crc32c_by_store=stored_crc is not None,
        )

    def _get(self, key: str, span: tuple[int, int] | None) -> bytes:
        """The object, or the bytes ``span`` (start, end) of it."""
        from botocore.exceptions import ClientError

        kwargs: dict[str, Any] = {"Bucket": self._bucket, "Key": self._full(key)}
        range_header = None if span is None else f"bytes={span[0]}-{span[1] - 1}"
        if range_header is not None:
            kwargs["Range"] = range_header
        try:
            resp = self._client.get_object(**kwargs)
        except ClientError as exc:
            code, status = _error_code(exc)
            if code == "NoSuchKey":
                raise ObjectNotFoundError(key, self.url) from None
            if range_header is not None and (status == 416 or code == "InvalidRange"):
                return b""
            raise
        body = resp["Body"]
        try:
            data = body.read()
        finally:
            body.close()
        length = resp.get("ContentLength")
        headers = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        # A chunked body says where it ends (one cut short raises as it is
        # read), so it needs no Content-Length.
        chunked = str(headers.get("transfer-encoding", "")).split(",")[-1].strip().lower() == "chunked"
        if (length is None and not chunked) or (length is not None and len(data) != length):
            # A head cut off between lines is taken for a whole one (see
            # head()); with no Content-Length the body is read to EOF, and
            # botocore returns what came, perhaps nothing, as a success.
            raise ConnectionError(
                f"GET {key}: response without Content-Length, or a body of {len(data)} bytes "
                f"where it says {length} (truncated?)"
            )
        if span is not None and resp.get("ResponseMetadata", {}).get("HTTPStatusCode") == 200:
            # The server ignored the Range, as HTTP allows (206 is a range):
            # the whole object came, and the bytes asked for are in it.
            return data[span[0] : span[1]]
        return data

    def get(self, key: str) -> bytes:
        self._check_open()
        return self._get(key, None)

    def get_range(self, key: str, start: int, end: int) -> bytes:
        self._check_open()
        _check_range(start, end)
        validate_key(key)
        if start == end:
            return b""
        return self._get(key, (start, end))

    def list(self, prefix: str = "") -> ObjectList:
        self._check_open()
        _validate_prefix(prefix)
        out: list[ObjectInfo] = []
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self._bucket, Prefix=self._prefix + prefix):
            _check_page(page, "list objects", ("IsTruncated",))
            for obj in page.get("Contents", []):
                full = obj.get("Key", "")
                if not full.startswith(self._prefix):
                    continue
                out.append(
                    ObjectInfo(
                        full[len(self._prefix) :],
                        int(obj.get("Size", 0)),
                        None,
                        obj["LastModified"],
                        {},
                        obj.get("ETag"),
                    )
                )
        out.sort(key=lambda info: info.key.encode("utf-8", "surrogateescape"))
        return out

    def list_multipart_uploads(self) -> UploadList:
        self._check_open()
        out: list[MultipartUpload] = []
        paginator = self._client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self._bucket, Prefix=self._prefix):
            _check_page(page, "list multipart uploads", ("IsTruncated",))
            for upload in page.get("Uploads", []):
                full = upload.get("Key", "")
                if not full.startswith(self._prefix) or "UploadId" not in upload:
                    continue
                out.append(
                    MultipartUpload(full[len(self._prefix) :], upload["UploadId"], upload["Initiated"])
                )
        return out

    def abort_multipart_upload(self, key: str, upload_id: str) -> None:
        self._check_open()
        if not isinstance(upload_id, str) or not upload_id:
            raise ValueError(f"invalid upload_id {upload_id!r}")
        self._abort(self._full_listed(key), upload_id)


_BUCKET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]$")


# --------------------------------------------------------------------------
# URLs


def open_remote(
    url: str,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    connect_timeout: float = 10.0,
    read_timeout: float = 60.0,
    multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
    part_size: int = DEFAULT_PART_SIZE,
    upload_concurrency: int = 8,
) -> Remote:
    """Build the remote for ``file:///abs/dir`` or ``s3://bucket[/prefix]``.

    S3-only settings are ignored for ``file://``. ``ValueError`` naming the
    URL for anything else (relative or remote file URLs, query strings,
    credentials or ports in the URL, bad bucket names or prefixes).
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, got {type(url).__name__}")

    # Name the URL, but never credentials someone put in it.
    shown = re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@", r"\1<redacted>@", url)

    def bad(why: str) -> ValueError:
        return ValueError(f"invalid remote url {shown!r}: {why}")

    # urlsplit silently drops tabs and line breaks (WHATWG rules), which
    # would turn a damaged URL into another location: refuse them first.
    control = next((c for c in url if ord(c) < 0x20 or ord(c) == 0x7F), None)
    if control is not None:
        raise bad(f"control character {control!r} is not allowed")
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise bad(str(exc)) from None
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise bad("query strings and fragments are not allowed")
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise bad("use file:///absolute/path (no host)")
        try:
            # strict: an escape that is not UTF-8 would become U+FFFD, another path
            path = urllib.parse.unquote(parts.path, errors="strict")
        except UnicodeDecodeError:
            raise bad("its percent-escapes are not valid UTF-8") from None
        if "\x00" in path:
            raise bad("NUL is not allowed in the path")
        if not path.startswith("/"):
            raise bad("the path must be absolute")
        if os.path.realpath(path) == "/":
            raise bad("the filesystem root cannot be a remote")
        return LocalRemote(path)
    if scheme == "s3":
        if "@" in parts.netloc or ":" in parts.netloc:
            raise bad("credentials and ports do not belong in the url")
        bucket = parts.netloc
        if not _BUCKET_RE.match(bucket):
            raise bad(f"invalid bucket name {bucket!r}")
        prefix = parts.path[1:] if parts.path.startswith("/") else parts.path
        try:
            _validate_prefix(prefix)
        except ValueError as exc:
            raise bad(str(exc)) from None
        return S3Remote(
            bucket,
            prefix,
            endpoint_url=endpoint_url,
            region=region,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            multipart_threshold=multipart_threshold,
            part_size=part_size,
            upload_concurrency=upload_concurrency,
        )
    raise bad("the scheme must be file:// or s3://")
