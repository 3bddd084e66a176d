"""The machine's own limits (issue 4), measured in the same run as our figures.

Run (about 20 seconds; ~1 GiB of temp disk):

    pytest benches/test_disk_bench.py --benchmark-only

These are the anchors of the local profile (``benches/run_suite.py`` divides
our figures by them); nothing here touches tieredindex.

Figures (group names in the JSON):
- ``disk write``: sequential write of ``TIX_BENCH_DISK_MIB`` MiB (default
  1024) of zeros with ``dd bs=1M``: ``conv=fsync`` into a new file, into a
  file preallocated with ``posix_fallocate`` (``conv=notrunc,fsync``: what an
  index file is, and what its ``flush`` writes into), and ``oflag=direct``
  (no page cache, if the file system allows it).
- ``sync latency``: one 4 KiB ``pwrite`` at the next offset of a preallocated
  file followed by ``fsync`` / ``fdatasync``; and one dirtied page of a
  mapped preallocated file followed by ``msync(MS_SYNC)`` of that page
  (``mmap.flush``, what ``IndexFile.flush`` does after a single put).
- ``memcpy``: ``numpy.copyto`` of 256 MiB between two prefaulted buffers
  (memory read + write bandwidth).
- ``spawn``: ``subprocess.run(["true"])``, the process start-up that every
  ``cp``/``dd`` anchor pays; the report subtracts it from those anchors.
- ``fio`` (only if ``fio`` is installed): sequential 1 MiB writes with a
  final fsync, and 4 KiB writes each followed by ``fdatasync``; fio's own
  bandwidth and sync-latency figures are in ``extra_info``.

Scratch files go to ``$TIEREDINDEX_BENCH_DIR`` (default: the system temp
dir) and are deleted at the end. No timing is asserted.
"""

from __future__ import annotations

import json
import mmap
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

