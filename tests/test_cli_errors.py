"""Operator mistakes and odd inputs on the `tieredindex` command line: each
gets its exit status (API.md: 1 problem found or failure, 2 bad usage) and a
message naming the problem, never a traceback or a hang. Subprocesses, as
in test_cli.py."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from tieredindex import IndexFile, IndexStore, open_remote
from tieredindex.layout import DATA_PREFIX, JOURNAL_NAME, MANIFEST_PREFIX, OWNER_KEY, SEALED_DIR

from store_helpers import listing_not_implemented, small_config


def run(*args: str, timeout: float = 120, prefix: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*prefix, sys.executable, "-m", "tieredindex", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


# ---------------------------------------------------------------- inspect


def test_inspect_entries_older_than_begin_are_intact(tmp_path: Path) -> None:
    """API.md allows timestamps below begin_ms; the writer's end_ms is the
    largest timestamp put, so it may be below begin_ms."""
    path = tmp_path / "old.tix"
    with IndexFile.create(path, slots=8, capacity=10, begin_ms=2_000) as f:
        f.put("k", 1, 1, 1, 1_000)
        f.put("j", 1, 2, 1, 1_500)
    assert IndexFile.open(path).end_ms == 1_500
    result = run("inspect", str(path), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    info = json.loads(result.stdout)
    assert info["ok"] is True, info["problems"]
    assert "end 1500" in info["fields"]["header summary"]


def test_inspect_empty_file_end_time_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "empty.tix"
    IndexFile.create(path, slots=8, capacity=10, begin_ms=2_000).close()
    assert run("inspect", str(path)).returncode == 0
    # An empty file whose header claims another end time (with a valid
    # header checksum, so the summary is trusted) is inconsistent.
    from tieredindex._native import crc32c

    data = bytearray(path.read_bytes())
    data[48:56] = (7_777).to_bytes(8, "little")
    data[56:60] = crc32c(bytes(data[32:56])).to_bytes(4, "little")
    path.write_bytes(data)
    result = run("inspect", str(path))
    assert result.returncode == 1, result.stdout
    assert "header end time 7777" in result.stdout and "begin time 2000" in result.stdout


def test_inspect_truncated_empty_file_is_corrupt_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "e.tix"
    IndexFile.create(path, slots=64, capacity=100, begin_ms=1_000).close()
    os.truncate(path, 100)  # cuts the slot table short
    result = run("inspect", str(path))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "CORRUPT" in result.stdout and "truncated" in result.stdout
    assert result.stderr == ""


def test_inspect_refuses_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.tix"
    os.mkfifo(fifo)
    result = run("inspect", str(fifo), timeout=20)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "FIFO" in result.stderr and str(fifo) in result.stderr
    assert result.stdout == ""


# ------------------------------------------------------------------ query


@pytest.mark.parametrize(
    "args",
    [
        ["--end", str(2**63)],
        ["--begin", str(2**63)],
        ["--max", str(2**63)],
        ["--max", "99999999999999999999"],
    ],
)
def test_query_out_of_range_numbers_are_usage_errors(tmp_path: Path, args: list[str]) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    result = run("query", "--remote", remote.as_uri(), "--topic", "t", "--key", "k", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{args[0]} must be at most {2**63 - 1}" in result.stderr
    assert result.stdout == ""


def test_query_accepts_the_largest_numbers(tmp_path: Path) -> None:
    _, remote_url = _stopped_store(tmp_path)
    top = str(2**63 - 1)
    result = run(
        "query", "--remote", remote_url, "--topic", "t", "--key", "k",
        "--begin", top, "--end", top, "--max", top, "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


# ------------------------------------------------------------------- demo


@pytest.mark.parametrize("option", ["--capacity", "--slots"])
def test_demo_geometry_above_u32_is_a_usage_error(tmp_path: Path, option: str) -> None:
    result = run(
        "demo", "--messages", "10", "--capacity", "100", option, str(2**32 - 1),
        "--no-progress", "--dir", str(tmp_path / "demo"),
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{option} must be below 2**32 - 1" in result.stderr
    assert not (tmp_path / "demo").exists()  # refused before anything ran


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--messages", "99999999999999999999"], "--messages must be at most 1000000000"),
        (["--messages", "3000", "--capacity", "1"], "--capacity 1 makes 3,000 index files"),
        (["--capacity", "1"], "give --capacity 1000 or more"),
    ],
)
def test_demo_sizes_it_cannot_run_are_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    """Too many messages overflow the demo's timestamps; too small a
    capacity makes more files than the broker can hold open."""
    result = run("demo", *args, "--no-progress", "--dir", str(tmp_path / "demo"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert not (tmp_path / "demo").exists()  # refused before anything ran


def test_demo_on_an_unreachable_remote_fails_before_its_broker_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not after a broker ran for it and its shutdown waited out the
    deadline (30 s), with a half-written demo directory left behind."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    demo = tmp_path / "demo"
    result = run(
        *_unreachable_s3(
            "demo", "--messages", "1000", "--capacity", "500", "--no-progress", "--dir", str(demo)
        )
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the remote failed: list manifest/" in result.stderr and "--endpoint-url" in result.stderr
    assert result.stdout == "" and not demo.exists()


# ----------------------------------------------------------------- verify


@pytest.mark.parametrize("grace", ["-5", "-0.001", "nan", "inf", "-inf", "soon"])
def test_verify_grace_must_be_finite_and_not_negative(tmp_path: Path, grace: str) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    result = run("verify", "--remote", remote.as_uri(), f"--grace={grace}")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--grace must be a" in result.stderr and grace in result.stderr
    assert result.stdout == ""


def test_verify_grace_zero_is_accepted(tmp_path: Path) -> None:
    _, remote_url = _stopped_store(tmp_path)
    result = run("verify", "--remote", remote_url, "--grace", "0")
    assert result.returncode == 0, result.stdout + result.stderr


# ----------------------------------------------------------------- remote


def _stopped_store(tmp_path: Path) -> tuple[Path, str]:
    """A cleanly stopped store with three uploaded files: (dir, remote url)."""
    directory, remote_url = tmp_path / "store", (tmp_path / "remote").as_uri()
    store = IndexStore(directory, remote_url, small_config())
    store.start()
    for i in range(120):
        store.put("orders", f"k{i % 7}", queue_id=0, offset=i, size=1, timestamp_ms=1_000 + i)
    assert store.shutdown().clean
    return directory, remote_url


@pytest.mark.parametrize("command", ["verify", "query"])
def test_a_prefix_with_no_store_is_an_error_naming_it(tmp_path: Path, remote_url: str, command: str) -> None:
    """A wrong or empty prefix (a typo) is not a healthy, empty store."""
    if remote_url.startswith("file:"):
        (tmp_path / "remote").mkdir()
    args = ["--topic", "t", "--key", "k"] if command == "query" else []
    result = run(command, "--remote", remote_url, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    where = open_remote(remote_url).url
    assert f"no tieredindex store at {where} (no OWNER.json, no manifest records" in result.stderr
    assert result.stdout == ""


def test_a_prefix_with_data_but_no_owner_record_is_still_a_store(tmp_path: Path) -> None:
    """The owner record is written at the first upload only (and a store
    may have lost it): its manifest records, or even data objects alone,
    still make the prefix a store."""
    _, remote_url = _stopped_store(tmp_path)
    remote = open_remote(remote_url)
    remote.delete(OWNER_KEY)
    query = run("query", "--remote", remote_url, "--topic", "orders", "--key", "k1", "--json")
    assert query.returncode == 0, query.stderr
    assert len(json.loads(query.stdout)) == len(range(1, 120, 7))
    for record in remote.list(MANIFEST_PREFIX):
        remote.delete(record.key)
    verify = run("verify", "--remote", remote_url)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "0 files checked" in verify.stdout and "healthy" in verify.stdout


def _without_root_privilege() -> list[str]:
    """A command prefix under which file modes apply: none for a user; for
    root, setpriv dropping the capabilities that let it read anything."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: file modes cannot be made to apply")
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}"]


