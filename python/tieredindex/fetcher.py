"""Reading uploaded index files back: ranged GETs, every block verified.

A query on a remote file costs the footer once (cached), then two ranged
reads: the slot record and the slot's run of entries, each widened to whole
16 KiB blocks and checked against the footer's block CRC32Cs. The footer
itself is checked against the manifest's size and whole-object CRC32C, so a
partial, replaced or corrupt object is never served.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from tieredindex._entry import Entry
from tieredindex._native import CorruptFileError, SealedFooter
from tieredindex.layout import ManifestRecord
from tieredindex.remote import Remote

T = TypeVar("T")

Caller = Callable[[Callable[[], bytes], str], bytes]
"""Runs a remote read under the store's retry policy: ``call(op, describe)``."""

TRAILER_LEN = 40
FIRST_TAIL_READ = 64 * 1024


class RemoteIndexFile:
    """One uploaded, manifest-listed index file, read by byte ranges."""

    def __init__(self, remote: Remote, record: ManifestRecord, call: Caller) -> None:
        self.remote = remote
        self.record = record
        self._call = call
        self._footer: SealedFooter | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return f"{self.remote.url.rstrip('/')}/{self.record.key}"

    def _read(self, start: int, end: int) -> bytes:
        key = self.record.key
        data = self._call(lambda: self.remote.get_range(key, start, end), f"read {key} [{start}, {end})")
        if len(data) != end - start:
            raise CorruptFileError(
                f"{self.name}: read bytes {start}..{end} but got {len(data)}: "
                f"the object is shorter than its recorded size {self.record.size}"
            )
        return data

    def footer(self) -> SealedFooter:
        with self._lock:
            if self._footer is None:
                self._footer = self._load_footer()
            return self._footer

    def _load_footer(self) -> SealedFooter:
        size = self.record.size
        tail_len = min(size, FIRST_TAIL_READ)
        tail = self._read(size - tail_len, size)
        need = SealedFooter.footer_len(tail[-TRAILER_LEN:], size, self.name)
        if need > len(tail):
            tail = self._read(size - need, size)
        footer = SealedFooter.parse(tail, size, self.name)
        if footer.crc32c != self.record.crc32c or footer.count != self.record.count:
            raise CorruptFileError(
                f"{self.name}: footer describes crc32c {footer.crc32c:#010x} and {footer.count} entries, "
                f"the manifest records {self.record.crc32c:#010x} and {self.record.count}"
            )
        return footer

    def query(self, key: bytes, begin_ms: int, end_ms: int, max_count: int) -> list[Entry]:
        footer = self.footer()
        start, end = footer.slot_span(key)
        run = footer.slot_run(start, self._read(start, end), key)
        if run[1] == 0:
            return []
        rstart, rend = footer.run_span(run)
        return footer.match_run(rstart, self._read(rstart, rend), run, key, begin_ms, end_ms, max_count)
