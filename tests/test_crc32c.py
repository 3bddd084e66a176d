"""CRC-32C: check values, incremental use, buffer kinds, rejected inputs."""

import array
import inspect
import sys
import threading
import time

import numpy as np
import pytest

from tieredindex import crc32c

# RFC 3720 (iSCSI) appendix B.4 test vectors.
RFC3720 = [
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
]


def test_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0


@pytest.mark.parametrize(("data", "expected"), RFC3720)
def test_rfc3720_vectors(data: bytes, expected: int) -> None:
    assert crc32c(data) == expected


def test_incremental_equals_whole() -> None:
    data = np.random.default_rng(7).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    for split in (0, 1, 3, 4096, 65_536, 299_999, 300_000):
        a, b = data[:split], data[split:]
        assert crc32c(b, crc32c(a)) == crc32c(data), split
    assert crc32c(b"6789", crc32c(b"12345")) == 0xE3069283


def test_large_buffer_released_gil_path_matches_small_chunks() -> None:
    data = bytes(range(256)) * 4096  # 1 MiB, above the GIL-release threshold
    running = 0
    for i in range(0, len(data), 1000):
        running = crc32c(data[i : i + 1000], running)
    assert crc32c(data) == running


def test_large_buffers_are_hashed_with_the_gil_released() -> None:
    """API.md: large buffers are hashed with the GIL released. With a
    switch interval of minutes, another thread gets the GIL only when this
    one lets it go: it counts only if crc32c does."""
    data = bytes(16 << 20)
    ticks = 0
    stop = False

    def tick() -> None:
        nonlocal ticks
        while not stop:
            ticks += 1
            time.sleep(0)  # lets the GIL go

    thread = threading.Thread(target=tick)
    thread.start()
    interval = sys.getswitchinterval()
    while ticks == 0:
        time.sleep(0.001)
    sys.setswitchinterval(300.0)
    try:
        time.sleep(0.01)  # a wait begun under the old interval ends
        before = ticks
        for _ in range(50):
            crc32c(data)
        during = ticks - before
    finally:
        sys.setswitchinterval(interval)
        stop = True
        thread.join()
    assert during >= 10, during


def test_the_signature_is_the_documented_one() -> None:
    """API.md: ``crc32c(data, value=0) -> int``."""
    params = inspect.signature(crc32c).parameters
    assert list(params) == ["data", "value"]
    assert params["value"].default == 0


def test_buffer_kinds_agree() -> None:
    raw = b"the quick brown fox jumps over the lazy dog" * 10
    expected = crc32c(raw)
    assert crc32c(bytearray(raw)) == expected
    assert crc32c(memoryview(raw)) == expected
    assert crc32c(np.frombuffer(raw, dtype=np.uint8)) == expected
    ints = np.arange(1000, dtype=np.int64)
    assert crc32c(ints) == crc32c(ints.tobytes())
    arr = array.array("I", range(100))
    assert crc32c(arr) == crc32c(arr.tobytes())


def test_non_contiguous_buffer_rejected() -> None:
    strided = np.arange(100, dtype=np.uint8)[::2]
    with pytest.raises(ValueError, match="contiguous"):
        crc32c(strided)
    with pytest.raises(ValueError, match="contiguous"):
        crc32c(memoryview(b"abcdef")[::2])


@pytest.mark.parametrize("bad", ["text", 12, None, [1, 2, 3], 1.5])
def test_non_buffer_rejected_with_type_error(bad: object) -> None:
    with pytest.raises(TypeError):
        crc32c(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [-1, 2**32, 2**64])
def test_bad_seed_value_rejected(value: int) -> None:
    with pytest.raises(ValueError, match="value"):
        crc32c(b"x", value)


@pytest.mark.parametrize("value", [True, False])
def test_a_bool_seed_is_refused(value: bool) -> None:
    """True is an int to Python, but as a CRC to continue it is a mistake:
    it was taken as 1."""
    with pytest.raises(TypeError, match="value must be an int, not bool"):
        crc32c(b"x", value)
