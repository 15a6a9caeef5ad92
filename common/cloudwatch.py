"""Shipping log lines to CloudWatch Logs with watchtower, without ever hurting the service.

watchtower sends batches from its own thread. This module adds what a service needs around it:

- a bounded queue (watchtower's is unbounded): when CloudWatch is slow or unreachable, lines
  beyond ``CLOUDWATCH_MAX_QUEUE`` are dropped from the CloudWatch copy and counted; stdout still
  gets every line;
- a stream name from the ECS task id (task metadata endpoint v4), else ``{service}/{host}/{pid}``;
- no log group creation unless asked (``CLOUDWATCH_CREATE_GROUP=true``, for local use), and a
  failure to create it never stops the service;
- a close that runs in its own thread with a deadline, so the last lines are flushed on shutdown
  without blocking the event loop or outliving the grace period.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import queue as queue_module
import socket
import sys
import threading
import time
import urllib.request
from typing import Any, cast

import boto3
import orjson
import watchtower
from botocore.config import Config

from common.config import CloudWatchSettings, CommonSettings
from common.logging import EventHandler, JsonFormatter

# How long the final flush may take at shutdown: watchtower's own wait, and ours around it.
FLUSH_TIMEOUT = 4
CLOSE_TIMEOUT = 5.0
# How often the sender thread looks for queued lines (it never blocks waiting for one).
POLL = 0.05
# Where the PutLogEvents events wait in the request context while botocore serialises the rest.
_EVENTS = "common.cloudwatch.events"
# Records from these loggers never go to CloudWatch: they may be about CloudWatch delivery itself,
# and shipping them could feed back into the handler.
_EXCLUDED_LOGGERS = ("botocore", "boto3", "urllib3", "watchtower", "py.warnings")


class _LineQueue(queue_module.Queue[Any]):
    """watchtower's per-stream queue, with a lock-free path for lines.

    A line is one ``deque.append`` (atomic in CPython): no lock, no task count, no wake-up of the
    sender. Only watchtower's FLUSH and END markers go through ``put`` and count as tasks. The
    sender takes everything in order, so when a marker's task is done, every line queued before
    it has been submitted: watchtower's ``flush()`` and ``close()`` keep their meaning.
    """

    queue: collections.deque[Any]

    def add(self, item: Any) -> None:
        """Queue a line (never blocks)."""
        self.queue.append(item)

    def take(self) -> Any:
        """The oldest item, or None when there is none (never blocks)."""
        try:
            return self.queue.popleft()
        except IndexError:
            return None

    def __len__(self) -> int:
        return len(self.queue)


class BoundedCloudWatchHandler(watchtower.CloudWatchLogHandler, EventHandler):
    """watchtower's handler with a bound on queued lines; ``dropped`` counts what was refused.

    The stream's queue and sender thread start with the handler (watchtower starts them on the
    first line), so every line after that takes the short path of :meth:`emit`.
    """

    def __init__(self, *, max_queue: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_queue = max_queue
        self.dropped = 0
        self.FLUSH_TIMEOUT = FLUSH_TIMEOUT
        self.addFilter(lambda record: not record.name.startswith(_EXCLUDED_LOGGERS))
        self._queue = _LineQueue()
        stream = self.log_stream_name
        self.sequence_tokens[stream] = None
        self.queues[stream] = self._queue
        thread = threading.Thread(
            target=self._dequeue_batch,
            args=(
                self._queue,
                stream,
                self.send_interval,
                self.max_batch_size,
                self.max_batch_count,
            ),
            name="cloudwatch-sender",
            daemon=True,
        )
        self.threads.append(thread)
        thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        """Queue the record unless the queue is full (then drop and count it).

        watchtower's ``emit`` without its per-line ``getMessage()`` (``str()`` of the whole event
        dict, only to refuse empty messages: ours never are) and ``_get_stream_name()`` (a
        ``str.format`` of a name that has no fields).
        """
        if self.shutting_down or self.creating_log_stream:
            super().emit(record)  # type: ignore[no-untyped-call]
            return
        try:
            message = self.format(record)
            self._put(int(record.created * 1000), message, len(message.encode()))
        except Exception:
            self.handleError(record)

    def emit_event(self, event: dict[str, Any], created: float) -> bool:
        """Queue an event dict rendered by our ``JsonFormatter`` (no ``LogRecord``, no filters
        but the excluded loggers)."""
        formatter = self.formatter
        if self.shutting_down or not isinstance(formatter, JsonFormatter):
            return False
        if not str(event.get("logger", "")).startswith(_EXCLUDED_LOGGERS):
            try:
                line = formatter.render(event)
                self._put(int(created * 1000), line.decode(), len(line))
            except Exception:
                # The record path reports it through handleError(), as a failing emit() would.
                return False
        return True

    def _put(self, timestamp_ms: int, message: str, size: int) -> None:
        if len(self._queue) >= self.max_queue:
            self.dropped += 1
            return
        msg = {"timestamp": timestamp_ms, "message": message}
        if size > self.max_message_size - 2 * self.EXTRA_MSG_PAYLOAD_SIZE:
            msg = self._truncate(msg, self.max_message_size - self.EXTRA_MSG_PAYLOAD_SIZE)  # type: ignore[no-untyped-call]
            size = len(msg["message"].encode())
        self._queue.add((size + self.EXTRA_MSG_PAYLOAD_SIZE, msg))

    def _dequeue_batch(
        self,
        my_queue: _LineQueue,
        stream_name: str,
        send_interval: float,
        max_batch_size: int,
        max_batch_count: int,
    ) -> None:
        """The sender thread: every POLL seconds take what was queued, send a batch when it is
        full or ``send_interval`` old, at once on FLUSH and END.

        watchtower's own loop blocks in ``queue.get()`` for every line, so each line logged on the
        event loop wakes this thread and hands the GIL over: CPU on the request path.
        """
        batch: list[dict[str, Any]] = []
        size = 0
        deadline = time.monotonic() + send_interval
        while True:
            time.sleep(POLL)
            while (item := my_queue.take()) is not None:
                if item == self.END or item == self.FLUSH:
                    self._submit_batch(batch, stream_name)  # type: ignore[no-untyped-call]
                    batch, size = [], 0
                    deadline = time.monotonic() + send_interval
                    my_queue.task_done()
                    if item == self.END:
                        return
                    continue
                msg_size, msg = item
                if batch and (size + msg_size > max_batch_size or len(batch) >= max_batch_count):
                    self._submit_batch(batch, stream_name)  # type: ignore[no-untyped-call]
                    batch, size = [], 0
                    deadline = time.monotonic() + send_interval
                batch.append(msg)
                size += msg_size
            if batch and time.monotonic() >= deadline:
                self._submit_batch(batch, stream_name)  # type: ignore[no-untyped-call]
                batch, size = [], 0
                deadline = time.monotonic() + send_interval
            elif not batch:
                deadline = time.monotonic() + send_interval

    def queued(self) -> int:
        """Lines waiting to be sent (the handler has one stream, so one queue)."""
        return len(self._queue)


def _hold_back_events(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    """``before-parameter-build`` of PutLogEvents: keep the events from botocore's serializer,
    which walks every event in Python (about 3 µs each, holding the GIL the event loop needs)."""
    events = params.pop("logEvents", None)
    if events is not None:
        context[_EVENTS] = events


def _render_events(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    """``before-call`` of PutLogEvents: put the events into the JSON body, rendered by orjson."""
    events = context.get(_EVENTS)
    if events is not None:
        body = json.loads(params["body"] or b"{}")
        body["logEvents"] = events
        params["body"] = orjson.dumps(body)


def render_events_with_orjson(client: Any) -> None:
    """Have ``client`` (CloudWatch Logs) build PutLogEvents bodies with orjson: the same JSON
    document botocore would send, in C instead of a Python walk over every event."""
    client.meta.events.register(
        "before-parameter-build.cloudwatch-logs.PutLogEvents", _hold_back_events
    )
    client.meta.events.register("before-call.cloudwatch-logs.PutLogEvents", _render_events)


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


def build_handler(settings: CommonSettings) -> BoundedCloudWatchHandler | None:
    """The CloudWatch handler, built before the event loop starts; None when not configured."""
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
            # Our own batches are well-formed; botocore's check walks every event in Python.
            parameter_validation=False,
        ),
    )
    render_events_with_orjson(client)
    if cw.create_group:
        try:
            client.create_log_group(logGroupName=cw.log_group)
        except client.exceptions.ResourceAlreadyExistsException:
            pass
        except Exception as exc:
            print(f"cloudwatch: cannot create log group {cw.log_group}: {exc}", file=sys.stderr)
    # watchtower formats the stream name with str.format; braces must not reach it.
    stream = stream_name(settings.service, cw).replace("{", "(").replace("}", ")")
    return BoundedCloudWatchHandler(
        log_group_name=cw.log_group,
        log_stream_name=stream,
        boto3_client=client,
        create_log_group=False,
        send_interval=cw.send_interval,
        max_queue=cw.max_queue,
    )


async def close_handler(handler: logging.Handler, timeout: float = CLOSE_TIMEOUT) -> bool:
    """Flush and close in a daemon thread; True if it finished within ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def finished() -> None:
        if not done.done():
            done.set_result(None)

    def run() -> None:
        try:
            handler.close()
        finally:
            loop.call_soon_threadsafe(finished)

    threading.Thread(target=run, name="cloudwatch-close", daemon=True).start()
    try:
        await asyncio.wait_for(done, timeout)
    except TimeoutError:
        return False
    return True
