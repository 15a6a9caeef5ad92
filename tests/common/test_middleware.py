"""The middlewares: request ids, JSON errors for everything, one access line per request."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

from common.app import create_base_app
from common.config import AwsSettings
from common.errors import Unavailable
from tests.conftest import common_settings


async def ready(_: web.Application) -> str | None:
    """A readiness check that always passes."""
    return None


def make_app() -> web.Application:
    """The base app with a few routes that misbehave on purpose."""
    app = create_base_app(common_settings("demo", AwsSettings(), "/demo"), ready)

    async def boom(_: web.Request) -> web.Response:
        raise RuntimeError("secret internals")

    async def busy(_: web.Request) -> web.Response:
        raise Unavailable("try later", code="overloaded", retry_after=3)

    async def echo(request: web.Request) -> web.Response:
        return web.json_response(await request.json())

    app.router.add_get("/demo/boom", boom)
    app.router.add_get("/demo/busy", busy)
    app.router.add_post("/demo/echo", echo)
    return app


async def test_request_id_is_taken_from_header(aiohttp_client: Callable[..., Any]) -> None:
    """A valid X-Request-ID is echoed back unchanged."""
    client = await aiohttp_client(make_app())
    resp = await client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert resp.headers["X-Request-ID"] == "abc-123"


async def test_request_id_falls_back_to_alb_trace_root(aiohttp_client: Callable[..., Any]) -> None:
    """Without X-Request-ID, the ALB's trace root identifies the request."""
    client = await aiohttp_client(make_app())
    trace = "Self=1-67891234-12456789abcdef012345678;Root=1-67891233-abcdef012345678912345678"
    resp = await client.get("/demo/health", headers={"X-Amzn-Trace-Id": trace})
    assert resp.headers["X-Request-ID"] == "1-67891233-abcdef012345678912345678"


async def test_unsafe_request_id_is_replaced(aiohttp_client: Callable[..., Any]) -> None:
    """A header value with spaces or control characters is not echoed into logs and headers."""
    client = await aiohttp_client(make_app())
    resp = await client.get("/health", headers={"X-Request-ID": "evil id; injected"})
    assert resp.headers["X-Request-ID"] != "evil id; injected"
    assert len(resp.headers["X-Request-ID"]) == 32


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/nope", 404, "not_found"),
        ("DELETE", "/health", 405, "method_not_allowed"),
        ("GET", "/demo/boom", 500, "internal_error"),
        ("GET", "/demo/busy", 503, "overloaded"),
    ],
)
async def test_errors_are_json(
    aiohttp_client: Callable[..., Any], method: str, path: str, status: int, code: str
) -> None:
    """Router errors, service errors and bugs all answer the same JSON shape."""
    client = await aiohttp_client(make_app())
    resp = await client.request(method, path)
    assert resp.status == status
    body = await resp.json()
    assert body["error"] == code
    assert body["message"]
    assert body["request_id"] == resp.headers["X-Request-ID"]
    assert "secret internals" not in json.dumps(body)


async def test_retry_after_on_503(aiohttp_client: Callable[..., Any]) -> None:
    """An overload error tells the caller when to retry."""
    client = await aiohttp_client(make_app())
    resp = await client.get("/demo/busy")
    assert resp.headers["Retry-After"] == "3"


async def test_body_over_client_max_size_is_413_json(aiohttp_client: Callable[..., Any]) -> None:
    """aiohttp's own body limit answers in our JSON shape too."""
    client = await aiohttp_client(make_app())
    resp = await client.post("/demo/echo", data=b"x" * (2 * 1024 * 1024))
    assert resp.status == 413
    assert (await resp.json())["error"] == "payload_too_large"


