"""sqssvc's app factory and its routes, ``POST {BASE_PATH}/send`` and ``POST {BASE_PATH}/send-batch``.

Both answer only after SQS stored (or refused) each message: every message goes through the one
``Batcher`` of the app, and the request awaits its own result.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from common.app import ProbeCache, client_ctx, create_base_app
from common.appkeys import SHUTTING_DOWN
from common.auth import caller
from common.aws import aws_error_code
from common.bodies import defer_continue
from common.breaker import OPEN, CircuitBreaker
from common.errors import CircuitOpen, NotConfigured, ServiceError, Unavailable
from common.logging import get_logger
from common.middleware import add_metric
from common.pace import Pace
from common.responses import REQUEST_ID, json_response
from sqssvc.batcher import Batcher, BatcherConfig, SendResult
from sqssvc.config import SqsSettings
from sqssvc.messages import Limits, OutgoingMessage, parse_batch, parse_message
from sqssvc.openapi import spec
from sqssvc.reading import idempotency_key, no_idempotency_header, read_json

if TYPE_CHECKING:  # the stubs are a dev dependency; the image has no need of them
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

log = get_logger("sqssvc.app")

SQS_SETTINGS: web.AppKey[SqsSettings] = web.AppKey("sqs_settings", SqsSettings)
SQS_CLIENT: web.AppKey[SQSClient] = web.AppKey("sqs_client")
BATCHER: web.AppKey[Batcher] = web.AppKey("batcher", Batcher)
READY_CACHE: web.AppKey[ProbeCache] = web.AppKey("ready_cache", ProbeCache)
SQS_BREAKER: web.AppKey[CircuitBreaker] = web.AppKey("sqs_breaker", CircuitBreaker)

READY_CACHE_SECONDS = 5.0
READY_TIMEOUT = 5.0
# An entry Id SQS refuses (only [A-Za-z0-9_-] are allowed): the probe call is authorised and
# routed to the queue like a real send, then refused before anything is stored.
PROBE_ENTRY_ID = "ready-probe!"


def _limits(settings: SqsSettings) -> Limits:
    return Limits(
        fifo=settings.fifo,
        max_message_bytes=settings.max_message_bytes,
        max_batch_messages=settings.max_batch_messages,
        content_deduplication=settings.content_deduplication,
    )


def _stable_id(message: OutgoingMessage) -> dict[str, str]:
    """The answer's ``dedup_id``: what every stored copy of the message carries."""
    return {} if message.dedup_id is None else {"dedup_id": message.dedup_id}


async def _read_json(request: web.Request) -> Any:
    settings = request.app[SQS_SETTINGS]
    return await read_json(request, settings.max_request_bytes, Pace.of(settings.common))


def _batcher(request: web.Request) -> Batcher:
    """The app's batcher; 503 in local-safe mode or once shutdown has begun."""
    settings = request.app[SQS_SETTINGS]
    if settings.queue_url is None:
        raise NotConfigured("sending is disabled: QUEUE_URL is not set", code="not_configured")
    if request.app[SHUTTING_DOWN].is_set():
        raise Unavailable("the service is shutting down; retry the request", code="shutting_down")
    return request.app[BATCHER]


async def send(request: web.Request) -> web.Response:
    """Send one message; 200 with SQS's message id once SQS stored it."""
    batcher = _batcher(request)
    settings = request.app[SQS_SETTINGS]
    key = idempotency_key(request)
    message = parse_message(
        await _read_json(request), _limits(settings), key=key, scope=caller(request)
    )
    structlog.contextvars.bind_contextvars(queue=settings.queue_url)
    result = await batcher.send(message)
    structlog.contextvars.bind_contextvars(message_id=result.message_id)
    add_metric(request, "MessagesSent", 1)
    return json_response(
        result.as_json() | _stable_id(message) | {"request_id": request[REQUEST_ID]}
    )


def none_sent(
    errors: list[ServiceError], total: int, retry_after: int | None, details: dict[str, Any]
) -> ServiceError | None:
    """The error that answers a ``/send-batch`` request when none of its ``total`` messages was
    stored (None when some were): never a 2xx.

    Failures of different kinds answer with the most severe one: a 5xx tells the client to retry,
    and ``details`` (every item's result) tells which items would fail again.
    """
    if not errors or len(errors) < total:
        return None
    worst = max(errors, key=lambda e: e.status)
    mixed = "" if len({e.status for e in errors}) == 1 else " (and other failures)"
    return ServiceError(
        f"none of the {total} messages was sent: {worst.message}{mixed}",
        code=worst.code,
        status=worst.status,
        retry_after=retry_after,
        details=details,
    )


