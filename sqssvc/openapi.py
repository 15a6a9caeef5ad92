"""sqssvc's OpenAPI 3.1 document, served at ``{BASE_PATH}/openapi.json``."""

from __future__ import annotations

import copy
from typing import Any

from common.idempotency import HEADER, KEY_PATTERN
from common.openapi import document, error_responses, json_content
from sqssvc.config import SqsSettings
from sqssvc.messages import (
    ATTR_NAME_PATTERN,
    ATTR_TYPE_PATTERN,
    DEDUP_ATTRIBUTE,
    FORBIDDEN_RANGES,
    ID_PATTERN,
    ITEM_KEY,
    MAX_ATTRIBUTES,
    MAX_DELAY_SECONDS,
)

# Characters SQS accepts, from the validator's ranges (JSON Schema cannot name lone surrogates;
# UTF-8 bodies cannot hold them anyway).
SQS_TEXT = (
    "^[^"
    + "".join(
        f"\\u{lo:04X}-\\u{hi:04X}" for lo, hi in FORBIDDEN_RANGES if hi < 0xD800 or lo > 0xDFFF
    )
    + "]+$"
)
SQS_ID = f"^{ID_PATTERN}$"
IDEMPOTENCY_KEY = f"^{KEY_PATTERN}$"

ATTRIBUTE = {
    "oneOf": [
        {
            "type": "string",
            "minLength": 1,
            "pattern": SQS_TEXT,
            "description": "a String attribute",
        },
        {"type": "number", "description": "a Number attribute"},
        {
            "type": "object",
            "required": ["type", "value"],
            "properties": {
                "type": {
                    "type": "string",
                    "pattern": f"^{ATTR_TYPE_PATTERN}$",
                },
                "value": {"type": ["string", "number"], "description": "base64 for Binary"},
            },
            "additionalProperties": False,
        },
    ]
}


MESSAGE: dict[str, Any] = {
    "type": "object",
    "required": ["message"],
    "properties": {
        "message": {
            "description": "a string is sent as is; any other JSON value as compact JSON",
            "anyOf": [
                {"type": "string", "minLength": 1, "pattern": SQS_TEXT},
                {"type": ["object", "array", "number", "boolean"]},
            ],
        },
        "attributes": {
            "type": ["object", "null"],
            "maxProperties": MAX_ATTRIBUTES,
            "propertyNames": {
                "pattern": f"^{ATTR_NAME_PATTERN}$",
                "not": {"const": DEDUP_ATTRIBUTE},
            },
            "additionalProperties": {"$ref": "#/components/schemas/Attribute"},
            "description": f"{DEDUP_ATTRIBUTE} is reserved",
        },
        "delay_seconds": {
            "type": ["integer", "null"],
            "minimum": 0,
            "maximum": MAX_DELAY_SECONDS,
            "description": "standard queues only",
        },
        "group_id": {
            "type": ["string", "null"],
            "pattern": SQS_ID,
            "description": "FIFO: required",
        },
        "deduplication_id": {
            "type": ["string", "null"],
            "pattern": SQS_ID,
            "description": "FIFO only; wins over the idempotency key",
        },
    },
    "additionalProperties": False,
}

# A /send-batch item: a message with its own idempotency key (/send takes the header).
ITEM_KEY_SCHEMA = {
    "type": ["string", "null"],
    "pattern": IDEMPOTENCY_KEY,
    "description": f"this message's idempotency key, as the {HEADER} header of /send",
}

DEDUP_ID = {
    "type": "string",
    "description": f"the id every stored copy carries: the {DEDUP_ATTRIBUTE} attribute "
    "(standard queue) or the MessageDeduplicationId (FIFO; absent when the queue deduplicates "
    "by content and none was given)",
}

SENT = {
    "type": "object",
    "required": ["message_id", "md5_of_body"],
    "properties": {
        "message_id": {"type": "string"},
        "md5_of_body": {"type": "string"},
        "md5_of_message_attributes": {"type": "string"},
        "sequence_number": {"type": "string", "description": "FIFO queues"},
        "dedup_id": DEDUP_ID,
        "request_id": {"type": "string"},
    },
}

BATCH_RESULT = {
    "type": "object",
    "required": ["results", "succeeded", "failed", "request_id"],
    "properties": {
        "results": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "status"],
                "properties": {
                    "index": {"type": "integer"},
                    "status": {"type": "integer"},
                    "message_id": {"type": "string"},
                    "dedup_id": DEDUP_ID,
                    "error": {"type": "string"},
                    "message": {"type": "string"},
                },
            },
        },
        "succeeded": {"type": "integer"},
        "failed": {"type": "integer"},
        "request_id": {"type": "string"},
    },
}


def spec(settings: SqsSettings) -> dict[str, Any]:
    """The document for this configuration (base path, auth, batch size)."""
    base = settings.common.base_path
    doc = document(
        title="sqssvc",
        version=settings.common.version,
        description="Sends JSON messages to SQS, coalescing concurrent requests into batches.",
        base_path=base,
        auth=bool(settings.common.api_keys_sha256),
    )
    message = copy.deepcopy(MESSAGE)
    props = message["properties"]
    if settings.fifo:
        # The queue's own delay applies; group_id is required.
        del props["delay_seconds"]
        message["required"] = ["message", "group_id"]
        props["group_id"]["type"] = "string"
    else:
        del props["deduplication_id"]
        # dedup_id takes one of SQS's attribute slots.
        props["attributes"]["maxProperties"] = MAX_ATTRIBUTES - 1
    item = copy.deepcopy(message)
    item["properties"][ITEM_KEY] = ITEM_KEY_SCHEMA
    doc["components"]["schemas"].update(
        {
            "Attribute": ATTRIBUTE,
            "Message": message,
            "BatchItem": item,
            "Sent": SENT,
            "BatchResult": BATCH_RESULT,
        }
    )
    errors = error_responses(400, 401, 413, 415, 422, 502, 503)
    doc["paths"][f"{base}/send"] = {
        "post": {
            "summary": "Send one message; 200 only once SQS stored it",
            "parameters": [
                {
                    "name": HEADER,
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY},
                    "description": "IETF httpapi draft: a retry with the same key (per API key) "
                    "is stored once on a FIFO queue (SQS's 5-minute deduplication window) and "
                    f"carries the same {DEDUP_ATTRIBUTE} attribute on a standard queue",
                }
            ],
            "requestBody": {
                "required": True,
                "content": json_content({"$ref": "#/components/schemas/Message"}),
            },
            "responses": {
                "200": {
                    "description": "Stored by SQS",
                    "content": json_content({"$ref": "#/components/schemas/Sent"}),
                },
                **errors,
            },
        }
    }
    doc["paths"][f"{base}/send-batch"] = {
        "post": {
            "summary": "Send several messages; per-item results in request order",
            "requestBody": {
                "required": True,
                "content": json_content(
                    {
                        "type": "object",
                        "required": ["messages"],
                        "properties": {
                            "messages": {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": settings.max_batch_messages,
                                "items": {"$ref": "#/components/schemas/BatchItem"},
                            }
                        },
                        "additionalProperties": False,
                    }
                ),
            },
            "responses": {
                "200": {
                    "description": "Every message stored",
                    "content": json_content({"$ref": "#/components/schemas/BatchResult"}),
                },
                "207": {
                    "description": "Some stored, some failed (see each result)",
                    "content": json_content({"$ref": "#/components/schemas/BatchResult"}),
                },
                **errors,
            },
        }
    }
    return doc
