"""One HTTP connection: what aiohttp answers itself, before any middleware runs, keeps the JSON
error contract, and a request's headers must arrive within a time limit.

aiohttp builds one ``web.RequestHandler`` per connection. It answers a request its parser
refused (``Content-Length: -1``, both ``Content-Length`` and ``Transfer-Encoding``, a malformed
request line or header, a line over ``max_line_size``, too many headers) through
``handle_error``, with plain text that quotes the offending bytes. It answers an unknown
``Expect`` value (raised by the router's expect handler, outside the middlewares) with plain
text too. :class:`Connection` overrides the two public methods involved, ``handle_error`` and
``finish_response``, so those answers are the JSON error shape with a stable code, our own
message (never the raw bytes), a request id, and an access line.

aiohttp has no header timeout: only its keep-alive timeout (3630 s by default) ends a connection
that never completes a request. :class:`Connection` keeps one timer of
``REQUEST_HEADERS_TIMEOUT`` seconds (Kestrel's ``RequestHeadersTimeout``) while it waits for a
request's headers:

- it starts when the connection opens, and on a kept-alive connection with the first byte of
  the next request (an idle kept-alive connection is left to the keep-alive timeout);
- it stops when aiohttp hands the request over (its headers are complete), so neither the body
  nor a slow response counts;
- bytes of a next request that arrive, pipelined, while one is handled, start it again when that
  response has been sent;
- when it fires, the connection is closed: with ``408 request_header_timeout`` if part of a
  request had come, silently if nothing had.

Hooks, all public: ``connection_made``, ``data_received`` and ``connection_lost`` (asyncio's
protocol methods), ``finish_response`` and ``handle_error`` (aiohttp's), and the request factory
of the runner's ``web.Server`` (a public attribute), which :func:`announce_requests` wraps so
the connection learns when a request's headers are complete. That last hook relies on
``RequestHandler`` reading ``manager.request_factory`` when a connection is made.

``common/server.py`` wires it in: aiohttp has no argument that names the handler class, so a
site of ours creates the listening socket with :class:`Connection` as its protocol, registered
with the runner's own ``web.Server`` (which shuts it down like any other connection).

Checked against aiohttp 3.14.5. ``tests/common/test_connection.py`` sends each refused request
and each unfinished head over a real socket, and fails when a newer aiohttp stops calling these
hooks (a connection never told of its request would be cut while a slow handler runs).
"""

from __future__ import annotations

import asyncio
import contextvars
import weakref
from email.utils import formatdate
from typing import Any

import structlog
from aiohttp import StreamReader, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import RawRequestMessage

from common.logging import get_logger
from common.middleware import client_ip, new_request_id, pick_request_id, write_access_line
from common.refusals import parser_reason, refusal
from common.responses import REQUEST_ID_HEADER, code_for, error_body, json_body, json_response

log = get_logger("common.connection")

# The route of an access line for a request aiohttp's parser refused: it has no method or path.
UNPARSED = "unparsed"

# Messages for errors aiohttp raises outside the middlewares, instead of its own text (an
# unknown Expect value is quoted in it).
_OUTSIDE_MESSAGES = {417: "the Expect header may only be 100-continue"}


def _route(request: web.BaseRequest) -> str:
    """The request's route template, when the router got as far as resolving it."""
    try:
        resource = request.match_info.route.resource  # type: ignore[attr-defined]
    except (AttributeError, AssertionError):
        return "unmatched"
    return resource.canonical if resource is not None else "unmatched"


