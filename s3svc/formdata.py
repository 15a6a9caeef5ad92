"""Reading a multipart/form-data body (RFC 7578, RFC 2046) as a sequence of parts, lean.

The reader works over anything with a ``readchunk()`` like aiohttp's ``StreamReader`` (public
API only) and touches each file byte as little as it can: a piece of the body that holds no
delimiter is handed on as it is, without a copy; the delimiter (``CRLF "--" boundary``) is
searched for in each piece in place; and only a piece's last few bytes that could be the start
of a delimiter (at most ``len(delimiter) - 1``) are held back until the next piece shows
whether they are one. aiohttp's own ``BodyPartReader`` copies each byte about three times.

The rules it keeps: the preamble before the first delimiter is skipped (bounded), transport
padding (whitespace) may follow a delimiter, the close delimiter adds ``--`` and whatever
follows it (the epilogue) is never read, and a body that ends before the close delimiter is
malformed. Part headers are parsed as aiohttp parses them (a line at most 8190 bytes, at most
128 lines, names are tokens, no control characters in values, no obsolete line folding), but
a value that is not UTF-8 is read as ISO-8859-1, not with aiohttp's lone surrogates.
Content-Transfer-Encoding and a part's Content-Length are ignored, as RFC 7578 says (section
4.7, 4.8); the bytes are handed on as sent. No web layer: errors are :class:`FormError`.
"""

from __future__ import annotations

import re
from typing import Protocol

from multidict import CIMultiDict, CIMultiDictProxy

# aiohttp's limits for request and part headers.
MAX_LINE = 8190
MAX_HEADERS = 128
# All of a part's header lines together: a form part needs three short ones, and a request held
# open while it drips its data must not keep a megabyte of headers (128 lines of 8 KiB) alive.
MAX_HEADER_BYTES = 16 * 1024
# After the close delimiter: an epilogue is for non-MIME readers, and the body is read to its end
# so that only a complete HTTP message is committed.
MAX_EPILOGUE = 64 * 1024
# A preamble is for non-MIME readers; no client sends much, and skipping must not be free.
MAX_PREAMBLE = 64 * 1024
# An HTTP chunk smaller than this is joined with the data buffered after it.
SMALL_PIECE = 8 * 1024
# RFC 2046 section 5.1.1: a boundary has 1 to 70 characters.
MAX_BOUNDARY = 70

_TOKEN_RE = re.compile(r"[0-9A-Za-z!#$%&'*+\-.^_`|~]+")
# RFC 9110 section 5.5: no control characters in a field value but HTAB (aiohttp's rule).
_FORBIDDEN_CTL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# Headers that may appear once (aiohttp refuses a second one in its header parser).
_SINGLETON = frozenset(
    {
        "content-length",
        "content-location",
        "content-range",
        "content-type",
        "etag",
        "host",
        "max-forwards",
        "server",
        "transfer-encoding",
        "user-agent",
    }
)
# One parameter of a media type: its name, then the content of a quoted string (group 2) or a
# token (group 3; one that starts with a quote is an unclosed quoted string).
_PARAM_RE = re.compile(r';\s*([^\s=;]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s;]*))\s*')


def _decode_value(raw: bytes) -> str:
    """A part header value as text: UTF-8 (what browsers send) when it is valid UTF-8, else
    ISO-8859-1 (RFC 9110 section 5.5: historically allowed; curl sends a filename's bytes as
    the file system has them). Never ``surrogateescape`` (aiohttp's choice): its lone
    surrogates cannot be encoded again, so a Latin-1 filename failed the S3 call, a 500 after
    the request's other files were stored."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class FormError(ValueError):
    """The body is not well-formed multipart/form-data (or was cut off)."""


class ChunkSource(Protocol):
    """Where the body comes from: aiohttp's ``StreamReader`` (``request.content``) fits."""

    async def readchunk(self) -> tuple[bytes, bool]:
        """The next buffered piece and whether it ends an HTTP chunk; ``(b"", False)`` at EOF."""
        ...

    def read_nowait(self, n: int = -1) -> bytes:
        """Whatever is buffered already (``b""`` when nothing is), without waiting."""
        ...

    def at_eof(self) -> bool:
        """True once the body was read to its end."""
        ...


def boundary_of(content_type: str) -> str:
    """The ``boundary`` parameter of a multipart ``Content-Type`` value; FormError without a
    usable one (missing, empty, over 70 characters, or not printable ASCII)."""
    _, sep, params = content_type.partition(";")
    boundary: str | None = None
    for match in _PARAM_RE.finditer(sep + params):
        if match.group(1).lower() == "boundary":
            quoted, token = match.group(2), match.group(3)
            if quoted is not None:
                boundary = re.sub(r"\\(.)", r"\1", quoted)
            elif token.startswith('"'):
                raise FormError(f"unclosed quote in the boundary of {content_type!r}")
            else:
                boundary = token
            break
    if boundary is None:
        raise FormError(f"no boundary in Content-Type {content_type!r}")
    if not 0 < len(boundary) <= MAX_BOUNDARY:
        raise FormError(f"the boundary must have 1 to {MAX_BOUNDARY} characters")
    # The search below relies on CR appearing in a delimiter only as its first byte.
    if not (boundary.isascii() and boundary.isprintable()):
        raise FormError("the boundary must be printable ASCII")
    return boundary


