"""Every line is one JSON object from one renderer; exceptions become fields; copies split by level."""

from __future__ import annotations

import ast
import dataclasses
import datetime
import io
import json
import logging
import re
from dataclasses import replace
from typing import Any

import pytest
import structlog

from common.config import AwsSettings, CloudWatchSettings
from common.logging import BASE_FIELDS, SCHEMA, configure_logging, get_logger, iso_utc
from common.metrics import COUNTED_ERRORS, emf
from common.render import render_json
from sqssvc.batcher import BatcherStats
from tests.conftest import common_settings, log_lines
from tests.procs import ROOT


def lines(out: str) -> list[dict[str, Any]]:
    """The JSON lines of captured stdout."""
    return [json.loads(x) for x in out.splitlines() if x.strip()]


def test_our_lines_and_library_records_share_one_shape(capsys: pytest.CaptureFixture[str]) -> None:
    """Our events and aiohttp's and botocore's stdlib records carry the same base fields and the
    request context, through the one renderer."""
    configure_logging(common_settings("demo", AwsSettings(), "/demo"))
    structlog.contextvars.bind_contextvars(request_id="r-9")
    try:
        get_logger("t").info("hello", bucket="b")
        logging.getLogger("aiohttp.server").warning("from %s", "aiohttp")
        logging.getLogger("botocore.retryhandler").warning("from botocore")
    finally:
        structlog.contextvars.clear_contextvars()
    ours, aiohttp_line, botocore_line = lines(capsys.readouterr().out)
    for line in (ours, aiohttp_line, botocore_line):
        assert set(BASE_FIELDS) <= set(line), line
        assert line["service"] == "demo"
        assert line["version"] == "test"
        assert line["request_id"] == "r-9"
        assert str(line["timestamp"]).endswith("Z")
    assert (ours["event"], ours["bucket"], ours["level"], ours["logger"]) == (
        "hello",
        "b",
        "info",
        "t",
    )
    assert (aiohttp_line["event"], aiohttp_line["logger"]) == ("from aiohttp", "aiohttp.server")
    assert botocore_line["logger"] == "botocore.retryhandler"


def test_exception_is_structured(capsys: pytest.CaptureFixture[str]) -> None:
    """exc_type, exc_message and stack are fields of a single line, ours or a library's."""
    configure_logging(common_settings("demo", AwsSettings(), "/demo"))
    try:
        raise ValueError("bad thing")
    except ValueError:
        get_logger("t").exception("failed")
        logging.getLogger("aiohttp.server").exception("library failed")
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 2
    for line in lines(out):
        assert line["exc_type"] == "ValueError"
        assert line["exc_message"] == "bad thing"
        assert "Traceback" in str(line["stack"])
        assert line["level"] == "error"


def test_level_filters(capsys: pytest.CaptureFixture[str]) -> None:
    """LOG_LEVEL=warning drops info lines, ours and the libraries'; the access line can ask."""
    configure_logging(common_settings("demo", AwsSettings(), "/demo", log_level="warning"))
    log = get_logger("t")
    assert not log.is_enabled_for(logging.INFO)
    log.info("quiet")
    logging.getLogger("aiohttp.server").info("quiet too")
    log.warning("loud")
    assert [x["event"] for x in lines(capsys.readouterr().out)] == ["loud"]


def test_console_format_hides_the_emf_fields(capsys: pytest.CaptureFixture[str]) -> None:
    """LOG_FORMAT=console (make run's terminal) prints neither the EMF directive nor the metric
    and dimension values it names; JSON (without CloudWatch) carries them."""
    metrics = emf("NS", {"Route": "/demo/x"}, {"Requests": (1, "Count")})
    for fmt in ("console", "json"):
        configure_logging(common_settings("demo", AwsSettings(), "/demo", log_format=fmt))
        get_logger("common.middleware").info("request", status=201, **metrics)
        out = capsys.readouterr().out
        assert "status=201" in out or '"status":201' in out
        assert ("CloudWatchMetrics" in out) is (fmt == "json"), out
        assert ("Requests" in out) is (fmt == "json"), out
        assert ("Route" in out) is (fmt == "json"), out


def test_iso_utc_is_iso_8601_utc_with_microseconds() -> None:
    """The fast timestamp says the same instant as datetime's own formatting."""
    for t in (0.0, 1_795_522_454.759942, 1_795_522_454.0, 1_795_522_454.999_999_4):
        stamp = iso_utc(t)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp), stamp
        parsed = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        assert abs(parsed.timestamp() - t) < 1e-6
    assert iso_utc(0.5) == "1970-01-01T00:00:00.500000Z"


