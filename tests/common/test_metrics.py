"""EMF: metrics ride on the access line in a shape CloudWatch extracts, once per line."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web

from common.app import create_base_app
from common.config import AwsSettings
from common.logging import SCHEMA, configure_logging
from common.metrics import MAX_DIMENSIONS, MAX_METRICS, emf, request_metrics
from common.middleware import add_metric
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
        assert set(line) <= set(SCHEMA), set(line) - set(SCHEMA)  # every field documented
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


@pytest.mark.parametrize("status", [200, 404, 503])
def test_request_metrics_document(status: int) -> None:
    """The access line's EMF: four request metrics plus the handler's, by (Service, Route) and
    by Service."""
    extra = {"UploadBytes": (15.0, "Bytes"), "UploadParts": (2.0, "Count")}
    doc = json.loads(json.dumps(request_metrics("NS", "svc", "/svc/upload", status, 12.5, extra)))
    assert_valid_emf(doc)
    assert (doc["Errors4xx"], doc["Errors5xx"]) == (int(400 <= status < 500), int(status >= 500))
    assert doc["_aws"]["CloudWatchMetrics"] == [
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


def test_the_shared_directive_cannot_be_changed() -> None:
    """emf() shares one validated directive between lines of a shape: it is immutable, so a
    caller cannot change what later lines carry."""
    first = emf("NS", {"Service": "s"}, {"Requests": (1, "Count")})
    with pytest.raises(AttributeError):
        first["_aws"]["CloudWatchMetrics"][0]["Metrics"].append({"Name": "Bogus"})
    second = emf("NS", {"Service": "s"}, {"Requests": (1, "Count")})
    assert second["_aws"]["CloudWatchMetrics"] is first["_aws"]["CloudWatchMetrics"]
