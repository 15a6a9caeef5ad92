"""Time-limited download links for stored files: presigned S3 GET URLs (``DOWNLOAD_URL_SECONDS``).

A link is signed locally, with no call to S3, by a client of its own: its endpoint is the one the
user can reach (``DOWNLOAD_URL_ENDPOINT``), which in compose is not the one the service calls. A
SigV4 link lives at most 7 days; one signed with temporary credentials (an ECS task role's) stops
working when they expire, whatever ``X-Amz-Expires`` says, so in AWS links last hours at most.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiobotocore.config import AioConfig
from aiohttp import web

from common.aws import open_client
from s3svc.config import S3Settings
from s3svc.upload import StoredFile

if TYPE_CHECKING:  # the stubs are a dev dependency; the image has no need of them
    from types_aiobotocore_s3 import S3Client


class DownloadLinks:
    """Signs a GET link for a stored file, valid for ``seconds``."""

    def __init__(
        self, client: S3Client, seconds: int, clock: Callable[[], float] = time.time
    ) -> None:
        self._client = client
        self._seconds = seconds
        self._clock = clock

    async def for_file(self, stored: StoredFile, name: str | None) -> dict[str, str]:
        """``download_url`` and ``download_url_expires_at`` (ISO 8601 UTC) for ``stored``.

        No ``VersionId``: a key is written once (``If-None-Match: *``), so its current version
        is the stored one, and a versioned GET would need ``s3:GetObjectVersion`` as well. The
        link makes S3 answer ``Content-Disposition: attachment``, under the file's original
        ``name`` when it is known, so a browser saves the file instead of rendering whatever
        type the uploader claimed.
        """
        disposition = "attachment"
        if name:
            disposition += "; filename*=UTF-8''" + urllib.parse.quote(name, safe="")
        params: dict[str, str] = {
            "Bucket": stored.bucket,
            "Key": stored.key,
            "ResponseContentDisposition": disposition,
        }
        expires = datetime.fromtimestamp(int(self._clock()) + self._seconds, UTC)
        url = await self._client.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=self._seconds
        )
        return {
            "download_url": url,
            "download_url_expires_at": expires.isoformat().replace("+00:00", "Z"),
        }


DOWNLOAD_LINKS: web.AppKey[DownloadLinks | None] = web.AppKey("download_links")


def download_links_ctx(
    settings: S3Settings,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` entry: a signing client when links are on, else ``None`` under the key."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        if not settings.download_url_seconds:
            app[DOWNLOAD_LINKS] = None
            yield
            return
        aws = settings.common.aws
        endpoint = settings.download_url_endpoint or aws.endpoint_url
        # SigV4 (X-Amz-Expires): botocore still presigns with SigV2 by default in us-east-1.
        sigv4 = AioConfig(signature_version="s3v4")
        async with open_client("s3", replace(aws, endpoint_url=endpoint), extra=sigv4) as client:
            app[DOWNLOAD_LINKS] = DownloadLinks(client, settings.download_url_seconds)
            yield

    return ctx
