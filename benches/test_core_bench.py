"""Speed of the core (issues 2 and 4), each figure beside its anchor in the same run.

Run (about 1.5 minutes at the default scale; needs ~2.5 GB free disk and ~4 GB RAM):

    pytest benches/test_core_bench.py --benchmark-only --benchmark-json=/tmp/core-bench.json
    python benches/report_core.py /tmp/core-bench.json

``benches/run_suite.py`` (``make bench``) runs it at several file sizes and
renders ``benches/REPORT.md`` from the JSON.

File sizes: ``TIX_BENCH_SCALES`` is a comma-separated list of fractions of
RocketMQ's default file (5,000,000 slots, 20,000,000 entries), e.g.
``1/100,1/10,1/2,1`` (default ``1``). Every test below that takes a file runs
once per scale (test ids ``s0.01``, ``s1``, ...). ``TIX_BENCH_FILLS`` (e.g.
``1/100,1/10,1/2``; default none) adds the partly filled files at the largest
scale. ``TIX_BENCH_CORE_ROUNDS`` caps the rounds of every test (the quick
mode sets 1).

Bench files go to ``$TIEREDINDEX_BENCH_DIR`` (default: the system temp dir)
and are deleted at the end. Nothing here asserts a timing: speed is reported
(by ``report_core.py`` and ``run_suite.py``), only correctness is asserted.

Figures and anchors (group names in the JSON):
- ``crc32c 1MiB`` / ``crc32c 64MiB``: ours vs the ``crc32c`` package and
  ``google_crc32c.value``.
- ``put_batch``: filling a whole file from numpy columns in batches of up to
  1,000,000 (keys: capacity/10 random ``key-<16 hex>`` str, each put 10
  times, shuffled; one str object per put). One round = one fresh file;
  create and close are not timed; one warm-up round, then 10. Compared by
  the report with the criterion benches ``put_batch/fill_*_keys`` (the same
  job in bare Rust, keys hashed in the loop) and ``put_batch/fill_*`` (the
  kernel alone, fingerprints given), and with
  ``put_batch numpy``: the same hash-slot insert written in plain numpy
  (``slot = hash % slots; item.next = head[slot]; head[slot] = item`` on
  preallocated arrays, keys hashed with Python's ``hash`` of their UTF-8
  bytes), vectorized per batch and as a Python loop (100,000 entries).
- ``put single``: ``f.put(...)`` from a Python loop, beside the same loop
  with an empty body and with ``key_fingerprint_of(key)`` (the key hash alone:
  the cost of one native call).
- ``flush``: ``flush()`` right after filling a file (msync of all its dirty
  pages) vs ``dd if=/dev/zero bs=1M count=<same MiB> conv=fsync`` into a new
  file and into a preallocated one (``conv=notrunc,fsync``).
- ``query``: ``IndexFile.query`` of the full, unsealed file, random keys with
  10 entries each; beside ``key_fingerprint_of`` of the same keys.
- ``recover``: ``IndexFile.open`` of a crash image of the full file (the
  file copied while open, header still "open": the open rebuilds the slot
  table from the checksummed entries) vs reading the same bytes
  (``dd of=/dev/null``, page cache).
- ``seal``: sealing the full file, durably (``seal(dest)``: the sealed copy
  is fsynced) vs ``cp`` followed by ``sync FILE``, and without that fsync
  (``durable=False``, what the store does on its way to an upload) vs ``cp``.
- ``sealed query``: ``SealedIndex.query`` for keys with 10 entries each, the
  same key over and over and random keys.
- ``create rss``: create of a file, with RSS before and after it (and after
  the first batch) in ``extra_info``.
- ``partial`` (``TIX_BENCH_FILLS``): put_batch, recover and seal (without
  the fsync of the sealed copy) of the largest file filled to each fraction:
  growth with the entry count at a fixed file size.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import crc32c as crc32c_pkg
import google_crc32c
import numpy as np
import pytest

import tieredindex
from tieredindex import IndexFile, SealedIndex

DEFAULT_SLOTS = 5_000_000
DEFAULT_CAPACITY = 20_000_000
BATCH = 1_000_000
PUTS_PER_KEY = 10
BEGIN_MS = 1_700_000_000_000
END_OF_TIME = 2**63 - 1
SINGLE_PUTS = 500_000
NUMPY_LOOP_PUTS = 100_000

pytestmark = pytest.mark.timeout(900)


def _fractions(name: str, default: str) -> list[Fraction]:
    items = [x.strip() for x in os.environ.get(name, default).split(",") if x.strip()]
    return [Fraction(x).limit_denominator(10_000) for x in items]


_ROUNDS_CAP = os.environ.get("TIX_BENCH_CORE_ROUNDS")


def rounds(n: int) -> int:
    """``n``, or fewer if ``TIX_BENCH_CORE_ROUNDS`` says so."""
    return max(1, min(n, int(_ROUNDS_CAP))) if _ROUNDS_CAP else n


@dataclasses.dataclass(frozen=True)
class Geometry:
    """A file of ``scale`` times RocketMQ's default size."""

    scale: Fraction

    @property
    def slots(self) -> int:
        return int(DEFAULT_SLOTS * self.scale)

    @property
    def capacity(self) -> int:
        return int(DEFAULT_CAPACITY * self.scale)

    def __str__(self) -> str:
        return f"s{float(self.scale):g}"


