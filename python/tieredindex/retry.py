"""Retries for remote-store operations.

The remote back ends (:mod:`tieredindex.remote`) raise plain exceptions and
never retry by themselves (boto3 is configured with a single attempt). Callers
wrap each operation in :func:`run_with_retry`, which

* sorts every failure with :func:`classify` into ``"retry"``, ``"timeout"``
  (a retry that costs more budget) or ``"fatal"``;
* waits with AWS "full jitter" backoff: ``uniform(0, min(max_delay_s,
  base_delay_s * 2 ** (attempt - 1)))``;
* stops after ``RetryPolicy.attempts`` attempts, at the operation deadline, when
  the shared :class:`RetryBudget` runs dry, or as soon as ``stop_event`` is set
  (the backoff sleep is ``stop_event.wait(delay)``, so a shutdown cuts it short);
* raises :class:`tieredindex._native.RemoteError` when it gives up, naming the
  operation, the number of attempts and the last error.

No attempt ever *starts* after the deadline or once ``stop_event`` is set.
"""

from __future__ import annotations

import dataclasses
import errno
import http.client
import logging
import math
import os
import re
import ssl
import threading
import time
from collections.abc import Callable
from typing import Literal, TypeVar

import tenacity
from botocore import exceptions as boto_exc
from urllib3 import exceptions as urllib3_exc

from tieredindex._native import CorruptFileError, RemoteError, TieredIndexError

__all__ = [
    "Classification",
    "RetryBudget",
    "RetryPolicy",
    "classify",
    "describe_error",
    "run_with_retry",
]

T = TypeVar("T")

Classification = Literal["retry", "timeout", "fatal"]
"""``"retry"``: transient, retry with ``retry_cost``; ``"timeout"``: a network
timeout, retry with ``timeout_cost``; ``"fatal"``: retrying cannot help."""

