"""The coalescing batcher: many callers' messages become few ``SendMessageBatch`` calls, none lost.

Each caller's message waits in ``pending`` with its own future. Sending is leading-edge: a submit
schedules a pump for the next loop turn (``call_soon``, never a timer), and the pump starts a
batch whenever a sender slot is free, so an idle service sends a lone message at once while a busy
one fills batches with whatever queued up while every slot was busy. A batch holds at most
``max_batch`` entries and 1 MiB (SQS's limits, measured as SQS does: UTF-8 body + attributes).

Outcomes, per entry: ``Successful`` resolves the caller's future; ``Failed`` with
``SenderFault=true`` fails only that caller (422 ``message_rejected`` with SQS's code); with
``SenderFault=false`` the entry is queued again after a jittered, capped backoff, up to
``max_attempts`` sends. A whole call that fails (after botocore's own retries) fails every caller
in it with 502/503, except when SQS refused the call because of one entry's content: then each
entry is sent alone once, so only the culprit's caller fails.

FIFO queues: a message group is *held* while a batch containing it is in flight or one of its
entries waits for a retry; held groups are skipped (with everything after them in that group), so
two batches of one group are never in flight together and order within a group is kept. Retried
entries go back to the front, ahead of later messages of their group.

Bounded: ``max_pending`` messages / ``max_pending_bytes`` waiting (including retries); beyond that
``submit`` raises 503 ``overloaded`` with ``Retry-After``. ``close`` stops accepting and drains.

Every send of a message, botocore's resends and ours alike, carries the same entry: its stable id
(the ``dedup_id`` attribute, or the FIFO ``MessageDeduplicationId``) was fixed when the request
was parsed, so a resend after a timeout is deduplicated by SQS (FIFO) or recognisable (standard).
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import random
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from common.aws import aws_error_code, is_aws_failure, is_transient, to_service_error
from common.errors import BackendError, CircuitOpen, ServiceError, Unavailable, Unprocessable
from common.logging import get_logger
from common.metrics import COUNT, emf
from sqssvc.config import SQS_MAX_BATCH_BYTES, SqsSettings
from sqssvc.messages import OutgoingMessage

if TYPE_CHECKING:  # the stubs are a dev dependency; the image has no need of them
    from types_aiobotocore_sqs import SQSClient

log = get_logger("sqssvc.batcher")

# Whole-call errors that one entry's content can cause (moto, for instance, refuses a whole FIFO
# batch when one entry lacks a deduplication id, where SQS fails just that entry). Sending each
# entry alone then pins the error on its own caller. Prefix-less, as botocore may report either.
_ENTRY_CAUSED = frozenset(
    {
        "InvalidParameterValue",
        "MissingParameter",
        "InvalidMessageContents",
        "InvalidAttributeName",
        "InvalidAttributeValue",
        "MessageAttributesInvalid",
        "MessageTooLong",
        "BatchRequestTooLong",
    }
)
_SQS_PREFIX = "AWS.SimpleQueueService."


@dataclass(frozen=True, slots=True)
class SendResult:
    """What SQS answered for one stored message."""

    message_id: str
    md5_of_body: str
    md5_of_message_attributes: str | None = None
    sequence_number: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The response fields of one sent message."""
        out: dict[str, Any] = {"message_id": self.message_id, "md5_of_body": self.md5_of_body}
        if self.md5_of_message_attributes is not None:
            out["md5_of_message_attributes"] = self.md5_of_message_attributes
        if self.sequence_number is not None:
            out["sequence_number"] = self.sequence_number
        return out