GEOMETRIES = [Geometry(s) for s in _fractions("TIX_BENCH_SCALES", "1")]
LARGEST = max(GEOMETRIES, key=lambda g: g.scale)
FILLS = _fractions("TIX_BENCH_FILLS", "")


class Data:
    """Keys and numeric columns of one full file of this geometry."""

    def __init__(self, geom: Geometry) -> None:
        capacity = geom.capacity
        self.capacity = capacity
        self.batch = min(BATCH, capacity)
        rng = np.random.default_rng(1)
        distinct = capacity // PUTS_PER_KEY
        values = rng.integers(0, 2**64, distinct, dtype=np.uint64)
        self.distinct_keys = [f"key-{x:016x}" for x in values.tolist()]
        # Every put gets its own str object, allocated in put order, as a broker's fresh
        # message keys would be. (A list of references into a shared pool of 2M strings,
        # in shuffled order, halves the put_batch rate: each key is a cache miss.)
        order = rng.permutation(capacity) % distinct
        self.key_batches = [
            [f"key-{x:016x}" for x in values[order[at : at + self.batch]].tolist()]
            for at in range(0, capacity, self.batch)
        ]
        n = np.arange(capacity, dtype=np.int64)
        # Native widths, so put_batch reads them in place.
        self.queue_ids = (n % 8).astype(np.uint32)
        self.offsets = n * 1024
        self.sizes = (200 + n % 1000).astype(np.uint32)
        self.timestamps_ms = BEGIN_MS + n // 1000

    def batches(self, entries: int | None = None) -> Iterator[tuple[list[str], slice]]:
        """(keys, column slice) of each batch of the first ``entries`` (all by default)."""
        entries = self.capacity if entries is None else entries
        for b, keys in enumerate(self.key_batches):
            at = b * self.batch
            if at >= entries:
                return
            n = min(self.batch, entries - at)
            # Whole batches go as they are: keys[:n] would copy the list, and
            # the copy's increfs touch every key object (a cache miss each),
            # which times list slicing, not put_batch.
            yield (keys if n == len(keys) else keys[:n]), slice(at, at + n)

    def fill(self, f: IndexFile, entries: int | None = None) -> int:
        """Puts the first ``entries`` (all by default) in batches; returns how many were written."""
        written = 0
        for keys, s in self.batches(entries):
            written += f.put_batch(
                keys, self.queue_ids[s], self.offsets[s], self.sizes[s], self.timestamps_ms[s]
            )
        return written


