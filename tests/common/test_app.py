"""The app skeleton: health is liveness only, readiness reports its check's reason."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from common.app import create_base_app
from common.config import AwsSettings
from tests.conftest import common_settings


async def not_ready(_: web.Application) -> str | None:
    """A readiness check that always fails."""
    return "backend down"


async def ready(_: web.Application) -> str | None:
    """A readiness check that always passes."""
    return None


def make_app(readiness: Any) -> web.Application:
    """The bare skeleton with ``readiness`` as its check."""
    return create_base_app(common_settings("demo", AwsSettings(), "/demo"), readiness)


async def test_ready_and_health(aiohttp_client: Callable[..., Any]) -> None:
    """Health is liveness only; ready reports the readiness check's reason."""
    up = await aiohttp_client(make_app(ready))
    assert (await up.get("/demo/ready")).status == 200
    down = await aiohttp_client(make_app(not_ready))
    assert (await down.get("/health")).status == 200
    resp = await down.get("/demo/ready")
    assert resp.status == 503
    assert (await resp.json())["message"] == "backend down"
