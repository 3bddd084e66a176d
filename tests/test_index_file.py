"""IndexFile: put/query semantics, capacity, arguments, reopen, threads."""

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tieredindex import CorruptFileError, Entry, IndexFile, StoreLockedError
from tieredindex._native import check_entry_args

FOREVER = 2**63 - 1


def make(tmp_path: Path, slots: int = 5, capacity: int = 20, begin_ms: int = 1000) -> IndexFile:
    return IndexFile.create(tmp_path / "f.tix", slots=slots, capacity=capacity, begin_ms=begin_ms)


def test_fresh_file_properties(tmp_path: Path) -> None:
    f = make(tmp_path, begin_ms=1234)
    assert (f.count, f.used_slots, f.capacity, f.slots) == (0, 0, 20, 5)
    assert f.begin_ms == 1234 and f.end_ms == 1234  # begin while empty
    assert not f.sealed and not f.closed
    assert f.path == str(tmp_path / "f.tix")


def test_capacity_is_usable_entries(tmp_path: Path) -> None:
    # RocketMQ's 5 slots / 20 items holds 19 (item 0 wasted); ours holds 20.
    f = make(tmp_path)
    for i in range(20):
        assert f.put("MessageKey", 1, i, 10, 1000 + i)
    assert f.count == 20 and f.used_slots == 1
    assert f.put("MessageKey", 1, 99, 10, 2000) is False
    assert f.put("other", 1, 99, 10, 2000) is False
    assert f.count == 20
    assert len(f.query("MessageKey", 0, FOREVER, 64)) == 20


def test_many_keys_in_one_slot_return_exactly_their_key(tmp_path: Path) -> None:
    f = make(tmp_path, slots=1, capacity=100)  # every key shares the one slot
    for i in range(30):
        f.put(f"key-{i % 3}", i % 3, i, 1, 5000 + i)
    for k in range(3):
        got = f.query(f"key-{k}", 0, FOREVER, 64)
        assert len(got) == 10
        assert all(e.queue_id == k for e in got)
    assert f.query("key-absent", 0, FOREVER, 64) == []
    assert f.query("key-1x", 0, FOREVER, 64) == []


def test_str_and_bytes_keys_are_the_same_key(tmp_path: Path) -> None:
    f = make(tmp_path)
    f.put("ключ", 1, 1, 1, 1000)
    f.put("ключ".encode(), 1, 2, 1, 1001)
    assert [e.offset for e in f.query("ключ", 0, FOREVER, 10)] == [2, 1]


def test_time_bounds_inclusive_and_newest_first(tmp_path: Path) -> None:
    f = make(tmp_path, capacity=50)
    for t in (1000, 1005, 1010, 1015, 1020):
        f.put("k", 0, t, 1, t)
    assert [e.timestamp_ms for e in f.query("k", 1005, 1015, 64)] == [1015, 1010, 1005]
    assert [e.timestamp_ms for e in f.query("k", 1020, 1020, 64)] == [1020]
    assert f.query("k", 1021, 2000, 64) == []
    assert [e.timestamp_ms for e in f.query("k", 0, FOREVER, 2)] == [1020, 1015]


def test_out_of_order_timestamps_sorted_and_ties_later_put_first(tmp_path: Path) -> None:
    f = make(tmp_path, capacity=50)
    f.put("k", 0, 1, 1, 3000)
    f.put("k", 0, 2, 1, 1000)
    f.put("k", 0, 3, 1, 2000)
    f.put("k", 0, 4, 1, 2000)  # same time as offset 3, put later
    got = f.query("k", 0, FOREVER, 64)
    assert [e.offset for e in got] == [1, 4, 3, 2]
    assert got[0] == Entry(queue_id=0, offset=1, size=1, timestamp_ms=3000)


def test_timestamps_below_begin_and_end_ms(tmp_path: Path) -> None:
    f = make(tmp_path, begin_ms=10_000)
    f.put("k", 0, 0, 1, 5)
    assert f.end_ms == 5  # the largest put, even below begin
    assert [e.timestamp_ms for e in f.query("k", 0, 10, 5)] == [5]
    f.put("k", 0, 0, 1, 20_000)
    assert f.end_ms == 20_000


