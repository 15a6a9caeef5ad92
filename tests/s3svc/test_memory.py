"""Memory stays bounded: a file 21x the part size through a running s3svc process.

Peak RSS growth (VmHWM after the upload minus RSS before it) must stay under
(in-flight parts + 2) x part size + 32 MiB, whatever the file size.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from s3svc.config import MIB
from tests.procs import ServiceProcess, rss_kib

PART = 5 * MIB
INFLIGHT = 2
PARTS = 21


async def upload_stream(url: str, parts: int, block: bytes) -> dict[str, Any]:
    """POST a chunked multipart body generated on the fly (the test never holds the file)."""

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(parts * PART // len(block)):
            yield block

    writer = aiohttp.MultipartWriter("form-data")
    payload = writer.append(chunks(), {"Content-Type": "application/octet-stream"})
    payload.set_content_disposition("form-data", name="file", filename="big.bin")
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + "/s3/upload", data=writer) as resp,
    ):
        assert resp.status == 201, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


async def test_peak_rss_growth_is_bounded(
    service_env: dict[str, str], bucket: str, s3: Any, tmp_path: Path
) -> None:
    """Uploading 105 MiB grows s3svc's peak RSS by less than (2 + 2) x 5 MiB + 32 MiB."""
    env = dict(
        service_env,
        BUCKET_NAME=bucket,
        PART_SIZE=str(PART),
        UPLOAD_MAX_INFLIGHT_PARTS=str(INFLIGHT),
        LOG_LEVEL="warning",
    )
    svc = ServiceProcess("s3svc", env, tmp_path / "s3svc.log").start()
    try:
        block = bytes(range(256)) * 4096  # 1 MiB
        assert svc.proc is not None
        # Warm up every code path (multipart, threads, botocore loaders) before measuring.
        await upload_stream(svc.url, 2, block)
        before = rss_kib(svc.proc.pid, "VmRSS")
        body = await upload_stream(svc.url, PARTS, block)
        peak = rss_kib(svc.proc.pid, "VmHWM")
    finally:
        svc.stop()
    (item,) = body["files"]
    assert item["size"] == PARTS * PART
    assert item["sha256"] == hashlib.sha256(block * (PARTS * PART // len(block))).hexdigest()
    growth_mib = (peak - before) / 1024
    bound_mib = (INFLIGHT + 2) * PART / MIB + 32
    assert growth_mib < bound_mib, f"peak RSS grew {growth_mib:.1f} MiB (bound {bound_mib} MiB)"