_LOG = logging.getLogger("tieredindex")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How one remote operation is retried.

    ``attempts`` counts the first try. Delays are full jitter between 0 and
    ``min(max_delay_s, base_delay_s * 2 ** (n - 1))`` before retry ``n``.
    ``deadline_s`` bounds one operation, backoff included. The budget fields
    describe the token bucket shared by all operations on one remote, as in
    the AWS SDKs' standard retry mode.
    """

    attempts: int = 8
    base_delay_s: float = 0.1
    max_delay_s: float = 5.0
    deadline_s: float = 60.0
    budget_tokens: int = 500
    retry_cost: int = 5
    timeout_cost: int = 10
    success_refund: int = 1

    def __post_init__(self) -> None:
        def _int(name: str, minimum: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"RetryPolicy.{name} must be an int, got {type(value).__name__}")
            if value < minimum:
                raise ValueError(f"RetryPolicy.{name} must be >= {minimum}, got {value}")

        def _float(name: str, *, positive: bool) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"RetryPolicy.{name} must be a number, got {type(value).__name__}")
            if not math.isfinite(value) or value < 0 or (positive and value == 0):
                bound = "> 0" if positive else ">= 0"
                raise ValueError(f"RetryPolicy.{name} must be finite and {bound}, got {value}")

        _int("attempts", 1)
        _float("base_delay_s", positive=False)
        _float("max_delay_s", positive=False)
        _float("deadline_s", positive=True)
        _int("budget_tokens", 0)
        _int("retry_cost", 0)
        _int("timeout_cost", 0)
        _int("success_refund", 0)
        if self.max_delay_s < self.base_delay_s:
            raise ValueError(
                f"RetryPolicy.max_delay_s ({self.max_delay_s}) must be >= base_delay_s ({self.base_delay_s})"
            )

    def cost(self, kind: Classification) -> int:
        """Budget tokens one retry of this kind takes."""
        return self.timeout_cost if kind == "timeout" else self.retry_cost


class RetryBudget:
    """A retry-quota token bucket (AWS SDK standard mode), thread-safe.

    It starts full. Each retry takes tokens (:meth:`try_acquire`); when too few
    are left the operation fails instead of retrying, so a remote that is down
    is not hammered by every caller at once. A success gives tokens back
    (:meth:`release`): the cost of its last retry, or a small refund when it
    succeeded at once. Share one budget between all operations on one remote.
    """

    def __init__(self, capacity: int = 500) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int):
            raise TypeError("capacity must be an int")
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self._capacity = capacity
        self._available = capacity
        self._lock = threading.Lock()

    @classmethod
    def for_policy(cls, policy: RetryPolicy) -> RetryBudget:
        return cls(policy.budget_tokens)

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def available(self) -> int:
        with self._lock:
            return self._available

    def try_acquire(self, amount: int) -> bool:
        """Take ``amount`` tokens if that many are left; else take none."""
        if amount < 0:
            raise ValueError(f"amount must be >= 0, got {amount}")
        with self._lock:
            if amount > self._available:
                return False
            self._available -= amount
            return True

    def release(self, amount: int) -> None:
        """Give back ``amount`` tokens, never above the capacity."""
        if amount < 0:
            raise ValueError(f"amount must be >= 0, got {amount}")
        with self._lock:
            self._available = min(self._capacity, self._available + amount)

    def __repr__(self) -> str:
        return f"RetryBudget(available={self.available}, capacity={self._capacity})"


# --------------------------------------------------------------------------
# Classification

# botocore standard mode: throttling codes, transient codes and statuses.
_THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    }
)
_TRANSIENT_CODES = frozenset(
    {
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        # S3 recomputed a different checksum than we sent: the bytes were
        # damaged on the way; the operation re-reads the source and resends.
        "BadDigest",
        "XAmzContentSHA256Mismatch",
        # MinIO's name for BadDigest on an x-amz-checksum-* header.
        "XAmzContentChecksumMismatch",
        # 409 on a conditional write racing another write: retry the upload.
        "ConditionalRequestConflict",
        "OperationAborted",
        # The multipart upload vanished before Complete (aborted by someone
        # else or expired): the whole put is redone.
        "NoSuchUpload",
    }
)
_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})

# OSError errnos worth another try on a file:// remote (NFS and friends).
_TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "EIO",
        "EAGAIN",
        "EWOULDBLOCK",
        "EINTR",
        "EBUSY",
        "ETIMEDOUT",
        "ESTALE",
        "ENOBUFS",
        "ENOLCK",
        "ECONNRESET",
        "ECONNABORTED",
        "ECONNREFUSED",
        "ENETDOWN",
        "ENETUNREACH",
        "ENETRESET",
        "EHOSTDOWN",
        "EHOSTUNREACH",
        "EREMOTEIO",
    )
    if hasattr(errno, name)
)

_BOTO_TIMEOUTS = (boto_exc.ConnectTimeoutError, boto_exc.ReadTimeoutError)
_BOTO_TRANSIENT = (
    boto_exc.ConnectionError,  # EndpointConnectionError, SSLError, proxy errors
    boto_exc.HTTPClientError,  # ConnectionClosedError, ResponseStreamingError
    boto_exc.IncompleteReadError,
    boto_exc.ChecksumError,
    boto_exc.FlexibleChecksumError,
    boto_exc.CredentialRetrievalError,
)
_URLLIB3_TRANSIENT = (
    urllib3_exc.ProtocolError,
    urllib3_exc.NewConnectionError,
    urllib3_exc.ProxyError,
    urllib3_exc.IncompleteRead,
    urllib3_exc.SSLError,
    urllib3_exc.ResponseError,
    urllib3_exc.PoolError,
)


def _client_error_fields(exc: boto_exc.ClientError) -> tuple[str, int | None]:
    response = getattr(exc, "response", None) or {}
    error = response.get("Error") or {}
    code = str(error.get("Code") or "")
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return code, status if isinstance(status, int) else None


def _certificate_rejected(exc: BaseException) -> bool:
    """A TLS certificate that failed verification, anywhere in the chain
    (botocore wraps it in an ``SSLError`` whose text names it)."""
    seen: set[int] = set()
    at: BaseException | None = exc
    while at is not None and id(at) not in seen:
        seen.add(id(at))
        if isinstance(at, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(at):
            return True
        at = at.__cause__ or at.__context__
    return False


def classify(exc: BaseException) -> Classification:
    """Whether retrying the operation that raised ``exc`` can help.

    * ``"timeout"``: connect/read timeouts (botocore, urllib3, ``TimeoutError``).
    * ``"retry"``: throttling (``SlowDown``, ``Throttling``, 429), server
      errors (500/502/503/504, ``InternalError``, ``RequestTimeout``),
      ``BadDigest``, 409 conflicts, connection errors and transient ``OSError``
      errnos (``EIO``, ``EAGAIN``, ``ETIMEDOUT``, ``ESTALE``, ...).
    * ``"fatal"``: everything else, including ``AccessDenied``,
      ``InvalidAccessKeyId``, ``SignatureDoesNotMatch``, ``NoSuchBucket``,
      ``NoSuchKey``, other 4xx, missing credentials, bad parameters,
      missing files, a TLS certificate that fails verification, the
      package's own errors and non-``Exception``\\ s.
    """
    if not isinstance(exc, Exception):
        return "fatal"
    if isinstance(exc, TieredIndexError):
        return "fatal"
    if _certificate_rejected(exc):
        return "fatal"  # a certificate that does not verify will not on a retry
    if isinstance(exc, boto_exc.ClientError):
        code, status = _client_error_fields(exc)
        if code in _THROTTLING_CODES or code in _TRANSIENT_CODES:
            return "retry"
        if status in _TRANSIENT_STATUS:
            return "retry"
        return "fatal"
    if isinstance(exc, _BOTO_TIMEOUTS):
        return "timeout"
    if isinstance(exc, _BOTO_TRANSIENT):
        return "retry"
    if isinstance(exc, boto_exc.BotoCoreError):
        # NoCredentialsError, ParamValidationError, NoRegionError, ...
        return "fatal"
    if isinstance(exc, urllib3_exc.TimeoutError) and not isinstance(exc, urllib3_exc.NewConnectionError):
        return "timeout"
    if isinstance(exc, _URLLIB3_TRANSIENT):
        return "retry"
    if isinstance(exc, urllib3_exc.HTTPError):
        return "fatal"
    if isinstance(exc, TimeoutError):  # socket.timeout included
        return "timeout"
    if isinstance(exc, (ConnectionError, http.client.IncompleteRead)):
        return "retry"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "retry"
    if isinstance(exc, OSError):
        return "retry" if exc.errno in _TRANSIENT_ERRNOS else "fatal"
    return "fatal"


# --------------------------------------------------------------------------
# Messages

_SECRET_PATTERNS = (
    re.compile(
        r"(?i)\b(x-amz-security-token|x-amz-signature|x-amz-credential|signature"
        r"|awsaccesskeyid|credential|aws_secret_access_key|aws_session_token)"
        r"=[^&\s,;\"']+"
    ),
)
_MAX_ERROR_CHARS = 500


def _redact(text: str) -> str:
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: f"{m.group(1)}=<redacted>", text)
    for var in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID"):
        value = os.environ.get(var)
        if value and len(value) >= 8:
            text = text.replace(value, "<redacted>")
    return text


def is_not_found(exc: BaseException) -> bool:
    """A RemoteError whose cause (or its cause) is a missing object."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, FileNotFoundError):
            return True
        seen = seen.__cause__
    return False


