"""Request bodies of ``/send`` and ``/send-batch``, validated against SQS's rules by our own code.

moto (the emulator) counts characters instead of UTF-8 bytes, ignores attribute sizes, and accepts
forbidden characters and more than 10 attributes, so nothing here may rely on the backend to
refuse a bad message: every rule SQS enforces on a message is checked before it is queued.

A ``message`` string is sent as is; any other JSON value is sent as its compact JSON text.
Bodies are parsed with the stdlib ``json`` (not orjson, which turns integers beyond 64 bits into
doubles): integers keep every digit; decimals are doubles, re-serialised in shortest form.

Attributes map a name to a string (``String``), a number (``Number``) or an object
``{"type": "String|Number|Binary[.label]", "value": ...}`` where a Binary value is base64.

Reading the request (media type, body size, headers) is the web layer's job (``sqssvc.reading``).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from common.errors import BadRequest, PayloadTooLarge, ServiceError, Unprocessable

FIELDS = frozenset({"message", "attributes", "delay_seconds", "group_id", "deduplication_id"})
if TYPE_CHECKING:  # the stubs are a dev dependency; the image has no need of them
    from types_aiobotocore_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

MAX_ATTRIBUTES = 10
MAX_DELAY_SECONDS = 900
MAX_ATTRIBUTE_NAME = 256
MAX_ATTRIBUTE_TYPE = 256
MAX_ID_LENGTH = 128

# Characters SQS accepts in a message (and a String attribute): #x9 #xA #xD #x20-#xD7FF
# #xE000-#xFFFD #x10000-#x10FFFF. Anything else (NUL, other C0 controls, lone surrogates,
# U+FFFE/U+FFFF) is refused by SQS, so we refuse it first with a clearer message.
# The refused characters as code point ranges: the validator's regex below and the OpenAPI
# document's pattern are both made from them.
FORBIDDEN_RANGES = ((0x0, 0x8), (0xB, 0xC), (0xE, 0x1F), (0xD800, 0xDFFF), (0xFFFE, 0xFFFF))
_FORBIDDEN = re.compile("[" + "".join(f"{chr(lo)}-{chr(hi)}" for lo, hi in FORBIDDEN_RANGES) + "]")
# Field patterns without anchors, shared with the OpenAPI document (which anchors them its way).
# An attribute name: 1-256 of letters, digits, _ - . with no leading, trailing or double period,
# not starting with AWS. or Amazon. in any case (lookaheads: both Python and JSON Schema take them).
ATTR_NAME_PATTERN = (
    r"(?![Aa][Ww][Ss]\.|[Aa][Mm][Aa][Zz][Oo][Nn]\.)(?!\.)(?!.*\.\.)(?!.*\.$)"
    rf"[A-Za-z0-9_.-]{{1,{MAX_ATTRIBUTE_NAME}}}"
)
ATTR_TYPE_PATTERN = r"(String|Number|Binary)(\.[A-Za-z0-9_.-]+)?"
# MessageGroupId / MessageDeduplicationId: 1-128 printable ASCII characters (no space).
ID_PATTERN = rf"[!-~]{{1,{MAX_ID_LENGTH}}}"
_ATTR_NAME = re.compile(rf"^{ATTR_NAME_PATTERN}\Z")
_ATTR_TYPE = re.compile(rf"^{ATTR_TYPE_PATTERN}\Z")
_ID = re.compile(rf"^{ID_PATTERN}\Z")
# A Number attribute's text: ASCII digits in decimal or exponent notation. Decimal() alone would
# also take "1_000", non-ASCII digits and "Infinity", which SQS refuses.
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", re.ASCII)


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One validated message, ready to become an entry of ``SendMessageBatch``."""

    body: str
    size: int  # UTF-8 bytes of body + attribute names, types and values (SQS's measure)
    attributes: dict[str, dict[str, Any]] = field(default_factory=dict)
    delay_seconds: int | None = None
    group_id: str | None = None
    deduplication_id: str | None = None

    def entry(self, entry_id: str) -> SendMessageBatchRequestEntryTypeDef:
        """This message as a ``SendMessageBatchRequestEntry``."""
        out: SendMessageBatchRequestEntryTypeDef = {"Id": entry_id, "MessageBody": self.body}
        if self.attributes:
            out["MessageAttributes"] = self.attributes  # type: ignore[typeddict-item]  # shape validated by parse_message
        if self.delay_seconds is not None:
            out["DelaySeconds"] = self.delay_seconds
        if self.group_id is not None:
            out["MessageGroupId"] = self.group_id
        if self.deduplication_id is not None:
            out["MessageDeduplicationId"] = self.deduplication_id
        return out


@dataclass(frozen=True, slots=True)
class Limits:
    """What a message may be on the configured queue."""

    fifo: bool
    max_message_bytes: int
    max_batch_messages: int


