"""The app skeleton every service builds on: its middlewares, health, readiness and the OpenAPI
document."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from common.appkeys import (
    ACCESS_LOG,
    IN_FLIGHT,
    OPENAPI,
    PUBLIC_HANDLERS,
    READINESS,
    SETTINGS,
    SHUTTING_DOWN,
    ReadinessCheck,
)
from common.auth import auth_middleware
from common.aws import Breaker, open_client
from common.config import AwsSettings, CommonSettings
from common.logging import get_logger
from common.middleware import context_middleware, error_middleware
from common.responses import error_response, json_response
from common.server import InFlight


class ProbeCache:
    """A readiness probe's last answer, reused for ``ttl`` seconds: frequent ``/ready`` checks
    cost at most one AWS call per period. Checks that find it stale share the one probe in
    flight (300 concurrent checks of a slow SQS made 243 calls, before)."""

    def __init__(self, ttl: float = 5.0) -> None:
        self.ttl = ttl
        self._at: float | None = None
        self._reason: str | None = None
        self._running: asyncio.Future[str | None] | None = None

    async def answer(self, probe: Callable[[], Awaitable[str | None]]) -> str | None:
        """The cached reason (None: ready), probing again once it is older than ``ttl``."""
        if self._at is not None and time.monotonic() - self._at < self.ttl:
            return self._reason
        if self._running is None:
            self._running = asyncio.ensure_future(self._refresh(probe))
        # Shielded: a check whose client left does not cancel the others' probe.
        return await asyncio.shield(self._running)

    async def _refresh(self, probe: Callable[[], Awaitable[str | None]]) -> str | None:
        try:
            self._reason = await probe()
            self._at = time.monotonic()
            return self._reason
        finally:
            self._running = None


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


def _is_probe(request: web.Request) -> bool:
    """Health and readiness: they answer during shutdown and need no API key."""
    return request.match_info.route.handler in (_health, _ready)


def _is_open(request: web.Request) -> bool:
    """Routes that need no API key: the probes, the OpenAPI document and ``add_public_get``'s."""
    handler = request.match_info.route.handler
    return _is_probe(request) or handler is _openapi or handler in request.app[PUBLIC_HANDLERS]


def add_public_get(app: web.Application, path: str, handler: Handler) -> None:
    """A GET (and HEAD) route that, like the probes, needs no API key: a page for people, whose
    own requests then carry the key."""
    app.router.add_get(path, handler, allow_head=True)
    app[PUBLIC_HANDLERS].add(handler)


def create_base_app(
    settings: CommonSettings,
    readiness: ReadinessCheck,
    *,
    openapi: dict[str, Any] | None = None,
    client_max_size: int = 1024**2,
) -> web.Application:
    """The app skeleton every service builds on: middlewares (request context, JSON errors, API
    keys when configured), health, readiness and the OpenAPI document."""
    middlewares: list[Middleware] = [context_middleware(_is_probe), error_middleware]
    if settings.api_keys_sha256:
        middlewares.append(auth_middleware(settings.api_keys_sha256, _is_open))
    app = web.Application(middlewares=middlewares, client_max_size=client_max_size)
    app[SETTINGS] = settings
    app[READINESS] = readiness
    app[SHUTTING_DOWN] = asyncio.Event()
    app[IN_FLIGHT] = InFlight()
    app[ACCESS_LOG] = get_logger("common.middleware").bind()
    app[PUBLIC_HANDLERS] = set()
    app.router.add_get("/health", _health, allow_head=True)
    app.router.add_get(f"{settings.base_path}/health", _health, allow_head=True)
    app.router.add_get(f"{settings.base_path}/ready", _ready, allow_head=True)
    if openapi is not None:
        app[OPENAPI] = openapi
        app.router.add_get(f"{settings.base_path}/openapi.json", _openapi)
    return app


def client_ctx(
    service: str, aws: AwsSettings, key: web.AppKey[Any], breaker: Breaker | None = None
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` entry that stores an open client under ``key`` for the app's lifetime,
    its calls guarded by ``breaker`` when given."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        async with open_client(service, aws) as client:
            if breaker is not None:
                breaker.attach(client)
            app[key] = client
            yield

    return ctx
