"""Structured logging: one renderer for every line, written to stdout and shipped to CloudWatch.

Our own events go through structlog's native filtering bound logger, as structlog's performance
guide recommends (no stdlib round trip, orjson); records of other libraries (aiohttp, botocore,
Python warnings) come through the stdlib root logger and structlog's ``ProcessorFormatter``. Both
chains end in the same :class:`LineWriter`, which renders each copy of a line once and writes it:

- stdout: lines at ``STDOUT_LOG_LEVEL`` and above (default ``LOG_LEVEL``: every line), as JSON,
  or for people (``LOG_FORMAT=console``, without the EMF fields);
- CloudWatch (``CLOUDWATCH_LOG_GROUP``): every line, as JSON (:mod:`common.cloudwatch`).

The EMF directive rides on exactly one copy: the shipped one when CloudWatch is on, else stdout's
JSON. In production stdout carries warnings and above only (the container log group keeps boot
and crash output) and CloudWatch the full stream, so each info line is ingested once (warnings
and errors, rare, twice).
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import IO, Any

import structlog
from structlog.types import EventDict, Processor, WrappedLogger

from common.cloudwatch import CloudWatchShipper, build_shipper
from common.config import CommonSettings
from common.render import render_json, without_emf, without_emf_members

# The log schema: every field a line may carry, in one place. docs/logs.md's table and the saved
# Logs Insights queries are checked against it by the tests.
SCHEMA: dict[str, str] = {
    # every line
    "timestamp": "ISO 8601 UTC time of the event",
    "level": "debug, info, warning, error",
    "event": "what happened: `request` for the access line, else a snake_case event name",
    "logger": "the module that logged",
    "service": "`s3svc` or `sqssvc`",
    "version": "the running version (`APP_VERSION`)",
    "request_id": "the request's id (also the `X-Request-ID` response header)",
    "trace_id": "the ALB's `X-Amzn-Trace-Id` root, when present",
    # the access line (event = request)
    "method": "HTTP method",
    "route": "route template, e.g. `/s3/upload` (`unmatched` for 404s; `unparsed`, with no method "
    "or path, when HTTP parsing refused the request)",
    "path": "the raw request path",
    "status": "HTTP status sent (499: the client went away first)",
    "latency_ms": "time from request to response, in ms",
    "bytes_in": "request body size: Content-Length, or the bytes read of a chunked body",
    "bytes_out": "response body size",
    "client_ip": "last `X-Forwarded-For` entry when it is an address (the one the ALB adds; "
    "earlier entries are the client's own, and forgeable), else the peer",
    # failures
    "error": "the stable error code of a failed request (on its access line too)",
    "message": "the error's human message",
    "exc_type": "exception class, on lines that carry one",
    "exc_message": "exception text",
    "stack": "formatted traceback (one JSON string)",
    # s3svc
    "bucket": "S3 bucket",
    "key": "S3 object key",
    "size": "bytes stored (per object, or per request on the access line)",
    "parts": "multipart parts of an object (1: a single PUT)",
    "files": "files stored by the request",
    "upload_id": "multipart upload id (on `upload_aborted`)",
    "reason": "why an upload was aborted",
    "outcome": "`aborted`, or `gone` when S3 knew no such upload any more (on `upload_aborted`)",
    "limit": "upload memory budget in bytes (on `upload_memory`, at shutdown)",
    "peak": "most upload memory in use at once, bytes (on `upload_memory`)",
    "small_peak": "most memory held by files kept whole in memory at once, bytes (on "
    "`upload_memory`)",
    "slots_peak": "most bytes held in part slots at once (on `upload_memory`)",
    # sqssvc
    "queue": "SQS queue URL",
    "batch_size": "messages in one SendMessageBatch call",
    "message_id": "SQS message id",
    "messages": "messages in the request (on its access line)",
    "failed": "messages of the request SQS did not take (access line); callers answered with an "
    "error (`batcher_closed`)",
    "accepted": "entries SQS accepted in the call (on `batch_sent`)",
    "retried": "entries queued again after a retryable failure (`batch_sent`, `batcher_closed`)",
    "resends": "times botocore sent the call again (on `batch_sent`)",
    "entries": "entries in the call that failed or was refused",
    "entry_id": "a batch entry id SQS answered that was not sent (on `unknown_batch_entry`)",
    "sqs_code": "SQS's error code for the entry or the call",
    "attempt": "the highest attempt among the entries being retried (on `entries_retry`)",
    "attempts": "attempts made for the entry (on `entry_retries_exhausted`)",
    "count": "entries being retried (on `entries_retry`)",
    "delay_s": "seconds until the retry (on `entries_retry`)",
    "waiting": "entries still pending or waiting for a retry (on `drain_timeout`)",
    "calls": "SendMessageBatch calls started (on `batcher_closed`)",
    "sent": "messages SQS confirmed (on `batcher_closed`)",
    "isolated": "entries resent alone after SQS refused a whole call (on `batcher_closed`)",
    "overloaded": "sends refused because the batcher was full (on `batcher_closed`)",
    # the process
    "host": "listen address (on `listening`)",
    "port": "listen port (`listening`, `port_in_use`)",
    "base_path": "the path prefix the service answers under (on `listening`)",
    "grace_s": "the shutdown grace period, seconds (on `shutdown_started`)",
    "in_flight": "requests (or SendMessageBatch calls, on `drain_timeout`) still in flight",
    "backend": "the AWS service whose circuit breaker changed state",
    "failures": "consecutive failures that opened the circuit (on `circuit_opened`)",
    "in_time": "the last CloudWatch flush finished in time (on `log_shipping_closed`)",
    "dropped": "lines never shipped because the CloudWatch queue was full (on "
    "`log_shipping_closed`)",
    "undelivered": "admitted lines CloudWatch never confirmed (on `log_shipping_closed`)",
    # EMF metrics (CloudWatch extracts them; see common/metrics.py)
    "_aws": "EMF directive: namespace, dimensions and metric names",
    "Service": "metric dimension: the service",
    "Route": "metric dimension: the route template",
    "Latency": "metric: request latency, ms",
    "Requests": "metric: 1 per request",
    "Errors4xx": "metric: 1 if the status was 4xx",
    "Errors5xx": "metric: 1 if the status was 5xx",
    "UploadBytes": "metric (s3svc): bytes stored by the request",
    "UploadParts": "metric (s3svc): parts uploaded by the request",
    "StrayUploadsAborted": "metric (s3svc): open multipart uploads of the same key found and "
    "aborted",
    "IdempotentReplays": "metric (s3svc): files answered from an earlier upload with the same "
    "idempotency key, not stored again",
    "Busy": "metric: 1 if the request was answered `503 busy` (upload memory stayed exhausted)",
    "BodyTooSlow": "metric: 1 if the request was answered `408 body_too_slow`",
    "MessagesSent": "metric (sqssvc): messages SQS accepted",
    "BatchSize": "metric (sqssvc): messages per SendMessageBatch call",
    "SendRetries": "metric (sqssvc): entries sent again after a retryable failure",
    "BatchResends": "metric (sqssvc): times botocore sent a SendMessageBatch call again (after a "
    "timeout SQS may have stored both)",
}

# The fields every line carries.
BASE_FIELDS = ("timestamp", "level", "event", "service", "version", "logger")
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
LEVELS |= {"error": logging.ERROR, "critical": logging.CRITICAL}
# Method names that are not level names (as structlog's add_log_level maps them).
_METHOD_LEVELS = {"warn": "warning", "exception": "error", "fatal": "critical", "msg": "info"}


@functools.lru_cache(maxsize=4)
def _utc_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def iso_utc(t: float) -> str:
    """``t`` (seconds since the epoch) as ISO 8601 UTC with microseconds, e.g.
    ``2026-11-24T12:14:14.759942Z``; the date and time of day are formatted once per second."""
    second = int(t)
    return f"{_utc_second(second)}.{int((t - second) * 1_000_000):06d}Z"


def _structured_exception(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Turn ``exc_info`` into flat fields, so an exception never becomes a multi-line text blob."""
    exc_info = event.pop("exc_info", None)
    if not exc_info:
        return event
    if exc_info is True:
        exc_info = sys.exc_info()
    elif isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if isinstance(exc_info, tuple) and exc_info[0] is not None:
        exc_type, exc, tb = exc_info
        event["exc_type"] = exc_type.__name__
        event["exc_message"] = str(exc)
        event["stack"] = "".join(traceback.format_exception(exc_type, exc, tb))
    return event


