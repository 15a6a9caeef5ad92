"""Upload memory benchmark: s3svc's memory above idle against the memory budget it had in use.

For each scenario a fresh ``python -m s3svc`` (its own process, fake credentials,
``AWS_ENDPOINT_URL`` at a moto server that also runs as its own process):

1. warms up with one request of two 64 KiB files (the first moves into a one-part multipart
   upload when the second begins, the second is a ``PutObject``), so code and botocore's models
   of every call are loaded, yet no part buffer was ever allocated (s3svc keeps those for
   reuse: a warm-up of a part or more would count them in idle), then records its idle memory:
   ``VmRSS`` (``/proc/<pid>/status``) and PSS (``/proc/<pid>/smaps_rollup``);
2. receives N concurrent uploads of the scenario's size, all started at once by an aiohttp
   client that streams each file (``multipart/form-data`` with a Content-Length, as ``curl -F``
   sends it) from a seeded pattern, never holding it whole. Each answer must be 201 (or 503
   busy, counted) with the file's size and SHA-256; after the measurement each stored object is
   read back and must have that size and SHA-256;
3. meanwhile a thread samples s3svc's RSS and PSS every ``--interval`` seconds (20 ms); the
   kernel's own RSS peak (``VmHWM``) is read at the end;
4. is stopped with SIGTERM, and the ``upload_memory`` line it logs at shutdown gives the memory
   budget's limit, its peak in use (the most it had reserved at once: small buffers byte by
   byte, part buffers a whole part at a time) and the peak of its part slots.

Objects are deleted after each scenario (moto keeps them in memory). The figure of merit is
peak RSS above idle divided by the budget's peak in use (target <= 1.25, issue 13): what the
process spends beyond the file bytes the budget accounts for (aiohttp's and botocore's buffers,
copies, the allocator).

Scenarios: ``defaults`` (4 x 64 MiB, UPLOAD_MEMORY_BUDGET 256 MiB, PART_SIZE 8 MiB, 3 parts in
flight), ``budget-64mib`` (30 x 20 MiB, UPLOAD_MEMORY_BUDGET=64MiB) and ``part-5mib`` (the same
with PART_SIZE=5MiB). ``--s3svc-env NAME=VALUE`` adds to s3svc's environment in every scenario
(e.g. ``MALLOC_ARENA_MAX=2``), for trying an allocator setting without changing code.

Run from the repository root: ``make bench`` or ``.venv/bin/python bench/upload_memory.py
--help``. The report replaces the ``## s3svc upload memory`` section of ``bench/RESULTS.md``
(``--no-write`` to only print it), keeping its hand-written ``(by hand ...)`` subsections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# ``python bench/upload_memory.py`` puts bench/ (not the repository root) on sys.path; add the
# root so the project's packages and the test helpers import.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from aiohttp.payload import AsyncIterablePayload  # noqa: E402

from bench.results import add_no_write, command_line, measured_line, publish  # noqa: E402
from bench.upload import (  # noqa: E402
    FAKE_CREDENTIALS,
    MotoProcess,
    base_env,
    cpu_seconds,
    human,
    machine_cpu_seconds,
    new_event_loop_factory,
    wait_ready,
)
from common.aws import open_client  # noqa: E402
from common.config import AwsSettings, defaults  # noqa: E402
from s3svc.config import MIB, S3Settings  # noqa: E402
from tests.procs import ServiceProcess, rss_kib  # noqa: E402

BUCKET = "bench-memory"
REGION = "us-east-1"
SECTION = "## s3svc upload memory"
TARGET_RATIO = 1.25
# The bytes sent: a seeded pseudo-random pattern; upload i starts at its own offset in it.
PATTERN_BYTES = 16 * MIB
SEED = 20240613
OFFSET_STEP = 1_000_003  # bytes between the starting offsets of consecutive uploads
# Size of each chunk the client writes.
CHUNK = 256 * 1024
FILENAME = "memory.bin"
CONTENT_TYPE = "application/octet-stream"
# Before a scenario, wait (at most --quiet-wait s) until other processes use less than this much
# CPU (% of one core), measured over windows of QUIET_WINDOW s.
QUIET_PCT = 30.0
QUIET_WINDOW = 1.0
# s3svc's defaults (s3svc/config.py).
DEFAULT_PART: int = defaults(S3Settings).part_size
DEFAULT_BUDGET: int = defaults(S3Settings).memory_budget
DEFAULT_INFLIGHT: int = defaults(S3Settings).max_inflight_parts


@dataclass(frozen=True)
class Scenario:
    """N concurrent uploads of ``size`` bytes into one s3svc with these settings."""

    name: str
    uploads: int
    size: int
    budget: int | None = None  # UPLOAD_MEMORY_BUDGET; None: s3svc's default
    part_size: int | None = None  # PART_SIZE; None: s3svc's default

    @property
    def part(self) -> int:
        """The part size s3svc uses."""
        return self.part_size or DEFAULT_PART

    @property
    def limit(self) -> int:
        """The memory budget s3svc has."""
        return self.budget or DEFAULT_BUDGET

    def env(self) -> dict[str, str]:
        """The scenario's settings for s3svc's environment."""
        out: dict[str, str] = {}
        if self.budget is not None:
            out["UPLOAD_MEMORY_BUDGET"] = str(self.budget)
        if self.part_size is not None:
            out["PART_SIZE"] = str(self.part_size)
        return out

    def settings(self) -> str:
        """The settings in the report's words."""
        budget = human(self.limit) + ("" if self.budget else " (default)")
        part = human(self.part) + ("" if self.part_size else " (default)")
        return f"budget {budget}, part {part}"


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("defaults", uploads=4, size=64 * MIB),
        Scenario("budget-64mib", uploads=30, size=20 * MIB, budget=64 * MIB),
        Scenario("part-5mib", uploads=30, size=20 * MIB, budget=64 * MIB, part_size=5 * MIB),
    )
}


