"""HTTP(S) tracker announces and scrapes: one bounded GET, its errors as one readable line.

Strategy: ``http.client`` on plain sockets. Under the agent's ``gevent.monkey.patch_all()``
sockets, DNS and ``ssl`` are cooperative, so a GET blocks only its own greenlet; in a plain
process (tests) the same code simply blocks. ``http_get`` follows redirects itself, so every
hop is bounded the same way; ``announce_http`` and ``scrape_http`` build the URL with the
shared codec and parse the reply with it. Parsing a big reply is pure CPU (up to ~0.15 s for
1 MiB of dictionary peers), so the caller may pass ``offload`` to run the parser elsewhere
(the agent uses a thread of the gevent hub's pool, so other greenlets keep running).

Rules:
- One overall deadline for the whole exchange, redirects included: every socket operation
  gets the time that is left, and the body is read in chunks with the deadline checked
  between them. (A server dripping header bytes can still stretch one header read to the
  socket timeout; the agent's own timer around each announce is the hard bound.)
- The body is bounded: a ``Content-Length`` above ``max_body`` is refused before reading,
  and at most ``max_body + 1`` bytes are ever read otherwise.
- Redirects (301, 302, 303, 307, 308) to http or https only, at most ``max_redirects``, and
  a URL seen twice is a loop. Only status 200 is a reply (libtorrent does the same).
- No compression is asked for; the request says ``User-Agent: torviz/<version>``.
- Every failure is a ``TrackerError`` whose ``reason`` names the cause and whose message is
  one short line: "connection refused", "timed out after 15 s", "HTTP 404 Not Found",
  "too many redirects (more than 5)", "response too large (over 1048576 bytes)" ...
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable
from functools import cache
from importlib import metadata
from typing import Protocol, TypeVar

from torviz.shared.errors import TrackerError
from torviz.shared.tracker import (
    MAX_RESPONSE_SIZE,
    AnnounceFailure,
    AnnounceRequest,
    AnnounceResponse,
    ScrapeStats,
    build_announce_url,
    build_scrape_url,
    parse_announce_response,
    parse_scrape_response,
    scrape_url,
)
from torviz.shared.types import InfoHash

__all__ = [
    "MAX_REDIRECTS",
    "REDIRECT_STATUSES",
    "announce_http",
    "describe_network_error",
    "format_seconds",
    "http_get",
    "inline",
    "scrape_http",
    "user_agent",
]

MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

_CHUNK = 64 * 1024
_MAX_REASON = 80  # characters of an HTTP reason phrase kept in an error
_MAX_URL_SHOWN = 120

Clock = Callable[[], float]

_T = TypeVar("_T")


class Offload(Protocol):
    """Runs ``parse(body)`` somewhere and returns its result (or raises its error)."""

    def __call__(self, parse: Callable[[bytes], _T], body: bytes, /) -> _T: ...


def inline(parse: Callable[[bytes], _T], body: bytes, /) -> _T:
    """The default ``Offload``: parse right here."""
    return parse(body)


@cache
def user_agent() -> str:
    """``torviz/<version>`` of the installed package."""
    try:
        version = metadata.version("torviz")
    except metadata.PackageNotFoundError:
        version = "0"
    return f"torviz/{version}"


def format_seconds(seconds: float) -> str:
    """``15`` for 15.0, ``1.5`` for 1.5: how a timeout reads in an error."""
    return f"{seconds:g}"


def _shown(url: str) -> str:
    return url if len(url) <= _MAX_URL_SHOWN else url[: _MAX_URL_SHOWN - 3] + "..."


def describe_network_error(exc: OSError, timeout: float, host: str = "") -> TrackerError:
    """Turn a socket or TLS error into a ``TrackerError`` with one short line.

    Args:
        exc: what the socket layer raised.
        timeout: the exchange's time limit, named in a timeout message.
        host: the tracker's host name, named in a DNS failure.
    """
    match exc:
        case TimeoutError():
            return TrackerError("timed_out", f"timed out after {format_seconds(timeout)} s")
        case ConnectionRefusedError():
            return TrackerError("connection_refused", "connection refused")
        case ConnectionResetError():
            return TrackerError("connection_reset", "connection reset by the tracker")
        case ssl.SSLCertVerificationError():
            detail = exc.verify_message or exc.reason or "verification failed"
            return TrackerError("tls_error", f"TLS certificate rejected: {detail}")
        case ssl.SSLError():
            return TrackerError("tls_error", f"TLS error: {exc.reason or exc.strerror or exc}")
        case socket.gaierror():
            return TrackerError("dns_error", f"cannot resolve {host or 'the host'}: {exc.strerror}")
        case _:
            detail = exc.strerror or str(exc) or type(exc).__name__
            return TrackerError("network_error", f"network error: {detail}")


def _split(url: str) -> tuple[str, str, int, str]:
    """Scheme, host, port and request target (path and query) of an http(s) URL."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TrackerError("bad_url", f"bad tracker URL {_shown(url)!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise TrackerError("bad_url", f"not an http or https URL: {_shown(url)!r}")
    if not parts.hostname:
        raise TrackerError("bad_url", f"tracker URL has no host: {_shown(url)!r}")
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    default_port = 443 if scheme == "https" else 80
    return scheme, parts.hostname, port or default_port, target


def http_get(
    url: str,
    *,
    timeout: float,
    max_body: int = MAX_RESPONSE_SIZE,
    max_redirects: int = MAX_REDIRECTS,
    ssl_context: ssl.SSLContext | None = None,
    clock: Clock = time.monotonic,
    source_address: str | None = None,
) -> bytes:
    """GET ``url`` and return the body of its 200 reply.

    Args:
        url: an http or https URL, already percent-encoded.
        timeout: seconds for the whole exchange, redirects included.
        max_body: bytes of body accepted.
        max_redirects: redirects followed before giving up.
        ssl_context: for https (default: the system's trust store, host names checked).
        clock: monotonic seconds, for the deadline.
        source_address: the local address to connect from (default: the system's choice).

    Raises:
        TrackerError: reasons ``bad_url``, ``timed_out``, ``connection_refused``,
            ``connection_reset``, ``dns_error``, ``tls_error``, ``network_error``,
            ``bad_http``, ``http_status``, ``too_many_redirects``, ``redirect_loop``,
            ``bad_redirect``, ``response_too_large``.
    """
    deadline = clock() + timeout
    seen = {url}
    for _ in range(max_redirects + 1):
        location = _get_once(url, deadline, timeout, max_body, ssl_context, clock, source_address)
        if isinstance(location, bytes):
            return location
        url = location
        if url in seen:
            raise TrackerError("redirect_loop", f"redirect loop at {_shown(url)}")
        seen.add(url)
    raise TrackerError("too_many_redirects", f"too many redirects (more than {max_redirects})")


def _get_once(
    url: str,
    deadline: float,
    timeout: float,
    max_body: int,
    ssl_context: ssl.SSLContext | None,
    clock: Clock,
    source_address: str | None = None,
) -> bytes | str:
    """One request: the body of a 200 reply, or the absolute URL a redirect points to."""
    scheme, host, port, target = _split(url)

    def remaining() -> float:
        left = deadline - clock()
        if left <= 0:
            raise TrackerError("timed_out", f"timed out after {format_seconds(timeout)} s")
        return left

    connection: http.client.HTTPConnection
    source = (source_address, 0) if source_address else None
    if scheme == "https":
        context = ssl_context or ssl.create_default_context()
        connection = http.client.HTTPSConnection(
            host, port, timeout=remaining(), context=context, source_address=source
        )
    else:
        connection = http.client.HTTPConnection(
            host, port, timeout=remaining(), source_address=source
        )
    try:
        connection.putrequest("GET", target, skip_accept_encoding=True)
        connection.putheader("User-Agent", user_agent())
        connection.putheader("Connection", "close")
        connection.endheaders()
        sock = connection.sock  # kept: http.client drops it from the connection on close
        response = connection.getresponse()
        if response.status in REDIRECT_STATUSES:
            return _redirect_target(url, response.getheader("Location"))
        if response.status != 200:
            reason = " ".join(response.reason.split())[:_MAX_REASON]
            raise TrackerError("http_status", f"HTTP {response.status} {reason}".rstrip())
        return _read_body(response, sock, max_body, remaining)
    except http.client.InvalidURL as exc:
        raise TrackerError("bad_url", f"bad tracker URL {_shown(url)!r}: {exc}") from None
    except http.client.RemoteDisconnected:
        raise TrackerError(
            "bad_http", "the tracker closed the connection without a reply"
        ) from None
    except http.client.IncompleteRead:
        raise TrackerError("bad_http", "the tracker's reply was cut short") from None
    except http.client.HTTPException as exc:
        raise TrackerError("bad_http", f"bad HTTP reply ({type(exc).__name__})") from None
    except OSError as exc:
        raise describe_network_error(exc, timeout, host) from None
    finally:
        connection.close()


def _redirect_target(url: str, location: str | None) -> str:
    if not location:
        raise TrackerError("bad_redirect", "redirect without a Location header")
    target = urllib.parse.urljoin(url, location.strip())
    if urllib.parse.urlsplit(target).scheme.lower() not in ("http", "https"):
        raise TrackerError("bad_redirect", f"redirect to a non-HTTP URL: {_shown(target)!r}")
    return target


def _read_body(
    response: http.client.HTTPResponse,
    sock: socket.socket | None,
    max_body: int,
    remaining: Callable[[], float],
) -> bytes:
    too_large = TrackerError("response_too_large", f"response too large (over {max_body} bytes)")
    length = response.getheader("Content-Length")
    if length is not None and length.strip().isdigit() and int(length) > max_body:
        raise too_large
    body = bytearray()
    while len(body) <= max_body:
        if sock is not None:
            sock.settimeout(remaining())
        chunk = response.read1(min(_CHUNK, max_body + 1 - len(body)))
        if not chunk:
            missing = response.length  # what Content-Length promised and never came
            if missing:
                declared = len(body) + missing
                raise TrackerError(
                    "bad_http",
                    f"the tracker's reply was cut short ({len(body)} of {declared} bytes)",
                )
            return bytes(body)
        body += chunk
    raise too_large


def announce_http(
    url: str,
    request: AnnounceRequest,
    *,
    timeout: float,
    ssl_context: ssl.SSLContext | None = None,
    clock: Clock = time.monotonic,
    offload: Offload = inline,
    source_address: str | None = None,
) -> AnnounceResponse | AnnounceFailure:
    """Announce ``request`` to the HTTP(S) tracker at ``url``.

    Returns:
        The tracker's answer, or its refusal (``failure reason``).

    Raises:
        TrackerError: the request failed (see ``http_get``) or the reply is not a valid
            announce reply (``bad_bencode``, ``not_a_dict``, ``bad_field``,
            ``bad_compact_length``).
    """
    body = http_get(
        build_announce_url(url, request),
        timeout=timeout,
        ssl_context=ssl_context,
        clock=clock,
        source_address=source_address,
    )
    return offload(parse_announce_response, body)


def scrape_http(
    announce_url: str,
    info_hash: InfoHash,
    *,
    timeout: float,
    ssl_context: ssl.SSLContext | None = None,
    clock: Clock = time.monotonic,
    offload: Offload = inline,
    source_address: str | None = None,
) -> ScrapeStats:
    """Scrape one torrent's counts from the HTTP(S) tracker announced to at ``announce_url``.

    Raises:
        TrackerError: ``no_scrape`` (the URL has no BEP 48 scrape counterpart),
            ``not_listed`` (the reply does not mention the torrent), the reasons of
            ``http_get``, and those of ``parse_scrape_response`` (``tracker_failure`` ...).
    """
    endpoint = scrape_url(announce_url)
    if endpoint is None:
        raise TrackerError("no_scrape", "the tracker has no scrape URL (BEP 48)")
    body = http_get(
        build_scrape_url(endpoint, [info_hash]),
        timeout=timeout,
        ssl_context=ssl_context,
        clock=clock,
        source_address=source_address,
    )
    stats = offload(parse_scrape_response, body).get(info_hash)
    if stats is None:
        raise TrackerError("not_listed", "the tracker's scrape reply does not list the torrent")
    return stats