def test_extreme_values_round_trip(tmp_path: Path) -> None:
    f = make(tmp_path)
    f.put(b"", 2**32 - 1, 2**63 - 1, 2**32 - 1, 2**63 - 1)
    f.put(b"\x00" * 1000, 0, 0, 0, 0)
    assert f.query(b"", 0, FOREVER, 1) == [Entry(2**32 - 1, 2**63 - 1, 2**32 - 1, 2**63 - 1)]
    assert f.query(b"\x00" * 1000, 0, 0, 1) == [Entry(0, 0, 0, 0)]


@pytest.mark.parametrize(
    ("args", "name", "exc"),
    [
        (("k", -1, 0, 0, 0), "queue_id", ValueError),
        (("k", 2**32, 0, 0, 0), "queue_id", ValueError),
        (("k", 0, -1, 0, 0), "offset", ValueError),
        (("k", 0, 2**63, 0, 0), "offset", ValueError),
        (("k", 0, 0, 2**32, 0), "size", ValueError),
        (("k", 0, 0, 0, -5), "timestamp_ms", ValueError),
        (("k", 0, 0, 0, 2**63), "timestamp_ms", ValueError),
    ],
)
def test_put_out_of_range_names_argument(tmp_path: Path, args: tuple, name: str, exc: type) -> None:
    f = make(tmp_path)
    with pytest.raises(exc, match=name):
        f.put(*args)
    assert f.count == 0
    with pytest.raises(exc, match=name):  # the store's check before it makes a file
        check_entry_args(*args[1:])


def test_put_key_type_checked(tmp_path: Path) -> None:
    f = make(tmp_path)
    for bad in (1, None, ["k"], bytearray(b"k")):
        with pytest.raises(TypeError, match="key"):
            f.put(bad, 0, 0, 0, 0)  # type: ignore[arg-type]


def test_query_argument_errors(tmp_path: Path) -> None:
    f = make(tmp_path)
    with pytest.raises(ValueError, match="begin_ms"):
        f.query("k", 10, 9, 1)
    with pytest.raises(ValueError, match="max_count"):
        f.query("k", 0, 1, 0)
    with pytest.raises(ValueError, match="max_count"):
        f.query("k", 0, 1, -3)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"slots": -1}, "slots"),
        ({"slots": 2**32}, "slots"),
        ({"capacity": 2**40}, "capacity"),
        ({"begin_ms": -1}, "begin_ms"),
        ({"begin_ms": 2**63}, "begin_ms"),
    ],
)
def test_create_out_of_range_names_argument(tmp_path: Path, kwargs: dict, name: str) -> None:
    """ValueError naming the argument (was an OverflowError from the
    conversion, naming nothing)."""
    args = {"slots": 16, "capacity": 10, "begin_ms": 0, **kwargs}
    with pytest.raises(ValueError, match=name):
        IndexFile.create(tmp_path / "z.tix", **args)
    assert not (tmp_path / "z.tix").exists()


def test_numpy_integers_are_ints(tmp_path: Path) -> None:
    """numpy integer scalars (what a column yields) are taken wherever an
    int is; floats and strings are not."""
    f = IndexFile.create(tmp_path / "n.tix", slots=np.uint32(16), capacity=np.int64(10), begin_ms=np.int64(0))
    assert f.put("k", np.uint32(1), np.int64(2), np.uint16(3), np.int64(4))
    assert f.query("k", np.int64(0), np.uint64(10), np.int8(5)) == [Entry(1, 2, 3, 4)]
    for bad in (1.0, "1"):
        with pytest.raises(TypeError, match="offset"):
            f.put("k", 1, bad, 3, 4)  # type: ignore[arg-type]
    # max_count past any 64-bit range means "all" (it raised OverflowError)
    assert f.query("k", 0, FOREVER, 2**64) == [Entry(1, 2, 3, 4)]
    assert f.put_batch([], [], [], [], []) == 0  # empty lists (numpy makes them float64)


