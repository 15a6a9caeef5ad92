"""``docker/compose.yaml`` wires the same names everywhere, and its init creates what it promises.

The compose schema is checked in ``make deploy-lint``; no Docker engine is needed here: the init
script runs against the session's moto with the environment the compose file gives it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import yaml

from deploy.compose_init import create_all
from deploy.local_env import LOG_GROUP, RESOURCES
from s3svc.config import S3Settings
from sqssvc.config import SqsSettings
from tests.conftest import REGION
from tests.deploy.dockerfile import parse
from tests.deploy.shutdown import MARGIN, longest_shutdown
from tests.procs import ROOT

COMPOSE_FILE = ROOT / "docker" / "compose.yaml"
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]


def env_of(name: str) -> dict[str, str]:
    """A compose service's environment (anchors already merged by the YAML loader)."""
    return {k: str(v) for k, v in SERVICES[name]["environment"].items()}


def test_services_build_from_their_dockerfiles_and_publish_their_ports() -> None:
    """Each service builds its own Dockerfile and publishes the port that Dockerfile exposes."""
    for name in ("s3svc", "sqssvc"):
        build = SERVICES[name]["build"]
        dockerfile = (COMPOSE_FILE.parent / build["context"] / build["dockerfile"]).resolve()
        assert dockerfile == ROOT / "docker" / f"{name}.Dockerfile"
        exposed = parse(dockerfile).final.one("EXPOSE").args
        assert SERVICES[name]["ports"] == [f"127.0.0.1:{exposed}:{exposed}"]
        assert SERVICES[name]["depends_on"] == {
            "init": {"condition": "service_completed_successfully"}
        }


def test_stop_grace_periods_cover_the_shutdown() -> None:
    """``docker compose stop`` waits out each service's whole shutdown before it kills it."""
    settings: dict[str, S3Settings | SqsSettings] = {
        "s3svc": S3Settings.from_env(env_of("s3svc")),
        "sqssvc": SqsSettings.from_env(env_of("sqssvc")),
        "sqssvc-fifo": SqsSettings.from_env(env_of("sqssvc-fifo")),
    }
    for name, service in settings.items():
        grace = SERVICES[name]["stop_grace_period"]
        assert grace.endswith("s"), grace
        assert longest_shutdown(service) + MARGIN <= float(grace[:-1]), name


def test_moto_image_is_the_pinned_moto() -> None:
    """The emulator image is the moto version the tests run against."""
    pins = dict(
        line.split("==")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line
    )
    assert SERVICES["moto"]["image"] == f"motoserver/moto:{pins['moto']}"


def test_service_settings_and_init_agree() -> None:
    """Every service's environment is valid settings and names what the init creates."""
    init = env_of("init")
    s3 = S3Settings.from_env(env_of("s3svc"))
    sqs = SqsSettings.from_env(env_of("sqssvc"))
    fifo = SqsSettings.from_env(env_of("sqssvc-fifo"))
    assert s3.bucket == init["BUCKET_NAME"]
    assert sqs.queue_url is not None
    assert sqs.queue_url.endswith("/" + init["QUEUE_NAME"])
    assert fifo.fifo
    assert fifo.queue_url is not None
    assert fifo.queue_url.endswith("/" + init["FIFO_QUEUE_NAME"])
    assert fifo.common.port == 8082
    assert SERVICES["sqssvc-fifo"]["ports"] == ["127.0.0.1:8082:8082"]
    groups = init["LOG_GROUPS"].split(",")
    for settings in (s3.common, sqs.common, fifo.common):
        assert settings.cloudwatch is not None
        assert settings.cloudwatch.log_group in groups
        assert settings.aws.endpoint_url == init["AWS_ENDPOINT_URL"]
    (mount,) = SERVICES["init"]["volumes"]
    source, target, _ = mount.split(":")
    assert (COMPOSE_FILE.parent / source).resolve() == ROOT / "deploy" / "compose_init.py"
    assert SERVICES["init"]["command"] == ["python", target]


