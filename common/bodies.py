"""Reading request bodies: ``100 Continue`` only once a request passed the checks that need no
body, and a whole body under a size limit, at the pace :mod:`common.pace` asks.

aiohttp answers ``Expect: 100-continue`` before any handler runs, so a client was told to send
a 10 GB body, or a text/plain one, only to be refused once it had. The body routes take
:func:`defer_continue` as their expect handler and call :func:`send_continue` when they are
about to read. aiohttp has no body timeout of its own, so a client trickling its body
(slow-loris) would otherwise hold a handler, and whatever it buffers, for ever.
"""

from __future__ import annotations

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11

from common.errors import PayloadTooLarge
from common.pace import BodyClock, Pace

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# Set when a request's 100 Continue waits for its handler, and once it was sent.
_DEFERRED: web.RequestKey[bool] = web.RequestKey("continue_deferred", bool)
_CONTINUED: web.RequestKey[bool] = web.RequestKey("continued", bool)


def stated_type(request: web.BaseRequest) -> str:
    """The Content-Type the client sent, for an error message: aiohttp reports a missing or
    unparsable one as ``application/octet-stream``, which the client never said."""
    raw = request.headers.get(hdrs.CONTENT_TYPE)
    return "no Content-Type" if raw is None else f"Content-Type {raw[:100]!r}"


async def defer_continue(request: web.Request) -> None:
    """A body route's expect handler: any expectation but ``100-continue`` (in any of the
    ``Expect`` headers) is 417, as with aiohttp's own, and ``100 Continue`` waits for
    :func:`send_continue`."""
    expected = {
        item.strip().lower()
        for value in request.headers.getall(hdrs.EXPECT, [])
        for item in value.split(",")
    }
    if expected != {"100-continue"}:
        raise web.HTTPExpectationFailed()
    if request.version == HttpVersion11:
        request[_DEFERRED] = True


def still_expected(request: web.BaseRequest) -> bool:
    """True when the client still waits for the ``100 Continue`` it was never sent: its answer
    must close the connection, or the client's next request on it would be read as this one's
    body (or the body, sent after all, as its next request)."""
    if hdrs.EXPECT not in request.headers:  # every request asks: the common answer is cheap
        return False
    deferred = request.get(_DEFERRED, False) and not request.get(_CONTINUED, False)
    return bool(deferred) and not request.content.at_eof()


async def send_continue(request: web.Request) -> None:
    """Tell a client that waits for ``100 Continue`` to send its body (once per request); a
    refusal before this call reaches the client before its body does."""
    if request.get(_DEFERRED, False) and not request.get(_CONTINUED, False):
        request[_CONTINUED] = True
        await request.writer.write(_CONTINUE)
        # As aiohttp's own expect handler: the response's byte count starts after this line.
        request.writer.output_size = 0


async def read_body(request: web.Request, limit: int, pace: Pace) -> bytes:
    """The whole request body, at most ``limit`` bytes (413 beyond, before any of it is asked
    for when Content-Length says so), read at ``pace`` (408 when the client stops sending or
    drips)."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise PayloadTooLarge(
            f"request body of {declared} bytes exceeds the limit of {limit} bytes",
            code="payload_too_large",
        )
    await send_continue(request)
    content = request.content
    clock = BodyClock(pace, lambda: content.total_bytes)
    chunks: list[bytes] = []
    size = 0
    while chunk := await clock.chunk(content.readany()):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"request body exceeds the limit of {limit} bytes", code="payload_too_large"
            )
        chunks.append(chunk)
    return b"".join(chunks)
