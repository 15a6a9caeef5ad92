"""Idempotent sends: the Idempotency-Key header and per-item keys, and what a stalled SQS leaves
in the queue when botocore resends a SendMessageBatch whose answer came too late.

The stall is the fault proxy holding SendMessageBatch answers after moto stored the batch, for
longer than the service's SQS read timeout: botocore gives up on the answer and sends the batch
again, exactly what a frozen backend does. Nothing here asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest

from common.config import AwsSettings
from common.idempotency import scoped_digest
from tests.conftest import QueueFactory
from tests.faultproxy import Call, Fault, Rule, fault_proxy
from tests.sqssvc.conftest import Client, drain

SEND_BATCH = "AmazonSQS.SendMessageBatch"
MakeClient = Callable[..., Awaitable[Client]]
# SendMessageBatch calls whose answer is held back. On a FIFO queue the first batch holds every
# group, so it is the only call in flight and each held call is one more resend of it (botocore
# backs off longer before each): fewer there.
HELD = 4
HELD_FIFO = 2
READ_TIMEOUT = 1.0  # the service's SQS read timeout in these tests
HOLD = 3 * READ_TIMEOUT  # longer than the read timeout: the answer always comes too late


def hold_first(calls: int) -> Rule:
    """Forward the first ``calls`` SendMessageBatch calls to moto, then hold their answers past
    the read timeout (moto stored the batch; the service never hears so)."""
    held = 0

    def rule(call: Call) -> Fault | None:
        nonlocal held
        if call.target != SEND_BATCH or held >= calls:
            return None
        held += 1
        return Fault(hold=HOLD)

    return rule


async def stalled_client(
    make_client: MakeClient, aws_settings: AwsSettings, proxy_url: str, queue_url: str
) -> Client:
    """sqssvc behind the proxy with a short SQS read timeout. More attempts than held calls, so
    no batch can run out of them, and no circuit breaker to cut the test short."""
    aws = replace(aws_settings, endpoint_url=proxy_url, max_attempts=HELD + 1, breaker_threshold=0)
    return await make_client(queue_url, aws=aws, read_timeout=READ_TIMEOUT)


def item(i: int, fifo: bool) -> tuple[str, dict[str, Any], dict[str, str]]:
    """(body, JSON payload, headers) of the i-th send: every other one with an idempotency key."""
    body = f"m-{i:02d}"
    payload: dict[str, Any] = {"message": body}
    if fifo:
        payload["group_id"] = f"g{i % 6}"
    headers = {"Idempotency-Key": f"key {i}"} if i % 2 else {}
    return body, payload, headers


async def test_stalled_backend_standard_copies_share_one_dedup_id(
    make_client: MakeClient, aws_settings: AwsSettings, moto_url: str, sqs: Any, queue_url: str
) -> None:
    """Standard queue, 60 concurrent sends while SendMessageBatch answers come too late: all
    answer 200; some messages are stored twice (botocore resent them), and every copy of a
    message carries the same dedup_id attribute, the one its answer names (the key's scoped
    digest when it had a key)."""
    async with fault_proxy(moto_url, hold_first(HELD)) as proxy:
        client = await stalled_client(make_client, aws_settings, proxy.url, queue_url)
        sends = [item(i, fifo=False) for i in range(60)]
        responses = await asyncio.gather(
            *(client.post("/sqs/send", json=p, headers=h) for _, p, h in sends)
        )
        answers = [(r.status, await r.json()) for r in responses]
    assert [status for status, _ in answers] == [200] * 60, answers
    copies: defaultdict[str, list[str]] = defaultdict(list)
    for m in await drain(sqs, queue_url):
        copies[m["Body"]].append(m["MessageAttributes"]["dedup_id"]["StringValue"])
    assert set(copies) == {body for body, _, _ in sends}
    assert any(len(ids) > 1 for ids in copies.values())  # the stall did cause resends
    for (body, _, headers), (_, answer) in zip(sends, answers, strict=True):
        assert set(copies[body]) == {answer["dedup_id"]}, body
        if headers:
            assert answer["dedup_id"] == scoped_digest(headers["Idempotency-Key"], "")


async def test_stalled_backend_fifo_stores_each_acknowledged_message_once(
    make_client: MakeClient,
    aws_settings: AwsSettings,
    moto_url: str,
    sqs: Any,
    make_queue: QueueFactory,
) -> None:
    """FIFO queue without content-based deduplication, same stall: every send answers 200 and
    every message is in the queue exactly once, keyed or not (the resent entries carry the same
    MessageDeduplicationId, so SQS drops the copies)."""
    queue = await make_queue(fifo=True)
    async with fault_proxy(moto_url, hold_first(HELD_FIFO)) as proxy:
        client = await stalled_client(make_client, aws_settings, proxy.url, queue)
        sends = [item(i, fifo=True) for i in range(60)]
        responses = await asyncio.gather(
            *(client.post("/sqs/send", json=p, headers=h) for _, p, h in sends)
        )
        statuses = [r.status for r in responses]
        calls = sum(1 for c in proxy.calls if c.target == SEND_BATCH)
    assert statuses == [200] * 60, [await r.text() for r in responses]
    assert calls > HELD_FIFO  # the held batch was sent again
    stored = Counter(m["Body"] for m in await drain(sqs, queue))
    assert stored == Counter(body for body, _, _ in sends)


async def test_a_resend_is_counted_on_batch_sent(
    make_client: MakeClient,
    aws_settings: AwsSettings,
    moto_url: str,
    queue_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The batch_sent line of a call botocore had to send twice says so: resends and the EMF
    metric BatchResends are 1."""
    from common.logging import configure_logging
    from tests.conftest import common_settings

    configure_logging(common_settings("sqssvc", AwsSettings(), "/sqs"))
    async with fault_proxy(moto_url, hold_first(1)) as proxy:
        client = await stalled_client(make_client, aws_settings, proxy.url, queue_url)
        assert (await client.post("/sqs/send", json={"message": "once more"})).status == 200
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    (sent,) = [x for x in lines if x["event"] == "batch_sent"]
    assert (sent["resends"], sent["BatchResends"]) == (1, 1)


