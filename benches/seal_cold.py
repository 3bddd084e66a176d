"""The seal of the SIGTERM bench's ~64 MiB file, cold and warm.

Usage: python benches/seal_cold.py [ROUNDS] [PAUSE_S]   (defaults 5, 3.0; ~1 min)

Each round is a fresh process that fills the file, waits, then seals it
(``durable=False``, as the store seals) twice:
- *cold*: the process's first seal after a pause (PAUSE_S, 3 s by
  default; 0 tells the pause from the first seal's own cost), as the
  SIGTERM child's seal comes after its sleep;
- *warm*: a second seal right after the first sealed copy was deleted, so
  its pages come from memory just freed, as in the bench's same-step anchor
  (``test_seal_anchor`` seals round after round).

The question it answers: the SIGTERM child's seal takes up to twice the
anchor's. On a VM whose balloon device reports free pages to the host
(``VIRTIO_BALLOON_F_REPORTING``, as on this project's machines), memory the
guest left free for a while is handed back, and the first touch of it
faults on the host; a cold seal writes ~64 MiB of new page cache. The
script prints the medians and whether the balloon reports free pages.
Seen on a quiet machine (7 rounds each): after 3 s, cold 79-89 ms against
warm 63-68 ms (1.17x-1.42x); with no pause, 70 against 63 ms (1.11x). So
part of the child's extra time, not all of it.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

ROUND = r"""
import os, sys, tempfile, time
from pathlib import Path
import numpy as np
from tieredindex import IndexFile
from tieredindex.layout import index_key
n = 1_965_500  # SIGTERM_ENTRIES of benches/test_remote_bench.py
keys = [index_key("orders", f"k{j}") for j in range(n)]
i = np.arange(n, dtype=np.int64)
with tempfile.TemporaryDirectory() as d:
    def filled(name):
        f = IndexFile.create(Path(d) / name, slots=1 << 19, capacity=n + 16, begin_ms=1_000_000)
        f.put_batch(keys, (i % 8).astype(np.uint32), i, np.full(n, 100, dtype=np.uint32), i + 1_000_000)
        f.flush()
        return f
    def seal(f, dest):
        started = time.perf_counter()
        f.seal(Path(d) / dest, durable=False)
        return time.perf_counter() - started
    a = filled("a.tix")
    time.sleep(float(sys.argv[1]))
    cold = seal(a, "a.sealed")
    b = filled("b.tix")
    os.unlink(Path(d) / "a.sealed")
    warm = seal(b, "b.sealed")
    print(cold, warm)
"""


def balloon_reports_free_pages() -> str:
    """'yes' / 'no' from the virtio balloon's feature bits (bit 5 is
    VIRTIO_BALLOON_F_REPORTING), or 'no balloon'."""
    for device in Path("/sys/bus/virtio/devices").glob("*"):
        try:
            if (device / "device").read_text().strip() == "0x0005":
                return "yes" if (device / "features").read_text()[5] == "1" else "no"
        except (OSError, IndexError):
            continue
    return "no balloon"


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    pause = sys.argv[2] if len(sys.argv) > 2 else "3.0"
    cold, warm = [], []
    for _ in range(rounds):
        out = subprocess.run([sys.executable, "-c", ROUND, pause], capture_output=True, text=True, check=True)
        c, w = (float(x) for x in out.stdout.split())
        cold.append(c)
        warm.append(w)
    ms = [f"{x * 1000:.0f}" for x in cold]
    print(
        f"cold seal (first in its process, after {pause} s): median {statistics.median(cold) * 1000:.0f} ms  {ms}"
    )
    ms = [f"{x * 1000:.0f}" for x in warm]
    print(f"warm seal (pages just freed): median {statistics.median(warm) * 1000:.0f} ms  {ms}")
    print(f"cold / warm: {statistics.median(cold) / statistics.median(warm):.2f}x")
    print(f"balloon reports free pages to the host: {balloon_reports_free_pages()}")


if __name__ == "__main__":
    main()
