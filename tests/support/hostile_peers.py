"""Hostile peers that try to lock others out of a BitTorrent listener: plain sockets in a thread.

``SlotSquatters`` keeps up two kinds of sockets against one listener, from the loopback
addresses it is given (round robin), for as long as the test runs:

- *idle* ones, which send a handshake (fast extension, so HAVE_NONE is legal) and HAVE_NONE,
  then only keep-alives: they hold connection slots without ever being interested;
- *slowloris* ones, which trickle the handshake one byte a second: they hold the listener's
  pre-handshake queue.

Every second the thread sends each socket its keep-alive or its next byte, notices the sockets
the listener closed and opens them again, as a real attacker would. Everything is bounded: the
thread stops on ``stop`` or after ``max_seconds``, every socket is non-blocking after its
connect (which has a one-second timeout), and ``stop`` closes every socket.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from dataclasses import dataclass, field

from torviz.shared.types import InfoHash, PeerAddress, PeerId
from torviz.shared.wire import codec
from torviz.shared.wire import messages as wire
from torviz.shared.wire.handshake import Handshake, Reserved, encode_handshake

__all__ = ["SlotSquatters"]

_ROUND = 1.0  # seconds between two rounds of keep-alives and trickled bytes
_CONNECT_TIMEOUT = 1.0


@dataclass
class _Squatter:
    host: str
    idle: bool
    sock: socket.socket | None = None
    handshake: bytes = b""
    sent: int = 0  # bytes of the handshake a slowloris sent so far
    answered: bool = False  # the listener sent us its handshake on this socket
    received: bytearray = field(default_factory=bytearray)


class SlotSquatters:
    """Idle and slowloris sockets against ``target``, kept up by a thread.

    Args:
        target: the listener.
        info_hash: the torrent the handshakes ask for.
        hosts: the source addresses to use, in turn.
        idle: how many idle (handshaked, then keep-alive only) sockets to keep.
        slowloris: how many one-byte-a-second sockets to keep.
        max_seconds: the thread stops on its own after this long.
    """

    def __init__(
        self,
        target: PeerAddress,
        info_hash: InfoHash,
        hosts: list[str],
        *,
        idle: int,
        slowloris: int,
        max_seconds: float = 300.0,
    ) -> None:
        if not hosts:
            raise ValueError("at least one source address")
        self.target = target
        self.info_hash = info_hash
        self._squatters = [
            _Squatter(hosts[n % len(hosts)], idle=n < idle) for n in range(idle + slowloris)
        ]
        self._max_seconds = max_seconds
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="slot-squatters", daemon=True)
        self.opened = 0
        """Sockets opened so far (reopened ones included)."""

    def start(self) -> SlotSquatters:
        self._thread.start()
        return self

    def answered_idle(self) -> int:
        """Idle sockets open now whose handshake the listener answered (slots they hold)."""
        with self._lock:
            return sum(1 for s in self._squatters if s.idle and s.sock is not None and s.answered)

    def open_slowloris(self) -> int:
        """Slowloris sockets open now."""
        with self._lock:
            return sum(1 for s in self._squatters if not s.idle and s.sock is not None)

    def stop(self) -> None:
        """Stop the thread and close every socket."""
        self._stop.set()
        self._thread.join(timeout=10.0)
        with self._lock:
            for squatter in self._squatters:
                self._close(squatter)

    # -- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        deadline = time.monotonic() + self._max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            for squatter in self._squatters:
                if self._stop.is_set():
                    return
                with self._lock:
                    self._tend(squatter)
            self._stop.wait(max(0.0, _ROUND - (time.monotonic() - started)))

    def _tend(self, squatter: _Squatter) -> None:
        if squatter.sock is None:
            self._open(squatter)
            return
        if self._closed_by_listener(squatter):
            self._close(squatter)
            return
        if squatter.idle:
            self._send(squatter, codec.encode(wire.KeepAlive()))
        elif squatter.sent < len(squatter.handshake):
            self._send(squatter, squatter.handshake[squatter.sent : squatter.sent + 1])
            squatter.sent += 1

    def _open(self, squatter: _Squatter) -> None:
        try:
            sock = socket.create_connection(
                (self.target.host, self.target.port),
                timeout=_CONNECT_TIMEOUT,
                source_address=(squatter.host, 0),
            )
        except OSError:
            return
        sock.setblocking(False)
        self.opened += 1
        peer_id = PeerId(b"-XX0001-" + os.urandom(12))
        squatter.sock = sock
        squatter.handshake = encode_handshake(
            Handshake(self.info_hash, peer_id, Reserved.build(fast=True))
        )
        squatter.sent = 0
        squatter.answered = False
        squatter.received.clear()
        if squatter.idle:
            self._send(squatter, squatter.handshake + codec.encode(wire.HaveNone()))
        else:
            self._send(squatter, squatter.handshake[:1])
            squatter.sent = 1

    def _send(self, squatter: _Squatter, data: bytes) -> None:
        assert squatter.sock is not None
        try:
            squatter.sock.send(data)  # a full send buffer just loses the byte: no matter
        except BlockingIOError:
            pass
        except OSError:
            self._close(squatter)

    def _closed_by_listener(self, squatter: _Squatter) -> bool:
        """Read what the listener sent (bounded); whether it closed the socket."""
        assert squatter.sock is not None
        for _ in range(16):
            try:
                data = squatter.sock.recv(64 * 1024)
            except BlockingIOError:
                return False
            except OSError:
                return True
            if not data:
                return True
            if not squatter.answered:
                squatter.received += data
                squatter.answered = len(squatter.received) >= len(squatter.handshake)
        return False

    @staticmethod
    def _close(squatter: _Squatter) -> None:
        if squatter.sock is not None:
            with contextlib.suppress(OSError):
                squatter.sock.close()
            squatter.sock = None
