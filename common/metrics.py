"""Metrics as CloudWatch Embedded Metric Format (EMF) fields of ordinary log lines.

CloudWatch Logs turns any JSON log event with an ``_aws.CloudWatchMetrics`` directive into metrics,
so a metric costs no API call and no extra line: the access line of each request carries its own
(``Latency``, ``Requests``, ``Errors4xx``, ``Errors5xx`` by ``Service`` and ``Route``, plus what
the handler added with ``common.middleware.add_metric``). This small emitter is used instead of
``aws-embedded-metrics`` because that library keeps its own logger and flush cycle next to ours
(one more line per request, its own sink detection); here metrics ride on the line we write anyway.

Limits (EMF spec): at most 100 metrics per directive and 30 dimensions per dimension set.
"""

from __future__ import annotations

import functools
import operator
import time
from typing import Any

MAX_METRICS = 100
MAX_DIMENSIONS = 30

# Metric units, as CloudWatch spells them.
MILLISECONDS = "Milliseconds"
COUNT = "Count"
BYTES = "Bytes"

Metrics = dict[str, tuple[float, str]]
"""Metric name -> (value, unit)."""
_VALUE, _UNIT = operator.itemgetter(0), operator.itemgetter(1)

# Error codes an operator counts (and alarms on): the request's metric of that name is 1.
COUNTED_ERRORS = {
    "busy": "Busy",  # 503: upload memory stayed exhausted for UPLOAD_MEMORY_WAIT
    "body_too_slow": "BodyTooSlow",  # 408: a body dripped below BODY_MIN_RATE
}


@functools.lru_cache(maxsize=1024)
def _directive(
    namespace: str,
    dimension_sets: tuple[tuple[str, ...], ...],
    dimension_names: tuple[str, ...],
    metric_names: tuple[str, ...],
    units: tuple[str, ...],
) -> tuple[dict[str, Any], ...]:
    """The ``CloudWatchMetrics`` value, validated once per distinct shape and then shared by every
    line of that shape (routes and metric names are few). Tuples, so no caller can change it."""
    if len(metric_names) > MAX_METRICS:
        raise ValueError(f"{len(metric_names)} metrics in one EMF document (max {MAX_METRICS})")
    for dims in dimension_sets:
        if len(dims) > MAX_DIMENSIONS:
            raise ValueError(f"{len(dims)} dimensions in one set (max {MAX_DIMENSIONS})")
        missing = [d for d in dims if d not in dimension_names]
        if missing:
            raise ValueError(f"dimension set names {missing}, which have no value")
    return (
        {
            "Namespace": namespace,
            "Dimensions": dimension_sets,
            "Metrics": tuple(
                {"Name": name, "Unit": unit} for name, unit in zip(metric_names, units, strict=True)
            ),
        },
    )


def emf(
    namespace: str,
    dimensions: dict[str, str],
    metrics: Metrics,
    *,
    dimension_sets: tuple[tuple[str, ...], ...] | None = None,
    timestamp_ms: int | None = None,
) -> dict[str, Any]:
    """The fields that make a log line an EMF document: the directive, dimension and metric values.

    The one builder of EMF documents. ``dimension_sets`` defaults to one set of all
    ``dimensions``; each set is its own metric series.
    """
    # Built with C-level tuple/map/zip: this runs for every access line.
    names = tuple(metrics)
    dimension_names = tuple(dimensions)
    directive = _directive(
        namespace,
        dimension_sets or (dimension_names,),
        dimension_names,
        names,
        tuple(map(_UNIT, metrics.values())),
    )
    fields: dict[str, Any] = {
        "_aws": {
            "Timestamp": timestamp_ms if timestamp_ms is not None else int(time.time() * 1000),
            "CloudWatchMetrics": directive,
        },
        **dimensions,
    }
    fields.update(zip(names, map(_VALUE, metrics.values()), strict=True))
    return fields


# The request metrics' dimension sets: by service and route, and by service alone.
_REQUEST_SETS = (("Service", "Route"), ("Service",))


def request_metrics(
    namespace: str, service: str, route: str, status: int, latency_ms: float, extra: Metrics
) -> dict[str, Any]:
    """EMF fields for one request's access line: ``Latency``, ``Requests``, ``Errors4xx``,
    ``Errors5xx`` by (``Service``, ``Route``) and by ``Service``, plus ``extra`` (what the
    handler added with :func:`add_metric`)."""
    metrics: Metrics = {
        "Latency": (latency_ms, MILLISECONDS),
        "Requests": (1, COUNT),
        "Errors4xx": (1 if 400 <= status < 500 else 0, COUNT),
        "Errors5xx": (1 if status >= 500 else 0, COUNT),
    }
    metrics.update(extra)
    return emf(
        namespace, {"Service": service, "Route": route}, metrics, dimension_sets=_REQUEST_SETS
    )
