"""s3svc's app factory and its route ``POST {BASE_PATH}/upload`` (the upload page: s3svc/page.py)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import structlog
from aiohttp import web
from aiohttp.hdrs import CONTENT_DISPOSITION, CONTENT_TYPE
from aiohttp.multipart import (
    BadContentDispositionHeader,
    BadContentDispositionParam,
    content_disposition_filename,
    parse_content_disposition,
)

from common.app import ProbeCache, client_ctx, create_base_app
from common.auth import caller
from common.aws import aws_error_code
from common.bodies import defer_continue, send_continue, stated_type
from common.breaker import OPEN, CircuitBreaker
from common.errors import (
    BadRequest,
    Conflict,
    NotConfigured,
    PayloadTooLarge,
    ServiceError,
    UnsupportedMediaType,
)
from common.idempotency import HEADER as IDEMPOTENCY_HEADER
from common.idempotency import parse_header, scoped_digest
from common.logging import get_logger
from common.metrics import BYTES
from common.middleware import add_metric
from common.pace import BodyClock, Pace
from common.responses import REQUEST_ID, json_response
from s3svc.config import S3Settings
from s3svc.digests import (
    CONTENT_DIGEST,
    SHA256_FIELD,
    Stated,
    parse_content_digest,
    parse_sha256_field,
)
from s3svc.downloads import DOWNLOAD_LINKS, download_links_ctx
from s3svc.formdata import FormError, FormReader, Part, boundary_of
from s3svc.keys import decode_filename, idempotent_key, make_key
from s3svc.openapi import spec
from s3svc.page import add_page
from s3svc.upload import ByteLimit, CommitFailed, Staged, StoredFile, Uploader

if TYPE_CHECKING:  # the stubs are a dev dependency; the image has no need of them
    from types_aiobotocore_s3 import S3Client

log = get_logger("s3svc.app")

S3_SETTINGS: web.AppKey[S3Settings] = web.AppKey("s3_settings", S3Settings)
S3_CLIENT: web.AppKey[S3Client] = web.AppKey("s3_client")
UPLOADER: web.AppKey[Uploader] = web.AppKey("uploader", Uploader)
S3_BREAKER: web.AppKey[CircuitBreaker] = web.AppKey("s3_breaker", CircuitBreaker)
# Scoped idempotency keys of the uploads in progress in this process.
IDEMPOTENCY_CLAIMS: web.AppKey[set[str]] = web.AppKey("idempotency_claims", set)
IDEMPOTENCY_SCOPE: web.RequestKey[str] = web.RequestKey("idempotency_scope", str)

FILE_FIELD = "file"
# Form fields other than files are skipped; bound how many and how large, so a flood of tiny
# fields or one huge text field cannot keep a request busy.
MAX_OTHER_FIELDS = 100
MAX_OTHER_FIELD_BYTES = 64 * 1024
MAX_FIELD_NAME = 200
# Content-Length counts multipart framing as well as file bytes; allow this much of it per file
# before deciding early that a body is too large.
FRAMING_ALLOWANCE = 16 * 1024
# A backslash in a form-data parameter is itself unless it escapes a quote or a backslash:
# browsers and curl write a quote in a filename as %22 (the HTML form encoding) and leave
# backslashes be, so quoted-pair unescaping turned "C:\fakepath\a.txt" into "C:fakepatha.txt".
_LONE_BACKSLASH = re.compile(r'\\(?=[^"\\])')
# RFC 8187: an extended parameter (filename*=UTF-8''...) names its charset, which aiohttp hands
# to Python's codecs (punycode raised UnicodeError, unicode_escape made lone surrogates: 500s).
# UTF-8, as producers must use, or ISO-8859-1, which recipients should take; empty is UTF-8.
_EXTENDED_CHARSET = re.compile(r";\s*[^\s=;\"*]+\*\s*=\s*([^'\s;\"]*)'")
_CHARSETS = frozenset({"", "utf-8", "iso-8859-1"})
# The parameters a field is read by. aiohttp drops one it cannot read (a bad filename*, a
# repeated filename) with a warning only, which would make a file a text field, silently.
_NAMING_PARAMS = frozenset({"name", "name*", "filename", "filename*"})
_PARAM_NAME = re.compile(r";\s*([^\s=;\"]+)\s*=")
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
_MEDIA_TYPE_RE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\Z"
)
READY_CACHE_SECONDS = 5.0


def _malformed(exc: FormError) -> BadRequest:
    return BadRequest(f"malformed multipart body: {exc}", code="malformed_multipart")


class _Field:
    """One field of the form: its name, filename and content type from its headers, and its
    data, whose parser errors and cut-off end read as 400s."""

    def __init__(self, part: Part) -> None:
        self.part = part
        self.headers = part.headers
        # aiohttp's public Content-Disposition helpers (name, filename, filename*), with every
        # backslash kept that does not escape a quote or a backslash.
        raw = part.headers.get(CONTENT_DISPOSITION)
        if raw is not None:
            raw = _LONE_BACKSLASH.sub(r"\\\\", raw)
            if any(c.lower() not in _CHARSETS for c in _EXTENDED_CHARSET.findall(raw)):
                raise BadRequest(
                    "a filename* or name* must be in UTF-8 (RFC 8187)", code="malformed_multipart"
                )
        try:
            # What the charset check lets through still decodes strictly: a 400, not a 500.
            # A parameter aiohttp cannot read it drops with a warning, so the names given
            # (outside quoted values) are checked against what it kept: a lost name or filename
            # is a 400, but a lost filename* (name*) beside a plain one falls back to it (RFC
            # 6266). Where warnings are errors (the test suite), aiohttp raises instead: a 400.
            _, params = parse_content_disposition(raw)
            given = {n.lower() for n in _PARAM_NAME.findall(_QUOTED.sub('""', raw or ""))}
            lost = _NAMING_PARAMS.intersection(given).difference(params)
            if any(p.removesuffix("*") not in params for p in lost):
                raise BadContentDispositionParam(raw or "")
            self.name = content_disposition_filename(params, "name")
            filename = content_disposition_filename(params, "filename")
            for text in (self.name, filename):
                (text or "").encode()
        except (UnicodeError, LookupError) as exc:
            raise BadRequest(
                "a form field's Content-Disposition cannot be decoded", code="malformed_multipart"
            ) from exc
        except (BadContentDispositionHeader, BadContentDispositionParam) as exc:
            raise BadRequest(
                "a form field's Content-Disposition has a name or filename that cannot be read "
                "(malformed, or given twice)",
                code="malformed_multipart",
            ) from exc
        # A plain filename is percent-decoded once, here (a browser sends a quote in it as %22),
        # so the key, the metadata, the answer and the download link name the same file;
        # filename* (RFC 8187) was decoded by its own rules already.
        if filename is not None and not any(k.startswith("filename*") for k in params):
            filename = decode_filename(filename)
        self.filename = filename

    def content_type(self) -> str:
        """The part's media type, lower case; ``application/octet-stream`` when it has none
        or a malformed one."""
        raw = self.headers.get(CONTENT_TYPE, "").split(";")[0].strip().lower()
        return raw if _MEDIA_TYPE_RE.match(raw) else "application/octet-stream"

    async def read_chunk(self, size: int = 8192) -> bytes:
        """Up to ``size`` bytes; ``b""`` only at the part's closing delimiter."""
        try:
            return await self.part.read_chunk(size)
        except FormError as exc:
            raise _malformed(exc) from exc


