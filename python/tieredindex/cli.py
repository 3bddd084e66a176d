"""The ``tieredindex`` command line (also ``python -m tieredindex``).

Exit status: 0 success (``verify``: healthy; ``inspect``: intact), 1 the
command ran and found problems or could not finish (corrupt file, damaged
journal, unreachable remote for ``query``, failed checks), 2 bad usage
(unknown option, invalid URL, missing directory, a remote prefix holding no
store...), 3 incomplete: ``query`` left out files that failed a check;
``verify`` could not check (the remote could not be read, or some objects
could not be) and found no damage in what it did check. User mistakes get a
message saying what to do next, never a traceback. With ``--json`` a failed
command still prints one JSON document: ``{"error": ..., "exit_status": N}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tieredindex._native import CorruptFileError, RemoteError, StoreLockedError, TieredIndexError
from tieredindex.console import (
    Progress,
    format_ms,
    human_bytes,
    human_duration,
    key_values,
    table,
)
from tieredindex.remote import Remote, check_endpoint_url, open_remote

if TYPE_CHECKING:
    from tieredindex import Entry
    from tieredindex.store import IndexStore

MAX_TIME = 2**63 - 1
DEMO_MAX_MESSAGES = 10**9
"""The demo's timestamps (ten messages per millisecond, ending now) and
offsets stay valid far beyond it, but each entry takes ~40 bytes on the
local disk and again in the remote: 40 GB here."""
INCOMPLETE = 3
"""``query``'s exit status when files that failed a check were left out of
its answer; ``verify``'s when it could not check everything (and found no
damage in what it did)."""
MAX_COUNT = 2**63 - 1
"""The largest ``max_count`` the native queries accept (an i64)."""
JSON_ON_FAILURE = 'a failure prints {"error": ..., "exit_status": N}'
"""What ``--json`` promises when the command fails: still one JSON document."""
REMOTE_HINT = (
    "check the URL, the network, the credentials (AWS_ACCESS_KEY_ID, ... in the environment) "
    "and --endpoint-url for an S3-compatible store"
)


class UsageError(Exception):
    """Bad usage: exit status 2."""


class Failure(Exception):
    """The command could not do its job: exit status 1."""


class Unchecked(Exception):
    """``verify`` could not check (the remote could not be read): exit
    status 3, told apart from damage found (1)."""


# ----------------------------------------------------------------- helpers


def _print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2)
    sys.stdout.write("\n")


def _open_remote(url: str, endpoint_url: str | None, *, must_exist: bool = True) -> Remote:
    """Opens a remote named on the command line; a ``file://`` remote that
    does not exist is a usage error, not a new empty directory."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise UsageError(f"invalid remote url {url!r}: {exc}") from None
    if parts.scheme.lower() == "file" and endpoint_url:
        raise UsageError(f"--endpoint-url is for an s3:// remote; {url} is a directory")
    if parts.scheme.lower() == "file" and must_exist:
        path = Path(urllib.parse.unquote(parts.path))
        if path.is_absolute() and not path.is_dir():
            problem = "not a directory" if path.exists() else "no such directory"
            raise UsageError(f"{url}: {problem}; give the directory a store uploads to")
    try:
        return open_remote(url, endpoint_url=endpoint_url)
    except ValueError as exc:
        raise UsageError(f"{exc} (use file:///absolute/path or s3://bucket/prefix)") from None


def _require_store(remote: Remote, why: str = "check the --remote URL") -> None:
    """A usage error unless the prefix holds a store: an owner record, a
    manifest record or a data object (the owner record is written at the
    first upload only). A typo in the prefix otherwise looks like a healthy,
    empty store. One HEAD when the owner record is there."""
    from tieredindex.layout import DATA_PREFIX, MANIFEST_PREFIX, OWNER_KEY, file_id_of_key
    from tieredindex.remotecheck import retrying_call

    call = retrying_call()
    if call(partial(remote.head, OWNER_KEY), f"head {OWNER_KEY}") is not None:
        return
    for prefix in (MANIFEST_PREFIX, DATA_PREFIX):
        if any(file_id_of_key(o.key) for o in call(partial(remote.list, prefix), f"list {prefix}")):
            return
    raise UsageError(
        f"no tieredindex store at {remote.url} (no {OWNER_KEY}, no manifest records, no data objects): {why}"
    )