class Files:
    """Bench files of one geometry in one scratch directory, removed at the end."""

    def __init__(self, geom: Geometry) -> None:
        parent = os.environ.get("TIEREDINDEX_BENCH_DIR") or tempfile.gettempdir()
        self.geom = geom
        self.dir = Path(tempfile.mkdtemp(prefix=f"tieredindex-bench-{geom}-", dir=parent))
        self.serial = 0
        self.open_files: list[IndexFile] = []
        # A full, flushed file (made once, shared by recover, seal and cp).
        self.full: IndexFile | None = None
        self.sealed_path: Path | None = None

    def path(self, stem: str) -> Path:
        self.serial += 1
        return self.dir / f"{stem}-{self.serial}.idx"

    def create(self, stem: str) -> IndexFile:
        f = IndexFile.create(
            self.path(stem), slots=self.geom.slots, capacity=self.geom.capacity, begin_ms=BEGIN_MS
        )
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


@pytest.fixture(scope="module", params=GEOMETRIES, ids=str)
def geom(request: pytest.FixtureRequest) -> Geometry:
    g: Geometry = request.param
    return g


@pytest.fixture(scope="module")
def data(geom: Geometry) -> Data:
    return Data(geom)


@pytest.fixture(scope="module")
def files(geom: Geometry) -> Iterator[Files]:
    fs = Files(geom)
    yield fs
    fs.cleanup()


@pytest.fixture(scope="module")
def full_file(files: Files, data: Data) -> IndexFile:
    """A filled and flushed file; the flush bench leaves its last one here."""
    if files.full is None:
        f = files.create("full")
        assert data.fill(f) == data.capacity
        f.flush()
        files.full = f
    return files.full


def geometry_info(geom: Geometry, path: str | Path | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "scale": float(geom.scale),
        "slots": geom.slots,
        "capacity": geom.capacity,
    }
    if path is not None:
        info["file_bytes"] = Path(path).stat().st_size
    return info


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


def test_put_batch_fill(benchmark: Any, geom: Geometry, files: Files, data: Data) -> None:
    state: dict[str, IndexFile] = {}

    def setup() -> tuple[tuple[IndexFile], dict[str, Any]]:
        if "f" in state:
            files.discard(state.pop("f"))
        state["f"] = files.create("fill")
        return (state["f"],), {}

    benchmark.group = f"put_batch {geom}"
    benchmark.extra_info.update(geometry_info(geom), entries=data.capacity, batch=data.batch)
    # A warm-up round and 10 rounds, as criterion's bare Rust fill gets (its
    # warm-up, 10 samples): on this VM the first touch of fresh pages (a
    # new file each round) swings by 2x from round to round.
    written = benchmark.pedantic(data.fill, setup=setup, rounds=rounds(10), warmup_rounds=1, iterations=1)
    assert written == data.capacity
    assert state["f"].count == data.capacity
    assert len(state["f"].query(data.distinct_keys[0], 0, END_OF_TIME, 64)) == PUTS_PER_KEY
    benchmark.extra_info["file_bytes"] = Path(state["f"].path).stat().st_size
    files.discard(state.pop("f"))


