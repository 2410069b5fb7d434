"""Plays the storage agent's counterparts against the real agent process.

The pytest process is not gevent-patched: the fake coordinator (a ROUTER on the bus endpoint)
and the fake peer agents (DEALERs on the data endpoint) are plain blocking pyzmq sockets, and
every receive is polled with a timeout. ``FakeCoordinator.welcome`` also takes the
``AgentInfo`` that follows every ``Welcome``; ``replace`` plays a restarted coordinator.
``AgentProcess`` runs ``python -m torviz.services.storage_agent`` and is always killed by the
fixture that started it.
"""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import zmq

from torviz.shared.bencode import encode
from torviz.shared.bus import (
    AgentInfo,
    Hello,
    Message,
    OpenTorrent,
    PieceStored,
    PieceVerified,
    ReadBlock,
    Rejected,
    RejectReason,
    ServiceKind,
    StorePiece,
    TorrentOpened,
    Welcome,
    decode_frames,
    encode_frames,
    make_hello,
)
from torviz.shared.metainfo import InfoDict, parse_info_dict
from torviz.shared.types import InfoHash

REPO = Path(__file__).resolve().parents[3]
WAIT = 10.0  # seconds any single expected message may take (a slow CI machine)
M = TypeVar("M", bound=Message)


def recv_message(sock: zmq.Socket[Any], timeout: float = WAIT) -> tuple[list[bytes], Message, Any]:
    """One message: (routing frames, decoded message, data frame or None)."""
    if not sock.poll(int(timeout * 1000), zmq.POLLIN):
        raise AssertionError(f"nothing arrived within {timeout}s")
    frames = sock.recv_multipart()
    routing: list[bytes] = []
    if sock.type == zmq.ROUTER:
        routing, frames = frames[:1], frames[1:]
    message, data = decode_frames(frames)
    return routing, message, data


class FakeCoordinator:
    """The bus ROUTER: welcomes the agent and exchanges messages with it."""

    def __init__(self, context: zmq.Context[Any], endpoint: str) -> None:
        self.context = context
        self.sock = self._bind(endpoint)
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.identity = b""
        self.backlog: list[Message] = []
        self.info: AgentInfo | None = None
        """The ``AgentInfo`` that followed the last ``Welcome``."""

    def _bind(self, endpoint: str) -> zmq.Socket[Any]:
        sock: zmq.Socket[Any] = self.context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a restarted agent reuses its identity
        sock.bind(endpoint)
        return sock

    def replace(self) -> None:
        """A restarted coordinator on the same endpoint: what the old one queued is gone."""
        self.sock.close(linger=0)
        time.sleep(0.05)
        self.sock = self._bind(self.endpoint)
        self.backlog.clear()

    def welcome(
        self, timeout: float = WAIT, heartbeat_interval: float = 30.0, *, hello_first: bool = False
    ) -> Hello:
        """Wait for an agent's Hello (skipping what an earlier agent said), answer Welcome and
        wait for the ``AgentInfo`` that follows it (kept in ``info``).

        ``hello_first``: answer anything before the Hello with ``Rejected("hello_first")``, as a
        coordinator does that has not welcomed the agent (it restarted).
        """
        deadline = time.monotonic() + timeout
        while True:
            routing, hello, _ = recv_message(self.sock, max(0.0, deadline - time.monotonic()))
            if isinstance(hello, Hello):
                break
            if hello_first:
                self.identity = routing[0]
                self.send(Rejected(RejectReason.HELLO_FIRST, "coord-test: say Hello first"))
        self.identity = routing[0]
        welcome = Welcome(hello.protocol_version, "coordinator", "coord-test", heartbeat_interval)
        self.send(welcome)
        self.info = self.expect(AgentInfo, max(0.0, deadline - time.monotonic()))
        return hello

    def send(self, message: Message) -> None:
        self.sock.send_multipart([self.identity, *encode_frames(message)])

    def recv(self, timeout: float = WAIT) -> Message:
        if self.backlog:
            return self.backlog.pop(0)
        _, message, _ = recv_message(self.sock, timeout)
        return message

    def expect(self, kind: type[M], timeout: float = WAIT) -> M:
        """The next message of type ``kind``; others (heartbeats) are kept for later."""
        deadline = time.monotonic() + timeout
        for index, message in enumerate(self.backlog):
            if isinstance(message, kind):
                return self.backlog.pop(index)  # type: ignore[return-value]
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {kind.__name__} within {timeout}s (got {self.backlog})"
            _, message, _ = recv_message(self.sock, remaining)
            if isinstance(message, kind):
                return message
            if type(message).__name__ != "Heartbeat":
                self.backlog.append(message)

    def expect_none(self, kind: type[Message], within: float) -> None:
        """Nothing of type ``kind`` arrives for ``within`` seconds."""
        deadline = time.monotonic() + within
        while (remaining := deadline - time.monotonic()) > 0:
            if not self.sock.poll(int(remaining * 1000), zmq.POLLIN):
                return
            _, message, _ = recv_message(self.sock, 0.1)
            assert not isinstance(message, kind), f"unexpected {message}"
            if type(message).__name__ != "Heartbeat":
                self.backlog.append(message)


