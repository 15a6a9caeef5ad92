"""The CloudWatch handler's own parts: PutLogEvents bodies rendered by orjson, and the event path.

Delivery from running services, SIGTERM flushes and outages are in tests/e2e/test_cloudwatch.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import watchtower
from botocore.awsrequest import AWSResponse, HTTPHeaders
from botocore.config import Config

from common.cloudwatch import BoundedCloudWatchHandler, render_events_with_orjson
from common.logging import DirectLogger, build_formatter
from tests.procs import free_port

# Messages that need JSON escaping: quotes, backslashes, control characters, non-ASCII, emoji.
AWKWARD = [
    '{"event":"request","path":"/s3/upload","note":"quote \\" and backslash \\\\"}',
    "line\nbreak\ttab\x00nul\x1fctl",
    "naïve café — 日本語 — 🚀",
    "x" * 5000,
]


class _Canned:
    """A raw HTTP body for botocore: what ``before-send`` answers instead of the network."""

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield b"{}"


def _client(endpoint: str, **config: Any) -> Any:
    return boto3.client(
        "logs",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(parameter_validation=False, **config),
    )


def _sent_body(client: Any, events: list[dict[str, Any]]) -> bytes:
    """The body ``client`` sends for one PutLogEvents call (caught before it leaves)."""
    bodies: list[bytes] = []

    def catch(request: Any, **_: Any) -> AWSResponse:
        bodies.append(bytes(request.body))
        return AWSResponse(request.url, 200, HTTPHeaders(), _Canned())

    client.meta.events.register("before-send.cloudwatch-logs.PutLogEvents", catch)
    client.put_log_events(logGroupName="g", logStreamName="s", logEvents=events)
    (body,) = bodies
    return body


def test_orjson_body_is_the_document_botocore_would_send() -> None:
    """Same JSON document, events in order, every awkward character intact."""
    events = [{"timestamp": 1_795_522_454_000 + i, "message": m} for i, m in enumerate(AWKWARD)]
    plain = _client("http://127.0.0.1:9")
    fast = _client("http://127.0.0.1:9")
    render_events_with_orjson(fast)
    expected, got = _sent_body(plain, events), _sent_body(fast, events)
    assert json.loads(got) == json.loads(expected)
    assert got != expected  # orjson's compact form: the events did not go through botocore
    assert json.loads(got)["logEvents"][2]["message"] == AWKWARD[2]


def test_orjson_bodies_are_accepted_by_cloudwatch(moto_url: str) -> None:
    """Against moto over HTTP: what the handler's client sends is stored exactly."""
    client = _client(moto_url)
    render_events_with_orjson(client)
    group, stream = f"/test/{uuid.uuid4().hex[:12]}", "s"
    client.create_log_group(logGroupName=group)
    try:
        client.create_log_stream(logGroupName=group, logStreamName=stream)
        events = [{"timestamp": 1_795_522_454_000 + i, "message": m} for i, m in enumerate(AWKWARD)]
        client.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)
        got = client.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True)
        assert [e["message"] for e in got["events"]] == AWKWARD
    finally:
        client.delete_log_group(logGroupName=group)


class PausedSender(BoundedCloudWatchHandler):
    """The sender thread waits for ``resume`` before it takes any line, so a test sees the queue
    exactly as the logging side left it."""

    def __init__(self, **kwargs: Any) -> None:
        self.resume = threading.Event()
        self.sent = 0  # lines the sender took from the queue and tried to deliver
        super().__init__(**kwargs)

    def _dequeue_batch(self, *args: Any) -> None:
        self.resume.wait()
        super()._dequeue_batch(*args)

    def _submit_batch(self, batch: list[dict[str, Any]], *args: Any) -> None:
        self.sent += len(batch)
        super()._submit_batch(batch, *args)  # type: ignore[no-untyped-call]


