"""Digests a client states for a file, and the checksums the service computes for it.

A client states a file's digest in the file part's ``Content-Digest`` header (RFC 9530:
``sha-256=:<base64>:``; ``crc64nvme=:<base64>:`` is our own extension, as RFC 9530's registry
has no such name), or, where it cannot set part headers (a browser's ``FormData``), in a text
field ``sha256`` (hex) right before the file field. Algorithms we do not know are ignored, as
RFC 9530 asks.

The service computes, for every file, the SHA-256 of the whole file (returned, and kept as
metadata on single PUTs) and its CRC64NVME (sent to S3, which verifies the whole object against
it), plus the CRC64NVME of each part.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
from dataclasses import dataclass, field
from typing import Any

from awscrt import checksums

from common.errors import BadRequest

CONTENT_DIGEST = "Content-Digest"
SHA256_FIELD = "sha256"
# A dictionary member's key (RFC 8941), and a byte-sequence value with optional parameters.
_KEY_RE = re.compile(r"^[a-z*][a-z0-9_.*-]*\Z")
_BYTES_RE = re.compile(r"^:([A-Za-z0-9+/]*={0,2}):(?:;.*)?\Z")
_HEX_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}\Z")
# What each algorithm we verify is called in a Content-Digest header, and its digest length.
_KNOWN = {"sha-256": 32, "crc64nvme": 8}


class DigestMismatch(BadRequest):
    """The file's bytes do not match the digest the client stated."""

    code = "digest_mismatch"


@dataclass(frozen=True, slots=True)
class Stated:
    """Digests the client stated for one file (algorithm name -> raw digest)."""

    digests: dict[str, bytes] = field(default_factory=dict)

    def merge(self, other: Stated) -> Stated:
        """Both statements at once; the same algorithm stated twice must agree."""
        for name, value in other.digests.items():
            if self.digests.get(name, value) != value:
                raise BadRequest(
                    f"two different {name} digests were stated for one file",
                    code="invalid_digest",
                )
        return Stated({**self.digests, **other.digests})


def parse_content_digest(value: str) -> Stated:
    """A ``Content-Digest`` header's digests we know; 400 ``invalid_digest`` when malformed.

    Members of unknown algorithms are skipped whatever their value; parameters are ignored; the
    same algorithm twice with two different digests is refused (which one would be meant?).
    """
    found: dict[str, bytes] = {}
    for member in value.split(","):
        name, _, rest = member.strip().partition("=")
        if not _KEY_RE.match(name):
            raise BadRequest(
                f"{CONTENT_DIGEST} must be like sha-256=:<base64>: (RFC 9530)",
                code="invalid_digest",
            )
        if name not in _KNOWN:
            continue
        m = _BYTES_RE.match(rest.strip())
        digest = b""
        if m is not None:
            try:
                digest = base64.b64decode(m.group(1), validate=True)
            except binascii.Error:
                digest = b""
        if len(digest) != _KNOWN[name]:
            raise BadRequest(
                f"{CONTENT_DIGEST} {name} must be :<base64>: of {_KNOWN[name]} bytes",
                code="invalid_digest",
            )
        if found.get(name, digest) != digest:
            raise BadRequest(
                f"two different {name} digests were stated for one file", code="invalid_digest"
            )
        found[name] = digest
    return Stated(found)


def parse_sha256_field(value: str) -> Stated:
    """The ``sha256`` text field: 64 hex digits; 400 ``invalid_digest`` otherwise."""
    text = value.strip()
    if not _HEX_SHA256_RE.match(text):
        raise BadRequest(
            f"the {SHA256_FIELD!r} field must be 64 hex digits (a SHA-256)", code="invalid_digest"
        )
    return Stated({"sha-256": bytes.fromhex(text)})


class FileChecksums:
    """The whole-file SHA-256 and CRC64NVME, fed block by block, in order."""

    def __init__(self) -> None:
        self._sha256 = hashlib.sha256()
        self._crc = 0

    def add(self, block: io.BytesIO) -> int:
        """Feed a block; returns the block's own CRC64NVME (its part checksum)."""
        with block.getbuffer() as view:
            self._sha256.update(view)
            self._crc = checksums.crc64nvme(view, self._crc)
            part: int = checksums.crc64nvme(view)
        return part

    @property
    def sha256(self) -> bytes:
        """The SHA-256 of every byte fed so far."""
        return self._sha256.digest()

    @property
    def crc64nvme(self) -> bytes:
        """The CRC64NVME of every byte fed so far, as S3 writes it (8 bytes, big-endian)."""
        return crc_bytes(self._crc)

    def verify(self, stated: Stated) -> tuple[str, ...]:
        """The names of the stated digests, all matching; ``DigestMismatch`` otherwise."""
        mine = {"sha-256": self.sha256, "crc64nvme": self.crc64nvme}
        for name, digest in stated.digests.items():
            if mine[name] != digest:
                raise DigestMismatch(
                    f"the file's {name} is {b64(mine[name])}, not the stated {b64(digest)}; "
                    "nothing was stored"
                )
        return tuple(sorted(stated.digests))


def crc_bytes(crc: int) -> bytes:
    """A CRC64NVME as the 8 bytes S3 expects."""
    return crc.to_bytes(8, "big")


def b64(digest: bytes) -> str:
    """Base64, as S3's checksum headers and Content-Digest carry digests."""
    return base64.b64encode(digest).decode("ascii")


def checksum_fields(resp: Any) -> dict[str, str]:
    """What S3 reported of an object's checksum (absent when the backend reports none)."""
    out: dict[str, str] = {}
    if crc := resp.get("ChecksumCRC64NVME"):
        out["checksum_crc64nvme"] = str(crc)
    if kind := resp.get("ChecksumType"):
        out["checksum_type"] = str(kind)
    return out
