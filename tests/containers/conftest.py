"""The container checks' fixtures: one engine per session, both images built from the real
Dockerfiles, a locally built moto image for compose, and a summary of what it cost.

When no engine can be had here (not root, not Linux, nothing to install Docker with), every check
is skipped with that reason, unless ``CONTAINER_CHECKS=required`` (CI) makes it a failure.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.containers import engine as eng
from tests.containers.engine import Engine
from tests.procs import ROOT

COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
SERVICES = ("s3svc", "sqssvc")


@dataclass(frozen=True)
class Image:
    """A built service image: its tag and Dockerfile."""

    service: str
    tag: str
    dockerfile: Path


def compose_image(service: str) -> str:
    """The image name ``docker/compose.yaml`` gives a service (the checks build under it)."""
    image: str = COMPOSE["services"][service]["image"]
    return image


def _app_version() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "container-checks"


@pytest.fixture(scope="session")
def docker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """The session's engine (see ``engine.py``): started here, stopped at the end."""
    reason = eng.cannot_start()
    if reason is not None:
        message = f"container checks did not run: no Docker engine can be started here: {reason}"
        if os.environ.get("CONTAINER_CHECKS") == "required":
            pytest.fail(message)
        pytest.skip(message)
    with eng.engine() as found:
        yield found


@pytest.fixture(scope="session")
def app_version() -> str:
    """What the images are built to report as ``version`` (the commit, as the workflows pass)."""
    return _app_version()


@pytest.fixture(scope="session")
def images(docker: Engine, app_version: str) -> dict[str, Image]:
    """Both service images, built with their Dockerfiles as they are (``IMAGE_S3SVC`` /
    ``IMAGE_SQSSVC`` name an image built already, e.g. by a workflow's build step)."""
    built: dict[str, Image] = {}
    for service in SERVICES:
        dockerfile = ROOT / "docker" / f"{service}.Dockerfile"
        tag = compose_image(service)
        given = os.environ.get(f"IMAGE_{service.upper()}")
        if given:
            docker("tag", given, tag)
        else:
            docker.build(dockerfile, tag, ROOT, f"--build-arg=APP_VERSION={app_version}")
        built[service] = Image(service, tag, dockerfile)
        size = int(docker("image", "inspect", "-f", "{{.Size}}", tag).strip())
        python = docker(
            "run", "--rm", "--network=none", tag, "python", "-c",
            "import platform; print(platform.python_version())",
        ).strip()  # fmt: skip
        eng.FACTS.append(f"{tag}: {size / 1e6:.0f} MB, Python {python}")
    return built


@pytest.fixture(scope="session")
def moto_image(docker: Engine) -> str:
    """``docker/compose.yaml``'s moto image, built here from ``moto.Dockerfile`` (nothing is
    pulled) at the moto version constraints.txt pins; the private engine caches it, as it is
    not under test."""
    tag = compose_image("moto")
    if not docker.has_image(tag):
        version = tag.rsplit(":", 1)[1]
        here = Path(__file__).parent
        eng.cached_build(
            docker, here / "moto.Dockerfile", tag, here, f"--build-arg=MOTO_VERSION={version}"
        )
    return tag


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print each container step's time and each image's size and Python."""
    if not eng.TIMINGS and not eng.FACTS:
        return
    terminalreporter.section("container checks")
    for step, seconds in eng.TIMINGS:
        terminalreporter.write_line(f"{seconds:7.1f} s  {step}")
    for fact in eng.FACTS:
        terminalreporter.write_line(fact)
