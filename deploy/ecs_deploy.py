"""Roll one ECS service to a new image, as the deploy workflows do.

1. Read the service's current task definition (CloudFormation created the first revision).
2. Render a new revision: the same definition with the container's image (and ``APP_VERSION``)
   replaced, read-only fields dropped.
3. Register it, point the service at it, and wait until the service is stable.
4. Verify the service still runs the new revision: with the deployment circuit breaker's
   rollback, a failed deployment also ends "stable" - on the old revision - and must fail the job.

Needs only boto3 (installed in the workflow with ``-c constraints.txt``) and the deploy role's
permissions (``ecs:DescribeServices``, ``ecs:DescribeTaskDefinition``,
``ecs:RegisterTaskDefinition``, ``ecs:UpdateService``, ``iam:PassRole`` on the task roles)::

    python deploy/ecs_deploy.py --cluster C --service S --container s3svc --image URI:SHA \\
        --env APP_VERSION=SHA
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Mapping
from typing import Any

# describe_task_definition returns these; register_task_definition refuses them.
READ_ONLY = (
    "taskDefinitionArn",
    "revision",
    "status",
    "requiresAttributes",
    "compatibilities",
    "registeredAt",
    "registeredBy",
    "deregisteredAt",
)


class DeployError(Exception):
    """The service did not end up on the new revision."""


def render(
    task_definition: Mapping[str, Any], container: str, image: str, env: Mapping[str, str]
) -> dict[str, Any]:
    """The ``register_task_definition`` arguments of a new revision with ``image`` in ``container``."""
    new = {k: copy.deepcopy(v) for k, v in task_definition.items() if k not in READ_ONLY}
    matches = [c for c in new["containerDefinitions"] if c["name"] == container]
    if len(matches) != 1:
        names = [c["name"] for c in new["containerDefinitions"]]
        raise DeployError(f"no single container named {container!r} (have {names})")
    target = matches[0]
    target["image"] = image
    if env:
        kept = [e for e in target.get("environment", []) if e["name"] not in env]
        target["environment"] = kept + [{"name": k, "value": v} for k, v in env.items()]
    return new


def check_rollout(service: Mapping[str, Any], new_arn: str) -> None:
    """Fail unless the service runs ``new_arn`` and its primary deployment did not fail."""
    if service["taskDefinition"] != new_arn:
        raise DeployError(
            f"service {service['serviceName']} runs {service['taskDefinition']}, not {new_arn}: "
            "the deployment failed and was rolled back"
        )
    for deployment in service.get("deployments", []):
        if deployment.get("status") == "PRIMARY" and deployment.get("rolloutState") == "FAILED":
            raise DeployError(f"deployment failed: {deployment.get('rolloutStateReason')}")


def deploy(
    ecs: Any,
    *,
    cluster: str,
    service: str,
    container: str,
    image: str,
    env: Mapping[str, str],
    wait_minutes: int = 20,
) -> str:
    """Register the new revision, roll the service to it, wait, verify; returns its ARN."""
    (current,) = ecs.describe_services(cluster=cluster, services=[service])["services"]
    described = ecs.describe_task_definition(taskDefinition=current["taskDefinition"])
    args = render(described["taskDefinition"], container, image, env)
    new_arn: str = ecs.register_task_definition(**args)["taskDefinition"]["taskDefinitionArn"]
    print(f"registered {new_arn}", flush=True)
    ecs.update_service(cluster=cluster, service=service, taskDefinition=new_arn)
    print(f"updated {service}; waiting for it to be stable", flush=True)
    ecs.get_waiter("services_stable").wait(
        cluster=cluster,
        services=[service],
        WaiterConfig={"Delay": 15, "MaxAttempts": max(1, wait_minutes * 4)},
    )
    (after,) = ecs.describe_services(cluster=cluster, services=[service])["services"]
    check_rollout(after, new_arn)
    print(f"{service} is stable on {new_arn}", flush=True)
    return new_arn


def main(argv: list[str] | None = None) -> int:
    """Command line of the deploy workflows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--container", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--wait-minutes", type=int, default=20)
    args = parser.parse_args(argv)
    env = dict(e.split("=", 1) for e in args.env)

    import boto3

    try:
        deploy(
            boto3.client("ecs"),
            cluster=args.cluster,
            service=args.service,
            container=args.container,
            image=args.image,
            env=env,
            wait_minutes=args.wait_minutes,
        )
    except DeployError as exc:
        print(f"ecs_deploy: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
