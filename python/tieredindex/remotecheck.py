"""Verifying a remote without running a store (``tieredindex verify``).

:func:`verify_url` runs :func:`tieredindex.verifier.verify_remote` with the
retry policy, and, given a store directory, repairs from that store's
verified local sealed copies (found through its journal, read-only). It
never takes the store's lock: a repair beside a live store is refused by
the caller, which can tell (``localstatus.holder_pid``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tieredindex.layout import SEALED_DIR
from tieredindex.localstatus import read_journal
from tieredindex.remote import Remote, crc32c_of_file
from tieredindex.reports import VerifyReport
from tieredindex.retry import RetryBudget, RetryPolicy, run_with_retry
from tieredindex.verifier import verify_remote

T = TypeVar("T")

DEFAULT_POLICY = RetryPolicy(attempts=5, base_delay_s=0.1, max_delay_s=2.0, deadline_s=30.0)


def retrying_call(
    policy: RetryPolicy = DEFAULT_POLICY, stop: threading.Event | None = None
) -> Callable[[Callable[[], Any], str], Any]:
    """``call(op, describe)``: runs ``op`` under ``policy`` (one shared
    retry budget); raises :class:`RemoteError` when it fails for good."""
    budget = RetryBudget.for_policy(policy)

    def call(op: Callable[[], T], describe: str) -> T:
        return run_with_retry(op, policy=policy, budget=budget, stop_event=stop, describe=describe)

    return call


def local_copies(directory: Path | None) -> Callable[[str], Path | None]:
    """The verified local sealed copy of a file id in ``directory``'s store
    (its size and CRC32C match the journal), or None."""
    if directory is None:
        return lambda _file_id: None
    view = read_journal(directory)

    def find(file_id: str) -> Path | None:
        rec = view.get(file_id)
        path = directory / SEALED_DIR / f"{file_id}.sealed"
        if rec is None or rec.crc32c is None or not path.is_file() or path.stat().st_size != rec.size:
            return None
        return path if crc32c_of_file(path) == rec.crc32c else None  # in chunks: files run to GBs

    return find


def verify_url(
    remote: Remote,
    *,
    deep: bool,
    repair: bool,
    directory: Path | None = None,
    grace_s: float = 3600.0,
    progress: Callable[[int, int], None] | None = None,
    policy: RetryPolicy = DEFAULT_POLICY,
) -> VerifyReport:
    return verify_remote(
        remote,
        call=retrying_call(policy),
        deep=deep,
        repair=repair,
        local_copy=local_copies(directory),
        in_flight=set(),
        grace_s=grace_s,
        progress=progress,
    )
