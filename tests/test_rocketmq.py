"""RocketMQ interop: the reader against an independent writer of RocketMQ's
layouts (written here from the reference, section 1, not from our reader),
RocketMQ's own test cases (section 6) re-expressed, damage, import, audit.

The writer follows ``IndexStoreFile.putKey`` and ``compactToNewFile``: all
integers big-endian, 28-byte header, 8-byte slots holding the chain head,
32-byte items linked by ``next`` (item 0 unused), compacted slots of
(absolute position, byte length) and 28-byte items per slot, newest first.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tieredindex import IndexStore, SealedIndex, StoreConfig
from tieredindex._native import (
    ROCKETMQ_BEGIN_MAGIC,
    ROCKETMQ_END_MAGIC,
    CorruptFileError,
    IndexFile,
    RocketMQFile,
    java_string_hash,
    rocketmq_item_position,
    rocketmq_key_hash,
    rocketmq_slot_position,
)
from tieredindex.cli import main
from tieredindex.layout import index_key
from tieredindex.rocketmq import (
    ROCKETMQ_IMPORT_TOPIC,
    RocketMQIndexFile,
    audit,
    cluster_dir_name,
    import_into_store,
    imported_key,
    index_segment_dir,
    load_metadata,
    query_imported,
    segment_file_name,
)

BEGIN = 0xCCDDEEFF ^ (1880681586 + 4)
END = 0xCCDDEEFF ^ (1880681586 + 8)
LONG_MAX = 2**63 - 1
T0 = 1_700_000_000_000


# ------------------------------------------------------- independent writer


def java_hash(s: str) -> int:
    h = 0
    data = s.encode("utf-16-le", "surrogatepass")
    for i in range(0, len(data), 2):
        h = (31 * h + int.from_bytes(data[i : i + 2], "little")) & 0xFFFFFFFF
    return h - 2**32 if h >= 2**31 else h


def rmq_hash(topic: str, key: str) -> int:
    h = java_hash(f"{topic}#{key}")
    if h < 0:
        h = -h
        if h == 2**31:  # Integer.MIN_VALUE stays negative
            h = -(2**31)
    return h


class Writer:
    """RocketMQ's IndexStoreFile, unsealed, in a bytearray."""

    def __init__(self, slots: int, items: int, begin: int) -> None:
        self.slots, self.items, self.begin = slots, items, begin
        self.buf = bytearray(28 + slots * 8 + items * 32)
        self.end, self.slot_count, self.count = 0, 0, 0
        self._header()

    def _header(self) -> None:
        magic = END if self.count + 1 == self.items else BEGIN
        struct.pack_into(">IqqII", self.buf, 0, magic, self.begin, self.end, self.slot_count, self.count)

    def slot_pos(self, slot: int) -> int:
        return 28 + slot * 8

    def item_pos(self, index: int) -> int:
        return 28 + self.slots * 8 + index * 32

    def put(self, topic: str, topic_id: int, queue: int, keys: list[str], offset: int, ts: int) -> str:
        if not topic:
            return "UNKNOWN_ERROR"
        if not keys:
            return "SUCCESS"
        if self.count + len(keys) >= self.items:
            return "FILE_FULL"
        for key in keys:
            h = rmq_hash(topic, key)
            sp = self.slot_pos(h % self.slots)
            old = max(struct.unpack_from(">i", self.buf, sp)[0], 0)
            diff = int((ts - self.begin) / 1000)  # Java long division truncates
            self.count += 1
            struct.pack_into(
                ">iiiqiii", self.buf, self.item_pos(self.count), h, topic_id, queue, offset, 100, diff, old
            )
            struct.pack_into(">i", self.buf, sp, self.count)
            if old <= 0:
                self.slot_count += 1
            self.end = max(self.end, ts)
            self._header()
        return "SUCCESS"

    def compact(self) -> bytes:
        write = 28 + self.slots * 8
        out = bytearray(write + 28 * self.count)
        out[:28] = self.buf[:28]
        struct.pack_into(">I", out, 0, END)
        for s in range(self.slots):
            idx = max(struct.unpack_from(">i", self.buf, self.slot_pos(s))[0], 0)
            start = write
            while idx > 0:
                at = self.item_pos(idx)
                out[write : write + 28] = self.buf[at : at + 28]
                idx = struct.unpack_from(">i", self.buf, at + 28)[0]
                write += 28
            struct.pack_into(">ii", out, self.slot_pos(s), start, write - start)
        return bytes(out)


