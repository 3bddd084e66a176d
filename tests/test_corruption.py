"""Corruption campaign: bit flips, truncations, zeroed pages and garbage
tails on unsealed files, sealed files, the journal and remote objects. Every
one is detected (or the intact entries salvaged), no query returns an entry
that was never put, and the process never crashes."""

from __future__ import annotations

import os
import random
import sqlite3
from pathlib import Path

import pytest

from tieredindex import CorruptFileError, FileState, IndexFile, IndexStore, SealedIndex, crc32c, open_remote
from tieredindex.layout import (
    DATA_PREFIX,
    JOURNAL_NAME,
    MANIFEST_PREFIX,
    ManifestRecord,
    data_key,
    manifest_key,
)

from store_helpers import FOREVER, SwitchableRemote, crash_in_process, small_config, wait_until

TRIALS = int(os.environ.get("TIX_CORRUPTION_TRIALS", "60"))
KEYS = [f"key-{i}" for i in range(11)]


def damage(raw: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One random kind of damage."""
    kind = rng.choice(["flip", "flips", "truncate", "zero-page", "garbage-tail", "garbage-page"])
    data = bytearray(raw)
    if kind == "flip":
        pos = rng.randrange(len(data))
        data[pos] ^= 1 << rng.randrange(8)
    elif kind == "flips":
        for _ in range(rng.randrange(2, 20)):
            data[rng.randrange(len(data))] ^= rng.randrange(1, 256)
    elif kind == "truncate":
        del data[rng.randrange(len(data)) :]
    elif kind == "zero-page":
        start = rng.randrange(0, len(data), 4096) if len(data) > 4096 else 0
        data[start : start + 4096] = bytes(len(data[start : start + 4096]))
    elif kind == "garbage-tail":
        data += rng.randbytes(rng.randrange(1, 5000))
    else:
        start = rng.randrange(len(data))
        chunk = rng.randbytes(min(4096, len(data) - start))
        data[start : start + len(chunk)] = chunk
    return bytes(data), kind


def model_entries(n: int) -> dict[str, set[tuple[int, int, int, int]]]:
    model: dict[str, set[tuple[int, int, int, int]]] = {k: set() for k in KEYS}
    for i in range(n):
        model[KEYS[i % len(KEYS)]].add((i % 5, i, 64 + i, 10_000 + i))
    return model


def put_entries(store: IndexStore, n: int) -> dict[str, set[tuple[int, int, int, int]]]:
    """Puts the first ``n`` entries of ``model_entries`` into the store; returns that model."""
    for i in range(n):
        store.put("t", KEYS[i % len(KEYS)], queue_id=i % 5, offset=i, size=64 + i, timestamp_ms=10_000 + i)
    return model_entries(n)


def checkpointed_bytes(journal: Path) -> bytearray:
    """The journal's file, with everything in its WAL moved into it first."""
    db = sqlite3.connect(journal)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return bytearray(journal.read_bytes())


def write_damaged(journal: Path, raw: bytearray, still_passes: str | None = None) -> None:
    """Writes the damaged journal; ``still_passes``: the SQLite check
    (quick_check, integrity_check) the damage must get past."""
    journal.write_bytes(bytes(raw))
    if still_passes is not None:
        check = sqlite3.connect(journal)
        assert check.execute(f"PRAGMA {still_passes}").fetchone() == ("ok",)
        check.close()


def restart_with_journal_rebuilt(directory: Path, remote_url: str) -> IndexStore:
    """A store started on ``directory``, which found its journal damaged and set it aside."""
    again = IndexStore(directory, remote_url, small_config())
    report = again.start()
    assert report.journal_quarantined is not None and Path(report.journal_quarantined).exists()
    return again


def assert_remote_alone_answers(directory: Path, remote_url: str, model: dict) -> None:
    """A new store on an empty ``directory`` answers every key from the remote."""
    fresh = IndexStore(directory, remote_url, small_config())
    fresh.start()
    for key in KEYS:
        assert {tuple(e) for e in fresh.query("t", key, 0, FOREVER, 10_000)} == model[key], key
    fresh.shutdown()


def write_unsealed(path: Path, n: int) -> None:
    with IndexFile.create(path, slots=64, capacity=n + 10, begin_ms=10_000) as f:
        for i in range(n):
            f.put(KEYS[i % len(KEYS)], i % 5, i, 64 + i, 10_000 + i)


def never_wrong(query: object, model: dict) -> int:
    """Runs every key's query; any returned entry must have been put.
    Returns how many entries were served."""
    served = 0
    for key in KEYS:
        try:
            got = query(key)  # type: ignore[operator]
        except CorruptFileError:
            continue
        for e in got:
            assert tuple(e) in model[key], f"served an entry never put: {e}"
        served += len(got)
    return served


def test_unsealed_file_campaign(tmp_path: Path) -> None:
    rng = random.Random(1234)
    n = 3000
    pristine = tmp_path / "pristine.tix"
    write_unsealed(pristine, n)
    raw = pristine.read_bytes()
    model = model_entries(n)
    outcomes: dict[str, int] = {}
    for trial in range(TRIALS):
        bad, kind = damage(raw, rng)
        path = tmp_path / f"t{trial}.tix"
        path.write_bytes(bad)
        try:
            f = IndexFile.open(path)
        except CorruptFileError:
            outcomes["rejected"] = outcomes.get("rejected", 0) + 1
            salvaged = tmp_path / f"s{trial}.tix"
            try:
                from tieredindex import salvage

                salvage(path, salvaged)
            except CorruptFileError:
                continue  # header gone: nothing to salvage, nothing served
            g = IndexFile.open(salvaged)
            never_wrong(lambda k, g=g: g.query(k, 0, FOREVER, 10_000), model)
            g.close()
            continue
        never_wrong(lambda k, f=f: f.query(k, 0, FOREVER, 10_000), model)
        try:
            f.verify()
        except CorruptFileError:
            outcomes[f"detected-{kind}"] = outcomes.get(f"detected-{kind}", 0) + 1
        else:
            if not unread_bytes_only(raw, bad, slots=64, count=n):
                pytest.fail(f"trial {trial}: {kind} damage not detected by open() or verify()")
            outcomes["clean"] = outcomes.get("clean", 0) + 1
        f.close()
    assert sum(outcomes.values()) > 0


def unread_bytes_only(raw: bytes, bad: bytes, *, slots: int, count: int) -> bool:
    """Whether ``bad`` differs from the closed file ``raw`` only where no
    reader looks (rust/format.rs): the reserved header word (60..64) and the
    preallocated entries past ``count``. Any other damage must be found."""
    if len(raw) != len(bad):
        return False
    entries_end = -(-(64 + 4 * slots) // 64) * 64 + 40 * count
    return all(
        60 <= i < 64 or i >= entries_end for i, (a, b) in enumerate(zip(raw, bad, strict=True)) if a != b
    )


def test_sealed_file_campaign(tmp_path: Path) -> None:
    rng = random.Random(99)
    n = 2000
    write_unsealed(tmp_path / "u.tix", n)
    f = IndexFile.open(tmp_path / "u.tix")
    f.seal(tmp_path / "s.tix")
    f.close()
    raw = (tmp_path / "s.tix").read_bytes()
    model = model_entries(n)
    for _ in range(TRIALS):
        bad, _kind = damage(raw, rng)
        if bad == raw:
            continue
        try:
            s = SealedIndex.open(bad)
        except CorruptFileError:
            continue
        # Whatever opens: queries serve only true entries, verify() objects.
        never_wrong(lambda k, s=s: s.query(k, 0, FOREVER, 10_000), model)
        with pytest.raises(CorruptFileError):
            s.verify()


def test_damaged_journal_is_quarantined_and_rebuilt(tmp_path: Path, remote_url: str) -> None:
    store = IndexStore(tmp_path / "d", remote_url, small_config())
    store.start()
    model = put_entries(store, 120)
    # Crash-like stop with files in every state, then wreck the journal.
    crash_in_process(store)
    journal = tmp_path / "d" / JOURNAL_NAME
    raw = bytearray(journal.read_bytes())
    for pos in range(100, len(raw), 97):
        raw[pos] ^= 0xFF
    journal.write_bytes(bytes(raw))
    for extra in ("-wal", "-shm"):
        (tmp_path / "d" / (JOURNAL_NAME + extra)).unlink(missing_ok=True)
    assert restart_with_journal_rebuilt(tmp_path / "d", remote_url).shutdown().clean
    assert_remote_alone_answers(tmp_path / "fresh", remote_url, model)


def test_a_journal_index_out_of_step_with_its_rows_is_damage(tmp_path: Path, remote_url: str) -> None:
    """A flipped bit can leave every page of the journal well formed and one
    index entry naming a row that is not there: quick_check passes it (it
    does not compare indexes with their tables), and the first transition
    of that row failed with SQLite's "database disk image is malformed",
    out of start() and at every start after. start() must find it, set the
    journal aside and rebuild it, as for any other damage."""
    store = IndexStore(tmp_path / "d", remote_url, small_config())
    store.start()
    model = put_entries(store, 20)  # one file, still ACTIVE: start() moves it to ROLLED
    active = store._current
    assert active is not None
    crash_in_process(store)
    journal = tmp_path / "d" / JOURNAL_NAME
    db = sqlite3.connect(journal)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'files_by_state'").fetchone()
    (page_size,) = db.execute("PRAGMA page_size").fetchone()
    db.close()
    raw = bytearray(journal.read_bytes())
    # The file id in the index entry (state, file_id), not in the row.
    at = raw.index(active.encode(), (root - 1) * page_size, root * page_size)
    raw[at + len(active) - 1] ^= 1
    write_damaged(journal, raw, still_passes="quick_check")
    assert restart_with_journal_rebuilt(tmp_path / "d", remote_url).shutdown().clean
    assert_remote_alone_answers(tmp_path / "fresh", remote_url, model)


def test_a_journal_whose_schema_names_another_column_is_damage(tmp_path: Path, remote_url: str) -> None:
    """A flipped bit in the journal's schema text (sqlite_master) that still
    parses renames a column: every page is sound, integrity_check passes,
    and start() raised "no such column" at every start. The schema is
    checked at open: such a journal is damage, set aside and rebuilt."""
    store = IndexStore(tmp_path / "d", remote_url, small_config())
    store.start()
    model = put_entries(store, 120)
    crash_in_process(store)
    journal = tmp_path / "d" / JOURNAL_NAME
    raw = checkpointed_bytes(journal)
    at = raw.index(b"max_ms      INTEGER")  # the files table's column, in its CREATE TABLE text
    raw[at + len("max_m")] ^= 1  # max_ms -> max_mr
    write_damaged(journal, raw, still_passes="integrity_check")
    assert restart_with_journal_rebuilt(tmp_path / "d", remote_url).shutdown().clean
    assert_remote_alone_answers(tmp_path / "fresh", remote_url, model)


def test_a_journal_text_that_is_not_utf8_is_damage(tmp_path: Path, remote_url: str) -> None:
    """A flipped bit in a text value of the journal (here an uploaded file's
    object key) can leave bytes that are not UTF-8 in a sound database:
    integrity_check passes, and reading the row raised sqlite3's "Could not
    decode to UTF-8" out of start(), at every start. Such a journal is
    damage: set aside and rebuilt."""
    store = IndexStore(tmp_path / "d", remote_url, small_config())
    store.start()
    model = put_entries(store, 120)
    wait_until(lambda: store.journal.file_ids([FileState.UPLOADED]), "a file uploaded")
    uploaded = store.journal.file_ids([FileState.UPLOADED])[0]
    crash_in_process(store)
    journal = tmp_path / "d" / JOURNAL_NAME
    raw = checkpointed_bytes(journal)
    raw[raw.index(data_key(uploaded).encode())] = 0xFF  # "index/..." -> b"\xffndex/...": no UTF-8
    write_damaged(journal, raw, still_passes="integrity_check")
    assert restart_with_journal_rebuilt(tmp_path / "d", remote_url).shutdown().clean
    assert_remote_alone_answers(tmp_path / "fresh", remote_url, model)


def test_a_journal_header_naming_an_unknown_format_is_damage(tmp_path: Path, remote_url: str) -> None:
    """Garbage over the journal's header can leave its magic intact and its
    schema format number impossible: SQLite answers "unsupported file
    format" (SQLITE_ERROR, neither CORRUPT nor NOTADB), which start() took
    for the disk failing and raised, at every start. It is damage: the
    journal is set aside and rebuilt."""
    store = IndexStore(tmp_path / "d", remote_url, small_config())
    store.start()
    model = put_entries(store, 120)
    crash_in_process(store)
    journal = tmp_path / "d" / JOURNAL_NAME
    raw = checkpointed_bytes(journal)
    raw[44:48] = b"\xe4\xa6\x4c\x1a"  # the schema format number (1 to 4)
    write_damaged(journal, raw)
    assert restart_with_journal_rebuilt(tmp_path / "d", remote_url).shutdown().clean
    assert_remote_alone_answers(tmp_path / "fresh", remote_url, model)


def test_remote_object_campaign(tmp_path: Path, remote_url: str) -> None:
    rng = random.Random(7)
    with IndexStore(tmp_path / "d", remote_url, small_config(capacity=400)) as store:
        model = model_entries(0)
        for i in range(1000):
            key = KEYS[i % len(KEYS)]
            store.put("t", key, queue_id=i % 5, offset=i, size=64 + i, timestamp_ms=10_000 + i)
            model[key].add((i % 5, i, 64 + i, 10_000 + i))
    remote = open_remote(remote_url)
    keys = [o.key for o in remote.list(DATA_PREFIX)] + [o.key for o in remote.list(MANIFEST_PREFIX)]
    originals = {k: remote.get(k) for k in keys}
    for trial in range(max(6, TRIALS // 10)):
        victim = rng.choice(keys)
        bad, _kind = damage(originals[victim], rng)
        remote.delete(victim)
        remote.put_if_absent(victim, bad, size=len(bad), crc32c=crc32c(bad))
        reader = IndexStore(tmp_path / f"r{trial}", remote_url, small_config())
        reader.start()
        for key in KEYS:
            for e in reader.query("t", key, 0, FOREVER, 10_000):
                assert tuple(e) in model[key], f"served an entry never put: {e}"
        report = reader.verify(deep=True)
        if bad != originals[victim]:
            assert not report.ok, f"damage to {victim} not found"
        reader.shutdown()
        remote.delete(victim)
        remote.put_if_absent(
            victim, originals[victim], size=len(originals[victim]), crc32c=crc32c(originals[victim])
        )


@pytest.mark.parametrize("opener", ["IndexFile", "SealedIndex", "RocketMQFile"])
@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_open_refuses_what_is_not_a_regular_file(tmp_path: Path, opener: str, kind: str) -> None:
    """A FIFO would block the reader for ever waiting for a writer (its open
    runs with the GIL released, so only that thread hangs, silently); a
    device or directory cannot hold an index. Each is a ValueError naming
    the path and what it is, at once."""
    import threading

    from tieredindex import _native

    if kind == "fifo":
        path = tmp_path / "index.tix"
        os.mkfifo(path)
    elif kind == "directory":
        path = tmp_path / "a-dir"
        path.mkdir()
    else:
        path = Path("/dev/null")
    outcome: list[BaseException | str] = []

    def run() -> None:
        try:
            getattr(_native, opener).open(path)
            outcome.append("opened")
        except BaseException as exc:  # reported by the asserts below
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(10)
    assert outcome, f"{opener}.open({kind}) still blocked after 10 s"
    (exc,) = outcome
    if opener == "IndexFile" and kind == "directory":
        assert isinstance(exc, IsADirectoryError)  # its read-write open fails first
        return
    assert isinstance(exc, ValueError), exc
    assert str(path) in str(exc)
    assert {"fifo": "a FIFO", "directory": "a directory", "device": "a device"}[kind] in str(exc)


def _change_row(journal: Path, file_id: str, **values: int) -> None:
    """Changes a row's values as a flipped bit would: behind the journal's
    back, every page still sound."""
    db = sqlite3.connect(journal)
    sets = ", ".join(f"{k} = ?" for k in values)
    assert db.execute(f"UPDATE files SET {sets} WHERE file_id = ?", (*values.values(), file_id)).rowcount == 1
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def _first_row(journal: Path, column: str, states: tuple[str, ...]) -> tuple[str, int]:
    """(file_id, ``column``) of the oldest file in one of ``states``."""
    db = sqlite3.connect(journal)
    marks = ", ".join("?" * len(states))
    row = db.execute(
        f"SELECT file_id, {column} FROM files WHERE state IN ({marks}) ORDER BY file_id LIMIT 1", states
    ).fetchone()
    db.close()
    return row[0], row[1]


def test_an_uploaded_files_row_with_a_changed_range_is_damage(tmp_path: Path, remote_url: str) -> None:
    """A flipped bit in an uploaded file's max_ms (its row, not its remote
    record) passed every check of the journal; the restarted store chose
    files for queries by the row's range, and the file's entries went
    missing from answers. The journal is now damaged: set aside, rebuilt
    from the remote, and every entry answers."""
    store = IndexStore(tmp_path / "d", remote_url, small_config())
    store.start()
    model = put_entries(store, 120)
    assert store.shutdown().clean
    journal = tmp_path / "d" / JOURNAL_NAME
    file_id, min_ms = _first_row(journal, "min_ms", ("UPLOADED",))
    _change_row(journal, file_id, max_ms=min_ms - 1)  # its range now overlaps no query
    for copy in (tmp_path / "d").glob("sealed/*"):
        copy.unlink()  # out of the read cache, as eviction does: the remote answers
    again = restart_with_journal_rebuilt(tmp_path / "d", remote_url)
    for key in KEYS:  # from the first entry's time: the changed range ends before it
        assert {tuple(e) for e in again.query("t", key, 10_000, FOREVER, 10_000)} == model[key], key
    assert again.shutdown().clean


def test_a_sealed_files_row_with_a_changed_range_is_not_recorded_remotely(
    tmp_path: Path, remote_url: str
) -> None:
    """A flipped bit in the max_ms of a file sealed but not yet uploaded
    became its manifest record, for good: the range remote readers choose
    files by, and retention deletes by. The journal is now damaged, and the
    record the file gets is its sealed copy's own range."""
    down = SwitchableRemote(open_remote(remote_url))
    store = IndexStore(tmp_path / "d", down, small_config())
    store.start()
    down.down.set()
    model = put_entries(store, 120)
    report = store.shutdown(timeout_s=1)
    assert not report.clean and report.pending
    journal = tmp_path / "d" / JOURNAL_NAME
    file_id, true_max = _first_row(journal, "max_ms", ("SEALED", "UPLOADING"))
    _change_row(journal, file_id, max_ms=true_max + (1 << 40))
    assert restart_with_journal_rebuilt(tmp_path / "d", remote_url).shutdown().clean
    remote = open_remote(remote_url)
    record = ManifestRecord.from_bytes(remote.get(manifest_key(file_id)), manifest_key(file_id))
    assert record.max_ms == true_max
    remote.close()
    assert_remote_alone_answers(tmp_path / "fresh", remote_url, model)
