"""Shipping lines to CloudWatch Logs with a stock watchtower handler, through its public API.

watchtower (checked against 3.4.0) sends batches from its own thread, from an unbounded queue.
What a service needs around it, each done with public interfaces only:

- **nothing on the request path** but a bound check and a ``deque.append``: a feeder thread of
  ours renders the lines and hands them to watchtower's ``Handler.handle`` in bursts;
- **a bound** (``CLOUDWATCH_MAX_QUEUE``): a line is admitted only while fewer than that many
  admitted lines have not yet left in a ``PutLogEvents`` call, counted by a botocore event hook
  on the client we give watchtower; beyond it lines are dropped from the CloudWatch copy and
  counted (``dropped``). Should watchtower stop sending through that client, nothing would be
  counted as sent and shipping would stop after the bound: the delivery tests
  (``tests/common/test_cloudwatch.py``) would fail;
- **a sender that outlives failures**: watchtower catches every exception of a ``PutLogEvents``
  and reports it as a ``WatchtowerWarning`` (a ``py.warnings`` line on stdout, never shipped); the
  one call whose errors it does not catch, ``CreateLogStream``, is made by our feeder instead;
- **true counts**: what CloudWatch confirmed (``delivered``) next to what was admitted, so a
  shutdown line reports every loss (``undelivered``), also the batches watchtower gave up on;
- a stream name from the ECS task id (task metadata endpoint v4), else ``{service}/{host}/{pid}``;
- no log group creation unless asked (``CLOUDWATCH_CREATE_GROUP=true``, for local use);
- a close that runs in its own thread with a deadline, so the last lines are flushed on shutdown
  without blocking the event loop or outliving the grace period.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import socket
import sys
import threading
import time
import urllib.request
from typing import Any, cast

import boto3
import watchtower
from botocore.config import Config
from structlog.types import EventDict

from common.config import CloudWatchSettings, CommonSettings
from common.render import render_json

# How long the final flush may take at shutdown: watchtower's own wait, and ours around it.
FLUSH_TIMEOUT = 4
CLOSE_TIMEOUT = 5.0
# How often the feeder hands queued lines to watchtower.
POLL = 0.05
# Seconds between attempts to create the log stream while CloudWatch cannot be reached.
STREAM_RETRY = 1.0
# How long close() waits for the feeder's last hand-over (it may be stuck in a call).
FEEDER_JOIN = 0.5
# Where a PutLogEvents call keeps its event count for the answer's hook.
_EVENTS_IN_CALL = "common.cloudwatch.events"
# Lines about delivery itself are never shipped: shipping them could feed back into the handler.
EXCLUDED_LOGGERS = ("botocore", "boto3", "urllib3", "watchtower", "py.warnings", __name__)
# Through the stdlib: common.logging imports this module, not the other way round.
_log = logging.getLogger(__name__)


class _Handler(watchtower.CloudWatchLogHandler):
    """watchtower's handler with its public flush deadline (30 s) inside our close deadline: at
    shutdown it gives up waiting for an unreachable CloudWatch before the grace period ends."""

    FLUSH_TIMEOUT = FLUSH_TIMEOUT


class _Message(logging.Formatter):
    """The record's message is the rendered line already."""

    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage()


