"""UDP tracker announces and scrapes (BEP 15, BEP 41 URL data): the socket side of an exchange.

Strategy: one UDP socket per exchange, ``connect()``ed to the tracker's address, so the
kernel drops datagrams from anyone else and no demultiplexer is needed; each exchange runs in
its own greenlet (the agent's) and owns its socket from open to close. What to send when,
and what a reply means, is decided by the pure ``UdpExchange`` (``core/udp_exchange.py``); this
module only moves its datagrams and sleeps until its deadline:

- Connection ids are cached per tracker address (any torrent) for CONNECTION_ID_LIFETIME (60)
  seconds and handed to later exchanges; an id the tracker refuses is dropped.
- Retransmission follows BEP 15 (``RetransmitPolicy``: 15 * 2^n s, n up to 8). An announce
  runs the whole schedule unless given a ``timeout``; it is the agent that stops *waiting*
  for it after ``announce_timeout`` (see ``agent.py``). ``stopped`` announces and scrapes
  are given a timeout, so they never linger.
- An error packet is the tracker refusing us: an announce returns an ``AnnounceFailure``, as
  over HTTP; a scrape raises ``TrackerError`` (``tracker_error``).
- IPv4 and IPv6: the reply's peer format (6 or 18 bytes) follows the socket's family.
- Errors are ``TrackerError`` with one short line ("connection refused", "no reply after 9
  tries", ...). An ICMP port-unreachable shows up on the connected socket as ECONNREFUSED.
"""

from __future__ import annotations

import os
import socket
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from torviz.shared.errors import TrackerError
from torviz.shared.tracker import (
    AnnounceFailure,
    AnnounceRequest,
    AnnounceResponse,
    ScrapeStats,
    UdpAnnounceRequest,
    UdpAnnounceResponse,
    UdpScrapeRequest,
    UdpScrapeResponse,
    UdpTrackerError,
    decode_announce_response,
    decode_scrape_response,
    encode_request,
)
from torviz.shared.types import InfoHash

from .core.udp_exchange import Connection, RetransmitPolicy, UdpExchange
from .http_client import describe_network_error

__all__ = ["MAX_CACHED_CONNECTIONS", "UdpTracker", "UdpTrackerClient", "parse_udp_url"]

MAX_CACHED_CONNECTIONS = 4096
"""Tracker addresses whose connection id is remembered; the oldest is forgotten first."""

_RECV_SIZE = 65_536  # larger than any UDP payload: a datagram is never cut

_R = TypeVar("_R")

Clock = Callable[[], float]
Address = tuple[str, int] | tuple[str, int, int, int]


@dataclass(frozen=True, slots=True)
class UdpTracker:
    """Where a ``udp://`` URL points: host, port and the BEP 41 URL data (path and query)."""

    host: str
    port: int
    url_data: bytes


