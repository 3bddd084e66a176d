"""Crash torture: kill the torture workload (tests/torture_child.py) at
random moments and at named fault points, optionally lose whatever was not
flushed (power loss), then restart, shut down cleanly, and check from the
remote alone, on an empty directory:

- every put acknowledged (and, under power loss, acknowledged before a
  completed flush) is there;
- nothing else is: every entry served is one the workload put;
- no multipart upload is left open, and after verify(repair=True) no
  orphan either;
- the child never died of anything but our SIGKILL.

`python tests/torture.py --trials N` runs the long version (`make torture`);
tests/test_torture.py runs a bounded one in CI.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from tieredindex import IndexStore, StoreLockedError, open_remote
from tieredindex.faults import WRITE_PATH_POINTS
from tieredindex.journal import Journal
from tieredindex.layout import ACTIVE_DIR, JOURNAL_NAME, OWNER_KEY
from tieredindex.states import FileState

from store_helpers import small_config
from torture_child import KEYS, THREADS, expected_entry

CHILD = str(Path(__file__).with_name("torture_child.py"))
FOREVER = 2**63 - 1
ENTRIES_OFFSET_HEADER = 64
ENTRY_LEN = 40


@dataclasses.dataclass
class Outcome:
    mode: str
    acknowledged: int
    required: int
    lost: int
    wrong: int
    crashed: bool
    open_uploads: int
    orphans_left: int
    detail: str = ""

    @property
    def ok(self) -> bool:
        return not (self.lost or self.wrong or self.crashed or self.open_uploads or self.orphans_left)


@dataclasses.dataclass
class ChildLog:
    acked: set[tuple[int, int]]
    durable: set[tuple[int, int]]  # acknowledged before a completed flush
    flushed_counts: dict[str, int]  # unsealed file -> entries at the last completed flush


def parse(output: str) -> ChildLog:
    acked: set[tuple[int, int]] = set()
    durable: set[tuple[int, int]] = set()
    pending_snapshot: set[tuple[int, int]] | None = None
    flushed: dict[str, int] = {}
    for line in output.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "A" and len(parts) == 3:
            acked.add((int(parts[1]), int(parts[2])))
        elif parts[0] == "FS":
            pending_snapshot = set(acked)
        elif parts[0] == "FE" and pending_snapshot is not None:
            durable = pending_snapshot
            flushed = {}
            for item in parts[1:]:
                fid, _, count = item.partition(":")
                flushed[fid] = int(count)
            pending_snapshot = None
        elif parts[0] == "R":
            durable = set(acked)  # a clean shutdown made everything durable
            flushed = {}
    return ChildLog(acked, durable, flushed)


def lose_power(directory: Path, log: ChildLog, rng: random.Random) -> None:
    """What a power cut does to data never flushed: unsealed files keep their
    flushed entries and an arbitrary part of the rest, one entry possibly
    torn. Sealed files, the journal (SQLite, synchronous=FULL) and the remote
    were made durable before they were recorded, so they stay."""
    if not (directory / JOURNAL_NAME).exists():
        return  # killed before the store started: nothing was written
    journal = Journal(directory / JOURNAL_NAME)
    unsealed = {r.file_id for r in journal.files([FileState.ACTIVE, FileState.ROLLED])}
    journal.close()
    for path in sorted((directory / ACTIVE_DIR).glob("*.tix")):
        if path.stem not in unsealed:
            continue  # sealed (and fsynced) before its record moved on
        raw = bytearray(path.read_bytes())
        slots = int.from_bytes(raw[12:16], "little")
        capacity = int.from_bytes(raw[16:20], "little")
        entries_at = (ENTRIES_OFFSET_HEADER + 4 * slots + 63) // 64 * 64
        written = 0
        while written < capacity and any(
            raw[entries_at + written * ENTRY_LEN : entries_at + (written + 1) * ENTRY_LEN]
        ):
            written += 1
        keep = rng.randint(min(log.flushed_counts.get(path.stem, 0), written), written)
        for i in range(keep, written):
            start = entries_at + i * ENTRY_LEN
            if i == keep and rng.random() < 0.5:
                raw[start + rng.randrange(ENTRY_LEN)] ^= 0xFF  # torn
            else:
                raw[start : start + ENTRY_LEN] = bytes(ENTRY_LEN)
        raw[32:36] = (1).to_bytes(4, "little")  # it was open when the power went
        path.write_bytes(bytes(raw))


def check_remote(
    remote_url: str, scratch: Path, required: set[tuple[int, int]], max_seq: list[int]
) -> tuple[int, int]:
    """(lost, wrong) as seen by a new store on an empty directory."""
    found: set[tuple[int, int]] = set()
    wrong = 0
    fresh = IndexStore(scratch, remote_url, small_config())
    fresh.start()
    try:
        for k in range(KEYS):
            for e in fresh.query("t", f"k{k}", 0, FOREVER, 10_000_000):
                tid, seq = divmod(e.offset, 1_000_000_000)
                if not (0 <= tid < THREADS and seq <= max_seq[tid]) or expected_entry(tid, seq) != (
                    f"k{k}",
                    tuple(e),
                ):
                    wrong += 1
                    continue
                found.add((tid, seq))
    finally:
        fresh.shutdown()
    return len(required - found), wrong


def trial(remote_url: str, work: Path, rng: random.Random, mode: str, point: str | None) -> Outcome:
    directory = work / "store"
    faults = f"{point}:kill:{rng.randint(1, 4)}" if point else ""
    env = dict(os.environ, TIEREDINDEX_FAULTS=faults, TIX_CAPACITY=str(rng.choice([200, 500, 2000])))
    child = subprocess.Popen(
        [sys.executable, CHILD, str(directory), remote_url, str(rng.randrange(1 << 30))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    if point is None:
        time.sleep(rng.uniform(0.5, 3.0))
        child.send_signal(signal.SIGKILL)
    try:
        out, err = child.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        child.kill()
        out, err = child.communicate()
    crashed = child.returncode != -signal.SIGKILL
    log = parse(out)
    if mode == "power":
        lose_power(directory, log, rng)
    required = log.durable if mode == "power" else log.acked
    max_seq = [max((s for t, s in log.acked if t == tid), default=-1) + 1 for tid in range(THREADS)]
    store = IndexStore(directory, remote_url, small_config(capacity=2000))
    store.start()
    report = store.shutdown(timeout_s=60)
    detail = "" if report.clean else f"restart shutdown not clean: {report}"
    lost, wrong = check_remote(remote_url, work / f"fresh-{time.monotonic_ns()}", required, max_seq)
    remote = open_remote(remote_url)
    open_uploads = len(remote.list_multipart_uploads())
    # Repairs are the writer's: the verifier takes the writer's identity.
    writer_id = (Path(directory) / "STORE_ID").read_text().strip()
    verifier = IndexStore(
        work / f"verify-{time.monotonic_ns()}",
        remote_url,
        small_config(orphan_grace_s=0.0, store_id=writer_id),
    )
    verifier.start()
    try:
        verifier.verify(deep=False, repair=True)
    except StoreLockedError:
        # Killed before its first file: no writer claimed the prefix, and a
        # store with nothing to upload claims none. Nothing to repair there.
        assert remote.head(OWNER_KEY) is None
    orphans_left = len(verifier.verify(deep=True).problems)
    verifier.shutdown()
    if crashed:
        detail += f" child exit {child.returncode}: {err[-1500:]}"
    return Outcome(
        mode, len(log.acked), len(required), lost, wrong, crashed, open_uploads, orphans_left, detail
    )


def run(remote_urls: list[str], trials: int, seed: int, power_share: float = 0.25) -> list[Outcome]:
    rng = random.Random(seed)
    points = sorted(WRITE_PATH_POINTS)
    outcomes: list[Outcome] = []
    for n in range(trials):
        remote_url = remote_urls[n % len(remote_urls)]
        if remote_url.startswith("file://"):
            remote_url = f"{remote_url.rstrip('/')}/{n}"
        else:
            remote_url = f"{remote_url.rstrip('/')}/t{n}/"
        mode = "power" if rng.random() < power_share else "kill"
        point = None if rng.random() < 0.4 else points[n % len(points)]
        with tempfile.TemporaryDirectory(prefix="tix-torture-") as work:
            outcome = trial(remote_url, Path(work), rng, mode, point)
        outcome.detail = f"[{remote_url.split(':')[0]} {mode} {point or 'random'}] {outcome.detail}"
        outcomes.append(outcome)
        print(("ok   " if outcome.ok else "FAIL ") + f"{outcome}", flush=True)
    return outcomes


def summary(outcomes: list[Outcome]) -> str:
    kills = collections.Counter(o.detail.split("]")[0].split()[-1] for o in outcomes)
    lines = [
        f"trials: {len(outcomes)} ({sum(o.mode == 'power' for o in outcomes)} with power loss)",
        "kills per point: " + ", ".join(f"{k}={v}" for k, v in sorted(kills.items())),
        f"acknowledged puts checked: {sum(o.required for o in outcomes)}",
        f"lost: {sum(o.lost for o in outcomes)}  corrupt-served: {sum(o.wrong for o in outcomes)}  "
        f"crashes: {sum(o.crashed for o in outcomes)}  open uploads: {sum(o.open_uploads for o in outcomes)}  "
        f"orphans left: {sum(o.orphans_left for o in outcomes)}",
    ]
    return "\n".join(lines)


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    """A moto S3 server on 127.0.0.1 with bucket `torture`; returns it and
    the remote URL. Fake credentials go into this process's environment."""
    import socket

    import boto3

    os.environ.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1"
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    deadline = time.monotonic() + 60
    while True:
        try:
            client.create_bucket(Bucket="torture")
            return server, "s3://torture/run/"
        except Exception:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise
            time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--file-only", action="store_true", help="skip the S3 back end (no moto server)")
    args = parser.parse_args()
    server = None
    try:
        with tempfile.TemporaryDirectory(prefix="tix-torture-remote-") as tmp:
            urls = [Path(tmp).as_uri()]
            if not args.file_only:
                server, s3_url = start_moto()
                urls.append(s3_url)
            outcomes = run(urls, args.trials, args.seed)
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
    print(summary(outcomes))
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