@dataclass(frozen=True, slots=True)
class BatcherConfig:
    """The batcher's bounds, taken from the service settings (``from_settings``): the settings
    hold every default, so none is written here."""

    fifo: bool
    max_batch: int
    max_in_flight: int
    max_pending: int
    max_pending_bytes: int
    max_attempts: int
    retry_base: float
    retry_cap: float
    # Where the batch_sent line's EMF metrics go; None: no metrics.
    metrics_namespace: str | None
    service: str
    max_batch_bytes: int = SQS_MAX_BATCH_BYTES  # SQS's own limit, not a setting

    @classmethod
    def from_settings(cls, settings: SqsSettings) -> BatcherConfig:
        """The batcher configuration of a service."""
        return cls(
            fifo=settings.fifo,
            max_batch=settings.max_batch,
            max_in_flight=settings.max_in_flight,
            max_pending=settings.max_pending,
            max_pending_bytes=settings.max_pending_bytes,
            max_attempts=settings.max_attempts,
            retry_base=settings.retry_base,
            retry_cap=settings.retry_cap,
            metrics_namespace=(
                settings.common.metrics_namespace if settings.common.metrics else None
            ),
            service=settings.common.service,
        )


@dataclass
class BatcherStats:
    """Counters for logs, benchmarks and tests."""

    calls: int = 0  # SendMessageBatch calls started
    sent: int = 0  # messages confirmed by SQS
    failed: int = 0  # callers answered with an error
    retried: int = 0  # entries queued again after SenderFault=false
    isolated: int = 0  # entries resent alone after a whole-call refusal
    overloaded: int = 0  # submits refused because pending was full


@dataclass(eq=False, slots=True)
class _Entry:
    message: OutgoingMessage
    future: asyncio.Future[SendResult]
    attempts: int = 0
    solo: bool = False  # send alone: a batch holding it was refused as a whole


@dataclass(eq=False, slots=True)
class _Retry:
    entries: list[_Entry]
    handle: asyncio.TimerHandle | None = None


def backoff_delay(attempt: int, base: float, cap: float, rand: Callable[[], float]) -> float:
    """Seconds before send number ``attempt + 1``: exponential, capped, half of it jittered."""
    ceiling = min(cap, base * 2.0 ** max(0, attempt - 1))
    return ceiling / 2 + rand() * ceiling / 2


def _sqs_code(code: str | None) -> str:
    return (code or "").removeprefix(_SQS_PREFIX)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _rejected(code: str, message: str) -> ServiceError:
    return Unprocessable(
        f"SQS rejected the message ({code}): {message}".rstrip(": "),
        code="message_rejected",
        details={"sqs_code": code},
    )


