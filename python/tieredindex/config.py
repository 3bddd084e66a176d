"""StoreConfig: every knob of an IndexStore, validated at construction."""

from __future__ import annotations

import dataclasses
import math
import threading

from tieredindex.remote import (
    DEFAULT_MULTIPART_THRESHOLD,
    DEFAULT_PART_SIZE,
    check_endpoint_url,
    check_region,
)
from tieredindex.retry import RetryPolicy

MiB = 1024 * 1024


@dataclasses.dataclass(frozen=True, kw_only=True)
class StoreConfig:
    """Settings of an :class:`~tieredindex.IndexStore`.

    File geometry defaults to RocketMQ's (5,000,000 slots, 20,000,000
    entries). S3 credentials, and the endpoint when ``endpoint_url`` is
    unset, come from the standard AWS environment, as boto3 reads it.
    """

    slots: int = 5_000_000
    capacity: int = 20_000_000
    max_file_age_s: float = 3600.0
    """A non-empty file older than this (by the monotonic clock) is rolled,
    so a quiet broker's index does not stay local for ever."""
    flush_interval_s: float = 1.0
    """The background flusher msyncs the current file this often."""
    upload_concurrency: int = 8
    """Files uploaded at once, and parts of one multipart upload at once.
    Small remote reads (a query's files, the catalog's manifest records)
    run ``remote.READS_PER_UPLOAD`` (4) times as many at once: each is a
    round trip of latency, not bandwidth."""
    shutdown_timeout_s: float = 30.0
    retention_s: float | None = None
    """Remote files whose newest entry is older than this are deleted; None
    keeps them for ever. A file goes once it has looked expired for five
    minutes (``store.RETENTION_CONFIRM_S``), so a wall clock stepped ahead
    for a moment deletes nothing."""
    cache_bytes: int = 1024 * MiB
    """Local disk kept for sealed files after their upload is verified
    (least recently used first out). Each kept file holds a descriptor
    open, so at most one file per four of the open-file limit (ulimit -n)
    is kept, whatever this allows."""
    retry: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)
    endpoint_url: str | None = None
    region: str | None = None
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    part_size: int = DEFAULT_PART_SIZE
    multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD
    """S3 objects of at least this many bytes go up as multipart uploads of
    ``part_size`` parts, ``upload_concurrency`` at a time; smaller ones as one
    streamed PutObject."""
    orphan_grace_s: float = 3600.0
    """verify() calls an unlisted object an orphan only once it is older, by
    the remote's clock (S3: its ``Date`` header), not this host's."""
    reconcile_interval_s: float = 2.0
    """How often the background worker retries work that failed."""
    catalog_refresh_s: float = 30.0
    """How often the remote manifest is listed again. A store reading
    another writer's prefix answers from the writer's new files (and stops
    asking for the ones its retention deleted) within about this plus
    ``reconcile_interval_s``; its own uploads it knows at once."""
    store_id: str | None = None
    """This writer's identity on the remote. None: generated once and kept in
    the journal. Set it to take over a prefix whose local directory was lost."""

    def __post_init__(self) -> None:
        for name in (
            "slots",
            "capacity",
            "upload_concurrency",
            "cache_bytes",
            "part_size",
            "multipart_threshold",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"StoreConfig.{name} must be an int, got {type(value).__name__}")
            minimum = 0 if name == "cache_bytes" else 1
            if value < minimum:
                raise ValueError(f"StoreConfig.{name} must be >= {minimum}, got {value}")
        if self.slots > 2**32 - 2 or self.capacity > 2**32 - 2:
            raise ValueError("StoreConfig.slots and capacity must be below 2**32 - 1")
        for name in (
            "max_file_age_s",
            "flush_interval_s",
            "shutdown_timeout_s",
            "connect_timeout_s",
            "read_timeout_s",
            "orphan_grace_s",
            "reconcile_interval_s",
            "catalog_refresh_s",
            "retention_s",
        ):
            value = getattr(self, name)
            if value is None and name == "retention_s":
                continue
            check_seconds(f"StoreConfig.{name}", value, allow_zero=name == "orphan_grace_s")
        if self.store_id is not None and (not isinstance(self.store_id, str) or not self.store_id.strip()):
            raise TypeError(f"StoreConfig.store_id must be a non-empty str or None, got {self.store_id!r}")
        if not isinstance(self.retry, RetryPolicy):
            raise TypeError("StoreConfig.retry must be a RetryPolicy")
        check_endpoint_url(self.endpoint_url, "StoreConfig.endpoint_url")
        check_region(self.region, "StoreConfig.region")


def check_seconds(name: str, value: object, *, allow_zero: bool = False) -> float:
    """A duration in seconds: a real number (not a bool), finite, > 0 (or
    >= 0) and at most what a thread can wait for (``threading.TIMEOUT_MAX``,
    about 292 years), so every wait built from it is well defined."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    if value > threading.TIMEOUT_MAX:
        raise ValueError(f"{name} must be at most {threading.TIMEOUT_MAX:.0f} s, got {value}")
    return float(value)
