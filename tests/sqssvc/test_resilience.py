"""sqssvc under backend faults (tests/faultproxy.py between the service and moto), and its
OpenAPI document against its routes."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest

from common.config import AwsSettings
from sqssvc.app import create_app
from sqssvc.config import SqsSettings
from tests.apidoc import assert_document_matches_routes
from tests.faultproxy import Call, Fault, fault_proxy
from tests.sqssvc.conftest import Client, drain

SEND_BATCH = "AmazonSQS.SendMessageBatch"


async def test_dead_backend_fails_fast_and_recovers(
    make_client: Callable[..., Awaitable[Client]],
    aws_settings: AwsSettings,
    moto_url: str,
    queue_url: str,
) -> None:
    """SQS gone: a few 503s, then immediate 503s without calls and /ready 503; both recover."""
    async with fault_proxy(moto_url) as proxy:
        aws = replace(
            aws_settings, endpoint_url=proxy.url, breaker_threshold=2, breaker_reset_seconds=1.0
        )
        client = await make_client(queue_url, aws=aws)
        assert (await client.get("/sqs/ready")).status == 200
        proxy.rule = lambda call: Fault(reset=True)
        for i in range(2):
            resp = await client.post("/sqs/send", json={"message": f"lost {i}"})
            assert resp.status == 503
        calls = len(proxy.calls)
        resp = await client.post("/sqs/send", json={"message": "fast"})
        assert resp.status == 503
        assert (await resp.json())["error"] == "backend_unavailable"
        assert resp.headers["Retry-After"].isdigit()
        assert len(proxy.calls) == calls
        ready = await client.get("/sqs/ready")
        assert ready.status == 503
        assert "circuit open" in (await ready.json())["message"]

        proxy.rule = None
        for _ in range(50):
            if (await client.get("/sqs/ready")).status == 200:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("/ready did not recover")
        assert (await client.post("/sqs/send", json={"message": "back"})).status == 200


async def test_stalled_backend_ends_within_timeout(
    make_client: Callable[..., Awaitable[Client]],
    aws_settings: AwsSettings,
    moto_url: str,
    queue_url: str,
) -> None:
    """SQS never answering: the send ends with a JSON 503 after the read timeout, no hang."""
    async with fault_proxy(moto_url, lambda call: Fault(stall=True)) as proxy:
        aws = replace(aws_settings, endpoint_url=proxy.url, max_attempts=1)
        client = await make_client(queue_url, aws=aws, read_timeout=1.0)  # SQS_READ_TIMEOUT
        resp = await asyncio.wait_for(client.post("/sqs/send", json={"message": "x"}), 60)
        assert resp.status == 503
        assert (await resp.json())["error"] == "backend_unavailable"


async def test_twenty_percent_failing_calls_lose_nothing(
    make_client: Callable[..., Awaitable[Client]],
    aws_settings: AwsSettings,
    moto_url: str,
    queue_url: str,
    sqs: Any,
) -> None:
    """20 % of SendMessageBatch calls fail (503/throttling): every send is 200 or a JSON 5xx, and
    the queue holds exactly the 200s, once each."""
    rng = random.Random(11)

    def flaky(call: Call) -> Fault | None:
        if call.target != SEND_BATCH or rng.random() >= 0.2:
            return None
        return (
            Fault(status=503, code="ServiceUnavailable")
            if rng.random() < 0.5
            else Fault(status=400, code="ThrottlingException")
        )

    async with fault_proxy(moto_url, flaky) as proxy:
        aws = replace(aws_settings, endpoint_url=proxy.url, breaker_threshold=0)
        client = await make_client(queue_url, aws=aws)
        bodies = [f"m-{i}" for i in range(200)]
        responses = await asyncio.gather(
            *(client.post("/sqs/send", json={"message": b}) for b in bodies)
        )
        acked = set()
        for body, resp in zip(bodies, responses, strict=True):
            data = await resp.json()
            if resp.status == 200:
                acked.add(body)
            else:
                assert resp.status in (502, 503), data
                assert data["error"] in ("backend_unavailable", "backend_error")
        assert sum(1 for c in proxy.calls if c.target == SEND_BATCH) >= 20
    stored = [m["Body"] for m in await drain(sqs, queue_url)]
    assert sorted(stored) == sorted(acked)  # no loss, no duplicate, nothing unacknowledged
    assert len(acked) >= 150  # botocore's retries carry most sends through


@pytest.mark.parametrize("with_keys", [False, True])
async def test_openapi_matches_routes(
    aiohttp_client: Callable[..., Any],
    make_sqs_settings: Callable[..., SqsSettings],
    queue_url: str,
    with_keys: bool,
) -> None:
    """Every route is documented and every documented operation is a route; the document is
    valid OpenAPI 3.1."""
    from openapi_spec_validator import validate

    settings = make_sqs_settings(queue_url)
    if with_keys:
        settings = replace(settings, common=replace(settings.common, api_keys_sha256=("0" * 64,)))
    app = create_app(settings)
    client = await aiohttp_client(app)
    doc = await (await client.get("/sqs/openapi.json")).json()
    validate(doc)
    assert_document_matches_routes(app, doc)
    assert ("security" in doc) is with_keys


async def test_batch_sent_line_carries_metrics_and_no_request_id(
    client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each SendMessageBatch call logs batch_sent with batch_size and EMF BatchSize/SendRetries,
    and no caller's request id (a batch serves many)."""
    from common.logging import configure_logging
    from tests.common.test_metrics import assert_valid_emf
    from tests.conftest import common_settings

    configure_logging(common_settings("sqssvc", AwsSettings(), "/sqs"))
    await asyncio.gather(*(client.post("/sqs/send", json={"message": str(i)}) for i in range(5)))
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    batches = [x for x in lines if x["event"] == "batch_sent"]
    assert sum(b["batch_size"] for b in batches) == 5
    for b in batches:
        assert_valid_emf(b)
        assert b["BatchSize"] == b["batch_size"]
        assert "request_id" not in b
    access = [x for x in lines if x["event"] == "request"]
    assert all(a["MessagesSent"] == 1 and a["message_id"] for a in access)
