"""Staging form-data files in S3 with bounded memory, then committing them all or none.

A request's files are **staged** one after another while its body streams in, and **committed**
only once the whole body, closing boundary included, was read and validated:

- A file that ends within its first part stays in memory; it is committed by one ``PutObject``.
- A larger file becomes a multipart upload whose parts are sent while the next part is read (at
  most ``max_inflight_parts`` at a time); it is committed by ``CompleteMultipartUpload``.
- Anything wrong before the commit (a bad or cut-off body, a later file refused, the client
  gone, a drip cut off) discards every staged file: buffers freed, multipart uploads aborted.

Memory is reserved for what has been read, never ahead of it, in process-wide
:class:`~s3svc.budget.MemoryBudget`s: a 20-byte upload needs 20 bytes of the first, one part's
worth for small buffers. Growing a buffer beyond ``SLOT_THRESHOLD`` takes a part-sized slot from
the second (the rest of the budget), so at most ⌊budget / part size⌋ - 1 uploads fill part
buffers at once: partial buffers cannot hold all the memory while each waits for more. A
reservation that cannot be had within ``memory_wait`` seconds fails with ``503 busy``. A slot's block is written into a part buffer allocated once
and reused (:mod:`s3svc.buffers`).

Integrity: S3 verifies every whole object. Each block is checksummed in a thread, in order:
the file's SHA-256 (returned, and stored as metadata on single PUTs) and CRC64NVME, and the
block's own CRC64NVME. A single PUT carries the file's CRC64NVME; a multipart upload is created
with a full-object CRC64NVME (``ChecksumType='FULL_OBJECT'``), each part carries its CRC, and
the completion carries the file's, which S3 checks against the assembled object. Digests the
client stated (:mod:`s3svc.digests`) are checked when the file ends, before anything commits.

Commits are conditional (``IfNoneMatch='*'``): S3 refuses to overwrite a key, which makes a
retried commit and an idempotent replay safe. A ``CreateMultipartUpload`` that botocore had to
retry (a read timeout: S3 may have created the first one too) is followed by a search for stray
uploads on that unique key, which are aborted.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import unquote

from common.aws import aws_error_code, is_aws_failure, to_service_error
from common.breaker import CircuitBreaker
from common.errors import BadRequest, PayloadTooLarge, RequestTimeout, ServiceError
from common.logging import get_logger
from common.pace import BodyClock
from s3svc.budget import Hold, MemoryBudget, Meter
from s3svc.buffers import BufferPool
from s3svc.config import MAX_PARTS, S3Settings, part_size_for
from s3svc.digests import FileChecksums, Stated, b64, checksum_fields, crc_bytes
from s3svc.keys import metadata_filename

log = get_logger("s3svc.upload")
if TYPE_CHECKING:  # the stubs are a dev dependency; the image has no need of them
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

_F = TypeVar("_F", bound="asyncio.Future[Any]")
_T = TypeVar("_T")

# Size of each read from the request body.
READ_CHUNK = 256 * 1024
# A buffer may grow this far without a part slot: small files never wait for a whole part.
SLOT_THRESHOLD = 1024 * 1024
# Abort must finish even while the request is being cancelled; bound it so shutdown cannot hang.
ABORT_TIMEOUT = 10.0
# How far S3's clock may be behind ours when telling our stray uploads from another task's.
CLOCK_SKEW = timedelta(seconds=2)


class BodyStalled(TimeoutError):
    """S3 took none of a request's body for the read timeout (a timeout: 503, retry)."""


