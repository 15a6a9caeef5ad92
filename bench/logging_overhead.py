"""Logging and metrics overhead: requests/s of ``/health`` and ``/sqs/send`` with logging off and on.

One run, one moto server, up to five ``python -m sqssvc`` processes that differ only in their
logging settings, all alive for the whole run:

- ``off``: ``LOG_LEVEL=warning METRICS_ENABLED=false``: no access line, no ``batch_sent`` line, no
  EMF (the middleware asks the logger first and skips building the line);
- ``stdout``: the defaults: one JSON access line per request with its EMF fields, and a
  ``batch_sent`` line per SendMessageBatch call;
- ``stdout+cw``: the defaults plus ``CLOUDWATCH_LOG_GROUP``: every line also goes through watchtower
  (its own thread, default ``CLOUDWATCH_SEND_INTERVAL``) to moto's CloudWatch Logs;
- ``cw``: production's setting, ``CLOUDWATCH_LOG_GROUP`` + ``STDOUT_LOG_LEVEL=warning``: every line
  shipped, none of the info lines on stdout (one ingestion path);
- ``stdout+cw-stand-in`` (``/health`` only): the same, but ``AWS_ENDPOINT_URL`` is a stand-in
  (this script, ``stand-in`` mode, its own process) that reads each request body, counts its
  events and answers ``{}``: our copy's cost without moto's ingest, which on this 2-core machine
  competes with the service and the load generator for the same cores.

Each service's stdout (and stderr) goes to a regular file on disk, as a container log driver would
consume it: not a pipe, not /dev/null. Both endpoints are served by the same process: ``/health``
needs no AWS call; ``/sqs/send`` waits for SendMessageBatch on moto (no latency added; moto runs
as its own process on the same 2 cores). moto rescans its whole queue on every send, so the queue
is purged every ``--purge-every`` seconds while ``/sqs/send`` is loaded.

The load generator is a separate process (this script, ``worker`` mode): ``--concurrency`` aiohttp
clients on keep-alive connections, each sending its next request when the last one answered;
``--warmup`` seconds unrecorded, then ``--duration`` seconds measured. Throughput counts responses
completed in the window; latency is client-side. Phases run round by round, the order of the
settings reversed every other round, and the median of the rounds is reported; a ratio is the
median over rounds of ``on`` requests/s over ``off`` requests/s of the same round: paired by
round, because moto's speed drifts over a run. Targets (issue #12): service CPU per access line
(``/health``'s CPU per request with the line, minus without) ≤ 15 µs on stdout and ≤ 30 µs with
stdout + CloudWatch; ``/sqs/send`` requests/s with logging and CloudWatch on ≥ 0.9 of off. The
``/health`` req/s ratio is reported, not targeted. Also reported
per phase: the CPU of the service (% of one core, and CPU time per request, which does not depend
on who the bottleneck was), of moto and of the load generator, and the service's peak RSS (VmHWM,
reset through ``/proc/PID/clear_refs`` before each phase).

Speed is measured, never asserted: the exit status is 0 whether targets are met or missed.
Run from the repository root: ``.venv/bin/python bench/logging_overhead.py`` (``--help``); the
results replace the ``## Logging and metrics overhead`` section of ``bench/RESULTS.md``
(``--no-write`` to only print them), keeping its hand-written ``(by hand ...)`` subsections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# ``python bench/logging_overhead.py`` puts bench/ (not the repository root) on sys.path; add the
# root so the project's packages, the test helpers and bench.sqs import.
SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from bench.results import add_no_write, command_line, measured_line, publish  # noqa: E402
from bench.sqs import (  # noqa: E402
    CpuMeter,
    base_env,
    purge_loop,
    start_http,
    start_moto,
    wait_quiet,
)
from common.aws import open_client  # noqa: E402
from common.config import AwsSettings  # noqa: E402
from tests.procs import ServiceProcess, free_port, rss_kib  # noqa: E402

REGION = "us-east-1"
QUEUE = "bench-logging-overhead"
LOG_GROUP = "/bench/logging-overhead"
SECTION = "## Logging and metrics overhead"
# A hand-written subsection of ours that a new run keeps (it is not generated from the numbers).
# Issue #12's targets: service CPU per access line (µs), and /sqs/send req/s on / off.
LINE_CPU_TARGETS = {"stdout": 15.0, "stdout+cw": 30.0}
SEND_RATIO_TARGET = 0.9
# Below this much of a core, the service was not what limited a phase's req/s.
SATURATED = 95.0
SEND_BODY = json.dumps({"message": {"client": 7, "seq": 1, "note": "benchmark order event"}})


@dataclass(frozen=True)
class Setting:
    """One logging configuration of the service."""

    name: str
    label: str
    env: dict[str, str]
    # Its AWS endpoint is the CloudWatch stand-in, not moto: only for endpoints that need no
    # other AWS service.
    stand_in: bool = False
    # Measured for the target (a diagnostic setting is not).
    target: bool = True


SETTINGS = (
    Setting(
        "off",
        "no access line, no EMF: `LOG_LEVEL=warning METRICS_ENABLED=false`",
        {"LOG_LEVEL": "warning", "METRICS_ENABLED": "false"},
    ),
    Setting(
        "stdout",
        "the defaults: one JSON access line with EMF fields per request on stdout (and a "
        "`batch_sent` line per SendMessageBatch call)",
        {},
    ),
    Setting(
        "stdout+cw",
        "the defaults + `CLOUDWATCH_LOG_GROUP`: every line also shipped by watchtower to moto's "
        "CloudWatch Logs (`CLOUDWATCH_SEND_INTERVAL` default: 2 s); EMF on the CloudWatch copy",
        {"CLOUDWATCH_LOG_GROUP": LOG_GROUP},
    ),
    Setting(
        "cw",
        "production: `CLOUDWATCH_LOG_GROUP` + `STDOUT_LOG_LEVEL=warning`: every line shipped by "
        "watchtower with its EMF, no info line on stdout (one ingestion path; the stack's setting)",
        {"CLOUDWATCH_LOG_GROUP": LOG_GROUP, "STDOUT_LOG_LEVEL": "warning"},
        target=False,
    ),
    Setting(
        "stdout+cw-stand-in",
        "as `stdout+cw`, but CloudWatch Logs is a stand-in (its own process) that reads each "
        "PutLogEvents body, counts its events and answers `{}`: our copy's cost without moto's "
        "ingest (`/health` only: the stand-in speaks no SQS; a diagnostic, not a target)",
        {"CLOUDWATCH_LOG_GROUP": LOG_GROUP},
        stand_in=True,
        target=False,
    ),
)


@dataclass(frozen=True)
class Endpoint:
    """What the load generator requests."""

    name: str
    method: str
    path: str
    body: str | None
    # Served without any AWS call (so the CloudWatch stand-in can be its only AWS endpoint).
    local: bool = False


ENDPOINTS = (
    Endpoint("/health", "GET", "/health", None, local=True),
    Endpoint("/sqs/send", "POST", "/sqs/send", SEND_BODY),
)


@dataclass
class Phase:
    """One measured window: one endpoint against one setting, in one round."""

    endpoint: str
    setting: str
    round: int
    ok: int = 0
    errors: int = 0
    seconds: float = 0.0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    cpu: dict[str, float] = field(default_factory=dict)  # % of one core per process
    peak_rss_kib: int = 0
    quiet: bool = True  # the machine was quiet before the phase started

    @property
    def rate(self) -> float:
        """Successful requests per second."""
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def service_cpu_us(self) -> float:
        """Service CPU time per successful request, in µs."""
        if not self.ok:
            return float("nan")
        return self.cpu.get("service", 0.0) / 100 * self.seconds / self.ok * 1e6


# ---------------------------------------------------------------------------------------------
# The load generator (its own process)


def percentile(sorted_data: list[float], q: float) -> float:
    """The ``q``th percentile (nearest rank) of already sorted data."""
    if not sorted_data:
        return float("nan")
    return sorted_data[min(len(sorted_data) - 1, round(q / 100 * (len(sorted_data) - 1)))]


async def load(
    url: str, method: str, body: str | None, concurrency: int, warmup: float, duration: float
) -> dict[str, Any]:
    """Closed-loop load; prints ``measure`` and ``end`` at the window's edges, returns a summary."""
    data = body.encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if body is not None else {}
    latencies: list[float] = []
    counts = {"ok": 0, "errors": 0}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def connect() -> None:
            async with session.request(method, url, data=data, headers=headers) as r:
                await r.read()

        # Open every connection before the clock starts: a burst of connects can overflow the
        # listen queue, and a SYN retransmitted after 1 s would land in the measured window.
        await asyncio.gather(*(connect() for _ in range(concurrency)))
        t_measure = time.perf_counter() + warmup
        t_end = t_measure + duration

        async def client() -> None:
            while (started := time.perf_counter()) < t_end:
                try:
                    async with session.request(method, url, data=data, headers=headers) as r:
                        await r.read()
                        ok = r.status == 200
                except aiohttp.ClientError:
                    ok = False
                done = time.perf_counter()
                if t_measure <= done <= t_end:
                    if ok:
                        counts["ok"] += 1
                        latencies.append((done - started) * 1000)
                    else:
                        counts["errors"] += 1

        async def marks() -> None:
            await asyncio.sleep(max(0.0, t_measure - time.perf_counter()))
            print("measure", flush=True)
            await asyncio.sleep(max(0.0, t_end - time.perf_counter()))
            print("end", flush=True)

        await asyncio.gather(marks(), *(client() for _ in range(concurrency)))
    latencies.sort()
    return {
        "ok": counts["ok"],
        "errors": counts["errors"],
        "seconds": duration,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
    }