class CloudWatchShipper:
    """Takes lines from the event loop for the CloudWatch copy, and feeds them to watchtower.

    ``ship`` is a bound check and a ``deque.append``: the rendering, the ``LogRecord`` and
    watchtower's ``emit`` happen on a feeder thread of ours every ``POLL`` seconds, so the event
    loop never waits for them and watchtower's sender wakes once per burst, not once per line.
    Two botocore hooks on the client watchtower sends with count what happens to the lines:
    ``taken`` when a ``PutLogEvents`` call starts (a batch watchtower retries is the same list,
    counted once), ``delivered`` when CloudWatch answered it with 200 and rejected nothing.
    ``queued()`` (admitted, not yet taken) is what the bound ``max_queue`` applies to; the batch
    in flight (at most 10,000 lines or 1 MiB) is outside it. ``undelivered()`` is everything
    admitted that CloudWatch has not confirmed.

    The log stream is created here, by the feeder, before any line is handed over (and retried
    until it exists), and watchtower is told not to create it: watchtower 3.4.0 creates it inside
    its sender and lets a connection error there end the sender for good.
    """

    def __init__(
        self,
        handler: watchtower.CloudWatchLogHandler,
        client: Any,
        max_queue: int,
        group: str,
        stream: str,
    ) -> None:
        self.handler = handler
        self.client = client
        self.max_queue = max_queue
        self.admitted = 0
        self.handed_over = 0
        self.taken = 0
        self.delivered = 0
        self.dropped = 0
        self._group = group
        self._stream = stream
        self._stream_ready = False
        self._next_stream_try = 0.0
        self._stream_warned = False
        self._last_batch: object = None
        self._lines: collections.deque[tuple[float, str, EventDict]] = collections.deque()
        handler.setFormatter(_Message())
        events = client.meta.events
        events.register("provide-client-params.cloudwatch-logs.PutLogEvents", self._on_call)
        events.register("after-call.cloudwatch-logs.PutLogEvents", self._on_answer)
        self._stop = threading.Event()
        self._feeder = threading.Thread(target=self._feed, name="cloudwatch-feeder", daemon=True)
        self._feeder.start()

    def queued(self) -> int:
        """Lines admitted and not yet taken by a ``PutLogEvents`` call."""
        return self.admitted - self.taken

    def undelivered(self) -> int:
        """Lines admitted that CloudWatch has not (yet) confirmed."""
        return self.admitted - self.delivered

    def ship(self, event: EventDict) -> None:
        """Queue ``event`` for CloudWatch, unless it is about delivery itself or over the bound.
        ``event`` must not change afterwards (the writer's are final)."""
        name = str(event.get("logger", ""))
        if name.startswith(EXCLUDED_LOGGERS):
            return
        if self.admitted - self.taken >= self.max_queue:
            self.dropped += 1
            return
        self.admitted += 1
        self._lines.append((time.time(), name, event))

    def _on_call(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        events = params.get("logEvents") or []
        context[_EVENTS_IN_CALL] = len(events)
        if events is not self._last_batch:
            self._last_batch = events
            self.taken += len(events)

    def _on_answer(
        self, http_response: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any
    ) -> None:
        if http_response.status_code == 200 and "rejectedLogEventsInfo" not in parsed:
            self.delivered += context.get(_EVENTS_IN_CALL, 0)

    def _feed(self) -> None:
        while not self._stop.wait(POLL):
            self._hand_over()
        self._hand_over()

    def _ensure_stream(self) -> bool:
        """Create our log stream once; False (try again a second later) while CloudWatch cannot
        say. The first failure is a warning line (stdout only: this logger is never shipped)."""
        if self._stream_ready or time.monotonic() < self._next_stream_try:
            return self._stream_ready
        try:
            self.client.create_log_stream(logGroupName=self._group, logStreamName=self._stream)
            self._stream_ready = True
        except self.client.exceptions.ResourceAlreadyExistsException:
            self._stream_ready = True
        except Exception as exc:
            self._next_stream_try = time.monotonic() + STREAM_RETRY
            if not self._stream_warned:
                self._stream_warned = True
                _log.warning("log_stream_unavailable", exc_info=exc)
        return self._stream_ready

    def _hand_over(self) -> None:
        """Give watchtower every line waiting, oldest first (never raises: the thread lives on)."""
        if self._lines and not self._ensure_stream():
            return
        while self._lines:
            created, name, event = self._lines.popleft()
            record = logging.LogRecord(name, logging.INFO, "", 0, "", None, None)
            record.created = created
            try:
                record.msg = render_json(event).decode()
                self.handler.handle(record)
            except Exception:
                self.handler.handleError(record)
            finally:
                self.handed_over += 1

    def flush(self) -> None:
        """Block until every line admitted so far is with watchtower and watchtower has tried to
        send it (each bounded by watchtower's ``FLUSH_TIMEOUT``). Not for the event loop."""
        target = self.admitted
        deadline = time.monotonic() + FLUSH_TIMEOUT
        while self.handed_over < target and time.monotonic() < deadline:
            time.sleep(POLL / 5)
        self.handler.flush()  # type: ignore[no-untyped-call]

    async def close(self, timeout: float = CLOSE_TIMEOUT) -> bool:
        """Hand over the rest, flush and close, in a daemon thread; True if it finished within
        ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def finished() -> None:
            if not done.done():
                done.set_result(None)

        def run() -> None:
            try:
                self._stop.set()
                self._feeder.join(FEEDER_JOIN)
                self.handler.close()  # type: ignore[no-untyped-call]
            finally:
                loop.call_soon_threadsafe(finished)

        threading.Thread(target=run, name="cloudwatch-close", daemon=True).start()
        try:
            await asyncio.wait_for(done, timeout)
        except TimeoutError:
            return False
        return True


def _ecs_task_id(metadata_uri: str) -> str | None:
    """The task id from the ECS task metadata endpoint (v4), or None if it cannot be read."""
    try:
        with urllib.request.urlopen(f"{metadata_uri}/task", timeout=1.0) as resp:  # noqa: S310
            arn = json.load(resp).get("TaskARN", "")
    except (OSError, ValueError):
        return None
    task_id = str(arn).rsplit("/", 1)[-1]
    return task_id or None


def stream_name(service: str, cw: CloudWatchSettings) -> str:
    """Explicit name, else ``{service}/{ECS task id}``, else ``{service}/{hostname}/{pid}``."""
    if cw.stream_name:
        return cw.stream_name
    if cw.ecs_metadata_uri and (task_id := _ecs_task_id(cw.ecs_metadata_uri)):
        return f"{service}/{task_id}"
    return f"{service}/{socket.gethostname()}/{os.getpid()}"


def build_shipper(settings: CommonSettings) -> CloudWatchShipper | None:
    """The CloudWatch shipper, built before the event loop starts; None when not configured."""
    cw = settings.cloudwatch
    if cw is None:
        return None
    aws = settings.aws
    client = boto3.client(
        "logs",
        region_name=aws.region,
        endpoint_url=aws.endpoint_url,
        config=Config(
            # A line that cannot be delivered is not worth stalling the shipping thread for.
            retries=cast(Any, {"mode": aws.retry_mode, "total_max_attempts": 2}),
            connect_timeout=aws.connect_timeout,
            read_timeout=aws.read_timeout,
            # watchtower's batches are well-formed; botocore's check walks every event in Python.
            parameter_validation=False,
        ),
    )
    if cw.create_group:
        try:
            client.create_log_group(logGroupName=cw.log_group)
        except client.exceptions.ResourceAlreadyExistsException:
            pass
        except Exception as exc:
            print(f"cloudwatch: cannot create log group {cw.log_group}: {exc}", file=sys.stderr)
    # watchtower formats the stream name with str.format; braces must not reach it.
    stream = stream_name(settings.service, cw).replace("{", "(").replace("}", ")")
    handler = _Handler(
        log_group_name=cw.log_group,
        log_stream_name=stream,
        boto3_client=client,
        create_log_group=False,
        create_log_stream=False,  # the shipper creates it (see CloudWatchShipper)
        send_interval=cw.send_interval,  # type: ignore[arg-type]  # seconds; a float works
    )
    return CloudWatchShipper(handler, client, cw.max_queue, cw.log_group, stream)