class LineWriter:
    """Where every line ends: one render per copy, stdout and (when on) CloudWatch.

    Writing never raises into the caller: a failing stdout is reported on stderr.
    """

    def __init__(
        self,
        stream: IO[str],
        *,
        stdout_level: int,
        console: bool = False,
        cloudwatch: CloudWatchShipper | None = None,
    ) -> None:
        self._stream = stream
        self._binary: IO[bytes] | None = getattr(stream, "buffer", None)
        self._stdout_level = stdout_level
        self._console = structlog.dev.ConsoleRenderer(colors=False) if console else None
        self.cloudwatch = cloudwatch
        self._lock = threading.Lock()  # lines come from the event loop and from other threads

    def write(self, event: EventDict) -> None:
        """Write ``event`` to every copy that takes it."""
        level = LEVELS.get(event.get("level", "info"), logging.INFO)
        shipper = self.cloudwatch
        if shipper is not None:
            shipper.ship(event)
        if level < self._stdout_level:
            return
        try:
            if self._console is not None:
                self._write_text(self._console(None, "", without_emf_members(event)) + "\n")
            else:
                self._write_json(without_emf(event) if shipper is not None else event)
        except Exception as exc:  # as logging.Handler.handleError: report, never raise
            print(f"--- logging error: {type(exc).__name__}: {exc}", file=sys.stderr)

    def _write_json(self, event: EventDict) -> None:
        line = render_json(event) + b"\n"
        with self._lock:
            if self._binary is None:
                self._stream.write(line.decode())
                self._stream.flush()
            else:
                self._binary.write(line)
                self._binary.flush()

    def _write_text(self, text: str) -> None:
        with self._lock:
            self._stream.write(text)
            self._stream.flush()

    def processor(self, _: WrappedLogger, __: str, event: EventDict) -> str:
        """The last processor of the stdlib records' chain: write, hand logging nothing more."""
        self.write(event)
        return ""