def worker_main(argv: list[str]) -> int:
    """``worker`` mode: run one load window and print its summary as the last line (JSON)."""
    p = argparse.ArgumentParser(prog="logging_overhead.py worker")
    p.add_argument("--url", required=True)
    p.add_argument("--method", default="GET")
    p.add_argument("--body")
    p.add_argument("--concurrency", type=int, required=True)
    p.add_argument("--warmup", type=float, required=True)
    p.add_argument("--duration", type=float, required=True)
    a = p.parse_args(argv)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        summary = runner.run(load(a.url, a.method, a.body, a.concurrency, a.warmup, a.duration))
    print(json.dumps(summary), flush=True)
    return 0


# ---------------------------------------------------------------------------------------------
# The CloudWatch Logs stand-in (its own process)


def stand_in_main(argv: list[str]) -> int:
    """``stand-in`` mode: answer every AWS request with ``{}`` after reading its body; ``GET
    /events`` tells how many log events the PutLogEvents bodies held."""
    from aiohttp import web

    p = argparse.ArgumentParser(prog="logging_overhead.py stand-in")
    p.add_argument("--port", type=int, required=True)
    a = p.parse_args(argv)
    events = 0

    async def any_call(request: web.Request) -> web.Response:
        nonlocal events
        body = await request.read()
        if request.headers.get("X-Amz-Target", "").endswith(".PutLogEvents"):
            # Every event has exactly one "timestamp" key; counting is cheap, parsing is not.
            events += body.count(b'"timestamp":')
        return web.Response(body=b"{}", content_type="application/x-amz-json-1.1")

    async def count(_: web.Request) -> web.Response:
        return web.json_response({"events": events})

    app = web.Application(client_max_size=8 * 1024**2)
    app.router.add_get("/events", count)
    app.router.add_route("*", "/{tail:.*}", any_call)
    web.run_app(app, host="127.0.0.1", port=a.port, print=None, access_log=None)
    return 0


