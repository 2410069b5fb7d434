"""HTTP(S) tracker announces and scrapes: one bounded GET, its errors as one readable line.

Strategy: the GET itself is ``shared.runtime.http.HttpClient`` (urllib3, keep-alive pools,
one overall deadline, bounded body, redirects, TLS always verified); this module builds the
URL with the shared codec, asks for status 200 only (libtorrent does the same), parses the
reply, and turns an ``HttpError`` into a ``TrackerError`` with the same reason and line. The
agent owns one client (its ``bind_address`` and ``ca_file``) and passes it in; without one,
a default client of this process is used. Parsing a big reply is pure CPU (up to ~0.15 s for
1 MiB of dictionary peers), so the caller may pass ``offload`` to run the parser elsewhere
(the agent uses a thread of the gevent hub's pool, so other greenlets keep running).

Rules:
- Every failure is a ``TrackerError`` whose ``reason`` names the cause and whose message is
  one short line: "connection refused", "timed out after 15 s", "HTTP 404 Not Found",
  "too many redirects (more than 5)", "response too large (over 1048576 bytes)" ...
- A reply body is at most ``MAX_RESPONSE_SIZE`` bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Protocol, TypeVar

from torviz.shared.errors import TrackerError
from torviz.shared.runtime import http
from torviz.shared.runtime.http import (
    MAX_REDIRECTS,
    REDIRECT_STATUSES,
    HttpClient,
    HttpError,
    format_seconds,
    user_agent,
)
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
    "CONNECTIONS_PER_TRACKER",
    "MAX_REDIRECTS",
    "PEER_NAME",
    "REDIRECT_STATUSES",
    "announce_http",
    "default_client",
    "describe_network_error",
    "format_seconds",
    "http_get",
    "inline",
    "scrape_http",
    "tracker_client",
    "user_agent",
]

PEER_NAME = "the tracker"
"""How the HTTP client's messages name the server."""

CONNECTIONS_PER_TRACKER = 50
"""Announces and scrapes in flight at once to one tracker host (others wait for a connection,
within their own timeout). A session starting with many torrents on one tracker announces
them all at once; libtorrent's ``max_concurrent_http_announces`` is 50 too (for all trackers)."""

_T = TypeVar("_T")


class Offload(Protocol):
    """Runs ``parse(body)`` somewhere and returns its result (or raises its error)."""

    def __call__(self, parse: Callable[[bytes], _T], body: bytes, /) -> _T: ...


def inline(parse: Callable[[bytes], _T], body: bytes, /) -> _T:
    """The default ``Offload``: parse right here."""
    return parse(body)


def tracker_client(*, ca_file: str = "", source_address: str | None = None) -> HttpClient:
    """An HTTP client for trackers: messages name "the tracker".

    Args:
        ca_file: PEM CA certificates trusted besides the system's (``[tracker_agent] ca_file``).
        source_address: the local address announces leave from (None: the system's choice).

    Raises:
        HttpError: ``bad_ca_file``.
    """
    return HttpClient(
        ca_file=ca_file,
        source_address=source_address,
        max_per_host=CONNECTIONS_PER_TRACKER,
        peer_name=PEER_NAME,
    )


@cache
def default_client() -> HttpClient:
    """The process's tracker client when the caller has none (system trust store only)."""
    return tracker_client()


def _tracker_error(exc: HttpError) -> TrackerError:
    return TrackerError(exc.reason, exc.message)


def describe_network_error(exc: OSError, timeout: float, host: str = "") -> TrackerError:
    """Turn a socket or TLS error into a ``TrackerError`` with one short line.

    Args:
        exc: what the socket layer raised.
        timeout: the exchange's time limit, named in a timeout message.
        host: the tracker's host name, named in a DNS failure.
    """
    return _tracker_error(http.describe_network_error(exc, timeout, host, PEER_NAME))


def http_get(
    url: str,
    *,
    timeout: float,
    client: HttpClient | None = None,
    max_body: int = MAX_RESPONSE_SIZE,
    max_redirects: int = MAX_REDIRECTS,
) -> bytes:
    """GET ``url`` and return the body of its 200 reply.

    Args:
        url: an http or https URL, already percent-encoded.
        timeout: seconds for the whole exchange, redirects included.
        client: the HTTP client (default: ``default_client()``).
        max_body: bytes of body accepted.
        max_redirects: redirects followed before giving up.

    Raises:
        TrackerError: the reasons of ``HttpClient.get``.
    """
    try:
        reply = (client or default_client()).get(
            url, timeout=timeout, max_body=max_body, max_redirects=max_redirects
        )
    except HttpError as exc:
        raise _tracker_error(exc) from None
    return reply.body


def announce_http(
    url: str,
    request: AnnounceRequest,
    *,
    timeout: float,
    client: HttpClient | None = None,
    offload: Offload = inline,
) -> AnnounceResponse | AnnounceFailure:
    """Announce ``request`` to the HTTP(S) tracker at ``url``.

    Returns:
        The tracker's answer, or its refusal (``failure reason``).

    Raises:
        TrackerError: the request failed (see ``http_get``) or the reply is not a valid
            announce reply (``bad_bencode``, ``not_a_dict``, ``bad_field``,
            ``bad_compact_length``).
    """
    body = http_get(build_announce_url(url, request), timeout=timeout, client=client)
    return offload(parse_announce_response, body)


def scrape_http(
    announce_url: str,
    info_hash: InfoHash,
    *,
    timeout: float,
    client: HttpClient | None = None,
    offload: Offload = inline,
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
    body = http_get(build_scrape_url(endpoint, [info_hash]), timeout=timeout, client=client)
    stats = offload(parse_scrape_response, body).get(info_hash)
    if stats is None:
        raise TrackerError("not_listed", "the tracker's scrape reply does not list the torrent")
    return stats