async def sent(call: Awaitable[_T], body: io.BytesIO, idle: float) -> _T:
    """``call``'s answer, or :class:`BodyStalled` once ``body`` has not moved between two looks
    ``idle`` seconds apart before all of it was sent (so after ``idle`` to twice that).

    botocore's read timeout (aiohttp's ``sock_read``) starts only once a request's body is sent,
    and its connect timeout ends with the connection: an S3 that accepts a connection and then
    reads nothing (a frozen process; or no answer to ``Expect: 100-continue``, which botocore
    sends with every body) held the call forever. The body's read position is its progress:
    aiohttp reads it a piece at a time as the socket takes it, and botocore rewinds it to send
    again. Time the call waits for a pooled connection, or between botocore's attempts,
    counts as well: more S3 calls in flight than ``AWS_MAX_POOL_CONNECTIONS`` on an S3 slower
    than the read timeout can be given up too."""
    task = asyncio.ensure_future(call)
    with body.getbuffer() as view:
        size = view.nbytes
    seen = -1
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=idle)
            if done:
                return task.result()
            at = body.tell()
            if at == seen and at < size:
                raise BodyStalled(f"S3 took no more of the body for {idle:g} s ({at} of {size})")
            seen = at
    finally:
        if not task.done():
            task.cancel()
            # Retrieved, so a failure racing the cancel is not reported as never retrieved.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())


