"""One connection, over a real socket to the app served as production serves it: what aiohttp's
parser refuses, and what it answers outside the middlewares, keeps the JSON error contract; a
request's headers must arrive within ``REQUEST_HEADERS_TIMEOUT``."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from common.app import create_base_app
from common.config import AwsSettings, CommonSettings
from common.logging import configure_logging
from common.server import listen, make_runner
from tests.conftest import common_settings

# Bytes that must never come back: each bad request below carries this marker where aiohttp's
# own answer would quote it.
MARK = b"zqmarkqz"
# How long a read may wait for the server at most: generous, only a hang hits it.
PATIENCE = 10.0
# The header timeout of the timeout tests, and how long they outwait it where nothing may be cut.
HEAD_TIMEOUT = 0.5
OUTWAIT = 3 * HEAD_TIMEOUT

# Set when the slow route's handler has begun.
SLOW_STARTED: web.AppKey[asyncio.Event] = web.AppKey("slow_started", asyncio.Event)


async def ready(_: web.Application) -> str | None:
    """A readiness check that always passes."""
    return None


async def failing_expect(_: web.Request) -> None:
    """An expect handler that fails: the error escapes outside the middlewares."""
    raise RuntimeError("secret internals")


def make_app(settings: CommonSettings) -> web.Application:
    """The base app with a body-reading route, a slow one (it answers ``OUTWAIT`` seconds after
    reading its body) and one whose expect handler fails."""
    app = create_base_app(settings, ready)
    app[SLOW_STARTED] = asyncio.Event()

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read())

    async def slow(request: web.Request) -> web.Response:
        request.app[SLOW_STARTED].set()
        body = await request.read()
        await asyncio.sleep(OUTWAIT)
        return web.Response(body=body)

    app.router.add_post("/demo/echo", echo)
    app.router.add_post("/demo/slow", slow)
    app.router.add_post("/demo/expect-fails", echo, expect_handler=failing_expect)
    return app


class Serve:
    """Starts the app as ``serve()`` does (``make_runner`` + ``listen``) on a free port, with
    settings overridden as given, and returns the port; ``app`` is the last app started."""

    def __init__(self) -> None:
        self.runners: list[web.AppRunner] = []
        self.app = web.Application()

    async def __call__(self, **overrides: Any) -> int:
        settings = common_settings("demo", AwsSettings(), "/demo", **overrides)
        configure_logging(settings)
        self.app = make_app(settings)
        runner = make_runner(self.app)
        await runner.setup()
        self.runners.append(runner)
        site = await listen(runner, settings)
        return site.port


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """A :class:`Serve`; every app it started is stopped after the test."""
    starter = Serve()
    yield starter
    for runner in starter.runners:
        await runner.cleanup()


@dataclass
class Answer:
    """A raw HTTP response as read off the socket."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        assert self.headers["content-type"].startswith("application/json")
        data: dict[str, Any] = json.loads(self.body)
        return data


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    """One response: status line, headers, then a Content-Length body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), PATIENCE)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), PATIENCE)
    return Answer(status, headers, body)


async def exchange(port: int, raw: bytes) -> tuple[Answer, asyncio.StreamReader]:
    """Send ``raw`` on a new connection and read one answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    answer = await read_answer(reader)
    writer.close()
    return answer, reader


def access_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """The access lines written so far."""
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    return [x for x in lines if x["event"] == "request"]


POST = b"POST /demo/echo HTTP/1.1\r\nHost: a\r\n"

