"""The layout rule: domain modules (the upload engine, the batcher, validators, settings) do not
import the web layer, so they can be used and tested without a server."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from tests.procs import ROOT

DOMAIN = (
    "s3svc/upload.py",
    "s3svc/budget.py",
    "s3svc/digests.py",
    "s3svc/formdata.py",
    "s3svc/keys.py",
    "s3svc/config.py",
    "sqssvc/messages.py",
    "sqssvc/batcher.py",
    "sqssvc/config.py",
    "common/pace.py",
    "common/aws.py",
    "common/idempotency.py",
)
# The web layer: what handles HTTP requests and runs the server.
WEB = (
    "aiohttp",
    "common.app",
    "common.appkeys",
    "common.auth",
    "common.bodies",
    "common.connection",
    "common.middleware",
    "common.refusals",
    "common.responses",
    "common.server",
    "s3svc.app",
    "s3svc.downloads",
    "s3svc.page",
    "sqssvc.app",
    "sqssvc.reading",
)


def imported(path: str) -> set[str]:
    """Every module ``path`` imports, by its full dotted name."""
    names: set[str] = set()
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_web_list_names_every_web_module() -> None:
    """Every module importing aiohttp is in WEB (so a new web module cannot slip past)."""
    for path in sorted(
        (*ROOT.glob("common/*.py"), *ROOT.glob("s3svc/*.py"), *ROOT.glob("sqssvc/*.py"))
    ):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        if any(n.split(".")[0] == "aiohttp" for n in imported(str(path.relative_to(ROOT)))):
            assert module in WEB or module.endswith(("__main__", "openapi")), module


@pytest.mark.parametrize("path", DOMAIN)
def test_domain_module_does_not_import_the_web_layer(path: str) -> None:
    web = {name for name in imported(path) if name == "aiohttp" or name.startswith(WEB)}
    assert not web, f"{path} imports {sorted(web)}"


def test_domain_modules_load_no_aiohttp_web_at_all() -> None:
    """Importing them (and all they import) loads no part of aiohttp's server (aiobotocore's
    HTTP client is aiohttp's client, so aiohttp itself does load)."""
    modules = ", ".join(p.removesuffix(".py").replace("/", ".") for p in DOMAIN)
    probe = f"import sys, {modules}; print(sorted(m for m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "aiohttp.web" not in out
