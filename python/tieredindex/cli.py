"""The `tieredindex` command line."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tieredindex import IndexFile, SealedIndex


def _demo(args: argparse.Namespace) -> int:
    """Writes, seals, verifies and queries one index file."""
    with tempfile.TemporaryDirectory(prefix="tieredindex-demo-") as tmp:
        work = Path(args.dir) if args.dir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        n = args.entries
        keys = [f"order-{i % 50_000}" for i in range(n)]
        started = time.perf_counter()
        with IndexFile.create(work / "demo.tix", slots=max(1, n // 4), capacity=n, begin_ms=0) as f:
            written = f.put_batch(
                keys,
                np.arange(n, dtype=np.uint32) % 8,
                np.arange(n, dtype=np.int64) * 128,
                np.full(n, 128, dtype=np.uint32),
                np.arange(n, dtype=np.int64),
            )
            put_s = time.perf_counter() - started
            f.flush()
            sealed = f.seal(work / "demo.sealed")
        sealed.verify()
        remote = SealedIndex.open((work / "demo.sealed").read_bytes())
        hits = remote.query("order-42", 0, 2**63 - 1, 5)
        print(f"indexed {written:,} entries in {put_s:.3f} s ({written / put_s / 1e6:.1f} M/s)")
        print(f"sealed {sealed.size:,} bytes, crc32c 0x{sealed.crc32c:08x}, verified")
        print(f"newest entries for key 'order-42': {[tuple(h) for h in hits]}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tieredindex", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the main job on a local directory")
    demo.add_argument("--dir", help="keep the files here instead of a temporary folder")
    demo.add_argument("--entries", type=int, default=1_000_000, help="entries to index")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
