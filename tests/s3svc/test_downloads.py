"""Download links (``DOWNLOAD_URL_SECONDS``): the way back to a stored file.

moto does not enforce a presigned URL's expiry (nor does any emulator this suite runs), so expiry
is checked as what the link carries (``X-Amz-Expires``, SigV4) and what the answer states.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from s3svc.app import create_app
from s3svc.config import MIB, S3Settings
from tests.s3svc.test_upload import form


async def upload(aiohttp_client: Callable[..., Any], settings: S3Settings, data: bytes) -> Any:
    """POST one file to an s3svc built with ``settings``; the stored file's JSON."""
    client = await aiohttp_client(create_app(settings))
    resp = await client.post("/s3/upload", data=form(("a.bin", data, "application/octet-stream")))
    assert resp.status == 201, await resp.text()
    (item,) = (await resp.json())["files"]
    return item


@pytest.mark.parametrize("size", [1000, 6 * MIB], ids=["single-put", "multipart"])
async def test_link_returns_the_stored_bytes_and_carries_the_expiry(
    aiohttp_client: Callable[..., Any], make_s3_settings: Callable[..., S3Settings], size: int
) -> None:
    """Fetching the link gives back the file; it is SigV4 with the configured lifetime, and the
    answer says when it ends."""
    data = os.urandom(size)
    before = datetime.now(UTC).replace(microsecond=0)
    item = await upload(aiohttp_client, make_s3_settings(download_url_seconds=900), data)
    query = parse_qs(urlsplit(item["download_url"]).query)
    assert query["X-Amz-Expires"] == ["900"]
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    expires = datetime.fromisoformat(item["download_url_expires_at"])
    assert before + timedelta(seconds=900) <= expires <= datetime.now(UTC) + timedelta(seconds=900)
    async with aiohttp.ClientSession() as http, http.get(item["download_url"]) as got:
        assert got.status == 200
        assert await got.read() == data
        # Saved, not rendered, under the name it was uploaded with.
        assert got.headers["Content-Disposition"] == "attachment; filename*=UTF-8''a.bin"


async def test_link_on_a_versioned_bucket_names_no_version(
    aiohttp_client: Callable[..., Any],
    make_s3_settings: Callable[..., S3Settings],
    s3: Any,
    bucket: str,
) -> None:
    """The production bucket is versioned: the link still names no version (a versioned GET
    would need s3:GetObjectVersion too), and returns the stored bytes."""
    await s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    item = await upload(aiohttp_client, make_s3_settings(download_url_seconds=60), b"v" * 100)
    assert "version_id" in item
    assert "versionId" not in parse_qs(urlsplit(item["download_url"]).query)
    async with aiohttp.ClientSession() as http, http.get(item["download_url"]) as got:
        assert await got.read() == b"v" * 100


async def test_links_are_off_by_default(
    aiohttp_client: Callable[..., Any], make_s3_settings: Callable[..., S3Settings]
) -> None:
    """Without DOWNLOAD_URL_SECONDS the answer has no link."""
    item = await upload(aiohttp_client, make_s3_settings(), b"x" * 10)
    assert "download_url" not in item
    assert "download_url_expires_at" not in item
    assert S3Settings.from_env({}).download_url_seconds == 0


async def test_link_endpoint_is_where_the_user_reaches_s3(
    aiohttp_client: Callable[..., Any], make_s3_settings: Callable[..., S3Settings]
) -> None:
    """DOWNLOAD_URL_ENDPOINT names the host in the link (compose: the host's view of moto)."""
    settings = make_s3_settings(
        download_url_seconds=60, download_url_endpoint="http://localhost:5999"
    )
    item = await upload(aiohttp_client, settings, b"y" * 10)
    assert item["download_url"].startswith("http://localhost:5999/")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DOWNLOAD_URL_SECONDS", "-1"),
        ("DOWNLOAD_URL_SECONDS", "604801"),  # beyond SigV4's 7 days
        ("DOWNLOAD_URL_SECONDS", "soon"),
        ("DOWNLOAD_URL_ENDPOINT", "s3.example.com"),
        ("DOWNLOAD_URL_ENDPOINT", "ftp://x"),
        ("DOWNLOAD_URL_ENDPOINT", "http://"),
    ],
)
def test_bad_link_settings_stop_the_start(name: str, value: str) -> None:
    """Refused at start with a message naming the variable, never a traceback per request."""
    from common.config import ConfigError

    with pytest.raises(ConfigError, match=name):
        S3Settings.from_env({name: value})


async def test_a_replays_link_names_the_stored_file_not_the_retrys(
    aiohttp_client: Callable[..., Any], make_s3_settings: Callable[..., S3Settings]
) -> None:
    """A retry with the same Idempotency-Key but another file and name is a replay: its link
    gives the stored bytes under the name they were stored with (S3's metadata), not the
    retry's (a new user's find: the retry's name over the first request's bytes)."""
    client = await aiohttp_client(create_app(make_s3_settings(download_url_seconds=900)))
    first, retry = os.urandom(1000), b"something else"
    headers = {"Idempotency-Key": "replay-link-1"}
    resp = await client.post(
        "/s3/upload", data=form(("stored é.bin", first, "text/plain")), headers=headers
    )
    assert resp.status == 201, await resp.text()
    resp = await client.post(
        "/s3/upload", data=form(("innocent.txt", retry, "text/plain")), headers=headers
    )
    assert resp.status == 200, await resp.text()
    (item,) = (await resp.json())["files"]
    assert item["replayed"] is True
    async with aiohttp.ClientSession() as http, http.get(item["download_url"]) as got:
        assert got.status == 200
        assert await got.read() == first
        assert got.headers["Content-Disposition"] == (
            "attachment; filename*=UTF-8''stored%20%C3%A9.bin"
        )
