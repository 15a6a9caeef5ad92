"""Create the local stack's bucket, queues and log groups in moto: for ``make run`` and compose.

The devstack calls :func:`create_all`; ``docker/compose.yaml`` runs this file as its one-shot
``init`` inside the s3svc image (boto3 is there, as watchtower's client) before the services start.
Idempotent: resources that already exist are kept, so ``docker compose up`` can be run again.
Every name comes from the environment (the compose file's, or the devstack's):

- ``AWS_ENDPOINT_URL``: the emulator (``http://moto:5000`` in the compose network)
- ``BUCKET_NAME``: the upload bucket
- ``QUEUE_NAME``, ``DLQ_NAME``: the message queue and its dead-letter queue
- ``FIFO_QUEUE_NAME``: a FIFO queue with content-based deduplication (so a send without a
  deduplication id just works)
- ``LOG_GROUPS``: comma-separated log groups
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Mapping
from typing import Any

import boto3


def create_all(environ: Mapping[str, str]) -> dict[str, str]:
    """Create every resource (or keep it); returns what was made, by kind."""
    kwargs: dict[str, Any] = {
        "endpoint_url": environ["AWS_ENDPOINT_URL"],
        "region_name": environ.get("AWS_REGION", "us-east-1"),
    }
    s3 = boto3.client("s3", **kwargs)
    sqs = boto3.client("sqs", **kwargs)
    logs = boto3.client("logs", **kwargs)

    bucket = environ["BUCKET_NAME"]
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        s3.create_bucket(Bucket=bucket)

    dlq_url = sqs.create_queue(QueueName=environ["DLQ_NAME"])["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    # Generous: every peek (``make messages``) counts as a receive, and peeking must not move a
    # message to the dead-letter queue.
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "1000"})
    queue_url = sqs.create_queue(
        QueueName=environ["QUEUE_NAME"], Attributes={"RedrivePolicy": redrive}
    )["QueueUrl"]
    fifo_url = sqs.create_queue(
        QueueName=environ["FIFO_QUEUE_NAME"],
        Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"},
    )["QueueUrl"]

    groups = [g.strip() for g in environ["LOG_GROUPS"].split(",") if g.strip()]
    for group in groups:
        with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
            logs.create_log_group(logGroupName=group)
    return {
        "bucket": bucket,
        "queue_url": queue_url,
        "fifo_queue_url": fifo_url,
        "log_groups": ",".join(groups),
    }


def main() -> None:
    """Entry point of the compose ``init`` service."""
    made = create_all(os.environ)
    print(json.dumps({"event": "init_done", **made}), file=sys.stdout, flush=True)


if __name__ == "__main__":
    main()
