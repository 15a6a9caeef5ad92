"""LocalStack fixtures: one LocalStack process per session; AWS settings, buckets and queues on it.

``aws_settings`` is overridden here, so the shared fixtures of ``tests/conftest.py`` (``s3``,
``bucket``, ``make_s3_settings``, ``logs_client``) and ``service_env`` talk to LocalStack in this directory and to moto
everywhere else. Without LocalStack's virtualenv every test here skips with one reason; under
``LOCALSTACK_PASS=required`` (CI) they fail instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from common.aws import open_client
from common.config import AwsSettings
from sqssvc.config import SqsSettings
from tests.conftest import FAKE_CREDENTIALS, REGION, common_settings
from tests.localstack.stack import LocalStack, required, unavailable

QueueFactory = Callable[..., Awaitable[str]]
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Without LocalStack's virtualenv, skip this directory's tests with the reason, folded into
    one summary line per file (unless LOCALSTACK_PASS=required: then ``localstack_url`` fails)."""
    reason = unavailable()
    if reason is None or required():
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def localstack_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One LocalStack for the session, its state, HOME and log in a fresh directory of this run."""
    reason = unavailable()
    if reason is not None:
        if required():
            pytest.fail(f"LOCALSTACK_PASS=required: {reason}", pytrace=False)
        pytest.skip(reason)
    stack = LocalStack(tmp_path_factory.mktemp("localstack"))
    try:
        stack.start()
    except (RuntimeError, TimeoutError) as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield stack.url
    finally:
        stack.stop()


@pytest.fixture
def aws_settings(localstack_url: str) -> AwsSettings:
    """AWS settings pointing at the session's LocalStack (replaces the moto one here)."""
    return AwsSettings(
        region=REGION, endpoint_url=localstack_url, max_attempts=2, read_timeout=30.0
    )


@pytest.fixture
def service_env(localstack_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment for a service subprocess on LocalStack (replaces the moto one here)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(FAKE_CREDENTIALS)
    empty = tmp_path / "aws-empty"
    empty.touch()
    env.update(
        AWS_CONFIG_FILE=str(empty),
        AWS_SHARED_CREDENTIALS_FILE=str(empty),
        AWS_ENDPOINT_URL=localstack_url,
        AWS_REGION=REGION,
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
async def sqs(aws_settings: AwsSettings, _isolated_aws_env: None) -> AsyncIterator[Any]:
    """A plain aiobotocore SQS client on LocalStack, for arranging and asserting."""
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
        url: str = (await sqs.create_queue(QueueName=name, Attributes=attributes))["QueueUrl"]
        created.append(url)
        return url

    try:
        yield make
    finally:
        for url in created:
            await sqs.delete_queue(QueueUrl=url)


@pytest.fixture
def make_sqs_settings(aws_settings: AwsSettings) -> Callable[..., SqsSettings]:
    """SqsSettings for a queue on LocalStack; override any field."""

    def make(queue_url: str | None, **overrides: Any) -> SqsSettings:
        base = SqsSettings(
            common=common_settings("sqssvc", aws_settings, "/sqs"), queue_url=queue_url
        )
        return replace(base, **overrides)

    return make
