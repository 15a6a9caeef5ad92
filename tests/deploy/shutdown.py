"""How long a service may run after SIGTERM, from the code's own bounds: a container's stop
timeout (ECS ``stopTimeout``, compose ``stop_grace_period``) must be longer, or the runtime kills
a task that is still aborting uploads or flushing its last lines."""

from __future__ import annotations

from common.cloudwatch import CLOSE_TIMEOUT
from common.server import CANCEL_WAIT
from s3svc.config import S3Settings
from s3svc.upload import ABORT_TIMEOUT
from sqssvc.config import SqsSettings

# Process exit and the container runtime's own work, on top of the service's bounds.
MARGIN = 5.0


def longest_shutdown(settings: S3Settings | SqsSettings) -> float:
    """Seconds from SIGTERM to exit at most (common/server.py's order, docs/design.md#shutdown):
    the grace period; aiohttp's wait for a handler still running, then for it to wind down once
    cancelled; the service's cleanup (s3svc: the uploader settles its aborts, then aborts what is
    left, each bounded by ``ABORT_TIMEOUT``; sqssvc: the batcher's ``SQS_DRAIN_SECONDS``); and
    the last CloudWatch flush."""
    cleanup = 2 * ABORT_TIMEOUT if isinstance(settings, S3Settings) else settings.drain_seconds
    return settings.common.shutdown_grace + 2 * CANCEL_WAIT + cleanup + CLOSE_TIMEOUT
