"""Response heads of Range requests: verdicts, strict Content-Range, Retry-After forms."""

from __future__ import annotations

import email.utils

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torviz.shared.errors import WebSeedError
from torviz.shared.webseed import (
    MAX_RETRY_AFTER,
    ContentRange,
    FileMissing,
    RangeRequest,
    ReadBody,
    RetryLater,
    SlowDown,
    UrlBroken,
    interpret_response,
    parse_content_range,
    parse_retry_after,
    request_headers,
)

# Sun, 06 Nov 1994 08:49:37 GMT: RFC 9110's example date.
NOW = 784111777.0
REQUEST = RangeRequest(2, "http://m.test/t/f", 1000, 500, 64, 10_000)


def verdict(status: int, **headers: str) -> object:
    fields = {name.replace("_", "-"): value for name, value in headers.items()}
    return interpret_response(REQUEST, status, fields, NOW)


def refused(status: int, **headers: str) -> WebSeedError:
    with pytest.raises(WebSeedError) as caught:
        verdict(status, **headers)
    assert "\n" not in str(caught.value)
    return caught.value


def test_request_headers() -> None:
    assert request_headers(REQUEST) == {"Range": "bytes=1000-1499", "Accept-Encoding": "identity"}


# --- 206 -------------------------------------------------------------------------------------


def test_206_matching_the_request_is_read_from_the_start() -> None:
    got = verdict(206, Content_Range="bytes 1000-1499/10000", Content_Length="500")
    assert got == ReadBody(skip=0, length=500, whole_file=False)


def test_206_header_names_are_case_insensitive_and_total_may_be_unknown() -> None:
    got = interpret_response(REQUEST, 206, {"CONTENT-RANGE": "bytes 1000-1499/*"}, NOW)
    assert got == ReadBody(0, 500, False)


@pytest.mark.parametrize(
    ("headers", "reason", "words"),
    [
        ({}, "missing_content_range", "without a Content-Range"),
        ({"Content_Range": "bytes 1000-1498/10000"}, "content_range_mismatch", "1000-1498"),
        ({"Content_Range": "bytes 0-499/10000"}, "content_range_mismatch", "sent bytes 0-499"),
        ({"Content_Range": "bytes 1000-1499/9999"}, "file_length_mismatch", "9999 bytes"),
        ({"Content_Range": "bytes 1000-1499/20000"}, "file_length_mismatch", "20000"),
        (
            {"Content_Range": "bytes 1000-1499/10000", "Content_Length": "10000"},
            "content_length_mismatch",
            "Content-Length 10000",
        ),
        (
            {"Content_Range": "bytes 1000-1499/10000", "Content_Length": "-500"},
            "bad_content_length",
            "-500",
        ),
        (
            {"Content_Type": "multipart/byteranges; boundary=X"},
            "multipart_response",
            "multipart",
        ),
        (
            {"Content_Range": "bytes 1000-1499/10000", "Content_Encoding": "gzip"},
            "content_encoding",
            "gzip",
        ),
        ({"Content_Range": "bytes 1000-1499/10000, 0-1/10000"}, "bad_content_range", "several"),
    ],
)
def test_206_that_does_not_fit_is_refused(headers: dict[str, str], reason: str, words: str) -> None:
    error = refused(206, **headers)
    assert error.reason == reason
    assert words in str(error)


# --- 200: a server that ignores Range ------------------------------------------------------


def test_200_is_the_whole_file_so_the_reader_skips_to_the_offset() -> None:
    assert verdict(200, Content_Length="10000") == ReadBody(1000, 500, whole_file=True)
    assert verdict(200) == ReadBody(1000, 500, whole_file=True)  # chunked: no length to check
    assert verdict(200, Content_Encoding="identity") == ReadBody(1000, 500, True)


def test_200_of_another_length_is_another_file() -> None:
    error = refused(200, Content_Length="9000")
    assert error.reason == "file_length_mismatch"
    assert str(error) == "file is 9000 bytes on the server, 10000 in the torrent"


