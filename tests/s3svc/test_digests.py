"""Digests a client states for a file (Content-Digest, or a sha256 field before it): a match is
reported as verified, a mismatch stores nothing and leaves nothing open, a malformed one is 400."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from awscrt import checksums

from common.errors import BadRequest
from s3svc.app import create_app
from s3svc.config import MIB, S3Settings
from s3svc.digests import Stated, parse_content_digest, parse_sha256_field
from tests.conftest import open_uploads, stored_keys

SIZES = pytest.mark.parametrize("size", [1000, 12 * MIB], ids=["put", "multipart"])


def sha256_header(data: bytes) -> str:
    """``Content-Digest`` with the SHA-256 of ``data``."""
    return f"sha-256=:{base64.b64encode(hashlib.sha256(data).digest()).decode()}:"


def crc_header(data: bytes) -> str:
    """``Content-Digest`` with the CRC64NVME of ``data`` (our extension)."""
    crc = checksums.crc64nvme(data).to_bytes(8, "big")
    return f"crc64nvme=:{base64.b64encode(crc).decode()}:"


def with_digest(data: bytes, digest: str, name: str = "f.bin") -> aiohttp.BytesPayload:
    """A form with one file part carrying a Content-Digest header (as curl's ``;headers=``
    sends it; aiohttp's FormData cannot set part headers)."""
    boundary = "digestB"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Digest: {digest}\r\nContent-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return aiohttp.BytesPayload(body, content_type=f"multipart/form-data; boundary={boundary}")


@pytest.fixture
async def client(
    aiohttp_client: Callable[..., Any], make_s3_settings: Callable[..., S3Settings]
) -> Any:
    """s3svc against moto."""
    return await aiohttp_client(create_app(make_s3_settings()))


@SIZES
@pytest.mark.parametrize("header", [sha256_header, crc_header], ids=["sha-256", "crc64nvme"])
async def test_a_matching_digest_is_reported_verified(
    client: Any, s3: Any, bucket: str, size: int, header: Callable[[bytes], str]
) -> None:
    data = os.urandom(size)
    resp = await client.post("/s3/upload", data=with_digest(data, header(data)))
    answer = await resp.json()
    assert resp.status == 201, answer
    (item,) = answer["files"]
    assert item["verified"] == [header(data).split("=")[0]]
    obj = await s3.get_object(Bucket=bucket, Key=item["key"])
    async with obj["Body"] as body:
        assert await body.read() == data


@SIZES
async def test_a_wrong_digest_stores_nothing(client: Any, s3: Any, bucket: str, size: int) -> None:
    data = os.urandom(size)
    resp = await client.post("/s3/upload", data=with_digest(data, sha256_header(b"other")))
    answer = await resp.json()
    assert (resp.status, answer["error"]) == (400, "digest_mismatch")
    assert await stored_keys(s3, bucket) == []
    assert await open_uploads(s3, bucket) == []


@SIZES
async def test_a_sha256_field_before_the_file_is_checked(
    client: Any, s3: Any, bucket: str, size: int
) -> None:
    """What a browser's FormData can send: a hex sha256 field right before its file."""
    data = os.urandom(size)
    good = aiohttp.FormData()
    good.add_field("sha256", hashlib.sha256(data).hexdigest())
    good.add_field("file", data, filename="a.bin")
    resp = await client.post("/s3/upload", data=good)
    assert resp.status == 201
    assert (await resp.json())["files"][0]["verified"] == ["sha-256"]
    bad = aiohttp.FormData()
    bad.add_field("sha256", hashlib.sha256(b"else").hexdigest())
    bad.add_field("file", data, filename="b.bin")
    resp = await client.post("/s3/upload", data=bad)
    assert (await resp.json())["error"] == "digest_mismatch"
    assert len(await stored_keys(s3, bucket)) == 1
    assert await open_uploads(s3, bucket) == []


@pytest.mark.parametrize(
    "value",
    ["sha-256=abc", "sha-256=:not base64!:", "sha-256=:AAAA:", "crc64nvme=:AAAA:", "=:AA==:"],
)
async def test_a_malformed_content_digest_is_400(
    client: Any, s3: Any, bucket: str, value: str
) -> None:
    resp = await client.post("/s3/upload", data=with_digest(b"data", value))
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_digest"
    assert await stored_keys(s3, bucket) == []


async def test_a_sha256_field_must_precede_a_file(client: Any, s3: Any, bucket: str) -> None:
    form = aiohttp.FormData()
    form.add_field("file", b"x", filename="a.bin")
    form.add_field("sha256", hashlib.sha256(b"x").hexdigest())
    resp = await client.post("/s3/upload", data=form)
    assert (resp.status, (await resp.json())["error"]) == (400, "invalid_digest")
    assert await stored_keys(s3, bucket) == []


async def test_a_sha256_field_sent_as_a_file_is_refused(client: Any, s3: Any, bucket: str) -> None:
    """``-F sha256=@file.sha256`` sends the digest as a file: 400, not an unchecked upload."""
    form = aiohttp.FormData()
    form.add_field("sha256", hashlib.sha256(b"x").hexdigest().encode(), filename="x.sha256")
    form.add_field("file", b"x", filename="a.bin")
    resp = await client.post("/s3/upload", data=form)
    answer = await resp.json()
    assert (resp.status, answer["error"]) == (400, "invalid_digest")
    assert "not a file" in answer["message"]
    assert await stored_keys(s3, bucket) == []


def test_unknown_algorithms_are_ignored_and_known_ones_parsed() -> None:
    """Unknown members are skipped whatever their value; parameters are ignored."""
    digest = hashlib.sha256(b"x").digest()
    b64 = base64.b64encode(digest).decode()
    value = f"md5=:AAAAAAAAAAAAAAAAAAAAAA==:, unixsum=123, sha-256=:{b64}:;note=1"
    assert parse_content_digest(value) == Stated({"sha-256": digest})
    assert parse_content_digest(f"sha-256=:{b64}:, sha-256=:{b64}:") == Stated({"sha-256": digest})


def test_one_algorithm_twice_with_two_digests_is_refused() -> None:
    one = base64.b64encode(hashlib.sha256(b"a").digest()).decode()
    other = base64.b64encode(hashlib.sha256(b"b").digest()).decode()
    with pytest.raises(BadRequest, match="two different"):
        parse_content_digest(f"sha-256=:{one}:, sha-256=:{other}:")


def test_two_different_statements_for_one_file_are_refused() -> None:
    one = parse_sha256_field(hashlib.sha256(b"a").hexdigest())
    other = parse_sha256_field(hashlib.sha256(b"b").hexdigest())
    assert one.merge(one) == one
    with pytest.raises(Exception, match="two different"):
        one.merge(other)