def five_topics(begin: int = T0) -> Writer:
    w = Writer(5, 20, begin)
    for t in range(5):
        for i in range(3):
            assert w.put(f"TopicTest{t}", t, i, ["MessageKey"], t * 100 + i, begin + i * 1000) == "SUCCESS"
    return w


def rq(f: RocketMQFile, topic: str, key: str, max_count: int = 64, topic_id: int | None = None) -> list:
    return f.query(topic, key, 0, 2**63 - 1, max_count, topic_id)


# --------------------------------------------------- RocketMQ's test cases


def test_hash_and_constants() -> None:
    assert rocketmq_key_hash("TopicTest", "MessageKey") == 638347386
    assert rmq_hash("TopicTest", "MessageKey") == 638347386
    for s in ["", "a", "TopicTest#MessageKey", "主题#键", "emoji\U0001f600", "lone\ud800x", "x" * 1000]:
        assert java_string_hash(s) == java_hash(s), s
    assert (ROCKETMQ_BEGIN_MAGIC, ROCKETMQ_END_MAGIC) == (BEGIN, END)
    assert BEGIN - 2**32 == -1127939447 and END - 2**32 == -1127939451
    assert rocketmq_slot_position(2) == 44 and rocketmq_slot_position(5) == 68
    assert rocketmq_item_position(5, 2) == 132 and rocketmq_item_position(5, 5) == 228
    assert len(Writer(5, 20, 0).buf) == 708


def test_basic_put_get_and_full_file() -> None:
    w = Writer(5, 20, T0)
    fresh = RocketMQFile.open(bytes(w.buf))
    assert (fresh.end_ms, fresh.item_count, fresh.slot_count) == (0, 0, 0)
    assert (fresh.layout, fresh.max_slots, fresh.max_items) == ("unsealed", 5, 20)
    assert w.put("", 0, 0, ["k"], 0, T0) == "UNKNOWN_ERROR"
    assert w.put("T", 0, 0, [], 0, T0) == "SUCCESS"
    for i in range(18):
        assert w.put("TopicTest", 0, 0, ["MessageKey"], i, T0 + i) == "SUCCESS"
        f = RocketMQFile.open(bytes(w.buf))
        assert (f.item_count, f.slot_count, f.end_ms) == (i + 1, 1, T0 + i)
    assert w.put("TopicTest", 0, 0, ["MessageKey"], 18, T0) == "SUCCESS"
    assert w.put("TopicTest", 0, 0, ["MessageKey"], 19, T0) == "FILE_FULL"
    f = RocketMQFile.open(bytes(w.buf))
    assert f.item_count == 19 and f.magic == END
    assert f.verify()[0] == 19
    assert len(rq(f, "TopicTest", "MessageKey")) == 19


def test_different_keys_and_recover() -> None:
    w = five_topics()
    f = RocketMQFile.open(bytes(w.buf))
    assert (f.slot_count, f.item_count) == (5, 15)
    items, used, *_ = f.verify()
    assert (items, used) == (15, 5)
    w2 = Writer(5, 20, T0)
    for i in range(10):
        w2.put("TopicTest", 0, 0, [f"k{i}"], i, T0)
    assert RocketMQFile.open(bytes(w2.buf)).item_count == 10


def test_compaction_size_and_queries(tmp_path: Path) -> None:
    w = Writer(5, 20, T0)
    for i in range(10):
        w.put("TopicTest", 0, 0, [f"k{i}"], i, T0)
    assert len(w.compact()) == 28 + 5 * 8 + 10 * 28 == 348
    seg = tmp_path / "seg"
    seg.write_bytes(five_topics().compact())
    for f in (RocketMQFile.open(bytes(five_topics().buf)), RocketMQFile.open(seg)):
        assert len(rq(f, "TopicTest", "MessageKey")) == 0
        assert len(rq(f, "TopicTest1", "MessageKey1")) == 0
        hits = rq(f, "TopicTest1", "MessageKey")
        assert len(hits) == 3
        assert [h[3] for h in hits] == [102, 101, 100]  # newest first
        assert [h[6] for h in hits] == [T0 + 2000, T0 + 1000, T0]
        assert rq(f, "TopicTest1", "MessageKey", topic_id=1) == hits
        assert rq(f, "TopicTest1", "MessageKey", topic_id=2) == []
        assert len(f.query("TopicTest1", "MessageKey", T0 + 1000, T0 + 1999, 64)) == 1
    assert RocketMQFile.open(seg).layout == "compacted"
    assert RocketMQFile.open(seg).verify()[0] == 15


