"""The JSON answers of the API contract: ``json_response``, the one error shape, status codes.

Every error body is ``{"error": code, "message": text, "request_id": id}`` (see
``common/errors.py``); this module renders it, whoever produced the error: a handler, the error
middleware, or the connection itself (``common/connection.py``) for what aiohttp's parser
refused.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from common.render import render_json

REQUEST_ID_HEADER = "X-Request-ID"

# The request's id, set by the context middleware before any handler runs.
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)

# Codes for errors aiohttp raises itself (router, body limits, the Expect header), so every
# error body is alike.
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
    417: "expectation_failed",
    422: "validation_error",
    429: "too_many_requests",
}

# Status for a request whose client went away before the answer: nginx's convention, so the
# access line says what happened (nothing can be sent anyway).
CLIENT_CLOSED = 499


def code_for(status: int) -> str:
    """The stable code of an HTTP error aiohttp raised with ``status``."""
    return HTTP_CODES.get(status, f"http_{status}")


def json_body(data: Any) -> bytes:
    """``data`` as JSON bytes, as log lines are rendered (:func:`common.render.render_json`): a
    string orjson refuses (a lone surrogate, e.g. from a ``\\ud800`` escape in a JSON key that an
    error names) never turns an answer into aiohttp's plain-text 500."""
    return render_json(data)


def json_response(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON response (see :func:`json_body`)."""
    return web.Response(
        body=json_body(data), status=status, content_type="application/json", headers=headers
    )


def error_body(
    code: str, message: str, request_id: str | None, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The one JSON error shape of the API contract."""
    body: dict[str, Any] = {"error": code, "message": message, "request_id": request_id}
    if details:
        body.update(details)
    return body


def error_response(
    status: int,
    code: str,
    message: str,
    request: web.BaseRequest,
    *,
    retry_after: int | None = None,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """The error shape as a response to ``request`` (its id as set by the context middleware)."""
    out = dict(headers or {})
    if retry_after is not None:
        out["Retry-After"] = str(retry_after)
    return json_response(
        error_body(code, message, request.get(REQUEST_ID), details), status=status, headers=out
    )
