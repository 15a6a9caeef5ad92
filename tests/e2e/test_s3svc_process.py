"""s3svc as the container runs it (``python -m s3svc``), driven by real ``curl -F``.

SIGTERM during an upload: with a long enough grace period the upload completes (201, object
intact); with a short one it is cut off and leaves nothing behind. Either way, no half-written
object and no open multipart upload.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from s3svc.config import MIB
from tests.conftest import open_uploads
from tests.procs import ServiceProcess

pytestmark = pytest.mark.skipif(
    shutil.which("curl") is None, reason="curl not installed (.ci/run installs it)"
)

PART = 5 * MIB


def curl_upload(url: str, path: Path, *, rate: str | None = None) -> subprocess.Popen[str]:
    """Start ``curl -F file=@path`` (optionally rate-limited) writing status + body to stdout."""
    args = ["curl", "-sS", "-F", f"file=@{path}", "-w", "\n%{http_code}", url + "/s3/upload"]
    if rate:
        args[1:1] = ["--limit-rate", rate]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


async def wait_for_upload_start(s3: Any, bucket: str, timeout: float = 20.0) -> None:
    """Until a multipart upload is open in the bucket (the service is mid-file)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await open_uploads(s3, bucket):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no multipart upload started")


async def objects(s3: Any, bucket: str) -> list[str]:
    """Keys in the bucket."""
    return [o["Key"] for o in (await s3.list_objects_v2(Bucket=bucket)).get("Contents", [])]


@pytest.fixture
def big_file(tmp_path: Path) -> Path:
    """A 30 MiB file of random bytes (6 parts)."""
    path = tmp_path / "payload.bin"
    path.write_bytes(os.urandom(6 * PART))
    return path


async def test_curl_upload_round_trip(
    service_env: dict[str, str], bucket: str, s3: Any, tmp_path: Path, big_file: Path
) -> None:
    """The README's curl line stores the file; the log is one JSON object per line."""
    env = dict(service_env, BUCKET_NAME=bucket, PART_SIZE=str(PART))
    svc = ServiceProcess("s3svc", env, tmp_path / "s3svc.log").start()
    try:
        curl = curl_upload(svc.url, big_file)
        out, err = curl.communicate(timeout=120)
    finally:
        svc.stop()
    body, status = out.rsplit("\n", 1)
    assert status == "201", (out, err)
    (item,) = json.loads(body)["files"]
    assert item["sha256"] == hashlib.sha256(big_file.read_bytes()).hexdigest()
    assert item["filename"] == "payload.bin"
    assert await objects(s3, bucket) == [item["key"]]
    records = [json.loads(line) for line in svc.output().splitlines() if line.strip()]
    access = [r for r in records if r["event"] == "request"]
    assert access[-1]["status"] == 201
    assert access[-1]["request_id"] == json.loads(body)["request_id"]


async def test_sigterm_mid_upload_within_grace_completes(
    service_env: dict[str, str], bucket: str, s3: Any, tmp_path: Path, big_file: Path
) -> None:
    """SIGTERM with a generous grace period: the in-flight upload finishes, then the process exits 0."""
    env = dict(service_env, BUCKET_NAME=bucket, PART_SIZE=str(PART), SHUTDOWN_GRACE_SECONDS="30")
    svc = ServiceProcess("s3svc", env, tmp_path / "s3svc.log").start()
    try:
        curl = curl_upload(svc.url, big_file, rate="10M")
        await wait_for_upload_start(s3, bucket)
        svc.signal(signal.SIGTERM)
        out, err = curl.communicate(timeout=120)
        code = svc.wait(60)
    finally:
        svc.stop()
    body, status = out.rsplit("\n", 1)
    assert status == "201", (out, err, svc.output()[-2000:])
    assert code == 0
    (item,) = json.loads(body)["files"]
    stored = await s3.get_object(Bucket=bucket, Key=item["key"])
    async with stored["Body"] as stream:
        assert (
            hashlib.sha256(await stream.read()).hexdigest()
            == hashlib.sha256(big_file.read_bytes()).hexdigest()
        )
    assert await open_uploads(s3, bucket) == []


async def test_sigterm_mid_upload_past_grace_leaves_nothing(
    service_env: dict[str, str], bucket: str, s3: Any, tmp_path: Path, big_file: Path
) -> None:
    """SIGTERM with a grace period shorter than the upload: cut off, aborted, nothing stored."""
    env = dict(service_env, BUCKET_NAME=bucket, PART_SIZE=str(PART), SHUTDOWN_GRACE_SECONDS="0.5")
    svc = ServiceProcess("s3svc", env, tmp_path / "s3svc.log").start()
    try:
        curl = curl_upload(svc.url, big_file, rate="4M")
        await wait_for_upload_start(s3, bucket)
        svc.signal(signal.SIGTERM)
        out, _ = curl.communicate(timeout=120)
        code = svc.wait(30)
    finally:
        svc.stop()
    assert not out.endswith("\n201")
    assert code == 0
    assert await objects(s3, bucket) == []
    assert await open_uploads(s3, bucket) == []
    assert '"upload_aborted"' in svc.output()