def start_stand_in(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The stand-in as its own process; returns it and its URL once it answers."""
    port = free_port()
    argv = [sys.executable, str(SCRIPT), "stand-in", f"--port={port}"]
    return start_http(argv, port, env, log, "/events", "the stand-in")


def stand_in_events(url: str) -> int:
    """Log events the stand-in received so far."""
    with urllib.request.urlopen(url + "/events", timeout=5) as resp:
        return int(json.load(resp)["events"])


# ---------------------------------------------------------------------------------------------
# The orchestrator


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's loop when available (the services use it too), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def reset_peak_rss(pid: int) -> bool:
    """Reset ``pid``'s VmHWM to its current RSS (Linux ``clear_refs`` 5); False if refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


async def run_phase(
    phase: Phase,
    svc: ServiceProcess,
    endpoint: Endpoint,
    aws_pid: int,
    args: argparse.Namespace,
) -> None:
    """Start a load worker against ``svc``; meter CPU over its measuring window; fill ``phase``."""
    assert svc.proc is not None
    pid = svc.proc.pid
    cmd = [
        sys.executable,
        str(SCRIPT),
        "worker",
        f"--url={svc.url}{endpoint.path}",
        f"--method={endpoint.method}",
        f"--concurrency={args.concurrency}",
        f"--warmup={args.warmup}",
        f"--duration={args.duration}",
    ]
    if endpoint.body is not None:
        cmd.append(f"--body={endpoint.body}")
    reset_peak_rss(pid)
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    meter = CpuMeter({"service": pid, "aws": aws_pid, "load": proc.pid, "bench": os.getpid()})
    summary: dict[str, Any] = {}
    async for raw in proc.stdout:
        line = raw.decode().strip()
        if line == "measure":
            meter.start()
        elif line == "end":
            phase.cpu = meter.stop()
        elif line.startswith("{"):
            summary = json.loads(line)
    if await proc.wait() != 0 or not summary:
        raise RuntimeError(f"load worker failed (exit {proc.returncode})")
    phase.ok = int(summary["ok"])
    phase.errors = int(summary["errors"])
    phase.seconds = float(summary["seconds"])
    phase.p50_ms = float(summary["p50_ms"])
    phase.p99_ms = float(summary["p99_ms"])
    phase.peak_rss_kib = rss_kib(pid, "VmHWM")


@dataclass
class Shipping:
    """What a service's stdout file says about its logging, read after it stopped."""

    lines: int = 0
    access_lines: int = 0
    bytes: int = 0
    closed: dict[str, Any] | None = None  # the log_shipping_closed line, with CloudWatch


def read_stdout(path: Path) -> Shipping:
    """Count the lines a service wrote and find its ``log_shipping_closed`` line."""
    out = Shipping(bytes=path.stat().st_size)
    with path.open("rb") as f:
        for raw in f:
            out.lines += 1
            if b'"event":"request"' in raw:
                out.access_lines += 1
            elif b'"event":"log_shipping_closed"' in raw:
                out.closed = json.loads(raw)
    return out


async def cloudwatch_events(logs: Any, group: str) -> int:
    """Events stored in ``group`` (moto), all streams."""
    total = 0
    streams = await logs.describe_log_streams(logGroupName=group)
    for s in streams.get("logStreams", []):
        token: str | None = None
        while True:
            kw: dict[str, Any] = {"nextToken": token} if token else {}
            page = await logs.get_log_events(
                logGroupName=group,
                logStreamName=s["logStreamName"],
                startFromHead=True,
                limit=10000,
                **kw,
            )
            total += len(page["events"])
            if not page["events"] or page.get("nextForwardToken") == token:
                break
            token = page.get("nextForwardToken")
    return total


def selected(args: argparse.Namespace) -> list[Endpoint]:
    """The endpoints to load: ``--endpoint`` flags, else all."""
    return [e for e in ENDPOINTS if not args.endpoint or e.name in args.endpoint]


def settings_for(endpoint: Endpoint) -> tuple[Setting, ...]:
    """The settings measured for ``endpoint``: the stand-in ones only where no AWS call is made."""
    return tuple(s for s in SETTINGS if endpoint.local or not s.stand_in)


def order(endpoint: Endpoint, round_no: int) -> tuple[Setting, ...]:
    """Setting order of a round: as listed in even rounds, reversed in odd ones."""
    settings = settings_for(endpoint)
    return settings if round_no % 2 == 0 else tuple(reversed(settings))


async def run(
    args: argparse.Namespace, workdir: Path
) -> tuple[list[Phase], dict[str, Shipping], dict[str, int]]:
    """Start moto, the stand-in and the services, run every phase; the phases, stdout facts and
    the log events that reached moto and the stand-in."""
    env = base_env(workdir)
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    # PurgeQueue's once-a-minute rule would stop the purger that keeps moto's queue short.
    moto_env = dict(env, MOTO_SQS_ENFORCE_STRICT_QUEUE_PURGE_BEHAVIOUR="false")
    moto, moto_url = start_moto(moto_env, workdir / "moto.log")
    stand_in: subprocess.Popen[bytes] | None = None
    stand_in_url = ""
    phases: list[Phase] = []
    shipping: dict[str, Shipping] = {}
    events: dict[str, int] = {}
    services: dict[str, ServiceProcess] = {}
    aws = AwsSettings(region=REGION, endpoint_url=moto_url)
    wanted = {s.name: s for e in selected(args) for s in settings_for(e)}
    try:
        if any(s.stand_in for s in wanted.values()):
            stand_in, stand_in_url = start_stand_in(env, workdir / "stand-in.log")
        async with open_client("sqs", aws) as sqs, open_client("logs", aws) as logs:
            queue_url = (await sqs.create_queue(QueueName=QUEUE))["QueueUrl"]
            await logs.create_log_group(logGroupName=LOG_GROUP)
            for s in wanted.values():
                endpoint_url = stand_in_url if s.stand_in else moto_url
                svc_env = dict(
                    env, QUEUE_URL=queue_url, AWS_ENDPOINT_URL=endpoint_url, AWS_REGION=REGION
                )
                svc_env.update(s.env)
                svc = ServiceProcess("sqssvc", svc_env, workdir / f"sqssvc-{s.name}.log")
                services[s.name] = svc
                await asyncio.to_thread(svc.start)
            for round_no in range(args.rounds):
                for endpoint in selected(args):
                    for s in order(endpoint, round_no):
                        await sqs.purge_queue(QueueUrl=queue_url)
                        waited = await wait_quiet(args.quiet_pct, args.quiet_wait)
                        phase = Phase(endpoint.name, s.name, round_no)
                        phase.quiet = waited < args.quiet_wait
                        stop = asyncio.Event()
                        purger = None
                        if endpoint.body is not None:
                            purger = asyncio.create_task(
                                purge_loop(sqs, queue_url, args.purge_every, stop)
                            )
                        aws_pid = stand_in.pid if s.stand_in and stand_in else moto.pid
                        try:
                            await run_phase(phase, services[s.name], endpoint, aws_pid, args)
                        finally:
                            stop.set()
                            if purger is not None:
                                await purger
                        phases.append(phase)
                        print(
                            f"round {round_no + 1} {endpoint.name:10} {s.name:18}: "
                            f"{phase.rate:6.0f} req/s p50 {phase.p50_ms:5.1f} ms "
                            f"p99 {phase.p99_ms:5.1f} ms CPU service "
                            f"{phase.cpu.get('service', 0):3.0f}% load "
                            f"{phase.cpu.get('load', 0):3.0f}% aws {phase.cpu.get('aws', 0):3.0f}% "
                            f"({phase.service_cpu_us:4.0f} µs/req) errors {phase.errors} "
                            f"(waited {waited:.1f} s for quiet)",
                            file=sys.stderr,
                        )
            for name, svc in services.items():
                await asyncio.to_thread(svc.stop)
                shipping[name] = read_stdout(svc.log_path)
            with contextlib.suppress(Exception):
                events["moto"] = await cloudwatch_events(logs, LOG_GROUP)
            if stand_in is not None:
                with contextlib.suppress(Exception):
                    events["the stand-in"] = await asyncio.to_thread(stand_in_events, stand_in_url)
            await sqs.delete_queue(QueueUrl=queue_url)
    finally:
        for svc in services.values():
            svc.stop()
        for proc in (moto, stand_in):
            if proc is not None:
                proc.terminate()
                proc.wait(10)
    return phases, shipping, events


# ---------------------------------------------------------------------------------------------
# The report


def median(values: list[float]) -> float:
    """Median, NaN for no values."""
    return statistics.median(values) if values else float("nan")


def report(
    phases: list[Phase],
    shipping: dict[str, Shipping],
    events: dict[str, int],
    args: argparse.Namespace,
) -> tuple[str, list[tuple[str, str, str, bool]]]:
    """The Markdown tables, and per (endpoint, on-setting) the ratio and whether it met the target."""
    lines = [
        f"Up to five `python -m sqssvc` processes, alive for the whole run, differ only in "
        f"logging; "
        f"each one's stdout goes to a regular file on disk (not /dev/null: writing a line is part "
        f"of its cost). "
        f"A separate load process runs {args.concurrency} aiohttp clients on keep-alive "
        f"connections, closed loop; {args.warmup:g} s warm-up then {args.duration:g} s measured "
        f"per phase; {args.rounds} rounds, the setting order reversed every other round; "
        f"medians of the rounds. `/sqs/send` posts a small JSON message; SendMessageBatch goes "
        f"to moto (its own process, no added latency), the queue purged every "
        f"{args.purge_every:g} s. CPU = % of one core over the window (others: the rest of the "
        f"machine, i.e. the idle services, kernel network work and anything else running); "
        f"CPU AWS = moto's, or the stand-in's in the stand-in's phases; "
        f"CPU/req = service CPU "
        f"time per request; peak RSS = the service's VmHWM, reset before each phase (max over "
        f"rounds). Ratio = median over rounds of (req/s of the setting / req/s of `off` in the "
        f"same round), paired by round because moto's speed drifts over a run; per-round "
        f"ratios in brackets. `/health` is `common/app.py`'s, the same in both "
        f"services.",
        "",
        *[f"- `{s.name}`: {s.label}." for s in SETTINGS],
        "",
        "| endpoint | logging | req/s | ratio | p50 ms | p99 ms | CPU service "
        "| CPU/req µs | CPU load gen | CPU AWS | CPU others | peak RSS MiB | errors |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    checks: list[tuple[str, str, str, bool]] = []
    for endpoint in selected(args):
        base = [p for p in phases if p.endpoint == endpoint.name and p.setting == "off"]
        base_by_round = {p.round: p.rate for p in base}
        for s in settings_for(endpoint):
            ps = [p for p in phases if p.endpoint == endpoint.name and p.setting == s.name]
            rate = median([p.rate for p in ps])
            if s.name == "off":
                ratio_txt = "1"
            else:
                rounds = [p.rate / base_by_round[p.round] for p in ps if base_by_round.get(p.round)]
                ratio = median(rounds)
                per_round = ", ".join(f"{r:.2f}" for r in rounds)
                ratio_txt = f"**{ratio:.2f}** [{per_round}]"
                if s.target and endpoint.name == "/sqs/send":
                    checks.append(
                        (
                            f"`/sqs/send` req/s, {s.name} / off",
                            f"{ratio:.2f}",
                            f"≥ {SEND_RATIO_TARGET:g}",
                            ratio >= SEND_RATIO_TARGET,
                        )
                    )
            lines.append(
                f"| `{endpoint.name}` | {s.name} | {rate:.0f} | {ratio_txt} | "
                f"{median([p.p50_ms for p in ps]):.1f} | {median([p.p99_ms for p in ps]):.1f} | "
                f"{median([p.cpu.get('service', 0.0) for p in ps]):.0f}% | "
                f"{median([p.service_cpu_us for p in ps]):.0f} | "
                f"{median([p.cpu.get('load', 0.0) for p in ps]):.0f}% | "
                f"{median([p.cpu.get('aws', 0.0) for p in ps]):.0f}% | "
                f"{median([p.cpu.get('others', 0.0) for p in ps]):.0f}% | "
                f"{max(p.peak_rss_kib for p in ps) / 1024:.1f} | "
                f"{sum(p.errors for p in ps)} |"
            )
    costs: list[str] = []
    bottlenecks: list[str] = []
    for endpoint in selected(args):
        cpu = {
            s.name: median(
                [
                    p.service_cpu_us
                    for p in phases
                    if p.endpoint == endpoint.name and p.setting == s.name
                ]
            )
            for s in settings_for(endpoint)
        }
        cost = f"`{endpoint.name}` {cpu['off']:.0f} µs off; with logging " + ", ".join(
            f"{name} {cpu[name] - cpu['off']:+.1f} µs" for name in cpu if name != "off"
        )
        costs.append(cost)
        if endpoint.name == "/health":
            # One access line per request and nothing else: the difference is the line's cost.
            for name, goal in LINE_CPU_TARGETS.items():
                per_line = cpu[name] - cpu["off"]
                checks.append(
                    (
                        f"service CPU per access line, {name}",
                        f"{per_line:.1f} µs",
                        f"≤ {goal:g} µs",
                        per_line <= goal,
                    )
                )
        off_cpu = median(
            [
                p.cpu.get("service", 0.0)
                for p in phases
                if p.endpoint == endpoint.name and p.setting == "off"
            ]
        )
        if off_cpu < SATURATED:
            bottlenecks.append(f"{off_cpu:.0f}% of a core for `{endpoint.name}`")
    lines += [
        "",
        "Service CPU per request (medians; independent of which process was the bottleneck): "
        + "; ".join(costs)
        + ".",
        "",
        "| target (issue #12) | measured | goal | met |",
        "| --- | ---: | ---: | :---: |",
        *[
            f"| {what} | {got} | {goal} | {'yes' if ok else 'NO'} |"
            for what, got, goal, ok in checks
        ],
    ]
    if bottlenecks:
        lines += [
            "",
            "Bottleneck: in `off`, the service used "
            + " and ".join(bottlenecks)
            + ": another process (the load generator or the AWS endpoint, see their columns) set those "
            "req/s, so a req/s ratio there is higher than the matching ratio of service CPU "
            "per request.",
        ]
    noisy = sum(not p.quiet for p in phases)
    if noisy:
        lines += [
            "",
            f"**{noisy} of {len(phases)} phases started while the machine was busy** "
            f"(other processes above {args.quiet_pct:g}% of a core after "
            f"{args.quiet_wait:g} s of waiting); see the CPU others column.",
        ]
    facts = []
    for s in SETTINGS:
        sh = shipping.get(s.name)
        if sh is None:
            continue
        fact = (
            f"`{s.name}` wrote {sh.lines} stdout lines ({sh.bytes / 1024**2:.1f} MiB), "
            f"{sh.access_lines} of them access lines"
        )
        if sh.closed is not None:
            fact += (
                f"; its CloudWatch copy: {sh.closed.get('dropped')} dropped, "
                f"{sh.closed.get('undelivered')} undelivered at shutdown"
            )
        facts.append(fact)
    facts += [f"{where} received {n} log events of the group" for where, n in events.items()]
    if facts:
        lines += ["", "Whole run, warm-ups included: " + "; ".join(facts) + "."]
    return "\n".join(lines), checks


def main(argv: list[str] | None = None) -> int:
    """Parse flags, run, print the Markdown report and record it in RESULTS.md."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["worker"]:
        return worker_main(argv[1:])
    if argv[:1] == ["stand-in"]:
        return stand_in_main(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--concurrency", type=int, default=32, help="clients (32)")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per phase (5)")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per phase (1)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of all phases (3)")
    p.add_argument(
        "--purge-every", type=float, default=0.01, help="purge interval during /sqs/send, s (0.01)"
    )
    p.add_argument(
        "--quiet-pct", type=float, default=30.0, help="'quiet' = machine below this %% of a core"
    )
    p.add_argument(
        "--quiet-wait", type=float, default=5.0, help="max seconds to wait for quiet per phase"
    )
    p.add_argument(
        "--endpoint",
        action="append",
        choices=[e.name for e in ENDPOINTS],
        help="load only this endpoint (repeatable; default: all)",
    )
    add_no_write(p)
    args = p.parse_args(argv)
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="logging-bench-") as tmp,
        asyncio.Runner(loop_factory=loop_factory()) as runner,
    ):
        phases, shipping, events = runner.run(run(args, Path(tmp)))
    table, checks = report(phases, shipping, events, args)
    body = (
        f"{measured_line(command_line('logging_overhead.py', argv))} "
        f"({time.monotonic() - started:.0f} s).\n\n{table}"
    )
    publish(SECTION, body, write=args.write)
    for what, got, goal, ok in checks:
        print(f"{what}: {got}, target {goal}: {'met' if ok else 'MISSED'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
