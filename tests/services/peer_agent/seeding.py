"""What the seeding tests run against: the real storage agent, a torrent on disk, raw peers.

Strategy: the storage agent runs as its own process (``python -m torviz.services.storage_agent``)
connected to the test's fake coordinator (``Counterparts``, which welcomes it on the same bus as
the peer agent) and binding its own data endpoint; the test opens the torrent there with
``OpenTorrent`` exactly as the coordinator does. ``RawPeer`` is a blocking client socket that
dials the agent's listener and speaks the wire protocol as the test dictates (well or badly);
while it waits it keeps pumping the fake coordinator, whose choker may have to answer.

Rules: every wait is bounded; every process and socket is closed by its fixture or owner.
"""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from testing.content import ContentSpec
from testing.peer_agent import REPO, Counterparts
from testing.swarm import LtPeer
from torviz.shared.bencode import encode
from torviz.shared.types import InfoHash, PeerAddress, PeerId
from torviz.shared.wire import codec
from torviz.shared.wire import messages as wire
from torviz.shared.wire.handshake import Handshake, HandshakeReader, Reserved, encode_handshake


@dataclass(frozen=True)
class DiskTorrent:
    """A torrent whose content lies complete on disk, and its .torrent file."""

    raw_info: bytes
    info_hash: InfoHash
    piece_length: int
    data: bytes
    path: Path
    content: ContentSpec

    @property
    def total_length(self) -> int:
        return len(self.data)

    @property
    def num_pieces(self) -> int:
        return -(-self.total_length // self.piece_length)

    def piece(self, index: int) -> bytes:
        start = index * self.piece_length
        return self.data[start : start + self.piece_length]


def disk_torrent(content: ContentSpec, piece_length: int, path: Path) -> DiskTorrent:
    """Build the trackerless .torrent of ``content`` by hand (no libtorrent needed)."""
    data = b"".join(p.read_bytes() for p in content.file_paths())
    pieces = b"".join(
        hashlib.sha1(data[i : i + piece_length]).digest() for i in range(0, len(data), piece_length)
    )
    info: dict[bytes, object] = {
        b"name": content.name.encode(),
        b"piece length": piece_length,
        b"pieces": pieces,
    }
    if content.layout.single_file:
        info[b"length"] = len(data)
    else:
        info[b"files"] = [
            {b"length": spec.size, b"path": [part.encode() for part in spec.path.parts]}
            for spec in content.layout.files
        ]
    raw_info = encode(info)
    path.write_bytes(encode({b"info": info}))
    return DiskTorrent(
        raw_info=raw_info,
        info_hash=InfoHash(hashlib.sha1(raw_info).digest()),
        piece_length=piece_length,
        data=data,
        path=path,
        content=content,
    )


class StorageProcess:
    """``python -m torviz.services.storage_agent`` on the test's bus; ``stop`` always reaps it."""

    def __init__(self, bus: str, data: str, workdir: Path) -> None:
        self.data_endpoint = data
        self.stderr_path = workdir / "storage.stderr"
        with self.stderr_path.open("wb") as stderr:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "torviz.services.storage_agent",
                    "--bus",
                    bus,
                    "--data",
                    data,
                    "--agent-id",
                    "sa1",
                    "--log-level",
                    "DEBUG",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                cwd=REPO,
            )

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


class RawPeer:
    """A peer played by the test: dials the agent, handshakes, sends and reads messages.

    Args:
        parts: the fake coordinator, pumped while the peer waits.
        address: the agent's listen address.
        info_hash: the torrent the handshake asks for.
        source: the local address to dial from (a 127.0.0.x of its own).
        fast: whether the handshake offers the fast extension.
        peer_id: the peer id the handshake carries.
        extensions: whether the handshake offers the extension protocol (BEP 10).
    """

    def __init__(
        self,
        parts: Counterparts,
        address: PeerAddress,
        info_hash: InfoHash,
        *,
        source: str,
        fast: bool = True,
        peer_id: PeerId | None = None,
        extensions: bool = True,
    ) -> None:
        self.parts = parts
        self.peer_id = peer_id or PeerId(b"-XX0001-" + source.encode().ljust(12, b"-")[:12])
        self.sock = socket.create_connection(
            (address.host, address.port), timeout=5.0, source_address=(source, 0)
        )
        self.sock.settimeout(0.05)
        self.reader = HandshakeReader()
        self.decoder = codec.MessageDecoder(max_frame=1 + 8 + 128 * 1024)
        self.handshake: Handshake | None = None
        self.received: list[wire.Message] = []
        self.closed = False
        reserved = Reserved.build(fast=fast, extension_protocol=extensions)
        self.sock.sendall(encode_handshake(Handshake(info_hash, self.peer_id, reserved)))

    @property
    def local_host(self) -> str:
        return str(self.sock.getsockname()[0])

    def send(self, *messages: wire.Message) -> None:
        self.sock.sendall(b"".join(codec.encode(m) for m in messages))

    def _poll(self) -> None:
        try:
            data = self.sock.recv(256 * 1024)
        except TimeoutError:
            return
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return
        if self.handshake is None:
            for item in self.reader.feed(data):
                if isinstance(item, Handshake):
                    self.handshake = item
            data = self.reader.take_surplus()
            if self.handshake is None:
                return
        self.received.extend(self.decoder.feed(data))

    def wait_for(self, what: str, condition: object, timeout: float = 10.0) -> None:
        """Read (pumping the coordinator) until ``condition()`` holds; fail after ``timeout``."""
        assert callable(condition)
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                names = [type(m).__name__ for m in self.received][-20:]
                raise AssertionError(
                    f"{what}: not within {timeout} s (closed={self.closed}, got {names})"
                )
            if self.closed:
                self.parts.pump(0.05)
            else:
                self._poll()
                self.parts.pump(0)

    def wait_closed(self, timeout: float = 10.0) -> None:
        self.wait_for("closed by the agent", lambda: self.closed, timeout)

    def of(self, kind: type[wire.Message]) -> list[wire.Message]:
        return [m for m in self.received if isinstance(m, kind)]

    def close(self) -> None:
        self.sock.close()


def wait_finished(parts: Counterparts, leecher: LtPeer, timeout: float = 60.0) -> None:
    """Wait for a libtorrent leecher to finish while pumping the fake coordinator (whose
    choker must answer the leecher's interest)."""
    deadline = time.monotonic() + timeout
    while leecher.process.last("finished") is None:
        if time.monotonic() > deadline:
            status = leecher.status()
            raise AssertionError(f"{leecher.name} not finished within {timeout} s: {status}")
        if not leecher.is_running():
            raise AssertionError(f"{leecher.name} exited: {leecher.process.stderr_tail()}")
        parts.pump(0.1)