class Part:
    """One part of the form: its headers, and its data through :meth:`read_chunk`."""

    def __init__(self, reader: FormReader, headers: CIMultiDictProxy[str]) -> None:
        self.headers = headers
        self._reader = reader

    async def read_chunk(self, size: int = 65536) -> bytes:
        """Up to ``size`` bytes of the part's data (often a piece of the body as it arrived,
        not copied); ``b""`` at its end, and after the reader has moved on to another part."""
        if self._reader.current is not self:
            return b""
        return await self._reader.read_data(size)

    def at_eof(self) -> bool:
        """True once the part's data was read to its delimiter."""
        return self._reader.current is not self or not self._reader.in_data


class FormReader:
    """Reads a multipart/form-data body part after part: ``while (part := await
    reader.next_part()) is not None: ...``."""

    def __init__(
        self,
        source: ChunkSource,
        boundary: str,
        *,
        max_line: int = MAX_LINE,
        max_headers: int = MAX_HEADERS,
        max_preamble: int = MAX_PREAMBLE,
    ) -> None:
        self._source = source
        self._delim = b"\r\n--" + boundary.encode("ascii")
        self._max_line = max_line
        self._max_headers = max_headers
        self._max_preamble = max_preamble
        # Unparsed bytes are _buf[_pos:]. The body is read as if it began with CRLF, so the
        # first delimiter, which may open the body, is found by the same search as the others.
        self._buf = b"\r\n"
        self._pos = 0
        # Where the data in _buf ends (-1: not searched yet); a delimiter starts there when
        # _delim_at_end, else _buf[_end:] might start one and is held back as _tail.
        self._end = -1
        self._delim_at_end = False
        # Bytes held back from the end of a piece: a proper prefix of the delimiter.
        self._tail = b""
        # Bytes that turned out to be data after being held back, to hand on first.
        self._known = b""
        self.in_data = True  # inside the preamble's or a part's data
        self.current: Part | None = None
        self._started = False
        self._closed = False

    async def next_part(self) -> Part | None:
        """The next part, its headers read; None after the close delimiter. Whatever is left
        of the current part's data is skipped first."""
        if self._closed:
            return None
        self.current = None
        if not self._started:
            self._started = True
            await self._skip_preamble()
        while self.in_data:  # the caller left the last part unread
            await self.read_data(65536)
        if await self._peek(2) == b"--":
            # The close delimiter. The body must still end as its framing says (Content-Length
            # reached, or the last chunk): a request cut off after it is not committed.
            self._closed = True
            await self._skip_epilogue()
            return None
        if (await self._line()).strip():
            raise FormError("unexpected bytes after a boundary delimiter")
        self.in_data = True
        self.current = Part(self, await self._headers())
        return self.current

    async def read_data(self, size: int) -> bytes:
        """Up to ``size`` bytes of the current data; ``b""`` once its delimiter is reached
        (the delimiter itself is consumed)."""
        size = max(size, 1)
        while self.in_data:
            if self._known:
                chunk, self._known = self._known[:size], self._known[size:]
                return chunk
            if self._end < 0:
                if self._pos == len(self._buf) and not await self._next_piece():
                    continue
                self._search()
            if self._pos < self._end:
                stop = min(self._end, self._pos + size)
                chunk = self._buf[self._pos : stop]  # the whole piece itself when it is all data
                self._pos = stop
                return chunk
            if self._delim_at_end:
                self._pos = self._end + len(self._delim)
                self._end = -1
                self.in_data = False
            else:
                self._tail = self._buf[self._end :]
                self._buf, self._pos, self._end = b"", 0, -1
        return b""

    async def _next_piece(self) -> bool:
        """Take the next piece into _buf. False when it settled the held-back tail instead:
        the delimiter was completed (the data ended), or the tail proved to be data."""
        piece = await self._read_piece()
        if not piece:
            raise FormError("the body ended before the form's close delimiter (truncated)")
        tail, self._tail = self._tail, b""
        if not tail:
            self._buf, self._pos = piece, 0
            return True
        if len(tail) + len(piece) < len(self._delim):
            # Too short to decide: join the two (both small) and search again.
            self._buf, self._pos = tail + piece, 0
            return True
        # The tail is a prefix of the delimiter starting at its only CR, so a delimiter can
        # begin in the tail only at its first byte: compare the rest with the piece's head.
        need = len(self._delim) - len(tail)
        if piece[:need] == self._delim[len(tail) :]:
            self._buf, self._pos, self._end = piece, need, -1
            self.in_data = False
        else:
            self._buf, self._pos = piece, 0
            self._known = tail
        return False

    def _search(self) -> None:
        """Find where the data in _buf[_pos:] ends: at a delimiter, or before a tail that
        might begin one, or at the piece's end."""
        buf, delim = self._buf, self._delim
        at = buf.find(delim, self._pos)
        if at >= 0:
            self._end, self._delim_at_end = at, True
            return
        self._delim_at_end = False
        # Only a suffix starting at a CR can begin a delimiter, and only the last CR's.
        cr = buf.rfind(b"\r", max(self._pos, len(buf) - len(delim) + 1))
        self._end = cr if cr >= 0 and delim.startswith(buf[cr:]) else len(buf)

    async def _skip_preamble(self) -> None:
        skipped = 0
        while chunk := await self.read_data(65536):
            skipped += len(chunk)
            if skipped > self._max_preamble:
                raise FormError(f"more than {self._max_preamble} bytes before the first boundary")

    async def _skip_epilogue(self) -> None:
        skipped = len(self._buf) - self._pos - 2
        self._buf, self._pos = b"", 0
        while piece := await self._read_piece():
            skipped += len(piece)
            if skipped > MAX_EPILOGUE:
                raise FormError(f"more than {MAX_EPILOGUE} bytes after the form's close delimiter")

    async def _read_piece(self) -> bytes:
        """The next piece of the body; ``b""`` at its end. readchunk() hands over one HTTP
        chunk at a time, so a small chunk is joined with what is buffered after it: a body
        of 1-byte chunks would otherwise cost a pass through the reader and the upload
        engine per byte (~5 s of CPU per 256 KiB), ten times aiohttp's own reading.

        ``(b"", True)`` (an HTTP chunk's end) is skipped, but not at the body's end: aiohttp's
        shared reader of empty bodies answers it forever after its first caller, and since
        readchunk() then never waits, skipping it there spun the event loop at 100 % CPU."""
        while True:
            piece, end_of_http_chunk = await self._source.readchunk()
            small = piece and end_of_http_chunk and len(piece) < SMALL_PIECE
            if small and (more := self._source.read_nowait()):
                return b"".join((piece, more))
            if piece or not end_of_http_chunk or self._source.at_eof():
                return piece

    async def _peek(self, n: int) -> bytes:
        """The next ``n`` unparsed bytes (fewer at the body's end), left unparsed."""
        while len(self._buf) - self._pos < n:
            piece = await self._read_piece()
            if not piece:
                break
            self._buf, self._pos = self._buf[self._pos :] + piece, 0
        return self._buf[self._pos : self._pos + n]

    async def _line(self) -> bytes:
        """The next line, through its LF; FormError when longer than the limit or cut off."""
        line = bytearray()
        while True:
            nl = self._buf.find(b"\n", self._pos, self._pos + self._max_line - len(line))
            end = nl + 1 if nl >= 0 else min(len(self._buf), self._pos + self._max_line)
            line += memoryview(self._buf)[self._pos : end]
            self._pos = end
            if nl >= 0:
                return bytes(line)
            if len(line) >= self._max_line:
                raise FormError(f"a part header line is longer than {self._max_line} bytes")
            self._buf, self._pos = await self._read_piece(), 0
            if not self._buf:
                raise FormError("the body ended inside a part's headers (truncated)")

    async def _headers(self) -> CIMultiDictProxy[str]:
        """A part's header lines up to the empty line, parsed as aiohttp parses them."""
        headers: CIMultiDict[str] = CIMultiDict()
        size = 0
        for _ in range(self._max_headers + 1):
            raw = (await self._line()).removesuffix(b"\n").removesuffix(b"\r")
            if not raw:
                return CIMultiDictProxy(headers)
            size += len(raw)
            if size > MAX_HEADER_BYTES:
                raise FormError(f"a part's headers exceed {MAX_HEADER_BYTES} bytes")
            bname, colon, bvalue = raw.partition(b":")
            name = bname.decode("utf-8", "surrogateescape")
            if not colon or not _TOKEN_RE.fullmatch(name):
                raise FormError(f"invalid part header line {raw[:100]!r}")
            value = _decode_value(bvalue.strip(b" \t"))
            if _FORBIDDEN_CTL_RE.search(value):
                raise FormError(f"a control character in part header {name!r}")
            if name.lower() in _SINGLETON and name in headers:
                raise FormError(f"part header {name!r} appears twice")
            headers.add(name, value)
        raise FormError(f"more than {self._max_headers} header lines in a part")