def test_query_arguments_are_ints_not_bools() -> None:
    """A query's times, topic id and hash are Java ints and longs: an int,
    or anything with __index__ (numpy), never a bool (True was taken as 1),
    and out of their range an OverflowError naming the argument."""
    f = RocketMQFile.open(bytes(five_topics().buf))
    hits = rq(f, "TopicTest1", "MessageKey")
    key_hash = rocketmq_key_hash("TopicTest1", "MessageKey")
    assert f.query("TopicTest1", "MessageKey", np.int64(0), 2**63 - 1, 64, np.int32(1)) == hits
    assert f.query_hash(np.int32(key_hash), 0, 2**63 - 1, 64) == hits
    for bad in (
        {"begin_ms": True},
        {"end_ms": True},
        {"topic_id": True},
    ):
        args = {"begin_ms": 0, "end_ms": 2**63 - 1, "topic_id": None, **bad}
        name = next(iter(bad))
        with pytest.raises(TypeError, match=f"{name} must be an int, not bool"):
            f.query("TopicTest1", "MessageKey", args["begin_ms"], args["end_ms"], 64, args["topic_id"])
    with pytest.raises(TypeError, match="hash must be an int, not bool"):
        f.query_hash(True, 0, 2**63 - 1, 64)
    with pytest.raises(OverflowError, match="end_ms is out of range"):
        f.query("TopicTest1", "MessageKey", 0, 2**63, 64)
    with pytest.raises(OverflowError, match="topic_id is out of range"):
        f.query("TopicTest1", "MessageKey", 0, 2**63 - 1, 64, 2**31)


def merged(files: list[RocketMQFile], key: str, max_count: int) -> list:
    """IndexStoreService.queryAsync: per-file results merged by queueId-offset."""
    out: dict[str, tuple] = {}
    for f in files:
        for h in rq(f, "TopicTest", key, max_count):
            if len(out) < max_count:
                out.setdefault(f"{h[2]}-{h[3]}", h)
    return list(out.values())


def test_query_from_files() -> None:
    files = []
    for n in range(3):
        w = Writer(5, 20, T0 + n)
        for i in range(19):
            assert w.put("TopicTest", 0, 0, [str(i)], n * 1000 + i, T0 + n) == "SUCCESS"
        files.append(RocketMQFile.open(bytes(w.buf) if n < 2 else w.compact()))
    for _ in range(3):
        assert [len(merged(files, "1", m)) for m in (1, 3, 5)] == [1, 3, 3]


def test_concurrent_get_counts_and_dispatch_counts() -> None:
    files, w = [], Writer(500, 2000, T0)
    for rnd in range(10):
        for k in range(2000):
            if w.put("TopicTest", 0, rnd, [str(k)], rnd * 10_000 + k, T0) == "FILE_FULL":
                files.append(RocketMQFile.open(w.compact()))
                w = Writer(500, 2000, T0)
                assert w.put("TopicTest", 0, rnd, [str(k)], rnd * 10_000 + k, T0) == "SUCCESS"
    files.append(RocketMQFile.open(bytes(w.buf)))
    for key in map(str, range(10)):
        for m in (5, 10, 15):
            assert len(merged(files, key, m)) == min(10, m)
    u = Writer(5, 200, T0)
    for i in range(100):
        u.put("TopicTest", 0, 0, ["uk"], i, T0)
    for f in (RocketMQFile.open(bytes(u.buf), max_slots=5), RocketMQFile.open(u.compact())):
        assert len(rq(f, "TopicTest", "uk", 32)) == 32
        assert len(rq(f, "TopicTest", "uk", 120)) == 100