def _invalid(code: str, message: str, where: str) -> Unprocessable:
    return Unprocessable(message, code=code, details={"field": where})


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def parse_json(raw: bytes) -> Any:
    """A request body as JSON: 400 ``invalid_json`` unless valid UTF-8 JSON."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(
            f"body is not UTF-8: {exc.reason} at byte {exc.start}", code="invalid_json"
        ) from exc
    try:
        return json.loads(text, parse_float=_finite_float, parse_constant=_reject_constant)
    except (json.JSONDecodeError, ValueError, RecursionError) as exc:
        reason = (
            exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc) or "too deeply nested"
        )
        where = (
            f" at line {exc.lineno} column {exc.colno}"
            if isinstance(exc, json.JSONDecodeError)
            else ""
        )
        raise BadRequest(f"body is not valid JSON: {reason}{where}", code="invalid_json") from exc


def _check_characters(text: str, what: str, where: str) -> None:
    bad = _FORBIDDEN.search(text)
    if bad is not None:
        raise _invalid(
            "invalid_characters",
            f"{what} contains U+{ord(bad.group()):04X} at index {bad.start()}, a character SQS "
            "does not accept (allowed: tab, LF, CR, U+0020-U+D7FF, U+E000-U+FFFD, "
            "U+10000-U+10FFFF)",
            where,
        )


def _body(value: Any) -> str:
    if isinstance(value, str):
        return value
    # Compact JSON text; non-ASCII stays as UTF-8 (SQS measures bytes, \u escapes would triple them).
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _number_text(value: Any, where: str) -> str:
    """A Number attribute's value: SQS allows 38 significant digits within -10^128 .. 10^126."""
    text = str(value).strip() if isinstance(value, (str, int, float)) else ""
    if isinstance(value, bool) or not text:
        raise _invalid("invalid_attribute_value", "a Number attribute needs a numeric value", where)
    if not _NUMBER.fullmatch(text):
        raise _invalid("invalid_attribute_value", f"{text[:40]!r} is not a number", where)
    number = Decimal(text)
    # Significant digits without leading/trailing zeros (not normalize(): it rounds to 28).
    digits = len("".join(map(str, number.as_tuple().digits)).strip("0")) or 1
    if digits > 38 or not (Decimal("-1e128") <= number <= Decimal("1e126")):
        raise _invalid(
            "invalid_attribute_value",
            "a Number attribute allows 38 significant digits between -10^128 and 10^126",
            where,
        )
    return text


def _attribute(name: str, raw: Any, where: str) -> tuple[dict[str, Any], int]:
    """(SQS MessageAttributeValue, its size in bytes excluding the name) for one attribute."""
    if isinstance(raw, bool) or raw is None or isinstance(raw, list):
        raise _invalid(
            "invalid_attribute_value",
            f'attribute {name!r} must be a string, a number or {{"type": ..., "value": ...}}',
            where,
        )
    dtype: Any
    value: Any
    if isinstance(raw, str):
        dtype, value = "String", raw
    elif isinstance(raw, (int, float)):
        dtype, value = "Number", raw
    else:
        extra = set(raw) - {"type", "value"}
        if extra or "type" not in raw or "value" not in raw:
            raise _invalid(
                "invalid_attribute_value",
                f'attribute {name!r} as an object needs exactly "type" and "value"',
                where,
            )
        dtype, value = raw["type"], raw["value"]
        if (
            not isinstance(dtype, str)
            or len(dtype) > MAX_ATTRIBUTE_TYPE
            or not _ATTR_TYPE.match(dtype)
        ):
            raise _invalid(
                "invalid_attribute_type",
                f"attribute {name!r} has type {str(dtype)[:60]!r}; expected String, Number or "
                "Binary, optionally with a .label (letters, digits, _ - .)",
                where,
            )
    base = dtype.split(".", 1)[0]
    type_bytes = len(dtype.encode())
    if base == "Binary":
        if not isinstance(value, str):
            raise _invalid(
                "invalid_attribute_value", f"Binary attribute {name!r} needs a base64 string", where
            )
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _invalid(
                "invalid_attribute_value", f"Binary attribute {name!r} is not valid base64", where
            ) from exc
        if not data:
            raise _invalid("invalid_attribute_value", f"attribute {name!r} is empty", where)
        return {"DataType": dtype, "BinaryValue": data}, type_bytes + len(data)
    if base == "Number":
        text = _number_text(value, where)
    else:
        if not isinstance(value, str):
            raise _invalid(
                "invalid_attribute_value", f"String attribute {name!r} needs a string value", where
            )
        text = value
        if not text:
            raise _invalid("invalid_attribute_value", f"attribute {name!r} is empty", where)
        _check_characters(text, f"attribute {name!r}", where)
    return {"DataType": dtype, "StringValue": text}, type_bytes + len(text.encode())


def _attribute_name(name: str, where: str) -> None:
    if not _ATTR_NAME.match(name):
        raise _invalid(
            "invalid_attribute_name",
            f"attribute name {name[:60]!r} is not valid: 1-256 of letters, digits, _ - . "
            "(no leading, trailing or double period; not starting with AWS. or Amazon.)",
            where,
        )


