"""tieredindex: a tiered-storage hash-slot index engine for message brokers.

The Rust core (`tieredindex._native`) writes, seals and checks index files;
the Python layer uploads them to a remote store and answers queries.
"""

from importlib.metadata import PackageNotFoundError, version

from tieredindex._entry import Entry
from tieredindex._native import (
    CorruptFileError,
    IndexFile,
    RemoteError,
    SealedFooter,
    SealedIndex,
    StoreClosedError,
    StoreLockedError,
    TieredIndexError,
    crc32c,
    key_fingerprint_of,
    salvage,
)
from tieredindex._native import (
    __version__ as _native_version,
)
from tieredindex.config import StoreConfig
from tieredindex.remote import Remote, open_remote
from tieredindex.reports import (
    Problem,
    RecoveryReport,
    ShutdownReport,
    StoreStatus,
    VerifyReport,
)
from tieredindex.retry import RetryPolicy
from tieredindex.states import FileState
from tieredindex.store import IndexStore

try:
    __version__ = version("tieredindex")
except PackageNotFoundError:  # running from a source tree
    __version__ = _native_version

if __version__ != _native_version:
    raise ImportError(
        f"tieredindex {__version__} found native module {_native_version}: reinstall the package"
    )

__all__ = [
    "CorruptFileError",
    "Entry",
    "FileState",
    "IndexFile",
    "IndexStore",
    "Problem",
    "RecoveryReport",
    "Remote",
    "RemoteError",
    "RetryPolicy",
    "SealedFooter",
    "SealedIndex",
    "ShutdownReport",
    "StoreClosedError",
    "StoreConfig",
    "StoreLockedError",
    "StoreStatus",
    "TieredIndexError",
    "VerifyReport",
    "__version__",
    "crc32c",
    "key_fingerprint_of",
    "open_remote",
    "salvage",
]
