"""A fault-injecting HTTP proxy between a service and moto, configurable while it runs.

The service's ``AWS_ENDPOINT_URL`` points at the proxy; the proxy forwards each AWS call to moto
unless ``rule`` returns a :class:`Fault` for it: an error status with an AWS error body, added
latency, a reset connection, a stall, an answer held back after the backend acted, or a request
body with one byte flipped on the way (what a faulty network or disk would do). Every call is
recorded in ``calls``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import aiohttp
from aiohttp import web

# Headers that describe one hop, not the message; never forwarded.
_HOP_HEADERS = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "upgrade",
    "host",
    "content-length",
}


@dataclass(frozen=True)
class Call:
    """One AWS call as the proxy saw it."""

    method: str
    path: str
    query: dict[str, list[str]]
    target: str | None  # X-Amz-Target (JSON protocols), when present
    # The call's x-amz-* headers (names lowercased): checksums, conditions, checksum types.
    amz: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def s3_operation(self) -> str:
        """A best-effort S3 operation name from method and query."""
        q = self.query
        if self.method == "PUT" and "partNumber" in q:
            return "UploadPart"
        if self.method == "POST" and "uploads" in q:
            return "CreateMultipartUpload"
        if self.method == "POST" and "uploadId" in q:
            return "CompleteMultipartUpload"
        if self.method == "DELETE" and "uploadId" in q:
            return "AbortMultipartUpload"
        if self.method == "PUT":
            return "PutObject"
        return f"{self.method} {self.path}"

    @property
    def part_number(self) -> int | None:
        """The part number of an UploadPart call."""
        values = self.query.get("partNumber")
        return int(values[0]) if values else None


@dataclass
class Fault:
    """What to do instead of (or before) forwarding a call."""

    status: int | None = None  # answer with this status and an AWS-style error
    code: str = "InternalError"
    delay: float = 0.0  # seconds to wait before acting
    reset: bool = False  # drop the connection without an answer
    stall: bool = False  # never answer (until the client gives up)
    # Take the request's head, then read nothing and answer nothing, not even "100 Continue": a
    # frozen backend whose kernel still accepts connections and buffers what it can.
    freeze: bool = False
    # Forward the call (the backend acts on it), then hold the answer this many seconds: a
    # backend that did the work but answered too late (the client's read timeout fires).
    hold: float = 0.0
    # Forward the call only once this event is set: a backend frozen until the test thaws it.
    gate: asyncio.Event | None = None
    # Forward the call with one byte of its body flipped (the middle one; headers, signature
    # and checksums untouched): corruption on the way that only a backend checking the bytes
    # against the stated checksum can catch. A call without a body is forwarded as it is.
    corrupt: bool = False


def corrupted(body: bytes) -> bytes:
    """``body`` with its middle byte inverted (the same length, one byte different)."""
    if not body:
        return body
    middle = len(body) // 2
    return body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1 :]


Rule = Callable[[Call], Fault | None]
# Where a request keeps its call and the call's fault.
_FAULT: web.RequestKey[tuple[Call, Fault | None]] = web.RequestKey("fault")


def _error_response(call: Call, fault: Fault) -> web.Response:
    """An AWS error in the protocol the call speaks: JSON (SQS, Logs) or XML (S3)."""
    if call.target:
        # awsJson with query compatibility: botocore reads the code from x-amzn-query-error.
        service = call.target.split(".")[0]
        return web.json_response(
            {"__type": f"com.amazonaws.{service}#{fault.code}", "message": "injected fault"},
            status=fault.status or 500,
            headers={"x-amzn-query-error": f"{fault.code};Sender"},
            content_type="application/x-amz-json-1.0",
        )
    xml = (
        f"<Error><Code>{fault.code}</Code><Message>injected fault</Message>"
        "<RequestId>faultproxy</RequestId></Error>"
    )
    return web.Response(status=fault.status or 500, text=xml, content_type="application/xml")


@dataclass
class FaultProxy:
    """Forwards to ``upstream``; ``rule`` decides per call whether to inject a fault."""

    upstream: str
    rule: Rule | None = None
    calls: list[Call] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None

    def _fault(self, request: web.Request) -> tuple[Call, Fault | None]:
        """The call and its fault, decided once (``Expect`` asks before the handler runs)."""
        if _FAULT not in request:
            call = Call(
                method=request.method,
                path=request.path,
                query=parse_qs(request.query_string, keep_blank_values=True),
                target=request.headers.get("X-Amz-Target"),
                amz={
                    k.lower(): v
                    for k, v in request.headers.items()
                    if k.lower().startswith("x-amz-")
                },
            )
            self.calls.append(call)
            request[_FAULT] = call, self.rule(call) if self.rule else None
        return request[_FAULT]

    async def _expect(self, request: web.Request) -> None:
        """``Expect: 100-continue`` answered as aiohttp answers it, except for a frozen call."""
        _, fault = self._fault(request)
        if fault is not None and fault.freeze:
            await asyncio.sleep(3600)
        if request.headers.get("Expect", "").lower() != "100-continue":
            raise web.HTTPExpectationFailed()
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        call, fault = self._fault(request)
        if fault is not None and fault.freeze:
            await asyncio.sleep(3600)
        body = await request.read()
        if fault is not None:
            if fault.gate is not None:
                await fault.gate.wait()
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.stall:
                await asyncio.sleep(3600)
            if fault.reset:
                assert request.transport is not None
                request.transport.abort()
                return web.Response(status=500)
            if fault.status is not None:
                return _error_response(call, fault)
            if fault.corrupt:
                body = corrupted(body)
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=body,
            allow_redirects=False,
        ) as upstream:
            payload = await upstream.read()
            if fault is not None and fault.hold:
                await asyncio.sleep(fault.hold)
            out_headers = {
                k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS
            }
            return web.Response(status=upstream.status, body=payload, headers=out_headers)

    async def start(self) -> str:
        """Listen on a free loopback port; returns the proxy's URL."""
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle, expect_handler=self._expect)
        self._session = aiohttp.ClientSession(auto_decompress=False)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        """Close the listener and the upstream session."""
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()


@contextlib.asynccontextmanager
async def fault_proxy(upstream: str, rule: Rule | None = None) -> AsyncIterator[FaultProxy]:
    """A running proxy for the duration of the block."""
    proxy = FaultProxy(upstream=upstream, rule=rule)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()
