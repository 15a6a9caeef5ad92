"""Idempotency-Key values: the pattern, the draft's quoted form, and scoping."""

from __future__ import annotations

import pytest

from common.errors import BadRequest
from common.idempotency import parse_key, scoped_digest


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("k", "k"),
        ('"k"', "k"),
        ('"a \\"quoted\\" \\\\ key"', 'a "quoted" \\ key'),
        ('"unbalanced', '"unbalanced'),
        ("x" * 255, "x" * 255),
        (None, None),
    ],
)
def test_keys_are_taken_plain_or_as_the_drafts_quoted_string(raw: str | None, key: str) -> None:
    assert parse_key(raw) == key


@pytest.mark.parametrize("raw", ["", '""', "x" * 256, "tab\there", "ünï"])
def test_malformed_keys_are_400(raw: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_key(raw)
    assert caught.value.code == "invalid_idempotency_key"


def test_scopes_keep_equal_keys_apart() -> None:
    assert scoped_digest("k", "") == scoped_digest("k", "")
    assert scoped_digest("k", "a") != scoped_digest("k", "b")
    assert len(scoped_digest("k", "")) == 64
