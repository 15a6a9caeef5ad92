"""Streaming one form-data file into S3 with bounded memory and nothing half-written.

A file is read in blocks of ``part_size``. If it ends within the first block it is one
``put_object``; otherwise it becomes a multipart upload whose parts are sent while the next block
is read, at most ``max_inflight_parts`` at a time. Every block in memory holds a reservation in a
process-wide :class:`MemoryBudget`, so many concurrent uploads slow down instead of exhausting
memory. Any failure, cancellation or client disconnect aborts the multipart upload.

Integrity: the SHA-256 of the whole file is computed while streaming (returned and stored as
metadata); S3 verifies each part against its own SHA-256 (``ChecksumAlgorithm``).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import io
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import BodyPartReader
from aiohttp.http_exceptions import HttpProcessingError

from common.aws import aws_error_code, is_aws_failure, to_service_error
from common.bodies import body_read
from common.errors import BadRequest, PayloadTooLarge
from common.logging import get_logger
from s3svc.config import MAX_PARTS, S3Settings, part_size_for
from s3svc.keys import make_key, metadata_filename

log = get_logger("s3svc.upload")
if TYPE_CHECKING:  # the stubs are a dev dependency; the image has no need of them
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

_F = TypeVar("_F", bound="asyncio.Future[Any]")

# Size of each read from the request body. Large enough to keep per-chunk overhead low, small
# enough that a block overshoots its reservation by little.
READ_CHUNK = 256 * 1024
# Bytes the hashing thread may lag behind the reader before the reader waits for it.
HASH_LAG = 4 * 1024 * 1024
# Abort must finish even while the request is being cancelled; bound it so shutdown cannot hang.
ABORT_TIMEOUT = 10.0


class MemoryBudget:
    """A process-wide byte budget: ``acquire(n)`` waits until ``n`` bytes fit, first come first served."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def acquire(self, n: int) -> None:
        """Reserve ``n`` bytes, waiting for releases if the budget is spent."""
        if n > self.limit:
            raise ValueError(f"cannot reserve {n} bytes from a budget of {self.limit}")
        if not self._waiters and self.used + n <= self.limit:
            self.used += n
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((n, fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # Granted just as we were cancelled: hand the bytes back.
                self.release(n)
            else:
                self._wake()
            raise

    def release(self, n: int) -> None:
        """Return ``n`` bytes and wake waiters that now fit."""
        self.used -= n
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            n, fut = self._waiters[0]
            if fut.done():
                self._waiters.popleft()
                continue
            if self.used + n > self.limit:
                break
            self._waiters.popleft()
            self.used += n
            fut.set_result(None)


class ByteLimit:
    """Counts file bytes across one request and fails the moment ``limit`` is crossed."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0

    def add(self, n: int) -> None:
        """Count ``n`` more bytes."""
        self.total += n
        if self.total > self.limit:
            raise PayloadTooLarge(
                f"upload exceeds the limit of {self.limit} bytes", code="upload_too_large"
            )


@dataclass(frozen=True, slots=True)
class StoredFile:
    """What the caller is told about one stored file."""

    bucket: str
    key: str
    size: int
    sha256: str
    etag: str
    content_type: str
    filename: str | None
    parts: int
    version_id: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The response item: ``version_id`` only when the bucket is versioned."""
        out: dict[str, Any] = {
            "bucket": self.bucket,
            "key": self.key,
            "size": self.size,
            "sha256": self.sha256,
            "etag": self.etag,
            "content_type": self.content_type,
            "filename": self.filename,
        }
        if self.version_id:
            out["version_id"] = self.version_id
        return out


@dataclass
class _Source:
    """Reads fixed-size blocks from one form-data part, hashing and counting as it goes."""

    part: BodyPartReader
    limit: ByteLimit
    idle_timeout: float
    hash_executor: Executor
    hasher: Any = field(default_factory=hashlib.sha256)
    size: int = 0
    carry: bytes = b""
    _hashed: asyncio.Future[None] | None = None
    _unhashed: int = 0  # bytes handed to the hashing thread and not yet hashed

    async def read_block(self, n: int) -> io.BytesIO:
        """Up to ``n`` bytes, positioned at 0; fewer only at the end of the file.

        The block is written into a BytesIO of its own and handed to botocore as it is: botocore
        wraps ``bytes`` in a BytesIO that shares them, and aiohttp's ``getbuffer()`` then copies
        that whole (an extra part-sized copy per part in flight).
        """
        block = io.BytesIO()
        have = 0
        if self.carry:
            block.write(self.carry)
            have = len(self.carry)
            self.carry = b""
        while have < n:
            chunk = await self._read(READ_CHUNK)
            if not chunk:
                break
            self._count(chunk)
            if have + len(chunk) > n:
                # read_chunk may return a little more than asked; keep the excess for later.
                cut = n - have
                self.carry = chunk[cut:]
                chunk = chunk[:cut]
            block.write(chunk)
            have += len(chunk)
        block.seek(0)
        return block

    async def at_end(self) -> bool:
        """True when nothing follows; otherwise the next bytes wait in ``carry``."""
        if self.carry:
            return False
        chunk = await self._read(READ_CHUNK)
        if not chunk:
            return True
        self._count(chunk)
        self.carry = chunk
        return False

    async def _read(self, size: int) -> bytes:
        try:
            chunk = await body_read(self.part.read_chunk(size), self.idle_timeout)
        except (ValueError, AssertionError, RuntimeError, HttpProcessingError) as exc:
            # aiohttp's multipart parser reports a malformed or truncated body this way.
            raise BadRequest(
                f"malformed multipart body: {exc}", code="malformed_multipart"
            ) from exc
        if self._unhashed > HASH_LAG and self._hashed is not None:
            # Chunks waiting for the hashing thread are memory too: let it catch up.
            await self._hashed
        if not chunk and not self.part.at_eof():
            # The body ended before this part's closing boundary: the file may be cut short,
            # so it must not be stored as if complete.
            raise BadRequest(
                "multipart body ended before the file's closing boundary (truncated upload)",
                code="malformed_multipart",
            )
        return chunk

    def _count(self, chunk: bytes) -> None:
        self.limit.add(len(chunk))
        self.size += len(chunk)
        # The whole-file hash runs off the event loop on a one-thread executor: its FIFO order
        # keeps the chunks in sequence, and nothing waits for it until the digest is needed
        # (waiting per block would stall the next read; hashing on the loop costs ~20% of it).
        self._hashed = asyncio.get_running_loop().run_in_executor(
            self.hash_executor, self.hasher.update, chunk
        )
        self._unhashed += len(chunk)
        self._hashed.add_done_callback(functools.partial(self._settle, len(chunk)))

    def _settle(self, n: int, _: object) -> None:
        self._unhashed -= n

    async def digest(self) -> bytes:
        """SHA-256 of every byte counted so far (waits for the hashing thread to catch up)."""
        if self._hashed is not None:
            await self._hashed
        digest: bytes = self.hasher.digest()
        return digest


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


class Uploader:
    """Stores form-data parts in S3; one per app, shared by all requests."""

    def __init__(self, client: S3Client, settings: S3Settings) -> None:
        self.client = client
        self.settings = settings
        self.budget = MemoryBudget(settings.memory_budget)
        # Work that must end before the S3 client closes: aborts, and creates whose request was
        # cancelled (S3 may have made the upload anyway).
        self._aborts: set[asyncio.Future[Any]] = set()
        # Multipart uploads created and neither completed nor aborted yet: upload id -> (bucket,
        # key). Whatever is left here at shutdown is aborted by drain().
        self._open: dict[str, tuple[str, str]] = {}
        self._hash_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256")

    def close(self) -> None:
        """Stop the hashing thread (after ``drain``)."""
        self._hash_executor.shutdown(wait=False, cancel_futures=True)

    async def drain(self) -> None:
        """Finish every abort, then abort what no request is left to abort.

        Called on shutdown before the S3 client closes, so no multipart upload is orphaned:
        requests cancelled by the shutdown reach their own aborts within a few loop turns; an
        upload still open after those (its request was cancelled somewhere it could not abort
        from) is aborted here.
        """
        for _ in range(5):
            await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ABORT_TIMEOUT
        while self._aborts and (left := deadline - loop.time()) > 0:
            await asyncio.wait(set(self._aborts), timeout=left)
        leftovers = list(self._open.items())
        await asyncio.gather(
            *(self._abort_upload(b, k, upload_id, "shutdown") for upload_id, (b, k) in leftovers)
        )

    def _object_args(self, content_type: str, filename: str | None) -> dict[str, Any]:
        args: dict[str, Any] = {
            "ContentType": content_type,
            "Metadata": {"original-filename": metadata_filename(filename)},
        }
        if self.settings.sse:
            args["ServerSideEncryption"] = self.settings.sse
            if self.settings.sse_kms_key_id:
                args["SSEKMSKeyId"] = self.settings.sse_kms_key_id
        return args

    async def store(
        self,
        part: BodyPartReader,
        content_type: str,
        limit: ByteLimit,
        declared_size: int | None = None,
    ) -> StoredFile:
        """Stream one file part into a new object and return what was stored."""
        bucket = self.settings.bucket
        assert bucket is not None  # the handler refuses uploads in local-safe mode
        key = make_key(self.settings.key_prefix, part.filename)
        source = _Source(part, limit, self.settings.common.body_idle_timeout, self._hash_executor)
        part_size = part_size_for(declared_size, self.settings.part_size)

        await self.budget.acquire(part_size)
        try:
            first = await source.read_block(part_size)
            single = _size(first) < part_size or await source.at_end()
        except BaseException:
            self.budget.release(part_size)
            raise
        if single:
            try:
                return await self._put(bucket, key, first, source, content_type, part.filename)
            finally:
                self.budget.release(part_size)
        return await self._multipart(
            bucket, key, first, part_size, source, content_type, part.filename
        )

    async def _put(
        self,
        bucket: str,
        key: str,
        data: io.BytesIO,
        source: _Source,
        content_type: str,
        filename: str | None,
    ) -> StoredFile:
        if not _size(data):
            raise BadRequest(f"file {filename!r} is empty", code="empty_file")
        digest = await source.digest()
        args = self._object_args(content_type, filename)
        args["Metadata"]["sha256"] = digest.hex()
        try:
            resp = await self.client.put_object(
                Bucket=bucket,
                Key=key,
                Body=data,
                ChecksumSHA256=_b64(digest),
                IfNoneMatch="*",
                **args,
            )
        except Exception as exc:
            if is_aws_failure(exc):
                raise to_service_error(exc, "S3") from exc
            raise
        return _stored(bucket, key, source, content_type, filename, 1, resp)

    async def _multipart(
        self,
        bucket: str,
        key: str,
        first: io.BytesIO,
        part_size: int,
        source: _Source,
        content_type: str,
        filename: str | None,
    ) -> StoredFile:
        # ``first`` arrives holding a reservation of part_size bytes; every block below does too.
        args = self._object_args(content_type, filename)
        create = asyncio.ensure_future(
            self.client.create_multipart_upload(
                Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256", **args
            )
        )
        try:
            created = await asyncio.shield(create)
        except BaseException as exc:
            self.budget.release(part_size)
            if isinstance(exc, asyncio.CancelledError):
                self._abort_once_created(create, bucket, key)
            if is_aws_failure(exc):
                raise to_service_error(exc, "S3") from exc
            raise
        upload_id: str = created["UploadId"]
        self._open[upload_id] = (bucket, key)
        slots = asyncio.Semaphore(self.settings.max_inflight_parts)
        tasks: list[asyncio.Task[CompletedPartTypeDef]] = []

        async def send(number: int, block: io.BytesIO) -> CompletedPartTypeDef:
            checksum = _b64(await asyncio.to_thread(_sha256, block))
            resp = await self.client.upload_part(
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=block,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=checksum,
            )
            return {"PartNumber": number, "ETag": resp["ETag"], "ChecksumSHA256": checksum}

        def sent(_: asyncio.Task[CompletedPartTypeDef]) -> None:
            # A done callback, not a ``finally`` in send(): a task cancelled before it ever ran
            # (the upload failed right after dispatching it) runs no finally, and its slot and
            # reservation would be lost to the process for good.
            slots.release()
            self.budget.release(part_size)

        def failed() -> BaseException | None:
            for t in tasks:
                if t.done() and not t.cancelled() and t.exception() is not None:
                    return t.exception()
            return None

        async def dispatch(block: io.BytesIO) -> None:
            # The block's reservation passes to the task, which returns it when done.
            try:
                await slots.acquire()
            except BaseException:
                self.budget.release(part_size)
                raise
            number = len(tasks) + 1
            if number > MAX_PARTS:
                slots.release()
                self.budget.release(part_size)
                raise PayloadTooLarge(
                    f"file needs more than {MAX_PARTS} parts", code="upload_too_large"
                )
            task = asyncio.create_task(send(number, block))
            task.add_done_callback(sent)
            tasks.append(task)

        try:
            await dispatch(first)
            del first
            while True:
                if (part_error := failed()) is not None:
                    raise part_error
                await self.budget.acquire(part_size)
                try:
                    block = await source.read_block(part_size)
                except BaseException:
                    self.budget.release(part_size)
                    raise
                if not _size(block):
                    self.budget.release(part_size)
                    break
                await dispatch(block)
                del block
            parts = await asyncio.gather(*tasks)
            await source.digest()  # the whole-file hash is complete before the object is
            resp = await self.client.complete_multipart_upload(
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                IfNoneMatch="*",
            )
        except BaseException as exc:
            # The abort runs in a task of its own, created before anything is awaited: it
            # completes even if this request is cancelled again, and drain() waits for it.
            await asyncio.shield(self._spawn_abort(bucket, key, upload_id, tasks, exc))
            if is_aws_failure(exc):
                raise to_service_error(exc, "S3") from exc
            raise
        self._open.pop(upload_id, None)
        return _stored(bucket, key, source, content_type, filename, len(tasks), resp)

    def _spawn_abort(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        tasks: list[asyncio.Task[CompletedPartTypeDef]],
        cause: BaseException,
    ) -> asyncio.Task[None]:
        """A task that cancels the outstanding parts, then aborts the upload."""

        async def abort() -> None:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._abort_upload(bucket, key, upload_id, type(cause).__name__)

        return self._track(asyncio.create_task(abort()))

    def _abort_once_created(self, create: asyncio.Future[Any], bucket: str, key: str) -> None:
        """The request was cancelled while CreateMultipartUpload was in flight: S3 may still
        create the upload, so abort it once its id is known."""

        def created(fut: asyncio.Future[Any]) -> None:
            if fut.cancelled() or fut.exception() is not None:
                return
            upload_id: str = fut.result()["UploadId"]
            self._open[upload_id] = (bucket, key)
            self._spawn_abort(bucket, key, upload_id, [], asyncio.CancelledError())

        self._track(create)
        create.add_done_callback(created)

    def _track(self, fut: _F) -> _F:
        self._aborts.add(fut)
        fut.add_done_callback(self._aborts.discard)
        return fut

    async def _abort_upload(self, bucket: str, key: str, upload_id: str, reason: str) -> None:
        """AbortMultipartUpload, bounded in time; an upload already gone counts as aborted."""
        if upload_id not in self._open:
            return  # aborted already (by its request, or by drain)
        try:
            await asyncio.wait_for(
                self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id),
                ABORT_TIMEOUT,
            )
        except Exception as exc:
            if aws_error_code(exc) != "NoSuchUpload":
                log.exception("abort_failed", key=key, upload_id=upload_id)
                return
        self._open.pop(upload_id, None)
        log.info("upload_aborted", reason=reason, key=key, upload_id=upload_id)


def _stored(
    bucket: str,
    key: str,
    source: _Source,
    content_type: str,
    filename: str | None,
    parts: int,
    resp: Mapping[str, Any],
) -> StoredFile:
    """Log and describe an object S3 has just confirmed (PutObject or CompleteMultipartUpload)."""
    log.info("object_stored", bucket=bucket, key=key, size=source.size, parts=parts)
    return StoredFile(
        bucket=bucket,
        key=key,
        size=source.size,
        sha256=source.hasher.hexdigest(),
        etag=str(resp.get("ETag", "")).strip('"'),
        content_type=content_type,
        filename=filename,
        parts=parts,
        version_id=resp.get("VersionId"),
    )


def _sha256(data: io.BytesIO) -> bytes:
    with data.getbuffer() as view:
        return hashlib.sha256(view).digest()


def _size(data: io.BytesIO) -> int:
    with data.getbuffer() as view:
        return view.nbytes