@pytest.mark.parametrize(
    ("forwarded", "logged"),
    [
        ("203.0.113.9, 10.0.0.1", "10.0.0.1"),
        ('10.9.8.7 admin {"level":"error"}, 2001:db8::7', "2001:db8::7"),
        ("203.0.113.9, not-an-address", "127.0.0.1"),
    ],
    ids=["alb-appended", "forged-first-entry", "no-address-last"],
)
async def test_client_ip_is_the_entry_the_alb_appended(
    aiohttp_client: Callable[..., Any],
    capsys: pytest.CaptureFixture[str],
    forwarded: str,
    logged: str,
) -> None:
    """The ALB appends the address it saw to what the client sent: only the last entry is its
    word (the first, logged before, was the client's, forgeable); a last entry that is no
    address is not the ALB's, and the peer is logged."""
    from common.logging import configure_logging

    configure_logging(common_settings("demo", AwsSettings(), "/demo"))
    client = await aiohttp_client(make_app())
    await client.get("/demo/busy", headers={"X-Forwarded-For": forwarded})
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    (line,) = [x for x in lines if x["event"] == "request"]
    assert line["client_ip"] == logged


async def test_one_access_line_per_request(
    aiohttp_client: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """Each request logs one JSON access line with route template, status and request id."""
    from common.logging import configure_logging

    configure_logging(common_settings("demo", AwsSettings(), "/demo"))
    client = await aiohttp_client(make_app())
    await client.get(
        "/demo/busy", headers={"X-Request-ID": "rid-1", "X-Forwarded-For": "203.0.113.9, 10.0.0.1"}
    )
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    access = [x for x in lines if x["event"] == "request"]
    assert len(access) == 1
    line = access[0]
    assert line["request_id"] == "rid-1"
    assert line["status"] == 503
    assert line["route"] == "/demo/busy"
    assert line["client_ip"] == "10.0.0.1"  # the entry the ALB appended, not the client's own
    assert line["service"] == "demo"
    assert line["latency_ms"] >= 0
    assert line["timestamp"].endswith("Z")


async def test_access_line_counts_a_chunked_body(
    aiohttp_client: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """With no Content-Length (chunked), bytes_in is what was read of the body."""
    from common.logging import configure_logging

    configure_logging(common_settings("demo", AwsSettings(), "/demo"))
    client = await aiohttp_client(make_app())
    payload = json.dumps({"x": "y" * 1000}).encode()

    async def chunks() -> Any:
        for i in range(0, len(payload), 100):
            yield payload[i : i + 100]

    resp = await client.post(
        "/demo/echo", data=chunks(), headers={"Content-Type": "application/json"}
    )
    assert resp.status == 200
    assert "Content-Length" not in resp.request_info.headers
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    (access,) = [x for x in lines if x["event"] == "request"]
    assert access["bytes_in"] == len(payload)


async def test_any_content_encoding_header_counts_and_only_a_body_is_refused(
    aiohttp_client: Callable[..., Any],
) -> None:
    """``identity`` then ``gzip`` in a second header is still a compressed body (415); a GET
    with a Content-Encoding header has no body to refuse."""
    client = await aiohttp_client(make_app())
    resp = await client.post(
        "/demo/echo",
        data=gzip.compress(b"{}"),
        headers=[("Content-Encoding", "identity"), ("Content-Encoding", "gzip")],
    )
    assert resp.status == 415
    assert (await resp.json())["error"] == "unsupported_content_encoding"
    assert (await client.get("/demo/health", headers={"Content-Encoding": "gzip"})).status == 200


@pytest.mark.parametrize("body", [gzip.compress(b"{}" * 100_000), b"not gzip"])
async def test_compressed_bodies_are_refused_before_reading(
    aiohttp_client: Callable[..., Any], body: bytes
) -> None:
    """A gzip body (valid or not) is 415 unsupported_content_encoding: aiohttp would inflate
    it on the fly, so a small body could turn into a huge one no size check saw coming."""
    client = await aiohttp_client(make_app())
    resp = await client.post(
        "/demo/echo",
        data=body,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert resp.status == 415
    answer = await resp.json()
    assert answer["error"] == "unsupported_content_encoding"
    assert answer["request_id"] == resp.headers["X-Request-ID"]
