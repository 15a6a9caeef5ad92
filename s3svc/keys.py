"""Object keys are made by the server; the client's filename only contributes a sanitised tail.

``../../etc/passwd`` becomes ``passwd``; control characters, separators and non-ASCII letters
never reach the key (non-ASCII is folded to ASCII where it can be, dropped where not). The
original name is kept, percent-encoded, in the object's metadata.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from datetime import UTC, datetime
from urllib.parse import quote, unquote

MAX_NAME_LENGTH = 100
# Characters of the original filename kept in metadata (S3 allows 2 KiB of user metadata).
MAX_METADATA = 1024
FALLBACK_NAME = "file"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_DOTS = re.compile(r"\.{2,}")
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")


def decode_filename(name: str) -> str:
    """Undo percent-encoding that clients apply to form-data filenames (aiohttp, browsers for
    quotes and line breaks); a name that is not valid percent-encoded UTF-8 is kept as sent."""
    if not _PERCENT.search(name):
        return name
    try:
        return unquote(name, errors="strict")
    except UnicodeDecodeError:
        return name


def _ascii_safe(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return _DOTS.sub(".", _UNSAFE.sub("_", folded)).strip("._-")


def sanitise_filename(name: str | None) -> str:
    """A safe, short, ASCII file name derived from a client's (decoded) one."""
    if not name:
        return FALLBACK_NAME
    # Only the last path segment, whichever separator the client's OS uses.
    base = re.split(r"[/\\]", name)[-1]
    safe = _ascii_safe(base)
    stem, dot, ext = base.rpartition(".")
    if dot and stem and not _ascii_safe(stem) and _ascii_safe(ext):
        # Nothing of the stem is usable (文件.txt, 😀.png, "  .txt"): the extension stays.
        safe = f"{FALLBACK_NAME}.{_ascii_safe(ext)}"
    if len(safe) > MAX_NAME_LENGTH:
        stem, dot, ext = safe.rpartition(".")
        if dot and 0 < len(ext) <= 10:
            safe = stem[: MAX_NAME_LENGTH - len(ext) - 1] + "." + ext
        else:
            safe = safe[:MAX_NAME_LENGTH]
    return safe or FALLBACK_NAME


def make_key(prefix: str, filename: str | None, *, now: datetime | None = None) -> str:
    """``{prefix}{yyyy}/{mm}/{dd}/{uuid}/{sanitised name}``: unique, sortable by day, never client-shaped."""
    day = (now or datetime.now(UTC)).strftime("%Y/%m/%d")
    return f"{prefix}{day}/{uuid.uuid4().hex}/{sanitise_filename(filename)}"


def idempotent_key(prefix: str, scope: str, position: int) -> str:
    """``{prefix}idempotent/{scope}/{position}``: the key of a request's ``position``-th file
    (from 1) under an idempotency key, so a retry names the same objects."""
    return f"{prefix}idempotent/{scope}/{position}"


def metadata_filename(name: str | None) -> str:
    """The original (decoded) filename as an S3 metadata value (HTTP headers carry ASCII
    only)."""
    quoted = quote(name or "", safe=" ._-()")
    if len(quoted) <= MAX_METADATA:
        return quoted
    # Cut at the limit, but never inside a %XX escape (nor a UTF-8 sequence of them: the
    # dropped tail is whole characters).
    cut = quoted[:MAX_METADATA]
    if (pct := cut.rfind("%", MAX_METADATA - 2)) != -1:
        cut = cut[:pct]
    return quote(unquote(cut, errors="ignore"), safe=" ._-()")
