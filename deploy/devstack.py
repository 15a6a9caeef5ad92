"""The local deployment behind ``make run``: emulated AWS (moto) plus every service, each its own process.

Starts a moto server on 127.0.0.1, creates the bucket, the queues and the log group, starts
``python -m s3svc`` and ``python -m sqssvc`` against it exactly as a container would, prints curl
lines to try, and stops everything cleanly on Ctrl-C (SIGINT) or SIGTERM. Ports are checked first,
so a port in use gets a clear message instead of a stack trace.

    .venv/bin/python deploy/devstack.py [--s3-port 8080] [--sqs-port 8081] [--moto-port 5000]
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

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
REGION = "us-east-1"
BUCKET = "uploads-local"
QUEUE = "messages-local"
FIFO_QUEUE = "messages-local.fifo"
LOG_GROUP = "/local/services"
# moto accepts any credentials; fixed fake ones keep a developer's real AWS profile out of it.
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_REGION": REGION,
    "AWS_DEFAULT_REGION": REGION,
}


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


def wait_http(url: str, child: Child, timeout: float = 60.0) -> None:
    """Wait until ``url`` answers with any HTTP status, or fail if the child died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
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
    proc = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert proc.stdout is not None
    threading.Thread(target=relay, args=(name, proc.stdout), daemon=True).start()
    return Child(name, proc)


def create_resources(endpoint: str, with_sqs: bool) -> dict[str, str]:
    """Bucket, queues and log group in moto; returns the env vars that name them."""
    import boto3

    kwargs = {"endpoint_url": endpoint, "region_name": REGION}
    boto3.client("s3", **kwargs).create_bucket(Bucket=BUCKET)
    boto3.client("logs", **kwargs).create_log_group(logGroupName=LOG_GROUP)
    names = {"BUCKET_NAME": BUCKET, "CLOUDWATCH_LOG_GROUP": LOG_GROUP}
    if with_sqs:
        sqs = boto3.client("sqs", **kwargs)
        names["QUEUE_URL"] = sqs.create_queue(QueueName=QUEUE)["QueueUrl"]
        # Content-based deduplication: a curl without a deduplication id just works.
        names["FIFO_QUEUE_URL"] = sqs.create_queue(
            QueueName=FIFO_QUEUE,
            Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"},
        )["QueueUrl"]
    return names


def stop_all(children: list[Child]) -> None:
    """SIGTERM the services first, then moto; SIGKILL whatever does not exit in time."""
    for child in reversed(children):
        if child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)
        try:
            child.proc.wait(40)
        except subprocess.TimeoutExpired:
            child.proc.kill()
            child.proc.wait(5)


def banner(s3_port: int, sqs_ports: tuple[int, int] | None, names: dict[str, str]) -> str:
    """What to try, printed once everything is up."""
    lines = [
        "",
        f"devstack ready: emulated AWS on {names['AWS_ENDPOINT_URL']} "
        f"(bucket {BUCKET}, log group {LOG_GROUP})",
        f"  s3svc   http://localhost:{s3_port}/s3",
        f"    curl http://localhost:{s3_port}/s3/health",
        f'    curl -F "file=@README.md" http://localhost:{s3_port}/s3/upload',
    ]
    if sqs_ports is not None:
        sqs_port, fifo_port = sqs_ports
        lines += [
            f"  sqssvc  http://localhost:{sqs_port}/sqs  (queue {names['QUEUE_URL']})",
            f"    curl http://localhost:{sqs_port}/sqs/health",
            f"    curl -X POST -H 'Content-Type: application/json' -d '{{\"message\":\"hi\"}}' "
            f"http://localhost:{sqs_port}/sqs/send",
            f"  sqssvc  http://localhost:{fifo_port}/sqs  (FIFO queue {names['FIFO_QUEUE_URL']})",
            f"    curl -X POST -H 'Content-Type: application/json' "
            f'-d \'{{"message":"step 1","group_id":"order-42"}}\' '
            f"http://localhost:{fifo_port}/sqs/send",
        ]
    lines += [
        f"  logs    AWS_ENDPOINT_URL={names['AWS_ENDPOINT_URL']} AWS_ACCESS_KEY_ID=local "
        f"AWS_SECRET_ACCESS_KEY=local .venv/bin/python -m common.logs --group {LOG_GROUP} tail",
        "Ctrl-C stops everything.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the stack until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--moto-port", type=int, default=5000)
    parser.add_argument("--s3-port", type=int, default=8080)
    parser.add_argument("--sqs-port", type=int, default=8081)
    parser.add_argument("--sqs-fifo-port", type=int, default=8082)
    args = parser.parse_args(argv)

    with_sqs = (ROOT / "sqssvc" / "__main__.py").exists()
    ports = {"moto": args.moto_port, "s3svc": args.s3_port}
    if with_sqs:
        ports["sqssvc"] = args.sqs_port
        ports["sqssvc (FIFO)"] = args.sqs_fifo_port
    taken = [f"{name} port {port}" for name, port in ports.items() if not port_free(port)]
    if taken:
        print(
            "devstack: already in use: " + ", ".join(taken) + ". Stop what uses them, or pick "
            "others: make run ARGS='--s3-port 9080 --sqs-port 9081 --moto-port 5050'",
            file=sys.stderr,
        )
        return 1

    stopping = threading.Event()

    def on_signal(signum: int, _: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    base_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    base_env.update(FAKE_AWS, PYTHONUNBUFFERED="1")
    endpoint = f"http://{HOST}:{args.moto_port}"
    children: list[Child] = []
    try:
        moto = start(
            "moto",
            [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(args.moto_port)],
            base_env,
        )
        children.append(moto)
        wait_http(f"{endpoint}/moto-api/", moto)
        names = create_resources(endpoint, with_sqs)
        names["AWS_ENDPOINT_URL"] = endpoint
        # Console lines for the terminal; the CloudWatch copy (moto) is JSON, for common.logs.
        env = dict(base_env, AWS_ENDPOINT_URL=endpoint, HOST=HOST, LOG_FORMAT="console")
        env.update(CLOUDWATCH_LOG_GROUP=LOG_GROUP, CLOUDWATCH_SEND_INTERVAL="1")
        services = [("s3svc", args.s3_port, {"BUCKET_NAME": BUCKET})]
        if with_sqs:
            services.append(("sqssvc", args.sqs_port, {"QUEUE_URL": names["QUEUE_URL"]}))
            services.append(("sqssvc", args.sqs_fifo_port, {"QUEUE_URL": names["FIFO_QUEUE_URL"]}))
        for module, port, extra in services:
            child = start(
                module, [sys.executable, "-m", module], dict(env, PORT=str(port), **extra)
            )
            children.append(child)
            wait_http(f"http://{HOST}:{port}/health", child)
        sqs_ports = (args.sqs_port, args.sqs_fifo_port) if with_sqs else None
        print(banner(args.s3_port, sqs_ports, names), flush=True)
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
    finally:
        stop_all(children)


if __name__ == "__main__":
    sys.exit(main())
