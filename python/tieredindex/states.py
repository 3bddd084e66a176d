"""The upload state machine of one index file, in one place.

Every state change goes through :func:`check_transition` (called by the
journal inside the transaction that records it), so an illegal move is a
bug that fails loudly, never a silent corruption of the journal.

States:

``ACTIVE``
    The one file ``put`` writes to. Local, unsealed, memory-mapped.
``ROLLED``
    No longer written (full, too old, or shutdown), waiting to be sealed.
    Still answers queries from the unsealed file.
``SEALED``
    The sealed copy is on local disk; its size and CRC32C are recorded.
    Waiting for upload. The copy is not fsynced: the unsealed original,
    synced by the seal, stays until the upload is verified, and a copy
    found missing or damaged (power loss) is sealed again from it.
``UPLOADING``
    Intent recorded before any remote side effect: object key, size, CRC32C
    and a fresh attempt id. An upload may be in flight, or interrupted by a
    crash; a later attempt resumes it (put-if-absent makes that safe).
``UPLOADED`` (final)
    The remote object was verified against the recorded size and CRC32C and
    its manifest record, which makes it visible, was written.
``EMPTY`` (final)
    Sealed with no entries. Never uploaded (RocketMQ uploaded an empty 40 MB
    object at every restart).
``QUARANTINED`` (final)
    Damaged. The file is kept under ``quarantine/`` for inspection; its
    intact entries were salvaged into a new file.
``CONFLICT`` (final)
    A different object already holds this file's remote key. Reported,
    never overwritten; the local copy is kept.
"""

from __future__ import annotations

import enum


class FileState(enum.StrEnum):
    ACTIVE = "ACTIVE"
    ROLLED = "ROLLED"
    SEALED = "SEALED"
    UPLOADING = "UPLOADING"
    UPLOADED = "UPLOADED"
    EMPTY = "EMPTY"
    QUARANTINED = "QUARANTINED"
    CONFLICT = "CONFLICT"


FINAL_STATES = frozenset({FileState.UPLOADED, FileState.EMPTY, FileState.QUARANTINED, FileState.CONFLICT})
"""States a file never leaves."""

PENDING_STATES = frozenset({FileState.ACTIVE, FileState.ROLLED, FileState.SEALED, FileState.UPLOADING})
"""States whose entries are not yet in the remote store."""
UNFINISHED_STATES = PENDING_STATES | {FileState.CONFLICT}
"""Pending, or held back by a conflict: the files status reports as not remote."""

TRANSITIONS: dict[FileState, frozenset[FileState]] = {
    FileState.ACTIVE: frozenset({FileState.ROLLED, FileState.QUARANTINED}),
    FileState.ROLLED: frozenset({FileState.SEALED, FileState.EMPTY, FileState.QUARANTINED}),
    # Back to ROLLED when the sealed copy is found damaged before upload
    # (it is re-sealed from the unsealed original, which is still kept).
    FileState.SEALED: frozenset({FileState.UPLOADING, FileState.ROLLED, FileState.QUARANTINED}),
    # A self-transition starts a new attempt (idempotent retries).
    FileState.UPLOADING: frozenset(
        {FileState.UPLOADING, FileState.UPLOADED, FileState.CONFLICT, FileState.ROLLED, FileState.QUARANTINED}
    ),
    FileState.UPLOADED: frozenset(),
    FileState.EMPTY: frozenset(),
    FileState.QUARANTINED: frozenset(),
    FileState.CONFLICT: frozenset(),
}


class IllegalTransitionError(RuntimeError):
    """A state change the table does not allow: a bug, never user error."""


def check_transition(file_id: str, old: FileState, new: FileState) -> None:
    """Raises :class:`IllegalTransitionError` unless ``old -> new`` is allowed."""
    if new not in TRANSITIONS[old]:
        raise IllegalTransitionError(f"file {file_id}: {old} -> {new} is not allowed")
