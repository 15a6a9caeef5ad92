"""sqssvc batching benchmark: SQS_MAX_BATCH=10 versus SQS_MAX_BATCH=1, one run, one moto server.

Setup, all on 127.0.0.1:

- moto runs as its own process (``python -m moto.server``), so its CPU shares a GIL with nothing.
- Between each sqssvc and moto sits a proxy (``tests.faultproxy.FaultProxy``, in this process)
  that holds every AWS call for ``--latency`` (15 ms) before forwarding it, modelling an
  in-region SQS round trip, and counts the calls.
- Two ``python -m sqssvc`` processes, one after the other, with ``SQS_MAX_BATCH=10`` and ``=1``
  and otherwise default settings (``SQS_MAX_IN_FLIGHT=4``, info-level access log).
- Phases at concurrency 1, 8 and 64: that many clients, each POSTing ``/sqs/send`` in a loop
  (a small JSON message); ``--warmup`` seconds unrecorded, then ``--duration`` seconds measured.
- The queue is purged before each phase and every ``--purge-every`` seconds during it (directly
  on moto, uncounted): moto rescans every stored message on each send, so a growing queue would
  make moto, not sqssvc, the thing measured.

Reported per phase: messages/s, client-side p50/p99 latency, SendMessageBatch calls per 1,000
messages, and the CPU of each process (% of one core); per service its peak RSS (VmHWM). Targets
(issue #3): at concurrency 64 batched ≥ 5 times unbatched msgs/s and ≤ 120 calls per 1,000 messages;
at concurrency 1 batched p50 ≤ unbatched p50 + 2 ms. Targets are reported as met or missed;
the exit status is 0 either way unless ``--strict`` (speed is measured, not asserted).

Run from the repository root: ``make bench`` or ``.venv/bin/python bench/sqs.py --help``.
The results replace the ``## sqssvc batching`` section of ``bench/RESULTS.md`` (``--no-write``
to only print them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# ``python bench/sqs.py`` puts bench/ (not the repository root) on sys.path; add the root so the
# project's packages and the test helpers import.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from bench.results import add_no_write, command_line, measured_line, publish  # noqa: E402
from common.aws import open_client  # noqa: E402
from common.config import AwsSettings  # noqa: E402
from tests.faultproxy import Call, Fault, FaultProxy  # noqa: E402
from tests.procs import ServiceProcess, free_port, rss_kib  # noqa: E402

REGION = "us-east-1"
QUEUE = "bench-sqssvc"
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
SEND_BATCH = "AmazonSQS.SendMessageBatch"
BATCH_SIZES = (10, 1)
CONCURRENCY = (1, 8, 64)
TARGET_RATIO = 5.0
TARGET_CALLS_PER_1000 = 120.0
TARGET_P50_SLACK_MS = 2.0
SECTION = "## sqssvc batching"
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Phase:
    """One measured phase: a service setting at one concurrency."""

    batch: int
    concurrency: int
    messages: int = 0
    errors: int = 0
    seconds: float = 0.0
    calls: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # % of one core per process

    @property
    def rate(self) -> float:
        """Messages acknowledged per second."""
        return self.messages / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        """A latency percentile in ms."""
        data = sorted(self.latencies_ms)
        if not data:
            return float("nan")
        return data[min(len(data) - 1, round(q / 100 * (len(data) - 1)))]

    @property
    def calls_per_1000(self) -> float:
        """SendMessageBatch calls per 1,000 acknowledged messages."""
        return self.calls / self.messages * 1000 if self.messages else float("nan")


def proc_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def machine_ticks() -> int:
    """Busy ticks of the whole machine (all CPUs; idle and iowait excluded)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(values) - values[3] - values[4]


class CpuMeter:
    """CPU used by named processes, and by everything else, between start() and stop()."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._start: dict[str, int] = {}
        self._t0 = 0.0

    def start(self) -> None:
        """Take the first sample."""
        self._start = {n: proc_ticks(p) for n, p in self.pids.items()}
        self._start["machine"] = machine_ticks()
        self._t0 = time.monotonic()

    def stop(self) -> dict[str, float]:
        """% of one core per process since start(), and ``others`` for the rest of the machine."""
        elapsed = time.monotonic() - self._t0
        used = {n: proc_ticks(p) - self._start[n] for n, p in self.pids.items()}
        total = machine_ticks() - self._start["machine"]
        out = {n: t / TICKS / elapsed * 100 for n, t in used.items()}
        out["others"] = max(0, total - sum(used.values())) / TICKS / elapsed * 100
        return out


def base_env(workdir: Path) -> dict[str, str]:
    """This environment without the developer's AWS settings, with credentials moto accepts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    empty = workdir / "aws-empty"
    empty.touch()
    env.update(FAKE_CREDENTIALS, AWS_CONFIG_FILE=str(empty), AWS_SHARED_CREDENTIALS_FILE=str(empty))
    return env


