"""Raw hostile requests against a running service, shared by tests/s3svc and tests/sqssvc."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tests.procs import ServiceProcess, rss_kib


@dataclass(frozen=True)
class Case:
    """One raw request and what must come back."""

    name: str
    head: str  # request line and headers, without Content-Length
    body: bytes
    status: int
    error: str | None = None
    trickle: bool = False  # send part of the body, then go quiet


async def send_raw(
    host: str, port: int, case: Case, timeout: float = 60
) -> tuple[int, dict[str, Any]]:
    """Send the case's bytes; returns the status and the JSON body."""
    reader, writer = await asyncio.open_connection(host, port)
    head = case.head + f"Content-Length: {len(case.body)}\r\n\r\n"
    writer.write(head.encode())
    if case.trickle:
        writer.write(case.body[:300])  # then nothing more: the server must give up
    else:
        writer.write(case.body)
    await writer.drain()
    # Read exactly one response (the server may linger on the unsent rest of the body before
    # closing). wait_for is a hang guard, not a speed target.
    head_raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    lines = head_raw.decode("latin-1").split("\r\n")
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
    }
    body = await asyncio.wait_for(
        reader.readexactly(int(headers.get("content-length", "0"))), timeout
    )
    writer.close()
    return int(lines[0].split()[1]), json.loads(body) if body.strip() else {}


async def replay(svc: ServiceProcess, cases: Sequence[Case], rounds: int = 3) -> float:
    """Send every case ``rounds`` times to a running service; each answer must be < 500.

    Returns the growth of the service's peak RSS (VmHWM) over its RSS before, in MiB.
    """
    assert svc.proc is not None
    before = rss_kib(svc.proc.pid)
    for _ in range(rounds):
        for case in cases:
            status, _ = await send_raw("127.0.0.1", svc.port, case)
            assert status < 500, case.name
    return (rss_kib(svc.proc.pid, "VmHWM") - before) / 1024