def pattern() -> bytes:
    """The pattern twice over, so any window of it up to its length is one slice."""
    data = random.Random(SEED).randbytes(PATTERN_BYTES)
    return data + data


def chunks_of(data: bytes, index: int, size: int) -> Iterator[memoryview]:
    """The ``size`` bytes of upload ``index``: the pattern from its own offset, repeated."""
    view = memoryview(data)
    offset = (index * OFFSET_STEP) % PATTERN_BYTES
    sent = 0
    while sent < size:
        n = min(CHUNK, size - sent)
        yield view[offset : offset + n]
        offset = (offset + n) % PATTERN_BYTES
        sent += n


def sha256_of(data: bytes, index: int, size: int) -> str:
    """SHA-256 of upload ``index``'s bytes."""
    h = hashlib.sha256()
    for chunk in chunks_of(data, index, size):
        h.update(chunk)
    return h.hexdigest()


class SizedStream(AsyncIterablePayload):
    """A streamed payload of known size, so the form gets a Content-Length (as ``curl -F``)."""

    def __init__(self, data: bytes, index: int, size: int) -> None:
        async def gen() -> AsyncIterator[bytes]:
            for chunk in chunks_of(data, index, size):
                yield bytes(chunk)
                await asyncio.sleep(0)

        super().__init__(gen(), content_type=CONTENT_TYPE)
        self._size = size


def pss_kib(pid: int) -> int:
    """Proportional set size of ``pid`` in KiB (``/proc/<pid>/smaps_rollup``)."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise RuntimeError(f"no Pss for pid {pid}")


class Sampler(threading.Thread):
    """Samples a process's RSS and PSS every ``interval`` seconds, keeping the peaks."""

    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak_rss = 0
        self.peak_pss = 0
        self.samples = 0
        self._halt = threading.Event()

    def run(self) -> None:
        """Sample until stopped."""
        while True:
            self.sample()
            if self._halt.wait(self.interval):
                return

    def sample(self) -> None:
        """One sample."""
        try:
            rss, pss = rss_kib(self.pid, "VmRSS"), pss_kib(self.pid)
        except (OSError, RuntimeError):
            return  # the process is gone
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_pss = max(self.peak_pss, pss)
        self.samples += 1

    def finish(self) -> None:
        """Stop sampling (after one last sample)."""
        self._halt.set()
        self.join()
        self.sample()