# ------------------------------------------------------------------ damage


def corrupt(data: bytes, **kw: object) -> str:
    with pytest.raises(CorruptFileError) as exc:
        RocketMQFile.open(data, **kw).verify()  # type: ignore[arg-type]
    return str(exc.value)


def test_damaged_files_are_reported_with_offsets(tmp_path: Path) -> None:
    w = five_topics()
    raw, comp = bytes(w.buf), w.compact()
    # Truncated (unsealed needs its geometry given: the size is what tells it).
    assert "bytes" in corrupt(raw[:-1], max_slots=5)
    assert "partial" in corrupt(comp[:-28])
    assert "partial" in corrupt(comp[:-1])
    path = tmp_path / "cut"
    path.write_bytes(comp[:100])
    with pytest.raises(CorruptFileError, match=str(path)):
        RocketMQFile.open(path).verify()
    # Wrong magic.
    bad = bytearray(raw)
    bad[0] ^= 0xFF
    assert "byte 0: bad magic" in corrupt(bytes(bad))
    # A chain pointing past the end: a slot head and an item link beyond the count.
    bad = bytearray(raw)
    h = rmq_hash("TopicTest1", "MessageKey")
    struct.pack_into(">i", bad, w.slot_pos(h % 5), 99)
    assert f"at byte {w.slot_pos(h % 5)}" in corrupt(bytes(bad))
    assert rq(RocketMQFile.open(bytes(bad)), "TopicTest1", "MessageKey") == []  # RocketMQ: 0 < idx <= count
    bad = bytearray(raw)
    struct.pack_into(">i", bad, w.item_pos(15) + 28, 40)
    assert f"at byte {w.item_pos(15)}" in corrupt(bytes(bad))
    bad = bytearray(comp)
    struct.pack_into(">ii", bad, w.slot_pos(h % 5), len(comp) - 28, 56)
    assert f"at byte {w.slot_pos(h % 5)}" in corrupt(bytes(bad))
    with pytest.raises(CorruptFileError, match="outside"):
        rq(RocketMQFile.open(bytes(bad)), "TopicTest1", "MessageKey")
    # A cycle: the oldest item of a chain links back to the newest.
    c = Writer(5, 20, T0)
    for i in range(3):
        c.put("T", 0, 0, ["a"], i, T0)
    struct.pack_into(">i", c.buf, c.item_pos(1) + 28, 3)
    assert "cycle" in corrupt(bytes(c.buf))
    assert len(rq(RocketMQFile.open(bytes(c.buf)), "T", "a", 10_000)) == 512  # MAX_QUERY_COUNT hops
    # Items moved to the wrong slot's run / header counts that lie.
    bad = bytearray(comp)
    first_hash = struct.unpack_from(">i", bad, 28 + 5 * 8)[0]
    struct.pack_into(">i", bad, 28 + 5 * 8, first_hash + 1)  # now of the next slot
    assert "belongs to slot" in corrupt(bytes(bad))
    bad = bytearray(raw)
    struct.pack_into(">i", bad, 20, 4)
    assert "byte 20" in corrupt(bytes(bad))
    # Phantom segment: an empty object.
    assert "shorter than the 28-byte header" in corrupt(b"")


def test_every_flip_is_an_answer_or_an_error() -> None:
    w = five_topics()
    for data in (bytes(w.buf), w.compact()):
        for pos in range(len(data)):
            bad = bytearray(data)
            bad[pos] ^= 0x41
            try:
                f = RocketMQFile.open(bytes(bad), max_slots=5)
                f.verify()
                rq(f, "TopicTest1", "MessageKey")
            except (CorruptFileError, ValueError):
                pass


def test_geometry_detection_and_hints() -> None:
    w = Writer(7, 40, T0)  # not RocketMQ's 4:1 ratio: ambiguous from the size
    w.put("T", 0, 0, ["k"], 1, T0)
    with pytest.raises(ValueError, match="max_slots"):
        RocketMQFile.open(bytes(w.buf))
    f = RocketMQFile.open(bytes(w.buf), max_slots=7)
    assert (f.max_items, f.verify()[0]) == (40, 1)
    assert RocketMQFile.open(w.compact()).max_slots == 7  # from slot 0's run position
    with pytest.raises(CorruptFileError, match="7 slots, not 9"):
        RocketMQFile.open(w.compact(), max_slots=9)
    with pytest.raises(ValueError, match="layout"):
        RocketMQFile.open(w.compact(), layout="sealed")


