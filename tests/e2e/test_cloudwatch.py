"""Logs reach CloudWatch (moto) from a running service, survive SIGTERM, and never hurt serving.

``CLOUDWATCH_LOG_GROUP`` makes each service ship its lines with watchtower as well as print them.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from common.cloudwatch import stream_name
from common.config import CloudWatchSettings
from tests.conftest import log_lines
from tests.faultproxy import Call, Fault, fault_proxy
from tests.procs import ServiceProcess, free_port


async def wait_for_lines(
    logs_client: Any, group: str, want: set[str], timeout: float = 20.0
) -> list[dict[str, Any]]:
    """CloudWatch lines of ``group`` once every request id in ``want`` appears."""
    deadline = time.monotonic() + timeout
    while True:
        lines = await log_lines(logs_client, group)
        if want <= {str(x.get("request_id")) for x in lines}:
            return lines
        if time.monotonic() > deadline:
            raise AssertionError(
                f"missing request ids: {want - {x.get('request_id') for x in lines}}"
            )
        await asyncio.sleep(0.3)


async def traffic(url: str, count: int = 3) -> dict[str, int]:
    """Some requests with known ids; returns request id -> status."""
    seen: dict[str, int] = {}
    async with aiohttp.ClientSession() as session:
        for i in range(count):
            rid = f"cw-{i}-{time.monotonic_ns()}"
            path = "/s3/health" if i % 2 == 0 else "/s3/nope"
            async with session.get(url + path, headers={"X-Request-ID": rid}) as resp:
                assert resp.headers["X-Request-ID"] == rid
                seen[rid] = resp.status
    return seen


def stdout_lines(svc: ServiceProcess) -> list[dict[str, Any]]:
    """The service's stdout, one JSON object per line (fails on a line that is not JSON)."""
    return [json.loads(x) for x in svc.output().splitlines() if x.strip()]


async def test_requests_produce_json_events_in_cloudwatch(
    service_env: dict[str, str], bucket: str, log_group: str, logs_client: Any, tmp_path: Path
) -> None:
    """Each request's access line is in CloudWatch as JSON with its request id and its metrics."""
    env = dict(
        service_env,
        BUCKET_NAME=bucket,
        CLOUDWATCH_LOG_GROUP=log_group,
        CLOUDWATCH_SEND_INTERVAL="0.5",
    )
    svc = ServiceProcess("s3svc", env, tmp_path / "s3svc.log").start()
    try:
        seen = await traffic(svc.url)
        lines = await wait_for_lines(logs_client, log_group, set(seen))
    finally:
        svc.stop()
    access = {x["request_id"]: x for x in lines if x["event"] == "request"}
    for rid, status in seen.items():
        assert access[rid]["status"] == status
        assert access[rid]["service"] == "s3svc"
        assert "_aws" in access[rid]  # the shipped copy is the one CloudWatch turns into metrics
    printed = [x for x in stdout_lines(svc) if x.get("request_id") in seen]
    assert printed
    assert all("_aws" not in x for x in printed)  # so stdout's copy must not count again
    streams = await logs_client.describe_log_streams(logGroupName=log_group)
    (stream,) = streams["logStreams"]
    assert stream["logStreamName"].startswith("s3svc/")


async def test_sigterm_right_after_traffic_flushes(
    service_env: dict[str, str], log_group: str, logs_client: Any, tmp_path: Path
) -> None:
    """With a 5 s send interval, lines logged just before SIGTERM still reach CloudWatch."""
    env = dict(
        service_env,
        CLOUDWATCH_LOG_GROUP=log_group,
        CLOUDWATCH_SEND_INTERVAL="5",
        SHUTDOWN_GRACE_SECONDS="3",
    )
    svc = ServiceProcess("s3svc", env, tmp_path / "s3svc.log").start()
    try:
        seen = await traffic(svc.url, 5)
        svc.signal(signal.SIGTERM)
        # No hang: it exits by itself (grace 3 s + the bounded final flush), well inside 30 s.
        code = svc.wait(30)
    finally:
        svc.stop()
    assert code == 0
    lines = await log_lines(logs_client, log_group)
    assert set(seen) <= {x.get("request_id") for x in lines}
    assert any(x["event"] == "stopped" for x in lines)


@pytest.mark.parametrize("fault", ["reset", "stall"])
async def test_cloudwatch_unreachable_service_keeps_serving(
    service_env: dict[str, str],
    moto_url: str,
    bucket: str,
    log_group: str,
    tmp_path: Path,
    fault: str,
) -> None:
    """CloudWatch refusing or hanging: all requests answered, stdout has every line.

    When CloudWatch hangs, lines back up: the queue stays bounded and the excess is counted.
    """

    def cut_logs(call: Call) -> Fault | None:
        if not (call.target or "").startswith("Logs_"):
            return None
        return Fault(reset=True) if fault == "reset" else Fault(stall=True)

    async with fault_proxy(moto_url, cut_logs) as proxy:
        env = dict(
            service_env,
            AWS_ENDPOINT_URL=proxy.url,
            BUCKET_NAME=bucket,
            CLOUDWATCH_LOG_GROUP=log_group,
            CLOUDWATCH_SEND_INTERVAL="0.2",
            CLOUDWATCH_MAX_QUEUE="20",
            SHUTDOWN_GRACE_SECONDS="1",
            AWS_READ_TIMEOUT="3",
        )
        svc = ServiceProcess("s3svc", env, tmp_path / "s3svc.log").start()
        try:
            statuses = []
            # Load starts once the first CloudWatch call (creating the stream) is under way.
            deadline = time.monotonic() + 10
            while not any((c.target or "").startswith("Logs_") for c in proxy.calls):
                assert time.monotonic() < deadline, "no CloudWatch call reached the proxy"
                await asyncio.sleep(0.05)
            async with aiohttp.ClientSession() as session:
                for _ in range(300):
                    async with session.get(svc.url + "/health") as resp:
                        statuses.append(resp.status)
                form = aiohttp.FormData()
                form.add_field("file", b"still works", filename="a.txt")
                async with session.post(svc.url + "/s3/upload", data=form) as resp:
                    upload_status = resp.status
        finally:
            svc.stop()
    assert statuses == [200] * 300
    assert upload_status == 201
    lines = stdout_lines(svc)
    # 300 + the upload + the readiness poll of ServiceProcess.start()
    assert sum(1 for x in lines if x["event"] == "request") == 302
    (closed,) = [x for x in lines if x["event"] == "log_shipping_closed"]
    assert closed["in_time"] is True  # the final flush gives up on time instead of hanging
    if fault == "stall":
        assert closed["dropped"] > 0
        assert closed["undelivered"] > 0


