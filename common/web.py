"""The HTTP shell both services share: middlewares, health/readiness routes, and ``serve()``.

Middlewares, outermost first:

- ``context_middleware``: picks the request id (``X-Request-ID``, else the ALB's
  ``X-Amzn-Trace-Id`` root, else a new one), binds it to the log context, echoes it in the
  response, and writes one access line per request.
- ``error_middleware``: renders ``ServiceError`` and ``web.HTTPException`` as JSON
  ``{"error", "message", "request_id"}``; anything else is logged with its stack and answered 500
  without internals.
"""

from __future__ import annotations

import asyncio
import errno
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from common.config import CommonSettings
from common.errors import ServiceError
from common.logging import get_logger

log = get_logger("common.web")

REQUEST_ID_HEADER = "X-Request-ID"
TRACE_HEADER = "X-Amzn-Trace-Id"
# A caller-supplied id is echoed into headers and logs: accept only a safe, bounded alphabet.
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:/+=@-]{1,128}$")
_TRACE_ROOT_RE = re.compile(r"(?:^|;)\s*Root=([A-Za-z0-9-]{1,64})")

REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)
# Bytes received, when the handler counted them itself (a chunked upload has no Content-Length).
BYTES_IN: web.RequestKey[int] = web.RequestKey("bytes_in", int)

ReadinessCheck = Callable[[web.Application], Awaitable[str | None]]
"""Returns None when the service can do its work, else the reason it cannot."""

SETTINGS: web.AppKey[CommonSettings] = web.AppKey("common_settings", CommonSettings)
READINESS: web.AppKey[ReadinessCheck] = web.AppKey("readiness", ReadinessCheck)  # type: ignore[arg-type]
SHUTTING_DOWN: web.AppKey[asyncio.Event] = web.AppKey("shutting_down", asyncio.Event)

# Codes for errors aiohttp raises itself (router, body limits), so every error body is alike.
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
}

# Status for a request whose client went away before the answer: nginx's convention, so the
# access line says what happened (nothing can be sent anyway).
CLIENT_CLOSED = 499


def json_response(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON response serialised with orjson."""
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def error_response(
    status: int,
    code: str,
    message: str,
    request: web.Request,
    *,
    retry_after: int | None = None,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """The one JSON error shape of the API contract."""
    body: dict[str, Any] = {
        "error": code,
        "message": message,
        "request_id": request.get(REQUEST_ID),
    }
    if details:
        body.update(details)
    out = dict(headers or {})
    if retry_after is not None:
        out["Retry-After"] = str(retry_after)
    return json_response(body, status=status, headers=out)


def pick_request_id(request: web.Request) -> tuple[str, str | None]:
    """(request id, ALB trace root or None) for this request."""
    trace_root = None
    trace = request.headers.get(TRACE_HEADER)
    if trace:
        m = _TRACE_ROOT_RE.search(trace)
        trace_root = m.group(1) if m else None
    given = request.headers.get(REQUEST_ID_HEADER, "")
    if _REQUEST_ID_RE.match(given):
        return given, trace_root
    return trace_root or uuid.uuid4().hex, trace_root


def _client_ip(request: web.Request) -> str | None:
    # The ALB appends the peer to X-Forwarded-For; the first entry is the original client.
    forwarded = request.headers.get("X-Forwarded-For")
    if forwarded:
        return forwarded.split(",")[0].strip()
    return request.remote


@web.middleware
async def context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, log context and the access line."""
    request_id, trace_id = pick_request_id(request)
    request[REQUEST_ID] = request_id
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    if trace_id:
        structlog.contextvars.bind_contextvars(trace_id=trace_id)
    started = time.perf_counter()
    status = 500
    response: web.StreamResponse | None = None
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        if response is not None and not response.prepared:
            response.headers[REQUEST_ID_HEADER] = request_id
        info = request.match_info.route.resource
        bytes_out = 0
        if response is not None:
            bytes_out = response.body_length or (response.content_length or 0)
        log.info(
            "request",
            method=request.method,
            route=info.canonical if info is not None else "unmatched",
            path=request.path,
            status=status,
            latency_ms=round((time.perf_counter() - started) * 1000, 2),
            bytes_in=request.get(BYTES_IN, request.content_length or 0),
            bytes_out=bytes_out,
            client_ip=_client_ip(request),
        )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes the JSON error shape; internals never reach the caller."""
    try:
        return await handler(request)
    except ServiceError as exc:
        if exc.status >= 500:
            log.warning("request_failed", error=exc.code, message=exc.message, status=exc.status)
        return error_response(
            exc.status,
            exc.code,
            exc.message,
            request,
            retry_after=exc.retry_after,
            details=exc.details,
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
        return error_response(
            exc.status,
            _HTTP_CODES.get(exc.status, f"http_{exc.status}"),
            exc.reason if exc.text is None or exc.text.startswith(f"{exc.status}:") else exc.text,
            request,
            headers=headers,
        )
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


async def _health(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    return json_response({"status": "ok", "service": settings.service, "version": settings.version})


async def _ready(request: web.Request) -> web.Response:
    app = request.app
    if app[SHUTTING_DOWN].is_set():
        reason: str | None = "shutting down"
    else:
        reason = await app[READINESS](app)
    if reason is None:
        return json_response({"status": "ready", "service": app[SETTINGS].service})
    return error_response(503, "not_ready", reason, request, details={"status": "unavailable"})


async def _mark_shutting_down(app: web.Application) -> None:
    app[SHUTTING_DOWN].set()
    log.info("shutdown_started")


def create_base_app(
    settings: CommonSettings, readiness: ReadinessCheck, *, client_max_size: int = 1024**2
) -> web.Application:
    """The app skeleton every service builds on: middlewares, health and readiness routes."""
    app = web.Application(
        middlewares=[context_middleware, error_middleware], client_max_size=client_max_size
    )
    app[SETTINGS] = settings
    app[READINESS] = readiness
    app[SHUTTING_DOWN] = asyncio.Event()
    app.on_shutdown.append(_mark_shutting_down)
    app.router.add_get("/health", _health, allow_head=True)
    app.router.add_get(f"{settings.base_path}/health", _health, allow_head=True)
    app.router.add_get(f"{settings.base_path}/ready", _ready, allow_head=True)
    return app


def serve(app: web.Application, settings: CommonSettings) -> None:
    """Run the app until SIGTERM/SIGINT, then shut down gracefully.

    aiohttp's own sequence: stop listening, ``on_shutdown``, wait up to ``shutdown_grace`` seconds
    for in-flight requests, cancel what is left, then run the cleanup contexts (flush, close
    clients). Exits 1 with a clear message when the port is taken.
    """
    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        loop = asyncio.new_event_loop()
    log.info("starting", host=settings.host, port=settings.port, base_path=settings.base_path)
    try:
        web.run_app(
            app,
            host=settings.host,
            port=settings.port,
            shutdown_timeout=settings.shutdown_grace,
            access_log=None,
            print=None,
            loop=loop,
        )
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            log.error("port_in_use", port=settings.port)
            print(
                f"{settings.service}: port {settings.port} on {settings.host} is already in use; "
                "stop the other process or set PORT to a free port",
                file=sys.stderr,
            )
            sys.exit(1)
        raise
    log.info("stopped")
