"""Every log line is one JSON object; exceptions become fields, not text blobs."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from common.config import AwsSettings
from common.logging import configure_logging, get_logger
from tests.conftest import common_settings


def lines(out: str) -> list[dict[str, object]]:
    """The JSON lines of captured stdout."""
    return [json.loads(x) for x in out.splitlines() if x.strip()]


def test_structlog_and_stdlib_lines_share_one_shape(capsys: pytest.CaptureFixture[str]) -> None:
    """Our events and a library's stdlib record both carry timestamp, level, service, request_id."""
    configure_logging(common_settings("demo", AwsSettings(), "/demo"))
    structlog.contextvars.bind_contextvars(request_id="r-9")
    try:
        get_logger("t").info("hello", bucket="b")
        logging.getLogger("aiohttp.server").warning("from a library")
    finally:
        structlog.contextvars.clear_contextvars()
    ours, theirs = lines(capsys.readouterr().out)
    for line in (ours, theirs):
        assert line["service"] == "demo"
        assert line["version"] == "test"
        assert line["request_id"] == "r-9"
        assert str(line["timestamp"]).endswith("Z")
    assert ours["event"] == "hello"
    assert ours["bucket"] == "b"
    assert ours["level"] == "info"
    assert theirs["event"] == "from a library"
    assert theirs["level"] == "warning"


def test_exception_is_structured(capsys: pytest.CaptureFixture[str]) -> None:
    """exc_type, exc_message and stack are fields of a single line."""
    configure_logging(common_settings("demo", AwsSettings(), "/demo"))
    try:
        raise ValueError("bad thing")
    except ValueError:
        get_logger("t").exception("failed")
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1
    (line,) = lines(out)
    assert line["exc_type"] == "ValueError"
    assert line["exc_message"] == "bad thing"
    assert "Traceback" in str(line["stack"])
    assert "exception" not in line


def test_level_filters(capsys: pytest.CaptureFixture[str]) -> None:
    """LOG_LEVEL=warning drops info lines."""
    from dataclasses import replace

    configure_logging(replace(common_settings("demo", AwsSettings(), "/demo"), log_level="warning"))
    get_logger("t").info("quiet")
    get_logger("t").warning("loud")
    assert [x["event"] for x in lines(capsys.readouterr().out)] == ["loud"]
