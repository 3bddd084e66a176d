"""A TCP proxy on 127.0.0.1 that shapes the link and injects S3 faults.

Test infrastructure: put it between a boto3 client and the moto server.

    with NetProxy(moto.endpoint_url, latency_s=0.025, bandwidth=100e6) as proxy:
        client = boto3.client("s3", endpoint_url=proxy.endpoint_url, ...)
        proxy.set_faults({"503": 0.1, "reset": 0.05})   # at run time, from any thread
        proxy.inject_next("500")                         # the next request, for sure
        proxy.outage(30)                                 # nothing answers for 30 s
        proxy.counters()["faults"]                       # what was injected

The link: ``latency_s`` is added one way in each direction (RTT = 2 x
latency) as a delay line, so throughput is not cut by it; ``bandwidth`` caps
bytes/s per direction with a token bucket shared by every connection, like
one real link. ``None`` means unlimited.

Faults are decided per HTTP/1.1 request (the proxy parses just the framing:
request and response heads, Content-Length and chunked bodies, 1xx interim
responses). Kinds, see :data:`FAULT_KINDS`:

* ``"500"`` / ``"503"``: the request is not forwarded; the client gets an S3
  XML error (``InternalError`` / ``SlowDown``).
* ``"reset"``: RST in the middle of the request body (in the middle of the
  response if the request has none).
* ``"stall"``: the request is forwarded, its response held for ``stall_s``
  (set it above the client's read timeout).
* ``"truncate"``: half the response body (half the status line if there is
  no body), then the connection closes.
* ``"spike"``: the request is held ``spike_s`` before it is forwarded.
* ``"flip"``: one bit in the middle of the request body is flipped on its
  way to the server (damage no TCP or HTTP check caught; over plain http,
  to a server that does not check the body's checksum, as moto does not).
* ``"headcut"``: the response's status line and first header line, then the
  connection closes (FIN). http.client takes the head for a whole one, and
  with no Content-Length reads the body to EOF: boto3 returns the status
  (200/206) with an empty body and no error.

``tls=(cert_file, key_file)`` makes the proxy an https endpoint: it ends
TLS itself, as an object store's front end does, and speaks plain HTTP to
the server behind it (so faults still see the framing). Clients then pay
for TLS, and skip what botocore skips over https (hashing the body for
the signature); the handshake itself, like a TCP connect, is not delayed.

Each request draws once from ``random.Random(seed)``, in arrival order, so a
single-threaded client sees the same faults on every run. ``match`` (a regex
on ``"METHOD /path?query"``) limits faults to some requests. ``outage(s)``
resets every open connection and, for ``s`` seconds, refuses (``"refuse"``:
the port is closed) or resets (``"reset"``) new ones.

:class:`ProxyProcess` runs the same proxy in a child process, so that its
work does not share a GIL with the code being measured (benches).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import re
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

FAULT_KINDS = ("500", "503", "reset", "stall", "truncate", "spike", "flip", "headcut")
CHUNK = 256 * 1024
_BURST_S = 0.005  # a token bucket holds this many seconds of bandwidth
_QUEUE_ITEMS = 64  # per direction and connection: bounds the proxy's memory
_CLOSE = object()  # delay-line item: close the socket (FIN) when it falls due
_RST = object()  # delay-line item: reset the connection when it falls due
_KEEP: Any = object()  # set_link: leave this setting as it is

_ERRORS = {
    "500": (
        500,
        "Internal Server Error",
        "InternalError",
        "We encountered an internal error. Please try again.",
    ),
    "503": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
}


class _Reset(Exception):
    """Abort the connection with an RST."""


class _Head:
    """A request or response head: first line and lower-cased headers."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        lines = raw.decode("latin-1").split("\r\n")
        self.first = lines[0]
        self.headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                self.headers[name.strip().lower()] = value.strip()

    def framing(self) -> tuple[str, int]:
        """``("chunked", 0)``, ``("length", n)`` or ``("eof", 0)``."""
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            return "chunked", 0
        if "content-length" in self.headers:
            return "length", int(self.headers["content-length"])
        return "eof", 0