def _claimed_remote(directory: Path) -> str | None:
    """The remote the store in ``directory`` claimed (wrote to), by its
    journal; None when it has claimed none, or the journal cannot tell."""
    from tieredindex.localstatus import read_journal
    from tieredindex.store import REMOTE_URL_META

    try:
        return read_journal(directory, skip_unknown=True).meta.get(REMOTE_URL_META)
    except (TieredIndexError, OSError):
        return None


def _has_uploaded(directory: Path) -> bool:
    """Whether the store in ``directory`` has uploaded (or begun to upload)
    a file, by its journal; True when the journal cannot tell."""
    from tieredindex.localstatus import read_journal
    from tieredindex.states import FileState

    try:
        view = read_journal(directory, skip_unknown=True)
    except (TieredIndexError, OSError):
        return True
    return any(r.state in (FileState.UPLOADED, FileState.UPLOADING) for r in view.records)


def _store_dir(value: str, *, must_be_store: bool = True) -> Path:
    path = Path(value)
    if not path.exists():
        raise UsageError(f"--dir {value}: no such directory")
    if not path.is_dir():
        raise UsageError(f"--dir {value}: not a directory")
    from tieredindex.layout import JOURNAL_NAME

    if must_be_store and not (path / JOURNAL_NAME).is_file():
        raise UsageError(f"--dir {value}: not a store directory (no {JOURNAL_NAME})")
    return path


def _non_negative(name: str, maximum: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"{name} must not be negative, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{name} must be at most {maximum}, got {value}")
        return value

    return parse


