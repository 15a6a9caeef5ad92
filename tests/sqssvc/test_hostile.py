"""Hostile input to sqssvc: each case gets its stable 4xx, never a 5xx, nothing reaches the
queue, and a running service's memory stays bounded through the corpus."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.hostile import Case, replay, send_raw
from tests.procs import ServiceProcess
from tests.sqssvc.conftest import drain

SEND = (
    "POST /sqs/send HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
)

CASES = [
    Case(
        "deeply-nested-json",
        SEND,
        b'{"message":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        400,
        "invalid_json",
    ),
    Case(
        "2MB-json",  # over SQS's 1 MiB, under MAX_REQUEST_BYTES: parsed, then refused
        SEND,
        b'{"message":"' + b"a" * (2 * 1024 * 1024) + b'"}',
        413,
        "message_too_large",
    ),
    Case("invalid-utf8", SEND, b'{"message":"\xff\xfe bad"}', 400, "invalid_json"),
    Case("lone-surrogate", SEND, b'{"message":"\\ud800"}', 422, "invalid_characters"),
    Case(
        "forbidden-control-char", SEND, b'{"message":"nul \\u0000 here"}', 422, "invalid_characters"
    ),
    Case("truncated-json", SEND, b'{"message":"cut', 400, "invalid_json"),
    Case(
        "not-json-type",
        SEND.replace("application/json", "text/plain"),
        b"hi",
        415,
        "unsupported_media_type",
    ),
    Case("json-array", SEND, b"[1,2,3]", 422),
    Case(
        "wrong-method",
        "GET /sqs/send HTTP/1.1\r\nHost: x\r\nConnection: close\r\n",
        b"",
        405,
        "method_not_allowed",
    ),
    Case(
        "slow-loris",
        SEND,
        b'{"message":"' + b"s" * 10_000 + b'"}',
        408,
        "body_timeout",
        trickle=True,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_hostile_case(
    aiohttp_server: Callable[..., Any],
    make_sqs_settings: Callable[..., Any],
    queue_url: str,
    sqs: Any,
    case: Case,
) -> None:
    """The documented status and code, never a 5xx, and the queue stays empty."""
    from sqssvc.app import create_app

    settings = make_sqs_settings(queue_url)
    settings = replace(settings, common=replace(settings.common, body_idle_timeout=0.5))
    server = await aiohttp_server(create_app(settings))
    status, body = await send_raw(server.host, server.port, case)
    assert status == case.status, body
    if case.error:
        assert body["error"] == case.error
    assert await drain(sqs, queue_url) == []


async def test_corpus_against_a_running_service_keeps_memory_bounded(
    service_env: dict[str, str], queue_url: str, sqs: Any, tmp_path: Path
) -> None:
    """The corpus three times against ``python -m sqssvc``: no 5xx, RSS growth bounded, no message."""
    env = dict(service_env, QUEUE_URL=queue_url, BODY_IDLE_TIMEOUT="0.5", LOG_LEVEL="warning")
    svc = ServiceProcess("sqssvc", env, tmp_path / "sqssvc.log").start()
    try:
        growth = await replay(svc, CASES)
    finally:
        svc.stop()
    assert growth < 64, f"RSS grew {growth:.1f} MiB"
    assert await drain(sqs, queue_url) == []