class FilePart(Protocol):
    """One file of the form, as the web layer hands it over (a :mod:`s3svc.formdata` part)."""

    def read_chunk(self, size: int = ...) -> Awaitable[bytes]:
        """Up to ``size`` bytes of the file; ``b""`` at its end."""


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
    # True when the object was already there: an earlier request with the same idempotency key
    # stored it, and this one stored nothing.
    replayed: bool = False
    # The digests the client stated, all of which matched ("sha-256", "crc64nvme").
    verified: tuple[str, ...] = ()
    # What S3 reported of the object's checksum: checksum_crc64nvme, checksum_type.
    checksum: Mapping[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The response item: ``version_id`` only when the bucket is versioned. A replay names
        the object only: its bytes are the earlier request's, which this one never saw."""
        if self.replayed:
            return {"bucket": self.bucket, "key": self.key, "replayed": True}
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
        out.update(self.checksum)
        if self.verified:
            out["verified"] = list(self.verified)
        return out


@dataclass(eq=False)
class Staged:
    """A file read whole and not yet committed: its bytes (``data``) or its multipart upload."""

    key: str
    filename: str | None
    content_type: str
    size: int
    checksums: FileChecksums
    verified: tuple[str, ...] = ()
    data: io.BytesIO | None = None
    # The memory ``data`` holds until it is committed or discarded.
    hold: Hold | None = None
    # True when ``data`` is a buffer of the uploader's pool, handed back once freed.
    pooled: bool = False
    upload_id: str | None = None
    parts: list[CompletedPartTypeDef] = field(default_factory=list)
    # Stray multipart uploads found and aborted after a retried create.
    strays_aborted: int = 0
    # False when other requests may use the same key (an idempotency key names it).
    exclusive: bool = True


class CommitFailed(Exception):
    """The commit of some files failed; ``stored`` lists the ones S3 confirmed."""

    def __init__(self, cause: BaseException, stored: list[StoredFile]) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.stored = stored


async def _checksum(
    previous: asyncio.Future[int] | None, sums: FileChecksums, block: io.BytesIO
) -> int:
    """The block's CRC64NVME, after feeding it to the file's checksums in a thread.

    Blocks of one file are chained (each waits for the previous one) because the file's
    checksums are sequential; files are checksummed in parallel, never on the event loop.
    """
    if previous is not None:
        await previous
    return await asyncio.to_thread(sums.add, block)


def _retried(outcome: Mapping[str, Any] | BaseException) -> bool:
    """True when botocore sent the call more than once (``outcome``: its answer or error)."""
    response = outcome if isinstance(outcome, Mapping) else getattr(outcome, "response", None)
    return bool((response or {}).get("ResponseMetadata", {}).get("RetryAttempts"))


class Uploader:
    """Stages and commits form-data files in S3; one per app, shared by all requests."""

    def __init__(
        self, client: S3Client, settings: S3Settings, breaker: CircuitBreaker | None = None
    ) -> None:
        self.client = client
        self.settings = settings
        # The client's breaker never hears of a call given up by sent() (botocore's own is
        # cancelled, not failed), so each one is counted here.
        self.breaker = breaker
        # Without a bucket (local-safe mode) the handler refuses uploads before staging.
        self.bucket = settings.bucket or ""
        # The memory budget in two pools: one part's worth for small buffers, reserved byte by
        # byte, and the rest for part buffers, reserved a whole part at a time (a slot).
        self.meter = Meter()
        small = settings.part_size
        wait = settings.memory_wait
        self.small = MemoryBudget(small, wait, self.meter)
        self.slots = MemoryBudget(settings.memory_budget - small, wait, self.meter)
        # One buffer per slot at most, each allocated once and reused.
        self.buffers = BufferPool(small, keep=self.slots.limit // small)
        # Work that must end before the S3 client closes: aborts, commits whose request was
        # cancelled, and creates whose request was cancelled (S3 may have made the upload).
        self._pending: set[asyncio.Future[Any]] = set()
        # Multipart uploads created and neither completed nor aborted yet: upload id -> key.
        # Whatever is left here at shutdown is aborted by drain().
        self._open: dict[str, str] = {}

    def busy(self) -> str | None:
        """Why a new upload would have to wait for memory now, or None."""
        if self.small.waiting or self.slots.waiting:
            return "upload memory is exhausted (uploads are waiting for it)"
        return None

    async def settle(self, timeout: float) -> bool:
        """Wait, at most ``timeout`` seconds, for the aborts and commits that outlive their
        request (a cancelled request leaves its cleanup running); True when none is left."""
        for _ in range(5):  # let just-cancelled requests schedule their cleanup first
            await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._pending and (left := deadline - loop.time()) > 0:
            await asyncio.wait(set(self._pending), timeout=left)
        return not self._pending

    async def drain(self) -> None:
        """Finish every abort and commit, then abort what no request is left to abort.

        Called on shutdown before the S3 client closes, so no multipart upload is orphaned.
        """
        await self.settle(ABORT_TIMEOUT)
        await asyncio.gather(
            *(
                self.abort_upload(k, upload_id, "shutdown")
                for upload_id, k in list(self._open.items())
            )
        )
        log.info(
            "upload_memory",
            limit=self.settings.memory_budget,
            peak=self.meter.peak,
            small_peak=self.small.peak,
            slots_peak=self.slots.peak,
        )

    async def original_filename(self, key: str) -> str | None:
        """The filename an object was stored with (its ``original-filename`` metadata), for a
        replay, whose bytes came with an earlier request; None when S3 cannot say. Needs
        ``s3:GetObject``, which the role has when download links are on."""
        try:
            head = await self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            # An open circuit (a ServiceError) leaves the name unknown too, not the replay failed.
            if not (is_aws_failure(exc) or isinstance(exc, ServiceError)):
                raise
            log.warning("original_filename_unknown", key=key, exc_info=exc)
            return None
        name = head.get("Metadata", {}).get("original-filename")
        return unquote(name) if name else None

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

    async def stage(
        self,
        part: FilePart,
        *,
        key: str,
        filename: str | None,
        content_type: str,
        limit: ByteLimit,
        clock: BodyClock,
        size_bound: int | None = None,
        stated: Stated | None = None,
        exclusive: bool = True,
    ) -> Staged:
        """Read one file whole: in memory if it fits one part, else into an open multipart
        upload with every part sent, then check the digests the client ``stated``. On any
        failure (a mismatch too) nothing of it is left behind."""
        writer = _FileWriter(
            self, key, filename, content_type, size_bound, stated or Stated(), exclusive
        )
        loop = asyncio.get_running_loop()
        try:
            while True:
                started = loop.time()
                if not (chunk := await clock.chunk(part.read_chunk(READ_CHUNK))):
                    break
                limit.add(len(chunk))
                await writer.add(chunk)
                # After the chunk counts: the wait is judged with the bytes it brought.
                writer.paced(loop.time() - started, clock.pace.grace)
            return await writer.finish()
        except BaseException:
            await asyncio.shield(self._track(asyncio.ensure_future(writer.discard())))
            raise

    async def discard(self, files: list[Staged]) -> None:
        """Give up staged files: free their memory, abort their multipart uploads."""
        for f in files:
            self._free(f)
        aborts = [self.abort_upload(f.key, f.upload_id, "discarded") for f in files if f.upload_id]
        if aborts:
            await asyncio.shield(self._track(asyncio.ensure_future(asyncio.gather(*aborts))))

    async def commit(self, files: list[Staged]) -> list[StoredFile]:
        """Store every staged file (conditional writes, concurrently).

        Runs to its end even if the request is cancelled (the body was complete: what S3
        accepts stays). Raises :class:`CommitFailed` naming the files S3 confirmed when any
        other failed; those others are aborted.
        """
        job = self._track(asyncio.ensure_future(self._commit_all(files)))
        return await asyncio.shield(job)

    async def _commit_all(self, files: list[Staged]) -> list[StoredFile]:
        results = await asyncio.gather(*(self._commit(f) for f in files), return_exceptions=True)
        stored = [r for r in results if isinstance(r, StoredFile)]
        failures = [r for r in results if not isinstance(r, StoredFile)]
        if failures:
            raise CommitFailed(failures[0], stored)
        return stored

    async def _commit(self, f: Staged) -> StoredFile:
        try:
            if f.data is not None:
                args = self._object_args(f.content_type, f.filename)
                args["Metadata"]["sha256"] = f.checksums.sha256.hex()
                call: Awaitable[Mapping[str, Any]] = self._sent(
                    self.client.put_object(
                        Bucket=self.bucket,
                        Key=f.key,
                        Body=f.data,
                        ChecksumCRC64NVME=b64(f.checksums.crc64nvme),
                        IfNoneMatch="*",
                        **args,
                    ),
                    f.data,
                )
            else:
                assert f.upload_id is not None
                call = self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=f.key,
                    UploadId=f.upload_id,
                    MultipartUpload={"Parts": f.parts},
                    ChecksumCRC64NVME=b64(f.checksums.crc64nvme),
                    ChecksumType="FULL_OBJECT",
                    IfNoneMatch="*",
                )
            try:
                resp = await call
            except Exception as exc:
                code = aws_error_code(exc)
                if code == "PreconditionFailed" or (code == "NoSuchUpload" and _retried(exc)):
                    # The key holds an object already: an earlier attempt of this very call
                    # (botocore retried it after a read timeout), or, for a key named by an
                    # idempotency key, an earlier request. Either way it is stored.
                    if f.upload_id is not None:
                        await self.abort_upload(f.key, f.upload_id, "already_stored")
                    return self._stored(f, {}, replayed=not _retried(exc))
                raise
            if f.upload_id is not None:
                self._open.pop(f.upload_id, None)
            return self._stored(f, resp)
        except BaseException as exc:
            if f.upload_id is not None:
                outcome = await self.abort_upload(f.key, f.upload_id, type(exc).__name__)
                if outcome == "gone" and isinstance(exc, Exception) and is_aws_failure(exc):
                    # S3 knows the upload no more, yet nothing of ours aborted it: the
                    # completion whose answer was lost went through. The file is stored.
                    return self._stored(f, {})
            if is_aws_failure(exc) and not isinstance(exc, ServiceError):
                raise to_service_error(exc, "S3") from exc
            raise
        finally:
            self._free(f)

    def _stored(self, f: Staged, resp: Mapping[str, Any], *, replayed: bool = False) -> StoredFile:
        log.info(
            "object_stored" if not replayed else "object_exists",
            key=f.key,
            size=f.size,
            parts=len(f.parts) or 1,
        )
        return StoredFile(
            bucket=self.bucket,
            key=f.key,
            size=f.size,
            sha256=f.checksums.sha256.hex(),
            etag=str(resp.get("ETag", "")).strip('"'),
            content_type=f.content_type,
            filename=f.filename,
            parts=len(f.parts) or 1,
            version_id=resp.get("VersionId"),
            replayed=replayed,
            verified=f.verified,
            checksum=checksum_fields(resp),
        )

    def _free(self, f: Staged) -> None:
        if f.hold is not None:
            f.hold.release()
            if f.pooled and f.data is not None:
                self.buffers.give(f.data)
            f.data = None

    async def create(
        self, key: str, content_type: str, filename: str | None, *, exclusive: bool = True
    ) -> tuple[str, int]:
        """CreateMultipartUpload: the upload id, and how many stray uploads on ``key`` were
        aborted (after a retried create)."""
        args = self._object_args(content_type, filename)
        started = datetime.now(UTC)
        job = asyncio.ensure_future(
            self.client.create_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                ChecksumAlgorithm="CRC64NVME",
                ChecksumType="FULL_OBJECT",
                **args,
            )
        )
        try:
            created = await asyncio.shield(job)
        except asyncio.CancelledError:
            self._abort_once_created(job, key)
            raise
        upload_id: str = created["UploadId"]
        self._open[upload_id] = key
        strays = 0
        if _retried(created):
            strays = await self._abort_strays(key, upload_id, None if exclusive else started)
        return upload_id, strays

    async def _abort_strays(self, key: str, keep: str, since: datetime | None) -> int:
        """A retried create may have created an upload whose answer never arrived: find the
        uploads on ``key`` and abort every one but ``keep``. On a key other requests may use
        (an idempotency key), only uploads begun since this create started (``since``, less
        a little clock skew) are taken as its own."""
        try:
            listed = await self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
        except Exception:
            log.warning("stray_search_failed", key=key, exc_info=True)
            return 0
        floor = None if since is None else since - CLOCK_SKEW
        strays = [
            u["UploadId"]
            for u in listed.get("Uploads", [])
            if u.get("Key") == key
            and u.get("UploadId") not in (None, keep)
            and (floor is None or u.get("Initiated", floor) >= floor)
        ]
        for upload_id in strays:
            self._open[upload_id] = key
            await self.abort_upload(key, upload_id, "stray")
        return len(strays)

    async def spill(self, f: Staged) -> None:
        """Move a file held in memory into an open multipart upload of one part, freeing its
        memory: the request goes on to more of its body, and the file stays uncommitted."""
        if f.data is None:
            return
        f.upload_id, f.strays_aborted = await self.create(
            f.key, f.content_type, f.filename, exclusive=f.exclusive
        )
        # One part: its CRC is the file's.
        f.parts = [await self.upload_part(f.key, f.upload_id, 1, f.data, f.checksums.crc64nvme)]
        self._free(f)

    async def _sent(self, call: Awaitable[_T], body: io.BytesIO) -> _T:
        """:func:`sent` at the read timeout, its give-ups counted by the breaker."""
        try:
            return await sent(call, body, self.settings.common.aws.read_timeout)
        except BodyStalled:
            if self.breaker is not None:
                self.breaker.record(False)
            raise

    async def upload_part(
        self, key: str, upload_id: str, number: int, body: io.BytesIO, crc: bytes
    ) -> CompletedPartTypeDef:
        """UploadPart with the part's CRC64NVME; the part as CompleteMultipartUpload lists it."""
        checksum = b64(crc)
        try:
            resp = await self._sent(
                self.client.upload_part(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=body,
                    ChecksumAlgorithm="CRC64NVME",
                    ChecksumCRC64NVME=checksum,
                ),
                body,
            )
        except Exception as exc:
            if is_aws_failure(exc):
                raise to_service_error(exc, "S3") from exc
            raise
        return {"PartNumber": number, "ETag": resp["ETag"], "ChecksumCRC64NVME": checksum}

    def _abort_once_created(self, create: asyncio.Future[Any], key: str) -> None:
        """The request was cancelled while CreateMultipartUpload was in flight: S3 may still
        create the upload, so abort it once its id is known."""

        def created(fut: asyncio.Future[Any]) -> None:
            if fut.cancelled() or fut.exception() is not None:
                return
            upload_id: str = fut.result()["UploadId"]
            self._open[upload_id] = key
            self._track(asyncio.ensure_future(self.abort_upload(key, upload_id, "cancelled")))

        self._track(create)
        create.add_done_callback(created)

    def _track(self, fut: _F) -> _F:
        self._pending.add(fut)
        fut.add_done_callback(self._pending.discard)
        return fut

    async def abort_upload(self, key: str, upload_id: str, reason: str) -> str:
        """AbortMultipartUpload, bounded in time: "aborted", "gone" (S3 knows no such upload:
        aborted or completed already) or "failed" (logged; the upload stays recorded)."""
        if upload_id not in self._open:
            return "gone"  # aborted or completed already, by this process
        try:
            await asyncio.wait_for(
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id),
                ABORT_TIMEOUT,
            )
            outcome = "aborted"
        except Exception as exc:
            if aws_error_code(exc) != "NoSuchUpload":
                log.exception("abort_failed", key=key, upload_id=upload_id)
                return "failed"
            outcome = "gone"
        self._open.pop(upload_id, None)
        log.info("upload_aborted", reason=reason, key=key, upload_id=upload_id, outcome=outcome)
        return outcome


