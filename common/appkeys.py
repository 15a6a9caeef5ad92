"""The typed ``web.AppKey``s the shared HTTP layer keeps on every app, in one place."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.typedefs import Handler
from structlog.typing import FilteringBoundLogger

from common.config import CommonSettings

if TYPE_CHECKING:
    from common.server import InFlight

ReadinessCheck = Callable[[web.Application], Awaitable[str | None]]
"""Returns None when the service can do its work, else the reason it cannot."""

SETTINGS: web.AppKey[CommonSettings] = web.AppKey("common_settings", CommonSettings)
READINESS: web.AppKey[ReadinessCheck] = web.AppKey("readiness", ReadinessCheck)  # type: ignore[arg-type]
OPENAPI: web.AppKey[dict[str, Any]] = web.AppKey("openapi", dict)
# Handlers that need no API key beyond the probes and the document (a service's own web page).
PUBLIC_HANDLERS: web.AppKey[set[Handler]] = web.AppKey("public_handlers", set)
SHUTTING_DOWN: web.AppKey[asyncio.Event] = web.AppKey("shutting_down", asyncio.Event)
IN_FLIGHT: web.AppKey[InFlight] = web.AppKey("in_flight")
# The access line's logger, bound once when the app is built (after logging is configured): the
# one log call of every request skips the lazy proxy's per-call assembly.
ACCESS_LOG: web.AppKey[FilteringBoundLogger] = web.AppKey("access_log")
