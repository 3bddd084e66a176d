"""SealedIndex: same answers as the unsealed file, every corruption caught,
and range readers that verify exactly what they fetch."""

import errno
import os
import random
from pathlib import Path

import pytest

from tieredindex import CorruptFileError, IndexFile, SealedFooter, SealedIndex, crc32c

FOREVER = 2**63 - 1


def build(tmp_path: Path, n: int = 40, slots: int = 8) -> tuple[IndexFile, SealedIndex]:
    f = IndexFile.create(tmp_path / "u.tix", slots=slots, capacity=max(n, 1) + 5, begin_ms=100)
    rng = random.Random(n)
    for i in range(n):
        f.put(f"key{i % 9}", i % 3, i * 7, i, 100 + rng.randrange(50))
    return f, f.seal(tmp_path / "s.tix")


def test_sealed_answers_as_unsealed(tmp_path: Path) -> None:
    f, s = build(tmp_path, n=200)
    for k in range(10):
        for begin, end, mx in ((0, FOREVER, 64), (110, 130, 64), (0, FOREVER, 3), (149, 149, 5)):
            assert s.query(f"key{k}", begin, end, mx) == f.query(f"key{k}", begin, end, mx)
    assert (s.count, s.begin_ms, s.end_ms, s.used_slots) == (200, 100, f.end_ms, s.used_slots)
    s.verify()


def test_object_size_and_crc_describe_the_whole_file(tmp_path: Path) -> None:
    _, s = build(tmp_path)
    raw = (tmp_path / "s.tix").read_bytes()
    assert s.size == len(raw)
    assert s.crc32c == crc32c(raw)
    from_bytes = SealedIndex.open(raw)
    assert from_bytes.crc32c == s.crc32c and from_bytes.path is None
    assert from_bytes.query("key1", 0, FOREVER, 100) == s.query("key1", 0, FOREVER, 100)


def test_empty_file_seals_small(tmp_path: Path) -> None:
    f = IndexFile.create(tmp_path / "e.tix", slots=5_000, capacity=20_000, begin_ms=7)
    s = f.seal(tmp_path / "e.sealed")
    assert s.count == 0 and s.size < 200  # RocketMQ uploads 40 MB for this
    assert s.query("k", 0, FOREVER, 10) == []
    s.verify()


def test_seal_refuses_existing_destination(tmp_path: Path) -> None:
    f, _ = build(tmp_path)
    with pytest.raises(FileExistsError) as refused:
        f.seal(tmp_path / "s.tix")
    # As create's refusal: errno EEXIST and the path (errno was 0).
    assert (refused.value.errno, refused.value.filename) == (errno.EEXIST, str(tmp_path / "s.tix"))
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".sealing")]


def test_seal_blocks_concurrent_puts(tmp_path: Path) -> None:
    import threading

    f = IndexFile.create(tmp_path / "c.tix", slots=1000, capacity=2_000_000, begin_ms=0)
    acknowledged: list[int] = []
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            if f.put("k", 0, i, 0, i):
                acknowledged.append(i)
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    while len(acknowledged) < 20_000:
        pass
    s = f.seal(tmp_path / "c.sealed")
    stop.set()
    t.join()
    # Every put that returned True before or during the seal is in the
    # sealed copy: nothing slips between stop-intake and compaction.
    assert s.count == len(acknowledged)
    got = s.query("k", 0, FOREVER, len(acknowledged) + 1)
    assert sorted(e.offset for e in got) == acknowledged


def test_every_single_bit_flip_is_caught(tmp_path: Path) -> None:
    _, _s = build(tmp_path, n=12, slots=4)
    raw = bytearray((tmp_path / "s.tix").read_bytes())
    assert len(raw) < 2000
    for byte in range(len(raw)):
        for bit in range(8):
            raw[byte] ^= 1 << bit
            with pytest.raises(CorruptFileError):
                SealedIndex.open(bytes(raw)).verify()
            raw[byte] ^= 1 << bit
    SealedIndex.open(bytes(raw)).verify()


def test_queries_never_serve_flipped_entries(tmp_path: Path) -> None:
    _, s = build(tmp_path, n=30, slots=4)
    raw = bytearray((tmp_path / "s.tix").read_bytes())
    entries_start = 64 + 8 * s.slots
    for pos in range(entries_start, entries_start + 32 * s.count, 5):
        bad = bytearray(raw)
        bad[pos] ^= 0x10
        try:
            idx = SealedIndex.open(bytes(bad))
        except CorruptFileError:
            continue
        for k in range(9):
            with pytest.raises(CorruptFileError, match="block"):
                idx.query(f"key{k}", 0, FOREVER, 100)


@pytest.mark.parametrize("cut", [0, 1, 63, 64, 100, -41, -40, -1])
def test_truncated_files_rejected(tmp_path: Path, cut: int) -> None:
    build(tmp_path)
    raw = (tmp_path / "s.tix").read_bytes()
    short = raw[:cut]
    with pytest.raises(CorruptFileError):
        SealedIndex.open(short)
    p = tmp_path / "short.tix"
    p.write_bytes(short)
    with pytest.raises(CorruptFileError):
        SealedIndex.open(p)


