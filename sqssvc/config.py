"""sqssvc settings, parsed once from the environment.

Every variable, its default and meaning:

- ``QUEUE_URL`` (unset): the queue to send to; unset means local-safe mode (sends answer 503
  ``not_configured``). A URL ending in ``.fifo`` is a FIFO queue.
- ``SQS_MAX_BATCH`` (10, 1-10): entries per ``SendMessageBatch``; 1 disables coalescing.
- ``SQS_MAX_IN_FLIGHT`` (4, 1-64): batches sent concurrently. Fewer slots make fuller batches
  under load; more slots add throughput headroom (each slot carries up to 10 messages per call).
- ``SQS_MAX_PENDING`` (1000) and ``SQS_MAX_PENDING_BYTES`` (64MiB): messages waiting for a slot
  (including those waiting to be retried); beyond either bound a send answers 503 ``overloaded``.
- ``SQS_ENTRY_MAX_ATTEMPTS`` (5, 1-20): attempts per message when SQS fails an entry with
  ``SenderFault=false``; ``SQS_RETRY_BASE_SECONDS`` (0.05) and ``SQS_RETRY_MAX_SECONDS`` (2.0) shape
  the exponential backoff between them (half of each wait is jittered). Whole-call failures are retried by botocore
  (``AWS_RETRY_MODE``, ``AWS_MAX_ATTEMPTS``), not here.
- ``SQS_MAX_MESSAGE_BYTES`` (1MiB, 1KiB-1MiB): largest body + attributes accepted; set it to the
  queue's ``MaximumMessageSize`` if that is lower.
- ``MAX_BATCH_MESSAGES`` (100, 1-1000): messages per ``/send-batch`` request.
- ``MAX_REQUEST_BYTES`` (4MiB): largest request body (JSON escaping makes it larger than the
  message itself; parsed, a body takes up to ``JSON_MEMORY_FACTOR`` times its size).
- ``SQS_DRAIN_SECONDS`` (4): at shutdown, after in-flight requests finished, how long to wait for
  batches still being sent.
- ``SQS_READ_TIMEOUT`` (15, 1-120): seconds the SQS client waits for an answer (instead of
  ``AWS_READ_TIMEOUT``). A read timeout is resent by botocore and may store a copy, so it sits far
  above a healthy ``SendMessageBatch``; ``AWS_MAX_ATTEMPTS`` of them bound a caller's wait
  (docs/design.md, "Copies, idempotency keys and timeouts").
- ``SQS_CONTENT_DEDUPLICATION`` (false): the FIFO queue has content-based deduplication, so a
  message without an idempotency key or ``deduplication_id`` goes without a deduplication id;
  false: sqssvc gives it a random one. Refused for a standard ``QUEUE_URL``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from common.config import CommonSettings, EnvReader, defaults, parse_env, read_common

SERVICE = "sqssvc"
KIB = 1024
MIB = 1024**2

ENV_QUEUE_URL = "QUEUE_URL"
ENV_MAX_BATCH = "SQS_MAX_BATCH"
ENV_MAX_IN_FLIGHT = "SQS_MAX_IN_FLIGHT"
ENV_MAX_PENDING = "SQS_MAX_PENDING"
ENV_MAX_PENDING_BYTES = "SQS_MAX_PENDING_BYTES"
ENV_MAX_ATTEMPTS = "SQS_ENTRY_MAX_ATTEMPTS"
ENV_RETRY_BASE = "SQS_RETRY_BASE_SECONDS"
ENV_RETRY_MAX = "SQS_RETRY_MAX_SECONDS"
ENV_MAX_MESSAGE_BYTES = "SQS_MAX_MESSAGE_BYTES"
ENV_MAX_BATCH_MESSAGES = "MAX_BATCH_MESSAGES"
ENV_MAX_REQUEST_BYTES = "MAX_REQUEST_BYTES"
ENV_DRAIN = "SQS_DRAIN_SECONDS"
ENV_READ_TIMEOUT = "SQS_READ_TIMEOUT"
ENV_CONTENT_DEDUP = "SQS_CONTENT_DEDUPLICATION"

# SQS's own limits: 10 entries per batch call, 1 MiB per message and per batch call.
SQS_BATCH_LIMIT = 10
SQS_MAX_MESSAGE_BYTES = MIB
# Parsed JSON takes up to this many times the bytes of its text (nested empty arrays and
# objects: 56-64 bytes of Python each for 2-4 bytes of text; tests/sqssvc measure it). A body
# is parsed whole on the event loop, one at a time, so MAX_REQUEST_BYTES times this, plus
# SQS_MAX_PENDING_BYTES, is what sqssvc's memory must hold (a 16 MiB body of {} took 430 MB).
JSON_MEMORY_FACTOR = 32
SQS_MAX_BATCH_BYTES = MIB

_QUEUE_URL_RE = re.compile(r"^https?://[^\s/]+(/[^\s/]+)*/[A-Za-z0-9_-]{1,80}(\.fifo)?\Z")


@dataclass(frozen=True, slots=True)
class SqsSettings:
    """Everything sqssvc needs; ``queue_url`` None means local-safe mode (sends answer 503)."""

    common: CommonSettings
    queue_url: str | None
    max_batch: int = SQS_BATCH_LIMIT
    max_in_flight: int = 4
    max_pending: int = 1000
    max_pending_bytes: int = 64 * MIB
    max_attempts: int = 5
    retry_base: float = 0.05
    retry_cap: float = 2.0
    max_message_bytes: int = SQS_MAX_MESSAGE_BYTES
    max_batch_messages: int = 100
    max_request_bytes: int = 4 * MIB
    drain_seconds: float = 4.0
    read_timeout: float = 15.0
    content_deduplication: bool = False

    @property
    def fifo(self) -> bool:
        """True for a FIFO queue (its name ends in ``.fifo``)."""
        return self.queue_url is not None and self.queue_url.endswith(".fifo")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SqsSettings:
        """Parse and validate; raises ConfigError listing every problem."""
        return parse_env(cls.read, environ)

    @classmethod
    def read(cls, env: EnvReader) -> SqsSettings:
        """Read every variable (errors accumulate on ``env``)."""
        d = defaults(cls)
        common = read_common(env, service=SERVICE, default_port=8081, default_base="/sqs")
        queue_url = env.optional(
            ENV_QUEUE_URL,
            doc="the queue to send to (.fifo: a FIFO queue); unset: local-safe mode (503)",
            expected="https://sqs.REGION.amazonaws.com/ACCOUNT/NAME[.fifo]",
        )
        if queue_url is not None and not _QUEUE_URL_RE.match(queue_url):
            env.errors.append(
                f"{ENV_QUEUE_URL}={queue_url!r} is not valid: expected a queue URL like "
                "https://sqs.eu-west-1.amazonaws.com/123456789012/orders (or .../orders.fifo)"
            )
        max_pending = env.integer(
            ENV_MAX_PENDING,
            d.max_pending,
            lo=1,
            hi=1_000_000,
            doc="messages waiting for a sender slot; beyond it a send answers 503 overloaded",
        )
        max_pending_bytes = env.size(
            ENV_MAX_PENDING_BYTES,
            d.max_pending_bytes,
            lo=MIB,
            hi=16 * 1024 * MIB,
            doc="bytes waiting for a sender slot; beyond it a send answers 503 overloaded",
        )
        max_batch_messages = env.integer(
            ENV_MAX_BATCH_MESSAGES,
            d.max_batch_messages,
            lo=1,
            hi=1000,
            doc="messages per /send-batch request",
        )
        max_request_bytes = env.size(
            ENV_MAX_REQUEST_BYTES,
            d.max_request_bytes,
            lo=64 * KIB,
            hi=1024 * MIB,
            doc="largest request body (JSON escaping makes it larger than the message)",
        )
        retry_base = env.number(
            ENV_RETRY_BASE,
            d.retry_base,
            lo=0.001,
            hi=60.0,
            doc="backoff ceiling before the first retry of an entry SQS failed; it doubles per "
            "attempt, and the wait is half the ceiling plus a random share of the other half",
        )
        retry_cap = env.number(
            ENV_RETRY_MAX,
            d.retry_cap,
            lo=0.001,
            hi=300.0,
            doc="the highest backoff ceiling between entry retries",
        )
        # One /send-batch request is admitted whole or not at all, so it must fit the bounds.
        if max_pending < max_batch_messages:
            env.errors.append(
                f"{ENV_MAX_PENDING}={max_pending} is smaller than "
                f"{ENV_MAX_BATCH_MESSAGES}={max_batch_messages}: one batch request must fit"
            )
        if max_pending_bytes < max_request_bytes:
            env.errors.append(
                f"{ENV_MAX_PENDING_BYTES}={max_pending_bytes} is smaller than "
                f"{ENV_MAX_REQUEST_BYTES}={max_request_bytes}: one request must fit"
            )
        if retry_cap < retry_base:
            env.errors.append(f"{ENV_RETRY_MAX}={retry_cap} is smaller than {ENV_RETRY_BASE}")
        content_deduplication = env.flag(
            ENV_CONTENT_DEDUP,
            d.content_deduplication,
            doc="the FIFO queue deduplicates by content: a message without an idempotency key or "
            "deduplication_id is sent without a deduplication id (false: sqssvc makes one)",
        )
        if content_deduplication and queue_url is not None and not queue_url.endswith(".fifo"):
            env.errors.append(
                f"{ENV_CONTENT_DEDUP}=true applies only to a FIFO queue; {ENV_QUEUE_URL} names a "
                "standard queue"
            )
        return cls(
            common=common,
            queue_url=queue_url,
            max_batch=env.integer(
                ENV_MAX_BATCH,
                d.max_batch,
                lo=1,
                hi=SQS_BATCH_LIMIT,
                doc="entries per SendMessageBatch; 1 disables coalescing",
            ),
            max_in_flight=env.integer(
                ENV_MAX_IN_FLIGHT,
                d.max_in_flight,
                lo=1,
                hi=64,
                doc="SendMessageBatch calls in flight at once",
            ),
            max_pending=max_pending,
            max_pending_bytes=max_pending_bytes,
            max_attempts=env.integer(
                ENV_MAX_ATTEMPTS,
                d.max_attempts,
                lo=1,
                hi=20,
                doc="attempts per message when SQS fails its entry with SenderFault=false",
            ),
            retry_base=retry_base,
            retry_cap=retry_cap,
            max_message_bytes=env.size(
                ENV_MAX_MESSAGE_BYTES,
                d.max_message_bytes,
                lo=KIB,
                hi=SQS_MAX_MESSAGE_BYTES,
                doc="largest body + attributes accepted (the queue's MaximumMessageSize)",
            ),
            max_batch_messages=max_batch_messages,
            max_request_bytes=max_request_bytes,
            drain_seconds=env.number(
                ENV_DRAIN,
                d.drain_seconds,
                lo=0.0,
                hi=600.0,
                doc="seconds at shutdown for batches still being sent, after requests finished",
            ),
            read_timeout=env.number(
                ENV_READ_TIMEOUT,
                d.read_timeout,
                lo=1.0,
                hi=120.0,
                doc="seconds the SQS client waits for an answer (replaces AWS_READ_TIMEOUT for "
                "SQS); each timeout is resent, so keep it well above SendMessageBatch's latency "
                "and AWS_MAX_ATTEMPTS times it below the load balancer's idle timeout",
            ),
            content_deduplication=content_deduplication,
        )
