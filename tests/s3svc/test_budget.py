"""The byte budget uploads reserve memory from: order, cancellation, and its bounded wait."""

from __future__ import annotations

import asyncio

import pytest

from common.errors import Unavailable
from s3svc.budget import MemoryBudget


async def test_budget_blocks_until_release() -> None:
    """A reservation that does not fit waits for a release, then proceeds."""
    budget = MemoryBudget(10, wait=60)
    await budget.acquire(6)
    waiter = asyncio.create_task(budget.acquire(6))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    assert budget.waiting
    budget.release(6)
    await asyncio.wait_for(waiter, 1)
    assert budget.used == 6
    assert not budget.waiting


async def test_budget_is_fifo_and_cancellation_safe() -> None:
    """A cancelled waiter neither leaks bytes nor blocks those behind it."""
    budget = MemoryBudget(10, wait=60)
    await budget.acquire(10)
    first = asyncio.create_task(budget.acquire(8))
    second = asyncio.create_task(budget.acquire(2))
    await asyncio.sleep(0.01)
    assert not second.done()  # FIFO: the small one does not jump the queue
    first.cancel()
    budget.release(10)
    await asyncio.wait_for(second, 1)
    assert budget.used == 2
    assert budget.peak == 10


async def test_budget_refuses_more_than_limit() -> None:
    """A single reservation larger than the whole budget could never be granted."""
    with pytest.raises(ValueError, match="budget"):
        await MemoryBudget(5, wait=60).acquire(6)


async def test_a_wait_that_runs_out_is_503_busy_and_leaves_nothing_held() -> None:
    """Nobody waits for ever: past ``wait`` the caller gets 503 busy with Retry-After, and the
    waiters behind it are served once memory comes back."""
    budget = MemoryBudget(10, wait=0.05)
    await budget.acquire(10)
    with pytest.raises(Unavailable) as caught:
        await budget.acquire(1)
    assert caught.value.code == "busy"
    assert caught.value.status == 503
    assert caught.value.retry_after
    assert budget.used == 10
    assert not budget.waiting
    budget.release(10)
    await budget.acquire(10)
