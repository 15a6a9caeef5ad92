"""Shared fixtures: one moto server per session, fresh AWS resources per test, apps built for real.

Layers (as in aiobotocore's own tests): ``moto_url`` (a ``ThreadedMotoServer`` on a free
loopback port) -> ``aws_settings`` pointing at it -> the real app factory -> ``aiohttp_client``.
The developer's own AWS profile and environment never reach a test.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from moto.server import ThreadedMotoServer

from common.aws import open_client
from common.config import AwsSettings, CommonSettings
from s3svc.config import MIB, S3Settings
from tests import moto_fixes

REGION = "us-east-1"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """One real moto server, spoken to over HTTP, for the whole session."""
    moto_fixes.apply()  # moto's SQS delete/send race (tests/moto_fixes.py)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _isolated_aws_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """No AWS_* from the developer's shell or profile; fake credentials moto accepts."""
    import os

    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    empty = tmp_path_factory.mktemp("aws") / "empty"
    empty.touch()
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    for name, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Tests that configure logging must not leave handlers bound to a closed capture stream."""
    import logging

    import structlog

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()


@pytest.fixture
def aws_settings(moto_url: str) -> AwsSettings:
    """AWS settings pointing at the session's moto server."""
    return AwsSettings(region=REGION, endpoint_url=moto_url, max_attempts=2, read_timeout=30.0)


@pytest.fixture
async def s3(aws_settings: AwsSettings, _isolated_aws_env: None) -> AsyncIterator[Any]:
    """A plain aiobotocore S3 client on moto, for arranging and asserting."""
    async with open_client("s3", aws_settings) as client:
        yield client


async def open_uploads(s3: Any, bucket: str) -> list[dict[str, Any]]:
    """Multipart uploads currently open in ``bucket``."""
    uploads: list[dict[str, Any]] = (await s3.list_multipart_uploads(Bucket=bucket)).get(
        "Uploads", []
    )
    return uploads


async def eventually(condition: Callable[[], bool], timeout: float = 60) -> None:
    """Wait until ``condition()`` holds (a hang guard, not a speed target)."""
    async with asyncio.timeout(timeout):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


async def stored_keys(s3: Any, bucket: str) -> list[str]:
    """Every object key in ``bucket``."""
    listed = await s3.list_objects_v2(Bucket=bucket)
    return [o["Key"] for o in listed.get("Contents", [])]


async def empty_bucket(s3: Any, bucket: str) -> None:
    """Abort every multipart upload and delete every object of ``bucket``."""
    for up in await open_uploads(s3, bucket):
        await s3.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
    listed = await s3.list_object_versions(Bucket=bucket)
    for obj in listed.get("Versions", []) + listed.get("DeleteMarkers", []):
        await s3.delete_object(Bucket=bucket, Key=obj["Key"], VersionId=obj["VersionId"])


@pytest.fixture
async def bucket(s3: Any) -> AsyncIterator[str]:
    """A fresh, empty bucket; emptied and removed afterwards."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    await s3.create_bucket(Bucket=name)
    try:
        yield name
    finally:
        await empty_bucket(s3, name)
        await s3.delete_bucket(Bucket=name)


@pytest.fixture
async def logs_client(aws_settings: AwsSettings, _isolated_aws_env: None) -> AsyncIterator[Any]:
    """A plain aiobotocore CloudWatch Logs client on moto."""
    async with open_client("logs", aws_settings) as client:
        yield client


@pytest.fixture
async def log_group(logs_client: Any) -> AsyncIterator[str]:
    """A fresh log group; deleted afterwards."""
    name = f"/test/{uuid.uuid4().hex[:12]}"
    await logs_client.create_log_group(logGroupName=name)
    try:
        yield name
    finally:
        await logs_client.delete_log_group(logGroupName=name)


async def log_lines(logs_client: Any, group: str) -> list[dict[str, Any]]:
    """Every event of ``group`` parsed as JSON (fails if one is not JSON)."""
    import json

    events: list[dict[str, Any]] = []
    paginator = logs_client.get_paginator("filter_log_events")
    async for page in paginator.paginate(logGroupName=group):
        events.extend(page.get("events", []))
    return [json.loads(e["message"]) for e in events]


def common_settings(
    service: str, aws: AwsSettings, base_path: str, **overrides: Any
) -> CommonSettings:
    """CommonSettings for a test app (port unused: the test server picks its own)."""
    settings = CommonSettings(
        service=service,
        version="test",
        host="127.0.0.1",
        port=0,
        base_path=base_path,
        log_level="info",
        log_format="json",
        shutdown_grace=5.0,
        aws=aws,
    )
    return replace(settings, **overrides)


def through(settings: S3Settings, url: str, **aws: Any) -> S3Settings:
    """The same settings with AWS reached at ``url`` (a fault proxy), other AWS fields overridden."""
    return replace(
        settings,
        common=replace(settings.common, aws=replace(settings.common.aws, endpoint_url=url, **aws)),
    )


@pytest.fixture
def make_s3_settings(aws_settings: AwsSettings, bucket: str) -> Callable[..., S3Settings]:
    """Build S3Settings for the test bucket with the smallest legal part size; override freely."""

    def make(**overrides: Any) -> S3Settings:
        base = S3Settings(
            common=common_settings("s3svc", aws_settings, "/s3"),
            bucket=bucket,
            part_size=5 * MIB,
            max_inflight_parts=2,
            memory_budget=64 * MIB,
        )
        return replace(base, **overrides)

    return make


def isolated_env(endpoint: str, tmp_path: Path) -> dict[str, str]:
    """Environment for a service subprocess: the AWS ``endpoint``, fake credentials, no profile
    files, nothing else of ours."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(FAKE_CREDENTIALS)
    empty = tmp_path / "aws-empty"
    empty.touch()
    env.update(
        AWS_CONFIG_FILE=str(empty),
        AWS_SHARED_CREDENTIALS_FILE=str(empty),
        AWS_ENDPOINT_URL=endpoint,
        AWS_REGION=REGION,
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def service_env(moto_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment for a service subprocess on the session's moto."""
    return isolated_env(moto_url, tmp_path)


QueueFactory = Callable[..., Awaitable[str]]


@pytest.fixture
async def sqs(aws_settings: AwsSettings, _isolated_aws_env: None) -> AsyncIterator[Any]:
    """A plain aiobotocore SQS client on the backend (moto; LocalStack in tests/localstack)."""
    async with open_client("sqs", aws_settings) as client:
        yield client


@pytest.fixture
async def make_queue(sqs: Any) -> AsyncIterator[QueueFactory]:
    """Create queues with random names (``fifo=True`` for a ``.fifo`` one); all deleted afterwards."""
    created: list[str] = []

    async def make(*, fifo: bool = False, **attributes: str) -> str:
        name = f"test-{uuid.uuid4().hex[:16]}"
        if fifo:
            name += ".fifo"
            attributes = {"FifoQueue": "true"} | attributes
        resp = await sqs.create_queue(QueueName=name, Attributes=attributes)
        url: str = resp["QueueUrl"]
        created.append(url)
        return url

    try:
        yield make
    finally:
        for url in created:
            await sqs.delete_queue(QueueUrl=url)
