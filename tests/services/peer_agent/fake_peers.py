"""Fake peers for the peer agent's tests: TCP servers that serve a torrent or misbehave.

Strategy: ``FakePeer`` is a TCP server thread on its own loopback address running one
``Behaviour`` per accepted connection (``serving``, ``recording``, ``then_send``, ``raw``);
``feed_work`` plays the coordinator's picker through ``testing.peer_agent.Counterparts``.

Rules:
- Every wait has a timeout and fails with what was received so far.
- Every thread started here is stopped by ``FakePeer.close`` (the fixtures in ``conftest.py``
  call it in ``finally``).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator

from testing.peer_agent import Counterparts
from torviz.shared.bus import AssignPieces, WorkWanted
from torviz.shared.types import InfoHash, PeerId
from torviz.shared.wire import codec
from torviz.shared.wire import messages as wire
from torviz.shared.wire.handshake import Handshake, HandshakeReader, Reserved, encode_handshake

FAKE_PEER_ID = PeerId(b"-LT2110-" + b"f" * 12)
FAST_AND_EXTENSIONS = Reserved.build(fast=True, extension_protocol=True)
_fake_serial = itertools.count(1)


def fake_peer_id() -> PeerId:
    """A fresh peer id of the kind libtorrent 2.1.1 sends (the agent refuses a second
    connection to the same peer id)."""
    return PeerId(b"-LT2110-" + f"{next(_fake_serial):012d}".encode())


class PeerLink:
    """The fake peer's side of one accepted connection (blocking socket, with a deadline)."""

    def __init__(
        self, conn: socket.socket, stop: threading.Event, peer_id: PeerId = FAKE_PEER_ID
    ) -> None:
        self.conn = conn
        self.stop = stop
        self.peer_id = peer_id
        self.decoder = codec.MessageDecoder(max_frame=1 + 8 + 128 * 1024)
        self.received: list[wire.Message] = []
        self.log: list[wire.Message] = []
        """What ``recording`` saw, in order."""
        self.handshake: Handshake | None = None
        conn.settimeout(0.1)

    def read_handshake(self, timeout: float = 5.0) -> Handshake:
        reader = HandshakeReader()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stop.is_set():
            data = self._recv()
            if data is None:
                continue
            if not data:
                break
            for item in reader.feed(data):
                if isinstance(item, Handshake):
                    self.handshake = item
                    self.received.extend(self.decoder.feed(reader.take_surplus()))
                    return item
        raise ConnectionError("no handshake from the agent")

    def _recv(self) -> bytes | None:
        try:
            return self.conn.recv(256 * 1024)
        except TimeoutError:
            return None

    def send(self, *items: wire.Message | bytes) -> None:
        self.conn.sendall(b"".join(i if isinstance(i, bytes) else codec.encode(i) for i in items))

    def messages(self) -> Iterator[wire.Message]:
        """Messages from the agent as they arrive, until EOF or stop."""
        while not self.stop.is_set():
            pending, self.received = self.received, []
            yield from pending
            data = self._recv()
            if data is None:
                continue
            if not data:
                return
            self.received.extend(self.decoder.feed(data))


Behaviour = Callable[[PeerLink], None]


