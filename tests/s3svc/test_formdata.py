"""s3svc.formdata, the lean multipart/form-data reader, through its public API: the same parts
and bytes however the body is cut into pieces, RFC 2046's framing rules, aiohttp's header limits,
and pieces handed on without a copy."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable
from typing import Any

import pytest
from aiohttp.streams import EMPTY_PAYLOAD

from s3svc.formdata import (
    MAX_EPILOGUE,
    MAX_LINE,
    FormError,
    FormReader,
    boundary_of,
)

B = "x-B0undary"
DELIM = b"\r\n--" + B.encode()


class Pieces:
    """A ChunkSource that hands out the given pieces, then EOF; ``http_chunks`` adds the
    ``(b"", True)`` that aiohttp returns at the end of each HTTP chunk."""

    def __init__(self, pieces: Iterable[bytes], *, http_chunks: bool = False) -> None:
        self.pieces = [p for p in pieces if p]
        self.http_chunks = http_chunks
        self.taken = 0  # how many pieces were read
        self._end_pending = False

    async def readchunk(self) -> tuple[bytes, bool]:
        if self._end_pending:
            self._end_pending = False
            return b"", True
        if self.taken == len(self.pieces):
            return b"", False
        self.taken += 1
        self._end_pending = self.http_chunks
        return self.pieces[self.taken - 1], False

    def read_nowait(self, n: int = -1) -> bytes:
        """Nothing is ever buffered ahead: each piece arrives on its own."""
        return b""

    def at_eof(self) -> bool:
        return self.taken == len(self.pieces) and not self._end_pending


class Buffered(Pieces):
    """HTTP chunks that have all arrived: read_nowait() hands over every piece still
    buffered, as aiohttp's StreamReader does (its chunk ends passed, it drops)."""

    def __init__(self, pieces: Iterable[bytes]) -> None:
        super().__init__(pieces)
        self.reads = 0

    async def readchunk(self) -> tuple[bytes, bool]:
        """Each piece with the end of its HTTP chunk, as aiohttp reports it."""
        self.reads += 1
        if self.taken == len(self.pieces):
            return b"", False
        self.taken += 1
        return self.pieces[self.taken - 1], True

    def read_nowait(self, n: int = -1) -> bytes:
        assert n == -1
        rest = b"".join(self.pieces[self.taken :])
        self.taken = len(self.pieces)
        return rest


def part(name: str, data: bytes, filename: str | None = None, extra: bytes = b"") -> bytes:
    """One part with its opening delimiter line (no CRLF before it)."""
    disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--{B}\r\nContent-Disposition: {disp}\r\n".encode() + extra + b"\r\n" + data + b"\r\n"


def body(*parts: bytes, close: bytes = b"--" + B.encode() + b"--\r\n") -> bytes:
    return b"".join(parts) + close


async def parse(source: Pieces, size: int = 65536) -> list[tuple[dict[str, str], bytes]]:
    """Every part's headers and data, each read in chunks of at most ``size``."""
    reader = FormReader(source, B)
    out = []
    while (p := await reader.next_part()) is not None:
        data = bytearray()
        while chunk := await p.read_chunk(size):
            assert len(chunk) <= size
            data += chunk
        assert p.at_eof()
        out.append((dict(p.headers), bytes(data)))
    return out


def split_at(data: bytes, *cuts: int) -> list[bytes]:
    edges = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


# File data full of near-delimiters: CR and LF alone, CRLF, "--", the boundary without its
# CRLF, and every proper prefix of the delimiter, the last one right before the real delimiter.
TRICKY = (
    b"\r\r\n\n\r\n-\r\n--\r\n--x-B0und\r\n--x-B0undar"
    + b"--"
    + B.encode()
    + b"\r\n"
    + b"".join(DELIM[:i] + b"." for i in range(1, len(DELIM)))
    + DELIM[:-1]
)
FORM = body(
    b"preamble, ignored\r\n",
    part("note", b"hello"),
    part("file", TRICKY, filename="t.bin", extra=b"Content-Type: application/x-thing\r\n"),
    part("file", b"", filename="empty.bin"),
)
EXPECTED = [
    ({"Content-Disposition": 'form-data; name="note"'}, b"hello"),
    (
        {
            "Content-Disposition": 'form-data; name="file"; filename="t.bin"',
            "Content-Type": "application/x-thing",
        },
        TRICKY,
    ),
    ({"Content-Disposition": 'form-data; name="file"; filename="empty.bin"'}, b""),
]


