"""Terminal output for the command line: tables, progress bars, units.

Plain text, no dependency: a progress bar redraws in place on a terminal
and prints a single line when it ends otherwise (logs and CI stay clean).
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections.abc import Sequence
from types import TracebackType
from typing import TextIO


def human_bytes(n: float) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def format_ms(timestamp_ms: int) -> str:
    """A millisecond timestamp as UTC ISO 8601 (milliseconds kept)."""
    try:
        when = dt.datetime.fromtimestamp(timestamp_ms / 1000, dt.UTC)
    except (OverflowError, ValueError, OSError):
        return "-"
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, numeric: Sequence[int] = ()) -> str:
    """A plain-text table; the columns in ``numeric`` are right-aligned."""
    cells = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        parts = [
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i]) for i, cell in enumerate(row)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def key_values(pairs: Sequence[tuple[str, object]]) -> str:
    """``name: value`` lines with the values aligned."""
    width = max((len(k) for k, _ in pairs), default=0)
    return "\n".join(f"{k + ':':<{width + 1}} {v}" for k, v in pairs)


class Progress:
    """A progress bar on ``stream`` (stderr by default).

    On a terminal it redraws at most ten times a second; elsewhere it prints
    one line when it is closed. ``enabled=False`` prints nothing.
    """

    WIDTH = 30

    def __init__(
        self, label: str, total: int, *, unit: str = "", stream: TextIO | None = None, enabled: bool = True
    ) -> None:
        self.label = label
        self.total = max(0, total)
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self.done = 0
        self.started = time.monotonic()
        self._drawn = 0.0
        self._closed = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(failed=exc_type is not None)

    def update(self, done: int, total: int | None = None) -> None:
        if total is not None:
            self.total = max(0, total)
        self.done = done
        if self.tty:
            now = time.monotonic()
            if now - self._drawn >= 0.1:
                self._drawn = now
                self._draw()

    def _render(self) -> str:
        frac = min(1.0, self.done / self.total) if self.total else 1.0
        filled = int(frac * self.WIDTH)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        elapsed = time.monotonic() - self.started
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.label} [{bar}] {frac:4.0%} {self.done:,}/{self.total:,}{unit} {elapsed:5.1f} s"

    def _draw(self) -> None:
        self.stream.write("\r" + self._render())
        self.stream.flush()

    def close(self, *, failed: bool = False) -> None:
        if self._closed or not self.enabled:
            self._closed = True
            return
        self._closed = True
        end = " (stopped)" if failed else ""
        if self.tty:
            self.stream.write("\r" + self._render() + end + "\n")
        else:
            self.stream.write(self._render() + end + "\n")
        self.stream.flush()
