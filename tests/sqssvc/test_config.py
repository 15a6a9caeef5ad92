"""SqsSettings.from_env: defaults, every variable parsed, and every bad value reported together."""

from __future__ import annotations

import subprocess
import sys

import pytest

from common.config import ConfigError
from sqssvc.config import MIB, SqsSettings
from tests.procs import ROOT

URL = "https://sqs.eu-west-1.amazonaws.com/123456789012/orders"


def test_defaults() -> None:
    """No environment: local-safe mode on port 8081 under /sqs, batching at SQS's maximum."""
    s = SqsSettings.from_env({})
    assert s.queue_url is None
    assert not s.fifo
    assert (s.common.port, s.common.base_path, s.common.service) == (8081, "/sqs", "sqssvc")
    assert (s.max_batch, s.max_in_flight, s.max_pending, s.max_batch_messages) == (10, 4, 1000, 100)
    assert s.max_message_bytes == MIB
    assert (s.read_timeout, s.content_deduplication) == (15.0, False)


def test_every_variable_is_read() -> None:
    """Each documented variable reaches its field."""
    s = SqsSettings.from_env(
        {
            "QUEUE_URL": URL + ".fifo",
            "SQS_MAX_BATCH": "1",
            "SQS_MAX_IN_FLIGHT": "8",
            "SQS_MAX_PENDING": "500",
            "SQS_MAX_PENDING_BYTES": "32MiB",
            "SQS_ENTRY_MAX_ATTEMPTS": "2",
            "SQS_RETRY_BASE_SECONDS": "0.1",
            "SQS_RETRY_MAX_SECONDS": "1",
            "SQS_MAX_MESSAGE_BYTES": "256KiB",
            "MAX_BATCH_MESSAGES": "50",
            "MAX_REQUEST_BYTES": "8MiB",
            "SQS_DRAIN_SECONDS": "2",
            "SQS_READ_TIMEOUT": "30",
            "SQS_CONTENT_DEDUPLICATION": "true",
            "PORT": "9000",
            "BASE_PATH": "/queue",
        }
    )
    assert s.fifo
    assert (s.max_batch, s.max_in_flight, s.max_pending, s.max_pending_bytes) == (
        1,
        8,
        500,
        32 * MIB,
    )
    assert (s.max_attempts, s.retry_base, s.retry_cap) == (2, 0.1, 1.0)
    assert (s.max_message_bytes, s.max_batch_messages, s.max_request_bytes) == (
        256 * 1024,
        50,
        8 * MIB,
    )
    assert s.drain_seconds == 2.0
    assert (s.read_timeout, s.content_deduplication) == (30.0, True)
    assert (s.common.port, s.common.base_path) == (9000, "/queue")


def test_all_errors_reported_at_once() -> None:
    """Several bad variables produce one ConfigError naming each of them."""
    with pytest.raises(ConfigError) as info:
        SqsSettings.from_env(
            {
                "QUEUE_URL": "orders",
                "SQS_MAX_BATCH": "11",
                "SQS_MAX_IN_FLIGHT": "0",
                "SQS_MAX_PENDING": "10",  # smaller than MAX_BATCH_MESSAGES (100)
                "SQS_RETRY_BASE_SECONDS": "1",
                "SQS_RETRY_MAX_SECONDS": "0.5",
            }
        )
    text = str(info.value)
    for name in (
        "QUEUE_URL",
        "SQS_MAX_BATCH",
        "SQS_MAX_IN_FLIGHT",
        "SQS_MAX_PENDING",
        "SQS_RETRY_MAX_SECONDS",
    ):
        assert name in text
    assert len(info.value.errors) == 5


def test_content_deduplication_needs_a_fifo_queue() -> None:
    """SQS_CONTENT_DEDUPLICATION=true with a standard QUEUE_URL is refused at start (no standard
    queue deduplicates); without QUEUE_URL (local-safe mode) it is accepted."""
    with pytest.raises(ConfigError) as info:
        SqsSettings.from_env({"QUEUE_URL": URL, "SQS_CONTENT_DEDUPLICATION": "true"})
    assert "SQS_CONTENT_DEDUPLICATION" in str(info.value)
    assert SqsSettings.from_env({"SQS_CONTENT_DEDUPLICATION": "true"}).content_deduplication


def test_bad_config_exits_2_naming_the_variable() -> None:
    """``python -m sqssvc`` with an invalid setting exits 2 and says which one, before serving."""
    proc = subprocess.run(
        [sys.executable, "-m", "sqssvc"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "SQS_MAX_BATCH": "0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "SQS_MAX_BATCH='0'" in proc.stderr
