"""A request stores every file it carries or none: nothing is committed before the body's
closing boundary was read, and a failure before that leaves nothing in S3 (issue 13, item 4)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from common.appkeys import IN_FLIGHT
from s3svc.app import UPLOADER, create_app
from s3svc.config import MIB, S3Settings
from tests.conftest import eventually, open_uploads, stored_keys, through
from tests.faultproxy import Call, Fault, fault_proxy
from tests.hostile import Case, send_raw

B = "allOrNothingB"
HEAD = (
    "POST /s3/upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    f"Content-Type: multipart/form-data; boundary={B}\r\n"
)


def file_part(filename: str, data: bytes) -> bytes:
    """One file field of the form, closed by the next delimiter's CRLF."""
    return (
        f'--{B}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + data


@pytest.fixture
async def server(
    make_s3_settings: Callable[..., S3Settings],
) -> Any:
    """s3svc on a real socket (raw requests need one)."""
    srv = TestServer(create_app(make_s3_settings()))
    await srv.start_server()
    yield srv
    await srv.close()


@pytest.mark.parametrize("size", [1000, 12 * MIB], ids=["one-part", "multipart"])
async def test_a_cut_off_closing_boundary_stores_nothing(
    server: Any, s3: Any, bucket: str, size: int
) -> None:
    """The file arrives whole and its part ends, but the body's closing ``--`` never comes:
    the body is incomplete, so the file is not stored (a 12 MiB file was, before)."""
    body = file_part("whole.bin", os.urandom(size)) + f"\r\n--{B}".encode()
    status, answer = await send_raw(
        server.host, server.port, Case("cut", HEAD, body, 400, "malformed_multipart")
    )
    assert (status, answer["error"]) == (400, "malformed_multipart")
    assert await stored_keys(s3, bucket) == []
    assert await open_uploads(s3, bucket) == []


async def send_then_leave(server: Any, s3: Any, bucket: str, body: bytes, promised: int) -> None:
    """Send ``body`` under a Content-Length ``promised`` bytes longer, wait until the server
    stages a file, close the connection; then nothing may be stored, open or held."""
    uploader = server.app[UPLOADER]
    _, writer = await asyncio.open_connection(server.host, server.port)
    length = f"Content-Length: {len(body) + promised}\r\n\r\n"
    writer.write(HEAD.encode() + length.encode() + body)
    await writer.drain()
    await eventually(lambda: uploader.meter.used > 0)  # the server is staging the file
    writer.close()
    await writer.wait_closed()
    assert await server.app[IN_FLIGHT].wait_idle(60)
    # The cancelled request's aborts run on after it (shielded): wait for them, not for luck.
    assert await uploader.settle(60)
    assert await stored_keys(s3, bucket) == []
    assert await open_uploads(s3, bucket) == []
    assert uploader.meter.used == 0


@pytest.mark.parametrize("size", [1000, 12 * MIB], ids=["one-part", "multipart"])
async def test_a_client_gone_before_the_closing_boundary_stores_nothing(
    server: Any, s3: Any, bucket: str, size: int
) -> None:
    """The client sends a whole file and part of a second one, then closes the connection."""
    body = (
        file_part("gone.bin", os.urandom(size))
        + b"\r\n"
        + file_part("second.bin", os.urandom(600_000))
    )
    await send_then_leave(server, s3, bucket, body, promised=100)


async def test_a_request_cut_off_after_its_closing_boundary_stores_nothing(
    server: Any, s3: Any, bucket: str
) -> None:
    """The form is complete but the HTTP message is not (Content-Length promises more; the
    client closes): a request the client never finished sending is not committed (it was).
    One small file, so the server holds it staged while it waits for the rest: the rule is the
    form reader's, the same for a multipart file."""
    body = file_part("cut.bin", os.urandom(1000)) + f"\r\n--{B}--\r\n".encode()
    await send_then_leave(server, s3, bucket, body, promised=1000)


async def test_a_later_empty_file_stores_nothing(server: Any, s3: Any, bucket: str) -> None:
    """``a.txt`` then an empty file: 400, and ``a.txt`` is not stored either (it was, before)."""
    body = (
        file_part("a.txt", b"hello")
        + b"\r\n"
        + file_part("empty.txt", b"")
        + f"\r\n--{B}--\r\n".encode()
    )
    status, answer = await send_raw(server.host, server.port, Case("empty", HEAD, body, 400))
    assert (status, answer["error"]) == (400, "empty_file")
    assert "stored" not in answer
    assert await stored_keys(s3, bucket) == []


async def test_a_later_multipart_file_refused_aborts_the_earlier_one(
    make_s3_settings: Callable[..., S3Settings], s3: Any, bucket: str
) -> None:
    """A 12 MiB file (a multipart upload, parts already in S3) then a refused file type: the
    earlier upload is aborted, not completed."""
    srv: Any = TestServer(create_app(make_s3_settings(allowed_content_types=("application/*",))))
    await srv.start_server()
    try:
        body = (
            file_part("big.bin", os.urandom(12 * MIB))
            + f'\r\n--{B}\r\nContent-Disposition: form-data; name="file"; filename="x.sh"\r\n'
            "Content-Type: text/x-shellscript\r\n\r\n#!\r\n".encode()
            + f"--{B}--\r\n".encode()
        )
        status, answer = await send_raw(srv.host, srv.port, Case("refused", HEAD, body, 415))
    finally:
        await srv.close()
    assert (status, answer["error"]) == (415, "content_type_not_allowed")
    assert await stored_keys(s3, bucket) == []
    assert await open_uploads(s3, bucket) == []


async def test_every_file_or_none_when_s3_fails_a_commit(
    make_s3_settings: Callable[..., S3Settings],
    aiohttp_client: Callable[..., Any],
    s3: Any,
    bucket: str,
) -> None:
    """S3 refuses one of three commits (the files before the last were moved out of memory
    into open uploads, so theirs is a CompleteMultipartUpload): the answer names exactly the
    two it stored, and the refused one is not left open."""

    def rule(call: Call) -> Fault | None:
        commit = call.s3_operation in ("PutObject", "CompleteMultipartUpload")
        if commit and call.path.endswith("/b.txt"):
            return Fault(status=403, code="AccessDenied")
        return None

    async with fault_proxy(s3_endpoint(s3), rule) as proxy:
        client = await aiohttp_client(create_app(through(make_s3_settings(), proxy.url)))
        data = aiohttp.FormData()
        for name in ("a.txt", "b.txt", "c.txt"):
            data.add_field("file", name.encode(), filename=name, content_type="text/plain")
        resp = await client.post("/s3/upload", data=data)
        answer = await resp.json()
    assert resp.status == 502, answer
    stored = {f["key"] for f in answer["stored"]}
    assert sorted(stored) == sorted(await stored_keys(s3, bucket))
    assert {k.rsplit("/", 1)[-1] for k in stored} == {"a.txt", "c.txt"}
    assert await open_uploads(s3, bucket) == []
    for f in answer["stored"]:
        obj = await s3.get_object(Bucket=bucket, Key=f["key"])
        async with obj["Body"] as b:
            assert hashlib.sha256(await b.read()).hexdigest() == f["sha256"]


def s3_endpoint(s3: Any) -> str:
    """The endpoint the test's S3 client talks to (moto)."""
    url: str = s3.meta.endpoint_url
    return url
