"""Checks of a service's OpenAPI document against its app, shared by both services' tests."""

from __future__ import annotations

from typing import Any

from aiohttp import web


def assert_document_matches_routes(app: web.Application, doc: dict[str, Any]) -> None:
    """Every route is documented and every documented operation is a route (HEAD aside)."""
    assert doc["openapi"].startswith("3.1")
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    routed = {
        (r.resource.canonical, r.method)
        for r in app.router.routes()
        if r.resource is not None and r.method != "HEAD"
    }
    assert documented == routed
