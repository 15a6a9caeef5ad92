"""Integrity against LocalStack, which checks what it is sent: stored bytes, stored checksums, and
a byte corrupted on the way to S3 refused with nothing stored and nothing left open.

moto verifies no checksum at all, so these are the only tests in which a wrong byte can fail.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from awscrt import checksums
from botocore.exceptions import ClientError

from common.aws import open_client
from common.config import AwsSettings
from s3svc.app import create_app
from s3svc.config import MIB, S3Settings
from tests.conftest import open_uploads, stored_keys, through
from tests.faultproxy import Call, Fault, Rule, fault_proxy

PART = 5 * MIB  # make_s3_settings' part size
SIZES = {"single-put": 1000, "multipart": 12 * MIB}  # 12 MiB: parts of 5, 5 and 2 MiB

Client = TestClient[Any, Any]


def form(name: str, data: bytes) -> aiohttp.FormData:
    """multipart/form-data with one ``file`` field."""
    out = aiohttp.FormData()
    out.add_field("file", data, filename=name, content_type="application/octet-stream")
    return out


def crc64nvme(data: bytes) -> str:
    """The base64 CRC64NVME of ``data`` as S3 reports it (big-endian), computed here by awscrt."""
    return base64.b64encode(checksums.crc64nvme(data).to_bytes(8, "big")).decode()


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
async def test_upload_is_stored_byte_for_byte_with_the_files_full_object_crc(
    aiohttp_client: Callable[..., Any],
    make_s3_settings: Callable[..., S3Settings],
    s3: Any,
    bucket: str,
    size: int,
) -> None:
    """The object holds exactly the bytes sent, and the whole-object CRC64NVME that LocalStack
    computed and stored for it (for the multipart size, over parts it verified one by one) is the
    file's, as the answer reports."""
    client: Client = await aiohttp_client(create_app(make_s3_settings()))
    data = os.urandom(size)
    resp = await client.post("/s3/upload", data=form("f.bin", data))
    assert resp.status == 201, await resp.text()
    (item,) = (await resp.json())["files"]
    assert item["size"] == size
    assert item["sha256"] == hashlib.sha256(data).hexdigest()
    obj = await s3.get_object(Bucket=bucket, Key=item["key"])
    async with obj["Body"] as body:
        assert await body.read() == data
    head = await s3.head_object(Bucket=bucket, Key=item["key"], ChecksumMode="ENABLED")
    assert head["ChecksumType"] == "FULL_OBJECT"
    assert head["ChecksumCRC64NVME"] == crc64nvme(data)
    assert item["checksum_crc64nvme"] == crc64nvme(data)
    assert item["checksum_type"] == "FULL_OBJECT"
    assert await open_uploads(s3, bucket) == []


def corrupting(operation: str) -> Rule:
    """A proxy rule flipping one byte of the body of ``operation`` (of part 2 for UploadPart)."""

    def rule(call: Call) -> Fault | None:
        if call.s3_operation != operation:
            return None
        if operation == "UploadPart" and call.part_number != 2:
            return None
        return Fault(corrupt=True)

    return rule


CORRUPTED = {
    "single-put": ("PutObject", SIZES["single-put"]),
    "part": ("UploadPart", SIZES["multipart"]),
}


@pytest.mark.parametrize(("operation", "size"), CORRUPTED.values(), ids=CORRUPTED.keys())
async def test_a_byte_corrupted_on_the_way_is_refused_and_nothing_is_stored(
    aiohttp_client: Callable[..., Any],
    make_s3_settings: Callable[..., S3Settings],
    localstack_url: str,
    s3: Any,
    bucket: str,
    operation: str,
    size: int,
) -> None:
    """One flipped byte in the PutObject or in part 2 of the upload: LocalStack refuses it
    (BadDigest), the service answers 502 backend_error naming it, and the bucket holds no object
    and no open upload."""
    async with fault_proxy(localstack_url, corrupting(operation)) as proxy:
        client: Client = await aiohttp_client(create_app(through(make_s3_settings(), proxy.url)))
        resp = await client.post("/s3/upload", data=form("f.bin", os.urandom(size)))
        body = await resp.json()
        assert resp.status == 502, body
        assert body["error"] == "backend_error"
        assert "BadDigest" in body["message"]
        assert body["request_id"] == resp.headers["X-Request-ID"]
        ops = [c.s3_operation for c in proxy.calls]
        assert operation in ops
        assert "CompleteMultipartUpload" not in ops
        if operation == "UploadPart":
            assert "AbortMultipartUpload" in ops
    assert await stored_keys(s3, bucket) == []
    assert await open_uploads(s3, bucket) == []


async def test_localstack_itself_refuses_a_put_whose_body_does_not_match_its_checksum(
    aws_settings: AwsSettings, localstack_url: str, s3: Any, bucket: str
) -> None:
    """The backend property the service relies on, with a plain client: a PutObject body
    corrupted after its SHA-256 was stated is refused with BadDigest (moto stores it), while the
    same call through the same proxy uncorrupted is stored. (The service states CRC64NVME, tested
    above: LocalStack checks either.)"""
    data = os.urandom(SIZES["single-put"])
    async with (
        fault_proxy(localstack_url) as proxy,
        open_client("s3", replace(aws_settings, endpoint_url=proxy.url)) as client,
    ):
        await client.put_object(Bucket=bucket, Key="clean", Body=data, ChecksumSHA256=sha(data))
        proxy.rule = corrupting("PutObject")
        with pytest.raises(ClientError) as refused:
            await client.put_object(Bucket=bucket, Key="bad", Body=data, ChecksumSHA256=sha(data))
    assert refused.value.response["Error"]["Code"] == "BadDigest"
    assert await stored_keys(s3, bucket) == ["clean"]


async def test_localstack_itself_refuses_a_part_whose_body_does_not_match_its_checksum(
    aws_settings: AwsSettings, localstack_url: str, s3: Any, bucket: str
) -> None:
    """The same for an UploadPart: refused with BadDigest, so the part is not in the upload."""
    data = os.urandom(PART)
    async with (
        fault_proxy(localstack_url, corrupting("UploadPart")) as proxy,
        open_client("s3", replace(aws_settings, endpoint_url=proxy.url)) as client,
    ):
        up = await client.create_multipart_upload(
            Bucket=bucket, Key="k", ChecksumAlgorithm="SHA256"
        )
        part = {"Bucket": bucket, "Key": "k", "UploadId": up["UploadId"], "PartNumber": 2}
        try:
            with pytest.raises(ClientError) as refused:
                await client.upload_part(
                    **part, Body=data, ChecksumAlgorithm="SHA256", ChecksumSHA256=sha(data)
                )
            listed = await client.list_parts(Bucket=bucket, Key="k", UploadId=up["UploadId"])
        finally:
            await client.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=up["UploadId"])
    assert refused.value.response["Error"]["Code"] == "BadDigest"
    assert listed.get("Parts", []) == []


def sha(data: bytes) -> str:
    """The base64 SHA-256 S3 takes as ``ChecksumSHA256``."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode()
