"""The upload page as HTTP: its headers, caching, openness and setting (the browser tests are in
test_page_browser.py)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from html.parser import HTMLParser
from typing import Any

import pytest

from common.config import ConfigError
from s3svc.app import create_app
from s3svc.config import MIB, S3Settings
from s3svc.page import ASSETS, CONTENT_SECURITY_POLICY

KEY_DIGEST = "0" * 64


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the text inside script and style elements."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline: list[str] = []
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._open = tag if tag in ("script", "style") else None

    def handle_endtag(self, tag: str) -> None:
        self._open = None

    def handle_data(self, data: str) -> None:
        if self._open and data.strip():
            self.inline.append(data)


def _parse(html: str) -> _Tags:
    tags = _Tags()
    tags.feed(html)
    return tags


def _with_keys(settings: S3Settings) -> S3Settings:
    return replace(settings, common=replace(settings.common, api_keys_sha256=(KEY_DIGEST,)))


async def test_page_is_html_with_strict_security_headers(
    aiohttp_client: Callable[..., Any], make_s3_settings: Callable[..., S3Settings]
) -> None:
    """GET /s3/ is the page: HTML, revalidated on each visit, with a CSP that allows nothing but
    its own origin, no framing, no sniffing and no referrer."""
    client = await aiohttp_client(create_app(make_s3_settings()))
    resp = await client.get("/s3/")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    assert resp.headers["Cache-Control"] == "no-cache"
    csp = resp.headers["Content-Security-Policy"]
    assert csp == CONTENT_SECURITY_POLICY
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    for name in ("script-src", "style-src", "connect-src"):
        assert directives[name] == "'self'"
    assert "unsafe" not in csp
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert resp.headers["X-Frame-Options"] == "DENY"


async def test_page_has_no_inline_code_and_loads_only_its_own_files(
    aiohttp_client: Callable[..., Any], make_s3_settings: Callable[..., S3Settings]
) -> None:
    """No inline script, style or event handler; every file it loads is one of its own, named by
    its content's digest, and answers with its type and a year of caching."""
    client = await aiohttp_client(create_app(make_s3_settings()))
    page = _parse(await (await client.get("/s3/")).text())
    assert page.inline == []
    assert all(tag != "style" for tag, _ in page.tags)
    for _, attrs in page.tags:
        assert "style" not in attrs
        assert not [a for a in attrs if a.startswith("on")]
    loaded = [a["src"] for t, a in page.tags if t == "script"]
    loaded += [a["href"] for t, a in page.tags if t == "link" and a.get("rel") == "stylesheet"]
    assert len(loaded) == len(ASSETS)
    for url in loaded:
        assert url is not None
        match = re.fullmatch(r"/s3/page/(page\.(?:js|css))\?v=([0-9a-f]{16})", url)
        assert match, url
        resp = await client.get(url)
        assert resp.status == 200
        assert resp.headers["Content-Type"] == f"{ASSETS[match.group(1)]}; charset=utf-8"
        assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert resp.headers["ETag"] == f'"{match.group(2)}"'
        assert resp.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert resp.headers["X-Content-Type-Options"] == "nosniff"


async def test_files_are_revalidated_and_answer_304(
    aiohttp_client: Callable[..., Any], make_s3_settings: Callable[..., S3Settings]
) -> None:
    """A file asked for without its digest (or an old one) is revalidated; If-None-Match with the
    current ETag answers 304 with no body; an unknown file is 404."""
    client = await aiohttp_client(create_app(make_s3_settings()))
    for path in ("/s3/", "/s3/page/page.js", "/s3/page/page.css?v=0123456789abcdef"):
        resp = await client.get(path)
        assert resp.headers["Cache-Control"] == "no-cache", path
        again = await client.get(path, headers={"If-None-Match": resp.headers["ETag"]})
        assert again.status == 304, path
        assert await again.read() == b""
        assert again.headers["ETag"] == resp.headers["ETag"]
        assert again.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    other = await client.get("/s3/", headers={"If-None-Match": '"0000000000000000"'})
    assert other.status == 200
    missing = await client.get("/s3/page/other.js")
    assert missing.status == 404
    assert (await missing.json())["error"] == "not_found"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, {"data-api-keys": "off", "data-download-links": "off"}),
        (
            {"max_upload_bytes": 3 * MIB, "download_url_seconds": 60},
            {"data-max-upload-bytes": str(3 * MIB), "data-download-links": "on"},
        ),
    ],
)
async def test_page_carries_what_its_script_needs(
    aiohttp_client: Callable[..., Any],
    make_s3_settings: Callable[..., S3Settings],
    overrides: dict[str, Any],
    expected: dict[str, str],
) -> None:
    """The upload URL, MAX_UPLOAD_BYTES and whether download links are on, as data attributes."""
    settings = make_s3_settings(**overrides)
    client = await aiohttp_client(create_app(settings))
    page = _parse(await (await client.get("/s3/")).text())
    (main,) = [a for t, a in page.tags if t == "main"]
    assert main["data-upload-url"] == "/s3/upload"
    assert main["data-max-upload-bytes"] == str(settings.max_upload_bytes)
    for name, value in expected.items():
        assert main[name] == value


async def test_page_is_open_when_api_keys_are_on(
    aiohttp_client: Callable[..., Any], make_s3_settings: Callable[..., S3Settings]
) -> None:
    """Like /health, the page and its files need no key (the page asks for one); the upload and
    unknown paths still do, and the page says keys are on."""
    client = await aiohttp_client(create_app(_with_keys(make_s3_settings())))
    page = await client.get("/s3/")
    assert page.status == 200
    assert 'data-api-keys="on"' in await page.text()
    assert (await client.get("/s3/page/page.js")).status == 200
    assert (await client.head("/s3/")).status == 200
    # The base path as a person types it: a permanent redirect to the page, no key needed.
    moved = await client.get("/s3", allow_redirects=False)
    assert (moved.status, moved.headers["Location"]) == (308, "/s3/")
    assert (await client.get("/s3/page/nothing.js")).status == 404
    assert (await client.post("/s3/upload")).status == 401
    assert (await client.get("/s3/upload")).status == 401  # what the page's key check asks
    assert (await client.get("/s3/elsewhere")).status == 401
    assert (await client.post("/s3/")).status == 401


async def test_setting_turns_the_page_off(
    aiohttp_client: Callable[..., Any], make_s3_settings: Callable[..., S3Settings]
) -> None:
    """UPLOAD_PAGE=false: no page, no files, and the document does not list them."""
    client = await aiohttp_client(create_app(make_s3_settings(upload_page=False)))
    assert (await client.get("/s3/")).status == 404
    assert (await client.get("/s3/page/page.js")).status == 404
    doc = await (await client.get("/s3/openapi.json")).json()
    assert not [p for p in doc["paths"] if p == "/s3/" or p.startswith("/s3/page/")]


@pytest.mark.parametrize(
    ("value", "expected"), [(None, True), ("false", False), ("off", False), ("true", True)]
)
def test_upload_page_setting(value: str | None, expected: bool) -> None:
    """UPLOAD_PAGE is a flag, on by default."""
    env = {} if value is None else {"UPLOAD_PAGE": value}
    assert S3Settings.from_env(env).upload_page is expected


def test_upload_page_setting_refuses_other_values() -> None:
    """Anything but a flag value stops the start, naming the variable."""
    with pytest.raises(ConfigError, match="UPLOAD_PAGE='maybe'"):
        S3Settings.from_env({"UPLOAD_PAGE": "maybe"})
