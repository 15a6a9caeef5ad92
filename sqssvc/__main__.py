"""``python -m sqssvc [--help]``: parse settings from the environment (exit 2 if invalid) and serve."""

from __future__ import annotations

import os
from collections.abc import Sequence

from common.cli import parse_command_line
from common.config import load_or_exit
from common.logging import configure_logging
from common.server import serve
from sqssvc.app import create_app
from sqssvc.config import SqsSettings


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the container and of ``make run``."""
    parse_command_line(
        "python -m sqssvc",
        "Sends JSON messages to SQS, coalesced into SendMessageBatch (POST {BASE_PATH}/send).",
        SqsSettings.read,
        argv,
    )
    settings = load_or_exit(SqsSettings.from_env, os.environ)
    logs = configure_logging(settings.common)
    serve(create_app(settings), settings.common, logs)


if __name__ == "__main__":
    main()
