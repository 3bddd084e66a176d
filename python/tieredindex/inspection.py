"""``tieredindex inspect``: what an index file holds and whether it is intact.

Strictly read-only. ``IndexFile.open`` is a writer's open (it locks the
file, marks it open and rebuilds a crashed file), so unsealed files are read
here directly, following the layout documented in ``rust/format.rs``: both
header checksums, every entry's CRC32C (computed for many entries at once
with numpy), the chain links and, when the header summary is trusted, the
slot table. That works on a file a live store is writing, too. Sealed files
are opened with :class:`SealedIndex` and every checksum is verified.

Each problem names where it is: the entry or slot and its byte offset, or
the block, as the core's own messages do.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tieredindex._native import CorruptFileError, SealedFooter, SealedIndex, crc32c
from tieredindex.console import format_ms
from tieredindex.layout import ACTIVE_DIR, JOURNAL_NAME, SEALED_DIR, is_file_id
from tieredindex.localstatus import NotAStoreError, flock_holder, read_journal

UNSEALED_MAGIC = b"\x89TIXU\r\n\x1a"
SEALED_MAGIC = b"\x89TIXS\r\n\x1a"
FORMAT_VERSION = 1
HEADER_LEN = 64
SLOT_LEN = 4
ENTRY_LEN = 40
TRAILER_LEN = 40
STATE_NAMES = {0: "closed cleanly", 1: "open for writing", 2: "sealed (writes stopped)"}
CHUNK_ENTRIES = 1 << 20

_ENTRY_DTYPE = np.dtype(
    [
        ("fingerprint", "<u8"),
        ("offset", "<u8"),
        ("timestamp_ms", "<u8"),
        ("queue_id", "<u4"),
        ("size", "<u4"),
        ("prev", "<u4"),
        ("crc", "<u4"),
    ]
)
assert _ENTRY_DTYPE.itemsize == ENTRY_LEN

U32 = npt.NDArray[np.uint32]


def _crc_table() -> U32:
    table = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table[i] = c
    return table


_TABLE = _crc_table()


def entry_crcs(raw: npt.NDArray[np.uint8], first_index: int) -> U32:
    """CRC32C of (entry index as u32 LE ++ bytes 0..36) for each row of
    ``raw`` (n x 40 bytes), the entries ``first_index``, ``first_index + 1``..."""
    n = raw.shape[0]
    index = np.arange(first_index, first_index + n, dtype="<u4").view(np.uint8).reshape(n, 4)
    crc = np.full(n, 0xFFFFFFFF, dtype=np.uint32)
    for column in (*(index[:, j] for j in range(4)), *(raw[:, j] for j in range(36))):
        crc = _TABLE[(crc ^ column) & 0xFF] ^ (crc >> np.uint32(8))
    result: U32 = crc ^ np.uint32(0xFFFFFFFF)
    return result


def slot_of(fingerprints: npt.NDArray[np.uint64], slots: int) -> npt.NDArray[np.uint64]:
    """As ``keyhash.rs``: multiply-shift of the fingerprint's high half."""
    high = fingerprints >> np.uint64(32)
    result: npt.NDArray[np.uint64] = (high * np.uint64(slots)) >> np.uint64(32)
    return result


@dataclasses.dataclass
class Inspection:
    """What ``inspect`` found. ``ok`` is False when the file is corrupt;
    ``problems`` then say what failed and where. ``notes`` are not damage
    (a live writer, a crashed writer's torn tail)."""

    path: str
    kind: str
    """``unsealed``, ``sealed`` or ``unknown``."""
    problems: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "ok": self.ok}


class NotARegularFileError(OSError):
    """The path is a FIFO, socket, device...: not a file that can be inspected."""


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "not a regular file"


