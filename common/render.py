"""The one JSON rendering of log lines and answers, and the copies that leave EMF fields out."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
from structlog.types import EventDict

# A code point in the surrogate range is always a lone surrogate in a Python str: a JSON escape
# that named one, or a header byte that was not UTF-8 (aiohttp's surrogateescape).
_SURROGATE = re.compile("[\ud800-\udfff]")


def render_json(event: EventDict) -> bytes:
    """The one JSON rendering of a log line or an answer (no newline). orjson; a value it cannot
    take (an integer beyond 64 bits, a lone surrogate) falls back to the standard library, never
    an exception. Lone surrogates become U+FFFD there: I-JSON (RFC 7493) forbids them, and
    strict parsers refuse their escapes."""
    try:
        return orjson.dumps(event, default=str)
    except TypeError:
        return json.dumps(_scrub(event), default=str, ensure_ascii=True).encode()


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


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
