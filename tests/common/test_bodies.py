"""Request bodies: ``100 Continue`` only once a request passed the checks that need no body, and
a whole body read under its limit. Over a real socket, byte by byte as a client sees it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from common.app import create_base_app
from common.bodies import defer_continue, read_body, stated_type
from common.config import AwsSettings
from common.errors import UnsupportedMediaType
from common.pace import Pace
from tests.conftest import common_settings

LIMIT = 10
# How long a read may wait for the server at most: only a hang hits it.
PATIENCE = 10.0


def make_app() -> web.Application:
    """The base app (its middlewares answer the errors) with one body route as the services
    register theirs: text/plain bodies of at most LIMIT."""
    settings = common_settings("demo", AwsSettings(), "/demo")
    pace = Pace.of(settings)

    async def echo(request: web.Request) -> web.Response:
        if request.content_type != "text/plain":
            raise UnsupportedMediaType("text/plain only", code="unsupported_media_type")
        return web.Response(body=await read_body(request, LIMIT, pace))

    async def ready(_: web.Application) -> str | None:
        return None

    app = create_base_app(settings, ready)
    app.router.add_post("/demo/echo", echo, expect_handler=defer_continue)
    return app


async def head_of_answer(reader: asyncio.StreamReader) -> str:
    """The first status line the server sends, with its headers."""
    return (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), PATIENCE)).decode("latin-1")


async def ask(port: int, headers: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
    """Send a request's head only, as a client waiting for ``100 Continue`` does."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST /demo/echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n{headers}\r\n".encode()
    )
    await writer.drain()
    return reader, writer, await head_of_answer(reader)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (f"Content-Type: text/plain\r\nContent-Length: {LIMIT + 1}\r\n", "413"),
        ("Content-Type: application/json\r\nContent-Length: 2\r\n", "415"),
    ],
    ids=["too-large", "wrong-type"],
)
async def test_a_refused_body_is_refused_before_the_client_sends_it(
    aiohttp_server: Callable[..., Any], headers: str, status: str
) -> None:
    """Content-Length over the limit, a media type the route refuses: the first answer is the
    refusal, not ``100 Continue``, so the client never sends the body."""
    server = await aiohttp_server(make_app())
    reader, writer, head = await ask(server.port, headers)
    assert head.startswith(f"HTTP/1.1 {status} "), head
    # The client was never asked for its body: the connection ends with this answer, so its
    # next request cannot be read as that body (nor the body, sent after all, as a request).
    assert "\r\nConnection: close\r\n" in head
    writer.write(b"GET /demo/health HTTP/1.1\r\nHost: x\r\n\r\n")
    rest = await asyncio.wait_for(reader.read(), PATIENCE)
    writer.close()
    assert b"HTTP/1.1 200" not in rest


async def test_a_good_request_is_told_to_continue_then_read(
    aiohttp_server: Callable[..., Any],
) -> None:
    """A request that passes is told ``100 Continue`` once, and its body is then read whole."""
    server = await aiohttp_server(make_app())
    reader, writer, head = await ask(
        server.port, "Content-Type: text/plain\r\nContent-Length: 5\r\n"
    )
    assert head == "HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"hello")
    final = await head_of_answer(reader)
    body = await asyncio.wait_for(reader.readexactly(5), PATIENCE)
    writer.close()
    assert final.startswith("HTTP/1.1 200 "), final
    assert body == b"hello"


@pytest.mark.parametrize(
    "expect", ["Expect: tea", "Expect: 100-continue, tea", "Expect: 100-continue\r\nExpect: tea"]
)
async def test_another_expectation_is_417(aiohttp_server: Callable[..., Any], expect: str) -> None:
    """Any expectation but ``100-continue``, in any of the ``Expect`` headers: 417, as
    aiohttp's own expect handler answers the first."""
    server = await aiohttp_server(make_app())
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        f"POST /demo/echo HTTP/1.1\r\nHost: x\r\n{expect}\r\nContent-Length: 0\r\n\r\n".encode()
    )
    head = await head_of_answer(reader)
    writer.close()
    assert head.startswith("HTTP/1.1 417 "), head


@pytest.mark.parametrize(
    ("headers", "said"),
    [
        ({}, "no Content-Type"),
        ({"Content-Type": ";;;"}, "Content-Type ';;;'"),
        ({"Content-Type": "text/plain"}, "Content-Type 'text/plain'"),
    ],
)
def test_stated_type_names_what_the_client_sent(headers: dict[str, str], said: str) -> None:
    """Not aiohttp's application/octet-stream for a missing or unparsable type."""
    assert stated_type(make_mocked_request("POST", "/", headers=headers)) == said