async def _read_head(reader: asyncio.StreamReader) -> _Head | None:
    try:
        return _Head(await reader.readuntil(b"\r\n\r\n"))
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise _Reset("connection closed inside a head") from None
        return None


async def _body(reader: asyncio.StreamReader, kind: str, length: int) -> AsyncIterator[bytes]:
    """The raw bytes of one body, framing included, piece by piece."""
    if kind == "chunked":
        while True:
            line = await reader.readuntil(b"\r\n")
            yield line
            size = int(line.split(b";")[0], 16)
            if size == 0:  # trailers, then an empty line
                while line != b"\r\n":
                    line = await reader.readuntil(b"\r\n")
                    yield line
                return
            async for piece in _body(reader, "length", size + 2):
                yield piece
    elif kind == "length":
        while length:
            data = await reader.read(min(length, CHUNK))
            if not data:
                raise _Reset("connection closed inside a body")
            length -= len(data)
            yield data
    else:
        while data := await reader.read(CHUNK):
            yield data


def _abort(writer: asyncio.StreamWriter | None) -> None:
    """Close with an RST (SO_LINGER 0), not a FIN."""
    if writer is None or writer.transport.is_closing():
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Bucket:
    """Token bucket: ``take(n)`` returns once n bytes fit in the link's rate."""

    def __init__(self) -> None:
        self._t = 0.0  # when the link is free again (loop time)

    async def take(self, n: int, rate: float | None) -> None:
        if not rate:
            return
        now = asyncio.get_running_loop().time()
        self._t = max(self._t, now - _BURST_S) + n / rate
        if self._t > now:
            await asyncio.sleep(self._t - now)


