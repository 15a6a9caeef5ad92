"""The local deployment behind ``make run``: emulated AWS (moto) plus every service, each its own process.

Starts a moto server on 127.0.0.1, creates the bucket, the queues and the log group, starts
``python -m s3svc`` and ``python -m sqssvc`` against it exactly as a container would, prints curl
lines to try, and stops everything cleanly on Ctrl-C (SIGINT) or SIGTERM. Ports are checked first,
so a port in use gets a clear message instead of a stack trace. Works on a machine with no AWS
credentials: the devstack and everything it starts sign with fixed fake ones (``local_env``).

    .venv/bin/python -m deploy.devstack [--s3-port 8080] [--sqs-port 8081] [--sqs-fifo-port 8082]
                                        [--moto-port 5000] [--verbose]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from deploy.compose_init import create_all
from deploy.local_env import DEFAULT_MOTO_PORT, LOG_GROUP, RESOURCES, isolate

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
# make run shows a download link in every upload answer (off by default in the service).
DOWNLOAD_URL_SECONDS = "3600"
PORT_FLAGS = "--s3-port, --sqs-port, --sqs-fifo-port, --moto-port"


@dataclass
class Child:
    """A process of the stack whose output is shown with a name prefix."""

    name: str
    proc: subprocess.Popen[bytes]


def port_free(port: int) -> bool:
    """True when nothing listens on HOST:port."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM) arrived while the stack was still starting."""


def wait_http(url: str, child: Child, stopping: threading.Event, timeout: float = 60.0) -> None:
    """Wait until ``url`` answers with any HTTP status; fail if the child died, stop on Ctrl-C."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stopping.is_set():
            raise Interrupted
        if child.proc.poll() is not None:
            raise SystemExit(f"devstack: {child.name} exited with {child.proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"devstack: {child.name} did not answer on {url} within {timeout:.0f}s")


def relay(name: str, stream: IO[bytes]) -> None:
    """Copy a child's output to ours, each line prefixed with its name."""
    out = sys.stdout.buffer
    for line in iter(stream.readline, b""):
        out.write(f"{name:>6} | ".encode() + line)
        out.flush()


