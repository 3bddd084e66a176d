"""Speed of the core (issue 2), each figure beside its anchor in the same run.

Run (about 1.5 minutes; needs ~2.5 GB free disk and ~4 GB RAM):

    pytest benches/ --benchmark-only --benchmark-json=/tmp/core-bench.json
    python benches/report_core.py /tmp/core-bench.json

Bench files go to ``$TIEREDINDEX_BENCH_DIR`` (default: the system temp dir)
and are deleted at the end. Nothing here asserts a timing: speed is reported
(by ``report_core.py``), only correctness is asserted.

Figures and anchors (group names in the JSON):
- ``crc32c 1MiB`` / ``crc32c 64MiB``: ours vs the ``crc32c`` package and
  ``google_crc32c.value``.
- ``put_batch``: filling a RocketMQ-default file (5,000,000 slots, 20,000,000
  entries) from numpy columns in batches of 1,000,000 (keys: 2,000,000 random
  ``key-<16 hex>`` str, each put 10 times, shuffled; one str object per put). One round = one fresh
  file; create and close are not timed. Compared by the report with the
  criterion bench ``put_batch/fill_default_20M`` (same fill, bare Rust).
- ``put single``: ``f.put(...)`` from a Python loop, beside the same loop
  with an empty body and with ``key_fingerprint_of(key)`` (the key hash alone).
- ``flush``: ``flush()`` right after filling a default file (msync of ~820 MB
  of dirty pages) vs ``dd if=/dev/zero bs=1M count=<same MiB> conv=fsync``.
- ``seal``: sealing the full default file vs ``cp`` of it (and, for context,
  ``cp`` followed by ``sync FILE``, since seal fsyncs and cp does not).
- ``sealed query``: ``SealedIndex.query`` for keys with 10 entries each, the
  same key over and over and random keys.
- ``create rss``: create of a default file, with RSS before and after it (and
  after 1,000,000 entries) in ``extra_info``.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import crc32c as crc32c_pkg
import google_crc32c
import numpy as np
import pytest

import tieredindex
from tieredindex import IndexFile, SealedIndex

SLOTS = 5_000_000
CAPACITY = 20_000_000
BATCH = 1_000_000
PUTS_PER_KEY = 10
BEGIN_MS = 1_700_000_000_000
END_OF_TIME = 2**63 - 1
SINGLE_PUTS = 500_000

pytestmark = pytest.mark.timeout(600)


class Data:
    """Keys and numeric columns of one full default-size file."""

    def __init__(self) -> None:
        rng = np.random.default_rng(1)
        distinct = CAPACITY // PUTS_PER_KEY
        values = rng.integers(0, 2**64, distinct, dtype=np.uint64)
        self.distinct_keys = [f"key-{x:016x}" for x in values.tolist()]
        # Every put gets its own str object, allocated in put order, as a broker's fresh
        # message keys would be. (A list of references into a shared pool of 2M strings,
        # in shuffled order, halves the put_batch rate: each key is a cache miss.)
        order = rng.permutation(CAPACITY) % distinct
        self.key_batches = [
            [f"key-{x:016x}" for x in values[order[at : at + BATCH]].tolist()]
            for at in range(0, CAPACITY, BATCH)
        ]
        n = np.arange(CAPACITY, dtype=np.int64)
        # Native widths, so put_batch reads them in place.
        self.queue_ids = (n % 8).astype(np.uint32)
        self.offsets = n * 1024
        self.sizes = (200 + n % 1000).astype(np.uint32)
        self.timestamps_ms = BEGIN_MS + n // 1000

    def fill(self, f: IndexFile) -> int:
        """Puts every entry in batches of BATCH; returns how many were written."""
        written = 0
        for b, keys in enumerate(self.key_batches):
            s = slice(b * BATCH, (b + 1) * BATCH)
            written += f.put_batch(
                keys, self.queue_ids[s], self.offsets[s], self.sizes[s], self.timestamps_ms[s]
            )
        return written


class Files:
    """Bench files in one scratch directory, removed at the end."""

    def __init__(self) -> None:
        parent = os.environ.get("TIEREDINDEX_BENCH_DIR") or tempfile.gettempdir()
        self.dir = Path(tempfile.mkdtemp(prefix="tieredindex-bench-", dir=parent))
        self.serial = 0
        self.open_files: list[IndexFile] = []
        # A full, flushed default file (made once, shared by seal and cp).
        self.full: IndexFile | None = None
        self.sealed_path: Path | None = None

    def path(self, stem: str) -> Path:
        self.serial += 1
        return self.dir / f"{stem}-{self.serial}.idx"

    def create(self, stem: str) -> IndexFile:
        f = IndexFile.create(self.path(stem), slots=SLOTS, capacity=CAPACITY, begin_ms=BEGIN_MS)
        self.open_files.append(f)
        return f

    def discard(self, f: IndexFile) -> None:
        """Closes (msync) and deletes a file, untimed."""
        f.close()
        Path(f.path).unlink()
        self.open_files.remove(f)

    def cleanup(self) -> None:
        for f in self.open_files:
            f.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def data() -> Data:
    return Data()


@pytest.fixture(scope="module")
def files() -> Iterator[Files]:
    fs = Files()
    yield fs
    fs.cleanup()


@pytest.fixture(scope="module")
def full_file(files: Files, data: Data) -> IndexFile:
    """A filled and flushed default file; the flush bench leaves its last one here."""
    if files.full is None:
        f = files.create("full")
        assert data.fill(f) == CAPACITY
        f.flush()
        files.full = f
    return files.full


def rss() -> dict[str, int]:
    """VmRSS, RssAnon, RssFile and RssShmem of this process, in KiB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            out[name] = int(value.split()[0])
    return out


