"""S3 fault injection: the store behind a proxy that answers 500 and 503
SlowDown, resets connections mid-body, stalls past the read timeout,
truncates responses, spikes latency, and goes dark for 30 s. Every upload
completes once the remote is healthy, no object is ever wrong, and shutdown
keeps its deadline."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tieredindex import IndexStore, RetryPolicy
from tieredindex.layout import DATA_PREFIX

from netproxy import NetProxy
from store_helpers import FOREVER, small_config

OUTAGE_S = float(os.environ.get("TIX_OUTAGE_S", "30"))
FAULTS = {"500": 0.04, "503": 0.04, "reset": 0.04, "stall": 0.02, "truncate": 0.04, "spike": 0.02}  # 20 %


def faulty_config(endpoint: str, **overrides: object) -> object:
    settings: dict[str, object] = dict(
        endpoint_url=endpoint,
        read_timeout_s=1.0,
        connect_timeout_s=1.0,
        retry=RetryPolicy(attempts=10, base_delay_s=0.02, max_delay_s=0.5, deadline_s=15.0),
    )
    settings.update(overrides)
    return small_config(**settings)


@pytest.mark.slow
def test_uploads_survive_faults_and_an_outage(tmp_path: Path, moto_server: object) -> None:
    server = moto_server
    url = f"s3://{server.bucket}/faults-{time.monotonic_ns()}/"  # type: ignore[attr-defined]
    with NetProxy(server.endpoint_url, faults=FAULTS, seed=5, stall_s=2.0, spike_s=0.3) as proxy:  # type: ignore[attr-defined]
        store = IndexStore(tmp_path / "d", url, faulty_config(proxy.endpoint_url))
        store.start()
        model: dict[str, set[tuple[int, int, int, int]]] = {}
        for i in range(1500):
            key = f"k{i % 9}"
            store.put("t", key, queue_id=i % 4, offset=i, size=i + 1, timestamp_ms=1_000 + i)
            model.setdefault(key, set()).add((i % 4, i, i + 1, 1_000 + i))
            if i == 900:
                proxy.outage(OUTAGE_S)
                outage_ends = time.monotonic() + OUTAGE_S
        # Shutdown during the outage keeps its deadline and loses nothing.
        started = time.monotonic()
        report = store.shutdown(timeout_s=3)
        assert time.monotonic() - started < 3 + 1.5
        assert not report.clean and report.pending
        # Once the remote is healthy again (still 20 % faults), a restart
        # finishes every upload.
        time.sleep(max(0.0, outage_ends - time.monotonic()) + 0.5)
        again = IndexStore(tmp_path / "d", url, faulty_config(proxy.endpoint_url))
        again.start()
        final = again.shutdown(timeout_s=120)
        assert final.clean, final
        counters = proxy.counters()
    injected = counters["faults"]
    assert sum(injected.values()) >= 15, injected
    # From a healthy link: every object verifies byte for byte, and a fresh
    # store answers every query from the remote alone.
    fresh = IndexStore(tmp_path / "fresh", url, small_config(endpoint_url=server.endpoint_url))  # type: ignore[attr-defined]
    fresh.start()
    verdict = fresh.verify(deep=True)
    assert verdict.ok, verdict.problems
    assert verdict.checked_files == 30
    for key, entries in model.items():
        assert {tuple(e) for e in fresh.query("t", key, 0, FOREVER, 10_000)} == entries
    assert len(fresh.remote.list(DATA_PREFIX)) == 30
    fresh.shutdown()