def test_a_bool_is_not_taken_for_an_int(tmp_path: Path) -> None:
    """True is an int to Python; as a time or an offset it is a mistake.
    put() stored it as 1 while the store's query() refused it."""
    f = IndexFile.create(tmp_path / "b.tix", slots=16, capacity=10, begin_ms=0)
    for args, name in (
        ((1, 2, 3, True), "timestamp_ms"),
        ((True, 2, 3, 4), "queue_id"),
        ((1, False, 3, 4), "offset"),
        ((1, 2, True, 4), "size"),
    ):
        with pytest.raises(TypeError, match=f"{name} must be an int, not bool"):
            f.put("k", *args)
    with pytest.raises(TypeError, match="max_count must be an int, not bool"):
        f.query("k", 0, 10, True)
    assert f.count == 0


@pytest.mark.parametrize(("slots", "capacity", "name"), [(0, 10, "slots"), (10, 0, "capacity")])
def test_create_rejects_zero_geometry(tmp_path: Path, slots: int, capacity: int, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        IndexFile.create(tmp_path / "z.tix", slots=slots, capacity=capacity, begin_ms=0)
    assert not (tmp_path / "z.tix").exists()


def test_create_refuses_existing_path(tmp_path: Path) -> None:
    (tmp_path / "f.tix").write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        make(tmp_path)
    assert (tmp_path / "f.tix").read_bytes() == b"precious"


def test_open_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        IndexFile.open(tmp_path / "nope.tix")


def test_pathlike_accepted(tmp_path: Path) -> None:
    f = IndexFile.create(tmp_path / "p.tix", slots=4, capacity=4, begin_ms=0)
    f.close()
    assert IndexFile.open(os.fspath(tmp_path / "p.tix")).count == 0


def test_second_writer_locked_out(tmp_path: Path) -> None:
    f = make(tmp_path)
    with pytest.raises(StoreLockedError):
        IndexFile.open(f.path)
    f.close()
    IndexFile.open(f.path).close()


def test_close_then_reopen_keeps_everything(tmp_path: Path) -> None:
    f = make(tmp_path, capacity=100)
    for i in range(60):
        f.put(f"k{i % 7}", i, i * 10, i, 1000 + i)
    before = {k: f.query(f"k{k}", 0, FOREVER, 100) for k in range(7)}
    f.close()
    assert f.closed
    with pytest.raises(ValueError, match="closed"):
        f.put("k", 0, 0, 0, 0)
    g = IndexFile.open(f.path)
    assert not g.recovered
    assert (g.count, g.used_slots, g.end_ms, g.begin_ms) == (60, f.used_slots, 1059, 1000)
    assert {k: g.query(f"k{k}", 0, FOREVER, 100) for k in range(7)} == before
    assert g.verify() == 60
    # and it keeps taking puts after reopen
    assert g.put("k0", 0, 0, 0, 5000)
    assert g.query("k0", 0, FOREVER, 1)[0].timestamp_ms == 5000


def test_context_manager_closes(tmp_path: Path) -> None:
    with make(tmp_path) as f:
        f.put("k", 0, 0, 0, 0)
    assert f.closed
    assert IndexFile.open(tmp_path / "f.tix").count == 1


def test_put_batch_numpy_and_sequences(tmp_path: Path) -> None:
    f = make(tmp_path, slots=64, capacity=1000)
    n = 300
    keys = [f"key-{i % 50}" for i in range(n)]
    written = f.put_batch(
        keys,
        np.arange(n, dtype=np.uint32) % 4,
        np.arange(n, dtype=np.int64) * 100,
        np.full(n, 7, dtype=np.int16),
        list(range(1000, 1000 + n)),
    )
    assert written == n and f.count == n
    got = f.query("key-3", 0, FOREVER, 100)
    assert [e.offset for e in got] == [i * 100 for i in range(253, -1, -50)]
    assert all(e.size == 7 for e in got)


def test_put_batch_fills_a_prefix(tmp_path: Path) -> None:
    f = make(tmp_path, capacity=10)
    f.put("first", 0, 0, 0, 0)
    n = f.put_batch([b"a"] * 20, [1] * 20, list(range(20)), [1] * 20, [5] * 20)
    assert n == 9 and f.count == 10
    assert [e.offset for e in f.query(b"a", 0, FOREVER, 100)] == list(range(8, -1, -1))
    assert f.put_batch(["b"], [0], [0], [0], [0]) == 0


@pytest.mark.parametrize(
    ("column", "bad", "exc", "match"),
    [
        (1, np.array([-1, 0]), ValueError, r"queue_ids\[0\] = -1 is negative"),
        (1, np.array([2**32, 0], dtype=np.int64), ValueError, r"queue_ids\[0\]"),
        (2, np.array([0, -5]), ValueError, r"offsets\[1\] = -5"),
        (2, np.array([0, 2**63], dtype=np.uint64), ValueError, r"offsets\[1\]"),
        (3, np.array([0.5, 1.0]), TypeError, "sizes"),
        (4, np.array([[1, 2]]), ValueError, "timestamps_ms"),
        (4, np.array([1, 2, 3]), ValueError, "timestamps_ms"),
    ],
)
def test_put_batch_bad_columns_write_nothing(
    tmp_path: Path, column: int, bad: np.ndarray, exc: type, match: str
) -> None:
    f = make(tmp_path)
    cols: list = [["a", "b"], [0, 0], [0, 0], [0, 0], [0, 0]]
    cols[column] = bad
    with pytest.raises(exc, match=match):
        f.put_batch(*cols)
    assert f.count == 0


def test_put_batch_key_errors(tmp_path: Path) -> None:
    f = make(tmp_path)
    with pytest.raises(TypeError, match="single key"):
        f.put_batch("abc", [0] * 3, [0] * 3, [0] * 3, [0] * 3)
    with pytest.raises(TypeError, match=r"keys\[1\]"):
        f.put_batch(["a", 5], [0, 0], [0, 0], [0, 0], [0, 0])
    assert f.count == 0


def test_a_key_that_is_not_valid_text_is_a_value_error_naming_it(tmp_path: Path) -> None:
    """A str with a lone surrogate has no UTF-8 to hash: it raised a bare
    UnicodeEncodeError naming no argument (put, query), or a TypeError
    though its type is right (put_batch)."""
    f = make(tmp_path)
    with pytest.raises(ValueError, match="key is not valid text"):
        f.put("\ud800", 0, 0, 1, 1)
    with pytest.raises(ValueError, match="key is not valid text"):
        f.query("\udc00x", 0, 10, 5)
    for keys in (["a", "\ud800"], ("a", "\ud800"), iter(["a", "\ud800"])):
        with pytest.raises(ValueError, match=r"keys\[1\]: key is not valid text"):
            f.put_batch(keys, [0, 0], [0, 0], [0, 0], [0, 0])
    assert f.count == 0


def test_four_threads_putting_at_once(tmp_path: Path) -> None:
    f = make(tmp_path, slots=97, capacity=40_000)
    per_thread = 5_000
    start = threading.Barrier(4)

    def writer(t: int) -> None:
        start.wait()
        for i in range(per_thread):
            if i % 2:
                assert f.put(f"t{t}-k{i % 100}", t, i, 1, i)
            else:
                assert f.put_batch([f"t{t}-k{i % 100}"], [t], [i], [1], [i]) == 1
            if i % 500 == 0:
                f.query(f"t{t}-k0", 0, FOREVER, 5)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert f.count == 4 * per_thread
    for t in range(4):
        for k in range(100):
            got = f.query(f"t{t}-k{k}", 0, FOREVER, 1000)
            assert sorted(e.offset for e in got) == list(range(k, per_thread, 100))
    assert f.verify() == 4 * per_thread


def test_file_cut_short_gives_error_not_signal(tmp_path: Path) -> None:
    f = make(tmp_path, slots=1024, capacity=100_000)
    f.put("k", 0, 0, 0, 0)
    os.truncate(f.path, 100)
    for call in (
        lambda: f.put("k", 0, 1, 0, 0),
        lambda: f.query("k", 0, 10, 1),
        f.flush,
        lambda: f.put_batch(["k"], [0], [0], [0], [0]),
    ):
        with pytest.raises(CorruptFileError, match="cut short"):
            call()


def test_sealed_file_refuses_puts_and_reopens_sealed(tmp_path: Path) -> None:
    f = make(tmp_path)
    f.put("k", 0, 1, 1, 1000)
    s = f.seal(tmp_path / "f.sealed")
    assert f.sealed and s.count == 1
    assert f.put("k", 0, 2, 1, 1001) is False
    assert f.put_batch(["k"], [0], [2], [1], [1001]) == 0
    f.close()
    g = IndexFile.open(tmp_path / "f.tix")
    assert g.sealed and g.count == 1
    assert g.put("k", 0, 2, 1, 1001) is False


@contextlib.contextmanager
def ticking() -> Iterator[list[float]]:
    """The gaps of a thread that ticks every millisecond while the block
    runs (it starts 50 ms before): a block that holds the GIL shows as one
    gap as long as itself."""
    gaps: list[float] = []
    stop = threading.Event()

    def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            time.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    thread = threading.Thread(target=ticker)
    thread.start()
    time.sleep(0.05)
    try:
        yield gaps
    finally:
        stop.set()
        thread.join()


def test_reading_a_property_during_a_seal_does_not_stop_other_threads(tmp_path: Path) -> None:
    """The seal holds the file's lock with the GIL released; a property
    read in the meantime waits for the lock without the GIL, so the other
    Python threads run on (before, they all stood still until the seal was
    done). A liveness check, with a tenfold margin, not a speed figure."""
    n = 2_000_000
    f = IndexFile.create(tmp_path / "a.tix", slots=500_000, capacity=n, begin_ms=0)
    offsets = np.arange(n, dtype=np.uint64)
    zeros = np.zeros(n, np.uint32)
    assert f.put_batch([b"k%d" % (i % 300_000) for i in range(n)], zeros, offsets, zeros, offsets) == n
    f.flush()
    with ticking() as gaps:
        sealing = threading.Thread(target=f.seal, args=(tmp_path / "a.sealed",))
        started = time.perf_counter()
        sealing.start()
        time.sleep(0.002)
        count = f.count  # waits for the seal's lock
        sealing.join()
        seal_s = time.perf_counter() - started
    assert count == n and f.sealed
    assert max(gaps) < seal_s / 2, (max(gaps), seal_s)


@pytest.mark.parametrize(
    ("column", "values", "error", "message"),
    [
        ("offsets", [2**64], OverflowError, r"offsets\[0\] = 18446744073709551616 does not fit in 64 bits"),
        ("queue_ids", [1, 2**70], OverflowError, r"queue_ids\[1\] = .* does not fit in 64 bits"),
        ("sizes", [5, -1, 2**63], ValueError, r"sizes\[1\] = -1 is negative"),
        ("timestamps_ms", [1.5], TypeError, "must hold integers"),
    ],
)
def test_put_batch_names_a_python_int_out_of_range(
    tmp_path: Path, column: str, values: list[object], error: type[Exception], message: str
) -> None:
    """A list of Python ints that fits no 64-bit type is out of range (as
    API.md has it: ValueError or OverflowError), naming the value; not a
    TypeError about the dtype numpy fell back to."""
    f = make(tmp_path)
    n = len(values)
    columns: dict[str, object] = {
        "queue_ids": [0] * n,
        "offsets": [0] * n,
        "sizes": [0] * n,
        "timestamps_ms": [0] * n,
    }
    columns[column] = values
    with pytest.raises(error, match=message):
        f.put_batch(
            ["k"] * n, columns["queue_ids"], columns["offsets"], columns["sizes"], columns["timestamps_ms"]
        )
    assert f.count == 0


def test_a_hot_keys_query_does_not_stop_other_threads(tmp_path: Path) -> None:
    """A key with two million entries: its query walks (unsealed) or scans
    (sealed) all of them, and does so without the GIL, so other Python
    threads run on. A liveness check with a wide margin, not a speed figure."""
    n = 2_000_000
    f = IndexFile.create(tmp_path / "a.tix", slots=1024, capacity=n, begin_ms=0)
    offsets = np.arange(n, dtype=np.uint64)
    zeros = np.zeros(n, np.uint32)
    assert f.put_batch([b"hot"] * n, zeros, offsets, zeros, offsets) == n
    f.flush()
    sealed = f.seal(tmp_path / "a.sealed")
    for query in (f.query, sealed.query):
        with ticking() as gaps:
            started = time.perf_counter()
            got = query("hot", 0, FOREVER, 1)
            took = time.perf_counter() - started
        assert [e.offset for e in got] == [n - 1]
        assert max(gaps) < took / 2, (max(gaps), took)
