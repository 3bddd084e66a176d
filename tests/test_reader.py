"""A reader beside a live writer: an IndexStore that never puts, on its own
directory, pointed at the prefix a writer in another process writes. It
answers from the writer's uploaded files, and never claims, writes, deletes
or repairs there; what the writer is doing (uploading, expiring, crashing)
is no damage to it. Both back ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tieredindex import CorruptFileError, IndexStore, StoreLockedError, crc32c, open_remote
from tieredindex.layout import MANIFEST_PREFIX, data_key, file_id_of_key, manifest_key
from tieredindex.remote import ObjectList, PutResult, Remote

from store_helpers import FOREVER, SwitchableRemote, small_config, wait_until

CHILD = str(Path(__file__).with_name("writer_child.py"))


class Writer:
    """The writer, a live store in a child process (writer_child.py)."""

    def __init__(self, directory: Path, remote_url: str, *, env: dict[str, str] | None = None) -> None:
        self.child = subprocess.Popen(
            [sys.executable, CHILD, str(directory), remote_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )

    def command(self, line: str) -> str:
        assert self.child.stdin is not None and self.child.stdout is not None
        self.child.stdin.write(line + "\n")
        self.child.stdin.flush()
        answer = self.child.stdout.readline().strip()
        assert answer, f"the writer died at {line!r}: {self.child.communicate()[1][-3000:]}"
        return answer

    def put(self, key: str, offset: int, timestamp_ms: int) -> None:
        assert self.command(f"put {key} {offset} {timestamp_ms}") == "ok"

    def seal(self) -> None:
        """Rolls the current file and waits for its manifest record."""
        assert self.command("seal") == "ok"

    def file(self, key: str, offset: int, timestamp_ms: int) -> str:
        """One entry in a file of its own, uploaded; returns its file id."""
        before = self.file_ids()
        self.put(key, offset, timestamp_ms)
        self.seal()
        (new,) = self.file_ids() - before
        return new

    def killed_at_seal(self) -> None:
        """Rolls the current file; a fault point kills the writer on its way up."""
        assert self.child.stdin is not None
        self.child.stdin.write("seal\n")
        self.child.stdin.flush()
        _, err = self.child.communicate(timeout=60)
        assert self.child.returncode == -signal.SIGKILL, f"the fault did not fire: {err[-3000:]}"

    def file_ids(self) -> set[str]:
        remote = open_remote(self.remote_url)
        try:
            return {fid for o in remote.list(MANIFEST_PREFIX) if (fid := file_id_of_key(o.key)) is not None}
        finally:
            remote.close()

    @property
    def remote_url(self) -> str:
        return self.child.args[3]  # type: ignore[index,no-any-return]

    def quit(self) -> bool:
        clean = self.command("quit") == "True"
        self.child.wait(timeout=30)
        return clean

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.child.poll() is None:
            self.child.kill()
        self.child.communicate()


def offsets(entries: list) -> list[int]:
    return [e.offset for e in entries]


class ExpiresAfterListing(SwitchableRemote):
    """The writer's retention deleting ``file_id`` (record first, then
    object, as it does) right after this remote's next full listing: the
    window between verify()'s listing and its reads of what it listed."""

    def __init__(self, inner: Remote, file_id: str) -> None:
        super().__init__(inner)
        self.file_id = file_id
        self.expired = False

    def list(self, prefix: str = "") -> ObjectList:
        listed = super().list(prefix)
        if prefix == "" and not self.expired:
            self.expired = True
            self.inner.delete(manifest_key(self.file_id))
            self.inner.delete(data_key(self.file_id))
        return listed


def test_verify_while_the_writers_retention_deletes_reports_no_damage(
    tmp_path: Path, remote_url: str
) -> None:
    """A file the writer's retention deletes between verify()'s listing and
    its read of the file's record expired: it is not "unchecked" (verify
    not ok, `tieredindex verify` exit 3), nor its object an orphan."""
    with Writer(tmp_path / "w", remote_url) as writer:
        old = writer.file("a", 1, 10)
        writer.file("b", 2, 20)
        remote = ExpiresAfterListing(open_remote(remote_url), old)
        reader = IndexStore(tmp_path / "r", remote, small_config(store_id="reader"))
        reader.start()
        assert offsets(reader.query("t", "b", 0, FOREVER, strict=True)) == [2]
        report = reader.verify(deep=True)
        assert remote.expired
        assert report.problems == [] and report.ok, report.problems
        assert reader.status().quarantined == []
        assert offsets(reader.query("t", "b", 0, FOREVER, strict=True)) == [2]
        assert reader.query("t", "a", 0, FOREVER, strict=True) == []
        reader.shutdown()
        assert writer.quit()


