"""The upload page for people: ``GET {BASE_PATH}/`` and its script and style sheet.

Three small files ship in the package (``s3svc/static/``): no framework, nothing from another
origin, no inline script or style, so the page is served with a strict Content-Security-Policy.
The HTML is rendered once, when the app is built, with what the script needs to know as data
attributes (the upload URL, ``MAX_UPLOAD_BYTES``, whether API keys and download links are on);
it is revalidated on every visit (``no-cache`` with an ETag), since another deployment may change
them. It names its script and style sheet with a digest of their content (``?v=``), under which
they may be cached for a year. The page and its files need no API key, like ``/health``: the
page asks for the key and sends it with each upload. ``UPLOAD_PAGE=false`` leaves the routes out.
"""

from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass
from importlib import resources
from string import Template

from aiohttp import web

from common.app import add_public_get
from common.config import human_size
from common.errors import ServiceError
from s3svc.config import ENV_MAX_UPLOAD, S3Settings

# The page's files other than the HTML, each with its content type.
ASSETS = {
    "page.css": "text/css",
    "page.js": "text/javascript",
}
# Everything the page loads comes from its own origin: script, style and the upload requests.
# No inline script or style, no frames (of it or in it), no plugins, no form posts, no <base>.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
REVALIDATE = "no-cache"
# A file named by the digest of its content never changes under that name.
IMMUTABLE = "public, max-age=31536000, immutable"


@dataclass(frozen=True, slots=True)
class _File:
    """One file of the page: its bytes, content type and strong ETag."""

    body: bytes
    content_type: str

    @property
    def digest(self) -> str:
        """A short digest of the content: the ETag and the ``?v=`` of its URL."""
        return hashlib.sha256(self.body).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Page:
    """The rendered page and its files, held by the app for its lifetime."""

    index: _File
    assets: dict[str, _File]


PAGE: web.AppKey[Page] = web.AppKey("upload_page", Page)


def _read(name: str) -> bytes:
    return (resources.files("s3svc") / "static" / name).read_bytes()


def render(settings: S3Settings) -> Page:
    """The page for this configuration, and its script and style sheet."""
    assets = {name: _File(_read(name), kind) for name, kind in ASSETS.items()}
    base = settings.common.base_path
    values = {
        "base": base,
        "upload_url": f"{base}/upload",
        "max_upload_bytes": str(settings.max_upload_bytes),
        "max_upload": human_size(settings.max_upload_bytes),
        "max_upload_setting": ENV_MAX_UPLOAD,
        "api_keys": "on" if settings.common.api_keys_sha256 else "off",
        "download_links": "on" if settings.download_url_seconds > 0 else "off",
        "css": f"{base}/page/page.css?v={assets['page.css'].digest}",
        "js": f"{base}/page/page.js?v={assets['page.js'].digest}",
    }
    template = Template(_read("index.html").decode("utf-8"))
    text = template.substitute({k: html.escape(v) for k, v in values.items()})
    return Page(index=_File(text.encode("utf-8"), "text/html"), assets=assets)


def _answer(request: web.Request, file: _File, cache_control: str) -> web.Response:
    """``file`` with the page's security headers, or 304 when the client holds this version."""
    etag = file.digest
    headers = dict(SECURITY_HEADERS)
    headers["Cache-Control"] = cache_control
    held = request.if_none_match
    if held is not None and any(e.value in (etag, "*") for e in held):
        response = web.Response(status=304, headers=headers)
    else:
        response = web.Response(
            body=file.body, content_type=file.content_type, charset="utf-8", headers=headers
        )
    response.etag = etag
    return response


async def index(request: web.Request) -> web.Response:
    """The upload page."""
    return _answer(request, request.app[PAGE].index, REVALIDATE)


async def to_index(request: web.Request) -> web.Response:
    """``{BASE_PATH}`` without its slash: a permanent redirect to the page, as a person types it."""
    raise web.HTTPPermanentRedirect(f"{request.path}/")


async def asset(request: web.Request) -> web.Response:
    """The page's script or style sheet; cacheable for a year when asked for by its digest."""
    file = request.app[PAGE].assets.get(request.match_info["asset"])
    if file is None:
        raise ServiceError("no such file of the upload page", code="not_found", status=404)
    fresh = request.query.get("v") == file.digest
    return _answer(request, file, IMMUTABLE if fresh else REVALIDATE)


def add_page(app: web.Application, settings: S3Settings) -> None:
    """Serve the page at ``{BASE_PATH}/`` (and its files under ``{BASE_PATH}/page/``), open to
    everyone, unless ``UPLOAD_PAGE`` is false."""
    if not settings.upload_page:
        return
    app[PAGE] = render(settings)
    base = settings.common.base_path
    add_public_get(app, f"{base}/", index)
    if base:
        add_public_get(app, base, to_index)
    add_public_get(app, f"{base}/page/{{asset}}", asset)
