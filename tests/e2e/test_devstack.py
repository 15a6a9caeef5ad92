"""``make run``'s devstack on a bare machine: every curl line of the docs, links and peeks.

The devstack runs with no ``AWS_*`` variable, no AWS profile and an empty ``HOME``, as on a
newcomer's machine: it must sign its own calls (and its children's) with the fake local identity.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.procs import ROOT, free_port

pytestmark = pytest.mark.skipif(
    shutil.which("curl") is None, reason="curl not installed (.ci/run installs it)"
)

# A curl line, perhaps fed by a printf (a body from stdin), perhaps with its expected status.
_CURL = re.compile(r"^((?:printf \S+ \| )?curl .*?)(?:\s+#\s*→\s*(\d{3}))?\s*$")
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DEFAULT_PORTS = ("8080", "8081", "8082")


def doc_curl_lines() -> list[tuple[str, int | None]]:
    """(command, expected status) for each curl line aimed at the local stack in the docs."""
    out = []
    for path in DOC_FILES:
        for line in path.read_text().splitlines():
            m = _CURL.match(line.strip())
            if m and "localhost:808" in m.group(1):
                out.append((m.group(1), int(m.group(2)) if m.group(2) else None))
    return out


def bare_env(home: Path) -> dict[str, str]:
    """A newcomer's environment: a PATH and an empty HOME, nothing of AWS at all."""
    home.mkdir(exist_ok=True)
    return {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8"}


@dataclass
class Devstack:
    """A running devstack and where it listens."""

    ports: dict[str, int]
    env: dict[str, str]
    output: Path

    def local(self, command: str) -> str:
        """``command`` with the default ports replaced by this stack's."""
        for default in DEFAULT_PORTS:
            command = command.replace(f"localhost:{default}", f"localhost:{self.ports[default]}")
        return command

    def curl(self, command: str) -> tuple[int, str]:
        """Run a curl line from the repository root; (HTTP status, body)."""
        done = subprocess.run(
            [
                "bash",
                "-c",
                self.local(command).replace("curl ", "curl -sS -w '\\n%{http_code}' ", 1),
            ],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        body, _, status = done.stdout.rpartition("\n")
        assert status.isdigit(), (command, done.stdout, done.stderr)
        return int(status), body

    def peek(self, what: str) -> str:
        """``make uploads`` / ``make messages`` as make runs them, pointed at this stack's moto."""
        done = subprocess.run(
            [sys.executable, "-m", "deploy.peek", what, "--moto-port", str(self.ports["moto"])],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout


@pytest.fixture(scope="module")
def devstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devstack]:
    """The devstack on free ports in a bare environment; Ctrl-C stops it, and every port is free
    again afterwards."""
    tmp = tmp_path_factory.mktemp("devstack")
    ports = {name: free_port() for name in (*DEFAULT_PORTS, "moto")}
    env = bare_env(tmp / "home")
    output = tmp / "devstack.log"
    flags = {"8080": "--s3-port", "8081": "--sqs-port", "8082": "--sqs-fifo-port"}
    args = [arg for d, f in flags.items() for arg in (f, str(ports[d]))]
    with output.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "deploy.devstack", *args, "--moto-port", str(ports["moto"])],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 90
            while "devstack ready" not in output.read_text(errors="replace"):
                assert proc.poll() is None, output.read_text()
                assert time.monotonic() < deadline, output.read_text()
                time.sleep(0.2)
            yield Devstack(ports, env, output)
        finally:
            proc.send_signal(signal.SIGINT)
            code = proc.wait(60)
    text = output.read_text(errors="replace")
    assert code == 0, text
    assert "devstack: stopping" in text
    for port in ports.values():
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))


def test_docs_have_curl_lines_for_the_stack() -> None:
    """The docs show the commands the next test runs (guards against it checking nothing)."""
    commands = [c for c, _ in doc_curl_lines()]
    assert any("/s3/upload" in c for c in commands)
    assert any("/s3/health" in c for c in commands)
    assert any("/sqs/send" in c for c in commands)
    assert any("/sqs/send-batch" in c for c in commands)
    assert any("localhost:8082" in c for c in commands)


def test_every_doc_curl_line_runs(devstack: Devstack) -> None:
    """Each curl line of the README and docs/ answers as written (2xx, or the status after →)."""
    for command, expected in doc_curl_lines():
        status, body = devstack.curl(command)
        if expected is None:
            assert 200 <= status < 300, (command, body)
        else:
            assert status == expected, (command, body)


def test_upload_answer_links_back_to_the_file(devstack: Devstack) -> None:
    """make run turns download links on: the link fetched from the host returns the stored
    bytes, and carries the hour the devstack sets."""
    status, body = devstack.curl('curl -F "file=@README.md" http://localhost:8080/s3/upload')
    assert status == 201, body
    (stored,) = json.loads(body)["files"]
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(stored["download_url"]).query)
    assert query["X-Amz-Expires"] == ["3600"]
    with urllib.request.urlopen(stored["download_url"], timeout=10) as got:
        assert got.read() == (ROOT / "README.md").read_bytes()
    assert stored["key"] in devstack.peek("uploads")


