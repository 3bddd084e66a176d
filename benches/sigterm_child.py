"""Child of the SIGTERM bench: a broker whose last file seals to ~64 MiB.

Usage: sigterm_child.py DIR REMOTE_URL ENTRIES SLOTS PART_SIZE CONCURRENCY

Opens an IndexStore on the S3 remote (endpoint from ``AWS_ENDPOINT_URL``:
the proxy), installs the signal handlers, puts ENTRIES messages through
``IndexStore.put`` into one file (capacity ENTRIES + 16, so nothing rolls
before the signal), flushes, prints ``ready`` and sleeps. SIGTERM then
seals, uploads, verifies and exits 0 if the shutdown was clean. The store's
log, and the start and end of every S3 call, go to stderr with wall-clock
timestamps, for the parent's breakdown.
"""

import logging
import os
import sys
import time

from tieredindex import IndexStore, StoreConfig


def main() -> None:
    directory, remote_url = sys.argv[1], sys.argv[2]
    entries, slots, part_size, concurrency = (int(a) for a in sys.argv[3:7])
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(created).6f %(threadName)s %(message)s"
    )
    config = StoreConfig(
        slots=slots,
        capacity=entries + 16,
        part_size=part_size,
        upload_concurrency=concurrency,
        shutdown_timeout_s=120.0,
        endpoint_url=os.environ["AWS_ENDPOINT_URL"],
        region="us-east-1",
    )
    store = IndexStore(directory, remote_url, config)
    trace = logging.getLogger("tieredindex.bench")
    events = store.remote.client.meta.events  # type: ignore[attr-defined]
    for when, name in (("before-call.s3", "start"), ("after-call.s3", "end")):
        events.register(
            when, lambda event_name, _n=name, **_: trace.info("%s %s", _n, event_name.split(".")[-1])
        )
    store.start()
    store.install_signal_handlers()
    put = store.put
    for i in range(entries):
        put("orders", f"k{i}", queue_id=i % 8, offset=i, size=100, timestamp_ms=1_000_000 + i)
    store.flush()
    print("ready", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
