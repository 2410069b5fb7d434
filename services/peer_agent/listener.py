"""Incoming peer connections: the listening socket, and the handshake header that routes each.

Strategy: ``bind_listener`` takes the first free port of the configured range. A ``Listener``
runs one accept greenlet; every accepted socket gets a short-lived greenlet that reads exactly
the first 48 bytes of the peer's handshake (``pstrlen``, protocol, reserved bits, info hash),
which is all the agent needs to pick the torrent, and hands the socket, the peer's address and
those bytes to ``on_header``. From then on the socket belongs to whoever ``on_header`` gave it
to (the agent starts a ``PeerConnection`` with it, or closes it).

Rules:
- Input is hostile: a header that is not BitTorrent (wrong length byte or protocol string),
  a peer that closes, or one that sends nothing for ``header_timeout`` seconds is closed at
  once, without a word.
- At most ``max_pending`` accepted sockets wait for their header at a time; more are closed at
  once, so a flood of idle connections costs a bounded number of sockets and greenlets.
- Nothing here reads or writes shared state: routing, limits and bans are the agent's business.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
from collections.abc import Callable
from typing import Any

import gevent

from shared.errors import WireError
from shared.types import PeerAddress
from shared.wire.handshake import HANDSHAKE_HEADER_LENGTH, HandshakeHeader, decode_handshake_header

from .torrents import normalize_host

__all__ = [
    "HEADER_TIMEOUT",
    "MAX_PENDING",
    "HeaderHandler",
    "Listener",
    "bind_listener",
]

log = logging.getLogger(__name__)

HEADER_TIMEOUT = 10.0
"""Seconds an accepted peer has to send the first 48 bytes of its handshake."""
MAX_PENDING = 64
"""Accepted sockets waiting for their handshake header at once."""
_BACKLOG = 128
_ACCEPT_RETRY = 0.1  # seconds to wait after accept fails for lack of file descriptors

HeaderHandler = Callable[[socket.socket, PeerAddress, HandshakeHeader, bytes], None]
"""``on_header(sock, address, header, preread)``: takes over the socket."""


def bind_listener(host: str, ports: tuple[int, int]) -> socket.socket:
    """A listening TCP socket on ``host`` and the first free port of ``ports`` (inclusive).

    Raises:
        OSError: no port of the range could be bound (the last error), or ``host`` is unusable.
        ValueError: the range is empty or outside 1..65535.
    """
    first, last = ports
    if not 0 < first <= last < 65536:
        raise ValueError(f"listen_ports must be an increasing range within 1..65535: {ports}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    error: OSError | None = None
    for port in range(first, last + 1):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(_BACKLOG)
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE:
                raise
            error = exc
            continue
        return sock
    assert error is not None
    raise error


class Listener:
    """Accepts peers on a bound socket and routes each by its handshake header.

    Args:
        sock: a listening socket (``bind_listener``); closed by ``close``.
        on_header: called with each accepted socket whose header is well formed.
        header_timeout: seconds a peer has to send the header.
        max_pending: accepted sockets waiting for their header at once.
    """

    def __init__(
        self,
        sock: socket.socket,
        on_header: HeaderHandler,
        *,
        header_timeout: float = HEADER_TIMEOUT,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._sock = sock
        self._on_header = on_header
        self._header_timeout = header_timeout
        self._max_pending = max_pending
        self._pending: set[gevent.Greenlet[Any, Any]] = set()
        self._accepter: gevent.Greenlet[Any, Any] | None = None
        self.refused = 0
        """Accepted sockets closed before routing (bad header, timeout, too many pending)."""

    @property
    def address(self) -> PeerAddress:
        host, port = self._sock.getsockname()[:2]
        return PeerAddress(host, port)

    def start(self) -> None:
        self._accepter = gevent.spawn(self._accept_loop)

    def close(self) -> None:
        """Stop accepting, drop the sockets still waiting for a header, close the listener."""
        greenlets = [*self._pending, *([self._accepter] if self._accepter else [])]
        gevent.killall(greenlets, block=True, timeout=1.0)
        self._sock.close()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, peer = self._sock.accept()
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("cannot accept peers for now: %s", exc)
                    gevent.sleep(_ACCEPT_RETRY)
                    continue
                if exc.errno in (errno.ECONNABORTED, errno.EINTR):
                    continue
                log.error("listener stops: %s", exc)
                return
            if len(self._pending) >= self._max_pending:
                self.refused += 1
                conn.close()
                continue
            reader = gevent.spawn(self._read_header, conn, peer)
            self._pending.add(reader)
            reader.link(self._pending.discard)

    def _read_header(self, conn: socket.socket, peer: tuple[Any, ...]) -> None:
        handed_over = False
        try:
            host = normalize_host(str(peer[0]))
            if host is None:
                return
            address = PeerAddress(host, int(peer[1]))
            preread = self._receive_header(conn)
            if preread is None:
                return
            header = decode_handshake_header(preread)
            handed_over = True
            self._on_header(conn, address, header, preread)
        except (OSError, WireError, ValueError) as exc:
            log.debug("incoming connection from %s dropped: %s", peer, exc)
        finally:
            if not handed_over:
                self.refused += 1
                with contextlib.suppress(OSError):
                    conn.close()

    def _receive_header(self, conn: socket.socket) -> bytes | None:
        """The first 48 bytes, or None if the peer closed or stayed silent too long.

        Raises:
            WireError: ``bad_pstrlen`` or ``bad_protocol`` as soon as the bytes show it.
        """
        data = bytearray()
        with gevent.Timeout(self._header_timeout, False):
            while len(data) < HANDSHAKE_HEADER_LENGTH:
                chunk = conn.recv(HANDSHAKE_HEADER_LENGTH - len(data))
                if not chunk:
                    return None
                data += chunk
                try:
                    decode_handshake_header(data)
                except WireError as exc:
                    if exc.reason != "truncated":  # the prefix is checked before the length
                        raise
            return bytes(data)
        return None
