"""Least privilege, proven: the task-role policies of ``deploy/stack.yaml`` are enough and no more.

A moto server of its own (``tests/deploy/moto_iam.py``, a subprocess, so IAM enforcement cannot
leak into the session's shared moto) holds two IAM roles whose inline policies are exactly the
``S3TaskRole`` and ``SqsTaskRole`` policies loaded from the template, plus, for sqssvc, one
addition for a moto quirk (below). IAM enforcement is then switched on. Each service runs as its
own process (``python -m s3svc`` / ``python -m sqssvc``) with its role's temporary credentials,
as on ECS, and every feature works: single and multipart uploads, the abort after a client
disconnect, single and batched sends, readiness, and log shipping: each service runs with
``CLOUDWATCH_LOG_GROUP`` set to its own group and its lines arrive there through watchtower
(``CreateLogStream``, ``PutLogEvents``); the same two calls are also made directly, to show they
are refused for every other group.
Called directly with those credentials, everything else the issue names is refused with
``AccessDenied``; each refusal has a control showing that an administrator's same call succeeds,
so the refusal is IAM's, not a missing resource.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import boto3
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from deploy.policies import load_template, resolve, role_policies
from s3svc.config import MIB
from tests.procs import ROOT, ServiceProcess, free_port

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
KEY_PREFIX = "uploads/"
ACCESS_DENIED = {"AccessDenied", "AccessDeniedException"}


@dataclass(frozen=True)
class Creds:
    """An access key (and session token, for an assumed role)."""

    key: str
    secret: str
    token: str | None = None

    def env(self) -> dict[str, str]:
        """As the AWS_* variables a process reads."""
        env = {"AWS_ACCESS_KEY_ID": self.key, "AWS_SECRET_ACCESS_KEY": self.secret}
        if self.token:
            env["AWS_SESSION_TOKEN"] = self.token
        return env


@dataclass(frozen=True)
class World:
    """The IAM-enforcing moto and everything created in it before enforcement began."""

    url: str
    bucket: str
    queue_url: str
    queue_arn: str
    other_queue_url: str
    s3_group: str
    sqs_group: str
    other_group: str
    admin: Creds
    s3_role: Creds
    s3_links_role: Creds  # the S3 task role with download links on (DownloadUrlSeconds > 0)
    sqs_role: Creds


def moto_quirk_policy(queue_arn: str) -> dict[str, Any]:
    """The only permission the test principal has beyond the template, and why.

    AWS authorises ``SendMessageBatch`` with ``sqs:SendMessage`` (what the template grants);
    moto checks a separate ``sqs:SendMessageBatch`` action instead. Same queue, nothing else.
    """
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "MotoQuirkSendMessageBatch",
                "Effect": "Allow",
                "Action": "sqs:SendMessageBatch",
                "Resource": queue_arn,
            }
        ],
    }


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}


@pytest.fixture(scope="module")
def iam_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto server subprocess that will enforce IAM (off until ``world`` turns it on)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("iam-moto") / "moto.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.deploy.moto_iam", "-H", "127.0.0.1", "-p", str(port)],
            cwd=ROOT,
            env=_clean_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"moto exited: {log_path.read_text(errors='replace')}")
                try:
                    with urllib.request.urlopen(url + "/moto-api/", timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            proc.wait(10)


def _boto(url: str, service: str, creds: Creds) -> Any:
    return boto3.client(
        service,
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=creds.key,
        aws_secret_access_key=creds.secret,
        aws_session_token=creds.token,
    )


@pytest.fixture(scope="module")
def world(iam_moto: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Resources, an admin user and the two task roles from the template; then IAM enforcement.

    Module-scoped, so it runs before the per-test AWS isolation: it strips the developer's AWS_*
    variables and profile files itself while it talks to moto.
    """
    empty = tmp_path_factory.mktemp("aws") / "empty"
    empty.touch()
    with pytest.MonkeyPatch.context() as mp:
        for name in [n for n in os.environ if n.startswith("AWS_")]:
            mp.delenv(name)
        mp.setenv("AWS_CONFIG_FILE", str(empty))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
        yield _build_world(iam_moto)


