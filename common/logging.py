"""Structured logging: every line one JSON object on stdout, request fields bound per request.

structlog renders both its own events and stdlib records (aiohttp, botocore) through one
``ProcessorFormatter``, so every line has the same shape whichever library wrote it; the same
formatter serves any further handler (CloudWatch) attached to the root logger. The access line,
once per request, takes a shorter way to the same handlers (:class:`DirectLogger`).
"""

from __future__ import annotations

import functools
import logging
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from structlog.types import EventDict, Processor, WrappedLogger

from common.config import CommonSettings

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
    "route": "route template, e.g. `/s3/upload` (`unmatched` for 404s)",
    "path": "the raw request path",
    "status": "HTTP status sent (499: the client went away first)",
    "latency_ms": "time from request to response, in ms",
    "bytes_in": "request body size: Content-Length, or the bytes read of a chunked body",
    "bytes_out": "response body size",
    "client_ip": "first `X-Forwarded-For` entry (the ALB adds it), else the peer",
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
    # sqssvc
    "queue": "SQS queue URL",
    "batch_size": "messages in one SendMessageBatch call",
    "message_id": "SQS message id",
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
    "MessagesSent": "metric (sqssvc): messages SQS accepted",
    "BatchSize": "metric (sqssvc): messages per SendMessageBatch call",
    "SendRetries": "metric (sqssvc): entries sent again after a retryable failure",
}

# The fields every line carries.
BASE_FIELDS = ("timestamp", "level", "event", "service", "version", "logger")


@functools.lru_cache(maxsize=4)
def _utc_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def iso_utc(t: float) -> str:
    """``t`` (seconds since the epoch) as ISO 8601 UTC with microseconds, e.g.
    ``2026-11-24T12:14:14.759942Z``; the date and time of day are formatted once per second."""
    second = int(t)
    return f"{_utc_second(second)}.{int((t - second) * 1_000_000):06d}Z"


