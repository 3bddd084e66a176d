"""The broker-like process of ``tieredindex demo``.

    python -m tieredindex.demo_broker --dir DIR --remote URL --messages N ...

Embeds an :class:`IndexStore` the way a broker does: starts it, installs
its signal handlers, indexes ``--messages`` messages (one ``put`` each),
then keeps running until it is stopped with SIGTERM (or SIGINT, or its
stdin closes because the parent went away). The store's handler then shuts
down gracefully (seals the last, partly filled file and uploads it) and
exits 0 when the shutdown was clean, 1 when not.

Progress goes to stdout as JSON lines (``{"event": ...}``); logs go to
stderr. The messages are a pure function of their number (:func:`message`),
so the parent knows what every query must answer.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

from tieredindex.config import StoreConfig
from tieredindex.retry import RetryPolicy
from tieredindex.store import IndexStore

TOPIC = "orders"
QUEUES = 4


class Message(NamedTuple):
    key: str
    queue_id: int
    offset: int
    size: int
    timestamp_ms: int


def message(i: int, *, keys: int, base_ms: int) -> Message:
    """Message number ``i``: ``keys`` distinct order ids, ``QUEUES`` queues,
    ten messages per millisecond from ``base_ms``."""
    return Message(
        key=f"order-{i % keys}",
        queue_id=i % QUEUES,
        offset=(i // QUEUES) * 1024,
        size=256 + (i * 7919) % 768,
        timestamp_ms=base_ms + i // 10,
    )


def _emit(**event: Any) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _stop_when_orphaned() -> None:
    """SIGTERM ourselves when stdin closes (the parent is gone)."""
    try:  # the raw descriptor: a daemon thread blocked in a buffered read aborts the interpreter's exit
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGTERM)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tieredindex.demo_broker", description=__doc__)
    p.add_argument("--dir", required=True, help="the store directory")
    p.add_argument("--remote", required=True, help="remote URL (file:///... or s3://...)")
    p.add_argument("--endpoint-url", default=None, help="S3 endpoint")
    p.add_argument("--messages", type=int, required=True)
    p.add_argument("--keys", type=int, required=True)
    p.add_argument("--base-ms", type=int, required=True)
    p.add_argument("--slots", type=int, required=True)
    p.add_argument("--capacity", type=int, required=True)
    p.add_argument("--shutdown-timeout", type=float, default=30.0)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = StoreConfig(
        slots=args.slots,
        capacity=args.capacity,
        flush_interval_s=0.2,
        reconcile_interval_s=0.2,
        shutdown_timeout_s=args.shutdown_timeout,
        endpoint_url=args.endpoint_url,
        retry=RetryPolicy(attempts=6, base_delay_s=0.05, max_delay_s=1.0, deadline_s=20.0),
    )
    store = IndexStore(args.dir, args.remote, config)
    store.start()
    store.install_signal_handlers()
    threading.Thread(target=_stop_when_orphaned, name="orphan-watch", daemon=True).start()
    _emit(event="started", pid=os.getpid())
    step = max(1, args.messages // 200)
    started = time.perf_counter()
    for i in range(args.messages):
        m = message(i, keys=args.keys, base_ms=args.base_ms)
        store.put(
            TOPIC, m.key, queue_id=m.queue_id, offset=m.offset, size=m.size, timestamp_ms=m.timestamp_ms
        )
        if (i + 1) % step == 0:
            _emit(event="progress", done=i + 1)
    elapsed = time.perf_counter() - started
    _emit(event="ingested", entries=args.messages, seconds=elapsed, metrics=store.metrics().as_dict())
    while True:  # a broker serves until it is stopped; the store's handler exits
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
