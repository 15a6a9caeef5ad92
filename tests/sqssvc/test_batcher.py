"""The batcher alone, against a fake SQS client that records every SendMessageBatch call.

The fake can hold calls open (a gate), fail chosen entries or whole calls, and checks that no two
calls carrying the same FIFO group ever overlap. No test depends on wall-clock timing: "at once"
means "after a couple of event-loop turns, with the clock never consulted".
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, cast

import pytest
from botocore.exceptions import ClientError

from common.config import AwsSettings
from common.errors import ServiceError
from sqssvc.batcher import Batcher, BatcherConfig, SendResult, backoff_delay
from sqssvc.config import MIB, SqsSettings
from sqssvc.messages import Limits, OutgoingMessage, parse_message
from tests.conftest import common_settings

QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/q"
FIFO_QUEUE = QUEUE + ".fifo"

# (SenderFault, Code) for an entry that fails, or None for one that succeeds.
Verdict = tuple[bool, str] | None


@dataclass
class FakeSqs:
    """Records calls; ``verdict(entry, call_no)`` fails entries; ``error`` fails whole calls."""

    verdict: Callable[[dict[str, Any], int], Verdict] = lambda entry, call_no: None
    error: Callable[[list[dict[str, Any]]], Exception | None] = lambda entries: None
    gate: asyncio.Event | None = None
    wrong_md5_for: str | None = None
    calls: list[list[dict[str, Any]]] = field(default_factory=list)
    stored: list[dict[str, Any]] = field(default_factory=list)
    active: int = 0
    max_active: int = 0
    active_groups: Counter[str] = field(default_factory=Counter)
    overlaps: list[str] = field(default_factory=list)

    async def send_message_batch(
        self, *, QueueUrl: str, Entries: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """SendMessageBatch as SQS would answer it, after the gate opens."""
        self.calls.append(Entries)
        call_no = len(self.calls)
        groups = {e["MessageGroupId"] for e in Entries if "MessageGroupId" in e}
        self.overlaps.extend(g for g in groups if self.active_groups[g])
        self.active_groups.update(groups)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.gate is not None:
                await self.gate.wait()
            # Yield a few turns so that concurrent calls really interleave.
            for _ in range(3):
                await asyncio.sleep(0)
            if (exc := self.error(Entries)) is not None:
                raise exc
            ok: list[dict[str, Any]] = []
            failed: list[dict[str, Any]] = []
            for entry in Entries:
                verdict = self.verdict(entry, call_no)
                if verdict is not None:
                    failed.append(
                        {"Id": entry["Id"], "SenderFault": verdict[0], "Code": verdict[1]}
                    )
                    continue
                body = entry["MessageBody"]
                md5 = hashlib.md5(body.encode(), usedforsecurity=False).hexdigest()
                if body == self.wrong_md5_for:
                    md5 = "0" * 32
                self.stored.append(entry)
                ok.append(
                    {
                        "Id": entry["Id"],
                        "MessageId": f"m-{len(self.stored)}",
                        "MD5OfMessageBody": md5,
                    }
                )
            return {"Successful": ok, "Failed": failed}
        finally:
            self.active -= 1
            self.active_groups.subtract(groups)

    def bodies(self) -> list[str]:
        """Bodies SQS stored, in the order it stored them."""
        return [e["MessageBody"] for e in self.stored]


def msg(body: str, *, fifo: bool = False, **fields: Any) -> OutgoingMessage:
    """A message validated the way the service validates it."""
    return parse_message(
        {"message": body, **fields},
        Limits(fifo=fifo, max_message_bytes=MIB, max_batch_messages=100),
    )


def client_error(code: str, status: int) -> ClientError:
    """A botocore ClientError as an AWS error response produces it."""
    response: Any = {
        "Error": {"Code": code, "Message": f"{code} injected"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "SendMessageBatch")


def batcher(fake: FakeSqs, **config: Any) -> Batcher:
    """A batcher on the fake with fast, jitter-free retries unless overridden."""
    fifo = config.get("fifo", False)
    settings = SqsSettings(common=common_settings("sqssvc", AwsSettings(), "/sqs"), queue_url=None)
    fast = {"retry_base": 0.001, "retry_cap": 0.002, "metrics_namespace": None}
    cfg = replace(BatcherConfig.from_settings(settings), **(fast | config))
    return Batcher(cast(Any, fake), FIFO_QUEUE if fifo else QUEUE, cfg, rand=lambda: 0.0)


async def turns(n: int = 3) -> None:
    """Let the event loop run ``n`` turns without letting the clock matter."""
    for _ in range(n):
        await asyncio.sleep(0)


async def test_25_concurrent_sends_make_3_calls() -> None:
    """25 callers arriving together share 3 calls (10 + 10 + 5), and each gets its own result."""
    fake = FakeSqs()
    b = batcher(fake)
    bodies = [f"m{i}" for i in range(25)]
    results = await asyncio.gather(*(b.send(msg(x)) for x in bodies))
    assert [len(c) for c in fake.calls] == [10, 10, 5]
    assert sorted(fake.bodies()) == sorted(bodies)
    assert len({r.message_id for r in results}) == 25
    for body, result in zip(bodies, results, strict=True):
        assert result.md5_of_body == hashlib.md5(body.encode(), usedforsecurity=False).hexdigest()


async def test_idle_single_send_goes_out_at_once() -> None:
    """A lone message on an idle batcher reaches SQS within three loop turns: no timer runs."""
    fake = FakeSqs(gate=asyncio.Event())
    b = batcher(fake, max_in_flight=1)
    first = asyncio.ensure_future(b.send(msg("alone")))
    # Turn 1: the caller submits; 2: the pump starts the batch task; 3: the task calls SQS.
    await turns(3)
    assert [[e["MessageBody"] for e in c] for c in fake.calls] == [["alone"]]
    # While that call is in flight, later messages queue up and then leave together.
    later = [asyncio.ensure_future(b.send(msg(f"later{i}"))) for i in range(4)]
    await turns()
    assert len(fake.calls) == 1
    assert fake.gate is not None
    fake.gate.set()
    await asyncio.gather(first, *later)
    assert [len(c) for c in fake.calls] == [1, 4]


async def test_max_batch_1_disables_coalescing() -> None:
    """SQS_MAX_BATCH=1 sends every message in its own call."""
    fake = FakeSqs()
    b = batcher(fake, max_batch=1)
    await asyncio.gather(*(b.send(msg(f"n{i}")) for i in range(5)))
    assert [len(c) for c in fake.calls] == [1, 1, 1, 1, 1]


async def test_batch_over_1_mib_is_split() -> None:
    """Entries whose bodies plus attributes would pass 1 MiB go into separate calls."""
    fake = FakeSqs()
    b = batcher(fake)
    big = "x" * (500 * 1024)
    attrs = {"pad": "p" * (30 * 1024)}  # attributes count towards the limit, as in SQS
    await asyncio.gather(b.send(msg(big, attributes=attrs)), b.send(msg(big, attributes=attrs)))
    assert [len(c) for c in fake.calls] == [1, 1]
    # Without the attributes both fit in one call.
    fake2 = FakeSqs()
    b2 = batcher(fake2)
    await asyncio.gather(b2.send(msg(big)), b2.send(msg(big)))
    assert [len(c) for c in fake2.calls] == [2]


async def test_multibyte_bodies_are_measured_in_utf8_bytes() -> None:
    """Three 400 KiB bodies of 2-byte characters (800 KiB each in UTF-8) never share a call."""
    fake = FakeSqs()
    b = batcher(fake)
    body = "é" * (400 * 1024)
    await asyncio.gather(*(b.send(msg(body)) for _ in range(3)))
    assert [len(c) for c in fake.calls] == [1, 1, 1]
    for call in fake.calls:
        assert sum(len(e["MessageBody"].encode()) for e in call) <= MIB


async def test_sender_fault_false_is_retried_and_succeeds() -> None:
    """An entry failed with SenderFault=false is sent again and its caller gets success."""

    def verdict(entry: dict[str, Any], call_no: int) -> Verdict:
        return (
            (False, "InternalError") if entry["MessageBody"] == "flaky" and call_no == 1 else None
        )

    fake = FakeSqs(verdict=verdict)
    b = batcher(fake)
    results = await asyncio.gather(b.send(msg("flaky")), b.send(msg("steady")))
    assert all(isinstance(r, SendResult) for r in results)
    assert [[e["MessageBody"] for e in c] for c in fake.calls] == [["flaky", "steady"], ["flaky"]]
    assert sorted(fake.bodies()) == ["flaky", "steady"]
    assert b.stats.retried == 1


async def test_sender_fault_true_fails_only_its_caller() -> None:
    """SenderFault=true fails that caller with 422 and SQS's code; the others succeed; no retry."""

    def verdict(entry: dict[str, Any], call_no: int) -> Verdict:
        return (True, "InvalidParameterValue") if entry["MessageBody"] == "bad" else None

    fake = FakeSqs(verdict=verdict)
    b = batcher(fake)
    results = await asyncio.gather(
        b.send(msg("good1")), b.send(msg("bad")), b.send(msg("good2")), return_exceptions=True
    )
    assert isinstance(results[0], SendResult)
    assert isinstance(results[2], SendResult)
    err = results[1]
    assert isinstance(err, ServiceError)
    assert (err.status, err.code) == (422, "message_rejected")
    assert err.details["sqs_code"] == "InvalidParameterValue"
    assert len(fake.calls) == 1
    assert sorted(fake.bodies()) == ["good1", "good2"]