class WatchedRemote(SwitchableRemote):
    """Records every call that writes or deletes (S3's overwrite probe
    included: it puts and deletes an object)."""

    def __init__(self, inner: Remote) -> None:
        super().__init__(inner)
        self.writes: list[str] = []

    def put_if_absent(self, key: str, source: Any, **kwargs: Any) -> PutResult:
        self.writes.append(f"put {key}")
        return super().put_if_absent(key, source, **kwargs)

    def delete(self, key: str) -> None:
        self.writes.append(f"delete {key}")
        super().delete(key)

    def abort_multipart_upload(self, key: str, upload_id: str) -> None:
        self.writes.append(f"abort {key}")
        super().abort_multipart_upload(key, upload_id)

    def check_put_if_absent(self) -> None:
        self.writes.append("probe")
        self.inner.check_put_if_absent()


@pytest.mark.usefixtures("prompt_retention")
def test_a_reader_refused_repair_and_retention_writes_nothing(tmp_path: Path, remote_url: str) -> None:
    """A reader's verify(repair=True), and its retention when configured as
    the writer's is, are a writer's acts: refused. The refusal must come
    before anything is written: the claim it tried first put an overwrite
    probe (S3: a PutObject and a DeleteObject) and a conditional PutObject
    of OWNER.json on the writer's prefix (and a reader with read-only
    credentials got AccessDenied, not the refusal)."""
    with Writer(tmp_path / "w", remote_url) as writer:
        writer.file("a", 1, 10)  # expired by the reader's retention: 10 ms after the epoch
        watched = WatchedRemote(open_remote(remote_url))
        reader = IndexStore(tmp_path / "r", watched, small_config(store_id="reader", retention_s=3600.0))
        reader.start()
        assert offsets(reader.query("t", "a", 0, FOREVER, strict=True)) == [1]
        wait_until(lambda: reader._refused is not None, "the reader's retention was refused")
        with pytest.raises(StoreLockedError, match="owned by writer writer"):
            reader.verify(repair=True)
        assert watched.writes == []
        assert offsets(reader.query("t", "a", 0, FOREVER, strict=True)) == [1]
        reader.shutdown()
        assert writer.quit()


def test_a_reader_answers_a_new_writer_file_within_its_catalog_refresh(
    tmp_path: Path, remote_url: str
) -> None:
    """A reader learns of the writer's files from the manifest, listed again
    every ``StoreConfig.catalog_refresh_s`` (it was a fixed 30 s, nowhere
    documented: a strict query missed an uploaded file for that long)."""
    with Writer(tmp_path / "w", remote_url) as writer:
        writer.file("a", 1, 10)
        reader = IndexStore(
            tmp_path / "r", remote_url, small_config(store_id="reader", catalog_refresh_s=1.0)
        )
        reader.start()
        assert offsets(reader.query("t", "a", 0, FOREVER, strict=True)) == [1]
        writer.file("b", 2, 20)
        wait_until(lambda: reader.query("t", "b", 0, FOREVER, strict=True) != [], "the new file answered", 15)
        assert offsets(reader.query("t", "b", 0, FOREVER, strict=True)) == [2]
        reader.shutdown()
        assert writer.quit()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "tieredindex", *args], capture_output=True, text=True, timeout=120
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


