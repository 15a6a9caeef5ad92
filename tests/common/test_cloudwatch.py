"""The CloudWatch shipper around a stock watchtower handler: a bound on waiting lines, a sender
that survives failed sends, and the lines it never ships.

Delivery from running services, SIGTERM flushes and outages are in tests/e2e/test_cloudwatch.py.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError

from common.cloudwatch import CloudWatchShipper, build_shipper
from common.config import AwsSettings, CloudWatchSettings
from tests.conftest import common_settings, log_lines
from tests.procs import free_port

LINE = {"event": "request", "level": "info", "logger": "common.middleware", "pad": "x" * 10_000}


def shipper_for(endpoint: str, group: str, **cw: Any) -> CloudWatchShipper:
    """A shipper built as the service builds it, sending to ``endpoint``."""
    aws = AwsSettings(endpoint_url=endpoint, max_attempts=1, connect_timeout=0.5)
    settings = replace(
        common_settings("demo", aws, "/demo"),
        cloudwatch=CloudWatchSettings(log_group=group, stream_name="s", **cw),
    )
    shipper = build_shipper(settings)
    assert shipper is not None
    return shipper


# The sender fails every batch it sends and says so with a WatchtowerWarning from its own
# thread: in production a py.warnings line on stdout; here not an error.
@pytest.mark.filterwarnings("ignore::watchtower.WatchtowerWarning")
async def test_waiting_lines_are_bounded_when_cloudwatch_is_down() -> None:
    """10,000 lines of 10 KiB while nothing can be delivered: never more than the bound waits,
    every line is either admitted or dropped and counted, and lines were dropped, not blocked."""
    shipper = shipper_for(
        f"http://127.0.0.1:{free_port()}", "/nowhere", max_queue=50, send_interval=5
    )
    peak = 0
    for _ in range(10_000):
        shipper.ship(dict(LINE))
        peak = max(peak, shipper.queued())
    assert peak <= 50
    assert shipper.admitted + shipper.dropped == 10_000
    assert shipper.dropped > 0
    await shipper.close(timeout=30)
    # Nothing reached CloudWatch, and the counts say so.
    assert shipper.delivered == 0
    assert shipper.undelivered() == shipper.admitted


@pytest.mark.filterwarnings("ignore::watchtower.WatchtowerWarning")
async def test_sender_survives_a_failing_send(
    logs_client: Any, log_group: str, moto_url: str
) -> None:
    """Every attempt of the first batch raises inside the client: that batch is lost and
    reported, and the next line is still shipped by the same sender."""
    shipper = shipper_for(moto_url, log_group, send_interval=0.1)
    failing = True

    def explode(**_: Any) -> None:
        if failing:
            raise RuntimeError("injected failure")

    shipper.client.meta.events.register("before-send.cloudwatch-logs.PutLogEvents", explode)
    shipper.ship({"event": "lost", "level": "info", "logger": "t"})
    shipper.flush()  # returns once the sender has tried (and failed) that batch
    failing = False
    shipper.ship({"event": "after", "level": "info", "logger": "t"})
    assert await shipper.close(timeout=30)
    events = [x["event"] for x in await log_lines(logs_client, log_group)]
    assert events == ["after"]
    assert shipper.queued() == 0
    assert (shipper.delivered, shipper.undelivered()) == (1, 1)  # the lost line is counted


async def test_delivery_loggers_are_never_shipped(
    logs_client: Any, log_group: str, moto_url: str
) -> None:
    """Lines about delivery itself (botocore, watchtower, Python warnings) stay off CloudWatch;
    an ordinary line arrives as the JSON the writer rendered, EMF included."""
    shipper = shipper_for(moto_url, log_group, send_interval=0.1)
    for name in ("botocore.endpoint", "watchtower", "py.warnings", "urllib3.connectionpool"):
        shipper.ship({"event": "about delivery", "level": "warning", "logger": name})
    shipper.ship({"event": "kept", "level": "info", "logger": "t", "_aws": {"Timestamp": 1}})
    assert shipper.admitted == 1
    assert await shipper.close(timeout=30)
    (line,) = await log_lines(logs_client, log_group)
    assert line == {"event": "kept", "level": "info", "logger": "t", "_aws": {"Timestamp": 1}}


@pytest.mark.filterwarnings("ignore::watchtower.WatchtowerWarning")
async def test_stream_creation_failures_do_not_end_shipping(
    logs_client: Any, log_group: str, moto_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """CreateLogStream fails with a connection error twice (a new task while CloudWatch is
    unreachable): lines wait, the stream is created on a later try, and they all arrive. The
    first failure is one warning, its event a stable name and the error in its fields."""
    caplog.set_level(logging.WARNING, logger="common.cloudwatch")
    shipper = shipper_for(moto_url, log_group, send_interval=0.1)
    failures = 2

    def unreachable(**_: Any) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise EndpointConnectionError(endpoint_url=moto_url)

    shipper.client.meta.events.register("before-send.cloudwatch-logs.CreateLogStream", unreachable)
    for i in range(3):
        shipper.ship({"event": f"line-{i}", "level": "info", "logger": "t"})
    shipper.flush()
    assert await shipper.close(timeout=30)
    events = [x["event"] for x in await log_lines(logs_client, log_group)]
    assert events == ["line-0", "line-1", "line-2"]
    assert failures == 0
    assert shipper.undelivered() == 0
    (warned,) = [r for r in caplog.records if r.name == "common.cloudwatch"]
    assert (warned.levelname, warned.getMessage()) == ("WARNING", "log_stream_unavailable")
    assert warned.exc_info is not None
    assert warned.exc_info[0] is EndpointConnectionError