def test_200_compressed_is_refused() -> None:
    assert refused(200, Content_Encoding="br").reason == "content_encoding"


# --- other statuses --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (404, FileMissing(404, "HTTP 404 Not Found: the file is not on this server")),
        (410, FileMissing(410, "HTTP 410 Gone: the file is not on this server")),
        (
            416,
            FileMissing(
                416, "HTTP 416 Requested Range Not Satisfiable: the file is shorter on this server"
            ),
        ),
        (429, SlowDown(429, "HTTP 429 Too Many Requests", None)),
        (503, SlowDown(503, "HTTP 503 Service Unavailable", None)),
        (500, RetryLater(500, "HTTP 500 Internal Server Error", None)),
        (502, RetryLater(502, "HTTP 502 Bad Gateway", None)),
        (599, RetryLater(599, "HTTP 599", None)),
        (408, RetryLater(408, "HTTP 408 Request Timeout", None)),
        (403, UrlBroken(403, "HTTP 403 Forbidden")),
        (400, UrlBroken(400, "HTTP 400 Bad Request")),
        (451, UrlBroken(451, "HTTP 451 Unavailable For Legal Reasons")),
        (302, UrlBroken(302, "HTTP 302 Found")),
        (204, UrlBroken(204, "HTTP 204 No Content")),
        (100, UrlBroken(100, "HTTP 100 Continue")),
        (999, UrlBroken(999, "HTTP 999")),
    ],
)
def test_status_verdicts(status: int, expected: object) -> None:
    assert verdict(status) == expected


def test_slow_down_and_retry_carry_retry_after() -> None:
    assert verdict(503, Retry_After="120") == SlowDown(503, "HTTP 503 Service Unavailable", 120.0)
    assert verdict(429, retry_after="Sun, 06 Nov 1994 08:50:07 GMT") == SlowDown(
        429, "HTTP 429 Too Many Requests", 30.0
    )
    assert verdict(500, Retry_After="soon") == RetryLater(
        500, "HTTP 500 Internal Server Error", None
    )


# --- Content-Range, strictly -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bytes 0-0/1", ContentRange(0, 0, 1)),
        ("bytes 1000-1499/10000", ContentRange(1000, 1499, 10000)),
        ("bytes 5-9/*", ContentRange(5, 9, None)),
        ("Bytes 0-9/10", ContentRange(0, 9, 10)),
        (" bytes 0-9/10\t", ContentRange(0, 9, 10)),
        ("bytes 007-9/10", ContentRange(7, 9, 10)),
        ("bytes 0-9223372036854775806/9223372036854775807", ContentRange(0, 2**63 - 2, 2**63 - 1)),
    ],
)
def test_content_range_parses(text: str, expected: ContentRange) -> None:
    assert parse_content_range(text) == expected
    assert expected.length == expected.last - expected.first + 1


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "is not 'bytes first-last/total'"),
        ("bytes", "is not 'bytes first-last/total'"),
        ("items 0-9/10", "is not 'bytes first-last/total'"),
        ("bytes=0-9/10", "is not 'bytes first-last/total'"),
        ("bytes -5-9/10", "first byte '' is not a number"),
        ("bytes 0--9/10", "last byte '-9' is not a number"),
        ("bytes 0-9/-10", "total '-10' is not a number"),
        ("bytes 0-9/10/10", "total '10/10' is not a number"),
        ("bytes  0-9/10", "first byte ' 0' is not a number"),
        ("bytes 0 -9/10", "first byte '0 ' is not a number"),
        ("bytes 0- 9/10", "last byte ' 9' is not a number"),
        ("bytes 0-9 /10", "last byte '9 ' is not a number"),
        ("bytes 0-9/ 10", "total ' 10' is not a number"),
        ("bytes +0-9/10", "first byte '+0' is not a number"),
        ("bytes 0x0-9/10", "is not a number"),
        ("bytes 0-9.0/10", "is not a number"),
        ("bytes \u0660-\u0669/\u0661\u0660", "is not a number"),  # Arabic-Indic digits
        ("bytes 0_0-9/10", "is not a number"),
        ("bytes 0-9", "has no '/total'"),
        ("bytes 09/10", "is not 'first-last'"),
        ("bytes */10", "no range"),
        ("bytes 0-9/*/*", "is not a number"),
        ("bytes 9-0/10", "first byte 9 after last byte 0"),
        ("bytes 0-10/10", "last byte 10 beyond a total of 10 bytes"),
        ("bytes 0-9/0", "beyond a total of 0"),
        ("bytes 0-1/10, 3-4/10", "several ranges"),
        ("bytes 0-1,3-4/10", "several ranges"),
        ("bytes 0-99999999999999999999/*", "last byte has over 19 digits"),
        ("bytes 0-1/99999999999999999999", "total has over 19 digits"),
        ("bytes 0-1/" + "9" * 100, "over 100 characters"),
    ],
)
def test_content_range_hostile(text: str, words: str) -> None:
    with pytest.raises(WebSeedError) as caught:
        parse_content_range(text)
    assert caught.value.reason == "bad_content_range"
    assert words in str(caught.value), str(caught.value)
    assert str(caught.value).startswith("bad Content-Range: ")