REFUSED = {
    "negative Content-Length": (
        POST + b"Content-Length: -1\r\nX-Mark: " + MARK + b"\r\n\r\n",
        400,
        "invalid_framing",
    ),
    "Content-Length and Transfer-Encoding": (
        POST + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\nX-" + MARK + b": 1\r\n\r\n"
        b"0\r\n\r\n",
        400,
        "invalid_framing",
    ),
    "Content-Length twice": (
        POST + b"Content-Length: 1\r\nContent-Length: 2\r\nX-" + MARK + b": 1\r\n\r\nab",
        400,
        "invalid_framing",
    ),
    "header line without a colon": (
        b"GET /health HTTP/1.1\r\nHost: a\r\n" + MARK + b" no colon\r\n\r\n",
        400,
        "invalid_header",
    ),
    "control character in a header value": (
        b"GET /health HTTP/1.1\r\nHost: a\r\nX-A: " + MARK + b"\x00\r\n\r\n",
        400,
        "invalid_header",
    ),
    "header line over 8190 bytes": (
        b"GET /health HTTP/1.1\r\nHost: a\r\nX-Long: " + MARK * 1200 + b"\r\n\r\n",
        431,
        "request_header_too_large",
    ),
    "more than 128 headers": (
        b"GET /health HTTP/1.1\r\nHost: a\r\n"
        + b"".join(b"X-%d: %s\r\n" % (i, MARK) for i in range(200))
        + b"\r\n",
        431,
        "request_header_too_large",
    ),
    "request line over 8190 bytes": (
        b"GET /" + MARK * 1200 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
        431,
        "request_header_too_large",
    ),
    "unknown HTTP version": (
        b"GET /" + MARK + b" HTTP/7.0\r\nHost: a\r\n\r\n",
        400,
        "invalid_request_line",
    ),
    "invalid method": (
        b"G<" + MARK + b" / HTTP/1.1\r\nHost: a\r\n\r\n",
        400,
        "invalid_request_line",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_parser_refusal_is_json(
    serve: Serve, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    """A request aiohttp's parser refuses is answered in the JSON error shape with a stable
    code and the right status, quotes none of its bytes, closes the connection and leaves one
    access line."""
    raw, status, code = REFUSED[case]
    port = await serve()
    answer, reader = await exchange(port, raw)
    assert answer.status == status
    body = answer.json()
    assert body["error"] == code
    assert body["message"]
    assert body["request_id"] == answer.headers["x-request-id"]
    assert MARK not in answer.body
    assert await asyncio.wait_for(reader.read(), PATIENCE) == b""
    (line,) = access_lines(capsys)
    assert (line["status"], line["error"], line["route"]) == (status, code, "unparsed")
    assert line["request_id"] == body["request_id"]


@pytest.mark.parametrize(
    "raw",
    [b"GET /health HTTP/2.0\r\nHost: a\r\n\r\n", b"GET /health\r\n\r\n"],
    ids=["HTTP/2.0", "HTTP/0.9"],
)
async def test_a_version_other_than_http_1_is_refused(
    serve: Serve, capsys: pytest.CaptureFixture[str], raw: bytes
) -> None:
    """aiohttp's parser takes HTTP/2.0 and HTTP/0.9 request lines (and answered them 200):
    400 ``invalid_request_line``, as docs/api.md says, and the connection closes."""
    port = await serve()
    answer, reader = await exchange(port, raw)
    assert answer.status == 400
    assert answer.json()["error"] == "invalid_request_line"
    assert await asyncio.wait_for(reader.read(), PATIENCE) == b""
    (line,) = access_lines(capsys)
    assert (line["status"], line["error"]) == (400, "invalid_request_line")


async def test_unknown_expect_is_417_json(serve: Serve, capsys: pytest.CaptureFixture[str]) -> None:
    """An Expect value other than 100-continue is refused by aiohttp before the middlewares
    run; the answer is still the JSON shape, without the value, and logged."""
    port = await serve()
    raw = POST + b"Expect: " + MARK + b"\r\nContent-Length: 0\r\nX-Request-ID: rid-417\r\n\r\n"
    answer, _ = await exchange(port, raw)
    assert answer.status == 417
    body = answer.json()
    assert (body["error"], body["request_id"]) == ("expectation_failed", "rid-417")
    assert answer.headers["x-request-id"] == "rid-417"
    assert MARK not in answer.body
    (line,) = access_lines(capsys)
    assert (line["status"], line["error"], line["route"]) == (
        417,
        "expectation_failed",
        "/demo/echo",
    )


async def test_error_outside_the_middlewares_is_json_without_internals(
    serve: Serve, capsys: pytest.CaptureFixture[str]
) -> None:
    """An exception that escapes the app outside the middlewares (here the route's expect
    handler) answers 500 internal_error in the JSON shape; no traceback, no exception text."""
    port = await serve()
    raw = b"POST /demo/expect-fails HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
    answer, _ = await exchange(port, raw + b"Content-Length: 0\r\nX-Request-ID: rid-500\r\n\r\n")
    assert answer.status == 500
    assert answer.json() == {
        "error": "internal_error",
        "message": "internal error; the request id identifies it in the logs",
        "request_id": "rid-500",
    }
    assert b"secret" not in answer.body
    assert b"Traceback" not in answer.body
    (line,) = access_lines(capsys)
    assert (line["status"], line["error"]) == (500, "internal_error")


@pytest.mark.parametrize("encoding", ["gzip", "GZIP", "deflate", "br", "zstd", "x-unknown"])
async def test_a_compressed_body_is_415_unread_and_logs_no_error(
    serve: Serve, capsys: pytest.CaptureFixture[str], encoding: str
) -> None:
    """Any Content-Encoding is ``415 unsupported_content_encoding``, on the connection's first
    request and its second: aiohttp never decodes a body, so ``br`` or ``zstd`` (no module here)
    is not refused 400 before the middlewares, and a body that is not what its encoding says
    (read off when the connection lingers) is not logged as an unhandled exception."""
    port = await serve()
    body = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03not really " + MARK
    request = (
        POST + f"Content-Encoding: {encoding}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    ) + body
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request * 2)
    await writer.drain()
    answers = [await read_answer(reader), await read_answer(reader)]
    writer.close()
    for answer in answers:
        assert answer.status == 415
        assert answer.json()["error"] == "unsupported_content_encoding"
    await asyncio.sleep(0.2)  # anything the connection logs after its answers
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert [x["status"] for x in lines if x["event"] == "request"] == [415, 415]
    assert not [x for x in lines if x["level"] in ("error", "critical")], lines


async def test_good_requests_still_pass(serve: Serve) -> None:
    """The connection changes nothing for a valid request, kept alive or with 100-continue."""
    port = await serve()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(POST + b"Content-Length: 2\r\n\r\nhi")
    first = await read_answer(reader)
    writer.write(POST + b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), PATIENCE) == (
        b"HTTP/1.1 100 Continue\r\n\r\n"
    )
    writer.write(b"yo")
    second = await read_answer(reader)
    writer.close()
    assert (first.status, first.body, second.status, second.body) == (200, b"hi", 200, b"yo")


async def assert_timed_out(reader: asyncio.StreamReader) -> dict[str, Any]:
    """The server answers ``408 request_header_timeout`` and closes; returns the body."""
    answer = await read_answer(reader)
    assert answer.status == 408
    body = answer.json()
    assert body["error"] == "request_header_timeout"
    assert body["request_id"] == answer.headers["x-request-id"]
    assert answer.headers["connection"] == "close"
    assert await asyncio.wait_for(reader.read(), PATIENCE) == b""
    return body


async def test_unfinished_head_is_closed_with_408(
    serve: Serve, capsys: pytest.CaptureFixture[str]
) -> None:
    """Headers that stop before their end are given up after the header timeout: 408 in the
    JSON shape, the connection closed, one access line."""
    port = await serve(request_headers_timeout=HEAD_TIMEOUT)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: a\r\nX-Slow: ")
    body = await assert_timed_out(reader)
    writer.close()
    (line,) = access_lines(capsys)
    assert (line["status"], line["error"], line["route"]) == (
        408,
        "request_header_timeout",
        "unparsed",
    )
    assert line["request_id"] == body["request_id"]


async def test_silent_connection_is_closed(serve: Serve) -> None:
    """A connection that sends nothing is closed after the header timeout, without an answer."""
    port = await serve(request_headers_timeout=HEAD_TIMEOUT)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await asyncio.wait_for(reader.read(), PATIENCE) == b""
    writer.close()


async def test_many_unfinished_heads_are_all_closed(serve: Serve) -> None:
    """A hundred connections that never finish their headers are all closed."""
    port = await serve(request_headers_timeout=HEAD_TIMEOUT)

    async def unfinished() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /demo/echo HTTP/1.1\r\nHost: a\r\nContent-Le")
        # A reset is closed all the same: on a loaded machine the timer can fire before the
        # server's loop has read the partial head, and a close with unread bytes is a reset.
        with contextlib.suppress(ConnectionResetError):
            await assert_timed_out(reader)
        writer.close()

    await asyncio.gather(*(unfinished() for _ in range(100)))


async def test_body_and_slow_response_do_not_count(serve: Serve) -> None:
    """Once the headers are complete the timer stops: a body that starts late and a response
    that takes longer than the header timeout are not cut."""
    port = await serve(request_headers_timeout=HEAD_TIMEOUT)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /demo/slow HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n")
    await asyncio.sleep(OUTWAIT)
    writer.write(b"hi")
    answer = await read_answer(reader)
    writer.close()
    assert (answer.status, answer.body) == (200, b"hi")


async def test_idle_kept_alive_connection_is_not_cut(serve: Serve) -> None:
    """Between requests a kept-alive connection is idle, which the keep-alive timeout governs:
    the next request, sent after more than the header timeout, is answered."""
    port = await serve(request_headers_timeout=HEAD_TIMEOUT)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
    first = await read_answer(reader)
    await asyncio.sleep(OUTWAIT)
    writer.write(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
    second = await read_answer(reader)
    writer.close()
    assert (first.status, second.status) == (200, 200)


async def test_pipelined_unfinished_head_is_closed_after_the_response(serve: Serve) -> None:
    """Part of a next request that arrives while one is handled gets the header timeout once
    that response is sent: the response arrives whole, then 408."""
    port = await serve(request_headers_timeout=HEAD_TIMEOUT)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /demo/slow HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
    # Only once the first request is being handled, so the two never arrive in one read.
    await asyncio.wait_for(serve.app[SLOW_STARTED].wait(), PATIENCE)
    writer.write(b"GET /health HTTP/1.1\r\nHost: a\r\nX-Slow: ")
    first = await read_answer(reader)
    assert (first.status, first.body) == (200, b"hi")
    await assert_timed_out(reader)
    writer.close()


async def test_unfinished_head_on_kept_alive_connection_is_closed(serve: Serve) -> None:
    """On a kept-alive connection the timer starts with the next request's first byte: a request
    begun after an idle spell and never finished gets 408."""
    port = await serve(request_headers_timeout=HEAD_TIMEOUT)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (await read_answer(reader)).status == 200
    await asyncio.sleep(OUTWAIT)
    writer.write(b"GET /health HTTP/1.1\r\nHo")
    await assert_timed_out(reader)
    writer.close()
