"""The middlewares every request passes, outermost first, and the one access line per request.

- ``context_middleware``: picks the request id (``X-Request-ID``, else the ALB's
  ``X-Amzn-Trace-Id`` root, else a new one), binds it to the log context, echoes it in the
  response, counts the request as in flight, refuses new work once shutdown began, and writes
  the access line.
- ``error_middleware``: renders ``ServiceError``, ``web.HTTPException`` and a body the HTTP
  parser refused as JSON ``{"error", "message", "request_id"}``; anything else is logged with its
  stack and answered 500 without internals.

The API-key middleware (``common/auth.py``) comes third when keys are configured.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import HttpVersion10, HttpVersion11, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler, Middleware

from common.appkeys import ACCESS_LOG, IN_FLIGHT, SETTINGS, SHUTTING_DOWN
from common.bodies import still_expected
from common.errors import ServiceError, UnsupportedMediaType
from common.logging import get_logger
from common.metrics import COUNT, COUNTED_ERRORS, Metrics, request_metrics
from common.refusals import INVALID_REQUEST_LINE, refusal
from common.responses import (
    CLIENT_CLOSED,
    REQUEST_ID,
    REQUEST_ID_HEADER,
    code_for,
    error_response,
)

# The metrics a handler adds to its request's access line.
REQUEST_METRICS: web.RequestKey[Metrics] = web.RequestKey("metrics", dict)
# What an IPv4 or IPv6 address may be made of (as the ALB writes them).
_ADDRESS_RE = re.compile(r"[0-9A-Fa-f:.]{2,45}")
# The HTTP versions served; the parser refuses other majors but takes 0.9 and 2.0.
_HTTP_1 = frozenset({HttpVersion10, HttpVersion11})


def add_metric(request: web.Request, name: str, value: float, unit: str = COUNT) -> None:
    """Attach a metric to this request's access line (summed if added twice)."""
    metrics = request.setdefault(REQUEST_METRICS, {})
    old = metrics.get(name, (0.0, unit))[0]
    metrics[name] = (old + value, unit)


log = get_logger("common.middleware")

TRACE_HEADER = "X-Amzn-Trace-Id"
# A caller-supplied id is echoed into headers and logs: accept only a safe, bounded alphabet.
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:/+=@-]{1,128}\Z")
_TRACE_ROOT_RE = re.compile(r"(?:^|;)\s*Root=([A-Za-z0-9-]{1,64})")


def new_request_id() -> str:
    """A fresh request id, for a request that brought none."""
    return uuid.uuid4().hex


def pick_request_id(request: web.BaseRequest) -> tuple[str, str | None]:
    """(request id, ALB trace root or None) for this request."""
    trace_root = None
    trace = request.headers.get(TRACE_HEADER)
    if trace:
        m = _TRACE_ROOT_RE.search(trace)
        trace_root = m.group(1) if m else None
    given = request.headers.get(REQUEST_ID_HEADER, "")
    if _REQUEST_ID_RE.match(given):
        return given, trace_root
    return trace_root or new_request_id(), trace_root


def client_ip(request: web.BaseRequest) -> str | None:
    """The client as the ALB saw it: the last ``X-Forwarded-For`` entry, else the peer itself.

    The ALB appends the address it was connected from to whatever the client sent, so only the
    last entry is the ALB's word; the ones before it are the client's, and anyone can forge them.
    """
    forwarded = request.headers.get("X-Forwarded-For")
    if forwarded:
        last = forwarded.rsplit(",", 1)[-1].strip()
        if _ADDRESS_RE.fullmatch(last):  # else not the ALB's: no text of the client's logged
            return last
    return request.remote


def write_access_line(app: web.Application, fields: dict[str, Any], extra: Metrics) -> None:
    """Write the access line ``fields`` (``route``, ``status``, ``latency_ms`` among them), with
    the request's EMF metrics when metrics are on."""
    settings = app[SETTINGS]
    if settings.metrics:
        fields.update(
            request_metrics(
                settings.metrics_namespace,
                settings.service,
                fields["route"],
                fields["status"],
                fields["latency_ms"],
                extra,
            )
        )
    app[ACCESS_LOG].info("request", **fields)


