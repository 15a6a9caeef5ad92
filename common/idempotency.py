"""Idempotency keys (IETF httpapi draft "The Idempotency-Key HTTP Header Field").

A caller sends ``Idempotency-Key: <key>`` so that a retry of a request that may or may not have
taken effect cannot take effect twice. Keys are scoped per caller: with API keys on, two callers'
equal keys are different keys; with API keys off the scope is global.

The services never store the raw key: what they use (an object key, an SQS deduplication id) is
a digest of the scope and the key, so it is safe in any alphabet and leaks nothing.
"""

from __future__ import annotations

import hashlib
import re

from common.errors import BadRequest

HEADER = "Idempotency-Key"
# 1-255 printable ASCII characters (space to tilde); shared with the OpenAPI documents.
KEY_PATTERN = r"[\x20-\x7E]{1,255}"
_KEY_RE = re.compile(rf"^{KEY_PATTERN}\Z")
# An RFC 8941 string: printable ASCII in quotes, with only \" and \\ escaped.
_SF_STRING_RE = re.compile(r'^"(?:[\x20\x21\x23-\x5B\x5D-\x7E]|\\["\\])*"\Z')
_SF_ESCAPE_RE = re.compile(r'\\(["\\])')


def parse_key(raw: str | None) -> str | None:
    """The caller's idempotency key, or None when absent; 400 ``invalid_idempotency_key`` when
    it is not 1-255 printable ASCII characters. A quoted value (the draft's Structured Field
    string) is unquoted first, so ``"k"`` and ``k`` are the same key."""
    if raw is None:
        return None
    if len(raw) >= 2 and raw[0] == raw[-1] == '"' and _SF_STRING_RE.match(raw):
        # The draft makes the value a Structured Field string: "abc" and abc are one key.
        raw = _SF_ESCAPE_RE.sub(r"\1", raw[1:-1])
    if not _KEY_RE.match(raw):
        raise BadRequest(
            f"{HEADER} must be 1 to 255 printable ASCII characters", code="invalid_idempotency_key"
        )
    return raw


def scoped_digest(key: str, scope: str) -> str:
    """A 64-character hex digest naming ``key`` within ``scope`` (the caller; "" when global)."""
    return hashlib.sha256(f"{scope}\n{key}".encode("ascii")).hexdigest()


def parse_header(values: list[str]) -> str | None:
    """The key from every ``Idempotency-Key`` header line a request carried: None without one,
    400 ``invalid_idempotency_key`` when sent more than once (which would count?) or malformed."""
    if len(values) > 1:
        raise BadRequest(f"{HEADER} was sent {len(values)} times", code="invalid_idempotency_key")
    return parse_key(values[0] if values else None)
