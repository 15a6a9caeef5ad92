"""LocalStack fixtures: one LocalStack process per session; AWS settings, buckets and queues on it.

``aws_settings`` is overridden here, so the shared fixtures of ``tests/conftest.py`` (``s3``,
``bucket``, ``make_s3_settings``, ``logs_client``) and ``service_env`` talk to LocalStack in this directory and to moto
everywhere else. Without LocalStack's virtualenv every test here skips with one reason; under
``LOCALSTACK_PASS=required`` (CI) they fail instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from common.config import AwsSettings
from sqssvc.config import SqsSettings
from tests.conftest import REGION, common_settings, isolated_env
from tests.localstack.stack import LocalStack, required, unavailable

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
    return isolated_env(localstack_url, tmp_path)


@pytest.fixture
def make_sqs_settings(aws_settings: AwsSettings) -> Callable[..., SqsSettings]:
    """SqsSettings for a queue on LocalStack; override any field."""

    def make(queue_url: str | None, **overrides: Any) -> SqsSettings:
        base = SqsSettings(
            common=common_settings("sqssvc", aws_settings, "/sqs"), queue_url=queue_url
        )
        return replace(base, **overrides)

    return make
