"""Counterparts of a real peer agent process: a fake coordinator, a fake storage agent, fake peers.

Strategy: the agent under test runs as its own gevent-patched process (``AgentProcess``). The
test plays every other party with plain blocking libraries, because the pytest process is not
patched: ``Counterparts`` binds the coordinator's bus and the storage data endpoint as two pyzmq
ROUTERs and pumps both from one poller (each wait is bounded); ``FakePeer`` is a TCP server
thread on its own loopback address that either serves a torrent or misbehaves on purpose.

The fake storage agent behaves as the real one does on its data endpoint: it answers ``Hello``,
answers anything else from a peer it has not welcomed with ``Rejected("hello_first")``, and
acknowledges each ``StorePiece`` with ``PieceStored(..., "")`` unless the test withholds the
answers (``ack_pieces``) to answer them itself (``answer_piece``). ``restart_storage`` closes
its ROUTER and binds a new one on the same endpoint, as a restarted storage agent would.

Rules:
- Every wait has a timeout and fails with what was received so far.
- Every process and thread started here is stopped by its owner's ``close`` (the fixtures in
  ``conftest.py`` call it in ``finally``).
- The benchmark (``bench/peer_agent_throughput.py``) reuses ``Counterparts`` with
  ``keep_data=False``: storage then only counts bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import zmq

from shared.bus import (
    AssignPieces,
    Heartbeat,
    Hello,
    HelloPolicy,
    Message,
    PieceStored,
    Rejected,
    ServiceKind,
    StorePiece,
    Welcome,
    WorkWanted,
    check_hello,
    decode_frames,
    encode_frames,
)
from shared.types import InfoHash, PeerId
from shared.wire import codec
from shared.wire import messages as wire
from shared.wire.handshake import Handshake, HandshakeReader, Reserved, encode_handshake
from tests.support.swarm import next_loopback_address

REPO = Path(__file__).resolve().parents[3]
M = TypeVar("M", bound=Message)


class AgentProcess:
    """``python -m services.peer_agent`` as a child process; ``stop`` always reaps it.

    Unless ``extra`` names its own ``--config``, the agent gets a config file whose
    ``[peer_agent]`` section is ``settings`` plus a ``listen_host`` of its own on loopback
    (``listen_host``), so that its listener never takes a port of another test's peers.
    """

    def __init__(
        self,
        bus: str,
        workdir: Path,
        *,
        agent_id: str = "pa1",
        extra: tuple[str, ...] = (),
        log_level: str = "DEBUG",
        settings: Mapping[str, object] | None = None,
    ):
        self.agent_id = agent_id
        self.listen_host = str((settings or {}).get("listen_host", next_loopback_address()))
        if "--config" not in extra:
            config = workdir / f"{agent_id}.toml"
            config.write_text(
                _peer_agent_toml({"listen_host": self.listen_host, **(settings or {})})
            )
            extra = ("--config", str(config), *extra)
        self.stderr_path = workdir / f"{agent_id}.stderr"
        with self.stderr_path.open("wb") as stderr:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "services.peer_agent",
                    "--coordinator",
                    bus,
                    "--agent-id",
                    agent_id,
                    "--log-level",
                    log_level,
                    "--parent-pid",
                    str(os.getpid()),
                    *extra,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                cwd=REPO,
            )

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def _peer_agent_toml(settings: Mapping[str, object]) -> str:
    """A ``[peer_agent]`` section (strings, numbers and lists of numbers)."""
    lines = ["[peer_agent]"]
    for key, value in settings.items():
        if isinstance(value, tuple | list):
            lines.append(f"{key} = [{', '.join(str(item) for item in value)}]")
        elif isinstance(value, str):
            lines.append(f"{key} = {json.dumps(value)}")
        else:
            lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


@dataclass
class StoredPiece:
    info_hash: InfoHash
    piece: int
    contributors: tuple[str, ...]
    data: bytes | None
    length: int
    sender: bytes = b""
    """The routing id of the peer agent that sent it (``answer_piece`` replies there)."""


@dataclass
class Counterparts:
    """The coordinator's bus and the storage data endpoint, bound as ROUTERs in this process.

    Args:
        directory: where the ipc sockets go (a short path: ipc paths are limited).
        keep_data: keep each stored piece's bytes (tests) or only count them (benchmark).
    """

    directory: Path
    keep_data: bool = True
    bus_endpoint: str = ""
    data_endpoint: str = ""
    agent: bytes | None = None
    storage: bytes | None = None
    """The routing id of a real storage agent on the bus, once it said hello."""
    inbox: list[Message] = field(default_factory=list)
    pieces: list[StoredPiece] = field(default_factory=list)
    stored_bytes: int = 0
    on_message: Callable[[Message], None] | None = None
    """Called with each coordinator message as it arrives (the benchmark answers from it)."""
    reject_agents: bool = False
    """Answer the agent's Hello with ``Rejected`` (as a coordinator of another kind would)."""
    heartbeat_interval: float = 30.0
    """Told in ``Welcome``; the agent counts us lost after three intervals of silence, so the
    default outlasts any test that does not pump for a while."""
    ack_pieces: bool = True
    """Answer each ``StorePiece`` with ``PieceStored(..., "")`` at once."""
    storage_data: list[Message] = field(default_factory=list)
    """Every message the fake storage agent received (``StorePiece`` included), in order."""

    def __post_init__(self) -> None:
        self.context = zmq.Context()
        self.bus = self.context.socket(zmq.ROUTER)
        self.bus.setsockopt(zmq.LINGER, 0)
        self.bus.setsockopt(zmq.RCVHWM, 0)
        self.bus.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.bus_endpoint = f"ipc://{self.directory}/bus"
        self.data_endpoint = f"ipc://{self.directory}/data"
        self.bus.bind(self.bus_endpoint)
        self.poller = zmq.Poller()
        self.poller.register(self.bus, zmq.POLLIN)
        self._bind_storage()
        self._storage = HelloPolicy(
            ServiceKind.STORAGE_AGENT, "fake-storage", {ServiceKind.PEER_AGENT}, 1.0
        )
        self.storage_hellos = 0
        self.welcomes = 0
        """``Welcome``s sent to the peer agent (each is a registration)."""
        self.silent = False
        """Drop everything from the peer agent and answer nothing (a coordinator gone quiet)."""
        self._beat_at = 0.0

    def _bind_storage(self) -> None:
        self.data = self.context.socket(zmq.ROUTER)
        self.data.setsockopt(zmq.LINGER, 0)
        self.data.setsockopt(zmq.RCVHWM, 0)
        self.data.bind(self.data_endpoint)
        self.poller.register(self.data, zmq.POLLIN)
        self.storage_welcomed: set[bytes] = set()

    def restart_storage(self) -> None:
        """Close the storage ROUTER and bind a new one on the same endpoint (a restart): what
        the old one held is lost, and the new one knows no peer agent."""
        self.poller.unregister(self.data)
        self.data.close(linger=0)
        self._bind_storage()

    def close(self) -> None:
        self.context.destroy(linger=0)

    # -- sending --------------------------------------------------------------------------------

    def send(self, message: Message) -> None:
        """Send a command to the agent (after its Hello)."""
        assert self.agent is not None, "the agent has not said hello"
        self.bus.send_multipart([self.agent, *encode_frames(message)])

    def answer_piece(self, stored: StoredPiece, reason: str = "") -> None:
        """Send the ``PieceStored`` of a piece the fake storage agent received."""
        answer = PieceStored(stored.info_hash, stored.piece, reason)
        self.data.send_multipart([stored.sender, *encode_frames(answer)])

    def heartbeat(self) -> None:
        """Send the agents a ``Heartbeat`` (anything we send keeps us alive in their eyes)."""
        for identity in (self.agent, self.storage):
            if identity is not None:
                self.bus.send_multipart([identity, *encode_frames(Heartbeat(0))])

    def send_storage(self, message: Message) -> None:
        """Send a command to the real storage agent (after its Hello)."""
        assert self.storage is not None, "the storage agent has not said hello"
        self.bus.send_multipart([self.storage, *encode_frames(message)])

    # -- receiving ------------------------------------------------------------------------------

    def pump(self, timeout: float) -> None:
        """Handle whatever arrives within ``timeout`` seconds (returns after the first batch).

        Also sends the agent a ``Heartbeat`` every half ``heartbeat_interval`` (unless silent),
        so that it never counts us lost while the test pumps.
        """
        now = time.monotonic()
        if self.agent is not None and not self.silent and now >= self._beat_at:
            self._beat_at = now + self.heartbeat_interval / 2
            self.heartbeat()
        timeout = min(timeout, self.heartbeat_interval / 2)
        ready = dict(self.poller.poll(int(timeout * 1000)))
        for _ in range(10_000):
            handled = False
            if self.bus in ready and self._handle_bus():
                handled = True
            if self.data in ready and self._handle_data():
                handled = True
            if not handled:
                return
            ready = dict(self.poller.poll(0))

    def _handle_bus(self) -> bool:
        try:
            frames = self.bus.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return False
        sender, *rest = frames
        message, _ = decode_frames(rest)
        if self.silent and sender != self.storage:
            return True
        if isinstance(message, Hello):
            if message.service == ServiceKind.STORAGE_AGENT:
                self.storage = sender
            else:
                self.agent = sender
            policy = HelloPolicy(
                ServiceKind.COORDINATOR,
                "fake-coordinator",
                {ServiceKind.PEER_AGENT, ServiceKind.STORAGE_AGENT},
                self.heartbeat_interval,
            )
            if self.reject_agents:
                policy = HelloPolicy(ServiceKind.COORDINATOR, "picky", {ServiceKind.CLI}, 1.0)
            answer = check_hello(message, policy)
            if isinstance(answer, Welcome) and sender == self.agent:
                self.welcomes += 1
            self.bus.send_multipart([sender, *encode_frames(answer)])
        self.inbox.append(message)
        if self.on_message is not None:
            self.on_message(message)
        return True

    def _handle_data(self) -> bool:
        try:
            frames = self.data.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return False
        sender, *rest = frames
        identity = sender.bytes
        message, data = decode_frames([frame.buffer for frame in rest])
        self.storage_data.append(message)
        if isinstance(message, Hello):
            self.storage_hellos += 1
            answer = check_hello(message, self._storage)
            self.storage_welcomed.add(identity)
            self.data.send_multipart([identity, *encode_frames(answer)])
        elif identity not in self.storage_welcomed:
            hello_first = Rejected("hello_first", "fake storage: say Hello first")
            self.data.send_multipart([identity, *encode_frames(hello_first)])
        elif isinstance(message, StorePiece):
            assert data is not None
            self.stored_bytes += data.nbytes
            kept = bytes(data) if self.keep_data else None
            stored = StoredPiece(
                message.info_hash, message.piece, message.contributors, kept, data.nbytes, identity
            )
            self.pieces.append(stored)
            if self.ack_pieces:
                self.answer_piece(stored)
        return True

    def expect(
        self, kind: type[M], where: Callable[[M], bool] | None = None, timeout: float = 10.0
    ) -> M:
        """Take the first coordinator message of ``kind`` (matching ``where``) from the inbox."""
        deadline = time.monotonic() + timeout
        while True:
            for index, message in enumerate(self.inbox):
                if isinstance(message, kind) and (where is None or where(message)):
                    del self.inbox[index]
                    return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [type(m).__name__ for m in self.inbox][-30:]
                raise AssertionError(f"no {kind.__name__} within {timeout} s; inbox: {seen}")
            self.pump(min(remaining, 0.2))

    def take_all(self, kind: type[M], where: Callable[[M], bool] | None = None) -> list[M]:
        """Remove and return every message of ``kind`` already received."""
        taken = [m for m in self.inbox if isinstance(m, kind) and (where is None or where(m))]
        self.inbox = [m for m in self.inbox if not any(m is t for t in taken)]
        return taken

    def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            self.pump(min(remaining, 0.1))

    def connect_agent(self, timeout: float = 10.0) -> None:
        """Wait for the agent's Hello (it is welcomed by ``pump``)."""
        self.expect(Hello, lambda m: m.service == ServiceKind.PEER_AGENT, timeout=timeout)


# --- fake peers ---------------------------------------------------------------------------------

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
