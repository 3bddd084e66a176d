"""Apache RocketMQ interop: read, verify and import RocketMQ tiered index
files (RIP-65), and audit a RocketMQ broker's tiered index after a shutdown.

The reader is in the Rust core (``rust/rocketmq.rs``); this module wraps it,
reads RocketMQ's metadata, finds the Posix provider's segment files, and
holds the audit and import logic behind ``tieredindex rocketmq audit``.

Reading
    :class:`RocketMQIndexFile` opens either layout (the local *unsealed*
    file, or the *compacted* one RocketMQ uploads) and answers queries with
    RocketMQ's semantics: key string ``topic + "#" + key``, Java
    ``String.hashCode`` over UTF-16 code units made non-negative, times
    ``begin + timeDiff * 1000`` (whole seconds), newest first, with
    RocketMQ's per-file caps (512 chain links in an unsealed file, the first
    1024 items of a compacted slot). One deliberate difference: given a
    ``topic_id``, items of other topics are dropped *before* ``max_count``
    is applied (RocketMQ's fetcher drops them after, so it can return fewer).

Verifying
    RocketMQ files carry no checksum, so :meth:`RocketMQIndexFile.verify`
    checks structure: magic, size against the geometry, header counts
    against the slots and chains, every pointer and (position, length) in
    bounds, runs tiling the items, no cycles, every item reachable exactly
    once from the slot its hash selects, no negative ids, offsets or sizes.
    The first hard finding raises :class:`CorruptFileError` naming the file
    and byte offset; soft ones (items RocketMQ can never reach, times after
    the header's end time) are warnings.

Importing: what an imported entry means
    A RocketMQ item holds (topicId, queueId, offset, size, timeDiff, hash),
    where ``hash`` is the 32-bit Java hash of ``topic#key``: the key itself
    is gone, so our fingerprints (XXH3 of ``index_key(topic, key)``) cannot
    be recomputed. Imported entries are therefore keyed by what RocketMQ
    *does* know, consistently at import and at query time:

    ``index_key(ROCKETMQ_IMPORT_TOPIC, f"{topic_id}#{hash}")``

    with ``ROCKETMQ_IMPORT_TOPIC = "rocketmq:imported"`` (':' is not allowed
    in a RocketMQ topic name, so no native key can collide). A query for
    (topic, key) computes RocketMQ's hash of ``topic#key``, takes the topic's
    id from RocketMQ's metadata, and asks our store for that synthetic key
    (:func:`imported_key`, :func:`query_imported`), through the store's
    ordinary query path. Each imported file is first written as one of our
    unsealed files and then sealed, checksummed, uploaded put-if-absent,
    verified and listed in the manifest by :class:`~tieredindex.IndexStore`
    itself: the files are placed in the store directory's ``active/``
    before ``start()``, where recovery adopts them (an operator's copy), and
    ``shutdown()`` uploads them and reports whether every one verified. File
    ids are ``<begin ms>-<CRC32C of the imported entries>``, so importing the
    same file again is a no-op.

    Limits, stated plainly: (1) the answer to a query is RocketMQ's answer,
    not ours: two keys of one topic with the same 32-bit hash share their
    entries (a RocketMQ client filters by the message's keys; so must the
    caller); (2) times have RocketMQ's whole-second granularity; (3) the
    entry's offset is RocketMQ's physical offset in its tiered per-queue
    commit log, meaningful only to RocketMQ; (4) a topic renamed or
    re-created in RocketMQ gets a new id; the import keeps the old one;
    (5) items whose time is before 1970 cannot be imported.

The broker's directories (assumptions, from RocketMQ's source)
    ``<store>/tiered_index_file/<begin ms>``
        Local unsealed files (RocketMQ recovers numeric names only).
        ``compacting/`` holds half-made compacted copies (wiped at start).
    ``<store>/config/tieredStoreMetadata.json``
        fastjson of ``TieredMetadataSerializeWrapper``: ``topicMetadataTable``
        (``{topic: {"topicId": ..}}``) and ``indexFileSegmentTable``
        (``{filePath: {baseOffset: FileSegmentMetadata}}``, filePath
        ``<broker>/rmq_sys_INDEX/0``). fastjson writes integer map keys
        unquoted (``{0:{...}}``); the reader accepts both.
    ``<tiered>/<md5(cluster)[:8]>_<cluster>/<filePath>/INDEX/<md5(str(baseOffset))[:8]><baseOffset:020d>``
        The Posix provider's segment file: one compacted index file per
        segment, written whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import operator
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

from tieredindex._entry import Entry
from tieredindex._native import (
    ROCKETMQ_IMPORT_TOPIC,
    CorruptFileError,
    RocketMQFile,
    StoreLockedError,
    TieredIndexError,
    rocketmq_key_hash,
)
from tieredindex.layout import ACTIVE_DIR, LOCK_NAME, is_file_id

if TYPE_CHECKING:
    from tieredindex.config import StoreConfig
    from tieredindex.remote import Remote
    from tieredindex.store import IndexStore

__all__ = [
    "ROCKETMQ_IMPORT_TOPIC",
    "AuditReport",
    "Finding",
    "ImportResult",
    "RocketMQIndexFile",
    "RocketMQItem",
    "RocketMQMetadata",
    "SegmentRecord",
    "VerifyResult",
    "add_rocketmq_commands",
    "audit",
    "cluster_dir_name",
    "import_into_store",
    "imported_key",
    "index_segment_dir",
    "load_metadata",
    "query_imported",
    "segment_file_name",
]

MAX_TIME = 2**63 - 1
LONG_MAX = 2**63 - 1
INDEX_TYPE = 2
INDEX_TOPIC = "rmq_sys_INDEX"
LOCAL_DIR = "tiered_index_file"
COMPACTING_DIR = "compacting"
METADATA_PATH = Path("config") / "tieredStoreMetadata.json"
HEADER_LEN = 28


class RocketMQItem(NamedTuple):
    """One RocketMQ index item, as stored, with its byte position."""

    hash: int
    topic_id: int
    queue_id: int
    offset: int
    size: int
    time_diff: int
    timestamp_ms: int
    position: int


@dataclasses.dataclass(frozen=True)
class VerifyResult:
    items: int
    used_slots: int
    min_ms: int
    max_ms: int
    longest_run: int
    warnings: list[str]
    warning_count: int


class RocketMQIndexFile:
    """A RocketMQ index file, unsealed or compacted (see the module doc).

    ``layout`` is ``"unsealed"`` or ``"compacted"`` (detected if None);
    ``max_slots``/``max_items`` are RocketMQ's ``tieredStoreIndexFileMaxHashSlotNum``
    and ``...MaxIndexNum`` (not in its header: detected where unambiguous)."""

    def __init__(self, native: RocketMQFile) -> None:
        self.native = native

    @classmethod
    def open(
        cls,
        path_or_buffer: str | os.PathLike[str] | bytes,
        *,
        layout: str | None = None,
        max_slots: int | None = None,
        max_items: int | None = None,
    ) -> RocketMQIndexFile:
        return cls(RocketMQFile.open(path_or_buffer, layout=layout, max_slots=max_slots, max_items=max_items))

    @property
    def name(self) -> str:
        return self.native.name

    @property
    def layout(self) -> str:
        return self.native.layout

    @property
    def begin_ms(self) -> int:
        return self.native.begin_ms

    @property
    def end_ms(self) -> int:
        return self.native.end_ms

    @property
    def item_count(self) -> int:
        return self.native.item_count

    @property
    def slot_count(self) -> int:
        return self.native.slot_count

    @property
    def max_slots(self) -> int:
        return self.native.max_slots

    @property
    def size(self) -> int:
        return self.native.size

    def query(
        self,
        topic: str,
        key: str,
        begin_ms: int = 0,
        end_ms: int = MAX_TIME,
        max_count: int = 64,
        topic_id: int | None = None,
    ) -> list[RocketMQItem]:
        """RocketMQ's answer for (topic, key) from this file, newest first."""
        hits = self.native.query(topic, key, begin_ms, end_ms, max_count, topic_id)
        return [RocketMQItem(*h) for h in hits]

    def verify(self) -> VerifyResult:
        """Structural checks; raises CorruptFileError naming the byte."""
        return VerifyResult(*self.native.verify())

    def __repr__(self) -> str:
        return f"RocketMQIndexFile({self.native!r})"


