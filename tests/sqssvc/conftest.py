"""sqssvc fixtures: fresh queues on the session's moto server, settings and apps pointing at them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from common.config import AwsSettings
from sqssvc.app import create_app
from sqssvc.config import SqsSettings
from tests.conftest import QueueFactory, common_settings

Client = TestClient[Any, Any]


@pytest.fixture
async def queue_url(make_queue: QueueFactory) -> str:
    """A fresh standard queue."""
    return await make_queue()


@pytest.fixture
async def fifo_queue_url(make_queue: QueueFactory) -> str:
    """A fresh FIFO queue with content-based deduplication (so a deduplication id is optional)."""
    return await make_queue(fifo=True, ContentBasedDeduplication="true")


@pytest.fixture
def make_sqs_settings(aws_settings: AwsSettings) -> Callable[..., SqsSettings]:
    """SqsSettings for a queue (None: local-safe mode) on moto; override any field."""

    def make(
        queue_url: str | None, *, aws: AwsSettings | None = None, **overrides: Any
    ) -> SqsSettings:
        base = SqsSettings(
            common=common_settings("sqssvc", aws or aws_settings, "/sqs"),
            queue_url=queue_url,
        )
        return replace(base, **overrides)

    return make


@pytest.fixture
def make_client(
    aiohttp_client: Callable[..., Awaitable[Client]],
    make_sqs_settings: Callable[..., SqsSettings],
) -> Callable[..., Awaitable[Client]]:
    """sqssvc built by its real factory, on a real socket; arguments as ``make_sqs_settings``."""

    async def make(queue_url: str | None, **overrides: Any) -> Client:
        return await aiohttp_client(create_app(make_sqs_settings(queue_url, **overrides)))

    return make


@pytest.fixture
async def client(make_client: Callable[..., Awaitable[Client]], queue_url: str) -> Client:
    """sqssvc sending to a fresh standard queue."""
    return await make_client(queue_url)


async def drain(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """Receive and delete every message of the queue, in the order SQS hands them out."""
    out: list[dict[str, Any]] = []
    while True:
        resp = await sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=300,
            WaitTimeSeconds=0,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        )
        messages = resp.get("Messages", [])
        if not messages:
            return out
        out.extend(messages)
        await sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ],
        )


@contextlib.asynccontextmanager
async def consuming(sqs: Any, queue_url: str, workers: int = 10) -> AsyncIterator[dict[str, str]]:
    """Receive and delete messages while the block runs; yields ``{message id: body}``.

    moto's cost per send grows with the number of messages in the queue (it rescans them all),
    so a test that stores many messages keeps the queue short by consuming alongside. Keyed by
    message id: two receives of one stored message are one entry, two stores of one body are two.
    """
    seen: dict[str, str] = {}
    stop = asyncio.Event()

    async def worker() -> None:
        while True:
            resp = await sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=300
            )
            messages = resp.get("Messages", [])
            if not messages:
                if stop.is_set():
                    return
                await asyncio.sleep(0.01)
                continue
            seen.update((m["MessageId"], m["Body"]) for m in messages)
            await sqs.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)
                ],
            )

    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    try:
        yield seen
    finally:
        stop.set()
        await asyncio.gather(*tasks)
