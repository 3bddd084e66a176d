"""``tieredindex demo``: the main job, end to end, offline.

1. A broker-like child process (:mod:`tieredindex.demo_broker`) indexes
   messages into an :class:`IndexStore`; files fill, roll, are sealed and
   uploaded in the background to the remote (a local directory unless
   ``--remote`` says otherwise).
2. It is stopped with SIGTERM, as a broker is. Its graceful shutdown seals
   the last, partly filled file and uploads it; the demo shows that from
   the store's journal and the remote manifest.
3. A new store on an empty directory, given the same remote, answers
   queries from the remote alone; every answer is checked against what was
   ingested.
4. A deep verification of every remote object, then a summary.
"""

from __future__ import annotations

import dataclasses
import json
import queue
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import IO, Any

from tieredindex._entry import Entry
from tieredindex.config import StoreConfig
from tieredindex.console import Progress, human_bytes, human_duration, key_values, table
from tieredindex.demo_broker import TOPIC, message
from tieredindex.inspection import inspect_file
from tieredindex.layout import ACTIVE_DIR, ManifestRecord, data_key, manifest_key
from tieredindex.localstatus import read_journal
from tieredindex.remote import open_remote
from tieredindex.remotecheck import verify_url
from tieredindex.retry import RetryPolicy
from tieredindex.states import FileState
from tieredindex.store import IndexStore

FOREVER = 2**63 - 1
IDLE_TIMEOUT_S = 60.0
MAX_FILES = 1000


def max_files() -> int:
    """The most index files a demo may make: the broker holds a descriptor
    per file, so at most half of the open-file limit (ulimit -n)."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return MAX_FILES if soft == resource.RLIM_INFINITY else max(1, min(MAX_FILES, soft // 2))


class DemoError(Exception):
    """The demo could not go on; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class DemoOptions:
    messages: int
    capacity: int
    slots: int
    queries: int
    remote: str | None
    endpoint_url: str | None
    directory: Path | None
    seed: int
    show_progress: bool = True


@dataclasses.dataclass
class _Results:
    entries: int = 0
    files: int = 0
    bytes: int = 0
    ingest_s: float = 0.0
    shutdown_s: float = 0.0
    clean: bool = False
    last_file_ok: bool = False
    queries: int = 0
    correct: int = 0
    latencies_s: list[float] = dataclasses.field(default_factory=list)
    first_query_s: float = 0.0
    verify_ok: bool = False


def _say(text: str = "") -> None:
    print(text, flush=True)


def run_demo(opts: DemoOptions) -> int:
    """Runs the demo; 0 when every check passed, 1 otherwise."""
    if opts.directory is not None:
        work = opts.directory
        if work.exists() and (not work.is_dir() or any(work.iterdir())):
            raise DemoError(f"{work}: choose a new or empty directory (the demo writes into it)")
        work.mkdir(parents=True, exist_ok=True)
        cleanup = False
    else:
        work = Path(tempfile.mkdtemp(prefix="tieredindex-demo-"))
        cleanup = True
    run = f"tieredindex-demo-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    if opts.remote is None:
        remote_url = (work / "remote").resolve().as_uri()
    else:
        remote_url = opts.remote.rstrip("/") + "/" + run
    ok = False
    try:
        ok = _run(opts, work, remote_url)
    finally:
        if cleanup:
            _remove_all_but(work, None if ok else work / "broker.log")
    if cleanup:
        where = "" if opts.remote is None else f"; the uploaded objects stay in {remote_url}"
        if not ok and work.exists():
            where += f"; the broker's log stays in {work / 'broker.log'}"
        _say(f"(temporary folder removed{where}; keep everything with --dir DIR)")
    else:
        _say(f"files kept in {work} (broker/: store, reader/: new store, broker.log: the broker's log)")
    return 0 if ok else 1


def _remove_all_but(work: Path, keep: Path | None) -> None:
    """Removes the temporary folder, or all in it but ``keep`` (a failed
    demo's broker log, which its error message points to)."""
    if keep is None or not keep.is_file():
        shutil.rmtree(work, ignore_errors=True)
        return
    for path in work.iterdir():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path != keep:
            path.unlink(missing_ok=True)