async def test_retries_are_capped() -> None:
    """An entry that keeps failing with SenderFault=false is sent max_attempts times, then 503."""
    fake = FakeSqs(verdict=lambda entry, call_no: (False, "ServiceUnavailable"))
    b = batcher(fake, max_attempts=3)
    with pytest.raises(ServiceError) as info:
        await b.send(msg("doomed"))
    assert (info.value.status, info.value.code) == (503, "backend_unavailable")
    assert info.value.retry_after is not None
    assert len(fake.calls) == 3


def test_backoff_is_capped_and_jittered() -> None:
    """The delay doubles per attempt up to the cap, and jitter spreads it over its upper half."""
    lows = [backoff_delay(a, 0.05, 2.0, lambda: 0.0) for a in range(1, 12)]
    highs = [backoff_delay(a, 0.05, 2.0, lambda: 1.0) for a in range(1, 12)]
    assert lows[0] == pytest.approx(0.025)
    assert highs[0] == pytest.approx(0.05)
    assert highs[1] == pytest.approx(0.1)
    assert max(highs) == pytest.approx(2.0)
    assert all(lo < hi for lo, hi in zip(lows, highs, strict=True))


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("ServiceUnavailable", 503, (503, "backend_unavailable")),
        ("AccessDenied", 403, (502, "backend_error")),
        ("AWS.SimpleQueueService.NonExistentQueue", 400, (502, "backend_error")),
    ],
)
async def test_whole_call_failure_fails_every_caller(
    code: str, status: int, expected: tuple[int, str]
) -> None:
    """A failed call (botocore having retried it) fails each of its callers with 502/503."""
    fake = FakeSqs(error=lambda entries: client_error(code, status))
    b = batcher(fake)
    results = await asyncio.gather(
        *(b.send(msg(f"m{i}")) for i in range(7)), return_exceptions=True
    )
    assert len(fake.calls) == 1
    for r in results:
        assert isinstance(r, ServiceError)
        assert (r.status, r.code) == expected
    if expected[0] == 503:
        assert all(isinstance(r, ServiceError) and r.retry_after for r in results)


