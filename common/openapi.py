"""The OpenAPI 3.1 parts both services share: health/ready/openapi routes, the error shape, auth.

Each service builds its document with :func:`document` and adds its own paths; it is served at
``{BASE_PATH}/openapi.json`` and a test checks it against the app's routes in both directions.
"""

from __future__ import annotations

from typing import Any

from common.idempotency import HEADER, KEY_PATTERN

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error", "message", "request_id"],
    "properties": {
        "error": {"type": "string", "description": "stable error code"},
        "message": {"type": "string", "description": "for humans; may change"},
        "request_id": {"type": ["string", "null"]},
    },
    "additionalProperties": True,
}

_REASONS = {
    400: "Bad request",
    401: "Missing or invalid API key",
    404: "Not found",
    405: "Method not allowed",
    408: "The request body stopped or arrived too slowly",
    409: "A request with the same Idempotency-Key is in progress",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Semantically invalid",
    499: "Client closed the request",
    500: "Internal error",
    502: "The AWS backend refused the request",
    503: "Not configured, overloaded, shutting down or backend unavailable (see Retry-After)",
}


def error_responses(*statuses: int) -> dict[str, Any]:
    """Response objects for error statuses, all with the JSON error shape."""
    out: dict[str, Any] = {}
    for status in statuses:
        response: dict[str, Any] = {
            "description": _REASONS[status],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        if status == 503:
            response["headers"] = {
                "Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}
            }
        out[str(status)] = response
    return out


def idempotency_header(description: str) -> dict[str, Any]:
    """The optional ``Idempotency-Key`` request header, with the one pattern keys follow."""
    return {
        "name": HEADER,
        "in": "header",
        "required": False,
        "schema": {"type": "string", "pattern": f"^{KEY_PATTERN}$"},
        "description": description,
    }


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    """An ``application/json`` content object."""
    return {"application/json": {"schema": schema}}


def document(
    *, title: str, version: str, description: str, base_path: str, auth: bool
) -> dict[str, Any]:
    """The skeleton of a service's document, with the shared routes filled in."""
    health = {
        "get": {
            "summary": "Liveness: the process serves",
            "security": [],
            "responses": {
                "200": {
                    "description": "Alive",
                    "content": json_content({"$ref": "#/components/schemas/Health"}),
                }
            },
        }
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": {
            "/health": health,
            f"{base_path}/health": health,
            f"{base_path}/ready": {
                "get": {
                    "summary": "Readiness: the AWS target is configured and answers",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "Ready",
                            "content": json_content(
                                {
                                    "type": "object",
                                    "required": ["status"],
                                    "properties": {"status": {"const": "ready"}},
                                }
                            ),
                        },
                        **error_responses(503),
                    },
                }
            },
            f"{base_path}/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1",
                            "content": json_content({"type": "object"}),
                        }
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "Error": ERROR_SCHEMA,
                "Health": {
                    "type": "object",
                    "required": ["status", "service", "version"],
                    "properties": {
                        "status": {"const": "ok"},
                        "service": {"type": "string"},
                        "version": {"type": "string"},
                    },
                },
            },
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
            },
        },
    }
    if auth:
        doc["security"] = [{"bearer": []}, {"apiKey": []}]
    return doc
