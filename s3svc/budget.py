"""Process-wide byte budgets with first-come-first-served, bounded waits.

Uploads reserve memory from two budgets (see :mod:`s3svc.upload`): small buffers byte by byte,
and part buffers a whole part at a time. A reservation that cannot be had within ``wait``
seconds fails with ``503 busy``: under overload callers are told to come back, never left
hanging. A :class:`Meter` shared by budgets counts what they hold together.
"""

from __future__ import annotations

import asyncio
from collections import deque

from common.errors import Unavailable

# Seconds a caller whose reservation timed out is told to wait before retrying.
BUSY_RETRY_AFTER = 5


class Meter:
    """Bytes held across several budgets, and the most ever held at once."""

    def __init__(self) -> None:
        self.used = 0
        self.peak = 0

    def add(self, n: int) -> None:
        """Count ``n`` more bytes held (negative: released)."""
        self.used += n
        self.peak = max(self.peak, self.used)


class MemoryBudget:
    """``acquire(n)`` waits (at most ``wait`` seconds) until ``n`` more bytes fit under ``limit``."""

    def __init__(self, limit: int, wait: float, meter: Meter | None = None) -> None:
        self.limit = limit
        self.wait = wait
        self.meter = meter or Meter()
        self.used = 0
        self.peak = 0
        self._waiters: deque[tuple[int, asyncio.Future[None], float]] = deque()

    @property
    def waiting(self) -> bool:
        """True while some reservation waits: the budget is exhausted for now."""
        return any(not fut.done() for _, fut, _ in self._waiters)

    def longest_wait(self) -> float:
        """Seconds the oldest reservation still waiting has waited (0: none waits)."""
        now = asyncio.get_running_loop().time()
        return max((now - since for _, fut, since in self._waiters if not fut.done()), default=0.0)

    async def acquire(self, n: int) -> None:
        """Reserve ``n`` bytes; ``Unavailable`` (503 ``busy``) when they do not fit in time."""
        if n > self.limit:
            raise ValueError(f"cannot reserve {n} bytes from a budget of {self.limit}")
        if not self._waiters and self.used + n <= self.limit:
            self._take(n)
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append((n, fut, loop.time()))
        try:
            async with asyncio.timeout(self.wait):
                await fut
        except BaseException as exc:
            if fut.done() and not fut.cancelled():
                # Granted just as the wait ended: hand the bytes back.
                self.release(n)
            else:
                fut.cancel()
                self._wake()
            if isinstance(exc, TimeoutError):
                raise Unavailable(
                    "the service's upload memory is in use by other uploads; retry shortly",
                    code="busy",
                    retry_after=BUSY_RETRY_AFTER,
                ) from None
            raise

    def try_acquire(self, n: int) -> bool:
        """Reserve ``n`` bytes if they fit now, without waiting (and without jumping a queue)."""
        if self._waiters or self.used + n > self.limit:
            return False
        self._take(n)
        return True

    def release(self, n: int) -> None:
        """Return ``n`` bytes and wake the waiters that now fit, in arrival order."""
        self.used -= n
        self.meter.add(-n)
        self._wake()

    def _take(self, n: int) -> None:
        self.used += n
        self.peak = max(self.peak, self.used)
        self.meter.add(n)

    def _wake(self) -> None:
        while self._waiters:
            n, fut, _ = self._waiters[0]
            if fut.done():
                self._waiters.popleft()
                continue
            if self.used + n > self.limit:
                break
            self._waiters.popleft()
            self._take(n)
            fut.set_result(None)


class Hold:
    """Bytes one owner holds in a :class:`MemoryBudget`: grown as needed, released once.

    A hold can change hands (a block's hold goes with its part to the task that sends it);
    whoever ends up with it releases it, and a second release is a no-op. As a context manager
    it releases on exit.
    """

    def __init__(self, budget: MemoryBudget) -> None:
        self.budget = budget
        self.n = 0

    async def grow(self, n: int) -> None:
        """Hold ``n`` more bytes (waits as :meth:`MemoryBudget.acquire` does)."""
        await self.budget.acquire(n)
        self.n += n

    def try_grow(self, n: int) -> bool:
        """Hold ``n`` more bytes if they fit now; False (nothing held) otherwise."""
        if not self.budget.try_acquire(n):
            return False
        self.n += n
        return True

    def release(self) -> None:
        """Give back everything held."""
        if self.n:
            n, self.n = self.n, 0
            self.budget.release(n)

    def __enter__(self) -> Hold:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()
