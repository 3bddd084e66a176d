"""Speed of the remote path (issue 3 "Speed"), each figure beside its anchor.

Run (about 2 minutes on 2 cores with the defaults; ~1 GB of temp disk, and
moto holds up to ~1 GB in memory):

    python -m pytest benches/test_remote_bench.py --benchmark-only

Everything goes through ``tests/netproxy.py`` (in its own process, so it does
not share a GIL with the code measured) in front of a moto server on
127.0.0.1. By default the proxy is an https endpoint that ends TLS and speaks
plain HTTP to moto, as an S3 front end does: clients pay for TLS and get
what botocore does over https (no SHA-256 of each upload for the
signature); ``TIX_BENCH_SCHEME=http`` measures plain HTTP instead. A table
(figure, ours, anchor, ratio, target, met?) is printed at the end; nothing
asserts a timing.

Figures:
- ``upload <N> MiB``: ``S3Remote.put_if_absent`` of a file (``If-None-Match:
  *``, the whole object's CRC-32C; below ``StoreConfig``'s multipart
  threshold, 100 MB, one streamed PutObject, above it a multipart upload with
  CRC-32C per part and the default part size and concurrency) plus the HEAD
  verify, beside
  boto3's ``upload_file`` (s3transfer, default ``TransferConfig``) of the
  same file on the same link, and beside ``upload_file`` asked for a
  FULL_OBJECT checksum as ours is (``boto3-full``: the same server work). Target: ours >= boto3.
  For a multipart upload, each client's S3 calls are also timed by its own
  event hooks (:class:`CallTimes`), to show which phase a slower one loses
  its time in: create + parts, complete, verify.
- ``sigterm``: SIGTERM to a child broker (``benches/sigterm_child.py``)
  whose last file seals to ~64 MiB, until its ``shutdown()`` returns with the
  copy uploaded, verified and recorded (the child's exit, after that, is
  reported beside it); the child must exit 0, and the remote copy is then
  checked (manifest record, size, CRC-32C, ``SealedIndex.verify``). Floor:
  the seal of the same file measured here (``seal 64MiB``) + size/bandwidth
  + 2 RTT (the seal as the store does it: ``durable=False``). Target:
  <= 1.3 x floor.
- ``rss 600MB``: peak RSS above idle of a child uploading a 600 MB file
  (``benches/rss_child.py``; VmHWM reset after warm-up, and VmRSS sampled
  every 10 ms), beside boto3's ``upload_file``. Target: <= part size x
  concurrency + 64 MiB.

Sweeps (issue 4), by environment variable:
- ``TIX_BENCH_LINKS``: ``RTT_MS:MBPS`` pairs, comma separated (MB = 10^6
  bytes/s per direction; ``inf`` = unlimited), default ``50:100``; e.g.
  ``0:inf,10:200,50:50``.
- ``TIX_BENCH_UPLOADS``: ``PART_MIB:CONCURRENCY`` pairs for our uploads,
  default the ``StoreConfig`` defaults; e.g. ``8:4,16:8``.
- ``TIX_BENCH_SIZES_MIB`` (default ``64,256``), ``TIX_BENCH_ROUNDS``
  (default 3), ``TIX_BENCH_RSS_MB`` (default 600), ``TIX_BENCH_SCHEME``
  (``https``, the default, or ``http``).
- ``TIX_BENCH_KEEP_LOGS``: a directory to keep each SIGTERM child's log in
  (wall-clock stamps of its steps and S3 calls), one file per round.
- ``TIX_BENCH_SERVER``: ``moto`` (the default) or ``s3s-fs``, a second S3
  server (Rust; the version is pinned in ``run_suite.py``), whose binary is
  ``target/bench-tools/bin/s3s-fs`` or ``TIX_BENCH_S3S_FS``. The upload,
  seal and SIGTERM figures run on it; it lacks ListMultipartUploads and the
  multipart checksums, which those figures do not need.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tieredindex import IndexFile, IndexStore, SealedIndex, StoreConfig, crc32c, open_remote, verifier
from tieredindex.layout import MANIFEST_PREFIX, OWNER_KEY, ManifestRecord, index_key
from tieredindex.remote import READS_PER_UPLOAD, S3Remote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from netproxy import ProxyProcess  # noqa: E402
from tlscert import write_localhost_cert  # noqa: E402

MiB = 1024 * 1024
MB = 1_000_000
DEFAULTS = StoreConfig()
BUCKET = "tix-bench"
SIGTERM_SLOTS = 1 << 19
SIGTERM_ENTRIES = 1_965_500  # ~32 B per entry + 8 B per used slot: seals to just under 64 MiB

pytestmark = pytest.mark.timeout(900)

# moto spools every object and part above 5 MiB to a temporary file on the
# local disk, a cost no real object store puts in the client's path; held in
# memory instead (for boto3's uploads exactly as for ours).
MOTO_ENV = {"MOTO_S3_DEFAULT_KEY_BUFFER_SIZE": str(1 << 30)}

# The second server (TIX_BENCH_SERVER=s3s-fs): s3s-fs, the s3s project's
# S3 service over a directory, in Rust. It hashes a body (MD5, and the
# CRC-32C it checks) as the bytes arrive and writes it to its file, as S3
# does its work while receiving, where moto does its own in Python after the
# last byte: the same uploads against a server whose own time is small.
# `make bench` builds it, pinned (run_suite.py's `s3s-fs-build` step).
S3S_FS_DEFAULT = ROOT / "target" / "bench-tools" / "bin" / "s3s-fs"


def _env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


@dataclasses.dataclass(frozen=True)
class Link:
    rtt_ms: float
    mbps: float | None  # MB/s per direction; None: unlimited

    @property
    def latency_s(self) -> float:
        return self.rtt_ms / 2000

    @property
    def bandwidth(self) -> float | None:
        return None if self.mbps is None else self.mbps * MB

    def __str__(self) -> str:
        return f"rtt{self.rtt_ms:g}ms-{'unlimited' if self.mbps is None else f'{self.mbps:g}MBps'}"


@dataclasses.dataclass(frozen=True)
class Upload:
    part_size: int
    concurrency: int

    def __str__(self) -> str:
        return f"part{self.part_size // MiB}MiB-x{self.concurrency}"


def _links() -> list[Link]:
    out = []
    for item in _env_list("TIX_BENCH_LINKS", "50:100"):
        rtt, _, mbps = item.partition(":")
        out.append(Link(float(rtt), None if mbps in ("", "inf", "0") else float(mbps)))
    return out


def _uploads() -> list[Upload]:
    default = f"{DEFAULTS.part_size // MiB}:{DEFAULTS.upload_concurrency}"
    out = []
    for item in _env_list("TIX_BENCH_UPLOADS", default):
        part, _, conc = item.partition(":")
        out.append(Upload(int(float(part) * MiB), int(conc)))
    return out


def _link_info(spec: Link) -> dict[str, Any]:
    """The link, spelled out for ``benches/run_suite.py`` (mbps None: unlimited)."""
    return {"link": str(spec), "rtt_ms": spec.rtt_ms, "mbps": spec.mbps, "scheme": SCHEME, "server": SERVER}


def _upload_info(name: str, upload: Upload | None) -> dict[str, Any]:
    return {
        "impl": name,
        "part_size": upload.part_size if upload else None,
        "concurrency": upload.concurrency if upload else None,
    }


LINKS = _links()
UPLOADS = _uploads()
SIZES_MIB = [int(s) for s in _env_list("TIX_BENCH_SIZES_MIB", "64,256")]
ROUNDS = int(os.environ.get("TIX_BENCH_ROUNDS", "3"))
RSS_MB = int(os.environ.get("TIX_BENCH_RSS_MB", "600"))
SCHEME = os.environ.get("TIX_BENCH_SCHEME", "https")
if SCHEME not in ("http", "https"):
    raise ValueError(f"TIX_BENCH_SCHEME must be http or https, got {SCHEME!r}")
SERVER = os.environ.get("TIX_BENCH_SERVER", "moto")
if SERVER not in ("moto", "s3s-fs"):
    raise ValueError(f"TIX_BENCH_SERVER must be moto or s3s-fs, got {SERVER!r}")

# (figure, link, upload config) -> measurements; the table is built from it.
RESULTS: dict[tuple[str, str, str], dict[str, Any]] = {}

FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


# --------------------------------------------------------------------------
# Fixtures: the S3 server, the proxy, the files


@dataclasses.dataclass
class S3Server:
    """The server SERVER names."""

    endpoint_url: str
    client: Any  # direct, not through the proxy


def _server_command(port: int, tmp: Path) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that serve S3 on 127.0.0.1:port."""
    if SERVER == "moto":
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], MOTO_ENV
    binary = Path(os.environ.get("TIX_BENCH_S3S_FS") or S3S_FS_DEFAULT)
    if not binary.is_file():
        pytest.fail(
            f"TIX_BENCH_SERVER=s3s-fs: no s3s-fs binary at {binary}; build it with "
            "`python benches/run_suite.py --steps s3s-fs-build` or name one in TIX_BENCH_S3S_FS"
        )
    root = tmp / "s3s-fs"
    root.mkdir(exist_ok=True)
    keys = ["--access-key", FAKE_AWS["AWS_ACCESS_KEY_ID"], "--secret-key", FAKE_AWS["AWS_SECRET_ACCESS_KEY"]]
    return [str(binary), "--host", "127.0.0.1", "--port", str(port), *keys, str(root)], {}


