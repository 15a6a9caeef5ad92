"""s3svc settings, parsed once from the environment."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from common.config import CommonSettings, EnvReader, defaults, parse_env, read_common, read_endpoint

SERVICE = "s3svc"
MIB = 1024**2
GIB = 1024**3

ENV_BUCKET = "BUCKET_NAME"
ENV_KEY_PREFIX = "KEY_PREFIX"
ENV_PART_SIZE = "PART_SIZE"
ENV_MAX_INFLIGHT = "UPLOAD_MAX_INFLIGHT_PARTS"
ENV_MEMORY_BUDGET = "UPLOAD_MEMORY_BUDGET"
ENV_MEMORY_WAIT = "UPLOAD_MEMORY_WAIT"
ENV_SLOT_MIN_RATE = "UPLOAD_SLOT_MIN_RATE"
ENV_MAX_UPLOAD = "MAX_UPLOAD_BYTES"
ENV_MAX_FILES = "MAX_FILES"
ENV_ALLOWED_TYPES = "ALLOWED_CONTENT_TYPES"
ENV_SSE = "S3_SSE"
ENV_KMS_KEY = "S3_SSE_KMS_KEY_ID"
ENV_DOWNLOAD_SECONDS = "DOWNLOAD_URL_SECONDS"
ENV_DOWNLOAD_ENDPOINT = "DOWNLOAD_URL_ENDPOINT"
ENV_UPLOAD_PAGE = "UPLOAD_PAGE"

# S3's own limits: parts 5 MiB-5 GiB, at most 10,000 parts.
MIN_PART_SIZE = 5 * MIB
MAX_PART_SIZE = 5 * GIB
MAX_PARTS = 10_000
# A SigV4 presigned URL lives at most 7 days.
MAX_PRESIGN_SECONDS = 7 * 24 * 3600

_PREFIX_RE = re.compile(r"^([A-Za-z0-9!_.*'()-]+/)*\Z")
_TYPE_PATTERN_RE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/(\*|[a-z0-9][a-z0-9!#$&^_.+-]*)\Z")


def part_size_for(size: int | None, part_size: int) -> int:
    """The part size for a file of ``size`` bytes: ``part_size``, raised (in whole MiB) when
    the file would otherwise need more than S3's 10,000 parts."""
    if size is None or size <= part_size * MAX_PARTS:
        return part_size
    needed = -(-size // MAX_PARTS)
    return min(MAX_PART_SIZE, -(-needed // MIB) * MIB)


@dataclass(frozen=True, slots=True)
class S3Settings:
    """Everything s3svc needs; ``bucket`` None means local-safe mode (uploads answer 503)."""

    common: CommonSettings
    bucket: str | None
    key_prefix: str = "uploads/"
    part_size: int = 8 * MIB
    max_inflight_parts: int = 3
    memory_budget: int = 256 * MIB
    # Seconds an upload may wait for memory before it is answered 503 busy; well under the
    # ALB's idle timeout (the stack's: 120 s), during which the client's connection carries
    # nothing.
    memory_wait: float = 20.0
    # Bytes/s a file holding a part buffer must send (per second spent waiting for its client)
    # once another upload has waited half of memory_wait for one; 0: never cut (s3svc/upload.py).
    slot_min_rate: int = 16 * 1024
    max_upload_bytes: int = 5 * GIB
    max_files: int = 10
    allowed_content_types: tuple[str, ...] = ()
    sse: str | None = None
    sse_kms_key_id: str | None = None
    # Seconds a download link in the answer stays valid; 0: no link.
    download_url_seconds: int = 0
    # The S3 endpoint written into download links; None: the one the service calls.
    download_url_endpoint: str | None = None
    # Serve the upload page for people at GET {BASE_PATH}/ (s3svc/page.py).
    upload_page: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> S3Settings:
        """Parse and validate; raises ConfigError listing every problem."""
        return parse_env(cls.read, environ)

    @classmethod
    def read(cls, env: EnvReader) -> S3Settings:
        """Read every variable (errors accumulate on ``env``)."""
        d = defaults(cls)
        common = read_common(env, service=SERVICE, default_port=8080, default_base="/s3")
        bucket = env.optional(
            ENV_BUCKET, doc="the upload bucket; unset: local-safe mode (uploads answer 503)"
        )
        prefix = env.text(
            ENV_KEY_PREFIX,
            d.key_prefix,
            doc="prefix of every stored key (the task role's scope)",
            expected="segments like uploads/ (letters, digits, !_.*'()-)",
        )
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        if not _PREFIX_RE.match(prefix):
            env.errors.append(
                f"{ENV_KEY_PREFIX}={prefix!r} is not valid: expected segments like uploads/ "
                "(letters, digits, !_.*'()-)"
            )
        allowed = env.optional(
            ENV_ALLOWED_TYPES,
            doc="comma-separated media types a file may have; unset = any",
            expected="type/subtype or type/* each",
        )
        types = tuple(t.strip().lower() for t in (allowed or "").split(",") if t.strip())
        bad = [t for t in types if not _TYPE_PATTERN_RE.match(t)]
        if bad:
            env.errors.append(
                f"{ENV_ALLOWED_TYPES} has invalid media types {bad}: expected type/subtype or type/*"
            )
        sse_raw = env.choice(
            ENV_SSE,
            "none",
            ("none", "aes256", "aws:kms"),
            doc="server-side encryption asked for on every object (none: the bucket's default)",
        )
        sse = {"none": None, "aes256": "AES256", "aws:kms": "aws:kms"}[sse_raw]
        kms_key = env.optional(ENV_KMS_KEY, doc=f"KMS key for {ENV_SSE}=aws:kms")
        if kms_key and sse != "aws:kms":
            env.errors.append(f"{ENV_KMS_KEY} is set but {ENV_SSE} is not aws:kms")
        part_size = env.size(
            ENV_PART_SIZE,
            d.part_size,
            lo=MIN_PART_SIZE,
            hi=MAX_PART_SIZE,
            doc="multipart part size; files smaller than one part are one PutObject",
        )
        budget = env.size(
            ENV_MEMORY_BUDGET,
            d.memory_budget,
            lo=2 * MIN_PART_SIZE,
            hi=64 * GIB,
            doc="bytes of file data all uploads of the process may buffer at once (backpressure); "
            "at least two parts",
        )
        max_upload = env.size(
            ENV_MAX_UPLOAD,
            d.max_upload_bytes,
            lo=1,
            hi=5 * 1024 * GIB,
            doc="most file bytes one request may carry (a larger Content-Length, beyond 16 KiB of "
            "multipart framing per allowed file, is refused before reading)",
        )
        # One part's worth for small buffers, and at least one whole part of the largest
        # upload's part size for part buffers (s3svc/upload.py).
        largest = part_size_for(max_upload, part_size)
        if budget < part_size + largest:
            env.errors.append(
                f"{ENV_MEMORY_BUDGET}={budget} cannot hold two parts: it needs {ENV_PART_SIZE}="
                f"{part_size} for small buffers plus one part of {largest} bytes (the part size "
                f"{ENV_MAX_UPLOAD}={max_upload} needs to fit S3's {MAX_PARTS} parts); raise the "
                "budget or lower the part size or the limit"
            )
        return cls(
            common=common,
            bucket=bucket,
            key_prefix=prefix,
            part_size=part_size,
            max_inflight_parts=env.integer(
                ENV_MAX_INFLIGHT,
                d.max_inflight_parts,
                lo=1,
                hi=64,
                doc="parts of one upload sent to S3 at once",
            ),
            memory_budget=budget,
            memory_wait=env.number(
                ENV_MEMORY_WAIT,
                d.memory_wait,
                lo=0.1,
                hi=3600.0,
                doc="seconds an upload may wait for upload memory before it is answered 503 busy",
            ),
            slot_min_rate=env.size(
                ENV_SLOT_MIN_RATE,
                d.slot_min_rate,
                lo=0,
                hi=GIB,
                doc="bytes/s a file holding a part buffer must send while other uploads wait for "
                "one (0: off)",
            ),
            max_upload_bytes=max_upload,
            max_files=env.integer(
                ENV_MAX_FILES, d.max_files, lo=1, hi=1000, doc="files per request"
            ),
            allowed_content_types=types,
            sse=sse,
            sse_kms_key_id=kms_key,
            download_url_seconds=env.integer(
                ENV_DOWNLOAD_SECONDS,
                d.download_url_seconds,
                lo=0,
                hi=MAX_PRESIGN_SECONDS,
                doc="give each stored file a presigned download link valid this long; 0 = off "
                "(in AWS the task role needs s3:GetObject, and a link dies with the role's "
                "temporary credentials, within hours)",
            ),
            download_url_endpoint=read_endpoint(
                env,
                ENV_DOWNLOAD_ENDPOINT,
                doc="S3 endpoint written into download links, when users reach S3 under another "
                "name than the service does (default: the service's own)",
            ),
            upload_page=env.flag(
                ENV_UPLOAD_PAGE,
                d.upload_page,
                doc="serve the upload page for people at {BASE_PATH}/ (its script and style under "
                "{BASE_PATH}/page/); false: those paths are not routes",
            ),
        )