class Counted:
    """A ChunkSource passed through, failing once readchunk() was called ``limit`` times: a
    reader that never stops asking fails here instead of spinning the event loop."""

    def __init__(self, source: Any, limit: int = 100) -> None:
        self.source, self.limit, self.calls = source, limit, 0

    async def readchunk(self) -> tuple[bytes, bool]:
        self.calls += 1
        assert self.calls <= self.limit, "readchunk() called again and again"
        chunk: tuple[bytes, bool] = await self.source.readchunk()
        return chunk

    def read_nowait(self, n: int = -1) -> bytes:
        data: bytes = self.source.read_nowait(n)
        return data

    def at_eof(self) -> bool:
        return bool(self.source.at_eof())


async def test_an_empty_body_is_refused_every_time() -> None:
    """aiohttp's one reader of every empty body: FormError for each form read from it. After
    its first caller it answers ``(b"", True)`` without ever waiting; a reader that skipped that
    as an HTTP chunk's end hung the whole service on the second empty upload."""
    for _ in range(3):
        with pytest.raises(FormError, match="truncated"):
            await FormReader(Counted(EMPTY_PAYLOAD), B).next_part()


async def test_one_piece() -> None:
    """The whole body in one piece: the parts, their headers and their exact bytes."""
    assert await parse(Pieces([FORM])) == EXPECTED


async def test_cut_in_two_at_every_offset() -> None:
    """Every place a delimiter, a header line or the near-delimiters in the data can be split
    across two pieces gives the same parts."""
    for cut in range(1, len(FORM)):
        assert await parse(Pieces(split_at(FORM, cut))) == EXPECTED, cut


async def test_every_delimiter_cut_in_three() -> None:
    """Each delimiter of the body cut twice, at every pair of offsets within it."""
    starts = [i for i in range(len(FORM)) if FORM.startswith(DELIM, i)]
    assert len(starts) == 4
    for start in starts:
        for a in range(start, start + len(DELIM) + 4):
            for b in range(a + 1, start + len(DELIM) + 5):
                assert await parse(Pieces(split_at(FORM, a, b))) == EXPECTED, (a, b)


async def test_one_byte_at_a_time() -> None:
    """A body that arrives one byte per piece (a drip), with HTTP chunk ends in between."""
    pieces = [FORM[i : i + 1] for i in range(len(FORM))]
    assert await parse(Pieces(pieces, http_chunks=True)) == EXPECTED


async def test_tiny_http_chunks_are_joined_with_what_is_buffered() -> None:
    """A body of 1-byte HTTP chunks is not read a byte at a time: a small chunk is joined
    with the data already buffered after it (it cost ~5 s of CPU per 256 KiB uploaded)."""
    source = Buffered([FORM[i : i + 1] for i in range(len(FORM))])
    assert await parse(source) == EXPECTED
    assert source.reads < 5


@pytest.mark.parametrize("size", [1, 2, 7, len(DELIM), 100])
async def test_small_reads_never_return_more_than_asked(size: int) -> None:
    """read_chunk(size) returns at most ``size`` bytes, however the pieces fall."""
    assert await parse(Pieces(split_at(FORM, 50, 51, 140, 300)), size=size) == EXPECTED


async def test_random_data_and_random_cuts() -> None:
    """Seeded random files of delimiter fragments, cut at random places, read back intact."""
    rng = random.Random(1405)
    alphabet = [b"\r", b"\n", b"-", b"x", B.encode(), DELIM[:-1], DELIM[:5], b"\r\n--"]
    for _ in range(300):
        files = [b"".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 20))) for _ in "ab"]
        while any(DELIM in f for f in files):  # a delimiter would end the data there
            files = [f.replace(DELIM, DELIM[:-1]) for f in files]
        form = body(*(part("file", f, filename=f"{i}") for i, f in enumerate(files)))
        cuts = rng.sample(range(1, len(form)), min(len(form) - 1, rng.randrange(0, 12)))
        got = await parse(Pieces(split_at(form, *cuts)), size=rng.choice([3, 16, 65536]))
        assert [data for _, data in got] == files


