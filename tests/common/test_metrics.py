"""EMF: metrics ride on the access line in a shape CloudWatch extracts, once per line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web

from common.config import AwsSettings
from common.logging import build_formatter, configure_logging, get_logger
from common.metrics import MAX_DIMENSIONS, MAX_METRICS, add_metric, emf, request_metrics
from common.web import create_base_app
from tests.conftest import common_settings


def assert_valid_emf(doc: dict[str, Any]) -> None:
    """The EMF specification's structural rules for one log event."""
    directive = doc["_aws"]
    assert isinstance(directive["Timestamp"], int)
    for block in directive["CloudWatchMetrics"]:
        assert block["Namespace"]
        assert 1 <= len(block["Metrics"]) <= MAX_METRICS
        for dims in block["Dimensions"]:
            assert len(dims) <= MAX_DIMENSIONS
            for name in dims:
                assert isinstance(doc[name], str), f"dimension {name} needs a string value"
        for metric in block["Metrics"]:
            assert isinstance(doc[metric["Name"]], int | float), metric
            assert metric["Unit"] in ("Milliseconds", "Count", "Bytes")


def test_emf_document_shape() -> None:
    """Dimension values and metric values are top-level members next to the directive."""
    doc = emf("NS", {"Service": "s"}, {"Latency": (1.5, "Milliseconds"), "Requests": (1, "Count")})
    assert_valid_emf(doc)
    assert doc["Service"] == "s"
    assert doc["Latency"] == 1.5


def test_emf_limits_are_enforced() -> None:
    """More than 100 metrics or 30 dimensions in a set is refused before CloudWatch would."""
    with pytest.raises(ValueError, match="metrics"):
        emf("NS", {}, {f"m{i}": (1, "Count") for i in range(MAX_METRICS + 1)})
    dims = {f"d{i}": "v" for i in range(MAX_DIMENSIONS + 1)}
    with pytest.raises(ValueError, match="dimensions"):
        emf("NS", dims, {"m": (1, "Count")})


def app_with_metric_route(metrics: bool) -> web.Application:
    """The base app with one route that records a domain metric."""
    settings = replace(common_settings("demo", AwsSettings(), "/demo"), metrics=metrics)
    app = create_base_app(settings, lambda _: _none())

    async def work(request: web.Request) -> web.Response:
        add_metric(request, "UploadBytes", 10, "Bytes")
        add_metric(request, "UploadBytes", 5, "Bytes")
        return web.json_response({})

    app.router.add_get("/demo/work", work)
    return app


async def _none() -> None:
    return None


async def test_access_line_carries_request_and_domain_metrics(
    aiohttp_client: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """Latency/Requests/Errors by Service and Route, plus what the handler added."""
    configure_logging(common_settings("demo", AwsSettings(), "/demo"))
    client = await aiohttp_client(app_with_metric_route(True))
    await client.get("/demo/work")
    await client.get("/demo/missing")
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    work, missing = [x for x in lines if x["event"] == "request"]
    for line in (work, missing):
        assert_valid_emf(line)
        assert line["Service"] == "demo"
    assert work["Route"] == "/demo/work"
    assert work["UploadBytes"] == 15
    assert work["Errors4xx"] == 0
    assert missing["Route"] == "unmatched"
    assert missing["Errors4xx"] == 1
    assert work["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Service", "Route"], ["Service"]]


async def test_metrics_off_means_no_emf(
    aiohttp_client: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """METRICS_ENABLED=false: plain access lines."""
    configure_logging(common_settings("demo", AwsSettings(), "/demo"))
    client = await aiohttp_client(app_with_metric_route(False))
    await client.get("/demo/work")
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert "_aws" not in line
    assert "Latency" not in line


def test_only_one_copy_of_a_line_becomes_metrics() -> None:
    """With CloudWatch shipping on, stdout's copy drops the directive (no double counting)."""
    configure_logging(common_settings("demo", AwsSettings(), "/demo"))
    stdout_buf, shipped_buf = io.StringIO(), io.StringIO()
    stdout, shipped = logging.StreamHandler(stdout_buf), logging.StreamHandler(shipped_buf)
    stdout.setFormatter(build_formatter("s", "v", emf=False))
    shipped.setFormatter(build_formatter("s", "v", emf=True))
    logging.getLogger().handlers[:] = [stdout, shipped]
    get_logger("t").info("request", **emf("NS", {"Service": "s"}, {"Requests": (1, "Count")}))
    plain, with_emf = json.loads(stdout_buf.getvalue()), json.loads(shipped_buf.getvalue())
    assert "_aws" not in plain
    assert plain["Requests"] == 1
    assert_valid_emf(with_emf)


@pytest.mark.parametrize("status", [200, 404, 503])
def test_request_metrics_is_the_document_emf_builds(status: int) -> None:
    """The access line's cached fast path and the general emitter agree, field for field."""
    extra = {"UploadBytes": (15.0, "Bytes"), "UploadParts": (2.0, "Count")}
    fast = request_metrics("NS", "svc", "/svc/upload", status, 12.5, extra)
    general = emf(
        "NS",
        {"Service": "svc", "Route": "/svc/upload"},
        {
            "Latency": (12.5, "Milliseconds"),
            "Requests": (1, "Count"),
            "Errors4xx": (1 if 400 <= status < 500 else 0, "Count"),
            "Errors5xx": (1 if status >= 500 else 0, "Count"),
            **extra,
        },
        dimension_sets=[["Service", "Route"], ["Service"]],
        timestamp_ms=fast["_aws"]["Timestamp"],
    )
    assert fast == general
    assert_valid_emf(fast)
    assert fast["_aws"]["CloudWatchMetrics"] == [
        {
            "Namespace": "NS",
            "Dimensions": [["Service", "Route"], ["Service"]],
            "Metrics": [
                {"Name": "Latency", "Unit": "Milliseconds"},
                {"Name": "Requests", "Unit": "Count"},
                {"Name": "Errors4xx", "Unit": "Count"},
                {"Name": "Errors5xx", "Unit": "Count"},
                {"Name": "UploadBytes", "Unit": "Bytes"},
                {"Name": "UploadParts", "Unit": "Count"},
            ],
        }
    ]


def test_emf_hands_out_its_own_copy_of_the_directive() -> None:
    """A caller changing what emf() returned cannot change later documents (the cache's)."""
    first = emf("NS", {"Service": "s"}, {"Requests": (1, "Count")})
    first["_aws"]["CloudWatchMetrics"][0]["Metrics"].append({"Name": "Bogus", "Unit": "Count"})
    second = emf("NS", {"Service": "s"}, {"Requests": (1, "Count")})
    assert second["_aws"]["CloudWatchMetrics"][0]["Metrics"] == [
        {"Name": "Requests", "Unit": "Count"}
    ]