def test_imported_key_refuses_what_no_import_wrote() -> None:
    """imported_key("x", 5) made "x#5", a key no import writes: the query
    found nothing and said nothing. Topic ids and hashes are Java ints."""
    assert imported_key(np.int32(3), 17) == imported_key(3, np.int64(17)) == (ROCKETMQ_IMPORT_TOPIC, "3#17")
    for args, error, message in (
        (("x", 5), TypeError, "topic_id must be an int, not str"),
        ((True, 5), TypeError, "topic_id must be an int, not bool"),
        ((1, 1.5), TypeError, "hash must be an int, not float"),
        ((1, 2**31), OverflowError, "hash is out of range"),
        ((2**31, "TopicTest1", "k"), OverflowError, "topic_id is out of range"),
    ):
        with pytest.raises(error, match=message):
            imported_key(*args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("hint", "value", "error", "message"),
    [
        ("max_slots", True, TypeError, "max_slots must be an int, not bool"),  # True was taken as 1 slot
        ("max_items", True, TypeError, "max_items must be an int, not bool"),
        ("max_slots", -1, ValueError, "max_slots must be from 0 to 4294967295, got -1"),  # was unnamed
        ("max_items", 2**32, ValueError, "max_items must be from 0 to 4294967295"),
        ("max_items", 1.5, TypeError, "max_items must be an int, not float"),
    ],
)
def test_geometry_hints_are_ints_named_when_wrong(
    hint: str, value: object, error: type[Exception], message: str
) -> None:
    w = Writer(7, 40, T0)
    w.put("T", 0, 0, ["k"], 1, T0)
    with pytest.raises(error, match=re.escape(message)):
        RocketMQFile.open(bytes(w.buf), **{hint: value})  # type: ignore[arg-type]
    assert RocketMQFile.open(bytes(w.buf), max_slots=np.int32(7), max_items=None).max_items == 40


# ------------------------------------------------------------------ import


def test_import_keeps_rocketmq_answers(tmp_path: Path) -> None:
    w = five_topics()
    for n, data in enumerate((bytes(w.buf), w.compact())):
        f = RocketMQIndexFile.open(data)
        dest = tmp_path / f"{n}.tix"
        _, imported = f.native.import_to(dest)
        assert imported is not None and imported[0] == 15
        sealed = IndexFile.open(dest).seal(tmp_path / f"{n}.sealed")
        sealed.verify()
        for t in range(5):
            want = [
                (h.queue_id, h.offset, h.size, h.timestamp_ms) for h in f.query(f"TopicTest{t}", "MessageKey")
            ]
            got = sealed.query(index_key(*imported_key(t, f"TopicTest{t}", "MessageKey")), 0, 2**63 - 1, 64)
            assert [tuple(e) for e in got] == want and len(want) == 3
            assert (
                sealed.query(index_key(*imported_key(t + 1, f"TopicTest{t}", "MessageKey")), 0, 10**15, 9)
                == []
            )
    empty = RocketMQFile.open(bytes(Writer(5, 20, T0).buf))
    assert empty.import_to(tmp_path / "empty.tix")[1] is None
    assert not (tmp_path / "empty.tix").exists()
    bad = bytearray(w.buf)
    bad[0] ^= 1
    with pytest.raises(CorruptFileError):
        RocketMQFile.open(bytes(bad))


# ------------------------------------------------------------------- audit


def fastjson(value: object) -> str:
    """fastjson style: integer map keys unquoted."""
    if isinstance(value, dict):
        parts = [f"{k if isinstance(k, int) else json.dumps(k)}:{fastjson(v)}" for k, v in value.items()]
        return "{" + ",".join(parts) + "}"
    return json.dumps(value)


def segment_meta(broker: str, base: int, size: int, begin: int, end: int) -> dict[str, object]:
    return {
        "path": f"{broker}/rmq_sys_INDEX/0",
        "type": 2,
        "baseOffset": base,
        "status": 1,
        "size": size,
        "createTimestamp": begin,
        "beginTimestamp": begin,
        "endTimestamp": end,
        "sealTimestamp": end,
    }


