"""POST /s3/upload against a real moto server: stored bytes, hashes, keys, limits and errors."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import unquote

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from awscrt import checksums

from s3svc.app import UPLOADER, create_app
from s3svc.config import MIB, S3Settings
from tests.conftest import open_uploads, stored_keys, through
from tests.faultproxy import fault_proxy

PART = 5 * MIB

Client = TestClient[Any, Any]


@pytest.fixture
async def client(
    aiohttp_client: Callable[..., Any], make_s3_settings: Callable[..., S3Settings]
) -> Client:
    """s3svc built by its real factory, on a real socket, talking to moto."""
    c: Client = await aiohttp_client(create_app(make_s3_settings()))
    return c


def form(*files: tuple[str, bytes, str]) -> aiohttp.FormData:
    """multipart/form-data with one ``file`` field per (filename, data, content type)."""
    data = aiohttp.FormData()
    for name, content, ctype in files:
        data.add_field("file", content, filename=name, content_type=ctype)
    return data


async def assert_stored(s3: Any, item: dict[str, Any], data: bytes) -> None:
    """The object holds exactly ``data`` and the response's SHA-256 matches it."""
    sha = hashlib.sha256(data).hexdigest()
    assert item["sha256"] == sha
    assert item["size"] == len(data)
    obj = await s3.get_object(Bucket=item["bucket"], Key=item["key"])
    async with obj["Body"] as body:
        stored = await body.read()
    assert hashlib.sha256(stored).hexdigest() == sha
    # Metadata is fixed when an upload starts, so only a single PUT can carry the whole-file hash;
    # a multipart object carries S3's composite per-part SHA-256 instead.
    if "-" not in item["etag"]:
        assert obj["Metadata"]["sha256"] == sha


@pytest.mark.parametrize(
    "size",
    [1, PART - 1, PART, PART + 1, 3 * PART + 12345],
    ids=["1B", "part-1", "part", "part+1", "3.x-parts"],
)
async def test_upload_sizes_store_exact_bytes(
    client: Client, s3: Any, bucket: str, size: int
) -> None:
    """Every size around the part boundary is stored byte for byte; multipart only above one part."""
    data = os.urandom(size)
    resp = await client.post(
        "/s3/upload", data=form(("blob.bin", data, "application/octet-stream"))
    )
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert body["request_id"] == resp.headers["X-Request-ID"]
    (item,) = body["files"]
    assert item["bucket"] == bucket
    assert item["content_type"] == "application/octet-stream"
    await assert_stored(s3, item, data)
    # A multipart ETag ends in -<parts>; a single PUT's does not.
    if size > PART:
        assert item["etag"].endswith(f"-{-(-size // PART)}")
    else:
        assert "-" not in item["etag"]
    assert await open_uploads(s3, bucket) == []


@pytest.mark.parametrize("size", [1000, 2 * PART + 10], ids=["put", "multipart"])
async def test_s3_is_asked_to_verify_every_part_and_the_whole_object(
    aiohttp_client: Callable[..., Any],
    make_s3_settings: Callable[..., S3Settings],
    moto_url: str,
    size: int,
) -> None:
    """Every PUT and part carries its CRC64NVME; a multipart upload is created and completed as
    a full-object CRC64NVME with the file's own. (moto checks none of it; tests/localstack
    proves S3 refuses a mismatch.)"""
    data = os.urandom(size)
    async with fault_proxy(moto_url) as proxy:
        client = await aiohttp_client(create_app(through(make_s3_settings(), proxy.url)))
        resp = await client.post(
            "/s3/upload", data=form(("c.bin", data, "application/octet-stream"))
        )
        assert resp.status == 201
    sent = {c.s3_operation: c.amz for c in proxy.calls}
    crc = crc64nvme_b64(data)
    if size < PART:
        assert sent["PutObject"]["x-amz-checksum-crc64nvme"] == crc
        return
    assert sent["CreateMultipartUpload"]["x-amz-checksum-algorithm"] == "CRC64NVME"
    assert sent["CreateMultipartUpload"]["x-amz-checksum-type"] == "FULL_OBJECT"
    parts = [c for c in proxy.calls if c.s3_operation == "UploadPart"]
    assert sorted(c.amz["x-amz-checksum-crc64nvme"] for c in parts) == sorted(
        crc64nvme_b64(data[i : i + PART]) for i in range(0, size, PART)
    )
    assert sent["CompleteMultipartUpload"]["x-amz-checksum-crc64nvme"] == crc
    assert sent["CompleteMultipartUpload"]["x-amz-checksum-type"] == "FULL_OBJECT"


