"""``docker/compose.yaml`` up on the session's engine, the README's "Try it" lines against it, down.

The images are the ones built from the Dockerfiles (``--no-build``), moto's is built locally
(``--pull never``). The private engine has no bridge network, so ``docker/compose.host.yaml`` puts
every container on the host's network, at free ports instead of the README's, which the lines are
rewritten to (as the devstack test does). Compose is Docker's v2-line binary (pinned in
``compose-requirements.txt``): Debian's docker-compose 1.29 refuses the file's top-level ``name``.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.containers import engine as eng
from tests.containers.conftest import COMPOSE, Image
from tests.containers.engine import Engine
from tests.procs import ROOT, free_port

FILES = [ROOT / "docker" / "compose.yaml", ROOT / "docker" / "compose.host.yaml"]
# README port -> the host override's variable for it.
PORTS = {"8080": "S3SVC_PORT", "8081": "SQSSVC_PORT", "8082": "SQSSVC_FIFO_PORT"}
_LINE = re.compile(r"^(curl .*?)(?:\s+#\s*→\s*(\d{3}))?\s*$")


def try_it_lines() -> list[tuple[str, int | None]]:
    """The README's "Try it" block: (curl command, expected status or None for any 2xx)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Try it", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh", 1)[1].split("```", 1)[0]
    found = []
    for line in block.strip().splitlines():
        m = _LINE.match(line.strip())
        assert m, f"not a curl line: {line}"
        found.append((m.group(1), int(m.group(2)) if m.group(2) else None))
    return found


@dataclass
class Stack:
    """A compose project that is up: how to run compose against it and its ports."""

    compose: list[str]
    env: dict[str, str]
    ports: dict[str, int]
    docker: Engine

    def __call__(self, *args: str, timeout: float = 300) -> str:
        """``docker-compose -f compose.yaml -f compose.host.yaml ARGS``."""
        return eng.run([*self.compose, *args], env=self.env, cwd=ROOT, timeout=timeout).stdout

    def curl(self, command: str) -> tuple[int, str]:
        """A README curl line, pointed at this stack's ports: (status, body)."""
        for default, var in PORTS.items():
            command = command.replace(f"localhost:{default}", f"localhost:{self.ports[var]}")
        done = subprocess.run(
            ["bash", "-c", command.replace("curl ", "curl -sS -w '\\n%{http_code}' ", 1)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        body, _, status = done.stdout.rpartition("\n")
        assert status.isdigit(), (command, done.stdout, done.stderr)
        return int(status), body


def _wait_ready(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{url} never ready"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def stack(
    docker: Engine,
    images: dict[str, Image],
    moto_image: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """The compose project up (and, afterwards, down), on free ports."""
    binary = eng.ensure_compose()
    ports = {var: free_port() for var in ("MOTO_PORT", *PORTS.values())}
    env = docker.env | {k: str(v) for k, v in ports.items()}
    env["DOCKER_CONFIG"] = str(tmp_path_factory.mktemp("compose-config"))
    compose = [str(binary), *(arg for f in FILES for arg in ("-f", str(f)))]
    found = Stack(compose, env, ports, docker)
    with eng.timed("compose up"):
        found("up", "--detach", "--no-build", "--pull=never", "--quiet-pull")
        for var, path in (
            ("S3SVC_PORT", "/s3"),
            ("SQSSVC_PORT", "/sqs"),
            ("SQSSVC_FIFO_PORT", "/sqs"),
        ):
            _wait_ready(f"http://127.0.0.1:{ports[var]}{path}/ready")
    try:
        yield found
    finally:
        logs = found("logs", "--no-color", timeout=120)
        with eng.timed("compose down"):
            found("down", "--volumes", "--remove-orphans", "--timeout=40")
        project = f"--filter=label=com.docker.compose.project={COMPOSE['name']}"
        left = docker("ps", "--all", "--quiet", project).split()
        assert left == [], f"left behind after down: {left}\n{logs[-4000:]}"
        if docker.private:  # the suite's own engine: nothing at all runs there now
            assert docker("ps", "--quiet").split() == []


def test_compose_file_names_the_images_built_here(
    images: dict[str, Image], moto_image: str
) -> None:
    """compose.yaml's images are the ones the checks build: its services run exactly those."""
    services = COMPOSE["services"]
    assert services["moto"]["image"] == moto_image
    for name in ("init", "s3svc"):
        assert services[name]["image"] == images["s3svc"].tag
    for name in ("sqssvc", "sqssvc-fifo"):
        assert services[name]["image"] == images["sqssvc"].tag


def test_readme_try_it_lines_against_compose(stack: Stack) -> None:
    """Each "Try it" line of the README answers as written (2xx, or the status after →)."""
    lines = try_it_lines()
    assert any("/s3/upload" in c for c, _ in lines)
    assert any("localhost:8082" in c for c, _ in lines)
    for command, expected in lines:
        status, body = stack.curl(command)
        if expected is None:
            assert 200 <= status < 300, (command, body)
        else:
            assert status == expected, (command, body)


def test_compose_services_state(stack: Stack) -> None:
    """moto and the three services run (healthy by their checks in time), init ran once and
    exited 0, and every container shares the host's network."""
    listed = [
        json.loads(ln)
        for ln in stack("ps", "--all", "--format=json").splitlines()
        if ln.strip().startswith("{")
    ]
    states = {c["Service"]: c for c in listed}
    assert set(states) == set(COMPOSE["services"]), states
    assert states["init"]["State"] == "exited"
    assert states["init"]["ExitCode"] == 0
    for name in ("moto", "s3svc", "sqssvc", "sqssvc-fifo"):
        assert states[name]["State"] == "running", states[name]
    for c in listed:
        mode = stack.docker("inspect", "-f", "{{.HostConfig.NetworkMode}}", c["Name"]).strip()
        assert mode == "host", (c["Name"], mode)


def test_upload_link_of_compose_stack_fetches_the_file(stack: Stack, tmp_path: Path) -> None:
    """Download links point where the host reaches moto (``DOWNLOAD_URL_ENDPOINT``)."""
    status, body = stack.curl('curl -F "file=@README.md" http://localhost:8080/s3/upload')
    assert status == 201, body
    (stored,) = json.loads(body)["files"]
    link = stored["download_url"]
    assert link.startswith(f"http://localhost:{stack.ports['MOTO_PORT']}/"), link
    with urllib.request.urlopen(link, timeout=10) as got:
        assert got.read() == (ROOT / "README.md").read_bytes()
