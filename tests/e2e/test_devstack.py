"""``make run``'s devstack on free ports, and every curl line of the README against it."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.procs import ROOT, free_port

pytestmark = pytest.mark.skipif(
    shutil.which("curl") is None, reason="curl not installed (.ci/run installs it)"
)

_CURL = re.compile(r"^(curl .*?)(?:\s+#\s*→\s*(\d{3}))?\s*$")


def readme_curl_lines() -> list[tuple[str, int | None]]:
    """(command, expected status) for each curl line aimed at the local stack in README.md."""
    out = []
    for line in (ROOT / "README.md").read_text().splitlines():
        m = _CURL.match(line.strip())
        if m and "localhost:808" in m.group(1):
            out.append((m.group(1), int(m.group(2)) if m.group(2) else None))
    return out


def test_readme_has_curl_lines_for_the_stack() -> None:
    """The README shows the commands this test runs (guards against the test checking nothing)."""
    commands = [c for c, _ in readme_curl_lines()]
    assert any("/s3/upload" in c for c in commands)
    assert any("/s3/health" in c for c in commands)
    assert any("/sqs/send" in c for c in commands)
    assert any("/sqs/send-batch" in c for c in commands)


def test_devstack_serves_the_readme_curl_lines(tmp_path: Path) -> None:
    """Start the devstack, run the README's curl lines against it, then Ctrl-C stops everything."""
    ports = {"8080": free_port(), "8081": free_port(), "8082": free_port(), "moto": free_port()}
    log = (tmp_path / "devstack.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "deploy/devstack.py",
            "--s3-port",
            str(ports["8080"]),
            "--sqs-port",
            str(ports["8081"]),
            "--sqs-fifo-port",
            str(ports["8082"]),
            "--moto-port",
            str(ports["moto"]),
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    output = tmp_path / "devstack.log"
    try:
        deadline = time.monotonic() + 90
        while "devstack ready" not in output.read_text(errors="replace"):
            assert proc.poll() is None, output.read_text()
            assert time.monotonic() < deadline, output.read_text()
            time.sleep(0.2)
        for command, expected in readme_curl_lines():
            local = command
            for default in ("8080", "8081", "8082"):
                local = local.replace(f"localhost:{default}", f"localhost:{ports[default]}")
            done = subprocess.run(
                ["bash", "-c", local.replace("curl ", "curl -sS -w '\\n%{http_code}' ", 1)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
            )
            status = int(done.stdout.rsplit("\n", 1)[-1])
            if expected is None:
                assert 200 <= status < 300, (command, done.stdout, done.stderr)
            else:
                assert status == expected, (command, done.stdout, done.stderr)
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
        log.close()
    text = output.read_text(errors="replace")
    assert code == 0, text
    assert "devstack: stopping" in text
    # Every process of the stack is gone: its ports are free again.
    for port in ports.values():
        with __import__("socket").socket() as s:
            s.setsockopt(__import__("socket").SOL_SOCKET, __import__("socket").SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))


def test_port_in_use_gets_a_clear_message() -> None:
    """A taken port is named in a one-line message and the stack does not start."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable,
                "deploy/devstack.py",
                "--s3-port",
                str(port),
                "--moto-port",
                str(free_port()),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert f"s3svc port {port}" in done.stderr
