"""Incoming peer connections: the listening socket, and the handshake header that routes each.

Strategy: ``bind_listener`` takes the first free port of the configured range. A ``Listener``
runs one accept greenlet; every accepted socket gets a short-lived greenlet that reads exactly
the first 48 bytes of the peer's handshake (``pstrlen``, protocol, reserved bits, info hash),
which is all the agent needs to pick the torrent, and hands the socket, the peer's address and
those bytes to ``on_header``. From then on the socket belongs to whoever ``on_header`` gave it
to (the agent starts a ``PeerConnection`` with it, or closes it). Which sockets may wait for
their header, and how long, is the pure ``Backlog`` (``core/backlog.py``); a sweeper greenlet drops
the ones past their deadline.

Rules:
- Input is hostile: a header that is not BitTorrent (wrong length byte or protocol string),
  a peer that closes, or one that has not sent its header by its deadline is closed at once,
  without a word.
- At most ``max_pending`` accepted sockets wait for their header at a time, at most
  ``max_pending_per_host`` from one address (more from it are closed at once); a new socket
  finding the queue full takes the place of the one waiting longest. The deadline shrinks from
  ``header_timeout`` to ``pressured_timeout`` while the queue is half full. So idle or
  trickling sockets cost a bounded number of sockets and greenlets, and cannot keep an honest
  peer (which sends its header at once) out.
- Nothing here reads or writes shared state: routing, limits and bans are the agent's business.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import gevent

from torviz.shared.config import PeerAgentConfig
from torviz.shared.errors import WireError
from torviz.shared.types import PeerAddress, normalize_host
from torviz.shared.wire.handshake import (
    HANDSHAKE_HEADER_LENGTH,
    HandshakeHeader,
    decode_handshake_header,
)

from .core.backlog import (
    HEADER_TIMEOUT,
    MAX_PENDING,
    MAX_PENDING_PER_HOST,
    PRESSURED_HEADER_TIMEOUT,
    Backlog,
)

__all__ = [
    "HEADER_TIMEOUT",
    "MAX_PENDING",
    "MAX_PENDING_PER_HOST",
    "PRESSURED_HEADER_TIMEOUT",
    "HeaderHandler",
    "Listener",
    "bind_listener",
    "open_listener",
]

log = logging.getLogger(__name__)

_BACKLOG = 128
_ACCEPT_RETRY = 0.1  # seconds to wait after accept fails for lack of file descriptors
_SWEEP_MAX = 0.25  # seconds between two looks for expired sockets at most (pressure moves them)
_SWEEP_MIN = 0.01

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


def open_listener(config: PeerAgentConfig, on_header: HeaderHandler) -> Listener | None:
    """Bind ``[peer_agent] listen_host`` on the first free port of ``listen_ports`` and start
    a ``Listener`` there.

    Args:
        config: the agent's section (host, ports, ``max_pending_per_host``).
        on_header: what gets each accepted socket, as ``Listener`` says.

    Returns:
        The started listener, or None (logged as an error) when no port could be bound: the
        agent still dials out, and announces no address.
    """
    try:
        sock = bind_listener(config.listen_host, config.listen_ports)
    except (OSError, ValueError) as exc:
        log.error(
            "cannot listen for peers on %s ports %s: %s",
            config.listen_host,
            config.listen_ports,
            exc,
        )
        return None
    listener = Listener(sock, on_header, max_pending_per_host=config.max_pending_per_host)
    listener.start()
    log.info("listening for peers on %s", listener.address)
    return listener


class Listener:
    """Accepts peers on a bound socket and routes each by its handshake header.

    Args:
        sock: a listening socket (``bind_listener``); closed by ``close``.
        on_header: called with each accepted socket whose header is well formed.
        header_timeout: seconds a peer has to send the header.
        pressured_timeout: the same while half of ``max_pending`` sockets wait.
        max_pending: accepted sockets waiting for their header at once.
        max_pending_per_host: of which from one IP address.
        clock: monotonic seconds.
    """

    def __init__(
        self,
        sock: socket.socket,
        on_header: HeaderHandler,
        *,
        header_timeout: float = HEADER_TIMEOUT,
        pressured_timeout: float = PRESSURED_HEADER_TIMEOUT,
        max_pending: int = MAX_PENDING,
        max_pending_per_host: int = MAX_PENDING_PER_HOST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sock = sock
        self._on_header = on_header
        self._clock = clock
        self._backlog: Backlog[gevent.Greenlet[Any, Any]] = Backlog(
            max_pending=max_pending,
            max_per_host=max_pending_per_host,
            timeout=header_timeout,
            pressured_timeout=min(pressured_timeout, header_timeout),
        )
        self._readers: set[gevent.Greenlet[Any, Any]] = set()
        self._greenlets: list[gevent.Greenlet[Any, Any]] = []
        self.refused = 0
        """Accepted sockets closed before routing (bad header, late, too many waiting)."""

    @property
    def address(self) -> PeerAddress:
        host, port = self._sock.getsockname()[:2]
        return PeerAddress(host, port)

    @property
    def pending(self) -> int:
        """Accepted sockets waiting for their header now."""
        return len(self._backlog)

    def start(self) -> None:
        self._greenlets = [gevent.spawn(self._accept_loop), gevent.spawn(self._sweep_loop)]

    def close(self) -> None:
        """Stop accepting, drop the sockets still waiting for a header, close the listener."""
        gevent.killall([*self._greenlets, *self._readers], block=True, timeout=1.0)
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
            self._admit(conn, peer)

    def _admit(self, conn: socket.socket, peer: tuple[Any, ...]) -> None:
        """Let an accepted socket wait for its header, or close it."""
        host = normalize_host(str(peer[0]))
        if host is None:
            self._refuse(conn)
            return
        reader: gevent.Greenlet[Any, Any] = gevent.Greenlet(
            self._read_header, conn, PeerAddress(host, int(peer[1]))
        )
        decision = self._backlog.admit(reader, host, self._clock())
        if not decision.admitted:
            log.debug("incoming connection from %s refused: %s", host, decision.reason)
            self._refuse(conn)
            return
        if decision.drop is not None:
            decision.drop.kill(block=False)  # its reader closes its socket
        self._readers.add(reader)
        reader.link(self._reader_done)
        reader.start()

    def _refuse(self, conn: socket.socket) -> None:
        self.refused += 1
        with contextlib.suppress(OSError):
            conn.close()

    def _reader_done(self, reader: gevent.Greenlet[Any, Any]) -> None:
        self._readers.discard(reader)
        self._backlog.done(reader)

    def _sweep_loop(self) -> None:
        """Drop the sockets past their deadline."""
        while True:
            deadline = self._backlog.next_deadline()
            delay = _SWEEP_MAX
            if deadline is not None:
                delay = min(max(deadline - self._clock(), _SWEEP_MIN), _SWEEP_MAX)
            gevent.sleep(delay)
            for reader in self._backlog.expired(self._clock()):
                reader.kill(block=False)

    def _read_header(self, conn: socket.socket, address: PeerAddress) -> None:
        handed_over = False
        try:
            preread = self._receive_header(conn)
            if preread is None:
                return
            header = decode_handshake_header(preread)
            self._backlog.done(gevent.getcurrent())  # routed: no deadline may drop it now
            handed_over = True
            self._on_header(conn, address, header, preread)
        except (OSError, WireError, ValueError) as exc:
            log.debug("incoming connection from %s dropped: %s", address, exc)
        finally:
            if not handed_over:
                self._refuse(conn)

    @staticmethod
    def _receive_header(conn: socket.socket) -> bytes | None:
        """The first 48 bytes, or None if the peer closed (the sweeper bounds the wait).

        Raises:
            WireError: ``bad_pstrlen`` or ``bad_protocol`` as soon as the bytes show it.
        """
        data = bytearray()
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
