"""Saved queries name only documented log fields, and docs/logs.md documents exactly the schema.

moto cannot run ``filter``/``stats``, so nothing here claims to validate query semantics; the
services' own emission of each field is checked in tests/e2e/test_cloudwatch.py.
"""

from __future__ import annotations

import re

import pytest

from common.logging import SCHEMA
from common.queries import _ALIAS, QUERIES, Query, fields_used
from tests.procs import ROOT


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_query_fields_are_in_the_schema(name: str) -> None:
    """A query that reads an undocumented field would silently return nothing."""
    used = fields_used(QUERIES[name].text)
    assert used, "a query that reads no field is suspicious"
    assert used <= set(SCHEMA), used - set(SCHEMA)


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_aliases_do_not_shadow_fields(name: str) -> None:
    """``... as size`` would hide the log field of the same name from later stages."""
    assert not set(_ALIAS.findall(QUERIES[name].text)) & set(SCHEMA)


def test_the_lint_sees_through_literals_and_functions() -> None:
    """Strings, regexes, durations and function names are not mistaken for fields."""
    text = 'filter event = "batch_sent" and route like /upload/ | stats pct(latency_ms, 50) as p by bin(5m)'
    assert fields_used(text) == {"event", "route", "latency_ms"}
    assert fields_used("filter nosuchfield = 1") == {"nosuchfield"}


def test_parameters_are_filled_and_escaped() -> None:
    """``{request_id}`` is required and cannot break out of its string."""
    q = QUERIES["request"]
    assert q.params == ["request_id"]
    assert 'request_id = "a\\"b"' in q.render({"request_id": 'a"b'})
    with pytest.raises(KeyError, match="request_id"):
        q.render({})
    assert Query("x", "", "fields a").params == []


def test_readme_documents_exactly_the_schema() -> None:
    """docs/logs.md's log schema table lists every field of SCHEMA, with the same description."""
    text = (ROOT / "docs" / "logs.md").read_text()
    section = text.split("### Log schema", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `([^`]+)` \| (.+?) \|$", section, re.MULTILINE))
    assert rows == SCHEMA