def broker_tree(root: Path, *, damaged: bool) -> dict[str, Path]:
    """A stopped broker: store/ (local files, metadata) and tiered/ (Posix).

    Healthy: two uploaded segments, an empty local write file. Damaged adds
    a local file never uploaded, a local copy left after upload, a partial
    segment, a structurally broken one, an empty uploaded segment, a phantom
    record, a record whose file is missing and an orphan segment file."""
    store, tiered = root / "store", root / "tiered"
    local = store / "tiered_index_file"
    local.mkdir(parents=True)
    (store / "config").mkdir()
    seg_dir = index_segment_dir(tiered, "DefaultCluster", "broker-a")
    seg_dir.mkdir(parents=True)
    records: dict[int, dict[str, object]] = {}
    base = 0
    out: dict[str, Path] = {}

    def upload(name: str, data: bytes, begin: int, end: int, *, file_bytes: bytes | None = None) -> None:
        nonlocal base
        path = seg_dir / segment_file_name(base)
        path.write_bytes(data if file_bytes is None else file_bytes)
        records[base] = segment_meta("broker-a", base, len(data), begin, end)
        out[name] = path
        base += len(data)

    for n in range(2):
        w = Writer(5, 20, T0 + n * 10_000)
        for i in range(6):
            w.put("TopicA", 0, i % 2, [f"order-{i % 3}"], n * 100 + i, T0 + n * 10_000 + i * 1000)
        upload(f"ok{n}", w.compact(), w.begin, w.end)
        if damaged and n == 1:
            (local / str(w.begin)).write_bytes(bytes(w.buf))  # crash after upload, before delete
            out["copy"] = local / str(w.begin)
    if damaged:
        w = Writer(5, 20, T0 + 20_000)
        for i in range(5):
            w.put("TopicA", 0, 0, [f"order-{i}"], 1000 + i, T0 + 20_000 + i)
        data = w.compact()
        upload("partial", data, w.begin, w.end, file_bytes=data[:-28])
        w = Writer(5, 20, T0 + 30_000)
        for i in range(4):
            w.put("TopicA", 0, 0, [f"x{i}"], 2000 + i, T0 + 30_000)
        data = bytearray(w.compact())
        struct.pack_into(">i", data, 28 + 8, 9999)  # slot 1's run position
        upload("broken", bytes(data), w.begin, w.end)
        e = Writer(5, 20, T0 + 40_000)
        upload("empty", e.compact(), e.begin, e.begin)
        gone = Writer(5, 20, T0 + 50_000)
        gone.put("TopicA", 0, 0, ["g"], 3000, T0 + 50_000)
        upload("missing", gone.compact(), gone.begin, gone.end)
        out["missing"].unlink()
        records[base] = segment_meta("broker-a", base, 0, LONG_MAX, LONG_MAX)  # phantom
        out["phantom"] = seg_dir / segment_file_name(base)
        (seg_dir / segment_file_name(base + 10**6)).write_bytes(e.compact())
        out["orphan"] = seg_dir / segment_file_name(base + 10**6)
        lost = Writer(5, 20, T0 + 60_000)
        for i in range(7):
            lost.put("TopicA", 0, 1, [f"order-{i % 3}"], 5000 + i, T0 + 60_000 + i * 1000)
        (local / str(lost.begin)).write_bytes(bytes(lost.buf))
        out["lost"] = local / str(lost.begin)
    (local / str(T0 + 70_000)).write_bytes(bytes(Writer(5, 20, T0 + 70_000).buf))
    (local / "compacting").mkdir()
    meta = {
        "topicSerialNumber": 1,
        "topicMetadataTable": {"TopicA": {"topicId": 0, "topic": "TopicA", "reserveTime": 72}},
        "queueMetadataTable": {"TopicA": {0: {"minOffset": 0}, 1: {"minOffset": 0}}},
        "indexFileSegmentTable": {"broker-a/rmq_sys_INDEX/0": records},
    }
    (store / "config" / "tieredStoreMetadata.json").write_text(fastjson(meta))
    out["store"], out["tiered"] = store, tiered
    return out


