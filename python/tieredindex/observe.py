"""The store's journal, observed: every state change is logged and counted.

Every state change of a file goes through the journal, so this is the one
place that logs them: one line per change under the ``tieredindex``
logger, with the file, the old and new state, the upload attempt and the
error, if any. Errors reach this module already described without
credentials (``retry.describe_error``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tieredindex.journal import FileRecord, Journal
from tieredindex.metrics import StoreMetrics
from tieredindex.states import FileState

_LOG = logging.getLogger("tieredindex")

_BAD_ENDS = frozenset({FileState.QUARANTINED, FileState.CONFLICT})


class ObservedJournal(Journal):
    """A :class:`Journal` that reports to a :class:`StoreMetrics` and logs."""

    def __init__(self, path: str | Path, metrics: StoreMetrics) -> None:
        super().__init__(path)
        self.metrics = metrics
        metrics.load(self.files())

    def add(self, file_id: str, state: FileState, *, begin_ms: int, error: str | None = None) -> FileRecord:
        rec = super().add(file_id, state, begin_ms=begin_ms, error=error)
        self.metrics.file_changed(rec)
        _LOG.info("file %s: new, state %s", file_id, state)
        return rec

    def transition(self, file_id: str, new: FileState, **fields: Any) -> FileRecord:
        old = self.metrics.state_of(file_id)
        rec = super().transition(file_id, new, **fields)
        attempt = self.metrics.file_changed(rec)
        level = logging.ERROR if new in _BAD_ENDS else logging.INFO
        line = "file %s: %s -> %s"
        args: list[object] = [file_id, old or "?", new]
        if new is FileState.UPLOADING or (new is FileState.UPLOADED and attempt):
            line += ", attempt %d"
            args.append(attempt)
        if rec.count is not None and new is not FileState.UPLOADING:
            line += ", %d entries, %d bytes"
            args += [rec.count, rec.size or 0]
        error = fields.get("error")
        if error:
            line += ", error: %s"
            args.append(error)
            level = max(level, logging.WARNING)
        _LOG.log(level, line, *args)
        return rec

    def note_error(self, file_id: str, error: str | None) -> None:
        super().note_error(file_id, error)
        if error:
            state = self.metrics.state_of(file_id)
            attempt = self.metrics.attempts_of(file_id)
            _LOG.warning("file %s: %s, attempt %d failed: %s", file_id, state or "?", attempt, error)

    def remove(self, file_id: str) -> None:
        super().remove(file_id)
        self.metrics.file_removed(file_id)
        _LOG.info("file %s: removed from the journal (expired)", file_id)