def test_compose_matches_make_run() -> None:
    """The same names as the devstack (``make run``): bucket, queues, one log group, so the
    README's lines work against either; download links point where the host reaches moto."""
    init = env_of("init")
    assert {k: init[k] for k in RESOURCES} == RESOURCES
    for name in ("s3svc", "sqssvc", "sqssvc-fifo"):
        assert env_of(name)["CLOUDWATCH_LOG_GROUP"] == LOG_GROUP
    s3 = S3Settings.from_env(env_of("s3svc"))
    assert s3.download_url_seconds > 0
    assert s3.download_url_endpoint == "http://localhost:5000"
    assert SERVICES["moto"]["ports"] == ["127.0.0.1:5000:5000"]


def test_init_creates_bucket_queues_and_log_groups(moto_url: str, tmp_path: Path) -> None:
    """Run with the compose environment (moto's address swapped): everything exists, the queue has
    its dead-letter queue, and a second run (``compose up`` again) succeeds."""
    suffix = tmp_path.name[-8:].lower().replace("_", "-")
    env = env_of("init") | {"AWS_ENDPOINT_URL": moto_url}
    env = env | {
        "BUCKET_NAME": f"{env['BUCKET_NAME']}-{suffix}",
        "QUEUE_NAME": f"{env['QUEUE_NAME']}-{suffix}",
        "DLQ_NAME": f"{env['DLQ_NAME']}-{suffix}",
        "FIFO_QUEUE_NAME": f"{suffix}-{env['FIFO_QUEUE_NAME']}",
        "LOG_GROUPS": ",".join(f"{g}-{suffix}" for g in env["LOG_GROUPS"].split(",")),
    }
    made = create_all(env)
    assert create_all(env) == made
    kwargs: dict[str, Any] = {"endpoint_url": moto_url, "region_name": REGION}
    s3 = boto3.client("s3", **kwargs)
    sqs = boto3.client("sqs", **kwargs)
    logs = boto3.client("logs", **kwargs)
    s3.head_bucket(Bucket=env["BUCKET_NAME"])
    attrs = sqs.get_queue_attributes(QueueUrl=made["queue_url"], AttributeNames=["RedrivePolicy"])
    redrive = json.loads(attrs["Attributes"]["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"].endswith(":" + env["DLQ_NAME"])
    fifo = sqs.get_queue_attributes(QueueUrl=made["fifo_queue_url"], AttributeNames=["All"])
    assert fifo["Attributes"]["FifoQueue"] == "true"
    assert fifo["Attributes"]["ContentBasedDeduplication"] == "true"
    for group in env["LOG_GROUPS"].split(","):
        found = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]
        assert [g["logGroupName"] for g in found] == [group]
    s3.delete_bucket(Bucket=env["BUCKET_NAME"])
    for group in env["LOG_GROUPS"].split(","):
        logs.delete_log_group(logGroupName=group)


def test_host_override_covers_every_service_at_the_published_ports() -> None:
    """``compose.host.yaml`` (an engine without a bridge network) puts every service on the host's
    network, listening where the base file publishes it unless a port variable moves it, and
    points every AWS client at that moto."""
    host: dict[str, Any] = yaml.safe_load((ROOT / "docker" / "compose.host.yaml").read_text())
    assert set(host["services"]) == set(SERVICES)
    moto = "http://127.0.0.1:${MOTO_PORT:-5000}"
    for name, service in host["services"].items():
        assert service["network_mode"] == "host", name
        env = service["environment"]
        if name == "moto":
            assert env["MOTO_PORT"] == "${MOTO_PORT:-5000}"
            continue
        assert env["AWS_ENDPOINT_URL"] == moto, name
        if "ports" in SERVICES[name]:
            (published,) = SERVICES[name]["ports"]
            port = published.split(":")[1]
            assert env["HOST"] == "127.0.0.1"
            assert env["PORT"].endswith(f":-{port}}}"), (name, env["PORT"])
    for name in ("sqssvc", "sqssvc-fifo"):
        queue = env_of(name)["QUEUE_URL"].removeprefix("http://moto:5000")
        assert host["services"][name]["environment"]["QUEUE_URL"] == moto + queue