# --- crc32c -------------------------------------------------------------------------------------

CRC_IMPLS = {
    "tieredindex": tieredindex.crc32c,
    "crc32c": crc32c_pkg.crc32c,
    "google_crc32c": google_crc32c.value,
}


@pytest.mark.parametrize("size_name,size", [("1MiB", 1 << 20), ("64MiB", 64 << 20)])
@pytest.mark.parametrize("impl", list(CRC_IMPLS))
def test_crc32c(benchmark: Any, impl: str, size_name: str, size: int) -> None:
    assert google_crc32c.implementation == "c"
    data = np.random.default_rng(7).integers(0, 256, size, dtype=np.uint8).tobytes()
    fn = CRC_IMPLS[impl]
    benchmark.group = f"crc32c {size_name}"
    benchmark.extra_info.update(impl=impl, bytes=size)
    value = benchmark(fn, data)
    assert value == crc32c_pkg.crc32c(data)


# --- put ----------------------------------------------------------------------------------------


def test_put_batch_fill_default(benchmark: Any, files: Files, data: Data) -> None:
    state: dict[str, IndexFile] = {}

    def setup() -> tuple[tuple[IndexFile], dict[str, Any]]:
        if "f" in state:
            files.discard(state.pop("f"))
        state["f"] = files.create("fill")
        return (state["f"],), {}

    benchmark.group = "put_batch"
    benchmark.extra_info.update(entries=CAPACITY, batch=BATCH)
    written = benchmark.pedantic(data.fill, setup=setup, rounds=5, iterations=1)
    assert written == CAPACITY
    assert state["f"].count == CAPACITY
    assert len(state["f"].query(data.distinct_keys[0], 0, END_OF_TIME, 64)) == PUTS_PER_KEY
    files.discard(state.pop("f"))


@pytest.fixture(scope="module")
def single_rows(data: Data) -> list[tuple[str, int, int, int, int]]:
    s = slice(0, SINGLE_PUTS)
    return list(
        zip(
            data.key_batches[0][s],
            data.queue_ids[s].tolist(),
            data.offsets[s].tolist(),
            data.sizes[s].tolist(),
            data.timestamps_ms[s].tolist(),
            strict=True,
        )
    )


@pytest.mark.parametrize("body", ["put", "empty loop", "key_fingerprint_of"])
def test_put_single_loop(benchmark: Any, files: Files, single_rows: list[Any], body: str) -> None:
    f = files.create("single")

    def loop_put() -> int:
        put = f.put
        ok = 0
        for k, q, o, s, t in single_rows:
            ok += put(k, q, o, s, t)
        return ok

    def loop_empty() -> int:
        ok = 0
        for _k, _q, _o, _s, _t in single_rows:
            ok += True
        return ok

    def loop_fingerprint() -> int:
        fp = tieredindex.key_fingerprint_of
        ok = 0
        for k, _q, _o, _s, _t in single_rows:
            ok += fp(k) != 0
        return ok

    loop = {"put": loop_put, "empty loop": loop_empty, "key_fingerprint_of": loop_fingerprint}[body]
    benchmark.group = "put single"
    benchmark.extra_info.update(entries=SINGLE_PUTS, body=body)
    # 5 rounds of 500,000 puts each: 2.5M of the file's 20M entries.
    assert benchmark.pedantic(loop, rounds=5, iterations=1, warmup_rounds=0) == SINGLE_PUTS
    if body == "put":
        assert f.count == 5 * SINGLE_PUTS
    files.discard(f)


# --- flush vs dd ---------------------------------------------------------------------------------


def test_flush_full_default(benchmark: Any, files: Files, data: Data) -> None:
    state: dict[str, IndexFile] = {}

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        if "f" in state:
            files.discard(state.pop("f"))
        f = files.create("flush")
        assert data.fill(f) == CAPACITY
        state["f"] = f
        return (), {}

    benchmark.group = "flush"
    benchmark.pedantic(lambda: state["f"].flush(), setup=setup, rounds=3, iterations=1)
    size = Path(state["f"].path).stat().st_size
    benchmark.extra_info.update(bytes=size, what="flush after put_batch fill")
    # Keep the last one: full and flushed, it is what seal and cp use.
    if files.full is None:
        files.full = state["f"]
    else:
        files.discard(state["f"])


