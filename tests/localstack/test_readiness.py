"""Readiness against LocalStack: each service's probe is 200 for its bucket or queue, 503 without.

The probes rely on how S3 and SQS answer a request that must fail (aborting an upload id that
does not exist, a batch entry with an invalid id): moto's answers were all that proved them.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from s3svc.app import create_app as create_s3_app
from s3svc.config import S3Settings
from sqssvc.app import create_app as create_sqs_app
from sqssvc.config import SqsSettings
from tests.conftest import QueueFactory
from tests.procs import ServiceProcess

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]


async def test_s3svc_ready_for_its_bucket(
    aiohttp_client: MakeClient, make_s3_settings: Callable[..., S3Settings]
) -> None:
    """/s3/ready is 200 when the bucket exists on LocalStack."""
    client = await aiohttp_client(create_s3_app(make_s3_settings()))
    resp = await client.get("/s3/ready")
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["status"] == "ready"


async def test_s3svc_not_ready_for_a_missing_bucket(
    aiohttp_client: MakeClient, make_s3_settings: Callable[..., S3Settings]
) -> None:
    """/s3/ready is 503 not_ready naming NoSuchBucket when the bucket does not exist."""
    missing = f"test-missing-{uuid.uuid4().hex[:12]}"
    client = await aiohttp_client(create_s3_app(make_s3_settings(bucket=missing)))
    resp = await client.get("/s3/ready")
    assert resp.status == 503
    body = await resp.json()
    assert body["error"] == "not_ready"
    assert "NoSuchBucket" in body["message"]


async def test_sqssvc_ready_for_standard_and_fifo_queues(
    aiohttp_client: MakeClient,
    make_sqs_settings: Callable[..., SqsSettings],
    make_queue: QueueFactory,
    sqs: Any,
) -> None:
    """/sqs/ready is 200 for a standard and a FIFO queue, and the probe stores nothing."""
    for url in (await make_queue(), await make_queue(fifo=True)):
        client = await aiohttp_client(create_sqs_app(make_sqs_settings(url)))
        resp = await client.get("/sqs/ready")
        assert resp.status == 200, await resp.text()
        attrs = await sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
        )
        assert attrs["Attributes"]["ApproximateNumberOfMessages"] == "0"


async def test_sqssvc_not_ready_for_a_missing_queue(
    aiohttp_client: MakeClient,
    make_sqs_settings: Callable[..., SqsSettings],
    make_queue: QueueFactory,
) -> None:
    """/sqs/ready is 503 not_ready when the queue URL names no queue."""
    existing = await make_queue()
    missing = existing.rsplit("/", 1)[0] + f"/test-missing-{uuid.uuid4().hex[:12]}"
    client = await aiohttp_client(create_sqs_app(make_sqs_settings(missing)))
    resp = await client.get("/sqs/ready")
    assert resp.status == 503
    body = await resp.json()
    assert body["error"] == "not_ready"
    assert "SQS queue not usable: NonExistentQueue" in body["message"], body


async def test_s3svc_process_ready_through_its_environment(
    service_env: dict[str, str], bucket: str, tmp_path: Path
) -> None:
    """``python -m s3svc`` configured as the container is (AWS_ENDPOINT_URL) is ready on LocalStack."""
    svc = ServiceProcess("s3svc", dict(service_env, BUCKET_NAME=bucket), tmp_path / "s3svc.log")
    svc.start()
    try:
        with urllib.request.urlopen(svc.url + "/s3/ready", timeout=30) as resp:
            assert resp.status == 200
            assert json.load(resp)["status"] == "ready"
    finally:
        svc.stop()
