"""Optional API keys: only holders of a key get past the probes, and keys never reach the logs."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web

from common.config import AwsSettings, ConfigError
from common.web import create_base_app
from s3svc.config import S3Settings
from tests.conftest import common_settings

KEY = "s3cr3t-key-0123456789"
OTHER = "another-valid-key"


def digest(key: str) -> str:
    """sha256 hex, as API_KEYS_SHA256 holds it."""
    return hashlib.sha256(key.encode()).hexdigest()


async def ready() -> None:
    """Always ready."""


def make_app() -> web.Application:
    """The base app with keys configured and one protected route."""
    settings = replace(
        common_settings("demo", AwsSettings(), "/demo"),
        api_keys_sha256=(digest(KEY), digest(OTHER)),
    )
    app = create_base_app(settings, lambda _: ready(), openapi={"openapi": "3.1.0"})

    async def work(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app.router.add_post("/demo/work", work)
    return app


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Bearer "},
        {"Authorization": f"Bearer {KEY[:-1]}"},  # a prefix of a valid key
        {"Authorization": f"Basic {KEY}"},
        {"X-Api-Key": ""},
        {"X-Api-Key": KEY + "x"},
    ],
    ids=["none", "wrong", "empty", "prefix", "basic", "empty-header", "longer"],
)
async def test_bad_keys_get_401(
    aiohttp_client: Callable[..., Any], headers: dict[str, str]
) -> None:
    """Missing, wrong, empty and prefix-of-valid keys are refused with the JSON error."""
    client = await aiohttp_client(make_app())
    for path in ("/demo/work", "/demo/unknown"):
        resp = await client.post(path, headers=headers)
        assert resp.status == 401
        body = await resp.json()
        assert body["error"] == "unauthorized"
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": f"Bearer {KEY}"}, {"X-Api-Key": OTHER}, {"authorization": f"bearer {KEY}"}],
)
async def test_valid_keys_pass(aiohttp_client: Callable[..., Any], headers: dict[str, str]) -> None:
    """Either header, any configured key."""
    client = await aiohttp_client(make_app())
    resp = await client.post("/demo/work", headers=headers)
    assert resp.status == 200


async def test_probes_and_openapi_stay_open(aiohttp_client: Callable[..., Any]) -> None:
    """Health, ready and the OpenAPI document need no key (the ALB has none)."""
    client = await aiohttp_client(make_app())
    for path in ("/health", "/demo/health", "/demo/ready", "/demo/openapi.json"):
        assert (await client.get(path)).status == 200, path


async def test_key_never_logged(
    aiohttp_client: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """Neither a valid nor a rejected key appears in any log line."""
    from common.logging import configure_logging

    configure_logging(common_settings("demo", AwsSettings(), "/demo"))
    client = await aiohttp_client(make_app())
    await client.post("/demo/work", headers={"Authorization": f"Bearer {KEY}"})
    await client.post("/demo/work", headers={"X-Api-Key": "rejected-key-value"})
    out = capsys.readouterr().out
    assert out.count('"event":"request"') == 2
    assert KEY not in out
    assert "rejected-key-value" not in out


def test_raw_keys_are_refused_as_config() -> None:
    """Putting a key instead of its digest in API_KEYS_SHA256 is a config error naming the fix."""
    with pytest.raises(ConfigError, match="sha256"):
        S3Settings.from_env({"API_KEYS_SHA256": KEY})
    ok = S3Settings.from_env({"API_KEYS_SHA256": f"{digest(KEY)}, {digest(OTHER).upper()}"})
    assert ok.common.api_keys_sha256 == (digest(KEY), digest(OTHER))
    assert digest(KEY) not in repr(ok.common)