class _Named:
    """What structlog's bound loggers wrap: a logger name, and the writer under every level."""

    def __init__(self, writer: LineWriter, name: str) -> None:
        self.name = name
        self._writer = writer

    def __call__(self, event: EventDict) -> None:
        self._writer.write(event)

    msg = debug = info = warning = warn = error = err = critical = exception = fatal = __call__


def _level_and_name(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
    """structlog's ``add_log_level`` and the logger's name, in one step."""
    event["level"] = _METHOD_LEVELS.get(method, method)
    event.setdefault("logger", logger.name)
    return event


def _to_writer(
    _: WrappedLogger, __: str, event: EventDict
) -> tuple[tuple[EventDict], dict[str, Any]]:
    """The last processor of our own chain: the event dict goes to the writer whole."""
    return (event,), {}


class _ForeignRecords(logging.Handler):
    """The root logger's one handler: records of other libraries, through structlog's
    ``ProcessorFormatter`` (the formatter's last processor writes the line)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.format(record)
        except Exception:
            self.handleError(record)


def _chain(service: str, version: str) -> list[Processor]:
    """The processors both chains share, after each has its level and logger name: the request
    context, then one step for the timestamp, the static fields and flat exception fields (one
    call per line instead of three: this runs for every access line)."""

    def finish(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
        event["timestamp"] = iso_utc(time.time())
        event["service"] = service
        event["version"] = version
        if "exc_info" in event:
            _structured_exception(None, "", event)
        return event

    return [structlog.contextvars.merge_contextvars, finish]


@dataclass
class LogShipping:
    """What logging writes to; ``cloudwatch`` is None unless CLOUDWATCH_LOG_GROUP is set."""

    writer: LineWriter
    cloudwatch: CloudWatchShipper | None = None

    async def close(self) -> None:
        """Flush CloudWatch off the event loop, bounded in time: the last step of shutdown."""
        shipper = self.cloudwatch
        if shipper is None:
            return
        # Lines from here on go to stdout only: a closing watchtower refuses them (with a warning).
        self.writer.cloudwatch = None
        in_time = await shipper.close()
        lost = shipper.dropped or shipper.undelivered()
        # Only stdout hears this; in production it prints warnings only, so say losses there.
        (get_logger("common.logging").warning if lost else get_logger("common.logging").info)(
            "log_shipping_closed",
            in_time=in_time,
            dropped=shipper.dropped,
            undelivered=shipper.undelivered(),
        )


def configure_logging(settings: CommonSettings) -> LogShipping:
    """Configure structlog and the stdlib root logger: every line to stdout (from
    ``STDOUT_LOG_LEVEL``), and to CloudWatch when configured. Called once at process start,
    before the event loop runs."""
    level = LEVELS[settings.log_level]
    # No line shows where it was logged from, nor thread or process: spare every record (other
    # libraries' and the CloudWatch copy's) the frame walk and lookups (the logging docs'
    # "Optimization" switches).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    shipper = build_shipper(settings)
    writer = LineWriter(
        sys.stdout,
        stdout_level=LEVELS[settings.stdout_log_level or settings.log_level],
        console=settings.log_format == "console",
        cloudwatch=shipper,
    )
    shared = _chain(settings.service, settings.version)
    structlog.configure(
        processors=[_level_and_name, *shared, _to_writer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=functools.lru_cache(maxsize=None)(lambda name="": _Named(writer, name)),
        # Module-level loggers stay lazy (a test may configure logging again); the access line's
        # logger is bound once per app instead (common.app).
        cache_logger_on_first_use=False,
    )
    foreign = _ForeignRecords()
    foreign.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            # No ExtraAdder: a library's ``extra`` keys must not replace the schema's fields.
            foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *shared,
                writer.processor,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [foreign]
    root.setLevel(level)
    # Library chatter below WARNING is noise in production logs.
    for name in ("botocore", "aiobotocore", "urllib3", "asyncio"):
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    # Python warnings (watchtower reports delivery failures as warnings) become lines too.
    logging.captureWarnings(True)
    # Our middleware writes the access line; aiohttp's own would duplicate it.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return LogShipping(writer=writer, cloudwatch=shipper)


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """A structlog logger named ``name``; request fields are merged in from contextvars."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