# ----------------------------------------------------------- import keys


def imported_key(topic_id: int, hash_or_topic: int | str, key: str | None = None) -> tuple[str, str]:
    """The (topic, key) our store indexes imported entries under:
    ``imported_key(topic_id, hash)`` or ``imported_key(topic_id, topic, key)``."""
    if isinstance(hash_or_topic, str):
        if key is None:
            raise TypeError("imported_key(topic_id, topic, key) needs the key")
        h = rocketmq_key_hash(hash_or_topic, key)
    else:
        h = _java_int("hash", hash_or_topic)
    # A wrong type made a key no import wrote ("x#5", "1#1.5"): a query of
    # it found nothing, saying nothing.
    return ROCKETMQ_IMPORT_TOPIC, f"{_java_int('topic_id', topic_id)}#{h}"


def _java_int(name: str, value: object) -> int:
    """``value`` as a Java int (an int or anything with ``__index__``, no
    bool); TypeError or OverflowError naming ``name``."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not bool")
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be an int, not {type(value).__name__}") from None
    if not -(2**31) <= number < 2**31:
        raise OverflowError(f"{name} is out of range, got {number}")
    return number


def query_imported(
    store: IndexStore,
    topic: str,
    key: str,
    topic_id: int,
    begin_ms: int = 0,
    end_ms: int = MAX_TIME,
    max_count: int = 64,
) -> list[Entry]:
    """Entries imported from RocketMQ for (topic, key) of RocketMQ topic id
    ``topic_id``, through ``store.query`` (an :class:`~tieredindex.IndexStore`).
    RocketMQ semantics: 32-bit hash collisions within the topic included."""
    itopic, ikey = imported_key(topic_id, topic, key)
    return store.query(itopic, ikey, begin_ms, end_ms, max_count)


# ---------------------------------------------------------------- metadata


@dataclasses.dataclass(frozen=True)
class SegmentRecord:
    """One ``FileSegmentMetadata`` of the index table."""

    path: str
    base_offset: int
    size: int
    status: int
    begin_ms: int
    end_ms: int
    create_ms: int
    seal_ms: int
    type: int = INDEX_TYPE

    @property
    def phantom(self) -> bool:
        """Rolled but never committed: size 0 and begin = Long.MAX_VALUE."""
        return self.size == 0 and self.begin_ms == LONG_MAX


@dataclasses.dataclass(frozen=True)
class RocketMQMetadata:
    topics: dict[str, int]
    index_segments: list[SegmentRecord]


_BARE_KEY = re.compile(r"-?[0-9]+")


def _quote_bare_keys(text: str) -> str:
    """fastjson writes integer map keys unquoted (``{0:{..}}``): quote them,
    outside strings, so the text parses as JSON."""
    out: list[str] = []
    i, n = 0, len(text)
    expect_key = False
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
            expect_key = False
            continue
        if c in "{,":
            expect_key = True
            out.append(c)
            i += 1
            continue
        if expect_key and not c.isspace():
            m = _BARE_KEY.match(text, i)
            if m is not None:
                rest = text[m.end() :].lstrip()
                if rest.startswith(":"):
                    out.append(f'"{m.group()}"')
                    i = m.end()
                    expect_key = False
                    continue
            expect_key = False
        out.append(c)
        i += 1
    return "".join(out)


def _int(d: dict[str, Any], *names: str, default: int = 0) -> int:
    for name in names:
        v = d.get(name)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return default


def load_metadata(path: str | os.PathLike[str]) -> RocketMQMetadata:
    """Parses ``tieredStoreMetadata.json``; ValueError if it is not one."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        data: Any = json.loads(_quote_bare_keys(text))
    except ValueError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a metadata object")
    topics: dict[str, int] = {}
    table = data.get("topicMetadataTable") or {}
    if isinstance(table, dict):
        for name, meta in table.items():
            if isinstance(meta, dict):
                topics[str(meta.get("topic", name))] = _int(meta, "topicId")
    segments: list[SegmentRecord] = []
    index_table = data.get("indexFileSegmentTable") or {}
    if not isinstance(index_table, dict):
        raise ValueError(f"{path}: indexFileSegmentTable is not an object")
    for file_path, by_offset in index_table.items():
        if not isinstance(by_offset, dict):
            raise ValueError(f"{path}: indexFileSegmentTable[{file_path!r}] is not an object")
        for base, rec in by_offset.items():
            if not isinstance(rec, dict):
                raise ValueError(f"{path}: segment {file_path}@{base} is not an object")
            segments.append(
                SegmentRecord(
                    path=str(rec.get("path", file_path)),
                    base_offset=_int(rec, "baseOffset", default=int(base)),
                    size=_int(rec, "size"),
                    status=_int(rec, "status"),
                    begin_ms=_int(rec, "beginTimestamp"),
                    end_ms=_int(rec, "endTimestamp"),
                    create_ms=_int(rec, "createTimestamp"),
                    seal_ms=_int(rec, "sealTimestamp"),
                    type=_int(rec, "type", default=INDEX_TYPE),
                )
            )
    segments.sort(key=lambda s: (s.path, s.base_offset))
    return RocketMQMetadata(topics=topics, index_segments=segments)


