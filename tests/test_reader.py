"""A reader beside a live writer: an IndexStore that never puts, on its own
directory, pointed at the prefix a writer in another process writes. It
answers from the writer's uploaded files, and never claims, writes, deletes
or repairs there; what the writer is doing (uploading, expiring, crashing)
is no damage to it. Both back ends."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tieredindex import IndexStore, StoreLockedError, open_remote
from tieredindex.layout import DATA_PREFIX, MANIFEST_PREFIX
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
            env={**__import__("os").environ, **(env or {})},
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

    def file_ids(self) -> set[str]:
        remote = open_remote(self.remote_url)
        try:
            return {o.key[len(MANIFEST_PREFIX) : -len(".json")] for o in remote.list(MANIFEST_PREFIX)}
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
            self.inner.delete(f"{MANIFEST_PREFIX}{self.file_id}.json")
            self.inner.delete(f"{DATA_PREFIX}{self.file_id}.tix")
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
