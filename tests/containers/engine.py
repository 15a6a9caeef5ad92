"""A Docker engine for the container checks: the suite's own daemon, or the machine's.

Private (the default): on a machine where no image registry is reachable, as root, the suite
installs what is missing of Debian's ``docker.io`` and ``debootstrap``, starts a ``dockerd`` of its
own (its data in a temporary directory, no bridge and no iptables rules: containers use the host's
network), and makes the Dockerfiles' ``FROM`` image itself: a Debian rootfs with
python3 and pip from the mirror the machine's apt sources name, imported under the ``FROM`` name.
That rootfs is cached between runs (``CONTAINER_CACHE``, one tarball per ``FROM`` name and recipe),
and the daemon is stopped and its data removed at the end. The machine's own daemon is never used.

System (``CONTAINER_ENGINE=system``, the GitHub workflows): the ``docker`` on ``PATH`` and its
daemon, which pulls the real base image; nothing is installed or started.

Nothing here names a mirror or an index: the mirror is read from the apt sources at run time, and
a build reaches the package index over the host's network with the host's CA bundle (copied into
the stand-in) and the machine's proxy variables (Docker's predefined build arguments).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_REQUIREMENTS = Path(__file__).with_name("compose-requirements.txt")
COMPOSE_VENV = ROOT / ".venv" / "tools" / "compose"
DEBIAN_PACKAGES = {"docker.io": "/usr/sbin/dockerd", "debootstrap": "/usr/sbin/debootstrap"}
# Debian's CLI, the daemon's own version: a newer CLI elsewhere on PATH may insist on buildx.
PRIVATE_DOCKER = "/usr/bin/docker"
# What the stand-in base holds: the real base's interpreter, pip and CA bundle, in Debian's form.
STAND_IN_PACKAGES = (
    "python3",
    "python3-pip",
    "python3-venv",
    "python-is-python3",
    "ca-certificates",
)
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY")

# Seconds each step took in this session, in order, for the summary (and the report).
TIMINGS: list[tuple[str, float]] = []
# Facts for the summary: image sizes, interpreter versions.
FACTS: list[str] = []


@contextlib.contextmanager
def timed(step: str) -> Iterator[None]:
    """Record how long ``step`` took."""
    start = time.monotonic()
    try:
        yield
    finally:
        TIMINGS.append((step, time.monotonic() - start))


def mode() -> str:
    """``private`` (the suite's own daemon) or ``system`` (the machine's, e.g. GitHub's)."""
    chosen = os.environ.get("CONTAINER_ENGINE", "private")
    if chosen not in ("private", "system"):
        raise ValueError(f"CONTAINER_ENGINE must be private or system, not {chosen!r}")
    return chosen


def cannot_start() -> str | None:
    """Why no engine can be had here, in plain words; None when one can."""
    if mode() == "system":
        return None if shutil.which("docker") else "CONTAINER_ENGINE=system but no docker on PATH"
    if not sys.platform.startswith("linux"):
        return f"a private dockerd needs Linux, this is {sys.platform}"
    if os.geteuid() != 0:
        return (
            "a private dockerd needs root (run as root, or CONTAINER_ENGINE=system with a daemon)"
        )
    missing = [p for p, exe in DEBIAN_PACKAGES.items() if not Path(exe).exists()]
    if missing and not shutil.which("apt-get"):
        return f"{' and '.join(missing)} not installed and no apt-get to install them"
    return None


def run(argv: Sequence[str | Path], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a command, failing with its output when it fails."""
    done = subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        check=False,
        **kwargs,  # type: ignore[call-overload]
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, argv))} exited {done.returncode}\n"
            f"--- stdout\n{done.stdout[-6000:]}\n--- stderr\n{done.stderr[-6000:]}"
        )
    assert isinstance(done, subprocess.CompletedProcess)
    return done


def ensure_debian_packages() -> None:
    """Install Debian's docker.io and debootstrap when they are missing (waits for apt's lock)."""
    missing = [p for p, exe in DEBIAN_PACKAGES.items() if not Path(exe).exists()]
    if not missing:
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    lock = ["-o", "DPkg::Lock::Timeout=600"]
    with timed(f"apt-get install {' '.join(missing)}"):
        run(["apt-get", *lock, "update", "-qq"], env=env)
        run(
            ["apt-get", *lock, "install", "-y", "-qq", "--no-install-recommends", *missing], env=env
        )


def ensure_compose() -> Path:
    """The Compose binary (Docker's own v2-line release, as pinned and hashed in
    ``compose-requirements.txt``) in a virtualenv of its own; installed when missing or stale."""
    binary = COMPOSE_VENV / "bin" / "docker-compose"
    stamp = COMPOSE_VENV / ".installed-stamp"
    wanted = COMPOSE_REQUIREMENTS.read_text()
    if binary.exists() and stamp.exists() and stamp.read_text() == wanted:
        return binary
    with timed("install docker-compose"):
        if not (COMPOSE_VENV / "bin" / "python").exists():
            run([sys.executable, "-m", "venv", "--clear", COMPOSE_VENV])
        pip: list[str | Path] = [COMPOSE_VENV / "bin" / "python", "-m", "pip", "install", "-q"]
        run([*pip, "--require-hashes", "-r", COMPOSE_REQUIREMENTS])
    stamp.write_text(wanted)
    return binary


def apt_mirror(suite: str) -> str:
    """The Debian archive the machine's apt sources name for ``suite`` (read, never written)."""
    found: list[tuple[str, list[str]]] = []
    sources = Path("/etc/apt")
    for path in [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*.list"))]:
        if path.exists():
            for line in path.read_text().splitlines():
                m = re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
                if m:
                    found.append((m.group(1), [m.group(2)]))
    for path in sorted((sources / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                key, sep, value = line.partition(":")
                if sep and not line.startswith("#"):
                    fields[key.strip().lower()] = value.strip()
            if fields.get("enabled", "yes") != "no" and "deb" in fields.get("types", "").split():
                suites = fields.get("suites", "").split()
                found += [(uri, suites) for uri in fields.get("uris", "").split()]
    for uri, suites in found:
        if suite in suites:
            return uri
    raise RuntimeError(f"no apt source for {suite} in /etc/apt: the stand-in base needs one")


def cache_dir() -> Path:
    """Where stand-in bases are kept between runs on this machine (outside the repository)."""
    return Path(os.environ.get("CONTAINER_CACHE", "/var/cache/upload-messaging/containers"))


def _recipe(name: str) -> str:
    return json.dumps({"from": name, "packages": STAND_IN_PACKAGES, "version": 1})


def _unmount_under(path: Path) -> None:
    """Lazily unmount whatever is still mounted below ``path`` (a killed debootstrap or daemon)."""
    mounts = [ln.split()[1] for ln in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(f"{path}/")), reverse=True):
        subprocess.run(["umount", "-l", mount], check=False)


def remove_tree(path: Path) -> None:
    """``rm -rf`` that first unmounts what a daemon or debootstrap left mounted inside, and never
    crosses into a file system still mounted there (a bind mount of the host's)."""
    if path.exists():
        _unmount_under(path)
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)


def stand_in_tarball(name: str) -> Path:
    """A Debian rootfs standing in for the image ``name`` (``python:<x.y.z>-slim-<suite>``), as a
    tarball for ``docker import``: made once per name and recipe, then reused from the cache."""
    digest = hashlib.sha256(_recipe(name).encode()).hexdigest()[:12]
    safe = re.sub(r"[^A-Za-z0-9.-]+", "_", name)
    tarball = cache_dir() / f"{safe}-{digest}.tar"
    if tarball.exists():
        return tarball
    suite = name.rsplit("-", 1)[-1]
    cache_dir().mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="stand-in-", dir=cache_dir()))
    rootfs = work / "rootfs"
    try:
        with timed(f"debootstrap {suite} (stand-in for {name})"):
            include = f"--include={','.join(STAND_IN_PACKAGES)}"
            run(["debootstrap", "--variant=minbase", include, suite, rootfs, apt_mirror(suite)])
        # The real image's pip installs into the system interpreter; Debian's refuses to (PEP 668).
        for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
            marker.unlink()
        # TLS to the package index may go through a proxy that only the host's bundle trusts.
        shutil.copyfile(HOST_CA_BUNDLE, rootfs / HOST_CA_BUNDLE.relative_to("/"))
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / junk).glob("*"):
                if entry.is_file():
                    entry.unlink()
        partial = work / "rootfs.tar"
        run(["tar", "-C", rootfs, "--numeric-owner", "-cf", partial, "."])
        partial.rename(tarball)  # same file system: a concurrent run sees all or nothing
    finally:
        remove_tree(work)
    return tarball


