"""Idempotency-Key on /s3/upload: a retry names the same objects and stores nothing twice."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import aiohttp
import pytest

from s3svc.app import IDEMPOTENCY_CLAIMS, create_app
from s3svc.config import MIB, S3Settings
from tests.conftest import eventually, open_uploads, stored_keys

KEY = "order-4711:attempt"


def form(*files: tuple[str, bytes]) -> aiohttp.FormData:
    """One ``file`` field per (filename, data)."""
    data = aiohttp.FormData()
    for name, content in files:
        data.add_field("file", content, filename=name, content_type="application/octet-stream")
    return data


async def read_object(s3: Any, bucket: str, key: str) -> bytes:
    """The bytes stored under ``key``."""
    obj = await s3.get_object(Bucket=bucket, Key=key)
    async with obj["Body"] as body:
        data: bytes = await body.read()
    return data


@pytest.mark.parametrize("size", [1000, 12 * MIB], ids=["put", "multipart"])
async def test_a_replay_names_the_stored_objects_and_stores_nothing(
    aiohttp_client: Callable[..., Any],
    make_s3_settings: Callable[..., S3Settings],
    s3: Any,
    bucket: str,
    size: int,
) -> None:
    """The same request twice with one key: 201, then 200 naming the same objects (marked
    ``replayed``); the bucket holds each file once and nothing is left open."""
    client = await aiohttp_client(create_app(make_s3_settings()))
    first_data, second_data = os.urandom(size), os.urandom(100)
    headers = {"Idempotency-Key": KEY}
    first = await client.post(
        "/s3/upload", data=form(("a.bin", first_data), ("b.bin", second_data)), headers=headers
    )
    assert first.status == 201, await first.text()
    stored = (await first.json())["files"]
    again = await client.post(
        "/s3/upload", data=form(("a.bin", first_data), ("b.bin", second_data)), headers=headers
    )
    assert again.status == 200, await again.text()
    replayed = (await again.json())["files"]
    assert [f["key"] for f in replayed] == [f["key"] for f in stored]
    assert all(f["replayed"] for f in replayed)
    assert sorted(await stored_keys(s3, bucket)) == sorted(f["key"] for f in stored)
    versions = await s3.list_object_versions(Bucket=bucket)
    assert len(versions.get("Versions", [])) == 2
    assert await open_uploads(s3, bucket) == []
    assert await read_object(s3, bucket, stored[0]["key"]) == first_data


async def test_changed_content_under_a_used_key_stores_nothing(
    aiohttp_client: Callable[..., Any],
    make_s3_settings: Callable[..., S3Settings],
    s3: Any,
    bucket: str,
) -> None:
    """A reused key with other bytes: the stored object keeps the first request's bytes (the
    task role may not read objects, so the answer is a replay naming what is stored)."""
    client = await aiohttp_client(create_app(make_s3_settings()))
    headers = {"Idempotency-Key": KEY}
    first = await client.post("/s3/upload", data=form(("a.txt", b"first")), headers=headers)
    assert first.status == 201
    key = (await first.json())["files"][0]["key"]
    second = await client.post("/s3/upload", data=form(("a.txt", b"changed")), headers=headers)
    assert second.status == 200
    assert (await second.json())["files"][0]["key"] == key
    assert await read_object(s3, bucket, key) == b"first"
    assert await stored_keys(s3, bucket) == [key]


async def test_a_concurrent_duplicate_is_409_and_the_first_completes(
    aiohttp_client: Callable[..., Any],
    make_s3_settings: Callable[..., S3Settings],
    s3: Any,
    bucket: str,
) -> None:
    """While a request with a key is still streaming, another with the same key is refused
    (409 ``idempotency_conflict``); the first then completes."""
    app = create_app(make_s3_settings())
    client = await aiohttp_client(app)
    release = asyncio.Event()
    boundary = "dupB"

    async def body() -> AsyncIterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\n'
        ).encode() + b"x" * 100_000
        await release.wait()
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {
        "Idempotency-Key": KEY,
        "Content-Type": f"multipart/form-data; boundary={boundary}",
    }
    first = asyncio.create_task(client.post("/s3/upload", data=body(), headers=headers))
    await eventually(lambda: bool(app[IDEMPOTENCY_CLAIMS]))  # the first request holds the key
    dup = await client.post("/s3/upload", data=form(("a.txt", b"y")), headers=headers)
    assert dup.status == 409
    assert (await dup.json())["error"] == "idempotency_conflict"
    release.set()
    done = await first
    assert done.status == 201, await done.text()
    key = (await done.json())["files"][0]["key"]
    assert await stored_keys(s3, bucket) == [key]
    assert (
        hashlib.sha256(await read_object(s3, bucket, key)).digest()
        == hashlib.sha256(b"x" * 100_000).digest()
    )


async def test_keys_are_scoped_per_api_key(
    aiohttp_client: Callable[..., Any],
    make_s3_settings: Callable[..., S3Settings],
    s3: Any,
    bucket: str,
) -> None:
    """Two callers using the same Idempotency-Key store two objects, one each."""
    keys = ("alpha-key", "beta-key")
    settings = make_s3_settings()
    digests = tuple(hashlib.sha256(k.encode()).hexdigest() for k in keys)
    settings = replace(settings, common=replace(settings.common, api_keys_sha256=digests))
    client = await aiohttp_client(create_app(settings))
    answers = []
    for api_key in keys:
        resp = await client.post(
            "/s3/upload",
            data=form(("a.txt", api_key.encode())),
            headers={"Idempotency-Key": KEY, "X-Api-Key": api_key},
        )
        assert resp.status == 201
        answers.append((await resp.json())["files"][0]["key"])
    assert len(set(answers)) == 2
    assert sorted(await stored_keys(s3, bucket)) == sorted(answers)


@pytest.mark.parametrize("bad", ["", "x" * 256, "tab\there", "ünïcode"])
async def test_a_malformed_key_is_400(
    aiohttp_client: Callable[..., Any],
    make_s3_settings: Callable[..., S3Settings],
    s3: Any,
    bucket: str,
    bad: str,
) -> None:
    """Keys are 1-255 printable ASCII characters; anything else is refused before reading."""
    client = await aiohttp_client(create_app(make_s3_settings()))
    resp = await client.post(
        "/s3/upload", data=form(("a.txt", b"x")), headers={"Idempotency-Key": bad}
    )
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_idempotency_key"
    assert await stored_keys(s3, bucket) == []
