"""Reading uploaded index files back: ranged GETs, every block verified.

A query on a remote file costs the footer once (cached), then two ranged
reads: the slot record and the slot's run of entries, each widened to whole
blocks (4 KiB by default) and checked against the footer's block CRC32Cs. The footer
itself is checked against the manifest's size and whole-object CRC32C, so a
partial, replaced or corrupt object is never served.

Bytes that fail a check are no verdict on the stored object by themselves:
a bit can flip on its way (no TCP or HTTP check catches every one) or a
response end early. A query that fails one is read again, footer included
and not from the cache; only when that second read fails too does the
``CorruptFileError`` reach the caller (who quarantines the file).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

from tieredindex._entry import Entry
from tieredindex._native import CorruptFileError, SealedFooter
from tieredindex.layout import ManifestRecord
from tieredindex.remote import Remote

T = TypeVar("T")
_LOG = logging.getLogger("tieredindex")

Caller = Callable[[Callable[[], bytes], str], bytes]
"""Runs a remote read under the store's retry policy: ``call(op, describe)``."""

TRAILER_LEN = 40
FIRST_TAIL_READ = 64 * 1024
FOOTER_CACHE_BYTES = 64 * 1024 * 1024
"""Footers kept in memory for all remote files together (a default file's
is about 650 KB, at 4 KiB blocks): a store with thousands of remote files would otherwise
keep every footer it ever read."""


class FooterCache:
    """The most recently used footers, up to ``max_bytes`` of them, by
    object key (one entry per object, so a deleted file's can be dropped)."""

    def __init__(self, max_bytes: int = FOOTER_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._footers: OrderedDict[str, tuple[int, SealedFooter, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str, crc32c: int) -> SealedFooter | None:
        """The footer of ``key``'s object whose CRC-32C is ``crc32c``: a
        record naming other bytes under the same key never gets this one."""
        with self._lock:
            hit = self._footers.get(key)
            if hit is None or hit[0] != crc32c:
                return None
            self._footers.move_to_end(key)
            return hit[1]

    def put(self, key: str, crc32c: int, footer: SealedFooter, nbytes: int) -> None:
        with self._lock:
            self._discard_locked(key)
            self._footers[key] = (crc32c, footer, nbytes)
            self._bytes += nbytes
            self._trim()

    def discard(self, key: str) -> None:
        """Forgets ``key``'s footer: its object was deleted (retention) or
        left the catalog. Kept, it would stay until the budget pushed it
        out: one per file for good, with small files."""
        with self._lock:
            self._discard_locked(key)

    def _discard_locked(self, key: str) -> None:
        old = self._footers.pop(key, None)
        if old is not None:
            self._bytes -= old[2]

    def clear(self) -> None:
        with self._lock:
            self._footers.clear()
            self._bytes = 0

    def resize(self, max_bytes: int) -> None:
        with self._lock:
            self.max_bytes = max_bytes
            self._trim()

    def _trim(self) -> None:
        while self._bytes > self.max_bytes and len(self._footers) > 1:  # the newest always stays
            _, (_, _, dropped) = self._footers.popitem(last=False)
            self._bytes -= dropped

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._footers)


class RemoteIndexFile:
    """One uploaded, manifest-listed index file, read by byte ranges."""

    def __init__(
        self, remote: Remote, record: ManifestRecord, call: Caller, footers: FooterCache | None = None
    ) -> None:
        self.remote = remote
        self.record = record
        self._call = call
        self._footers = footers if footers is not None else FooterCache()
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
            footer = self._footers.get(self.record.key, self.record.crc32c)
            if footer is None:
                footer = self._load_footer()
                self._footers.put(
                    self.record.key, self.record.crc32c, footer, self.record.size - footer.data_len
                )
            return footer

    def _read_footer_again(self) -> SealedFooter:
        """The footer read from the object, not the cache (which it replaces)."""
        with self._lock:
            footer = self._load_footer()
            self._footers.put(self.record.key, self.record.crc32c, footer, self.record.size - footer.data_len)
            return footer

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
        """The file's matches. Raises ``CorruptFileError`` only if a second,
        independent read (footer, slot, entries) fails a check too."""
        try:
            return self._query(self.footer(), key, begin_ms, end_ms, max_count)
        except CorruptFileError as exc:
            first = exc
        answer = self._query(self._read_footer_again(), key, begin_ms, end_ms, max_count)
        _LOG.warning(
            "%s: failed a check, then passed it read again (damaged on the way?): %s", self.name, first
        )
        return answer

    def _query(
        self, footer: SealedFooter, key: bytes, begin_ms: int, end_ms: int, max_count: int
    ) -> list[Entry]:
        start, end = footer.slot_span(key)
        run = footer.slot_run(start, self._read(start, end), key)
        if run[1] == 0:
            return []
        rstart, rend = footer.run_span(run)
        return footer.match_run(rstart, self._read(rstart, rend), run, key, begin_ms, end_ms, max_count)