class NumpyIndex:
    """What a Python user would write: the same hash-slot insert on
    preallocated numpy arrays (item ids from 1; 0 ends a chain)."""

    def __init__(self, slots: int, capacity: int) -> None:
        self.slots = slots
        self.head = np.zeros(slots, dtype=np.uint32)
        self.next = np.zeros(capacity, dtype=np.uint32)
        self.fingerprint = np.zeros(capacity, dtype=np.uint64)
        self.queue_id = np.zeros(capacity, dtype=np.uint32)
        self.offset = np.zeros(capacity, dtype=np.int64)
        self.size = np.zeros(capacity, dtype=np.uint32)
        self.timestamp_ms = np.zeros(capacity, dtype=np.int64)
        self.count = 0

    @staticmethod
    def fingerprint_of(key: str) -> int:
        return hash(key.encode()) & 0xFFFF_FFFF_FFFF_FFFF

    def put_batch(self, keys: list[str], q: np.ndarray, o: np.ndarray, s: np.ndarray, t: np.ndarray) -> int:
        """Vectorized: within a batch, items of one slot chain in put order."""
        n = len(keys)
        start = self.count
        fp = np.fromiter((hash(k.encode()) for k in keys), dtype=np.int64, count=n).view(np.uint64)
        slot = fp % np.uint64(self.slots)
        ids = np.arange(start + 1, start + n + 1, dtype=np.uint32)
        order = np.argsort(slot, kind="stable")
        by_slot, by_slot_ids = slot[order], ids[order]
        first = np.ones(n, dtype=bool)
        first[1:] = by_slot[1:] != by_slot[:-1]
        last = np.ones(n, dtype=bool)
        last[:-1] = first[1:]
        prev = np.empty(n, dtype=np.uint32)
        prev[1:] = by_slot_ids[:-1]
        prev[first] = self.head[by_slot[first]]
        self.next[by_slot_ids - 1] = prev
        self.head[by_slot[last]] = by_slot_ids[last]
        end = start + n
        self.fingerprint[start:end] = fp
        self.queue_id[start:end] = q
        self.offset[start:end] = o
        self.size[start:end] = s
        self.timestamp_ms[start:end] = t
        self.count = end
        return n

    def put_loop(self, keys: list[str], q: np.ndarray, o: np.ndarray, s: np.ndarray, t: np.ndarray) -> int:
        """One entry at a time, as a plain Python loop over numpy arrays."""
        head, nxt, slots = self.head, self.next, self.slots
        at = self.count
        for i in range(len(keys)):
            fp = hash(keys[i].encode()) & 0xFFFF_FFFF_FFFF_FFFF
            slot = fp % slots
            nxt[at] = head[slot]
            head[slot] = at + 1
            self.fingerprint[at] = fp
            self.queue_id[at] = q[i]
            self.offset[at] = o[i]
            self.size[at] = s[i]
            self.timestamp_ms[at] = t[i]
            at += 1
        self.count = at
        return len(keys)

    def query(self, key: str) -> list[int]:
        """Item ids of this key, newest first."""
        fp = self.fingerprint_of(key)
        item, out = int(self.head[fp % self.slots]), []
        while item:
            if int(self.fingerprint[item - 1]) == fp:
                out.append(item)
            item = int(self.next[item - 1])
        return out


@pytest.mark.parametrize("style", ["vectorized", "loop"])
def test_put_batch_numpy(benchmark: Any, geom: Geometry, data: Data, style: str) -> None:
    entries = data.capacity if style == "vectorized" else min(NUMPY_LOOP_PUTS, data.capacity)
    state: dict[str, NumpyIndex] = {}

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        state["ix"] = NumpyIndex(geom.slots, geom.capacity)
        return (), {}

    def fill() -> int:
        ix = state["ix"]
        put = ix.put_batch if style == "vectorized" else ix.put_loop
        written = 0
        for keys, s in data.batches(entries):
            written += put(keys, data.queue_ids[s], data.offsets[s], data.sizes[s], data.timestamps_ms[s])
        return written

    benchmark.group = f"put_batch {geom}"
    benchmark.extra_info.update(geometry_info(geom), entries=entries, style=style)
    n = 2 if style == "vectorized" and geom.scale >= Fraction(1, 2) else 3
    assert benchmark.pedantic(fill, setup=setup, rounds=rounds(n), iterations=1) == entries
    if style == "vectorized":
        assert len(state["ix"].query(data.distinct_keys[0])) == PUTS_PER_KEY
    del state["ix"]


