"""What sqssvc reads from a request before the domain code sees it: the JSON body (media type,
size limit, pace) and the ``Idempotency-Key`` header.

The web layer's half of ``/send`` and ``/send-batch``; ``sqssvc.messages`` parses and checks
what this module hands it and never sees a request.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from common.bodies import read_body, stated_type
from common.errors import BadRequest, UnsupportedMediaType
from common.idempotency import HEADER, parse_header
from common.pace import Pace
from sqssvc.messages import parse_json

_JSON_TYPES = ("application/json",)


async def read_json(request: web.Request, limit: int, pace: Pace) -> Any:
    """The request body as JSON: 415 unless ``application/json`` (or ``application/*+json``),
    400 unless valid UTF-8 JSON.

    The body is capped at ``limit`` bytes (413 beyond it) and read at ``pace``: 408 when the
    client stops sending (``BODY_IDLE_TIMEOUT``) or drips (``BODY_MIN_RATE``).
    """
    ctype = request.content_type
    if ctype not in _JSON_TYPES and not (
        ctype.startswith("application/") and ctype.endswith("+json")
    ):
        raise UnsupportedMediaType(
            f"expected Content-Type application/json, got {stated_type(request)}",
            code="unsupported_media_type",
        )
    raw = await read_body(request, limit, pace)
    return parse_json(raw)


def idempotency_key(request: web.Request) -> str | None:
    """The ``Idempotency-Key`` header's key, or None without one; 400 when it is sent more than
    once or is not 1-255 printable ASCII characters."""
    return parse_header(request.headers.getall(HEADER, []))


def no_idempotency_header(request: web.Request) -> None:
    """400 when a ``/send-batch`` request carries the header: its keys go in the items, and a
    header silently ignored would leave the caller believing its retry is safe."""
    if HEADER in request.headers:
        raise BadRequest(
            f"/send-batch takes an idempotency_key in each message, not the {HEADER} header",
            code="idempotency_key_not_allowed",
        )
