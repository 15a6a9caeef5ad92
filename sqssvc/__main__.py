"""``python -m sqssvc``: parse settings from the environment (exit 2 if invalid) and serve."""

from __future__ import annotations

import os

from common.config import load_or_exit
from common.logging import configure_logging
from common.web import serve
from sqssvc.app import create_app
from sqssvc.config import SqsSettings


def main() -> None:
    """Entry point of the container and of ``make run``."""
    settings = load_or_exit(SqsSettings.from_env, os.environ)
    logs = configure_logging(settings.common)
    serve(create_app(settings), settings.common, logs)


if __name__ == "__main__":
    main()