def test_posix_naming_and_metadata(tmp_path: Path) -> None:
    import hashlib

    assert (
        cluster_dir_name("DefaultCluster")
        == hashlib.md5(b"DefaultCluster").hexdigest()[:8] + "_DefaultCluster"
    )
    assert segment_file_name(348) == hashlib.md5(b"348").hexdigest()[:8] + "00000000000000000348"
    t = broker_tree(tmp_path, damaged=True)
    meta = load_metadata(t["store"] / "config" / "tieredStoreMetadata.json")
    assert meta.topics == {"TopicA": 0}
    assert [r.phantom for r in meta.index_segments] == [False] * 6 + [True]


def test_audit_healthy_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t = broker_tree(tmp_path, damaged=False)
    report = audit(t["store"], t["tiered"])
    assert report.ok, report.findings
    assert (report.segments, report.local_files) == (2, 1)
    assert set(report.kinds()) == {"local_empty"}
    args = ["rocketmq", "audit", "--store-path", str(t["store"]), "--tiered-path", str(t["tiered"])]
    assert main(args) == 0
    assert "healthy" in capsys.readouterr().out


def test_audit_reports_each_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t = broker_tree(tmp_path, damaged=True)
    report = audit(t["store"], t["tiered"], cluster="DefaultCluster", broker="broker-a")
    found = {(f.kind, Path(f.path).name if "/" in f.path else f.path) for f in report.findings}
    problems = {f.kind: f for f in report.problems}
    assert problems["not_uploaded"].path == str(t["lost"])
    assert "7 items" in problems["not_uploaded"].message
    assert problems["segment_partial"].path == str(t["partial"])
    assert problems["segment_corrupt"].path == str(t["broken"])
    assert "slot 1 at byte 36" in problems["segment_corrupt"].message
    assert problems["empty_segment"].path == str(t["empty"])
    assert problems["segment_missing"].path == str(t["missing"])
    assert problems["orphan_segment"].path == str(t["orphan"])
    assert "Long.MAX_VALUE" in problems["phantom_record"].message
    notes = {f.kind for f in report.findings if f.severity == "note"}
    assert {"local_copy_left", "local_empty"} <= notes
    assert ("local_copy_left", t["copy"].name) in found
    assert len(report.problems) == 7
    args = ["rocketmq", "audit", "--store-path", str(t["store"]), "--tiered-path", str(t["tiered"]), "--json"]
    assert main(args) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False and out["problems"] == 7
    assert main([*args[:-1], "--import"]) == 2  # --import without --remote
    assert main([*args[:-1], "--max-slots", "0"]) == 2


def test_audit_import_uploads_through_the_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t = broker_tree(tmp_path, damaged=True)
    remote = tmp_path / "remote"
    remote.mkdir()
    work = tmp_path / "work"
    args = [
        *("rocketmq", "audit", "--store-path", str(t["store"]), "--tiered-path", str(t["tiered"])),
        *("--import", "--remote", remote.as_uri(), "--work-dir", str(work), "--json"),
    ]
    assert main(args) == 1  # the problems are still reported
    out = json.loads(capsys.readouterr().out)
    imported = out["imported"]
    assert imported["clean"] is True
    assert len(imported["imported"]) == 3 == len(imported["uploaded"])  # ok0, ok1, lost
    # A new store on an empty directory answers with RocketMQ's semantics.
    with IndexStore(tmp_path / "reader", remote.as_uri(), StoreConfig()) as store:
        hits = query_imported(store, "TopicA", "order-1", topic_id=0)
        assert sorted(e.offset for e in hits) == [1, 4, 101, 104, 5001, 5004]
        assert query_imported(store, "TopicA", "order-1", topic_id=1) == []
        assert store.query("TopicA", "order-1", 0, 2**63 - 1) == []  # native keys untouched
    for p in (remote / "index").glob("[0-9]*.tix"):
        SealedIndex.open(p).verify()
    # Idempotent: the same files import under the same ids, nothing new uploaded.
    again = import_into_store([t["lost"]], work, remote.as_uri())
    assert len(again.imported) == 1 and again.imported[0] in imported["imported"]
    assert again.clean and again.uploaded == []