def _build_world(url: str) -> World:
    anyone = Creds("setup", "setup")  # enforcement is still off: any key is accepted
    iam = _boto(url, "iam", anyone)
    tag = uuid.uuid4().hex[:8]

    iam.create_user(UserName="admin")
    iam.put_user_policy(
        UserName="admin",
        PolicyName="everything",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
            }
        ),
    )
    key = iam.create_access_key(UserName="admin")["AccessKey"]
    admin = Creds(key["AccessKeyId"], key["SecretAccessKey"])

    bucket = f"lp-uploads-{tag}"
    _boto(url, "s3", admin).create_bucket(Bucket=bucket)
    sqs = _boto(url, "sqs", admin)
    queue_url = sqs.create_queue(QueueName=f"lp-messages-{tag}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    other_queue_url = sqs.create_queue(QueueName=f"lp-other-{tag}")["QueueUrl"]
    logs = _boto(url, "logs", admin)
    groups = {name: f"/lp-{tag}/{name}" for name in ("s3svc", "sqssvc", "other")}
    for group in groups.values():
        logs.create_log_group(logGroupName=group)

    template = load_template()
    values = {
        "AWS::Region": REGION,
        "AWS::AccountId": ACCOUNT,
        "UploadBucket": bucket,
        "KeyPrefix": KEY_PREFIX,
        "S3AppLogGroup": groups["s3svc"],
        "SqsAppLogGroup": groups["sqssvc"],
        "MessageQueue.Arn": queue_arn,
    }
    extra = {"SqsTaskRole": {"moto-quirk": moto_quirk_policy(queue_arn)}}
    sts = _boto(url, "sts", admin)
    roles: dict[str, Creds] = {}
    # (role name, logical id in the template, parameter values besides the common ones)
    variants = [
        ("S3TaskRole", "S3TaskRole", {"DownloadUrlSeconds": "0"}),
        ("S3TaskRoleLinks", "S3TaskRole", {"DownloadUrlSeconds": "3600"}),
        ("SqsTaskRole", "SqsTaskRole", {}),
    ]
    for role, logical, params in variants:
        props = template["Resources"][logical]["Properties"]
        arn = iam.create_role(
            RoleName=f"{role}-{tag}",
            AssumeRolePolicyDocument=json.dumps(resolve(props["AssumeRolePolicyDocument"], values)),
        )["Role"]["Arn"]
        policies = role_policies(logical, values | params, template) | extra.get(logical, {})
        for name, document in policies.items():
            iam.put_role_policy(
                RoleName=f"{role}-{tag}", PolicyName=name, PolicyDocument=json.dumps(document)
            )
        got = sts.assume_role(RoleArn=arn, RoleSessionName="ecs-task")["Credentials"]
        roles[role] = Creds(got["AccessKeyId"], got["SecretAccessKey"], got["SessionToken"])

    # From here on every request is authorised against the caller's policies.
    req = urllib.request.Request(
        url + "/moto-api/reset-auth",
        data=b"0",
        method="POST",
        headers={"Content-Type": "text/plain"},  # a form type would hide the body from moto
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200
    return World(
        url=url,
        bucket=bucket,
        queue_url=queue_url,
        queue_arn=queue_arn,
        other_queue_url=other_queue_url,
        s3_group=groups["s3svc"],
        sqs_group=groups["sqssvc"],
        other_group=groups["other"],
        admin=admin,
        s3_role=roles["S3TaskRole"],
        s3_links_role=roles["S3TaskRoleLinks"],
        sqs_role=roles["SqsTaskRole"],
    )


def service_env(world: World, creds: Creds, tmp: Path, **settings: str) -> dict[str, str]:
    """A service's environment: the task role's credentials and the IAM-enforcing moto only."""
    empty = tmp / "aws-empty"
    empty.touch()
    return (
        _clean_env()
        | creds.env()
        | {
            "AWS_CONFIG_FILE": str(empty),
            "AWS_SHARED_CREDENTIALS_FILE": str(empty),
            "AWS_ENDPOINT_URL": world.url,
            "AWS_REGION": REGION,
            "AWS_MAX_ATTEMPTS": "1",
            "PYTHONUNBUFFERED": "1",
        }
        | settings
    )


@pytest.fixture(scope="module")
def s3svc(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """``python -m s3svc`` with the s3svc task role's credentials."""
    tmp = tmp_path_factory.mktemp("lp-s3svc")
    env = service_env(
        world,
        world.s3_role,
        tmp,
        BUCKET_NAME=world.bucket,
        KEY_PREFIX=KEY_PREFIX,
        PART_SIZE="5MiB",
        # moto can answer an abort that races a part it is still storing with a 500: botocore's
        # retry (as AWS's default attempts) lets the client-gone test see the abort through.
        AWS_MAX_ATTEMPTS="3",
        CLOUDWATCH_LOG_GROUP=world.s3_group,
        CLOUDWATCH_SEND_INTERVAL="0.5",
    )
    svc = ServiceProcess("s3svc", env, tmp / "s3svc.log").start()
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="module")
def sqssvc(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """``python -m sqssvc`` with the sqssvc task role's credentials."""
    tmp = tmp_path_factory.mktemp("lp-sqssvc")
    env = service_env(
        world,
        world.sqs_role,
        tmp,
        QUEUE_URL=world.queue_url,
        CLOUDWATCH_LOG_GROUP=world.sqs_group,
        CLOUDWATCH_SEND_INTERVAL="0.5",
    )
    svc = ServiceProcess("sqssvc", env, tmp / "sqssvc.log").start()
    try:
        yield svc
    finally:
        svc.stop()


@asynccontextmanager
async def client(world: World, service: str, creds: Creds) -> AsyncIterator[Any]:
    """An aiobotocore client on the IAM-enforcing moto with exactly ``creds``."""
    async with get_session().create_client(  # type: ignore[call-overload]
        service,
        region_name=REGION,
        endpoint_url=world.url,
        aws_access_key_id=creds.key,
        aws_secret_access_key=creds.secret,
        aws_session_token=creds.token,
        config=AioConfig(retries={"total_max_attempts": 1}),
    ) as c:
        yield c


def denial_code(exc: ClientError) -> str:
    """The error code of a refused call.

    moto answers an IAM refusal of a JSON-protocol call (SQS) with its XML error document, which
    botocore cannot parse: the code is then the HTTP status and the XML is in the message.
    """
    error = exc.response.get("Error", {})
    code, message = str(error.get("Code", "")), str(error.get("Message", ""))
    if code == "403" and "<Code>AccessDenied</Code>" in message:
        return "AccessDenied"
    return code


async def assert_denied(call: Any) -> None:
    """The awaitable fails with AccessDenied."""
    with pytest.raises(ClientError) as info:
        await call
    assert denial_code(info.value) in ACCESS_DENIED, info.value.response


async def upload(svc: ServiceProcess, name: str, data: bytes) -> dict[str, Any]:
    """POST one file to s3svc; returns the stored file's JSON."""
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type="application/octet-stream")
    async with (
        aiohttp.ClientSession() as session,
        session.post(svc.url + "/s3/upload", data=form) as resp,
    ):
        body = await resp.json()
        assert resp.status == 201, (body, svc.output()[-3000:])
    (item,) = body["files"]
    assert isinstance(item, dict)
    return item


async def stored_sha256(world: World, key: str) -> str:
    """SHA-256 of an object, read by the administrator."""
    async with client(world, "s3", world.admin) as s3:
        obj = await s3.get_object(Bucket=world.bucket, Key=key)
        async with obj["Body"] as stream:
            return hashlib.sha256(await stream.read()).hexdigest()


# ---------------------------------------------------------------------------------------- s3svc


async def test_s3svc_ready_with_only_its_task_role(s3svc: ServiceProcess) -> None:
    """Readiness (an abort of a made-up upload id under the prefix) passes with the task role."""
    async with aiohttp.ClientSession() as session, session.get(s3svc.url + "/s3/ready") as resp:
        assert resp.status == 200, await resp.text()


async def test_single_and_multipart_uploads_work(world: World, s3svc: ServiceProcess) -> None:
    """A one-part upload (PutObject) and a three-part one (multipart) are stored intact."""
    small = os.urandom(1000)
    large = os.urandom(12 * MIB)  # three parts of 5 MiB, the last one shorter
    for name, data in (("small.bin", small), ("large.bin", large)):
        item = await upload(s3svc, name, data)
        assert item["key"].startswith(KEY_PREFIX)
        assert await stored_sha256(world, item["key"]) == hashlib.sha256(data).hexdigest()


async def _open_uploads(world: World, name: str) -> list[dict[str, Any]]:
    async with client(world, "s3", world.admin) as s3:
        listed = await s3.list_multipart_uploads(Bucket=world.bucket)
    return [u for u in listed.get("Uploads", []) if u["Key"].endswith("/" + name)]


async def test_client_disconnect_aborts_the_upload(world: World, s3svc: ServiceProcess) -> None:
    """A client that goes away mid-file: the service's AbortMultipartUpload is allowed, so no
    open upload and no object remain."""
    name = f"gone-{uuid.uuid4().hex[:8]}.bin"
    boundary = "lpboundary"
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    declared = len(head) + 40 * MIB + len(f"\r\n--{boundary}--\r\n")
    _, writer = await asyncio.open_connection("127.0.0.1", s3svc.port)
    writer.write(
        (
            "POST /s3/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {declared}\r\n\r\n"
        ).encode()
        + head
    )
    # Two parts and more (PART_SIZE 5 MiB) of the 40 MiB declared: the file cannot be a single
    # PUT, so the service opens a multipart upload while it waits for the rest. Wait for that
    # (CreateMultipartUpload runs on its own time), then go away.
    writer.write(os.urandom(12 * MIB))
    await writer.drain()
    deadline = time.monotonic() + 20
    while not await _open_uploads(world, name):
        assert time.monotonic() < deadline, s3svc.output()[-3000:]
        await asyncio.sleep(0.1)
    writer.close()
    await writer.wait_closed()
    deadline = time.monotonic() + 20
    while await _open_uploads(world, name):
        assert time.monotonic() < deadline, s3svc.output()[-3000:]
        await asyncio.sleep(0.1)
    async with client(world, "s3", world.admin) as s3:
        listed = await s3.list_objects_v2(Bucket=world.bucket)
    assert not [o for o in listed.get("Contents", []) if o["Key"].endswith("/" + name)]
    assert "AccessDenied" not in s3svc.output()


async def test_s3_role_may_not_read_delete_list_or_leave_the_prefix(world: World) -> None:
    """GetObject, DeleteObject, ListBucket, a key outside the prefix: each AccessDenied."""
    inside = f"{KEY_PREFIX}probe-{uuid.uuid4().hex[:8]}"
    async with (
        client(world, "s3", world.s3_role) as role,
        client(world, "s3", world.admin) as admin,
    ):
        await role.put_object(Bucket=world.bucket, Key=inside, Body=b"x")  # the allowed call
        await assert_denied(role.get_object(Bucket=world.bucket, Key=inside))
        await assert_denied(role.delete_object(Bucket=world.bucket, Key=inside))
        await assert_denied(role.list_objects_v2(Bucket=world.bucket))
        await assert_denied(role.list_objects_v2(Bucket=world.bucket, Prefix=KEY_PREFIX))
        await assert_denied(role.put_object(Bucket=world.bucket, Key="elsewhere/x", Body=b"x"))
        await assert_denied(role.create_multipart_upload(Bucket=world.bucket, Key="elsewhere/y"))
        # Controls: the same calls succeed for an administrator, and the object survived.
        assert (await admin.get_object(Bucket=world.bucket, Key=inside))["ContentLength"] == 1
        assert (await admin.list_objects_v2(Bucket=world.bucket, Prefix=KEY_PREFIX))[
            "KeyCount"
        ] >= 1
        await admin.put_object(Bucket=world.bucket, Key="elsewhere/x", Body=b"x")
        await admin.delete_object(Bucket=world.bucket, Key="elsewhere/x")
    async with client(world, "sqs", world.s3_role) as sqs:
        await assert_denied(sqs.send_message(QueueUrl=world.queue_url, MessageBody="x"))


async def test_s3_role_may_find_stray_uploads_to_abort_them(world: World) -> None:
    """After a retried create, s3svc lists the uploads on its key and aborts the stray ones:
    both calls are allowed to the task role."""
    key = f"{KEY_PREFIX}stray-{uuid.uuid4().hex[:8]}"
    async with client(world, "s3", world.s3_role) as role:
        created = await role.create_multipart_upload(Bucket=world.bucket, Key=key)
        listed = await role.list_multipart_uploads(Bucket=world.bucket, Prefix=key)
        assert [u["UploadId"] for u in listed["Uploads"]] == [created["UploadId"]]
        await role.abort_multipart_upload(
            Bucket=world.bucket, Key=key, UploadId=created["UploadId"]
        )


async def test_download_links_add_reading_under_the_prefix_only(world: World) -> None:
    """DownloadUrlSeconds > 0 grants GetObject under the prefix, and nothing more: no read
    elsewhere, no delete, no list. (With links off, GetObject is refused: the test above.)"""
    inside = f"{KEY_PREFIX}links-{uuid.uuid4().hex[:8]}"
    async with (
        client(world, "s3", world.s3_links_role) as role,
        client(world, "s3", world.admin) as admin,
    ):
        await admin.put_object(Bucket=world.bucket, Key="elsewhere/z", Body=b"z")
        await role.put_object(Bucket=world.bucket, Key=inside, Body=b"xy")
        got = await role.get_object(Bucket=world.bucket, Key=inside)
        async with got["Body"] as body:
            assert await body.read() == b"xy"
        await assert_denied(role.get_object(Bucket=world.bucket, Key="elsewhere/z"))
        await assert_denied(role.delete_object(Bucket=world.bucket, Key=inside))
        await assert_denied(role.list_objects_v2(Bucket=world.bucket, Prefix=KEY_PREFIX))
        await admin.delete_object(Bucket=world.bucket, Key="elsewhere/z")


async def test_s3svc_signs_download_links_as_its_task_role(world: World, tmp_path: Path) -> None:
    """s3svc with links on, running as the links variant of its role, answers a link signed with
    that role's session. moto's IAM enforcement reads only the Authorization header, so it
    answers 500 to any presigned (query-signed) request: the GET the link makes is authorised
    here as the same role's direct GetObject (the test above), and fetched for real, without
    IAM, in tests/s3svc/test_downloads.py and tests/e2e/test_devstack.py."""
    env = service_env(
        world,
        world.s3_links_role,
        tmp_path,
        BUCKET_NAME=world.bucket,
        KEY_PREFIX=KEY_PREFIX,
        DOWNLOAD_URL_SECONDS="3600",
    )
    svc = ServiceProcess("s3svc", env, tmp_path / "s3svc.log").start()
    try:
        item = await upload(svc, "linked.bin", os.urandom(2000))
    finally:
        svc.stop()
    query = parse_qs(urlsplit(item["download_url"]).query)
    assert query["X-Amz-Security-Token"] == [world.s3_links_role.token]
    assert query["X-Amz-Credential"][0].startswith(world.s3_links_role.key + "/")
    assert query["X-Amz-Expires"] == ["3600"]
    assert urlsplit(item["download_url"]).path == f"/{world.bucket}/{item['key']}"


# -------------------------------------------------------------------------------------- sqssvc


async def _drain_bodies(world: World, want: int) -> list[str]:
    """Receive (and delete) messages from the queue as the administrator until ``want`` came."""
    bodies: list[str] = []
    deadline = time.monotonic() + 20
    async with client(world, "sqs", world.admin) as sqs:
        while len(bodies) < want and time.monotonic() < deadline:
            got = await sqs.receive_message(QueueUrl=world.queue_url, MaxNumberOfMessages=10)
            for m in got.get("Messages", []):
                bodies.append(m["Body"])
                await sqs.delete_message(QueueUrl=world.queue_url, ReceiptHandle=m["ReceiptHandle"])
    return bodies


async def test_sqssvc_ready_and_sends_single_and_batched(
    world: World, sqssvc: ServiceProcess
) -> None:
    """Readiness, ``/send``, concurrent ``/send`` (coalesced) and ``/send-batch`` all deliver."""
    tag = uuid.uuid4().hex[:8]
    async with aiohttp.ClientSession() as session:
        async with session.get(sqssvc.url + "/sqs/ready") as resp:
            assert resp.status == 200, await resp.text()

        async def send(i: int) -> int:
            payload = {"message": f"{tag}-single-{i}"}
            async with session.post(sqssvc.url + "/sqs/send", json=payload) as resp:
                return resp.status

        assert await asyncio.gather(*(send(i) for i in range(12))) == [200] * 12
        batch = {"messages": [{"message": f"{tag}-batch-{i}"} for i in range(7)]}
        async with session.post(sqssvc.url + "/sqs/send-batch", json=batch) as resp:
            body = await resp.json()
            assert resp.status == 200, (body, sqssvc.output()[-3000:])
            assert body["succeeded"] == 7
    bodies = await _drain_bodies(world, 19)
    assert sorted(bodies) == sorted(
        [f"{tag}-single-{i}" for i in range(12)] + [f"{tag}-batch-{i}" for i in range(7)]
    )
    assert "AccessDenied" not in sqssvc.output()


async def test_sqs_role_may_not_receive_delete_purge_or_use_another_queue(world: World) -> None:
    """ReceiveMessage, DeleteMessage, PurgeQueue, a send to another queue: each AccessDenied."""
    async with (
        client(world, "sqs", world.sqs_role) as role,
        client(world, "sqs", world.admin) as admin,
    ):
        await role.send_message(QueueUrl=world.queue_url, MessageBody="probe")  # allowed
        await assert_denied(role.receive_message(QueueUrl=world.queue_url))
        got = await admin.receive_message(QueueUrl=world.queue_url, WaitTimeSeconds=1)
        (message,) = got["Messages"]
        await assert_denied(
            role.delete_message(QueueUrl=world.queue_url, ReceiptHandle=message["ReceiptHandle"])
        )
        await assert_denied(role.purge_queue(QueueUrl=world.queue_url))
        await assert_denied(role.send_message(QueueUrl=world.other_queue_url, MessageBody="x"))
        await assert_denied(
            role.send_message_batch(
                QueueUrl=world.other_queue_url, Entries=[{"Id": "a", "MessageBody": "x"}]
            )
        )
        # Controls: the administrator may do each of them.
        await admin.delete_message(QueueUrl=world.queue_url, ReceiptHandle=message["ReceiptHandle"])
        await admin.send_message(QueueUrl=world.other_queue_url, MessageBody="x")
        await admin.purge_queue(QueueUrl=world.other_queue_url)
    async with client(world, "s3", world.sqs_role) as s3:
        await assert_denied(s3.put_object(Bucket=world.bucket, Key=f"{KEY_PREFIX}x", Body=b"x"))


# ---------------------------------------------------------------------------------- log shipping


async def test_services_ship_their_logs_with_only_their_task_role(
    world: World, s3svc: ServiceProcess, sqssvc: ServiceProcess
) -> None:
    """Each running service, with only its task role, gets its lines into its own log group."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        for svc, path in ((s3svc, "/s3/health"), (sqssvc, "/sqs/health")):
            rid = f"lp-{svc.module}-{uuid.uuid4().hex[:8]}"
            async with session.get(svc.url + path, headers={"X-Request-ID": rid}) as resp:
                assert resp.status == 200
            group = world.s3_group if svc is s3svc else world.sqs_group
            async with client(world, "logs", world.admin) as admin:
                deadline = time.monotonic() + 20
                while True:
                    found = await admin.filter_log_events(
                        logGroupName=group, filterPattern=f'"{rid}"'
                    )
                    if found["events"]:
                        break
                    assert time.monotonic() < deadline, f"{svc.module}: nothing shipped to {group}"
                    await asyncio.sleep(0.3)
            line = json.loads(found["events"][0]["message"])
            assert line["request_id"] == rid
            assert line["service"] == svc.module


@pytest.mark.parametrize("service", ["s3svc", "sqssvc"])
async def test_log_shipping_to_own_group_only(world: World, service: str) -> None:
    """With the task role: CreateLogStream + PutLogEvents (watchtower's calls) in the service's own
    log group work; in another group, the other service's included, both are AccessDenied."""
    creds, own, foreign = (
        (world.s3_role, world.s3_group, world.sqs_group)
        if service == "s3svc"
        else (world.sqs_role, world.sqs_group, world.s3_group)
    )
    stream = f"{service}/task-{uuid.uuid4().hex[:8]}"
    event = {"timestamp": int(time.time() * 1000), "message": json.dumps({"event": "hello"})}
    async with (
        client(world, "logs", creds) as role,
        client(world, "logs", world.admin) as admin,
    ):
        await role.create_log_stream(logGroupName=own, logStreamName=stream)
        await role.put_log_events(logGroupName=own, logStreamName=stream, logEvents=[event])
        shipped = await admin.get_log_events(logGroupName=own, logStreamName=stream)
        assert [e["message"] for e in shipped["events"]] == [event["message"]]

        for group in (foreign, world.other_group):
            await admin.create_log_stream(logGroupName=group, logStreamName=stream)  # control
            await assert_denied(role.create_log_stream(logGroupName=group, logStreamName="x"))
            await assert_denied(
                role.put_log_events(logGroupName=group, logStreamName=stream, logEvents=[event])
            )
            await admin.put_log_events(logGroupName=group, logStreamName=stream, logEvents=[event])
        # Reading and deleting are not part of shipping either.
        await assert_denied(role.get_log_events(logGroupName=own, logStreamName=stream))
        await assert_denied(role.delete_log_stream(logGroupName=own, logStreamName=stream))