class NetProxy:
    """A shaping, fault-injecting TCP proxy running in a background thread."""

    def __init__(
        self,
        upstream: str,
        *,
        latency_s: float = 0.0,
        bandwidth: float | None = None,
        faults: Mapping[str, float] | None = None,
        seed: int = 0,
        match: str | None = None,
        stall_s: float = 30.0,
        spike_s: float = 1.0,
        port: int = 0,
        tls: tuple[str, str] | None = None,
    ) -> None:
        """``upstream``: ``"http://host:port"`` or ``"host:port"``; ``tls``:
        (certificate, key) PEM files to serve https with."""
        self._tls: ssl.SSLContext | None = None
        if tls is not None:
            self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._tls.load_cert_chain(*tls)
        hostport = upstream.split("://", 1)[-1].rstrip("/")
        host, _, up_port = hostport.rpartition(":")
        self.upstream = (host, int(up_port))
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._latency = 0.0
        self._bandwidth: float | None = None
        self._rates: dict[str, float] = {}
        self._match: re.Pattern[str] | None = None
        self._forced: collections.deque[str] = collections.deque()
        self.stall_s = stall_s
        self.spike_s = spike_s
        self._outage_until = 0.0
        self._outage_mode = "refuse"
        self.set_link(latency_s=latency_s, bandwidth=bandwidth)
        self.set_faults(faults or {}, match=match)
        self._counters: dict[str, Any] = {}
        self.reset_counters()
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]] = set()
        self._up_bucket = _Bucket()
        self._down_bucket = _Bucket()
        self._reopen: asyncio.TimerHandle | None = None

    # ----------------------------------------------------------- settings

    def set_link(self, *, latency_s: float | None = None, bandwidth: Any = _KEEP) -> None:
        """One-way ``latency_s``; ``bandwidth`` in bytes/s per direction
        (``None``: unlimited). Omitted arguments keep their value."""
        with self._lock:
            if latency_s is not None:
                if latency_s < 0:
                    raise ValueError(f"latency_s must be >= 0, got {latency_s}")
                self._latency = float(latency_s)
            if bandwidth is not _KEEP:
                if bandwidth is not None and not float(bandwidth) > 0:
                    raise ValueError(f"bandwidth must be > 0 or None, got {bandwidth}")
                self._bandwidth = None if bandwidth is None else float(bandwidth)

    def set_faults(self, rates: Mapping[str, float], *, match: str | None = None) -> None:
        """Per-request probabilities by kind (summing to at most 1);
        ``match`` limits them (and :meth:`inject_next`) to matching requests."""
        for kind, rate in rates.items():
            if kind not in FAULT_KINDS:
                raise ValueError(f"unknown fault kind {kind!r}; known: {FAULT_KINDS}")
            if not 0 <= rate <= 1:
                raise ValueError(f"rate of {kind!r} must be in [0, 1], got {rate}")
        if sum(rates.values()) > 1 + 1e-9:
            raise ValueError("fault rates sum to more than 1")
        with self._lock:
            self._rates = dict(rates)
            self._match = re.compile(match) if match else None

    def inject_next(self, kind: str, count: int = 1) -> None:
        """The next ``count`` (matching) requests get fault ``kind``."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {FAULT_KINDS}")
        with self._lock:
            self._forced.extend([kind] * count)

    def outage(self, seconds: float, mode: str = "refuse") -> None:
        """Reset every open connection; for ``seconds`` refuse new ones
        (``"refuse"``: the port is closed) or reset them (``"reset"``)."""
        if mode not in ("refuse", "reset"):
            raise ValueError(f"mode must be 'refuse' or 'reset', got {mode!r}")
        with self._lock:
            self._outage_until = time.monotonic() + seconds
            self._outage_mode = mode
            self._counters["outages"] += 1
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._begin_outage, mode, seconds)

    def counters(self) -> dict[str, Any]:
        """``connections``, ``requests``, ``bytes_up``/``bytes_down`` (through
        the shaper), ``faults`` by kind, ``outages``, ``outage_rejects``."""
        with self._lock:
            out = dict(self._counters)
            out["faults"] = dict(self._counters["faults"])
            return out

    def reset_counters(self) -> None:
        with self._lock:
            self._counters = {
                "connections": 0,
                "requests": 0,
                "bytes_up": 0,
                "bytes_down": 0,
                "faults": dict.fromkeys(FAULT_KINDS, 0),
                "outages": 0,
                "outage_rejects": 0,
            }

    @property
    def endpoint_url(self) -> str:
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}"

    # ----------------------------------------------------------- lifecycle

    def start(self) -> NetProxy:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                loop.run_until_complete(self._listen())
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=run, name=f"netproxy-{self.upstream[1]}", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        def shut() -> None:
            if self._server is not None:
                self._server.close()
            for client, upstream in list(self._conns):
                _abort(client)
                _abort(upstream)
            loop.stop()

        with contextlib.suppress(RuntimeError):  # loop already closed
            loop.call_soon_threadsafe(shut)
        thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> NetProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------- internals

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counters[name] += n

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, limit=1 << 20, reuse_address=True, ssl=self._tls
        )
        self.port = self._server.sockets[0].getsockname()[1]

    def _begin_outage(self, mode: str, seconds: float) -> None:
        for client, upstream in list(self._conns):
            _abort(client)
            _abort(upstream)
        if mode == "refuse" and self._server is not None:
            self._server.close()
            self._server = None
        if self._reopen is not None:
            self._reopen.cancel()
        assert self._loop is not None
        self._reopen = self._loop.call_later(seconds, self._end_outage)

    def _end_outage(self) -> None:
        self._reopen = None
        if self._server is None:
            self._loop_task(self._listen())

    def _loop_task(self, coro: Any) -> None:
        assert self._loop is not None
        self._loop.create_task(coro)

    def _in_outage(self) -> bool:
        with self._lock:
            return time.monotonic() < self._outage_until

    def _pick_fault(self, request_line: str) -> str | None:
        with self._lock:
            if self._match is not None and not self._match.search(request_line):
                return None
            if self._forced:
                kind: str | None = self._forced.popleft()
            else:
                draw, kind = self._rng.random(), None
                for name, rate in self._rates.items():
                    if draw < rate:
                        kind = name
                        break
                    draw -= rate
            if kind is not None:
                self._counters["faults"][kind] += 1
            return kind

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        self._count("connections")
        if self._in_outage():
            self._count("outage_rejects")
            _abort(cwriter)
            return
        try:
            ureader, uwriter = await asyncio.open_connection(*self.upstream, limit=1 << 20)
        except OSError:
            _abort(cwriter)
            return
        conn = (cwriter, uwriter)
        self._conns.add(conn)
        try:
            await _Connection(self, creader, cwriter, ureader, uwriter).run()
        except asyncio.CancelledError:
            pass  # the proxy stops (returning keeps asyncio's stream callback quiet)
        finally:
            self._conns.discard(conn)
            _abort(cwriter)
            _abort(uwriter)

    def _link(self) -> tuple[float, float | None]:
        with self._lock:
            return self._latency, self._bandwidth


class _Connection:
    """One client connection and its upstream connection."""

    def __init__(
        self,
        proxy: NetProxy,
        creader: asyncio.StreamReader,
        cwriter: asyncio.StreamWriter,
        ureader: asyncio.StreamReader,
        uwriter: asyncio.StreamWriter,
    ) -> None:
        self.proxy = proxy
        self.creader, self.cwriter = creader, cwriter
        self.ureader, self.uwriter = ureader, uwriter
        self.up: asyncio.Queue[tuple[float, Any]] = asyncio.Queue(_QUEUE_ITEMS)
        self.down: asyncio.Queue[tuple[float, Any]] = asyncio.Queue(_QUEUE_ITEMS)
        # Requests forwarded and not yet answered: (method, response fault).
        self.pending: collections.deque[tuple[str, str | None]] = collections.deque()

    async def run(self) -> None:
        """Until the client leaves, its side is closed, or anything fails."""
        requests = asyncio.ensure_future(self.requests())
        to_client = asyncio.ensure_future(self.deliver(self.down, self.cwriter))
        tasks = {
            requests,
            to_client,
            asyncio.ensure_future(self.responses()),
            asyncio.ensure_future(self.deliver(self.up, self.uwriter)),
        }
        try:
            running = set(tasks)
            while running:
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                if requests in done or to_client in done:
                    break
                if any(not t.cancelled() and t.exception() is not None for t in done):
                    break
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def ship(self, queue: asyncio.Queue[tuple[float, Any]], item: Any, *, up: bool) -> None:
        """Through the shaper and onto the delay line."""
        latency, bandwidth = self.proxy._link()
        if item is not _CLOSE and item is not _RST:
            await (self.proxy._up_bucket if up else self.proxy._down_bucket).take(len(item), bandwidth)
            self.proxy._count("bytes_up" if up else "bytes_down", len(item))
        await queue.put((asyncio.get_running_loop().time() + latency, item))

    async def deliver(self, queue: asyncio.Queue[tuple[float, Any]], writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, item = await queue.get()
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            if item is _CLOSE:
                with contextlib.suppress(OSError):
                    await writer.drain()
                writer.close()
                return
            if item is _RST:
                _abort(writer)
                raise _Reset("injected reset")
            writer.write(item)
            await writer.drain()

    async def requests(self) -> None:
        """Client to server: one request at a time, with its fault."""
        proxy = self.proxy
        while True:
            head = await _read_head(self.creader)
            if head is None:  # the client left: the connection ends
                return
            if proxy._in_outage():
                raise _Reset("outage")
            proxy._count("requests")
            method, _, rest = head.first.partition(" ")
            target = rest.rpartition(" ")[0]
            fault = proxy._pick_fault(f"{method} {target}")
            kind, length = head.framing()
            if kind == "eof":
                kind = "length"  # a request without framing has no body
            expect = head.headers.get("expect", "").lower() == "100-continue"
            if fault in _ERRORS:
                if not expect:  # the client sends the body first: take it
                    async for piece in _body(self.creader, kind, length):
                        await proxy._up_bucket.take(len(piece), proxy._link()[1])
                await self.ship(self.down, _error_response(fault, method, close=expect), up=False)
                if expect:  # the body was never sent: this connection is done
                    await self.ship(self.down, _CLOSE, up=False)
                    await _forever()  # until the error and the FIN are delivered
                continue
            if fault == "spike":
                await asyncio.sleep(proxy.spike_s)
            reset_at = None
            if fault == "reset" and (length > 0 or head.framing()[0] == "chunked"):
                reset_at = length // 2
            flip_at = length // 2 if fault == "flip" and kind == "length" and length > 0 else None
            self.pending.append((method, fault if reset_at is None else None))
            await self.ship(self.up, head.raw, up=True)
            sent = 0
            async for piece in _body(self.creader, kind, length):
                if reset_at is not None and sent + len(piece) > reset_at:
                    await self.ship(self.up, piece[: max(0, reset_at - sent)], up=True)
                    raise _Reset("injected reset in a request body")
                if flip_at is not None and sent <= flip_at < sent + len(piece):
                    damaged = bytearray(piece)
                    damaged[flip_at - sent] ^= 0x01
                    piece = bytes(damaged)
                await self.ship(self.up, piece, up=True)
                sent += len(piece)

    async def responses(self) -> None:
        """Server to client: each response, with its request's fault."""
        while True:
            head = await _read_head(self.ureader)
            if head is None:
                await self.ship(self.down, _CLOSE, up=False)
                return
            status = int(head.first.split(" ", 2)[1])
            if 100 <= status < 200:  # interim (100 Continue): the request goes on
                await self.ship(self.down, head.raw, up=False)
                continue
            if not self.pending:
                raise _Reset("a response without a request")
            method, fault = self.pending.popleft()
            kind, length = head.framing()
            if method == "HEAD" or status in (204, 304):
                kind, length = "length", 0
            if fault == "stall":
                await asyncio.sleep(self.proxy.stall_s)
            if fault in ("truncate", "reset") and kind == "length" and length == 0:
                # Cut inside the status line: http.client takes a head cut
                # between header lines for a whole one.
                await self.ship(self.down, head.raw[: len(head.first) // 2], up=False)
                await self.cut(fault)
            if fault == "headcut":
                # Cut between two header lines (status line and first header
                # kept), then FIN: http.client takes that head for a whole one.
                lines = head.raw.split(b"\r\n")
                await self.ship(self.down, b"\r\n".join(lines[:2]) + b"\r\n", up=False)
                await self.cut("truncate")
            await self.ship(self.down, head.raw, up=False)
            cut_at = length // 2 if fault in ("truncate", "reset") else None
            sent = 0
            async for piece in _body(self.ureader, kind, length):
                if cut_at is not None and sent + len(piece) > cut_at:
                    await self.ship(self.down, piece[: max(0, cut_at - sent)], up=False)
                    await self.cut(fault)
                await self.ship(self.down, piece, up=False)
                sent += len(piece)

    async def cut(self, fault: str | None) -> None:
        """End the connection once what was shipped is delivered: with a
        FIN (truncate) or an RST (reset)."""
        await self.ship(self.down, _CLOSE if fault == "truncate" else _RST, up=False)
        _abort(self.uwriter)
        await _forever()


async def _forever() -> None:
    await asyncio.sleep(86400)


def _error_response(kind: str, method: str, *, close: bool) -> bytes:
    status, reason, code, message = _ERRORS[kind]
    rid = uuid.uuid4().hex[:16].upper()
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<RequestId>{rid}</RequestId><HostId>netproxy</HostId></Error>"
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: application/xml\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"x-amz-request-id: {rid}\r\n"
        f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
    ).encode()
    return head if method == "HEAD" else head + body


# --------------------------------------------------------------------------
# The same proxy in a child process


def _serve(upstream: str, kwargs: dict[str, Any]) -> None:
    """The child's side: JSON commands on stdin, JSON replies on stdout."""
    with NetProxy(upstream, **kwargs) as proxy:
        print(json.dumps({"port": proxy.port}), flush=True)
        for line in sys.stdin:
            name, args, kw = json.loads(line)
            if name == "stop":
                break
            try:
                reply = {"ok": getattr(proxy, name)(*args, **kw)}
            except Exception as exc:
                reply = {"error": type(exc).__name__, "message": str(exc)}
            print(json.dumps(reply), flush=True)


class ProxyProcess:
    """:class:`NetProxy` in a child process; the same settings and counters.

    The child is ``python tests/netproxy.py --serve``, driven through its
    stdin/stdout (no multiprocessing: works from any ``__main__``).
    """

    def __init__(self, upstream: str, **kwargs: Any) -> None:
        self._args = json.dumps([upstream, kwargs])
        self._scheme = "https" if kwargs.get("tls") else "http"
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self.port = 0

    def start(self) -> ProxyProcess:
        self._proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve", self._args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            self._proc.wait(10)
            raise RuntimeError(f"the proxy process exited with {self._proc.returncode}")
        self.port = json.loads(line)["port"]
        return self

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            proc = self._proc
            assert proc is not None and proc.stdin is not None and proc.stdout is not None, "not started"
            proc.stdin.write(json.dumps([name, args, kwargs]) + "\n")
            proc.stdin.flush()
            reply = json.loads(proc.stdout.readline())
        if "error" in reply:
            raise (ValueError if reply["error"] == "ValueError" else RuntimeError)(reply["message"])
        return reply["ok"]

    def set_link(self, **kwargs: Any) -> None:
        self._call("set_link", **kwargs)

    def set_faults(self, rates: Mapping[str, float], *, match: str | None = None) -> None:
        self._call("set_faults", dict(rates), match=match)

    def inject_next(self, kind: str, count: int = 1) -> None:
        self._call("inject_next", kind, count)

    def outage(self, seconds: float, mode: str = "refuse") -> None:
        self._call("outage", seconds, mode)

    def counters(self) -> dict[str, Any]:
        counters: dict[str, Any] = self._call("counters")
        return counters

    def reset_counters(self) -> None:
        self._call("reset_counters")

    @property
    def endpoint_url(self) -> str:
        return f"{self._scheme}://127.0.0.1:{self.port}"

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError, ValueError):
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(["stop", [], {}]) + "\n")
            proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> ProxyProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        upstream, kwargs = json.loads(sys.argv[2])
        _serve(upstream, kwargs)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("upstream", help="http://127.0.0.1:PORT of the S3 server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rtt-ms", type=float, default=0.0)
    parser.add_argument("--bandwidth-mbps", type=float, default=None, help="MB/s (10^6) per direction")
    parser.add_argument("--fault", action="append", default=[], metavar="KIND=RATE")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--tls", nargs=2, metavar=("CERT", "KEY"), help="serve https with these PEM files (tests/tlscert.py)"
    )
    args = parser.parse_args()
    faults = {k: float(v) for k, _, v in (f.partition("=") for f in args.fault)}
    bandwidth = args.bandwidth_mbps * 1e6 if args.bandwidth_mbps else None
    proxy = NetProxy(
        args.upstream,
        latency_s=args.rtt_ms / 2000,
        bandwidth=bandwidth,
        faults=faults,
        seed=args.seed,
        port=args.port,
        tls=tuple(args.tls) if args.tls else None,
    )
    with proxy:
        print(f"proxy on {proxy.endpoint_url} -> {args.upstream}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(5)
                print(proxy.counters(), flush=True)


if __name__ == "__main__":
    main()
