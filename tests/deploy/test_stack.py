"""``deploy/stack.yaml`` agrees with the services it runs (cfn-lint and checkov judge the rest).

Ports, health-check paths, shutdown timings and environment come from the code's own settings,
so a renamed variable, a moved route or a longer grace period breaks here, not in production.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from common.config import ConfigError
from common.queries import QUERIES
from deploy.policies import load_template, resolve, role_policies
from s3svc.config import S3Settings
from sqssvc.config import SqsSettings
from tests.deploy.shutdown import MARGIN, longest_shutdown

TEMPLATE = load_template()
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
SERVICES: dict[str, tuple[str, str, str, type[S3Settings] | type[SqsSettings]]] = {
    # service: (task definition, target group, ECS service, settings class)
    "s3svc": ("S3TaskDefinition", "S3TargetGroup", "S3Service", S3Settings),
    "sqssvc": ("SqsTaskDefinition", "SqsTargetGroup", "SqsService", SqsSettings),
}
# A stand-in for every reference a task definition's environment makes.
PLACEHOLDERS = {
    "AWS::Region": "eu-west-1",
    "AWS::StackName": "lp",
    "UploadBucket": "bucket",
    "KeyPrefix": "uploads/",
    "DownloadUrlSeconds": "3600",
    "S3AppLogGroup": "/stack/s3svc",
    "SqsAppLogGroup": "/stack/sqssvc",
    "MessageQueue": "https://sqs.eu-west-1.amazonaws.com/123456789012/queue",
    "ApiKeysSha256": "a" * 64 + "," + "B" * 64,
    "UploadDrainSeconds": str(TEMPLATE["Parameters"]["UploadDrainSeconds"]["Default"]),
}


def props(logical: str) -> dict[str, Any]:
    """Properties of one resource."""
    value = RESOURCES[logical]["Properties"]
    assert isinstance(value, dict)
    return value


def container(service: str) -> dict[str, Any]:
    """The one container definition of a service's task definition."""
    (c,) = props(SERVICES[service][0])["ContainerDefinitions"]
    assert isinstance(c, dict)
    return c


def task_env(service: str, **values: str) -> dict[str, str]:
    """The container's environment, references replaced by placeholders (or ``values``)."""
    items = resolve(
        container(service)["Environment"], {**PLACEHOLDERS, **values}, TEMPLATE["Conditions"]
    )
    return {item["Name"]: str(item["Value"]) for item in items}


def target_group_attribute(logical: str, key: str) -> str:
    """One TargetGroupAttributes value (a parameter's default where it is one)."""
    (value,) = [a["Value"] for a in props(logical)["TargetGroupAttributes"] if a["Key"] == key]
    return str(resolve(value, PLACEHOLDERS))


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_task_environment_is_valid_for_the_service(service: str) -> None:
    """The task definition's environment parses with the service's own settings, unchanged."""
    settings_cls = SERVICES[service][3]
    env = task_env(service)
    try:
        settings: Any = settings_cls.from_env(env)
    except ConfigError as exc:
        pytest.fail(f"{service} task environment is invalid: {exc}")
    assert settings.common.cloudwatch is not None, "CLOUDWATCH_LOG_GROUP must be set"
    # One ingestion path: watchtower ships every line, stdout (awslogs) warnings and above.
    assert settings.common.stdout_log_level == "warning"
    assert settings.common.log_level == "info"
    assert settings.common.port == container(service)["PortMappings"][0]["ContainerPort"]
    # Metrics per stack, and the alarm on them reads the same namespace.
    assert settings.common.metrics_namespace == "UploadMessaging/lp"
    alarm = resolve(props("S3BusyAlarm")["Namespace"], {"AWS::StackName": "lp"})
    assert alarm == settings.common.metrics_namespace


def test_sqssvc_memory_holds_its_queue_and_the_largest_parse() -> None:
    """The task's memory covers the interpreter, the messages waiting (SQS_MAX_PENDING_BYTES)
    and one body of MAX_REQUEST_BYTES parsed (JSON_MEMORY_FACTOR times its size): with the old
    16 MiB default, one body of ``{}`` could take more than the 512 MiB task had."""
    from sqssvc.config import JSON_MEMORY_FACTOR

    interpreter = 128 * 2**20  # sqssvc's RSS once started and warm is ~80-120 MiB
    settings = SqsSettings.from_env(task_env("sqssvc"))
    need = (
        interpreter + settings.max_pending_bytes + JSON_MEMORY_FACTOR * settings.max_request_bytes
    )
    assert need <= int(props("SqsTaskDefinition")["Memory"]) * 2**20


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_api_keys_reach_the_service_when_given(service: str) -> None:
    """``ApiKeysSha256`` becomes the service's API_KEYS_SHA256; empty, no key is asked for (and
    the template's rule then demands ``AllowAnonymous``, below)."""
    settings_cls = SERVICES[service][3]
    keyed: Any = settings_cls.from_env(task_env(service))
    assert set(keyed.common.api_keys_sha256) == {"a" * 64, "b" * 64}
    open_: Any = settings_cls.from_env(task_env(service, ApiKeysSha256=""))
    assert not open_.common.api_keys_sha256


