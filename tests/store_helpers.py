"""Helpers shared by the store tests: small configs, a remote with an off
switch, and a child-process broker."""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from tieredindex import RetryPolicy, StoreConfig
from tieredindex.remote import (
    LocalRemote,
    ObjectInfo,
    ObjectList,
    PutResult,
    Remote,
    RetryCall,
    S3Remote,
    Source,
    UploadList,
)

FOREVER = 2**63 - 1


def small_config(**overrides: Any) -> StoreConfig:
    settings: dict[str, Any] = dict(
        slots=16,
        capacity=50,
        flush_interval_s=0.05,
        reconcile_interval_s=0.05,
        shutdown_timeout_s=20.0,
        orphan_grace_s=0.0,
        retry=RetryPolicy(attempts=4, base_delay_s=0.01, max_delay_s=0.05, deadline_s=5.0),
    )
    settings.update(overrides)
    return StoreConfig(**settings)


class Outage(ConnectionError):
    """The remote is unreachable (a retryable error)."""


class SwitchableRemote(Remote):
    """Delegates to a real remote until ``down`` is set."""

    def __init__(self, inner: Remote) -> None:
        super().__init__()
        self.inner = inner
        self.down = threading.Event()
        self.calls = 0

    def _check(self) -> None:
        self.calls += 1
        if self.down.is_set():
            raise Outage("remote unreachable (test outage)")

    @property
    def url(self) -> str:
        return self.inner.url

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
        self._check()
        return self.inner.put_if_absent(
            key, source, size=size, crc32c=crc32c, metadata=metadata, cancel=cancel, retry=retry
        )

    def head(self, key: str) -> ObjectInfo | None:
        self._check()
        return self.inner.head(key)

    def get(self, key: str) -> bytes:
        self._check()
        return self.inner.get(key)

    def get_range(self, key: str, start: int, end: int) -> bytes:
        self._check()
        return self.inner.get_range(key, start, end)

    def list(self, prefix: str = "") -> ObjectList:  # as Remote spells it: list[...] means this method here
        self._check()
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self._check()
        self.inner.delete(key)

    def list_multipart_uploads(self) -> UploadList:
        self._check()
        return self.inner.list_multipart_uploads()

    def abort_multipart_upload(self, key: str, upload_id: str) -> None:
        self._check()
        self.inner.abort_multipart_upload(key, upload_id)

    def clock(self) -> dt.datetime:
        self._check()
        return self.inner.clock()

    def close(self) -> None:
        super().close()
        self.inner.close()


def crash_in_process(store: Any) -> None:
    """Stops a store as abruptly as an in-process test can: background work
    stops where it is, nothing is sealed or uploaded, locks are released.
    (Mapped writes are in the page cache, as after a kill -9; the journal
    is consistent after every transaction.)"""
    store._stop.set()
    store._wake.set()
    for thread in store._threads:
        thread.join(10)
    for pool in (store._uploads, store._reads):
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    for f in list(store._unsealed.values()):
        f.close()
    store._unsealed.clear()
    store._sealed.clear()
    store.journal.close()
    store._release_lock()
    store.remote.close()


def wait_until(condition: Any, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def open_upload(remote: Remote, key: str) -> None:
    """An open multipart upload of ``key``, as a live writer leaves one
    (file://: the upload's temp file)."""
    if isinstance(remote, S3Remote):
        remote.client.create_multipart_upload(Bucket=remote.bucket, Key=remote.prefix + key)
        return
    assert isinstance(remote, LocalRemote)
    parent, _, name = key.rpartition("/")
    os.makedirs(os.path.join(remote.root, parent), exist_ok=True)
    with open(os.path.join(remote.root, parent, f".{name}.{'0' * 32}.tixtmp"), "wb") as f:
        f.write(b"partial")


def listing_denied(self: S3Remote) -> list[object]:
    """ListMultipartUploads as credentials without s3:ListBucketMultipartUploads
    get it (patched over ``S3Remote.list_multipart_uploads``)."""
    from botocore.exceptions import ClientError

    error = {"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}}
    raise ClientError(error, "ListMultipartUploads")  # type: ignore[arg-type]


def listing_not_implemented(self: S3Remote) -> list[object]:
    """ListMultipartUploads as a server without it answers (s3s-fs 0.14)."""
    from botocore.exceptions import ClientError

    error = {"Error": {"Code": "NotImplemented"}, "ResponseMetadata": {"HTTPStatusCode": 501}}
    raise ClientError(error, "ListMultipartUploads")  # type: ignore[arg-type]