async def test_missing_credentials_do_not_stop_the_service(
    service_env: dict[str, str], log_group: str, tmp_path: Path
) -> None:
    """No AWS credentials at all: the service starts, answers, and prints every line."""
    env = {
        k: v
        for k, v in service_env.items()
        if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
    }
    env.update(
        CLOUDWATCH_LOG_GROUP=log_group, CLOUDWATCH_SEND_INTERVAL="0.2", SHUTDOWN_GRACE_SECONDS="1"
    )
    svc = ServiceProcess("s3svc", env, tmp_path / "s3svc.log").start()
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(20):
                async with session.get(svc.url + "/health") as resp:
                    assert resp.status == 200
    finally:
        svc.stop()
    assert sum(1 for x in stdout_lines(svc) if x["event"] == "request") >= 20


@pytest.fixture
def ecs_metadata() -> Iterator[str]:
    """A stand-in for the ECS task metadata endpoint v4 (our parsing is what is under test)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(
                {"TaskARN": "arn:aws:ecs:us-east-1:123456789012:task/prod/0a1b2c3d"}
            ).encode()
            self.send_response(200 if self.path == "/v4/abc/task" else 404)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v4/abc"
    finally:
        server.shutdown()
        server.server_close()


def test_stream_name_from_ecs_task_id(ecs_metadata: str) -> None:
    """On ECS the stream is named after the task; elsewhere after host and pid."""
    import os

    assert (
        stream_name("s3svc", CloudWatchSettings("g", ecs_metadata_uri=ecs_metadata))
        == "s3svc/0a1b2c3d"
    )
    fallback = stream_name(
        "s3svc", CloudWatchSettings("g", ecs_metadata_uri=f"http://127.0.0.1:{free_port()}")
    )
    assert fallback.endswith(f"/{os.getpid()}")
    assert stream_name("s3svc", CloudWatchSettings("g", stream_name="fixed")) == "fixed"


async def test_both_services_ship_every_field_the_queries_read(
    service_env: dict[str, str],
    bucket: str,
    log_group: str,
    logs_client: Any,
    tmp_path: Path,
    moto_url: str,
) -> None:
    """Both services running against moto with one log group: their lines arrive as JSON with
    the request ids the callers saw, and together they emit every field the saved queries name."""
    from common.aws import open_client
    from common.config import AwsSettings
    from common.queries import QUERIES, fields_used

    async with open_client("sqs", AwsSettings(endpoint_url=moto_url)) as sqs:
        queue_url = (await sqs.create_queue(QueueName=f"cw-{time.monotonic_ns()}"))["QueueUrl"]
    env = dict(service_env, CLOUDWATCH_LOG_GROUP=log_group, CLOUDWATCH_SEND_INTERVAL="0.5")
    s3svc = ServiceProcess("s3svc", dict(env, BUCKET_NAME=bucket), tmp_path / "s3.log").start()
    sqssvc = ServiceProcess("sqssvc", dict(env, QUEUE_URL=queue_url), tmp_path / "sqs.log").start()
    seen: dict[str, int] = {}
    try:
        async with aiohttp.ClientSession() as session:
            form = aiohttp.FormData()
            form.add_field("file", b"hello", filename="h.txt")
            requests: list[tuple[str, str, dict[str, Any]]] = [
                ("POST", s3svc.url + "/s3/upload", {"data": form}),
                ("GET", s3svc.url + "/s3/missing", {}),
                ("POST", sqssvc.url + "/sqs/send", {"json": {"message": "hi"}}),
                ("POST", sqssvc.url + "/sqs/send", {"json": {"nope": 1}}),
            ]
            for i, (method, url, kwargs) in enumerate(requests):
                rid = f"both-{i}-{time.monotonic_ns()}"
                async with session.request(
                    method, url, headers={"X-Request-ID": rid}, **kwargs
                ) as resp:
                    assert resp.headers["X-Request-ID"] == rid
                    seen[rid] = resp.status
        lines = await wait_for_lines(logs_client, log_group, set(seen))
        # batch_sent lines carry no request id: wait for one too.
        deadline = time.monotonic() + 20
        while not any(x["event"] == "batch_sent" for x in lines):
            assert time.monotonic() < deadline, "no batch_sent line in CloudWatch"
            await asyncio.sleep(0.3)
            lines = await log_lines(logs_client, log_group)
    finally:
        s3svc.stop()
        sqssvc.stop()
    access = {
        x["request_id"]: x for x in lines if x["event"] == "request" and x.get("request_id") in seen
    }
    assert {rid: a["status"] for rid, a in access.items()} == seen
    assert {a["service"] for a in access.values()} == {"s3svc", "sqssvc"}
    emitted = {key for line in lines for key in line}
    wanted = set().union(*(fields_used(q.text) for q in QUERIES.values()))
    assert wanted <= emitted, wanted - emitted
