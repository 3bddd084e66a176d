"""Crash safety: SIGKILL a writer mid-stream, tear the tail, reopen."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tieredindex import IndexFile

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
    for i in range(10):
        f.put("k", 0, i, 1, i)
    f.flush()
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