def start_http(
    argv: list[str], port: int, env: dict[str, str], log: Path, probe: str, name: str
) -> tuple[subprocess.Popen[bytes], str]:
    """Run ``argv`` (an HTTP server on ``port``) as its own process; return it and its URL once
    ``probe`` answers."""
    proc = subprocess.Popen(argv, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + probe, timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise TimeoutError(f"{name} did not start")


def start_moto(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """moto as its own process; returns it and its URL once it answers."""
    port = free_port()
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    return start_http(argv, port, env, log, "/moto-api/", "moto")


async def wait_quiet(limit_pct: float, max_wait: float) -> float:
    """Wait (at most ``max_wait`` s) until the machine uses < ``limit_pct`` of a core; seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < max_wait:
        before = machine_ticks()
        await asyncio.sleep(0.5)
        if (machine_ticks() - before) / TICKS / 0.5 * 100 < limit_pct:
            break
    return time.monotonic() - t0


async def purge_loop(sqs: Any, queue_url: str, every: float, stop: asyncio.Event) -> None:
    """Keep moto's queue short while a phase runs."""
    while not stop.is_set():
        await sqs.purge_queue(QueueUrl=queue_url)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


async def run_phase(
    phase: Phase,
    url: str,
    proxy: FaultProxy,
    meter: CpuMeter,
    warmup: float,
    duration: float,
) -> None:
    """``phase.concurrency`` clients send in a loop; record the window after the warm-up."""
    t_start = time.perf_counter()
    t_measure = t_start + warmup
    t_end = t_measure + duration
    calls_at: dict[str, int] = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client(n: int) -> None:
            i = 0
            while True:
                started = time.perf_counter()
                if started >= t_end:
                    return
                payload = {"message": {"client": n, "seq": i, "note": "benchmark order event"}}
                i += 1
                async with session.post(url, json=payload) as r:
                    await r.read()
                    ok = r.status == 200
                done = time.perf_counter()
                if started >= t_measure and done <= t_end:
                    if ok:
                        phase.messages += 1
                        phase.latencies_ms.append((done - started) * 1000)
                    else:
                        phase.errors += 1

        async def marks() -> None:
            await asyncio.sleep(max(0.0, t_measure - time.perf_counter()))
            calls_at["start"] = sum(c.target == SEND_BATCH for c in proxy.calls)
            meter.start()
            await asyncio.sleep(max(0.0, t_end - time.perf_counter()))
            calls_at["end"] = sum(c.target == SEND_BATCH for c in proxy.calls)
            phase.cpu = meter.stop()

        await asyncio.gather(marks(), *(client(n) for n in range(phase.concurrency)))
    phase.seconds = duration
    phase.calls = calls_at["end"] - calls_at["start"]


def report(phases: list[Phase], rss: dict[int, int], args: argparse.Namespace) -> tuple[str, bool]:
    """The Markdown tables and whether every target was met."""
    by = {(p.batch, p.concurrency): p for p in phases}
    lines = [
        f"Clients POST `/sqs/send` in a loop; every AWS call held {args.latency * 1000:.0f} ms by "
        f"a proxy; {args.warmup:g} s warm-up then {args.duration:g} s measured per phase; queue "
        f"purged before and every {args.purge_every:g} s during each phase; sqssvc defaults "
        "otherwise (SQS_MAX_IN_FLIGHT=4, info access log). CPU = % of one core (bench = "
        "clients + proxy; others = the rest of the machine).",
        "",
        "| SQS_MAX_BATCH | concurrency | msgs/s | p50 ms | p99 ms | SendMessageBatch calls "
        "| calls / 1,000 msgs | errors | CPU sqssvc | CPU moto | CPU bench | CPU others |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in phases:
        lines.append(
            f"| {p.batch} | {p.concurrency} | {p.rate:.0f} | {p.pct(50):.1f} | {p.pct(99):.1f} | "
            f"{p.calls} | {p.calls_per_1000:.0f} | {p.errors} | {p.cpu.get('sqssvc', 0):.0f}% | "
            f"{p.cpu.get('moto', 0):.0f}% | {p.cpu.get('bench', 0):.0f}% | "
            f"{p.cpu.get('others', 0):.0f}% |"
        )
    b64, u64 = by[(10, 64)], by[(1, 64)]
    b1, u1 = by[(10, 1)], by[(1, 1)]
    ratio = b64.rate / u64.rate if u64.rate else float("inf")
    checks = [
        (
            "concurrency 64: batched / unbatched msgs/s",
            f"{ratio:.1f}x",
            f"≥ {TARGET_RATIO:g}x",
            ratio >= TARGET_RATIO,
        ),
        (
            "concurrency 64: batched calls per 1,000 msgs",
            f"{b64.calls_per_1000:.0f}",
            f"≤ {TARGET_CALLS_PER_1000:g}",
            b64.calls_per_1000 <= TARGET_CALLS_PER_1000,
        ),
        (
            "concurrency 1: batched p50 vs unbatched p50",
            f"{b1.pct(50):.1f} vs {u1.pct(50):.1f} ms",
            f"≤ unbatched + {TARGET_P50_SLACK_MS:g} ms",
            b1.pct(50) <= u1.pct(50) + TARGET_P50_SLACK_MS,
        ),
    ]
    lines += ["", "| target | measured | goal | met |", "| --- | ---: | ---: | :---: |"]
    lines += [
        f"| {name} | {got} | {goal} | {'yes' if ok else 'NO'} |" for name, got, goal, ok in checks
    ]
    lines += [
        "",
        "Peak RSS (VmHWM) of sqssvc over its three phases: "
        + ", ".join(f"SQS_MAX_BATCH={b}: {kib / 1024:.1f} MiB" for b, kib in rss.items())
        + ".",
    ]
    return "\n".join(lines), all(ok for *_, ok in checks)


async def run(args: argparse.Namespace, workdir: Path) -> tuple[str, bool]:
    """Start moto, the proxy and each sqssvc in turn; run every phase; return the report."""
    env = base_env(workdir)
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    # PurgeQueue's once-a-minute rule would stop the purger that keeps moto's queue short.
    moto_env = dict(env, MOTO_SQS_ENFORCE_STRICT_QUEUE_PURGE_BEHAVIOUR="false")
    moto, moto_url = start_moto(moto_env, workdir / "moto.log")
    latency = args.latency

    def hold(call: Call) -> Fault | None:
        return Fault(delay=latency)

    proxy = FaultProxy(upstream=moto_url, rule=hold)
    await proxy.start()
    phases: list[Phase] = []
    rss: dict[int, int] = {}
    try:
        async with open_client("sqs", AwsSettings(region=REGION, endpoint_url=moto_url)) as sqs:
            queue_url = (await sqs.create_queue(QueueName=QUEUE))["QueueUrl"]
            for batch in BATCH_SIZES:
                svc_env = dict(
                    env,
                    QUEUE_URL=queue_url,
                    AWS_ENDPOINT_URL=proxy.url,
                    AWS_REGION=REGION,
                    SQS_MAX_BATCH=str(batch),
                    LOG_LEVEL="info",
                )
                svc = ServiceProcess("sqssvc", svc_env, workdir / f"sqssvc-{batch}.log")
                await asyncio.to_thread(svc.start)
                assert svc.proc is not None
                meter = CpuMeter({"sqssvc": svc.proc.pid, "moto": moto.pid, "bench": os.getpid()})
                try:
                    for concurrency in CONCURRENCY:
                        await sqs.purge_queue(QueueUrl=queue_url)
                        waited = await wait_quiet(args.quiet_pct, args.quiet_wait)
                        phase = Phase(batch, concurrency)
                        stop = asyncio.Event()
                        purger = asyncio.create_task(
                            purge_loop(sqs, queue_url, args.purge_every, stop)
                        )
                        try:
                            await run_phase(
                                phase,
                                svc.url + "/sqs/send",
                                proxy,
                                meter,
                                args.warmup,
                                args.duration,
                            )
                        finally:
                            stop.set()
                            await purger
                        phases.append(phase)
                        print(
                            f"batch={batch:2} c={concurrency:2}: {phase.rate:7.0f} msgs/s "
                            f"p50 {phase.pct(50):6.1f} ms p99 {phase.pct(99):6.1f} ms "
                            f"calls/1000 {phase.calls_per_1000:5.0f} errors {phase.errors} "
                            f"(waited {waited:.0f} s for quiet)",
                            file=sys.stderr,
                        )
                    rss[batch] = rss_kib(svc.proc.pid, "VmHWM")
                finally:
                    svc.stop()
            await sqs.delete_queue(QueueUrl=queue_url)
    finally:
        await proxy.stop()
        moto.terminate()
        moto.wait(10)
    return report(phases, rss, args)


def main(argv: list[str] | None = None) -> int:
    """Parse flags, run, print the Markdown report and record it in RESULTS.md."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per phase (5)")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per phase (1)")
    p.add_argument("--latency", type=float, default=0.015, help="added per AWS call, s (0.015)")
    p.add_argument(
        "--purge-every", type=float, default=0.01, help="purge interval during a phase, s (0.01)"
    )
    p.add_argument(
        "--quiet-pct", type=float, default=30.0, help="'quiet' = machine below this %% of a core"
    )
    p.add_argument(
        "--quiet-wait", type=float, default=10.0, help="max seconds to wait for quiet per phase"
    )
    add_no_write(p)
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args(argv)
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        pass
    with (
        tempfile.TemporaryDirectory(prefix="sqssvc-bench-") as tmp,
        asyncio.Runner(loop_factory=loop_factory) as runner,
    ):
        table, met = runner.run(run(args, Path(tmp)))
    body = f"{measured_line(command_line('sqs.py', argv))}.\n\n{table}"
    publish(SECTION, body, write=args.write)
    return 0 if met or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
