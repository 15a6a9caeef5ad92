"""``deploy/ecs_deploy.py``, the deploy workflows' roll-out step, against moto's ECS.

The first revision is the template's own ``S3TaskDefinition``, registered as CloudFormation would;
a deploy must produce a revision that differs from it only in the image and ``APP_VERSION``, point
the service at it, and treat a circuit-breaker rollback as a failure.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import boto3
import pytest

from deploy.ecs_deploy import READ_ONLY, DeployError, check_rollout, deploy, render
from deploy.policies import load_template, resolve
from tests.conftest import REGION

VALUES = {
    "AWS::Region": REGION,
    "AWS::AccountId": "123456789012",
    "AWS::StackName": "lp",
    "S3ImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/s3svc:first",
    "ExecutionRole.Arn": "arn:aws:iam::123456789012:role/exec",
    "S3TaskRole.Arn": "arn:aws:iam::123456789012:role/s3task",
    "UploadBucket": "bucket",
    "KeyPrefix": "uploads/",
    "DownloadUrlSeconds": "0",
    "S3AppLogGroup": "/lp/s3svc",
    "S3ContainerLogGroup": "/lp/s3svc/container",
    "ApiKeysSha256": "a" * 64,  # kept by every new revision, as the rest of the environment
}


def api_shape(node: Any) -> Any:
    """CloudFormation property names (PascalCase) as the ECS API's (camelCase); values as is."""
    if isinstance(node, list):
        return [api_shape(x) for x in node]
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            name = key[0].lower() + key[1:]
            # Log driver options are free-form keys: keep them verbatim.
            out[name] = value if name == "options" else api_shape(value)
        return out
    return node


def template_task_definition() -> dict[str, Any]:
    """The template's s3svc task definition as ``register_task_definition`` arguments."""
    template = load_template()
    props = template["Resources"]["S3TaskDefinition"]["Properties"]
    shaped = api_shape(resolve(props, VALUES, template["Conditions"]))
    assert isinstance(shaped, dict)
    return shaped


@pytest.fixture
def ecs(moto_url: str) -> Any:
    """A boto3 ECS client on the session's moto (the workflow's step uses boto3 too)."""
    return boto3.client("ecs", endpoint_url=moto_url, region_name=REGION)


def test_deploy_registers_a_revision_with_only_the_image_changed(ecs: Any) -> None:
    """New revision = the live one with the new image and APP_VERSION; the service runs it."""
    cluster = f"c-{uuid.uuid4().hex[:8]}"
    ecs.create_cluster(clusterName=cluster)
    first = ecs.register_task_definition(**template_task_definition())["taskDefinition"]
    ecs.create_service(
        cluster=cluster,
        serviceName="s3svc",
        taskDefinition=first["taskDefinitionArn"],
        desiredCount=0,
    )
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/s3svc:0123abcd"
    new_arn = deploy(
        ecs,
        cluster=cluster,
        service="s3svc",
        container="s3svc",
        image=image,
        env={"APP_VERSION": "0123abcd"},
        wait_minutes=1,
    )
    second = ecs.describe_task_definition(taskDefinition=new_arn)["taskDefinition"]
    assert second["revision"] == first["revision"] + 1
    assert second["family"] == first["family"] == "lp-s3svc"
    (container,) = second["containerDefinitions"]
    assert container["image"] == image
    env = {e["name"]: e["value"] for e in container["environment"]}
    before = {e["name"]: e["value"] for e in first["containerDefinitions"][0]["environment"]}
    assert env == before | {"APP_VERSION": "0123abcd"}

    def comparable(td: dict[str, Any]) -> dict[str, Any]:
        td = {k: v for k, v in td.items() if k not in READ_ONLY}
        c = dict(td["containerDefinitions"][0], image="-", environment="-")
        return td | {"containerDefinitions": [c]}

    assert comparable(second) == comparable(first)
    (service,) = ecs.describe_services(cluster=cluster, services=["s3svc"])["services"]
    assert service["taskDefinition"] == new_arn


def test_a_rolled_back_deployment_fails_the_job() -> None:
    """Stable on the old revision (circuit breaker rollback) or a FAILED rollout is an error."""
    rolled_back: dict[str, Any] = {
        "serviceName": "s3svc",
        "taskDefinition": "arn:td:1",
        "deployments": [],
    }
    with pytest.raises(DeployError, match="rolled back"):
        check_rollout(rolled_back, "arn:td:2")
    failed: dict[str, Any] = {
        "serviceName": "s3svc",
        "taskDefinition": "arn:td:2",
        "deployments": [{"status": "PRIMARY", "rolloutState": "FAILED", "rolloutStateReason": "x"}],
    }
    with pytest.raises(DeployError, match="failed"):
        check_rollout(failed, "arn:td:2")
    check_rollout({"serviceName": "s3svc", "taskDefinition": "arn:td:2"}, "arn:td:2")


def test_render_needs_the_named_container() -> None:
    """A container name that is not in the task definition stops the deploy before registering."""
    td: dict[str, Any] = {"family": "f", "containerDefinitions": [{"name": "s3svc", "image": "a"}]}
    with pytest.raises(DeployError, match=re.escape("no single container named 'sqssvc'")):
        render(td, "sqssvc", "b", {})
    assert render(td, "s3svc", "b", {})["containerDefinitions"][0]["image"] == "b"
    assert td["containerDefinitions"][0]["image"] == "a"  # the input is not modified
