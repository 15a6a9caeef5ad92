"""The exceptions a handler raises to answer with a JSON error; ``middleware.error_middleware`` renders them.

Every error response is ``{"error": code, "message": text, "request_id": id}``: ``code`` is stable
(clients branch on it), ``message`` is for humans and may change.
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """An error with an HTTP status, a stable code and a message safe to show the caller."""

    status: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        retry_after: int | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.retry_after = retry_after
        # Extra JSON fields merged into the body (e.g. which files were already stored).
        self.details = details or {}
        self.headers = headers or {}


class BadRequest(ServiceError):
    """400: the request is malformed."""

    status = 400
    code = "bad_request"


class Unauthorized(ServiceError):
    """401: no or wrong credentials."""

    status = 401
    code = "unauthorized"


class RequestTimeout(ServiceError):
    """408: the client stopped sending its body."""

    status = 408
    code = "body_timeout"


class Conflict(ServiceError):
    """409: the request conflicts with another in progress (e.g. the same idempotency key)."""

    status = 409
    code = "conflict"


class PayloadTooLarge(ServiceError):
    """413: the body or one of its items exceeds a limit."""

    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ServiceError):
    """415: the body is not of a media type this route accepts."""

    status = 415
    code = "unsupported_media_type"


class Unprocessable(ServiceError):
    """422: well-formed but semantically invalid."""

    status = 422
    code = "validation_error"


class NotConfigured(ServiceError):
    """503: the AWS target of this route is not configured (local-safe mode)."""

    status = 503
    code = "not_configured"


class Unavailable(ServiceError):
    """503: overloaded or the backend is down; the caller may retry after ``retry_after`` s."""

    status = 503
    code = "unavailable"

    def __init__(self, message: str, *, code: str | None = None, retry_after: int = 1) -> None:
        super().__init__(message, code=code, retry_after=retry_after)


class CircuitOpen(Unavailable):
    """503: the circuit breaker refused a call before it reached AWS (nothing was sent)."""

    code = "backend_unavailable"


class BackendError(ServiceError):
    """502: AWS answered with an error that retrying the same request will not fix."""

    status = 502
    code = "backend_error"
