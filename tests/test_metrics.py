"""store.metrics(), the state-change and retry log lines, and the
prometheus collector."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from tieredindex import IndexStore, crc32c, open_remote
from tieredindex.layout import DATA_PREFIX
from tieredindex.metrics import StoreMetrics

from store_helpers import FOREVER, SwitchableRemote, small_config


def fill(store: IndexStore, n: int, t0: int = 1_000) -> None:
    for i in range(n):
        store.put("orders", f"k{i % 5}", queue_id=0, offset=i, size=10, timestamp_ms=t0 + i)


def wait_for(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_metrics_before_start_are_zero(tmp_path: Path) -> None:
    store = IndexStore(tmp_path / "d", (tmp_path / "r").as_uri(), small_config())
    m = store.metrics()
    assert m.entries_put == 0 and m.files_by_state == {} and m.pending_files == 0
    assert m.oldest_pending_age_s is None


def test_counters_after_a_clean_run(tmp_path: Path, remote_url: str) -> None:
    store = IndexStore(tmp_path / "d", remote_url, small_config())
    store.start()
    fill(store, 120)  # capacity 50: 50 + 50 + 20
    store.put("orders", ["a", "b", "c"], queue_id=0, offset=999, size=1, timestamp_ms=5_000)
    assert store.metrics().entries_put == 123
    report = store.shutdown()
    assert report.clean
    m = store.metrics()  # still answers after shutdown
    assert m.entries_put == 123
    assert m.files_by_state == {"UPLOADED": 3}
    assert m.uploads == 3 and m.upload_latency_s_count == 3
    assert m.upload_bytes > 0 and m.upload_latency_s_sum > 0
    assert 0 < m.upload_latency_s_max <= m.upload_latency_s_sum
    assert m.upload_latency_buckets["+Inf"] == 3
    counts = list(m.upload_latency_buckets.values())
    assert counts == sorted(counts)  # cumulative
    assert m.pending_files == 0 and m.pending_bytes == 0 and m.oldest_pending_age_s is None
    assert m.failures == 0 and m.verification_failures == 0
    # ACTIVE, ROLLED, SEALED, UPLOADING, UPLOADED for each file.
    assert m.state_changes == 3 * 5
    assert set(m.as_dict()) >= {"entries_put", "files_by_state", "retries", "pending_bytes"}


def test_outage_shows_in_gauges_retries_and_failures(tmp_path: Path) -> None:
    remote = SwitchableRemote(open_remote((tmp_path / "r").as_uri()))
    store = IndexStore(tmp_path / "d", remote, small_config())
    store.start()
    wait_for(lambda: store.status().reconciled)
    remote.down.set()
    fill(store, 60)
    wait_for(lambda: store.metrics().pending_bytes > 0 and store.metrics().failures > 0)
    m = store.metrics()
    assert m.pending_files >= 1
    assert m.oldest_pending_age_s is not None and m.oldest_pending_age_s > 0
    assert m.retries > 0
    assert m.files_by_state.get("UPLOADING", 0) + m.files_by_state.get("SEALED", 0) >= 1
    remote.down.clear()
    assert store.shutdown(timeout_s=20).clean
    after = store.metrics()
    assert after.pending_files == 0 and after.uploads == 2


def test_verification_failures_are_counted(tmp_path: Path) -> None:
    remote_url = (tmp_path / "r").as_uri()
    with IndexStore(tmp_path / "d", remote_url, small_config()) as store:
        fill(store, 40)
    remote = open_remote(remote_url)
    [obj] = remote.list(DATA_PREFIX)
    bad = bytearray(remote.get(obj.key))
    for i in range(64, len(bad) - 100, 5):
        bad[i] ^= 0x20
    remote.delete(obj.key)
    remote.put_if_absent(obj.key, bytes(bad), size=len(bad), crc32c=crc32c(bytes(bad)))
    fresh = IndexStore(tmp_path / "fresh", remote_url, small_config())
    fresh.start()
    assert fresh.query("orders", "k1", 0, FOREVER) == []
    assert fresh.metrics().verification_failures == 1
    assert not fresh.verify(deep=True).ok
    assert fresh.metrics().verification_failures == 2
    fresh.shutdown()


def test_one_log_line_per_state_change(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tieredindex")
    store = IndexStore(tmp_path / "d", (tmp_path / "r").as_uri(), small_config())
    store.start()
    fill(store, 30)
    assert store.shutdown().clean
    [file_id] = [r.file_id for r in journal_records(tmp_path / "d")]
    changes = [r.getMessage() for r in caplog.records if f"file {file_id}:" in r.getMessage()]
    assert changes == [
        f"file {file_id}: new, state ACTIVE",
        f"file {file_id}: ACTIVE -> ROLLED",
        f"file {file_id}: ROLLED -> SEALED, 30 entries, {changes[2].split(', ')[-1]}",
        f"file {file_id}: SEALED -> UPLOADING, attempt 1",
        f"file {file_id}: UPLOADING -> UPLOADED, attempt 1, 30 entries, {changes[4].split(', ')[-1]}",
    ]
    assert all(r.name.startswith("tieredindex") for r in caplog.records)


def journal_records(directory: Path) -> list:
    from tieredindex.localstatus import read_journal

    return read_journal(directory).records


def test_retries_and_failures_are_logged_without_credentials(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)

    class Leaky(SwitchableRemote):
        def _check(self) -> None:
            self.calls += 1
            if self.down.is_set():
                raise ConnectionError(
                    f"refused: https://x/?X-Amz-Signature=abc&aws_secret_access_key={secret}"
                )

    caplog.set_level(logging.INFO, logger="tieredindex")
    remote = Leaky(open_remote((tmp_path / "r").as_uri()))
    store = IndexStore(tmp_path / "d", remote, small_config())
    store.start()
    wait_for(lambda: store.status().reconciled)
    remote.down.set()
    fill(store, 60)

    def failed_uploads() -> list[str]:
        return [m for r in caplog.records if "failed:" in (m := r.getMessage()) and "file " in m]

    # An upload's failure, not only the claim of the prefix (which follows the first put).
    wait_for(lambda: store.metrics().failures > 0 and bool(failed_uploads()))
    remote.down.clear()
    assert store.shutdown(timeout_s=20).clean
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "retrying" in text and "attempt" in text
    failed = failed_uploads()
    assert failed and all("attempt" in line for line in failed)
    assert secret not in text and "abc&" not in text


def test_metrics_are_thread_safe() -> None:
    m = StoreMetrics()

    def work() -> None:
        for _ in range(10_000):
            m.add_entries(1)
            m.add_retry()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = m.snapshot()
    assert snap.entries_put == 40_000 and snap.retries == 40_000


def test_prometheus_collector(tmp_path: Path) -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    from tieredindex.prometheus import register_store

    registry = prometheus_client.CollectorRegistry()
    store = IndexStore(tmp_path / "d", (tmp_path / "r").as_uri(), small_config())
    store.start()
    register_store(store, registry, store_label="broker-1")
    fill(store, 60)
    assert store.shutdown().clean
    text = prometheus_client.generate_latest(registry).decode()
    assert 'tieredindex_entries_put_total{store="broker-1"} 60.0' in text
    assert 'tieredindex_files{state="UPLOADED",store="broker-1"} 2.0' in text
    assert 'tieredindex_upload_latency_seconds_count{store="broker-1"} 2.0' in text
    for name in ("retries_total", "failures_total", "pending_bytes", "oldest_pending_age_seconds"):
        assert f"tieredindex_{name}{{" in text