@dataclass
class Outcome:
    """One scenario's measurements (memory in KiB, budget in bytes)."""

    scenario: Scenario
    seconds: float
    cpu: float  # s3svc's CPU seconds during the uploads
    others: float  # CPU seconds of the rest of the machine during the uploads
    idle_rss: int
    idle_pss: int
    peak_rss: int  # sampled
    peak_pss: int  # sampled
    hwm: int  # VmHWM at the end: the kernel's exact RSS peak
    after_rss: int  # VmRSS once every upload answered
    samples: int
    budget: dict[str, int] = field(default_factory=dict)
    statuses: Counter[int] = field(default_factory=Counter)

    @property
    def answers(self) -> str:
        """The answers' statuses, e.g. ``30 x 201`` or ``13 x 201, 17 x 503 busy``."""
        return ", ".join(
            f"{n} x {status}{' busy' if status == 503 else ''}"
            for status, n in sorted(self.statuses.items())
        )

    @property
    def rss_above(self) -> int:
        """Peak RSS above idle, KiB (VmHWM: no sample can miss it)."""
        return max(self.hwm, self.peak_rss) - self.idle_rss

    @property
    def pss_above(self) -> int:
        """Peak sampled PSS above idle, KiB."""
        return self.peak_pss - self.idle_pss

    @property
    def beyond_per_upload(self) -> float:
        """Peak RSS above idle beyond the budget's peak in use, per concurrent upload, KiB."""
        return (self.rss_above - self.budget_peak_kib) / self.scenario.uploads

    @property
    def budget_peak_kib(self) -> float:
        """The budget's peak in use, KiB."""
        return self.budget["peak"] / 1024

    def ratio(self, above_kib: int) -> float:
        """Memory above idle per byte of budget in use."""
        return above_kib / self.budget_peak_kib if self.budget.get("peak") else float("nan")


def cpu_now(pids: tuple[int, ...]) -> dict[int | str, float]:
    """CPU seconds so far of each of ``pids``, of this process and of the whole machine."""
    now: dict[int | str, float] = {pid: cpu_seconds(pid) for pid in pids}
    t = os.times()  # this process: the client and the sampler
    now["client"] = t.user + t.system
    now["machine"] = machine_cpu_seconds()
    return now


def others_cpu(before: dict[int | str, float], after: dict[int | str, float]) -> float:
    """CPU seconds the rest of the machine used between two readings of :func:`cpu_now`."""
    delta = {k: after[k] - before[k] for k in before}
    return max(0.0, delta.pop("machine") - sum(delta.values()))


async def wait_quiet(pids: tuple[int, ...], limit: float) -> None:
    """Wait (at most ``limit`` s) until other processes use < QUIET_PCT of a core."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = cpu_now(pids)
        await asyncio.sleep(QUIET_WINDOW)
        if 100 * others_cpu(before, cpu_now(pids)) / QUIET_WINDOW < QUIET_PCT:
            return


async def stored(s3: Any, key: str) -> tuple[int, str]:
    """Size and SHA-256 of the object S3 stored (read back whole, after the measurement)."""
    obj = await s3.get_object(Bucket=BUCKET, Key=key)
    h, size = hashlib.sha256(), 0
    async with obj["Body"] as body:
        while chunk := await body.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def s3svc_env(moto_url: str, scenario: Scenario, extra: list[str]) -> dict[str, str]:
    """s3svc's environment: moto as the endpoint, the scenario's settings, then ``extra``."""
    env = base_env()
    env.update(
        BUCKET_NAME=BUCKET,
        AWS_ENDPOINT_URL=moto_url,
        AWS_REGION=REGION,
        LOG_LEVEL="info",
        **scenario.env(),
    )
    for item in extra:
        name, _, value = item.partition("=")
        env[name] = value
    return env


def budget_line(log: str) -> dict[str, int]:
    """The numbers of the ``upload_memory`` line s3svc logs at shutdown: ``limit``, ``peak``
    (the most the budget had reserved at once) and the part slots' peak, as ``slots``."""
    for line in reversed(log.splitlines()):
        if '"upload_memory"' not in line:
            continue
        try:
            record: dict[str, Any] = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == "upload_memory":
            slots = record.get("slots_peak", record.get("part_slots_peak", 0))
            return {"limit": int(record["limit"]), "peak": int(record["peak"]), "slots": slots}
    raise RuntimeError("s3svc logged no upload_memory line at shutdown")