def inspect_file(path: str | os.PathLike[str]) -> Inspection:
    """Inspects the index file at ``path``. ``FileNotFoundError``,
    ``IsADirectoryError``, :class:`NotARegularFileError` (a FIFO, a
    device...) or ``PermissionError`` if it cannot be read."""
    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(f"{p} is a directory, not an index file")
    # O_NONBLOCK: opening a FIFO must not wait for a writer; a regular
    # file reads the same with it.
    fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotARegularFileError(f"{p} is {_file_kind(st.st_mode)}, not an index file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            head = f.read(HEADER_LEN)
    finally:
        os.close(fd)
    size = st.st_size
    if head[:8] == UNSEALED_MAGIC:
        report = _inspect_unsealed(p, head, size)
    elif head[:8] == SEALED_MAGIC:
        report = _inspect_sealed(p, size)
    else:
        report = Inspection(str(p), "unknown", fields={"size": size})
        what = "is empty" if size == 0 else f"starts with {head[:8]!r}"
        report.problems.append(
            f"{p}: not a tieredindex file, or its magic (bytes 0..8) is damaged: it {what}, "
            f"expected {UNSEALED_MAGIC!r} (unsealed) or {SEALED_MAGIC!r} (sealed)"
        )
        return report
    _add_journal_record(p, report)
    return report


# ---------------------------------------------------------------- unsealed


def _u32(b: bytes, off: int) -> int:
    return int.from_bytes(b[off : off + 4], "little")


def _u64(b: bytes, off: int) -> int:
    return int.from_bytes(b[off : off + 8], "little")


def _entries_offset(slots: int) -> int:
    return (HEADER_LEN + SLOT_LEN * slots + 63) // 64 * 64


def _inspect_unsealed(p: Path, head: bytes, size: int) -> Inspection:
    r = Inspection(str(p), "unsealed")
    r.fields["format"] = "unsealed (writable) index file"
    r.fields["file size"] = size
    if len(head) < HEADER_LEN:
        r.problems.append(f"{p}: file is {size} bytes, shorter than the {HEADER_LEN}-byte header")
        return r
    version, header_len = int.from_bytes(head[8:10], "little"), int.from_bytes(head[10:12], "little")
    r.fields["version"] = version
    static_crc, static_ok = _u32(head, 28), _u32(head, 28) == crc32c(head[:28])
    r.fields["static header crc32c"] = f"{static_crc:#010x} ({'ok' if static_ok else 'BAD'})"
    if not static_ok:
        r.problems.append(
            f"{p}: static header (bytes 0..28: version, slots, capacity, begin) fails its checksum "
            f"at byte 28: the geometry cannot be trusted"
        )
        return r
    if version != FORMAT_VERSION or header_len != HEADER_LEN:
        r.problems.append(f"{p}: format version {version}, header length {header_len}: not readable here")
        return r
    slots, capacity, begin_ms = _u32(head, 12), _u32(head, 16), _u64(head, 20)
    entries_at = _entries_offset(slots)
    expected = entries_at + ENTRY_LEN * capacity
    r.fields.update({"slots": slots, "capacity": capacity, "begin": f"{begin_ms} ({format_ms(begin_ms)})"})
    if slots == 0 or capacity == 0:
        r.problems.append(f"{p}: header records {slots} slots and capacity {capacity}")
        return r
    if size != expected:
        r.problems.append(
            f"{p}: file is {size} bytes but its header ({slots} slots, capacity {capacity}) needs "
            f"{expected}: {'truncated' if size < expected else 'bytes appended'}"
        )

    state, count, used, end_ms = _u32(head, 32), _u32(head, 36), _u32(head, 40), _u64(head, 48)
    dynamic_ok = _u32(head, 56) == crc32c(head[32:56])
    holder = flock_holder(p)
    r.fields["state"] = STATE_NAMES.get(state, f"unknown ({state})")
    if holder is not None:
        r.fields["state"] += f", held by a live writer (pid {holder})"
    r.fields["dynamic header crc32c"] = f"{_u32(head, 56):#010x} ({'ok' if dynamic_ok else 'BAD'})"
    trusted = dynamic_ok and state in (0, 2) and count <= capacity and used <= slots and used <= count
    r.fields["header summary"] = f"{count} entries, {used} used slots, end {end_ms}" + (
        "" if trusted else " (not trusted: " + ("file open" if dynamic_ok else "bad checksum") + ")"
    )
    if not dynamic_ok:
        r.notes.append(
            "dynamic header (bytes 32..56) fails its checksum: a torn header write; "
            "open() rebuilds it from the entries"
        )

    scan = _scan_entries(p, slots, capacity, entries_at, size)
    r.fields["valid entries"] = scan.prefix
    if scan.prefix:
        r.fields["time range"] = (
            f"{scan.min_ms} .. {scan.max_ms} ({format_ms(scan.min_ms)} .. {format_ms(scan.max_ms)})"
        )
    used_now = int(np.count_nonzero(scan.heads))
    r.fields["fill"] = (
        f"entries {scan.prefix}/{capacity} ({scan.prefix / capacity:.1%}), "
        f"slots {used_now}/{slots} ({used_now / slots:.1%}), "
        f"longest chain {scan.longest_chain}"
    )
    r.fields["entry checksums"] = f"{scan.prefix} valid" + (
        f", {scan.bad_nonzero} failing" if scan.bad_nonzero else ""
    )

    def where(index: int) -> str:
        return f"entry {index} at byte {entries_at + ENTRY_LEN * index}"

    if scan.chain_error is not None:
        r.problems.append(f"{p}: {where(scan.chain_error)} has a broken chain link")
    if scan.valid_after_gap:
        assert scan.first_bad is not None
        r.problems.append(
            f"{p}: {where(scan.first_bad)} fails its checksum and {scan.valid_after_gap} valid entries "
            f"follow it (first: {where(scan.first_valid_after_gap or 0)}): damaged in the middle; "
            "the store salvages the intact entries"
        )
    if trusted:
        if scan.prefix < count and not scan.valid_after_gap:
            r.problems.append(
                f"{p}: {where(scan.prefix)} fails its checksum; the header records {count} entries"
            )
        elif scan.prefix > count:
            r.problems.append(
                f"{p}: header records {count} entries but {scan.prefix} valid entries are present"
            )
        if scan.prefix == count and not scan.valid_after_gap:
            # A truncated file (already reported) may lack the slot table:
            # check only the slots whose bytes are there.
            present = min(slots, max(0, (size - HEADER_LEN) // SLOT_LEN))
            if present:
                table = np.memmap(p, dtype="<u4", mode="r", offset=HEADER_LEN, shape=(present,))
                wrong = np.flatnonzero(np.asarray(table) != scan.heads[:present])
                if wrong.size:
                    s = int(wrong[0])
                    r.problems.append(
                        f"{p}: slot {s} at byte {HEADER_LEN + SLOT_LEN * s} does not hold its newest entry "
                        f"({wrong.size} slots wrong)"
                    )
            if used != used_now:
                r.problems.append(f"{p}: header records {used} used slots, the entries use {used_now}")
            # As the writer (rust/index.rs): the largest timestamp put, which may
            # be below begin_ms; begin_ms only while the file is empty.
            expected_end = scan.max_ms if count else begin_ms
            if end_ms != expected_end:
                why = (
                    f"the entries' newest is {scan.max_ms}"
                    if count
                    else f"an empty file's end time is its begin time {begin_ms}"
                )
                r.problems.append(f"{p}: header end time {end_ms}, but {why}")
    elif dynamic_ok and state == 1 and holder is None and scan.prefix < count and not scan.valid_after_gap:
        # The crash rules (rust/format.rs): a dynamic header whose checksum
        # holds counts entries a flush made durable; a prefix shorter than
        # that is damage, and reopening the file refuses it.
        r.problems.append(
            f"{p}: {where(scan.prefix)} fails its checksum, but a flush made {count} entries durable: "
            "damage, not a torn tail; opening the file raises CorruptFileError and the store salvages "
            "the intact entries"
        )
    elif scan.bad_nonzero and not scan.valid_after_gap:
        if holder is not None:
            r.notes.append(f"{scan.bad_nonzero} entries past the valid prefix are being written")
        else:
            r.notes.append(
                f"{scan.bad_nonzero} torn entries past the valid prefix ({where(scan.prefix)} onwards): "
                "left by a crash, dropped when the file is reopened"
            )
    if state == 1 and holder is None:
        r.notes.append(
            "not closed cleanly (the writer crashed or was killed): reopening rebuilds the header "
            "from the valid entries"
        )
    return r


@dataclasses.dataclass
class _Scan:
    prefix: int = 0
    first_bad: int | None = None
    bad_nonzero: int = 0
    valid_after_gap: int = 0
    first_valid_after_gap: int | None = None
    chain_error: int | None = None
    min_ms: int = 0
    max_ms: int = 0
    longest_chain: int = 0
    heads: U32 = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=np.uint32))


def _scan_entries(p: Path, slots: int, capacity: int, entries_at: int, size: int) -> _Scan:
    """Checks every entry's CRC, in chunks; follows the chains of the valid
    prefix (the entries a reopen keeps)."""
    scan = _Scan(heads=np.zeros(slots, dtype=np.uint32))
    available = min(capacity, max(0, (size - entries_at) // ENTRY_LEN))
    if available == 0:
        return scan
    mm = np.memmap(p, dtype=np.uint8, mode="r", offset=entries_at, shape=(available * ENTRY_LEN,))
    chain_len = np.zeros(slots, dtype=np.uint32)
    min_ms, max_ms = None, None
    in_prefix = True
    for start in range(0, available, CHUNK_ENTRIES):
        n = min(CHUNK_ENTRIES, available - start)
        raw = np.asarray(mm[start * ENTRY_LEN : (start + n) * ENTRY_LEN]).reshape(n, ENTRY_LEN)
        nonzero: npt.NDArray[np.bool_] = np.asarray(raw.any(axis=1))
        if not in_prefix and not nonzero.any():
            continue
        entries = raw.view(_ENTRY_DTYPE).reshape(n)
        valid: npt.NDArray[np.bool_] = nonzero & (entry_crcs(raw, start) == entries["crc"])
        if in_prefix:
            bad = np.flatnonzero(~valid)
            end = int(bad[0]) if bad.size else n
            part = entries[:end]
            if end:
                if not _follow_chains(scan, part, start, slots, chain_len):
                    in_prefix = False
                ts = part["timestamp_ms"]
                lo, hi = int(ts.min()), int(ts.max())
                min_ms = lo if min_ms is None else min(min_ms, lo)
                max_ms = hi if max_ms is None else max(max_ms, hi)
            scan.prefix = start + end
            if end < n:
                in_prefix = False
                scan.first_bad = start + end
            rest_valid, rest_bad = valid[end:], nonzero[end:] & ~valid[end:]
            rest_at = start + end
        else:
            rest_valid, rest_bad = valid, nonzero & ~valid
            rest_at = start
        scan.bad_nonzero += int(np.count_nonzero(rest_bad))
        after = np.flatnonzero(rest_valid)
        if after.size:
            if scan.first_valid_after_gap is None:
                scan.first_valid_after_gap = rest_at + int(after[0])
            scan.valid_after_gap += int(after.size)
    scan.min_ms = min_ms or 0
    scan.max_ms = max_ms or 0
    scan.longest_chain = int(chain_len.max()) if slots else 0
    return scan


def _follow_chains(scan: _Scan, part: npt.NDArray[np.void], start: int, slots: int, chain_len: U32) -> bool:
    """Checks each entry's link to the previous entry of its slot and moves
    the slot heads on; False (and ``scan.chain_error``) at a broken link."""
    n = part.shape[0]
    slot = slot_of(part["fingerprint"], slots).astype(np.int64)
    index = np.arange(start, start + n, dtype=np.int64)
    order = np.argsort(slot, kind="stable")
    s_sorted, i_sorted = slot[order], index[order]
    first = np.ones(n, dtype=bool)
    first[1:] = s_sorted[1:] != s_sorted[:-1]
    expected = np.where(first, scan.heads[s_sorted].astype(np.int64), np.roll(i_sorted, 1) + 1)
    broken = np.flatnonzero(part["prev"][order].astype(np.int64) != expected)
    if broken.size:
        scan.chain_error = int(i_sorted[broken].min())
        return False
    last = np.ones(n, dtype=bool)
    last[:-1] = s_sorted[1:] != s_sorted[:-1]
    scan.heads[s_sorted[last]] = (i_sorted[last] + 1).astype(np.uint32)
    chain_len += np.bincount(slot, minlength=slots).astype(np.uint32)
    return True


# ------------------------------------------------------------------ sealed


def _inspect_sealed(p: Path, size: int) -> Inspection:
    r = Inspection(str(p), "sealed")
    r.fields["format"] = "sealed (uploadable) index file"
    r.fields["file size"] = size
    try:
        sealed = SealedIndex.open(p)
    except CorruptFileError as exc:
        r.problems.append(str(exc))
        return r
    r.fields.update(
        {
            "state": "sealed (immutable)",
            "entries": sealed.count,
            "slots": f"{sealed.slots}, {sealed.used_slots} used",
            "begin": f"{sealed.begin_ms} ({format_ms(sealed.begin_ms)})",
            "time range": (
                f"{sealed.min_timestamp_ms} .. {sealed.end_ms} "
                f"({format_ms(sealed.min_timestamp_ms)} .. {format_ms(sealed.end_ms)})"
            ),
            "object crc32c": f"{sealed.crc32c:#010x}",
            "block size": sealed.block_size,
        }
    )
    try:
        with open(p, "rb") as f:
            f.seek(max(0, size - TRAILER_LEN))
            trailer = f.read(TRAILER_LEN)
            need = SealedFooter.footer_len(trailer, size, str(p))
            f.seek(size - need)
            footer = SealedFooter.parse(f.read(need), size, str(p))
        blocks = -(-footer.data_len // footer.block_size)
        r.fields["data"] = f"{footer.data_len} bytes in {blocks} blocks, crc32c {footer.data_crc32c:#010x}"
    except CorruptFileError as exc:
        r.problems.append(str(exc))
    try:
        sealed.verify()
        r.fields["checksums"] = "every block, the data and the footer verify"
    except CorruptFileError as exc:
        r.fields["checksums"] = "FAILED"
        r.problems.append(str(exc))
    return r


# ----------------------------------------------------------------- journal


def _add_journal_record(p: Path, r: Inspection) -> None:
    """When the file sits in a store directory, adds its journal record and
    checks a sealed copy against the recorded size and CRC32C."""
    parent = p.resolve().parent
    if parent.name not in (ACTIVE_DIR, SEALED_DIR) or not is_file_id(p.stem):
        return
    store = parent.parent
    if not (store / JOURNAL_NAME).is_file():
        return
    try:
        # Rows in an unknown state (of other files, too) do not make this
        # file's check fail: the file is what is inspected.
        view = read_journal(store, skip_unknown=True)
    except NotAStoreError:
        return
    except (CorruptFileError, OSError) as exc:  # the file is what is inspected: a note, not its problem
        r.notes.append(f"the store journal in {store} could not be read: {exc}")
        return
    rec = view.get(p.stem)
    if p.stem in view.unknown_states:
        r.fields["journal"] = f"{view.unknown_states[p.stem]} (a state this version does not know)"
        r.notes.append(
            f"the store journal in {store} records this file in state {view.unknown_states[p.stem]!r}, "
            "which this version does not know (a damaged row, or a newer version's journal)"
        )
        return
    if rec is None:
        r.notes.append(f"the store journal in {store} has no record of this file")
        return
    r.fields["journal"] = f"{rec.state}" + (f", last error: {rec.error}" if rec.error else "")
    if r.kind == "sealed" and parent.name == SEALED_DIR and rec.size is not None:
        crc = r.fields.get("object crc32c")
        actual_size = r.fields.get("file size")
        if actual_size != rec.size or (crc is not None and crc != f"{rec.crc32c:#010x}"):
            r.problems.append(
                f"{p}: the journal records {rec.size} bytes, crc32c {rec.crc32c:#010x} for this file; "
                f"it is {actual_size} bytes, crc32c {crc}"
            )