async def test_fifo_replay_of_a_key_is_stored_once(
    make_client: MakeClient, make_queue: QueueFactory, sqs: Any
) -> None:
    """FIFO, no content-based deduplication: the same Idempotency-Key sent three times (once
    with another body) answers 200 each time with one dedup_id, and SQS stores the first only."""
    queue = await make_queue(fifo=True)
    client = await make_client(queue)
    headers = {"Idempotency-Key": "order-42/create"}
    answers = []
    for body in ("create 42", "create 42", "create 42, changed"):
        resp = await client.post(
            "/sqs/send", json={"message": body, "group_id": "order-42"}, headers=headers
        )
        assert resp.status == 200, await resp.text()
        answers.append(await resp.json())
    assert {a["dedup_id"] for a in answers} == {scoped_digest("order-42/create", "")}
    assert [m["Body"] for m in await drain(sqs, queue)] == ["create 42"]


async def test_deduplication_id_wins_over_the_key(
    make_client: MakeClient, make_queue: QueueFactory, sqs: Any
) -> None:
    """FIFO: a deduplication_id in the body is the MessageDeduplicationId, whatever the key."""
    queue = await make_queue(fifo=True)
    client = await make_client(queue)
    for key in ("first", "second"):
        resp = await client.post(
            "/sqs/send",
            json={"message": key, "group_id": "g", "deduplication_id": "mine"},
            headers={"Idempotency-Key": key},
        )
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["dedup_id"] == "mine"
    assert [m["Body"] for m in await drain(sqs, queue)] == ["first"]


