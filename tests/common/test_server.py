"""``python -m s3svc`` serves through the same connections the in-process tests start: parser
errors answer JSON and ``REQUEST_HEADERS_TIMEOUT`` closes an unfinished head."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import ServiceProcess

# Generous: only a hang reaches it.
PATIENCE = 10.0


@pytest.fixture
def s3svc(service_env: dict[str, str], tmp_path: Path) -> Iterator[ServiceProcess]:
    """s3svc as its own process (local-safe mode: no bucket), header timeout 0.5 s."""
    env = dict(service_env, REQUEST_HEADERS_TIMEOUT="0.5")
    proc = ServiceProcess("s3svc", env, tmp_path / "s3svc.log").start()
    try:
        yield proc
    finally:
        proc.stop()


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(PATIENCE)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def answer_of(raw: bytes) -> tuple[int, dict[str, object]]:
    """Status and JSON body of one raw response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"application/json" in head
    return int(head.split(b" ")[1]), json.loads(body)


def test_process_answers_parser_errors_as_json(s3svc: ServiceProcess) -> None:
    """A negative Content-Length sent to the real process is answered in the JSON shape."""
    with socket.create_connection(("127.0.0.1", s3svc.port), timeout=PATIENCE) as sock:
        sock.sendall(b"POST /s3/upload HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n")
        status, body = answer_of(read_all(sock))
    assert (status, body["error"]) == (400, "invalid_framing")


def test_process_closes_an_unfinished_head(s3svc: ServiceProcess) -> None:
    """Headers that never finish are answered 408 and the connection closed."""
    with socket.create_connection(("127.0.0.1", s3svc.port), timeout=PATIENCE) as sock:
        sock.sendall(b"GET /s3/health HTTP/1.1\r\nHost: a\r\n")
        status, body = answer_of(read_all(sock))
    assert (status, body["error"]) == (408, "request_header_timeout")
