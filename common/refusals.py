"""How a request that HTTP parsing refused is answered: status, stable code and our own message.

aiohttp's parsers raise ``HttpProcessingError``s whose text quotes the offending bytes; the
answer never does. The connection (``common/connection.py``) uses this for what its parser
refuses before a handler runs, the error middleware for what the body parser refuses while a
handler reads (malformed chunks). Bodies are never decoded (``auto_decompress`` is off in
``common/server.py``), so no ``Content-Encoding`` reaches the parser's decoders.
"""

from __future__ import annotations

from aiohttp.http_exceptions import (
    BadStatusLine,
    ContentLengthError,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
    TransferEncodingError,
)

_HEADER_TOO_LARGE = (
    431,
    "request_header_too_large",
    "the request line or a header field is too long, or there are too many header fields",
)
INVALID_REQUEST_LINE = (
    400,
    "invalid_request_line",
    "the request line is not 'METHOD target HTTP/1.x' with a valid method and target",
)
_INVALID_HEADER = (400, "invalid_header", "a header field is malformed or not allowed")
_INVALID_FRAMING = (
    400,
    "invalid_framing",
    "the body's framing is invalid: Content-Length must be one non-negative integer, "
    "Transfer-Encoding must end in chunked with valid chunks, and a request may not carry both",
)
_MALFORMED = (400, "bad_request", "the request is not valid HTTP/1.1")


def refusal(exc: HttpProcessingError) -> tuple[int, str, str]:
    """(status, stable code, message) for a request aiohttp's parser refused with ``exc``.

    The exception class decides where aiohttp has one; llhttp reports most errors as a plain
    ``BadHttpMessage`` whose first line is its fixed reason ("Invalid character in
    Content-Length", "Transfer-Encoding can't be present with Content-Length"), read for its
    subject only. Anything unrecognised is ``400 bad_request``.
    """
    if isinstance(exc, LineTooLong):
        return _HEADER_TOO_LARGE
    if isinstance(exc, (BadStatusLine, InvalidURLError)):
        return INVALID_REQUEST_LINE
    if isinstance(exc, InvalidHeader):
        return _INVALID_HEADER
    if isinstance(exc, (TransferEncodingError, ContentLengthError)):
        return _INVALID_FRAMING
    reason = parser_reason(exc).lower()
    if "too many headers" in reason:
        return _HEADER_TOO_LARGE
    if any(s in reason for s in ("content-length", "transfer-encoding", "chunk")):
        return _INVALID_FRAMING
    if "header" in reason:
        return _INVALID_HEADER
    if any(s in reason for s in ("method", "version", "url", "status line")):
        return INVALID_REQUEST_LINE
    return _MALFORMED


def parser_reason(exc: HttpProcessingError) -> str:
    """The parser's own reason, for the log: its first line, at most 200 characters (llhttp puts
    the offending bytes on the lines below)."""
    return (exc.message or "").split("\n", 1)[0][:200].rstrip(":")