# -------------------------------------------------------------- Posix layout


def _md5_prefix(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()[:8]


def cluster_dir_name(cluster: str) -> str:
    """``MessageStoreUtil.getHash(cluster) + "_" + cluster``."""
    return f"{_md5_prefix(cluster)}_{cluster}"


def segment_file_name(base_offset: int) -> str:
    """``MessageStoreUtil.offset2FileName``: md5 prefix, 20-digit offset."""
    return f"{_md5_prefix(str(base_offset))}{base_offset:020d}"


def index_file_path(broker: str) -> str:
    """``MessageStoreUtil.getIndexFilePath``: ``<broker>/rmq_sys_INDEX/0``."""
    return f"{broker}/{INDEX_TOPIC}/0"


def index_segment_dir(tiered_path: str | os.PathLike[str], cluster: str, broker: str) -> Path:
    return Path(tiered_path) / cluster_dir_name(cluster) / index_file_path(broker) / "INDEX"


def _find_clusters(tiered_path: Path) -> list[str]:
    """Cluster names whose ``<md5>_<cluster>`` directory is under the path."""
    found: list[str] = []
    if tiered_path.is_dir():
        for child in sorted(tiered_path.iterdir()):
            prefix, sep, name = child.name.partition("_")
            if child.is_dir() and sep and name and prefix == _md5_prefix(name):
                found.append(name)
    return found


# -------------------------------------------------------------------- audit


@dataclasses.dataclass(frozen=True)
class Finding:
    """``severity`` is "problem" (exit status 1) or "note"."""

    kind: str
    severity: str
    path: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class ImportResult:
    imported: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    uploaded: list[str] = dataclasses.field(default_factory=list)
    pending: list[str] = dataclasses.field(default_factory=list)
    clean: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class AuditReport:
    findings: list[Finding] = dataclasses.field(default_factory=list)
    local_files: int = 0
    segments: int = 0
    topics: dict[str, int] = dataclasses.field(default_factory=dict)
    importable: list[Path] = dataclasses.field(default_factory=list)
    imported: ImportResult | None = None

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "problem"]

    @property
    def ok(self) -> bool:
        return not self.problems

    def kinds(self) -> list[str]:
        return [f.kind for f in self.findings]

    def add(self, kind: str, path: Path | str, message: str, *, problem: bool = True) -> None:
        self.findings.append(Finding(kind, "problem" if problem else "note", str(path), message))

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "local_files": self.local_files,
            "segments": self.segments,
            "problems": len(self.problems),
            "findings": [f.to_dict() for f in self.findings],
            "imported": self.imported.to_dict() if self.imported else None,
        }