async def test_a_piece_of_file_data_is_handed_on_without_a_copy() -> None:
    """A piece that holds only file data is returned as the very object the source gave."""
    big = bytes(range(256)).replace(b"\r", b"r") * 1024
    pieces = [part("file", b"", filename="f")[:-2], big, big, b"\r\n--" + B.encode() + b"--"]
    reader = FormReader(Pieces(pieces), B)
    p = await reader.next_part()
    assert p is not None
    assert await p.read_chunk(len(big)) is big
    assert await p.read_chunk(len(big)) is big
    assert await p.read_chunk(len(big)) == b""
    assert await reader.next_part() is None


async def test_close_delimiter_without_final_crlf_and_garbage_after_it() -> None:
    """The close delimiter may end the body without CRLF; whatever follows it (the epilogue,
    even more delimiters) is read to the body's end, so that the form ends only with a complete
    HTTP message, and never parsed."""
    assert await parse(Pieces([body(part("a", b"1"), close=b"--" + B.encode() + b"--")])) == [
        ({"Content-Disposition": 'form-data; name="a"'}, b"1")
    ]
    source = Pieces([body(part("a", b"1")), b"garbage\r\n" + part("b", b"2") + b"--"])
    assert [h for h, _ in await parse(source)] == [{"Content-Disposition": 'form-data; name="a"'}]
    assert source.taken == 2
    assert source.at_eof()


async def test_the_epilogue_is_bounded() -> None:
    """More than MAX_EPILOGUE bytes after the close delimiter is a malformed form."""
    ok = Pieces([body(part("a", b"1")), b"e" * (MAX_EPILOGUE - 10)])
    assert len(await parse(ok)) == 1
    too_long = Pieces([body(part("a", b"1")), b"e" * MAX_EPILOGUE, b"e" * 100])
    with pytest.raises(FormError, match="after the form's close delimiter"):
        await parse(too_long)


async def test_a_parts_headers_are_bounded_in_total() -> None:
    """Lines within MAX_LINE each, but more than MAX_HEADER_BYTES together: a malformed form."""
    lines = b"".join(b"X-H%d: " % i + b"v" * 4000 + b"\r\n" for i in range(5))
    source = Pieces([b"--" + B.encode() + b"\r\n" + lines + b"\r\n1\r\n--" + B.encode() + b"--"])
    with pytest.raises(FormError, match="headers exceed"):
        await parse(source)


async def test_transport_padding_and_a_body_starting_with_crlf() -> None:
    """Whitespace after a delimiter is padding; a preamble may be just CRLF."""
    form = b"\r\n" + part("a", b"1").replace(b"\r\n", b" \t \r\n", 1) + b"--" + B.encode() + b"--"
    assert await parse(Pieces([form])) == [({"Content-Disposition": 'form-data; name="a"'}, b"1")]


async def test_only_a_close_delimiter_is_a_form_without_parts() -> None:
    assert await parse(Pieces([b"--" + B.encode() + b"--\r\n"])) == []


async def test_an_unread_part_is_skipped_by_next_part() -> None:
    """Moving on skips what is left of a part; the part then reads as ended."""
    reader = FormReader(Pieces(split_at(FORM, 97, 98)), B)
    first = await reader.next_part()
    second = await reader.next_part()
    assert first is not None
    assert second is not None
    assert await first.read_chunk() == b""
    assert first.at_eof()
    assert await second.read_chunk(3) == TRICKY[:3]
    third = await reader.next_part()
    assert third is not None
    assert third.headers["Content-Disposition"].endswith('"empty.bin"')


