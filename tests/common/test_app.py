"""The app skeleton: health is liveness only, readiness reports its check's reason."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web

from common.app import ProbeCache, create_base_app
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


async def test_stale_readiness_checks_share_one_probe() -> None:
    """Concurrent checks that find the answer stale wait for one probe (each started its own
    before: a flood of /ready made one AWS call per request); the next period probes again."""
    cache = ProbeCache(ttl=60)
    calls = 0
    release = asyncio.Event()

    async def probe() -> str | None:
        nonlocal calls
        calls += 1
        await release.wait()
        return "not yet"

    checks = [asyncio.create_task(cache.answer(probe)) for _ in range(50)]
    await asyncio.sleep(0)
    checks[0].cancel()  # a client gone does not cancel the others' probe
    release.set()
    answers = await asyncio.gather(*checks[1:])
    assert answers == ["not yet"] * 49
    assert calls == 1
    assert await cache.answer(probe) == "not yet"  # fresh: no new probe
    assert calls == 1
