"""Upload benchmark: s3svc versus direct aiobotocore multipart, both into one moto server.

What it measures, side by side in one run:

- **s3svc**: one file (default 1 GiB) POSTed as multipart/form-data (field ``file``, by ``curl -F``
  or an aiohttp client) to ``python -m s3svc``, which streams it into S3 as a multipart upload: per
  part a SHA-256 computed in a thread and sent as ``ChecksumSHA256`` with
  ``ChecksumAlgorithm="SHA256"``, at most ``UPLOAD_MAX_INFLIGHT_PARTS`` parts in flight, plus the
  SHA-256 of the whole file computed while streaming. Timed from the client's start to s3svc's
  201 answer.
- **direct**: the same bytes, from the same file, sent by this process with aiobotocore as s3svc
  sends them: ``create_multipart_upload`` (``ChecksumAlgorithm="SHA256"``, same metadata),
  ``upload_part`` with the same part size and per-part ``ChecksumSHA256`` computed in a thread,
  the same number of parts in flight (the next part is read while they fly), then
  ``complete_multipart_upload`` (``IfNoneMatch="*"``). No whole-file hash: that is s3svc's own
  extra work. Timed from ``create_multipart_upload`` to the completion's answer; the time moto
  spends in ``complete_multipart_upload`` is reported too, as it is the same for both paths.

Both talk to one moto server running as its own process (``python -m moto.server``), so moto's
CPU shares a GIL with neither the client nor s3svc; by default moto keeps objects in memory
rather than spooling them to temporary files. One untimed warm-up upload per phase comes first;
then the phases alternate order on every repeat. Each object is checked (size, number of parts,
S3's composite checksum; s3svc's reported SHA-256 against the bytes sent) and deleted after its
run, since moto holds everything in memory. Before each run the benchmark waits (a bounded time)
for other processes on the machine to go quiet, and it reports the CPU they used during each run.

Reported: median MB/s (10^6 bytes/s) of each phase, their ratio (target >= 0.8), s3svc's resident
memory after startup and its peak (``VmHWM``, target <= 150 MiB for 1 GiB), and the CPU each
process used per run (as % of one core), which shows where the time goes. Targets are reported as
met or missed; the exit status is 0 either way (speed is measured, never asserted).

Run from the repository root: ``make bench`` or ``.venv/bin/python bench/upload.py --help``.
The report replaces the ``## s3svc upload`` section of ``bench/RESULTS.md`` (``--no-write`` to
only print it), keeping a hand-written ``### Interpretation`` subsection if there is one.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

# ``python bench/upload.py`` puts bench/ (not the repository root) on sys.path; add the root so
# the project's packages and the test helpers (tests.procs) import.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from bench.results import RESULTS, machine_line, write_section  # noqa: E402
from common.aws import open_client  # noqa: E402
from common.config import AwsSettings  # noqa: E402
from s3svc.config import GIB, MIB  # noqa: E402
from tests.procs import ServiceProcess, free_port, rss_kib  # noqa: E402

BUCKET = "bench-uploads"
REGION = "us-east-1"
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
TARGET_RATIO = 0.8
TARGET_RSS_MIB = 150.0
PHASES = ("s3svc", "direct")
# The bytes sent: this many seeded pseudo-random bytes, repeated up to the requested size.
PATTERN_BYTES = 16 * MIB
SEED = 20240601
# Size of each write when generating the file, and of each read when the aiohttp client streams it.
IO_CHUNK = 1 * MIB
CLK_TCK = os.sysconf("SC_CLK_TCK")
FILENAME = "bench.bin"
CONTENT_TYPE = "application/octet-stream"
# Before a run, wait until other processes use less than this much CPU (% of one core)...
QUIET_PCT = 30.0
# ...measured over windows of this many seconds.
QUIET_WINDOW = 1.0
SECTION = "## s3svc upload"
NOTES = "### Interpretation"

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)(B?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``1GiB``, ``512MiB``, ``8Mi`` (powers of 1024), ``100MB``, ``1G`` (powers of 1000) or bytes."""
    m = _SIZE_RE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 1GiB, 512MiB, 100MB)")
    number, prefix, binary = float(m.group(1)), m.group(2).upper(), bool(m.group(3))
    power = "KMGT".index(prefix) + 1 if prefix else 0
    return int(number * (1024 if binary else 1000) ** power)


