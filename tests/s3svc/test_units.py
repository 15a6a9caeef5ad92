"""Pure pieces of s3svc: the memory budget, key and filename handling, part sizing, and the
uploader's cleanup where timing decides (against a stand-in S3 client: moto cannot be made to
answer after the caller gave up at a chosen moment)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from s3svc.config import GIB, MIB, S3Settings, part_size_for
from s3svc.keys import make_key, metadata_filename, sanitise_filename
from s3svc.upload import MemoryBudget, Uploader


async def test_budget_blocks_until_release() -> None:
    """A reservation that does not fit waits for a release, then proceeds."""
    budget = MemoryBudget(10)
    await budget.acquire(6)
    waiter = asyncio.create_task(budget.acquire(6))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    budget.release(6)
    await asyncio.wait_for(waiter, 1)
    assert budget.used == 6


async def test_budget_is_fifo_and_cancellation_safe() -> None:
    """A cancelled waiter neither leaks bytes nor blocks those behind it."""
    budget = MemoryBudget(10)
    await budget.acquire(10)
    first = asyncio.create_task(budget.acquire(8))
    second = asyncio.create_task(budget.acquire(2))
    await asyncio.sleep(0.01)
    assert not second.done()  # FIFO: the small one does not jump the queue
    first.cancel()
    budget.release(10)
    await asyncio.wait_for(second, 1)
    assert budget.used == 2


async def test_budget_refuses_more_than_limit() -> None:
    """A single reservation larger than the whole budget could never be granted."""
    with pytest.raises(ValueError, match="budget"):
        await MemoryBudget(5).acquire(6)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system.ini", "system.ini"),
        ("résumé.pdf", "resume.pdf"),
        ("a\r\nX-Evil: 1.txt", "a_X-Evil_1.txt"),
        ("nul\x00byte.bin", "nul_byte.bin"),
        ("..", "file"),
        ("", "file"),
        (None, "file"),
        ("%2E%2E%2Fsecret.txt", "secret.txt"),
        ("a..b.txt", "a.b.txt"),
        ("x" * 300 + ".tar.gz", "x" * 97 + ".gz"),
    ],
)
def test_sanitise_filename(name: str | None, expected: str) -> None:
    """Only a safe ASCII last segment survives; length is bounded."""
    assert sanitise_filename(name) == expected


def test_key_layout() -> None:
    """prefix/yyyy/mm/dd/uuid/name: unique per call even for the same name."""
    now = datetime(2026, 1, 2, tzinfo=UTC)
    a = make_key("uploads/", "f.txt", now=now)
    b = make_key("uploads/", "f.txt", now=now)
    assert a.startswith("uploads/2026/01/02/")
    assert a.endswith("/f.txt")
    assert a != b


def test_metadata_filename_is_ascii() -> None:
    """Non-ASCII names are percent-encoded for the metadata header."""
    assert metadata_filename("é 1.txt") == "%C3%A9 1.txt"


def test_part_size_grows_for_huge_files() -> None:
    """A file too big for 10,000 parts of the configured size gets larger parts."""
    assert part_size_for(1 * GIB, 8 * MIB) == 8 * MIB
    grown = part_size_for(200 * GIB, 8 * MIB)
    assert grown * 10_000 >= 200 * GIB
    assert grown % MIB == 0


class LateS3:
    """Answers CreateMultipartUpload only when ``answer`` is set, and records aborts."""

    def __init__(self) -> None:
        self.answer = asyncio.Event()
        self.aborted: list[str] = []

    async def create_multipart_upload(self, **_: Any) -> dict[str, Any]:
        await self.answer.wait()
        return {"UploadId": "u-1"}

    async def abort_multipart_upload(self, *, UploadId: str, **_: Any) -> dict[str, Any]:
        self.aborted.append(UploadId)
        return {}


async def test_request_cancelled_during_create_aborts_what_s3_created(
    make_s3_settings: Callable[..., S3Settings],
) -> None:
    """A request cancelled while CreateMultipartUpload is on its way: S3 creates the upload all
    the same, and drain() (shutdown) aborts it; the reservation is given back."""
    s3 = LateS3()
    uploader = Uploader(cast(Any, s3), make_s3_settings())
    part_size = 5 * MIB
    await uploader.budget.acquire(part_size)  # what store() holds for the first block
    no_source: Any = None  # the body is never read: the request ends before the first part
    request = asyncio.create_task(
        uploader._multipart("b", "k", io.BytesIO(b"x"), part_size, no_source, "text/plain", "f")
    )
    await asyncio.sleep(0)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    assert uploader.budget.used == 0
    s3.answer.set()  # S3 answers after the caller gave up
    await asyncio.wait_for(uploader.drain(), 5)
    assert s3.aborted == ["u-1"]


class HangingPartsS3(LateS3):
    """Creates at once; every UploadPart hangs, and when cancelled winds down until released."""

    def __init__(self) -> None:
        super().__init__()
        self.answer.set()
        self.part_sent = asyncio.Event()
        self.winding_down = asyncio.Event()
        self.release = asyncio.Event()

    async def upload_part(self, **_: Any) -> dict[str, Any]:
        self.part_sent.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.winding_down.set()
            await self.release.wait()
            raise
        raise AssertionError("unreachable")


class StalledBody:
    """A request body whose next block never arrives."""

    async def read_block(self, n: int) -> io.BytesIO:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_request_cancelled_twice_still_aborts(
    make_s3_settings: Callable[..., S3Settings],
) -> None:
    """Cancelled while part 1 is in flight, then cancelled again while part 1 winds down: the
    abort still happens (it runs in its own task from the first moment)."""
    s3 = HangingPartsS3()
    uploader = Uploader(cast(Any, s3), make_s3_settings())
    part_size = 5 * MIB
    await uploader.budget.acquire(part_size)
    body: Any = StalledBody()
    request = asyncio.create_task(
        uploader._multipart("b", "k", io.BytesIO(b"x"), part_size, body, "text/plain", "f")
    )
    await asyncio.wait_for(s3.part_sent.wait(), 5)  # part 1 in flight, the next block awaited
    request.cancel()
    await asyncio.wait_for(s3.winding_down.wait(), 5)  # part 1 is winding down
    request.cancel()
    s3.release.set()
    with pytest.raises(asyncio.CancelledError):
        await request
    await asyncio.wait_for(uploader.drain(), 5)
    assert s3.aborted == ["u-1"]
    assert uploader.budget.used == 0