def _allowed(content_type: str, allowed: tuple[str, ...]) -> bool:
    if not allowed:
        return True
    major = content_type.split("/")[0]
    return content_type in allowed or f"{major}/*" in allowed


async def _skip(part: _Field, clock: BodyClock) -> None:
    """Skip a non-file field, refusing one larger than MAX_OTHER_FIELD_BYTES."""
    seen = 0
    while chunk := await clock.chunk(part.read_chunk(65536)):
        seen += len(chunk)
        if seen > MAX_OTHER_FIELD_BYTES:
            raise PayloadTooLarge(
                f"form field {part.name!r} exceeds {MAX_OTHER_FIELD_BYTES} bytes",
                code="field_too_large",
            )


async def _text(part: _Field, clock: BodyClock) -> str:
    """A short text field's value (at most 1 KiB)."""
    data = b""
    while chunk := await clock.chunk(part.read_chunk(8192)):
        data += chunk
        if len(data) > 1024:
            raise BadRequest(f"form field {part.name!r} is too long", code="invalid_digest")
    return data.decode("utf-8", "replace")


def _stated(part: _Field) -> Stated:
    """The digests a file part's Content-Digest headers state (none without one)."""
    headers = part.headers.getall(CONTENT_DIGEST, [])
    return parse_content_digest(", ".join(headers)) if headers else Stated()


