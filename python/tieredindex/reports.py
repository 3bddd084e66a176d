"""What the store reports: recovery, status, verification, shutdown."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class RecoveryReport:
    """What ``start()`` found and did locally. Remote reconciliation runs in
    the background (it must not keep a broker from starting during an
    outage); its progress shows in ``status()``."""

    files: int
    """Journal records found."""
    reopened: list[str]
    """Unsealed files reopened after an unclean stop."""
    dropped_entries: int
    """Torn or unfinished entries dropped from reopened files (never served)."""
    quarantined: list[str]
    """Damaged files moved to quarantine/ (kept)."""
    salvaged: dict[str, int]
    """Intact entries salvaged from each quarantined file into a new one."""
    resumed: list[str]
    """Files whose sealing or upload will be resumed."""
    removed_temp_files: int
    journal_quarantined: str | None = None
    """Where a damaged journal was moved; the journal was then rebuilt from
    the local files (their uploads are redone put-if-absent)."""


@dataclasses.dataclass(frozen=True)
class StoreStatus:
    files_by_state: dict[str, int]
    pending_files: list[str]
    """Files whose entries are not yet in the remote store."""
    pending_bytes: int
    """Bytes of sealed files waiting for upload."""
    oldest_pending_age_s: float | None
    last_error: str | None
    reconciled: bool
    """Background reconciliation with the remote has completed once."""
    aborted_multipart_uploads: int
    remote_files: int
    """Files visible in the remote manifest."""
    quarantined: list[str]
    """Local files and remote objects that failed a check, never served."""
    closed: bool


@dataclasses.dataclass(frozen=True)
class Problem:
    kind: str
    """``missing``, ``size-mismatch``, ``checksum-mismatch`` (a deep verify's
    re-hash included), ``bad-manifest``, ``orphan``, ``open-multipart-upload``,
    ``unchecked`` (the object could not be checked: ``detail`` says why; an
    empty ``key``: the open multipart uploads could not be listed)."""
    key: str
    detail: str
    action: str = ""
    """What repair did, or why it could not (empty without repair)."""
    fixed: bool = False


@dataclasses.dataclass(frozen=True)
class VerifyReport:
    ok: bool
    """No problem left (after repair, when asked)."""
    problems: list[Problem]
    checked_files: int
    checked_bytes: int


@dataclasses.dataclass(frozen=True)
class ShutdownReport:
    clean: bool
    """Every entry put before shutdown is in the remote store, verified
    against the recorded size and CRC32C."""
    uploaded: list[str]
    """Files this shutdown uploaded."""
    pending: list[str]
    """Files still not in the remote store; the next start() finishes them."""
    elapsed_s: float
    error: str | None = None
