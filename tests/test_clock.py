"""The wall clock stepping, and skew between hosts: files still roll by age,
equal timestamps keep "later put first", a moment's jump ahead deletes
nothing by retention, and an operator host ahead of S3 does not take a live
upload for an orphan. Clocks are stepped by patching the module-level clock
a module reads (``store._now_ms``, a module's ``dt``)."""

from __future__ import annotations

import datetime as dt
import time
import types
from pathlib import Path

import pytest

import tieredindex.remote
import tieredindex.store
import tieredindex.verifier
from tieredindex import FileState, IndexStore, crc32c, open_remote
from tieredindex.layout import DATA_PREFIX, data_key
from tieredindex.remotecheck import verify_url

from store_helpers import FOREVER, small_config, wait_until

HOUR_MS = 3_600_000
YEAR_MS = 365 * 24 * HOUR_MS


def step_store_clock(monkeypatch: pytest.MonkeyPatch, by_ms: int) -> None:
    real = time.time_ns
    monkeypatch.setattr(tieredindex.store, "_now_ms", lambda: real() // 1_000_000 + by_ms)


def host_clock_ahead(monkeypatch: pytest.MonkeyPatch, by: dt.timedelta) -> None:
    """This host's ``datetime.now`` runs ``by`` ahead, wherever the remote
    and the verifier modules read it."""

    class Ahead(dt.datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> dt.datetime:  # type: ignore[override]
            return dt.datetime.now(tz) + by

    skewed = types.SimpleNamespace(datetime=Ahead, UTC=dt.UTC, timedelta=dt.timedelta)
    monkeypatch.setattr(tieredindex.remote, "dt", skewed)
    monkeypatch.setattr(tieredindex.verifier, "dt", skewed, raising=False)


def test_a_file_begun_while_the_clock_was_ahead_still_rolls_by_age(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Aged by the wall clock, a file begun an hour "in the future" stayed
    local for that hour after the clock was put right."""
    with IndexStore(tmp_path / "d", remote_url, small_config(max_file_age_s=0.3)) as store:
        step_store_clock(monkeypatch, HOUR_MS)
        store.put("t", "k", queue_id=0, offset=1, size=1, timestamp_ms=1_000)
        step_store_clock(monkeypatch, 0)  # the clock is put right
        wait_until(
            lambda: [r.state for r in store.journal.files()] == [FileState.UPLOADED],
            "the file rolled by age and went up",
        )


def test_a_new_store_whose_clock_is_behind_keeps_later_put_first(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store taking over a prefix on an empty directory (same identity)
    named its first file from its own clock, which was behind the remote's
    newest file: equal timestamps then came out oldest first, here and from
    the remote alone."""
    config = small_config(store_id="broker-1")
    with IndexStore(tmp_path / "a", remote_url, config) as old:
        old.put("t", "k", queue_id=0, offset=1, size=1, timestamp_ms=5_000)
    step_store_clock(monkeypatch, -HOUR_MS)
    with IndexStore(tmp_path / "b", remote_url, config) as new:
        new.put("t", "k", queue_id=0, offset=2, size=1, timestamp_ms=5_000)
        assert [e.offset for e in new.query("t", "k", 0, FOREVER)] == [2, 1]
    step_store_clock(monkeypatch, 0)
    with IndexStore(tmp_path / "reader", remote_url, small_config(store_id="reader")) as reader:
        assert [e.offset for e in reader.query("t", "k", 0, FOREVER)] == [2, 1]


def test_a_moment_of_clock_a_year_ahead_deletes_nothing_by_retention(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retention compared each file with the wall clock once: a clock a
    year ahead for a moment (a bad NTP answer) deleted every remote file for
    good. Now a file goes once it has looked expired for RETENTION_CONFIRM_S."""
    monkeypatch.setattr(tieredindex.store, "RETENTION_CONFIRM_S", 30.0)
    remote = open_remote(remote_url)
    now = time.time_ns() // 1_000_000
    config = small_config(retention_s=7 * 24 * 3600.0, max_file_age_s=0.2)
    with IndexStore(tmp_path / "d", remote_url, config) as store:
        store.put("t", "k", queue_id=0, offset=1, size=1, timestamp_ms=now)
        wait_until(lambda: store.status().remote_files == 1, "the file is up")
        step_store_clock(monkeypatch, YEAR_MS)
        time.sleep(0.5)  # retention passes, each reconcile interval (0.05 s)
        step_store_clock(monkeypatch, 0)
        time.sleep(0.3)
        assert [o.key for o in remote.list(DATA_PREFIX)] != [], "retention deleted a file it must keep"
        assert [e.offset for e in store.query("t", "k", 0, FOREVER)] == [1]
        # Expired for real (the clock stays ahead): it goes once confirmed.
        monkeypatch.setattr(tieredindex.store, "RETENTION_CONFIRM_S", 0.3)
        step_store_clock(monkeypatch, YEAR_MS)
        wait_until(lambda: remote.list(DATA_PREFIX) == [], "retention deleted the expired file")


@pytest.mark.parametrize("remote_url", ["s3"], indirect=True)
def test_verify_ages_objects_by_the_servers_clock(
    tmp_path: Path, remote_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator host two hours ahead of S3, with the default hour of
    grace, took a data object written a moment ago (its record still to
    come) for an orphan and deleted it under the live writer."""
    remote = open_remote(remote_url)
    key = data_key("1700000000000-0000abcd")
    remote.put_if_absent(key, b"x" * 64, size=64, crc32c=crc32c(b"x" * 64))
    host_clock_ahead(monkeypatch, dt.timedelta(hours=2))
    report = verify_url(remote, deep=False, repair=True, grace_s=3600.0)
    assert [o.key for o in remote.list(DATA_PREFIX)] == [key], report.problems
    assert report.ok