async def post(
    session: aiohttp.ClientSession, url: str, data: bytes, index: int, size: int
) -> tuple[int, dict[str, Any]]:
    """One upload: its status and answer. A 201 must name a file of ``size`` bytes; 503 busy
    (no memory within UPLOAD_MEMORY_WAIT) is counted; any other answer is an error."""
    with aiohttp.MultipartWriter("form-data") as form:
        part = form.append_payload(SizedStream(data, index, size))
        part.set_content_disposition("form-data", name="file", filename=FILENAME)
        async with session.post(url + "/s3/upload", data=form) as resp:
            text = await resp.text()
    body: dict[str, Any] = json.loads(text)
    if resp.status == 503 and body.get("error") == "busy":
        return resp.status, body
    if resp.status != 201:
        raise RuntimeError(f"upload {index}: HTTP {resp.status}: {text}")
    item: dict[str, Any] = body["files"][0]
    if item["size"] != size:
        raise RuntimeError(f"upload {index}: s3svc stored {item['size']} bytes, sent {size}")
    return resp.status, item


async def warm_up(session: aiohttp.ClientSession, url: str) -> list[str]:
    """Two 64 KiB files in one request (see the module docstring); the keys stored."""
    form = aiohttp.FormData()
    for name in ("warm-1.bin", "warm-2.bin"):
        form.add_field("file", bytes(64 * 1024), filename=name)
    async with session.post(url + "/s3/upload", data=form) as resp:
        text = await resp.text()
    if resp.status != 201:
        raise RuntimeError(f"warm-up upload: HTTP {resp.status}: {text}")
    return [item["key"] for item in json.loads(text)["files"]]


async def run_scenario(
    scenario: Scenario, args: argparse.Namespace, moto: MotoProcess, s3: Any, workdir: Path
) -> Outcome:
    """Start s3svc, warm it up, run the concurrent uploads while sampling, stop it."""
    data = pattern()
    expected = await asyncio.to_thread(
        lambda: [sha256_of(data, i, scenario.size) for i in range(scenario.uploads)]
    )
    env = s3svc_env(moto.url, scenario, args.s3svc_env)
    svc = ServiceProcess("s3svc", env, workdir / f"s3svc-{scenario.name}.log")
    keys: list[str] = []
    statuses: Counter[int] = Counter()
    try:
        svc.start()
        wait_ready(svc.url)
        assert svc.proc is not None
        pid = svc.proc.pid
        timeout = aiohttp.ClientTimeout(total=300)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            keys.extend(await warm_up(session, svc.url))
            await asyncio.sleep(args.settle)
            idle_rss, idle_pss = rss_kib(pid, "VmRSS"), pss_kib(pid)
            sampler = Sampler(pid, args.interval)
            sampler.start()
            await wait_quiet((pid, moto.pid), args.quiet_wait)
            started, before = time.perf_counter(), cpu_now((pid, moto.pid))
            try:
                answers = await asyncio.gather(
                    *(
                        post(session, svc.url, data, i, scenario.size)
                        for i in range(scenario.uploads)
                    )
                )
            finally:
                seconds = time.perf_counter() - started
                after = cpu_now((pid, moto.pid))
                sampler.finish()
            hwm, after_rss = rss_kib(pid, "VmHWM"), rss_kib(pid, "VmRSS")
        for i, (status, item) in enumerate(answers):
            statuses[status] += 1
            if status != 201:
                continue
            keys.append(item["key"])
            if item["sha256"] != expected[i]:
                raise RuntimeError(f"upload {i}: sha256 {item['sha256']} != sent {expected[i]}")
            size, digest = await stored(s3, item["key"])
            if (size, digest) != (scenario.size, expected[i]):
                raise RuntimeError(f"upload {i}: stored {size} bytes with sha256 {digest}")
        svc.stop()
        budget = budget_line(svc.output())
    finally:
        svc.stop()
        for key in keys:
            await s3.delete_object(Bucket=BUCKET, Key=key)
    return Outcome(
        scenario=scenario,
        seconds=seconds,
        cpu=after[pid] - before[pid],
        others=others_cpu(before, after),
        idle_rss=idle_rss,
        idle_pss=idle_pss,
        peak_rss=sampler.peak_rss,
        peak_pss=sampler.peak_pss,
        hwm=hwm,
        after_rss=after_rss,
        samples=sampler.samples,
        budget=budget,
        statuses=statuses,
    )