def crc64nvme_b64(data: bytes) -> str:
    """The CRC64NVME of ``data`` as S3's headers carry it."""
    return base64.b64encode(checksums.crc64nvme(data).to_bytes(8, "big")).decode()


async def test_zero_byte_file_is_rejected(client: Client, s3: Any, bucket: str) -> None:
    """An empty file is a 400 and stores nothing."""
    resp = await client.post("/s3/upload", data=form(("empty.txt", b"", "text/plain")))
    assert resp.status == 400
    body = await resp.json()
    assert body["error"] == "empty_file"
    assert (await s3.list_objects_v2(Bucket=bucket)).get("KeyCount") == 0


async def test_several_files_in_one_request(client: Client, s3: Any) -> None:
    """Each file field becomes its own object, in request order."""
    files = [("a.txt", b"alpha", "text/plain"), ("b.bin", os.urandom(PART + 7), "image/png")]
    resp = await client.post("/s3/upload", data=form(*files))
    assert resp.status == 201
    items = (await resp.json())["files"]
    assert [i["filename"] for i in items] == ["a.txt", "b.bin"]
    assert items[1]["content_type"] == "image/png"
    for item, (_, data, _) in zip(items, files, strict=True):
        await assert_stored(s3, item, data)
    head = await s3.head_object(Bucket=items[1]["bucket"], Key=items[1]["key"])
    assert head["ContentType"] == "image/png"


async def test_non_ascii_filename_is_folded_and_kept_in_metadata(client: Client, s3: Any) -> None:
    """The key gets an ASCII name; the original survives, percent-encoded, in metadata."""
    name = "résumé 📄.txt"
    resp = await client.post("/s3/upload", data=form((name, b"cv", "text/plain")))
    assert resp.status == 201
    (item,) = (await resp.json())["files"]
    assert item["key"].endswith("/resume_.txt")
    assert item["key"].isascii()
    head = await s3.head_object(Bucket=item["bucket"], Key=item["key"])
    assert unquote(head["Metadata"]["original-filename"]) == name


async def test_latin1_filename_bytes_are_stored_not_a_500(
    client: Client, s3: Any, bucket: str
) -> None:
    """curl sends a filename's bytes as the file system has them: ``caf\\xe9.txt`` (Latin-1)
    is not UTF-8. It reads as ISO-8859-1; lone surrogates made the S3 call fail with a 500
    after the request's first file was already stored."""
    b = "latin1B"
    body = b"".join(
        f"--{b}\r\nContent-Disposition: form-data; name=file; filename=".encode()
        + name
        + b"\r\n\r\n"
        + data
        + b"\r\n"
        for name, data in [(b'"ok.txt"', b"first"), (b'"caf\xe9.txt"', b"second")]
    )
    resp = await client.post(
        "/s3/upload",
        data=body + f"--{b}--\r\n".encode(),
        headers={"Content-Type": f"multipart/form-data; boundary={b}"},
    )
    assert resp.status == 201, await resp.text()
    first, second = (await resp.json())["files"]
    assert second["filename"] == "café.txt"
    assert second["key"].endswith("/cafe.txt")
    await assert_stored(s3, first, b"first")
    await assert_stored(s3, second, b"second")
    head = await s3.head_object(Bucket=bucket, Key=second["key"])
    assert unquote(head["Metadata"]["original-filename"]) == "café.txt"


