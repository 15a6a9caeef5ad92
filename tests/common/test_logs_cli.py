"""``python -m common.logs``: queries, query and tail against moto (plumbing and output shape)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest

from common.logs import main
from common.queries import QUERIES
from tests.procs import ROOT


@pytest.fixture
async def filled_group(logs_client: Any, log_group: str) -> str:
    """A log group holding three access lines."""
    await logs_client.create_log_stream(logGroupName=log_group, logStreamName="s")
    now = int(time.time() * 1000)
    events = [
        {
            "timestamp": now + i,
            "message": json.dumps({"event": "request", "request_id": f"rid-{i}", "status": 200}),
        }
        for i in range(3)
    ]
    await logs_client.put_log_events(logGroupName=log_group, logStreamName="s", logEvents=events)
    return log_group


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "common.logs", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_queries_lists_every_saved_query(capsys: pytest.CaptureFixture[str]) -> None:
    """One row per query, with its parameters."""
    assert main(["queries"], environ={}) == 0
    out = capsys.readouterr().out
    for name in QUERIES:
        assert name in out
    assert "request_id" in out


async def test_query_on_an_emulator_says_it_cannot_run(
    filled_group: str, service_env: dict[str, str]
) -> None:
    """moto answers StartQuery/GetQueryResults but ignores filter and stats, returning rows
    without the query's fields: the CLI says so in one line and points to tail, instead of
    printing blank rows."""
    for args in (["slowest-requests", "--json"], ["latency-by-route"]):
        done = run(["--group", filled_group, "query", *args], service_env)
        assert done.returncode == 1, done
        assert done.stdout == ""
        (line,) = done.stderr.splitlines()
        assert "cannot run Logs Insights filter/stats" in line
        assert "tail --filter" in line


async def test_query_with_param(filled_group: str, service_env: dict[str, str]) -> None:
    """A parameterised query runs when the parameter is given and says what is missing if not."""
    ran = run(
        ["--group", filled_group, "query", "request", "--param", "request_id=rid-1"], service_env
    )
    assert "tail --filter" in ran.stderr  # it ran (and moto could not evaluate it)
    missing = run(["--group", filled_group, "query", "request"], service_env)
    assert missing.returncode == 1
    assert "--param" in missing.stderr
    assert "request_id" in missing.stderr


async def test_tail_prints_events_and_filters(
    filled_group: str, service_env: dict[str, str]
) -> None:
    """tail prints each event's message; --filter keeps the matching ones."""
    done = run(["--group", filled_group, "tail"], service_env)
    assert done.returncode == 0, done.stderr
    assert [json.loads(x)["request_id"] for x in done.stdout.splitlines()] == [
        "rid-0",
        "rid-1",
        "rid-2",
    ]
    filtered = run(["--group", filled_group, "tail", "--filter", "rid-2"], service_env)
    assert [json.loads(x)["request_id"] for x in filtered.stdout.splitlines()] == ["rid-2"]


async def test_tail_follow_stops_on_ctrl_c(filled_group: str, service_env: dict[str, str]) -> None:
    """--follow keeps running until interrupted, then exits 0."""
    import signal

    proc = subprocess.Popen(
        [sys.executable, "-m", "common.logs", "--group", filled_group, "tail", "--follow"],
        cwd=ROOT,
        env=service_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert json.loads(first)["request_id"] == "rid-0"
    proc.send_signal(signal.SIGINT)
    # Read what is left while it stops: a full pipe would block it writing, never exiting.
    proc.communicate(timeout=30)
    assert proc.returncode == 0


@pytest.mark.parametrize("command", [["tail"], ["query", "top-client-ips"]])
async def test_missing_group_is_a_clear_error(
    moto_url: str, service_env: dict[str, str], command: list[str]
) -> None:
    """A group that does not exist is named in a one-line error, exit 1."""
    done = run(["--group", "/no/such/group", *command], service_env)
    assert done.returncode == 1
    assert "log group '/no/such/group' does not exist" in done.stderr
    assert "Traceback" not in done.stderr


def test_no_group_at_all(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --group or CLOUDWATCH_LOG_GROUP the CLI says how to name one."""
    assert main(["tail"], environ={}) == 1
    assert "--group" in capsys.readouterr().err
