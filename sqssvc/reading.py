"""What sqssvc reads from a request before the domain code sees it: the JSON body (media type,
size limit, idle timeout).

The web layer's half of ``/send`` and ``/send-batch``; ``sqssvc.messages`` parses and checks
what this module hands it and never sees a request.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from common.bodies import read_body
from common.errors import UnsupportedMediaType
from sqssvc.messages import parse_json

_JSON_TYPES = ("application/json",)


async def read_json(request: web.Request, limit: int, idle_timeout: float) -> Any:
    """The request body as JSON: 415 unless ``application/json`` (or ``application/*+json``),
    400 unless valid UTF-8 JSON.

    The body is capped at ``limit`` bytes (413 beyond it) and given up after ``idle_timeout``
    seconds without data (408).
    """
    ctype = request.content_type
    if ctype not in _JSON_TYPES and not (
        ctype.startswith("application/") and ctype.endswith("+json")
    ):
        raise UnsupportedMediaType(
            f"expected Content-Type application/json, got {ctype!r}", code="unsupported_media_type"
        )
    raw = await read_body(request.content, request.content_length, limit, idle_timeout)
    return parse_json(raw)