def _timestamp(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    event["timestamp"] = iso_utc(time.time())
    return event


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


def _static_fields(service: str, version: str) -> Processor:
    def add(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
        event.setdefault("service", service)
        event.setdefault("version", version)
        return event

    return add


def _orjson_str(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


def _drop_emf(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    event.pop("_aws", None)
    return event


def _drop_emf_members(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """The directive and the metric and dimension values it names (``Latency`` repeats
    ``latency_ms``, ``Route`` repeats ``route``): for a console read by people."""
    for directive in event.pop("_aws", {}).get("CloudWatchMetrics", []):
        for metric in directive.get("Metrics", []):
            event.pop(metric["Name"], None)
        for dimensions in directive.get("Dimensions", []):
            for name in dimensions:
                event.pop(name, None)
    return event


class JsonFormatter(logging.Formatter):
    """One JSON object per record, without structlog's per-record copy of the ``LogRecord``.

    Our own events (structlog's ``wrap_for_formatter`` left the event dict in ``record.msg``) are
    rendered here directly: a shallow copy of the event dict (another handler formats the same
    record), the static fields, flat exception fields, orjson. Records of other libraries go
    through ``foreign`` (structlog's ``ProcessorFormatter`` with its pre-chain), as before.
    """

    def __init__(
        self,
        service: str,
        version: str,
        *,
        emf: bool,
        foreign: structlog.stdlib.ProcessorFormatter,
    ) -> None:
        super().__init__()
        self._service = service
        self._version = version
        self._emf = emf
        self._foreign = foreign

    def format(self, record: logging.LogRecord) -> str:
        event = record.msg
        if not isinstance(event, dict) or not hasattr(record, "_logger"):
            return self._foreign.format(record)
        return self.render(dict(event)).decode()

    def render(self, event: dict[str, Any], *, newline: bool = False) -> bytes:
        """One event dict of ours as a JSON line (``newline``: with its ``\\n``).

        Adds the static fields and flattens ``exc_info`` in place; the EMF directive, when this
        copy must not carry it, is left out of the output but stays in ``event`` for other
        handlers.
        """
        event.setdefault("service", self._service)
        event.setdefault("version", self._version)
        if "exc_info" in event:
            _structured_exception(None, "", event)
        option = orjson.OPT_APPEND_NEWLINE if newline else 0
        if self._emf or "_aws" not in event:
            return orjson.dumps(event, default=str, option=option)
        directive = event.pop("_aws")
        try:
            return orjson.dumps(event, default=str, option=option)
        finally:
            event["_aws"] = directive


class EventHandler(logging.Handler):
    """A handler that can also take a finished event dict directly (see :class:`DirectLogger`)."""

    def emit_event(self, event: dict[str, Any], created: float) -> bool:
        """Write ``event`` (logged at ``created``); False when it needs a ``LogRecord`` instead."""
        raise NotImplementedError


class StdoutHandler(logging.StreamHandler, EventHandler):  # type: ignore[type-arg]
    """The stdout handler: records as ``StreamHandler`` writes them, event dicts rendered by its
    ``JsonFormatter`` straight to the stream's bytes; one ``write`` and ``flush`` per line."""

    def emit_event(self, event: dict[str, Any], created: float) -> bool:
        formatter = self.formatter
        binary = getattr(self.stream, "buffer", None)
        if binary is None or self.filters or not isinstance(formatter, JsonFormatter):
            return False
        try:
            line = formatter.render(event, newline=True)
            with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
                binary.write(line)
                binary.flush()
        except Exception:
            # As a failing emit() would: the record path reports it through handleError().
            return False
        return True


class DirectLogger:
    """Info lines from one logger, written straight to the root logger's handlers.

    For the access line, logged once per request: it skips structlog's processor chain, the
    stdlib ``Logger`` and the ``LogRecord`` (about three quarters of a line's cost), yet the line
    has the same fields and shape as any other. A handler that cannot take an event dict (a
    test's capture handler, a console formatter, a handler with filters) gets an ordinary record
    instead, and so does the whole line when the logger's own configuration (filters, handlers,
    ``propagate``) has a say.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._stdlib = logging.getLogger(name)

    def enabled(self) -> bool:
        """Whether an info line of this logger would be written at all."""
        return self._stdlib.isEnabledFor(logging.INFO)

    def info(self, event: str, fields: dict[str, Any]) -> None:
        """Log ``event`` with ``fields`` and the bound request context, at info level."""
        if not self._stdlib.isEnabledFor(logging.INFO):
            return
        created = time.time()
        ed = structlog.contextvars.get_contextvars()
        ed.update(fields)
        ed["event"] = event
        ed["level"] = "info"
        ed["logger"] = self.name
        ed["timestamp"] = iso_utc(created)
        if not self._root_only():
            self._stdlib.handle(self._record(ed, created))
            return
        record: logging.LogRecord | None = None
        for handler in logging.root.handlers:
            if handler.level > logging.INFO:
                continue
            if isinstance(handler, EventHandler) and handler.emit_event(ed, created):
                continue
            if record is None:
                record = self._record(ed, created)
            handler.handle(record)

    def _root_only(self) -> bool:
        """True when the line would reach the root logger's handlers and no others: no filter,
        handler or ``propagate = False`` on the way (else the stdlib decides, with a record)."""
        logger: logging.Logger | None = self._stdlib
        while logger is not None and logger is not logging.root:
            if logger.filters or logger.handlers or not logger.propagate:
                return False
            logger = logger.parent
        return True

    def _record(self, event: dict[str, Any], created: float) -> logging.LogRecord:
        # What structlog's ``wrap_for_formatter`` would have handed the stdlib logger.
        record = self._stdlib.makeRecord(self.name, logging.INFO, "", 0, event, (), None)
        record.created = created
        record._logger = self._stdlib
        record._name = "info"
        return record


def build_formatter(
    service: str, version: str, fmt: str = "json", *, emf: bool = True
) -> logging.Formatter:
    """The formatter of a handler (stdout, CloudWatch).

    ``emf=False`` drops the EMF directive, so that only one copy of a line (the one shipped to
    CloudWatch) turns into metrics, never both.
    """
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        _timestamp,
    ]
    renderer: Processor
    if fmt == "console":
        # Console lines are for people: the EMF block is noise there, on any copy.
        renderer = structlog.dev.ConsoleRenderer(colors=False)
        tail: list[Processor] = [
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _drop_emf_members,
            renderer,
        ]
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_str)
        tail = [
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _static_fields(service, version),
            _structured_exception,
        ]
        if not emf:
            tail.append(_drop_emf)
        tail.append(renderer)
        foreign = structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processors=tail)
        return JsonFormatter(service, version, emf=emf, foreign=foreign)
    return structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processors=tail)


@dataclass
class LogShipping:
    """The handlers logging writes to; ``cloudwatch`` is None unless CLOUDWATCH_LOG_GROUP is set."""

    stdout: logging.Handler
    cloudwatch: Any = None

    async def close(self) -> None:
        """Flush CloudWatch off the event loop, bounded in time: the last step of shutdown."""
        if self.cloudwatch is not None:
            from common.cloudwatch import close_handler

            in_time = await close_handler(self.cloudwatch)
            # Closed handlers must not receive lines (watchtower warns on each one).
            logging.getLogger().removeHandler(self.cloudwatch)
            get_logger("common.logging").info(
                "log_shipping_closed",
                in_time=in_time,
                dropped=self.cloudwatch.dropped,
                undelivered=self.cloudwatch.queued(),
            )


def configure_logging(settings: CommonSettings) -> LogShipping:
    """Configure structlog and the stdlib root logger: every line to stdout, and to CloudWatch
    when configured. Called once at process start, before the event loop runs."""
    level = getattr(logging, settings.log_level.upper())
    # No line shows where it was logged from, nor thread or process: spare every record the
    # frame walk and lookups (the logging docs' "Optimization" switches).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.filter_by_level,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            _timestamp,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    from common.cloudwatch import build_handler

    cloudwatch = build_handler(settings)
    handler = StdoutHandler(sys.stdout)
    handler.setFormatter(
        build_formatter(
            settings.service, settings.version, settings.log_format, emf=cloudwatch is None
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    if cloudwatch is not None:
        cloudwatch.setFormatter(build_formatter(settings.service, settings.version, "json"))
        root.addHandler(cloudwatch)
    root.setLevel(level)
    # Library chatter below WARNING is noise in production logs.
    for name in ("botocore", "aiobotocore", "urllib3", "asyncio"):
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    # Python warnings (watchtower reports delivery failures as warnings) become JSON lines too.
    logging.captureWarnings(True)
    # Our middleware writes the access line; aiohttp's own would duplicate it.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return LogShipping(stdout=handler, cloudwatch=cloudwatch)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger; request fields are merged in from contextvars."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
