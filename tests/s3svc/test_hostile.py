"""Hostile input to /s3/upload: each case gets a stable 4xx (or a clean 201), never a 5xx, and a
running service's memory stays bounded through the whole corpus."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from s3svc.app import create_app
from s3svc.config import S3Settings
from tests.conftest import open_uploads
from tests.hostile import Case, replay, send_raw
from tests.procs import ServiceProcess

B = "hostileB"


def part(name: str, filename: str | None, data: bytes, extra: str = "") -> bytes:
    """One form-data part with its delimiter."""
    disp = f'form-data; name="{name}"' + (
        f'; filename="{filename}"' if filename is not None else ""
    )
    return (
        f"--{B}\r\nContent-Disposition: {disp}\r\n{extra}\r\n".encode("utf-8", "surrogateescape")
        + data
        + b"\r\n"
    )


END = f"--{B}--\r\n".encode()
UPLOAD = f"POST /s3/upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: multipart/form-data; boundary={B}\r\n"

CASES = [
    Case(
        "truncated-mid-file",
        UPLOAD,
        part("file", "t.bin", b"a" * 5000)[:-1500],
        400,
        "malformed_multipart",
    ),
    # An empty body, also on the second request in the process: aiohttp's shared reader of
    # empty bodies once made the second spin the event loop forever.
    Case("empty-body", UPLOAD, b"", 400, "malformed_multipart"),
    Case(
        "missing-boundary",
        "POST /s3/upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: multipart/form-data\r\n",
        part("file", "x", b"data") + END,
        400,
        "malformed_multipart",
    ),
    Case(
        "boundary-never-closed",
        UPLOAD,
        part("file", "n.bin", b"payload")[:-2],
        400,
        "malformed_multipart",
    ),
    Case("crlf-encoded-filename", UPLOAD, part("file", "a%0D%0AX-Evil: 1.txt", b"x") + END, 201),
    Case(
        "nul-in-filename",
        UPLOAD,
        part("file", "nul\x00.txt", b"x") + END,
        400,
        "malformed_multipart",
    ),
    # Part header lines are limited to 8 KiB by aiohttp's parser.
    Case(
        "10kB-filename",
        UPLOAD,
        part("file", "n" * 10_000 + ".txt", b"x") + END,
        400,
        "malformed_multipart",
    ),
    Case("8kB-filename", UPLOAD, part("file", "n" * 8_000 + ".txt", b"x") + END, 201),
    Case(
        "10000-tiny-fields",
        UPLOAD,
        b"".join(part(f"f{i}", None, b"v") for i in range(10_000)) + part("file", "a", b"x") + END,
        400,
        "too_many_fields",
    ),
    Case(
        "huge-part-header",
        UPLOAD,
        part("file", "h", b"x", extra="X-Pad: " + "p" * 100_000 + "\r\n") + END,
        400,
    ),
    Case(
        "nested-multipart",
        UPLOAD,
        f"--{B}\r\nContent-Type: multipart/mixed; boundary=inner\r\n\r\n--inner\r\n\r\nx\r\n--inner--\r\n\r\n".encode()
        + END,
        400,
        "malformed_multipart",
    ),
    Case(
        "wrong-method",
        "GET /s3/upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\n",
        b"",
        405,
        "method_not_allowed",
    ),
    Case(
        "wrong-method-put-health",
        "PUT /s3/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n",
        b"",
        405,
        "method_not_allowed",
    ),
    Case(
        "json-body",
        "POST /s3/upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n",
        b'{"a":1}',
        415,
        "unsupported_media_type",
    ),
    Case(
        "slow-loris",
        UPLOAD,
        part("file", "slow.bin", b"s" * 100_000) + END,
        408,
        "body_timeout",
        trickle=True,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_hostile_case(
    aiohttp_server: Callable[..., Any],
    make_s3_settings: Callable[..., S3Settings],
    s3: Any,
    bucket: str,
    case: Case,
) -> None:
    """Each case: the documented status and error code, JSON, and never a 5xx."""
    from dataclasses import replace

    settings = make_s3_settings()
    settings = replace(settings, common=replace(settings.common, body_idle_timeout=0.5))
    server: TestServer = await aiohttp_server(create_app(settings))
    assert server.port is not None
    status, body = await send_raw(server.host, server.port, case)
    assert status == case.status, body
    if case.error:
        assert body["error"] == case.error
    if status == 201:
        (item,) = body["files"]
        name = item["key"].rsplit("/", 1)[1]
        assert name.isascii()
        assert name.isprintable()
        assert len(name) <= 100
        head = await s3.head_object(Bucket=bucket, Key=item["key"])
        assert all(ch.isprintable() for ch in head["Metadata"]["original-filename"])
    assert await open_uploads(s3, bucket) == []


async def test_corpus_against_a_running_service_keeps_memory_bounded(
    service_env: dict[str, str], bucket: str, tmp_path: Path
) -> None:
    """The whole corpus, three times, against ``python -m s3svc``: no 5xx, RSS growth bounded."""
    env = dict(service_env, BUCKET_NAME=bucket, BODY_IDLE_TIMEOUT="0.5", LOG_LEVEL="warning")
    svc = ServiceProcess("s3svc", env, tmp_path / "s3svc.log").start()
    try:
        growth = await replay(svc, CASES)
    finally:
        svc.stop()
    assert growth < 64, f"RSS grew {growth:.1f} MiB"
