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
import json
import logging
import re
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler, Middleware
from structlog.typing import FilteringBoundLogger

from common.auth import auth_middleware
from common.config import CommonSettings
from common.errors import ServiceError
from common.logging import LogShipping, get_logger
from common.metrics import REQUEST_METRICS, request_metrics

T = TypeVar("T")
log = get_logger("common.web")

REQUEST_ID_HEADER = "X-Request-ID"
TRACE_HEADER = "X-Amzn-Trace-Id"
# A caller-supplied id is echoed into headers and logs: accept only a safe, bounded alphabet.
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:/+=@-]{1,128}\Z")
_TRACE_ROOT_RE = re.compile(r"(?:^|;)\s*Root=([A-Za-z0-9-]{1,64})")


class InFlight:
    """Counts requests being handled, so shutdown can wait until none is left."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        """A request started."""
        self.count += 1
        self._idle.clear()

    def exit(self) -> None:
        """A request finished."""
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float, force: asyncio.Event | None = None) -> bool:
        """True when every request finished within ``timeout`` (or until ``force`` is set)."""
        waits = [asyncio.ensure_future(self._idle.wait())]
        if force is not None:
            waits.append(asyncio.ensure_future(force.wait()))
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        return self._idle.is_set()


REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)


class ProbeCache:
    """A readiness probe's last answer, reused for ``ttl`` seconds: frequent ``/ready`` checks
    cost at most one AWS call per period."""

    def __init__(self, ttl: float = 5.0) -> None:
        self.ttl = ttl
        self._at: float | None = None
        self._reason: str | None = None

    async def answer(self, probe: Callable[[], Awaitable[str | None]]) -> str | None:
        """The cached reason (None: ready), probing again once it is older than ``ttl``."""
        now = time.monotonic()
        if self._at is None or now - self._at >= self.ttl:
            self._reason = await probe()
            self._at = now
        return self._reason


ReadinessCheck = Callable[[web.Application], Awaitable[str | None]]
"""Returns None when the service can do its work, else the reason it cannot."""

SETTINGS: web.AppKey[CommonSettings] = web.AppKey("common_settings", CommonSettings)
READINESS: web.AppKey[ReadinessCheck] = web.AppKey("readiness", ReadinessCheck)  # type: ignore[arg-type]
OPENAPI: web.AppKey[dict[str, Any]] = web.AppKey("openapi", dict)
SHUTTING_DOWN: web.AppKey[asyncio.Event] = web.AppKey("shutting_down", asyncio.Event)
IN_FLIGHT: web.AppKey[InFlight] = web.AppKey("in_flight", InFlight)
# The access line's logger, bound once when the app is built (after logging is configured): the
# one log call of every request skips the lazy proxy's per-call assembly.
ACCESS_LOG: web.AppKey[FilteringBoundLogger] = web.AppKey("access_log")

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
    """A JSON response serialised with orjson.

    A string orjson refuses (a lone surrogate, e.g. from a ``\\ud800`` escape in a JSON key that
    an error names) is written as a ``\\u`` escape by the standard library instead: an answer
    must never turn into aiohttp's plain-text 500.
    """
    try:
        body = orjson.dumps(data)
    except TypeError:
        body = json.dumps(data, ensure_ascii=True, default=str).encode()
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)


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


def _is_probe(request: web.Request) -> bool:
    """Health and readiness: they answer during shutdown and need no API key."""
    return request.match_info.route.handler in (_health, _ready)


def _is_open(request: web.Request) -> bool:
    """Routes that need no API key: the probes and the OpenAPI document."""
    return _is_probe(request) or request.match_info.route.handler is _openapi


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
    app = request.app
    in_flight = app[IN_FLIGHT]
    in_flight.enter()
    try:
        if app[SHUTTING_DOWN].is_set() and not _is_probe(request):
            # A new request on a kept-alive connection after shutdown began: refuse it cleanly.
            response = error_response(
                503, "shutting_down", "the service is shutting down; retry", request, retry_after=1
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
        if app[ACCESS_LOG].is_enabled_for(logging.INFO):
            _log_access(request, response, status, started)


def _log_access(
    request: web.Request, response: web.StreamResponse | None, status: int, started: float
) -> None:
    """The access line, with the request's EMF metrics when metrics are on."""
    latency_ms = round((time.perf_counter() - started) * 1000, 2)
    info = request.match_info.route.resource
    route = info.canonical if info is not None else "unmatched"
    bytes_out = 0
    if response is not None:
        bytes_out = response.body_length or (response.content_length or 0)
    fields: dict[str, Any] = {
        "method": request.method,
        "route": route,
        "path": request.path,
        "status": status,
        "latency_ms": latency_ms,
        # Content-Length when declared; for a chunked body, what was read of it.
        "bytes_in": (
            request.content_length
            if request.content_length is not None
            else request.content.total_bytes
        ),
        "bytes_out": bytes_out,
        "client_ip": _client_ip(request),
    }
    settings = request.app[SETTINGS]
    if settings.metrics:
        fields.update(
            request_metrics(
                settings.metrics_namespace,
                settings.service,
                route,
                status,
                latency_ms,
                request.get(REQUEST_METRICS, {}),
            )
        )
    request.app[ACCESS_LOG].info("request", **fields)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes the JSON error shape; internals never reach the caller."""
    try:
        return await handler(request)
    except ServiceError as exc:
        structlog.contextvars.bind_contextvars(error=exc.code)
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
        code = _HTTP_CODES.get(exc.status, f"http_{exc.status}")
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


async def _openapi(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI])


def create_base_app(
    settings: CommonSettings,
    readiness: ReadinessCheck,
    *,
    openapi: dict[str, Any] | None = None,
    client_max_size: int = 1024**2,
) -> web.Application:
    """The app skeleton every service builds on: middlewares (request context, JSON errors, API
    keys when configured), health, readiness and the OpenAPI document."""
    middlewares: list[Middleware] = [context_middleware, error_middleware]
    if settings.api_keys_sha256:
        middlewares.append(auth_middleware(settings.api_keys_sha256, _is_open))
    app = web.Application(middlewares=middlewares, client_max_size=client_max_size)
    app[SETTINGS] = settings
    app[READINESS] = readiness
    app[SHUTTING_DOWN] = asyncio.Event()
    app[IN_FLIGHT] = InFlight()
    app[ACCESS_LOG] = get_logger("common.web").bind()
    app.router.add_get("/health", _health, allow_head=True)
    app.router.add_get(f"{settings.base_path}/health", _health, allow_head=True)
    app.router.add_get(f"{settings.base_path}/ready", _ready, allow_head=True)
    if openapi is not None:
        app[OPENAPI] = openapi
        app.router.add_get(f"{settings.base_path}/openapi.json", _openapi)
    return app


# After the grace period, how long aiohttp waits for a handler it has cancelled (e.g. an upload
# aborting its multipart upload) before closing the app's clients.
CANCEL_WAIT = 2.0


class PortInUse(Exception):
    """The listening port is taken by another process."""


async def _serve(app: web.Application, settings: CommonSettings, logs: LogShipping | None) -> None:
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=CANCEL_WAIT)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        try:
            await site.start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse from exc
            raise
        log.info("listening", host=settings.host, port=settings.port, base_path=settings.base_path)
        stop, force = asyncio.Event(), asyncio.Event()

        def on_signal() -> None:
            # A second SIGINT/SIGTERM skips the rest of the grace period.
            (force if stop.is_set() else stop).set()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        await stop.wait()
        in_flight = app[IN_FLIGHT]
        log.info("shutdown_started", in_flight=in_flight.count, grace_s=settings.shutdown_grace)
        app[SHUTTING_DOWN].set()
        await site.stop()
        # aiohttp's own shutdown marks connections closing and from then on drops request bytes
        # still arriving (aio-libs/aiohttp#2298), so a streaming upload could never finish inside
        # its grace period. Drain here first, while bodies still flow.
        if await in_flight.wait_idle(settings.shutdown_grace, force):
            log.info("drained")
        else:
            log.warning("grace_expired", in_flight=in_flight.count)
    finally:
        # Closes connections, cancels what is left, then on_shutdown and the cleanup contexts.
        await runner.cleanup()
        log.info("stopped")
        # Last of all, so the shutdown's own lines reach CloudWatch too.
        if logs is not None:
            await logs.close()


def serve(app: web.Application, settings: CommonSettings, logs: LogShipping | None = None) -> None:
    """Run the app until SIGTERM/SIGINT, then shut down gracefully.

    On the signal: stop listening, refuse new requests on kept-alive connections (503
    ``shutting_down``), let in-flight requests finish for up to ``shutdown_grace`` seconds, then
    cancel what is left and run the cleanup contexts (flush, close clients). Exits 1 with a clear
    message when the port is taken.
    """
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        loop_factory = asyncio.new_event_loop
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(_serve(app, settings, logs))
    except PortInUse:
        log.error("port_in_use", port=settings.port)
        print(
            f"{settings.service}: port {settings.port} on {settings.host} is already in use; "
            "stop the other process or set PORT to a free port",
            file=sys.stderr,
        )
        sys.exit(1)
