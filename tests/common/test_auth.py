"""Optional API keys: only holders of a key get past the probes, and keys never reach the logs."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web

from common.app import create_base_app
from common.config import AwsSettings, ConfigError
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
    "header", [b"X-Api-Key: \xff", b"Authorization: Bearer caf\xe9"], ids=["api-key", "bearer"]
)
async def test_a_key_that_is_not_utf8_gets_401(
    aiohttp_client: Callable[..., Any], header: bytes
) -> None:
    """aiohttp decodes such header bytes as surrogates, which hashing the key could not encode
    (a 500 with a stack line, before): it is one more wrong key."""
    client = await aiohttp_client(make_app())
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(
        b"POST /demo/work HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n"
        + header
        + b"\r\n\r\n"
    )
    answer = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 401 ")
    assert b'"unauthorized"' in answer


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


@pytest.mark.parametrize("service", ["s3svc", "sqssvc"])
async def test_every_protected_route_of_both_services_needs_a_key(
    aiohttp_client: Callable[..., Any], service: str
) -> None:
    """Each real route of each service, walked from its router: 401 for missing, wrong, empty
    and prefix-of-valid keys; only health, ready, openapi.json and s3svc's upload page (with its
    files) answer without one."""
    from s3svc.app import create_app as create_s3
    from sqssvc.app import create_app as create_sqs
    from sqssvc.config import SqsSettings

    env = {"API_KEYS_SHA256": digest(KEY), "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    app = (
        create_s3(S3Settings.from_env(env))
        if service == "s3svc"
        else create_sqs(SqsSettings.from_env(env))
    )
    client = await aiohttp_client(app)
    bad = [
        {},
        {"Authorization": "Bearer nope"},
        {"X-Api-Key": ""},
        {"Authorization": f"Bearer {KEY[:5]}"},
    ]
    protected = 0
    for route in app.router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue
        path = route.resource.canonical
        page = path in ("/s3/", "/s3") or path.startswith("/s3/page/")
        open_route = page or path.endswith(("/health", "/ready", "/openapi.json"))
        for headers in bad:
            concrete = path.replace("{asset}", "page.js")  # the page's files: one real name
            resp = await client.request(route.method, concrete, headers=headers)
            if open_route:
                assert resp.status != 401, path
            else:
                assert resp.status == 401, (route.method, path, headers)
        protected += not open_route
    assert protected == (1 if service == "s3svc" else 2)