class Batcher:
    """Coalesces messages into ``SendMessageBatch`` calls on one queue; one per app."""

    def __init__(
        self,
        client: SQSClient,
        queue_url: str,
        config: BatcherConfig,
        *,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._client = client
        self._queue_url = queue_url
        self._cfg = config
        self._rand = rand
        self._pending: deque[_Entry] = deque()
        self._waiting = 0  # entries pending or waiting for a retry
        self._waiting_bytes = 0
        self._in_flight: set[asyncio.Task[None]] = set()
        self._held: Counter[str] = Counter()  # FIFO groups in flight or awaiting a retry
        self._retries: set[_Retry] = set()
        self._pump_handle: asyncio.Handle | None = None
        self._closing = False
        self._closed = False
        self._idle = asyncio.Event()
        self._idle.set()
        self.stats = BatcherStats()

    @property
    def waiting(self) -> int:
        """Messages admitted but not yet in a batch in flight (including retries)."""
        return self._waiting

    @property
    def in_flight(self) -> int:
        """Batches being sent right now."""
        return len(self._in_flight)

    def submit(self, messages: Sequence[OutgoingMessage]) -> list[asyncio.Future[SendResult]]:
        """Queue all of ``messages`` or none: 503 ``overloaded`` / ``shutting_down`` otherwise."""
        if self._closing:
            raise Unavailable(
                "the service is shutting down; retry the request", code="shutting_down"
            )
        size = sum(m.size for m in messages)
        if (
            self._waiting + len(messages) > self._cfg.max_pending
            or self._waiting_bytes + size > self._cfg.max_pending_bytes
        ):
            self.stats.overloaded += 1
            raise Unavailable(
                f"{self._waiting} messages are already waiting to be sent; retry shortly",
                code="overloaded",
                retry_after=1,
            )
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[SendResult]] = []
        for message in messages:
            future: asyncio.Future[SendResult] = loop.create_future()
            self._pending.append(_Entry(message, future))
            futures.append(future)
        self._waiting += len(messages)
        self._waiting_bytes += size
        self._idle.clear()
        self._schedule_pump()
        return futures

    async def send(self, message: OutgoingMessage) -> SendResult:
        """Send one message; returns once SQS stored it, raises ServiceError otherwise."""
        (future,) = self.submit([message])
        return await future

    async def close(self, timeout: float) -> None:
        """Refuse new messages, send what is queued, wait for batches in flight.

        After ``timeout`` seconds whatever is left is failed (503 ``shutting_down``) and in-flight
        calls are cancelled, so shutdown always ends. A second call returns at once.
        """
        if self._closed:
            return
        self._closing = True
        self._schedule_pump()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.warning("drain_timeout", waiting=self._waiting, in_flight=len(self._in_flight))
            for retry in list(self._retries):
                if retry.handle is not None:
                    retry.handle.cancel()
                self._pending.extendleft(reversed(retry.entries))
            self._retries.clear()
            while self._pending:
                entry = self._pending.popleft()
                self._leave(entry)
                self._fail(entry, self._shutdown_error())
            for task in list(self._in_flight):
                task.cancel()
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        self._closed = True
        log.info("batcher_closed", **vars(self.stats))

    @staticmethod
    def _shutdown_error() -> ServiceError:
        return Unavailable(
            "the service shut down before the message was confirmed; it may or may not have "
            "been sent",
            code="shutting_down",
        )

    # -- scheduling ------------------------------------------------------------------------------

    def _schedule_pump(self) -> None:
        # call_soon, not a timer: callers that arrive in the same loop turn share a batch, and a
        # lone caller on an idle service waits for nothing.
        if self._pump_handle is None:
            self._pump_handle = asyncio.get_running_loop().call_soon(
                self._pump, context=contextvars.Context()
            )

    def _pump(self) -> None:
        self._pump_handle = None
        loop = asyncio.get_running_loop()
        while len(self._in_flight) < self._cfg.max_in_flight:
            batch = self._take()
            if not batch:
                break
            # A fresh context: a batch serves many requests, so its lines carry no request's id.
            task = loop.create_task(self._send(batch), context=contextvars.Context())
            self._in_flight.add(task)
            task.add_done_callback(self._finished)
        self._check_idle()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("batch_task_failed", exc_info=exc)
        if self._pending:
            self._schedule_pump()
        self._check_idle()

    def _check_idle(self) -> None:
        if not self._pending and not self._in_flight and not self._retries:
            self._idle.set()

    def _leave(self, entry: _Entry) -> None:
        self._waiting -= 1
        self._waiting_bytes -= entry.message.size

    def _take(self) -> list[_Entry]:
        """The next batch from ``pending``, in order, within the entry and byte limits."""
        cfg = self._cfg
        batch: list[_Entry] = []
        size = 0
        pending = self._pending
        if not cfg.fifo:
            while pending and len(batch) < cfg.max_batch:
                entry = pending[0]
                if entry.future.done():  # the caller went away before it was sent
                    self._leave(pending.popleft())
                    continue
                if batch and (
                    batch[0].solo or entry.solo or size + entry.message.size > cfg.max_batch_bytes
                ):
                    break
                self._leave(pending.popleft())
                batch.append(entry)
                size += entry.message.size
            return batch
        # FIFO: skip held groups, and once an entry of a group is skipped, the rest of that group
        # too, so nothing overtakes an earlier message of its group.
        skipped_entries: list[_Entry] = []
        skipped_groups: set[str] = set()
        while pending and len(batch) < cfg.max_batch and not (batch and batch[0].solo):
            entry = pending.popleft()
            if entry.future.done():
                self._leave(entry)
                continue
            group = entry.message.group_id or ""
            if (
                group in self._held
                or group in skipped_groups
                or (batch and (entry.solo or size + entry.message.size > cfg.max_batch_bytes))
            ):
                skipped_groups.add(group)
                skipped_entries.append(entry)
                continue
            self._leave(entry)
            batch.append(entry)
            size += entry.message.size
        pending.extendleft(reversed(skipped_entries))
        for group in {e.message.group_id or "" for e in batch}:
            self._held[group] += 1
        return batch

    def _release(self, groups: set[str]) -> None:
        for group in groups:
            self._held[group] -= 1
            if self._held[group] <= 0:
                del self._held[group]

    # -- sending ---------------------------------------------------------------------------------

    async def _send(self, batch: list[_Entry]) -> None:
        groups = {e.message.group_id or "" for e in batch} if self._cfg.fifo else set()
        try:
            entries = [e.message.entry(str(i)) for i, e in enumerate(batch)]
            for entry in batch:
                entry.attempts += 1
            self.stats.calls += 1
            try:
                response = await self._client.send_message_batch(
                    QueueUrl=self._queue_url, Entries=entries
                )
            except asyncio.CancelledError:
                for entry in batch:
                    self._fail(entry, self._shutdown_error())
                raise
            except Exception as exc:
                self._call_failed(batch, exc)
            else:
                self._resolve(batch, response)
        except Exception:
            # A fault of ours while handling the answer must not leave callers waiting forever.
            # SQS may have stored some of these messages, so the caller hears exactly that.
            log.exception("batch_handling_failed", entries=len(batch))
            for entry in batch:
                if not entry.future.done():
                    self._fail(
                        entry,
                        ServiceError(
                            "internal error while confirming the send: the message may or may "
                            "not be stored; retrying may store it twice",
                            code="internal_error",
                            status=500,
                        ),
                    )
        finally:
            # Retries took their own hold on their groups before this release; the next pump
            # runs from _finished, once this batch no longer occupies a slot.
            self._release(groups)

    def _resolve(self, batch: list[_Entry], response: Mapping[str, Any]) -> None:
        by_id = {str(i): e for i, e in enumerate(batch)}
        for ok in response.get("Successful", []):
            entry = by_id.pop(str(ok.get("Id")), None)
            if entry is None:
                log.warning("unknown_batch_entry", entry_id=ok.get("Id"))
                continue
            md5 = str(ok.get("MD5OfMessageBody", ""))
            if md5 != _md5(entry.message.body):
                # SQS stored something other than what we sent: never confirm it.
                log.error("md5_mismatch", message_id=ok.get("MessageId"))
                self._fail(
                    entry,
                    BackendError(
                        "SQS acknowledged a body whose MD5 does not match what was sent",
                        code="integrity_error",
                    ),
                )
                continue
            self.stats.sent += 1
            if not entry.future.done():
                entry.future.set_result(
                    SendResult(
                        message_id=str(ok["MessageId"]),
                        md5_of_body=md5,
                        md5_of_message_attributes=ok.get("MD5OfMessageAttributes"),
                        sequence_number=ok.get("SequenceNumber"),
                    )
                )
        retries: list[_Entry] = []
        for bad in response.get("Failed", []):
            entry = by_id.pop(str(bad.get("Id")), None)
            if entry is None:
                log.warning("unknown_batch_entry", entry_id=bad.get("Id"))
                continue
            code = _sqs_code(bad.get("Code")) or "UnknownError"
            text = str(bad.get("Message") or "")
            if bad.get("SenderFault"):
                self._fail(entry, _rejected(code, text))
            elif entry.attempts < self._cfg.max_attempts:
                retries.append(entry)
            else:
                log.warning("entry_retries_exhausted", sqs_code=code, attempts=entry.attempts)
                self._fail(
                    entry,
                    Unavailable(
                        f"SQS could not store the message after {entry.attempts} attempts "
                        f"({code}); retry later",
                        code="backend_unavailable",
                        retry_after=2,
                    ),
                )
        for entry in by_id.values():
            # Neither Successful nor Failed: SQS broke its contract; the outcome is unknown.
            self._fail(
                entry, BackendError("SQS returned no result for the message", code="backend_error")
            )
        resends = int(response.get("ResponseMetadata", {}).get("RetryAttempts", 0))
        self._log_batch(batch, len(response.get("Successful", [])), len(retries), resends)
        if retries:
            self._retry_later(retries)

    def _log_batch(self, batch: list[_Entry], accepted: int, retried: int, resends: int) -> None:
        """One line per SendMessageBatch call, carrying BatchSize, SendRetries and BatchResends
        (botocore's resends of the call: after a timeout each may have stored a copy) as EMF."""
        fields: dict[str, Any] = {}
        if self._cfg.metrics_namespace is not None:
            fields = emf(
                self._cfg.metrics_namespace,
                {"Service": self._cfg.service},
                {
                    "BatchSize": (len(batch), COUNT),
                    "SendRetries": (retried, COUNT),
                    "BatchResends": (resends, COUNT),
                },
            )
        log.info(
            "batch_sent",
            queue=self._queue_url,
            batch_size=len(batch),
            accepted=accepted,
            retried=retried,
            resends=resends,
            **fields,
        )

    def _retry_later(self, entries: list[_Entry]) -> None:
        attempt = max(e.attempts for e in entries)
        delay = backoff_delay(attempt, self._cfg.retry_base, self._cfg.retry_cap, self._rand)
        self.stats.retried += len(entries)
        log.info("entries_retry", count=len(entries), attempt=attempt, delay_s=round(delay, 3))
        retry = _Retry(entries)
        if self._cfg.fifo:
            for group in {e.message.group_id or "" for e in entries}:
                self._held[group] += 1
        self._waiting += len(entries)
        self._waiting_bytes += sum(e.message.size for e in entries)
        retry.handle = asyncio.get_running_loop().call_later(
            delay, self._requeue, retry, context=contextvars.Context()
        )
        self._retries.add(retry)

    def _requeue(self, retry: _Retry) -> None:
        self._retries.discard(retry)
        # To the front, in their original order: ahead of later messages of the same group.
        self._pending.extendleft(reversed(retry.entries))
        if self._cfg.fifo:
            self._release({e.message.group_id or "" for e in retry.entries})
        self._schedule_pump()

    def _call_failed(self, batch: list[_Entry], exc: Exception) -> None:
        code = _sqs_code(aws_error_code(exc))
        entry_caused = code in _ENTRY_CAUSED and not is_transient(exc)
        if entry_caused and len(batch) > 1:
            log.warning("batch_refused_isolating", sqs_code=code, entries=len(batch))
            self.stats.isolated += len(batch)
            for entry in batch:
                entry.solo = True
                entry.attempts -= 1  # the refused call does not count against the entry
            self._pending.extendleft(reversed(batch))
            self._waiting += len(batch)
            self._waiting_bytes += sum(e.message.size for e in batch)
            return
        if entry_caused:
            text = str(getattr(exc, "response", {}).get("Error", {}).get("Message", ""))
            self._fail(batch[0], _rejected(code, text))
            return
        if isinstance(exc, CircuitOpen):
            # Refused before reaching SQS: nothing was sent.
            for entry in batch:
                self._fail(entry, exc)
            return
        if is_aws_failure(exc):
            log.warning(
                "batch_call_failed", sqs_code=code or type(exc).__name__, entries=len(batch)
            )
            for entry in batch:
                self._fail(entry, to_service_error(exc, "SQS"))
            return
        log.error("batch_call_bug", entries=len(batch), exc_info=exc)
        for entry in batch:
            self._fail(entry, ServiceError("internal error while sending the message"))

    def _fail(self, entry: _Entry, error: ServiceError) -> None:
        self.stats.failed += 1
        if not entry.future.done():
            entry.future.set_exception(error)