async def test_path_traversal_filename_never_shapes_the_key(client: Client, s3: Any) -> None:
    """``../../etc/passwd`` is reduced to its last segment under the server's own prefix."""
    resp = await client.post("/s3/upload", data=form(("../../etc/passwd", b"root:x", "text/plain")))
    assert resp.status == 201
    (item,) = (await resp.json())["files"]
    key = item["key"]
    assert key.startswith("uploads/")
    assert ".." not in key
    assert "/etc/" not in key
    assert key.endswith("/passwd")
    await assert_stored(s3, item, b"root:x")


@pytest.mark.parametrize(
    ("field", "hint"),
    [
        ("note", "file=@"),  # no file field at all: say how to send one
        ("file", "'file' field had no filename"),  # curl -F file=text (no @): say what happened
    ],
)
async def test_missing_file_field(client: Client, field: str, hint: str) -> None:
    """A form without a file in a ``file`` field is a 400 that says how to send one."""
    data = aiohttp.FormData(default_to_multipart=True)
    data.add_field(field, "hello")
    resp = await client.post("/s3/upload", data=data)
    assert resp.status == 400
    body = await resp.json()
    assert body["error"] == "missing_file"
    assert hint in body["message"]


async def test_not_multipart_is_415(client: Client) -> None:
    """A JSON body is the wrong media type."""
    resp = await client.post("/s3/upload", json={"file": "x"})
    assert resp.status == 415
    assert (await resp.json())["error"] == "unsupported_media_type"


async def test_multipart_without_boundary_is_400(client: Client) -> None:
    """A multipart Content-Type with no boundary is malformed."""
    resp = await client.post(
        "/s3/upload", data=b"xx", headers={"Content-Type": "multipart/form-data"}
    )
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["error"] == "malformed_multipart"


async def test_unterminated_multipart_is_400_and_stores_nothing(
    client: Client, s3: Any, bucket: str
) -> None:
    """A body cut off before its closing boundary is rejected, leaving nothing behind."""
    body = (
        b"--XyZ\r\n"
        b'Content-Disposition: form-data; name="file"; filename="t.bin"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + b"a" * 1000
    )
    resp = await client.post(
        "/s3/upload", data=body, headers={"Content-Type": "multipart/form-data; boundary=XyZ"}
    )
    assert resp.status == 400
    assert (await resp.json())["error"] == "malformed_multipart"
    assert (await s3.list_objects_v2(Bucket=bucket)).get("KeyCount") == 0
    assert await open_uploads(s3, bucket) == []


async def test_too_many_files(
    aiohttp_client: Callable[..., Any],
    make_s3_settings: Callable[..., S3Settings],
    s3: Any,
    bucket: str,
) -> None:
    """More files than MAX_FILES is a 400, and none of the request's files is stored."""
    client = await aiohttp_client(create_app(make_s3_settings(max_files=2)))
    files = [(f"{i}.txt", b"x", "text/plain") for i in range(3)]
    resp = await client.post("/s3/upload", data=form(*files))
    assert resp.status == 400
    body = await resp.json()
    assert body["error"] == "too_many_files"
    assert "stored" not in body
    assert await stored_keys(s3, bucket) == []


async def test_content_type_allow_list(
    aiohttp_client: Callable[..., Any], make_s3_settings: Callable[..., S3Settings]
) -> None:
    """Only allowed media types (``image/*`` style patterns too) are accepted."""
    app = create_app(make_s3_settings(allowed_content_types=("image/*", "application/pdf")))
    client = await aiohttp_client(app)
    ok = await client.post("/s3/upload", data=form(("p.png", b"png", "image/png")))
    assert ok.status == 201
    bad = await client.post("/s3/upload", data=form(("x.sh", b"#!", "text/x-shellscript")))
    assert bad.status == 415
    assert (await bad.json())["error"] == "content_type_not_allowed"


