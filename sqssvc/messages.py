"""Request bodies of ``/send`` and ``/send-batch``, validated against SQS's rules by our own code.

moto (the emulator) counts characters instead of UTF-8 bytes, ignores attribute sizes, and accepts
forbidden characters and more than 10 attributes, so nothing here may rely on the backend to
refuse a bad message: every rule SQS enforces on a message is checked before it is queued.

A ``message`` string is sent as is; any other JSON value is sent as its compact JSON text.
Bodies are parsed with the stdlib ``json`` (not orjson, which turns integers beyond 64 bits into
doubles): integers keep every digit; decimals are doubles, re-serialised in shortest form.

Attributes map a name to a string (``String``), a number (``Number``) or an object
``{"type": "String|Number|Binary[.label]", "value": ...}`` where a Binary value is base64.

Every message also gets an id that stays the same however often it is sent (botocore's retries,
the batcher's): the scoped digest of the caller's idempotency key, or a random id. On a standard
queue it travels as the ``dedup_id`` String attribute (at-least-once: consumers drop copies by
it), which takes one of the 10 attribute slots and counts in the size; on a FIFO queue it is the
``MessageDeduplicationId`` (a ``deduplication_id`` of the caller wins), so SQS stores one copy.
Reading the request (media type, body size, headers) is the web layer's job (``sqssvc.reading``).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import secrets
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from common.errors import BadRequest, PayloadTooLarge, ServiceError, Unprocessable
from common.idempotency import KEY_PATTERN, scoped_digest

FIELDS = frozenset({"message", "attributes", "delay_seconds", "group_id", "deduplication_id"})
# A /send-batch item also carries its own idempotency key (/send takes it as a header).
ITEM_KEY = "idempotency_key"
ITEM_FIELDS = FIELDS | {ITEM_KEY}
if TYPE_CHECKING:  # the stubs are a dev dependency; the image has no need of them
    from types_aiobotocore_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

MAX_ATTRIBUTES = 10
MAX_DELAY_SECONDS = 900
MAX_ATTRIBUTE_NAME = 256
MAX_ATTRIBUTE_TYPE = 256
MAX_ID_LENGTH = 128
# The String attribute that carries each message's stable id on a standard queue; reserved.
DEDUP_ATTRIBUTE = "dedup_id"
DEDUP_TYPE = "String"

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
_KEY = re.compile(rf"^{KEY_PATTERN}\Z")
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
    deduplication_id: str | None = None  # FIFO: the MessageDeduplicationId
    id_attribute: str | None = None  # standard: the dedup_id attribute's value

    @property
    def dedup_id(self) -> str | None:
        """The id every stored copy of this message carries (None: a FIFO queue deduplicates
        it by content)."""
        return self.deduplication_id or self.id_attribute

    def entry(self, entry_id: str) -> SendMessageBatchRequestEntryTypeDef:
        """This message as a ``SendMessageBatchRequestEntry``."""
        out: SendMessageBatchRequestEntryTypeDef = {"Id": entry_id, "MessageBody": self.body}
        attributes = self.attributes
        if self.id_attribute is not None:
            ours = {"DataType": DEDUP_TYPE, "StringValue": self.id_attribute}
            attributes = attributes | {DEDUP_ATTRIBUTE: ours}
        if attributes:
            out["MessageAttributes"] = attributes  # type: ignore[typeddict-item]  # shape validated by parse_message
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
    # FIFO: the queue deduplicates by content, so a message without a key or deduplication_id
    # is sent without a MessageDeduplicationId (SQS hashes the body) instead of a random one.
    content_deduplication: bool = False


# How much of a client's text an answer repeats (a 3 MB attribute name is not echoed back).
_ECHO = 200


def _clip(text: str) -> str:
    return text if len(text) <= _ECHO else text[:_ECHO] + "..."


def _invalid(code: str, message: str, where: str) -> Unprocessable:
    return Unprocessable(_clip(message), code=code, details={"field": _clip(where)})


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def parse_json(raw: bytes) -> Any:
    """A request body as JSON: 400 ``invalid_json`` unless valid UTF-8 JSON. Parsed, it takes
    up to ``JSON_MEMORY_FACTOR`` times its size (``sqssvc.config``)."""
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


def new_dedup_id() -> str:
    """A random id for a message sent without an idempotency key (64 hex digits, like a keyed
    one, so the dedup_id attribute's size does not depend on which it is)."""
    return secrets.token_hex(32)


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


_NUMBER_MIN, _NUMBER_MAX = Decimal("1e-128"), Decimal("1e126")


def _number_text(value: Any, where: str) -> str:
    """A Number attribute's value: SQS allows 38 significant digits, and a magnitude from
    10^-128 to 10^+126 (or zero): its "between 10^-128 and 10^+126", read as DynamoDB spells
    out its own number range. No emulator checks this; the tests check our side of it."""
    text = str(value).strip() if isinstance(value, (str, int, float)) else ""
    if isinstance(value, bool) or not text:
        raise _invalid("invalid_attribute_value", "a Number attribute needs a numeric value", where)
    if not _NUMBER.fullmatch(text):
        raise _invalid("invalid_attribute_value", f"{text[:40]!r} is not a number", where)
    try:
        number = Decimal(text)
    except InvalidOperation:  # an exponent beyond what decimal can hold
        number = Decimal("Infinity")
    # Significant digits without leading/trailing zeros (not normalize(): it rounds to 28).
    digits = len("".join(map(str, number.as_tuple().digits)).strip("0")) or 1
    # copy_abs() and the comparisons are exact: abs() would round in the default context,
    # overflowing at 1e126000000000 and taking 1e-999999999999999999 for zero.
    size = number.copy_abs()
    if digits > 38 or size > _NUMBER_MAX or (size and size < _NUMBER_MIN):
        raise _invalid(
            "invalid_attribute_value",
            "a Number attribute allows 38 significant digits and a magnitude from 10^-128 to "
            "10^126 (or zero)",
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


def _attributes(raw: Any, where: str, slots: int) -> tuple[dict[str, dict[str, Any]], int]:
    """The caller's attributes and their size; ``slots`` is how many the caller may use."""
    if raw is None:
        return {}, 0
    if not isinstance(raw, dict):
        raise _invalid("invalid_attributes", "attributes must be an object of name -> value", where)
    if len(raw) > slots:
        ours = "" if slots == MAX_ATTRIBUTES else f", one of them {DEDUP_ATTRIBUTE} (added by us)"
        raise _invalid(
            "too_many_attributes",
            f"{len(raw)} attributes given; at most {slots} are allowed (SQS allows "
            f"{MAX_ATTRIBUTES}{ours})",
            where,
        )
    out: dict[str, dict[str, Any]] = {}
    size = 0
    for name, value in raw.items():
        at = f"{where}.{name}"
        if name == DEDUP_ATTRIBUTE:
            raise _invalid(
                "reserved_attribute_name",
                f"attribute name {DEDUP_ATTRIBUTE!r} is reserved: the service sets it to the "
                "message's stable id",
                at,
            )
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


def _item_key(value: Any, where: str) -> str:
    """A ``/send-batch`` item's ``idempotency_key``: the Idempotency-Key header's rule."""
    if not isinstance(value, str) or not _KEY.match(value):
        raise BadRequest(
            f"{ITEM_KEY} must be 1 to 255 printable ASCII characters",
            code="invalid_idempotency_key",
            details={"field": where},
        )
    return value


def parse_message(
    obj: Any,
    limits: Limits,
    prefix: str = "",
    *,
    key: str | None = None,
    scope: str = "",
    item: bool = False,
) -> OutgoingMessage:
    """Validate one message object and give it its stable id (see the module's docstring).

    ``obj`` is the ``/send`` body, whose idempotency key (the header's) is ``key``, or, with
    ``item``, one ``/send-batch`` item, which may carry its own ``idempotency_key``. ``scope`` is
    the caller's (``common.auth.caller``): equal keys of two callers are different keys.
    """
    if not isinstance(obj, dict):
        raise _invalid(
            "invalid_request",
            'expected a JSON object with a "message" field',
            prefix.removesuffix(".") or "$",
        )
    allowed = ITEM_FIELDS if item else FIELDS
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise _invalid(
            "unknown_field",
            f"unknown field(s) {', '.join(map(repr, unknown[:5]))}; allowed: "
            + ", ".join(sorted(allowed)),
            prefix + unknown[0],
        )
    if item and obj.get(ITEM_KEY) is not None:
        key = _item_key(obj[ITEM_KEY], prefix + ITEM_KEY)
    if obj.get("message") is None:
        raise _invalid("missing_message", 'the "message" field is required', prefix + "message")
    body = _body(obj["message"])
    if not body:
        raise _invalid("empty_message", "the message must not be empty", prefix + "message")
    _check_characters(body, "the message", prefix + "message")
    # A standard queue's messages carry dedup_id, which takes one of SQS's attribute slots.
    slots = MAX_ATTRIBUTES if limits.fifo else MAX_ATTRIBUTES - 1
    attributes, attr_size = _attributes(obj.get("attributes"), prefix + "attributes", slots)
    stable = scoped_digest(key, scope) if key is not None else None
    id_attribute = None
    ours = ""
    if not limits.fifo:
        id_attribute = stable or new_dedup_id()
        extra = len(DEDUP_ATTRIBUTE) + len(DEDUP_TYPE) + len(id_attribute)
        attr_size += extra
        ours = f", the {extra}-byte {DEDUP_ATTRIBUTE} attribute included"
    size = len(body.encode()) + attr_size
    if size > limits.max_message_bytes:
        raise PayloadTooLarge(
            f"message is {size} bytes (UTF-8 body plus attributes{ours}); the limit is "
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
    if limits.fifo:
        # The caller's deduplication_id wins, then the key's digest; without either, a random
        # id unless the queue deduplicates by content. Every resend carries the same one.
        if dedup is None and stable is None and not limits.content_deduplication:
            stable = new_dedup_id()
        if dedup is None:
            dedup = stable
    return OutgoingMessage(
        body=body,
        size=size,
        attributes=attributes,
        delay_seconds=delay,
        group_id=group_id,
        deduplication_id=dedup,
        id_attribute=id_attribute,
    )


def parse_batch(obj: Any, limits: Limits, scope: str = "") -> list[OutgoingMessage]:
    """Validate a ``/send-batch`` body; every invalid item is reported, none is sent.

    Each item may carry its own ``idempotency_key`` (scoped by ``scope``, as for ``/send``); two
    items of one request with the same key are refused, as one of them would be dropped.
    """
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
    keys: set[str] = set()
    dedup_ids: set[tuple[str | None, str]] = set()
    for i, item in enumerate(items):
        prefix = f"messages[{i}]."
        try:
            message = parse_message(item, limits, prefix, scope=scope, item=True)
            out.append(message)
            key = item.get(ITEM_KEY)  # a valid key or None: parse_message checked it
            if key in keys:
                raise _invalid(
                    "duplicate_idempotency_key",
                    f"an earlier item of this request has the same {ITEM_KEY}",
                    prefix + ITEM_KEY,
                )
            if key is not None:
                keys.add(key)
            # A FIFO queue keeps one message per deduplication id (given, or made from the
            # item's idempotency key) for 5 minutes, per queue or (high throughput) per group:
            # within one group, the other would be answered 200 and never stored.
            if message.deduplication_id is not None:
                dedup = (message.group_id, message.deduplication_id)
                if dedup in dedup_ids:
                    raise _invalid(
                        "duplicate_deduplication_id",
                        "an earlier item of this request has the same group_id and "
                        "deduplication_id; SQS would store only one of them",
                        prefix + "deduplication_id",
                    )
                dedup_ids.add(dedup)
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
