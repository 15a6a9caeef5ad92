"""How fast a request body must arrive, and the clock that enforces it on each read.

Pure asyncio: the upload engine and the body readers use it without the web layer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from common.config import CommonSettings
from common.errors import RequestTimeout

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Pace:
    """How fast a request body must arrive: no gap longer than ``idle_timeout`` seconds, and,
    once ``grace`` seconds were spent waiting for it, at least ``min_rate`` bytes/s (0: no
    minimum) over the time spent waiting, with at most ``grace`` seconds banked by a burst."""

    idle_timeout: float
    min_rate: int = 0
    grace: float = 0.0

    @classmethod
    def of(cls, settings: CommonSettings) -> Pace:
        """The pace the service's settings ask for."""
        return cls(settings.body_idle_timeout, settings.body_min_rate, settings.body_rate_grace)


# Seconds of credit a burst can bank at least, whatever the grace period (see BodyClock).
MIN_CREDIT = 1.0


class BodyClock:
    """Times one request body's reads against its :class:`Pace`.

    Only the time spent waiting for the client counts (like Kestrel's
    ``MinRequestBodyDataRate``): while the service is busy elsewhere (S3 applying
    backpressure), the client is not to blame. A drip of a few bytes every second or two keeps
    an idle timeout from ever firing; the minimum rate cuts it off.

    The rate is kept as a credit of waiting time: it starts at the grace period, each second
    spent waiting spends a second, and each byte received earns ``1 / min_rate`` seconds, up to
    at most the grace period (or ``MIN_CREDIT``). A running average would let a fast burst buy
    hours for a drip that follows (60 MiB at 240 B/s is three days); the cap makes the rule
    hold over every stretch of the body. ``progress`` reports the body bytes received so far,
    framing included (aiohttp's ``StreamReader.total_bytes``); without it, the chunks read
    through :meth:`chunk` count.
    """

    def __init__(self, pace: Pace, progress: Callable[[], int] | None = None) -> None:
        self.pace = pace
        self.progress = progress
        self.cap = max(pace.grace, MIN_CREDIT)
        self.credit = pace.grace
        self.counted = progress() if progress is not None else 0

    def _earn(self, chunk_bytes: int) -> None:
        if self.progress is not None:
            total = self.progress()
            received, self.counted = total - self.counted, total
        else:
            received = chunk_bytes
        if self.pace.min_rate:
            self.credit = min(self.cap, self.credit + received / self.pace.min_rate)

    def _allowance(self) -> tuple[float, bool]:
        """Seconds the next read may wait, and whether the rate (not idleness) sets it."""
        idle = self.pace.idle_timeout
        if not self.pace.min_rate or self.credit >= idle:
            return idle, False
        return max(0.0, self.credit), True

    async def read(self, awaitable: Awaitable[T]) -> T:
        """Await one read of the body (a chunk, or the next part's headers): 408 when it takes
        longer than the idle timeout or than the minimum rate leaves."""
        allowance, by_rate = self._allowance()
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(allowance):
                result = await awaitable
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
            self.credit -= loop.time() - started
        self._earn(len(result) if isinstance(result, bytes) else 0)
        return result

    async def chunk(self, awaitable: Awaitable[bytes]) -> bytes:
        """:meth:`read` for a chunk of body bytes."""
        return await self.read(awaitable)
