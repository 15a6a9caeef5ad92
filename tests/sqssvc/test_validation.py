"""Every validation rule: status and stable ``error`` code, and nothing reaches the queue.

moto accepts much of what SQS refuses (forbidden characters, 11 attributes, sizes counted in
characters), so these rules are ours; each case here would pass straight through to moto if the
validator let it.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from common.errors import ServiceError
from sqssvc.messages import Limits, parse_message
from tests.sqssvc.conftest import Client, drain

MIB = 1024**2
MakeClient = Callable[..., Awaitable[Client]]


async def post_raw(client: Client, path: str, data: bytes, ctype: str = "application/json") -> Any:
    """POST raw bytes; returns (status, JSON body)."""
    resp = await client.post(path, data=data, headers={"Content-Type": ctype})
    body = await resp.json()
    assert body["request_id"] == resp.headers["X-Request-ID"]
    return resp.status, body


def attrs(n: int) -> dict[str, str]:
    """``n`` valid String attributes."""
    return {f"a{i}": "v" for i in range(n)}


STANDARD_CASES: list[tuple[str, Any, int, str]] = [
    ("missing message", {}, 422, "missing_message"),
    ("null message", {"message": None}, 422, "missing_message"),
    ("not an object", ["hello"], 422, "invalid_request"),
    ("unknown field", {"message": "x", "mesage": "y"}, 422, "unknown_field"),
    ("empty message", {"message": ""}, 422, "empty_message"),
    # 600,000 characters but 1,200,000 UTF-8 bytes: moto would count characters and accept it.
    ("over 1 MiB in UTF-8 bytes", {"message": "é" * 600_000}, 413, "message_too_large"),
    (
        "body + attributes over 1 MiB",
        {"message": "x" * (MIB - 50), "attributes": {"note": "y" * 100}},
        413,
        "message_too_large",
    ),
    ("NUL character", {"message": "a\u0000b"}, 422, "invalid_characters"),
    ("C0 control", {"message": "bell\u0007"}, 422, "invalid_characters"),
    ("U+FFFF", {"message": "\uffff"}, 422, "invalid_characters"),
    ("U+FFFE in a JSON value", {"message": {"k": "\ufffe"}}, 422, "invalid_characters"),
    (
        "forbidden char in attribute",
        {"message": "x", "attributes": {"a": "\u0001"}},
        422,
        "invalid_characters",
    ),
    ("11 attributes", {"message": "x", "attributes": attrs(11)}, 422, "too_many_attributes"),
    (
        "10 attributes (dedup_id takes a slot)",
        {"message": "x", "attributes": attrs(10)},
        422,
        "too_many_attributes",
    ),
    (
        "reserved dedup_id",
        {"message": "x", "attributes": {"dedup_id": "v"}},
        422,
        "reserved_attribute_name",
    ),
    (
        "idempotency_key in a /send body (it is a header)",
        {"message": "x", "idempotency_key": "k"},
        422,
        "unknown_field",
    ),
    ("attributes not an object", {"message": "x", "attributes": ["a"]}, 422, "invalid_attributes"),
    (
        "name AWS.",
        {"message": "x", "attributes": {"AWS.trace": "v"}},
        422,
        "invalid_attribute_name",
    ),
    (
        "name amazon.",
        {"message": "x", "attributes": {"amazon.x": "v"}},
        422,
        "invalid_attribute_name",
    ),
    (
        "name leading period",
        {"message": "x", "attributes": {".a": "v"}},
        422,
        "invalid_attribute_name",
    ),
    (
        "name trailing period",
        {"message": "x", "attributes": {"a.": "v"}},
        422,
        "invalid_attribute_name",
    ),
    (
        "name double period",
        {"message": "x", "attributes": {"a..b": "v"}},
        422,
        "invalid_attribute_name",
    ),
    (
        "name with space",
        {"message": "x", "attributes": {"a b": "v"}},
        422,
        "invalid_attribute_name",
    ),
    (
        "name too long",
        {"message": "x", "attributes": {"n" * 257: "v"}},
        422,
        "invalid_attribute_name",
    ),
    ("empty name", {"message": "x", "attributes": {"": "v"}}, 422, "invalid_attribute_name"),
    (
        "unknown type",
        {"message": "x", "attributes": {"a": {"type": "Text", "value": "v"}}},
        422,
        "invalid_attribute_type",
    ),
    (
        "empty type label",
        {"message": "x", "attributes": {"a": {"type": "String.", "value": "v"}}},
        422,
        "invalid_attribute_type",
    ),
    ("boolean value", {"message": "x", "attributes": {"a": True}}, 422, "invalid_attribute_value"),
    ("null value", {"message": "x", "attributes": {"a": None}}, 422, "invalid_attribute_value"),
    (
        "empty string value",
        {"message": "x", "attributes": {"a": ""}},
        422,
        "invalid_attribute_value",
    ),
    (
        "bad base64",
        {"message": "x", "attributes": {"a": {"type": "Binary", "value": "%%%"}}},
        422,
        "invalid_attribute_value",
    ),
    (
        "empty binary",
        {"message": "x", "attributes": {"a": {"type": "Binary", "value": ""}}},
        422,
        "invalid_attribute_value",
    ),
    (
        "non-numeric Number",
        {"message": "x", "attributes": {"a": {"type": "Number", "value": "abc"}}},
        422,
        "invalid_attribute_value",
    ),
    (
        "Number out of range",
        {"message": "x", "attributes": {"a": 1e200}},
        422,
        "invalid_attribute_value",
    ),
    (
        "Number with 39 digits",
        {"message": "x", "attributes": {"a": {"type": "Number", "value": "1" * 39}}},
        422,
        "invalid_attribute_value",
    ),
    (
        "object value with extra key",
        {"message": "x", "attributes": {"a": {"type": "String", "value": "v", "x": 1}}},
        422,
        "invalid_attribute_value",
    ),
    ("delay negative", {"message": "x", "delay_seconds": -1}, 422, "invalid_delay"),
    ("delay over 900", {"message": "x", "delay_seconds": 901}, 422, "invalid_delay"),
    ("delay fractional", {"message": "x", "delay_seconds": 1.5}, 422, "invalid_delay"),
    ("delay as string", {"message": "x", "delay_seconds": "10"}, 422, "invalid_delay"),
    ("delay boolean", {"message": "x", "delay_seconds": True}, 422, "invalid_delay"),
    (
        "deduplication id on a standard queue",
        {"message": "x", "deduplication_id": "d"},
        422,
        "deduplication_id_not_allowed",
    ),
    ("group id too long", {"message": "x", "group_id": "g" * 129}, 422, "invalid_group_id"),
    # A regex "$" also matches before a final newline; these must not slip through that way.
    (
        "name with a trailing newline",
        {"message": "x", "attributes": {"a\n": "v"}},
        422,
        "invalid_attribute_name",
    ),
    (
        "type with a trailing newline",
        {"message": "x", "attributes": {"a": {"type": "String\n", "value": "v"}}},
        422,
        "invalid_attribute_type",
    ),
    (
        "group id with a trailing newline",
        {"message": "x", "group_id": "g\n"},
        422,
        "invalid_group_id",
    ),
    # Decimal() reads these; SQS does not.
    (
        "Number with underscores",
        {"message": "x", "attributes": {"a": {"type": "Number", "value": "1_000"}}},
        422,
        "invalid_attribute_value",
    ),
    (
        "Number in non-ASCII digits",
        {"message": "x", "attributes": {"a": {"type": "Number", "value": "\u0661\u0662"}}},
        422,
        "invalid_attribute_value",
    ),
    # Names an error must quote, though no UTF-8 encoder can write them as they are.
    ("unknown field: a lone surrogate", {"message": "x", "\ud800": 1}, 422, "unknown_field"),
    (
        "attribute name: a lone surrogate",
        {"message": "x", "attributes": {"a\udc00": "v"}},
        422,
        "invalid_attribute_name",
    ),
]

FIFO_CASES: list[tuple[str, Any, int, str]] = [
    ("group id missing", {"message": "x"}, 422, "missing_group_id"),
    (
        "delay on FIFO",
        {"message": "x", "group_id": "g", "delay_seconds": 0},
        422,
        "delay_not_allowed_on_fifo",
    ),
    ("group id with space", {"message": "x", "group_id": "a b"}, 422, "invalid_group_id"),
    ("group id non-ASCII", {"message": "x", "group_id": "grüße"}, 422, "invalid_group_id"),
    (
        "deduplication id with a trailing newline",
        {"message": "x", "group_id": "g", "deduplication_id": "d\n"},
        422,
        "invalid_deduplication_id",
    ),
    (
        "deduplication id too long",
        {"message": "x", "group_id": "g", "deduplication_id": "d" * 129},
        422,
        "invalid_deduplication_id",
    ),
]


@pytest.mark.parametrize(
    ("payload", "fifo", "status", "code"),
    [pytest.param(p, False, s, c, id=name) for name, p, s, c in STANDARD_CASES]
    + [pytest.param(p, True, s, c, id=name) for name, p, s, c in FIFO_CASES],
)
def test_validator_rule(payload: Any, fifo: bool, status: int, code: str) -> None:
    """The validator refuses each invalid message with its status and stable code."""
    with pytest.raises(ServiceError) as info:
        parse_message(payload, Limits(fifo=fifo, max_message_bytes=MIB, max_batch_messages=100))
    assert (info.value.status, info.value.code) == (status, code)
    assert info.value.details["field"]


async def test_every_rule_over_http(
    make_client: MakeClient, sqs: Any, queue_url: str, fifo_queue_url: str
) -> None:
    """Through the real app, each rule answers its status and code as JSON; nothing is sent."""
    standard = await make_client(queue_url)
    fifo = await make_client(fifo_queue_url)
    mismatches = []
    for client, cases in ((standard, STANDARD_CASES), (fifo, FIFO_CASES)):
        for name, payload, status, code in cases:
            got_status, body = await post_raw(client, "/sqs/send", json.dumps(payload).encode())
            if (got_status, body.get("error")) != (status, code) or not body.get("message"):
                mismatches.append((name, got_status, body))
    assert mismatches == []
    assert await drain(sqs, queue_url) == []
    assert await drain(sqs, fifo_queue_url) == []


BODY_CASES = [
    ("truncated", b'{"message": ', "application/json", 400, "invalid_json"),
    ("empty body", b"", "application/json", 400, "invalid_json"),
    ("NaN", b'{"message": NaN}', "application/json", 400, "invalid_json"),
    ("infinite number", b'{"message": 1e999}', "application/json", 400, "invalid_json"),
    ("not UTF-8", b'{"message": "\xff"}', "application/json", 400, "invalid_json"),
    ("text/plain", b'{"message": "x"}', "text/plain", 415, "unsupported_media_type"),
    ("form", b"message=x", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
]


async def test_body_level_rules(client: Client) -> None:
    """Malformed JSON is 400 invalid_json, a non-JSON media type 415, on /send and /send-batch."""
    mismatches = []
    for path in ("/sqs/send", "/sqs/send-batch"):
        for name, data, ctype, status, code in BODY_CASES:
            got_status, body = await post_raw(client, path, data, ctype)
            if (got_status, body["error"]) != (status, code):
                mismatches.append((path, name, got_status, body))
    assert mismatches == []


async def test_an_answer_repeats_at_most_200_characters_of_a_name(client: Client) -> None:
    """A 3 MB unknown field or attribute name came back whole in the 422 (its message and
    ``field``); the answer now clips what it repeats."""
    for body in (
        {"message": "x", "k" * 100_000: 1},
        {"message": "x", "attributes": {"a" * 100_000: "v"}},
    ):
        resp = await client.post("/sqs/send", json=body)
        answer = await resp.json()
        assert resp.status == 422, answer
        assert len(answer["field"]) <= 220
        assert len(answer["message"]) <= 220


async def test_lone_surrogate_is_refused(client: Client) -> None:
    """A lone surrogate escape is valid JSON text but no character SQS (or UTF-8) can carry."""
    got_status, body = await post_raw(client, "/sqs/send", b'{"message": "a\\ud800"}')
    assert (got_status, body["error"]) == (422, "invalid_characters")


async def test_json_suffix_media_type_is_accepted(client: Client, sqs: Any, queue_url: str) -> None:
    """``application/<x>+json`` is JSON too."""
    got_status, _ = await post_raw(
        client, "/sqs/send", b'{"message": "x"}', "application/vnd.a+json"
    )
    assert got_status == 200
    assert len(await drain(sqs, queue_url)) == 1


async def test_dripping_body_is_cut_off_with_408(
    make_client: MakeClient, make_sqs_settings: Callable[..., Any], sqs: Any, queue_url: str
) -> None:
    """BODY_MIN_RATE applies to sqssvc too: a body that stops after a few bytes, with no grace
    and a rate it cannot meet, is cut off with 408 body_too_slow (not left to the idle timeout,
    set long here), and nothing is sent."""
    from dataclasses import replace

    common = replace(
        make_sqs_settings(queue_url).common,
        body_idle_timeout=30.0,
        body_min_rate=1_000_000,
        body_rate_grace=0.0,
    )
    client = await make_client(queue_url, common=common)
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(
            b"POST /sqs/send HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"message": "'
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), head
        length = int(
            next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")).split(
                b":"
            )[1]
        )
        body = json.loads(await reader.readexactly(length))
        assert body["error"] == "body_too_slow"
    finally:
        writer.close()
    assert await drain(sqs, queue_url) == []


async def test_request_over_max_request_bytes_is_413(
    make_client: MakeClient, queue_url: str
) -> None:
    """A body larger than MAX_REQUEST_BYTES is refused before it is parsed."""
    client = await make_client(queue_url, max_request_bytes=64 * 1024)
    got_status, body = await post_raw(
        client, "/sqs/send", json.dumps({"message": "x" * 70_000}).encode()
    )
    assert (got_status, body["error"]) == (413, "payload_too_large")


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        pytest.param({"messages": "x"}, 422, "invalid_request", id="not a list"),
        pytest.param({}, 422, "invalid_request", id="missing"),
        pytest.param({"messages": []}, 422, "empty_batch", id="empty"),
        pytest.param({"messages": [{"message": "x"}] * 101}, 413, "too_many_messages", id="101"),
        pytest.param(
            {"messages": [{"message": "x"}], "extra": 1}, 422, "unknown_field", id="unknown"
        ),
    ],
)
async def test_send_batch_shape_rules(client: Client, payload: Any, status: int, code: str) -> None:
    """The /send-batch envelope: a non-empty list of at most MAX_BATCH_MESSAGES items."""
    got_status, body = await post_raw(client, "/sqs/send-batch", json.dumps(payload).encode())
    assert (got_status, body["error"]) == (status, code), body


async def test_send_batch_with_invalid_items_sends_nothing(
    client: Client, sqs: Any, queue_url: str
) -> None:
    """One invalid item rejects the whole request (422, every bad index listed); none is sent."""
    messages = [
        {"message": "fine"},
        {"message": "bad\u0000"},
        {"message": "fine too"},
        {"message": "x", "delay_seconds": 1000},
        "not an object",
    ]
    got_status, body = await post_raw(
        client, "/sqs/send-batch", json.dumps({"messages": messages}).encode()
    )
    assert (got_status, body["error"]) == (422, "invalid_messages")
    assert [(e["index"], e["error"]) for e in body["errors"]] == [
        (1, "invalid_characters"),
        (3, "invalid_delay"),
        (4, "invalid_request"),
    ]
    assert body["errors"][1]["field"] == "messages[3].delay_seconds"
    assert body["errors"][2]["field"] == "messages[4]"
    assert await drain(sqs, queue_url) == []


# The dedup_id attribute of a standard queue's message: name, type and 64 hex digits.
DEDUP_BYTES = len("dedup_id") + len("String") + 64


def test_size_counts_utf8_bytes_of_body_and_attributes() -> None:
    """Size = UTF-8 body + each attribute's name, type and value (Binary: decoded bytes), ours
    included (FIFO: none of ours)."""
    limits = Limits(fifo=True, max_message_bytes=MIB, max_batch_messages=100)
    m = parse_message(
        {
            "message": "héllo",  # 6 bytes
            "attributes": {
                "n": 42,  # 1 + len("Number") 6 + 2
                "s": {"type": "String.x", "value": "€"},  # 1 + 8 + 3
                "b": {"type": "Binary", "value": base64.b64encode(b"1234").decode()},  # 1 + 6 + 4
            },
            "group_id": "g",
        },
        limits,
    )
    assert m.size == 6 + (1 + 6 + 2) + (1 + 8 + 3) + (1 + 6 + 4)
    standard = Limits(fifo=False, max_message_bytes=MIB, max_batch_messages=100)
    assert parse_message({"message": "héllo"}, standard).size == 6 + DEDUP_BYTES


def test_dedup_attribute_counts_against_the_limits() -> None:
    """On a standard queue dedup_id takes one of the 10 attribute slots and its bytes count
    in the size; the name is reserved on any queue."""
    standard = Limits(fifo=False, max_message_bytes=MIB, max_batch_messages=100)
    fifo = Limits(fifo=True, max_message_bytes=MIB, max_batch_messages=100)
    assert len(parse_message({"message": "x", "attributes": attrs(9)}, standard).attributes) == 9
    with pytest.raises(ServiceError) as refused:
        parse_message({"message": "x", "attributes": attrs(10)}, standard)
    assert refused.value.code == "too_many_attributes"
    m = parse_message({"message": "x", "attributes": attrs(10), "group_id": "g"}, fifo)
    assert len(m.attributes) == 10
    for limits, extra in ((standard, {}), (fifo, {"group_id": "g"})):
        with pytest.raises(ServiceError) as reserved:
            parse_message({"message": "x", "attributes": {"dedup_id": "mine"}, **extra}, limits)
        assert reserved.value.code == "reserved_attribute_name"


def test_exactly_the_limit_is_accepted() -> None:
    """A message of exactly SQS_MAX_MESSAGE_BYTES passes; one byte more does not (on a standard
    queue the dedup_id attribute counts)."""
    limits = Limits(fifo=False, max_message_bytes=1000, max_batch_messages=100)
    fits = 1000 - DEDUP_BYTES
    assert parse_message({"message": "x" * fits}, limits).size == 1000
    with pytest.raises(ServiceError, match="limit is 1000"):
        parse_message({"message": "x" * (fits + 1)}, limits)


def test_allowed_edge_characters_pass() -> None:
    """Tab, LF, CR, U+D7FF, U+E000, U+FFFD and astral characters are allowed."""
    limits = Limits(fifo=False, max_message_bytes=MIB, max_batch_messages=100)
    text = "\t\n\r \ud7ff\ue000\ufffd\U0001f600\U0010ffff"
    assert parse_message({"message": text}, limits).body == text


def test_the_ends_of_sqs_number_range_pass() -> None:
    """Zero, and magnitudes of exactly 10^126 and 10^-128, either sign."""
    limits = Limits(fifo=False, max_message_bytes=MIB, max_batch_messages=100)
    values = ["0", "-0.0", "1e126", "-1e126", "1e-128", "-1e-128"]
    m = parse_message(
        {
            "message": "x",
            "attributes": {f"n{i}": {"type": "Number", "value": v} for i, v in enumerate(values)},
        },
        limits,
    )
    assert [a["StringValue"] for a in m.attributes.values()] == values


@pytest.mark.parametrize(
    "value",
    [
        "-1e127",
        "1e127",
        "1e-200",
        "-1e-129",
        "1e126000000000",  # abs() in decimal's default context overflowed: a 500
        "1e-999999999999999999",  # ... or underflowed to zero, and passed
        "1E+999999999999999999999999",  # beyond what Decimal() can read
    ],
)
def test_a_number_beyond_sqs_range_is_refused(value: str) -> None:
    """A magnitude above 10^126 or below 10^-128 (no emulator checks this range)."""
    limits = Limits(fifo=False, max_message_bytes=MIB, max_batch_messages=100)
    with pytest.raises(ServiceError) as err:
        parse_message(
            {"message": "x", "attributes": {"a": {"type": "Number", "value": value}}}, limits
        )
    assert err.value.code == "invalid_attribute_value"


def test_number_notations_sqs_accepts_pass() -> None:
    """Signs, a bare fraction, exponents and JSON numbers are Numbers; the text is kept as given."""
    limits = Limits(fifo=False, max_message_bytes=MIB, max_batch_messages=100)
    values: list[Any] = ["-1.5", "+3", ".5", "1.", "1e5", "2.5E-3", 42, 2.5]
    m = parse_message(
        {
            "message": "x",
            "attributes": {f"n{i}": {"type": "Number", "value": v} for i, v in enumerate(values)},
        },
        limits,
    )
    assert [a["DataType"] for a in m.attributes.values()] == ["Number"] * len(values)
    assert [a["StringValue"] for a in m.attributes.values()] == [str(v) for v in values]


def test_group_id_is_allowed_on_standard_queues() -> None:
    """A group id on a standard queue is passed on (SQS fair queues use it)."""
    limits = Limits(fifo=False, max_message_bytes=MIB, max_batch_messages=100)
    assert parse_message({"message": "x", "group_id": "tenant-1"}, limits).group_id == "tenant-1"


def _validator_accepts(payload: dict[str, Any], fifo: bool) -> bool:
    try:
        parse_message(payload, Limits(fifo=fifo, max_message_bytes=MIB, max_batch_messages=100))
    except ServiceError:
        return False
    return True


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("group_id", "order-42"),
        ("group_id", "has space"),
        ("group_id", "x" * 128),
        ("group_id", "x" * 129),
        ("group_id", "tab\there"),
        ("group_id", "ünïcode"),
        ("message", "plain"),
        ("message", "nul\x00"),
        ("message", "\ufffe"),
        ("message", "emoji 🚀"),
        ("attribute", "ok"),
        ("attribute name", "order_id-2.v"),
        ("attribute name", "AWS.trace"),
        ("attribute name", "amazon.x"),
        ("attribute name", ".a"),
        ("attribute name", "a."),
        ("attribute name", "a..b"),
        ("attribute name", "x" * 256),
        ("attribute name", "x" * 257),
        ("attribute name", "dedup_id"),
        ("attribute", ""),
        ("attribute", "ctl\x01"),
    ],
)
def test_openapi_patterns_agree_with_the_validator(field: str, value: str) -> None:
    """The OpenAPI document's patterns come from the validator's: both accept or both refuse."""
    import jsonschema

    from sqssvc.openapi import ATTRIBUTE, MESSAGE

    schema: Any
    payload: dict[str, Any]
    if field == "attribute name":
        schema = MESSAGE["properties"]["attributes"]["propertyNames"]
        payload = {"message": "m", "attributes": {value: "v"}}
    elif field == "attribute":
        schema = ATTRIBUTE["oneOf"][0]
        payload = {"message": "m", "attributes": {"a": value}}
    elif field == "message":
        schema = MESSAGE["properties"]["message"]["anyOf"][0]
        payload = {"message": value}
    else:
        schema = MESSAGE["properties"][field]
        payload = {"message": "m", field: value}
    documented = jsonschema.Draft202012Validator(schema).is_valid(value)
    assert documented is _validator_accepts(payload, fifo=field == "group_id")


@pytest.mark.parametrize(
    "key",
    ["k", "order 42/step-3", "~!x", "x" * 255, "", "x" * 256, "tab\there", "clé", "a\nb"],
)
def test_openapi_idempotency_key_agrees_with_the_validator(key: str) -> None:
    """A /send-batch item's idempotency_key: the document's pattern (shared with the header's,
    from common.idempotency) and the validator accept and refuse the same keys."""
    import jsonschema

    from sqssvc.openapi import ITEM_KEY_SCHEMA

    documented = jsonschema.Draft202012Validator(ITEM_KEY_SCHEMA).is_valid(key)
    limits = Limits(fifo=False, max_message_bytes=MIB, max_batch_messages=100)
    refused: ServiceError | None = None
    try:
        parse_message({"message": "m", "idempotency_key": key}, limits, item=True)
    except ServiceError as exc:
        refused = exc
    assert documented is (refused is None)
    if refused is not None:
        assert (refused.status, refused.code) == (400, "invalid_idempotency_key")


@pytest.mark.parametrize("shape", ["{}", "[]", "[[]]", '{"a":{}}', '"ab"', "1.5", "0"])
def test_parsed_json_stays_within_the_memory_factor(shape: str) -> None:
    """The densest shapes JSON has (nested empty arrays and objects: 56-64 bytes of Python for
    2-4 bytes of text) take at most JSON_MEMORY_FACTOR times their text once parsed: the factor
    that sizes MAX_REQUEST_BYTES against the task's memory (tests/deploy/test_stack.py). A 16 MiB
    body of ``{}`` took sqssvc to 430 MB under the old 16 MiB default."""
    import tracemalloc

    from sqssvc.config import JSON_MEMORY_FACTOR
    from sqssvc.messages import parse_json

    raw = b'{"message":[' + b",".join([shape.encode()] * (MIB // (len(shape) + 1))) + b"]}"
    tracemalloc.start()
    try:
        parsed = parse_json(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert parsed["message"]
    assert peak <= JSON_MEMORY_FACTOR * len(raw)
