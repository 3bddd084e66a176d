"""The link-shaping, fault-injecting proxy (tests/netproxy.py) in front of moto.

Timing checks are lower bounds only (shaping can make a transfer slower,
never faster), so a loaded machine cannot fail them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, SSLError

from tieredindex._native import crc32c
from tieredindex.remote import S3Remote, crc32c_b64
from tieredindex.retry import RetryPolicy, classify, run_with_retry

from netproxy import FAULT_KINDS, NetProxy
from tlscert import write_localhost_cert

MiB = 1024 * 1024
FAST_RETRY = RetryPolicy(attempts=6, base_delay_s=0.01, max_delay_s=0.05, deadline_s=30.0)


def raw_client(endpoint_url: str, read_timeout: float = 5.0) -> Any:
    """boto3 with one attempt per call: every injected fault surfaces."""
    import boto3

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        config=Config(
            connect_timeout=2,
            read_timeout=read_timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},
            s3={"addressing_style": "path"},
        ),
    )


@pytest.fixture
def proxy(moto_server: Any) -> Iterator[NetProxy]:
    with NetProxy(moto_server.endpoint_url, seed=1, stall_s=2.0, spike_s=0.3) as p:
        yield p


@pytest.fixture
def prefix() -> str:
    return f"np-{uuid.uuid4().hex[:12]}/"


def s3_remote(proxy: NetProxy, bucket: str, prefix: str, **kw: Any) -> S3Remote:
    kw.setdefault("read_timeout", 1.0)
    kw.setdefault("connect_timeout", 1.0)
    return S3Remote(bucket, prefix, endpoint_url=proxy.endpoint_url, region="us-east-1", **kw)


def test_passes_traffic(proxy: NetProxy, moto_server: Any, prefix: str) -> None:
    client = raw_client(proxy.endpoint_url)
    body = bytes(range(256)) * 4096  # 1 MiB
    client.put_object(Bucket=moto_server.bucket, Key=prefix + "a", Body=body)
    got = client.get_object(Bucket=moto_server.bucket, Key=prefix + "a")["Body"].read()
    assert got == body
    counters = proxy.counters()
    assert counters["requests"] == 2
    assert counters["bytes_up"] > len(body) and counters["bytes_down"] > len(body)
    assert sum(counters["faults"].values()) == 0


def test_shapes_latency_and_bandwidth(proxy: NetProxy, moto_server: Any, prefix: str) -> None:
    client = raw_client(proxy.endpoint_url)
    client.head_bucket(Bucket=moto_server.bucket)  # connect before timing
    proxy.set_link(latency_s=0.05)  # RTT 100 ms
    started = time.monotonic()
    client.head_bucket(Bucket=moto_server.bucket)
    assert time.monotonic() - started >= 0.1 * 0.95

    proxy.set_link(latency_s=0.0, bandwidth=20e6)
    body = b"\x5a" * (8 * MiB)
    proxy.reset_counters()
    started = time.monotonic()
    client.put_object(Bucket=moto_server.bucket, Key=prefix + "b", Body=body)
    elapsed = time.monotonic() - started
    sent = proxy.counters()["bytes_up"]
    assert sent >= len(body)
    assert elapsed >= sent / 20e6 * 0.95  # the cap holds (a lower bound only)

    proxy.set_link(bandwidth=None)  # unlimited again
    started = time.monotonic()
    client.put_object(Bucket=moto_server.bucket, Key=prefix + "c", Body=body)
    assert time.monotonic() - started < 60  # sanity: the cap is gone


def test_rejects_bad_settings(proxy: NetProxy) -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        proxy.set_faults({"boom": 0.1})
    with pytest.raises(ValueError, match="sum to more than 1"):
        proxy.set_faults({"500": 0.6, "503": 0.6})
    with pytest.raises(ValueError, match="latency_s"):
        proxy.set_link(latency_s=-1)
    with pytest.raises(ValueError, match="mode"):
        proxy.outage(1, mode="maybe")


def test_flip_damages_one_bit_of_a_request_body(proxy: NetProxy, moto_server: Any, prefix: str) -> None:
    """moto stores what it got, with a CRC-32C header that no longer
    matches: the damage is silent, which is what the store's upload check
    must catch. (boto3's default CRC32 trailer would catch it: moto echoes
    its own CRC32 of the body, which boto3 compares.)"""
    bucket = moto_server.bucket
    body = bytes(range(256)) * 2048
    client = raw_client(proxy.endpoint_url, read_timeout=1.0)
    client.meta.config.request_checksum_calculation = "when_required"  # as our S3Remote sends
    client.meta.config.response_checksum_validation = "when_required"
    proxy.inject_next("flip")
    client.put_object(
        Bucket=bucket, Key=prefix + "flipped", Body=body, ChecksumCRC32C=crc32c_b64(crc32c(body))
    )
    stored = moto_server.client.get_object(Bucket=bucket, Key=prefix + "flipped")["Body"].read()
    assert len(stored) == len(body)
    assert [i for i in range(len(body)) if stored[i] != body[i]] == [len(body) // 2]
    assert proxy.counters()["faults"]["flip"] == 1


# What a single-attempt boto3 call sees, per fault kind: a GET (it has a
# response body) and a PUT (it has a request body). A flip is silent, and
# so is a head cut to boto3 (test_a_head_cut_is_silent_to_boto3_not_to_our_remote).
@pytest.mark.parametrize("kind", [k for k in FAULT_KINDS if k not in ("flip", "headcut")])
@pytest.mark.parametrize("op", ["get", "put"])
def test_each_fault_reaches_boto3_and_is_retried(
    kind: str, op: str, proxy: NetProxy, moto_server: Any, prefix: str
) -> None:
    bucket = moto_server.bucket
    body = bytes(range(256)) * 2048  # 512 KiB
    moto_server.client.put_object(Bucket=bucket, Key=prefix + "seed", Body=body)
    client = raw_client(proxy.endpoint_url, read_timeout=1.0)
    client.head_bucket(Bucket=bucket)

    def call(c: Any, key: str) -> Any:
        if op == "get":
            return c.get_object(Bucket=bucket, Key=prefix + "seed")["Body"].read()
        return c.put_object(Bucket=bucket, Key=prefix + key, Body=body)

    proxy.inject_next(kind)
    started = time.monotonic()
    if kind == "spike":
        call(client, "raw")  # only slower
        assert time.monotonic() - started >= proxy.spike_s * 0.95
    else:
        with pytest.raises(Exception) as info:
            call(client, "raw")
        assert classify(info.value) in ("retry", "timeout"), repr(info.value)
        if kind in ("500", "503"):
            assert isinstance(info.value, ClientError)
            code = info.value.response["Error"]["Code"]
            assert code == {"500": "InternalError", "503": "SlowDown"}[kind]
    assert proxy.counters()["faults"][kind] == 1

    # Our remote under the retry policy gets through the same fault.
    remote = s3_remote(proxy, bucket, prefix)
    proxy.inject_next(kind)
    if op == "get":
        got = run_with_retry(lambda: remote.get("seed"), policy=FAST_RETRY, budget=None, describe="get")
        assert got == body
    else:
        result = run_with_retry(
            lambda: remote.put_if_absent("ours", body, size=len(body), crc32c=crc32c(body)),
            policy=FAST_RETRY,
            budget=None,
            describe="put",
        )
        assert result.identical  # created, or found identical after a lost reply
        info_ = remote.head("ours")
        assert info_ is not None and info_.size == len(body) and info_.crc32c == crc32c(body)
    assert proxy.counters()["faults"][kind] == 2
    remote.close()


@pytest.mark.parametrize("op", ["get", "get_range", "list", "list_multipart_uploads"])
def test_a_head_cut_is_silent_to_boto3_not_to_our_remote(
    op: str, proxy: NetProxy, moto_server: Any, prefix: str
) -> None:
    bucket = moto_server.bucket
    body = bytes(range(256)) * 64
    moto_server.client.put_object(Bucket=bucket, Key=prefix + "seed", Body=body)
    upload = moto_server.client.create_multipart_upload(Bucket=bucket, Key=prefix + "open")["UploadId"]
    client = raw_client(proxy.endpoint_url)
    client.head_bucket(Bucket=bucket)
    raw: dict[str, Any] = {
        "get": lambda: client.get_object(Bucket=bucket, Key=prefix + "seed")["Body"].read(),
        "get_range": lambda: client.get_object(Bucket=bucket, Key=prefix + "seed", Range="bytes=10-99")[
            "Body"
        ].read(),
        "list": lambda: client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents"),
        "list_multipart_uploads": lambda: client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get(
            "Uploads"
        ),
    }
    # boto3 answers a response cut in its head as a success with nothing in it.
    proxy.inject_next("headcut")
    assert not raw[op]()

    remote = s3_remote(proxy, bucket, prefix)
    ours: dict[str, Any] = {
        "get": lambda: remote.get("seed"),
        "get_range": lambda: remote.get_range("seed", 10, 100),
        "list": lambda: [info.key for info in remote.list()],
        "list_multipart_uploads": lambda: [(u.key, u.upload_id) for u in remote.list_multipart_uploads()],
    }
    expected = {
        "get": body,
        "get_range": body[10:100],
        "list": ["seed"],
        "list_multipart_uploads": [("open", upload)],
    }[op]
    proxy.inject_next("headcut")
    with pytest.raises(ConnectionError) as info:
        ours[op]()
    assert classify(info.value) == "retry"
    proxy.inject_next("headcut")
    assert run_with_retry(ours[op], policy=FAST_RETRY, budget=None, describe=op) == expected
    assert proxy.counters()["faults"]["headcut"] == 3
    remote.close()


@pytest.mark.parametrize("mode", ["refuse", "reset"])
def test_outage_then_recovery(mode: str, proxy: NetProxy, moto_server: Any, prefix: str) -> None:
    client = raw_client(proxy.endpoint_url)
    client.head_bucket(Bucket=moto_server.bucket)
    # The outage starts when the proxy process handles the call, so it ends no
    # earlier than one second after this instant (CLOCK_MONOTONIC is shared).
    outage_asked = time.monotonic()
    proxy.outage(1.0, mode=mode)
    time.sleep(0.05)
    with pytest.raises(Exception) as info:
        client.head_bucket(Bucket=moto_server.bucket)
    assert classify(info.value) in ("retry", "timeout"), repr(info.value)

    remote = s3_remote(proxy, moto_server.bucket, prefix)
    body = b"after the outage"
    policy = RetryPolicy(attempts=50, base_delay_s=0.05, max_delay_s=0.2, deadline_s=20.0)
    run_with_retry(
        lambda: remote.put_if_absent("x", body, size=len(body), crc32c=crc32c(body)),
        policy=policy,
        budget=None,
        describe="put",
    )
    # The put can only have landed after the outage ended.
    assert time.monotonic() - outage_asked >= 1.0
    assert remote.get("x") == body
    assert proxy.counters()["outages"] == 1
    remote.close()


def test_multipart_upload_under_random_faults(proxy: NetProxy, moto_server: Any, prefix: str) -> None:
    """20% faults of every kind on every request; the retried upload lands intact."""
    proxy.set_faults(
        {"500": 0.04, "503": 0.04, "reset": 0.04, "truncate": 0.04, "stall": 0.02, "spike": 0.02}
    )
    proxy.stall_s = 1.5
    remote = s3_remote(proxy, moto_server.bucket, prefix, part_size=5 * MiB, multipart_threshold=5 * MiB)
    data = bytes((i * 7) & 0xFF for i in range(256)) * (48 * 1024)  # 12 MiB: 3 parts
    policy = RetryPolicy(attempts=20, base_delay_s=0.01, max_delay_s=0.1, deadline_s=120.0)
    result = run_with_retry(
        lambda: remote.put_if_absent("big", data, size=len(data), crc32c=crc32c(data)),
        policy=policy,
        budget=None,
        describe="upload",
    )
    assert result.identical
    proxy.set_faults({})
    assert remote.get("big") == data
    assert proxy.counters()["requests"] >= 5
    remote.close()


def test_faults_only_on_matching_requests_and_deterministic(moto_server: Any, prefix: str) -> None:
    def pattern(seed: int) -> list[str]:
        with NetProxy(moto_server.endpoint_url, faults={"500": 0.5}, seed=seed, match="^HEAD ") as p:
            client = raw_client(p.endpoint_url)
            out = []
            for _ in range(12):
                client.list_objects_v2(Bucket=moto_server.bucket, Prefix=prefix)  # never faulted
                try:
                    client.head_bucket(Bucket=moto_server.bucket)
                    out.append("ok")
                except ClientError:
                    out.append("500")
            assert p.counters()["faults"]["500"] == out.count("500")
            return out

    first = pattern(3)
    assert first == pattern(3)
    assert "ok" in first and "500" in first


def test_proxy_process(moto_server: Any, prefix: str) -> None:
    """The same proxy in a child process, driven through the same methods."""
    from netproxy import ProxyProcess

    with ProxyProcess(moto_server.endpoint_url, latency_s=0.01) as p:
        client = raw_client(p.endpoint_url)
        client.put_object(Bucket=moto_server.bucket, Key=prefix + "pp", Body=b"hello")
        p.set_link(latency_s=0.0, bandwidth=50e6)
        p.inject_next("503")
        with pytest.raises(ClientError, match="SlowDown"):
            client.list_objects_v2(Bucket=moto_server.bucket, Prefix=prefix)
        counters = p.counters()
        assert counters["requests"] == 2 and counters["faults"]["503"] == 1
        with pytest.raises(ValueError, match="unknown fault kind"):
            p.inject_next("nope")


def test_tls_front_end_serves_https_shapes_and_injects_faults(
    moto_server: Any, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``tls``, the proxy ends TLS (as an object store's front end does)
    and still sees each request: clients speak https, faults still land, and
    our S3 client skips hashing the body, as botocore does over https."""
    cert, key = write_localhost_cert(tmp_path)
    monkeypatch.setenv("AWS_CA_BUNDLE", str(cert))  # how a store's boto3 client trusts it
    bucket = moto_server.bucket
    with NetProxy(moto_server.endpoint_url, tls=(str(cert), str(key))) as proxy:
        assert proxy.endpoint_url.startswith("https://127.0.0.1:")
        client = raw_client(proxy.endpoint_url)
        body = bytes(range(256)) * 4096  # 1 MiB
        client.put_object(Bucket=bucket, Key=prefix + "a", Body=body)
        assert client.get_object(Bucket=bucket, Key=prefix + "a")["Body"].read() == body
        assert proxy.counters()["requests"] == 2

        proxy.inject_next("503")
        with pytest.raises(ClientError, match="SlowDown"):
            client.get_object(Bucket=bucket, Key=prefix + "a")

        remote = s3_remote(proxy, bucket, prefix)
        signed: list[str] = []
        remote.client.meta.events.register(  # type: ignore[attr-defined]
            "before-send.s3.PutObject",
            lambda request, **_: signed.append(request.headers["X-Amz-Content-SHA256"].decode()),
        )
        assert remote.put_if_absent("b", body, size=len(body), crc32c=crc32c(body)).created
        assert signed == ["UNSIGNED-PAYLOAD"]
        assert remote.get("b") == body
        remote.close()

        # TLS for real: a client that does not trust the certificate is refused.
        monkeypatch.delenv("AWS_CA_BUNDLE")
        with pytest.raises(SSLError):
            raw_client(proxy.endpoint_url).head_bucket(Bucket=bucket)
