# UDP tracker announces (BEP 15, BEP 41 URL data): connect, announce, retransmit.
#
# Strategy: one UDP socket per exchange, ``connect()``ed to the tracker's address, so the
# kernel drops datagrams from anyone else and no demultiplexer is needed; each announce runs in
# its own greenlet (the agent's) and owns its socket from open to close. The shared codec
# (``shared.tracker.udp``) builds and checks every packet; this module adds the timing:
#
# - A connection id is kept per tracker address for CONNECTION_ID_LIFETIME (60) seconds and
#   reused by later announces (of any torrent); after that, or when the tracker refuses the
#   cached id, a fresh connect is made.
# - A request is sent again when no reply came within ``retransmit_base * 2 ** n`` seconds,
#   n = 0 .. ``max_retransmits`` (BEP 15: 15 * 2^n, n up to 8). Every exchange also has an
#   overall ``timeout`` (the agent's ``announce_timeout``) which wins when shorter: BEP 15's
#   full schedule would keep one announce alive for more than two hours. The announce
#   schedule's back-off (15, 30, 60 ... s) then plays the part of later retransmits.
# - A reply with another transaction id is ignored (a late answer to an earlier try) and the
#   wait goes on; any other malformed reply fails the exchange, naming the cause. An error
#   packet is the tracker refusing us: it becomes an ``AnnounceFailure``, as over HTTP.
# - IPv4 and IPv6: the reply's peer format (6 or 18 bytes) follows the socket's family.
# - Errors are ``TrackerError`` with one short line ("connection refused", "timed out after
#   15 s", ...). An ICMP port-unreachable shows up on the connected socket as ECONNREFUSED.

from __future__ import annotations

import os
import socket
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from shared.errors import TrackerError
from shared.tracker import (
    CONNECTION_ID_LIFETIME,
    AnnounceFailure,
    AnnounceRequest,
    AnnounceResponse,
    ConnectRequest,
    UdpAnnounceRequest,
    UdpTrackerError,
    decode_announce_response,
    decode_connect_response,
    encode_request,
)