@dataclass
class Engine:
    """A running Docker engine and the CLI that talks to it."""

    docker: str
    env: dict[str, str]
    private: bool
    workdir: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    built: dict[str, float] = field(default_factory=dict)

    def __call__(self, *args: str | Path, timeout: float = 900) -> str:
        """``docker ARGS`` against this engine; its stdout (fails with its output)."""
        return run([self.docker, *args], env=self.env, timeout=timeout).stdout

    def try_(self, *args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``docker ARGS``, whatever its exit code."""
        return subprocess.run(
            [self.docker, *map(str, args)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def has_image(self, ref: str) -> bool:
        """Whether the engine holds ``ref``."""
        return self.try_("image", "inspect", ref).returncode == 0

    def daemon_log(self) -> str:
        """The private daemon's own output so far (empty for the system engine)."""
        return self.log.read_text(errors="replace")[-6000:] if self.log else ""

    def ensure_base(self, name: str) -> None:
        """Make ``name`` available: the system engine pulls it; the private one imports the
        cached stand-in (made first if need be)."""
        if self.has_image(name):
            return
        if not self.private:
            with timed(f"pull {name}"):
                self("pull", name)
            return
        tarball = stand_in_tarball(name)
        with timed(f"import the stand-in for {name}"):
            self(
                "import",
                "--change",
                "ENV LANG=C.UTF-8",
                "--change",
                'CMD ["python3"]',
                tarball,
                name,
            )

    def build(self, dockerfile: Path, tag: str, context: Path = ROOT, *args: str) -> None:
        """``docker build`` of ``dockerfile`` as ``tag`` (its base made available first)."""
        bases = [
            ln.split()[1] for ln in dockerfile.read_text().splitlines() if ln.startswith("FROM ")
        ]
        for base in dict.fromkeys(bases):
            self.ensure_base(base)
        flags = [f"--build-arg={v}" for v in PROXY_VARIABLES if os.environ.get(v)]
        flags += [f"--build-arg={v.lower()}" for v in PROXY_VARIABLES if os.environ.get(v.lower())]
        if self.private:
            flags.append("--network=host")  # no bridge on this daemon; the index is the host's
        start = time.monotonic()
        with timed(f"docker build {tag}"):
            self("build", *flags, *args, "-f", dockerfile, "-t", tag, context, timeout=1800)
        self.built[tag] = time.monotonic() - start


def cached_build(docker: Engine, dockerfile: Path, tag: str, context: Path, *args: str) -> None:
    """Build a helper image (not one under test) once per machine: the private engine saves it to
    the cache and loads it from there later, keyed by its Dockerfile, tag and build arguments."""
    if not docker.private:
        docker.build(dockerfile, tag, context, *args)
        return
    key = json.dumps([dockerfile.read_text(), tag, args])
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    tarball = cache_dir() / f"{re.sub(r'[^A-Za-z0-9.-]+', '_', tag)}-{digest}.tar"
    if tarball.exists():
        with timed(f"load {tag} from the cache"):
            docker("load", "--quiet", "--input", tarball)
        return
    docker.build(dockerfile, tag, context, *args)
    cache_dir().mkdir(parents=True, exist_ok=True)
    partial = tarball.with_suffix(f".{os.getpid()}.part")
    with timed(f"save {tag} to the cache"):
        docker("save", "--output", partial, tag)
        partial.rename(tarball)


def _wait_for_socket(engine: Engine, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while engine.try_("version", timeout=10).returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"dockerd did not start:\n{engine.daemon_log()}")
        time.sleep(0.2)


@contextlib.contextmanager
def engine() -> Iterator[Engine]:
    """An engine for the session: the private daemon (started here, stopped and removed after),
    or the system one."""
    if mode() == "system":
        yield Engine(docker=shutil.which("docker") or "docker", env=dict(os.environ), private=False)
        return
    ensure_debian_packages()
    # A short path: containerd's sockets live under the exec root (108-byte socket path limit).
    workdir = Path(tempfile.mkdtemp(prefix="dockerd-"))
    config = workdir / "daemon.json"
    config.write_text("{}")  # the machine's /etc/docker/daemon.json does not apply
    sock = workdir / "docker.sock"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env |= {"DOCKER_HOST": f"unix://{sock}", "DOCKER_BUILDKIT": "0", "DOCKER_CONFIG": str(workdir)}
    log = workdir / "dockerd.log"
    argv = [
        "dockerd",
        f"--config-file={config}",
        f"--data-root={workdir / 'data'}",
        f"--exec-root={workdir / 'exec'}",
        f"--pidfile={workdir / 'dockerd.pid'}",
        f"--host=unix://{sock}",
        # No --storage-driver: dockerd takes overlay2 where the file system allows, else vfs.
        "--iptables=false",
        "--ip-masq=false",
        "--bridge=none",
    ]
    with timed("start dockerd"), log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        found = Engine(PRIVATE_DOCKER, env, private=True, workdir=workdir, proc=proc, log=log)
        try:
            _wait_for_socket(found, proc)
        except BaseException:
            _stop(proc, workdir)
            raise
    driver = found("info", "-f", "{{.Driver}}").strip()
    FACTS.append(
        f"private dockerd {found('version', '-f', '{{.Server.Version}}').strip()}, storage {driver}"
    )
    try:
        yield found
    finally:
        with timed("stop dockerd"):
            leftover = found.try_("ps", "-aq").stdout.split()
            if leftover:
                found.try_("rm", "-f", *leftover, timeout=120)
            _stop(proc, workdir)


def _stop(proc: subprocess.Popen[bytes], workdir: Path) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    with timed("remove the daemon's data"):
        remove_tree(workdir)