def _open_checked(
    report: AuditReport,
    path: Path,
    layout: str,
    kind: str,
    max_slots: int | None,
    max_items: int | None,
) -> tuple[RocketMQIndexFile, VerifyResult] | None:
    """Opens and verifies; a failure becomes a finding of ``kind``."""
    try:
        f = RocketMQIndexFile.open(
            path,
            layout=layout,
            max_slots=max_slots,
            max_items=max_items if layout == "unsealed" else None,
        )
        result = f.verify()
    except CorruptFileError as exc:
        report.add(kind, path, str(exc))
        return None
    except ValueError as exc:  # geometry not inferable: give --max-slots
        report.add(kind, path, f"{exc}")
        return None
    for w in result.warnings:
        report.add("warning", path, w, problem=False)
    if result.warning_count > len(result.warnings):
        report.add(
            "warning", path, f"{result.warning_count - len(result.warnings)} more warnings", problem=False
        )
    return f, result


def audit(
    store_path: str | os.PathLike[str],
    tiered_path: str | os.PathLike[str],
    *,
    cluster: str | None = None,
    broker: str | None = None,
    max_slots: int | None = None,
    max_items: int | None = None,
) -> AuditReport:
    """Read-only audit of a stopped RocketMQ broker's tiered index: local
    files never uploaded, remote segments missing, partial, structurally
    broken or empty, phantom metadata records, orphan segment files."""
    store = Path(store_path)
    tiered = Path(tiered_path)
    report = AuditReport()

    # Remote side: metadata and the Posix provider's segment files.
    records: list[SegmentRecord] = []
    meta_path = store / METADATA_PATH
    if not meta_path.is_file():
        report.add(
            "metadata_missing", meta_path, "no tiered store metadata: remote segments cannot be checked"
        )
    else:
        try:
            meta = load_metadata(meta_path)
        except (ValueError, OSError) as exc:
            report.add("metadata_unreadable", meta_path, str(exc))
        else:
            report.topics = meta.topics
            records = [r for r in meta.index_segments if r.type == INDEX_TYPE]
    if broker is not None:
        records = [r for r in records if r.path == index_file_path(broker)]
    clusters = [cluster] if cluster is not None else _find_clusters(tiered)
    if cluster is None and len(clusters) > 1:
        report.add(
            "cluster_ambiguous",
            tiered,
            f"several clusters under the tiered path ({', '.join(clusters)}): give --cluster",
        )
        clusters = []
    cluster_dir = tiered / cluster_dir_name(clusters[0]) if clusters else None

    segment_begins: dict[int, int] = {}  # begin ms -> item count of a healthy segment
    named: set[Path] = set()
    by_path: dict[str, list[SegmentRecord]] = {}
    for rec in records:
        by_path.setdefault(rec.path, []).append(rec)
    for seg_path, recs in sorted(by_path.items()):
        expected_base: int | None = None
        for rec in sorted(recs, key=lambda r: r.base_offset):
            report.segments += 1
            where = f"{seg_path}@{rec.base_offset}"
            if expected_base is not None and rec.base_offset != expected_base:
                report.add(
                    "segment_offsets",
                    where,
                    f"base offset {rec.base_offset}, but the segment before ends at {expected_base} "
                    "(a gap or an overlap in the index segments)",
                )
            expected_base = rec.base_offset + rec.size
            if rec.status == 2:
                report.add("segment_deleted", where, "metadata marks the segment deleted", problem=False)
                continue
            file = (
                cluster_dir / seg_path / "INDEX" / segment_file_name(rec.base_offset) if cluster_dir else None
            )
            if file is not None:
                named.add(file)
            if rec.phantom:
                exists = file is not None and file.exists() and file.stat().st_size > 0
                report.add(
                    "phantom_record",
                    where,
                    "metadata record with size 0 and begin = Long.MAX_VALUE: the segment was rolled but "
                    "never committed (a crash before the upload finished); RocketMQ recovers it as a remote "
                    "file keyed Long.MAX_VALUE"
                    + (f"; {file} holds {file.stat().st_size} bytes" if exists and file is not None else ""),
                )
                continue
            if file is None:
                report.add("segment_missing", where, "no cluster directory found under the tiered path")
                continue
            if not file.is_file():
                report.add("segment_missing", file, f"metadata records {rec.size} bytes, the file is missing")
                continue
            actual = file.stat().st_size
            if actual != rec.size:
                what = "partial" if actual < rec.size else "longer than recorded"
                report.add(
                    "segment_partial",
                    file,
                    f"{what}: {actual} bytes, metadata records {rec.size}",
                )
                continue
            if actual <= HEADER_LEN:
                report.add("segment_partial", file, f"{actual} bytes: RocketMQ treats it as empty (#9441)")
                continue
            opened = _open_checked(report, file, "compacted", "segment_corrupt", max_slots, None)
            if opened is None:
                continue
            f, result = opened
            if f.begin_ms != rec.begin_ms:
                report.add(
                    "segment_metadata_mismatch",
                    file,
                    f"header begin time {f.begin_ms}, metadata records {rec.begin_ms}",
                )
            if result.items == 0:
                report.add(
                    "empty_segment",
                    file,
                    f"an empty index file uploaded ({actual} bytes of slot table); RocketMQ uploads one "
                    "at every restart",
                )
                continue
            segment_begins[f.begin_ms] = result.items
            report.importable.append(file)
    if cluster_dir is not None and (broker is not None or len(by_path) <= 1):
        brokers = [broker] if broker is not None else [p.split("/")[0] for p in by_path]
        for b in brokers:
            seg_dir = cluster_dir / index_file_path(b) / "INDEX"
            if seg_dir.is_dir():
                for file in sorted(seg_dir.iterdir()):
                    if file.is_file() and file not in named:
                        report.add(
                            "orphan_segment",
                            file,
                            "a segment file no metadata record names (an upload whose record was lost, "
                            "or a phantom's base offset reused)",
                        )

    # Local side: files the broker still holds.
    local = store / LOCAL_DIR
    if local.is_dir():
        compacting = local / COMPACTING_DIR
        if compacting.is_dir() and any(compacting.iterdir()):
            report.add(
                "compacting_leftover",
                compacting,
                "half-made compacted copies from an interrupted upload (RocketMQ wipes them at start)",
                problem=False,
            )
        for path in sorted(local.iterdir(), key=lambda p: p.name):
            if not path.is_file() or not path.name.isdigit():
                continue
            report.local_files += 1
            opened = _open_checked(report, path, "unsealed", "local_corrupt", max_slots, max_items)
            if opened is None:
                continue
            f, result = opened
            if result.items == 0:
                report.add("local_empty", path, "an empty local file (the next writable file)", problem=False)
                continue
            uploaded = segment_begins.get(f.begin_ms)
            if uploaded is None:
                report.add(
                    "not_uploaded",
                    path,
                    f"{result.items} items never uploaded (the last file at shutdown is left behind by "
                    "RocketMQ before #8654; its keys cannot be queried from the tier)",
                )
                report.importable.append(path)
            elif uploaded != result.items:
                report.add(
                    "local_differs",
                    path,
                    f"{result.items} items locally, the uploaded segment with the same begin time holds "
                    f"{uploaded}",
                )
                report.importable.append(path)
            else:
                report.add(
                    "local_copy_left",
                    path,
                    "already uploaded (same begin time and item count); RocketMQ deletes it at next start",
                    problem=False,
                )
    elif not store.is_dir():
        report.add("store_missing", store, "no such directory")
    return report