async def test_whole_call_refused_for_one_entry_fails_only_that_caller() -> None:
    """When SQS refuses a whole call over one entry's content, entries are resent alone."""

    def error(entries: list[dict[str, Any]]) -> Exception | None:
        if any(e["MessageBody"] == "poison" for e in entries):
            return client_error("InvalidParameterValue", 400)
        return None

    fake = FakeSqs(error=error)
    b = batcher(fake)
    results = await asyncio.gather(
        b.send(msg("a")), b.send(msg("poison")), b.send(msg("b")), return_exceptions=True
    )
    assert isinstance(results[0], SendResult)
    assert isinstance(results[2], SendResult)
    assert isinstance(results[1], ServiceError)
    assert (results[1].status, results[1].code) == (422, "message_rejected")
    assert [len(c) for c in fake.calls] == [3, 1, 1, 1]
    assert sorted(fake.bodies()) == ["a", "b"]


async def test_md5_mismatch_is_never_confirmed() -> None:
    """If SQS's MD5 of the body differs from ours, the caller gets 502, not a success."""
    fake = FakeSqs(wrong_md5_for="garbled")
    b = batcher(fake)
    results = await asyncio.gather(
        b.send(msg("garbled")), b.send(msg("fine")), return_exceptions=True
    )
    assert isinstance(results[0], ServiceError)
    assert (results[0].status, results[0].code) == (502, "integrity_error")
    assert isinstance(results[1], SendResult)