@contextlib.contextmanager
def unreachable(max_queue: int, *, paused: bool = True) -> Iterator[PausedSender]:
    """A handler whose CloudWatch cannot be reached, its sender paused unless ``paused=False``;
    resumed and closed afterwards."""
    client = _client(
        f"http://127.0.0.1:{free_port()}",
        connect_timeout=0.2,
        retries={"total_max_attempts": 1},
    )
    handler = PausedSender(
        log_group_name="g",
        log_stream_name="s",
        boto3_client=client,
        create_log_group=False,
        send_interval=60,
        max_queue=max_queue,
    )
    handler.FLUSH_TIMEOUT = 1
    handler.setFormatter(build_formatter("demo", "test"))
    if not paused:
        handler.resume.set()
    try:
        yield handler
    finally:
        # The last batch fails (nowhere to send it) with a WatchtowerWarning from the sender
        # thread: wait for it here, so it cannot surface in a later test. (This covers only the
        # close: a sender running before it, paused=False, needs the test's own filterwarnings.)
        handler.resume.set()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", watchtower.WatchtowerWarning)
            handler.close()  # type: ignore[no-untyped-call]
            for thread in handler.threads:
                thread.join(timeout=30)


@pytest.fixture
def unreachable_handler() -> Iterator[PausedSender]:
    """The root logger's only handler: an unreachable CloudWatch, queue bound 5."""
    root = logging.getLogger()
    with unreachable(max_queue=5) as handler:
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)
        try:
            yield handler
        finally:
            root.handlers[:] = []


# The running sender fails every batch it sends (each a WatchtowerWarning from its own thread)
# while the lines are still being logged, before unreachable() ignores them around close().
@pytest.mark.filterwarnings("ignore::watchtower.WatchtowerWarning")
def test_queue_is_bounded_when_cloudwatch_is_down() -> None:
    """10,000 lines of 10 KiB while the sender runs and nothing can be delivered: the queue
    never exceeds its bound.

    (The sender also holds the batch it is assembling, itself capped at 1 MiB, so what the
    handler keeps is at most max_queue lines plus 1 MiB.)
    """
    logger = logging.getLogger("bounded-test")
    logger.propagate = False
    line = "x" * 10_240
    with unreachable(max_queue=50, paused=False) as handler:
        logger.addHandler(handler)
        try:
            peak = 0
            for _ in range(10_000):
                logger.warning(line)
                peak = max(peak, handler.queued())
        finally:
            logger.removeHandler(handler)
    assert peak <= 51  # the bound (+1 for watchtower's own flush marker)
    # Every line was either refused and counted, or taken by the sender (how many it takes while
    # the loop runs depends on how fast each side runs, so only the sum is exact).
    assert handler.dropped + handler.sent == 10_000
    assert handler.dropped > 0  # dropped, not blocked: the logger never waited for the sender


def test_access_lines_queue_without_records_and_stay_bounded(
    unreachable_handler: PausedSender,
) -> None:
    """The access line's event path queues the JSON line (EMF included); past the bound, lines
    are counted as dropped, never queued."""
    access = DirectLogger("common.web")
    access.info("request", {"status": 200, "_aws": {"Timestamp": 1}, "Requests": 1})
    queued = list(unreachable_handler._queue.queue)
    assert len(queued) == 1
    size, msg = queued[0]
    line = json.loads(msg["message"])
    assert line["event"] == "request"
    assert line["service"] == "demo"
    assert line["_aws"] == {"Timestamp": 1}
    assert size == len(msg["message"].encode()) + unreachable_handler.EXTRA_MSG_PAYLOAD_SIZE
    for _ in range(10):
        access.info("request", {"status": 200})
    assert unreachable_handler.queued() == 5
    assert unreachable_handler.dropped == 6


def test_cloudwatch_copy_skips_its_own_delivery_loggers(
    unreachable_handler: PausedSender,
) -> None:
    """Lines about delivery (botocore, watchtower) are never shipped, on either path."""
    DirectLogger("botocore.endpoint").info("retrying", {})
    logging.getLogger("watchtower").warning("delivery failed")
    assert unreachable_handler.queued() == 0
    DirectLogger("common.web").info("request", {})
    assert unreachable_handler.queued() == 1


def test_a_line_that_cannot_be_rendered_never_fails_the_caller(
    unreachable_handler: PausedSender, capsys: pytest.CaptureFixture[str]
) -> None:
    """An integer beyond 64 bits: logging's error handling reports it, nothing is queued."""
    DirectLogger("common.web").info("request", {"bytes_in": 2**64})
    assert "Logging error" in capsys.readouterr().err
    assert unreachable_handler.queued() == 0
