"""``python -m common.logs``: the saved Logs Insights queries and a tail of the log group.

    python -m common.logs queries
    python -m common.logs query latency-by-route --since 1h
    python -m common.logs query request --param request_id=0f51bd88dd1a4005a22396e41403a9b6
    python -m common.logs tail --since 10m --filter upload_aborted [--follow]

The log group is ``--group`` or ``CLOUDWATCH_LOG_GROUP``; AWS is reached like the services do
(``AWS_REGION``, ``AWS_ENDPOINT_URL`` for moto). Exit status: 0 ok, 1 AWS or query error,
2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

import orjson

from common.aws import aws_error_code, open_client
from common.config import ENV_CW_GROUP, AwsSettings, ConfigError, EnvReader, read_aws
from common.queries import QUERIES, Query

_SINCE = re.compile(r"^(\d+)([smhd])\Z", re.ASCII)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
POLL_SECONDS = 0.5
QUERY_TIMEOUT = 120.0


class CliError(Exception):
    """A failure to report in one line and exit 1."""


def parse_since(text: str) -> int:
    """Seconds in ``30s``, ``10m``, ``1h``, ``2d``."""
    m = _SINCE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 30s, 10m, 1h or 2d")
    return int(m.group(1)) * _UNITS[m.group(2)]


def _param(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not name=value")
    return name, value


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m common.logs", description="Query and tail the services' CloudWatch logs."
    )
    parser.add_argument("--group", help=f"log group (default: ${ENV_CW_GROUP})")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("queries", help="list the saved queries")
    q = sub.add_parser("query", help="run a saved query and print its results")
    q.add_argument("name", choices=sorted(QUERIES))
    q.add_argument("--since", type=parse_since, default=3600, help="time window (default 1h)")
    q.add_argument("--param", type=_param, action="append", default=[], help="name=value")
    q.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    t = sub.add_parser("tail", help="print log events, oldest first")
    t.add_argument("--since", type=parse_since, default=600, help="how far back (default 10m)")
    t.add_argument("--filter", default=None, help="only events containing this text")
    t.add_argument("--follow", action="store_true", help="keep printing new events (Ctrl-C stops)")
    return parser


def print_table(rows: list[dict[str, str]], out: TextIO) -> None:
    """Rows as an aligned text table (columns in first-seen order)."""
    if not rows:
        print("(no results)", file=out)
        return
    columns = list(dict.fromkeys(k for row in rows for k in row))
    widths = {c: max(len(c), *(len(row.get(c, "")) for row in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns).rstrip(), file=out)
    print("  ".join("-" * widths[c] for c in columns), file=out)
    for row in rows:
        print("  ".join(row.get(c, "").ljust(widths[c]) for c in columns).rstrip(), file=out)


async def run_query(
    logs: Any, group: str, query: Query, since: int, params: dict[str, str]
) -> list[dict[str, str]]:
    """StartQuery, then GetQueryResults until it completes; rows without ``@ptr``."""
    try:
        text = query.render(params)
    except KeyError as exc:
        raise CliError(str(exc.args[0])) from None
    end = int(time.time())
    try:
        started = await logs.start_query(
            logGroupName=group, startTime=end - since, endTime=end + 1, queryString=text
        )
    except Exception as exc:
        raise _aws_failure(exc, group) from exc
    deadline = time.monotonic() + QUERY_TIMEOUT
    while True:
        result = await logs.get_query_results(queryId=started["queryId"])
        status = result.get("status")
        if status == "Complete":
            break
        if status in ("Failed", "Cancelled", "Timeout", "Unknown"):
            raise CliError(f"query {query.name!r} ended with status {status}")
        if time.monotonic() > deadline:
            raise CliError(f"query {query.name!r} did not complete in {QUERY_TIMEOUT:.0f}s")
        await asyncio.sleep(POLL_SECONDS)
    rows = [
        {f["field"]: f.get("value", "") for f in row if f["field"] != "@ptr"}
        for row in result.get("results", [])
    ]
    # Every saved query names fields of our own lines; rows carrying only CloudWatch's own
    # @-fields mean the backend ignored filter/stats (moto and LocalStack run only
    # fields/sort/limit).
    if rows and all(k.startswith("@") for row in rows for k in row):
        raise CliError(
            f"this Logs endpoint returned {len(rows)} rows without the query's fields: it cannot "
            "run Logs Insights filter/stats (an emulator?); use "
            "'python -m common.logs tail --filter TEXT' instead"
        )
    return rows


async def tail(
    logs: Any, group: str, since: int, pattern: str | None, follow: bool, out: TextIO
) -> int:
    """Print events of ``group`` from ``since`` seconds ago; with ``follow``, keep polling."""
    start_ms = int((time.time() - since) * 1000)
    seen: set[str] = set()
    printed = 0
    while True:
        kwargs: dict[str, Any] = {"logGroupName": group, "startTime": start_ms}
        if pattern:
            # A quoted term matches the exact text, punctuation included.
            kwargs["filterPattern"] = '"' + pattern.replace('"', "") + '"'
        try:
            paginator = logs.get_paginator("filter_log_events")
            async for page in paginator.paginate(**kwargs):
                for event in page.get("events", []):
                    if event["eventId"] in seen:
                        continue
                    seen.add(event["eventId"])
                    start_ms = max(start_ms, int(event["timestamp"]))
                    print(event["message"].rstrip("\n"), file=out, flush=True)
                    printed += 1
        except Exception as exc:
            raise _aws_failure(exc, group) from exc
        if not follow:
            return printed
        await asyncio.sleep(2.0)


def _aws_failure(exc: Exception, group: str) -> CliError:
    code = aws_error_code(exc)
    if code == "ResourceNotFoundException":
        return CliError(
            f"log group {group!r} does not exist (check --group or ${ENV_CW_GROUP}, and AWS_REGION)"
        )
    return CliError(f"CloudWatch Logs call failed: {code or type(exc).__name__}: {exc}")


async def main_async(
    args: argparse.Namespace, aws: AwsSettings, group: str | None, out: TextIO
) -> None:
    """Run one command."""
    if args.command == "queries":
        rows = [
            {"name": q.name, "params": ",".join(q.params), "description": q.description}
            for q in QUERIES.values()
        ]
        print_table(rows, out)
        return
    if not group:
        raise CliError(f"no log group: pass --group or set ${ENV_CW_GROUP}")
    async with open_client("logs", aws) as logs:
        if args.command == "query":
            rows = await run_query(logs, group, QUERIES[args.name], args.since, dict(args.param))
            if args.json:
                for row in rows:
                    out.write(orjson.dumps(row).decode() + "\n")
            else:
                print_table(rows, out)
        else:
            await tail(logs, group, args.since, args.filter, args.follow, out)


def main(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    env = EnvReader(os.environ if environ is None else environ)
    aws = read_aws(env)
    group = args.group or env.optional(ENV_CW_GROUP, doc="the log group")
    try:
        env.check()
        asyncio.run(main_async(args, aws, group, sys.stdout))
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
