"""verify(): every remote object against the manifest, orphans, and open
multipart uploads; repairs only when asked.

Checks, per manifest record: the record's own checksum, the object's
existence, its size and recorded CRC32C (HEAD), and with ``deep`` its bytes
(downloaded in chunks and re-hashed). Objects under the prefix that no
record names are orphans once older than the grace period; unfinished
multipart uploads not in flight here are reported too.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from tieredindex._native import crc32c
from tieredindex.layout import MANIFEST_PREFIX, OWNER_KEY, ManifestRecord, file_id_of_key
from tieredindex.remote import Remote
from tieredindex.reports import Problem, VerifyReport

_LOG = logging.getLogger("tieredindex")
T = TypeVar("T")
Call = Callable[[Callable[[], Any], str], Any]
DEEP_CHUNK = 16 * 1024 * 1024


def _deep_crc(remote: Remote, call: Call, key: str, size: int) -> tuple[int, int]:
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


def verify_remote(
    remote: Remote,
    *,
    call: Call,
    deep: bool,
    repair: bool,
    local_copy: Callable[[str], Path | None],
    in_flight: set[str],
    grace_s: float,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    problems: list[Problem] = []
    objects = call(lambda: remote.list(""), "list objects")
    manifest_keys = [o.key for o in objects if o.key.startswith(MANIFEST_PREFIX)]
    records: dict[str, ManifestRecord] = {}
    for mkey in manifest_keys:
        raw: bytes = call(partial(remote.get, mkey), f"get {mkey}")
        try:
            record = ManifestRecord.from_bytes(raw, mkey)
        except ValueError as exc:
            problems.append(
                Problem("bad-manifest", mkey, str(exc), "left as is: rebuild needs the writer's journal")
            )
            continue
        records[record.key] = record

    def reupload(record: ManifestRecord, why: str, kind: str) -> Problem:
        if not repair:
            return Problem(kind, record.key, why)
        path = local_copy(record.file_id)
        if path is None:
            return Problem(kind, record.key, why, "no verified local copy: cannot repair")
        call(lambda: remote.delete(record.key), f"delete {record.key}")
        call(
            lambda: remote.put_if_absent(record.key, path, size=record.size, crc32c=record.crc32c),
            f"re-upload {record.key}",
        )
        info = call(lambda: remote.head(record.key), f"verify {record.key}")
        fixed = info is not None and info.size == record.size and info.crc32c == record.crc32c
        _LOG.warning("repair: re-uploaded %s from %s (%s)", record.key, path, "ok" if fixed else "still bad")
        return Problem(kind, record.key, why, f"re-uploaded from {path}", fixed)

    checked_bytes = 0
    for n, record in enumerate(records.values(), 1):
        info = call(partial(remote.head, record.key), f"head {record.key}")
        if info is None:
            problems.append(reupload(record, "listed in the manifest, missing from the remote", "missing"))
        elif info.size != record.size:
            why = f"object is {info.size} bytes, manifest records {record.size}"
            problems.append(reupload(record, why, "size-mismatch"))
        elif info.crc32c is not None and info.crc32c != record.crc32c:
            why = f"object metadata has crc32c {info.crc32c:#010x}, manifest records {record.crc32c:#010x}"
            problems.append(reupload(record, why, "checksum-mismatch"))
        elif deep:
            crc, read = _deep_crc(remote, call, record.key, record.size)
            checked_bytes += read
            if read != record.size or crc != record.crc32c:
                why = f"bytes hash to {crc:#010x} over {read} bytes, manifest records {record.crc32c:#010x}"
                problems.append(reupload(record, why, "checksum-mismatch"))
        if progress is not None:
            progress(n, len(records))

    now = dt.datetime.now(dt.UTC)
    listed = set(records) | set(manifest_keys) | {OWNER_KEY}
    for obj in objects:
        if obj.key in listed or obj.key in in_flight:
            continue
        age_s = (now - obj.last_modified).total_seconds()
        if age_s < grace_s:
            continue
        what = "data object with no manifest record" if file_id_of_key(obj.key) else "unknown object"
        if repair:
            call(partial(remote.delete, obj.key), f"delete orphan {obj.key}")
            problems.append(Problem("orphan", obj.key, f"{what}, {age_s:.0f} s old", "deleted", True))
        else:
            problems.append(Problem("orphan", obj.key, f"{what}, {age_s:.0f} s old"))

    for upload in call(remote.list_multipart_uploads, "list multipart uploads"):
        if upload.key in in_flight:
            continue
        if repair:
            call(
                partial(remote.abort_multipart_upload, upload.key, upload.upload_id),
                f"abort upload of {upload.key}",
            )
            problems.append(Problem("open-multipart-upload", upload.key, upload.upload_id, "aborted", True))
        else:
            problems.append(Problem("open-multipart-upload", upload.key, upload.upload_id))

    return VerifyReport(
        ok=all(p.fixed for p in problems),
        problems=problems,
        checked_files=len(records),
        checked_bytes=checked_bytes,
    )