def human(n: float) -> str:
    """Bytes as MiB or GiB for the report."""
    if n >= GIB:
        return f"{n / GIB:.2f} GiB"
    return f"{n / MIB:.1f} MiB"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def client_cpu_seconds() -> float:
    """CPU of this process plus its reaped children (curl; s3svc and moto are reaped only at exit)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def machine_cpu_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores, everything but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / CLK_TCK


def b64(digest: bytes) -> str:
    """Base64 of a digest, as S3's checksum headers want it."""
    return base64.b64encode(digest).decode("ascii")


def sha256_digest(data: bytes) -> bytes:
    """SHA-256 of ``data`` (run in a thread, as s3svc does)."""
    return hashlib.sha256(data).digest()


def read_block(f: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes of ``f``; fewer only at its end."""
    return f.read(n)


def open_binary(path: Path) -> BinaryIO:
    """``path`` opened for binary reading (called through a thread from async code)."""
    return path.open("rb")


def make_data_file(path: Path, size: int) -> str:
    """Write ``size`` bytes (a seeded pseudo-random pattern, repeated) to ``path``; their SHA-256."""
    pattern = random.Random(SEED).randbytes(PATTERN_BYTES)
    view = memoryview(pattern)
    hasher = hashlib.sha256()
    written = 0
    with path.open("wb") as f:
        while written < size:
            offset = written % PATTERN_BYTES
            chunk = view[offset : offset + min(IO_CHUNK, size - written, PATTERN_BYTES - offset)]
            f.write(chunk)
            hasher.update(chunk)
            written += len(chunk)
    return hasher.hexdigest()


def expected_parts(size: int, part_size: int) -> int:
    """Parts of a multipart upload of ``size`` bytes (the last one may be short)."""
    return -(-size // part_size)


@dataclass
class MotoProcess:
    """``python -m moto.server`` on a free loopback port, its output captured to a file."""

    log_path: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Endpoint URL of the server."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """Process id of the running server."""
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> MotoProcess:
        """Start and wait until it answers HTTP."""
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto exited {self.proc.returncode}: {self.output()}")
            try:
                with urllib.request.urlopen(self.url + "/moto-api/", timeout=1):
                    return self
            except urllib.error.HTTPError:
                return self  # it answers: that is all we need
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"moto did not start: {self.output()}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def output(self) -> str:
        """Everything the server wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Run:
    """One timed upload."""

    phase: str
    seconds: float
    size: int
    cpu: dict[str, float]  # CPU seconds during the run: moto, s3svc, client, others
    complete_s: float | None = None  # direct only: how long complete_multipart_upload took
    waited_s: float = 0.0  # how long the run waited for the machine to go quiet

    @property
    def mb_per_s(self) -> float:
        """Throughput in MB/s (10^6 bytes per second)."""
        return self.size / self.seconds / 1e6

    def cpu_pct(self, who: str) -> float:
        """CPU used by ``who`` as % of one core over the run's wall time."""
        return 100.0 * self.cpu[who] / self.seconds


@dataclass
class Bench:
    """Everything one benchmark run needs: the processes, the client, the file and its hash."""

    args: argparse.Namespace
    moto: MotoProcess
    s3svc: ServiceProcess
    s3: Any
    data: Path
    sha256: str
    command: str = ""
    checksums: dict[str, str] = field(default_factory=dict)
    last_complete_s: float | None = None

    @property
    def s3svc_pid(self) -> int:
        """Process id of s3svc."""
        assert self.s3svc.proc is not None
        return self.s3svc.proc.pid

    def cpu_now(self) -> dict[str, float]:
        """CPU seconds so far of moto, s3svc, this client (with curl), and the whole machine."""
        return {
            "moto": cpu_seconds(self.moto.pid),
            "s3svc": cpu_seconds(self.s3svc_pid),
            "client": client_cpu_seconds(),
            "machine": machine_cpu_seconds(),
        }

    @staticmethod
    def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        """Per-process CPU between two readings; ``others`` is the machine's busy time left over."""
        delta = {k: after[k] - before[k] for k in before}
        ours = delta["moto"] + delta["s3svc"] + delta["client"]
        delta["others"] = max(0.0, delta.pop("machine") - ours)
        return delta

    async def wait_quiet(self) -> float:
        """Wait (at most ``--quiet-wait`` s) until other processes use < QUIET_PCT of a core."""
        started = time.monotonic()
        while time.monotonic() - started < self.args.quiet_wait:
            before = self.cpu_now()
            await asyncio.sleep(QUIET_WINDOW)
            others = self.cpu_delta(before, self.cpu_now())["others"]
            if 100.0 * others / QUIET_WINDOW < QUIET_PCT:
                break
        return time.monotonic() - started

    async def timed(self, phase: str) -> Run:
        """One upload of ``phase``, with its wall time and every process's CPU."""
        waited = await self.wait_quiet()
        upload: Callable[[], Awaitable[str]] = self.via_s3svc if phase == "s3svc" else self.direct
        self.last_complete_s = None
        before = self.cpu_now()
        started = time.perf_counter()
        key = await upload()
        seconds = time.perf_counter() - started
        cpu = self.cpu_delta(before, self.cpu_now())
        await self.verify(phase, key)
        return Run(phase, seconds, self.args.size, cpu, self.last_complete_s, waited)

    async def verify(self, phase: str, key: str) -> None:
        """The object has the right size and number of parts; then delete it (moto is in memory)."""
        head = await self.s3.head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
        size = int(head["ContentLength"])
        if size != self.args.size:
            raise RuntimeError(f"{phase}: stored {size} bytes, sent {self.args.size}")
        parts = expected_parts(self.args.size, self.args.part_size)
        etag = str(head["ETag"]).strip('"')
        if parts > 1 and not etag.endswith(f"-{parts}"):
            raise RuntimeError(f"{phase}: ETag {etag} is not that of {parts} parts")
        checksum = head.get("ChecksumSHA256")
        if checksum:
            self.checksums.setdefault(phase, checksum)
        await self.s3.delete_object(Bucket=BUCKET, Key=key)

    async def via_s3svc(self) -> str:
        """POST the file to s3svc; returns the stored key after checking size and SHA-256."""
        url = self.s3svc.url + "/s3/upload"
        if self.args.client == "curl":
            body = await self._post_curl(url)
        else:
            body = await self._post_aiohttp(url)
        item = body["files"][0]
        if item["sha256"] != self.sha256:
            raise RuntimeError(f"s3svc sha256 {item['sha256']} != sent {self.sha256}")
        if item["size"] != self.args.size:
            raise RuntimeError(f"s3svc size {item['size']} != sent {self.args.size}")
        key: str = item["key"]
        return key

    async def small_upload(self) -> None:
        """One upload of a part and a bit through s3svc, so its code paths are loaded and warm."""
        data = random.Random(SEED).randbytes(self.args.part_size + 1024)
        form = aiohttp.FormData()
        form.add_field("file", data, filename=FILENAME, content_type=CONTENT_TYPE)
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.s3svc.url + "/s3/upload", data=form) as resp,
        ):
            body = await resp.json()
            if resp.status != 201 or body["files"][0]["sha256"] != hashlib.sha256(data).hexdigest():
                raise RuntimeError(f"small upload failed: HTTP {resp.status} {body}")
        await self.s3.delete_object(Bucket=BUCKET, Key=body["files"][0]["key"])

    async def _post_curl(self, url: str) -> dict[str, Any]:
        proc = await asyncio.create_subprocess_exec(
            "curl",
            "-sS",
            "--max-time",
            "600",
            "-H",
            "Expect:",  # send the body at once rather than wait for 100 Continue
            "-F",
            f"file=@{self.data};type={CONTENT_TYPE};filename={FILENAME}",
            "-w",
            "\n%{http_code}",
            url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        text, _, status = out.decode().rpartition("\n")
        if proc.returncode != 0 or status != "201":
            raise RuntimeError(f"curl exit {proc.returncode}, HTTP {status}: {text} {err.decode()}")
        parsed: dict[str, Any] = json.loads(text)
        return parsed

    async def _post_aiohttp(self, url: str) -> dict[str, Any]:
        async def chunks() -> AsyncIterator[bytes]:
            f = await asyncio.to_thread(open_binary, self.data)
            try:
                while chunk := await asyncio.to_thread(read_block, f, IO_CHUNK):
                    yield chunk
            finally:
                f.close()

        timeout = aiohttp.ClientTimeout(total=600)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            with aiohttp.MultipartWriter("form-data") as form:
                part = form.append(chunks(), {"Content-Type": CONTENT_TYPE})
                part.set_content_disposition("form-data", name="file", filename=FILENAME)
                async with session.post(url, data=form) as resp:
                    if resp.status != 201:
                        raise RuntimeError(f"HTTP {resp.status}: {await resp.text()}")
                    parsed: dict[str, Any] = await resp.json()
                    return parsed

    async def direct(self) -> str:
        """The same bytes, sent with aiobotocore multipart as s3svc sends them."""
        key = f"direct/{time.monotonic_ns()}-{FILENAME}"
        part_size: int = self.args.part_size
        created = await self.s3.create_multipart_upload(
            Bucket=BUCKET,
            Key=key,
            ChecksumAlgorithm="SHA256",
            ContentType=CONTENT_TYPE,
            Metadata={"original-filename": FILENAME},
        )
        upload_id: str = created["UploadId"]
        slots = asyncio.Semaphore(self.args.inflight)
        tasks: list[asyncio.Task[dict[str, Any]]] = []

        async def send(number: int, block: bytes) -> dict[str, Any]:
            try:
                checksum = b64(await asyncio.to_thread(sha256_digest, block))
                resp = await self.s3.upload_part(
                    Bucket=BUCKET,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=block,
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=checksum,
                )
                return {"PartNumber": number, "ETag": resp["ETag"], "ChecksumSHA256": checksum}
            finally:
                slots.release()

        f = await asyncio.to_thread(open_binary, self.data)
        try:
            # As s3svc: read the next block while up to ``inflight`` parts are being sent.
            while block := await asyncio.to_thread(read_block, f, part_size):
                await slots.acquire()
                tasks.append(asyncio.create_task(send(len(tasks) + 1, block)))
                del block
            parts = await asyncio.gather(*tasks)
            completing = time.perf_counter()
            await self.s3.complete_multipart_upload(
                Bucket=BUCKET,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                IfNoneMatch="*",
            )
            self.last_complete_s = time.perf_counter() - completing
        except BaseException:
            for t in tasks:
                t.cancel()
            await self.s3.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id)
            raise
        finally:
            f.close()
        return key


