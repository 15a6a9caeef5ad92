"""Reading a whole request body under a size limit, at the pace :mod:`common.pace` asks.

aiohttp has no body timeout of its own, so a client trickling its body (slow-loris) would
otherwise hold a handler, and whatever it buffers, for ever.
"""

from __future__ import annotations

from aiohttp import StreamReader

from common.errors import PayloadTooLarge
from common.pace import BodyClock, Pace


async def read_body(content: StreamReader, declared: int | None, limit: int, pace: Pace) -> bytes:
    """The whole request body, at most ``limit`` bytes (413 beyond), read at ``pace`` (408 when
    the client stops sending or drips)."""
    if declared is not None and declared > limit:
        raise PayloadTooLarge(
            f"request body of {declared} bytes exceeds the limit of {limit} bytes",
            code="payload_too_large",
        )
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