class PeerClient:
    """A peer agent's DEALER on the data endpoint."""

    def __init__(self, context: zmq.Context[Any], endpoint: str, name: str) -> None:
        self.name = name
        self.sock: zmq.Socket[Any] = context.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTING_ID, name.encode())
        self.sock.connect(endpoint)

    def hello(self, hello: Hello | None = None, timeout: float = WAIT) -> Message:
        """Send a Hello (the current one by default) and return the answer."""
        hello = hello or make_hello(ServiceKind.PEER_AGENT, self.name, "test", os.getpid())
        self.send(hello)
        return self.recv(timeout)

    def send(self, message: Message, data: bytes | None = None) -> None:
        self.sock.send_multipart(encode_frames(message, data))

    def store(
        self, info_hash: InfoHash, piece: int, data: bytes, contributors: Sequence[str]
    ) -> None:
        self.send(StorePiece(info_hash, piece, tuple(contributors)), data)

    def read(
        self, request_id: int, info_hash: InfoHash, piece: int, offset: int, length: int
    ) -> tuple[Message, bytes | None]:
        self.send(ReadBlock(request_id, info_hash, piece, offset, length))
        while True:  # answers to earlier pieces (PieceStored) may come first
            _, message, data = recv_message(self.sock)
            if not isinstance(message, PieceStored):
                return message, None if data is None else bytes(data)

    def recv(self, timeout: float = WAIT) -> Message:
        return recv_message(self.sock, timeout)[1]


@dataclass
class AgentProcess:
    """``python -m torviz.services.storage_agent`` with its stderr in a file."""

    proc: subprocess.Popen[bytes]
    stderr_path: Path

    @classmethod
    def start(
        cls,
        bus: str,
        data: str | None,
        workdir: Path,
        *,
        extra: Sequence[str] = (),
        file_size_limit: int | None = None,
    ) -> AgentProcess:
        """Start an agent; ``file_size_limit`` (RLIMIT_FSIZE, bytes) makes bigger files fail
        with EFBIG, as a full disk fails with ENOSPC. It is set right after the start, long
        before the agent writes anything (it writes only when a test sends pieces)."""
        argv = [sys.executable, "-m", "torviz.services.storage_agent", "--coordinator", bus]
        if data is not None:
            argv += ["--data", data]
        argv += ["--agent-id", "sa-test", "--log-level", "DEBUG", *extra]
        stderr_path = workdir / f"agent-{time.monotonic_ns()}.stderr"
        with stderr_path.open("wb") as stderr:
            proc = subprocess.Popen(argv, stderr=stderr, stdout=subprocess.DEVNULL, cwd=REPO)
        if file_size_limit is not None:
            resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))
        return cls(proc, stderr_path)

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"agent still running after {timeout}s:\n{self.log()}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@dataclass(frozen=True)
class Torrent:
    """A torrent for the agent: its raw info dict and the bytes it describes."""

    raw_info: bytes
    info: InfoDict
    content: bytes

    @property
    def info_hash(self) -> InfoHash:
        return InfoHash(hashlib.sha1(self.raw_info).digest())

    @property
    def num_pieces(self) -> int:
        return self.info.num_pieces

    def piece(self, index: int) -> bytes:
        start = index * self.info.piece_length
        return self.content[start : start + self.info.geometry.piece_size(index)]

    def file_content(self, index: int) -> bytes:
        entry = self.info.files[index]
        return self.content[entry.offset : entry.offset + entry.length]

    def file_path(self, save_path: Path, index: int) -> Path:
        return save_path.joinpath(*self.info.files[index].path)


def torrent_from_files(name: str, files: Sequence[tuple[str, bytes]], piece_length: int) -> Torrent:
    """A multi-file torrent built by hand with ``shared.bencode.encode``."""
    content = b"".join(data for _, data in files)
    hashes = b"".join(
        hashlib.sha1(content[i : i + piece_length]).digest()
        for i in range(0, len(content), piece_length)
    )
    raw_info = encode(
        {
            b"files": [
                {b"length": len(data), b"path": [p.encode() for p in path.split("/")]}
                for path, data in files
            ],
            b"name": name.encode(),
            b"piece length": piece_length,
            b"pieces": hashes,
        }
    )
    return Torrent(raw_info, parse_info_dict(raw_info), content)


def open_torrent(coordinator: FakeCoordinator, torrent: Torrent, save: Path) -> TorrentOpened:
    """Send ``OpenTorrent`` and wait for its ``TorrentOpened``."""
    coordinator.send(OpenTorrent(torrent.info_hash, torrent.raw_info, str(save)))
    opened = coordinator.expect(TorrentOpened)
    assert opened.info_hash == torrent.info_hash
    return opened


def store_all(
    coordinator: FakeCoordinator, torrent: Torrent, clients: list[PeerClient], pieces: list[int]
) -> set[int]:
    """Send ``pieces`` round-robin from ``clients``; returns the pieces reported verified."""
    for turn, piece in enumerate(pieces):
        client = clients[turn % len(clients)]
        client.store(torrent.info_hash, piece, torrent.piece(piece), [f"{client.name}/1"])
    verified = set()
    for _ in pieces:
        event = coordinator.expect(PieceVerified)
        assert event.info_hash == torrent.info_hash
        verified.add(event.piece)
    return verified


def disk_bytes(torrent: Torrent, save: Path) -> bytes:
    """The torrent's byte stream as it is on disk; a missing file reads as zeros."""
    parts = []
    for index, entry in enumerate(torrent.info.files):
        path = torrent.file_path(save, index)
        data = path.read_bytes() if path.exists() else b""
        parts.append(data.ljust(entry.length, b"\0")[: entry.length])
    return b"".join(parts)


def full_bitfield(pieces: int) -> bytes:
    """The wire bitfield of a complete torrent of ``pieces`` pieces."""
    bits = (1 << pieces) - 1
    length = (pieces + 7) // 8
    return (bits << (length * 8 - pieces)).to_bytes(length, "big")
