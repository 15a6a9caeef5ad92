"""``python -m s3svc --help`` / ``python -m sqssvc --help``: usage and every setting, nothing served."""

from __future__ import annotations

import re
import subprocess
import sys
from types import ModuleType

import pytest

import common.config
import s3svc.config
import sqssvc.config
from tests.procs import ROOT, free_port

SERVICES = {"s3svc": s3svc.config, "sqssvc": sqssvc.config}


def env_names(*modules: ModuleType) -> set[str]:
    """Every ``ENV_*`` variable name the config modules define."""
    return {
        value
        for module in modules
        for name, value in vars(module).items()
        if name.startswith("ENV_") and isinstance(value, str)
    }


def run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The service's command line, with a PORT it would listen on if it started."""
    env = {"PATH": "/usr/bin:/bin", "HOST": "127.0.0.1", "PORT": str(free_port())}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,  # a server that started would never exit on its own: the timeout fails it
    )


@pytest.mark.parametrize("module", sorted(SERVICES))
def test_help_lists_every_setting_and_exits(module: str) -> None:
    """Exit 0 with the usage and every variable of the service (common ones included), each
    with its default; it exits by itself, so it never served."""
    done = run(module, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: python -m {module}")
    listed = set(re.findall(r"^  ([A-Z][A-Z0-9_]+)  ", done.stdout, re.MULTILINE))
    expected = env_names(common.config, SERVICES[module])
    assert expected <= listed, expected - listed
    # A byte count's default reads as the setting would be written (PART_SIZE, SQS_MAX_PENDING_BYTES).
    assert {"s3svc": "default 8MiB;", "sqssvc": "default 64MiB;"}[module] in done.stdout


@pytest.mark.parametrize("module", sorted(SERVICES))
def test_unknown_argument_is_an_error(module: str) -> None:
    """Anything but --help: exit 2 with the usage, before anything listens."""
    done = run(module, "--port", "9000")
    assert done.returncode == 2
    assert "unrecognized arguments: --port 9000" in done.stderr
    assert done.stdout == ""
