"""The `tieredindex` command line, end to end in subprocesses
(`python -m tieredindex ...`): exit codes, --json parsed back, the demo run
to completion, and no traceback for a user mistake."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tieredindex import IndexFile, IndexStore, crc32c, open_remote
from tieredindex.layout import DATA_PREFIX

from store_helpers import SwitchableRemote, crash_in_process, small_config

COMMANDS = ["demo", "inspect", "query", "verify", "status"]


def run(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "tieredindex", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def populate(directory: Path, remote_url: str, n: int = 120) -> dict[str, list[dict[str, int]]]:
    """Puts n messages (capacity 50: a few files, the last partial), shuts
    down cleanly; returns key -> expected JSON answers, newest first."""
    store = IndexStore(directory, remote_url, small_config(cache_bytes=10**9))
    store.start()
    model: dict[str, list[dict[str, int]]] = {}
    for i in range(n):
        key = f"k{i % 7}"
        store.put("orders", key, queue_id=i % 3, offset=i * 10, size=100 + i, timestamp_ms=1_000 + i)
        model.setdefault(key, []).insert(
            0, {"queue_id": i % 3, "offset": i * 10, "size": 100 + i, "timestamp_ms": 1_000 + i}
        )
    assert store.shutdown().clean
    return model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ------------------------------------------------------------------ usage


@pytest.mark.parametrize("command", [*COMMANDS, "rocketmq audit"])
def test_help_has_an_example_and_the_exit_statuses(command: str) -> None:
    """README: every command's --help has examples and its exit statuses."""
    result = run(*command.split(), "--help")
    assert result.returncode == 0
    assert "examples:" in result.stdout
    assert f"tieredindex {command} " in result.stdout.split("examples:")[1]
    assert "exit status: 0 " in " ".join(result.stdout.lower().split())


