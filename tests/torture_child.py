"""The torture workload: a store in this process, puts from several threads,
queries, flushes, rolls, and shutdowns followed by restarts, until killed.

Usage: torture_child.py DIR REMOTE_URL SEED

Output lines (one writer at a time, so their order is the truth):
  A <tid> <seq>        the put of (tid, seq) returned
  FS                   a flush() starts
  FE <file>:<count>... the flush returned; unsealed files and their counts
  R                    the store was shut down and a new one started
Entries encode their identity (see `expected_entry`), so the parent can
tell a true entry from anything else.
"""

from __future__ import annotations

import os
import random
import sys
import threading

from tieredindex import IndexStore, RetryPolicy, StoreConfig

THREADS = 3
KEYS = 17


def expected_entry(tid: int, seq: int) -> tuple[str, tuple[int, int, int, int]]:
    """(key, (queue_id, offset, size, timestamp_ms)) of put (tid, seq)."""
    return f"k{seq % KEYS}", (tid, tid * 1_000_000_000 + seq, seq % 1000, 1_000_000 + 3 * seq + tid)


def config() -> StoreConfig:
    return StoreConfig(
        slots=32,
        capacity=int(os.environ.get("TIX_CAPACITY", "300")),
        flush_interval_s=0.02,
        reconcile_interval_s=0.02,
        max_file_age_s=0.5,
        shutdown_timeout_s=30.0,
        retry=RetryPolicy(attempts=6, base_delay_s=0.01, max_delay_s=0.2, deadline_s=10.0),
        part_size=5 << 20,
        multipart_threshold=5 << 20,
    )


def main() -> None:
    directory, remote_url, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = random.Random(seed)
    out_lock = threading.Lock()

    def emit(line: str) -> None:
        with out_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    seqs = [0] * THREADS
    while True:
        store = IndexStore(directory, remote_url, config())
        store.start()
        stop = threading.Event()

        def writer(tid: int, store: IndexStore = store, stop: threading.Event = stop) -> None:
            local = random.Random(seed * 31 + tid)
            while not stop.is_set():
                seq = seqs[tid]
                key, (queue_id, offset, size, ts) = expected_entry(tid, seq)
                store.put("t", key, queue_id=queue_id, offset=offset, size=size, timestamp_ms=ts)
                seqs[tid] = seq + 1
                emit(f"A {tid} {seq}")
                if local.random() < 0.01:
                    store.query("t", key, 0, 2**63 - 1, 5)

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(THREADS)]
        for t in threads:
            t.start()
        for _ in range(rng.randrange(20, 200)):
            op = rng.random()
            if op < 0.3:
                emit("FS")
                store.flush()
                counts = " ".join(
                    f"{fid}:{f.count}" for fid, f in list(store._unsealed.items()) if not f.closed
                )
                emit(f"FE {counts}")
            elif op < 0.4:
                store.seal()
            else:
                store.query("t", f"k{rng.randrange(KEYS)}", 0, 2**63 - 1, 10)
            threading.Event().wait(rng.random() * 0.01)
        stop.set()
        for t in threads:
            t.join()
        store.shutdown()
        emit("R")


if __name__ == "__main__":
    main()
