"""Fuzz targets for the web seed parsers (BEP 19): ``Content-Range``, ``Retry-After`` and URLs.

Strategy: as in ``targets.py``: each target hands the fuzzer's bytes to the parser and checks
what ``shared/webseed`` promises. Header values are decoded as Latin-1, as HTTP clients hand
them over (every byte is a character); URLs as UTF-8 with replacement, as they come from a
``.torrent`` or a command line.

Rules:
- ``webseed_content_range``: only ``bad_content_range``; a parsed range has
  ``0 <= first <= last`` and ``total`` None or above ``last``, prints back to a value that
  parses the same, and a 206 carrying it for exactly that range reads ``length`` bytes from
  the body's start.
- ``webseed_retry_after``: the first 5 bytes choose the wall clock; never raises; None or
  0..``MAX_RETRY_AFTER``; a value of ASCII digits is that many seconds, capped.
- ``webseed_url``: only ``WebSeedError`` with the reasons ``urls.py`` lists; a checked URL is
  http or https, at most a few times ``MAX_URL_LENGTH`` long (encoding grows it), has no
  control character, fragment or user info, parses again to itself, and a file's path appended
  to it splits back into its components.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import unquote, urlsplit

from tests.fuzz.registry import fuzz_target
from torviz.shared.errors import WebSeedError
from torviz.shared.webseed import (
    MAX_RETRY_AFTER,
    MAX_URL_LENGTH,
    RangeRequest,
    ReadBody,
    file_url,
    interpret_response,
    parse_content_range,
    parse_retry_after,
    parse_web_seed_url,
)

__all__: list[str] = []

_URL_REASONS = {
    "url_too_long",
    "control_character",
    "unsupported_scheme",
    "missing_host",
    "bad_host",
    "user_info_in_url",
    "fragment_in_url",
    "bad_port",
    "bad_percent_encoding",
}
_NOW = 784111777  # Sun, 06 Nov 1994 08:49:37 GMT


def _content_range_seeds() -> Iterator[bytes]:
    yield b"bytes 0-0/1"
    yield b"bytes 1000-1499/10000"
    yield b"bytes 5-9/*"
    yield b"Bytes 0-9223372036854775806/9223372036854775807"
    yield b"bytes */10"
    yield b"bytes 0-1/10, 3-4/10"
    yield b" bytes 0-9/10\t"
    yield b"bytes 9-0/10"


def _retry_after_seeds() -> Iterator[bytes]:
    now = _NOW.to_bytes(5, "big")
    for text in (
        b"120",
        b"Sun, 06 Nov 1994 08:51:37 GMT",
        b"Sunday, 06-Nov-94 08:50:37 GMT",
        b"Sun Nov  6 08:49:47 1994",
        b"Fri, 31 Dec 9999 23:59:59 GMT",
        b"Sun, 06 Nov 1994 08:49:37 +9999",
    ):
        yield now + text


def _url_seeds() -> Iterator[bytes]:
    yield b"http://mirror.com/pub/"
    yield b"http://mirror.com/file.exe"
    yield b"HTTPS://M.com:8443/a b/\xc3\xa9?sig=x%2F"
    yield b"http://[::1]:8080/f"
    yield "http://bücher.example/".encode()
    yield b"http://u:p@m.com/#x"


@fuzz_target(_content_range_seeds, max_len=128)
def fuzz_webseed_content_range(data: bytes) -> None:
    """A ``Content-Range`` value: only ``bad_content_range``; a parsed range is ordered,
    prints back the same, and a 206 carrying it for that range reads it from the start."""
    text = data.decode("latin-1")
    try:
        got = parse_content_range(text)
    except WebSeedError as exc:
        assert exc.reason == "bad_content_range", exc.reason
        assert "\n" not in str(exc)
        return
    assert 0 <= got.first <= got.last, got
    assert got.total is None or got.total > got.last, got
    total = "*" if got.total is None else str(got.total)
    assert parse_content_range(f"bytes {got.first}-{got.last}/{total}") == got
    file_length = got.last + 1 if got.total is None else got.total
    request = RangeRequest(0, "http://m.test/f", got.first, got.length, 0, file_length)
    verdict = interpret_response(request, 206, {"Content-Range": text}, 0.0)
    assert verdict == ReadBody(0, got.length, whole_file=False), verdict


@fuzz_target(_retry_after_seeds, max_len=96)
def fuzz_webseed_retry_after(data: bytes) -> None:
    """A ``Retry-After`` value after 5 bytes of wall clock: never raises, None or bounded, and
    digits are seconds."""
    now = float(int.from_bytes(data[:5], "big"))
    text = data[5:].decode("latin-1")
    got = parse_retry_after(text, now)
    assert got is None or 0.0 <= got <= MAX_RETRY_AFTER, got
    value = text.strip(" \t")
    if value and value.isascii() and value.isdigit() and len(value) <= 64:
        assert got == min(float(int(value)), MAX_RETRY_AFTER), (value, got)


@fuzz_target(_url_seeds, max_len=512)
def fuzz_webseed_url(data: bytes) -> None:
    """A web seed URL: only the documented reasons; a checked URL is clean, stable under a
    second check, and a file's path appended to it splits back into its components."""
    text = data.decode("utf-8", "replace")
    try:
        seed = parse_web_seed_url(text)
    except WebSeedError as exc:
        assert exc.reason in _URL_REASONS, exc.reason
        assert "\n" not in str(exc)
        return
    url = seed.url
    assert len(url) <= 9 * MAX_URL_LENGTH + 64, len(url)
    assert url.isascii() and url.isprintable() and " " not in url, url
    assert seed.scheme in ("http", "https") and "#" not in url
    assert "@" not in seed.netloc
    assert parse_web_seed_url(url) == seed, (url, parse_web_seed_url(url))
    path = ("name é", "d/ir", "f?#%.bin")
    parts = urlsplit(file_url(seed, path, only_file=False))
    assert (parts.scheme, parts.query or None) == (seed.scheme, seed.query or None), parts
    folder = seed.path if seed.is_folder else seed.path + "/"
    assert parts.path.startswith(folder), (parts.path, folder)
    assert [unquote(p) for p in parts.path[len(folder) :].split("/")] == list(path)