def start(name: str, args: list[str], env: dict[str, str]) -> Child:
    """Start one process of the stack."""
    # A session of its own: a terminal's Ctrl-C reaches only the devstack, which then stops
    # the services before moto (their last CloudWatch flush still has somewhere to go).
    proc = subprocess.Popen(
        args,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None
    threading.Thread(target=relay, args=(name, proc.stdout), daemon=True).start()
    return Child(name, proc)


# How long a stopping child may take: above s3svc's longest shutdown at make run's settings.
STOP_WAIT = 60.0


def stop_all(children: list[Child]) -> None:
    """SIGTERM the services together, then moto (the first child) once they are gone, so their
    last aborts and log lines still reach it; SIGKILL, and say so, whatever does not exit in
    ``STOP_WAIT`` seconds."""
    for group in (children[1:], children[:1]):
        for child in group:
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT
        for child in group:
            try:
                child.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(
                    f"devstack: {child.name} did not stop within {STOP_WAIT:g} s of SIGTERM; "
                    "killing it",
                    file=sys.stderr,
                    flush=True,
                )
                child.proc.kill()
                child.proc.wait(5)


def banner(args: argparse.Namespace, endpoint: str, made: dict[str, str]) -> str:
    """What to try, printed once everything is up."""
    moto_flag = (
        "" if args.moto_port == DEFAULT_MOTO_PORT else f" ARGS='--moto-port {args.moto_port}'"
    )
    s3, sqs, fifo = args.s3_port, args.sqs_port, args.sqs_fifo_port
    return "\n".join(
        [
            "",
            f"devstack ready: emulated AWS on {endpoint} "
            f"(bucket {made['bucket']}, log group {LOG_GROUP})",
            f"  s3svc   http://localhost:{s3}/s3",
            f"    upload page, in a browser: http://localhost:{s3}/s3/",
            f"    curl http://localhost:{s3}/s3/health",
            f'    curl -F "file=@README.md" http://localhost:{s3}/s3/upload',
            f"  sqssvc  http://localhost:{sqs}/sqs  (queue {made['queue_url']})",
            f"    curl -X POST -H 'Content-Type: application/json' -d '{{\"message\":\"hi\"}}' "
            f"http://localhost:{sqs}/sqs/send",
            f"  sqssvc  http://localhost:{fifo}/sqs  (FIFO queue {made['fifo_queue_url']})",
            f"    curl -X POST -H 'Content-Type: application/json' "
            f'-d \'{{"message":"step 1","group_id":"order-42"}}\' '
            f"http://localhost:{fifo}/sqs/send",
            "  what you stored and logged, read without consuming it:",
            f"    make uploads{moto_flag}     # the recent uploads",
            f"    make messages{moto_flag}    # the recent messages of each queue",
            f"    make logs{moto_flag}        # the last 30 minutes of {LOG_GROUP}",
            "Ctrl-C stops everything.",
            "",
        ]
    )


def port(text: str) -> int:
    """A TCP port number, 1-65535."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number from 1 to 65535")
    return int(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="make run ARGS=...", description=__doc__.split("\n\n")[0])
    parser.add_argument("--moto-port", type=port, default=DEFAULT_MOTO_PORT, help="emulated AWS")
    parser.add_argument("--s3-port", type=port, default=8080, help="s3svc")
    parser.add_argument("--sqs-port", type=port, default=8081, help="sqssvc, standard queue")
    parser.add_argument("--sqs-fifo-port", type=port, default=8082, help="sqssvc, FIFO queue")
    parser.add_argument("--verbose", action="store_true", help="also print moto's access lines")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the stack until Ctrl-C or SIGTERM."""
    args = parse_args(argv)
    ports = {
        "moto": args.moto_port,
        "s3svc": args.s3_port,
        "sqssvc": args.sqs_port,
        "sqssvc (FIFO)": args.sqs_fifo_port,
    }
    if len(set(ports.values())) < len(ports):
        print(f"devstack: each of {PORT_FLAGS} needs a port of its own", file=sys.stderr)
        return 1
    taken = [f"{name} port {number}" for name, number in ports.items() if not port_free(number)]
    if taken:
        print(
            "devstack: already in use: " + ", ".join(taken) + ". Stop what uses them, or pick "
            f"others with {PORT_FLAGS}, e.g. make run ARGS='--s3-port 9080 --sqs-port 9081 "
            "--sqs-fifo-port 9082 --moto-port 5050'",
            file=sys.stderr,
        )
        return 1

    stopping = threading.Event()

    def on_signal(signum: int, _: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    # Our own boto3 calls and every child sign with the fake identity, never a real profile.
    isolate(os.environ)
    endpoint = f"http://{HOST}:{args.moto_port}"
    base_env = dict(os.environ, PYTHONUNBUFFERED="1")
    children: list[Child] = []
    try:
        moto_args = [sys.executable, "-m", "deploy.emulator", "--port", str(args.moto_port)]
        moto = start("moto", moto_args + (["--verbose"] if args.verbose else []), base_env)
        children.append(moto)
        wait_http(f"{endpoint}/moto-api/", moto, stopping)
        made = create_all(dict(RESOURCES, AWS_ENDPOINT_URL=endpoint))
        # Console lines for the terminal; the CloudWatch copy (moto) is JSON, for common.logs.
        env = dict(base_env, AWS_ENDPOINT_URL=endpoint, HOST=HOST, LOG_FORMAT="console")
        env.update(CLOUDWATCH_LOG_GROUP=LOG_GROUP, CLOUDWATCH_SEND_INTERVAL="1")
        # (label of its output lines, module, port, settings of its own)
        services = [
            (
                "s3svc",
                "s3svc",
                args.s3_port,
                {"BUCKET_NAME": made["bucket"], "DOWNLOAD_URL_SECONDS": DOWNLOAD_URL_SECONDS},
            ),
            ("sqssvc", "sqssvc", args.sqs_port, {"QUEUE_URL": made["queue_url"]}),
            (
                "sqsfifo",
                "sqssvc",
                args.sqs_fifo_port,
                # compose_init creates the FIFO queue with content-based deduplication.
                {"QUEUE_URL": made["fifo_queue_url"], "SQS_CONTENT_DEDUPLICATION": "true"},
            ),
        ]
        for label, module, port, extra in services:
            child = start(
                label,
                [sys.executable, "-m", module],
                dict(env, PORT=str(port), **extra),
            )
            children.append(child)
            wait_http(f"http://{HOST}:{port}/health", child, stopping)
        print(banner(args, endpoint, made), flush=True)
        while not stopping.is_set():
            for child in children:
                if child.proc.poll() is not None:
                    print(
                        f"devstack: {child.name} exited with {child.proc.returncode}",
                        file=sys.stderr,
                    )
                    return 1
            stopping.wait(0.5)
        print("devstack: stopping", flush=True)
        return 0
    except Interrupted:
        print("devstack: stopping before it was ready", flush=True)
        return 0
    finally:
        stop_all(children)


if __name__ == "__main__":
    sys.exit(main())