def test_an_open_stack_must_be_asked_for() -> None:
    """The stack refuses to start without API keys unless AllowAnonymous is "true"; the
    parameter's pattern is the digests' (what the settings parse)."""
    rule = TEMPLATE["Rules"]["KeysOrAnonymous"]
    assert rule["RuleCondition"] == {"Fn::Equals": [{"Ref": "ApiKeysSha256"}, ""]}
    assert rule["Assertions"][0]["Assert"] == {"Fn::Equals": [{"Ref": "AllowAnonymous"}, "true"]}
    assert TEMPLATE["Parameters"]["AllowAnonymous"]["Default"] == "false"
    assert TEMPLATE["Parameters"]["ApiKeysSha256"]["Default"] == ""


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_load_balancer_routes_and_checks_the_service(service: str) -> None:
    """Path rule ``{BASE_PATH}/*`` (s3svc: and ``{BASE_PATH}``), health check on
    ``{BASE_PATH}/health``, matching ports."""
    _, tg, svc, settings_cls = SERVICES[service]
    base = settings_cls.from_env(task_env(service)).common.base_path
    assert props(tg)["HealthCheckPath"] == f"{base}/health"
    assert props(tg)["Port"] == container(service)["PortMappings"][0]["ContainerPort"]
    (lb,) = props(svc)["LoadBalancers"]
    assert lb["ContainerName"] == container(service)["Name"] == service
    assert lb["TargetGroupArn"] == {"Ref": tg}
    rules = [
        r for r in RESOURCES.values() if r["Type"] == "AWS::ElasticLoadBalancingV2::ListenerRule"
    ]
    routed = {
        path: r["Properties"]["Actions"][0]["TargetGroupArn"]["Ref"]
        for r in rules
        for path in r["Properties"]["Conditions"][0]["PathPatternConfig"]["Values"]
    }
    assert routed[f"{base}/*"] == tg
    if service == "s3svc":  # the page's own path without its slash, which redirects to it
        assert routed[base] == tg


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_shutdown_timings_fit_the_grace_period(service: str) -> None:
    """Deregistration delay >= the service's grace; stopTimeout covers the whole shutdown (the
    grace, aiohttp's waits, the service's cleanup, the last CloudWatch flush) and stays within
    Fargate's 120 s; so ECS never kills a task that is still finishing requests or aborting."""
    settings: Any = SERVICES[service][3].from_env(task_env(service))
    dereg = int(
        target_group_attribute(SERVICES[service][1], "deregistration_delay.timeout_seconds")
    )
    stop = container(service)["StopTimeout"]
    assert dereg >= settings.common.shutdown_grace
    assert longest_shutdown(settings) + MARGIN <= stop <= 120


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_services_roll_back_failed_deployments(service: str) -> None:
    """Deployment circuit breaker with rollback; tasks in private subnets without public IPs."""
    p = props(SERVICES[service][2])
    assert p["DeploymentConfiguration"]["DeploymentCircuitBreaker"] == {
        "Enable": True,
        "Rollback": True,
    }
    assert p["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"] == "DISABLED"


def _grants(policies: Mapping[str, Mapping[str, Any]]) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for doc in policies.values():
        for st in doc["Statement"]:
            assert st["Effect"] == "Allow"
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
            out |= {(a, r) for a in actions for r in resources}
    return out


def test_task_roles_grant_exactly_the_documented_actions() -> None:
    """Each task role grants these (action, resource) pairs and nothing else (the moto tests
    prove them sufficient; this pins them, so a widening is a deliberate test change)."""
    values = {
        "AWS::Region": "r",
        "AWS::AccountId": "1",
        "UploadBucket": "b",
        "KeyPrefix": "uploads/",
        "S3AppLogGroup": "/s",
        "SqsAppLogGroup": "/q",
        "MessageQueue.Arn": "arn:aws:sqs:r:1:q",
    }
    own_logs = {
        "/s": {"arn:aws:logs:r:1:log-group:/s", "arn:aws:logs:r:1:log-group:/s:log-stream:*"},
        "/q": {"arn:aws:logs:r:1:log-group:/q", "arn:aws:logs:r:1:log-group:/q:log-stream:*"},
    }

    def logs(group: str) -> set[tuple[str, str]]:
        return {
            (a, r) for a in ("logs:CreateLogStream", "logs:PutLogEvents") for r in own_logs[group]
        }

    upload = {
        ("s3:PutObject", "arn:aws:s3:::b/uploads/*"),
        ("s3:AbortMultipartUpload", "arn:aws:s3:::b/uploads/*"),
        # Finding stray uploads after a retried create: no prefix condition exists for it.
        ("s3:ListBucketMultipartUploads", "arn:aws:s3:::b"),
    }
    no_links = values | {"DownloadUrlSeconds": "0"}
    assert _grants(role_policies("S3TaskRole", no_links, TEMPLATE)) == upload | logs("/s")
    # Download links on: reading under the prefix too (presigned GETs are authorised as the role).
    links = values | {"DownloadUrlSeconds": "3600"}
    assert _grants(role_policies("S3TaskRole", links, TEMPLATE)) == upload | logs("/s") | {
        ("s3:GetObject", "arn:aws:s3:::b/uploads/*")
    }
    assert _grants(role_policies("SqsTaskRole", values, TEMPLATE)) == {
        ("sqs:SendMessage", "arn:aws:sqs:r:1:q"),
    } | logs("/q")