def test_verify_and_query_fail_on_an_unreadable_remote_folder(tmp_path: Path) -> None:
    """A folder under a file:// remote that cannot be read fails the
    listing, naming it, rather than looking like an empty, healthy store:
    query cannot answer (1), verify could not check (3, not damage found)."""
    _, remote_url = _stopped_store(tmp_path)
    locked = tmp_path / "remote" / "manifest"
    locked.chmod(0)
    try:
        prefix = _without_root_privilege()
        verify = run("verify", "--remote", remote_url, prefix=prefix)
        query = run("query", "--remote", remote_url, "--topic", "orders", "--key", "k1", prefix=prefix)
    finally:
        locked.chmod(0o755)
    for result, code in ((verify, 3), (query, 1)):
        assert result.returncode == code, result.stdout + result.stderr
        assert f"Permission denied: '{locked}'" in result.stderr
        assert "healthy" not in result.stdout and "no entries" not in result.stdout


def test_a_file_given_for_a_directory_is_not_a_directory(tmp_path: Path) -> None:
    _, remote_url = _stopped_store(tmp_path)
    afile = tmp_path / "x.tix"
    afile.write_bytes(b"")
    for args in (
        ["status", "--dir", str(afile)],
        ["verify", "--remote", afile.as_uri()],
        ["query", "--remote", afile.as_uri(), "--topic", "t", "--key", "k"],
        ["query", "--remote", remote_url, "--dir", str(afile), "--topic", "t", "--key", "k"],
        ["rocketmq", "audit", "--store-path", str(afile), "--tiered-path", str(tmp_path)],
    ):
        result = run(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert (
            f"{afile}: not a directory" in result.stderr
            or f"{afile.as_uri()}: not a directory" in result.stderr
        )
        assert "no such" not in result.stderr


@pytest.mark.parametrize("endpoint", ["localhost:9000", "http://[::1", "ftp://host"])
@pytest.mark.parametrize("command", ["verify", "query", "demo"])
def test_a_bad_endpoint_url_is_a_usage_error_naming_it(tmp_path: Path, command: str, endpoint: str) -> None:
    """Named as --endpoint-url, not as the remote URL ("use file:///absolute/path or s3://...")."""
    args = ["--topic", "t", "--key", "k"] if command == "query" else []
    result = run(command, "--remote", "s3://bucket/p", "--endpoint-url", endpoint, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--endpoint-url" in result.stderr and endpoint in result.stderr
    assert "file:///absolute/path" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["verify", "--remote", "REMOTE"],
        ["query", "--remote", "REMOTE", "--topic", "t", "--key", "k"],
        ["demo", "--remote", "REMOTE"],
        ["demo"],  # the demo's own local directory
    ],
)
def test_endpoint_url_without_an_s3_remote_is_a_usage_error(tmp_path: Path, args: list[str]) -> None:
    _, remote_url = _stopped_store(tmp_path)
    args = [remote_url if a == "REMOTE" else a for a in args]
    if args[0] == "demo":
        args += ["--messages", "500", "--capacity", "200", "--queries", "5", "--no-progress"]
        args += ["--dir", str(tmp_path / "demo")]
    result = run(*args, "--endpoint-url", "http://127.0.0.1:9000")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--endpoint-url is for an s3:// remote" in result.stderr
    assert result.stdout == "" and not (tmp_path / "demo").exists()


