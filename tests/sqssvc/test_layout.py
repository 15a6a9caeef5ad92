"""sqssvc's layout: its domain modules do not import the web layer."""

from __future__ import annotations

import ast

import pytest

from tests.procs import ROOT

# Modules that know messages, batches and settings, not HTTP requests.
DOMAIN = ("sqssvc/messages.py", "sqssvc/batcher.py", "sqssvc/config.py")


def imported(path: str) -> set[str]:
    """Every module ``path`` imports, by its full dotted name."""
    names: set[str] = set()
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("path", DOMAIN)
def test_domain_module_does_not_import_the_web_layer(path: str) -> None:
    """No aiohttp (web requests, body readers) and nothing of common.web or sqssvc's own web
    modules: request reading lives in sqssvc/reading.py, handlers in sqssvc/app.py."""
    web = {
        name
        for name in imported(path)
        if name.split(".")[0] == "aiohttp"
        or name.startswith(("common.web", "common.bodies", "sqssvc.app", "sqssvc.reading"))
    }
    assert not web, f"{path} imports {sorted(web)}"


def test_messages_load_no_aiohttp_at_all() -> None:
    """Importing the message rules (and the settings) loads no aiohttp module, whatever the
    common package's web modules are called: they can be used and tested without a server."""
    import subprocess
    import sys

    probe = "import sys, sqssvc.messages, sqssvc.config; print(sorted(m for m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "aiohttp" not in out