def _seconds(name: str) -> Callable[[str], float]:
    """A finite number of seconds, 0 or more (not nan, not inf)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number of seconds, got {text!r}") from None
        if not math.isfinite(value) or value < 0:
            raise argparse.ArgumentTypeError(f"{name} must be a finite number of seconds >= 0, got {text!r}")
        return value

    return parse


def _endpoint_url(text: str) -> str:
    """``--endpoint-url``: an http:// or https:// URL (a usage error naming
    the option, not the remote URL's hint)."""
    try:
        check_endpoint_url(text, "--endpoint-url")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _positive(name: str, maximum: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = _non_negative(name, maximum)(text)
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be at least 1, got {value}")
        return value

    return parse


# ---------------------------------------------------------------- commands


def cmd_demo(args: argparse.Namespace) -> int:
    from tieredindex.demo import DemoError, DemoOptions, default_slots, max_files, run_demo

    if args.capacity > 2**32 - 2:
        raise UsageError("--capacity must be below 2**32 - 1")
    if args.slots is not None and args.slots > 2**32 - 2:
        raise UsageError("--slots must be below 2**32 - 1")
    files, most = -(-args.messages // args.capacity), max_files()
    if files > most:
        raise UsageError(
            f"--capacity {args.capacity} makes {files:,} index files of {args.messages:,} messages, and the "
            f"demo makes at most {most:,} (the broker holds each open; ulimit -n): give --capacity "
            f"{-(-args.messages // most)} or more, or fewer --messages"
        )
    if args.remote is not None:
        from tieredindex.layout import MANIFEST_PREFIX
        from tieredindex.remotecheck import retrying_call

        remote = _open_remote(args.remote, args.endpoint_url, must_exist=False)
        try:
            # Reachable, with credentials and a bucket, before a broker runs
            # for it (else it fails after its shutdown deadline, 30 s on).
            retrying_call()(partial(remote.list, MANIFEST_PREFIX), f"list {MANIFEST_PREFIX}")
        finally:
            remote.close()
    elif args.endpoint_url:
        raise UsageError(
            "--endpoint-url is for an s3:// remote; without --remote the demo uploads to a directory"
        )
    if args.dir:
        work = Path(args.dir)
        if work.exists() and (not work.is_dir() or any(work.iterdir())):
            raise UsageError(f"--dir {args.dir}: choose a new or empty directory (the demo writes into it)")
    opts = DemoOptions(
        messages=args.messages,
        capacity=args.capacity,
        slots=args.slots or default_slots(args.capacity),
        queries=args.queries,
        remote=args.remote,
        endpoint_url=args.endpoint_url,
        directory=Path(args.dir) if args.dir else None,
        seed=args.seed,
        show_progress=not args.no_progress,
    )
    try:
        return run_demo(opts)
    except DemoError as exc:
        raise Failure(str(exc)) from None


def cmd_inspect(args: argparse.Namespace) -> int:
    from tieredindex.inspection import NotARegularFileError, inspect_file

    reports = []
    for name in args.paths:
        path = Path(name)
        if not path.exists():
            raise UsageError(f"{name}: no such file")
        try:
            reports.append(inspect_file(path))
        except IsADirectoryError:
            raise UsageError(f"{name} is a directory: give an index file (.tix or .sealed)") from None
        except NotARegularFileError as exc:
            raise UsageError(f"{exc}: give an index file (.tix or .sealed)") from None
        except PermissionError as exc:
            raise Failure(f"{name}: cannot read it ({exc.strerror})") from None
    if args.json:
        _print_json([r.as_dict() for r in reports] if len(reports) > 1 else reports[0].as_dict())
    else:
        for n, r in enumerate(reports):
            if n:
                print()
            print(r.path)
            print(key_values(list(r.fields.items())))
            for note in r.notes:
                print(f"note: {note}")
            if r.ok:
                print("verdict: intact")
            else:
                print(f"verdict: CORRUPT ({len(r.problems)} problem{'s' if len(r.problems) > 1 else ''})")
                for problem in r.problems:
                    print(f"  - {problem}")
    return 0 if all(r.ok for r in reports) else 1


def cmd_query(args: argparse.Namespace) -> int:
    from tieredindex.config import StoreConfig
    from tieredindex.remotecheck import DEFAULT_POLICY
    from tieredindex.store import IndexStore

    begin = 0 if args.begin is None else args.begin
    end = MAX_TIME if args.end is None else args.end
    if begin > end:
        raise UsageError(f"--begin ({begin}) is after --end ({end})")
    if not args.topic:
        raise UsageError("--topic must not be empty")
    remote = _open_remote(args.remote, args.endpoint_url)  # checks the URL before any store exists
    try:
        directory = _store_dir(args.dir) if args.dir else None
        claimed = None if directory is None else _claimed_remote(directory)
        if directory is None:
            _require_store(remote)
        elif claimed is not None and claimed != remote.url:
            # Started on another remote, the store would upload its pending
            # files there, and its journal would count them as in its own.
            raise UsageError(
                f"--dir {args.dir} holds a store that writes to {claimed}, not {remote.url}: "
                f"give that one as --remote, or leave out --dir to read {remote.url} alone"
            )
        elif claimed is None and _has_uploaded(directory):
            # A stopped store that has uploaded nothing may be all there is.
            # One that has uploads elsewhere: started on a --remote holding
            # no store, it would upload its pending files there, and its
            # journal would count them as in the remote it really uses.
            _require_store(
                remote,
                f"--dir {args.dir} holds a store that uploads to another remote; give that one as --remote",
            )
    except RemoteError as exc:
        raise Failure(f"the remote could not be read: {exc}\n({REMOTE_HINT})") from None
    finally:
        remote.close()
    config = StoreConfig(endpoint_url=args.endpoint_url, retry=DEFAULT_POLICY)
    with tempfile.TemporaryDirectory(prefix="tieredindex-query-") as tmp:
        store = IndexStore(directory or Path(tmp) / "store", args.remote, config)
        try:
            store.start()
        except StoreLockedError:
            raise Failure(
                f"--dir {directory}: a live store holds this directory; query the remote alone "
                "(leave out --dir), or stop the broker first"
            ) from None
        try:
            with _reported_here(args.verbose):
                entries, skipped = _answer(store, args.topic, args.key, begin, end, args.max)
            status = store.status()
        except RemoteError as exc:
            raise Failure(f"the remote could not be read: {exc}\n({REMOTE_HINT})") from None
        finally:
            store.shutdown()
    if status.last_error and not entries:
        raise Failure(f"the remote could not be read: {status.last_error}\n({REMOTE_HINT})")
    if skipped:
        n = len(skipped)
        print(
            f"tieredindex query: incomplete answer: {n} file{'s' if n > 1 else ''} that could hold entries "
            f"failed a check and {'were' if n > 1 else 'was'} skipped "
            f"(see tieredindex verify --remote {args.remote}):\n"
            + "\n".join(f"  {file_id}: {why}" for file_id, why in sorted(skipped.items())),
            file=sys.stderr,
        )
    code = INCOMPLETE if skipped else 0
    if args.json:
        _print_json([e._asdict() for e in entries])
        return code
    if not entries:
        window = "" if args.begin is None and args.end is None else f" between {begin} and {end}"
        print(f"no entries for key {args.key!r} in topic {args.topic!r}{window}")
        return code
    rows = [(e.timestamp_ms, format_ms(e.timestamp_ms), e.queue_id, e.offset, e.size) for e in entries]
    print(table(["timestamp_ms", "time (UTC)", "queue_id", "offset", "size"], rows, numeric=(0, 2, 3, 4)))
    more = " (the --max limit: there may be more)" if len(entries) == args.max else ""
    print(f"{len(entries)} entries, newest first{more}")
    return code


def _answer(
    store: IndexStore, topic: str, key: str, begin: int, end: int, max_count: int
) -> tuple[list[Entry], dict[str, str]]:
    """The entries, and the remote files that could hold some but failed a
    check (file id -> why). Strict first: an unreadable remote raises (no
    answer to trust). A file that fails a check is quarantined and raises
    too: then the files that pass answer alone."""
    try:
        return store.query(topic, key, begin, end, max_count, strict=True), {}
    except CorruptFileError:
        pass
    error_before = store.status().last_error
    entries = store.query(topic, key, begin, end, max_count)
    error = store.status().last_error
    if error != error_before:  # a read failed: the remote, not a file, is the problem
        raise Failure(f"the remote could not be read: {error}\n({REMOTE_HINT})")
    skipped = {q.file_id: q.reason for q in store.journal.remote_quarantine() if q.overlaps(begin, end)}
    return entries, skipped


@contextlib.contextmanager
def _reported_here(verbose: int) -> Iterator[None]:
    """What fails in here the command reports itself: without -v, the
    library's ERROR lines would say it a second time (for every thread, a
    --dir store's uploads too, while it lasts)."""
    logger = logging.getLogger("tieredindex")
    level = logger.level
    if not verbose:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def cmd_verify(args: argparse.Namespace) -> int:
    from tieredindex.localstatus import holder_pid
    from tieredindex.remotecheck import verify_url

    remote = _open_remote(args.remote, args.endpoint_url)
    try:
        directory = _store_dir(args.dir) if args.dir else None
        if args.repair and directory is not None:
            pid = holder_pid(directory)
            if pid is not None:
                raise Failure(
                    f"a live store (pid {pid}) holds {directory}: stop it before --repair, or let it "
                    "repair itself (IndexStore.verify(repair=True))"
                )
        _require_store(remote)
        with Progress("verify", 0, unit="files", enabled=args.deep) as bar:
            report = verify_url(
                remote,
                deep=args.deep,
                repair=args.repair,
                directory=directory,
                grace_s=args.grace,
                progress=bar.update,
            )
    except RemoteError as exc:
        raise Unchecked(f"could not check the remote: {exc}\n({REMOTE_HINT})") from None
    finally:
        remote.close()
    # Damage found (1) comes first; objects that could only not be read (the
    # remote failing) leave the answer open (3): neither is "healthy".
    damaged = any(not p.fixed and p.kind != "unchecked" for p in report.problems)
    code = 0 if report.ok else 1 if damaged else INCOMPLETE
    if args.json:
        _print_json(
            {
                "ok": report.ok,
                "checked_files": report.checked_files,
                "checked_bytes": report.checked_bytes,
                "problems": [
                    {"kind": p.kind, "key": p.key, "detail": p.detail, "action": p.action, "fixed": p.fixed}
                    for p in report.problems
                ],
            }
        )
        return code
    how = (
        f"deep: {human_bytes(report.checked_bytes)} downloaded and re-hashed"
        if args.deep
        else "sizes and recorded CRC32Cs"
    )
    print(f"{args.remote}: {report.checked_files} files checked ({how})")
    if report.problems:
        headers = ["problem", "key", "detail"] + (["action"] if args.repair else [])
        rows = [
            [p.kind, p.key, p.detail]
            + ([f"{p.action}{'' if p.fixed else ' (not fixed)'}"] if args.repair else [])
            for p in report.problems
        ]
        print(table(headers, rows))
    if report.ok:
        print("healthy" if not report.problems else "healthy after repair")
        return 0
    left = sum(not p.fixed for p in report.problems)
    if code == INCOMPLETE:
        objects = sum(1 for p in report.problems if not p.fixed and p.key)
        what = [f"{objects} object{'s' if objects > 1 else ''}"] if objects else []
        if any(not p.fixed and not p.key for p in report.problems):
            what.append("the open multipart uploads")  # an empty key: the remote would not list them
        print(
            f"incomplete: {' and '.join(what)} could not be checked (the remote failed), "
            "no damage found in the rest; run verify again once the remote answers"
        )
        return code
    hint = "" if args.repair else "; --repair --dir STORE_DIR re-uploads from a store's local copies"
    print(f"{left} problem{'s' if left > 1 else ''} found{hint}")
    return code


def cmd_status(args: argparse.Namespace) -> int:
    from tieredindex.localstatus import NotAStoreError, local_status

    try:
        st = local_status(args.dir)
    except NotAStoreError as exc:
        raise UsageError(f"--dir: {exc}") from None
    if args.json:
        _print_json(st.as_dict())
        return 0
    live = f"running (pid {st.live_pid})" if st.live_pid else "not running (no live store holds it)"
    error = "-"
    if st.last_error:
        where = [f"file {st.last_error_file}"] if st.last_error_file else []
        if st.last_error_age_s is not None:
            where.append(f"{human_duration(max(0.0, st.last_error_age_s))} ago")
        error = st.last_error + (f" ({', '.join(where)})" if where else "")
    pairs: list[tuple[str, object]] = [
        ("store", f"{st.directory}: {live}"),
        ("files", ", ".join(f"{n} {s}" for s, n in st.files_by_state.items()) or "none"),
        ("pending upload", f"{len(st.pending_files)} files, {human_bytes(st.pending_bytes)} sealed"),
        (
            "oldest pending",
            human_duration(st.oldest_pending_age_s) + (" old" if st.oldest_pending_age_s else ""),
        ),
        ("last error", error),
        ("last shutdown", st.last_shutdown or "-"),
        ("quarantined", ", ".join(st.quarantined) or "none"),
        ("conflicts", ", ".join(st.conflicts) or "none"),
        ("local disk", ", ".join(f"{k}/ {human_bytes(v)}" for k, v in st.local_bytes.items())),
    ]
    print(key_values(pairs))
    return 0


# ------------------------------------------------------------------ parser

_EXAMPLES = {
    "demo": """examples:
  tieredindex demo
  tieredindex demo --messages 2000000 --capacity 250000 --dir ./demo-run
  tieredindex demo --remote s3://my-bucket/tix --endpoint-url http://127.0.0.1:9000

exit status: 0 every answer checked out, 1 the demo failed (it says where), 2 bad usage""",
    "inspect": """examples:
  tieredindex inspect /var/lib/broker/index/active/1718000000000-1a2b3c4d.tix
  tieredindex inspect --json /var/lib/broker/index/sealed/1718000000000-1a2b3c4d.sealed

exit status: 0 intact, 1 corrupt (the problems say where), 2 bad usage
(with --json, a failure prints {"error": ..., "exit_status": N})""",
    "query": """examples:
  tieredindex query --remote file:///srv/tix --topic orders --key order-42
  tieredindex query --remote s3://my-bucket/tix --topic orders --key order-42 \\
      --begin 1718000000000 --end 1718003600000 --max 10 --json

exit status: 0 answered (found or not), 1 the remote could not be read, 2 bad usage
(including a --remote prefix that holds no store), 3 incomplete: the files that
passed their checks answered, those that failed one (named on stderr) were skipped
(with --json, a failure prints {"error": ..., "exit_status": N}, not an array)""",
    "verify": """examples:
  tieredindex verify --remote s3://my-bucket/tix
  tieredindex verify --remote file:///srv/tix --deep
  tieredindex verify --remote file:///srv/tix --dir /var/lib/broker/index --deep --repair

exit status: 0 healthy, 1 problems found (or left after --repair), 2 bad usage
(including a --remote prefix that holds no store), 3 could not check: the remote,
or some of its objects, could not be read (unreachable, credentials, ...) and
nothing checked was damaged; run it again once the remote answers
(with --json, a failure prints {"error": ..., "exit_status": N})""",
    "status": """examples:
  tieredindex status --dir /var/lib/broker/index
  tieredindex status --dir /var/lib/broker/index --json

exit status: 0 shown, 1 the journal is damaged or cannot be read, 2 bad usage
(with --json, a failure prints {"error": ..., "exit_status": N})""",
}


class _ArgumentError(SystemExit):
    """A command line argparse refused: exit status 2, ``message`` says why."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(2)
        self.prog, self.message = prog, message


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n(see {self.prog} --help)\n")
        raise _ArgumentError(self.prog, message)


def _sub(sub: Any, name: str, help_text: str, description: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help_text,
        description=description,
        epilog=_EXAMPLES[name],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def _remote_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--remote", required=True, metavar="URL", help="file:///absolute/path or s3://bucket/prefix"
    )
    p.add_argument(
        "--endpoint-url",
        type=_endpoint_url,
        metavar="URL",
        help="S3-compatible endpoint (default: AWS_ENDPOINT_URL or AWS)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tieredindex",
        description=(
            "Tiered-storage index for message brokers: demo, inspect files, query, verify, status, "
            "RocketMQ interop."
        ),
        epilog="run 'tieredindex COMMAND --help' for a command's options, examples and exit statuses",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log to stderr (-v: state changes and retries, -vv: debug)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    demo = _sub(
        sub,
        "demo",
        "run the main job end to end, offline",
        "A broker-like process indexes messages (files fill, roll, are sealed and uploaded), is "
        "stopped with SIGTERM, and a new store on an empty directory answers queries from the remote "
        "alone; every answer is checked. Runs in a temporary folder unless --dir is given.",
    )
    demo.add_argument(
        "--messages",
        type=_positive("--messages", DEMO_MAX_MESSAGES),
        default=1_000_000,
        help=f"messages to index (1000000, at most {DEMO_MAX_MESSAGES})",
    )
    demo.add_argument(
        "--capacity",
        type=_positive("--capacity"),
        default=120_000,
        help="entries per index file (120000; the demo makes at most 1000 files)",
    )
    demo.add_argument("--slots", type=_positive("--slots"), help="hash slots per file (capacity / 4)")
    demo.add_argument("--queries", type=_positive("--queries"), default=300, help="queries to check (300)")
    demo.add_argument("--dir", help="work (and keep everything) in this new or empty directory")
    demo.add_argument(
        "--remote", metavar="URL", help="upload here instead (s3://bucket/prefix or file:///dir)"
    )
    demo.add_argument(
        "--endpoint-url", type=_endpoint_url, metavar="URL", help="S3-compatible endpoint for --remote"
    )
    demo.add_argument("--seed", type=int, default=42, help="seed of the query sample")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(func=cmd_demo)

    inspect = _sub(
        sub,
        "inspect",
        "show what an index file holds and check it",
        "Header, counts, time range, slot fill, checksums and state of an unsealed (.tix) or sealed "
        "file. Read-only: safe on a file a live store is writing.",
    )
    inspect.add_argument("paths", nargs="+", metavar="PATH", help="index file(s)")
    inspect.add_argument("--json", action="store_true", help=f"print JSON ({JSON_ON_FAILURE})")
    inspect.set_defaults(func=cmd_inspect)

    query = _sub(
        sub,
        "query",
        "look a key up in a remote (and a stopped store's local files)",
        "Entries of KEY in TOPIC, newest first, from the remote store alone (through a temporary "
        "directory), or also from the local files of the stopped store in --dir (which is then "
        "started: it finishes any pending uploads before it stops).",
    )
    _remote_args(query)
    query.add_argument(
        "--dir",
        help="a stopped store's directory whose local files are searched too (--remote must be the one it uploads to)",
    )
    query.add_argument("--topic", required=True)
    query.add_argument("--key", required=True)
    # Timestamps are 0 to 2**63-1 ms (API.md), and the native queries take
    # max_count as a signed 64-bit integer: larger values are usage errors.
    query.add_argument(
        "--begin", type=_non_negative("--begin", MAX_TIME), metavar="MS", help="from (ms, default 0)"
    )
    query.add_argument(
        "--end", type=_non_negative("--end", MAX_TIME), metavar="MS", help="to (ms, default: all time)"
    )
    query.add_argument(
        "--max", type=_positive("--max", MAX_COUNT), default=64, metavar="N", help="at most N results (64)"
    )
    query.add_argument(
        "--json", action="store_true", help=f"print a JSON array of entries ({JSON_ON_FAILURE})"
    )
    query.set_defaults(func=cmd_query)

    verify = _sub(
        sub,
        "verify",
        "check every remote object against the manifest",
        "Missing objects, size and checksum mismatches, unreadable manifest records, orphans and "
        "unfinished multipart uploads. --deep downloads and re-hashes every object. --repair "
        "re-uploads from the verified local copies of the store in --dir, deletes orphans and "
        "aborts stale multipart uploads; nothing is changed without it. The objects and uploads "
        "of a store nested under a longer prefix are reported, never touched.",
    )
    _remote_args(verify)
    verify.add_argument("--dir", help="the store directory holding local copies (for --repair)")
    verify.add_argument("--deep", action="store_true", help="download and re-hash every object")
    verify.add_argument("--repair", action="store_true", help="fix what can be fixed")
    verify.add_argument(
        "--grace",
        type=_seconds("--grace"),
        default=3600.0,
        metavar="SECONDS",
        help="an unlisted object is an orphan, and an open upload stale, once older than this (3600)",
    )
    verify.add_argument("--json", action="store_true", help=f"print JSON ({JSON_ON_FAILURE})")
    verify.set_defaults(func=cmd_verify)

    status = _sub(
        sub,
        "status",
        "a store directory's files, pending uploads and last error",
        "Read from the store's journal, read-only and without its lock: safe beside a live broker.",
    )
    status.add_argument("--dir", required=True, help="the store directory")
    status.add_argument("--json", action="store_true", help=f"print JSON ({JSON_ON_FAILURE})")
    status.set_defaults(func=cmd_status)

    from tieredindex.rocketmq import add_rocketmq_commands

    add_rocketmq_commands(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tieredindex")
    except PackageNotFoundError:
        return "(source tree)"


def _configure_logging(verbose: int) -> None:
    # Without -v only errors: the commands report failures themselves.
    level = logging.ERROR if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("tieredindex")
    root.addHandler(handler)
    root.setLevel(level)


def _wants_json(argv: Sequence[str]) -> bool:
    """Whether the command line asks for ``--json`` (as argparse reads it:
    any unambiguous abbreviation, before a ``--``)."""
    for arg in argv:
        if arg == "--":
            return False
        if len(arg) >= 3 and "--json".startswith(arg):
            return True
    return False


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = _wants_json(argv)

    def failed(code: int, message: str) -> int:
        """Reports a failure: the message on stderr, and with --json also
        one JSON document on stdout (a script reading it gets no silence)."""
        print(message, file=sys.stderr)
        if as_json:
            _print_json({"error": message, "exit_status": code})
        return code

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _ArgumentError as exc:  # argparse has written the message to stderr
        if as_json:
            _print_json({"error": f"{exc.prog}: error: {exc.message}", "exit_status": 2})
        raise
    _configure_logging(args.verbose)
    prog = f"tieredindex {args.command}"
    if getattr(args, "rocketmq_command", None):
        prog += f" {args.rocketmq_command}"
    try:
        result: int = args.func(args)
        return result
    except UsageError as exc:
        return failed(2, f"{prog}: error: {exc}")
    except Failure as exc:
        return failed(1, f"{prog}: {exc}")
    except Unchecked as exc:
        return failed(INCOMPLETE, f"{prog}: {exc}")
    except RemoteError as exc:
        return failed(1, f"{prog}: the remote failed: {exc}\n({REMOTE_HINT})")
    except TieredIndexError as exc:
        return failed(1, f"{prog}: {exc}")
    except BrokenPipeError:  # the reader went away (| head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:
        return failed(1, f"{prog}: {exc}")
    except KeyboardInterrupt:
        return failed(130, f"{prog}: interrupted")
    except Exception as exc:  # a bug: its traceback follows, but --json still gets its document
        if as_json:
            _print_json({"error": f"{prog}: internal error: {exc!r}", "exit_status": 1})
        raise


if __name__ == "__main__":
    sys.exit(main())
