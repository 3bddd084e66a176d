"""tieredindex.retry: classification, policy, budget and the retry loop."""

from __future__ import annotations

import dataclasses
import errno
import logging
import random
import ssl
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import urllib3.exceptions as u3
from botocore import exceptions as be

from tieredindex._native import CorruptFileError, RemoteError
from tieredindex.retry import (
    RetryBudget,
    RetryPolicy,
    classify,
    describe_error,
    run_with_retry,
)


def client_error(code: str, status: int, op: str = "PutObject", message: str = "boom") -> be.ClientError:
    return be.ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}},  # type: ignore[typeddict-item]
        op,
    )


# --------------------------------------------------------------------------
# classify


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("SlowDown", 503),
        ("Throttling", 400),
        ("ThrottlingException", 400),
        ("RequestTimeout", 400),
        ("RequestTimeoutException", 408),
        ("InternalError", 500),
        ("ServiceUnavailable", 503),
        ("BadGateway", 502),
        ("GatewayTimeout", 504),
        ("TooManyRequests", 429),
        ("BadDigest", 400),
        # MinIO's BadDigest for an x-amz-checksum-* header the body does not match
        ("XAmzContentChecksumMismatch", 400),
        ("ConditionalRequestConflict", 409),
        ("NoSuchUpload", 404),
    ],
)
def test_classify_retryable_client_errors(code: str, status: int) -> None:
    assert classify(client_error(code, status)) == "retry"


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("AccessDenied", 403),
        ("InvalidAccessKeyId", 403),
        ("SignatureDoesNotMatch", 403),
        ("NoSuchBucket", 404),
        ("NoSuchKey", 404),
        ("InvalidRequest", 400),
        ("InvalidArgument", 400),
        ("EntityTooSmall", 400),
        ("PreconditionFailed", 412),
        ("404", 404),
    ],
)
def test_classify_fatal_client_errors(code: str, status: int) -> None:
    assert classify(client_error(code, status)) == "fatal"


class _FakeConn:
    pass


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (be.EndpointConnectionError(endpoint_url="http://x"), "retry"),
        (be.ConnectionError(error=OSError("refused")), "retry"),
        (be.ConnectionClosedError(endpoint_url="http://x"), "retry"),
        (be.SSLError(endpoint_url="http://x", error=OSError("eof")), "retry"),
        # A certificate that does not verify is configuration, not weather.
        (
            be.SSLError(
                endpoint_url="https://x",
                error=ssl.SSLCertVerificationError(
                    1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"
                ),
            ),
            "fatal",
        ),
        (u3.SSLError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"), "fatal"),
        (be.IncompleteReadError(actual_bytes=1, expected_bytes=2), "retry"),
        (be.FlexibleChecksumError(error_msg="mismatch"), "retry"),
        (be.ReadTimeoutError(endpoint_url="http://x"), "timeout"),
        (be.ConnectTimeoutError(endpoint_url="http://x"), "timeout"),
        (be.NoCredentialsError(), "fatal"),
        (be.ParamValidationError(report="bad"), "fatal"),
        (u3.ProtocolError("reset"), "retry"),
        (u3.NewConnectionError(_FakeConn(), "refused"), "retry"),  # type: ignore[arg-type]
        (u3.ReadTimeoutError(None, "/x", "slow"), "timeout"),  # type: ignore[arg-type]
        (u3.ConnectTimeoutError("slow"), "timeout"),
        (u3.LocationParseError("bad"), "fatal"),
        (TimeoutError("t"), "timeout"),
        (ConnectionResetError(errno.ECONNRESET, "reset"), "retry"),
        (OSError(errno.EIO, "io"), "retry"),
        (OSError(errno.EAGAIN, "again"), "retry"),
        (OSError(errno.ESTALE, "stale"), "retry"),
        (OSError(errno.EACCES, "denied"), "fatal"),
        (OSError(errno.ENOSPC, "full"), "fatal"),
        (PermissionError(errno.EPERM, "perm"), "fatal"),
        (FileNotFoundError(errno.ENOENT, "missing"), "fatal"),
        (ValueError("bad"), "fatal"),
        (TypeError("bad"), "fatal"),
        (RemoteError("x"), "fatal"),
        (CorruptFileError("x"), "fatal"),
        (KeyboardInterrupt(), "fatal"),
    ],
)
def test_classify_other_errors(exc: BaseException, expected: str) -> None:
    assert classify(exc) == expected


