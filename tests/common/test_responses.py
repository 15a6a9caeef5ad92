"""The JSON answers: whatever an error names, the body stays the JSON error shape."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from common.app import create_base_app
from common.config import AwsSettings
from common.errors import ServiceError
from tests.conftest import common_settings


async def ready(_: web.Application) -> str | None:
    """A readiness check that always passes."""
    return None


async def test_error_naming_a_lone_surrogate_is_still_json(
    aiohttp_client: Callable[..., Any],
) -> None:
    """orjson refuses a lone surrogate; the answer is still the JSON error shape, the surrogate
    replaced by U+FFFD (its escape, written before, is refused by strict parsers)."""
    app = create_base_app(common_settings("demo", AwsSettings(), "/demo"), ready)

    async def unencodable(_: web.Request) -> web.Response:
        # What a validator does when it names a JSON key that was a lone surrogate escape.
        raise ServiceError(
            "unknown field '\\ud800'",
            code="unknown_field",
            status=422,
            details={"field": "$.\ud800"},
        )

    app.router.add_get("/demo/unencodable", unencodable)
    client = await aiohttp_client(app)
    resp = await client.get("/demo/unencodable")
    assert resp.status == 422
    assert resp.content_type == "application/json"
    body = json.loads(await resp.read())
    assert (body["error"], body["field"]) == ("unknown_field", "$.\ufffd")
    assert body["request_id"] == resp.headers["X-Request-ID"]