def test_top_level_help_lists_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in [*COMMANDS, "rocketmq"]:
        assert command in result.stdout
    summary = " ".join(result.stdout.split("positional arguments")[0].split())
    assert summary.endswith("demo, inspect files, query, verify, status, RocketMQ interop.")


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["frobnicate"],
        ["query", "--topic", "t", "--key", "k"],
        ["query", "--remote", "http://example.com/x", "--topic", "t", "--key", "k"],
        ["query", "--remote", "file://relative/path", "--topic", "t", "--key", "k"],
        ["query", "--remote", "file:///no/such/remote", "--topic", "t", "--key", "k"],
        ["query", "--remote", "s3://b/p", "--topic", "t", "--key", "k", "--max", "0"],
        ["query", "--remote", "s3://b/p", "--topic", "t", "--key", "k", "--begin", "-1"],
        ["query", "--remote", "s3://b/p", "--topic", "t", "--key", "k", "--begin", "x"],
        ["verify", "--remote", "file:///no/such/remote"],
        ["status"],
        ["status", "--dir", "/no/such/dir"],
        ["inspect"],
        ["inspect", "/no/such/file.tix"],
        ["demo", "--messages", "0"],
    ],
)
def test_bad_usage_exits_2_with_a_message(args: list[str]) -> None:
    result = run(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "error" in result.stderr
    assert result.stdout == ""


def test_usage_errors_say_what_to_do(tmp_path: Path) -> None:
    remote = (tmp_path / "r").as_uri()
    (tmp_path / "r").mkdir()
    begin_after_end = run(
        "query", "--remote", remote, "--topic", "t", "--key", "k", "--begin", "5", "--end", "1"
    )
    assert begin_after_end.returncode == 2 and "--begin (5) is after --end (1)" in begin_after_end.stderr
    bad_scheme = run("query", "--remote", "ftp://x/y", "--topic", "t", "--key", "k")
    assert "file:///absolute/path or s3://bucket/prefix" in bad_scheme.stderr
    not_a_store = run("status", "--dir", str(tmp_path))
    assert not_a_store.returncode == 2 and "not a store directory" in not_a_store.stderr
    verify_dir = run("verify", "--remote", remote, "--dir", str(tmp_path))
    assert verify_dir.returncode == 2 and "not a store directory" in verify_dir.stderr
    assert run("inspect", str(tmp_path)).returncode == 2
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    demo = run("demo", "--dir", str(tmp_path / "busy"))
    assert demo.returncode == 2 and "new or empty directory" in demo.stderr


# ------------------------------------------------------------------ query


def test_query_json_and_text(tmp_path: Path, remote_url: str) -> None:
    model = populate(tmp_path / "d", remote_url)
    for key in ("k0", "k3"):
        result = run("query", "--remote", remote_url, "--topic", "orders", "--key", key, "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == model[key]
    window = run(
        "query", "--remote", remote_url, "--topic", "orders", "--key", "k1",
        "--begin", "1050", "--end", "1100", "--max", "3", "--json",
    )  # fmt: skip
    assert window.returncode == 0, window.stderr
    assert json.loads(window.stdout) == [e for e in model["k1"] if 1050 <= e["timestamp_ms"] <= 1100][:3]
    text = run("query", "--remote", remote_url, "--topic", "orders", "--key", "k2")
    assert text.returncode == 0
    assert f"{len(model['k2'])} entries, newest first" in text.stdout
    assert str(model["k2"][0]["timestamp_ms"]) in text.stdout.splitlines()[2]
    none = run("query", "--remote", remote_url, "--topic", "orders", "--key", "nope", "--json")
    assert none.returncode == 0 and json.loads(none.stdout) == []
    other = run("query", "--remote", remote_url, "--topic", "orders", "--key", "nope")
    assert "no entries for key 'nope'" in other.stdout


def test_query_with_the_directory_of_a_stopped_store(tmp_path: Path) -> None:
    remote_url = (tmp_path / "remote").as_uri()
    model = populate(tmp_path / "d", remote_url)
    result = run(
        "query",
        "--remote",
        remote_url,
        "--dir",
        str(tmp_path / "d"),
        "--topic",
        "orders",
        "--key",
        "k4",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == model["k4"]


def test_query_with_the_directory_of_a_crashed_store_finishes_its_uploads(tmp_path: Path) -> None:
    """--help: the stopped store in --dir "is then started: it finishes any
    pending uploads before it stops". A store that crashed with files not yet
    uploaded: query --dir answers from them, and afterwards nothing is
    pending and the remote alone answers every entry."""
    from tieredindex.localstatus import local_status

    remote_url = (tmp_path / "remote").as_uri()
    remote = SwitchableRemote(open_remote(remote_url))
    remote.down.set()  # nothing reaches the remote before the crash
    store = IndexStore(tmp_path / "d", remote, small_config())
    store.start()
    expected = []
    for i in range(120):
        store.put("orders", f"k{i % 7}", queue_id=i % 3, offset=i * 10, size=100 + i, timestamp_ms=1_000 + i)
        if i % 7 == 4:
            expected.insert(
                0, {"queue_id": i % 3, "offset": i * 10, "size": 100 + i, "timestamp_ms": 1_000 + i}
            )
    crash_in_process(store)
    assert len(local_status(tmp_path / "d").pending_files) == 3
    args = ["query", "--remote", remote_url, "--topic", "orders", "--key", "k4", "--json"]
    result = run(*args[:3], "--dir", str(tmp_path / "d"), *args[3:])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == expected
    assert local_status(tmp_path / "d").pending_files == []
    alone = run(*args)
    assert alone.returncode == 0, alone.stderr
    assert json.loads(alone.stdout) == expected


def test_query_with_a_stores_directory_refuses_a_remote_it_never_used(tmp_path: Path) -> None:
    """--dir starts the stopped store, which uploads its pending files: to
    a mistyped --remote (an empty prefix) they went, and its journal then
    counted them as in the remote it really uses, which never got them. A
    store that has uploaded before is refused a --remote holding no store;
    one that never uploaded still answers from its own files."""
    remote_url = (tmp_path / "remote").as_uri()
    populate(tmp_path / "d", remote_url)
    store = IndexStore(tmp_path / "d", remote_url, small_config())
    store.start()
    store.put("orders", "late", queue_id=0, offset=1, size=1, timestamp_ms=9_000)
    crash_in_process(store)  # a pending file, as after kill -9
    typo = tmp_path / "remote-typo"
    typo.mkdir()
    args = ["--dir", str(tmp_path / "d"), "--topic", "orders", "--key", "late"]
    result = run("query", "--remote", typo.as_uri(), *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"writes to {open_remote(remote_url).url}, not {typo.as_uri()}" in result.stderr
    assert list(typo.iterdir()) == []  # nothing uploaded there
    # Its uploads expired since (retention forgets their journal rows): the
    # remote it claimed still tells (its journal keeps that), where the
    # uploads did not.
    db = sqlite3.connect(tmp_path / "d" / "journal.db")
    with db:
        db.execute("DELETE FROM files WHERE state = 'UPLOADED'")
    db.close()
    result = run("query", "--remote", typo.as_uri(), *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert list(typo.iterdir()) == []
    right = run("query", "--remote", remote_url, *args, "--json")
    assert right.returncode == 0, right.stderr
    assert [e["offset"] for e in json.loads(right.stdout)] == [1]

    down = SwitchableRemote(open_remote((tmp_path / "elsewhere").as_uri()))
    down.down.set()  # it claims nothing: never reached its remote
    fresh = IndexStore(tmp_path / "new", down, small_config())
    fresh.start()
    fresh.put("orders", "k", queue_id=0, offset=7, size=1, timestamp_ms=1)
    crash_in_process(fresh)  # never uploaded anything
    empty = tmp_path / "empty"
    empty.mkdir()
    first = run(
        "query", "--remote", empty.as_uri(), "--dir", str(tmp_path / "new"), "--topic", "orders", "--key", "k"
    )
    assert first.returncode == 0, first.stderr
    assert "1 entries" in first.stdout


def test_query_refuses_the_directory_of_a_live_store(tmp_path: Path) -> None:
    remote_url = (tmp_path / "remote").as_uri()
    populate(tmp_path / "d", remote_url)
    store = IndexStore(tmp_path / "d", remote_url, small_config())
    store.start()
    try:
        result = run(
            "query", "--remote", remote_url, "--dir", str(tmp_path / "d"), "--topic", "t", "--key", "k"
        )
    finally:
        store.shutdown()
    assert result.returncode == 1
    assert "live store holds this directory" in result.stderr and "leave out --dir" in result.stderr


def test_query_unreachable_remote_exits_1(tmp_path: Path) -> None:
    env = dict(
        os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_REGION="us-east-1"
    )
    result = run(
        "query", "--remote", "s3://tix-nowhere/p", "--endpoint-url", f"http://127.0.0.1:{free_port()}",
        "--topic", "t", "--key", "k", env=env,
    )  # fmt: skip
    assert result.returncode == 1
    assert "the remote could not be read" in result.stderr and "--endpoint-url" in result.stderr


def _damage(remote_url: str, key: str) -> None:
    """Flips bits in every block of the remote object ``key`` (its size and
    recorded checksum made to match, so only reading it finds out)."""
    remote = open_remote(remote_url)
    bad = bytearray(remote.get(key))
    for i in range(64, len(bad) - 100, 7):
        bad[i] ^= 0x10
    remote.delete(key)
    remote.put_if_absent(key, bytes(bad), size=len(bad), crc32c=crc32c(bytes(bad)))


def test_query_answers_from_the_good_files_when_one_fails_a_check(tmp_path: Path) -> None:
    """One damaged remote file is skipped, not the whole answer: the entries
    of the others are printed, stderr says once which file was skipped and
    why, and the exit status (3) says the answer is incomplete."""
    remote_url = (tmp_path / "remote").as_uri()
    model = populate(tmp_path / "d", remote_url)  # files of entries 0-49, 50-99, 100-119
    oldest = sorted(o.key for o in open_remote(remote_url).list(DATA_PREFIX))[0]
    _damage(remote_url, oldest)
    file_id = oldest[len(DATA_PREFIX) : -len(".tix")]
    result = run("query", "--remote", remote_url, "--topic", "orders", "--key", "k1", "--json")
    assert result.returncode == 3, result.stdout + result.stderr
    assert json.loads(result.stdout) == [e for e in model["k1"] if e["timestamp_ms"] >= 1_050]
    assert "incomplete" in result.stderr and "1 file" in result.stderr
    assert f"{file_id}: " in result.stderr and "fails its checksum" in result.stderr
    assert result.stderr.count("fails its checksum") == 1  # once: no ERROR log line besides it
    text = run("query", "--remote", remote_url, "--topic", "orders", "--key", "k2")
    assert text.returncode == 3, text.stdout + text.stderr
    assert f"{len([e for e in model['k2'] if e['timestamp_ms'] >= 1_050])} entries" in text.stdout
    # A window that file cannot hold entries of is answered in full.
    newer = run("query", "--remote", remote_url, "--topic", "orders", "--key", "k1", "--begin", "1100")
    assert newer.returncode == 0, newer.stdout + newer.stderr
    assert newer.stderr == ""


def test_query_of_a_single_damaged_file_says_no_entries_and_incomplete(tmp_path: Path) -> None:
    remote_url = (tmp_path / "remote").as_uri()
    populate(tmp_path / "d", remote_url, n=40)
    [obj] = open_remote(remote_url).list(DATA_PREFIX)
    _damage(remote_url, obj.key)
    result = run("query", "--remote", remote_url, "--topic", "orders", "--key", "k1")
    assert result.returncode == 3
    assert "no entries for key 'k1'" in result.stdout
    assert obj.key in result.stderr and "incomplete" in result.stderr


# ----------------------------------------------------------------- verify


def test_verify_healthy_broken_repaired(tmp_path: Path, remote_url: str) -> None:
    populate(tmp_path / "d", remote_url)
    healthy = run("verify", "--remote", remote_url, "--deep", "--json")
    assert healthy.returncode == 0, healthy.stderr
    report = json.loads(healthy.stdout)
    assert report["ok"] is True and report["problems"] == [] and report["checked_files"] == 3
    assert report["checked_bytes"] > 0

    remote = open_remote(remote_url)
    victim = sorted(o.key for o in remote.list(DATA_PREFIX))[0]
    remote.delete(victim)
    junk = b"nobody's"
    orphan = f"{DATA_PREFIX}0000000000001-deadbeef.tix"
    remote.put_if_absent(orphan, junk, size=len(junk), crc32c=crc32c(junk))

    broken = run("verify", "--remote", remote_url, "--grace", "0", "--json")
    assert broken.returncode == 1
    found = json.loads(broken.stdout)
    assert found["ok"] is False
    assert sorted((p["kind"], p["key"]) for p in found["problems"]) == sorted(
        [("missing", victim), ("orphan", orphan)]
    )
    text = run("verify", "--remote", remote_url, "--grace", "0")
    assert text.returncode == 1
    assert "missing" in text.stdout and victim in text.stdout and "2 problems found" in text.stdout

    repaired = run(
        "verify", "--remote", remote_url, "--dir", str(tmp_path / "d"), "--grace", "0", "--repair", "--json"
    )
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert all(p["fixed"] for p in json.loads(repaired.stdout)["problems"])
    again = run("verify", "--remote", remote_url, "--deep")
    assert again.returncode == 0 and "healthy" in again.stdout
    assert remote.head(victim) is not None and remote.head(orphan) is None


def test_verify_repair_refused_beside_a_live_store(tmp_path: Path) -> None:
    remote_url = (tmp_path / "remote").as_uri()
    populate(tmp_path / "d", remote_url)
    store = IndexStore(tmp_path / "d", remote_url, small_config())
    store.start()
    try:
        result = run("verify", "--remote", remote_url, "--dir", str(tmp_path / "d"), "--repair")
        plain = run("verify", "--remote", remote_url, "--dir", str(tmp_path / "d"))
    finally:
        store.shutdown()
    assert result.returncode == 1 and f"pid {os.getpid()}" in result.stderr
    assert plain.returncode == 0, plain.stderr


# ----------------------------------------------------------------- status


def test_status_of_a_stopped_and_a_live_store(tmp_path: Path) -> None:
    remote_url = (tmp_path / "remote").as_uri()
    populate(tmp_path / "d", remote_url)
    stopped = run("status", "--dir", str(tmp_path / "d"), "--json")
    assert stopped.returncode == 0, stopped.stderr
    st = json.loads(stopped.stdout)
    assert st["files_by_state"] == {"UPLOADED": 3}
    assert st["live_pid"] is None and st["pending_files"] == [] and st["pending_bytes"] == 0
    assert st["last_shutdown"].startswith("clean=True")

    # Beside a live store whose remote is down: pending files, their age, the error.
    remote = SwitchableRemote(open_remote(remote_url))
    store = IndexStore(tmp_path / "d", remote, small_config())
    store.start()
    try:
        while not store.status().reconciled:
            time.sleep(0.01)
        remote.down.set()
        for i in range(60):
            store.put("orders", "k", queue_id=0, offset=10_000 + i, size=1, timestamp_ms=5_000 + i)
        deadline = time.monotonic() + 10
        while not store.status().pending_bytes and time.monotonic() < deadline:
            time.sleep(0.05)
        while not run("status", "--dir", str(tmp_path / "d"), "--json").stdout.count("unreachable"):
            assert time.monotonic() < deadline, "the failed upload was never recorded"
        live = run("status", "--dir", str(tmp_path / "d"), "--json")
        text = run("status", "--dir", str(tmp_path / "d"))
        store.put("orders", "k", queue_id=0, offset=99_999, size=1, timestamp_ms=9_999)  # still works
    finally:
        report = store.shutdown(timeout_s=1)
    assert not report.clean
    assert live.returncode == 0, live.stderr
    st = json.loads(live.stdout)
    assert st["live_pid"] == os.getpid()
    assert st["pending_files"] and st["pending_bytes"] > 0 and st["oldest_pending_age_s"] > 0
    assert st["last_error"]
    assert f"running (pid {os.getpid()})" in text.stdout and "pending upload" in text.stdout


# ---------------------------------------------------------------- inspect


def _unsealed(tmp_path: Path, name: str = "a.tix", n: int = 300) -> Path:
    path = tmp_path / name
    with IndexFile.create(path, slots=32, capacity=500, begin_ms=1_000) as f:
        for i in range(n):
            f.put(f"key-{i % 41}", i % 4, i, 10, 1_000 + i)
    return path


def test_inspect_unsealed_sealed_and_live_files(tmp_path: Path) -> None:
    path = _unsealed(tmp_path)
    result = run("inspect", str(path), "--json")
    assert result.returncode == 0, result.stderr
    info: dict[str, Any] = json.loads(result.stdout)
    assert info["ok"] is True and info["kind"] == "unsealed"
    assert info["fields"]["valid entries"] == 300 and info["fields"]["capacity"] == 500
    assert info["fields"]["state"] == "closed cleanly"
    assert "1000 .. 1299" in info["fields"]["time range"]

    f = IndexFile.open(path)
    sealed = f.seal(tmp_path / "a.sealed")
    f.close()
    result = run("inspect", str(tmp_path / "a.sealed"))
    assert result.returncode == 0, result.stderr
    assert "verdict: intact" in result.stdout
    assert f"{sealed.crc32c:#010x}" in result.stdout and "entries:" in result.stdout

    live = IndexFile.create(tmp_path / "live.tix", slots=16, capacity=100, begin_ms=0)
    try:
        live.put("k", 0, 0, 1, 5)
        result = run("inspect", str(tmp_path / "live.tix"), "--json")
    finally:
        live.close()
    assert result.returncode == 0, result.stderr
    state = json.loads(result.stdout)["fields"]["state"]
    assert state.startswith("open for writing") and f"pid {os.getpid()}" in state


def test_inspect_corrupt_files_exit_1_naming_where(tmp_path: Path) -> None:
    path = _unsealed(tmp_path)
    data = bytearray(path.read_bytes())
    entries_at = (64 + 4 * 32 + 63) // 64 * 64
    data[entries_at + 40 * 123 + 3] ^= 0x01
    (tmp_path / "bad.tix").write_bytes(data)
    result = run("inspect", str(tmp_path / "bad.tix"))
    assert result.returncode == 1
    assert "CORRUPT" in result.stdout
    assert f"entry 123 at byte {entries_at + 40 * 123} fails its checksum" in result.stdout

    f = IndexFile.open(path)
    f.seal(tmp_path / "a.sealed")
    f.close()
    sealed = bytearray((tmp_path / "a.sealed").read_bytes())
    sealed[100] ^= 0x04
    (tmp_path / "bad.sealed").write_bytes(sealed)
    result = run("inspect", str(tmp_path / "bad.sealed"), "--json")
    assert result.returncode == 1
    info = json.loads(result.stdout)
    assert info["ok"] is False and any("block 0" in p for p in info["problems"])

    (tmp_path / "junk").write_bytes(b"hello world, not an index")
    result = run("inspect", str(tmp_path / "junk"))
    assert result.returncode == 1 and "not a tieredindex file" in result.stdout

    (tmp_path / "short.tix").write_bytes(path.read_bytes()[:-100])
    result = run("inspect", str(tmp_path / "short.tix"))
    assert result.returncode == 1 and "truncated" in result.stdout


# ------------------------------------------------------------------- demo


def test_demo_runs_to_completion_and_keeps_its_dir(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    result = run(
        "demo",
        "--messages",
        "3000",
        "--capacity",
        "700",
        "--queries",
        "40",
        "--dir",
        str(work),
        "--no-progress",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "demo passed" in out
    assert "shut down" in out and "cleanly (exit status 0)" in out
    assert "200 of 700 entries (partly filled)" in out
    assert "40/40 match what was ingested" in out
    for row in (
        "entries ingested",
        "files uploaded",
        "bytes uploaded",
        "put rate",
        "shutdown time",
        "query latency",
    ):
        assert row in out
    assert "5 (4 full, 1 partly filled)" in out
    status = json.loads(run("status", "--dir", str(work / "broker"), "--json").stdout)
    assert status["files_by_state"] == {"UPLOADED": 5}
    assert run("verify", "--remote", (work / "remote").as_uri(), "--deep").returncode == 0


def test_demo_removes_its_temporary_folder(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = dict(os.environ, TMPDIR=str(scratch))
    result = run("demo", "--messages", "500", "--capacity", "200", "--queries", "10", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ingest [" in result.stderr  # the progress bar
    assert list(scratch.iterdir()) == []


def test_a_failed_demo_keeps_the_broker_log_it_points_to(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = dict(os.environ, TMPDIR=str(scratch), TIEREDINDEX_FAULTS="put.after_write:exit:100")
    result = run("demo", "--messages", "500", "--capacity", "200", "--no-progress", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the broker exited early (status 99)" in result.stderr
    log = Path(result.stderr.split("(full log: ")[1].split(")")[0])
    assert "INFO tieredindex" in log.read_text()
    assert list(scratch.iterdir()) == [log.parent] and list(log.parent.iterdir()) == [log]


def test_demo_on_s3(tmp_path: Path, moto_server: Any) -> None:
    result = run(
        "demo", "--messages", "1500", "--capacity", "400", "--queries", "20", "--no-progress",
        "--remote", f"s3://{moto_server.bucket}/demo", "--endpoint-url", moto_server.endpoint_url,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo passed" in result.stdout and f"s3://{moto_server.bucket}/demo/" in result.stdout


# ---------------------------------------------------------------- logging


def test_verbose_logs_state_changes_without_credentials(tmp_path: Path) -> None:
    remote_url = (tmp_path / "remote").as_uri()
    populate(tmp_path / "d", remote_url)
    secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
    env = dict(os.environ, AWS_SECRET_ACCESS_KEY=secret)
    result = run("-v", "query", "--remote", remote_url, "--topic", "orders", "--key", "k1", env=env)
    assert result.returncode == 0
    assert "INFO tieredindex" in result.stderr and "started" in result.stderr
    assert secret not in result.stderr + result.stdout


def test_status_lists_remote_files_a_store_quarantined(tmp_path: Path) -> None:
    """A remote file that failed a check is quarantined in the store's
    journal; the operator's `status` (which reads that journal) lists it."""
    remote_url = (tmp_path / "remote").as_uri()
    populate(tmp_path / "d", remote_url)
    remote = open_remote(remote_url)
    victim = remote.list(DATA_PREFIX)[0].key
    bad = bytearray(remote.get(victim))
    bad[len(bad) // 2] ^= 0x10
    remote.delete(victim)
    remote.put_if_absent(victim, bytes(bad), size=len(bad), crc32c=crc32c(bytes(bad)))
    reader = IndexStore(tmp_path / "reader", remote_url, small_config())
    reader.start()
    assert not reader.verify(deep=True).ok
    reader.shutdown()
    file_id = victim[len(DATA_PREFIX) : -len(".tix")]
    shown = run("status", "--dir", str(tmp_path / "reader"), "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["quarantined"] == [file_id]
