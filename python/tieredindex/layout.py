"""Names: local directories, remote keys, manifest records, index keys.

Remote layout under the store's prefix (self-describing: a new store on an
empty directory finds everything by listing ``manifest/``):

``OWNER.json``
    The writer's claim on the prefix, written put-if-absent. Readers never
    write it; a writer with another identity is refused.
``index/<file_id>.tix``
    Sealed index objects, written put-if-absent. One without a manifest
    record is invisible: an orphan of an interrupted upload.
``manifest/<file_id>.json``
    One record per visible file, written after its object was verified:
    key, size, CRC32C, time range and count. Retention deletes the record
    first and the object second, so a crash between leaves an orphan, never
    a record pointing at nothing.
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
from typing import Any

from tieredindex._native import crc32c

OWNER_KEY = "OWNER.json"
# Keys of the objects a store writes and deletes again before its claim, to
# check that the remote refuses overwrites (S3Remote.check_put_if_absent).
PROBE_KEY_PREFIX = ".tix-probe-"
# A probe lives for two PUTs and a DELETE (under the retry policy); one older
# than this was left behind (a shutdown cut the check) and is an orphan.
PROBE_GRACE_S = 600.0
DATA_PREFIX = "index/"
MANIFEST_PREFIX = "manifest/"
MANIFEST_FORMAT = 1

_FILE_ID_RE = re.compile(r"^[0-9]{13}-[0-9a-f]{8}$")

# Local directory layout.
LOCK_NAME = "LOCK"
JOURNAL_NAME = "journal.db"
STORE_ID_NAME = "STORE_ID"
ACTIVE_DIR = "active"
SEALED_DIR = "sealed"
QUARANTINE_DIR = "quarantine"


def new_file_id(now_ms: int) -> str:
    """Sorts by creation time; the random part keeps ids unique across stores."""
    return f"{now_ms:013d}-{secrets.token_hex(4)}"


def is_file_id(text: str) -> bool:
    return bool(_FILE_ID_RE.match(text))


def data_key(file_id: str) -> str:
    return f"{DATA_PREFIX}{file_id}.tix"


def manifest_key(file_id: str) -> str:
    return f"{MANIFEST_PREFIX}{file_id}.json"


def file_id_of_key(key: str) -> str | None:
    """The file id a data or manifest key names, or None."""
    for prefix, suffix in ((DATA_PREFIX, ".tix"), (MANIFEST_PREFIX, ".json")):
        if key.startswith(prefix) and key.endswith(suffix):
            candidate = key[len(prefix) : -len(suffix)]
            return candidate if is_file_id(candidate) else None
    return None


def is_layout_key(key: str) -> bool:
    """A key a store writes under its prefix: the owner record, or the data
    object or manifest record of a file id. Anything else there (another
    tool's object, a store nested under a longer prefix, a console "folder")
    is not ours: reported, never deleted or aborted."""
    return key == OWNER_KEY or file_id_of_key(key) is not None


def index_key(topic: str, key: str) -> bytes:
    """The bytes hashed for (topic, key): the topic's UTF-8 length first, so
    ("a#b", "c") and ("a", "b#c") never collide (RocketMQ joins them with
    '#')."""
    if not isinstance(topic, str):
        raise TypeError(f"topic must be a str, not {type(topic).__name__}")
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, not {type(key).__name__}")
    if not topic:
        raise ValueError("topic must not be empty")
    t, k = _utf8("topic", topic), _utf8("key", key)
    return len(t).to_bytes(4, "little") + t + k


def _utf8(name: str, text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError as exc:  # a lone surrogate: no UTF-8 for it
        raise ValueError(f"{name} is not valid text: {exc}") from None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ManifestRecord:
    """What makes one uploaded file visible. Never holds placeholders: it is
    written only after the object was verified, from the sealed file's own
    figures (RocketMQ's phantom begin=Long.MAX_VALUE record broke recovery)."""

    file_id: str
    key: str
    size: int
    crc32c: int
    count: int
    begin_ms: int
    min_ms: int
    max_ms: int
    format: int = MANIFEST_FORMAT

    def to_bytes(self) -> bytes:
        body = dataclasses.asdict(self)
        body["check"] = _record_check(body)
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes, where: str) -> ManifestRecord:
        """Parses and checks the record stored at manifest key ``where`` (it
        carries its own CRC32C, so a flipped digit is caught, and must name
        the file its key names); ValueError naming ``where`` if bad."""
        try:
            data: Any = json.loads(raw)
            check = data.pop("check")
            record = cls(**data)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"{where}: not a manifest record ({exc})") from None
        if check != _record_check(dataclasses.asdict(record)):
            raise ValueError(f"{where}: manifest record fails its checksum")
        ints = (record.size, record.crc32c, record.count, record.begin_ms, record.min_ms, record.max_ms)
        if (
            record.format != MANIFEST_FORMAT
            or not is_file_id(record.file_id)
            or record.key != data_key(record.file_id)
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ints)
            or record.crc32c >= 2**32
            or record.count < 1
            or record.min_ms > record.max_ms
        ):
            raise ValueError(f"{where}: manifest record fails its checks")
        own_key = manifest_key(record.file_id)
        if where != own_key and not where.endswith("/" + own_key):  # a key, or one with its prefix
            # A record copied to another file's key: trusting it, retention
            # would delete the file it names and leave this key dangling.
            raise ValueError(f"{where}: the manifest record names file {record.file_id}, not this key's")
        return record


def _record_check(body: dict[str, Any]) -> int:
    return crc32c(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def owner_record(store_id: str) -> bytes:
    """The claim a writer puts on its prefix; deterministic, so a writer
    re-claiming its own prefix finds an identical object."""
    return json.dumps({"format": MANIFEST_FORMAT, "store_id": store_id}, sort_keys=True).encode()


def owner_of(raw: bytes) -> str:
    try:
        value = json.loads(raw)["store_id"]
    except (ValueError, TypeError, KeyError):
        return "<unreadable owner record>"
    return str(value)
