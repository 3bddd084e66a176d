"""Crash safety: SIGKILL a writer mid-stream, tear the tail, reopen."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tieredindex import CorruptFileError, IndexFile
from tieredindex._native import salvage

FOREVER = 2**63 - 1

WRITER = textwrap.dedent(
    """
    import sys
    from tieredindex import IndexFile
    f = IndexFile.create(sys.argv[1], slots=1024, capacity=5_000_000, begin_ms=0)
    out = sys.stdout
    i = 0
    while True:
        if i % 3 == 0:
            n = f.put_batch([f"k{i % 97}"] * 3, [1] * 3, [i, i + 1, i + 2], [1] * 3, [i, i + 1, i + 2])
            assert n == 3
            out.write(f"{i} 3\\n")
            i += 3
        else:
            assert f.put(f"k{i % 97}", 1, i, 1, i)
            out.write(f"{i} 1\\n")
            i += 1
        out.flush()
    """
)


@pytest.mark.crash
@pytest.mark.parametrize("delay", [0.3, 0.8])
def test_sigkill_loses_no_returned_put(tmp_path: Path, delay: float) -> None:
    path = tmp_path / "crash.tix"
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    first = child.stdout.readline()  # started and writing
    assert first
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    rest = child.stdout.read()
    child.wait()
    acknowledged: list[int] = []
    for line in (first + rest).splitlines():
        start, n = map(int, line.split())
        acknowledged.extend(range(start, start + n))
    assert len(acknowledged) > 100
    f = IndexFile.open(path)
    assert f.recovered
    assert f.count >= len(acknowledged)
    found: set[int] = set()
    for k in range(97):
        found.update(e.offset for e in f.query(f"k{k}", 0, FOREVER, 10_000_000))
    missing = set(acknowledged) - found
    assert not missing, f"{len(missing)} acknowledged puts lost"
    assert found <= set(range(f.count))  # nothing that was never put
    assert f.verify() == f.count


def test_torn_tail_is_dropped_never_served(tmp_path: Path) -> None:
    path = tmp_path / "torn.tix"
    f = IndexFile.create(path, slots=16, capacity=100, begin_ms=0)
    for i in range(9):
        f.put("k", 0, i, 1, i)
    f.flush()
    f.put("k", 0, 9, 1, 9)  # never flushed: power loss may tear it
    entries_at = 64 * ((64 + 4 * 16 + 63) // 64)
    # Simulate power loss mid-write: entry 9 half-written, file left "open".
    raw = bytearray(path.read_bytes())
    f.close()
    start = entries_at + 9 * 40
    raw[start + 20 : start + 40] = bytes(20)
    raw[32:36] = (1).to_bytes(4, "little")  # state: open for writing
    path.write_bytes(bytes(raw))
    g = IndexFile.open(path)
    assert g.recovered and g.dropped_entries == 1
    assert g.count == 9
    assert [e.offset for e in g.query("k", 0, FOREVER, 100)] == list(range(8, -1, -1))
    # The slot for the dropped entry is free again and later puts are sound.
    assert g.put("k", 0, 99, 1, 99)
    assert g.verify() == 10


def test_flipped_entry_in_clean_file_raises_on_query(tmp_path: Path) -> None:
    path = tmp_path / "flip.tix"
    f = IndexFile.create(path, slots=1, capacity=100, begin_ms=0)
    for i in range(20):
        f.put("k", 0, i, 1, i)
    f.close()
    raw = bytearray(path.read_bytes())
    entries_at = 128
    raw[entries_at + 5 * 40 + 9] ^= 0x01  # offset of entry 5
    path.write_bytes(bytes(raw))
    g = IndexFile.open(path)
    from tieredindex import CorruptFileError

    with pytest.raises(CorruptFileError, match="entry 5"):
        g.query("k", 0, FOREVER, 100)
    with pytest.raises(CorruptFileError, match="entry 5"):
        g.verify()
    with pytest.raises(CorruptFileError, match="entry 5"):
        g.seal(tmp_path / "flip.sealed")
    assert not (tmp_path / "flip.sealed").exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".sealing")]


CRASH_AFTER_FLUSH = textwrap.dedent(
    """
    import os, signal, sys
    from tieredindex import IndexFile
    f = IndexFile.create(sys.argv[1], slots=16, capacity=200, begin_ms=0)
    for i in range(100):
        assert f.put("k%d" % (i % 7), 0, i, 1, i)
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_flushed_entry_damaged_after_a_crash_is_damage_not_a_torn_tail(tmp_path: Path) -> None:
    """After a kill -9 the file is rebuilt from its entries; one that fails
    below the count a flush made durable is damage: open() raises (the
    store then salvages) instead of dropping the 89 intact entries after
    it as if they were a torn tail, and zeroing them."""
    path = tmp_path / "a.tix"
    child = subprocess.run([sys.executable, "-c", CRASH_AFTER_FLUSH, str(path)])
    assert child.returncode == -signal.SIGKILL
    raw = bytearray(path.read_bytes())
    raw[64 * ((64 + 4 * 16 + 63) // 64) + 10 * 40 + 9] ^= 0x01  # one bit of entry 10
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError, match=r"entry 10 .* a flush made 100 entries durable"):
        IndexFile.open(path)
    assert path.read_bytes() == bytes(raw)  # nothing dropped or zeroed
    assert salvage(path, tmp_path / "salvaged.tix") == (99, 1)
    salvaged = IndexFile.open(tmp_path / "salvaged.tix")
    offsets = {e.offset for k in range(7) for e in salvaged.query(f"k{k}", 0, FOREVER, 1000)}
    assert offsets == set(range(100)) - {10}


def test_stale_records_past_a_power_loss_gap_never_come_back(tmp_path: Path) -> None:
    """Power loss kept entries 22..39 (never flushed) but not 20 and 21. The
    rebuild drops all of them, not only the run after the prefix: else puts
    filling the gap would, after a later kill -9, chain on to the stale ones."""
    path = tmp_path / "a.tix"
    f = IndexFile.create(path, slots=1, capacity=100, begin_ms=0)
    for i in range(20):
        f.put("k", 0, i, 1, i)
    f.flush()
    for i in range(20, 40):
        f.put("k", 0, i, 1, i)
    image = bytearray(path.read_bytes())
    f.close()
    entries_at = 64 * ((64 + 4 + 63) // 64)
    for i in (20, 21):  # never reached the disk
        image[entries_at + 40 * i : entries_at + 40 * (i + 1)] = bytes(40)
    image[32:36] = (1).to_bytes(4, "little")  # open when the power went
    path.write_bytes(bytes(image))
    child = textwrap.dedent(
        """
        import os, signal, sys
        from tieredindex import IndexFile
        g = IndexFile.open(sys.argv[1])
        assert g.recovered and g.count == 20 and g.dropped_entries == 18, (g.count, g.dropped_entries)
        assert g.put("new", 7, 1000, 1, 500) and g.put("new", 7, 1001, 1, 501)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", child, str(path)], capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    h = IndexFile.open(path)
    assert h.count == 22
    assert [e.offset for e in h.query("k", 0, FOREVER, 100)] == list(range(19, -1, -1))
    assert [e.offset for e in h.query("new", 0, FOREVER, 100)] == [1001, 1000]


def test_a_slot_table_changed_at_rest_is_rebuilt(tmp_path: Path) -> None:
    """A cleanly closed file's slot table is trusted only while its CRC
    holds: one flipped bit there made queries miss entries silently."""
    path = tmp_path / "a.tix"
    f = IndexFile.create(path, slots=4, capacity=100, begin_ms=0)
    for i in range(10):
        f.put("k", 1, i, 1, 1000 + i)
    f.put("other", 1, 99, 1, 5000)
    f.close()
    raw = bytearray(path.read_bytes())
    heads = [int.from_bytes(raw[64 + 4 * s : 68 + 4 * s], "little") for s in range(4)]
    raw[64 + 4 * heads.index(10)] ^= 0x02  # the head of "k": entry 10 -> 8
    path.write_bytes(bytes(raw))
    g = IndexFile.open(path)
    assert g.recovered
    assert [e.offset for e in g.query("k", 0, FOREVER, 100)] == list(range(9, -1, -1))
    assert g.verify() == 11