# ---------------------------------------------------------------- journal


def _store_with_a_bogus_state(tmp_path: Path) -> tuple[Path, str, str]:
    """A stopped store whose journal records its first file in a state no
    version knows. Returns (dir, remote url, that file's id)."""
    directory, remote_url = _stopped_store(tmp_path)
    db = sqlite3.connect(directory / JOURNAL_NAME)
    [(file_id,)] = db.execute("SELECT file_id FROM files ORDER BY file_id LIMIT 1").fetchall()
    db.execute("UPDATE files SET state = 'BOGUS' WHERE file_id = ?", (file_id,))
    db.commit()
    db.close()
    return directory, remote_url, file_id


def test_unknown_journal_state_is_named_not_a_crash(tmp_path: Path) -> None:
    directory, remote_url, file_id = _store_with_a_bogus_state(tmp_path)
    for args in (
        ["status", "--dir", str(directory)],
        ["status", "--dir", str(directory), "--json"],
        ["verify", "--remote", remote_url, "--dir", str(directory)],
    ):
        result = run(*args)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert f"file {file_id} is in state 'BOGUS'" in result.stderr, args
        assert str(directory / JOURNAL_NAME) in result.stderr
        if "--json" in args:  # the error, as JSON
            assert json.loads(result.stdout)["error"] in result.stderr
        elif args[0] == "status":
            assert result.stdout == ""

    # inspect checks the file itself; the journal row is a note.
    own = run("inspect", str(directory / SEALED_DIR / f"{file_id}.sealed"), "--json")
    assert own.returncode == 0, own.stdout + own.stderr
    info = json.loads(own.stdout)
    assert info["ok"] is True and info["fields"]["journal"].startswith("BOGUS")
    assert any("'BOGUS'" in note for note in info["notes"])
    other = next(p for p in (directory / SEALED_DIR).glob("*.sealed") if p.stem != file_id)
    result = run("inspect", str(other), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["fields"]["journal"] == "UPLOADED"


# ----------------------------------------------------------------- status


def test_status_shows_the_stores_last_error(tmp_path: Path) -> None:
    """The store records errors that fail no file in particular (an
    unreachable remote) in journal meta 'last_error' as "<unix time>
    <message>"; status shows the newer of it and the newest file error."""
    directory, _ = _stopped_store(tmp_path)
    now = time.time()
    db = sqlite3.connect(directory / JOURNAL_NAME)
    db.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_error', ?)",
        (f"{now - 600:.3f} RemoteError: s3://b/p: unreachable",),
    )
    db.commit()
    st = json.loads(run("status", "--dir", str(directory), "--json").stdout)
    assert st["last_error"] == "RemoteError: s3://b/p: unreachable"
    assert st["last_error_file"] is None and 595 < st["last_error_age_s"] < 1200
    text = run("status", "--dir", str(directory)).stdout
    line = next(x for x in text.splitlines() if x.startswith("last error"))
    assert "RemoteError: s3://b/p: unreachable (10." in line and "min ago)" in line, text

    # An older file error does not hide it; a newer one wins.
    [(file_id,)] = db.execute("SELECT file_id FROM files ORDER BY file_id LIMIT 1").fetchall()
    db.execute(
        "UPDATE files SET error = 'CorruptFileError: bad', updated_at = ? WHERE file_id = ?",
        (now - 3600, file_id),
    )
    db.commit()
    st = json.loads(run("status", "--dir", str(directory), "--json").stdout)
    assert st["last_error"] == "RemoteError: s3://b/p: unreachable" and st["last_error_file"] is None
    db.execute("UPDATE files SET updated_at = ? WHERE file_id = ?", (now - 1, file_id))
    db.commit()
    db.close()
    st = json.loads(run("status", "--dir", str(directory), "--json").stdout)
    assert st["last_error"] == "CorruptFileError: bad" and st["last_error_file"] == file_id


