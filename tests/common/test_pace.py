"""The body clock: idle gaps, the minimum rate, and the cap on what a burst can bank."""

from __future__ import annotations

import asyncio

import pytest

from common.errors import RequestTimeout
from common.pace import BodyClock, Pace


class Body:
    """A body whose bytes arrive when the test feeds them."""

    def __init__(self) -> None:
        self.total = 0
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        self.queue.put_nowait(data)

    async def read(self) -> bytes:
        return await self.queue.get()


async def test_a_burst_banks_at_most_the_grace_period() -> None:
    """60 MiB at once, then silence: with a 0.2 s grace and 240 B/s the next read is cut off
    after about 0.2 s, not after the days a running average would allow."""
    body = Body()
    clock = BodyClock(Pace(idle_timeout=3600, min_rate=240, grace=0.2), lambda: body.total)
    body.feed(b"x" * 60 * 1024 * 1024)
    await clock.chunk(body.read())
    with pytest.raises(RequestTimeout) as caught:
        await asyncio.wait_for(clock.chunk(body.read()), 30)  # hang guard only
    assert caught.value.code == "body_too_slow"


async def test_bytes_at_the_rate_keep_the_body_alive() -> None:
    """Enough bytes before each wait runs out: never cut off."""
    body = Body()
    clock = BodyClock(Pace(idle_timeout=3600, min_rate=1000, grace=0.5), lambda: body.total)
    for _ in range(5):
        body.feed(b"x" * 1000)  # one second of credit each, capped at the grace period
        await clock.chunk(body.read())
    assert clock.credit > 0


async def test_idleness_is_body_timeout() -> None:
    body = Body()
    clock = BodyClock(Pace(idle_timeout=0.05), lambda: body.total)
    with pytest.raises(RequestTimeout) as caught:
        await clock.chunk(body.read())
    assert caught.value.code == "body_timeout"