@pytest.mark.parametrize("tail", [b"\x00", b"garbage" * 10, b"TIXSEND\n"])
def test_garbage_tail_rejected(tmp_path: Path, tail: bytes) -> None:
    build(tmp_path)
    raw = (tmp_path / "s.tix").read_bytes()
    with pytest.raises(CorruptFileError):
        SealedIndex.open(raw + tail)


def test_random_garbage_and_unsealed_rejected(tmp_path: Path) -> None:
    rng = random.Random(1)
    for size in (0, 10, 104, 4096, 70_000):
        with pytest.raises(CorruptFileError):
            SealedIndex.open(bytes(rng.randrange(256) for _ in range(size)))
    f = IndexFile.create(tmp_path / "u2.tix", slots=4, capacity=4, begin_ms=0)
    f.close()
    with pytest.raises(CorruptFileError):
        SealedIndex.open(tmp_path / "u2.tix")


def test_unsealed_open_rejects_damage(tmp_path: Path) -> None:
    f = IndexFile.create(tmp_path / "u.tix", slots=4, capacity=16, begin_ms=0)
    f.close()
    raw = (tmp_path / "u.tix").read_bytes()
    cases = {
        "empty": b"",
        "short": raw[:30],
        "truncated": raw[:-1],
        "extended": raw + b"\x00",
        "magic": b"X" + raw[1:],
        "header-bit": raw[:20] + bytes([raw[20] ^ 1]) + raw[21:],
        "garbage": os.urandom(len(raw)),
    }
    for name, data in cases.items():
        p = tmp_path / f"bad-{name}.tix"
        p.write_bytes(data)
        with pytest.raises(CorruptFileError):
            IndexFile.open(p)


def test_range_reader_two_reads_after_footer(tmp_path: Path) -> None:
    _, s = build(tmp_path, n=500, slots=64)
    raw = (tmp_path / "s.tix").read_bytes()
    size = len(raw)
    reads: list[tuple[int, int]] = []

    def get_range(start: int, end: int) -> bytes:
        reads.append((start, end))
        return raw[start:end]

    flen = SealedFooter.footer_len(get_range(size - 40, size), size)
    footer = SealedFooter.parse(get_range(size - flen, size), size)
    assert footer.crc32c == s.crc32c == crc32c(raw)
    for k in range(9):
        reads.clear()
        start, end = footer.slot_span(f"key{k}")
        run = footer.slot_run(start, get_range(start, end), f"key{k}")
        rstart, rend = footer.run_span(run)
        got = footer.match_run(rstart, get_range(rstart, rend), run, f"key{k}", 0, FOREVER, 1000)
        assert len(reads) == 2
        assert got == s.query(f"key{k}", 0, FOREVER, 1000)


def test_range_reader_catches_corrupt_block(tmp_path: Path) -> None:
    _, _s = build(tmp_path, n=500, slots=64)
    raw = bytearray((tmp_path / "s.tix").read_bytes())
    size = len(raw)
    footer = SealedFooter.parse(bytes(raw[-SealedFooter.footer_len(bytes(raw[-40:]), size) :]), size)
    start, end = footer.slot_span("key3")
    raw[start + 5] ^= 0xFF
    with pytest.raises(CorruptFileError, match="block"):
        footer.slot_run(start, bytes(raw[start:end]), "key3")
    with pytest.raises(ValueError, match="whole blocks"):
        footer.verify_span(start + 1, bytes(raw[start + 1 : end]))


def test_min_timestamp_recorded(tmp_path: Path) -> None:
    f = IndexFile.create(tmp_path / "m.tix", slots=4, capacity=10, begin_ms=1000)
    for t in (1500, 700, 2500):
        f.put("k", 0, t, 1, t)
    s = f.seal(tmp_path / "m.sealed")
    assert (s.min_timestamp_ms, s.begin_ms, s.end_ms) == (700, 1000, 2500)
    e = IndexFile.create(tmp_path / "e.tix", slots=4, capacity=10, begin_ms=1000)
    assert e.seal(tmp_path / "e.sealed").min_timestamp_ms == 1000


def test_salvage_keeps_intact_entries(tmp_path: Path) -> None:
    from tieredindex import salvage

    f = IndexFile.create(tmp_path / "d.tix", slots=2, capacity=50, begin_ms=0)
    for i in range(20):
        f.put(f"k{i % 2}", 0, i, 1, i)
    f.close()
    raw = bytearray((tmp_path / "d.tix").read_bytes())
    raw[128 + 7 * 40 + 1] ^= 0x80  # entry 7 damaged
    (tmp_path / "d.tix").write_bytes(bytes(raw))
    assert salvage(tmp_path / "d.tix", tmp_path / "s.tix") == (19, 1)
    g = IndexFile.open(tmp_path / "s.tix")
    offsets = sorted(e.offset for k in ("k0", "k1") for e in g.query(k, 0, FOREVER, 100))
    assert offsets == [i for i in range(20) if i != 7]
