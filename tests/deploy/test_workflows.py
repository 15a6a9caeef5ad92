"""The GitHub workflows follow the rules of the delivery issue (schema and zizmor run in make).

Pinned actions, least permissions per job, OIDC only in the deploy job of a protected
environment, no secrets at all, one roll-out per service and environment at a time, and the
names they use (container, Dockerfile, variables) agree with the rest of the repository.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.policies import load_template
from tests.procs import ROOT

WORKFLOWS = ROOT / ".github" / "workflows"
SERVICES = {"s3": "s3svc", "sqs": "sqssvc"}
PINNED = re.compile(r"^\s*(?:- )?uses: ([\w.-]+/[\w./-]+)@([0-9a-f]{40})  # (v\d+\.\d+\.\d+)$")


def load(name: str) -> dict[str, Any]:
    """A workflow as data (YAML 1.1 reads the key ``on`` as True: put it back)."""
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    assert isinstance(data, dict)
    if True in data:
        data["on"] = data.pop(True)
    return data


def all_workflows() -> list[Path]:
    """Every workflow file."""
    return sorted(WORKFLOWS.glob("*.yml"))


def test_the_four_workflows_exist() -> None:
    """ci and deploy, per service."""
    assert [p.name for p in all_workflows()] == [
        "ci-s3.yml",
        "ci-sqs.yml",
        "deploy-s3.yml",
        "deploy-sqs.yml",
    ]


def test_actions_are_pinned_to_a_commit_with_the_version_noted() -> None:
    """Every ``uses:`` is ``owner/repo@<40-hex SHA>  # vX.Y.Z``, one SHA per action everywhere."""
    seen: dict[str, set[tuple[str, str]]] = {}
    for path in all_workflows():
        for line in path.read_text().splitlines():
            if "uses:" not in line:
                continue
            m = PINNED.match(line)
            assert m, (
                f"{path.name}: not pinned to a commit SHA with a version comment: {line.strip()}"
            )
            seen.setdefault(m.group(1), set()).add((m.group(2), m.group(3)))
    assert seen
    assert all(len(pins) == 1 for pins in seen.values()), seen


@pytest.mark.parametrize("path", all_workflows(), ids=lambda p: p.name)
def test_permissions_are_least_per_job(path: Path) -> None:
    """Nothing at the top; each job reads contents; only a deploy job in an environment gets
    ``id-token: write``; checkout never keeps the token; no secrets are referenced."""
    wf = load(path.name)
    assert wf["permissions"] == {}
    for name, job in wf["jobs"].items():
        perms = job["permissions"]
        assert perms.get("contents") == "read", (path.name, name)
        extra = {k: v for k, v in perms.items() if k != "contents"}
        if path.name.startswith("deploy-") and name == "deploy":
            assert extra == {"id-token": "write"}
            assert job["environment"] == "production"
        else:
            assert extra == {}, (path.name, name)
        for step in job["steps"]:
            if str(step.get("uses", "")).startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False
    assert "secrets." not in path.read_text()


@pytest.mark.parametrize("short", sorted(SERVICES))
def test_ci_runs_make_test_then_builds_the_image_with_cache(short: str) -> None:
    """Pull requests touching the service or common/ run make test, then a cached image build."""
    service = SERVICES[short]
    wf = load(f"ci-{short}.yml")
    paths = wf["on"]["pull_request"]["paths"]
    assert f"{service}/**" in paths
    assert "common/**" in paths
    assert f"docker/{service}.Dockerfile" in paths
    assert wf["concurrency"]["cancel-in-progress"] is True
    assert [s.get("run") for s in wf["jobs"]["test"]["steps"] if "run" in s] == [
        "make test",
        "make audit",
    ]
    image = wf["jobs"]["image"]
    assert image["needs"] == "test"
    (build,) = [
        s for s in image["steps"] if str(s.get("uses", "")).startswith("docker/build-push-action@")
    ]
    assert build["with"]["file"] == f"docker/{service}.Dockerfile"
    assert (ROOT / build["with"]["file"]).is_file()
    assert build["with"]["push"] is False
    assert build["with"]["cache-from"].startswith("type=gha")
    assert build["with"]["cache-to"].startswith("type=gha")