def _run(opts: DemoOptions, work: Path, remote_url: str) -> bool:
    broker_dir, reader_dir, log_path = work / "broker", work / "reader", work / "broker.log"
    keys = max(1, opts.messages // 4)
    base_ms = (time.time_ns() // 1_000_000) - opts.messages // 10 - 1
    full, rest = divmod(opts.messages, opts.capacity)
    _say(
        f"tieredindex demo: a broker indexes {opts.messages:,} messages into files of "
        f"{opts.capacity:,} entries ({full} full, "
        + (f"the last holding {rest:,})" if rest else "none partial)")
    )
    _say(f"remote: {remote_url}")
    _say()
    r = _Results()

    # 1. ingest in a child process.
    cmd = [
        sys.executable,
        "-m",
        "tieredindex.demo_broker",
        f"--dir={broker_dir}",
        f"--remote={remote_url}",
        f"--messages={opts.messages}",
        f"--keys={keys}",
        f"--base-ms={base_ms}",
        f"--slots={opts.slots}",
        f"--capacity={opts.capacity}",
    ]
    if opts.endpoint_url:
        cmd.append(f"--endpoint-url={opts.endpoint_url}")
    with open(log_path, "wb") as log:
        # Its own session: a Ctrl-C reaches the demo alone, which then stops
        # the broker with one SIGTERM (a second signal would make it exit at once).
        child = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
    try:
        ingested = _ingest(child, opts, log_path)
        r.entries, r.ingest_s = ingested["entries"], ingested["seconds"]
        _say(
            f"[1/4] broker (pid {child.pid}) indexed {r.entries:,} messages in {human_duration(r.ingest_s)} "
            f"({r.entries / max(r.ingest_s, 1e-9):,.0f} puts/s)"
        )
        _show_live_state(broker_dir)

        # 2. stop it as a broker is stopped.
        started = time.monotonic()
        child.send_signal(signal.SIGTERM)
        try:
            code = child.wait(timeout=120)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            raise DemoError(f"the broker did not stop within 120 s of SIGTERM; see {log_path}") from None
        r.shutdown_s = time.monotonic() - started
    finally:
        if child.poll() is None:  # interrupted: stop it gracefully still, then for good
            child.terminate()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                stream.close()
    r.clean = code == 0
    _say(
        f"[2/4] SIGTERM: the broker shut down in {human_duration(r.shutdown_s)}, "
        + ("cleanly (exit status 0)" if r.clean else f"NOT cleanly (exit status {code}; see {log_path})")
    )
    r.last_file_ok, r.files, r.bytes = _show_last_file(broker_dir, remote_url, opts)

    # 3. a new store, an empty directory, the same remote.
    _query_from_remote(reader_dir, remote_url, opts, keys, base_ms, r)

    # 4. summary.
    _say()
    lat = sorted(r.latencies_s)
    rows = [
        ("entries ingested", f"{r.entries:,}"),
        ("files uploaded", f"{r.files} ({full} full" + (", 1 partly filled)" if rest else ")")),
        ("bytes uploaded", f"{human_bytes(r.bytes)} ({r.bytes:,} bytes)"),
        ("put rate", f"{r.entries / max(r.ingest_s, 1e-9):,.0f} entries/s"),
        ("shutdown time", f"{human_duration(r.shutdown_s)} (SIGTERM to exit, last file sealed and uploaded)"),
        ("first query", f"{human_duration(r.first_query_s)} (cold)"),
        (
            "query latency",
            f"p50 {human_duration(_pct(lat, 50))}, p99 {human_duration(_pct(lat, 99))}, "
            f"max {human_duration(lat[-1] if lat else None)}",
        ),
        ("answers checked", f"{r.correct}/{r.queries} match what was ingested"),
        ("remote verified", "every object's size and CRC32C" if r.verify_ok else "PROBLEMS FOUND"),
    ]
    _say(table(["", "result"], rows))
    ok = r.clean and r.last_file_ok and r.correct == r.queries and r.verify_ok
    _say()
    _say("demo passed: every check held" if ok else "demo FAILED: see the lines marked above")
    return ok


def _reader(stream: IO[str], out: queue.Queue[str | None]) -> None:
    for line in stream:
        out.put(line)
    out.put(None)


def _ingest(child: subprocess.Popen[str], opts: DemoOptions, log_path: Path) -> dict[str, Any]:
    assert child.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_reader, args=(child.stdout, lines), daemon=True).start()
    with Progress("ingest", opts.messages, unit="messages", enabled=opts.show_progress) as bar:
        while True:
            try:
                line = lines.get(timeout=IDLE_TIMEOUT_S)
            except queue.Empty:
                raise DemoError(
                    f"the broker made no progress for {IDLE_TIMEOUT_S:.0f} s; see {log_path}"
                ) from None
            if line is None:
                child.wait()
                raise DemoError(
                    f"the broker exited early (status {child.returncode}):\n{_tail(log_path)}\n"
                    f"(full log: {log_path})"
                )
            event = json.loads(line)
            if event["event"] == "progress":
                bar.update(event["done"])
            elif event["event"] == "ingested":
                bar.update(event["entries"])
                result: dict[str, Any] = event
                return result


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _show_live_state(broker_dir: Path) -> None:
    """What the live store's journal says, and its current file, read from
    beside the running broker (read-only, no lock taken)."""
    view = read_journal(broker_dir)
    by_state: dict[str, int] = {}
    for rec in view.records:
        by_state[str(rec.state)] = by_state.get(str(rec.state), 0) + 1
    _say("      journal (read beside the live broker): " + ", ".join(f"{n} {s}" for s, n in by_state.items()))
    active = [rec for rec in view.records if rec.state is FileState.ACTIVE]
    if active:
        path = broker_dir / ACTIVE_DIR / f"{active[-1].file_id}.tix"
        report = inspect_file(path)
        count, capacity = report.fields.get("valid entries", 0), report.fields.get("capacity", 0)
        _say(
            f"      current file {active[-1].file_id}: {count:,} of {capacity:,} entries, "
            f"{report.fields.get('state')} (read by inspect)"
        )


def _show_last_file(broker_dir: Path, remote_url: str, opts: DemoOptions) -> tuple[bool, int, int]:
    """Shows that the last file was sealed and uploaded: its journal record,
    its manifest record and the object, checked against each other."""
    view = read_journal(broker_dir)
    files = [rec for rec in view.records if rec.state is not FileState.EMPTY]
    pending = [rec for rec in files if rec.state is not FileState.UPLOADED]
    uploaded_bytes = sum(rec.size or 0 for rec in files if rec.state is FileState.UPLOADED)
    if not files:
        _say("      no files in the journal")
        return False, 0, 0
    last = files[-1]
    ok = last.state is FileState.UPLOADED and not pending
    remote = open_remote(remote_url, endpoint_url=opts.endpoint_url)
    try:
        raw = remote.get(manifest_key(last.file_id))
        record = ManifestRecord.from_bytes(raw, manifest_key(last.file_id))
        info = remote.head(data_key(last.file_id))
    except Exception as exc:
        _say(f"      the remote copy of the last file cannot be read: {exc}")
        return False, len(files), uploaded_bytes
    finally:
        remote.close()
    matches = (
        info is not None
        and record.size == last.size == info.size
        and record.crc32c == last.crc32c
        and (info.crc32c is None or info.crc32c == last.crc32c)
        and record.count == last.count
    )
    ok = ok and matches
    count = last.count or 0
    fill = "partly filled" if count < opts.capacity else "full"
    pairs: list[tuple[str, object]] = [
        ("last file", f"{last.file_id}: {count:,} of {opts.capacity:,} entries ({fill})"),
        ("journal", f"{last.state}" + (f", error: {last.error}" if last.error else "")),
        ("object", f"{record.key}, {last.size:,} bytes, crc32c {last.crc32c or 0:#010x}"),
        ("manifest", f"{manifest_key(last.file_id)}: " + ("matches" if matches else "DOES NOT MATCH")),
        ("pending", "nothing" if not pending else ", ".join(f"{p.file_id} {p.state}" for p in pending)),
        ("shutdown record", view.meta.get("last_shutdown", "-")),
    ]
    _say("\n".join("      " + line for line in key_values(pairs).splitlines()))
    return ok, len(files), uploaded_bytes


def _expected(i_key: int, keys: int, messages: int, base_ms: int, begin: int, end: int) -> list[Entry]:
    hits = []
    for i in range(i_key, messages, keys):
        m = message(i, keys=keys, base_ms=base_ms)
        if begin <= m.timestamp_ms <= end:
            hits.append((m.timestamp_ms, i, Entry(m.queue_id, m.offset, m.size, m.timestamp_ms)))
    hits.sort(reverse=True)  # newest first; equal times: the later put first
    return [e for _, _, e in hits[:64]]


def _query_from_remote(
    reader_dir: Path, remote_url: str, opts: DemoOptions, keys: int, base_ms: int, r: _Results
) -> None:
    config = StoreConfig(
        endpoint_url=opts.endpoint_url,
        retry=RetryPolicy(attempts=4, base_delay_s=0.05, max_delay_s=1.0, deadline_s=20.0),
    )
    rng = random.Random(opts.seed)
    last_ms = base_ms + (opts.messages - 1) // 10
    store = IndexStore(reader_dir, remote_url, config)
    store.start()
    mismatches: list[str] = []
    try:
        with Progress("query", opts.queries, unit="queries", enabled=opts.show_progress) as bar:
            for n in range(opts.queries):
                k = rng.randrange(keys)
                if n % 4 == 3:  # a time window
                    begin = rng.randint(base_ms, last_ms)
                    end = min(last_ms, begin + rng.randint(0, max(1, (last_ms - base_ms) // 3)))
                else:
                    begin, end = 0, FOREVER
                started = time.perf_counter()
                got = store.query(TOPIC, f"order-{k}", begin, end, 64, strict=True)
                took = time.perf_counter() - started
                if n == 0:
                    r.first_query_s = took
                else:
                    r.latencies_s.append(took)
                want = _expected(k, keys, opts.messages, base_ms, begin, end)
                r.queries += 1
                if got == want:
                    r.correct += 1
                elif len(mismatches) < 3:
                    mismatches.append(f"order-{k} [{begin}, {end}]: got {got[:3]}..., expected {want[:3]}...")
                bar.update(n + 1)
        status = store.status()
        local = sum(1 for p in reader_dir.rglob("*") if p.suffix in (".tix", ".sealed"))
        _say(
            f"[3/4] a new store on an empty directory answered {r.queries} queries from the remote alone "
            f"({status.remote_files} remote files, {local} local index files): "
            f"{r.correct}/{r.queries} match what was ingested"
        )
        for line in mismatches:
            _say(f"      MISMATCH {line}")
        with Progress("verify", 0, unit="objects", enabled=opts.show_progress) as bar:
            report = verify_url(store.remote, deep=True, repair=False, progress=bar.update)
        r.verify_ok = report.ok
        _say(
            f"[4/4] deep verification: {report.checked_files} objects, {human_bytes(report.checked_bytes)} "
            f"downloaded and re-hashed: " + ("healthy" if report.ok else f"{len(report.problems)} problems")
        )
        for p in report.problems:
            _say(f"      {p.kind}: {p.key}: {p.detail}")
    finally:
        store.shutdown()


def _pct(sorted_values: list[float], pct: float) -> float | None:
    if not sorted_values:
        return None
    if len(sorted_values) == 1:
        return sorted_values[0]
    cuts = statistics.quantiles(sorted_values, n=100, method="inclusive")
    return cuts[min(98, max(0, int(pct) - 1))]


def default_slots(capacity: int) -> int:
    """About one slot per four entries, as RocketMQ's geometry."""
    return max(1, capacity // 4)
