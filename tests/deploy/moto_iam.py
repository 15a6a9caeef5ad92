"""A moto server for the least-privilege tests: IAM enforcement that also knows log-group ARNs.

moto checks the *resource* of a request against a policy for S3 (bucket/key ARNs) and SQS (queue
ARNs), but asks CloudWatch Logs requests only about the resource ``*``, so a policy limited to one
log group would deny that group too and could not tell it from another. Before starting the
server, this module gives moto's Logs handler the resource AWS itself authorises against (the
service authorization reference): ``CreateLogStream`` and other group calls on
``arn:aws:logs:REGION:ACCOUNT:log-group:NAME``, ``PutLogEvents`` on
``...:log-group:NAME:log-stream:STREAM``. Everything else is moto unchanged, and IAM enforcement
stays off until the test turns it on (``POST /moto-api/reset-auth`` with ``0``).

    python -m tests.deploy.moto_iam -H 127.0.0.1 -p PORT
"""

from __future__ import annotations

import sys

from moto.logs.responses import LogsResponse
from moto.server import main as moto_main
from moto.utilities.utils import get_partition


def log_resource_arn(self: LogsResponse) -> str:
    """The ARN AWS authorises a CloudWatch Logs request against, or ``*`` without a group."""
    group = self._get_param("logGroupName")
    if not group:
        return "*"
    arn = f"arn:{get_partition(self.region)}:logs:{self.region}:{self.current_account}:log-group:{group}"
    stream = self._get_param("logStreamName")
    if self._get_action() == "PutLogEvents" and stream:
        return f"{arn}:log-stream:{stream}"
    return arn


def main(argv: list[str]) -> None:
    """Patch the Logs resource, then run moto's own server entry point."""
    LogsResponse._determine_resource = log_resource_arn  # type: ignore[attr-defined]
    moto_main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