class _FileWriter:
    """One file on its way in: the block being filled, the parts in flight, the checksums."""

    def __init__(
        self,
        uploader: Uploader,
        key: str,
        filename: str | None,
        content_type: str,
        size_bound: int | None,
        stated: Stated,
        exclusive: bool,
    ) -> None:
        self.up = uploader
        self.exclusive = exclusive
        self.key = key
        self.filename = filename
        self.content_type = content_type
        self.stated = stated
        self.part_size = part_size_for(size_bound, uploader.settings.part_size)
        self.sums = FileChecksums()
        self.size = 0
        self.block = io.BytesIO()
        self.block_len = 0
        self.pooled = False  # the block is a buffer of the uploader's pool
        self.mem = Hold(uploader.small)  # the block's bytes while it is small
        self.slot = Hold(uploader.slots)  # a whole part for it, once it grows past the threshold
        # Since the slot was taken: seconds spent waiting for the client, and bytes it sent.
        self.slot_waited = 0.0
        self.slot_bytes = 0
        self.checksummed: asyncio.Future[int] | None = None
        self.upload_id: str | None = None
        self.inflight = asyncio.Semaphore(uploader.settings.max_inflight_parts)
        self.tasks: list[asyncio.Task[CompletedPartTypeDef]] = []
        self.strays = 0

    async def add(self, chunk: bytes) -> None:
        """Buffer ``chunk``, sending the block as a part whenever it is full and more follows."""
        view = memoryview(chunk)
        while view:
            if self.block_len == self.part_size:
                await self._dispatch()
            take = view[: self.part_size - self.block_len]
            if not self.slot.n and (
                self.block_len + len(take) > SLOT_THRESHOLD or not self.mem.try_grow(len(take))
            ):
                # A whole part at once (a block with a slot never waits for memory again), when
                # the block outgrows the small pool's share or the small pool is full: nothing
                # ever waits for the small pool, so small buffers cannot hold it while waiting.
                # (A multipart file's short last block needs no slot either.)
                await self.slot.grow(self.part_size)
                self.slot_waited, self.slot_bytes = 0.0, 0
                self._to_part_buffer()
                self.mem.release()  # its bytes so far now count in the slot
            self.block.write(take)
            self.slot_bytes += len(take)
            self.block_len += len(take)
            self.size += len(take)
            view = view[len(take) :]

    def paced(self, waited: float, grace: float) -> None:
        """Count ``waited`` seconds spent waiting for the client's next chunk.

        Once another upload has waited half of ``UPLOAD_MEMORY_WAIT`` for a slot, a holder that
        after ``grace`` seconds of waiting for its client has sent less than
        ``UPLOAD_SLOT_MIN_RATE`` per second of it gives its slot up (408): else 31 clients at
        the body's minimum rate (240 B/s) could hold a whole budget's slots for hours.
        """
        rate = self.up.settings.slot_min_rate
        if not self.slot.n or not rate:
            return
        self.slot_waited += waited
        if (
            self.slot_waited > grace
            and self.slot_bytes < rate * self.slot_waited
            and self.up.slots.longest_wait() >= self.up.settings.memory_wait / 2
        ):
            raise RequestTimeout(
                f"the request body arrived slower than {rate} bytes/s while other uploads "
                "waited for its part buffer; the request was given up",
                code="body_too_slow",
            )

    def _to_part_buffer(self) -> None:
        """Move the block into a pooled buffer of a whole part (the bytes so far are copied)."""
        if self.part_size != self.up.buffers.size:
            return  # larger parts (a large declared size): the block stays a buffer of its own
        buf = self.up.buffers.take()
        with self.block.getbuffer() as view:
            buf.write(view)
        self.block, self.pooled = buf, True

    async def finish(self) -> Staged:
        """The file ended: check the stated digests, keep it in memory (one part or less) or
        send its last part."""
        if self.upload_id is None:
            if not self.block_len:
                raise BadRequest(f"file {self.filename!r} is empty", code="empty_file")
            self.block.truncate(self.block_len)
            await _checksum(None, self.sums, self.block)
            self.block.seek(0)
            staged = self._staged(
                data=self.block, hold=self.slot if self.slot.n else self.mem, pooled=self.pooled
            )
            # The staged file owns the block and its hold now.
            self.mem, self.slot = Hold(self.up.small), Hold(self.up.slots)
            self.block, self.block_len, self.pooled = io.BytesIO(), 0, False
            return staged
        if self.block_len:
            await self._dispatch()
        parts = list(await asyncio.gather(*self.tasks))
        return self._staged(upload_id=self.upload_id, parts=parts, strays_aborted=self.strays)

    def _staged(self, **where: Any) -> Staged:
        """The file as staged, its digests checked; ``where`` says where its bytes are."""
        return Staged(
            key=self.key,
            filename=self.filename,
            content_type=self.content_type,
            size=self.size,
            checksums=self.sums,
            verified=self.sums.verify(self.stated),
            exclusive=self.exclusive,
            **where,
        )

    async def discard(self) -> None:
        """Free the block, stop the parts in flight, abort the upload."""
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.slot.release()
        self.mem.release()
        if self.upload_id is not None:
            await self.up.abort_upload(self.key, self.upload_id, "discarded")

    def _failed(self) -> BaseException | None:
        for t in self.tasks:
            if t.done() and not t.cancelled() and t.exception() is not None:
                return t.exception()
        return None

    async def _dispatch(self) -> None:
        """Send the block as the next part; its holds go with the part's task."""
        if (error := self._failed()) is not None:
            raise error
        if self.upload_id is None:
            try:
                self.upload_id, self.strays = await self.up.create(
                    self.key, self.content_type, self.filename, exclusive=self.exclusive
                )
            except Exception as exc:
                if is_aws_failure(exc):
                    raise to_service_error(exc, "S3") from exc
                raise
        number = len(self.tasks) + 1
        if number > MAX_PARTS:
            raise PayloadTooLarge(
                f"file needs more than {MAX_PARTS} parts", code="upload_too_large"
            )
        await self.inflight.acquire()
        block, holds, pooled = self.block, (self.mem, self.slot), self.pooled
        block.truncate(self.block_len)
        block.seek(0)
        self.block, self.block_len, self.pooled = io.BytesIO(), 0, False
        self.mem, self.slot = Hold(self.up.small), Hold(self.up.slots)
        self.checksummed = crc = asyncio.ensure_future(
            _checksum(self.checksummed, self.sums, block)
        )
        upload_id = self.upload_id
        up = self.up

        async def send() -> CompletedPartTypeDef:
            return await up.upload_part(self.key, upload_id, number, block, crc_bytes(await crc))

        def sent(task: asyncio.Task[CompletedPartTypeDef]) -> None:
            # A done callback, not a ``finally`` in send(): a task cancelled before it ever ran
            # runs no finally, and its holds would be lost to the process for good.
            self.inflight.release()
            for hold in holds:
                hold.release()
            if pooled and not task.cancelled():
                # It awaited the block's checksum, so no thread reads the buffer any more.
                up.buffers.give(block)

        task = asyncio.create_task(send())
        task.add_done_callback(sent)
        self.tasks.append(task)
