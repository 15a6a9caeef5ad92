"""bench/RESULTS.md: each benchmark owns one ``## `` section, replaced by its latest run."""

from __future__ import annotations

import os
import platform
import re
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


def write_section(section: str, body: str, keep: str | None = None) -> None:
    """Replace (or add) the ``section`` heading's part of RESULTS.md with ``body``, leaving other
    sections alone. A hand-written subsection of it whose heading starts with ``keep`` (e.g.
    ``### Profile``) stays, after the new measurements. The file is read right before it is
    written."""
    text = (
        RESULTS.read_text()
        if RESULTS.exists()
        else f"# Benchmark results\n\nMachine: {machine_line()}\n"
    )
    pattern = re.compile(rf"^{re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
    found = pattern.search(text)
    kept = ""
    if found is not None and keep and (at := found.group(0).find(f"\n{keep}")) != -1:
        kept = "\n" + found.group(0)[at + 1 :].strip() + "\n"
    new = f"{section}\n\n{body.strip()}\n{kept}"
    if found is not None:
        text = pattern.sub(lambda _: new + "\n", text, count=1).rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + new
    RESULTS.write_text(text)