def new_event_loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The event loop the benchmark client runs on: uvloop (as s3svc) or asyncio's own."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def base_env() -> dict[str, str]:
    """This environment without the developer's AWS settings, with credentials moto accepts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(FAKE_CREDENTIALS)
    return env


def moto_env(args: argparse.Namespace) -> dict[str, str]:
    """moto's environment: objects kept in memory unless ``--moto-spool disk``."""
    env = base_env()
    if args.moto_spool == "memory":
        env["MOTO_S3_DEFAULT_KEY_BUFFER_SIZE"] = str(max(2 * args.size, 64 * MIB))
    return env


def s3svc_env(moto_url: str, args: argparse.Namespace) -> dict[str, str]:
    """s3svc's environment: moto as the endpoint, the benchmark's part size and in-flight parts."""
    env = base_env()
    env.update(
        BUCKET_NAME=BUCKET,
        AWS_ENDPOINT_URL=moto_url,
        AWS_REGION=REGION,
        PART_SIZE=str(args.part_size),
        UPLOAD_MAX_INFLIGHT_PARTS=str(args.inflight),
        MAX_UPLOAD_BYTES=str(max(args.size, 5 * GIB)),
        LOG_LEVEL="info",
    )
    for item in args.s3svc_env:
        name, _, value = item.partition("=")
        env[name] = value
    return env