def _local_only_tree(root: Path, slots: int, items: int) -> tuple[Path, Path, Path]:
    """A stopped broker with one local file never uploaded (7 items) and no
    tiered data; (store, tiered, the file)."""
    store, tiered = root / "store", root / "tiered"
    (store / "tiered_index_file").mkdir(parents=True)
    tiered.mkdir()
    w = Writer(slots, items, T0)
    for i in range(7):
        w.put("TopicA", 7, 0, [f"k{i}"], i, T0 + 1000 * i)
    path = store / "tiered_index_file" / str(T0)
    path.write_bytes(bytes(w.buf))
    return store, tiered, path


def test_audit_import_with_max_items_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """5 slots and 30 items: neither RocketMQ's default geometry nor items =
    4 * slots, so --max-items is needed; the import reopens the file with
    the same hints as the audit."""
    store, tiered, path = _local_only_tree(tmp_path, 5, 30)
    remote = tmp_path / "remote"
    remote.mkdir()
    args = [
        *("rocketmq", "audit", "--store-path", str(store), "--tiered-path", str(tiered), "--max-items", "30"),
        *("--import", "--remote", remote.as_uri(), "--work-dir", str(tmp_path / "work"), "--json"),
    ]
    assert main(args) == 1  # not_uploaded (and no metadata) are still reported
    out = json.loads(capsys.readouterr().out)
    assert "import_failed" not in {f["kind"] for f in out["findings"]}, out["findings"]
    assert out["imported"]["clean"] is True and len(out["imported"]["uploaded"]) == 1
    with IndexStore(tmp_path / "reader", remote.as_uri(), StoreConfig()) as reader:
        assert [e.offset for e in query_imported(reader, "TopicA", "k3", topic_id=7)] == [3]
    # The API, too: --max-items alone is enough for an unsealed file, and a
    # compacted file still opens (its item count is not the broker's).
    assert RocketMQIndexFile.open(path, max_items=30).item_count == 7
    again = import_into_store([path], tmp_path / "work", remote.as_uri(), max_items=30)
    assert again.clean and again.imported == out["imported"]["imported"]


def test_audit_import_geometry_error_is_a_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file whose geometry cannot be told at import time (here: replaced
    after the audit by one of another geometry) is a named import_failed
    problem, not a traceback."""
    import tieredindex.rocketmq as rocketmq

    store, tiered, path = _local_only_tree(tmp_path, 5, 20)
    real_audit = rocketmq.audit

    def audit_then_replace(*a: Any, **kw: Any) -> rocketmq.AuditReport:
        report = real_audit(*a, **kw)
        _local_only_tree(tmp_path / "other", 5, 30)[2].replace(path)
        return report

    monkeypatch.setattr(rocketmq, "audit", audit_then_replace)
    remote = tmp_path / "remote"
    remote.mkdir()
    args = [
        *("rocketmq", "audit", "--store-path", str(store), "--tiered-path", str(tiered)),
        *("--import", "--remote", remote.as_uri(), "--work-dir", str(tmp_path / "work"), "--json"),
    ]
    assert main(args) == 1
    out = json.loads(capsys.readouterr().out)
    [failed] = [f for f in out["findings"] if f["kind"] == "import_failed"]
    assert str(path) in failed["message"] and "max_items" in failed["message"]
    with pytest.raises(ValueError, match="max_slots or max_items"):
        import_into_store([path], tmp_path / "work2", remote.as_uri())
    with pytest.raises(CorruptFileError, match=str(T0)):
        import_into_store([path], tmp_path / "work2", remote.as_uri(), max_items=29)


def test_an_import_killed_before_its_rename_leaves_no_file_behind(tmp_path: Path) -> None:
    """An import converts each file under a temporary name in the store's
    directory, full size, then renames it. A kill in between left that file
    for good: nothing removed it. The store the next import (or a broker)
    starts on the directory now does."""
    work = tmp_path / "work"
    (work / "active").mkdir(parents=True)
    leftover = work / "active" / ".rocketmq-import-4242.tmp"
    leftover.write_bytes(b"\0" * 4096)
    store = IndexStore(work, (tmp_path / "remote").as_uri(), StoreConfig(slots=16, capacity=10))
    report = store.start()
    store.shutdown()
    assert not leftover.exists()
    assert report.removed_temp_files == 1
