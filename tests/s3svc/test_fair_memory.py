"""Fair memory under hostile clients and a slow backend (issue 13, item 1): memory is reserved
for what was read, drips are cut off by the minimum data rate, a reservation waits a bounded
time (503 busy), and /ready says so while the budget is exhausted."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from s3svc.app import UPLOADER, create_app
from s3svc.config import MIB, S3Settings
from tests.conftest import eventually, open_uploads, stored_keys, through
from tests.faultproxy import Call, Fault, fault_proxy

B = "dripB"
PART = 5 * MIB


def drip_head(port: int) -> bytes:
    """Headers of an upload whose body will arrive a few bytes at a time."""
    return (
        "POST /s3/upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Content-Type: multipart/form-data; boundary={B}\r\nContent-Length: 100000\r\n\r\n"
        f'--{B}\r\nContent-Disposition: form-data; name="file"; filename="drip.bin"\r\n\r\n'
    ).encode()


async def drip(
    host: str,
    port: int,
    answered: asyncio.Event,
    *,
    head: bytes | None = None,
    first: bytes = b"d" * 300,
    piece: bytes = b"d" * 10,
    every: float = 0.5,
) -> tuple[int, bytes]:
    """Send ``head`` (``drip_head``'s by default) and ``first``, then ``piece`` every ``every``
    seconds (20 B/s by default) until the server answers."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write((head or drip_head(port)) + first)

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                await asyncio.sleep(every)
                writer.write(piece)
                await writer.drain()

    sender = asyncio.create_task(trickle())
    try:
        status_and_headers = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 120)
        answered.set()
        length = status_and_headers.lower().split(b"content-length:")[1].split(b"\r\n")[0]
        body = await asyncio.wait_for(reader.readexactly(int(length)), 30)
    finally:
        sender.cancel()
        writer.close()
    return int(status_and_headers.split()[1]), body


async def test_drips_hold_no_part_and_are_cut_off(
    make_s3_settings: Callable[..., S3Settings], s3: Any, bucket: str
) -> None:
    """16 drips against a budget of two parts: a 20-byte upload is stored at once (before, each
    drip reserved a whole part up front and the small upload was never answered); every drip
    ends in 408 ``body_too_slow`` and stores nothing."""
    settings = make_s3_settings(memory_budget=2 * PART)
    settings = replace(settings, common=replace(settings.common, body_rate_grace=1.0))
    server: Any = TestServer(create_app(settings))
    await server.start_server()
    try:
        uploader = server.app[UPLOADER]
        answered = asyncio.Event()
        drips = [asyncio.create_task(drip(server.host, server.port, answered)) for _ in range(16)]
        # every drip is being read
        await eventually(lambda: uploader.meter.used >= 16 * 300)
        assert not answered.is_set()
        async with aiohttp.ClientSession() as session:
            data = aiohttp.FormData()
            data.add_field("file", b"x" * 20, filename="small.txt")
            resp = await asyncio.wait_for(
                session.post(f"http://{server.host}:{server.port}/s3/upload", data=data), 60
            )
            small = await resp.json()
        assert resp.status == 201, small
        results = await asyncio.gather(*drips)
    finally:
        await server.close()
    for status, body in results:
        assert status == 408
        assert b'"body_too_slow"' in body
    assert await stored_keys(s3, bucket) == [small["files"][0]["key"]]
    assert await open_uploads(s3, bucket) == []


@pytest.mark.parametrize("slot_min_rate", [16 * 1024, 0], ids=["cut", "rule-off"])
async def test_a_slow_slot_holder_gives_way_to_a_waiting_upload(
    make_s3_settings: Callable[..., S3Settings], s3: Any, bucket: str, slot_min_rate: int
) -> None:
    """An upload sends 1 MiB + 1 KiB (so it holds the only part slot), then 5 KB/s: fast enough for
    the body's minimum rate, below UPLOAD_SLOT_MIN_RATE. Alone it keeps its slot (a slow client
    is served); once a 2 MiB upload has waited half of UPLOAD_MEMORY_WAIT for that slot, it is
    cut off (408) and the other is stored. Before, slow holders kept every slot for hours and
    the others got 503 busy, as they still do with the rule off (UPLOAD_SLOT_MIN_RATE=0)."""
    settings = make_s3_settings(memory_budget=2 * PART, memory_wait=6.0)
    settings = replace(
        settings,
        slot_min_rate=slot_min_rate,
        common=replace(settings.common, body_rate_grace=1.0),
    )
    server: Any = TestServer(create_app(settings))
    await server.start_server()
    answered = asyncio.Event()
    try:
        uploader = server.app[UPLOADER]
        head = drip_head(server.port).replace(b"100000", b"%d" % (8 * MIB))
        slowly = drip(
            server.host,
            server.port,
            answered,
            head=head,
            first=b"s" * (MIB + 1024),  # just past the threshold: the slot is taken
            piece=b"s" * 1000,
            every=0.2,
        )
        holder = asyncio.create_task(slowly)
        await eventually(lambda: uploader.slots.used == PART)
        # Alone, past its grace: still being read.
        await asyncio.sleep(2.5)
        assert not answered.is_set()
        async with aiohttp.ClientSession() as session:
            data = aiohttp.FormData()
            data.add_field("file", os.urandom(2 * MIB), filename="waiting.bin")
            resp = await asyncio.wait_for(
                session.post(f"http://{server.host}:{server.port}/s3/upload", data=data), 60
            )
            waiting = await resp.json()
        if slot_min_rate:
            assert resp.status == 201, waiting
            status, body = await holder
        else:
            assert (resp.status, waiting["error"]) == (503, "busy")
            assert not answered.is_set()  # the slow holder is still being served
            holder.cancel()
    finally:
        await server.close()
    if slot_min_rate:
        assert status == 408
        assert b'"body_too_slow"' in body
        assert await stored_keys(s3, bucket) == [waiting["files"][0]["key"]]
    assert await open_uploads(s3, bucket) == []


