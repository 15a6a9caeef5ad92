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
import watchtower
from botocore.config import Config

from common.config import CloudWatchSettings, CommonSettings

# How long the final flush may take at shutdown: watchtower's own wait, and ours around it.
FLUSH_TIMEOUT = 4
CLOSE_TIMEOUT = 5.0
# How often the sender thread looks for queued lines (it never blocks waiting for one).
POLL = 0.05
# Records from these loggers never go to CloudWatch: they may be about CloudWatch delivery itself,
# and shipping them could feed back into the handler.
_EXCLUDED_LOGGERS = ("botocore", "boto3", "urllib3", "watchtower", "py.warnings")


class BoundedCloudWatchHandler(watchtower.CloudWatchLogHandler):
    """watchtower's handler with a bound on queued lines; ``dropped`` counts what was refused."""

    def __init__(self, *, max_queue: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_queue = max_queue
        self.dropped = 0
        self.FLUSH_TIMEOUT = FLUSH_TIMEOUT
        self.addFilter(lambda record: not record.name.startswith(_EXCLUDED_LOGGERS))

    def emit(self, record: logging.LogRecord) -> None:
        """Queue the record unless the queue is full (then drop and count it).

        Once the sender thread runs, this is watchtower's ``emit`` without its per-line
        ``getMessage()`` (``str()`` of the whole event dict, only to refuse empty messages: ours
        never are) and ``_get_stream_name()`` (a ``str.format`` of a name that has no fields).
        """
        queue = self.queues.get(self.log_stream_name)
        if queue is None or self.shutting_down or self.creating_log_stream:
            super().emit(record)  # type: ignore[no-untyped-call]
            return
        if queue.qsize() >= self.max_queue:
            self.dropped += 1
            return
        try:
            msg = {"timestamp": int(record.created * 1000), "message": self.format(record)}
            limit = self.max_message_size - self.EXTRA_MSG_PAYLOAD_SIZE
            if self._size(msg) > limit:  # type: ignore[no-untyped-call]
                msg = self._truncate(msg, limit)  # type: ignore[no-untyped-call]
            queue.put(msg)
        except Exception:
            self.handleError(record)

    def _dequeue_batch(
        self,
        my_queue: Any,
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
            while True:
                try:
                    msg = my_queue.get_nowait()
                except queue_module.Empty:
                    break
                if msg == self.END or msg == self.FLUSH:
                    self._submit_batch(batch, stream_name)  # type: ignore[no-untyped-call]
                    batch, size = [], 0
                    deadline = time.monotonic() + send_interval
                    my_queue.task_done()
                    if msg == self.END:
                        return
                    continue
                msg_size = self._size(msg)  # type: ignore[no-untyped-call]
                if batch and (size + msg_size > max_batch_size or len(batch) >= max_batch_count):
                    self._submit_batch(batch, stream_name)  # type: ignore[no-untyped-call]
                    batch, size = [], 0
                    deadline = time.monotonic() + send_interval
                batch.append(msg)
                size += msg_size
                my_queue.task_done()
            if batch and time.monotonic() >= deadline:
                self._submit_batch(batch, stream_name)  # type: ignore[no-untyped-call]
                batch, size = [], 0
                deadline = time.monotonic() + send_interval
            elif not batch:
                deadline = time.monotonic() + send_interval

    def queued(self) -> int:
        """Lines waiting to be sent."""
        return sum(q.qsize() for q in self.queues.values())


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
