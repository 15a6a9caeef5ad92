"""s3svc's OpenAPI 3.1 document, served at ``{BASE_PATH}/openapi.json``."""

from __future__ import annotations

from typing import Any

from common.openapi import document, error_responses, idempotency_header, json_content
from s3svc.config import S3Settings

# A form field name: 1-200 characters, no control characters (RFC 7578 requires one).
FIELD_NAME = "^[^\\u0000-\\u001F\\u007F]{1,200}$"

DOWNLOAD_LINK: dict[str, Any] = {
    "download_url": {
        "type": "string",
        "description": "presigned GET link, only when DOWNLOAD_URL_SECONDS is above 0",
    },
    "download_url_expires_at": {
        "type": "string",
        "format": "date-time",
        "description": "when download_url stops working (sooner if the signing credentials "
        "expire first)",
    },
}

STORED_FILE = {
    "type": "object",
    "required": ["bucket", "key", "size", "sha256", "etag", "content_type", "filename"],
    "properties": {
        "bucket": {"type": "string"},
        "key": {"type": "string", "description": "server-made: prefix/yyyy/mm/dd/uuid/name"},
        "size": {"type": "integer", "minimum": 1},
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "etag": {"type": "string"},
        "content_type": {"type": "string"},
        "filename": {"type": ["string", "null"], "description": "as the client sent it"},
        "version_id": {"type": "string", "description": "only when the bucket is versioned"},
        "checksum_crc64nvme": {
            "type": "string",
            "description": "the whole object's CRC64NVME as S3 reported it (base64); absent when "
            "the backend reports none",
        },
        "checksum_type": {"type": "string", "description": "FULL_OBJECT, as S3 reported it"},
        "verified": {
            "type": "array",
            "items": {"enum": ["crc64nvme", "sha-256"]},
            "description": "the digests the client stated for the file, all of which matched",
        },
        **DOWNLOAD_LINK,
    },
}


# A file an earlier request with the same Idempotency-Key stored: named, not described (its
# bytes were that request's).
REPLAYED_FILE = {
    "type": "object",
    "required": ["bucket", "key", "replayed"],
    "properties": {
        "bucket": {"type": "string"},
        "key": {"type": "string", "description": "prefix/idempotent/digest/position"},
        "replayed": {"const": True},
        **DOWNLOAD_LINK,
    },
    "additionalProperties": False,
}

STORED = {
    "type": "object",
    "required": ["files", "request_id"],
    "properties": {
        "files": {
            "type": "array",
            "items": {
                "anyOf": [
                    {"$ref": "#/components/schemas/StoredFile"},
                    {"$ref": "#/components/schemas/ReplayedFile"},
                ]
            },
        },
        "request_id": {"type": "string"},
    },
}


PAGE_HEADERS = {
    name: {"schema": {"type": "string"}, "description": text}
    for name, text in (
        ("Content-Security-Policy", "default-src 'none'; only the page's own origin"),
        ("Cache-Control", "no-cache, or a year for a file asked for by its digest (?v=)"),
        ("ETag", "the content's digest; If-None-Match with it answers 304"),
    )
}


def page_paths(base: str) -> dict[str, Any]:
    """The upload page (``UPLOAD_PAGE``): the HTML and its two files, open without an API key."""
    not_modified = {"description": "Not modified (If-None-Match)", "headers": PAGE_HEADERS}
    redirect = {
        "get": {
            "summary": "The page's address without its slash: a permanent redirect to the page",
            "security": [],
            "responses": {
                "308": {
                    "description": "To the page",
                    "headers": {"Location": {"schema": {"type": "string"}}},
                }
            },
        }
    }
    return ({base: redirect} if base else {}) | {
        f"{base}/": {
            "get": {
                "summary": "The upload page for people (HTML; UPLOAD_PAGE=false removes it)",
                "security": [],
                "responses": {
                    "200": {
                        "description": "The page",
                        "headers": PAGE_HEADERS,
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    },
                    "304": not_modified,
                },
            }
        },
        f"{base}/page/{{asset}}": {
            "get": {
                "summary": "The upload page's script or style sheet",
                "security": [],
                "parameters": [
                    {
                        "name": "asset",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": ["page.css", "page.js"]},
                    },
                    {
                        "name": "v",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": "the content's digest, as the page names it: then the "
                        "answer may be cached for a year",
                    },
                ],
                "responses": {
                    "200": {
                        "description": "The file",
                        "headers": PAGE_HEADERS,
                        "content": {
                            "text/javascript": {"schema": {"type": "string"}},
                            "text/css": {"schema": {"type": "string"}},
                        },
                    },
                    "304": not_modified,
                    **error_responses(404),
                },
            }
        },
    }


def spec(settings: S3Settings) -> dict[str, Any]:
    """The document for this configuration (base path, auth)."""
    base = settings.common.base_path
    doc = document(
        title="s3svc",
        version=settings.common.version,
        description="Streams multipart/form-data uploads into S3.",
        base_path=base,
        auth=bool(settings.common.api_keys_sha256),
    )
    doc["components"]["schemas"]["StoredFile"] = STORED_FILE
    doc["components"]["schemas"]["ReplayedFile"] = REPLAYED_FILE
    doc["paths"][f"{base}/upload"] = {
        "post": {
            "summary": "Store each `file` field as its own S3 object",
            "parameters": [
                idempotency_header(
                    "IETF httpapi draft: a retry with the same key (per API key) names the same "
                    "objects and stores nothing twice; 409 while a request with it runs"
                )
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["file"],
                            # Other fields are read and ignored (at most 100, each <= 64 KiB).
                            "propertyNames": {"pattern": FIELD_NAME},
                            "additionalProperties": {"type": "string", "maxLength": 65536},
                            "properties": {
                                "file": {
                                    "type": "array",
                                    "minItems": 1,
                                    "maxItems": settings.max_files,
                                    "items": {
                                        "type": "string",
                                        "contentMediaType": "application/octet-stream",
                                        "minLength": 1,  # an empty file is refused (400)
                                    },
                                }
                            },
                        }
                    }
                },
            },
            "responses": {
                "201": {"description": "Every file stored", "content": json_content(STORED)},
                "200": {
                    "description": "An Idempotency-Key replay: every file was stored before",
                    "content": json_content(STORED),
                },
                **error_responses(400, 401, 408, 409, 413, 415, 502, 503),
            },
        }
    }
    if settings.upload_page:
        doc["paths"].update(page_paths(base))
    return doc