def _attributes(raw: Any, where: str) -> tuple[dict[str, dict[str, Any]], int]:
    if raw is None:
        return {}, 0
    if not isinstance(raw, dict):
        raise _invalid("invalid_attributes", "attributes must be an object of name -> value", where)
    if len(raw) > MAX_ATTRIBUTES:
        raise _invalid(
            "too_many_attributes",
            f"{len(raw)} attributes given; SQS allows at most {MAX_ATTRIBUTES}",
            where,
        )
    out: dict[str, dict[str, Any]] = {}
    size = 0
    for name, value in raw.items():
        at = f"{where}.{name}"
        _attribute_name(name, at)
        out[name], n = _attribute(name, value, at)
        size += len(name.encode()) + n
    return out, size


def _identifier(value: Any, code: str, label: str, where: str) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise _invalid(
            code,
            f"{label} must be 1-{MAX_ID_LENGTH} characters of letters, digits and ASCII punctuation",
            where,
        )
    return value


def parse_message(obj: Any, limits: Limits, prefix: str = "") -> OutgoingMessage:
    """Validate one message object (the ``/send`` body or one ``/send-batch`` item)."""
    if not isinstance(obj, dict):
        raise _invalid(
            "invalid_request", 'expected a JSON object with a "message" field', prefix or "$"
        )
    unknown = sorted(set(obj) - FIELDS)
    if unknown:
        raise _invalid(
            "unknown_field",
            f"unknown field(s) {', '.join(map(repr, unknown[:5]))}; allowed: "
            + ", ".join(sorted(FIELDS)),
            prefix + unknown[0],
        )
    if obj.get("message") is None:
        raise _invalid("missing_message", 'the "message" field is required', prefix + "message")
    body = _body(obj["message"])
    if not body:
        raise _invalid("empty_message", "the message must not be empty", prefix + "message")
    _check_characters(body, "the message", prefix + "message")
    attributes, attr_size = _attributes(obj.get("attributes"), prefix + "attributes")
    size = len(body.encode()) + attr_size
    if size > limits.max_message_bytes:
        raise PayloadTooLarge(
            f"message is {size} bytes (UTF-8 body plus attributes); the limit is "
            f"{limits.max_message_bytes}",
            code="message_too_large",
            details={"field": prefix + "message"},
        )
    delay = obj.get("delay_seconds")
    if delay is not None:
        if limits.fifo:
            raise _invalid(
                "delay_not_allowed_on_fifo",
                "delay_seconds cannot be set per message on a FIFO queue (use the queue's delay)",
                prefix + "delay_seconds",
            )
        if (
            isinstance(delay, bool)
            or not isinstance(delay, int)
            or not 0 <= delay <= MAX_DELAY_SECONDS
        ):
            raise _invalid(
                "invalid_delay",
                f"delay_seconds must be an integer from 0 to {MAX_DELAY_SECONDS}",
                prefix + "delay_seconds",
            )
    group_id = obj.get("group_id")
    if group_id is not None:
        group_id = _identifier(group_id, "invalid_group_id", "group_id", prefix + "group_id")
    elif limits.fifo:
        raise _invalid(
            "missing_group_id", "group_id is required on a FIFO queue", prefix + "group_id"
        )
    dedup = obj.get("deduplication_id")
    if dedup is not None:
        if not limits.fifo:
            raise _invalid(
                "deduplication_id_not_allowed",
                "deduplication_id applies only to FIFO queues",
                prefix + "deduplication_id",
            )
        dedup = _identifier(
            dedup, "invalid_deduplication_id", "deduplication_id", prefix + "deduplication_id"
        )
    return OutgoingMessage(
        body=body,
        size=size,
        attributes=attributes,
        delay_seconds=delay,
        group_id=group_id,
        deduplication_id=dedup,
    )


def parse_batch(obj: Any, limits: Limits) -> list[OutgoingMessage]:
    """Validate a ``/send-batch`` body; every invalid item is reported, none is sent."""
    if not isinstance(obj, dict) or not isinstance(obj.get("messages"), list):
        raise _invalid(
            "invalid_request", 'expected a JSON object with a "messages" array', "messages"
        )
    unknown = sorted(set(obj) - {"messages"})
    if unknown:
        raise _invalid(
            "unknown_field", f"unknown field(s) {', '.join(map(repr, unknown[:5]))}", unknown[0]
        )
    items: list[Any] = obj["messages"]
    if not items:
        raise _invalid("empty_batch", '"messages" is empty', "messages")
    if len(items) > limits.max_batch_messages:
        raise PayloadTooLarge(
            f"{len(items)} messages in one request; the limit is {limits.max_batch_messages}",
            code="too_many_messages",
            details={"field": "messages"},
        )
    out: list[OutgoingMessage] = []
    errors: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        try:
            out.append(parse_message(item, limits, prefix=f"messages[{i}]."))
        except ServiceError as exc:
            errors.append(
                {"index": i, "status": exc.status, "error": exc.code, "message": exc.message}
                | exc.details
            )
    if errors:
        raise Unprocessable(
            f"{len(errors)} of {len(items)} messages are invalid; nothing was sent",
            code="invalid_messages",
            details={"errors": errors},
        )
    return out
