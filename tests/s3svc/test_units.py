"""Pure pieces of s3svc: key and filename handling, part sizing, and the
uploader's cleanup where timing decides (against a stand-in S3 client: moto cannot be made to
answer after the caller gave up at a chosen moment)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from common.pace import BodyClock, Pace
from s3svc.config import GIB, MIB, S3Settings, part_size_for
from s3svc.keys import decode_filename, make_key, metadata_filename, sanitise_filename
from s3svc.upload import ByteLimit, Uploader


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
        ("文件.txt", "file.txt"),
        ("😀😀.png", "file.png"),
        ("   .txt", "file.txt"),
        (".bashrc", "bashrc"),
        ("a..b.txt", "a.b.txt"),
        ("x" * 300 + ".tar.gz", "x" * 97 + ".gz"),
    ],
)
def test_sanitise_filename(name: str | None, expected: str) -> None:
    """Only a safe ASCII last segment survives; length is bounded."""
    assert sanitise_filename(name) == expected


@pytest.mark.parametrize(
    ("sent", "name"),
    [
        ("a%22b.txt", 'a"b.txt'),
        ("%2E%2E%2Fsecret.txt", "../secret.txt"),
        ("100%.txt", "100%.txt"),
        ("%FF.bin", "%FF.bin"),
        ("plain.txt", "plain.txt"),
    ],
)
def test_decode_filename(sent: str, name: str) -> None:
    """Percent-encoding that form clients apply is undone; what is not valid percent-encoded
    UTF-8 is kept as sent."""
    assert decode_filename(sent) == name


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
    the same, and drain() (shutdown) aborts it."""
    s3 = LateS3()
    uploader = Uploader(cast(Any, s3), make_s3_settings())
    request = asyncio.create_task(uploader.create("k", "text/plain", "f"))
    await asyncio.sleep(0)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
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


class StallingFile:
    """A file part that yields ``size`` bytes, then never sends another."""

    def __init__(self, size: int) -> None:
        self.left = size

    async def read_chunk(self, size: int = 8192) -> bytes:
        if not self.left:
            await asyncio.Event().wait()
        n = min(size, self.left)
        self.left -= n
        return b"x" * n


async def test_request_cancelled_twice_still_aborts(
    make_s3_settings: Callable[..., S3Settings],
) -> None:
    """Cancelled while part 1 is in flight, then cancelled again while part 1 winds down: the
    abort still happens (it runs in a task of its own) and every reservation comes back."""
    s3 = HangingPartsS3()
    settings = make_s3_settings()
    uploader = Uploader(cast(Any, s3), settings)
    request = asyncio.create_task(
        uploader.stage(
            StallingFile(settings.part_size + 1),
            key="k",
            filename="f",
            content_type="text/plain",
            limit=ByteLimit(GIB),
            clock=BodyClock(Pace(idle_timeout=3600)),
        )
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
    assert uploader.meter.used == 0


def test_a_long_filename_is_cut_between_characters_in_metadata() -> None:
    """A long non-ASCII name is cut at 1024 characters of percent-encoding without splitting an
    escape or a character: what is kept still decodes."""
    from urllib.parse import unquote

    for name in ("é" * 400, "a" + "é" * 400, "ab" + "€" * 300):
        kept = metadata_filename(name)
        assert len(kept) <= 1024
        assert name.startswith(unquote(kept, errors="strict"))
