"""A broker-like child process for crash and signal tests.

Usage: broker_child.py DIR REMOTE_URL COUNT [--then shutdown|wait|exit]

Puts COUNT messages, printing each offset once its put returned (the
acknowledgement the parent records), then shuts down (exit 0 if clean, 1
if not), waits for a signal, or (``exit``) returns without shutdown(), so
the interpreter ends while the store's background work still runs.
Settings come from the environment: TIX_CAPACITY (entries per file),
TIX_PART_SIZE (multipart part size and threshold), TIX_SHUTDOWN_S,
TIX_RETENTION_S (retention, which then deletes at its first pass, as the
tests' ``prompt_retention`` fixture makes it).
"""

import os
import sys
import time

import tieredindex.store
from tieredindex import IndexStore, RetryPolicy, StoreConfig


def main() -> int:
    directory, remote_url, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    then = sys.argv[5] if len(sys.argv) > 5 else "shutdown"
    retention_s = os.environ.get("TIX_RETENTION_S")
    if retention_s:
        tieredindex.store.RETENTION_CONFIRM_S = 0.0
    config = StoreConfig(
        slots=16,
        capacity=int(os.environ.get("TIX_CAPACITY", "40")),
        flush_interval_s=0.05,
        reconcile_interval_s=0.05,
        shutdown_timeout_s=float(os.environ.get("TIX_SHUTDOWN_S", "20")),
        retry=RetryPolicy(attempts=5, base_delay_s=0.01, max_delay_s=0.1, deadline_s=5.0),
        part_size=int(os.environ.get("TIX_PART_SIZE", str(8 << 20))),
        multipart_threshold=int(os.environ.get("TIX_PART_SIZE", str(8 << 20))),
        retention_s=float(retention_s) if retention_s else None,
    )
    store = IndexStore(directory, remote_url, config)
    store.start()
    store.install_signal_handlers()
    out = sys.stdout
    for i in range(count):
        store.put("orders", f"k{i % 13}", queue_id=i % 3, offset=i, size=10, timestamp_ms=1_000 + i)
        out.write(f"{i}\n")
        out.flush()
    out.write("done\n")
    out.flush()
    if then == "wait":
        while True:
            time.sleep(0.1)
    if then == "exit":
        return 0
    report = store.shutdown()
    return 0 if report.clean else 1


if __name__ == "__main__":
    sys.exit(main())
