"""verify(): every remote object against the manifest, orphans, and open
multipart uploads; repairs only when asked.

Checks, per manifest record: the record's own checksum, the object's
existence, its size and recorded CRC32C (HEAD), and with ``deep`` its bytes
(downloaded in chunks and re-hashed). An object whose CRC32C the remote does
not know (no ``tix-crc32c`` metadata: not uploaded by us, or rewritten) has
its bytes re-hashed even without ``deep``: a size alone proves nothing. Objects under the prefix that no
record names are orphans once older than the grace period; unfinished
multipart uploads not in flight here are reported too.

Objects are handled one by one: an operation on one that fails for good
(an unreadable record, a failed repair, a stray name the remote refuses) is
reported on that object and the rest are still checked. Only the two
listings the whole check stands on fail it. The reads (records, HEADs) run
``concurrency`` at a time, since over N files they would otherwise add up to
2N round trips, and deep re-hashes DEEP_READS_AT_ONCE at a time (memory);
repairs, which write and delete, run one after another, in the manifest's
order, as the report lists them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Container, Generator, Sequence
from functools import partial
from pathlib import Path
from typing import TypeVar

from tieredindex._native import RemoteError, TieredIndexError, crc32c
from tieredindex.layout import (
    DATA_PREFIX,
    MANIFEST_PREFIX,
    OWNER_KEY,
    PROBE_GRACE_S,
    PROBE_KEY_PREFIX,
    ManifestRecord,
    data_key,
    file_id_of_key,
    is_layout_key,
    manifest_key,
)
from tieredindex.pool import DaemonThreadPool
from tieredindex.remote import ObjectInfo, Remote, RetryCall
from tieredindex.reports import Problem, VerifyReport
from tieredindex.retry import describe_error, is_not_found

_LOG = logging.getLogger("tieredindex")
T = TypeVar("T")
U = TypeVar("U")
DEEP_CHUNK = 8 * 1024 * 1024
DEFAULT_CONCURRENCY = 8
# Deep re-hashes at once, whatever the concurrency: each holds a DEEP_CHUNK
# (and the SDK's copy of it), and two keep a link busy between chunks.
DEEP_READS_AT_ONCE = 2


def _failure(exc: Exception) -> str:
    # `call` raises RemoteError whose message already names the operation.
    return str(exc) if isinstance(exc, TieredIndexError) else describe_error(exc)


def _deep_crc(remote: Remote, call: RetryCall, key: str, size: int) -> tuple[int, int]:
    """(CRC32C, bytes read) of the whole object, read in chunks."""
    crc, read = 0, 0
    while read < size:
        end = min(size, read + DEEP_CHUNK)
        chunk: bytes = call(partial(remote.get_range, key, read, end), f"read {key} [{read}, {end})")
        if not chunk:
            break
        crc = crc32c(chunk, crc)
        read += len(chunk)
    return crc, read


def _each_at_once(
    items: Sequence[T], work: Callable[[T], U], concurrency: int
) -> Generator[tuple[T, U | Exception], None, None]:
    """``(item, work(item) or the exception it raised)``, in the order of
    ``items``, with up to ``concurrency`` items worked on at once. The
    threads are daemons (pool.py): one stuck in a hung call does not hold
    the process at exit."""
    if concurrency < 2 or len(items) < 2:
        for item in items:
            try:
                yield item, work(item)
            except Exception as exc:
                yield item, exc
        return
    pool = DaemonThreadPool(concurrency, "tieredindex-verify")
    try:
        futures = [pool.submit(work, item) for item in items]
        for item, future in zip(items, futures, strict=True):
            try:
                yield item, future.result()
            except Exception as exc:
                yield item, exc
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def verify_remote(
    remote: Remote,
    *,
    call: RetryCall,
    deep: bool,
    repair: bool,
    local_copy: Callable[[str], Path | None],
    in_flight: Container[str],
    grace_s: float,
    progress: Callable[[int, int], None] | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> VerifyReport:
    problems: list[Problem] = []
    objects = call(lambda: remote.list(""), "list objects")
    # Records are the keys the layout names (anything else under manifest/
    # is an unknown object, below).
    manifest_keys = [o.key for o in objects if o.key.startswith(MANIFEST_PREFIX) and file_id_of_key(o.key)]
    records: dict[str, ManifestRecord] = {}
    # data key -> the manifest key naming it that could not be read or parsed:
    # that object is no orphan (its record is what is damaged), so it is kept.
    unrecorded: dict[str, str] = {}
    # Data keys whose record was deleted after the listing: the writer's
    # retention (record first, then object) expired them; neither is damage.
    expired: set[str] = set()

    def bad_manifest(mkey: str, why: str, kind: str = "bad-manifest") -> None:
        action = "left as is: rebuild needs the writer's journal" if kind == "bad-manifest" else ""
        problems.append(Problem(kind, mkey, why, action))
        file_id = file_id_of_key(mkey)
        if file_id is not None:
            unrecorded[data_key(file_id)] = mkey

    def read_record(mkey: str) -> bytes:
        return call(partial(remote.get, mkey), f"get {mkey}")  # type: ignore[no-any-return]

    for mkey, raw in _each_at_once(manifest_keys, read_record, concurrency):
        if isinstance(raw, Exception) and is_not_found(raw):
            file_id = file_id_of_key(mkey)
            if file_id is not None:
                expired.add(data_key(file_id))
            continue
        if isinstance(raw, Exception):
            # Unread is not damaged: a read that failed (the remote down for a
            # while) says nothing about the record.
            bad_manifest(mkey, f"could not read it: {_failure(raw)}", kind="unchecked")
            continue
        try:
            record = ManifestRecord.from_bytes(raw, mkey)
        except ValueError as exc:
            # One read's bytes may have been damaged on their way: the
            # record is damaged only if a second read fails the check too.
            try:
                record = ManifestRecord.from_bytes(read_record(mkey), mkey)
            except ValueError:
                bad_manifest(mkey, str(exc))
                continue
            except Exception as again:
                bad_manifest(
                    mkey, f"failed a check, then could not be read again: {_failure(again)}", "unchecked"
                )
                continue
            _LOG.warning("%s (read again, it passes: damaged on the way?)", exc)
        records[record.key] = record

    def recorded_now(file_id: str) -> bool:
        """Whether the file's manifest record is there now: the listing is a
        moment old, and uploads and retention go on meanwhile."""
        mkey = manifest_key(file_id)
        return call(partial(remote.head, mkey), f"head {mkey}") is not None

    def reupload(record: ManifestRecord, why: str, kind: str) -> Problem:
        if not repair:
            return Problem(kind, record.key, why)
        path = local_copy(record.file_id)
        if path is None:
            return Problem(kind, record.key, why, "no verified local copy: cannot repair")
        try:
            call(lambda: remote.delete(record.key), f"delete {record.key}")
            call(
                lambda: remote.put_if_absent(
                    record.key, path, size=record.size, crc32c=record.crc32c, retry=call
                ),
                f"re-upload {record.key}",
            )
            info = call(lambda: remote.head(record.key), f"verify {record.key}")
        except Exception as exc:
            _LOG.warning("repair: re-upload of %s from %s failed: %s", record.key, path, _failure(exc))
            return Problem(kind, record.key, why, f"re-upload from {path} failed: {_failure(exc)}")
        fixed = info is not None and info.size == record.size and info.crc32c == record.crc32c
        _LOG.warning("repair: re-uploaded %s from %s (%s)", record.key, path, "ok" if fixed else "still bad")
        return Problem(kind, record.key, why, f"re-uploaded from {path}", fixed)

    def head_check(record: ManifestRecord) -> tuple[tuple[str, str] | None, ObjectInfo | None]:
        """The record's damage, as (kind, why), if the HEAD settles it; else
        the object's info when its bytes are to be re-hashed. Reads only:
        the repair is the caller's."""
        info = call(partial(remote.head, record.key), f"head {record.key}")
        if info is None:
            if not recorded_now(record.file_id):
                return None, None  # expired since the listing (record first, then object): not damage
            return ("missing", "listed in the manifest, missing from the remote"), None
        if info.size != record.size:
            return ("size-mismatch", f"object is {info.size} bytes, manifest records {record.size}"), None
        if info.crc32c is not None and info.crc32c != record.crc32c:
            why = f"object metadata has crc32c {info.crc32c:#010x}, manifest records {record.crc32c:#010x}"
            return ("checksum-mismatch", why), None
        return None, (info if deep or info.crc32c is None else None)

    def deep_check(item: tuple[ManifestRecord, ObjectInfo]) -> tuple[tuple[str, str] | None, int]:
        """The damage the object's bytes show, if any; and bytes re-hashed."""
        record, info = item

        def rehash() -> tuple[int, int] | None:
            """(CRC32C, bytes read); None when the file expired meanwhile."""
            try:
                return _deep_crc(remote, call, record.key, record.size)
            except Exception:
                # The re-hashes come after every HEAD: retention may have
                # deleted the file since its HEAD (record first, then object).
                if not recorded_now(record.file_id):
                    return None
                raise

        first = rehash()
        if first is None:
            return None, 0
        crc, read = first
        twice = ""
        if read == record.size and crc != record.crc32c:
            # Damage on the way is no damage stored: the object's bytes are
            # read again, and only the same wrong hash twice is a verdict.
            again = rehash()
            if again is None:
                return None, read
            if again == (record.crc32c, record.size):
                _LOG.warning("%s: hashed wrong, then right when read again (damaged on the way?)", record.key)
                return None, read
            if again != (crc, read):
                raise RemoteError(
                    f"{record.key}: read twice, hashed {crc:#010x} then {again[0]:#010x} over "
                    f"{again[1]} bytes; manifest records {record.crc32c:#010x}"
                )
            twice = ", read twice"
        if read != record.size or crc != record.crc32c:
            why = (
                f"bytes hash to {crc:#010x} over {read} bytes{twice}, manifest records {record.crc32c:#010x}"
            )
            if info.crc32c is None:
                why += " (the object has no recorded crc32c)"
            return ("checksum-mismatch", why), read
        return None, read

    # HEADs at once; then re-hashes on their own DEEP_READS_AT_ONCE threads:
    # each thread's allocator keeps the chunks it read, so fewer threads is
    # less memory, not just fewer chunks in flight (8 threads: +127 MiB).
    heads = list(_each_at_once(list(records.values()), head_check, concurrency))
    rehash = [
        (record, got[1]) for record, got in heads if not isinstance(got, Exception) and got[1] is not None
    ]
    rehashed = _each_at_once(rehash, deep_check, DEEP_READS_AT_ONCE)
    checked_bytes = 0
    try:
        for n, (record, got) in enumerate(heads, 1):
            try:
                if isinstance(got, Exception):
                    raise got
                damage, info = got
                if info is not None:  # the next re-hash is this record's
                    _, hashed = next(rehashed)
                    if isinstance(hashed, Exception):
                        raise hashed
                    damage, read = hashed
                    checked_bytes += read
                if damage is not None:
                    problems.append(reupload(record, damage[1], damage[0]))
            except Exception as exc:
                problems.append(Problem("unchecked", record.key, f"could not check it: {_failure(exc)}"))
            if progress is not None:
                progress(n, len(records))
    finally:
        rehashed.close()  # a consumer that raised: the re-hashes still queued are not done

    # Stores nested under this prefix (their owner records): checked from
    # their own prefix, never repaired from here.
    nested_owners: list[str] = [o.key[: -len(OWNER_KEY)] for o in objects if o.key.endswith("/" + OWNER_KEY)]

    def other_store(key: str) -> str | None:
        """The prefix of the nested store ``key`` belongs to, if any: under
        one's owner record, or a key of a store's layout below a prefix.
        A key of this prefix's own layout is never another store's (a store
        nested at ``index/`` has ``index/index/...``, never ``index/<id>.tix``)."""
        if is_layout_key(key):
            return None
        for prefix in nested_owners:
            if key.startswith(prefix):
                return prefix
        cut = key.find("/")
        while cut != -1:
            if is_layout_key(key[cut + 1 :]):
                return key[: cut + 1]
            cut = key.find("/", cut + 1)
        return None

    # The remote's clock, as its stamps are: a host clock ahead of the
    # server's by more than the grace would make a live upload an orphan.
    now = call(remote.clock, "read the remote's clock")
    listed = set(records) | set(manifest_keys) | {OWNER_KEY}
    for obj in objects:
        if obj.key in listed or obj.key in in_flight or obj.key in expired:
            continue
        if obj.key in unrecorded:
            why = f"its manifest record {unrecorded[obj.key]} is damaged, so it cannot be checked"
            problems.append(Problem("unchecked", obj.key, why, "left as is: not an orphan"))
            continue
        if obj.size == 0 and (obj.key == "" or obj.key.endswith("/")):
            continue  # a "folder" marker (the S3 console makes them): no data
        age_s = (now - obj.last_modified).total_seconds()
        if obj.key.startswith(PROBE_KEY_PREFIX):
            # A claim's overwrite check writes and deletes one: a listing
            # may catch it, and it may be gone or the claim over by now.
            if age_s < max(grace_s, PROBE_GRACE_S):
                continue
        elif age_s < grace_s:
            continue
        other = other_store(obj.key)
        if other is not None:
            # Pointed at a parent of another store's prefix: its files are
            # no orphans of ours, whatever the manifest here says.
            detail = f"object of another store (prefix {other!r}), {age_s:.0f} s old"
            problems.append(
                Problem("orphan", obj.key, detail, "left as is: another store's" if repair else "")
            )
            continue
        file_id = file_id_of_key(obj.key)
        what = "data object with no manifest record" if file_id else "unknown object"
        detail = f"{what}, {age_s:.0f} s old"
        if not repair:
            problems.append(Problem("orphan", obj.key, detail))
            continue
        if file_id is not None and obj.key.startswith(DATA_PREFIX):
            # An upload may have ended since the listing: its record makes
            # the object no orphan (deleting it would leave the record naming nothing).
            try:
                recorded = recorded_now(file_id)
            except Exception as exc:
                problems.append(Problem("orphan", obj.key, detail, f"left as is: {_failure(exc)}"))
                continue
            if recorded:
                continue
        try:
            call(partial(remote.delete, obj.key), f"delete orphan {obj.key}")
        except Exception as exc:
            problems.append(Problem("orphan", obj.key, detail, f"could not delete it: {_failure(exc)}"))
        else:
            problems.append(Problem("orphan", obj.key, detail, "deleted", True))

    try:
        uploads = call(remote.list_multipart_uploads, "list multipart uploads")
    except RemoteError as exc:
        # Refused for good (credentials without s3:ListBucketMultipartUploads,
        # or a server without the call: 501 NotImplemented) or failed for
        # now: only the open uploads go unchecked, not the files checked above.
        uploads = []
        problems.append(
            Problem("unchecked", "", f"open multipart uploads could not be listed: {_failure(exc)}")
        )
    for upload in uploads:
        # A young upload may be a live writer's (another process's, which
        # `in_flight` does not know): the same grace as for objects.
        if upload.key in in_flight or (now - upload.initiated).total_seconds() < grace_s:
            continue
        other = other_store(upload.key)
        if other is not None:
            detail = f"{upload.upload_id} (another store's, prefix {other!r})"
            action = "left as is: another store's" if repair else ""
            problems.append(Problem("open-multipart-upload", upload.key, detail, action))
            continue
        if not repair:
            problems.append(Problem("open-multipart-upload", upload.key, upload.upload_id))
            continue
        try:
            call(
                partial(remote.abort_multipart_upload, upload.key, upload.upload_id),
                f"abort upload of {upload.key}",
            )
        except Exception as exc:
            why = f"could not abort it: {_failure(exc)}"
            problems.append(Problem("open-multipart-upload", upload.key, upload.upload_id, why))
        else:
            problems.append(Problem("open-multipart-upload", upload.key, upload.upload_id, "aborted", True))

    return VerifyReport(
        ok=all(p.fixed for p in problems),
        problems=problems,
        checked_files=len(records),
        checked_bytes=checked_bytes,
    )