async def test_declared_length_over_limit_is_413_before_reading(
    aiohttp_client: Callable[..., Any], make_s3_settings: Callable[..., S3Settings]
) -> None:
    """A Content-Length already over MAX_UPLOAD_BYTES is refused up front."""
    client = await aiohttp_client(create_app(make_s3_settings(max_upload_bytes=1000, max_files=1)))
    resp = await client.post("/s3/upload", data=form(("big.bin", b"z" * 100_000, "text/plain")))
    assert resp.status == 413
    assert (await resp.json())["error"] == "upload_too_large"


async def test_streamed_body_over_limit_aborts_upload(
    aiohttp_client: Callable[..., Any],
    make_s3_settings: Callable[..., S3Settings],
    s3: Any,
    bucket: str,
) -> None:
    """Without Content-Length the limit is enforced while streaming, and the upload aborted."""
    client = await aiohttp_client(create_app(make_s3_settings(max_upload_bytes=2 * PART)))

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3 * PART // MIB):
            yield b"q" * MIB

    writer = aiohttp.MultipartWriter("form-data")
    payload = writer.append(chunks(), {"Content-Type": "application/octet-stream"})
    payload.set_content_disposition("form-data", name="file", filename="huge.bin")
    resp = await client.post("/s3/upload", data=writer)
    assert resp.status == 413
    assert (await resp.json())["error"] == "upload_too_large"
    assert await open_uploads(s3, bucket) == []
    assert (await s3.list_objects_v2(Bucket=bucket)).get("KeyCount") == 0


async def test_other_form_fields_are_skipped(client: Client, s3: Any) -> None:
    """Non-file fields next to the file do not become objects."""
    data = form(("f.txt", b"payload", "text/plain"))
    data.add_field("description", "a note")
    resp = await client.post("/s3/upload", data=data)
    assert resp.status == 201
    assert len((await resp.json())["files"]) == 1


async def test_sse_setting_reaches_s3(
    aiohttp_client: Callable[..., Any], make_s3_settings: Callable[..., S3Settings], s3: Any
) -> None:
    """With S3_SSE=AES256, both single and multipart objects are encrypted at rest."""
    client = await aiohttp_client(create_app(make_s3_settings(sse="AES256")))
    for size in (10, PART + 1):
        resp = await client.post("/s3/upload", data=form(("e.bin", os.urandom(size), "text/plain")))
        (item,) = (await resp.json())["files"]
        head = await s3.head_object(Bucket=item["bucket"], Key=item["key"])
        assert head["ServerSideEncryption"] == "AES256"


async def test_versioned_bucket_returns_version_id(client: Client, s3: Any, bucket: str) -> None:
    """When the bucket is versioned, the response names the version stored."""
    await s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    resp = await client.post("/s3/upload", data=form(("v.txt", b"v1", "text/plain")))
    (item,) = (await resp.json())["files"]
    assert item["version_id"]
    head = await s3.head_object(Bucket=bucket, Key=item["key"])
    assert head["VersionId"] == item["version_id"]