@pytest.mark.parametrize("short", sorted(SERVICES))
def test_deploy_pushes_by_sha_and_rolls_the_right_container(short: str) -> None:
    """Manual or tag trigger; one roll-out per environment at a time; image tagged with the
    commit SHA; the roll-out names the container the template defines."""
    service = SERVICES[short]
    wf = load(f"deploy-{short}.yml")
    assert "workflow_dispatch" in wf["on"]
    assert wf["on"]["push"]["tags"] == [f"{service}-v*"]
    assert wf["concurrency"] == {
        "group": f"deploy-production-{service}",
        "cancel-in-progress": False,
    }
    job = wf["jobs"]["deploy"]
    assert job["needs"] == "test"
    assert job["env"]["CONTAINER"] == service
    containers = [
        c["Name"]
        for r in load_template()["Resources"].values()
        if r["Type"] == "AWS::ECS::TaskDefinition"
        for c in r["Properties"]["ContainerDefinitions"]
    ]
    assert service in containers
    text = (WORKFLOWS / f"deploy-{short}.yml").read_text()
    assert ":${GITHUB_SHA}" in text
    assert f"file: docker/{service}.Dockerfile" in text
    assert "python deploy/ecs_deploy.py" in text
    assert "-c constraints.txt" in text
    assert "--password-stdin" in text  # the registry password never becomes an argument


@pytest.mark.parametrize(("workflow", "job"), [("ci", "image"), ("deploy", "deploy")])
@pytest.mark.parametrize("short", sorted(SERVICES))
def test_the_image_is_checked_as_a_container_after_its_build(
    short: str, workflow: str, job: str
) -> None:
    """After the build (loaded into the runner's Docker) the job runs the container checks of
    .ci/run on that very image, on the runner's engine; a deploy pushes only afterwards."""
    service = SERVICES[short]
    steps = load(f"{workflow}-{short}.yml")["jobs"][job]["steps"]
    names = [str(s.get("uses", "")).split("@")[0] or s.get("run", "") for s in steps]
    build = names.index("docker/build-push-action")
    check = names.index("make images")
    assert build < check
    assert names.index("actions/setup-python") < check
    built = steps[build]["with"]
    assert built["load"] is True
    assert built["push"] is False
    env = steps[check]["env"]
    assert env["CONTAINER_ENGINE"] == "system"
    assert env["BUILDX_BUILDER"] == "default"  # `docker build` of the other images loads them
    assert env[f"IMAGE_{service.upper()}"] == built["tags"]
    if workflow == "deploy":
        assert names[check + 1 :] == ['docker push "$IMAGE"', names[-1]]
        assert steps[check + 1]["env"]["IMAGE"] == built["tags"]


@pytest.mark.parametrize("short", sorted(SERVICES))
def test_deploy_runs_from_main_or_a_release_tag_and_reuses_a_pushed_image(short: str) -> None:
    """The deploy job runs for main and the service's own tags only; when ECR already holds the
    commit's image (immutable tags: a re-run, a roll-back), the build, checks and push are skipped
    and that image is deployed."""
    service = SERVICES[short]
    job = load(f"deploy-{short}.yml")["jobs"]["deploy"]
    assert job["if"] == (
        f"github.ref == 'refs/heads/main' || startsWith(github.ref, 'refs/tags/{service}-v')"
    )
    steps = job["steps"]
    (look,) = [i for i, s in enumerate(steps) if s.get("id") == "pushed"]
    assert "aws ecr describe-images" in steps[look]["run"]
    assert "ImageNotFoundException" in steps[look]["run"]  # any other failure fails the job
    producing = steps[look + 1 : -1]
    assert [s.get("if") for s in producing] == ["steps.pushed.outputs.exists == 'false'"] * len(
        producing
    )
    assert "docker push" in producing[-1]["run"]
    assert "if" not in steps[-1]
    assert "ecs_deploy.py" in steps[-1]["run"]


def test_every_repository_variable_is_documented() -> None:
    """Each ``vars.X`` the workflows read is explained in docs/deployment.md."""
    used = set()
    for path in all_workflows():
        used |= set(re.findall(r"vars\.([A-Z0-9_]+)", path.read_text()))
    readme = (ROOT / "docs" / "deployment.md").read_text()
    section = readme.split("## Deployment", 1)[1].split("\n## ", 1)[0]
    missing = sorted(v for v in used if f"`{v}`" not in section)
    assert used
    assert not missing, f"not documented in docs/deployment.md: {missing}"
