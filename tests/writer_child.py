"""A live writer in a child process, driven line by line on stdin, for the
tests of a reader beside it (tests/test_reader.py).

Usage: writer_child.py DIR REMOTE_URL

Commands, each answered by one line on stdout once done:

* ``put KEY OFFSET TIMESTAMP_MS`` -> ``ok``: one entry, topic ``t``
* ``seal`` -> ``ok``: rolls the current file and waits until nothing is
  left to upload (its manifest record is written)
* ``quit`` -> the shutdown's ``clean`` flag, then the process exits

Settings from the environment: TIX_RETENTION_S (retention, deleting at its
first pass: no five-minute confirmation), TIEREDINDEX_FAULTS (faults.py).
"""

import os
import sys
import time

import tieredindex.store
from tieredindex import IndexStore, RetryPolicy, StoreConfig


def main() -> int:
    directory, remote_url = sys.argv[1], sys.argv[2]
    retention = os.environ.get("TIX_RETENTION_S")
    tieredindex.store.RETENTION_CONFIRM_S = 0.0
    config = StoreConfig(
        slots=16,
        capacity=1000,
        flush_interval_s=0.05,
        reconcile_interval_s=0.05,
        shutdown_timeout_s=20.0,
        retention_s=float(retention) if retention else None,
        cache_bytes=0,  # queries of uploaded files go to the remote, as the reader's do
        retry=RetryPolicy(attempts=5, base_delay_s=0.01, max_delay_s=0.1, deadline_s=5.0),
        store_id="writer",
    )
    store = IndexStore(directory, remote_url, config)
    store.start()
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "put":
            key, offset, ts = words[1], int(words[2]), int(words[3])
            store.put("t", key, queue_id=0, offset=offset, size=1, timestamp_ms=ts)
        elif words[0] == "seal":
            store.seal()
            while store.status().pending_files:
                time.sleep(0.01)
        elif words[0] == "quit":
            print(store.shutdown().clean, flush=True)
            return 0
        print("ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