# --------------------------------------------------------------------------
# RetryPolicy


def test_policy_defaults() -> None:
    p = RetryPolicy()
    assert (p.attempts, p.base_delay_s, p.max_delay_s, p.deadline_s) == (8, 0.1, 5.0, 60.0)
    assert (p.budget_tokens, p.retry_cost, p.timeout_cost, p.success_refund) == (500, 5, 10, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.attempts = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        RetryPolicy(3)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("attempts", 0),
        ("attempts", -1),
        ("base_delay_s", -0.1),
        ("base_delay_s", float("nan")),
        ("max_delay_s", float("inf")),
        ("deadline_s", 0),
        ("deadline_s", -5.0),
        ("budget_tokens", -1),
        ("retry_cost", -1),
        ("timeout_cost", -1),
        ("success_refund", -1),
    ],
)
def test_policy_rejects_bad_values(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        RetryPolicy(**{field: value})


def test_policy_rejects_wrong_types_and_inverted_delays() -> None:
    with pytest.raises(TypeError, match="attempts"):
        RetryPolicy(attempts=2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="deadline_s"):
        RetryPolicy(deadline_s="60")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_delay_s"):
        RetryPolicy(base_delay_s=2.0, max_delay_s=1.0)


# --------------------------------------------------------------------------
# RetryBudget


def test_budget_acquire_release_and_cap() -> None:
    b = RetryBudget(12)
    assert b.try_acquire(5) and b.try_acquire(5)
    assert b.available == 2
    assert not b.try_acquire(5)
    assert b.available == 2  # a failed acquire takes nothing
    b.release(100)
    assert b.available == 12  # never above capacity
    assert RetryBudget.for_policy(RetryPolicy(budget_tokens=7)).capacity == 7
    with pytest.raises(ValueError):
        RetryBudget(-1)


def test_budget_is_thread_safe() -> None:
    b = RetryBudget(1000)
    wins: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        n = 0
        for _ in range(500):
            if b.try_acquire(1):
                n += 1
        with lock:
            wins.append(n)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(wins) == 1000
    assert b.available == 0


# --------------------------------------------------------------------------
# run_with_retry


class FakeClock:
    """A monotonic clock that moves only when the retry loop sleeps."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Flaky:
    """Raises the given errors in turn, then returns ``result``."""

    def __init__(self, errors: Sequence[BaseException], result: str = "ok") -> None:
        self.errors = list(errors)
        self.calls = 0
        self.result = result

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.result


def run(
    op: Callable[[], str],
    policy: RetryPolicy,
    clock: FakeClock,
    budget: RetryBudget | None = None,
    **kwargs: Any,
) -> str:
    return run_with_retry(
        op,
        policy=policy,
        budget=budget,
        describe="put files/a.tix to s3://b/p/",
        clock=clock,
        sleep=clock.sleep,
        **kwargs,
    )


def test_success_after_transient_errors_logs_each_retry(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    budget = RetryBudget(500)
    op = Flaky([client_error("SlowDown", 503), be.EndpointConnectionError(endpoint_url="http://h")])
    with caplog.at_level(logging.WARNING, logger="tieredindex"):
        assert run(op, RetryPolicy(), clock, budget) == "ok"
    assert op.calls == 3
    assert len(clock.sleeps) == 2
    records = [r for r in caplog.records if r.name == "tieredindex"]
    assert len(records) == 2
    first, second = (r.getMessage() for r in records)
    assert "put files/a.tix to s3://b/p/" in first and "attempt 1/8" in first and "SlowDown" in first
    assert "attempt 2/8" in second and "EndpointConnectionError" in second
    # two retries cost 5 each; the success refunds the last retry's cost
    assert budget.available == 500 - 10 + 5


def test_first_try_success_refunds_and_does_not_sleep() -> None:
    clock = FakeClock()
    budget = RetryBudget(10)
    assert budget.try_acquire(5)
    assert run(Flaky([]), RetryPolicy(), clock, budget) == "ok"
    assert clock.sleeps == []
    assert budget.available == 6  # success_refund = 1


def test_full_jitter_delays_are_bounded_and_jittered() -> None:
    random.seed(1234)
    policy = RetryPolicy(attempts=12, base_delay_s=0.1, max_delay_s=2.0, deadline_s=10_000)
    by_attempt: dict[int, list[float]] = {}
    for _ in range(200):
        clock = FakeClock()
        op = Flaky([client_error("InternalError", 500)] * 11)
        assert run(op, policy, clock) == "ok"
        assert len(clock.sleeps) == 11
        for n, delay in enumerate(clock.sleeps, start=1):
            by_attempt.setdefault(n, []).append(delay)
    for n, delays in by_attempt.items():
        cap = min(2.0, 0.1 * 2 ** (n - 1))
        assert all(0.0 <= d <= cap for d in delays), (n, max(delays), cap)
        # full jitter: spread over the whole window, not clustered at the cap
        assert min(delays) < 0.25 * cap
        assert max(delays) > 0.75 * cap
    assert max(by_attempt[11]) > 1.5  # the cap is reached for late attempts


def test_exhausted_attempts_raise_remote_error_naming_everything() -> None:
    clock = FakeClock()
    last = client_error("SlowDown", 503, message="please slow down")
    op = Flaky([client_error("SlowDown", 503)] * 2 + [last])
    with pytest.raises(RemoteError) as info:
        run(op, RetryPolicy(attempts=3), clock)
    msg = str(info.value)
    assert op.calls == 3
    assert "put files/a.tix to s3://b/p/" in msg
    assert "3 attempts" in msg
    assert "SlowDown" in msg and "please slow down" in msg
    assert info.value.__cause__ is last


def test_fatal_error_raises_at_once() -> None:
    clock = FakeClock()
    err = client_error("AccessDenied", 403, message="Access Denied")
    op = Flaky([err, client_error("SlowDown", 503)])
    with pytest.raises(RemoteError, match=r"non-retryable.*1 attempt.*AccessDenied") as info:
        run(op, RetryPolicy(), clock)
    assert op.calls == 1
    assert clock.sleeps == []
    assert info.value.__cause__ is err


def test_policy_deadline_is_respected() -> None:
    random.seed(7)
    clock = FakeClock()
    start = clock.now
    policy = RetryPolicy(attempts=1000, base_delay_s=0.5, max_delay_s=1.0, deadline_s=5.0)
    op = Flaky([client_error("InternalError", 500)] * 10_000)
    with pytest.raises(RemoteError, match="deadline"):
        run(op, policy, clock)
    assert clock.now - start < 5.0  # never slept past the deadline
    assert op.calls == len(clock.sleeps) + 1
    assert op.calls > 3


def test_absolute_deadline_wins_when_earlier() -> None:
    clock = FakeClock()
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=1.0, deadline_s=3600)
    op = Flaky([client_error("InternalError", 500)] * 100)
    with pytest.raises(RemoteError, match="deadline"):
        run(op, policy, clock, deadline=clock.now + 2.5)
    assert clock.now <= 1000.0 + 2.5


def test_no_attempt_after_deadline_or_stop() -> None:
    clock = FakeClock()
    op = Flaky([])
    with pytest.raises(RemoteError, match=r"deadline.*0 attempts"):
        run(op, RetryPolicy(), clock, deadline=clock.now - 1)
    stop = threading.Event()
    stop.set()
    with pytest.raises(RemoteError, match=r"stopped.*0 attempts") as stopped:
        run(op, RetryPolicy(), clock, stop_event=stop)
    assert op.calls == 0
    assert stopped.value.attempts == 0  # type: ignore[attr-defined]


def test_a_remote_error_says_how_many_attempts_were_made() -> None:
    clock = FakeClock()
    op = Flaky([client_error("InternalError", 500)] * 100)
    with pytest.raises(RemoteError, match="3 attempts") as gave_up:
        run(op, RetryPolicy(attempts=3), clock)
    assert gave_up.value.attempts == 3  # type: ignore[attr-defined]
    with pytest.raises(RemoteError, match=r"deadline.*0 attempts") as cut:
        run(op, RetryPolicy(), clock, deadline=clock.now)
    assert cut.value.attempts == 0  # type: ignore[attr-defined]


def test_budget_exhaustion_stops_retrying() -> None:
    clock = FakeClock()
    budget = RetryBudget(12)
    op = Flaky([client_error("SlowDown", 503)] * 100)
    with pytest.raises(RemoteError, match="budget"):
        run(op, RetryPolicy(), clock, budget)
    assert op.calls == 3  # two retries at 5 tokens each, then 2 left
    assert budget.available == 2
    # the budget is shared: the next operation cannot retry at all
    op2 = Flaky([client_error("SlowDown", 503), client_error("SlowDown", 503)])
    with pytest.raises(RemoteError, match=r"budget.*1 attempt"):
        run(op2, RetryPolicy(), clock, budget)
    assert op2.calls == 1


def test_timeouts_cost_more_budget() -> None:
    clock = FakeClock()
    budget = RetryBudget(25)
    op = Flaky([be.ReadTimeoutError(endpoint_url="http://h")] * 100)
    with pytest.raises(RemoteError, match="budget"):
        run(op, RetryPolicy(), clock, budget)
    assert op.calls == 3  # 10 + 10, then 5 < 10
    assert budget.available == 5


class SetDuringWait(threading.Event):
    """An event that becomes set while the retry loop waits on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        self.set()
        return True


def test_stop_event_cuts_backoff_short_and_stops() -> None:
    random.seed(3)
    stop = SetDuringWait()
    op = Flaky([client_error("SlowDown", 503)] * 10)
    policy = RetryPolicy(base_delay_s=30.0, max_delay_s=30.0, deadline_s=3600)
    with pytest.raises(RemoteError, match=r"stopped.*1 attempt.*SlowDown"):
        run_with_retry(op, policy=policy, budget=None, stop_event=stop, describe="get x")
    assert op.calls == 1  # no attempt after the interrupted sleep
    assert len(stop.waits) == 1
    wait = stop.waits[0]
    assert wait is not None and 0 <= wait <= 30.0  # the sleep was stop.wait(delay)


def test_stop_event_from_another_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every backoff is the full 60 s; only the event can end the wait early.
    monkeypatch.setattr(random, "uniform", lambda a, b: b)
    stop = threading.Event()
    failed_once = threading.Event()

    def op() -> str:
        failed_once.set()
        raise client_error("InternalError", 500)

    outcome: list[BaseException] = []

    def target() -> None:
        try:
            run_with_retry(
                op,
                policy=RetryPolicy(base_delay_s=60, max_delay_s=60, deadline_s=3600),
                budget=None,
                stop_event=stop,
                describe="op",
            )
        except BaseException as exc:
            outcome.append(exc)

    t = threading.Thread(target=target)
    t.start()
    assert failed_once.wait(30)
    stop.set()
    t.join(30)
    assert not t.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], RemoteError)
    assert "stopped" in str(outcome[0])


def test_keyboard_interrupt_is_not_wrapped() -> None:
    clock = FakeClock()
    with pytest.raises(KeyboardInterrupt):
        run(Flaky([KeyboardInterrupt()]), RetryPolicy(), clock)


def test_messages_never_carry_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    err = OSError(
        errno.EACCES,
        f"denied for https://h/k?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA123 key {secret}",
    )
    text = describe_error(err)
    assert secret not in text and "deadbeef" not in text and "AKIA123" not in text
    with pytest.raises(RemoteError) as info:
        run(Flaky([err]), RetryPolicy(), FakeClock())
    assert secret not in str(info.value) and "deadbeef" not in str(info.value)