# ------------------------------------------------------------------- import


def import_into_store(
    files: Iterable[str | os.PathLike[str] | RocketMQIndexFile],
    directory: str | os.PathLike[str],
    remote: Remote | str,
    *,
    config: StoreConfig | None = None,
    max_slots: int | None = None,
    max_items: int | None = None,
    timeout_s: float | None = None,
) -> ImportResult:
    """Converts RocketMQ files into our format and hands them to an
    :class:`~tieredindex.IndexStore` on ``directory`` (created if needed;
    it must not be held by a live store), which seals, uploads put-if-absent,
    verifies and lists them in its manifest; its shutdown report says which
    made it. Empty and corrupt files are refused (CorruptFileError)."""
    from tieredindex.store import IndexStore

    base = Path(directory)
    active = base / ACTIVE_DIR
    active.mkdir(parents=True, exist_ok=True)
    _check_not_held(base)
    result = ImportResult()
    for item in files:
        f = item if isinstance(item, RocketMQIndexFile) else _open_any(Path(item), max_slots, max_items)
        begin = f.begin_ms
        if not 0 <= begin < 10**13:
            raise CorruptFileError(f"{f.name}: begin time {begin} cannot name an index file")
        tmp = active / f".rocketmq-import-{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        _, imported = f.native.import_to(tmp)
        if imported is None:
            result.skipped.append(f.name)
            continue
        file_id = f"{begin:013d}-{imported[3]:08x}"
        assert is_file_id(file_id)
        dest = active / f"{file_id}.tix"
        if dest.exists():
            tmp.unlink()
        else:
            os.replace(tmp, dest)
        result.imported.append(file_id)
    store = IndexStore(base, remote, config)
    store.start()
    report = store.shutdown(timeout_s)
    result.uploaded = sorted(set(report.uploaded) & set(result.imported))
    result.pending = list(report.pending)
    result.clean = report.clean
    return result