def test_peek_messages_shows_without_consuming(devstack: Devstack) -> None:
    """``make messages`` shows the messages of each queue, shows them again the next time, and
    leaves a FIFO group's order intact for the next consumer."""
    import boto3

    sqs = boto3.client(
        "sqs",
        endpoint_url=f"http://127.0.0.1:{devstack.ports['moto']}",
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    for url in sqs.list_queues()["QueueUrls"]:
        sqs.purge_queue(QueueUrl=url)  # what other tests sent would crowd the first 10
    marker = f"peek-{time.monotonic_ns()}"
    sends = [("8081", f"{marker}-std", "")] + [
        ("8082", f"{marker}-step{i}", ',"group_id":"g1"') for i in (1, 2, 3)
    ]
    for port, text, extra in sends:
        status, body = devstack.curl(
            "curl -X POST -H 'Content-Type: application/json' "
            f'-d \'{{"message":"{text}"{extra}}}\' http://localhost:{port}/sqs/send'
        )
        assert status == 200, body
    for _ in range(3):
        shown = devstack.peek("messages")
        for _, text, _ in sends:
            assert text in shown, shown
    assert "group=g1" in shown
    fifo = next(u for u in sqs.list_queues()["QueueUrls"] if u.endswith(".fifo"))
    got = sqs.receive_message(QueueUrl=fifo, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in got] == [f"{marker}-step{i}" for i in (1, 2, 3)]


def test_make_logs_shows_the_services_lines(devstack: Devstack) -> None:
    """``make logs`` tails the local log group: JSON lines the services shipped."""
    deadline = time.monotonic() + 30
    while '"event":"listening"' not in (out := devstack.peek("logs")):
        assert time.monotonic() < deadline, out
        time.sleep(1)
    assert all(line.startswith("{") for line in out.splitlines() if line.strip())


def test_banner_names_the_peek_commands(devstack: Devstack) -> None:
    """The banner tells a newcomer how to see what was stored."""
    text = devstack.output.read_text(errors="replace")
    assert "make uploads" in text
    assert "make messages" in text
    assert "make logs" in text


def test_banner_names_the_upload_page(devstack: Devstack) -> None:
    """The banner names the upload page, and the page is there (HTML, with its CSP)."""
    text = devstack.output.read_text(errors="replace")
    port = devstack.ports["8080"]
    assert f"upload page, in a browser: http://localhost:{port}/s3/" in text
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/s3/", timeout=10) as page:
        assert page.headers["Content-Type"] == "text/html; charset=utf-8"
        assert "default-src 'none'" in page.headers["Content-Security-Policy"]
        assert 'data-download-links="on"' in page.read().decode()


def test_port_in_use_gets_a_clear_message(tmp_path: Path) -> None:
    """A taken port is named in a one-line message that names every port flag."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "deploy.devstack",
                "--s3-port",
                str(port),
                "--moto-port",
                str(free_port()),
            ],
            cwd=ROOT,
            env=bare_env(tmp_path / "home"),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert f"s3svc port {port}" in done.stderr
    for flag in ("--s3-port", "--sqs-port", "--sqs-fifo-port", "--moto-port"):
        assert flag in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--s3-port", "70000"], "not a port number from 1 to 65535"),
        (["--s3-port", "9300", "--sqs-port", "9300"], "needs a port of its own"),
    ],
)
def test_bad_ports_get_a_one_line_message(tmp_path: Path, args: list[str], message: str) -> None:
    """A port out of range or given twice: a message naming the problem, no stack trace."""
    done = subprocess.run(
        [sys.executable, "-m", "deploy.devstack", *args],
        cwd=ROOT,
        env=bare_env(tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode in (1, 2)
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_ctrl_c_while_starting_stops_cleanly(tmp_path: Path) -> None:
    """A terminal's Ctrl-C (SIGINT to the whole process group) while the stack is still starting:
    everything stops, exit 0, no traceback, every port free again."""
    ports = {name: free_port() for name in (*DEFAULT_PORTS, "moto")}
    flags = {"8080": "--s3-port", "8081": "--sqs-port", "8082": "--sqs-fifo-port"}
    args = [arg for d, f in flags.items() for arg in (f, str(ports[d]))]
    output = tmp_path / "devstack.log"
    with output.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "deploy.devstack", *args, "--moto-port", str(ports["moto"])],
            cwd=ROOT,
            env=bare_env(tmp_path / "home"),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a shell gives a job
        )
        deadline = time.monotonic() + 60
        while "moto listening" not in output.read_text(errors="replace"):
            assert proc.poll() is None, output.read_text()
            assert time.monotonic() < deadline, output.read_text()
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(60)
    text = output.read_text(errors="replace")
    assert code == 0, text
    assert "devstack: stopping" in text
    assert "Traceback" not in text
    for port in ports.values():
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