@pytest.mark.parametrize(
    "point", ["upload.after_intent", "upload.after_put", "upload.after_verify", "manifest.after_write"]
)
def test_a_writer_killed_mid_upload_is_no_damage_to_its_reader(
    tmp_path: Path, remote_url: str, point: str
) -> None:
    """The writer is SIGKILLed on its way up with a file (its object up and
    unrecorded, or recorded and not yet in its journal), then restarted.
    Meanwhile the reader, its verify() and the command line answer from
    what is recorded, report nothing as damage, and quarantine nothing;
    once the writer is back the file answers."""
    env = {"TIEREDINDEX_FAULTS": f"{point}:kill:2"}  # the second file: the first goes up
    with Writer(tmp_path / "w", remote_url, env=env) as writer:
        writer.file("a", 1, 10)
        reader = IndexStore(
            tmp_path / "r",
            remote_url,
            small_config(store_id="reader", catalog_refresh_s=0.2, orphan_grace_s=3600.0),
        )
        reader.start()
        assert offsets(reader.query("t", "a", 0, FOREVER, strict=True)) == [1]
        writer.put("b", 2, 20)
        writer.killed_at_seal()
    for _ in range(3):  # across catalog refreshes
        assert offsets(reader.query("t", "a", 0, FOREVER, strict=True)) == [1]
        assert offsets(reader.query("t", "b", 0, FOREVER, strict=True)) in ([], [2])
        report = reader.verify(deep=True)
        assert report.problems == [] and report.ok, report.problems
    shown = cli("verify", "--remote", remote_url, "--deep", "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["problems"] == [], shown.stdout + shown.stderr
    answered = cli("query", "--remote", remote_url, "--topic", "t", "--key", "a", "--json")
    assert answered.returncode == 0 and [e["offset"] for e in json.loads(answered.stdout)] == [1]
    with Writer(tmp_path / "w", remote_url) as writer:  # restarted: it finishes the upload
        wait_until(lambda: reader.query("t", "b", 0, FOREVER, strict=True) != [], "the file answered", 20)
        assert offsets(reader.query("t", "b", 0, FOREVER, strict=True)) == [2]
        assert writer.quit()
    report = reader.verify(deep=True)
    assert report.problems == [] and report.ok, report.problems
    assert reader.status().quarantined == []
    assert reader.status().last_error is None
    reader.shutdown()


def test_the_writers_retention_deleting_what_the_reader_reads(tmp_path: Path, remote_url: str) -> None:
    """The writer's retention deletes files while the reader queries them
    (strict and not, several files read at once) and lists the manifest
    again: every answer is a subset of what was put, nothing raises, and
    nothing is quarantined, reported or left in the reader's catalog."""
    retention_s = 12.0
    with Writer(tmp_path / "w", remote_url, env={"TIX_RETENTION_S": str(retention_s)}) as writer:
        now = int(time.time() * 1000)
        for i in range(6):
            writer.file(f"k{i}", i, now + i)  # expire retention_s after now, by the writer's clock
        reader = IndexStore(
            tmp_path / "r", remote_url, small_config(store_id="reader", catalog_refresh_s=0.2)
        )
        reader.start()
        seen: set[int] = set()
        failures: list[str] = []
        deadline = time.monotonic() + retention_s + 30
        while writer.file_ids() or reader.status().remote_files:
            assert time.monotonic() < deadline, "the writer's retention did not delete every file"
            for strict in (False, True):
                try:
                    for i in range(6):
                        got = offsets(reader.query("t", f"k{i}", 0, FOREVER, strict=strict))
                        assert got in ([], [i]), got
                        seen.update(got)
                except Exception as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
        assert seen, "the reader never answered from the files before they expired"
        assert failures == []
        for i in range(6):
            assert reader.query("t", f"k{i}", 0, FOREVER, strict=True) == []
        report = reader.verify(deep=True)
        assert report.problems == [] and report.ok, report.problems
        status = reader.status()
        assert status.quarantined == [] and status.last_error is None, status
        reader.shutdown()
        assert writer.quit()


def test_a_readers_quarantine_ends_with_the_file_the_writer_expired(tmp_path: Path, remote_url: str) -> None:
    """A remote file the reader found damaged is quarantined (in its journal,
    across restarts). Once the writer's retention deleted it, the quarantine
    goes too: strict queries no longer fail for a file that is gone, and a
    restarted reader does not bring it back."""
    retention_s = 10.0
    with Writer(tmp_path / "w", remote_url, env={"TIX_RETENTION_S": str(retention_s)}) as writer:
        keep = writer.file("kept", 1, int(time.time() * 1000) + 3_600_000)  # expires in an hour
        damaged = writer.file("doomed", 2, int(time.time() * 1000))
        remote = open_remote(remote_url)
        key = data_key(damaged)
        bad = bytearray(remote.get(key))
        bad[-1] ^= 0x40
        remote.delete(key)
        remote.put_if_absent(key, bytes(bad), size=len(bad), crc32c=crc32c(bytes(bad)))
        config = small_config(store_id="reader", catalog_refresh_s=0.2)
        reader = IndexStore(tmp_path / "r", remote_url, config)
        reader.start()
        with pytest.raises(CorruptFileError):
            reader.query("t", "doomed", 0, FOREVER, strict=True)
        assert reader.status().quarantined == [damaged]
        wait_until(lambda: writer.file_ids() == {keep}, "the writer's retention deleted it", retention_s + 30)
        wait_until(lambda: reader.status().quarantined == [], "the quarantine ended", 30)
        assert reader.query("t", "doomed", 0, FOREVER, strict=True) == []
        assert offsets(reader.query("t", "kept", 0, FOREVER, strict=True)) == [1]
        reader.shutdown()
        again = IndexStore(tmp_path / "r", remote_url, config)
        again.start()
        assert again.query("t", "doomed", 0, FOREVER, strict=True) == []
        assert again.status().quarantined == []
        again.shutdown()
        assert writer.quit()


@pytest.mark.usefixtures("prompt_retention")
def test_a_reader_configured_with_retention_reports_no_error(tmp_path: Path, remote_url: str) -> None:
    """A reader started with the broker's config (retention on) finds the
    writer's old files expired, and is refused their deletion: the writer's
    to do. That refusal is how a reader works, not a failure: it was
    status().last_error (and `tieredindex status`'s, and a failure in the
    metrics) every round, for as long as the reader ran."""
    with Writer(tmp_path / "w", remote_url) as writer:
        writer.file("a", 1, 10)  # long expired by the reader's retention
        reader = IndexStore(tmp_path / "r", remote_url, small_config(store_id="reader", retention_s=3600.0))
        reader.start()
        assert offsets(reader.query("t", "a", 0, FOREVER, strict=True)) == [1]
        wait_until(lambda: reader._refused is not None, "the reader's retention was refused")
        time.sleep(0.3)  # more rounds
        assert reader.status().last_error is None
        assert reader.metrics().failures == 0
        assert writer.file_ids() != set()  # nothing deleted
        reader.shutdown()
        assert writer.quit()


def test_verify_beside_a_writer_uploading_and_expiring(tmp_path: Path, remote_url: str) -> None:
    """The writer uploads a file and its retention deletes one, over and
    over, while the reader's verify() and `tieredindex verify` run: neither
    reports anything (default orphan grace), nor does the reader quarantine."""
    import threading

    with Writer(tmp_path / "w", remote_url, env={"TIX_RETENTION_S": "0.5"}) as writer:
        writer.put("a", 0, int(time.time() * 1000))  # not file(): it may expire before a listing
        writer.seal()
        reader = IndexStore(
            tmp_path / "r", remote_url, small_config(store_id="reader", orphan_grace_s=3600.0)
        )
        reader.start()
        stop = threading.Event()
        made = [0]

        def churn() -> None:
            while not stop.is_set():
                made[0] += 1
                writer.put("a", made[0], int(time.time() * 1000))
                writer.seal()

        churning = threading.Thread(target=churn)
        churning.start()
        try:
            for _ in range(10):
                report = reader.verify(deep=True)
                assert report.problems == [] and report.ok, report.problems
                assert set(offsets(reader.query("t", "a", 0, FOREVER, 10_000))) <= set(range(made[0] + 1))
            for _ in range(3):
                shown = cli("verify", "--remote", remote_url, "--deep", "--json")
                assert shown.returncode == 0, shown.stdout + shown.stderr
        finally:
            stop.set()
            churning.join(30)
        assert made[0] > 5 and len(writer.file_ids()) < made[0], "no churn"
        assert reader.status().quarantined == []
        reader.shutdown()
        assert writer.quit()


def test_a_reader_never_claims_a_prefix_its_writer_has_not_claimed_yet(
    tmp_path: Path, remote_url: str
) -> None:
    """A writer claims its prefix with its first file. A reader's
    verify(repair=True) before that (a health job started with the broker)
    claimed the empty prefix itself: the writer's uploads were then refused
    for good ("owned by writer reader"), its files stuck local. A store
    with nothing to upload never claims: the repair is refused."""
    with Writer(tmp_path / "w", remote_url) as writer:  # started, nothing put yet
        watched = WatchedRemote(open_remote(remote_url))
        reader = IndexStore(tmp_path / "r", watched, small_config(store_id="reader", catalog_refresh_s=0.2))
        reader.start()
        with pytest.raises(StoreLockedError, match="nothing to upload"):
            reader.verify(repair=True)
        assert watched.writes == []
        assert reader.verify(deep=True).ok  # checking is reading
        writer.file("a", 1, 10)
        wait_until(
            lambda: reader.query("t", "a", 0, FOREVER, strict=True) != [], "the writer's file answered", 60
        )
        reader.shutdown()
        assert writer.quit()
