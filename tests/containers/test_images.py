"""Both images, built from their Dockerfiles, run as containers against the session's moto.

Each container gets the host's network (the private engine has no bridge) and the moto address,
and must: answer health and readiness; store an upload or send a message; run as the Dockerfile's
non-root uid; hold no compiler and no test dependency; turn ``healthy`` by its own ``HEALTHCHECK``;
and end with exit code 0 on ``docker stop`` (SIGTERM) within its grace period, an upload in flight
then completing or leaving nothing behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from deploy.policies import load_template, resolve
from tests.conftest import FAKE_CREDENTIALS, REGION, log_lines, open_uploads
from tests.containers.conftest import SERVICES, Image
from tests.containers.engine import Engine
from tests.deploy.dockerfile import parse
from tests.deploy.test_runtime_image import DEV_ONLY, _check_upload_page
from tests.procs import ROOT, free_port

COMPILERS = ("gcc", "cc", "c++", "g++", "clang", "make", "ld")
MIB = 1024 * 1024


@dataclass
class Container:
    """A running service container: its name, port and environment."""

    docker: Engine
    name: str
    port: int
    image: Image

    @property
    def url(self) -> str:
        """Where it listens (the host's loopback: it shares the host's network)."""
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        """Its output so far (stdout and stderr)."""
        done = self.docker.try_("logs", self.name)
        return (done.stdout + done.stderr)[-8000:]

    def state(self) -> dict[str, Any]:
        """``docker inspect``'s State."""
        state: dict[str, Any] = json.loads(
            self.docker("inspect", "-f", "{{json .State}}", self.name)
        )
        return state

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        """GET ``path``: (status, JSON body)."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as resp:
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as err:
            return err.code, json.load(err)

    def wait_serving(self, timeout: float = 60) -> None:
        """Until ``/health`` answers (a hang guard, not a speed target)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1):
                    return
            except OSError:
                state = self.state()
                assert state["Running"], (state, self.logs())
                assert time.monotonic() < deadline, self.logs()
                time.sleep(0.2)


def _env(moto_url: str, **extra: str) -> dict[str, str]:
    return {
        **FAKE_CREDENTIALS,
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_REGION": REGION,
        "HOST": "127.0.0.1",
        **extra,
    }


@pytest.fixture
def start(docker: Engine, images: dict[str, Image]) -> Iterator[Any]:
    """Start a service's image (``docker run -d --network host --read-only``) with the given
    environment and docker flags; every container is removed afterwards."""
    started: list[str] = []

    def run(service: str, env: dict[str, str], *docker_flags: str) -> Container:
        name = f"{service}-{uuid.uuid4().hex[:8]}"
        port = free_port()
        flags = [f"--env={k}={v}" for k, v in (env | {"PORT": str(port)}).items()]
        # Read-only root file system, as every task definition of the stack sets it.
        run_flags = ["-d", "--network=host", "--read-only", f"--name={name}", *docker_flags]
        docker("run", *run_flags, *flags, images[service].tag)
        started.append(name)
        box = Container(docker, name, port, images[service])
        box.wait_serving()
        return box

    yield run
    if started:
        docker.try_("rm", "-f", *started)