def context_middleware(is_probe: Callable[[web.Request], bool]) -> Middleware:
    """Request id, log context, in-flight count and the access line; ``is_probe`` names the
    requests still answered once shutdown began (health and readiness)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id, trace_id = pick_request_id(request)
        request[REQUEST_ID] = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        if trace_id:
            structlog.contextvars.bind_contextvars(trace_id=trace_id)
        started = time.perf_counter()
        status = 500
        response: web.StreamResponse | None = None
        app = request.app
        in_flight = app[IN_FLIGHT]
        in_flight.enter()
        try:
            if app[SHUTTING_DOWN].is_set() and not is_probe(request):
                # A new request on a kept-alive connection after shutdown began: refuse it.
                response = error_response(
                    503,
                    "shutting_down",
                    "the service is shutting down; retry",
                    request,
                    retry_after=1,
                )
                response.force_close()
            else:
                response = await handler(request)
                if app[SHUTTING_DOWN].is_set():
                    response.force_close()
            status = response.status
            return response
        finally:
            in_flight.exit()
            if response is not None and not response.prepared:
                response.headers[REQUEST_ID_HEADER] = request_id
                if still_expected(request):
                    response.force_close()
            if app[ACCESS_LOG].is_enabled_for(logging.INFO):
                _log_access(request, response, status, started)

    return middleware


def _log_access(
    request: web.Request, response: web.StreamResponse | None, status: int, started: float
) -> None:
    """The access line of a request the app handled."""
    info = request.match_info.route.resource
    bytes_out = 0
    if response is not None:
        bytes_out = response.body_length or (response.content_length or 0)
    fields: dict[str, Any] = {
        "method": request.method,
        "route": info.canonical if info is not None else "unmatched",
        "path": request.path,
        "status": status,
        "latency_ms": round((time.perf_counter() - started) * 1000, 2),
        # Content-Length when declared; for a chunked body, what was read of it.
        "bytes_in": (
            request.content_length
            if request.content_length is not None
            else request.content.total_bytes
        ),
        "bytes_out": bytes_out,
        "client_ip": client_ip(request),
    }
    write_access_line(request.app, fields, request.get(REQUEST_METRICS, {}))


def _refuse_encoded_body(request: web.Request) -> None:
    """415 for a compressed request body, whatever Content-Encoding header names it. The body
    is never decoded (``common/server.py``); taking it as it is would store or parse the
    compressed bytes as if they were the content. A request without a body passes."""
    if not request.body_exists:
        return
    codings = (
        coding.strip().lower()
        for value in request.headers.getall(hdrs.CONTENT_ENCODING, [])
        for coding in value.split(",")
    )
    refused = [coding for coding in codings if coding not in ("", "identity")]
    if refused:
        raise UnsupportedMediaType(
            f"compressed request bodies (Content-Encoding: {', '.join(refused)[:40]}) are not "
            "accepted; send the body as it is",
            code="unsupported_content_encoding",
        )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes the JSON error shape; internals never reach the caller."""
    if request.version not in _HTTP_1:
        # aiohttp's parser takes HTTP/0.9 and HTTP/2.0 request lines, and would answer them.
        status, code, text = INVALID_REQUEST_LINE
        structlog.contextvars.bind_contextvars(error=code)
        refused = error_response(status, code, text, request)
        refused.force_close()
        return refused
    try:
        _refuse_encoded_body(request)
        return await handler(request)
    except ServiceError as exc:
        structlog.contextvars.bind_contextvars(error=exc.code)
        if (counted := COUNTED_ERRORS.get(exc.code)) is not None:
            add_metric(request, counted, 1)
        if exc.status >= 500:
            log.warning("request_failed", error=exc.code, message=exc.message, status=exc.status)
        return error_response(
            exc.status,
            exc.code,
            exc.message,
            request,
            retry_after=exc.retry_after,
            details=exc.details,
            headers=exc.headers,
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
        code = code_for(exc.status)
        structlog.contextvars.bind_contextvars(error=code)
        return error_response(
            exc.status,
            code,
            exc.reason if exc.text is None or exc.text.startswith(f"{exc.status}:") else exc.text,
            request,
            headers=headers,
        )
    except HttpProcessingError as exc:
        # aiohttp's parsers (e.g. multipart part headers) reject malformed input this way.
        return error_response(400, "bad_request", f"malformed request: {exc.message}", request)
    except web.RequestPayloadError as exc:
        # The body parser refused what the handler was reading (a malformed chunk, say): the
        # client's fault, answered without its bytes. The connection cannot go on.
        cause = exc.__cause__
        if isinstance(cause, HttpProcessingError):
            status, code, text = refusal(cause)
        else:
            status, code, text = 400, "bad_request", "the request body is not valid"
        structlog.contextvars.bind_contextvars(error=code)
        refused = error_response(status, code, text, request)
        refused.force_close()
        return refused
    except ConnectionResetError:
        log.info("client_disconnected")
        return web.Response(status=CLIENT_CLOSED)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled_error")
        return error_response(
            500,
            "internal_error",
            "internal error; the request id identifies it in the logs",
            request,
        )
