"""s3svc under backend faults (injected by tests/faultproxy.py between the service and moto)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import aiohttp
import pytest

from s3svc.app import create_app
from s3svc.config import MIB, S3Settings
from tests.apidoc import assert_document_matches_routes
from tests.conftest import open_uploads, through
from tests.faultproxy import Call, Fault, fault_proxy

PART = 5 * MIB


def upload_form(data: bytes) -> aiohttp.FormData:
    """A one-file form."""
    form = aiohttp.FormData()
    form.add_field("file", data, filename="f.bin")
    return form


async def test_dead_backend_fails_fast_and_recovers(
    aiohttp_client: Callable[..., Any],
    make_s3_settings: Callable[..., S3Settings],
    moto_url: str,
    s3: Any,
    bucket: str,
) -> None:
    """Backend gone: after a few failures uploads get an immediate 503 and /ready is 503; when it
    returns, readiness and uploads recover by themselves."""
    async with fault_proxy(moto_url) as proxy:
        settings = through(
            make_s3_settings(), proxy.url, breaker_threshold=2, breaker_reset_seconds=1.0
        )
        client = await aiohttp_client(create_app(settings))
        assert (await client.get("/s3/ready")).status == 200
        proxy.rule = lambda call: Fault(reset=True)
        for _ in range(2):
            resp = await client.post("/s3/upload", data=upload_form(b"x"))
            assert resp.status == 503
        calls_before = len(proxy.calls)
        resp = await client.post("/s3/upload", data=upload_form(b"x"))
        assert resp.status == 503
        assert (await resp.json())["error"] == "backend_unavailable"
        assert int(resp.headers["Retry-After"]) >= 1
        assert len(proxy.calls) == calls_before  # failed fast: S3 was not even tried
        ready = await client.get("/s3/ready")
        assert ready.status == 503
        assert "circuit open" in (await ready.json())["message"]

        proxy.rule = None  # the backend is back
        for _ in range(50):
            if (await client.get("/s3/ready")).status == 200:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("/ready did not recover")
        resp = await client.post("/s3/upload", data=upload_form(b"back"))
        assert resp.status == 201
    assert await open_uploads(s3, bucket) == []


async def test_stalled_backend_ends_within_timeout(
    aiohttp_client: Callable[..., Any],
    make_s3_settings: Callable[..., S3Settings],
    moto_url: str,
    s3: Any,
    bucket: str,
) -> None:
    """A backend that never answers: the upload ends with a JSON 503 (read timeout), no hang."""
    async with fault_proxy(moto_url, lambda call: Fault(stall=True)) as proxy:
        settings = through(make_s3_settings(), proxy.url, read_timeout=1.0, max_attempts=1)
        client = await aiohttp_client(create_app(settings))
        # A hang guard, not a speed target: the request must end on its own.
        resp = await asyncio.wait_for(client.post("/s3/upload", data=upload_form(b"x")), 60)
        assert resp.status == 503
        assert (await resp.json())["error"] == "backend_unavailable"


async def test_twenty_percent_failing_calls(
    aiohttp_client: Callable[..., Any],
    make_s3_settings: Callable[..., S3Settings],
    moto_url: str,
    s3: Any,
    bucket: str,
) -> None:
    """With 20 % of AWS calls failing (503/throttling): each upload is 201 and intact, or a JSON
    5xx and absent; nothing is left open."""
    rng = random.Random(7)

    def flaky(call: Call) -> Fault | None:
        if call.s3_operation == "AbortMultipartUpload" or rng.random() >= 0.2:
            return None
        return Fault(status=503, code="SlowDown") if rng.random() < 0.5 else Fault(status=500)

    async with fault_proxy(moto_url, flaky) as proxy:
        settings = through(make_s3_settings(), proxy.url, breaker_threshold=0)
        client = await aiohttp_client(create_app(settings))
        payloads = [os.urandom(n) for n in (10, 1000, 2 * PART + 5, PART + 1, 3 * PART)]
        results = await asyncio.gather(
            *(client.post("/s3/upload", data=upload_form(p)) for p in payloads)
        )
        ok = 0
        for data, resp in zip(payloads, results, strict=True):
            body = await resp.json()
            if resp.status == 201:
                ok += 1
                (item,) = body["files"]
                obj = await s3.get_object(Bucket=bucket, Key=item["key"])
                async with obj["Body"] as stream:
                    assert (
                        hashlib.sha256(await stream.read()).hexdigest()
                        == hashlib.sha256(data).hexdigest()
                    )
            else:
                assert resp.status in (502, 503), body
                assert body["error"] in ("backend_unavailable", "backend_error")
        assert ok >= 1  # retries carry most uploads through
        assert any(c.s3_operation == "UploadPart" for c in proxy.calls)
    listed = await s3.list_objects_v2(Bucket=bucket)
    assert listed.get("KeyCount", 0) == ok
    assert await open_uploads(s3, bucket) == []


@pytest.mark.parametrize("page", [True, False])
@pytest.mark.parametrize("with_keys", [False, True])
async def test_openapi_matches_routes(
    aiohttp_client: Callable[..., Any],
    make_s3_settings: Callable[..., S3Settings],
    with_keys: bool,
    page: bool,
) -> None:
    """Every route is in the document and every documented operation is a route, the upload
    page's (UPLOAD_PAGE) included."""
    settings = make_s3_settings(upload_page=page)
    if with_keys:
        settings = replace(settings, common=replace(settings.common, api_keys_sha256=("0" * 64,)))
    app = create_app(settings)
    client = await aiohttp_client(app)
    doc = await (await client.get("/s3/openapi.json")).json()
    assert_document_matches_routes(app, doc)
    assert ("security" in doc) is with_keys
    assert ("/s3/" in doc["paths"]) is page


def test_openapi_document_is_valid_3_1(make_s3_settings: Callable[..., S3Settings]) -> None:
    """The document validates against the OpenAPI 3.1 schema."""
    from openapi_spec_validator import validate

    from s3svc.openapi import spec

    validate(spec(make_s3_settings()))
