"""Prometheus exposition of a store's metrics (the ``prometheus`` extra).

    pip install 'tieredindex[prometheus]'

.. code-block:: python

    from prometheus_client import start_http_server
    from tieredindex.prometheus import register_store

    register_store(store)          # on the default registry
    start_http_server(9108)        # /metrics now has tieredindex_* series

Each scrape reads :meth:`IndexStore.metrics` once; nothing is copied in
between, so the figures are never stale.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

try:
    from prometheus_client.core import (
        REGISTRY,
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector, CollectorRegistry
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "tieredindex.prometheus needs prometheus-client: pip install 'tieredindex[prometheus]'"
    ) from exc

from tieredindex.states import FileState

if TYPE_CHECKING:
    from tieredindex.store import IndexStore

PREFIX = "tieredindex"


class StoreCollector(Collector):
    """Collects one store's metrics; ``store_label`` tells stores apart."""

    def __init__(self, store: IndexStore, store_label: str | None = None) -> None:
        self.store = store
        self.label = store_label if store_label is not None else str(store.directory)

    def collect(self) -> Iterable[Metric]:
        m = self.store.metrics()
        labels = ["store"]
        values = [self.label]

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)
            family.add_metric(values, value)
            return family

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)
            family.add_metric(values, value)
            return family

        yield counter("entries_put", "Index entries written by put (one per key).", m.entries_put)
        yield counter("state_changes", "File state transitions recorded in the journal.", m.state_changes)
        yield counter("uploads", "Files uploaded, verified and made visible.", m.uploads)
        yield counter("upload_bytes", "Bytes of uploaded, verified files.", m.upload_bytes)
        yield counter("retries", "Remote operations retried after a transient failure.", m.retries)
        yield counter("failures", "Errors recorded by the store.", m.failures)
        yield counter(
            "verification_failures",
            "Files or objects that failed a size or checksum check.",
            m.verification_failures,
        )
        latency = HistogramMetricFamily(
            f"{PREFIX}_upload_latency_seconds",
            "From the first upload intent to the manifest record.",
            labels=labels,
        )
        latency.add_metric(
            values,
            buckets=[(bound, float(n)) for bound, n in m.upload_latency_buckets.items()],
            sum_value=m.upload_latency_s_sum,
        )
        yield latency
        files = GaugeMetricFamily(f"{PREFIX}_files", "Index files by state.", labels=[*labels, "state"])
        for state in FileState:
            files.add_metric([*values, str(state)], m.files_by_state.get(str(state), 0))
        yield files
        yield gauge("pending_files", "Files whose entries are not yet in the remote store.", m.pending_files)
        yield gauge("pending_bytes", "Bytes of sealed files waiting for upload.", m.pending_bytes)
        yield gauge(
            "oldest_pending_age_seconds",
            "Age of the oldest pending file (0 when none).",
            m.oldest_pending_age_s or 0.0,
        )


def register_store(
    store: IndexStore, registry: CollectorRegistry = REGISTRY, store_label: str | None = None
) -> StoreCollector:
    """Registers a collector of ``store``'s metrics on ``registry`` (the
    default one unless told) and returns it (``registry.unregister(it)``
    to stop)."""
    collector = StoreCollector(store, store_label)
    registry.register(collector)
    return collector
