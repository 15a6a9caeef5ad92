"""Each image's runtime stage, reproduced without Docker from the Dockerfile itself.

The build stage's ``COPY`` lines decide which files reach a build context (so a package the
Dockerfile forgets to copy is missing here too), and its ``pip`` steps run as written, with the
image's absolute paths moved under a temporary root: wheels of the project and its pinned runtime
dependencies only, then a fresh virtualenv that installs those wheels with ``--no-index``, as the
runtime stage does. That virtualenv runs the image's ``CMD`` with exactly the ``ENV`` the
Dockerfile sets (``HOST``/``PORT`` overridden as ``docker run -e`` would, so parallel tests do not
collide): it answers ``/health``, the Dockerfile's own ``HEALTHCHECK`` command succeeds against
it (and fails once it is gone), the ``STOPSIGNAL`` stops it cleanly, and neither moto nor any
other dev tool can be imported in it.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from s3svc.config import S3Settings
from sqssvc.config import SqsSettings
from tests.deploy.dockerfile import Dockerfile, Stage, parse
from tests.procs import ROOT, free_port

SERVICES: dict[str, type[S3Settings] | type[SqsSettings]] = {
    "s3svc": S3Settings,
    "sqssvc": SqsSettings,
}
# RUN steps that cannot run on a developer's machine and what stands in for them here.
NOT_REPRODUCED = {"useradd": "creates the image's user; USER is checked to be that non-root uid"}
DEV_ONLY = ("moto", "pytest", "mypy", "ruff", "cfnlint")


@dataclass
class Runtime:
    """A reproduced runtime stage: the virtualenv standing in for the image's Python."""

    venv: Path
    steps: list[list[str]]

    @property
    def bin(self) -> Path:
        """Its scripts directory (first on PATH, as the image's Python is)."""
        return self.venv / "bin"


def _ignored(relative: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(relative, p) for p in patterns)


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def _copy_into_context(stage: Stage, workdir: Path) -> None:
    """Carry out the stage's ``COPY`` lines from the repository, honouring .dockerignore."""
    patterns = _dockerignore()
    nested = [p.removeprefix("**/") for p in patterns if p.startswith("**/")]
    for ins in stage.all("COPY"):
        parts = shlex.split(ins.args)
        assert not any(p.startswith("--") for p in parts), f"unexpected COPY flags: {ins.args}"
        *sources, dest = parts
        target = workdir / dest
        for src in sources:
            assert not _ignored(src, patterns), f"COPY {src} is excluded by .dockerignore"
            origin = ROOT / src
            assert origin.exists(), f"COPY {src}: not in the repository"
            if origin.is_dir():
                shutil.copytree(origin, target, ignore=shutil.ignore_patterns(*nested))
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target / origin.name)


def _run_steps(stage: Stage, root: Path, cwd: Path, python: Path, steps: list[list[str]]) -> None:
    """Run the stage's RUN lines: ``pip`` with ``python``, ``rm`` inside ``root``; paths moved."""
    for ins in stage.all("RUN"):
        for command in ins.args.split("&&"):
            argv = shlex.split(command)
            program = argv[0]
            if program in NOT_REPRODUCED:
                continue
            assert program in ("pip", "rm"), f"RUN step this test cannot reproduce: {command}"
            moved: list[str] = []
            for arg in argv[1:]:
                if arg.startswith("/"):
                    path = str(root) + arg
                    moved.extend(sorted(glob.glob(path)) if "*" in arg else [path])
                else:
                    moved.append(arg)
            if program == "pip":
                argv = [str(python), "-m", "pip", *moved]
            else:
                assert all(a.startswith("-") or a.startswith(str(root)) for a in moved)
                argv = ["rm", *moved]
            steps.append(argv)
            subprocess.run(argv, cwd=cwd, check=True, capture_output=True)


def _stage_key(df: Dockerfile) -> str:
    """What decides the installed result: the build stage and the final stage's COPY/RUN."""
    parts = [df.stages[0].base]
    for stage in df.stages:
        parts += [
            f"{i.keyword} {i.args}"
            for i in stage.instructions
            if i.keyword in ("COPY", "RUN", "WORKDIR")
        ]
    return "\n".join(parts)


@pytest.fixture(scope="session")
def reproduce(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Dockerfile], Runtime]:
    """Build a Dockerfile's runtime stage into a virtualenv, once per distinct build."""
    built: dict[str, Runtime] = {}

    def build(df: Dockerfile) -> Runtime:
        key = _stage_key(df)
        if key in built:
            return built[key]
        assert len(df.stages) == 2, "expected a build stage and a runtime stage"
        build_stage, final = df.stages
        tmp = tmp_path_factory.mktemp("image")
        root = tmp / "rootfs"
        steps: list[list[str]] = []
        # Build stage: a fresh interpreter environment stands in for the base image's Python.
        builder = tmp / "build-venv"
        subprocess.run([sys.executable, "-m", "venv", str(builder)], check=True)
        workdir = root / build_stage.one("WORKDIR").args.lstrip("/")
        workdir.mkdir(parents=True)
        _copy_into_context(build_stage, workdir)
        _run_steps(build_stage, root, workdir, builder / "bin" / "python", steps)
        # Runtime stage: COPY --from=build keeps its paths; then its own RUN steps.
        for ins in final.all("COPY"):
            parts = shlex.split(ins.args)
            assert parts[0] == f"--from={build_stage.name}", (
                f"unexpected COPY in runtime: {ins.args}"
            )
            assert parts[1] == parts[2], "COPY --from must keep the path for this reproduction"
        venv = tmp / "runtime-venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        _run_steps(final, root, tmp, venv / "bin" / "python", steps)
        built[key] = Runtime(venv=venv, steps=steps)
        return built[key]

    return build