def mib(kib: float) -> str:
    """KiB as MiB for the report."""
    return f"{kib / 1024:.1f}"


def report(outcomes: list[Outcome], args: argparse.Namespace, command: str) -> str:
    """The Markdown report."""
    extra = ", ".join(f"`{e}`" for e in args.s3svc_env) or "none"
    lines = [
        f"{measured_line(command)}.",
        "",
        "Per scenario a fresh `python -m s3svc` (moto as its own process, objects in memory, "
        "deleted after each scenario) gets one warm-up request of two 64 KiB files (every S3 call, no part buffer), settles for "
        f"{args.settle:g} s (idle = its VmRSS and PSS then), and then N uploads started at once "
        "by an aiohttp client streaming each file as `multipart/form-data` with a "
        "Content-Length. A thread samples s3svc's VmRSS and PSS (`smaps_rollup`) every "
        f"{args.interval * 1000:.0f} ms; peak RSS is the kernel's `VmHWM`. The budget's peak "
        "in use (the most it had reserved at once: small buffers byte by byte, part buffers a "
        "whole part at a time) and its part slots' peak come from the `upload_memory` line "
        "s3svc logs at SIGTERM. Ratio = memory above idle / budget peak "
        f"in use (target ≤ {TARGET_RATIO}). {DEFAULT_INFLIGHT} parts in flight per upload "
        f"(the default). Extra s3svc environment: {extra}. MiB = 2^20 bytes.",
        "",
        "| scenario | uploads | settings | answers | s | s3svc CPU s | others CPU | idle RSS | peak RSS above idle | "
        "peak PSS above idle | budget peak in use | part slots peak | ratio RSS | ratio PSS | "
        f"beyond budget per upload | RSS after | ratio ≤ {TARGET_RATIO} |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | :---: |",
    ]
    for o in outcomes:
        s = o.scenario
        ratio = o.ratio(o.rss_above)
        met = "met" if ratio <= TARGET_RATIO else "**missed**"
        lines.append(
            f"| {s.name} | {s.uploads} x {human(s.size)} | {s.settings()} | {o.answers} | "
            f"{o.seconds:.1f} | {o.cpu:.1f} | {100 * o.others / o.seconds:.0f}% | "
            f"{mib(o.idle_rss)} | {mib(o.rss_above)} | {mib(o.pss_above)} | "
            f"{mib(o.budget_peak_kib)} | {mib(o.budget['slots'] / 1024)} | "
            f"{ratio:.2f} | {o.ratio(o.pss_above):.2f} | {mib(o.beyond_per_upload)} | "
            f"{mib(o.after_rss)} | {met} |"
        )
    samples = ", ".join(f"{o.samples} in {o.scenario.name}" for o in outcomes)
    busy = [o for o in outcomes if o.statuses[503]]
    lines += [
        "",
        f"Memory columns in MiB. Peak PSS is sampled ({samples} samples); peak RSS is exact. "
        "Beyond budget per upload = (peak RSS above idle - budget peak in use) / uploads. "
        "RSS after = s3svc's VmRSS once every upload had answered (memory the process keeps "
        "though the budget is free again). Every 201 named a file of the size sent and its "
        "SHA-256, and every object, read back from S3 after the measurement, had them too.",
    ]
    if busy:
        lines += [
            "",
            "**Uploads refused:** "
            + "; ".join(f"{o.scenario.name}: {o.statuses[503]} x 503 busy" for o in busy)
            + " (a reservation waited UPLOAD_MEMORY_WAIT, 20 s by default, without being "
            "granted). Their ratio is over what the others used.",
        ]
    return "\n".join(lines)


