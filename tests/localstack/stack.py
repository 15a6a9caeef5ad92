"""LocalStack as a second backend: where its virtualenv is, the interpreter it needs, its process.

LocalStack (``localstack-core[runtime]``) checks what moto does not: S3 refuses a body whose
checksum does not match (``BadDigest``) and SQS FIFO sends answer with a ``SequenceNumber``. It
needs CPython >= 3.13 and pins its own boto3, so it lives in its own virtualenv,
``.venv/tools/localstack``, built by ``make localstack`` from ``tests/localstack-requirements.txt``.

Standard library only: the Makefile runs ``python3 -m tests.localstack.stack find-python`` with the
project's own interpreter (3.11 will do) to find a 3.13 before any virtualenv exists.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.procs import ROOT, free_port

VENV = ROOT / ".venv" / "tools" / "localstack"
PYTHON = VENV / "bin" / "python"
REQUIREMENTS = ROOT / "tests" / "localstack-requirements.txt"
MINOR = (3, 13)  # the version the pinned requirements were resolved for
SERVICES = ("s3", "sqs", "logs")
# ``LOCALSTACK_PASS=required`` (set by .ci/run): a missing LocalStack fails instead of skipping.
REQUIRED_ENV = "LOCALSTACK_PASS"

_CHECK = "import sys; print(sys.executable) if sys.version_info[:2] == (3, 13) else sys.exit(1)"


def _runs_313(command: str, env: dict[str, str] | None = None) -> str | None:
    """The real executable behind ``command`` if it runs and is CPython 3.13, else None.

    A pyenv shim is on PATH for every installed version but fails unless that version is
    selected, so being on PATH is not enough: the command has to run.
    """
    try:
        out = subprocess.run(
            [command, "-c", _CHECK],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    path = out.stdout.strip()
    return path if out.returncode == 0 and path else None


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def find_python() -> str | None:
    """A CPython 3.13: ``python3.13`` on PATH (pyenv shims count when they run), else the newest
    3.13.x that pyenv has installed; None when there is none."""
    on_path = shutil.which("python3.13")
    if on_path is not None and (found := _runs_313(on_path)):
        return found
    pyenv = shutil.which("pyenv")
    if pyenv is None:
        return None
    try:
        listed = subprocess.run(
            [pyenv, "versions", "--bare", "--skip-aliases"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        return None
    prefix = "{}.{}.".format(*MINOR)
    versions = [v for v in listed if v.startswith(prefix) and v[len(prefix) :].isdigit()]
    for version in sorted(versions, key=_version_key, reverse=True):
        if found := _pyenv_python(pyenv, version):
            return found
    return None


def _pyenv_python(pyenv: str, version: str) -> str | None:
    """The python3.13 of pyenv's ``version``, if it runs."""
    try:
        prefix = subprocess.run(
            [pyenv, "prefix", version],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return _runs_313(str(Path(prefix) / "bin" / "python3.13")) if prefix else None


def unavailable() -> str | None:
    """Why the LocalStack tests cannot run here, or None when its virtualenv is ready."""
    if PYTHON.exists() and (VENV / ".installed-stamp").exists():
        return None
    return (
        "LocalStack needs a CPython >= 3.13 and its virtualenv .venv/tools/localstack, which is "
        "not built: run `make localstack` (it finds python3.13 on PATH or in pyenv; "
        "LOCALSTACK_PYTHON=/path/to/python3.13 names one)"
    )


def required() -> bool:
    """True when a missing LocalStack must fail the run (CI) rather than skip its tests."""
    return os.environ.get(REQUIRED_ENV) == "required"


@dataclass
class LocalStack:
    """One LocalStack process on a free loopback port, its state and log under ``workdir``."""

    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The endpoint for every AWS client (S3, SQS and Logs share one port)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        """LocalStack's own output (stdout and stderr)."""
        return self.workdir / "localstack.log"

    def env(self) -> dict[str, str]:
        """A clean environment: nothing of the developer's reaches it, nothing leaves the machine."""
        home = self.workdir / "home"
        home.mkdir(parents=True, exist_ok=True)
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),  # plux's entry-point cache and anything else per-user
            "LANG": "C.UTF-8",
            # State, certificates and caches: under this run's directory, not inside the venv
            # (the default for a host run) nor /var/lib/localstack.
            "FILESYSTEM_ROOT": str(self.workdir / "fs"),
            # The machine may look like a container; LocalStack then assumes container paths.
            "OVERRIDE_IN_DOCKER": "0",
            # The default (twisted) server binds 0.0.0.0 whatever GATEWAY_LISTEN says.
            "GATEWAY_SERVER": "hypercorn",
            "GATEWAY_LISTEN": f"127.0.0.1:{self.port}",
            "SERVICES": ",".join(SERVICES),
            # Offline: no DNS server (it would probe an upstream resolver on the internet), no
            # analytics events, a self-signed certificate instead of a downloaded one. (S3, SQS
            # and Logs download nothing else.)
            "DNS_ADDRESS": "0",
            "DISABLE_EVENTS": "1",
            "SKIP_SSL_CERT_DOWNLOAD": "1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "PYTHONUNBUFFERED": "1",
        }

    def start(self, timeout: float = 120.0) -> LocalStack:
        """Start, wait until the health endpoint calls every service of ``SERVICES`` usable, and
        load S3 and SQS.

        ``timeout`` is a hang guard (it is ready in well under 15 s); on failure the error
        carries the log.
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(PYTHON), "-m", "localstack.runtime.main"],
                cwd=self.workdir,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own group: stop() reaches any child it starts
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"LocalStack exited {self.proc.returncode} before it was ready; "
                    f"its log ({self.log_path}):\n{self.output()}"
                )
            if self.ready():
                try:
                    self.warm(deadline - time.monotonic())
                except OSError as exc:
                    self.stop()
                    raise RuntimeError(
                        f"LocalStack did not answer its first S3 and SQS requests ({exc}); "
                        f"its log ({self.log_path}):\n{self.output()}"
                    ) from exc
                return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(
            f"LocalStack was not ready within {timeout:.0f} s; its log ({self.log_path}):\n"
            f"{self.output()}"
        )

    def health(self) -> dict[str, str]:
        """Each service's state from ``/_localstack/health`` (empty when it does not answer)."""
        try:
            with urllib.request.urlopen(self.url + "/_localstack/health", timeout=2) as resp:
                services: dict[str, str] = json.load(resp).get("services", {})
                return services
        except (OSError, ValueError):
            return {}

    def ready(self) -> bool:
        """True when every service we use is ``available`` (loads on first use) or ``running``."""
        states = self.health()
        return all(states.get(s) in ("available", "running") for s in SERVICES)

    def warm(self, timeout: float) -> None:
        """Load S3 and SQS now with one unsigned listing each (LocalStack loads a service on its
        first request, SQS in several seconds): no test's first call waits for it, and no
        service's readiness probe (5 s for sqssvc) runs out on it."""
        s3_scope = {  # LocalStack routes by the credential scope and does not check the signature
            "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/"
            "aws4_request, SignedHeaders=host, Signature=0",
            "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
            "x-amz-date": "20260101T000000Z",
        }
        for request in (
            urllib.request.Request(self.url + "/?Action=ListQueues"),
            urllib.request.Request(self.url + "/", headers=s3_scope),
        ):
            with urllib.request.urlopen(request, timeout=max(timeout, 1)) as resp:
                resp.read()

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM to its process group, then SIGKILL if it has not exited within ``grace``.

        The grace is short on purpose: once SQS has served a request, LocalStack 2026.3.0 often
        never finishes its own SIGTERM shutdown (its hypercorn server stops the event loop from
        another thread, and the loop can stay asleep in ``select``). Nothing is lost by the
        kill: its state is this run's temporary directory.
        """
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        except ProcessLookupError:
            proc.wait(10)

    def output(self) -> str:
        """Everything LocalStack wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def main(argv: list[str]) -> int:
    """``find-python``: print the 3.13 interpreter's path (nothing, exit 1, when there is none)."""
    if argv == ["find-python"]:
        found = find_python()
        if found is None:
            return 1
        print(found)
        return 0
    print("usage: python -m tests.localstack.stack find-python", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
