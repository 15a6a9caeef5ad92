"""Optional API keys: with ``API_KEYS_SHA256`` set, every route but health, ready, the OpenAPI
document and a service's public page (``common.app.add_public_get``) needs
``Authorization: Bearer <key>`` or ``X-Api-Key: <key>``.

Only SHA-256 digests of the keys are configured (in ECS by the stack's ``ApiKeysSha256``; see
docs/api.md), so a task definition or a leaked environment never holds a usable key. The
presented key is hashed and compared with every digest in constant time; it is never logged or
echoed.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from common.errors import Unauthorized


def presented_key(request: web.Request) -> str | None:
    """The key the caller sent, from ``Authorization: Bearer`` or ``X-Api-Key``."""
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    key = request.headers.get("X-Api-Key", "").strip()
    return key or None


# The caller's identity for scoping (e.g. idempotency keys): the SHA-256 digest of the API key
# it presented; "" when API keys are off (one global scope).
CALLER: web.RequestKey[str] = web.RequestKey("caller", str)


def key_digest(key: str) -> str:
    """sha256 hex of the key's bytes as sent (aiohttp decodes a header's non-UTF-8 bytes as
    surrogates; they are encoded back, so such a key is simply wrong, not a 500)."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def key_matches(key: str, digests: tuple[str, ...]) -> bool:
    """True if sha256(key) is one of ``digests``; every digest is compared (constant time)."""
    digest = key_digest(key).encode()
    found = False
    for d in digests:
        found |= hmac.compare_digest(digest, d.encode())
    return found


def caller(request: web.Request) -> str:
    """The scope of the request's caller: its API key's digest, or "" with API keys off."""
    return str(request.get(CALLER, ""))


def auth_middleware(digests: tuple[str, ...], is_open: Callable[[web.Request], bool]) -> Middleware:
    """Require a key on every route for which ``is_open`` is false (unknown paths included)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_open(request):
            return await handler(request)
        key = presented_key(request)
        if key is None or not key_matches(key, digests):
            raise Unauthorized(
                "missing or invalid API key: send 'Authorization: Bearer <key>' or 'X-Api-Key'",
                code="unauthorized",
                headers={"WWW-Authenticate": 'Bearer realm="api"'},
            )
        request[CALLER] = key_digest(key)
        return await handler(request)

    return middleware