from .http_client import describe_network_error, format_seconds

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
    """Announces to UDP trackers; one instance serves every greenlet of the agent.

    Args:
        retransmit_base: seconds to wait for the first reply (BEP 15: 15); doubled per try.
        max_retransmits: tries after the first (BEP 15: 8).
        clock: monotonic seconds (connection-id ages, deadlines).
        random_u32: draws transaction ids.
    """

    def __init__(
        self,
        *,
        retransmit_base: float = 15.0,
        max_retransmits: int = 8,
        clock: Clock = time.monotonic,
        random_u32: Callable[[], int] = _random_u32,
    ) -> None:
        if retransmit_base <= 0 or max_retransmits < 0:
            raise ValueError("retransmit_base must be positive and max_retransmits >= 0")
        self.retransmit_base = retransmit_base
        self.max_retransmits = max_retransmits
        self._clock = clock
        self._random_u32 = random_u32
        self._connections: dict[Address, tuple[int, float]] = {}
        self.connects = 0
        """Connect requests that got an answer (for tests and logs)."""

    def announce(
        self, url: str, request: AnnounceRequest, *, timeout: float
    ) -> AnnounceResponse | AnnounceFailure:
        """Announce ``request`` to the UDP tracker at ``url`` within ``timeout`` seconds.

        Returns:
            The tracker's answer, or its refusal (an error packet).

        Raises:
            TrackerError: ``bad_url``, ``timed_out``, ``connection_refused``, ``dns_error``,
                ``network_error``, or a codec reason for a malformed reply (``truncated``,
                ``wrong_action``, ``bad_compact_length`` ...).
        """
        tracker = parse_udp_url(url)
        deadline = self._clock() + timeout
        try:
            infos = socket.getaddrinfo(tracker.host, tracker.port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            raise describe_network_error(exc, timeout, tracker.host) from None
        if not infos:
            raise TrackerError("dns_error", f"cannot resolve {tracker.host}: no address")
        family, kind, proto, _, raw_address = infos[0]
        address: Address = (str(raw_address[0]), int(raw_address[1]), *raw_address[2:])
        with socket.socket(family, kind, proto) as sock:
            try:
                sock.connect(address)
                return self._announce(sock, address, tracker, request, deadline, timeout)
            except OSError as exc:
                raise describe_network_error(exc, timeout, tracker.host) from None

    def forget(self) -> None:
        """Drop every cached connection id."""
        self._connections.clear()

    def _announce(
        self,
        sock: socket.socket,
        address: Address,
        tracker: UdpTracker,
        request: AnnounceRequest,
        deadline: float,
        timeout: float,
    ) -> AnnounceResponse | AnnounceFailure:
        ipv6 = sock.family == socket.AF_INET6
        for fresh_try in (False, True):
            cached = None if fresh_try else self._cached(address)
            try:
                connection_id = cached
                if connection_id is None:
                    connection_id = self._connect(sock, address, deadline, timeout)
                tid = self._random_u32()
                packet = encode_request(
                    UdpAnnounceRequest.from_request(
                        request,
                        connection_id=connection_id,
                        transaction_id=tid,
                        url_data=tracker.url_data,
                    )
                )
                reply = self._exchange(
                    sock,
                    packet,
                    partial(decode_announce_response, transaction_id=tid, ipv6=ipv6),
                    deadline,
                    timeout,
                )
                return reply.to_response()
            except UdpTrackerError as exc:
                self._connections.pop(address, None)
                if cached is None:  # the id was fresh: the refusal is about the announce
                    return exc.to_failure()
                # A cached id the tracker no longer accepts: connect again, once.
        raise AssertionError("unreachable")  # pragma: no cover

    def _cached(self, address: Address) -> int | None:
        entry = self._connections.get(address)
        if entry is None:
            return None
        connection_id, obtained = entry
        if self._clock() - obtained >= CONNECTION_ID_LIFETIME:
            del self._connections[address]
            return None
        return connection_id

    def _connect(
        self, sock: socket.socket, address: Address, deadline: float, timeout: float
    ) -> int:
        tid = self._random_u32()
        reply = self._exchange(
            sock,
            encode_request(ConnectRequest(tid)),
            partial(decode_connect_response, transaction_id=tid),
            deadline,
            timeout,
        )
        self.connects += 1
        if len(self._connections) >= MAX_CACHED_CONNECTIONS:
            oldest = min(self._connections, key=lambda a: self._connections[a][1])
            del self._connections[oldest]
        self._connections[address] = (reply.connection_id, self._clock())
        return reply.connection_id

    def _exchange(
        self,
        sock: socket.socket,
        packet: bytes,
        decode: Callable[[bytes], _R],
        deadline: float,
        timeout: float,
    ) -> _R:
        """Send ``packet`` until ``decode`` accepts a reply, retransmitting on BEP 15's clock."""
        tries = 0
        for attempt in range(self.max_retransmits + 1):
            now = self._clock()
            if now >= deadline:
                break
            tries += 1
            sock.send(packet)
            wait_until = min(deadline, now + self.retransmit_base * 2**attempt)
            while (left := wait_until - self._clock()) > 0:
                sock.settimeout(left)
                try:
                    data = sock.recv(_RECV_SIZE)
                except TimeoutError:
                    break
                try:
                    return decode(data)
                except UdpTrackerError:
                    raise
                except TrackerError as exc:
                    if exc.reason != "wrong_transaction":
                        raise
                    # A late reply to an earlier try, or not for us: keep waiting.
        if self._clock() >= deadline:
            raise TrackerError("timed_out", f"timed out after {format_seconds(timeout)} s")
        raise TrackerError("timed_out", f"no reply after {tries} tries")
