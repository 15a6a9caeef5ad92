"""How fast a request body must arrive, and the clock that enforces it on each read.

Pure asyncio: the upload engine and the body readers use it without the web layer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from common.config import CommonSettings
from common.errors import RequestTimeout

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Pace:
    """How fast a request body must arrive: no gap longer than ``idle_timeout`` seconds, and,
    once ``grace`` seconds were spent waiting for it, an average of at least ``min_rate``
    bytes/s (0: no minimum) over the time spent waiting."""

    idle_timeout: float
    min_rate: int = 0
    grace: float = 0.0

    @classmethod
    def of(cls, settings: CommonSettings) -> Pace:
        """The pace the service's settings ask for."""
        return cls(settings.body_idle_timeout, settings.body_min_rate, settings.body_rate_grace)


class BodyClock:
    """Times one request body's reads against its :class:`Pace`.

    Only the time spent waiting for the client counts (like Kestrel's
    ``MinRequestBodyDataRate``): while the service is busy elsewhere (S3 applying
    backpressure), the client is not to blame. A drip of a few bytes every second or two keeps
    an idle timeout from ever firing; the minimum rate cuts it off.
    """

    def __init__(self, pace: Pace) -> None:
        self.pace = pace
        self.waited = 0.0
        self.received = 0

    def _allowance(self) -> tuple[float, bool]:
        """Seconds the next read may wait, and whether the rate (not idleness) sets it."""
        idle = self.pace.idle_timeout
        if not self.pace.min_rate:
            return idle, False
        by_rate = self.pace.grace + self.received / self.pace.min_rate - self.waited
        if by_rate < idle:
            return max(0.0, by_rate), True
        return idle, False

    async def read(self, awaitable: Awaitable[T]) -> T:
        """Await one read of the body (a chunk, or the next part's headers): 408 when it takes
        longer than the idle timeout or than the minimum rate leaves."""
        allowance, by_rate = self._allowance()
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(allowance):
                return await awaitable
        except TimeoutError:
            if by_rate:
                raise RequestTimeout(
                    f"the request body arrived slower than {self.pace.min_rate} bytes/s; "
                    "the request was given up",
                    code="body_too_slow",
                ) from None
            raise RequestTimeout(
                f"no request body data for {self.pace.idle_timeout:g}s; the request was given up",
                code="body_timeout",
            ) from None
        finally:
            self.waited += loop.time() - started

    async def chunk(self, awaitable: Awaitable[bytes]) -> bytes:
        """:meth:`read` for a chunk of body bytes, which count towards the rate."""
        data = await self.read(awaitable)
        self.received += len(data)
        return data