def describe_error(exc: BaseException) -> str:
    """A one-line description of ``exc`` with credentials removed."""
    if isinstance(exc, boto_exc.ClientError):
        code, status = _client_error_fields(exc)
        message = str((exc.response.get("Error") or {}).get("Message") or "")
        op = getattr(exc, "operation_name", "") or "request"
        text = f"{op}: {code or 'error'} (HTTP {status if status else '?'})"
        if message:
            text += f": {message}"
    else:
        detail = str(exc)
        text = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    text = " ".join(_redact(text).split())
    if len(text) > _MAX_ERROR_CHARS:
        text = text[: _MAX_ERROR_CHARS - 3] + "..."
    return text


# --------------------------------------------------------------------------
# The retry loop


class _Interrupted(Exception):
    """Raised from the backoff sleep when ``stop_event`` was set."""


@dataclasses.dataclass
class _LoopState:
    attempts: int = 0
    last_kind: Classification = "fatal"
    last_cost: int = 0
    stop_reason: str = ""


def run_with_retry(
    op: Callable[[], T],
    *,
    policy: RetryPolicy,
    budget: RetryBudget | None,
    stop_event: threading.Event | None = None,
    deadline: float | None = None,
    describe: str,
    log: logging.Logger | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] | None = None,
) -> T:
    """Run ``op()`` and retry it on transient failures.

    ``deadline`` is an absolute :func:`time.monotonic` value; the effective
    deadline is the earlier of it and ``policy.deadline_s`` from now. No
    attempt starts at or after the deadline, nor once ``stop_event`` is set;
    a backoff sleep that would end past the deadline is not started.

    ``budget`` (shared per remote; ``None`` for no budget) pays for every
    retry: ``policy.retry_cost`` tokens, ``policy.timeout_cost`` after a
    timeout. A success refunds the cost of its last retry, or
    ``policy.success_refund`` when the first attempt succeeded.

    ``clock`` and ``sleep`` exist for tests; by default the sleep is
    ``stop_event.wait(delay)`` (or :func:`time.sleep` without an event) and a
    custom ``sleep`` is followed by a check of ``stop_event``.

    Raises :class:`RemoteError` (chained to the last error) when the error is
    fatal or retrying stops; its ``attempts`` is how many were made. Two
    kinds propagate unchanged: a :class:`CorruptFileError` (the local data
    no longer matches its record: not a remote failure, and the caller, who
    knows where an intact copy is, must see it as such), and
    ``BaseException``\\ s that are not ``Exception`` (``KeyboardInterrupt``...).
    """
    logger = log if log is not None else _LOG
    start = clock()
    end = start + policy.deadline_s
    if deadline is not None:
        end = min(end, deadline)
    state = _LoopState()

    def stopped() -> bool:
        return stop_event is not None and stop_event.is_set()

    def fail(reason: str, last: BaseException | None) -> RemoteError:
        n = state.attempts
        what = f"{describe}: {reason} after {n} attempt{'s' if n != 1 else ''}"
        if last is not None:
            what += f"; last error: {describe_error(last)}"
        error = RemoteError(what)
        # 0: cut short (stop or deadline) before its first attempt, so it
        # says nothing about the remote; callers keep an earlier cause.
        error.attempts = n  # type: ignore[attr-defined]
        return error

    def attempt() -> T:
        if stopped():
            state.stop_reason = "stopped (shutdown requested)"
            raise _Interrupted
        if clock() >= end:
            state.stop_reason = "deadline exceeded"
            raise _Interrupted
        state.attempts += 1
        return op()

    def should_retry(exc: BaseException) -> bool:
        if isinstance(exc, _Interrupted):
            return False
        state.last_kind = classify(exc)
        return state.last_kind != "fatal"

    def should_stop(rs: tenacity.RetryCallState) -> bool:
        if rs.attempt_number >= policy.attempts:
            state.stop_reason = f"gave up (retries exhausted: {policy.attempts} max)"
            return True
        if stopped():
            state.stop_reason = "stopped (shutdown requested)"
            return True
        if clock() + rs.upcoming_sleep >= end:
            state.stop_reason = "deadline exceeded"
            return True
        cost = policy.cost(state.last_kind)
        if budget is not None and not budget.try_acquire(cost):
            state.stop_reason = "retry budget exhausted"
            return True
        state.last_cost = cost
        return False

    def before_sleep(rs: tenacity.RetryCallState) -> None:
        exc = rs.outcome.exception() if rs.outcome is not None else None
        logger.warning(
            "%s: attempt %d/%d failed (%s), retrying in %.3fs: %s",
            describe,
            rs.attempt_number,
            policy.attempts,
            state.last_kind,
            rs.upcoming_sleep,
            describe_error(exc) if exc is not None else "?",
        )

    def do_sleep(seconds: float) -> None:
        if sleep is not None:
            sleep(seconds)
            interrupted = stopped()
        elif stop_event is not None:
            interrupted = stop_event.wait(seconds)
        else:
            time.sleep(seconds)
            interrupted = False
        if interrupted:
            state.stop_reason = "stopped (shutdown requested)"
            raise _Interrupted

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(should_retry),
        stop=should_stop,
        wait=tenacity.wait_random_exponential(multiplier=policy.base_delay_s, max=policy.max_delay_s),
        sleep=do_sleep,
        before_sleep=before_sleep,
        reraise=True,
    )

    last_error: BaseException | None = None

    def tracked() -> T:
        nonlocal last_error
        try:
            return attempt()
        except _Interrupted:
            raise
        except BaseException as exc:
            last_error = exc
            raise

    try:
        result = retrying(tracked)
    except _Interrupted:
        raise fail(state.stop_reason, last_error) from last_error
    except CorruptFileError:
        raise
    except Exception as exc:
        if state.last_kind == "fatal" or not state.stop_reason:
            raise fail("non-retryable error", exc) from exc
        raise fail(state.stop_reason, exc) from exc
    if budget is not None:
        budget.release(state.last_cost if state.attempts > 1 else policy.success_refund)
    return result