@given(st.integers(0, 2**61), st.integers(0, 2**61), st.integers(1, 2**61))
def test_content_range_round_trip(first: int, span: int, extra: int) -> None:
    last = first + span
    total = last + extra
    assert parse_content_range(f"bytes {first}-{last}/{total}") == ContentRange(first, last, total)


@given(st.text(max_size=120))
def test_content_range_any_text_parses_or_is_refused(text: str) -> None:
    try:
        got = parse_content_range(text)
    except WebSeedError as exc:
        assert exc.reason == "bad_content_range"
        return
    assert 0 <= got.first <= got.last and (got.total is None or got.last < got.total)


# --- Retry-After -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("120", 120.0),
        ("0", 0.0),
        (" 5 ", 5.0),
        ("3600", 3600.0),
        ("3601", MAX_RETRY_AFTER),
        ("9" * 60, MAX_RETRY_AFTER),
        ("Sun, 06 Nov 1994 08:49:37 GMT", 0.0),  # IMF-fixdate, now
        ("Sun, 06 Nov 1994 08:51:37 GMT", 120.0),
        ("Sunday, 06-Nov-94 08:50:37 GMT", 60.0),  # RFC 850
        ("Sun Nov  6 08:49:47 1994", 10.0),  # asctime
        ("Sun, 06 Nov 1994 08:49:36 GMT", 0.0),  # the past: go now
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0),
        ("Fri, 31 Dec 9999 23:59:59 GMT", MAX_RETRY_AFTER),
    ],
)
def test_retry_after_forms(text: str, seconds: float) -> None:
    assert parse_retry_after(text, NOW) == seconds


@pytest.mark.parametrize(
    "text",
    [
        "",
        "  ",
        "soon",
        "-5",
        "1.5",
        "1e3",
        "+5",
        "\u0661\u0662",  # Arabic-Indic digits
        "0x10",
        "5 s",
        "Sun, 06 Nov 1994 25:00:00 GMT",
        "Sun, 32 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 +9999",
        "1" * 65,
        "Sun, 06 Nov 1994 08:49:37 GMT" + " " * 40 + "x",
    ],
)
def test_retry_after_garbage_is_none(text: str) -> None:
    assert parse_retry_after(text, NOW) is None


@given(st.text(max_size=80), st.floats(0, 2**40))
def test_retry_after_is_bounded_or_none(text: str, now: float) -> None:
    got = parse_retry_after(text, now)
    assert got is None or 0.0 <= got <= MAX_RETRY_AFTER


@given(st.integers(0, 10_000))
def test_retry_after_date_is_measured_from_now(delta: int) -> None:
    date = email.utils.formatdate(NOW + delta, usegmt=True)
    assert parse_retry_after(date, NOW) == min(float(delta), MAX_RETRY_AFTER)
