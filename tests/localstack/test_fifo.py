"""FIFO sends through sqssvc against LocalStack: sequence numbers, order within a group, and
deduplication, none of which moto answers as SQS does (it omits ``SequenceNumber``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient

from sqssvc.app import create_app
from sqssvc.config import SqsSettings
from tests.conftest import QueueFactory
from tests.sqssvc.conftest import drain

Client = TestClient[Any, Any]


async def fifo_client(
    aiohttp_client: Callable[..., Awaitable[Client]],
    make_sqs_settings: Callable[..., SqsSettings],
    make_queue: QueueFactory,
) -> tuple[Client, str]:
    """sqssvc on a fresh FIFO queue that deduplicates by content (and says so)."""
    url = await make_queue(fifo=True, ContentBasedDeduplication="true")
    client = await aiohttp_client(create_app(make_sqs_settings(url, content_deduplication=True)))
    return client, url


async def test_fifo_sends_answer_sequence_numbers_and_keep_group_order(
    aiohttp_client: Callable[..., Awaitable[Client]],
    make_sqs_settings: Callable[..., SqsSettings],
    make_queue: QueueFactory,
    sqs: Any,
) -> None:
    """Each /send to a FIFO queue answers the ``sequence_number`` SQS gave the message; they
    rise in send order, and the group is received in that order with those numbers and ids."""
    client, url = await fifo_client(aiohttp_client, make_sqs_settings, make_queue)
    sent = [f"step {i}" for i in range(12)]
    answers = []
    for body in sent:
        resp = await client.post("/sqs/send", json={"message": body, "group_id": "order-42"})
        assert resp.status == 200, await resp.text()
        answers.append(await resp.json())
    numbers = [int(a["sequence_number"]) for a in answers]
    assert numbers == sorted(set(numbers))
    received = await drain(sqs, url)
    assert [m["Body"] for m in received] == sent
    assert [m["MessageId"] for m in received] == [a["message_id"] for a in answers]
    assert [m["Attributes"]["SequenceNumber"] for m in received] == [
        a["sequence_number"] for a in answers
    ]


async def test_fifo_batch_keeps_each_groups_order(
    aiohttp_client: Callable[..., Awaitable[Client]],
    make_sqs_settings: Callable[..., SqsSettings],
    make_queue: QueueFactory,
    sqs: Any,
) -> None:
    """/send-batch with two groups interleaved: every item answers 200 with a sequence number,
    and each group is received in request order."""
    client, url = await fifo_client(aiohttp_client, make_sqs_settings, make_queue)
    items = [{"message": f"{g}-{i}", "group_id": g} for i in range(6) for g in ("a", "b")]
    resp = await client.post("/sqs/send-batch", json={"messages": items})
    assert resp.status == 200, await resp.text()
    results = (await resp.json())["results"]
    assert [r["status"] for r in results] == [200] * len(items)
    assert all(r["sequence_number"] for r in results)
    received = [m["Body"] for m in await drain(sqs, url)]
    for group in ("a", "b"):
        assert [b for b in received if b.startswith(f"{group}-")] == [
            f"{group}-{i}" for i in range(6)
        ]


async def test_fifo_duplicate_deduplication_id_gets_the_original_message_id(
    aiohttp_client: Callable[..., Awaitable[Client]],
    make_sqs_settings: Callable[..., SqsSettings],
    make_queue: QueueFactory,
    sqs: Any,
) -> None:
    """A second send with the same ``deduplication_id`` (a caller's retry) answers 200 with the
    first send's message id, and the queue holds the message once.

    Only the id is compared: LocalStack answers the duplicate with a sequence number of its own
    (the next one), and SQS's documentation does not say which one it gives.
    """
    client, url = await fifo_client(aiohttp_client, make_sqs_settings, make_queue)
    send = {"message": "charge card", "group_id": "order-7", "deduplication_id": "order-7-charge"}
    first = await client.post("/sqs/send", json=send)
    assert first.status == 200, await first.text()
    again = await client.post("/sqs/send", json=send)
    assert again.status == 200, await again.text()
    a, b = await first.json(), await again.json()
    assert b["message_id"] == a["message_id"]
    assert b["sequence_number"]
    assert b["dedup_id"] == a["dedup_id"] == "order-7-charge"
    received = await drain(sqs, url)
    assert [(m["MessageId"], m["Body"]) for m in received] == [(a["message_id"], "charge card")]
