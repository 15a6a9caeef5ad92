"""``deploy/devstack.py``'s own logic; ``make run`` itself is in tests/e2e/test_devstack.py."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from deploy import devstack

DEAF = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(60)"
PLAIN = "import time; print(1, flush=True); time.sleep(60)"


def child(name: str, code: str) -> devstack.Child:
    """A child process that has started (it printed its line)."""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.readline()
    return devstack.Child(name, proc)


def test_a_child_deaf_to_sigterm_is_killed_and_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C with a service that does not stop: it is killed after the wait, and the terminal
    is told which one (before, 40 s of silence and then a kill without a word)."""
    monkeypatch.setattr(devstack, "STOP_WAIT", 0.5)
    moto, deaf = child("moto", PLAIN), child("s3svc", DEAF)
    devstack.stop_all([moto, deaf])
    assert deaf.proc.returncode == -signal.SIGKILL
    assert moto.proc.returncode == -signal.SIGTERM
    assert "s3svc did not stop within 0.5 s of SIGTERM; killing it" in capsys.readouterr().err