async def test_reused_part_buffers_never_leak_one_file_into_the_next(
    aiohttp_client: Callable[..., Any],
    make_s3_settings: Callable[..., S3Settings],
    s3: Any,
) -> None:
    """Part buffers go back to a pool and are written again in place: files of every shape in a
    row (full parts, a short last part, a file of 1-2 parts held in memory, then a shorter one
    than before) are each stored byte for byte, and the pool holds at most one buffer a slot."""
    app = create_app(make_s3_settings())
    client: Client = await aiohttp_client(app)
    for size in [3 * PART + 7, 2 * PART - 5, PART - 3, 2 * MIB, PART + 1, 3 * MIB]:
        data = os.urandom(size)
        resp = await client.post("/s3/upload", data=form(("b.bin", data, "text/plain")))
        assert resp.status == 201, await resp.text()
        (item,) = (await resp.json())["files"]
        await assert_stored(s3, item, data)
    pool = app[UPLOADER].buffers
    assert 0 < pool.kept <= pool.keep
    assert app[UPLOADER].meter.used == 0


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ("Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 99999999999\r\n", 413),
        ("Content-Type: text/plain\r\nContent-Length: 10\r\n", 415),
    ],
    ids=["too-large", "not-a-form"],
)
async def test_a_refused_upload_is_refused_before_its_body_is_asked_for(
    client: Client, headers: str, status: int
) -> None:
    """``Expect: 100-continue`` (curl sends it with every file over 1 MiB): a body the service
    refuses without reading it is refused first, not invited with ``100 Continue``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    writer.write(
        f"POST /s3/upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n{headers}\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    writer.close()
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), head


async def test_a_good_upload_is_told_to_continue(client: Client, s3: Any) -> None:
    """The same with a form the service takes: ``100 Continue``, then the body, then 201."""
    body = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="c.txt"\r\n\r\n'
        b"hello\r\n--b--\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    writer.write(
        b"POST /s3/upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nConnection: close\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10) == (
        b"HTTP/1.1 100 Continue\r\n\r\n"
    )
    writer.write(body)
    final = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    assert final.startswith(b"HTTP/1.1 201 "), final
    (item,) = json.loads(final.split(b"\r\n\r\n", 1)[1])["files"]
    await assert_stored(s3, item, b"hello")


async def post_one_file(client: Client, disposition: str) -> aiohttp.ClientResponse:
    """A form of one ``file`` field holding ``data``, its Content-Disposition parameters after
    ``name="file";`` written as given (what aiohttp's FormData would quote for us)."""
    body = (
        f'--b\r\nContent-Disposition: form-data; name="file"; {disposition}\r\n\r\n'
        "data\r\n--b--\r\n"
    ).encode()
    return await client.post(
        "/s3/upload", data=body, headers={"Content-Type": "multipart/form-data; boundary=b"}
    )


UNREADABLE = pytest.mark.parametrize(
    "disposition",
    [
        "filename*=UTF-8''r%E9sum%E9.pdf",
        "filename*=report.pdf",
        'filename="a.txt"; filename="b.txt"',
    ],
    ids=["latin-1-bytes-said-utf-8", "no-charset", "filename-twice"],
)


# As in production, where aiohttp's warning is only a warning (this suite makes warnings errors).
@pytest.mark.filterwarnings("ignore::aiohttp.multipart.BadContentDispositionParam")
@pytest.mark.filterwarnings("ignore::aiohttp.multipart.BadContentDispositionHeader")
@UNREADABLE
async def test_a_filename_aiohttp_drops_with_a_warning_is_400(
    client: Client, s3: Any, bucket: str, disposition: str
) -> None:
    """The field is not taken as a text value without its filename: 400, nothing stored."""
    resp = await post_one_file(client, disposition)
    assert (resp.status, (await resp.json())["error"]) == (400, "malformed_multipart")
    assert await stored_keys(s3, bucket) == []


@pytest.mark.filterwarnings("ignore::aiohttp.multipart.BadContentDispositionParam")
@pytest.mark.parametrize(
    ("disposition", "filename"),
    [
        ('filename="a.txt"; filename*="UTF-8\'\'b.txt"', "a.txt"),
        ('filename="x; name*=y.txt"', "x; name*=y.txt"),
    ],
    ids=["unreadable-filename*-falls-back", "parameter-text-inside-quotes"],
)
async def test_readable_filenames_are_not_refused(
    client: Client, disposition: str, filename: str
) -> None:
    """RFC 6266: a filename* the reader cannot use falls back to filename; a quoted value that
    looks like a parameter is a value (both were 400s of the first version of the check)."""
    resp = await post_one_file(client, disposition)
    answer = await resp.json()
    assert resp.status == 201, answer
    assert answer["files"][0]["filename"] == filename


@UNREADABLE
async def test_a_file_field_whose_filename_cannot_be_read_is_400(
    client: Client, s3: Any, bucket: str, disposition: str
) -> None:
    """aiohttp drops a filename it cannot read with a warning only; the field would then be a
    text value and its file silently left out (a 201 without it, before): 400, nothing stored."""
    resp = await post_one_file(client, disposition)
    answer = await resp.json()
    assert (resp.status, answer["error"]) == (400, "malformed_multipart"), answer
    assert "cannot be read" in answer["message"]
    assert await stored_keys(s3, bucket) == []


@pytest.mark.parametrize(
    ("disposition", "key_name", "filename"),
    [
        (r'filename="C:\fakepath\evil.txt"', "evil.txt", "C:\\fakepath\\evil.txt"),
        (r'filename="dir\\sub\\a.txt"', "a.txt", "dir\\sub\\a.txt"),
        (r'filename="say \"hi\".txt"', "say_hi_.txt", 'say "hi".txt'),
    ],
    ids=["windows-path", "escaped-backslashes", "escaped-quotes"],
)
async def test_backslashes_in_a_filename_are_kept_unless_they_escape(
    client: Client, s3: Any, disposition: str, key_name: str, filename: str
) -> None:
    """A backslash is itself (browsers and curl escape a quote as %22 and leave backslashes be),
    so a Windows path keeps its separators and the key takes its last segment; a backslash
    before a quote or a backslash still escapes it."""
    resp = await post_one_file(client, disposition)
    assert resp.status == 201, await resp.text()
    (item,) = (await resp.json())["files"]
    assert item["key"].rsplit("/", 1)[1] == key_name
    assert item["filename"] == filename
    head = await s3.head_object(Bucket=item["bucket"], Key=item["key"])
    assert unquote(head["Metadata"]["original-filename"]) == filename


async def test_a_percent_encoded_filename_is_decoded_once_for_all(client: Client, s3: Any) -> None:
    """A browser sends a quote in a filename as %22: the answer, the key and the metadata all
    name the decoded file (the answer used to repeat the encoded form)."""
    resp = await client.post("/s3/upload", data=form(('say "hi".txt', b"x", "text/plain")))
    assert resp.status == 201, await resp.text()
    (item,) = (await resp.json())["files"]
    assert item["filename"] == 'say "hi".txt'
    assert item["key"].endswith("/say_hi_.txt")
    head = await s3.head_object(Bucket=item["bucket"], Key=item["key"])
    assert unquote(head["Metadata"]["original-filename"]) == 'say "hi".txt'


async def test_an_rfc8187_filename_is_decoded_by_its_own_rules_only(client: Client) -> None:
    """filename*=UTF-8''a%2541.txt names a%41.txt: it is not percent-decoded a second time."""
    resp = await post_one_file(client, "filename*=UTF-8''a%2541.txt")
    assert resp.status == 201, await resp.text()
    (item,) = (await resp.json())["files"]
    assert item["filename"] == "a%41.txt"
    assert item["key"].endswith("/a_41.txt")


@pytest.mark.parametrize(
    "disposition",
    ["filename*=punycode''%00", "filename*=unicode_escape''%5Cud800.txt", "filename*=rot13''%61"],
    ids=["codec-error", "lone-surrogate", "not-a-text-codec"],
)
async def test_a_filename_in_a_charset_that_cannot_be_decoded_is_400(
    client: Client, s3: Any, bucket: str, disposition: str
) -> None:
    """filename*'s charset goes to Python's codecs: one that fails, or makes a lone surrogate,
    is a 400 with nothing stored, not a 500."""
    resp = await post_one_file(client, disposition)
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["error"] == "malformed_multipart"
    assert await stored_keys(s3, bucket) == []