def _open_any(path: Path, max_slots: int | None, max_items: int | None) -> RocketMQIndexFile:
    """Opens a file of either layout with the broker's geometry hints, as
    :func:`audit` does. ``max_items`` means the broker's items per unsealed
    file, but a compacted file's item count, so it is passed only once the
    file is known to be unsealed. The layout is detected from the header
    alone, before any geometry (``detect_layout`` in rust/rocketmq.rs), so a
    ``ValueError`` from the first open is an unsealed file whose geometry
    needs ``max_items`` too."""
    try:
        f = RocketMQIndexFile.open(path, max_slots=max_slots)
    except ValueError:
        if max_items is None:
            raise
        return RocketMQIndexFile.open(path, layout="unsealed", max_slots=max_slots, max_items=max_items)
    if f.layout == "unsealed" and max_items is not None:
        f = RocketMQIndexFile.open(path, layout="unsealed", max_slots=max_slots, max_items=max_items)
    return f


def _check_not_held(directory: Path) -> None:
    """Fails if a live store holds ``directory`` (files written into its
    ``active/`` would wait for its next start)."""
    lock = directory / LOCK_NAME
    if not lock.exists():
        return
    fd = os.open(lock, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreLockedError(f"{directory}: a live store holds this directory") from None
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- CLI


def add_rocketmq_commands(subparsers: Any) -> None:
    """Registers ``tieredindex rocketmq audit`` on the CLI's subparsers."""
    import argparse

    rmq: argparse.ArgumentParser = subparsers.add_parser(
        "rocketmq",
        help="audit (and import) a RocketMQ broker's tiered index",
        description="Apache RocketMQ interop (RIP-65 tiered index files).",
    )
    rsub = rmq.add_subparsers(
        dest="rocketmq_command", required=True, metavar="COMMAND", parser_class=type(rmq)
    )
    a: argparse.ArgumentParser = rsub.add_parser(
        "audit",
        help="check a stopped broker's local index files, metadata and Posix segments",
        description=(
            "Reports local index files never uploaded (the shutdown bug), remote segments\n"
            "missing, partial, structurally broken or empty, phantom metadata records and\n"
            "orphan segment files. Read-only unless --import is given: then every healthy\n"
            "file holding items is converted, checksummed and uploaded through an IndexStore\n"
            "to --remote. Exit status: 0 healthy, 1 problems found, 2 bad usage."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  tieredindex rocketmq audit --store-path ~/store --tiered-path /data/tiered\n"
            "  tieredindex rocketmq audit --store-path ~/store --tiered-path /data/tiered \\\n"
            "      --cluster DefaultCluster --broker broker-a --import --remote file:///backup/index --json"
        ),
    )
    a.add_argument("--store-path", required=True, metavar="DIR", help="the broker's storePathRootDir")
    a.add_argument("--tiered-path", required=True, metavar="DIR", help="the broker's tieredStoreFilePath")
    a.add_argument("--cluster", help="brokerClusterName (found under --tiered-path if there is one)")
    a.add_argument("--broker", help="brokerName (all brokers in the metadata if omitted)")
    a.add_argument("--max-slots", type=int, metavar="N", help="tieredStoreIndexFileMaxHashSlotNum")
    a.add_argument("--max-items", type=int, metavar="N", help="tieredStoreIndexFileMaxIndexNum")
    a.add_argument("--import", dest="do_import", action="store_true", help="import healthy files to --remote")
    a.add_argument(
        "--remote", metavar="URL", help="where --import uploads (file:///dir or s3://bucket/prefix)"
    )
    a.add_argument(
        "--work-dir",
        metavar="DIR",
        help="the IndexStore directory --import uses (default: <store-path>/tieredindex-import)",
    )
    a.add_argument(
        "--json", action="store_true", help='print JSON (on failure: {"error": ..., "exit_status": N})'
    )
    a.set_defaults(func=_cmd_audit)


def _usage(message: str) -> NoReturn:
    """Bad usage: the command line reports it (exit status 2; with --json,
    as a JSON document too)."""
    from tieredindex.cli import UsageError

    raise UsageError(message)


def _cmd_audit(args: Any) -> int:
    for name in ("store_path", "tiered_path"):
        value = getattr(args, name)
        if not Path(value).is_dir():
            problem = "not a directory" if Path(value).exists() else "no such directory"
            _usage(f"--{name.replace('_', '-')} {value}: {problem}")
    for name in ("max_slots", "max_items"):
        value = getattr(args, name)
        if value is not None and not 1 <= value < 2**31:
            _usage(f"--{name.replace('_', '-')} must be from 1 to 2**31-1, got {value}")
    if args.do_import and not args.remote:
        _usage("--import needs --remote URL")
    if args.remote and not args.do_import:
        _usage("--remote is only used with --import")
    report = audit(
        args.store_path,
        args.tiered_path,
        cluster=args.cluster,
        broker=args.broker,
        max_slots=args.max_slots,
        max_items=args.max_items,
    )
    if args.do_import:
        from tieredindex.remote import open_remote

        try:
            remote = open_remote(args.remote)
        except ValueError as exc:
            _usage(str(exc))
        work = Path(args.work_dir) if args.work_dir else Path(args.store_path) / "tieredindex-import"
        try:
            report.imported = import_into_store(
                report.importable, work, remote, max_slots=args.max_slots, max_items=args.max_items
            )
        except (TieredIndexError, OSError, ValueError) as exc:
            # ValueError: a file whose geometry cannot be told (give
            # --max-slots/--max-items); the message names the file.
            report.add("import_failed", work, str(exc))
        else:
            if not report.imported.clean:
                report.add(
                    "import_incomplete",
                    work,
                    f"not yet uploaded: {', '.join(report.imported.pending)} (run again to finish)",
                )
        finally:
            with contextlib.suppress(Exception):
                remote.close()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        _print_report(report)
    return 0 if report.ok else 1


def _print_report(report: AuditReport) -> None:
    print(f"local index files: {report.local_files}   index segments: {report.segments}")
    for f in report.findings:
        mark = "PROBLEM" if f.severity == "problem" else "note"
        print(f"{mark:8} {f.kind:26} {f.path}")
        print(f"         {f.message}")
    if report.imported is not None:
        r = report.imported
        print(
            f"imported {len(r.imported)} file(s), uploaded {len(r.uploaded)}, skipped {len(r.skipped)} empty, "
            f"{'clean' if r.clean else 'pending: ' + ', '.join(r.pending)}"
        )
    print("healthy" if report.ok else f"{len(report.problems)} problem(s)")