@pytest.mark.parametrize(
    "form",
    [
        pytest.param(b"", id="empty-body"),
        pytest.param(b"no delimiter at all\r\n", id="no-delimiter"),
        pytest.param(part("a", b"1"), id="no-close-delimiter"),
        pytest.param(part("a", b"12345")[:-4], id="cut-in-data"),
        pytest.param(part("a", b"1") + b"--" + B.encode(), id="cut-after-delimiter"),
        pytest.param(part("a", b"1") + b"--" + B.encode() + b"-", id="cut-in-close-delimiter"),
        pytest.param(part("a", b"1")[:30], id="cut-in-headers"),
        pytest.param(b"--" + B.encode() + b"xyz\r\n\r\n1\r\n", id="boundary-with-a-suffix"),
        pytest.param(b"--" + B.encode() + b"\r\nno colon\r\n\r\n", id="header-without-colon"),
        pytest.param(b"--" + B.encode() + b"\r\n bad: 1\r\n\r\n", id="obs-fold"),
        pytest.param(b"--" + B.encode() + b"\r\nA: \x00\r\n\r\n", id="nul-in-value"),
        pytest.param(b"--" + B.encode() + b"\r\nA: a\rb\r\n\r\n", id="cr-in-value"),
        pytest.param(
            b"--" + B.encode() + b"\r\nContent-Type: a/b\r\nContent-Type: c/d\r\n\r\n",
            id="content-type-twice",
        ),
        pytest.param(
            b"--" + B.encode() + b"\r\nA: " + b"a" * MAX_LINE + b"\r\n\r\n", id="line-too-long"
        ),
        pytest.param(
            b"--" + B.encode() + b"\r\n" + b"A: 1\r\n" * 129 + b"\r\n", id="too-many-headers"
        ),
        pytest.param(b"p" * 70_000 + body(part("a", b"1")), id="preamble-too-long"),
    ],
)
async def test_malformed_or_cut_off_bodies_raise_form_error(form: bytes) -> None:
    """Each is FormError (the web layer's 400 malformed_multipart), whole or a byte at a time."""
    for pieces in ([form], [form[i : i + 1] for i in range(len(form))]):
        with pytest.raises(FormError):
            await parse(Pieces(pieces))


async def test_a_header_value_that_is_not_utf8_reads_as_latin1() -> None:
    """UTF-8 values read as UTF-8; any other bytes as ISO-8859-1, never as lone surrogates,
    which no later step (the key, S3 metadata, logs) could encode again."""
    head = b'Content-Disposition: form-data; name="file"; filename="'
    for raw, text in [(b"caf\xc3\xa9.txt", "café.txt"), (b"caf\xe9.txt", "café.txt")]:
        form = b"--" + B.encode() + b"\r\n" + head + raw + b'"\r\n\r\nz\r\n--' + B.encode() + b"--"
        ((got, _),) = await parse(Pieces([form]))
        assert got["Content-Disposition"] == f'form-data; name="file"; filename="{text}"'
        got["Content-Disposition"].encode("utf-8")  # no lone surrogate


async def test_header_limits_are_inclusive() -> None:
    """A header line of exactly 8190 bytes (CRLF included) and 128 header lines are accepted."""
    line = b"A: " + b"a" * (MAX_LINE - 5) + b"\r\n"
    assert len(line) == MAX_LINE
    headers = line + b"B: 1\r\n" * 127
    form = b"--" + B.encode() + b"\r\n" + headers + b"\r\nz\r\n--" + B.encode() + b"--"
    ((got, data),) = await parse(Pieces([form]))
    assert len(got["A"]) == MAX_LINE - 5
    assert data == b"z"


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        ("multipart/form-data; boundary=abc", "abc"),
        ("multipart/form-data;boundary=----WebKitFormBoundary7MA4", "----WebKitFormBoundary7MA4"),
        ('multipart/form-data; charset=utf-8; BOUNDARY="a b;c"', "a b;c"),
        ("multipart/form-data; boundary=" + "b" * 70, "b" * 70),
    ],
)
def test_boundary_of(content_type: str, boundary: str) -> None:
    assert boundary_of(content_type) == boundary


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data",
        "multipart/form-data; boundary=",
        'multipart/form-data; boundary=""',
        "multipart/form-data; boundary=" + "b" * 71,
        "multipart/form-data; boundary=é",
        'multipart/form-data; boundary="abc',
        'multipart/form-data; boundary="abc\\"',
    ],
)
def test_boundary_of_refuses(content_type: str) -> None:
    with pytest.raises(FormError):
        boundary_of(content_type)