def _open_form(request: web.Request) -> FormReader:
    if request.content_type != "multipart/form-data":
        raise UnsupportedMediaType(
            f"expected multipart/form-data with a {FILE_FIELD!r} field "
            f"(curl -F '{FILE_FIELD}=@path'), got {stated_type(request)}",
            code="unsupported_media_type",
        )
    try:
        boundary = boundary_of(request.headers.get(CONTENT_TYPE, ""))
    except FormError as exc:
        raise _malformed(exc) from exc
    return FormReader(request.content, boundary)


async def _next_part(reader: FormReader, clock: BodyClock) -> _Field | None:
    """The next field of the form, or None after the body's closing boundary."""
    try:
        part = await clock.read(reader.next_part())
    except FormError as exc:
        raise _malformed(exc) from exc
    if part is None:
        return None
    if part.headers.get(CONTENT_TYPE, "").lstrip().lower().startswith("multipart/"):
        raise BadRequest("nested multipart bodies are not supported", code="malformed_multipart")
    return _Field(part)


async def _stage_form(
    request: web.Request, reader: FormReader, clock: BodyClock, staged: list[Staged]
) -> None:
    """Read the whole form to its closing boundary, staging each ``file`` field in ``staged``."""
    settings = request.app[S3_SETTINGS]
    uploader = request.app[UPLOADER]
    limit = ByteLimit(settings.max_upload_bytes)
    idempotency = request.get(IDEMPOTENCY_SCOPE)
    others = 0
    pending: Stated | None = None  # a sha256 field's digest, for the file that follows it
    text_file_field = False  # a "file" field without a filename: a text value, not a file
    # An upper bound on each file's size, so a huge file gets parts large enough for S3.
    bound = min(request.content_length or settings.max_upload_bytes, settings.max_upload_bytes)
    while (part := await _next_part(reader, clock)) is not None:
        if staged:
            # More of the body follows: the last file must not hold memory meanwhile.
            await uploader.spill(staged[-1])
        if not part.name or len(part.name) > MAX_FIELD_NAME:
            raise BadRequest(
                f"every form field needs a name of 1 to {MAX_FIELD_NAME} characters",
                code="malformed_multipart",
            )
        if pending is not None and (part.name != FILE_FIELD or part.filename is None):
            raise BadRequest(
                f"a {SHA256_FIELD!r} field must come right before the file it describes",
                code="invalid_digest",
            )
        if part.name == SHA256_FIELD:
            if part.filename is not None:  # -F sha256=@file: the client meant to state a digest
                raise BadRequest(
                    f"the {SHA256_FIELD!r} field is a text value (64 hex digits), not a file: "
                    f"-F '{SHA256_FIELD}=<hex>', not -F '{SHA256_FIELD}=@file'",
                    code="invalid_digest",
                )
            pending = parse_sha256_field(await _text(part, clock))
            continue
        if part.name != FILE_FIELD or part.filename is None:
            text_file_field = text_file_field or part.name == FILE_FIELD
            others += 1
            if others > MAX_OTHER_FIELDS:
                raise BadRequest(
                    f"more than {MAX_OTHER_FIELDS} non-file form fields", code="too_many_fields"
                )
            await _skip(part, clock)
            continue
        if len(staged) >= settings.max_files:
            raise BadRequest(
                f"more than {settings.max_files} files in one request", code="too_many_files"
            )
        content_type = part.content_type()
        if not _allowed(content_type, settings.allowed_content_types):
            raise UnsupportedMediaType(
                f"content type {content_type!r} is not allowed; allowed: "
                + ", ".join(settings.allowed_content_types),
                code="content_type_not_allowed",
            )
        key = (
            idempotent_key(settings.key_prefix, idempotency, len(staged) + 1)
            if idempotency
            else make_key(settings.key_prefix, part.filename)
        )
        staged.append(
            await uploader.stage(
                part,
                key=key,
                filename=part.filename,
                content_type=content_type,
                limit=limit,
                clock=clock,
                size_bound=bound,
                stated=_stated(part).merge(pending) if pending else _stated(part),
                exclusive=not idempotency,
            )
        )
        pending = None
    if pending is not None:
        raise BadRequest(
            f"a {SHA256_FIELD!r} field must come right before the file it describes",
            code="invalid_digest",
        )
    if not staged:
        hint = (
            f"the {FILE_FIELD!r} field had no filename, so it is a text value, not a file; "
            if text_file_field
            else ""
        )
        raise BadRequest(
            f"no file in the form: {hint}send the file in a field named {FILE_FIELD!r} "
            f"(curl -F '{FILE_FIELD}=@path')",
            code="missing_file",
        )


