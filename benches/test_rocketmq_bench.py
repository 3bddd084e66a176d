"""Speed of RocketMQ interop (issue 7): reading and verifying a full
default-size compacted RocketMQ index file against the disk's sequential
read bandwidth, measured in the same run.

Run (about 1 minute; needs ~0.6 GB free disk and ~2 GB RAM):

    pytest benches/test_rocketmq_bench.py --benchmark-only -s

The file is RocketMQ's largest upload: 5,000,000 slots and 19,999,999 items,
exactly 600,000,000 bytes, made with numpy in a few seconds (items spread
over the slots at random, as String.hashCode spreads keys) and deleted at the
end. Bench files go to ``$TIEREDINDEX_BENCH_DIR`` (default: the system temp
dir).

``TIX_BENCH_RMQ_SCALE`` (a fraction, default 1) shrinks the file (slots
and items scaled alike; the quick mode of ``benches/run_suite.py`` uses
1/100) and ``TIX_BENCH_CORE_ROUNDS`` caps the rounds.

Figures (group ``rocketmq verify``):
- ``verify``: ``RocketMQFile.open(path).verify()``: every slot record and
  every item checked (see ``rust/rocketmq.rs``);
- anchor ``dd``: ``dd if=FILE of=/dev/null bs=1M``, its own reported time.

Both are page-cache reads (the file is read once first), interleaved round
by round so a noisy neighbour hits both alike; the summary line gives the
best and the median of each and their ratio (target: verify >= 50% of dd).
If ``/proc/sys/vm/drop_caches`` is writable a cold pair is measured too
(caches dropped before each side); otherwise the summary says it was not.
Nothing here asserts a timing: correctness is asserted, speed reported.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tieredindex._native import RocketMQFile

SCALE = Fraction(os.environ.get("TIX_BENCH_RMQ_SCALE", "1")).limit_denominator(10_000)
SLOTS = int(5_000_000 * SCALE)
ITEMS = int(20_000_000 * SCALE) - 1
FILE_BYTES = 28 + 8 * SLOTS + 28 * ITEMS
END_MAGIC = 0xCCDDEEFF ^ (1880681586 + 8)
BEGIN_MS = 1_700_000_000_000
ROUNDS = min(7, int(os.environ.get("TIX_BENCH_CORE_ROUNDS", "7")))

pytestmark = pytest.mark.timeout(600)


def write_compacted(path: Path) -> None:
    """A full default-size compacted file: runs tile the items in slot
    order, every item's hash in its slot (hash = slot + SLOTS * r)."""
    rng = np.random.default_rng(7)
    slots = np.sort(rng.integers(0, SLOTS, ITEMS, dtype=np.int32))
    counts = np.bincount(slots, minlength=SLOTS).astype(np.int64)
    items_at = 28 + 8 * SLOTS
    table = np.empty(SLOTS, dtype=[("pos", ">i4"), ("len", ">i4")])
    table["pos"] = items_at + 28 * (np.cumsum(counts) - counts)
    table["len"] = 28 * counts
    items = np.empty(
        ITEMS,
        dtype=[
            ("hash", ">i4"),
            ("topic", ">i4"),
            ("queue", ">i4"),
            ("offset", ">i8"),
            ("size", ">i4"),
            ("diff", ">i4"),
        ],
    )
    items["hash"] = slots + SLOTS * rng.integers(0, (2**31 - SLOTS) // SLOTS, ITEMS, dtype=np.int32)
    items["topic"] = 1
    items["queue"] = slots % 8
    items["offset"] = np.arange(ITEMS, dtype=np.int64) * 100
    items["size"] = 100
    items["diff"] = rng.integers(0, 3600, ITEMS, dtype=np.int32)
    header = np.array(
        [(END_MAGIC, BEGIN_MS, BEGIN_MS + 3599 * 1000, int((counts > 0).sum()), ITEMS)],
        dtype=[("magic", ">u4"), ("begin", ">i8"), ("end", ">i8"), ("slots", ">i4"), ("items", ">i4")],
    )
    with path.open("wb") as f:
        f.write(header.tobytes())
        table.tofile(f)
        items.tofile(f)


@pytest.fixture(scope="module")
def big_file() -> Iterator[Path]:
    base = Path(os.environ.get("TIEREDINDEX_BENCH_DIR", tempfile.gettempdir()))
    with tempfile.TemporaryDirectory(prefix="tieredindex-rmq-bench-", dir=base) as tmp:
        path = Path(tmp) / "1700000000000.compacted"
        write_compacted(path)
        assert path.stat().st_size == FILE_BYTES
        assert SCALE != 1 or FILE_BYTES == 600_000_000
        yield path


def dd_seconds(path: Path) -> float:
    """dd's own figure for reading the file (not the process start-up)."""
    out = subprocess.run(
        ["dd", f"if={path}", "of=/dev/null", "bs=1M"], capture_output=True, text=True, check=True
    ).stderr
    match = re.search(r"copied, ([0-9.e+-]+) s", out)
    assert match is not None, out
    return float(match.group(1))


def verify_seconds(path: Path) -> float:
    started = time.perf_counter()
    report = RocketMQFile.open(path).verify()
    elapsed = time.perf_counter() - started
    assert report[0] == ITEMS
    return elapsed


def drop_caches() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    except OSError:
        return False
    return True


def gbps(seconds: float) -> float:
    return FILE_BYTES / seconds / 1e9


def test_rocketmq_verify_vs_dd(benchmark: Any, big_file: Path, capsys: Any) -> None:
    cold: dict[str, float] = {}
    if drop_caches():
        cold["dd_s"] = dd_seconds(big_file)
        drop_caches()
        cold["verify_s"] = verify_seconds(big_file)
    dd_seconds(big_file)  # warm: both sides read from the page cache
    verify_seconds(big_file)
    dd_times, verify_times = [], []
    for _ in range(ROUNDS):
        dd_times.append(dd_seconds(big_file))
        verify_times.append(verify_seconds(big_file))
    best = min(dd_times) / min(verify_times)
    median = statistics.median(dd_times) / statistics.median(verify_times)
    benchmark.group = "rocketmq verify"
    benchmark.extra_info.update(
        bytes=FILE_BYTES,
        items=ITEMS,
        dd_best_s=min(dd_times),
        dd_median_s=statistics.median(dd_times),
        verify_best_s=min(verify_times),
        verify_median_s=statistics.median(verify_times),
        ratio_best=best,
        ratio_median=median,
        **{f"cold_{k}": v for k, v in cold.items()},
    )
    benchmark.pedantic(verify_seconds, args=(big_file,), rounds=ROUNDS, iterations=1)
    with capsys.disabled():
        print(
            f"\nrocketmq verify, {FILE_BYTES / 1e6:.0f} MB compacted file (page cache): verify {gbps(min(verify_times)):.1f} GB/s best, "
            f"{gbps(statistics.median(verify_times)):.1f} median; dd {gbps(min(dd_times)):.1f} GB/s best, "
            f"{gbps(statistics.median(dd_times)):.1f} median; verify/dd {best:.0%} best, {median:.0%} median"
        )
        if cold:
            print(
                f"cold (caches dropped): verify {gbps(cold['verify_s']):.2f} GB/s, dd {gbps(cold['dd_s']):.2f} GB/s, "
                f"verify/dd {cold['dd_s'] / cold['verify_s']:.0%}"
            )
        else:
            print("cold: not measured (/proc/sys/vm/drop_caches is not writable here)")


def test_rocketmq_anchor_dd(benchmark: Any, big_file: Path) -> None:
    dd_seconds(big_file)
    benchmark.group = "rocketmq verify"
    benchmark.extra_info.update(bytes=FILE_BYTES, what="dd if=FILE of=/dev/null bs=1M (page cache)")
    benchmark.pedantic(
        lambda: subprocess.run(
            ["dd", f"if={big_file}", "of=/dev/null", "bs=1M"], capture_output=True, check=True
        ),
        rounds=ROUNDS,
        iterations=1,
    )


def test_rocketmq_query_compacted(benchmark: Any, big_file: Path) -> None:
    """A query of the 600 MB file: two reads, as RocketMQ's remote query."""
    f = RocketMQFile.open(big_file)
    benchmark.group = "rocketmq query"
    benchmark(lambda: f.query_hash(12345, 0, 2**63 - 1, 64))
