"""``python -m s3svc [--help]``: parse settings from the environment (exit 2 if invalid) and serve."""

from __future__ import annotations

import os
from collections.abc import Sequence

from common.cli import parse_command_line
from common.config import load_or_exit
from common.logging import configure_logging
from common.server import serve
from s3svc.app import create_app
from s3svc.config import S3Settings


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the container and of ``make run``."""
    parse_command_line(
        "python -m s3svc",
        "Streams multipart/form-data uploads into S3 (POST {BASE_PATH}/upload).",
        S3Settings.read,
        argv,
    )
    settings = load_or_exit(S3Settings.from_env, os.environ)
    logs = configure_logging(settings.common)
    serve(create_app(settings), settings.common, logs)


if __name__ == "__main__":
    main()