async def test_pending_bound_yields_503_overloaded() -> None:
    """Beyond max_pending waiting messages, submit refuses with 503 overloaded and Retry-After."""
    fake = FakeSqs(gate=asyncio.Event())
    b = batcher(fake, max_in_flight=1, max_pending=5)
    in_flight = asyncio.ensure_future(b.send(msg("first")))
    await turns()
    assert len(fake.calls) == 1  # "first" no longer counts as pending
    queued = [asyncio.ensure_future(b.send(msg(f"q{i}"))) for i in range(5)]
    await turns()
    with pytest.raises(ServiceError) as info:
        b.submit([msg("one too many")])
    assert (info.value.status, info.value.code) == (503, "overloaded")
    assert info.value.retry_after == 1
    assert b.stats.overloaded == 1
    assert fake.gate is not None
    fake.gate.set()
    await asyncio.gather(in_flight, *queued)
    assert "one too many" not in fake.bodies()
    # Once drained there is room again.
    await b.send(msg("later"))


async def test_batch_admission_is_all_or_nothing() -> None:
    """A group of messages that does not fit entirely is refused entirely."""
    fake = FakeSqs(gate=asyncio.Event())
    b = batcher(fake, max_in_flight=1, max_pending=4)
    b.submit([msg("a"), msg("b")])
    with pytest.raises(ServiceError):
        b.submit([msg("c"), msg("d"), msg("e")])
    assert b.waiting == 2


async def test_cancelled_caller_is_dropped_before_sending() -> None:
    """A caller that went away before its message left is not sent for."""
    fake = FakeSqs(gate=asyncio.Event())
    b = batcher(fake, max_in_flight=1)
    first = asyncio.ensure_future(b.send(msg("first")))
    await turns()
    gone = asyncio.ensure_future(b.send(msg("gone")))
    stays = asyncio.ensure_future(b.send(msg("stays")))
    await turns()
    gone.cancel()
    assert fake.gate is not None
    fake.gate.set()
    await asyncio.gather(first, stays)
    assert fake.bodies() == ["first", "stays"]


async def test_fifo_groups_never_in_two_calls_at_once_and_keep_order() -> None:
    """FIFO: batches of one group never overlap, other groups proceed in parallel, order is kept."""
    fake = FakeSqs()
    b = batcher(fake, fifo=True, max_batch=2, max_in_flight=4)
    sends = [
        b.send(msg(f"{g}{i:02d}", fifo=True, group_id=g))
        for i in range(12)
        for g in ("A", "B", "C")
    ]
    await asyncio.gather(*sends)
    assert fake.overlaps == []
    assert fake.max_active > 1  # different groups did travel concurrently
    for g in ("A", "B", "C"):
        mine = [x for x in fake.bodies() if x.startswith(g)]
        assert mine == [f"{g}{i:02d}" for i in range(12)]