async def send_batch(request: web.Request) -> web.Response:
    """Send up to MAX_BATCH_MESSAGES messages; 200 if all were stored, 207 if some were.

    When none was stored, the answer is the most severe failure's own status and code (e.g. 503
    with Retry-After), still listing every item.
    """
    batcher = _batcher(request)
    settings = request.app[SQS_SETTINGS]
    no_idempotency_header(request)
    messages = parse_batch(await _read_json(request), _limits(settings), caller(request))
    structlog.contextvars.bind_contextvars(queue=settings.queue_url)
    outcomes = await asyncio.gather(*batcher.submit(messages), return_exceptions=True)
    results: list[dict[str, Any]] = []
    errors: list[ServiceError] = []
    for index, (message, outcome) in enumerate(zip(messages, outcomes, strict=True)):
        if isinstance(outcome, SendResult):
            results.append(
                {"index": index, "status": 200} | outcome.as_json() | _stable_id(message)
            )
        elif isinstance(outcome, ServiceError):
            errors.append(outcome)
            results.append(
                {
                    "index": index,
                    "status": outcome.status,
                    "error": outcome.code,
                    "message": outcome.message,
                }
                | outcome.details
                # A 5xx may or may not have stored it: a copy would carry this id.
                | _stable_id(message)
            )
        else:
            raise outcome
    structlog.contextvars.bind_contextvars(messages=len(messages), failed=len(errors))
    add_metric(request, "MessagesSent", len(messages) - len(errors))
    summary = {"succeeded": len(messages) - len(errors), "failed": len(errors)}
    retry_after = max((e.retry_after or 0 for e in errors), default=0) or None
    failure = none_sent(errors, len(messages), retry_after, {"results": results, **summary})
    if failure is not None:
        raise failure
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return json_response(
        {"results": results, **summary, "request_id": request[REQUEST_ID]},
        status=207 if errors else 200,
        headers=headers,
    )


async def readiness(app: web.Application) -> str | None:
    """Ready when the queue is configured and SQS answers for it, using only our own permission.

    The probe is a ``SendMessageBatch`` (authorised by ``sqs:SendMessage``) whose one entry has an
    Id SQS refuses: a reachable, existing queue we may send to answers ``InvalidBatchEntryId``
    without storing anything; a missing queue or permission answers otherwise. Cached briefly.
    """
    settings = app[SQS_SETTINGS]
    if settings.queue_url is None:
        return "QUEUE_URL is not set (local-safe mode)"
    if app[SQS_BREAKER].state == OPEN:
        return "SQS is failing (circuit open); retrying shortly"
    entry: SendMessageBatchRequestEntryTypeDef = {
        "Id": PROBE_ENTRY_ID,
        "MessageBody": "readiness probe, never stored",
    }
    if settings.fifo:
        # A complete FIFO entry, so the invalid Id is the only thing SQS can object to.
        entry |= {"MessageGroupId": "ready-probe", "MessageDeduplicationId": "ready-probe"}
    queue_url = settings.queue_url

    async def probe() -> str | None:
        try:
            await asyncio.wait_for(
                app[SQS_CLIENT].send_message_batch(QueueUrl=queue_url, Entries=[entry]),
                READY_TIMEOUT,
            )
        except CircuitOpen as exc:
            return exc.message  # the breaker refused the probe
        except Exception as exc:
            code = (aws_error_code(exc) or "").removeprefix("AWS.SimpleQueueService.")
            if code == "InvalidBatchEntryId":
                return None
            return f"SQS queue not usable: {code or type(exc).__name__}"
        log.error("ready_probe_accepted")
        return "SQS accepted the readiness probe's invalid entry id"

    return await app[READY_CACHE].answer(probe)


def create_app(settings: SqsSettings) -> web.Application:
    """Build sqssvc: health/ready from ``common``; the SQS client, then the batcher, in cleanup_ctx.

    Cleanup runs in reverse: the batcher drains before the client it sends with is closed.
    """
    app = create_base_app(settings.common, readiness, openapi=spec(settings))
    app[SQS_SETTINGS] = settings
    app[READY_CACHE] = ProbeCache(READY_CACHE_SECONDS)
    aws = settings.common.aws
    app[SQS_BREAKER] = breaker = CircuitBreaker(
        "SQS", aws.breaker_threshold, aws.breaker_reset_seconds
    )
    queue_url = settings.queue_url
    if queue_url is not None:
        # SQS's own read timeout (docs/design.md, "Copies, idempotency keys and timeouts").
        sqs_aws = replace(aws, read_timeout=settings.read_timeout)
        app.cleanup_ctx.append(client_ctx("sqs", sqs_aws, SQS_CLIENT, breaker))

        async def batcher_ctx(app: web.Application) -> AsyncIterator[None]:
            batcher = Batcher(app[SQS_CLIENT], queue_url, BatcherConfig.from_settings(settings))
            app[BATCHER] = batcher
            yield
            await batcher.close(settings.drain_seconds)  # done already, unless startup failed

        async def close_batcher(app: web.Application) -> None:
            # aiohttp's on_shutdown runs before it waits for and cancels the handlers left
            # after the grace period: closing here answers their callers 503 shutting_down;
            # from the cleanup context, the cancelled handlers' clients got an empty reply.
            if BATCHER in app:
                await app[BATCHER].close(settings.drain_seconds)

        app.cleanup_ctx.append(batcher_ctx)
        app.on_shutdown.append(close_batcher)
    base = settings.common.base_path
    app.router.add_post(f"{base}/send", send, expect_handler=defer_continue)
    app.router.add_post(f"{base}/send-batch", send_batch, expect_handler=defer_continue)
    return app