@dataclass
class Running:
    """The image's CMD running in a reproduced runtime."""

    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    port: int
    log: Path


@pytest.fixture(params=sorted(SERVICES))
def running(
    request: pytest.FixtureRequest, reproduce: Callable[[Dockerfile], Runtime], tmp_path: Path
) -> Iterator[tuple[str, Dockerfile, Runtime, Running]]:
    """Start ``CMD`` of ``docker/<service>.Dockerfile`` with its ENV in its reproduced runtime."""
    service: str = request.param
    df = parse(ROOT / "docker" / f"{service}.Dockerfile")
    runtime = reproduce(df)
    port = free_port()
    home = tmp_path / "home"
    home.mkdir()
    env = df.final.env() | {
        "PATH": f"{runtime.bin}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "HOST": "127.0.0.1",
        "PORT": str(port),
    }
    log = tmp_path / f"{service}.log"
    with log.open("wb") as out:
        # cwd outside the repository: the service must come from the installed wheel.
        proc = subprocess.Popen(
            df.final.exec_form("CMD"), cwd=home, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield service, df, runtime, Running(proc, env, port, log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _get_health(port: int, timeout: float = 30.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
                body = json.load(resp)
                assert isinstance(body, dict)
                return body
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _check_upload_page(port: int) -> None:
    """The upload page's files are package data: the wheel, and so the image, serves them."""
    base = f"http://127.0.0.1:{port}/s3"
    with urllib.request.urlopen(f"{base}/", timeout=5) as page:
        assert page.headers["Content-Type"] == "text/html; charset=utf-8"
        html = page.read().decode()
    for name, kind in (("page.js", "text/javascript"), ("page.css", "text/css")):
        assert f"/s3/page/{name}?v=" in html
        with urllib.request.urlopen(f"{base}/page/{name}", timeout=5) as got:
            assert got.headers["Content-Type"] == f"{kind}; charset=utf-8"
            assert got.read()


def test_runtime_stage_serves_health_and_passes_its_healthcheck(
    running: tuple[str, Dockerfile, Runtime, Running],
) -> None:
    """CMD with the Dockerfile's ENV answers /health (s3svc also its upload page, from the wheel's
    package data); HEALTHCHECK passes, then fails once stopped; STOPSIGNAL ends it with status 0."""
    service, df, _, run = running
    assert df.final.exec_form("CMD") == ["python", "-m", service]
    assert run.env["PYTHONUNBUFFERED"] == "1"
    body = _get_health(run.port)
    assert body["status"] == "ok", run.log.read_text()
    assert body["service"] == service
    if service == "s3svc":
        _check_upload_page(run.port)

    options, check = df.final.healthcheck()
    assert check[0] == "python", "the image has no curl: the check must use the interpreter"
    timeout = float(options.get("timeout", "30s").rstrip("s"))
    ok = subprocess.run(check, env=run.env, capture_output=True, timeout=timeout + 5)
    assert ok.returncode == 0, ok.stderr

    stop = df.final.one("STOPSIGNAL").args
    run.proc.send_signal(getattr(signal, stop))
    assert run.proc.wait(30) == 0, run.log.read_text()
    down = subprocess.run(check, env=run.env, capture_output=True, timeout=timeout + 5)
    assert down.returncode != 0, "the health check passes with nothing listening"
    lines = [json.loads(x) for x in run.log.read_text().splitlines() if x.strip()]
    assert lines, "the service logged nothing"  # PYTHONUNBUFFERED: lines arrive before exit


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_image_metadata_matches_the_service(service: str) -> None:
    """EXPOSE and ENV PORT are the service's default port; the user is a non-root uid; the base
    image is pinned to a patch release of the Python the suite runs on."""
    df = parse(ROOT / "docker" / f"{service}.Dockerfile")
    default_port = SERVICES[service].from_env({}).common.port
    assert df.final.one("EXPOSE").args.split("/")[0] == str(default_port)
    assert df.final.env()["PORT"] == str(default_port)
    user = df.final.one("USER").args
    assert user.isdigit()
    assert int(user) != 0
    useradd = [i.args for i in df.final.all("RUN") if "useradd" in i.args]
    assert useradd
    assert f"--uid {user}" in useradd[0]
    for stage in df.stages:
        image, _, tag = stage.base.partition(":")
        assert image == "python", stage.base
        assert tag.count(".") == 2, f"base image not pinned to a patch release: {stage.base}"
        assert tag.startswith(f"{sys.version_info.major}.{sys.version_info.minor}.")


def test_runtime_has_only_runtime_dependencies(
    running: tuple[str, Dockerfile, Runtime, Running],
) -> None:
    """moto (and every other dev tool) is not importable in the runtime; the service's code is the
    installed wheel's, not the repository's."""
    service, _, runtime, run = running
    python = runtime.bin / "python"
    for module in DEV_ONLY:
        probe = subprocess.run(
            [str(python), "-c", f"import {module}"],
            cwd=run.env["HOME"],
            capture_output=True,
            text=True,
        )
        assert probe.returncode != 0, f"{module} is importable in the runtime"
        assert "ModuleNotFoundError" in probe.stderr, probe.stderr
    where = subprocess.run(
        [str(python), "-c", f"import {service}; print({service}.__file__)"],
        cwd=run.env["HOME"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(runtime.venv), where
    pip_steps = [s for s in runtime.steps if "pip" in s]
    assert any("wheel" in s for s in pip_steps)
    assert any("--no-index" in s for s in pip_steps)
    assert not any(".[dev]" in " ".join(s) for s in runtime.steps)