class Connection(web.RequestHandler):
    """aiohttp's request handler for one connection, answering its own errors as JSON and
    closing the connection when a request's headers take longer than ``header_timeout``."""

    def __init__(
        self, manager: web.Server, *, app: web.Application, header_timeout: float, **kwargs: Any
    ) -> None:
        super().__init__(manager, **kwargs)
        self.app = app
        self.header_timeout = header_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        # When the wait for the current head began (loop time), and whether a byte of it came.
        self._head_since = 0.0
        self._head_seen = False
        # Between a request's handover and the end of its response.
        self._in_request = False
        # The latest request's body: while it is unfinished, bytes that arrive are body bytes.
        self._request_body: StreamReader | None = None
        # A next request's bytes arrived while one was handled.
        self._pipelined = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        body = self._request_body
        if data and (body is None or body.is_eof()):
            # Not body bytes, so a request's head.
            if self._in_request:
                self._pipelined = True
            else:
                self._arm()
                self._head_seen = True
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def request_began(self, body: StreamReader) -> None:
        """aiohttp handed a request over: its headers are complete (see
        :func:`announce_requests`)."""
        self._disarm()
        self._in_request = True
        self._pipelined = False
        self._request_body = body

    def _arm(self) -> None:
        """Start the header timer, unless it runs already."""
        if self._head_timer is None:
            loop = asyncio.get_running_loop()
            self._head_since = loop.time()
            self._head_seen = False
            # An empty context: the timer must not carry the last request's log fields.
            self._head_timer = loop.call_later(
                self.header_timeout, self._head_timed_out, context=contextvars.Context()
            )

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        transport = self.transport
        if self._in_request or transport is None:
            return
        if self._head_seen:
            request_id = new_request_id()
            body = json_body(
                error_body(
                    "request_header_timeout",
                    f"the request's headers did not arrive within {self.header_timeout:g}s",
                    request_id,
                )
            )
            transport.write(
                (
                    "HTTP/1.1 408 Request Timeout\r\n"
                    "Content-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n"
                    f"Date: {formatdate(usegmt=True)}\r\n"
                    f"{REQUEST_ID_HEADER}: {request_id}\r\n"
                    "Connection: close\r\n\r\n"
                ).encode("ascii")
                + body
            )
            peer = self.peername
            self._access_line(
                request_id,
                408,
                "request_header_timeout",
                len(body),
                peer[0] if isinstance(peer, tuple) else peer,
            )
        # Closing flushes what was written first.
        self.force_close()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The answer to a request aiohttp's parser refused (``exc`` is the parser's error), or
        to an exception that escaped the app outside the middlewares (500; 504 for a timeout):
        the JSON error shape, never aiohttp's text or a traceback. The connection closes."""
        if request.writer.output_size > 0:
            # As aiohttp does: part of a response went out, so no other can follow.
            raise ConnectionError("a response was already started; the connection is broken")
        structlog.contextvars.clear_contextvars()
        if isinstance(exc, HttpProcessingError):
            status, code, text = refusal(exc)
            request_id = new_request_id()
            method = path = None
            route, bytes_in, reason = UNPARSED, 0, parser_reason(exc)
        else:
            request_id, _ = pick_request_id(request)
            if status == 500:
                code, text = (
                    "internal_error",
                    "internal error; the request id identifies it in the logs",
                )
            else:
                code, text = code_for(status), "the request could not be handled"
            structlog.contextvars.bind_contextvars(request_id=request_id)
            log.error("unhandled_error", exc_info=exc or True, status=status)
            method, route, path = request.method, _route(request), request.path
            bytes_in, reason = request.content_length or 0, None
        response = json_response(
            error_body(code, text, request_id),
            status=status,
            headers={REQUEST_ID_HEADER: request_id},
        )
        response.force_close()
        self._access_line(
            request_id,
            status,
            code,
            response.content_length or 0,
            client_ip(request),
            method=method,
            route=route,
            path=path,
            bytes_in=bytes_in,
            reason=reason,
        )
        return response

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        """Send ``resp``; an HTTP error aiohttp raised outside the middlewares (an unknown
        ``Expect`` value) is sent as the JSON error shape instead of aiohttp's text."""
        if isinstance(resp, web.HTTPException) and resp.status >= 400:
            resp = self._outside_error(request, resp)
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._in_request = False
            if self._pipelined:
                # The next request's head began while this one was handled: its time starts now.
                self._arm()
                self._head_seen = True

    def _outside_error(self, request: web.BaseRequest, exc: web.HTTPException) -> web.Response:
        request_id, _ = pick_request_id(request)
        code = code_for(exc.status)
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
        headers[REQUEST_ID_HEADER] = request_id
        response = json_response(
            error_body(code, _OUTSIDE_MESSAGES.get(exc.status, exc.reason), request_id),
            status=exc.status,
            headers=headers,
        )
        self._access_line(
            request_id,
            exc.status,
            code,
            response.content_length or 0,
            client_ip(request),
            method=request.method,
            route=_route(request),
            path=request.path,
            bytes_in=request.content_length or 0,
        )
        return response

    def _access_line(
        self,
        request_id: str,
        status: int,
        code: str,
        bytes_out: int,
        client: str | None,
        *,
        method: str | None = None,
        route: str = UNPARSED,
        path: str | None = None,
        bytes_in: int = 0,
        reason: str | None = None,
    ) -> None:
        """The access line of an answer the middlewares never saw (``reason``: the parser's).
        Its latency counts from when the connection began to wait for the request's head."""
        fields: dict[str, Any] = {
            "request_id": request_id,
            "method": method,
            "route": route,
            "path": path,
            "status": status,
            "latency_ms": round((asyncio.get_running_loop().time() - self._head_since) * 1000, 2),
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "client_ip": client,
            "error": code,
        }
        if reason is not None:
            fields["message"] = reason
        write_access_line(self.app, fields, {})


# Servers whose request factory tells connections about requests (wrapped once each).
_ANNOUNCING: weakref.WeakSet[web.Server] = weakref.WeakSet()


def announce_requests(server: web.Server) -> None:
    """Make ``server``'s request factory tell a :class:`Connection` that aiohttp hands it a
    request, i.e. that the request's headers are complete. Connections made before this call
    are not told (call it before listening)."""
    if server in _ANNOUNCING:
        return
    make_request = server.request_factory

    def request_factory(
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: web.RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        if isinstance(protocol, Connection):
            protocol.request_began(payload)
        return make_request(message, payload, protocol, writer, task)

    server.request_factory = request_factory
    _ANNOUNCING.add(server)