def wait_ready(url: str, timeout: float = 30.0) -> None:
    """Wait until s3svc's readiness (S3 reachable, bucket there) answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/s3/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError("s3svc did not become ready")


def report(bench: Bench, runs: list[Run], rss: dict[str, int]) -> str:
    """The Markdown tables and the targets."""
    args = bench.args
    by_phase = {p: [r for r in runs if r.phase == p] for p in PHASES}

    def med(rs: list[Run], f: Callable[[Run], float]) -> float:
        return statistics.median(f(r) for r in rs)

    def pct(rs: list[Run], who: str) -> str:
        return f"{med(rs, lambda r: r.cpu_pct(who)):.0f}%"

    client = "`curl -F`" if args.client == "curl" else "aiohttp MultipartWriter (chunked)"
    what = {
        "s3svc": f"{client} → s3svc → moto",
        "direct": "aiobotocore → moto",
    }
    parts = expected_parts(args.size, args.part_size)
    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M %Z')} on {machine_line()}, with "
        f"`{bench.command}`.",
        "",
        f"One moto server, its own process (objects in {args.moto_spool}, each deleted after "
        f"its run). **s3svc**: {client} posts a {human(args.size)} file to `python -m s3svc` "
        f"(PART_SIZE {human(args.part_size)}, {args.inflight} parts in flight), which hashes the "
        "whole file on the fly, computes each part's SHA-256 in a thread and sends it as "
        "`ChecksumSHA256` with `upload_part`. **direct**: the benchmark sends the same file with "
        "aiobotocore (s3svc's client settings) and the same calls: "
        '`create_multipart_upload(ChecksumAlgorithm="SHA256")`, '
        f"{human(args.part_size)} `upload_part`s ({parts}) with `ChecksumSHA256` computed in a "
        f"thread, {args.inflight} in flight while the next part is read, "
        '`complete_multipart_upload(IfNoneMatch="*")`; no whole-file hash (s3svc\'s extra '
        f"work). Timed runs per phase: {args.repeats}, after {args.warmup} untimed warm-up; "
        "order alternating. MB = 10^6 bytes; CPU = median % of one core during a run "
        "(others = the rest of the machine, kernel included).",
        "",
        "| phase | path | median MB/s | min-max MB/s | median s | of which moto completes | "
        "moto CPU | s3svc CPU | client CPU | others CPU |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for phase, rs in by_phase.items():
        speeds = [r.mb_per_s for r in rs]
        completes = [r.complete_s for r in rs if r.complete_s is not None]
        complete = f"{statistics.median(completes):.2f} s" if completes else "(not seen)"
        lines.append(
            f"| {phase} | {what[phase]} | {med(rs, lambda r: r.mb_per_s):.1f} | "
            f"{min(speeds):.1f}-{max(speeds):.1f} | {med(rs, lambda r: r.seconds):.2f} | "
            f"{complete} | {pct(rs, 'moto')} | {pct(rs, 's3svc')} | {pct(rs, 'client')} | "
            f"{pct(rs, 'others')} |"
        )
    ratio = med(by_phase["s3svc"], lambda r: r.mb_per_s) / med(
        by_phase["direct"], lambda r: r.mb_per_s
    )
    peak_mib = rss["peak"] / 1024
    lines += [
        "",
        "| metric | value | target | met |",
        "| --- | ---: | ---: | :---: |",
        f"| s3svc / direct throughput (medians) | {ratio:.2f} | ≥ {TARGET_RATIO} | "
        f"{'yes' if ratio >= TARGET_RATIO else 'NO'} |",
        f"| s3svc peak RSS (VmHWM, whole run) | {peak_mib:.1f} MiB | ≤ {TARGET_RSS_MIB:.0f} MiB | "
        f"{'yes' if peak_mib <= TARGET_RSS_MIB else 'NO'} |",
        f"| s3svc RSS after startup (VmRSS) | {rss['startup'] / 1024:.1f} MiB | | |",
        f"| s3svc RSS after one small 2-part upload (VmRSS; code and models loaded) | "
        f"{rss['warm'] / 1024:.1f} MiB | | |",
        f"| peak minus that: what streaming {human(args.size)} costs | "
        f"{(rss['peak'] - rss['warm']) / 1024:.1f} MiB | | |",
        "",
        "Timed runs in order:",
        "",
        "| # | phase | s | MB/s | moto completes | moto CPU | s3svc CPU | client CPU | "
        "others CPU | waited for quiet |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for i, r in enumerate(runs, 1):
        complete = f"{r.complete_s:.2f} s" if r.complete_s is not None else ""
        lines.append(
            f"| {i} | {r.phase} | {r.seconds:.2f} | {r.mb_per_s:.1f} | {complete} | "
            f"{r.cpu_pct('moto'):.0f}% | {r.cpu_pct('s3svc'):.0f}% | {r.cpu_pct('client'):.0f}% | "
            f"{r.cpu_pct('others'):.0f}% | {r.waited_s:.0f} s |"
        )
    same = bench.checksums.get("s3svc") == bench.checksums.get("direct")
    composite = bench.checksums.get("s3svc", "not returned by the emulator")
    lines += [
        "",
        f"Checked on every run: stored size = {args.size} bytes and an ETag of {parts} parts; "
        f"s3svc's reported sha256 = the file's ({bench.sha256[:16]}…); S3's composite "
        f"ChecksumSHA256 ({composite}) "
        f"{'is the same for both phases' if same else 'DIFFERS between phases'}.",
    ]
    busy = [r for r in runs if r.cpu_pct("others") >= QUIET_PCT]
    if busy:
        lines += [
            "",
            f"Note: in {len(busy)} of {len(runs)} runs the rest of the machine used ≥ "
            f"{QUIET_PCT:.0f}% of a core (kernel networking is counted there too); on a 2-core "
            "machine that competes with moto and s3svc, so those runs are noisy.",
        ]
    return "\n".join(lines)


def log_run(label: str, r: Run) -> None:
    """One progress line on stderr."""
    complete = f" complete {r.complete_s:.2f} s" if r.complete_s is not None else ""
    print(
        f"{label}: {r.phase:6} {r.seconds:6.2f} s {r.mb_per_s:7.1f} MB/s{complete} | CPU moto "
        f"{r.cpu_pct('moto'):3.0f}% s3svc {r.cpu_pct('s3svc'):3.0f}% client "
        f"{r.cpu_pct('client'):3.0f}% others {r.cpu_pct('others'):3.0f}%"
        + (f" (waited {r.waited_s:.0f} s for quiet)" if r.waited_s >= 2 * QUIET_WINDOW else ""),
        file=sys.stderr,
    )


async def run(args: argparse.Namespace, workdir: Path, command: str) -> str:
    """Start moto and s3svc, run the phases, and return the report."""
    data = workdir / FILENAME
    print(f"writing {human(args.size)} of test data to {data} …", file=sys.stderr)
    sha = await asyncio.to_thread(make_data_file, data, args.size)
    moto = MotoProcess(workdir / "moto.log", moto_env(args)).start()
    s3svc: ServiceProcess | None = None
    try:
        os.environ.update(FAKE_CREDENTIALS)
        # The direct client has s3svc's client settings (retries, timeouts, pool).
        aws = AwsSettings(region=REGION, endpoint_url=moto.url)
        async with open_client("s3", aws) as s3:
            await s3.create_bucket(Bucket=BUCKET)
            s3svc = ServiceProcess("s3svc", s3svc_env(moto.url, args), workdir / "s3svc.log")
            s3svc.start()
            wait_ready(s3svc.url)
            assert s3svc.proc is not None
            rss = {"startup": rss_kib(s3svc.proc.pid, "VmRSS")}
            bench = Bench(args, moto, s3svc, s3, data, sha, command)
            await bench.small_upload()
            rss["warm"] = rss_kib(s3svc.proc.pid, "VmRSS")
            for i in range(args.warmup):
                for phase in PHASES:
                    log_run(f"warm-up {i + 1}", await bench.timed(phase))
            runs: list[Run] = []
            for i in range(args.repeats):
                for phase in PHASES if i % 2 == 0 else PHASES[::-1]:
                    runs.append(await bench.timed(phase))
                    log_run(f"run {len(runs)}", runs[-1])
            rss["peak"] = rss_kib(s3svc.proc.pid, "VmHWM")
            return report(bench, runs, rss)
    finally:
        if s3svc is not None:
            s3svc.stop()
        moto.stop()


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, run the benchmark and print the Markdown report; exit 0 on success."""
    p = argparse.ArgumentParser(
        description="s3svc upload throughput and memory versus direct aiobotocore multipart, "
        "against one moto server (see the module docstring)."
    )
    p.add_argument("--size", type=parse_size, default=GIB, help="file size (default 1GiB)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per phase (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per phase (default 1)")
    p.add_argument("--part-size", type=parse_size, default=8 * MIB, help="PART_SIZE (default 8MiB)")
    p.add_argument("--inflight", type=int, default=3, help="UPLOAD_MAX_INFLIGHT_PARTS (default 3)")
    p.add_argument(
        "--client",
        choices=("curl", "aiohttp"),
        default="curl" if shutil.which("curl") else "aiohttp",
        help="what sends the form to s3svc (default curl when installed)",
    )
    p.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="event loop of the direct client (default uvloop, as s3svc runs)",
    )
    p.add_argument(
        "--moto-spool",
        choices=("memory", "disk"),
        default="memory",
        help="keep moto's objects in memory (default) or let it spool them to temp files",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=20.0,
        help="before each run, wait at most this many seconds for other processes to go quiet",
    )
    p.add_argument(
        "--s3svc-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for s3svc (repeatable)",
    )
    p.add_argument("--workdir", type=Path, default=None, help="where the test file goes")
    p.add_argument(
        "--no-write",
        dest="write",
        action="store_false",
        help=f"only print the report; do not update {SECTION!r} of bench/RESULTS.md",
    )
    args = p.parse_args(argv)
    if args.part_size < 5 * MIB:
        p.error("--part-size must be at least 5MiB (S3's minimum)")
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    command = " ".join([".venv/bin/python", "bench/upload.py", *(argv or sys.argv[1:])])
    with tempfile.TemporaryDirectory(prefix="s3svc-bench-", dir=args.workdir) as tmp:
        factory = new_event_loop_factory(args.loop)
        with asyncio.Runner(loop_factory=factory) as runner:
            body = runner.run(run(args, Path(tmp), command))
    print(f"{SECTION}\n\n{body}")
    if args.write:
        write_section(SECTION, body, keep=NOTES)
        print(f"\n(written to {RESULTS.relative_to(ROOT)})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