def test_flush_anchor_dd(benchmark: Any, files: Files, full_file: IndexFile) -> None:
    size = Path(full_file.path).stat().st_size
    mib = -(-size // (1 << 20))
    out = files.path("dd")

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        out.unlink(missing_ok=True)
        return (), {}

    def dd() -> None:
        cmd = ["dd", "if=/dev/zero", f"of={out}", "bs=1M", f"count={mib}", "conv=fsync", "status=none"]
        subprocess.run(cmd, check=True)

    benchmark.group = "flush"
    benchmark.extra_info.update(bytes=mib << 20, what=f"dd bs=1M count={mib} conv=fsync")
    benchmark.pedantic(dd, setup=setup, rounds=5, iterations=1)
    assert out.stat().st_size == mib << 20
    out.unlink()


# --- seal vs cp ----------------------------------------------------------------------------------


def test_seal_full_default(benchmark: Any, files: Files, full_file: IndexFile) -> None:
    dest = files.dir / "sealed.tix"

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        dest.unlink(missing_ok=True)
        return (), {}

    benchmark.group = "seal"
    benchmark.extra_info.update(bytes=Path(full_file.path).stat().st_size, entries=full_file.count)
    sealed = benchmark.pedantic(lambda: full_file.seal(dest), setup=setup, rounds=3, iterations=1)
    assert sealed.count == CAPACITY
    benchmark.extra_info["sealed_bytes"] = sealed.size
    files.sealed_path = dest


@pytest.mark.parametrize("how", ["cp", "cp+sync"])
def test_seal_anchor_cp(benchmark: Any, files: Files, full_file: IndexFile, how: str) -> None:
    src = Path(full_file.path)
    dst = files.dir / "copy.idx"

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        dst.unlink(missing_ok=True)
        return (), {}

    def copy() -> None:
        subprocess.run(["cp", str(src), str(dst)], check=True)
        if how == "cp+sync":
            subprocess.run(["sync", str(dst)], check=True)

    benchmark.group = "seal"
    benchmark.extra_info.update(bytes=src.stat().st_size, what=how)
    benchmark.pedantic(copy, setup=setup, rounds=5, iterations=1)
    assert dst.stat().st_size == src.stat().st_size
    dst.unlink()


# --- query on the sealed file --------------------------------------------------------------------


@pytest.fixture(scope="module")
def sealed(files: Files, full_file: IndexFile) -> SealedIndex:
    if files.sealed_path is None:
        files.sealed_path = files.dir / "sealed.tix"
        full_file.seal(files.sealed_path)
    return SealedIndex.open(files.sealed_path)


@pytest.mark.parametrize("keys", ["same key", "random keys"])
def test_sealed_query(benchmark: Any, sealed: SealedIndex, data: Data, keys: str) -> None:
    rng = np.random.default_rng(3)
    picks = [data.distinct_keys[i] for i in rng.integers(0, len(data.distinct_keys), 100_000).tolist()]
    for k in picks[:100]:
        hits = sealed.query(k, 0, END_OF_TIME, 64)
        assert len(hits) == PUTS_PER_KEY
        assert [h.timestamp_ms for h in hits] == sorted((h.timestamp_ms for h in hits), reverse=True)
    query = sealed.query
    if keys == "same key":
        key = picks[0]

        def one() -> Any:
            return query(key, 0, END_OF_TIME, 64)

    else:
        it = itertools.cycle(picks)

        def one() -> Any:
            return query(next(it), 0, END_OF_TIME, 64)

    benchmark.group = "sealed query"
    benchmark.extra_info.update(keys=keys, entries_per_key=PUTS_PER_KEY)
    assert len(benchmark(one)) == PUTS_PER_KEY


# --- RSS of create ------------------------------------------------------------------------------


def test_create_rss(benchmark: Any, files: Files, data: Data, capsys: Any) -> None:
    state: dict[str, Any] = {}

    def create() -> IndexFile:
        state["before"] = rss()
        f = files.create("rss")
        state["after"] = rss()
        return f

    benchmark.group = "create rss"
    f = benchmark.pedantic(create, rounds=1, iterations=1)
    s = slice(0, BATCH)
    n = f.put_batch(
        data.key_batches[0], data.queue_ids[s], data.offsets[s], data.sizes[s], data.timestamps_ms[s]
    )
    assert n == BATCH
    after_put = rss()
    benchmark.extra_info.update(
        rss_before_kib=state["before"],
        rss_after_create_kib=state["after"],
        rss_after_1M_entries_kib=after_put,
        file_bytes=Path(f.path).stat().st_size,
    )
    with capsys.disabled():
        print(f"\nRSS KiB before create: {state['before']}")
        print(f"RSS KiB after create:  {state['after']}")
        print(f"RSS KiB after {BATCH:,} entries: {after_put}")
    files.discard(f)