def parse_udp_url(url: str) -> UdpTracker:
    """Split ``udp://host:port/path?query``.

    Raises:
        TrackerError: ``bad_url``: not udp, no host, or no valid port.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TrackerError("bad_url", f"bad tracker URL: {exc}") from None
    if parts.scheme.lower() != "udp" or not parts.hostname or not port:
        raise TrackerError("bad_url", "a UDP tracker URL needs udp://host:port")
    path = parts.path if parts.path not in ("", "/") else ""
    data = f"{path}?{parts.query}" if parts.query else path
    return UdpTracker(parts.hostname, port, data.encode("utf-8"))


def _random_u32() -> int:
    return int.from_bytes(os.urandom(4), "big")


class UdpTrackerClient:
    """Announces to and scrapes UDP trackers; one instance serves every greenlet of the agent.

    Args:
        policy: the retransmit schedule (default: BEP 15's 15 * 2^n s, n up to 8).
        clock: monotonic seconds (connection-id ages, deadlines).
        random_u32: draws transaction ids.
        source_address: the local address to send from (default: the system's choice); used
            for trackers of the same address family.
    """

    def __init__(
        self,
        *,
        policy: RetransmitPolicy | None = None,
        clock: Clock = time.monotonic,
        random_u32: Callable[[], int] = _random_u32,
        source_address: str | None = None,
    ) -> None:
        self.policy = policy or RetransmitPolicy()
        self._source = source_address
        self._clock = clock
        self._random_u32 = random_u32
        self._connections: dict[Address, Connection] = {}
        self.connects = 0
        """Connect requests that got an answer (for tests and logs)."""

    def announce(
        self, url: str, request: AnnounceRequest, *, timeout: float | None = None
    ) -> AnnounceResponse | AnnounceFailure:
        """Announce ``request`` to the UDP tracker at ``url``.

        Args:
            url: ``udp://host:port[/path?query]``.
            request: what to announce.
            timeout: seconds after which to give up; None: when the retransmit schedule ends.

        Returns:
            The tracker's answer, or its refusal (an error packet).

        Raises:
            TrackerError: ``bad_url``, ``timed_out``, ``connection_refused``, ``dns_error``,
                ``network_error``, ``wrong_transaction`` (too many stray replies), or a codec
                reason for a malformed reply (``truncated``, ``wrong_action``,
                ``bad_compact_length`` ...).
        """
        tracker = parse_udp_url(url)

        def encode(connection_id: int, tid: int) -> bytes:
            return encode_request(
                UdpAnnounceRequest.from_request(
                    request, connection_id=connection_id, transaction_id=tid,
                    url_data=tracker.url_data,
                )
            )  # fmt: skip

        try:
            reply = self._exchange(
                tracker,
                timeout,
                encode,
                lambda ipv6: partial(_decode_announce, ipv6=ipv6),
            )
        except UdpTrackerError as refusal:
            return refusal.to_failure()
        return reply.to_response()

    def scrape(self, url: str, info_hash: InfoHash, *, timeout: float) -> ScrapeStats:
        """Scrape one torrent's counts from the UDP tracker at ``url``.

        Raises:
            TrackerError: as ``announce``, and ``tracker_error`` for an error packet.
        """
        tracker = parse_udp_url(url)

        def encode(connection_id: int, tid: int) -> bytes:
            return encode_request(UdpScrapeRequest(connection_id, tid, (info_hash,)))

        reply = self._exchange(
            tracker,
            timeout,
            encode,
            lambda ipv6: partial(_decode_scrape, count=1),
        )
        return reply.stats[0]

    def forget(self) -> None:
        """Drop every cached connection id."""
        self._connections.clear()

    def _exchange(
        self,
        tracker: UdpTracker,
        timeout: float | None,
        encode: Callable[[int, int], bytes],
        decoder: Callable[[bool], Callable[[bytes, int], _R]],
    ) -> _R:
        """Resolve, open a connected socket and run one ``UdpExchange`` to its end."""
        described = timeout if timeout is not None else self.policy.exchange_bound
        try:
            infos = socket.getaddrinfo(tracker.host, tracker.port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            raise describe_network_error(exc, described, tracker.host) from None
        if not infos:
            raise TrackerError("dns_error", f"cannot resolve {tracker.host}: no address")
        family, kind, proto, _, raw_address = infos[0]
        address: Address = (str(raw_address[0]), int(raw_address[1]), *raw_address[2:])
        exchange = UdpExchange(
            encode,
            decoder(family == socket.AF_INET6),
            now=self._clock(),
            new_tid=self._random_u32,
            policy=self.policy,
            cached=self._connections.get(address),
            timeout=timeout,
        )
        with socket.socket(family, kind, proto) as sock:
            try:
                if self._source and (":" in self._source) == (family == socket.AF_INET6):
                    sock.bind((self._source, 0))
                sock.connect(address)
                self._drive(sock, address, exchange)
            except OSError as exc:
                raise describe_network_error(exc, described, tracker.host) from None
        outcome = exchange.outcome
        if isinstance(outcome, TrackerError):
            raise outcome
        assert outcome is not None
        return outcome

    def _drive(self, sock: socket.socket, address: Address, exchange: UdpExchange[_R]) -> None:
        """Send what the exchange hands out and feed it replies until it is done."""
        packet: bytes | None = exchange.start(self._clock())
        while True:
            if packet is not None:
                sock.send(packet)
            self._remember(address, exchange)
            if exchange.done:
                return
            left = exchange.deadline - self._clock()
            if left <= 0:
                packet = exchange.on_timer(self._clock())
                continue
            sock.settimeout(left)
            try:
                data = sock.recv(_RECV_SIZE)
            except TimeoutError:
                packet = exchange.on_timer(self._clock())
                continue
            packet = exchange.on_datagram(data, self._clock())

    def _remember(self, address: Address, exchange: UdpExchange[_R]) -> None:
        if exchange.forget_cached:
            exchange.forget_cached = False
            self._connections.pop(address, None)
        learned = exchange.learned
        if learned is None:
            return
        exchange.learned = None  # taken: counted and cached once
        self.connects += 1
        if address not in self._connections and len(self._connections) >= MAX_CACHED_CONNECTIONS:
            oldest = min(self._connections, key=lambda a: self._connections[a].obtained)
            del self._connections[oldest]
        self._connections[address] = learned


def _decode_announce(data: bytes, tid: int, *, ipv6: bool) -> UdpAnnounceResponse:
    return decode_announce_response(data, tid, ipv6=ipv6)


def _decode_scrape(data: bytes, tid: int, *, count: int) -> UdpScrapeResponse:
    return decode_scrape_response(data, tid, count)
