"""Nothing half-written: client disconnects and S3 failures abort the upload; readiness tells the truth."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from common.server import CANCEL_WAIT
from s3svc.app import UPLOADER, create_app
from s3svc.config import MIB, S3Settings
from tests.conftest import open_uploads, through
from tests.faultproxy import Call, Fault, fault_proxy

PART = 5 * MIB


async def eventually(check: Callable[[], Any], timeout: float = 15.0) -> None:
    """Poll an async predicate until true; fail with its last value after ``timeout`` s."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if await check():
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.1)


async def test_client_disconnect_mid_upload_aborts_multipart(
    aiohttp_server: Callable[..., Any],
    make_s3_settings: Callable[..., S3Settings],
    s3: Any,
    bucket: str,
) -> None:
    """Killing the client after parts reached S3 leaves no open upload and no object."""
    server: TestServer = await aiohttp_server(create_app(make_s3_settings()))
    reader, writer = await asyncio.open_connection(server.host, server.port)
    boundary = "cutcutcut"
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    declared = len(head) + 10 * PART
    writer.write(
        (
            "POST /s3/upload HTTP/1.1\r\n"
            f"Host: {server.host}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {declared}\r\n\r\n"
        ).encode()
        + head
    )
    block = os.urandom(MIB)
    for _ in range(3 * PART // MIB):
        writer.write(block)
        await writer.drain()

    # Parts are on their way to S3: an upload is open right now.
    async def upload_open() -> bool:
        return len(await open_uploads(s3, bucket)) == 1

    await eventually(upload_open)
    writer.transport.abort()
    reader.feed_eof()

    async def cleaned_up() -> bool:
        return not await open_uploads(s3, bucket)

    await eventually(cleaned_up)
    assert (await s3.list_objects_v2(Bucket=bucket)).get("KeyCount") == 0


def fail_parts_from(number: int, status: int, code: str) -> Callable[[Call], Fault | None]:
    """A proxy rule failing every UploadPart with part number >= ``number``."""

    def rule(call: Call) -> Fault | None:
        if call.s3_operation == "UploadPart" and (call.part_number or 0) >= number:
            return Fault(status=status, code=code)
        return None

    return rule


@pytest.mark.parametrize(
    ("status", "code", "expected_status", "expected_error"),
    [
        (503, "SlowDown", 503, "backend_unavailable"),
        (500, "InternalError", 503, "backend_unavailable"),
        (403, "AccessDenied", 502, "backend_error"),
    ],
)
async def test_s3_failing_mid_upload_gives_json_5xx_and_aborts(
    aiohttp_client: Callable[..., Any],
    make_s3_settings: Callable[..., S3Settings],
    moto_url: str,
    s3: Any,
    bucket: str,
    status: int,
    code: str,
    expected_status: int,
    expected_error: str,
) -> None:
    """Parts failing after the upload started: 502/503 JSON, the upload aborted, no object."""
    async with fault_proxy(moto_url, fail_parts_from(2, status, code)) as proxy:
        settings = through(make_s3_settings(), proxy.url, max_attempts=2)
        client = await aiohttp_client(create_app(settings))
        data = aiohttp.FormData()
        data.add_field("file", os.urandom(4 * PART), filename="f.bin")
        resp = await client.post("/s3/upload", data=data)
        assert resp.status == expected_status
        body = await resp.json()
        assert body["error"] == expected_error
        assert body["request_id"] == resp.headers["X-Request-ID"]
        if expected_status == 503:
            assert resp.headers["Retry-After"].isdigit()
        ops = [c.s3_operation for c in proxy.calls]
        assert "CreateMultipartUpload" in ops
        assert "AbortMultipartUpload" in ops
        assert "CompleteMultipartUpload" not in ops
    assert await open_uploads(s3, bucket) == []
    assert (await s3.list_objects_v2(Bucket=bucket)).get("KeyCount") == 0


async def test_failed_uploads_give_back_their_memory_budget(
    aiohttp_client: Callable[..., Any],
    make_s3_settings: Callable[..., S3Settings],
    moto_url: str,
    s3: Any,
    bucket: str,
) -> None:
    """A part failing while the next one was just dispatched returns every reservation: after
    more failed uploads than the budget has parts, S3 recovers and an upload goes through."""
    failing = True

    def rule(call: Call) -> Fault | None:
        if failing and call.s3_operation == "UploadPart" and (call.part_number or 0) >= 2:
            return Fault(status=403, code="AccessDenied")
        return None

    async with fault_proxy(moto_url, rule) as proxy:
        settings = through(make_s3_settings(memory_budget=3 * PART), proxy.url, max_attempts=1)
        app = create_app(settings)
        client = await aiohttp_client(app)
        for _ in range(4):
            data = aiohttp.FormData()
            data.add_field("file", os.urandom(6 * PART), filename="f.bin")
            # A lost reservation makes a later upload wait for ever: fail instead of hanging.
            resp = await asyncio.wait_for(client.post("/s3/upload", data=data), 60)
            assert resp.status == 502, await resp.text()
        assert app[UPLOADER].meter.used == 0
        failing = False
        data = aiohttp.FormData()
        data.add_field("file", os.urandom(2 * PART), filename="ok.bin")
        resp = await asyncio.wait_for(client.post("/s3/upload", data=data), 60)
        assert resp.status == 201, await resp.text()
    assert await open_uploads(s3, bucket) == []


async def shutdown_during_upload(
    make_s3_settings: Callable[..., S3Settings],
    moto_url: str,
    rule: Callable[[Call], Fault | None],
    reached: Callable[[list[Call]], bool],
) -> list[str]:
    """Serve s3svc as serve() does, start an upload, shut down once ``reached(proxy.calls)``
    (the grace period over: runner.cleanup() is what serve() ends with); the S3 operations."""
    async with fault_proxy(moto_url, rule) as proxy:
        settings = through(make_s3_settings(), proxy.url, max_attempts=1, read_timeout=60.0)
        runner = web.AppRunner(
            create_app(settings),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=CANCEL_WAIT,
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]

        async def post() -> None:
            data = aiohttp.FormData()
            data.add_field("file", os.urandom(2 * PART + 1), filename="f.bin")
            async with aiohttp.ClientSession() as session:
                with contextlib.suppress(aiohttp.ClientError):
                    await session.post(f"http://127.0.0.1:{port}/s3/upload", data=data)

        client = asyncio.create_task(post())

        async def ready() -> bool:
            return reached(proxy.calls)

        await eventually(ready)
        await runner.cleanup()
        await client
        return [c.s3_operation for c in proxy.calls]


async def test_shutdown_cancelling_an_upload_still_aborts_it(
    make_s3_settings: Callable[..., S3Settings], moto_url: str, s3: Any, bucket: str
) -> None:
    """Shutdown cancels a request whose part 2 hangs in S3: the upload is still aborted before
    the S3 client closes."""

    def rule(call: Call) -> Fault | None:
        if call.s3_operation == "UploadPart" and (call.part_number or 0) >= 2:
            return Fault(stall=True)
        return None

    ops = await shutdown_during_upload(
        make_s3_settings, moto_url, rule, lambda calls: any(c.part_number == 2 for c in calls)
    )
    assert "AbortMultipartUpload" in ops
    assert await open_uploads(s3, bucket) == []


async def test_single_put_failure_stores_nothing(
    aiohttp_client: Callable[..., Any],
    make_s3_settings: Callable[..., S3Settings],
    moto_url: str,
    s3: Any,
    bucket: str,
) -> None:
    """A small file whose PutObject keeps failing is a 503 with Retry-After and no object."""

    def rule(call: Call) -> Fault | None:
        return Fault(status=503, code="SlowDown") if call.s3_operation == "PutObject" else None

    async with fault_proxy(moto_url, rule) as proxy:
        settings = through(make_s3_settings(), proxy.url, max_attempts=3)
        client = await aiohttp_client(create_app(settings))
        data = aiohttp.FormData()
        data.add_field("file", b"small", filename="s.txt")
        resp = await client.post("/s3/upload", data=data)
        assert resp.status == 503
        assert (await resp.json())["error"] == "backend_unavailable"
        # botocore's standard retry mode made max_attempts tries before giving up.
        assert [c.s3_operation for c in proxy.calls].count("PutObject") == 3, proxy.calls
    assert (await s3.list_objects_v2(Bucket=bucket)).get("KeyCount") == 0


async def test_ready_reflects_bucket(
    aiohttp_client: Callable[..., Any], make_s3_settings: Callable[..., S3Settings]
) -> None:
    """/s3/ready is 200 for an existing bucket and 503 with a reason for a missing one."""
    ok = await aiohttp_client(create_app(make_s3_settings()))
    resp = await ok.get("/s3/ready")
    assert resp.status == 200, await resp.text()
    missing = await aiohttp_client(create_app(make_s3_settings(bucket="no-such-bucket-here")))
    resp = await missing.get("/s3/ready")
    assert resp.status == 503
    body = await resp.json()
    assert body["error"] == "not_ready"
    assert "NoSuchBucket" in body["message"]


async def test_local_safe_mode_never_fakes_success(
    aiohttp_client: Callable[..., Any], make_s3_settings: Callable[..., S3Settings]
) -> None:
    """Without BUCKET_NAME: health 200, ready 503, upload 503 not_configured."""
    client = await aiohttp_client(create_app(make_s3_settings(bucket=None)))
    for path in ("/health", "/s3/health"):
        resp = await client.get(path)
        assert resp.status == 200
        assert (await resp.json())["status"] == "ok"
    ready = await client.get("/s3/ready")
    assert ready.status == 503
    assert "BUCKET_NAME" in (await ready.json())["message"]
    data = aiohttp.FormData()
    data.add_field("file", b"x", filename="x.txt")
    resp = await client.post("/s3/upload", data=data)
    assert resp.status == 503
    assert (await resp.json())["error"] == "not_configured"
