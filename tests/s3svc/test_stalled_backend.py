"""A backend that acts but answers too late (issue 13, item 2): botocore's read timeout fires,
it retries, and S3 has done the work twice. Nothing may stay open, and every 2xx is intact.

The fault proxy forwards each call to moto at once and holds moto's answer past the client's
read timeout, which is what a frozen-then-thawed S3 looks like to the service."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from common.breaker import OPEN
from s3svc.app import S3_BREAKER, create_app
from s3svc.config import MIB, S3Settings
from tests.conftest import open_uploads, stored_keys, through
from tests.faultproxy import Call, Fault, fault_proxy

READ_TIMEOUT = 1.0


def hold_first(operation: str) -> Callable[[Call], Fault | None]:
    """Hold the answer of the first call of each upload's ``operation`` past the read timeout."""
    seen: set[str] = set()

    def rule(call: Call) -> Fault | None:
        if call.s3_operation != operation or call.path in seen:
            return None
        seen.add(call.path)
        return Fault(hold=READ_TIMEOUT * 3)

    return rule


@pytest.mark.parametrize(
    ("operation", "size"),
    [
        ("CreateMultipartUpload", 12 * MIB),
        ("CompleteMultipartUpload", 12 * MIB),
        ("PutObject", 1000),
    ],
)
async def test_answers_held_past_the_read_timeout_leave_nothing_open(
    make_s3_settings: Callable[..., S3Settings],
    aiohttp_client: Callable[..., Any],
    moto_url: str,
    s3: Any,
    bucket: str,
    operation: str,
    size: int,
) -> None:
    """Four concurrent uploads whose first ``operation`` S3 performs but answers late: all
    answer 201, every object holds its bytes, and no multipart upload is left open (before, a
    retried create left the first upload open)."""
    async with fault_proxy(moto_url, hold_first(operation)) as proxy:
        settings = through(make_s3_settings(), proxy.url, read_timeout=READ_TIMEOUT)
        client = await aiohttp_client(create_app(settings))
        payloads = [os.urandom(size) for _ in range(4)]

        async def send(data: bytes) -> dict[str, Any]:
            form = aiohttp.FormData()
            form.add_field("file", data, filename="f.bin")
            resp = await client.post("/s3/upload", data=form)
            body: dict[str, Any] = await resp.json()
            assert resp.status == 201, body
            return body

        answers = await asyncio.gather(*(send(p) for p in payloads))
    assert await open_uploads(s3, bucket) == []
    keys = [a["files"][0]["key"] for a in answers]
    assert sorted(keys) == sorted(await stored_keys(s3, bucket))
    for key, data in zip(keys, payloads, strict=True):
        obj = await s3.get_object(Bucket=bucket, Key=key)
        async with obj["Body"] as body:
            assert await body.read() == data


async def test_a_completion_whose_every_answer_is_lost_is_reported_stored(
    make_s3_settings: Callable[..., S3Settings],
    aiohttp_client: Callable[..., Any],
    moto_url: str,
    s3: Any,
    bucket: str,
) -> None:
    """S3 completes the upload but no answer arrives, and no retry is left: the abort that
    follows finds no such upload, which means the completion went through. The answer lists
    the file as stored (it is), not as failed."""

    def rule(call: Call) -> Fault | None:
        if call.s3_operation == "CompleteMultipartUpload":
            return Fault(hold=READ_TIMEOUT * 3)
        return None

    data = os.urandom(12 * MIB)
    async with fault_proxy(moto_url, rule) as proxy:
        settings = through(make_s3_settings(), proxy.url, read_timeout=READ_TIMEOUT, max_attempts=1)
        client = await aiohttp_client(create_app(settings))
        form = aiohttp.FormData()
        form.add_field("file", data, filename="late.bin")
        resp = await client.post("/s3/upload", data=form)
        answer = await resp.json()
    assert resp.status == 201, answer
    (item,) = answer["files"]
    assert await stored_keys(s3, bucket) == [item["key"]]
    assert await open_uploads(s3, bucket) == []
    obj = await s3.get_object(Bucket=bucket, Key=item["key"])
    async with obj["Body"] as body:
        assert await body.read() == data


@pytest.mark.parametrize(("operation", "size"), [("UploadPart", 12 * MIB), ("PutObject", 1000)])
async def test_a_frozen_backend_is_503_and_nothing_stays(
    make_s3_settings: Callable[..., S3Settings],
    aiohttp_client: Callable[..., Any],
    moto_url: str,
    s3: Any,
    bucket: str,
    operation: str,
    size: int,
) -> None:
    """S3 takes the connection and the request's head of every ``operation``, then reads
    nothing and answers nothing, not even ``100 Continue`` (a frozen process). botocore's read
    timeout never starts, since the body is never sent: the service gives the call up once the
    body stopped moving for the read timeout, answers ``503 backend_unavailable`` (retry), and
    aborts what it opened; nothing is stored or left open. Before, the request hung for as long
    as S3 stayed frozen."""

    def rule(call: Call) -> Fault | None:
        return Fault(freeze=True) if call.s3_operation == operation else None

    async with fault_proxy(moto_url, rule) as proxy:
        settings = through(
            make_s3_settings(), proxy.url, read_timeout=READ_TIMEOUT, breaker_threshold=1
        )
        app = create_app(settings)
        client = await aiohttp_client(app)
        form = aiohttp.FormData()
        form.add_field("file", os.urandom(size), filename="frozen.bin")
        # wait_for is a hang guard (the old behaviour), not a speed target.
        resp = await asyncio.wait_for(client.post("/s3/upload", data=form), 60)
        answer = await resp.json()
        assert any(c.s3_operation == operation for c in proxy.calls)
    assert resp.status == 503, answer
    assert answer["error"] == "backend_unavailable"
    assert resp.headers["Retry-After"]
    assert await stored_keys(s3, bucket) == []
    assert await open_uploads(s3, bucket) == []
    if operation == "PutObject":
        # The give-up counts as a failure (threshold 1: the circuit opens). A multipart upload
        # is then aborted, and that answer from S3 closes the circuit again.
        assert app[S3_BREAKER].state == OPEN
