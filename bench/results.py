"""bench/RESULTS.md: each benchmark owns one ``## `` section, replaced by its latest run."""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine_line() -> str:
    """nproc, CPU model, RAM, Python and OS: where the numbers were measured."""
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    return (
        f"{os.cpu_count()} CPUs ({model}), {mem_kib / 1024**2:.1f} GiB RAM, "
        f"Python {platform.python_version()} on {platform.system()} {platform.release()}"
    )


def measured_line(command: str) -> str:
    """The report's first words: when, where and how it was measured."""
    return f"Measured {time.strftime('%Y-%m-%d %H:%M %Z')} on {machine_line()}, with `{command}`"


def command_line(script: str, argv: list[str] | None) -> str:
    """The command that ran ``bench/<script>`` with ``argv`` (default: this process's)."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join([".venv/bin/python", f"bench/{script}", *args])


def add_no_write(parser: argparse.ArgumentParser) -> None:
    """Every benchmark's ``--no-write`` flag (``args.write`` is False with it)."""
    parser.add_argument(
        "--no-write",
        dest="write",
        action="store_false",
        help="only print the report; leave bench/RESULTS.md alone",
    )


def publish(section: str, body: str, *, write: bool) -> None:
    """Print the report; with ``write``, it also replaces ``section`` of RESULTS.md."""
    print(f"{section}\n\n{body}")
    if write:
        write_section(section, body)
        print(f"\n(written to {RESULTS.relative_to(RESULTS.parent.parent)})", file=sys.stderr)


# A hand-written subsection's heading says so; a regenerated section keeps every such one.
HAND_WRITTEN = re.compile(r"^### .*\(by hand", re.M)


def write_section(section: str, body: str) -> None:
    """Replace (or add) the ``section`` heading's part of RESULTS.md with ``body``, leaving other
    sections alone. Its hand-written subsections (``### ... (by hand ...``) stay, after the new
    measurements, from the first of them to the section's end. The file is read right before it
    is written."""
    text = (
        RESULTS.read_text()
        if RESULTS.exists()
        else f"# Benchmark results\n\nMachine: {machine_line()}\n"
    )
    pattern = re.compile(rf"^{re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
    found = pattern.search(text)
    kept = ""
    if found is not None and (hand := HAND_WRITTEN.search(found.group(0))) is not None:
        kept = "\n" + found.group(0)[hand.start() :].strip() + "\n"
    new = f"{section}\n\n{body.strip()}\n{kept}"
    if found is not None:
        text = pattern.sub(lambda _: new + "\n", text, count=1).rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + new
    RESULTS.write_text(text)
