"""Saved CloudWatch Logs Insights queries over the services' JSON log lines.

Each query names only fields of ``common.logging.SCHEMA`` (the tests lint them against it), so a
renamed log field breaks the suite rather than a dashboard. ``{name}`` in a query is a parameter,
filled in by ``python -m common.logs query NAME --param name=value``. The same texts are deployed
as ``AWS::Logs::QueryDefinition`` resources.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PARAM = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True, slots=True)
class Query:
    """A named Logs Insights query."""

    name: str
    description: str
    text: str

    @property
    def params(self) -> list[str]:
        """Parameter names the query needs, in order of appearance."""
        return list(dict.fromkeys(_PARAM.findall(self.text)))

    def render(self, values: dict[str, str]) -> str:
        """The query text with parameters filled in (quotes and backslashes escaped)."""
        missing = [p for p in self.params if p not in values]
        if missing:
            raise KeyError(f"query {self.name!r} needs --param for: {', '.join(missing)}")

        def fill(m: re.Match[str]) -> str:
            return values[m.group(1)].replace("\\", "\\\\").replace('"', '\\"')

        return _PARAM.sub(fill, self.text)


QUERIES: dict[str, Query] = {
    q.name: q
    for q in (
        Query(
            "errors-by-route",
            "5xx answers per route in 5-minute bins",
            'filter event = "request" and status >= 500\n'
            "| stats count(*) as errors by route, bin(5m)\n"
            "| sort errors desc",
        ),
        Query(
            "client-errors-by-route",
            "4xx answers per route and error code in 5-minute bins",
            'filter event = "request" and status >= 400 and status < 500\n'
            "| stats count(*) as errors by route, error, bin(5m)\n"
            "| sort errors desc",
        ),
        Query(
            "latency-by-route",
            "request count and latency p50/p90/p99 (ms) per route",
            'filter event = "request"\n'
            "| stats count(*) as requests, pct(latency_ms, 50) as p50_ms,"
            " pct(latency_ms, 90) as p90_ms, pct(latency_ms, 99) as p99_ms by route\n"
            "| sort p99_ms desc",
        ),
        Query(
            "slowest-requests",
            "the 25 slowest requests",
            "fields @timestamp, request_id, method, route, status, latency_ms, client_ip\n"
            '| filter event = "request"\n'
            "| sort latency_ms desc\n"
            "| limit 25",
        ),
        Query(
            "request",
            "every line of one request, in order (--param request_id=...)",
            "fields @timestamp, service, level, event, status, error, @message\n"
            '| filter request_id = "{request_id}"\n'
            "| sort @timestamp asc\n"
            "| limit 1000",
        ),
        Query(
            "upload-volume",
            "bytes and files stored per hour",
            'filter event = "request" and route like /upload/ and status = 201\n'
            "| stats sum(size) as bytes, sum(files) as file_count, count(*) as requests by bin(1h)",
        ),
        Query(
            "messages-sent",
            "messages SQS accepted and batches per 5 minutes",
            'filter event = "batch_sent"\n'
            "| stats sum(accepted) as messages_sent, count(*) as batches,"
            " avg(batch_size) as avg_batch_size by bin(5m)",
        ),
        Query(
            "batch-size-distribution",
            "how many SendMessageBatch calls carried 1, 2, ... 10 messages",
            'filter event = "batch_sent"\n'
            "| stats count(*) as batches by batch_size\n"
            "| sort batch_size asc",
        ),
        Query(
            "top-client-ips",
            "the 20 client addresses with the most requests",
            'filter event = "request"\n'
            "| stats count(*) as requests by client_ip\n"
            "| sort requests desc\n"
            "| limit 20",
        ),
    )
}

# Words of the Insights language (commands, operators, functions, keywords): not field names.
_KEYWORDS = {
    "fields", "filter", "stats", "sort", "limit", "display", "parse", "dedup", "by", "as",
    "and", "or", "not", "like", "in", "asc", "desc", "count", "sum", "avg", "min", "max", "pct",
    "bin", "earliest", "latest", "count_distinct", "stddev", "ispresent", "isempty", "abs",
    "ceil", "floor", "strlen", "concat", "toupper", "tolower",
}  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|/(?:[^/\\]|\\.)*/')
# A word not glued to a digit or another word, so the "m" of bin(5m) is not a field.
_WORD = re.compile(r"(?<![\w@.])@?[A-Za-z_][\w.]*")
_ALIAS = re.compile(r"\bas\s+([A-Za-z_][A-Za-z0-9_]*)")


def fields_used(text: str) -> set[str]:
    """Log fields a query reads: not keywords, functions, aliases, literals or ``@`` fields."""
    bare = _STRING.sub(" ", _PARAM.sub(" ", text))
    aliases = set(_ALIAS.findall(bare))
    out = set()
    for m in _WORD.finditer(bare):
        word = m.group(0)
        if word.startswith("@") or word in _KEYWORDS or word in aliases:
            continue
        if bare[m.end() :].lstrip().startswith("("):
            continue  # a function call
        out.add(word)
    return out