@contextlib.contextmanager
def _claim(request: web.Request) -> Iterator[None]:
    """Hold the request's idempotency key for its duration: a concurrent duplicate is 409."""
    scope = request.get(IDEMPOTENCY_SCOPE)
    if scope is None:
        yield
        return
    claimed = request.app[IDEMPOTENCY_CLAIMS]
    if scope in claimed:
        raise Conflict(
            f"a request with this {IDEMPOTENCY_HEADER} is in progress; retry after it ends",
            code="idempotency_conflict",
        )
    claimed.add(scope)
    try:
        yield
    finally:
        claimed.discard(scope)


async def upload(request: web.Request) -> web.Response:
    """Store every ``file`` field of a multipart/form-data body as its own S3 object, all or none.

    201 with the stored files (200 when every file was stored by an earlier request with the
    same ``Idempotency-Key``). Nothing is committed before the body's closing boundary was read;
    if S3 then fails some commits, the error lists under ``stored`` the files it confirmed.
    """
    settings = request.app[S3_SETTINGS]
    if settings.bucket is None:
        raise NotConfigured("uploads are disabled: BUCKET_NAME is not set", code="not_configured")
    key = parse_header(request.headers.getall(IDEMPOTENCY_HEADER, []))
    if key is not None:
        request[IDEMPOTENCY_SCOPE] = scoped_digest(key, caller(request))
    declared = request.content_length
    allowance = FRAMING_ALLOWANCE * settings.max_files
    if declared is not None and declared > settings.max_upload_bytes + allowance:
        raise PayloadTooLarge(
            f"request body of {declared} bytes exceeds the upload limit of "
            f"{settings.max_upload_bytes} bytes",
            code="upload_too_large",
        )
    reader = _open_form(request)
    uploader = request.app[UPLOADER]
    clock = BodyClock(Pace.of(settings.common), lambda: request.content.total_bytes)
    staged: list[Staged] = []
    stored: list[StoredFile] = []
    try:
        with _claim(request):
            # Every check that needs no body passed: a client waiting to be asked may send it.
            await send_continue(request)
            try:
                await _stage_form(request, reader, clock, staged)
            except BaseException:
                await uploader.discard(staged)
                raise
            try:
                stored = await uploader.commit(staged)
            except CommitFailed as exc:
                stored = exc.stored
                error = (
                    exc.cause
                    if isinstance(exc.cause, ServiceError)
                    else ServiceError("storing the files failed", code="internal_error")
                )
                error.details["stored"] = [f.as_json() for f in stored]
                raise error from exc.cause
    finally:
        new = [f for f in stored if not f.replayed]
        structlog.contextvars.bind_contextvars(
            files=len(stored), size=sum(f.size for f in new), bucket=settings.bucket
        )
        if len(stored) == 1:
            structlog.contextvars.bind_contextvars(key=stored[0].key)
        add_metric(request, "UploadBytes", sum(f.size for f in new), BYTES)
        add_metric(request, "UploadParts", sum(f.parts for f in new))
        add_metric(request, "StrayUploadsAborted", sum(f.strays_aborted for f in staged))
        add_metric(request, "IdempotentReplays", len(stored) - len(new))
    files = [f.as_json() for f in stored]
    links = request.app[DOWNLOAD_LINKS]
    if links is not None:
        for item, stored_file in zip(files, stored, strict=True):
            # A replay's bytes, and so their name, are the earlier request's.
            name = (
                await uploader.original_filename(stored_file.key)
                if stored_file.replayed
                else stored_file.filename
            )
            item.update(await links.for_file(stored_file, name))
    status = 200 if all(f.replayed for f in stored) else 201
    return json_response({"files": files, "request_id": request[REQUEST_ID]}, status=status)