class FakePeer:
    """A TCP server thread on ``host`` running ``behaviour`` for every accepted connection."""

    def __init__(self, host: str, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.peer_id = fake_peer_id()
        self.stop_event = threading.Event()
        self.links: list[PeerLink] = []
        self.errors: list[BaseException] = []
        self.server = socket.create_server((host, 0))
        self.server.settimeout(0.1)
        self.host, self.port = self.server.getsockname()[:2]
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self.stop_event.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            link = PeerLink(conn, self.stop_event, self.peer_id)
            self.links.append(link)
            thread = threading.Thread(target=self._serve, args=(link,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, link: PeerLink) -> None:
        try:
            self.behaviour(link)
        except (ConnectionError, OSError):
            pass  # the agent dropped us: that is what several behaviours want
        except BaseException as exc:  # surfaced by the test through `errors`
            self.errors.append(exc)
        finally:
            with contextlib.suppress(OSError):
                link.conn.close()

    def wait_served(self, timeout: float) -> bool:
        """Wait until every accepted connection's behaviour returned; True if they all did."""
        for thread in self._threads[1:]:
            thread.join(timeout)
        return not any(thread.is_alive() for thread in self._threads[1:])

    def close(self) -> None:
        self.stop_event.set()
        self.server.close()
        for thread in self._threads:
            thread.join(timeout=2.0)


def greet(link: PeerLink, info_hash: InfoHash, reserved: Reserved = FAST_AND_EXTENSIONS) -> None:
    link.read_handshake()
    link.send(encode_handshake(Handshake(info_hash, link.peer_id, reserved)))


def serving(info_hash: InfoHash, content: bytes, piece_length: int) -> Behaviour:
    """A well-behaved seeder of ``content``: have-all, unchoke, answer every request."""

    def behaviour(link: PeerLink) -> None:
        greet(link, info_hash)
        link.send(wire.HaveAll(), wire.Unchoke())
        for message in link.messages():
            if isinstance(message, wire.Request):
                start = message.piece * piece_length + message.offset
                block = content[start : start + message.length]
                link.send(
                    codec.encode_piece_header(message.piece, message.offset, len(block)) + block
                )

    return behaviour


def then_send(
    info_hash: InfoHash,
    payload: bytes,
    *,
    wait_for_eof: bool = True,
    reserved: Reserved = FAST_AND_EXTENSIONS,
) -> Behaviour:
    """Complete the handshake, send ``payload`` (hostile bytes), then read until dropped."""

    def behaviour(link: PeerLink) -> None:
        greet(link, info_hash, reserved)
        link.send(payload)
        if wait_for_eof:
            for _ in link.messages():
                pass

    return behaviour


def recording(info_hash: InfoHash, *, have_all: bool = False) -> Behaviour:
    """A peer that never sends data: have-none (or have-all and unchoke), then records in
    ``link.log`` everything the agent sends."""

    def behaviour(link: PeerLink) -> None:
        greet(link, info_hash)
        if have_all:
            link.send(wire.HaveAll(), wire.Unchoke())
        else:
            link.send(wire.HaveNone())
        for message in link.messages():
            link.log.append(message)

    return behaviour


def raw(payload: bytes, *, then_close: bool = False) -> Behaviour:
    """Answer the agent's handshake with ``payload`` instead of a handshake, then read until
    dropped (or close at once with ``then_close``)."""

    def behaviour(link: PeerLink) -> None:
        link.read_handshake()
        link.send(payload)
        if not then_close:
            for _ in link.messages():
                pass

    return behaviour


def piece_hashes(content: bytes, piece_length: int) -> list[bytes]:
    return [
        hashlib.sha1(content[start : start + piece_length]).digest()
        for start in range(0, len(content), piece_length)
    ]


def feed_work(
    parts: Counterparts,
    info_hash: InfoHash,
    peer: str,
    num_pieces: int,
    timeout: float,
    *,
    first_want: int | None = None,
) -> None:
    """Play the coordinator's picker for one peer until storage holds every piece.

    Each ``WorkWanted`` from ``peer`` is answered with the next ``count`` pieces in order;
    ``first_want`` is the count of a ``WorkWanted`` the test already took from the inbox.
    """
    next_piece = 0

    def assign(count: int) -> None:
        nonlocal next_piece
        pieces = tuple(range(next_piece, min(num_pieces, next_piece + count)))
        if pieces:
            parts.send(AssignPieces(info_hash, peer, pieces))
            next_piece += len(pieces)

    if first_want is not None:
        assign(first_want)
    deadline = time.monotonic() + timeout
    stored = lambda: {p.piece for p in parts.pieces if p.info_hash == info_hash}  # noqa: E731
    while len(stored()) < num_pieces:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(
                f"{len(stored())}/{num_pieces} pieces stored after {timeout} s "
                f"({next_piece} assigned)"
            )
        parts.pump(min(remaining, 0.1))
        for want in parts.take_all(WorkWanted, lambda m: m.peer == peer):
            assign(want.count)