def test_task_roles_are_what_the_task_definitions_use() -> None:
    """The roles the tests prove are the roles the tasks run with."""
    assert props("S3TaskDefinition")["TaskRoleArn"] == {"Fn::GetAtt": ["S3TaskRole", "Arn"]}
    assert props("SqsTaskDefinition")["TaskRoleArn"] == {"Fn::GetAtt": ["SqsTaskRole", "Arn"]}
    env = {e["Name"]: e["Value"] for e in container("s3svc")["Environment"] if "Name" in e}
    assert env["CLOUDWATCH_LOG_GROUP"] == {"Ref": "S3AppLogGroup"}
    assert env["BUCKET_NAME"] == {"Ref": "UploadBucket"}
    assert env["KEY_PREFIX"] == {"Ref": "KeyPrefix"}
    assert env["DOWNLOAD_URL_SECONDS"] == {"Ref": "DownloadUrlSeconds"}
    assert TEMPLATE["Conditions"]["DownloadLinks"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "DownloadUrlSeconds"}, "0"]}]
    }
    # Every value the stack offers is one the service accepts, and only "0" turns links off.
    allowed = TEMPLATE["Parameters"]["DownloadUrlSeconds"]["AllowedValues"]
    assert [
        S3Settings.from_env({"DOWNLOAD_URL_SECONDS": v}).download_url_seconds > 0 for v in allowed
    ] == [v != "0" for v in allowed]
    env = {e["Name"]: e["Value"] for e in container("sqssvc")["Environment"] if "Name" in e}
    assert env["CLOUDWATCH_LOG_GROUP"] == {"Ref": "SqsAppLogGroup"}
    assert env["QUEUE_URL"] == {"Ref": "MessageQueue"}


def test_deploy_role_trusts_only_this_repository_environment() -> None:
    """The OIDC trust names the audience and one repository + environment, no wildcard."""
    (statement,) = props("DeployRole")["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    equals = statement["Condition"]["StringEquals"]
    assert equals["token.actions.githubusercontent.com:aud"] == "sts.amazonaws.com"
    assert equals["token.actions.githubusercontent.com:sub"] == {
        "Fn::Sub": "repo:${GitHubRepository}:environment:${GitHubEnvironment}"
    }
    assert "StringLike" not in statement["Condition"]


def test_bucket_and_queue_protections() -> None:
    """Bucket: encrypted, private, TLS-only, incomplete uploads aborted after a day; queue: SSE and
    a dead-letter queue; log groups keep a retention."""
    bucket = props("UploadBucket")
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    rules = bucket["LifecycleConfiguration"]["Rules"]
    assert {"DaysAfterInitiation": 1} in [r.get("AbortIncompleteMultipartUpload") for r in rules]
    (tls,) = props("UploadBucketPolicy")["PolicyDocument"]["Statement"]
    assert tls["Effect"] == "Deny"
    assert tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    queue = props("MessageQueue")
    assert queue["SqsManagedSseEnabled"] is True
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": ["DeadLetterQueue", "Arn"]
    }
    groups = [r["Properties"] for r in RESOURCES.values() if r["Type"] == "AWS::Logs::LogGroup"]
    assert len(groups) == 4
    assert all("RetentionInDays" in g for g in groups)


def test_saved_queries_are_the_ones_in_common_queries() -> None:
    """One QueryDefinition per saved query, with the same text (parameters shown as <name>)."""
    deployed = {
        r["Properties"]["Name"]["Fn::Sub"].removeprefix("${AWS::StackName}/"): r["Properties"][
            "QueryString"
        ]
        for r in RESOURCES.values()
        if r["Type"] == "AWS::Logs::QueryDefinition"
    }
    expected = {q.name: q.render({p: f"<{p}>" for p in q.params}) for q in QUERIES.values()}
    assert deployed == expected, "stale: run .venv/bin/python deploy/sync_queries.py"