async def test_fifo_retry_keeps_group_order() -> None:
    """FIFO: a retried entry is stored before every later message of its group."""

    def verdict(entry: dict[str, Any], call_no: int) -> Verdict:
        # SQS-like FIFO behaviour: once A01 fails in a call, later A entries in it fail too.
        failing = call_no == 1 and entry["MessageGroupId"] == "A" and entry["MessageBody"] >= "A01"
        return (False, "InternalError") if failing else None

    fake = FakeSqs(verdict=verdict)
    b = batcher(fake, fifo=True, max_in_flight=4)
    await asyncio.gather(
        *(b.send(msg(f"{g}{i:02d}", fifo=True, group_id=g)) for i in range(6) for g in ("A", "B"))
    )
    assert fake.overlaps == []
    assert [x for x in fake.bodies() if x[0] == "A"] == [f"A{i:02d}" for i in range(6)]
    assert [x for x in fake.bodies() if x[0] == "B"] == [f"B{i:02d}" for i in range(6)]
    assert b.stats.retried == 4


async def test_fifo_group_waits_while_its_retry_is_pending() -> None:
    """FIFO with one message per call: A2 is not sent until A1's retry has gone through."""

    def verdict(entry: dict[str, Any], call_no: int) -> Verdict:
        return (False, "InternalError") if entry["MessageBody"] == "A1" and call_no == 1 else None

    fake = FakeSqs(verdict=verdict)
    b = batcher(fake, fifo=True, max_batch=1, max_in_flight=4)
    await asyncio.gather(*(b.send(msg(x, fifo=True, group_id=x[0])) for x in ("A1", "A2", "B1")))
    assert fake.overlaps == []
    assert [x for x in fake.bodies() if x[0] == "A"] == ["A1", "A2"]


async def test_close_drains_then_refuses() -> None:
    """close() sends everything already queued, and refuses new messages from the start."""
    fake = FakeSqs(gate=asyncio.Event())
    b = batcher(fake, max_in_flight=1)
    waiting = [asyncio.ensure_future(b.send(msg(f"m{i}"))) for i in range(15)]
    await turns()
    closing = asyncio.ensure_future(b.close(timeout=30))
    await turns()
    with pytest.raises(ServiceError) as info:
        b.submit([msg("late")])
    assert (info.value.status, info.value.code) == (503, "shutting_down")
    assert not closing.done()
    assert fake.gate is not None
    fake.gate.set()
    await closing
    assert all(isinstance(w.result(), SendResult) for w in waiting)
    assert sorted(fake.bodies()) == sorted(f"m{i}" for i in range(15))


async def test_close_timeout_fails_what_is_left() -> None:
    """If SQS never answers, close() still ends, and the callers get 503 (never a success)."""
    fake = FakeSqs(gate=asyncio.Event())
    b = batcher(fake, max_in_flight=1)
    waiting = [asyncio.ensure_future(b.send(msg(f"m{i}"))) for i in range(12)]
    await turns()
    await b.close(timeout=0.01)
    results = await asyncio.gather(*waiting, return_exceptions=True)
    for r in results:
        assert isinstance(r, ServiceError)
        assert r.code == "shutting_down"
    assert fake.stored == []


async def test_a_fault_while_handling_the_answer_fails_the_callers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug of ours after SQS answered still answers every caller (500: maybe stored), and
    the batcher goes on sending."""
    fake = FakeSqs()
    b = batcher(fake)

    def broken(*_: Any) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(b, "_resolve", broken)
    outcomes = await asyncio.wait_for(
        asyncio.gather(b.send(msg("a")), b.send(msg("b")), return_exceptions=True), 10
    )
    assert [(type(o), getattr(o, "status", None)) for o in outcomes] == [(ServiceError, 500)] * 2
    assert all("may or may not be stored" in str(o) for o in outcomes)
    monkeypatch.undo()
    assert isinstance(await b.send(msg("c")), SendResult)
