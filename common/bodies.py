"""Reading request bodies under a size limit and an idle timeout.

aiohttp has no body timeout of its own, so a client trickling its body (slow-loris) would
otherwise hold a handler, and whatever it buffers, for ever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from aiohttp import StreamReader

from common.errors import PayloadTooLarge, RequestTimeout

T = TypeVar("T")


async def body_read(awaitable: Awaitable[T], seconds: float) -> T:
    """Await one read of a request body, giving up with 408 after ``seconds`` without data.

    aiohttp has no body timeout of its own, so a client trickling its body (slow-loris) would
    otherwise hold a handler, and whatever it buffers, for ever.
    """
    try:
        async with asyncio.timeout(seconds):
            return await awaitable
    except TimeoutError:
        raise RequestTimeout(
            f"no request body data for {seconds:g}s; the request was given up", code="body_timeout"
        ) from None


async def read_body(
    content: StreamReader, declared: int | None, limit: int, idle_timeout: float
) -> bytes:
    """The whole request body, at most ``limit`` bytes (413 beyond), each read under the idle
    timeout (408 when the client stops sending)."""
    if declared is not None and declared > limit:
        raise PayloadTooLarge(
            f"request body of {declared} bytes exceeds the limit of {limit} bytes",
            code="payload_too_large",
        )
    chunks: list[bytes] = []
    size = 0
    while chunk := await body_read(content.readany(), idle_timeout):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"request body exceeds the limit of {limit} bytes", code="payload_too_large"
            )
        chunks.append(chunk)
    return b"".join(chunks)