@pytest.mark.parametrize("memory_wait", [60.0, 0.5], ids=["waits-then-served", "busy"])
async def test_exhausted_budget_is_not_ready_then_served_or_503_busy(
    make_s3_settings: Callable[..., S3Settings],
    moto_url: str,
    s3: Any,
    bucket: str,
    memory_wait: float,
) -> None:
    """S3 holds an upload's first part, so it keeps the only part slot. A second large upload
    waits for it: with a long UPLOAD_MEMORY_WAIT, /ready is 503 while it waits and it is
    served once S3 answers; with a short one it gets 503 busy with Retry-After and stores
    nothing. /ready is 200 again once S3 answers. (Two cases, so no check races the wait.)"""
    thaw = asyncio.Event()

    def rule(call: Call) -> Fault | None:
        return Fault(gate=thaw) if call.s3_operation == "UploadPart" else None

    waits = memory_wait > 1
    async with fault_proxy(moto_url, rule) as proxy:
        # One part's worth for small buffers, one part slot.
        settings = make_s3_settings(
            memory_budget=2 * PART, memory_wait=memory_wait, max_inflight_parts=1
        )
        server: Any = TestServer(create_app(through(settings, proxy.url, read_timeout=120)))
        await server.start_server()
        base = f"http://{server.host}:{server.port}/s3"
        try:
            uploader = server.app[UPLOADER]
            async with aiohttp.ClientSession() as session:
                big = aiohttp.FormData()
                payload = os.urandom(PART + 100)
                big.add_field("file", payload, filename="big.bin")
                first = asyncio.create_task(session.post(f"{base}/upload", data=big))
                # part 1 is held by S3, and with it the only slot
                await eventually(lambda: uploader.slots.used == PART)
                late = aiohttp.FormData()
                late_payload = os.urandom(2 * MIB)
                late.add_field("file", late_payload, filename="late.bin")
                second = asyncio.create_task(session.post(f"{base}/upload", data=late))
                if waits:
                    await eventually(lambda: uploader.busy() is not None)
                    ready = await session.get(f"{base}/ready")
                    assert ready.status == 503
                    assert "memory" in (await ready.json())["message"]
                else:
                    refused = await asyncio.wait_for(second, 60)
                    assert refused.status == 503
                    assert (await refused.json())["error"] == "busy"
                    assert int(refused.headers["Retry-After"]) > 0
                thaw.set()
                done = await asyncio.wait_for(first, 120)
                assert done.status == 201, await done.text()
                keys = [(await done.json())["files"][0]["key"]]
                expected = {keys[0]: payload}
                if waits:
                    served = await asyncio.wait_for(second, 120)
                    assert served.status == 201, await served.text()
                    keys.append((await served.json())["files"][0]["key"])
                    expected[keys[1]] = late_payload
                assert (await session.get(f"{base}/ready")).status == 200
        finally:
            await server.close()
    assert sorted(await stored_keys(s3, bucket)) == sorted(keys)
    assert await open_uploads(s3, bucket) == []
    for key, data in expected.items():
        obj = await s3.get_object(Bucket=bucket, Key=key)
        async with obj["Body"] as body:
            assert await body.read() == data


async def test_concurrent_uploads_beyond_the_slots_all_complete(
    aiohttp_client: Callable[..., Any],
    make_s3_settings: Callable[..., S3Settings],
    s3: Any,
    bucket: str,
) -> None:
    """12 concurrent 12 MiB uploads against a budget of one small pool and two part slots:
    partial buffers never hold the memory a slot holder needs (a slot reserves its whole part),
    so all complete (before, most waited on each other until 503 busy)."""
    settings = make_s3_settings(memory_budget=3 * PART, memory_wait=60.0)
    client = await aiohttp_client(create_app(settings))
    payloads = [os.urandom(12 * MIB) for _ in range(12)]

    async def send(data: bytes) -> str:
        form = aiohttp.FormData()
        form.add_field("file", data, filename="c.bin")
        resp = await client.post("/s3/upload", data=form)
        answer = await resp.json()
        assert resp.status == 201, answer
        key: str = answer["files"][0]["key"]
        return key

    keys = await asyncio.gather(*(send(p) for p in payloads))
    assert sorted(keys) == sorted(await stored_keys(s3, bucket))
    assert client.app[UPLOADER].meter.used == 0


async def test_a_request_with_more_small_files_than_the_budget_holds_succeeds(
    aiohttp_client: Callable[..., Any],
    make_s3_settings: Callable[..., S3Settings],
    s3: Any,
    bucket: str,
) -> None:
    """Six files of 4 MiB (each under a part) against a budget of 10 MiB: each file leaves
    memory for an open upload of one part when the next begins, so the request fits (before,
    its files stayed in memory to the end and it could only end in 503 busy)."""
    settings = make_s3_settings(memory_budget=2 * PART, memory_wait=5.0)
    client = await aiohttp_client(create_app(settings))
    files = [os.urandom(4 * MIB) for _ in range(6)]
    form = aiohttp.FormData()
    for i, data in enumerate(files):
        form.add_field("file", data, filename=f"{i}.bin")
    resp = await client.post("/s3/upload", data=form)
    answer = await resp.json()
    assert resp.status == 201, answer
    for item, data in zip(answer["files"], files, strict=True):
        obj = await s3.get_object(Bucket=bucket, Key=item["key"])
        async with obj["Body"] as body:
            assert await body.read() == data
    assert await open_uploads(s3, bucket) == []
