"""``python -m sqssvc`` under continuous load gets SIGTERM: no 2xx message is ever lost.

The service runs as its own process, as in the container, talking to moto through a proxy that
holds every SendMessageBatch for 200 ms, so batches are certainly in flight and messages pending
when the signal arrives.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.faultproxy import Call, Fault, fault_proxy
from tests.procs import ServiceProcess
from tests.sqssvc.conftest import drain

WORKERS = 16


@dataclass
class Outcome:
    """One request of the load: its body, when it ended, and how."""

    body: str
    ended: float
    status: int | None = None  # None: no HTTP answer (connection refused or dropped)
    error: str | None = None


def sqssvc_through(
    proxy_url: str, service_env: dict[str, str], queue_url: str, tmp_path: Path, **env: str
) -> ServiceProcess:
    """``python -m sqssvc`` (not started) on ``queue_url``, calling SQS through the proxy."""
    full = dict(service_env, AWS_ENDPOINT_URL=proxy_url, QUEUE_URL=queue_url, **env)
    return ServiceProcess("sqssvc", full, tmp_path / "sqssvc.log")


async def test_sigterm_under_load_loses_no_acknowledged_message(
    moto_url: str, service_env: dict[str, str], tmp_path: Path, sqs: Any, queue_url: str
) -> None:
    """Every 2xx message is in the queue; in-flight requests finish; later ones are refused cleanly."""

    def slow_batches(call: Call) -> Fault | None:
        return Fault(delay=0.2) if call.target == "AmazonSQS.SendMessageBatch" else None

    async with fault_proxy(moto_url, slow_batches) as proxy:
        svc = sqssvc_through(
            proxy.url, service_env, queue_url, tmp_path, SHUTDOWN_GRACE_SECONDS="10"
        )
        await asyncio.to_thread(svc.start)
        outcomes: list[Outcome] = []
        exited = asyncio.Event()
        acked = asyncio.Event()

        async def worker(n: int, session: aiohttp.ClientSession) -> None:
            i = 0
            while True:
                body = f"w{n:02d}-{i:05d}"
                i += 1
                out = Outcome(body, 0.0)
                try:
                    async with session.post(svc.url + "/sqs/send", json={"message": body}) as r:
                        out.status = r.status
                        if r.status != 200:
                            out.error = (await r.json())["error"]
                except aiohttp.ClientError as exc:
                    out.error = type(exc).__name__
                out.ended = time.monotonic()
                outcomes.append(out)
                if sum(o.status == 200 for o in outcomes) >= 60:
                    acked.set()
                if exited.is_set() and out.status is None:
                    return  # the service is gone and refuses us: this worker is done
                if out.status is None:
                    await asyncio.sleep(0.01)

        try:
            async with aiohttp.ClientSession() as session:
                workers = [asyncio.create_task(worker(n, session)) for n in range(WORKERS)]
                await asyncio.wait_for(acked.wait(), 30)
                sigterm_at = time.monotonic()
                svc.signal(signal.SIGTERM)
                code = await asyncio.to_thread(svc.wait, 30)
                exited.set()
                await asyncio.wait_for(asyncio.gather(*workers), 30)
        finally:
            svc.stop()

    assert code == 0, svc.output()[-3000:]
    stored = [m["Body"] for m in await drain(sqs, queue_url)]
    assert len(stored) == len(set(stored))  # nothing stored twice
    acknowledged = {o.body for o in outcomes if o.status == 200}
    assert acknowledged <= set(stored), sorted(acknowledged - set(stored))[:10]
    # Requests in flight when SIGTERM arrived were finished, not cut off...
    assert any(o.status == 200 and o.ended > sigterm_at for o in outcomes)
    # ...and everything not acknowledged was refused cleanly: no answer at all, or a JSON 503.
    refusals = [o for o in outcomes if o.status != 200]
    assert refusals, "no request was refused after shutdown"
    for o in refusals:
        assert o.status in (None, 503), o
        assert o.status is None or o.error == "shutting_down", o
    events = [
        json.loads(line).get("event") for line in svc.output().splitlines() if line.startswith("{")
    ]
    assert "shutdown_started" in events
    assert "batcher_closed" in events


async def test_a_send_stuck_on_a_stalled_sqs_at_shutdown_gets_503(
    moto_url: str, service_env: dict[str, str], tmp_path: Path, queue_url: str
) -> None:
    """SQS takes the SendMessageBatch and never answers; SIGTERM comes, the grace period
    passes. The caller gets ``503 shutting_down`` (it may retry with its idempotency key). The
    batcher used to be closed after aiohttp had cancelled the handler, whose client then got
    an empty reply (a 502 behind the ALB)."""

    def stalled(call: Call) -> Fault | None:
        return Fault(stall=True) if call.target == "AmazonSQS.SendMessageBatch" else None

    async with fault_proxy(moto_url, stalled) as proxy:
        svc = sqssvc_through(
            proxy.url,
            service_env,
            queue_url,
            tmp_path,
            SHUTDOWN_GRACE_SECONDS="1",
            SQS_DRAIN_SECONDS="1",
            SQS_READ_TIMEOUT="60",
        )
        await asyncio.to_thread(svc.start)
        try:
            async with aiohttp.ClientSession() as session:
                send = asyncio.ensure_future(
                    session.post(svc.url + "/sqs/send", json={"message": "stuck"})
                )
                deadline = time.monotonic() + 30
                while not any(c.target == "AmazonSQS.SendMessageBatch" for c in proxy.calls):
                    assert time.monotonic() < deadline, svc.output()[-2000:]
                    await asyncio.sleep(0.02)
                svc.signal(signal.SIGTERM)
                resp = await asyncio.wait_for(send, 30)
                answer = await resp.json()
                code = await asyncio.to_thread(svc.wait, 30)
        finally:
            svc.stop()
    assert (resp.status, answer["error"]) == (503, "shutting_down"), answer
    assert code == 0, svc.output()[-3000:]
