"""Named fault points for crash tests.

``TIEREDINDEX_FAULTS`` in the environment arms points, comma-separated:
``name`` or ``name:action`` or ``name:action:nth``. Actions: ``kill``
(SIGKILL this process, the default), ``raise`` (raise :class:`InjectedFault`),
``exit`` (``os._exit(99)``), ``term`` (SIGTERM to this process, then go on:
its Python handler runs right there, at the next bytecode of the main
thread when the point is on it). ``nth`` (default 1) fires on the nth time
the point is reached. Unarmed points cost one dict lookup.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

ENV_VAR = "TIEREDINDEX_FAULTS"

# Points on the way of a put: from the put to its file's upload, and the
# shutdown. Any broker that puts reaches them (the crash tests kill at each).
WRITE_PATH_POINTS = frozenset(
    {
        "put.after_write",
        "roll.after_journal",
        "seal.before",
        "seal.compact",  # in the Rust core, half way through compaction (rust/faults.rs)
        "create.after_preallocate",  # in the Rust core: a new file's space taken, no header yet
        "seal.after_file",
        "seal.after_journal",
        "upload.after_intent",
        "upload.after_put",
        "upload.after_verify",
        "manifest.after_write",
        "upload.after_journal",
        "local.before_delete",
        "journal.before_commit",
        "journal.after_commit",
        "upload.part",
        "upload.complete",
        "shutdown.before_record",
    }
)
# Reached only by retention (a store with StoreConfig.retention_s).
RETENTION_POINTS = frozenset({"retention.after_record_delete"})
POINTS = WRITE_PATH_POINTS | RETENTION_POINTS


class InjectedFault(RuntimeError):
    """Raised by a fault point armed with the ``raise`` action."""


def _parse(spec: str) -> dict[str, tuple[str, int]]:
    armed: dict[str, tuple[str, int]] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, rest = item.partition(":")
        action, _, nth = rest.partition(":")
        if name not in POINTS:
            raise ValueError(f"{ENV_VAR}: unknown fault point {name!r}; known: {sorted(POINTS)}")
        if action not in ("", "kill", "raise", "exit", "term"):
            raise ValueError(
                f"{ENV_VAR}: unknown action {action!r} at {name!r}; known: kill, raise, exit, term"
            )
        armed[name] = (action or "kill", int(nth or 1))
    return armed


_armed = _parse(os.environ.get(ENV_VAR, ""))
_hits: dict[str, int] = {}
_lock = threading.Lock()


def arm(spec: str) -> None:
    """Re-reads the armed points from ``spec`` (tests in-process)."""
    global _armed
    with _lock:
        _armed = _parse(spec)
        _hits.clear()


@contextlib.contextmanager
def armed(spec: str) -> Iterator[None]:
    """Arms ``spec`` for the block, then disarms every point (tests in-process)."""
    arm(spec)
    try:
        yield
    finally:
        arm("")


def fault_point(name: str) -> None:
    """Fires the fault armed at ``name``, if any."""
    if not _armed:
        return
    with _lock:
        if name not in _armed:
            return
        action, nth = _armed[name]
        _hits[name] = _hits.get(name, 0) + 1
        if _hits[name] != nth:
            return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "exit":
        os._exit(99)
    elif action == "term":
        os.kill(os.getpid(), signal.SIGTERM)
        return
    raise InjectedFault(f"fault injected at {name}")
