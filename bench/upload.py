"""Upload benchmark: s3svc versus a direct aiobotocore client making the same S3 calls, one moto.

What it measures, side by side in one run, for each file size (default 256 MiB and 1 GiB):

- **s3svc**: the file POSTed as multipart/form-data (field ``file``, by ``curl -F`` or an aiohttp
  client) to ``python -m s3svc``, which streams it into S3 as a multipart upload created with
  ``ChecksumAlgorithm="CRC64NVME", ChecksumType="FULL_OBJECT"``: each part carries its
  ``ChecksumCRC64NVME`` (awscrt, in a thread), at most ``UPLOAD_MAX_INFLIGHT_PARTS`` parts fly at
  once, and the completion carries the file's CRC64NVME with ``ChecksumType="FULL_OBJECT"`` and
  ``IfNoneMatch="*"``. On the way s3svc also computes the SHA-256 of the whole file, which it
  returns. Timed from the client's start to s3svc's 201 answer.
- **direct**: the same bytes, from the same file, sent by this process with aiobotocore (s3svc's
  client settings) with the same calls: ``create_multipart_upload`` (CRC64NVME, full object, the
  same content type and metadata), ``upload_part`` with the same part size and each part's
  CRC64NVME computed in a thread (chained with the file's running CRC64NVME, as s3svc does), the
  same number of parts in flight while the next part is read, then
  ``complete_multipart_upload`` with the file's CRC64NVME, ``ChecksumType="FULL_OBJECT"`` and
  ``IfNoneMatch="*"``. No SHA-256 of the whole file: that is s3svc's own extra, and the report
  says what one such pass costs on the machine. Timed from ``create_multipart_upload`` to the
  completion's answer; the time moto spends completing is reported too.

Both sign with SigV4 over ``http://``, so botocore hashes every payload byte (SHA-256) in both
paths; over ``https://`` with a checksum header (production) it sends ``UNSIGNED-PAYLOAD``.

Both talk to one moto server running as its own process (``python -m moto.server``), so moto's
CPU shares a GIL with neither the client nor s3svc; by default moto keeps objects in memory.
One untimed warm-up upload per phase comes first (the smallest size); then, for each repeat and
each size, the phases run in an order that alternates on every repeat. Before each run the
benchmark waits (a bounded time) for other processes on the machine to go quiet, and it reports
the CPU they used during each run.

Each stored object is checked and then deleted (moto holds everything in memory): its size, an
ETag of the expected number of parts, s3svc's reported size and SHA-256 against the bytes sent,
and the full-object CRC64NVME that ``head_object`` reports against the file's. moto verifies no
checksum it is sent, but with awscrt importable (a dependency now) it computes this one itself
over the object it assembled, so a match shows the stored bytes are the file's; a moto without
awscrt reports a 4-byte CRC32 under that name, which is then only reported, not compared.

Reported per size and phase: median MiB/s (2^20 bytes/s) and the ratio s3svc / direct (target
>= 0.85); CPU milliseconds per MiB of s3svc, of the sending client (curl, or this process when
``--client aiohttp``) and of the direct client (this process), and the ratio
(s3svc + sender) / direct (target <= 1.6, issue 14), also reported against the direct client
plus one SHA-256 pass over the file (s3svc's whole-file hash, which the direct client skips);
s3svc's peak resident memory (``VmHWM``, reset through ``/proc/<pid>/clear_refs`` before each
of its runs) for each size, which should not grow with the file (target: the largest size's
peak within one part of the smallest's, and <= 150 MiB). Targets are reported as met or missed; the exit status is 0 either way (speed is
measured, never asserted).

Run from the repository root: ``make bench`` or ``.venv/bin/python bench/upload.py --help``.
The report replaces the ``## s3svc upload`` section of ``bench/RESULTS.md`` (``--no-write`` to
only print it), keeping its hand-written ``(by hand ...)`` subsections.
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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

# ``python bench/upload.py`` puts bench/ (not the repository root) on sys.path; add the root so
# the project's packages and the test helpers (tests.procs) import.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from awscrt import checksums  # noqa: E402

from bench.results import add_no_write, command_line, measured_line, publish  # noqa: E402
from common.aws import open_client  # noqa: E402
from common.config import AwsSettings  # noqa: E402
from s3svc.config import GIB, MIB  # noqa: E402
from tests.procs import ServiceProcess, free_port, rss_kib  # noqa: E402

BUCKET = "bench-uploads"
REGION = "us-east-1"
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
# Issue 14's targets: throughput through s3svc against direct, and CPU per MiB of the service
# path (s3svc + the client sending to it) against the direct client's.
TARGET_RATIO = 0.85
TARGET_CPU_RATIO = 1.6
TARGET_RSS_MIB = 150.0
PHASES = ("s3svc", "direct")
DEFAULT_SIZES = (256 * MIB, GIB)
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


def own_cpu_seconds() -> tuple[float, float]:
    """CPU seconds of this process (all its threads) and of its reaped children (curl)."""
    t = os.times()
    return t.user + t.system, t.children_user + t.children_system


def machine_cpu_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores, everything but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / CLK_TCK


def reset_peak_rss(pid: int) -> None:
    """Reset ``VmHWM`` of ``pid`` to its current RSS (Linux ``clear_refs``: 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def b64(digest: bytes) -> str:
    """Base64 of a digest, as S3's checksum headers want it."""
    return base64.b64encode(digest).decode("ascii")


def crc_b64(crc: int) -> str:
    """A CRC64NVME as S3's header wants it: the base64 of its 8 big-endian bytes."""
    return b64(crc.to_bytes(8, "big"))


def is_crc64(value: str) -> bool:
    """True when ``value`` is a CRC64NVME as S3 reports one (8 bytes in base64); moto without
    awscrt reports a 4-byte CRC32 under that name."""
    try:
        return len(base64.b64decode(value, validate=True)) == 8
    except ValueError:
        return False


class CrcChain:
    """The file's running CRC64NVME, fed block by block in order, as s3svc keeps it."""

    def __init__(self) -> None:
        self.crc = 0

    def add(self, block: bytes) -> int:
        """Feed ``block`` (in a thread); returns the block's own CRC64NVME (its part checksum)."""
        self.crc = checksums.crc64nvme(block, self.crc)
        part: int = checksums.crc64nvme(block)
        return part


async def chained_crc(previous: asyncio.Future[int] | None, chain: CrcChain, block: bytes) -> int:
    """The block's CRC64NVME, once every earlier block was fed to ``chain`` (in a thread)."""
    if previous is not None:
        await previous
    return await asyncio.to_thread(chain.add, block)


def read_block(f: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes of ``f``; fewer only at its end."""
    return f.read(n)


def open_binary(path: Path) -> BinaryIO:
    """``path`` opened for binary reading (called through a thread from async code)."""
    return path.open("rb")


@dataclass(frozen=True)
class DataFile:
    """One test file: where it is, its size and the digests of its bytes."""

    path: Path
    size: int
    sha256: str
    crc64nvme: str  # base64, as S3 reports it


def make_data_file(path: Path, size: int) -> DataFile:
    """Write ``size`` bytes (a seeded pseudo-random pattern, repeated) to ``path``."""
    pattern = random.Random(SEED).randbytes(PATTERN_BYTES)
    view = memoryview(pattern)
    hasher = hashlib.sha256()
    crc = 0
    written = 0
    with path.open("wb") as f:
        while written < size:
            offset = written % PATTERN_BYTES
            chunk = view[offset : offset + min(IO_CHUNK, size - written, PATTERN_BYTES - offset)]
            f.write(chunk)
            hasher.update(chunk)
            crc = checksums.crc64nvme(chunk, crc)
            written += len(chunk)
    return DataFile(path, size, hasher.hexdigest(), crc_b64(crc))


def pass_cost_ms_per_mib() -> dict[str, float]:
    """CPU ms per MiB of one pass over 8 MiB blocks in this process: SHA-256 (hashlib, as the
    whole-file hash), CRC64NVME (awscrt) and a copy (``bytes(bytearray)``)."""
    block = random.Random(SEED).randbytes(8 * MIB)
    jobs: dict[str, Callable[[], object]] = {
        "sha256": lambda: hashlib.sha256(block).digest(),
        "crc64nvme": lambda: checksums.crc64nvme(block),
        "copy": lambda: bytes(bytearray(block)),
    }
    out = {}
    for name, job in jobs.items():
        job()
        started = time.process_time()
        for _ in range(8):
            job()
        out[name] = 1000 * (time.process_time() - started) / 64
    return out


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


# The CPU columns of a run: moto, s3svc, this process ("bench": the direct client, or the
# aiohttp sender), its children ("curl"), and the rest of the machine.
CPU_KEYS = ("moto", "s3svc", "bench", "curl", "others")


@dataclass
class Run:
    """One timed upload."""

    phase: str
    seconds: float
    size: int
    cpu: dict[str, float]  # CPU seconds during the run, by CPU_KEYS
    complete_s: float | None = None  # direct only: how long complete_multipart_upload took
    waited_s: float = 0.0  # how long the run waited for the machine to go quiet
    peak_kib: int | None = None  # s3svc only: its VmHWM over this run

    @property
    def mib_per_s(self) -> float:
        """Throughput in MiB/s (2^20 bytes per second)."""
        return self.size / self.seconds / MIB

    @property
    def sender(self) -> float:
        """CPU seconds of whatever sent the bytes to s3svc: curl and this (waiting) process, or
        this process alone when it is the aiohttp client."""
        return self.cpu["bench"] + self.cpu["curl"]

    @property
    def service_path(self) -> float:
        """CPU seconds of the service path: s3svc plus the client sending to it."""
        return self.cpu["s3svc"] + self.sender

    def per_mib(self, seconds: float) -> float:
        """CPU ``seconds`` of this run as milliseconds per MiB uploaded."""
        return 1000.0 * seconds / (self.size / MIB)

    def cpu_pct(self, who: str) -> float:
        """CPU used by ``who`` as % of one core over the run's wall time."""
        return 100.0 * self.cpu[who] / self.seconds


@dataclass
class Bench:
    """Everything one benchmark run needs: the processes, the S3 client and the test files."""

    args: argparse.Namespace
    moto: MotoProcess
    s3svc: ServiceProcess
    s3: Any
    command: str = ""
    # What S3 reported for the stored objects, per phase and size: ChecksumCRC64NVME, type.
    reported: dict[tuple[str, int], tuple[str, str]] = field(default_factory=dict)
    last_complete_s: float | None = None

    @property
    def s3svc_pid(self) -> int:
        """Process id of s3svc."""
        assert self.s3svc.proc is not None
        return self.s3svc.proc.pid

    def cpu_now(self) -> dict[str, float]:
        """CPU seconds so far of moto, s3svc, this process, its children and the whole machine."""
        own, children = own_cpu_seconds()
        return {
            "moto": cpu_seconds(self.moto.pid),
            "s3svc": cpu_seconds(self.s3svc_pid),
            "bench": own,
            "curl": children,
            "machine": machine_cpu_seconds(),
        }

    @staticmethod
    def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        """Per-process CPU between two readings; ``others`` is the machine's busy time left over."""
        delta = {k: after[k] - before[k] for k in before}
        ours = sum(delta[k] for k in CPU_KEYS if k != "others")
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

    async def timed(self, phase: str, data: DataFile) -> Run:
        """One upload of ``phase``, with its wall time, every process's CPU and s3svc's peak."""
        waited = await self.wait_quiet()
        self.last_complete_s = None
        if phase == "s3svc":
            reset_peak_rss(self.s3svc_pid)
        before = self.cpu_now()
        started = time.perf_counter()
        key = await (self.via_s3svc(data) if phase == "s3svc" else self.direct(data))
        seconds = time.perf_counter() - started
        cpu = self.cpu_delta(before, self.cpu_now())
        peak = rss_kib(self.s3svc_pid, "VmHWM") if phase == "s3svc" else None
        await self.verify(phase, data, key)
        return Run(phase, seconds, data.size, cpu, self.last_complete_s, waited, peak)

    async def verify(self, phase: str, data: DataFile, key: str) -> None:
        """The object has the right size and number of parts, and the full-object CRC64NVME S3
        reports is the file's when it is one (8 bytes); then it is deleted (moto is in memory)."""
        head = await self.s3.head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
        size = int(head["ContentLength"])
        if size != data.size:
            raise RuntimeError(f"{phase}: stored {size} bytes, sent {data.size}")
        parts = expected_parts(data.size, self.args.part_size)
        etag = str(head["ETag"]).strip('"')
        if parts > 1 and not etag.endswith(f"-{parts}"):
            raise RuntimeError(f"{phase}: ETag {etag} is not that of {parts} parts")
        crc, kind = str(head.get("ChecksumCRC64NVME", "")), str(head.get("ChecksumType", ""))
        self.reported[(phase, data.size)] = (crc, kind)
        if is_crc64(crc) and (crc != data.crc64nvme or kind != "FULL_OBJECT"):
            raise RuntimeError(
                f"{phase}: S3 reports CRC64NVME {crc} ({kind}), the file's is {data.crc64nvme}"
            )
        await self.s3.delete_object(Bucket=BUCKET, Key=key)

    async def via_s3svc(self, data: DataFile) -> str:
        """POST the file to s3svc; returns the stored key after checking size and SHA-256."""
        url = self.s3svc.url + "/s3/upload"
        if self.args.client == "curl":
            body = await self._post_curl(url, data)
        else:
            body = await self._post_aiohttp(url, data)
        item = body["files"][0]
        if item["sha256"] != data.sha256:
            raise RuntimeError(f"s3svc sha256 {item['sha256']} != sent {data.sha256}")
        if item["size"] != data.size:
            raise RuntimeError(f"s3svc size {item['size']} != sent {data.size}")
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

    async def _post_curl(self, url: str, data: DataFile) -> dict[str, Any]:
        proc = await asyncio.create_subprocess_exec(
            "curl",
            "-sS",
            "--max-time",
            "600",
            "-H",
            "Expect:",  # send the body at once rather than wait for 100 Continue
            "-F",
            f"file=@{data.path};type={CONTENT_TYPE};filename={FILENAME}",
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

    async def _post_aiohttp(self, url: str, data: DataFile) -> dict[str, Any]:
        async def chunks() -> AsyncIterator[bytes]:
            f = await asyncio.to_thread(open_binary, data.path)
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

    async def direct(self, data: DataFile) -> str:
        """The same bytes, sent with aiobotocore multipart with the calls s3svc makes."""
        key = f"direct/{time.monotonic_ns()}-{FILENAME}"
        part_size: int = self.args.part_size
        created = await self.s3.create_multipart_upload(
            Bucket=BUCKET,
            Key=key,
            ChecksumAlgorithm="CRC64NVME",
            ChecksumType="FULL_OBJECT",
            ContentType=CONTENT_TYPE,
            Metadata={"original-filename": FILENAME},
        )
        upload_id: str = created["UploadId"]
        slots = asyncio.Semaphore(self.args.inflight)
        tasks: list[asyncio.Task[dict[str, Any]]] = []
        chain = CrcChain()
        crc: asyncio.Future[int] | None = None

        async def send(number: int, block: bytes, crc: asyncio.Future[int]) -> dict[str, Any]:
            try:
                checksum = crc_b64(await crc)
                resp = await self.s3.upload_part(
                    Bucket=BUCKET,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=block,
                    ChecksumAlgorithm="CRC64NVME",
                    ChecksumCRC64NVME=checksum,
                )
                return {"PartNumber": number, "ETag": resp["ETag"], "ChecksumCRC64NVME": checksum}
            finally:
                slots.release()

        f = await asyncio.to_thread(open_binary, data.path)
        try:
            # As s3svc: read the next block while up to ``inflight`` parts are being sent; the
            # CRCs are computed in a thread, in order, the file's running one with each part's.
            while block := await asyncio.to_thread(read_block, f, part_size):
                await slots.acquire()
                crc = asyncio.ensure_future(chained_crc(crc, chain, block))
                tasks.append(asyncio.create_task(send(len(tasks) + 1, block, crc)))
                del block
            parts = await asyncio.gather(*tasks)
            completing = time.perf_counter()
            await self.s3.complete_multipart_upload(
                Bucket=BUCKET,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                ChecksumCRC64NVME=crc_b64(chain.crc),
                ChecksumType="FULL_OBJECT",
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
        env["MOTO_S3_DEFAULT_KEY_BUFFER_SIZE"] = str(max(2 * max(args.size), 64 * MIB))
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
        MAX_UPLOAD_BYTES=str(max(*args.size, 5 * GIB)),
        LOG_LEVEL="info",
        AWS_READ_TIMEOUT=str(args.read_timeout),
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


def report(
    bench: Bench,
    runs: list[Run],
    files: list[DataFile],
    rss: dict[str, int],
    costs: dict[str, float],
) -> str:
    """The Markdown tables and the targets."""
    args = bench.args

    def of(phase: str, size: int) -> list[Run]:
        return [r for r in runs if r.phase == phase and r.size == size]

    def med(rs: list[Run], f: Callable[[Run], float]) -> float:
        return statistics.median(f(r) for r in rs)

    def paired(size: int, f: Callable[[Run, Run], float]) -> list[float]:
        """``f(s3svc run, direct run)`` for each repeat, in order."""
        return [f(a, b) for a, b in zip(of("s3svc", size), of("direct", size), strict=True)]

    sender = "`curl -F`" if args.client == "curl" else "aiohttp MultipartWriter (chunked)"
    sender_short = "curl" if args.client == "curl" else "aiohttp client"
    parts = {d.size: expected_parts(d.size, args.part_size) for d in files}
    sizes = " and ".join(human(d.size) for d in files)
    lines = [
        f"{measured_line(bench.command)}.",
        "",
        f"One moto server, its own process (objects in {args.moto_spool}, each deleted after "
        f"its run); files of {sizes}. **s3svc**: {sender} posts the file to `python -m s3svc` "
        f"(PART_SIZE {human(args.part_size)}, {args.inflight} parts in flight), which streams it "
        'as a multipart upload created with `ChecksumAlgorithm="CRC64NVME", '
        'ChecksumType="FULL_OBJECT"`, each part with its `ChecksumCRC64NVME` (awscrt, in a '
        "thread), the completion with the file's CRC64NVME, and hashes the whole file "
        "(SHA-256) on the way. **direct**: this process sends the same file with aiobotocore "
        "(s3svc's client settings) and the same calls: that `create_multipart_upload`, "
        f"{human(args.part_size)} `upload_part`s with each part's CRC64NVME computed in a thread, "
        f"{args.inflight} in flight while the next part is read, "
        '`complete_multipart_upload(ChecksumCRC64NVME=<file>, ChecksumType="FULL_OBJECT", '
        'IfNoneMatch="*")`; no whole-file SHA-256 (s3svc\'s own extra). Both sign over '
        "`http://`, so botocore hashes every payload byte (SigV4) in both paths. Timed runs per "
        f"phase and size: {args.repeats}, after {args.warmup} untimed warm-up per phase; order "
        "alternating. MiB/s = 2^20 bytes/s. CPU in ms per MiB uploaded (user + system, all "
        f"threads): **sender** = {sender_short} + this process while it waits, **direct client** "
        "= this process in the direct phase; others = the rest of the machine (% of one core, "
        "kernel included). Medians over runs; s3svc's peak RSS is its `VmHWM`, reset before "
        "each of its runs (max over runs).",
        "",
        "| size | phase | MiB/s (min-max) | median s | of which moto completes | "
        "s3svc ms/MiB | sender ms/MiB | direct client ms/MiB | moto ms/MiB | others CPU | "
        "s3svc peak RSS |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for d in files:
        for phase in PHASES:
            rs = of(phase, d.size)
            speeds = [r.mib_per_s for r in rs]
            completes = [r.complete_s for r in rs if r.complete_s is not None]
            complete = f"{statistics.median(completes):.2f} s" if completes else "(not seen)"
            moto = med(rs, lambda r: r.per_mib(r.cpu["moto"]))
            others = med(rs, lambda r: r.cpu_pct("others"))
            if phase == "s3svc":
                peak = max(r.peak_kib or 0 for r in rs) / 1024
                cols = (
                    f"{med(rs, lambda r: r.per_mib(r.cpu['s3svc'])):.2f} | "
                    f"{med(rs, lambda r: r.per_mib(r.sender)):.2f} | | {moto:.2f} | "
                    f"{others:.0f}% | {peak:.1f} MiB"
                )
            else:
                cols = (
                    f"| | {med(rs, lambda r: r.per_mib(r.cpu['bench'])):.2f} | {moto:.2f} | "
                    f"{others:.0f}% |"
                )
            lines.append(
                f"| {human(d.size)} | {phase} | {med(rs, lambda r: r.mib_per_s):.1f} "
                f"({min(speeds):.1f}-{max(speeds):.1f}) | {med(rs, lambda r: r.seconds):.2f} | "
                f"{complete} | {cols} |"
            )

    def fmt(values: list[float]) -> str:
        return ", ".join(f"{v:.2f}" for v in values)

    lines += [
        "",
        "| target | measured (per repeat) | goal | met |",
        "| --- | ---: | ---: | :---: |",
    ]
    for d in files:
        speed = med(of("s3svc", d.size), lambda r: r.mib_per_s) / med(
            of("direct", d.size), lambda r: r.mib_per_s
        )
        cpu = med(of("s3svc", d.size), lambda r: r.per_mib(r.service_path)) / med(
            of("direct", d.size), lambda r: r.per_mib(r.cpu["bench"])
        )
        alone = med(of("s3svc", d.size), lambda r: r.per_mib(r.cpu["s3svc"])) / med(
            of("direct", d.size), lambda r: r.per_mib(r.cpu["bench"])
        )
        # The same ratio against a direct client that also hashed the whole file, as s3svc does:
        # the direct phase's CPU plus one measured SHA-256 pass (``costs``), per repeat.
        hashing = [
            a.per_mib(a.service_path) / (b.per_mib(b.cpu["bench"]) + costs["sha256"])
            for a, b in zip(of("s3svc", d.size), of("direct", d.size), strict=True)
        ]
        lines += [
            f"| {human(d.size)}: MiB/s, s3svc / direct (medians) | **{speed:.2f}** "
            f"[{fmt(paired(d.size, lambda a, b: a.mib_per_s / b.mib_per_s))}] | "
            f"≥ {TARGET_RATIO} | {'yes' if speed >= TARGET_RATIO else 'NO'} |",
            f"| {human(d.size)}: CPU per MiB, (s3svc + sender) / direct client (medians) | "
            f"**{cpu:.2f}** "
            f"[{fmt(paired(d.size, lambda a, b: a.service_path / b.cpu['bench']))}] | "
            f"≤ {TARGET_CPU_RATIO} | {'yes' if cpu <= TARGET_CPU_RATIO else 'NO'} |",
            f"| {human(d.size)}: CPU per MiB, s3svc alone / direct client (medians) | "
            f"{alone:.2f} "
            f"[{fmt(paired(d.size, lambda a, b: a.cpu['s3svc'] / b.cpu['bench']))}] | | |",
            f"| {human(d.size)}: CPU per MiB, (s3svc + sender) / (direct client + one SHA-256 "
            f"pass) (median of repeats) | {statistics.median(hashing):.2f} [{fmt(hashing)}] | | |",
        ]
    peaks = {d.size: max(r.peak_kib or 0 for r in of("s3svc", d.size)) / 1024 for d in files}
    small, large = files[0].size, files[-1].size
    if len(files) > 1:
        growth = peaks[large] - peaks[small]
        allowed = args.part_size / MIB
        lines.append(
            f"| s3svc peak RSS, {human(large)} minus {human(small)} (flat in file size) | "
            f"{growth:+.1f} MiB | ≤ {allowed:.0f} MiB (one part) | "
            f"{'yes' if growth <= allowed else 'NO'} |"
        )
    lines.append(
        f"| s3svc peak RSS at {human(large)} | {peaks[large]:.1f} MiB | "
        f"≤ {TARGET_RSS_MIB:.0f} MiB | {'yes' if peaks[large] <= TARGET_RSS_MIB else 'NO'} |"
    )
    extra = med(of("s3svc", large), lambda r: r.per_mib(r.service_path)) - med(
        of("direct", large), lambda r: r.per_mib(r.cpu["bench"])
    )
    lines += [
        "",
        f"At {human(large)} the service path spends {extra:.2f} ms of CPU per MiB more than the "
        "direct client. For scale, one pass over 8 MiB blocks in this Python costs "
        f"{costs['sha256']:.2f} ms/MiB for SHA-256 (hashlib: the whole-file hash; botocore's "
        f"SigV4 payload hash is another, in both paths), {costs['crc64nvme']:.3f} ms/MiB for "
        f"CRC64NVME (awscrt) and {costs['copy']:.2f} ms/MiB for a copy.",
        "",
        f"s3svc's RSS after startup: {rss['startup'] / 1024:.1f} MiB; after one small 2-part "
        f"upload (code and models loaded): {rss['warm'] / 1024:.1f} MiB; peak over the whole "
        f"run (warm-ups included): {rss['peak'] / 1024:.1f} MiB.",
        "",
        "Timed runs in order (CPU in ms per MiB):",
        "",
        "| # | size | phase | s | MiB/s | moto completes | s3svc | curl | this process | moto | "
        "others CPU | s3svc peak RSS | waited for quiet |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for i, r in enumerate(runs, 1):
        complete = f"{r.complete_s:.2f} s" if r.complete_s is not None else ""
        hwm = f"{r.peak_kib / 1024:.1f} MiB" if r.peak_kib is not None else ""
        lines.append(
            f"| {i} | {human(r.size)} | {r.phase} | {r.seconds:.2f} | {r.mib_per_s:.1f} | "
            f"{complete} | {r.per_mib(r.cpu['s3svc']):.2f} | {r.per_mib(r.cpu['curl']):.2f} | "
            f"{r.per_mib(r.cpu['bench']):.2f} | {r.per_mib(r.cpu['moto']):.2f} | "
            f"{r.cpu_pct('others'):.0f}% | {hwm} | {r.waited_s:.0f} s |"
        )
    checks = []
    for d in files:
        seen = {bench.reported.get((p, d.size), ("", ""))[0] for p in PHASES}
        kinds = {bench.reported.get((p, d.size), ("", ""))[1] or "none" for p in PHASES}
        if all(is_crc64(v) for v in seen):
            checks.append(f"{human(d.size)} {d.crc64nvme} ({' / '.join(sorted(kinds))})")
        else:
            value = " / ".join(sorted(v or "none" for v in seen))
            checks.append(
                f"{human(d.size)}: not checked, S3 reported {value!r} for the file's "
                f"{d.crc64nvme} (moto without awscrt reports a CRC32 under that name)"
            )
    lines += [
        "",
        "Checked on every run: the stored size equals the file's, with an ETag of "
        f"{' and '.join(str(n) for n in parts.values())} parts; s3svc's reported size and sha256 "
        "equal the file's; the full-object CRC64NVME that `head_object` reports (moto computes "
        "it over the object it assembled, with awscrt) equals the file's: "
        + "; ".join(checks)
        + ".",
    ]
    busy = [r for r in runs if r.cpu_pct("others") >= QUIET_PCT]
    if busy:
        lines += [
            "",
            f"Note: in {len(busy)} of {len(runs)} runs the rest of the machine used ≥ "
            f"{QUIET_PCT:.0f}% of a core (kernel networking is counted there too); on a 2-core "
            "machine that competes with moto and s3svc, so those runs' MiB/s are noisy (CPU per "
            "MiB much less so).",
        ]
    return "\n".join(lines)


def log_run(label: str, r: Run) -> None:
    """One progress line on stderr."""
    complete = f" complete {r.complete_s:.2f} s" if r.complete_s is not None else ""
    peak = f" peak {r.peak_kib / 1024:.0f} MiB" if r.peak_kib is not None else ""
    print(
        f"{label}: {human(r.size):>9} {r.phase:6} {r.seconds:6.2f} s {r.mib_per_s:6.1f} MiB/s"
        f"{complete}{peak} | CPU ms/MiB s3svc {r.per_mib(r.cpu['s3svc']):.2f} curl "
        f"{r.per_mib(r.cpu['curl']):.2f} bench {r.per_mib(r.cpu['bench']):.2f} moto "
        f"{r.per_mib(r.cpu['moto']):.2f} | others {r.cpu_pct('others'):3.0f}%"
        + (f" (waited {r.waited_s:.0f} s for quiet)" if r.waited_s >= 2 * QUIET_WINDOW else ""),
        file=sys.stderr,
    )


async def run(args: argparse.Namespace, workdir: Path, command: str) -> str:
    """Write the files, start moto and s3svc, run the phases, and return the report."""
    files: list[DataFile] = []
    for size in args.size:
        path = workdir / f"{size}-{FILENAME}"
        print(f"writing {human(size)} of test data to {path} …", file=sys.stderr)
        files.append(await asyncio.to_thread(make_data_file, path, size))
    costs = pass_cost_ms_per_mib()
    moto = MotoProcess(workdir / "moto.log", moto_env(args)).start()
    s3svc: ServiceProcess | None = None
    try:
        os.environ.update(FAKE_CREDENTIALS)
        # The direct client has s3svc's client settings (retries, timeouts, pool).
        aws = AwsSettings(region=REGION, endpoint_url=moto.url, read_timeout=args.read_timeout)
        async with open_client("s3", aws) as s3:
            await s3.create_bucket(Bucket=BUCKET)
            s3svc = ServiceProcess("s3svc", s3svc_env(moto.url, args), workdir / "s3svc.log")
            s3svc.start()
            wait_ready(s3svc.url)
            assert s3svc.proc is not None
            rss = {"startup": rss_kib(s3svc.proc.pid, "VmRSS")}
            bench = Bench(args, moto, s3svc, s3, command)
            await bench.small_upload()
            rss["warm"] = rss_kib(s3svc.proc.pid, "VmRSS")
            peak = rss_kib(s3svc.proc.pid, "VmHWM")
            for i in range(args.warmup):
                for phase in PHASES:
                    r = await bench.timed(phase, files[0])
                    peak = max(peak, r.peak_kib or 0)
                    log_run(f"warm-up {i + 1}", r)
            runs: list[Run] = []
            for i in range(args.repeats):
                for data in files:
                    for phase in PHASES if i % 2 == 0 else PHASES[::-1]:
                        runs.append(await bench.timed(phase, data))
                        log_run(f"run {len(runs)}", runs[-1])
            rss["peak"] = max([peak, *(r.peak_kib or 0 for r in runs)])
            return report(bench, runs, files, rss, costs)
    except Exception:
        for name, text in (("moto", moto.output()), ("s3svc", s3svc.output() if s3svc else "")):
            print(f"--- last lines of {name}'s output:\n{text[-3000:]}", file=sys.stderr)
        raise
    finally:
        if s3svc is not None:
            s3svc.stop()
        moto.stop()


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, run the benchmark and print the Markdown report; exit 0 on success."""
    p = argparse.ArgumentParser(
        description="s3svc upload throughput, CPU per MiB and memory versus a direct aiobotocore "
        "client making the same S3 calls, against one moto server (see the module docstring)."
    )
    p.add_argument(
        "--size",
        type=parse_size,
        action="append",
        default=None,
        help="file size; repeat for several (default 256MiB and 1GiB; peak memory is compared "
        "between the smallest and the largest)",
    )
    p.add_argument(
        "--repeats", type=int, default=3, help="timed runs per phase and size (default 3)"
    )
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
        "--read-timeout",
        type=float,
        default=60.0,
        help="AWS_READ_TIMEOUT of s3svc and of the direct client (default 60 s: moto assembles "
        "and checksums the whole object in Python when completing, which on a loaded machine "
        "can take longer than the 10 s default for 1 GiB)",
    )
    p.add_argument(
        "--s3svc-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for s3svc (repeatable)",
    )
    p.add_argument("--workdir", type=Path, default=None, help="where the test files go")
    add_no_write(p)
    args = p.parse_args(argv)
    args.size = sorted(set(args.size or DEFAULT_SIZES))
    if args.part_size < 5 * MIB:
        p.error("--part-size must be at least 5MiB (S3's minimum)")
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    if args.size[0] <= args.part_size:
        p.error("every --size must be larger than --part-size (the benchmark measures multipart)")
    command = command_line("upload.py", argv)
    with tempfile.TemporaryDirectory(prefix="s3svc-bench-", dir=args.workdir) as tmp:
        factory = new_event_loop_factory(args.loop)
        with asyncio.Runner(loop_factory=factory) as runner:
            body = runner.run(run(args, Path(tmp), command))
    publish(SECTION, body, write=args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