def test_a_failing_stdout_never_fails_the_caller(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """stdout gone (a closed pipe): the line is reported on stderr and the caller carries on."""

    class Broken(io.TextIOWrapper):
        def write(self, s: str) -> int:
            raise BrokenPipeError("stdout closed")

    broken = Broken(io.BytesIO())
    broken.buffer.close()
    monkeypatch.setattr("sys.stdout", broken)
    configure_logging(common_settings("demo", AwsSettings(), "/demo"))
    get_logger("common.middleware").info("request", status=200)
    assert "logging error" in capsys.readouterr().err


def test_a_value_orjson_cannot_render_is_still_written(capsys: pytest.CaptureFixture[str]) -> None:
    """An integer beyond 64 bits: the standard library renders the line instead."""
    configure_logging(common_settings("demo", AwsSettings(), "/demo"))
    get_logger("common.middleware").info("request", bytes_in=2**64)
    (line,) = lines(capsys.readouterr().out)
    assert line["bytes_in"] == 2**64
    # A lone surrogate (a non-UTF-8 header byte) becomes U+FFFD: strict parsers refuse its escape.
    assert json.loads(render_json({"x": "\udcff", "\ud800": ["a\ud800"]})) == {
        "x": "\ufffd",
        "\ufffd": ["a\ufffd"],
    }


async def test_production_split_one_ingestion_path(
    capsys: pytest.CaptureFixture[str], logs_client: Any, log_group: str, moto_url: str
) -> None:
    """STDOUT_LOG_LEVEL=warning with CloudWatch on (what the stack sets): an info line reaches
    CloudWatch and not stdout, a warning reaches both; the EMF directive is on the shipped copy
    only, and every shipped line is JSON with the base fields."""
    aws = AwsSettings(endpoint_url=moto_url, max_attempts=2)
    settings = replace(
        common_settings("demo", aws, "/demo", stdout_log_level="warning"),
        cloudwatch=CloudWatchSettings(log_group=log_group, stream_name="s", send_interval=0.1),
    )
    shipping = configure_logging(settings)
    log = get_logger("t")
    log.info("routine", **emf("NS", {"Service": "demo"}, {"Requests": (1, "Count")}))
    log.warning("attention", **emf("NS", {"Service": "demo"}, {"Requests": (1, "Count")}))
    logging.getLogger("aiohttp.server").warning("library attention")
    await shipping.close()
    printed = lines(capsys.readouterr().out)
    shipped = {x["event"]: x for x in await log_lines(logs_client, log_group)}
    assert [x["event"] for x in printed] == ["attention", "library attention"]
    assert {"routine", "attention", "library attention"} <= set(shipped)
    assert all("_aws" not in x for x in printed)
    assert "_aws" in shipped["routine"]
    assert "_aws" in shipped["attention"]
    for line in shipped.values():
        assert set(BASE_FIELDS) <= set(line)


def test_a_librarys_extra_fields_cannot_replace_the_schemas(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``extra`` on another library's record never overrides level, service, version or event
    (an ``extra={"level": "debug"}`` must not hide an error)."""
    configure_logging(common_settings("demo", AwsSettings(), "/demo"))
    forged = {"level": "debug", "service": "evil", "version": "v9", "event": "hijack"}
    logging.getLogger("somelib").error("real error", extra=forged)
    (line,) = lines(capsys.readouterr().out)
    assert (line["level"], line["service"], line["version"]) == ("error", "demo", "test")
    assert line["event"] == "real error"


def test_stdout_level_above_log_level_needs_cloudwatch() -> None:
    """STDOUT_LOG_LEVEL=warning with LOG_LEVEL=info and no CloudWatch would drop every info line:
    refused at start, naming the way out."""
    from common.config import ConfigError
    from s3svc.config import S3Settings

    with pytest.raises(ConfigError, match="CLOUDWATCH_LOG_GROUP"):
        S3Settings.from_env({"STDOUT_LOG_LEVEL": "warning"})
    settings = S3Settings.from_env({"STDOUT_LOG_LEVEL": "warning", "CLOUDWATCH_LOG_GROUP": "/g"})
    assert settings.common.stdout_log_level == "warning"


_LEVELS = {"debug", "info", "warning", "warn", "error", "exception", "critical", "msg"}


def _logged_fields() -> dict[str, str]:
    """Every field name the services' code gives a log line, with one place it does: the
    keywords of log calls and of ``bind_contextvars``, ``add_metric``'s names and the dimension
    and metric names written into ``emf()`` calls."""
    found: dict[str, str] = {}
    for path in sorted(p for d in ("common", "s3svc", "sqssvc") for p in (ROOT / d).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            func = node.func
            called = [func.body, func.orelse] if isinstance(func, ast.IfExp) else [func]
            names = {
                f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "") for f in called
            }
            if names & (_LEVELS | {"bind_contextvars"}):
                # exc_info is taken apart into exc_type, exc_message and stack.
                found |= {k.arg: where for k in node.keywords if k.arg not in (None, "exc_info")}
            if "add_metric" in names and isinstance(name := node.args[1], ast.Constant):
                found[str(name.value)] = where
            if "emf" in names:
                for arg in node.args[1:3]:
                    if isinstance(arg, ast.Dict):
                        found |= {
                            str(k.value): where for k in arg.keys if isinstance(k, ast.Constant)
                        }
    return found


def test_every_field_the_code_logs_is_in_the_schema() -> None:
    """SCHEMA (and so docs/logs.md) names every field a line can carry: what the code passes to
    log calls, binds to the request's context or adds as a metric, the batcher's closing
    counters and the counted errors' metrics. (The access line's own fields and its EMF are
    checked on real lines in tests/common/test_metrics.py.)"""
    fields = _logged_fields()
    assert len(fields) > 40  # the scan sees the code's log calls
    fields |= {f.name: "BatcherStats" for f in dataclasses.fields(BatcherStats)}
    fields |= {name: "COUNTED_ERRORS" for name in COUNTED_ERRORS.values()}
    missing = {k: v for k, v in fields.items() if k not in SCHEMA}
    assert not missing, missing
