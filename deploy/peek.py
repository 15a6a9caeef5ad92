"""``make uploads`` / ``make messages`` / ``make logs``: what the local stack stored, read only.

    .venv/bin/python -m deploy.peek uploads [--limit 20] [--moto-port 5000]
    .venv/bin/python -m deploy.peek messages [--limit 10] [--moto-port 5000]
    .venv/bin/python -m deploy.peek logs [--moto-port 5000]

``logs`` is ``python -m common.logs tail`` of the local log group (the last 30 minutes).

``uploads`` lists the newest objects of the local bucket. ``messages`` shows up to 10 messages of
each local queue, oldest first: it receives them and at once hands them back (visibility 0), as a
consumer that gives a message up does, so they stay in the queue, in order, for the next reader
(each peek still counts in ``ApproximateReceiveCount``). For the devstack's moto only: it signs
with the fake local identity and never reads an AWS profile.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, TextIO

from deploy.local_env import DEFAULT_MOTO_PORT, LOG_GROUP, REGION, RESOURCES, isolate

SQS_RECEIVE_MAX = 10  # messages one ReceiveMessage call can return
SHOWN_BODY = 200  # characters of a message body printed; the rest is counted


def client(service: str, moto_port: int) -> Any:
    """A boto3 client for the local moto."""
    import boto3

    return boto3.client(service, endpoint_url=f"http://127.0.0.1:{moto_port}", region_name=REGION)


def uploads(s3: Any, bucket: str, limit: int, out: TextIO) -> int:
    """Print the newest ``limit`` objects of ``bucket``; returns how many were printed."""
    objects: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        objects.extend(page.get("Contents", []))
    objects.sort(key=lambda o: o["LastModified"], reverse=True)
    print(f"bucket {bucket}: {len(objects)} object(s), newest first", file=out)
    for obj in objects[:limit]:
        when = obj["LastModified"].strftime("%Y-%m-%d %H:%M:%S")
        print(f"  {when}  {obj['Size']:>12}  {obj['Key']}", file=out)
    return min(limit, len(objects))


def messages(sqs: Any, limit: int, out: TextIO) -> int:
    """Print up to ``limit`` messages of each queue, leaving them visible; returns the count."""
    printed = 0
    for url in sorted(sqs.list_queues().get("QueueUrls", [])):
        depth = sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]["ApproximateNumberOfMessages"]
        print(f"queue {url}: about {depth} message(s)", file=out)
        got = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=min(limit, SQS_RECEIVE_MAX),
            VisibilityTimeout=0,
            WaitTimeSeconds=0,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if got:
            # Hand them back explicitly: a FIFO group stays locked by a receive until then.
            sqs.change_message_visibility_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                    for i, m in enumerate(got)
                ],
            )
        for msg in got:
            group = msg.get("Attributes", {}).get("MessageGroupId")
            attrs = {
                k: v.get("StringValue", "(binary)")
                for k, v in msg.get("MessageAttributes", {}).items()
            }
            extra = (f"  group={group}" if group else "") + (
                f"  attributes={attrs}" if attrs else ""
            )
            print(f"  {msg['MessageId']}  {shown(msg['Body'])}{extra}", file=out)
            printed += 1
    return printed


def shown(body: str, most: int = SHOWN_BODY) -> str:
    """A message body for the terminal: quoted, and cut after ``most`` characters with its
    length said (a body may be 1 MiB)."""
    if len(body) <= most:
        return repr(body)
    return f"{body[:most]!r}… ({len(body):,} characters)"


def positive(text: str) -> int:
    """A whole number of at least 1."""
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return n


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(
        prog="make uploads|messages|logs ARGS=... (or python -m deploy.peek)",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("what", choices=["uploads", "messages", "logs"])
    parser.add_argument(
        "--limit",
        type=positive,
        default=None,
        help="how many to show: uploads (default 20), messages per queue (default and most 10)",
    )
    parser.add_argument(
        "--moto-port",
        type=int,
        default=DEFAULT_MOTO_PORT,
        help=f"the local stack's emulated AWS (make run's --moto-port; default {DEFAULT_MOTO_PORT})",
    )
    args = parser.parse_args(argv)
    if args.what == "logs" and args.limit is not None:
        parser.error("--limit applies to uploads and messages; logs shows the last 30 minutes")
    isolate(os.environ)
    if args.what == "logs":
        from common.logs import main as logs_main

        os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{args.moto_port}"
        return logs_main(["--group", LOG_GROUP, "tail", "--since", "30m"], environ=dict(os.environ))
    try:
        if args.what == "uploads":
            uploads(
                client("s3", args.moto_port), RESOURCES["BUCKET_NAME"], args.limit or 20, sys.stdout
            )
        else:
            messages(
                client("sqs", args.moto_port), min(args.limit or 10, SQS_RECEIVE_MAX), sys.stdout
            )
    except Exception as exc:  # a peek tool: one line, not a stack trace
        print(
            f"peek: cannot read the local stack on port {args.moto_port} "
            f"({type(exc).__name__}: {exc}); is make run running?",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