async def test_keys_are_scoped_per_api_key(
    make_client: MakeClient, make_sqs_settings: Any, make_queue: QueueFactory, sqs: Any
) -> None:
    """With API keys on, two callers' equal idempotency keys are different keys: each caller's
    first send is stored, a caller's replay is not."""
    queue = await make_queue(fifo=True)
    api_keys = ("alice-key", "bob-key")
    digests = tuple(hashlib.sha256(k.encode()).hexdigest() for k in api_keys)
    common = replace(make_sqs_settings(queue).common, api_keys_sha256=digests)
    client = await make_client(queue, common=common)
    ids = []
    for api_key, body in (("alice-key", "a1"), ("bob-key", "b1"), ("alice-key", "a2")):
        resp = await client.post(
            "/sqs/send",
            json={"message": body, "group_id": "g"},
            headers={"Idempotency-Key": "same", "X-Api-Key": api_key},
        )
        assert resp.status == 200, await resp.text()
        ids.append((await resp.json())["dedup_id"])
    assert ids[0] == ids[2] != ids[1]
    assert ids[0] == scoped_digest("same", digests[0])
    assert [m["Body"] for m in await drain(sqs, queue)] == ["a1", "b1"]


async def test_standard_replay_carries_the_same_dedup_id(
    client: Client, sqs: Any, queue_url: str
) -> None:
    """Standard queue: a replayed key is stored again (SQS is at-least-once) with the same
    dedup_id; a send without a key gets an id of its own."""
    headers = {"Idempotency-Key": "k-1"}
    for _ in range(2):
        assert (
            await client.post("/sqs/send", json={"message": "x"}, headers=headers)
        ).status == 200
    assert (await client.post("/sqs/send", json={"message": "x"})).status == 200
    ids = Counter(
        m["MessageAttributes"]["dedup_id"]["StringValue"] for m in await drain(sqs, queue_url)
    )
    assert ids[scoped_digest("k-1", "")] == 2
    assert sorted(ids.values()) == [1, 2]


@pytest.mark.parametrize(
    "value",
    ["", "x" * 256, "tab\there", "clé", ["a", "b"]],
    ids=["empty", "256 chars", "tab", "non-ASCII", "twice"],
)
async def test_invalid_key_is_400_and_sends_nothing(
    client: Client, sqs: Any, queue_url: str, value: str | list[str]
) -> None:
    """A key that is not 1-255 printable ASCII characters, or sent twice, answers
    400 invalid_idempotency_key, and nothing is sent."""
    from multidict import CIMultiDict

    headers: CIMultiDict[str] = CIMultiDict({"Content-Type": "application/json"})
    for v in [value] if isinstance(value, str) else value:
        headers.add("Idempotency-Key", v)
    resp = await client.post("/sqs/send", data=b'{"message": "x"}', headers=headers)
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_idempotency_key"
    assert await drain(sqs, queue_url) == []


async def test_send_batch_refuses_the_header(client: Client, sqs: Any, queue_url: str) -> None:
    """/send-batch with an Idempotency-Key header: 400, nothing sent (its keys go per item)."""
    resp = await client.post(
        "/sqs/send-batch",
        json={"messages": [{"message": "a"}]},
        headers={"Idempotency-Key": "k"},
    )
    assert resp.status == 400
    assert (await resp.json())["error"] == "idempotency_key_not_allowed"
    assert await drain(sqs, queue_url) == []