def test_inspect_names_damage_below_the_flushed_count_of_a_crashed_file(tmp_path: Path) -> None:
    """A crashed writer's file whose header (checksum intact) counts 100
    flushed entries, the last of them since damaged: it looks like a torn
    tail, but opening it raises CorruptFileError; inspect says so, exit 1."""
    path = tmp_path / "a.tix"
    child = (
        "import os, signal, sys\n"
        "from tieredindex import IndexFile\n"
        "f = IndexFile.create(sys.argv[1], slots=16, capacity=200, begin_ms=0)\n"
        "for i in range(100):\n"
        "    assert f.put('k%d' % (i % 7), 0, i, 1, i)\n"
        "f.flush()\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, "-c", child, str(path)], check=False, timeout=60)
    raw = bytearray(path.read_bytes())
    raw[64 * ((64 + 4 * 16 + 63) // 64) + 99 * 40 + 9] ^= 0x01  # entry 99, the last
    path.write_bytes(bytes(raw))
    result = run("inspect", str(path))
    assert result.returncode == 1, result.stdout
    assert "a flush made 100 entries durable" in result.stdout


# ------------------------------------------------------------------ --json


def _unreachable_s3(*args: str) -> list[str]:
    """``args`` against an S3 endpoint nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [*args, "--remote", "s3://tix-nowhere/p", "--endpoint-url", f"http://127.0.0.1:{port}"]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["inspect", "NOFILE"], 2, "no such file"),
        (["inspect", "DIR"], 2, "is a directory"),
        (["query", "--remote", "http://x/y", "--topic", "t", "--key", "k"], 2, "invalid remote url"),
        (["query", "--remote", "s3://bucket/p", "--topic", "t", "--key", "k", "--max", "0"], 2, "--max"),
        (["verify", "--remote", "file:///no/such/remote"], 2, "no such directory"),
        (["status", "--dir", "DIR"], 2, "not a store directory"),
        (["status"], 2, "the following arguments are required: --dir"),
        (["rocketmq", "audit", "--store-path", "DIR", "--tiered-path", "NOFILE"], 2, "no such directory"),
        (_unreachable_s3("query", "--topic", "t", "--key", "k"), 1, "the remote could not be read"),
        (_unreachable_s3("verify"), 3, "could not check the remote"),
    ],
)
def test_json_failure_prints_one_json_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], code: int, message: str
) -> None:
    """--json promises a document on stdout: a failure prints one too
    ({"error", "exit_status"}), not silence, beside the message on stderr."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    where = {"NOFILE": str(tmp_path / "nofile.tix"), "DIR": str(tmp_path)}
    result = run(*[where.get(a, a) for a in args], "--json")
    assert result.returncode == code, result.stdout + result.stderr
    document = json.loads(result.stdout)
    assert document["exit_status"] == code
    assert message in document["error"] and message in result.stderr


def test_help_documents_json_failures_and_exit_statuses() -> None:
    for command in ("inspect", "query", "verify", "status"):
        text = run(command, "--help").stdout
        assert '{"error": ..., "exit_status": N}' in " ".join(text.split()), command
        assert "exit status: 0" in text, command
    assert "3 could not check" in run("verify", "--help").stdout


# ------------------------------------------------- verify: damage or unchecked


def test_verify_unreachable_remote_exits_3_not_1(monkeypatch: pytest.MonkeyPatch) -> None:
    """A remote that cannot be read is no damage found (1): a monitor must
    tell "the remote is broken" from "the check did not run"."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    result = run(*_unreachable_s3("verify", "--deep"))
    assert result.returncode == 3, result.stdout + result.stderr
    assert "could not check the remote" in result.stderr and "--endpoint-url" in result.stderr
    assert "healthy" not in result.stdout and "problems found" not in result.stdout


def test_verify_objects_it_could_not_read_exit_3_damage_exits_1(tmp_path: Path) -> None:
    """A manifest record the remote will not serve is unchecked (3); once a
    data object is missing too, the damage found decides (1)."""
    _, remote_url = _stopped_store(tmp_path)
    remote = open_remote(remote_url)
    records = sorted(o.key for o in remote.list(MANIFEST_PREFIX))
    unreadable = tmp_path / "remote" / records[0]
    unreadable.chmod(0)
    try:
        prefix = _without_root_privilege()
        unchecked = run("verify", "--remote", remote_url, "--json", prefix=prefix)
        text = run("verify", "--remote", remote_url, prefix=prefix)
        remote.delete(records[1].replace(MANIFEST_PREFIX, DATA_PREFIX).replace(".json", ".tix"))
        damaged = run("verify", "--remote", remote_url, "--json", prefix=prefix)
    finally:
        unreadable.chmod(0o644)
    assert unchecked.returncode == 3, unchecked.stdout + unchecked.stderr
    report = json.loads(unchecked.stdout)
    assert report["ok"] is False and {p["kind"] for p in report["problems"]} == {"unchecked"}
    assert text.returncode == 3 and "could not be checked" in text.stdout, text.stdout
    assert damaged.returncode == 1, damaged.stdout + damaged.stderr
    assert {p["kind"] for p in json.loads(damaged.stdout)["problems"]} == {"unchecked", "missing"}


def test_verify_on_a_remote_that_will_not_list_open_uploads_names_them_and_exits_3(
    tmp_path: Path, moto_server: object, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server without ListMultipartUploads (s3s-fs answers 501) or
    credentials without it: every file is checked, and the open uploads are
    named as what could not be (they are no object)."""
    from tieredindex.cli import main
    from tieredindex.remote import S3Remote

    server = moto_server
    url = f"s3://{server.bucket}/cli-nolisting-{time.monotonic_ns()}/"  # type: ignore[attr-defined]
    store = IndexStore(tmp_path / "d", url, small_config(endpoint_url=server.endpoint_url, capacity=5))  # type: ignore[attr-defined]
    store.start()
    for i in range(12):
        store.put("t", f"k{i}", queue_id=0, offset=i, size=1, timestamp_ms=1_000 + i)
    assert store.shutdown().clean
    monkeypatch.setattr(S3Remote, "list_multipart_uploads", listing_not_implemented)
    code = main(["verify", "--remote", url, "--endpoint-url", server.endpoint_url])  # type: ignore[attr-defined]
    out = capsys.readouterr().out
    assert code == 3, out
    assert "3 files checked" in out and "NotImplemented" in out, out
    assert "incomplete: the open multipart uploads could not be checked" in out, out


# ---------------------------------------------------------- damaged journal


def test_a_damaged_journal_is_a_failure_naming_it_not_bad_usage(tmp_path: Path) -> None:
    """A store directory whose journal is cut short: status and verify
    --dir say the journal is damaged (exit 1, no traceback), and inspect
    still checks the file itself, noting the journal."""
    directory, remote_url = _stopped_store(tmp_path)
    journal = directory / JOURNAL_NAME
    journal.write_bytes(journal.read_bytes()[:5000])
    for args in (
        ["status", "--dir", str(directory)],
        ["verify", "--remote", remote_url, "--dir", str(directory), "--repair"],
    ):
        result = run(*args)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert f"{journal}: journal is damaged" in result.stderr, args
    sealed = next((directory / SEALED_DIR).glob("*.sealed"))
    result = run("inspect", str(sealed), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert any("could not be read" in note for note in json.loads(result.stdout)["notes"])