MiB = 1 << 20
DISK_MIB = int(os.environ.get("TIX_BENCH_DISK_MIB", "1024"))
ROUNDS = int(os.environ.get("TIX_BENCH_CORE_ROUNDS", "3"))
SYNC_ROUNDS = max(20, 200 * ROUNDS // 3)
MEMCPY_MIB = min(256, DISK_MIB)
PAGE = mmap.PAGESIZE

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    parent = os.environ.get("TIEREDINDEX_BENCH_DIR") or tempfile.gettempdir()
    d = Path(tempfile.mkdtemp(prefix="tieredindex-disk-bench-", dir=parent))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def preallocate(path: Path, size: int) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.posix_fallocate(fd, 0, size)
        os.fsync(fd)
    finally:
        os.close(fd)


@pytest.mark.parametrize("how", ["new file", "preallocated", "direct"])
def test_disk_seq_write(benchmark: Any, scratch: Path, how: str) -> None:
    out = scratch / "seq.bin"
    flags = {
        "new file": ["conv=fsync"],
        "preallocated": ["conv=notrunc,fsync"],
        "direct": ["oflag=direct", "conv=fsync"],
    }[how]
    cmd = ["dd", "if=/dev/zero", f"of={out}", "bs=1M", f"count={DISK_MIB}", *flags, "status=none"]
    if how == "direct":
        probe = subprocess.run([*cmd[:4], "count=1", *flags], capture_output=True, text=True)
        out.unlink(missing_ok=True)
        if probe.returncode != 0:
            pytest.skip(f"O_DIRECT not supported here: {probe.stderr.strip()}")

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        out.unlink(missing_ok=True)
        if how == "preallocated":
            preallocate(out, DISK_MIB * MiB)
        return (), {}

    benchmark.group = "disk write"
    benchmark.extra_info.update(bytes=DISK_MIB * MiB, what=" ".join(cmd[:-1]), how=how)
    benchmark.pedantic(lambda: subprocess.run(cmd, check=True), setup=setup, rounds=ROUNDS, iterations=1)
    assert out.stat().st_size == DISK_MIB * MiB
    out.unlink()


@pytest.mark.parametrize("call", ["fsync", "fdatasync", "msync"])
def test_sync_latency(benchmark: Any, scratch: Path, call: str) -> None:
    path = scratch / f"sync-{call}.bin"
    size = (SYNC_ROUNDS + 8) * PAGE
    preallocate(path, size)
    block = b"x" * PAGE
    state = {"at": 0}
    fd = os.open(path, os.O_RDWR)
    mm = mmap.mmap(fd, size) if call == "msync" else None
    sync = os.fsync if call == "fsync" else os.fdatasync

    def one() -> None:
        at = state["at"]
        state["at"] = at + PAGE
        if mm is not None:
            mm[at] = 0x78
            mm.flush(at, PAGE)
        else:
            os.pwrite(fd, block, at)
            sync(fd)

    try:
        benchmark.group = "sync latency"
        benchmark.extra_info.update(
            call=call, bytes=PAGE, what=f"one dirty {PAGE}-byte page, then {call}, preallocated file"
        )
        benchmark.pedantic(one, rounds=SYNC_ROUNDS, iterations=1, warmup_rounds=3)
    finally:
        if mm is not None:
            mm.close()
        os.close(fd)
        path.unlink()


def test_memcpy(benchmark: Any) -> None:
    n = MEMCPY_MIB * MiB
    src = np.ones(n, dtype=np.uint8)
    dst = np.zeros(n, dtype=np.uint8)
    np.copyto(dst, src)  # prefault both
    benchmark.group = "memcpy"
    benchmark.extra_info.update(bytes=n, what=f"numpy.copyto of {MEMCPY_MIB} MiB")
    benchmark.pedantic(np.copyto, args=(dst, src), rounds=max(3, 2 * ROUNDS), iterations=1, warmup_rounds=1)
    assert dst[-1] == 1


def test_spawn(benchmark: Any) -> None:
    benchmark.group = "spawn"
    benchmark.extra_info.update(what='subprocess.run(["true"])')
    benchmark.pedantic(
        lambda: subprocess.run(["true"], check=True), rounds=10 * ROUNDS, iterations=1, warmup_rounds=2
    )


def _fio(args: list[str]) -> dict[str, Any]:
    out = subprocess.run(["fio", "--output-format=json", *args], capture_output=True, text=True, check=True)
    job = json.loads(out.stdout)["jobs"][0]
    return dict(job)


@pytest.mark.skipif(shutil.which("fio") is None, reason="fio is not installed")
@pytest.mark.parametrize("job", ["seq write 1MiB + fsync", "4KiB write + fdatasync"])
def test_fio(benchmark: Any, scratch: Path, job: str) -> None:
    path = scratch / "fio.bin"
    common = [f"--filename={path}", "--name=probe", "--ioengine=psync", "--rw=write"]
    if job.startswith("seq"):
        args = [*common, "--bs=1M", f"--size={DISK_MIB}M", "--end_fsync=1"]
    else:
        args = [*common, "--bs=4k", f"--size={4 * SYNC_ROUNDS}k", "--fdatasync=1"]
    result: dict[str, Any] = {}

    def run() -> None:
        path.unlink(missing_ok=True)
        result.update(_fio(args))

    benchmark.group = "fio"
    benchmark.pedantic(run, rounds=1, iterations=1)
    write = result["write"]
    info: dict[str, Any] = {"job": job, "what": "fio " + " ".join(args[1:]), "bw_bytes": write["bw_bytes"]}
    sync = result.get("sync", {})
    lat = sync.get("lat_ns") or {}
    if lat.get("mean"):
        info["sync_lat_ns_mean"] = lat.get("mean")
        info["sync_lat_ns_p50"] = (lat.get("percentile") or {}).get("50.000000")
        info["sync_lat_ns_p99"] = (lat.get("percentile") or {}).get("99.000000")
    benchmark.extra_info.update(info)
    path.unlink(missing_ok=True)
