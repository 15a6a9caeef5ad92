"""Structured logging: every line one JSON object on stdout, request fields bound per request.

structlog renders both its own events and stdlib records (aiohttp, botocore) through one
``ProcessorFormatter``, so every line has the same shape whichever library wrote it; the same
formatter serves any further handler (CloudWatch) attached to the root logger.
"""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Any

import orjson
import structlog
from structlog.types import EventDict, Processor, WrappedLogger

from common.config import CommonSettings

# The fields every line carries; the access line and domain events add their own.
BASE_FIELDS = ("timestamp", "level", "event", "service", "version", "logger", "request_id")


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


def build_formatter(
    service: str, version: str, fmt: str = "json"
) -> structlog.stdlib.ProcessorFormatter:
    """The formatter used by every handler (stdout, CloudWatch)."""
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False)
        tail: list[Processor] = [
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            renderer,
        ]
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_str)
        tail = [
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _static_fields(service, version),
            _structured_exception,
            renderer,
        ]
    return structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processors=tail)


def configure_logging(settings: CommonSettings) -> logging.Handler:
    """Configure structlog and the stdlib root logger to write JSON (or console) lines to stdout.

    Called once at process start, before the event loop runs. Returns the stdout handler.
    """
    level = getattr(logging, settings.log_level.upper())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.filter_by_level,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(build_formatter(settings.service, settings.version, settings.log_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Library chatter below WARNING is noise in production logs.
    for name in ("botocore", "aiobotocore", "urllib3", "asyncio"):
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    # Our middleware writes the access line; aiohttp's own would duplicate it.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return handler


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger; request fields are merged in from contextvars."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