async def run(args: argparse.Namespace, workdir: Path, command: str) -> str:
    """Start moto, run each scenario with its own s3svc, and return the report."""
    env = base_env()
    largest = max(SCENARIOS[name].size for name in args.scenario)
    env["MOTO_S3_DEFAULT_KEY_BUFFER_SIZE"] = str(2 * largest)  # keep objects in memory
    moto = MotoProcess(workdir / "moto.log", env).start()
    outcomes: list[Outcome] = []
    try:
        os.environ.update(FAKE_CREDENTIALS)  # this process's own client, for checks and deletes
        aws = AwsSettings(region=REGION, endpoint_url=moto.url)
        async with open_client("s3", aws) as s3:
            await s3.create_bucket(Bucket=BUCKET)
            for name in args.scenario:
                for _ in range(args.repeats):
                    o = await run_scenario(SCENARIOS[name], args, moto, s3, workdir)
                    print(
                        f"{name}: {o.seconds:.1f} s idle {mib(o.idle_rss)} MiB, above idle "
                        f"RSS {mib(o.rss_above)} PSS {mib(o.pss_above)} MiB, budget peak "
                        f"{mib(o.budget_peak_kib)} MiB: ratio {o.ratio(o.rss_above):.2f}",
                        file=sys.stderr,
                    )
                    outcomes.append(o)
    finally:
        moto.stop()
    return report(outcomes, args, command)


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, run the scenarios and print the Markdown report; exit 0 on success."""
    p = argparse.ArgumentParser(
        description="s3svc's peak memory above idle against the memory budget in use, under "
        "concurrent uploads to one moto server (see the module docstring)."
    )
    p.add_argument(
        "--scenario",
        action="append",
        choices=sorted(SCENARIOS),
        help="run only this scenario (repeatable; default: all, in order "
        + ", ".join(SCENARIOS)
        + ")",
    )
    p.add_argument("--repeats", type=int, default=1, help="runs per scenario (default 1)")
    p.add_argument(
        "--interval", type=float, default=0.02, help="seconds between samples (default 0.02)"
    )
    p.add_argument(
        "--settle",
        type=float,
        default=1.0,
        help="seconds between the warm-up and the idle reading (default 1)",
    )
    p.add_argument(
        "--s3svc-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for s3svc in every scenario (repeatable), e.g. MALLOC_ARENA_MAX=2",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=20.0,
        help="before each scenario's uploads, wait at most this many seconds for other "
        "processes to go quiet (default 20)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep moto's and s3svc's logs in this directory (default: a temporary one)",
    )
    add_no_write(p)
    args = p.parse_args(argv)
    args.scenario = args.scenario or list(SCENARIOS)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    command = command_line("upload_memory.py", argv)
    with contextlib.ExitStack() as stack:
        if args.workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="s3svc-mem-")))
        else:
            workdir = args.workdir
            workdir.mkdir(parents=True, exist_ok=True)
        with asyncio.Runner(loop_factory=new_event_loop_factory("uvloop")) as runner:
            body = runner.run(run(args, workdir, command))
    publish(SECTION, body, write=args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