async def readiness(app: web.Application) -> str | None:
    """Ready when the bucket is configured and S3 answers for it, using only our own permissions.

    The task role may not ``s3:ListBucket`` (so no ``head_bucket``); aborting an upload id that
    does not exist needs only ``s3:AbortMultipartUpload`` and answers ``NoSuchUpload`` when the
    bucket is there and reachable. The answer is cached for a few seconds.
    """
    settings = app[S3_SETTINGS]
    if settings.bucket is None:
        return "BUCKET_NAME is not set (local-safe mode)"
    if app[S3_BREAKER].state == OPEN:
        return "S3 is failing (circuit open); retrying shortly"
    if (busy := app[UPLOADER].busy()) is not None:
        return busy
    bucket = settings.bucket

    async def probe() -> str | None:
        try:
            await app[S3_CLIENT].abort_multipart_upload(
                Bucket=bucket, Key=f"{settings.key_prefix}.ready-probe", UploadId="ready-probe"
            )
        except Exception as exc:  # the breaker never refuses an abort (ALWAYS_ATTEMPTED)
            code = aws_error_code(exc)
            if code != "NoSuchUpload":
                return f"S3 bucket not usable: {code or type(exc).__name__}"
        return None

    return await app[READY_CACHE].answer(probe)


READY_CACHE: web.AppKey[ProbeCache] = web.AppKey("ready_cache", ProbeCache)


def create_app(settings: S3Settings) -> web.Application:
    """Build s3svc: health/ready from ``common``, the S3 client and uploader in ``cleanup_ctx``."""
    app = create_base_app(settings.common, readiness, openapi=spec(settings))
    app[S3_SETTINGS] = settings
    app[READY_CACHE] = ProbeCache(READY_CACHE_SECONDS)
    app[IDEMPOTENCY_CLAIMS] = set()
    aws = settings.common.aws
    app[S3_BREAKER] = breaker = CircuitBreaker(
        "S3", aws.breaker_threshold, aws.breaker_reset_seconds
    )
    app.cleanup_ctx.append(client_ctx("s3", aws, S3_CLIENT, breaker))

    async def uploader_ctx(app: web.Application) -> AsyncIterator[None]:
        # Registered after the client, so it is cleaned up first: aborts finish before close.
        app[UPLOADER] = uploader = Uploader(app[S3_CLIENT], settings, breaker)
        yield
        await uploader.drain()

    app.cleanup_ctx.append(uploader_ctx)
    app.cleanup_ctx.append(download_links_ctx(settings))
    app.router.add_post(
        f"{settings.common.base_path}/upload", upload, expect_handler=defer_continue
    )
    add_page(app, settings)
    return app