@pytest.mark.parametrize("body", ["put", "empty loop", "key_fingerprint_of"])
def test_put_single_loop(benchmark: Any, geom: Geometry, files: Files, data: Data, body: str) -> None:
    n_rounds = rounds(5)
    n = min(SINGLE_PUTS, data.capacity // 5)
    s = slice(0, n)
    single_rows = list(
        zip(
            data.key_batches[0][s],
            data.queue_ids[s].tolist(),
            data.offsets[s].tolist(),
            data.sizes[s].tolist(),
            data.timestamps_ms[s].tolist(),
            strict=True,
        )
    )
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
    benchmark.group = f"put single {geom}"
    benchmark.extra_info.update(geometry_info(geom), entries=n, body=body)
    assert benchmark.pedantic(loop, rounds=n_rounds, iterations=1, warmup_rounds=0) == n
    if body == "put":
        assert f.count == n_rounds * n
    files.discard(f)


# --- flush vs dd ---------------------------------------------------------------------------------


def test_flush_full(benchmark: Any, geom: Geometry, files: Files, data: Data) -> None:
    state: dict[str, IndexFile] = {}

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        if "f" in state:
            files.discard(state.pop("f"))
        f = files.create("flush")
        assert data.fill(f) == data.capacity
        state["f"] = f
        return (), {}

    benchmark.group = f"flush {geom}"
    benchmark.pedantic(lambda: state["f"].flush(), setup=setup, rounds=rounds(3), iterations=1)
    size = Path(state["f"].path).stat().st_size
    benchmark.extra_info.update(geometry_info(geom), bytes=size, what="flush after put_batch fill")
    # Keep the last one: full and flushed, it is what recover, seal and cp use.
    if files.full is None:
        files.full = state["f"]
    else:
        files.discard(state["f"])


@pytest.mark.parametrize("how", ["new file", "preallocated"])
def test_flush_anchor_dd(
    benchmark: Any, geom: Geometry, files: Files, full_file: IndexFile, how: str
) -> None:
    size = Path(full_file.path).stat().st_size
    mib = -(-size // (1 << 20))
    out = files.path("dd")
    conv = "conv=fsync" if how == "new file" else "conv=notrunc,fsync"

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        out.unlink(missing_ok=True)
        if how == "preallocated":
            fd = os.open(out, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                os.posix_fallocate(fd, 0, mib << 20)
                os.fsync(fd)
            finally:
                os.close(fd)
        return (), {}

    def dd() -> None:
        cmd = ["dd", "if=/dev/zero", f"of={out}", "bs=1M", f"count={mib}", conv, "status=none"]
        subprocess.run(cmd, check=True)

    benchmark.group = f"flush {geom}"
    benchmark.extra_info.update(
        geometry_info(geom), bytes=mib << 20, how=how, what=f"dd bs=1M count={mib} {conv}"
    )
    benchmark.pedantic(dd, setup=setup, rounds=rounds(5), iterations=1)
    assert out.stat().st_size == mib << 20
    out.unlink()


# --- query of the unsealed file ------------------------------------------------------------------


def _query_picks(data: Data) -> list[str]:
    rng = np.random.default_rng(3)
    return [data.distinct_keys[i] for i in rng.integers(0, len(data.distinct_keys), 100_000).tolist()]


@pytest.mark.parametrize("what", ["IndexFile.query", "key_fingerprint_of"])
def test_query_unsealed(benchmark: Any, geom: Geometry, full_file: IndexFile, data: Data, what: str) -> None:
    picks = _query_picks(data)
    for k in picks[:100]:
        assert len(full_file.query(k, 0, END_OF_TIME, 64)) == PUTS_PER_KEY
    it = itertools.cycle(picks)
    if what == "IndexFile.query":
        query = full_file.query

        def one() -> Any:
            return query(next(it), 0, END_OF_TIME, 64)

    else:
        fp = tieredindex.key_fingerprint_of

        def one() -> Any:
            return fp(next(it))

    benchmark.group = f"query {geom}"
    benchmark.extra_info.update(geometry_info(geom), what=what, entries_per_key=PUTS_PER_KEY)
    benchmark(one)


# --- recovery of a crashed file ------------------------------------------------------------------


def crash_image(f: IndexFile, dest: Path) -> None:
    """What a kill -9 leaves: the mapped bytes of an open file, header still "open"."""
    shutil.copyfile(f.path, dest)


def time_recover(benchmark: Any, template: Path, entries: int, n_rounds: int) -> None:
    work = template.with_suffix(".recovering")
    opened: list[IndexFile] = []

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        while opened:
            opened.pop().close()
        work.unlink(missing_ok=True)
        shutil.copyfile(template, work)
        return (), {}

    def recover() -> None:
        opened.append(IndexFile.open(work))

    benchmark.pedantic(recover, setup=setup, rounds=n_rounds, iterations=1)
    g = opened.pop()
    assert g.recovered and g.count == entries
    g.close()
    work.unlink()


def test_recover_crashed(benchmark: Any, geom: Geometry, files: Files, full_file: IndexFile) -> None:
    template = files.dir / "crashed.idx"
    crash_image(full_file, template)
    benchmark.group = f"recover {geom}"
    benchmark.extra_info.update(geometry_info(geom, template), entries=full_file.count, what="open")
    time_recover(benchmark, template, full_file.count, rounds(3))
    template.unlink()


def test_recover_anchor_read(benchmark: Any, geom: Geometry, full_file: IndexFile) -> None:
    cmd = ["dd", f"if={full_file.path}", "of=/dev/null", "bs=1M", "status=none"]
    subprocess.run(cmd, check=True)  # in the page cache, as the crash image is
    benchmark.group = f"recover {geom}"
    benchmark.extra_info.update(geometry_info(geom, full_file.path), what=" ".join(cmd[:-1]))
    benchmark.pedantic(lambda: subprocess.run(cmd, check=True), rounds=rounds(5), iterations=1)


# --- seal vs cp ----------------------------------------------------------------------------------


@pytest.mark.parametrize("durable", [True, False], ids=["fsync", "no fsync"])
def test_seal_full(benchmark: Any, geom: Geometry, files: Files, full_file: IndexFile, durable: bool) -> None:
    dest = files.dir / "sealed.tix"

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        dest.unlink(missing_ok=True)
        return (), {}

    benchmark.group = f"seal {geom}"
    benchmark.extra_info.update(
        geometry_info(geom),
        bytes=Path(full_file.path).stat().st_size,
        entries=full_file.count,
        durable=durable,
    )
    sealed = benchmark.pedantic(
        lambda: full_file.seal(dest, durable=durable), setup=setup, rounds=rounds(3), iterations=1
    )
    assert sealed.count == geom.capacity
    benchmark.extra_info["sealed_bytes"] = sealed.size
    files.sealed_path = dest


@pytest.mark.parametrize("how", ["cp", "cp+sync"])
def test_seal_anchor_cp(benchmark: Any, geom: Geometry, files: Files, full_file: IndexFile, how: str) -> None:
    src = Path(full_file.path)
    dst = files.dir / "copy.idx"

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        dst.unlink(missing_ok=True)
        return (), {}

    def copy() -> None:
        subprocess.run(["cp", str(src), str(dst)], check=True)
        if how == "cp+sync":
            subprocess.run(["sync", str(dst)], check=True)

    benchmark.group = f"seal {geom}"
    benchmark.extra_info.update(geometry_info(geom), bytes=src.stat().st_size, what=how)
    benchmark.pedantic(copy, setup=setup, rounds=rounds(5), iterations=1)
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
def test_sealed_query(benchmark: Any, geom: Geometry, sealed: SealedIndex, data: Data, keys: str) -> None:
    picks = _query_picks(data)
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

    benchmark.group = f"sealed query {geom}"
    benchmark.extra_info.update(geometry_info(geom), keys=keys, entries_per_key=PUTS_PER_KEY)
    assert len(benchmark(one)) == PUTS_PER_KEY


# --- RSS of create ------------------------------------------------------------------------------


def test_create_rss(benchmark: Any, geom: Geometry, files: Files, data: Data, capsys: Any) -> None:
    state: dict[str, Any] = {}

    def create() -> IndexFile:
        state["before"] = rss()
        f = files.create("rss")
        state["after"] = rss()
        return f

    benchmark.group = f"create rss {geom}"
    f = benchmark.pedantic(create, rounds=1, iterations=1)
    keys, s = next(data.batches())
    n = f.put_batch(keys, data.queue_ids[s], data.offsets[s], data.sizes[s], data.timestamps_ms[s])
    assert n == len(keys)
    after_put = rss()
    benchmark.extra_info.update(
        geometry_info(geom, f.path),
        rss_before_kib=state["before"],
        rss_after_create_kib=state["after"],
        rss_after_first_batch_kib=after_put,
        first_batch=n,
    )
    with capsys.disabled():
        print(f"\n[{geom}] RSS KiB before create: {state['before']}")
        print(f"[{geom}] RSS KiB after create:  {state['after']}")
        print(f"[{geom}] RSS KiB after {n:,} entries: {after_put}")
    files.discard(f)


# --- partly filled files at the largest size: growth with the entry count ------------------------


_partial: dict[tuple[Geometry, Fraction], tuple[IndexFile, Path]] = {}


def partial_file(geom: Geometry, fill: Fraction, files: Files, data: Data) -> tuple[IndexFile, Path]:
    """An open file of this geometry filled to ``fill``, and a crash image of it."""
    if (geom, fill) not in _partial:
        f = files.create(f"partial-{float(fill):g}")
        entries = int(geom.capacity * fill)
        assert data.fill(f, entries) == entries
        f.flush()
        template = files.dir / f"partial-{float(fill):g}.crashed"
        crash_image(f, template)
        _partial[(geom, fill)] = (f, template)
    return _partial[(geom, fill)]


def _only_largest(geom: Geometry) -> None:
    if geom != LARGEST:
        pytest.skip("partly filled files are measured at the largest scale only")


@pytest.mark.parametrize("fill", FILLS, ids=lambda f: f"fill{float(f):g}")
def test_partial_put_batch(benchmark: Any, geom: Geometry, files: Files, data: Data, fill: Fraction) -> None:
    _only_largest(geom)
    entries = int(geom.capacity * fill)
    state: dict[str, IndexFile] = {}

    def setup() -> tuple[tuple[IndexFile, int], dict[str, Any]]:
        if "f" in state:
            files.discard(state.pop("f"))
        state["f"] = files.create("pfill")
        return (state["f"], entries), {}

    benchmark.group = f"partial put_batch {geom}"
    benchmark.extra_info.update(geometry_info(geom), entries=entries, fill=float(fill))
    assert benchmark.pedantic(data.fill, setup=setup, rounds=rounds(3), iterations=1) == entries
    files.discard(state.pop("f"))


@pytest.mark.parametrize("fill", FILLS, ids=lambda f: f"fill{float(f):g}")
def test_partial_recover(benchmark: Any, geom: Geometry, files: Files, data: Data, fill: Fraction) -> None:
    _only_largest(geom)
    f, template = partial_file(geom, fill, files, data)
    benchmark.group = f"partial recover {geom}"
    benchmark.extra_info.update(geometry_info(geom, template), entries=f.count, fill=float(fill))
    time_recover(benchmark, template, f.count, rounds(3))


@pytest.mark.parametrize("fill", FILLS, ids=lambda f: f"fill{float(f):g}")
def test_partial_seal(benchmark: Any, geom: Geometry, files: Files, data: Data, fill: Fraction) -> None:
    _only_largest(geom)
    f, template = partial_file(geom, fill, files, data)
    dest = files.dir / "partial.tix"

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        dest.unlink(missing_ok=True)
        return (), {}

    benchmark.group = f"partial seal {geom}"
    benchmark.extra_info.update(geometry_info(geom), entries=f.count, fill=float(fill))
    sealed = benchmark.pedantic(
        lambda: f.seal(dest, durable=False), setup=setup, rounds=rounds(3), iterations=1
    )
    benchmark.extra_info["sealed_bytes"] = sealed.size
    assert sealed.count == f.count
    dest.unlink()
    files.discard(f)
    template.unlink()
    del _partial[(geom, fill)]