@pytest.fixture
def queue(moto_url: str) -> Iterator[str]:
    """A fresh standard queue in the session's moto; deleted afterwards."""
    import boto3

    sqs = boto3.client("sqs", endpoint_url=moto_url, region_name=REGION)
    url: str = sqs.create_queue(QueueName=f"containers-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    yield url
    sqs.delete_queue(QueueUrl=url)


def curl(*args: str) -> tuple[int, str]:
    """``curl ARGS`` from the repository root: (status, body)."""
    done = subprocess.run(
        ["curl", "-sS", "-w", "\n%{http_code}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    body, _, status = done.stdout.rpartition("\n")
    assert status.isdigit(), (done.stdout, done.stderr)
    return int(status), body


async def test_s3svc_container_serves_and_stores(
    start: Any, moto_url: str, bucket: str, s3: Any, app_version: str
) -> None:
    """Health (with the build's version), readiness, the upload page (package data the wheel must
    carry) and the README's upload line: 201, and the object in the bucket holds the file's
    bytes."""
    box: Container = start("s3svc", _env(moto_url, BUCKET_NAME=bucket))
    status, health = box.get("/s3/health")
    assert (status, health["status"], health["version"]) == (200, "ok", app_version)
    assert box.get("/s3/ready")[0] == 200, box.logs()
    _check_upload_page(box.port)
    status, body = curl("-F", "file=@README.md", box.url + "/s3/upload")
    assert status == 201, (body, box.logs())
    (item,) = json.loads(body)["files"]
    stored = await s3.get_object(Bucket=bucket, Key=item["key"])
    async with stored["Body"] as stream:
        assert await stream.read() == (ROOT / "README.md").read_bytes()


def test_sqssvc_container_serves_and_sends(start: Any, moto_url: str, queue: str) -> None:
    """Health, readiness and a send: 200, and the message is in the queue."""
    import boto3

    box: Container = start("sqssvc", _env(moto_url, QUEUE_URL=queue))
    assert box.get("/sqs/health")[0] == 200
    assert box.get("/sqs/ready")[0] == 200, box.logs()
    marker = uuid.uuid4().hex
    status, body = curl(
        "-X", "POST", "-H", "Content-Type: application/json",
        "-d", json.dumps({"message": marker}), box.url + "/sqs/send",
    )  # fmt: skip
    assert status == 200, (body, box.logs())
    sqs = boto3.client("sqs", endpoint_url=moto_url, region_name=REGION)
    got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    assert [m["Body"] for m in got["Messages"]] == [marker]  # a JSON string is sent as text


@pytest.mark.parametrize("service", SERVICES)
def test_container_runs_as_the_dockerfiles_non_root_user(
    service: str, start: Any, moto_url: str, bucket: str, docker: Engine
) -> None:
    """The serving process (PID 1) runs as the Dockerfile's ``USER``, which is not root."""
    user = parse(ROOT / "docker" / f"{service}.Dockerfile").final.one("USER").args
    assert user.isdigit()
    assert int(user) != 0
    env = _env(moto_url, BUCKET_NAME=bucket, QUEUE_URL=f"{moto_url}/123456789012/none")
    box: Container = start(service, env)
    assert docker("inspect", "-f", "{{.Config.User}}", box.name).strip() == user
    status = docker("exec", box.name, "cat", "/proc/1/status")
    uids = next(ln.split()[1:] for ln in status.splitlines() if ln.startswith("Uid:"))
    assert uids == [user] * 4
    cmdline = docker("exec", box.name, "cat", "/proc/1/cmdline").split("\0")
    assert cmdline[:3] == ["python", "-m", service]


@pytest.mark.parametrize("service", SERVICES)
def test_image_holds_no_compiler_and_no_test_dependency(
    service: str, docker: Engine, images: dict[str, Image]
) -> None:
    """No C compiler or build tool on PATH, and no dev tool (moto, pytest, ...) importable or
    installed: the build stage's tools stayed in the build stage."""
    tag = images[service].tag
    probe = " ; ".join(f"command -v {c} || true" for c in COMPILERS)
    found = docker("run", "--rm", "--network=none", "--entrypoint=sh", tag, "-c", probe)
    assert found.strip() == "", found
    for module in DEV_ONLY:
        done = docker.try_("run", "--rm", "--network=none", tag, "python", "-c", f"import {module}")
        assert done.returncode != 0, f"{module} is importable in {tag}"
        assert "ModuleNotFoundError" in done.stderr, done.stderr
    listed = docker("run", "--rm", "--network=none", tag, "python", "-m", "pip", "list")
    names = {ln.split()[0].lower() for ln in listed.splitlines()[2:] if ln.strip()}
    assert not names & {"moto", "pytest", "mypy", "ruff", "cfn-lint", "setuptools-scm"}, names


@pytest.mark.parametrize("service", SERVICES)
def test_healthcheck_turns_healthy(
    service: str, start: Any, moto_url: str, bucket: str, docker: Engine
) -> None:
    """The image's own ``HEALTHCHECK`` (the interpreter calling ``/health``) marks it healthy."""
    env = _env(moto_url, BUCKET_NAME=bucket, QUEUE_URL=f"{moto_url}/123456789012/none")
    box: Container = start(service, env)
    deadline = time.monotonic() + 120  # interval 10 s, start period 10 s: a hang guard
    while (health := box.state()["Health"])["Status"] != "healthy":
        assert health["Status"] == "starting", (health, box.logs())
        assert time.monotonic() < deadline, (health, box.logs())
        time.sleep(0.5)
    assert health["Log"][-1]["ExitCode"] == 0


async def test_docker_stop_mid_upload_completes_or_leaves_nothing(
    start: Any, moto_url: str, bucket: str, s3: Any, docker: Engine, tmp_path: Path
) -> None:
    """``docker stop`` while an upload streams: SIGTERM reaches the service (PID 1), which
    finishes the upload (201, bytes intact) or aborts it (no object, no open multipart upload),
    then exits 0, never killed at the end of ``docker stop``'s wait."""
    grace = 20
    env = _env(moto_url, BUCKET_NAME=bucket, PART_SIZE=str(5 * MIB))
    box: Container = start("s3svc", env | {"SHUTDOWN_GRACE_SECONDS": str(grace)})
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(6 * 5 * MIB))
    slow = ["curl", "-sS", "--limit-rate", "10M", "-w", "\n%{http_code}"]
    upload = subprocess.Popen(
        [*slow, "-F", f"file=@{payload}", box.url + "/s3/upload"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        async with asyncio.timeout(60):
            while not await open_uploads(s3, bucket):
                assert upload.poll() is None, upload.communicate()
                await asyncio.sleep(0.05)
        # docker stop waits this long for the exit, then SIGKILLs (exit code 137).
        docker("stop", f"--time={grace + 30}", box.name, timeout=grace + 90)
        out, err = upload.communicate(timeout=120)
    finally:
        if upload.poll() is None:
            upload.kill()
    state = box.state()
    assert (state["ExitCode"], state["OOMKilled"]) == (0, False), (state, box.logs())
    logs = box.logs()
    assert '"shutdown_started"' in logs
    assert '"drained"' in logs
    body, _, status = out.rpartition("\n")
    listed = (await s3.list_objects_v2(Bucket=bucket)).get("Contents", [])
    if status == "201":
        (item,) = json.loads(body)["files"]
        stored = await s3.get_object(Bucket=bucket, Key=item["key"])
        async with stored["Body"] as stream:
            got = hashlib.sha256(await stream.read()).hexdigest()
        assert got == hashlib.sha256(payload.read_bytes()).hexdigest()
    else:
        assert listed == [], (out, err, logs)
    assert await open_uploads(s3, bucket) == []


def test_docker_stop_ends_sqssvc_with_status_0(start: Any, moto_url: str, queue: str) -> None:
    """``docker stop``: sqssvc drains and exits 0 within its grace period."""
    box: Container = start("sqssvc", _env(moto_url, QUEUE_URL=queue, SHUTDOWN_GRACE_SECONDS="5"))
    status, _ = curl(
        "-X", "POST", "-H", "Content-Type: application/json", "-d", '{"message":"last"}',
        box.url + "/sqs/send",
    )  # fmt: skip
    assert status == 200
    box.docker("stop", "--time=60", box.name, timeout=120)
    state = box.state()
    assert (state["ExitCode"], state["OOMKilled"]) == (0, False), (state, box.logs())
    assert '"drained"' in box.logs()


def task_definition(service: str, values: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The stack's task definition of ``service`` and its container (the environment's
    references resolved with ``values``)."""
    template = load_template()
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::ECS::TaskDefinition":
            task = resource["Properties"]
            for container in task["ContainerDefinitions"]:
                if container["Name"] == service:
                    return task, container | {
                        "Environment": resolve(
                            container["Environment"], values, template["Conditions"]
                        )
                    }
    raise LookupError(service)


@pytest.mark.parametrize("service", SERVICES)
async def test_container_runs_as_its_task_definition_says(
    service: str,
    start: Any,
    moto_url: str,
    bucket: str,
    queue: str,
    log_group: str,
    logs_client: Any,
    docker: Engine,
) -> None:
    """With the stack's own settings (its environment, CPU and memory, read-only root file
    system; only moto's address and the port differ) the container serves a request, ships its
    log lines to CloudWatch Logs, and ``docker stop`` with the definition's ``stopTimeout`` ends
    it with status 0."""
    values = {
        "AWS::Region": REGION,
        "UploadBucket": bucket,
        "KeyPrefix": "uploads/",
        "DownloadUrlSeconds": "300",
        "S3AppLogGroup": log_group,
        "MessageQueue": queue,
        "SqsAppLogGroup": log_group,
        "AWS::StackName": "containers",
        "ApiKeysSha256": "",  # an open stack (AllowAnonymous): the checks send no key
    }
    task, container = task_definition(service, values)
    assert container["ReadonlyRootFilesystem"] is True
    env = {e["Name"]: str(e["Value"]) for e in container["Environment"]}
    sizes = [f"--cpus={int(task['Cpu']) / 1024}", f"--memory={task['Memory']}m"]
    box: Container = start(service, env | _env(moto_url), *sizes)
    base = env["BASE_PATH"]
    assert box.get(f"{base}/ready")[0] == 200, box.logs()
    if service == "s3svc":
        status, body = curl("-F", "file=@README.md", box.url + "/s3/upload")
        assert status == 201, (body, box.logs())
        assert json.loads(body)["files"][0]["key"].startswith("uploads/")
    else:
        status, body = curl(
            "-X", "POST", "-H", "Content-Type: application/json", "-d", '{"message":"task"}',
            box.url + "/sqs/send",
        )  # fmt: skip
        assert status == 200, (body, box.logs())
    stop = int(container["StopTimeout"])
    docker("stop", f"--time={stop}", box.name, timeout=stop + 60)
    state = box.state()
    assert (state["ExitCode"], state["OOMKilled"]) == (0, False), (state, box.logs())
    shipped = await log_lines(logs_client, log_group)
    assert any(line.get("event") == "request" for line in shipped), box.logs()
