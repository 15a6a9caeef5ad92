"""POST /sqs/send and /sqs/send-batch against a real moto server: what lands in the queue, and how."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import aiohttp

from common.appkeys import SHUTTING_DOWN
from common.config import AwsSettings
from common.errors import ServiceError, Unavailable
from sqssvc.app import none_sent
from tests.conftest import QueueFactory
from tests.faultproxy import Call, Fault, fault_proxy
from tests.sqssvc.conftest import Client, consuming, drain

SEND_BATCH = "AmazonSQS.SendMessageBatch"
MakeClient = Callable[..., Awaitable[Client]]


def md5(text: str) -> str:
    """MD5 hex digest of the UTF-8 text, as SQS reports it."""
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


async def test_send_string_with_attributes_lands_in_queue(
    client: Client, sqs: Any, queue_url: str
) -> None:
    """A string message is stored as is, with String, Number and Binary attributes, after 200."""
    attributes = {
        "kind": "order",
        "amount": 12.5,
        "blob": {"type": "Binary", "value": base64.b64encode(b"\x00\x01").decode()},
        "ref": {"type": "String.uuid", "value": "abc"},
    }
    resp = await client.post("/sqs/send", json={"message": "héllo", "attributes": attributes})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["request_id"] == resp.headers["X-Request-ID"]
    assert body["md5_of_body"] == md5("héllo")
    assert "md5_of_message_attributes" in body
    (stored,) = await drain(sqs, queue_url)
    assert stored["MessageId"] == body["message_id"]
    assert stored["Body"] == "héllo"
    attrs = stored["MessageAttributes"]
    assert attrs["kind"] == {"DataType": "String", "StringValue": "order"}
    assert attrs["amount"] == {"DataType": "Number", "StringValue": "12.5"}
    assert attrs["blob"] == {"DataType": "Binary", "BinaryValue": b"\x00\x01"}
    assert attrs["ref"] == {"DataType": "String.uuid", "StringValue": "abc"}


async def test_json_value_is_sent_as_compact_json_text(
    client: Client, sqs: Any, queue_url: str
) -> None:
    """A non-string message becomes its compact JSON text; big integers keep every digit."""
    raw = b'{"message": {"a": [1, 2.5, "\\u00e9"], "big": 123456789012345678901234567890}}'
    resp = await client.post("/sqs/send", data=raw, headers={"Content-Type": "application/json"})
    assert resp.status == 200, await resp.text()
    (stored,) = await drain(sqs, queue_url)
    assert stored["Body"] == '{"a":[1,2.5,"é"],"big":123456789012345678901234567890}'


async def test_delay_seconds_reaches_sqs(client: Client, sqs: Any, queue_url: str) -> None:
    """delay_seconds is passed on: the message is not visible right away."""
    resp = await client.post("/sqs/send", json={"message": "later", "delay_seconds": 900})
    assert resp.status == 200
    assert await drain(sqs, queue_url) == []


async def test_1000_concurrent_sends_each_stored_once_in_few_calls(
    make_client: MakeClient, aws_settings: AwsSettings, moto_url: str, sqs: Any, queue_url: str
) -> None:
    """1,000 concurrent /send: every 2xx message is in the queue exactly once, in <= 120 calls.

    A proxy between the service and moto counts the service's SQS calls.
    """
    async with fault_proxy(moto_url) as proxy, consuming(sqs, queue_url) as stored:
        client = await make_client(queue_url, aws=replace(aws_settings, endpoint_url=proxy.url))
        # No connection limit: all 1,000 requests are in flight at once.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            url = str(client.make_url("/sqs/send"))

            async def one(i: int) -> tuple[str, int]:
                body = f"message-{i:04d}"
                async with session.post(url, json={"message": body}) as r:
                    return body, r.status

            outcomes = await asyncio.gather(*(one(i) for i in range(1000)))
        calls = [c.target for c in proxy.calls]
    sent = sorted(body for body, status in outcomes if 200 <= status < 300)
    assert len(sent) == 1000, Counter(status for _, status in outcomes)
    assert sorted(stored.values()) == sent  # each exactly once, nothing else
    assert set(calls) == {SEND_BATCH}
    assert len(calls) <= 120, len(calls)


async def test_send_batch_all_stored_200(client: Client, sqs: Any, queue_url: str) -> None:
    """/send-batch answers 200 with one result per message, in request order."""
    messages = [{"message": f"b{i:02d}"} for i in range(25)]
    resp = await client.post("/sqs/send-batch", json={"messages": messages})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert (body["succeeded"], body["failed"]) == (25, 0)
    assert [r["index"] for r in body["results"]] == list(range(25))
    assert [r["md5_of_body"] for r in body["results"]] == [md5(f"b{i:02d}") for i in range(25)]
    stored = {m["MessageId"]: m["Body"] for m in await drain(sqs, queue_url)}
    assert {r["message_id"]: f"b{r['index']:02d}" for r in body["results"]} == stored


async def test_send_batch_partial_failure_is_207(
    make_client: MakeClient, make_queue: QueueFactory, sqs: Any
) -> None:
    """Entries SQS refuses get their own error, the rest are stored: 207, never a silent success.

    A FIFO queue without content-based deduplication refuses messages lacking a deduplication
    id (moto refuses the whole call; the batcher resends each entry alone to isolate them). The
    service is told the queue has it (SQS_CONTENT_DEDUPLICATION), so it sends such messages
    without one.
    """
    url = await make_queue(fifo=True)
    client = await make_client(url, content_deduplication=True)
    messages = [
        {"message": "one", "group_id": "g", "deduplication_id": "d1"},
        {"message": "two", "group_id": "g"},
        {"message": "three", "group_id": "g", "deduplication_id": "d3"},
    ]
    resp = await client.post("/sqs/send-batch", json={"messages": messages})
    assert resp.status == 207, await resp.text()
    body = await resp.json()
    assert (body["succeeded"], body["failed"]) == (2, 1)
    ok1, bad, ok3 = body["results"]
    assert ok1["status"] == ok3["status"] == 200
    assert (bad["status"], bad["error"], bad["sqs_code"]) == (
        422,
        "message_rejected",
        "InvalidParameterValue",
    )
    assert [m["Body"] for m in await drain(sqs, url)] == ["one", "three"]


def test_send_batch_with_nothing_stored_is_never_2xx() -> None:
    """None stored: the most severe failure answers, whether the failures were alike or not.

    Our own logic, tested directly: one request whose items fail in different ways (SQS refusing
    one entry, the retries of another running out) needs failures moto cannot be made to mix.
    """
    rejected = ServiceError("SQS refused it", code="message_rejected", status=422)
    down = Unavailable("SQS failed after retries", code="backend_unavailable", retry_after=2)
    details = {"results": ["…"], "succeeded": 0, "failed": 2}
    assert none_sent([rejected], 2, None, details) is None  # one was stored: 207

    alike = none_sent([rejected, rejected], 2, None, details)
    assert alike is not None
    assert (alike.status, alike.code) == (422, "message_rejected")
    assert "other failures" not in alike.message

    mixed = none_sent([rejected, down], 2, 2, details)
    assert mixed is not None
    assert (mixed.status, mixed.code, mixed.retry_after) == (503, "backend_unavailable", 2)
    assert mixed.message.endswith("(and other failures)")
    assert mixed.details == details


async def test_fifo_sends_keep_group_order(
    make_client: MakeClient, fifo_queue_url: str, sqs: Any
) -> None:
    """FIFO: producers of four groups send concurrently (each in order); each group stays in order.

    Each producer awaits one answer before its next send, so its order is well defined; the
    groups' messages share batches. (Many pending messages of one group: see the batch test.)
    """
    client = await make_client(fifo_queue_url, max_batch=3)
    groups = ("red", "blue", "green", "gold")

    async def producer(g: str) -> None:
        for i in range(8):
            # An explicit deduplication id makes moto return a sequence number (AWS always does).
            r = await client.post(
                "/sqs/send",
                json={"message": f"{g}-{i:02d}", "group_id": g, "deduplication_id": f"{g}{i}"},
            )
            assert r.status == 200, await r.text()
            assert (await r.json())["sequence_number"]

    await asyncio.gather(*(producer(g) for g in groups))
    stored = [m["Body"] for m in await drain(sqs, fifo_queue_url)]
    assert len(stored) == 32
    for g in groups:
        assert [b for b in stored if b.startswith(g)] == [f"{g}-{i:02d}" for i in range(8)]


async def test_send_batch_fifo_request_order_is_group_order(
    make_client: MakeClient, fifo_queue_url: str, sqs: Any
) -> None:
    """The messages of one /send-batch request keep their request order within a group."""
    client = await make_client(fifo_queue_url)
    messages = [{"message": f"x{i:02d}", "group_id": "only"} for i in range(30)]
    resp = await client.post("/sqs/send-batch", json={"messages": messages})
    assert resp.status == 200
    assert [m["Body"] for m in await drain(sqs, fifo_queue_url)] == [f"x{i:02d}" for i in range(30)]


async def test_sqs_down_is_503_for_send_and_send_batch(
    make_client: MakeClient, aws_settings: AwsSettings, moto_url: str, sqs: Any, queue_url: str
) -> None:
    """When every SendMessageBatch fails, callers get 503 backend_unavailable with Retry-After."""

    def rule(call: Call) -> Fault | None:
        return Fault(status=503, code="ServiceUnavailable") if call.target == SEND_BATCH else None

    async with fault_proxy(moto_url, rule) as proxy:
        client = await make_client(queue_url, aws=replace(aws_settings, endpoint_url=proxy.url))
        one = await client.post("/sqs/send", json={"message": "x"})
        assert one.status == 503
        assert (await one.json())["error"] == "backend_unavailable"
        assert one.headers["Retry-After"]
        many = await client.post(
            "/sqs/send-batch", json={"messages": [{"message": "y"}, {"message": "z"}]}
        )
        assert many.status == 503
        body = await many.json()
        assert body["error"] == "backend_unavailable"
        assert [r["status"] for r in body["results"]] == [503, 503]
        assert many.headers["Retry-After"]
    assert await drain(sqs, queue_url) == []


async def test_local_safe_mode(make_client: MakeClient) -> None:
    """Without QUEUE_URL: sends answer 503 not_configured, ready 503, health 200."""
    client = await make_client(None)
    for path, payload in (("/sqs/send", {"message": "x"}), ("/sqs/send-batch", {"messages": []})):
        resp = await client.post(path, json=payload)
        assert resp.status == 503
        body = await resp.json()
        assert body["error"] == "not_configured"
        assert body["request_id"] == resp.headers["X-Request-ID"]
    ready = await client.get("/sqs/ready")
    assert ready.status == 503
    assert "QUEUE_URL" in (await ready.json())["message"]
    for path in ("/health", "/sqs/health"):
        health = await client.get(path)
        assert health.status == 200
        assert (await health.json())["service"] == "sqssvc"


async def test_ready_against_moto(
    make_client: MakeClient, client: Client, queue_url: str, fifo_queue_url: str, sqs: Any
) -> None:
    """Ready when the queue exists (probe stores nothing); 503 naming the cause when it does not."""
    ready = await client.get("/sqs/ready")
    assert ready.status == 200, await ready.text()
    assert await drain(sqs, queue_url) == []
    fifo = await make_client(fifo_queue_url)
    assert (await fifo.get("/sqs/ready")).status == 200
    assert await drain(sqs, fifo_queue_url) == []
    missing = await make_client(queue_url.rsplit("/", 1)[0] + "/no-such-queue")
    not_ready = await missing.get("/sqs/ready")
    assert not_ready.status == 503
    body = await not_ready.json()
    assert body["error"] == "not_ready"
    assert "NonExistentQueue" in body["message"] or "QueueDoesNotExist" in body["message"]


async def test_sqs_refusing_a_send_is_4xx_with_its_code(
    make_client: MakeClient, make_queue: QueueFactory
) -> None:
    """/send of a message SQS refuses (FIFO, no deduplication id) is 422 with SQS's code.

    (SQS_CONTENT_DEDUPLICATION=true wrongly claims the queue deduplicates by content.)
    """
    client = await make_client(await make_queue(fifo=True), content_deduplication=True)
    resp = await client.post("/sqs/send", json={"message": "x", "group_id": "g"})
    assert resp.status == 422
    body = await resp.json()
    assert (body["error"], body["sqs_code"]) == ("message_rejected", "InvalidParameterValue")


async def test_large_utf8_message_round_trips(client: Client, sqs: Any, queue_url: str) -> None:
    """A body just under 1 MiB in UTF-8 bytes (fewer characters) is accepted and stored intact."""
    body = "€" * ((1024**2 - 100) // 3)  # 3 bytes each; the dedup_id attribute takes 78
    resp = await client.post(
        "/sqs/send",
        data=json.dumps({"message": body}),
        headers={"Content-Type": "application/json"},
    )
    assert resp.status == 200, await resp.text()
    (stored,) = await drain(sqs, queue_url)
    assert stored["Body"] == body


async def test_send_during_shutdown_is_refused(client: Client, sqs: Any, queue_url: str) -> None:
    """Once shutdown has begun, a send is refused with 503 shutting_down and nothing is sent."""
    client.app[SHUTTING_DOWN].set()
    resp = await client.post("/sqs/send", json={"message": "too late"})
    assert resp.status == 503
    assert (await resp.json())["error"] == "shutting_down"
    assert resp.headers["Retry-After"]
    assert await drain(sqs, queue_url) == []


async def test_an_oversized_send_is_refused_before_its_body_is_asked_for(
    client: Client, sqs: Any, queue_url: str
) -> None:
    """``Expect: 100-continue`` with a Content-Length over the body limit: the first answer is
    ``413``, not ``100 Continue``, so the client never sends the body (both body routes)."""
    for route in ("/sqs/send", "/sqs/send-batch"):
        reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
        writer.write(
            f"POST {route} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            "Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        writer.close()
        assert head.startswith(b"HTTP/1.1 413 "), head
    assert await drain(sqs, queue_url) == []
