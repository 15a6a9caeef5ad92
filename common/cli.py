"""The command line of a service: no options but ``--help``; the settings come from the environment.

``python -m s3svc --help`` prints the usage and every environment variable with its default,
accepted values and meaning (from the same reads that parse them), then exits 0 without
listening. Any argument is an error (exit 2): a service has nothing to configure on its
command line, and a mistyped flag must not start a server that ignores it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from common.config import EnvReader, settings_help


def parse_command_line(
    prog: str, summary: str, read: Callable[[EnvReader], object], argv: Sequence[str] | None
) -> None:
    """Handle ``--help`` (exit 0) and refuse anything else (exit 2); return to start the service."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=f"{summary} Every setting is an environment variable:",
        epilog=settings_help(read),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)
