"""``deploy.peek``'s own logic; reading a running stack is in tests/e2e/test_devstack.py."""

from __future__ import annotations

import pytest

from deploy.peek import SHOWN_BODY, main, shown


def test_a_long_body_is_cut_and_counted() -> None:
    """A 1 MiB message prints its first characters and its length, not a megabyte line."""
    body = "x" * (1024 * 1024)
    line = shown(body)
    assert line == repr("x" * SHOWN_BODY) + "… (1,048,576 characters)"
    assert shown("short") == "'short'"


def test_limit_with_logs_is_refused_not_ignored(capsys: pytest.CaptureFixture[str]) -> None:
    """``make logs ARGS='--limit 3'`` says that --limit does not apply, instead of ignoring it."""
    with pytest.raises(SystemExit) as exited:
        main(["logs", "--limit", "3"])
    assert exited.value.code == 2
    assert "--limit applies to uploads and messages" in capsys.readouterr().err
