"""One HTTP connection: what aiohttp answers itself, before any middleware runs, keeps the JSON
error contract.

aiohttp builds one ``web.RequestHandler`` per connection. It answers a request its parser
refused (``Content-Length: -1``, both ``Content-Length`` and ``Transfer-Encoding``, a malformed
request line or header, a line over ``max_line_size``, too many headers) through
``handle_error``, with plain text that quotes the offending bytes. It answers an unknown
``Expect`` value (raised by the router's expect handler, outside the middlewares) with plain
text too. :class:`Connection` overrides the two public methods involved, ``handle_error`` and
``finish_response``, so those answers are the JSON error shape with a stable code, our own
message (never the raw bytes), a request id, and an access line.

``common/server.py`` wires it in: aiohttp has no argument that names the handler class, so a
site of ours creates the listening socket with :class:`Connection` as its protocol, registered
with the runner's own ``web.Server`` (which shuts it down like any other connection).

Checked against aiohttp 3.14.5. ``tests/common/test_connection.py`` sends each refused request
over a real socket and fails when a newer aiohttp stops calling these hooks.
"""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import (
    BadStatusLine,
    ContentLengthError,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
    TransferEncodingError,
)

from common.logging import get_logger
from common.middleware import client_ip, new_request_id, pick_request_id, write_access_line
from common.responses import REQUEST_ID_HEADER, code_for, error_body, json_response

log = get_logger("common.connection")

# The route of an access line for a request aiohttp's parser refused: it has no method or path.
UNPARSED = "unparsed"

_HEADER_TOO_LARGE = (
    431,
    "request_header_too_large",
    "the request line or a header field is too long, or there are too many header fields",
)
_INVALID_REQUEST_LINE = (
    400,
    "invalid_request_line",
    "the request line is not 'METHOD target HTTP/1.x' with a valid method and target",
)
_INVALID_HEADER = (400, "invalid_header", "a header field is malformed or not allowed")
_INVALID_FRAMING = (
    400,
    "invalid_framing",
    "the body's framing is invalid: Content-Length must be one non-negative integer, "
    "Transfer-Encoding must end in chunked with valid chunks, and a request may not carry both",
)
_MALFORMED = (400, "bad_request", "the request is not valid HTTP/1.1")

# Messages for errors aiohttp raises outside the middlewares, instead of its own text (an
# unknown Expect value is quoted in it).
_OUTSIDE_MESSAGES = {417: "the Expect header may only be 100-continue"}


def refusal(exc: HttpProcessingError) -> tuple[int, str, str]:
    """(status, stable code, message) for a request aiohttp's parser refused with ``exc``.

    The exception class decides where aiohttp has one; llhttp reports most errors as a plain
    ``BadHttpMessage`` whose first line is its fixed reason ("Invalid character in
    Content-Length", "Transfer-Encoding can't be present with Content-Length"), read for its
    subject only. Anything unrecognised is ``400 bad_request``.
    """
    if isinstance(exc, LineTooLong):
        return _HEADER_TOO_LARGE
    if isinstance(exc, (BadStatusLine, InvalidURLError)):
        return _INVALID_REQUEST_LINE
    if isinstance(exc, InvalidHeader):
        return _INVALID_HEADER
    if isinstance(exc, (TransferEncodingError, ContentLengthError)):
        return _INVALID_FRAMING
    reason = parser_reason(exc).lower()
    if "too many headers" in reason:
        return _HEADER_TOO_LARGE
    if any(s in reason for s in ("content-length", "transfer-encoding", "chunk")):
        return _INVALID_FRAMING
    if "header" in reason:
        return _INVALID_HEADER
    if any(s in reason for s in ("method", "version", "url", "status line")):
        return _INVALID_REQUEST_LINE
    return _MALFORMED


def parser_reason(exc: HttpProcessingError) -> str:
    """The parser's own reason, for the log: its first line, at most 200 characters (llhttp puts
    the offending bytes on the lines below)."""
    return (exc.message or "").split("\n", 1)[0][:200].rstrip(":")


def _route(request: web.BaseRequest) -> str:
    """The request's route template, when the router got as far as resolving it."""
    try:
        resource = request.match_info.route.resource  # type: ignore[attr-defined]
    except (AttributeError, AssertionError):
        return "unmatched"
    return resource.canonical if resource is not None else "unmatched"


class Connection(web.RequestHandler):
    """aiohttp's request handler for one connection, answering its own errors as JSON."""

    def __init__(self, manager: web.Server, *, app: web.Application, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.app = app

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
        self._access_line(request, response, code, method, route, path, bytes_in, reason)
        return response

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        """Send ``resp``; an HTTP error aiohttp raised outside the middlewares (an unknown
        ``Expect`` value) is sent as the JSON error shape instead of aiohttp's text."""
        if isinstance(resp, web.HTTPException) and resp.status >= 400:
            resp = self._outside_error(request, resp)
        return await super().finish_response(request, resp, start_time)

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
            request,
            response,
            code,
            request.method,
            _route(request),
            request.path,
            request.content_length or 0,
        )
        return response

    def _access_line(
        self,
        request: web.BaseRequest,
        response: web.Response,
        code: str,
        method: str | None,
        route: str,
        path: str | None,
        bytes_in: int,
        reason: str | None = None,
    ) -> None:
        """The access line of an answer the middlewares never saw (``reason``: the parser's)."""
        fields: dict[str, Any] = {
            "request_id": response.headers[REQUEST_ID_HEADER],
            "method": method,
            "route": route,
            "path": path,
            "status": response.status,
            "latency_ms": 0.0,
            "bytes_in": bytes_in,
            "bytes_out": response.content_length or 0,
            "client_ip": client_ip(request),
            "error": code,
        }
        if reason is not None:
            fields["message"] = reason
        write_access_line(self.app, fields, {})
