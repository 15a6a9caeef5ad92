"""aiobotocore clients built from settings, and the mapping of AWS failures to HTTP errors.

Clients are opened in an app's ``cleanup_ctx`` (see ``client_ctx``) and closed when it stops; no
client lives at module level. ``AWS_ENDPOINT_URL`` (the emulator locally) is passed explicitly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    ReadTimeoutError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from common.config import AwsSettings
from common.errors import BackendError, ServiceError, Unavailable


class Breaker(Protocol):
    """What ``client_ctx`` needs of a circuit breaker (``common.breaker.CircuitBreaker``)."""

    def attach(self, client: Any) -> None:
        """Guard every call of ``client``."""


# AWS error codes that mean "try again later" rather than "this request is wrong".
RETRYABLE_CODES = frozenset(
    {
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "RequestTimeout",
        "RequestTimeoutException",
        "TooManyRequestsException",
        "AWS.SimpleQueueService.ServiceUnavailable",
        "RequestLimitExceeded",
    }
)


def client_config(aws: AwsSettings) -> AioConfig:
    """Retries, timeouts and pool size for every client of this process."""
    return AioConfig(
        region_name=aws.region,
        # total_max_attempts counts the first try too, as AWS_MAX_ATTEMPTS does in the AWS SDKs.
        retries={"mode": aws.retry_mode, "total_max_attempts": aws.max_attempts},
        connect_timeout=aws.connect_timeout,
        read_timeout=aws.read_timeout,
        max_pool_connections=aws.max_pool_connections,
    )


@asynccontextmanager
async def open_client(
    service: str,
    aws: AwsSettings,
    session: AioSession | None = None,
    extra: AioConfig | None = None,
) -> AsyncIterator[Any]:
    """An aiobotocore client for ``service``, closed on exit; ``extra`` overrides config fields."""
    session = session or get_session()
    config = client_config(aws)
    async with session.create_client(
        service,  # type: ignore[call-overload]
        region_name=aws.region,
        endpoint_url=aws.endpoint_url,
        config=config if extra is None else config.merge(extra),
    ) as client:
        yield client


def aws_error_code(exc: BaseException) -> str | None:
    """The AWS error code of a ``ClientError``, else None."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code")
        return str(code) if code else None
    return None


def is_transient(exc: BaseException) -> bool:
    """True when the same call may succeed later: throttling, 5xx, timeouts, connection errors."""
    if isinstance(
        exc, (BotoConnectionError, ConnectTimeoutError, ReadTimeoutError, asyncio.TimeoutError)
    ):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return aws_error_code(exc) in RETRYABLE_CODES or int(status) >= 500
    return isinstance(exc, (BotoCoreError, OSError))


def is_aws_failure(exc: BaseException) -> bool:
    """True for errors raised by an AWS call (as opposed to our own bugs or the client going away)."""
    return isinstance(exc, (BotoCoreError, ClientError, asyncio.TimeoutError))


def to_service_error(exc: BaseException, what: str) -> ServiceError:
    """Map an AWS failure to the error the caller sees: 503 + Retry-After if transient, else 502."""
    code = aws_error_code(exc)
    if is_transient(exc):
        return Unavailable(
            f"{what} is unavailable right now ({code or type(exc).__name__}); retry later",
            code="backend_unavailable",
            retry_after=2,
        )
    return BackendError(f"{what} rejected the request ({code or type(exc).__name__})")
