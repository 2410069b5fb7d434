"""What an HTTP response head means for one Range request to a web seed.

Strategy: the HTTP client (``shared/runtime/http.py``) follows redirects and hands over the
final status and headers; ``interpret_response`` turns them into one verdict of a closed union
(read the body, the file is missing, slow down, retry later, the URL is broken) and raises
``WebSeedError`` when the reply breaks the request's contract, so that no byte of a wrong range
ever reaches a piece buffer. Nothing here reads a body: the verdict tells the reader how many
bytes to skip and how many to read, so a server that ignores Range is streamed past, never held
in memory.

Rules:
- 206: ``Content-Range: bytes first-last/total`` must be present and name exactly the range
  asked for, and the total (unless ``*``) the file's length in the torrent; a ``Content-Length``
  must equal the range's length. The parse is strict (one space after ``bytes``, ASCII digits
  only, at most 19 of them, ``first <= last < total``, one range): a multipart reply is refused.
- 200 (the server ignored Range): the body is the whole file from byte 0; the reader skips
  ``file_offset`` bytes and reads ``length``. Only when a ``Content-Length``, if any, equals the
  file's length in the torrent: a different file behind the same URL is refused at once.
- A ``Content-Encoding`` other than ``identity`` is refused on both (the offsets would be those
  of the encoded bytes); ``request_headers`` asks for ``identity``.
- 404, 410: the file is missing on that server (``FileMissing``); so is 416, a file shorter
  there than in the torrent. 429, 503: ``SlowDown``, with ``Retry-After`` when given. 408, 425
  and other 5xx: ``RetryLater``. Other 4xx and any status not listed (1xx, other 2xx, a 3xx the
  client did not follow): ``UrlBroken``.
- ``WebSeedError`` reasons: ``missing_content_range``, ``bad_content_range``,
  ``content_range_mismatch``, ``file_length_mismatch``, ``bad_content_length``,
  ``content_length_mismatch``, ``multipart_response``, ``content_encoding``.
- ``parse_retry_after`` reads delta seconds or an HTTP-date against the wall clock passed in,
  bounded to 0..``MAX_RETRY_AFTER``; anything else (garbage, over 64 characters) is None.
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from http import HTTPStatus
from typing import NoReturn

from torviz.shared.errors import WebSeedError
from torviz.shared.webseed.ranges import RangeRequest

__all__ = [
    "MAX_RETRY_AFTER",
    "ContentRange",
    "FileMissing",
    "ReadBody",
    "ResponseVerdict",
    "RetryLater",
    "SlowDown",
    "UrlBroken",
    "interpret_response",
    "parse_content_range",
    "parse_retry_after",
    "request_headers",
]

MAX_RETRY_AFTER = 3600.0
"""The longest wait a ``Retry-After`` can ask for, in seconds; longer asks are cut to this."""

_MAX_DIGITS = 19  # 2**63 has 19 digits: no real file is longer
_MAX_CONTENT_RANGE = 100
_MAX_RETRY_AFTER_TEXT = 64


@dataclass(frozen=True, slots=True)
class ContentRange:
    """A parsed ``Content-Range: bytes first-last/total``.

    Attributes:
        first: the first byte of the range.
        last: the last byte of the range (inclusive, ``>= first``).
        total: the whole file's length (``> last``), or None for ``*`` (unknown).
    """

    first: int
    last: int
    total: int | None

    @property
    def length(self) -> int:
        """Bytes in the range."""
        return self.last - self.first + 1


@dataclass(frozen=True, slots=True)
class ReadBody:
    """The body holds the bytes: skip ``skip`` bytes from its start, then read ``length``.

    Attributes:
        skip: bytes to read past first (0 for a 206; the range's file offset for a 200).
        length: bytes to read into the buffer.
        whole_file: the server sent the whole file (200): once ``length`` bytes are read,
            close the connection rather than drain the rest of the file to reuse it.
    """

    skip: int
    length: int
    whole_file: bool


@dataclass(frozen=True, slots=True)
class FileMissing:
    """The file is not on that server (404, 410, 416): disable the URL for this file only.

    Attributes:
        status: the HTTP status.
        message: one line for status and logs.
    """

    status: int
    message: str


@dataclass(frozen=True, slots=True)
class SlowDown:
    """The server is overloaded or rate-limits us (429, 503): fewer requests, and wait.

    Attributes:
        status: the HTTP status.
        message: one line for status and logs.
        retry_after: the server's ``Retry-After`` in seconds (bounded), or None.
    """

    status: int
    message: str
    retry_after: float | None


@dataclass(frozen=True, slots=True)
class RetryLater:
    """A passing server error (5xx, 408, 425): retry after a back-off.

    Attributes:
        status: the HTTP status.
        message: one line for status and logs.
        retry_after: the server's ``Retry-After`` in seconds (bounded), or None.
    """

    status: int
    message: str
    retry_after: float | None


@dataclass(frozen=True, slots=True)
class UrlBroken:
    """A status that retrying will not fix (other 4xx, an unexpected status): give up the URL.

    Attributes:
        status: the HTTP status.
        message: one line for status and logs.
    """

    status: int
    message: str


ResponseVerdict = ReadBody | FileMissing | SlowDown | RetryLater | UrlBroken
"""Every meaning a response head can have."""


def request_headers(request: RangeRequest) -> dict[str, str]:
    """The headers a web seed request carries besides the client's own.

    Args:
        request: the planned request.

    Returns:
        ``Range`` for the request's bytes and ``Accept-Encoding: identity``.
    """
    return {"Range": request.range_header, "Accept-Encoding": "identity"}


def interpret_response(
    request: RangeRequest, status: int, headers: Mapping[str, str], now_wall: float
) -> ResponseVerdict:
    """What the response head to ``request`` means.

    Args:
        request: the request the response answers.
        status: the final HTTP status (after the client's redirects).
        headers: the response headers; names are matched case-insensitively. A repeated
            field arrives joined with ", " (as urllib3's ``HTTPHeaderDict`` gives it), which
            the strict parses refuse.
        now_wall: the wall clock (seconds since the epoch), for a ``Retry-After`` date.

    Returns:
        The verdict.

    Raises:
        WebSeedError: a 200 or 206 that does not fit the request (reasons in the module
            comment).
    """
    fields = {name.lower(): value for name, value in headers.items()}
    if status in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
        encoding = fields.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise WebSeedError(
                "content_encoding", f"server sent Content-Encoding {encoding[:40]!r}, not identity"
            )
        if status == HTTPStatus.PARTIAL_CONTENT:
            return _partial(request, fields)
        return _whole_file(request, fields)
    message = _status_line(status)
    if status in (HTTPStatus.NOT_FOUND, HTTPStatus.GONE):
        return FileMissing(status, f"{message}: the file is not on this server")
    if status == HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE:
        return FileMissing(status, f"{message}: the file is shorter on this server")
    retry_after = _retry_after(fields, now_wall)
    if status in (HTTPStatus.TOO_MANY_REQUESTS, HTTPStatus.SERVICE_UNAVAILABLE):
        return SlowDown(status, message, retry_after)
    if status in (HTTPStatus.REQUEST_TIMEOUT, HTTPStatus.TOO_EARLY) or 500 <= status <= 599:
        return RetryLater(status, message, retry_after)
    return UrlBroken(status, message)


def parse_content_range(text: str) -> ContentRange:
    """Parse a ``Content-Range`` header of a single-range 206 reply, strictly.

    Args:
        text: the header's value.

    Returns:
        The range.

    Raises:
        WebSeedError: ``bad_content_range``, the message naming what is wrong.
    """
    if len(text) > _MAX_CONTENT_RANGE:
        _bad_range(f"over {_MAX_CONTENT_RANGE} characters")
    value = text.strip(" \t")
    unit, space, rest = value.partition(" ")
    if not space or unit.lower() != "bytes":
        _bad_range(f"{value[:40]!r} is not 'bytes first-last/total'")
    if "," in rest:
        _bad_range("several ranges")
    span, slash, total_text = rest.partition("/")
    if not slash:
        _bad_range(f"{value[:40]!r} has no '/total'")
    if span == "*":
        _bad_range("no range (bytes */total)")
    first_text, dash, last_text = span.partition("-")
    if not dash:
        _bad_range(f"{span[:40]!r} is not 'first-last'")
    first = _number(first_text, "first byte")
    last = _number(last_text, "last byte")
    total = None if total_text == "*" else _number(total_text, "total")
    if first > last:
        _bad_range(f"first byte {first} after last byte {last}")
    if total is not None and last >= total:
        _bad_range(f"last byte {last} beyond a total of {total} bytes")
    return ContentRange(first, last, total)


def parse_retry_after(text: str, now_wall: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP-date).

    Args:
        text: the header's value.
        now_wall: the wall clock (seconds since the epoch) a date is measured from.

    Returns:
        The wait in seconds within 0..``MAX_RETRY_AFTER`` (a date in the past is 0), or None
        for a value that is neither form.
    """
    value = text.strip(" \t")
    if not value or len(value) > _MAX_RETRY_AFTER_TEXT:
        return None
    if value.isascii() and value.isdigit():
        return min(float(int(value)), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:  # "-0000": UTC, as HTTP-dates always are
            when = when.replace(tzinfo=UTC)
        delay = when.timestamp() - now_wall
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    return min(max(delay, 0.0), MAX_RETRY_AFTER)


def _partial(request: RangeRequest, fields: Mapping[str, str]) -> ReadBody:
    if fields.get("content-type", "").strip().lower().startswith("multipart/"):
        raise WebSeedError("multipart_response", "server answered one range with a multipart body")
    text = fields.get("content-range")
    if text is None:
        raise WebSeedError("missing_content_range", "206 reply without a Content-Range")
    got = parse_content_range(text)
    if (got.first, got.last) != (request.file_offset, request.last_byte):
        raise WebSeedError(
            "content_range_mismatch",
            f"asked for bytes {request.file_offset}-{request.last_byte}, "
            f"server sent bytes {got.first}-{got.last}",
        )
    if got.total is not None and got.total != request.file_length:
        _length_mismatch(got.total, request)
    _check_content_length(fields, request.length, "the range")
    return ReadBody(0, request.length, whole_file=False)


def _whole_file(request: RangeRequest, fields: Mapping[str, str]) -> ReadBody:
    if "content-length" in fields:
        length = _content_length(fields["content-length"])
        if length != request.file_length:
            _length_mismatch(length, request)
    return ReadBody(request.file_offset, request.length, whole_file=True)


def _check_content_length(fields: Mapping[str, str], expected: int, what: str) -> None:
    if "content-length" not in fields:
        return
    length = _content_length(fields["content-length"])
    if length != expected:
        raise WebSeedError(
            "content_length_mismatch",
            f"Content-Length {length} for {what} of {expected} bytes",
        )


def _content_length(text: str) -> int:
    value = text.strip(" \t")
    if not (value.isascii() and value.isdigit()) or len(value) > _MAX_DIGITS:
        raise WebSeedError("bad_content_length", f"bad Content-Length {value[:30]!r}")
    return int(value)


def _length_mismatch(length: int, request: RangeRequest) -> NoReturn:
    raise WebSeedError(
        "file_length_mismatch",
        f"file is {length} bytes on the server, {request.file_length} in the torrent",
    )


def _number(text: str, what: str) -> int:
    if not (text.isascii() and text.isdigit()):
        _bad_range(f"{what} {text[:30]!r} is not a number")
    if len(text) > _MAX_DIGITS:
        _bad_range(f"{what} has over {_MAX_DIGITS} digits")
    return int(text)


def _bad_range(why: str) -> NoReturn:
    raise WebSeedError("bad_content_range", f"bad Content-Range: {why}")


def _retry_after(fields: Mapping[str, str], now_wall: float) -> float | None:
    text = fields.get("retry-after")
    return None if text is None else parse_retry_after(text, now_wall)


def _status_line(status: int) -> str:
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"