async def test_send_batch_per_item_keys(
    make_client: MakeClient, make_queue: QueueFactory, sqs: Any
) -> None:
    """FIFO /send-batch: each item's idempotency_key deduplicates that item across requests;
    items without one are stored each time."""
    queue = await make_queue(fifo=True)
    client = await make_client(queue)
    first = [
        {"message": "a", "group_id": "g", "idempotency_key": "ka"},
        {"message": "b", "group_id": "g"},
    ]
    second = [
        {"message": "a", "group_id": "g", "idempotency_key": "ka"},
        {"message": "b", "group_id": "g"},
        {"message": "c", "group_id": "g", "idempotency_key": "kc"},
    ]
    results = []
    for messages in (first, second):
        resp = await client.post("/sqs/send-batch", json={"messages": messages})
        assert resp.status == 200, await resp.text()
        results.append((await resp.json())["results"])
    assert results[0][0]["dedup_id"] == results[1][0]["dedup_id"] == scoped_digest("ka", "")
    assert results[0][1]["dedup_id"] != results[1][1]["dedup_id"]
    assert [m["Body"] for m in await drain(sqs, queue)] == ["a", "b", "b", "c"]


@pytest.mark.parametrize(
    ("second_key", "code", "status"),
    [("x" * 256, "invalid_idempotency_key", 400), ("k", "duplicate_idempotency_key", 422)],
)
async def test_send_batch_bad_item_keys_send_nothing(
    client: Client, sqs: Any, queue_url: str, second_key: str, code: str, status: int
) -> None:
    """An invalid item key (400 in the item) or a key repeated within the request (one of the two
    would be dropped): 422 invalid_messages naming the item, and nothing is sent."""
    messages = [
        {"message": "a", "idempotency_key": "k"},
        {"message": "b", "idempotency_key": second_key},
    ]
    resp = await client.post("/sqs/send-batch", json={"messages": messages})
    assert resp.status == 422
    body = await resp.json()
    assert body["error"] == "invalid_messages"
    (error,) = body["errors"]
    assert (error["index"], error["status"], error["error"], error["field"]) == (
        1,
        status,
        code,
        "messages[1].idempotency_key",
    )
    assert await drain(sqs, queue_url) == []


async def test_content_deduplication_queue_gets_no_made_up_id(
    make_client: MakeClient, fifo_queue_url: str, sqs: Any
) -> None:
    """SQS_CONTENT_DEDUPLICATION=true: a message without a key or deduplication_id goes without a
    MessageDeduplicationId (SQS deduplicates the equal body); a keyed one still gets its id."""
    client = await make_client(fifo_queue_url, content_deduplication=True)
    for _ in range(2):
        resp = await client.post("/sqs/send", json={"message": "same", "group_id": "g"})
        assert resp.status == 200, await resp.text()
        assert "dedup_id" not in await resp.json()
    keyed = await client.post(
        "/sqs/send", json={"message": "same", "group_id": "g"}, headers={"Idempotency-Key": "k"}
    )
    assert (await keyed.json())["dedup_id"] == scoped_digest("k", "")
    assert [m["Body"] for m in await drain(sqs, fifo_queue_url)] == ["same", "same"]


async def test_send_batch_two_items_with_one_deduplication_id_send_nothing(
    make_client: MakeClient, fifo_queue_url: str, sqs: Any
) -> None:
    """FIFO keeps one message per deduplication id: both were answered 200 and only the first
    stored, before. Now 422 naming the second item, and nothing is sent."""
    client = await make_client(fifo_queue_url)
    messages = [
        {"message": "order 7 created", "group_id": "o7", "deduplication_id": "o7"},
        {"message": "order 7 paid", "group_id": "o7", "deduplication_id": "o7"},
    ]
    resp = await client.post("/sqs/send-batch", json={"messages": messages})
    body = await resp.json()
    assert (resp.status, body["error"]) == (422, "invalid_messages"), body
    (error,) = body["errors"]
    assert (error["index"], error["error"], error["field"]) == (
        1,
        "duplicate_deduplication_id",
        "messages[1].deduplication_id",
    )
    assert await drain(sqs, fifo_queue_url) == []
    # In two groups: SQS keeps both when it deduplicates per group (high throughput), so the
    # service sends both and lets the queue's DeduplicationScope decide.
    messages[1]["group_id"] = "o8"
    resp = await client.post("/sqs/send-batch", json={"messages": messages})
    assert resp.status == 200, await resp.text()