@pytest.fixture(scope="module")
def server(tmp: Path) -> Iterator[S3Server]:
    import boto3
    from botocore.config import Config

    saved = {k: os.environ.get(k) for k in (*FAKE_AWS, "AWS_PROFILE", "AWS_ENDPOINT_URL")}
    os.environ.update(FAKE_AWS)
    os.environ.pop("AWS_PROFILE", None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command, extra_env = _server_command(port, tmp)
    log_path = tmp / f"{SERVER}.log"
    log = open(log_path, "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **extra_env},
    )
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(read_timeout=120, retries={"total_max_attempts": 1}, s3={"addressing_style": "path"}),
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                client.list_buckets()
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{SERVER} did not start: {log_path.read_text()[-2000:]}") from None
                time.sleep(0.1)
        client.create_bucket(Bucket=BUCKET)
        yield S3Server(endpoint, client)
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def tmp() -> Iterator[Path]:
    base = os.environ.get("TIEREDINDEX_BENCH_DIR") or None
    with tempfile.TemporaryDirectory(prefix="tix-remote-bench-", dir=base) as d:
        yield Path(d)


@pytest.fixture(scope="module")
def tls(tmp: Path) -> Iterator[tuple[str, str] | None]:
    """https: a certificate for the proxy, trusted by every boto3 client made
    here and in the children (``AWS_CA_BUNDLE``)."""
    if SCHEME == "http":
        yield None
        return
    directory = tmp / "tls"
    directory.mkdir()
    cert, key = write_localhost_cert(directory)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_CA_BUNDLE", str(cert))
        yield str(cert), str(key)


@pytest.fixture(scope="module", params=LINKS, ids=str)
def link(
    request: pytest.FixtureRequest, server: S3Server, tls: tuple[str, str] | None
) -> Iterator[tuple[Link, ProxyProcess]]:
    spec: Link = request.param
    with ProxyProcess(
        server.endpoint_url, latency_s=spec.latency_s, bandwidth=spec.bandwidth, tls=tls
    ) as proxy:
        assert proxy.endpoint_url.startswith(f"{SCHEME}://")
        yield spec, proxy


_files: dict[int, tuple[Path, int]] = {}


def data_file(tmp: Path, size: int) -> tuple[Path, int]:
    """A file of random bytes and its CRC-32C, made once per size."""
    if size not in _files:
        path = tmp / f"data-{size}.bin"
        rng = np.random.default_rng(size)
        crc = 0
        with open(path, "wb") as f:
            for at in range(0, size, 16 * MiB):
                block = rng.integers(0, 256, min(16 * MiB, size - at), dtype=np.uint8).tobytes()
                crc = crc32c(block, crc)
                f.write(block)
        _files[size] = (path, crc)
    return _files[size]


def new_key(prefix: str) -> str:
    return f"{prefix}/{uuid.uuid4().hex[:12]}"


def clean_prefix(server: S3Server, prefix: str) -> None:
    """Frees the server's memory (or disk) between rounds."""
    for page in server.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for obj in page.get("Contents", []):
            server.client.delete_object(Bucket=BUCKET, Key=obj["Key"])


def median(values: list[float]) -> float:
    return float(np.median(values))


# --------------------------------------------------------------------------
# Upload throughput


def ours_uploader(endpoint: str, upload: Upload) -> tuple[S3Remote, Callable[[str, Path, int, int], None]]:
    remote = S3Remote(
        BUCKET,
        "",
        endpoint_url=endpoint,
        region="us-east-1",
        connect_timeout=DEFAULTS.connect_timeout_s,
        read_timeout=DEFAULTS.read_timeout_s,
        multipart_threshold=DEFAULTS.multipart_threshold,
        part_size=upload.part_size,
        upload_concurrency=upload.concurrency,
    )

    def run(key: str, path: Path, size: int, crc: int) -> None:
        result = remote.put_if_absent(key, path, size=size, crc32c=crc)
        info = remote.head(key)  # the store's verify step
        assert result.created and info is not None and info.size == size and info.crc32c == crc

    return remote, run


def boto3_client(endpoint: str, **s3: Any) -> Any:
    """A boto3 S3 client at its defaults (path addressing for moto), plus
    any ``s3`` settings."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path", **s3}),  # type: ignore[typeddict-item]
    )


def boto3_uploader(
    endpoint: str, full_object_crc32: str | None = None
) -> tuple[Any, Callable[[str, Path, int, int], None]]:
    """boto3's ``upload_file`` at its defaults; with ``full_object_crc32``
    (base64 CRC-32 of the file, computed before the clock starts, as ours is
    by the seal) it asks for a FULL_OBJECT checksum as ours does: CRC-32,
    since botocore computes CRC-32C only with awscrt installed."""
    client = boto3_client(endpoint)
    extra = {"ChecksumCRC32": full_object_crc32} if full_object_crc32 else None

    def run(key: str, path: Path, size: int, crc: int) -> None:
        client.upload_file(str(path), BUCKET, key, ExtraArgs=extra)

    return client, run


def crc32_b64_of(path: Path) -> str:
    value = 0
    with open(path, "rb") as f:
        while chunk := f.read(16 * MiB):
            value = zlib.crc32(chunk, value)
    return base64.b64encode(struct.pack(">I", value)).decode("ascii")


class CallTimes:
    """Start and end of every S3 call a boto3 client makes (its own event
    hooks, so ours and boto3's are timed the same way), for the phases of an
    upload: where a slower upload loses its time."""

    def __init__(self, client: Any) -> None:
        self.calls: list[tuple[str, float, float]] = []
        self._started: dict[tuple[int, str], float] = {}
        events = client.meta.events
        events.register("before-call.s3", self._before)
        events.register("after-call.s3", self._after)

    def _before(self, event_name: str, **_: Any) -> None:
        self._started[(threading.get_ident(), event_name)] = time.perf_counter()

    def _after(self, event_name: str, **_: Any) -> None:
        start = self._started.pop((threading.get_ident(), event_name.replace("after-", "before-")))
        self.calls.append((event_name.rsplit(".", 1)[-1], start, time.perf_counter()))

    def phases(self) -> dict[str, float] | None:
        """A multipart upload's phases in seconds, None for any other: ``parts``
        from the first call's start to the last UploadPart's end (create and
        every part), ``complete`` the CompleteMultipartUpload, ``verify`` the
        HEAD after it (ours only)."""
        calls, self.calls = self.calls, []
        completes = [c for c in calls if c[0] == "CompleteMultipartUpload"]
        parts = [c for c in calls if c[0] == "UploadPart"]
        if len(completes) != 1 or not parts:
            return None
        out = {
            "parts": max(end for _, _, end in parts) - min(start for _, start, _ in calls),
            "complete": completes[0][2] - completes[0][1],
        }
        heads = [c for c in calls if c[0] == "HeadObject" and c[1] >= completes[0][2]]
        if heads:
            out["verify"] = heads[0][2] - heads[0][1]
        return out


def median_phases(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {name: median([r[name] for r in rounds if name in r]) for name in rounds[0]} if rounds else {}


IMPLS = [("boto3", None), *(("ours", u) for u in UPLOADS)]
# "boto3-full": boto3 with a full-object checksum, i.e. the same server-side
# work as ours (the server checks the whole object's CRC on complete).
UPLOAD_IMPLS = [("boto3", None), ("boto3-full", None), *(("ours", u) for u in UPLOADS)]


@pytest.mark.parametrize("size_mib", SIZES_MIB, ids=lambda s: f"{s}MiB")
@pytest.mark.parametrize("impl", UPLOAD_IMPLS, ids=lambda i: i[0] if i[1] is None else f"ours-{i[1]}")
def test_upload(
    benchmark: Any,
    impl: tuple[str, Upload | None],
    size_mib: int,
    link: tuple[Link, ProxyProcess],
    server: S3Server,
    tmp: Path,
) -> None:
    spec, proxy = link
    name, upload = impl
    size = size_mib * MiB
    path, crc = data_file(tmp, size)
    if upload is None:
        full = crc32_b64_of(path) if name == "boto3-full" else None
        client, run = boto3_uploader(proxy.endpoint_url, full)
    else:
        client, run = ours_uploader(proxy.endpoint_url, upload)
    prefix = f"upload-{uuid.uuid4().hex[:8]}"
    times = CallTimes(client.client if isinstance(client, S3Remote) else client)
    run(new_key(prefix), path, size, crc)  # warm-up: connections, imports
    clean_prefix(server, prefix)
    times.phases()  # not the warm-up's
    rounds: list[dict[str, float]] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        if phases := times.phases():  # the round before this one
            rounds.append(phases)
        clean_prefix(server, prefix)
        return (new_key(prefix), path, size, crc), {}

    proxy.reset_counters()
    benchmark.group = f"upload {size_mib}MiB {spec}"
    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)
    if phases := times.phases():
        rounds.append(phases)
    clean_prefix(server, prefix)
    client.close()
    secs = benchmark.stats.stats.median
    counters = proxy.counters()
    phases_s = median_phases(rounds)
    benchmark.extra_info.update(
        {"bytes": size, "mb_per_s": size / secs / MB, "requests": counters["requests"]},
        **({"phases_s": phases_s} if phases_s else {}),
        **_link_info(spec),
        **_upload_info(name, upload),
    )
    RESULTS[(f"upload {size_mib} MiB", str(spec), name if upload is None else str(upload))] = {
        "seconds": secs,
        "mb_per_s": size / secs / MB,
        "phases_s": phases_s,
    }


# --------------------------------------------------------------------------
# SIGTERM to a verified remote copy


def sigterm_file(tmp: Path) -> tuple[list[bytes], dict[str, np.ndarray]]:
    n = SIGTERM_ENTRIES
    i = np.arange(n, dtype=np.int64)
    keys = [index_key("orders", f"k{j}") for j in range(n)]
    cols = {
        "queue_ids": (i % 8).astype(np.uint32),
        "offsets": i,
        "sizes": np.full(n, 100, dtype=np.uint32),
        "timestamps": i + 1_000_000,
    }
    return keys, cols


def test_seal_anchor(benchmark: Any, link: tuple[Link, ProxyProcess], tmp: Path) -> None:
    """The seal of the very file the SIGTERM child seals (same keys, same columns)."""
    spec, _ = link
    keys, cols = sigterm_file(tmp)
    work = tmp / "seal"
    work.mkdir(exist_ok=True)
    sizes: list[int] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        for p in work.iterdir():
            p.unlink()
        f = IndexFile.create(
            work / "a.tix", slots=SIGTERM_SLOTS, capacity=SIGTERM_ENTRIES + 16, begin_ms=1_000_000
        )
        assert f.put_batch(
            keys, cols["queue_ids"], cols["offsets"], cols["sizes"], cols["timestamps"]
        ) == len(keys)
        f.flush()
        return (f,), {}

    def seal(f: IndexFile) -> None:
        # As the store seals before an upload: no fsync of the sealed copy.
        sealed = f.seal(work / "a.sealed", durable=False)
        sizes.append(sealed.size)
        f.close()

    benchmark.group = f"sigterm 64MiB {spec}"
    benchmark.pedantic(seal, setup=setup, rounds=ROUNDS, iterations=1)
    benchmark.extra_info.update(sealed_bytes=sizes[-1], entries=SIGTERM_ENTRIES, **_link_info(spec))
    RESULTS[("seal", str(spec), "")] = {"seconds": benchmark.stats.stats.median, "bytes": sizes[-1]}


# Breakdown of a shutdown, from the child's log: (name, pattern, last match?).
_EVENTS = (
    ("sealed", re.compile(r"file \S+ sealed"), False),
    ("created", re.compile(r"end CreateMultipartUpload"), False),
    ("parts", re.compile(r"end UploadPart"), True),
    ("completed", re.compile(r"end CompleteMultipartUpload"), False),
    ("head", re.compile(r"end HeadObject"), True),
    ("manifest", re.compile(r"end PutObject"), True),
    ("shut down", re.compile(r"shut down: "), False),
)


def _breakdown(log: str, killed_at: float, exited_at: float) -> dict[str, float]:
    """Seconds after the SIGTERM at which each step ended, from the child's log."""
    out: dict[str, float] = {}
    for line in log.splitlines():
        stamp, _, text = line.partition(" ")
        for name, pattern, last in _EVENTS:
            if (last or name not in out) and pattern.search(text):
                with contextlib.suppress(ValueError):
                    out[name] = float(stamp) - killed_at
    out["exited"] = exited_at - killed_at
    return {name: out[name] for name in [*(e[0] for e in _EVENTS), "exited"] if name in out}


def server_own_seconds(server: S3Server, path: Path, size: int, crc: int, part_size: int) -> float:
    """The S3 server's own time for the request that stores an object of this
    size the way ours does, sent straight to it (no link): a cost the floor
    does not count. Below the multipart threshold that is the streamed
    PutObject itself (If-None-Match, CRC-32C; moto reads the body, then MD5s
    and checksums it; s3s-fs does both as it reads), sent unsigned so that
    the client's SHA-256 of the body is not counted as the server's; the
    loopback transfer of the body is in it. Above the threshold,
    CompleteMultipartUpload with a FULL_OBJECT CRC-32C (moto joins the parts
    and checksums the whole; s3s-fs joins them into a new file)."""
    from tieredindex.remote import crc32c_b64

    unsigned = boto3_client(server.endpoint_url, payload_signing_enabled=False)
    times = []
    for _ in range(2):
        key = new_key("server")
        if size < DEFAULTS.multipart_threshold:
            with open(path, "rb") as f:
                started = time.perf_counter()
                unsigned.put_object(
                    Bucket=BUCKET,
                    Key=key,
                    Body=f,
                    ContentLength=size,
                    IfNoneMatch="*",
                    ChecksumCRC32C=crc32c_b64(crc),
                )
            times.append(time.perf_counter() - started)
            server.client.delete_object(Bucket=BUCKET, Key=key)
            continue
        upload_id = server.client.create_multipart_upload(
            Bucket=BUCKET, Key=key, ChecksumAlgorithm="CRC32C", ChecksumType="FULL_OBJECT"
        )["UploadId"]
        parts = []
        with open(path, "rb") as f:
            for number, at in enumerate(range(0, size, part_size), start=1):
                data = f.read(min(part_size, size - at))
                checksum = crc32c_b64(crc32c(data))
                etag = server.client.upload_part(
                    Bucket=BUCKET,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=data,
                    ChecksumCRC32C=checksum,
                )["ETag"]
                parts.append({"PartNumber": number, "ETag": etag, "ChecksumCRC32C": checksum})
        started = time.perf_counter()
        server.client.complete_multipart_upload(
            Bucket=BUCKET,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},
            IfNoneMatch="*",
            ChecksumCRC32C=crc32c_b64(crc),
            ChecksumType="FULL_OBJECT",
            MpuObjectSize=size,
        )
        times.append(time.perf_counter() - started)
        server.client.delete_object(Bucket=BUCKET, Key=key)
    unsigned.close()
    return min(times)


@pytest.mark.parametrize("upload", UPLOADS, ids=str)
def test_sigterm_to_verified_remote(
    benchmark: Any, upload: Upload, link: tuple[Link, ProxyProcess], server: S3Server, tmp: Path
) -> None:
    spec, proxy = link
    env = {**os.environ, "AWS_ENDPOINT_URL": proxy.endpoint_url, "PYTHONUNBUFFERED": "1"}
    rounds: list[dict[str, Any]] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        prefix = f"sigterm-{uuid.uuid4().hex[:8]}"
        directory = tmp / prefix
        err = open(tmp / f"{prefix}.log", "w+")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "benches" / "sigterm_child.py"),
                str(directory),
                f"s3://{BUCKET}/{prefix}/",
                str(SIGTERM_ENTRIES),
                str(SIGTERM_SLOTS),
                str(upload.part_size),
                str(upload.concurrency),
            ],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", f"child: {line!r}; log: {Path(err.name).read_text()[-2000:]}"
        time.sleep(0.5)  # let the flusher and worker go idle
        rounds.append({"proc": proc, "prefix": prefix, "log": err})
        return (proc, rounds[-1]), {}

    def sigterm(proc: subprocess.Popen[str], info: dict[str, Any]) -> None:
        info["killed_at"] = time.time()
        proc.send_signal(signal.SIGTERM)
        info["rc"] = proc.wait(180)
        info["exited_at"] = time.time()

    benchmark.group = f"sigterm 64MiB {spec}"
    benchmark.pedantic(sigterm, setup=setup, rounds=ROUNDS, iterations=1)

    breakdowns = []
    for info in rounds:
        info["log"].seek(0)
        log = info["log"].read()
        info["log"].close()
        if keep := os.environ.get("TIX_BENCH_KEEP_LOGS"):  # a directory for the children's logs
            Path(keep).mkdir(parents=True, exist_ok=True)
            (Path(keep) / f"{info['prefix']}.log").write_text(log)
        assert info["rc"] == 0, f"child exited {info['rc']}: {log[-3000:]}"
        breakdowns.append(_breakdown(log, info["killed_at"], info["exited_at"]))
        check_remote_copy(server, info["prefix"])
        clean_prefix(server, info["prefix"])
    # The figure ends when the verified copy is recorded (shutdown() has
    # returned: uploaded, HEAD-verified, manifest written, journal updated);
    # the interpreter's own exit after that is shown beside it.
    verified = sorted(b["shut down"] for b in breakdowns)[len(breakdowns) // 2]
    exited = sorted(b["exited"] for b in breakdowns)[len(breakdowns) // 2]
    secs = verified
    record_size = RESULTS.get(("seal", str(spec), ""), {}).get("bytes")
    if record_size:
        sealed = tmp / "seal" / "a.sealed"
        server_s = server_own_seconds(
            server, sealed, record_size, crc32c(sealed.read_bytes()), upload.part_size
        )
    else:
        server_s = float("nan")
    mid = sorted(breakdowns, key=lambda b: b["shut down"])[len(breakdowns) // 2]  # the median round
    benchmark.extra_info.update(
        {
            "breakdown_s": mid,
            "rounds_s": breakdowns,  # every round, for the spread across runs
            "server_own_s": server_s,
            "sealed_bytes": record_size,
            "verified_s": verified,
            "exited_s": exited,
        },
        **_link_info(spec),
        **_upload_info("ours", upload),
    )
    RESULTS[("sigterm", str(spec), str(upload))] = {
        "seconds": secs,
        "exited_s": exited,
        "breakdown": mid,
        "server_own_s": server_s,
    }


def check_remote_copy(server: S3Server, prefix: str) -> None:
    """One manifest record; its object has the recorded size and CRC-32C and verifies."""
    listed = server.client.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/{MANIFEST_PREFIX}").get(
        "Contents", []
    )
    assert len(listed) == 1, listed
    raw = server.client.get_object(Bucket=BUCKET, Key=listed[0]["Key"])["Body"].read()
    record = ManifestRecord.from_bytes(raw, listed[0]["Key"])
    assert record.count == SIGTERM_ENTRIES
    body = server.client.get_object(Bucket=BUCKET, Key=f"{prefix}/{record.key}")["Body"].read()
    assert len(body) == record.size and crc32c(body) == record.crc32c
    SealedIndex.open(body).verify()


# --------------------------------------------------------------------------
# A query whose key is in many remote files

QUERY_FILES = 8


def ranged_get_seconds(endpoint: str, key: str, rounds: int) -> float:
    """The median time of one 16 KiB ranged GET through the same link: the
    unit a remote query's reads are made of."""
    client = boto3_client(endpoint)
    client.get_object(Bucket=BUCKET, Key=key, Range="bytes=0-16383")["Body"].read()  # connection
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        client.get_object(Bucket=BUCKET, Key=key, Range="bytes=0-16383")["Body"].read()
        times.append(time.perf_counter() - started)
    client.close()
    return median(times)


def test_remote_query(benchmark: Any, link: tuple[Link, ProxyProcess], server: S3Server, tmp: Path) -> None:
    """``IndexStore.query`` of a key that is in QUERY_FILES uploaded files,
    from a fresh store on an empty directory (every file remote; the catalog
    and footers loaded by a first query). Each file costs two verified
    ranged GETs; the store reads the files at once, so the floor is two
    GETs, where file by file it would be two per file."""
    spec, proxy = link
    prefix = f"query-{uuid.uuid4().hex[:8]}"
    url = f"s3://{BUCKET}/{prefix}/"
    config = StoreConfig(
        slots=4096,
        capacity=2000,
        endpoint_url=proxy.endpoint_url,
        region="us-east-1",
        shutdown_timeout_s=120.0,
    )
    writer = IndexStore(tmp / f"{prefix}-writer", url, config)
    writer.start()
    n = QUERY_FILES * config.capacity
    for i in range(n):
        key = "hot" if i % 100 == 0 else f"k{i}"
        writer.put("orders", key, queue_id=i % 8, offset=i, size=100, timestamp_ms=1_000_000 + i)
    assert writer.shutdown().clean
    reader = IndexStore(tmp / f"{prefix}-reader", url, config)
    reader.start()

    def query() -> None:
        got = reader.query("orders", "hot", 0, 10**15, 10_000)
        assert [e.offset for e in got] == list(range(n - 100, -1, -100))

    query()  # the catalog and every file's footer
    assert reader.status().remote_files == QUERY_FILES
    benchmark.group = f"query {spec}"
    benchmark.pedantic(query, rounds=ROUNDS * 3, iterations=1)
    reader.shutdown()
    [first, *_] = server.client.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/index/")["Contents"]
    get_s = ranged_get_seconds(proxy.endpoint_url, first["Key"], ROUNDS * 3)
    clean_prefix(server, prefix)
    secs = benchmark.stats.stats.median
    benchmark.extra_info.update({"files": QUERY_FILES, "ranged_get_s": get_s}, **_link_info(spec))
    RESULTS[("query", str(spec), "")] = {"seconds": secs, "files": QUERY_FILES, "ranged_get_s": get_s}


CATALOG_FILES = int(os.environ.get("TIX_BENCH_CATALOG_FILES", "200"))


def small_get_seconds(endpoint: str, key: str, rounds: int) -> float:
    """The median time of one whole GET of a small object (a manifest
    record) through the same link."""
    client = boto3_client(endpoint)
    client.get_object(Bucket=BUCKET, Key=key)["Body"].read()  # connection
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        times.append(time.perf_counter() - started)
    client.close()
    return median(times)


@pytest.fixture(scope="module")
def catalog_prefix(server: S3Server, tmp: Path) -> Iterator[str]:
    """A prefix of CATALOG_FILES small uploaded files, written straight to
    the server (not through the link); the url of the store that wrote them."""
    prefix = f"catalog-{uuid.uuid4().hex[:8]}"
    url = f"s3://{BUCKET}/{prefix}/"
    config = StoreConfig(
        slots=64, capacity=4, endpoint_url=server.endpoint_url, region="us-east-1", shutdown_timeout_s=300.0
    )
    writer = IndexStore(tmp / f"{prefix}-writer", url, config)
    writer.start()
    for i in range(CATALOG_FILES * config.capacity):
        writer.put("orders", f"k{i}", queue_id=0, offset=i, size=100, timestamp_ms=1_000_000 + i)
    assert writer.shutdown().clean
    yield url
    clean_prefix(server, prefix)


def _catalog_result(
    name: str,
    benchmark: Any,
    spec: Link,
    proxy: ProxyProcess,
    server: S3Server,
    url: str,
    *,
    at_once: int,
    per_file: int,
    other: int,
) -> None:
    """Records the run beside its anchor (one GET of a record through the
    link) and its floor in round trips: ``per_file`` requests a file,
    ``at_once`` at a time, and ``other`` requests besides (listings, the
    first query's own file); and the same requests one by one."""
    prefix = url.removeprefix(f"s3://{BUCKET}/")
    record = server.client.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}{MANIFEST_PREFIX}")["Contents"][0]
    get_s = small_get_seconds(proxy.endpoint_url, record["Key"], ROUNDS * 3)
    info = {
        "files": CATALOG_FILES,
        "get_s": get_s,
        "concurrency": at_once,
        "floor_requests": per_file * -(-CATALOG_FILES // at_once) + other,
        "serial_requests": per_file * CATALOG_FILES + other,
    }
    benchmark.extra_info.update(info, **_link_info(spec))
    RESULTS[(name, str(spec), "")] = {"seconds": benchmark.stats.stats.median, **info}


def test_remote_catalog(
    benchmark: Any, link: tuple[Link, ProxyProcess], server: S3Server, tmp: Path, catalog_prefix: str
) -> None:
    """A fresh store on an empty directory, over a prefix of CATALOG_FILES
    uploaded files: ``start()`` and a first query (of one file's time range,
    so one file is read), which lists the manifest and reads every file's
    record (the remote layout describes itself; a reader, a restarted broker
    on a new disk and every CLI query pay this)."""
    spec, proxy = link
    config = StoreConfig(
        slots=64, capacity=4, endpoint_url=proxy.endpoint_url, region="us-east-1", shutdown_timeout_s=120.0
    )
    made = iter(range(10**6))

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (IndexStore(tmp / f"catalog-reader-{next(made)}", catalog_prefix, config),), {}

    def first_query(reader: IndexStore) -> None:
        reader.start()
        got = reader.query("orders", "k0", 1_000_000, 1_000_000, 10)  # one file's time range
        assert [e.offset for e in got] == [0]
        assert reader.status().remote_files == CATALOG_FILES
        reader.shutdown()

    benchmark.group = f"catalog {spec}"
    benchmark.pedantic(first_query, setup=setup, rounds=ROUNDS, iterations=1)
    # Per file its record; besides, the listing and the queried file's footer, slot and entries.
    at_once = READS_PER_UPLOAD * config.upload_concurrency
    _catalog_result(
        "catalog", benchmark, spec, proxy, server, catalog_prefix, at_once=at_once, per_file=1, other=4
    )


def test_remote_wide_query(
    benchmark: Any, link: tuple[Link, ProxyProcess], server: S3Server, tmp: Path, catalog_prefix: str
) -> None:
    """A query over every one of the CATALOG_FILES files (all time: how a
    broker looks a message up by key), the catalog and footers already
    loaded: at least one ranged read of each file's slot record."""
    spec, proxy = link
    config = StoreConfig(
        slots=64, capacity=4, endpoint_url=proxy.endpoint_url, region="us-east-1", shutdown_timeout_s=120.0
    )
    reader = IndexStore(tmp / f"wide-reader-{uuid.uuid4().hex[:8]}", catalog_prefix, config)
    reader.start()

    def query() -> None:
        got = reader.query("orders", "k0", 0, 10**15, 10)
        assert [e.offset for e in got] == [0]

    query()  # the catalog and every file's footer
    benchmark.group = f"wide query {spec}"
    benchmark.pedantic(query, rounds=ROUNDS, iterations=1)
    reader.shutdown()
    # Per file its slot record (at least); nothing besides.
    at_once = READS_PER_UPLOAD * config.upload_concurrency
    _catalog_result(
        "wide", benchmark, spec, proxy, server, catalog_prefix, at_once=at_once, per_file=1, other=0
    )


def test_remote_verify(
    benchmark: Any, link: tuple[Link, ProxyProcess], server: S3Server, catalog_prefix: str
) -> None:
    """``tieredindex verify`` (shallow) of the same CATALOG_FILES files
    through the link: a listing, then per file its record (GET) and a HEAD
    of its object."""
    from tieredindex.remotecheck import verify_url

    spec, proxy = link
    remote = open_remote(catalog_prefix, endpoint_url=proxy.endpoint_url, region="us-east-1")

    def verify() -> None:
        report = verify_url(remote, deep=False, repair=False)
        assert report.ok and report.checked_files == CATALOG_FILES

    benchmark.group = f"verify {spec}"
    benchmark.pedantic(verify, rounds=ROUNDS, iterations=1)
    remote.close()
    # Per file its record and a HEAD; besides, the listings of objects and of uploads.
    at_once = verifier.DEFAULT_CONCURRENCY
    _catalog_result(
        "verify", benchmark, spec, proxy, server, catalog_prefix, at_once=at_once, per_file=2, other=2
    )


RETENTION_FILES = int(os.environ.get("TIX_BENCH_RETENTION_FILES", str(CATALOG_FILES)))


def test_remote_retention(
    benchmark: Any,
    link: tuple[Link, ProxyProcess],
    server: S3Server,
    tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Retention of RETENTION_FILES expired files through the link: the
    store that wrote them (its directory, so its journal rows too; written
    straight to the server, not timed), its catalog loaded, runs one retention
    round (``_apply_retention``, as its upkeep thread does), which per file
    reads the record, deletes it, then deletes the object."""
    import tieredindex.store

    spec, proxy = link
    monkeypatch.setattr(tieredindex.store, "RETENTION_CONFIRM_S", 0.0)  # deletes at its first look
    direct = StoreConfig(
        slots=64, capacity=4, endpoint_url=server.endpoint_url, region="us-east-1", shutdown_timeout_s=300.0
    )
    linked = dataclasses.replace(direct, endpoint_url=proxy.endpoint_url, shutdown_timeout_s=120.0)
    stores: list[tuple[IndexStore, str]] = []
    get_s: list[float] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        prefix = f"retention-{uuid.uuid4().hex[:8]}"
        url = f"s3://{BUCKET}/{prefix}/"
        writer = IndexStore(tmp / prefix, url, direct)
        writer.start()
        for i in range(RETENTION_FILES * direct.capacity):  # timestamps of 1970: all expired
            writer.put("orders", f"k{i}", queue_id=0, offset=i, size=100, timestamp_ms=1_000_000 + i)
        assert writer.shutdown().clean
        if not get_s:
            listed = server.client.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/{MANIFEST_PREFIX}")
            get_s.append(small_get_seconds(proxy.endpoint_url, listed["Contents"][0]["Key"], ROUNDS * 3))
        store = IndexStore(tmp / prefix, url, linked)  # retention_s None: only the timed round deletes
        store.start()
        deadline = time.monotonic() + 120
        while store.status().remote_files != RETENTION_FILES:
            assert time.monotonic() < deadline, "the catalog did not load"
            time.sleep(0.05)
        store._ensure_claimed()  # once a store's life (its upkeep does it before retention): not timed
        stores.append((store, prefix))
        return (store,), {}

    def retention(store: IndexStore) -> None:
        store._apply_retention(3600.0)

    benchmark.group = f"retention {spec}"
    benchmark.pedantic(retention, setup=setup, rounds=ROUNDS, iterations=1)
    for store, prefix in stores:
        left = server.client.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/").get("Contents", [])
        assert store.journal.files() == [] and store.status().remote_files == 0
        assert [o["Key"] for o in left] == [f"{prefix}/{OWNER_KEY}"], left[:5]
        assert store.shutdown().clean
        clean_prefix(server, prefix)
    # Per file a GET and two deletes; nothing besides (the prefix claimed in the setup).
    at_once = tieredindex.store.retention_at_once(linked.upload_concurrency)
    info = {
        "files": RETENTION_FILES,
        "get_s": get_s[0],
        "concurrency": at_once,
        "floor_requests": 3 * -(-RETENTION_FILES // at_once),
        "serial_requests": 3 * RETENTION_FILES,
    }
    benchmark.extra_info.update(info, **_link_info(spec))
    RESULTS[("retention", str(spec), "")] = {"seconds": benchmark.stats.stats.median, **info}


# --------------------------------------------------------------------------
# Memory while uploading a 600 MB file


def _sample_rss(pid: int, stop: threading.Event, out: list[int]) -> None:
    while not stop.wait(0.01):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        out.append(int(line.split()[1]))
        except OSError:
            return


@pytest.mark.parametrize("impl", IMPLS, ids=lambda i: i[0] if i[1] is None else f"ours-{i[1]}")
def test_upload_rss(
    benchmark: Any,
    impl: tuple[str, Upload | None],
    link: tuple[Link, ProxyProcess],
    server: S3Server,
    tmp: Path,
) -> None:
    spec, proxy = link
    name, upload = impl
    size = RSS_MB * MB
    path, crc = data_file(tmp, size)
    prefix = f"rss-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "AWS_ENDPOINT_URL": proxy.endpoint_url}
    part = upload.part_size if upload else 8 * MiB
    conc = upload.concurrency if upload else 10
    result: dict[str, Any] = {}

    def run() -> None:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "benches" / "rss_child.py"),
                name,
                BUCKET,
                f"{prefix}/big",
                str(path),
                str(crc),
                str(part),
                str(conc),
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert proc.stdout is not None
        first = proc.stdout.readline().split()
        assert first[0] == "idle", first
        samples: list[int] = []
        stop = threading.Event()
        sampler = threading.Thread(target=_sample_rss, args=(proc.pid, stop, samples))
        sampler.start()
        rest = proc.stdout.read().split()
        assert proc.wait(300) == 0
        stop.set()
        sampler.join()
        values = dict(zip(rest[::2], rest[1::2], strict=True))
        result.update(
            idle_kb=int(first[1]),
            hwm_kb=int(values["peak"]),
            sampled_peak_kb=max(samples, default=0),
            upload_s=float(values["seconds"]),
        )

    benchmark.group = f"rss {RSS_MB}MB {spec}"
    benchmark.pedantic(run, rounds=1, iterations=1)
    clean_prefix(server, prefix)
    above = (max(result["hwm_kb"], result["sampled_peak_kb"]) - result["idle_kb"]) / 1024
    result["above_idle_mib"] = above
    result["budget_mib"] = part * conc / MiB + 64
    benchmark.extra_info.update(result, bytes=size, **_link_info(spec), **_upload_info(name, upload))
    RESULTS[(f"rss {RSS_MB} MB", str(spec), name if upload is None else str(upload))] = result


# --------------------------------------------------------------------------
# The table


def _table() -> list[str]:
    rows = [("figure", "ours", "anchor", "ratio", "target", "met?")]
    for spec in map(str, LINKS):
        for size_mib in SIZES_MIB:
            anchor = RESULTS.get((f"upload {size_mib} MiB", spec, "boto3"))
            full = RESULTS.get((f"upload {size_mib} MiB", spec, "boto3-full"))
            for upload in map(str, UPLOADS):
                ours = RESULTS.get((f"upload {size_mib} MiB", spec, upload))
                if ours and anchor:
                    ratio = ours["mb_per_s"] / anchor["mb_per_s"]
                    rows.append(
                        (
                            f"upload {size_mib} MiB MB/s [{spec} {upload}]",
                            f"{ours['mb_per_s']:.1f}",
                            f"{anchor['mb_per_s']:.1f} boto3 upload_file",
                            f"{ratio:.2f}",
                            ">= 1.00",
                            "yes" if ratio >= 1 else "NO",
                        )
                    )
                if ours and full:
                    rows.append(
                        (
                            "  same, beside boto3 with a full-object checksum",
                            "",
                            f"{full['mb_per_s']:.1f} boto3 upload_file, FULL_OBJECT CRC-32",
                            f"{ours['mb_per_s'] / full['mb_per_s']:.2f}",
                            "",
                            "",
                        )
                    )
                if ours and anchor and ours["phases_s"] and anchor["phases_s"]:
                    # Times: the ratio is theirs / ours, faster above 1 as for MB/s.
                    mine, theirs = ours["phases_s"], anchor["phases_s"]
                    for phase, what in (("parts", "create + parts"), ("complete", "complete")):
                        also = (
                            f", {full['phases_s'][phase]:.3f} FULL_OBJECT"
                            if full and full["phases_s"]
                            else ""
                        )
                        rows.append(
                            (
                                f"  {what} s (multipart phase)",
                                f"{mine[phase]:.3f}",
                                f"{theirs[phase]:.3f} boto3 upload_file{also}",
                                f"{theirs[phase] / mine[phase]:.2f}",
                                "",
                                "",
                            )
                        )
        seal = RESULTS.get(("seal", spec, ""))
        link_spec = next(lk for lk in LINKS if str(lk) == spec)
        for upload in map(str, UPLOADS):
            ours = RESULTS.get(("sigterm", spec, upload))
            if ours and seal:
                transfer = seal["bytes"] / link_spec.bandwidth if link_spec.bandwidth else 0.0
                floor = seal["seconds"] + transfer + 2 * link_spec.rtt_ms / 1000
                ratio = ours["seconds"] / floor
                rows.append(
                    (
                        f"SIGTERM->verified {seal['bytes'] / MiB:.0f} MiB s [{spec} {upload}]",
                        f"{ours['seconds']:.3f}",
                        f"{floor:.3f} floor (seal {seal['seconds']:.3f} + {transfer:.3f} + 2 RTT)",
                        f"{ratio:.2f}",
                        "<= 1.30",
                        "yes" if ratio <= 1.3 else "NO",
                    )
                )
                server = ours["server_own_s"]
                rows.append(
                    (
                        "  same, floor + the server's own time for the storing request",
                        "",
                        f"{floor + server:.3f} (server {server:.3f}, direct to {SERVER})",
                        f"{ours['seconds'] / (floor + server):.2f}",
                        "",
                        "",
                    )
                )
                rows.append(
                    (
                        "  the child's exit (after the verified copy)",
                        f"{ours['exited_s']:.3f}",
                        "",
                        "",
                        "",
                        "",
                    )
                )
                b = ours["breakdown"]
                rows.append(
                    (
                        "  steps ended after SIGTERM (s)",
                        " ".join(f"{k}={v:.3f}" for k, v in b.items()),
                        "",
                        "",
                        "",
                        "",
                    )
                )
        query = RESULTS.get(("query", spec, ""))
        if query:
            floor = 2 * query["ranged_get_s"]
            rows.append(
                (
                    f"query, key in {query['files']} remote files ms [{spec}]",
                    f"{query['seconds'] * 1000:.1f}",
                    f"{floor * 1000:.1f} = 2 ranged GETs of {query['ranged_get_s'] * 1000:.1f} "
                    f"(file by file: {query['files'] * floor * 1000:.0f})",
                    f"{query['seconds'] / floor:.2f}",
                    "",
                    "",
                )
            )
        for name, what in (
            ("catalog", "fresh store, first query over {} remote files"),
            ("verify", "shallow verify of {} remote files"),
            ("wide", "query over all {} remote files, footers cached"),
            ("retention", "retention deletes {} expired remote files"),
        ):
            result = RESULTS.get((name, spec, ""))
            if not result:
                continue
            get_s, requests = result["get_s"], result["floor_requests"]
            floor = get_s * requests
            rows.append(
                (
                    f"{what.format(result['files'])} ms [{spec}]",
                    f"{result['seconds'] * 1000:.0f}",
                    f"{floor * 1000:.0f} = {requests} round trips of {get_s * 1000:.1f} "
                    f"({result['concurrency']} at once; "
                    f"one by one: {result['serial_requests'] * get_s * 1000:.0f})",
                    f"{result['seconds'] / floor:.2f}",
                    "",
                    "",
                )
            )
        anchor = RESULTS.get((f"rss {RSS_MB} MB", spec, "boto3"))
        for upload in map(str, UPLOADS):
            ours = RESULTS.get((f"rss {RSS_MB} MB", spec, upload))
            if ours:
                met = ours["above_idle_mib"] <= ours["budget_mib"]
                rows.append(
                    (
                        f"RSS above idle, {RSS_MB} MB upload MiB [{spec} {upload}]",
                        f"{ours['above_idle_mib']:.0f} (idle {ours['idle_kb'] / 1024:.0f})",
                        f"{anchor['above_idle_mib']:.0f} boto3 upload_file" if anchor else "-",
                        f"{ours['above_idle_mib'] / anchor['above_idle_mib']:.2f}" if anchor else "-",
                        f"<= {ours['budget_mib']:.0f}",
                        "yes" if met else "NO",
                    )
                )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return lines


@pytest.fixture(scope="module", autouse=True)
def _print_table(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if not RESULTS:
        return
    lines = ["", f"Remote path over {SCHEME}: figures beside their anchors (same run)", *_table(), ""]
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print("\n".join(lines), flush=True)
