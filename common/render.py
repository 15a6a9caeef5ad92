"""The one JSON rendering of a log line, and the copies that leave EMF fields out."""

from __future__ import annotations

import json

import orjson
from structlog.types import EventDict


def render_json(event: EventDict) -> bytes:
    """The one JSON rendering of a line (no newline). orjson; a value it cannot take (an integer
    beyond 64 bits, a lone surrogate) falls back to the standard library, never an exception."""
    try:
        return orjson.dumps(event, default=str)
    except TypeError:
        return json.dumps(event, default=str, ensure_ascii=True).encode()


def without_emf(event: EventDict) -> EventDict:
    """``event`` without the EMF directive (a copy; ``event`` is left as it is)."""
    return {k: v for k, v in event.items() if k != "_aws"}


def without_emf_members(event: EventDict) -> EventDict:
    """``event`` without the directive and the metric and dimension values it names (``Latency``
    repeats ``latency_ms``, ``Route`` repeats ``route``): for a console read by people."""
    names = {"_aws"}
    for directive in event.get("_aws", {}).get("CloudWatchMetrics", ()):
        names.update(m["Name"] for m in directive["Metrics"])
        names.update(d for dims in directive["Dimensions"] for d in dims)
    return {k: v for k, v in event.items() if k not in names}
