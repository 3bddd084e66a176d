"""What a long-lived store's journal costs: start(), idle CPU, status() and
shutdown() of a store whose journal holds N UPLOADED rows (a broker that
keeps its files for ever, ``retention_s=None``, has one row per file).

    python benches/journal_rows.py [N]          (default 50000; ~30 s)

The rows are copies of one real uploaded file's row under new ids, so the
store opens a valid journal. The anchor beside each figure is the same
store with one row, measured in the same run.
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tieredindex import IndexStore, StoreConfig
from tieredindex.journal import CHECKED_COLUMNS, _row_crc

CONFIG = StoreConfig(slots=16, capacity=32)
IDLE_S = 5.0


def _with_crc(columns: list[str], row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A copied row with its own checksum (the journal checks each at open)."""
    values = dict(zip(columns, row, strict=True))
    values["fields_crc"] = _row_crc(values[c] for c in CHECKED_COLUMNS)
    return tuple(values[c] for c in columns)


def make_store(root: Path, rows: int) -> tuple[Path, str]:
    """A store directory whose journal holds ``rows`` UPLOADED rows."""
    directory, url = root / "local", (root / "remote").as_uri()
    store = IndexStore(directory, url, CONFIG)
    store.start()
    store.put("t", "k", queue_id=0, offset=0, size=1, timestamp_ms=1_000)
    assert store.shutdown().clean
    db = sqlite3.connect(directory / "journal.db")
    columns = [c[1] for c in db.execute("PRAGMA table_info(files)")]
    (row,) = db.execute("SELECT * FROM files WHERE state = 'UPLOADED'").fetchall()
    first = int(row[0][:13]) - rows
    copies = [_with_crc(columns, (f"{first + i:013d}-{i:08x}", *row[1:])) for i in range(rows - 1)]
    db.executemany(f"INSERT INTO files VALUES ({', '.join('?' * len(columns))})", copies)
    db.commit()
    db.close()
    return directory, url


def measure(directory: Path, url: str) -> dict[str, float]:
    store = IndexStore(directory, url, CONFIG)
    started = time.perf_counter()
    store.start()
    out = {"start() s": time.perf_counter() - started}
    cpu, wall = time.process_time(), time.perf_counter()
    time.sleep(IDLE_S)
    out["idle CPU %"] = 100 * (time.process_time() - cpu) / (time.perf_counter() - wall)
    started = time.perf_counter()
    store.status()
    out["status() ms"] = 1000 * (time.perf_counter() - started)
    started = time.perf_counter()
    assert store.shutdown().clean
    out["shutdown() s"] = time.perf_counter() - started
    return out


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    with tempfile.TemporaryDirectory(prefix="tix-journal-rows-") as tmp:
        anchor = measure(*make_store(Path(tmp) / "one", 1))
        many = measure(*make_store(Path(tmp) / "many", rows))
    print(f"{'':14} {'1 row':>10} {f'{rows:,} rows':>12}")
    for name in anchor:
        print(f"{name:14} {anchor[name]:10.3f} {many[name]:12.3f}")


if __name__ == "__main__":
    main()
