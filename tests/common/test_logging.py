"""Every log line is one JSON object; exceptions become fields, not text blobs."""

from __future__ import annotations

import datetime
import io
import json
import logging
import re

import pytest
import structlog

from common.config import AwsSettings
from common.logging import DirectLogger, build_formatter, configure_logging, get_logger, iso_utc
from common.metrics import emf
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


def test_access_fast_path_writes_the_line_structlog_would(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """DirectLogger (the access line's path) and structlog give the same fields and values."""
    configure_logging(common_settings("demo", AwsSettings(), "/demo"))
    structlog.contextvars.bind_contextvars(request_id="r-1", trace_id="1-abc")
    fields = {"method": "GET", "status": 200, "latency_ms": 1.25, "client_ip": "10.0.0.1"}
    DirectLogger("common.web").info("request", dict(fields))
    get_logger("common.web").info("request", **fields)
    fast, slow = lines(capsys.readouterr().out)
    assert set(fast) == set(slow)
    for key in set(slow) - {"timestamp"}:
        assert fast[key] == slow[key], key
    assert fast["request_id"] == "r-1"
    assert fast["logger"] == "common.web"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", str(fast["timestamp"]))


def test_access_fast_path_gives_other_handlers_a_record(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A handler that takes no event dicts (here: a capture list) gets an ordinary record, and
    the stdout line is still written once."""
    configure_logging(common_settings("demo", AwsSettings(), "/demo"))
    records: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    capture = Capture()
    capture.setFormatter(build_formatter("demo", "test"))
    logging.getLogger().addHandler(capture)
    DirectLogger("common.web").info("request", {"status": 404})
    (printed,) = lines(capsys.readouterr().out)
    (record,) = records
    assert record.name == "common.web"
    assert record.levelno == logging.INFO
    assert json.loads(capture.format(record)) == printed


def test_access_fast_path_in_console_format(capsys: pytest.CaptureFixture[str]) -> None:
    """LOG_FORMAT=console: the access line is rendered for humans like every other line."""
    configure_logging(common_settings("demo", AwsSettings(), "/demo", log_format="console"))
    DirectLogger("common.web").info("request", {"status": 201, "route": "/demo/x"})
    out = capsys.readouterr().out
    assert "request" in out
    assert "status=201" in out
    assert "route=/demo/x" in out
    assert not out.startswith("{")


def test_console_format_hides_the_emf_block(capsys: pytest.CaptureFixture[str]) -> None:
    """LOG_FORMAT=console (make run's terminal) never prints the EMF directive; JSON does."""
    line = {
        "status": 201,
        "route": "/demo/x",
        **emf("NS", {"Route": "/demo/x"}, {"Requests": (1, "Count")}),
    }
    for fmt in ("console", "json"):
        configure_logging(common_settings("demo", AwsSettings(), "/demo", log_format=fmt))
        DirectLogger("common.web").info("request", dict(line))
        out = capsys.readouterr().out
        assert "status=201" in out or '"status":201' in out
        assert ("CloudWatchMetrics" in out) is (fmt == "json"), out
        # Nor the metric and dimension values the directive names (they repeat the fields).
        assert ("Requests" in out) is (fmt == "json"), out
        assert ("Route" in out) is (fmt == "json"), out


def test_access_fast_path_respects_the_level(capsys: pytest.CaptureFixture[str]) -> None:
    """LOG_LEVEL=warning: no access line, and the middleware can skip building it."""
    configure_logging(common_settings("demo", AwsSettings(), "/demo", log_level="warning"))
    access = DirectLogger("common.web")
    assert not access.enabled()
    access.info("request", {"status": 200})
    assert capsys.readouterr().out == ""


def test_iso_utc_is_iso_8601_utc_with_microseconds() -> None:
    """The fast timestamp says the same instant as datetime's own formatting."""
    for t in (0.0, 1_795_522_454.759942, 1_795_522_454.0, 1_795_522_454.999_999_4):
        stamp = iso_utc(t)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp), stamp
        parsed = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        assert abs(parsed.timestamp() - t) < 1e-6
    assert iso_utc(0.5) == "1970-01-01T00:00:00.500000Z"


def test_a_failing_stdout_never_fails_the_caller(capsys: pytest.CaptureFixture[str]) -> None:
    """stdout gone (a closed pipe): the access line is reported through logging's own error
    handling, as for any record, and the request path carries on."""
    configure_logging(common_settings("demo", AwsSettings(), "/demo"))

    class Broken(io.TextIOWrapper):
        def write(self, s: str) -> int:
            raise BrokenPipeError("stdout closed")

    broken = Broken(io.BytesIO())
    broken.buffer.close()
    (handler,) = logging.getLogger().handlers
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(broken)
    DirectLogger("common.web").info("request", {"status": 200})
    assert "Logging error" in capsys.readouterr().err


def test_access_fast_path_honours_the_loggers_own_configuration(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A filter on the logger, or a logger that does not propagate, decides as for any record."""
    configure_logging(common_settings("demo", AwsSettings(), "/demo"))
    quiet = logging.getLogger("fast.filtered")
    quiet.addFilter(lambda record: False)
    DirectLogger("fast.filtered").info("request", {"status": 200})
    assert capsys.readouterr().out == ""

    own: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            own.append(record)

    alone = logging.getLogger("fast.alone")
    alone.propagate = False
    alone.addHandler(Capture())
    try:
        DirectLogger("fast.alone").info("request", {"status": 201})
    finally:
        alone.propagate = True
        alone.handlers.clear()
    assert capsys.readouterr().out == ""
    (record,) = own
    assert isinstance(record.msg, dict)
    assert record.msg["status"] == 201


def test_a_value_orjson_cannot_render_never_fails_the_caller(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An integer beyond 64 bits: reported by logging's error handling, not raised."""
    configure_logging(common_settings("demo", AwsSettings(), "/demo"))
    DirectLogger("common.web").info("request", {"bytes_in": 2**64})
    assert "Logging error" in capsys.readouterr().err
