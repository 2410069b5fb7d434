"""A seeder written for the tests that misbehaves: it serves chosen pieces with corrupted bytes,
answers every request only after a delay (a slow peer), or hangs up after a few blocks (so the
client finishes its half-fetched pieces from other peers).

It speaks just enough of BEP 3 (handshake, bitfield, unchoke on interest, piece for request),
using the product's own codec, and announces itself to a tracker so the client under test
finds it like any other peer. Runs in threads inside the pytest process; ``close`` stops it.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from torviz.services.storage_agent.store import FileStorage
from torviz.shared.bitfield import Bitfield
from torviz.shared.metainfo import parse_metainfo
from torviz.shared.tracker import AnnounceEvent, AnnounceRequest, build_announce_url
from torviz.shared.types import PeerAddress, PeerId
from torviz.shared.wire import codec
from torviz.shared.wire import messages as wire
from torviz.shared.wire.handshake import (
    HANDSHAKE_LENGTH,
    Handshake,
    Reserved,
    decode_handshake,
    encode_handshake,
)

__all__ = ["BadSeeder"]

_TIMEOUT = 30.0


class BadSeeder:
    """Serves the torrent at ``torrent`` from ``data_dir``, corrupting pieces where ``corrupt``.

    Args:
        torrent: the .torrent file.
        data_dir: the directory holding the torrent's (correct) data.
        host: a loopback address to listen on.
        corrupt: which pieces to corrupt (default: all of them).
        delay: seconds to wait before answering each request.
        hang_up_after: close each connection after serving this many blocks on it.
    """

    def __init__(
        self,
        torrent: Path,
        data_dir: Path,
        host: str,
        corrupt: Callable[[int], bool] = lambda piece: True,
        delay: float = 0.0,
        hang_up_after: int | None = None,
    ) -> None:
        self.delay = delay
        self.hang_up_after = hang_up_after
        self.metainfo = parse_metainfo(Path(torrent).read_bytes())
        self.storage = FileStorage(self.metainfo.info, str(data_dir))
        self.corrupt = corrupt
        self.peer_id = PeerId(b"-XX0001-" + os.urandom(12))
        self.blocks_served = 0
        self.corrupt_blocks_served = 0
        self.connections = 0
        self._stopping = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server((host, 0))
        self._listener.settimeout(0.2)
        self.address = PeerAddress(host, self._listener.getsockname()[1])
        self._threads = [threading.Thread(target=self._accept_loop, daemon=True)]
        self._threads[0].start()

    def announce(self, announce_url: str) -> None:
        """Tell the tracker we seed (``started``, nothing left), from our own address."""
        request = AnnounceRequest(
            info_hash=self.metainfo.info_hash,
            peer_id=self.peer_id,
            port=self.address.port,
            uploaded=0,
            downloaded=0,
            left=0,
            event=AnnounceEvent.STARTED,
        )
        url = urllib.parse.urlsplit(build_announce_url(announce_url, request))
        # From our own loopback address, so the tracker records that address for us.
        conn = http.client.HTTPConnection(
            url.hostname or "", url.port, timeout=5, source_address=(self.address.host, 0)
        )
        try:
            conn.request("GET", f"{url.path}?{url.query}")
            conn.getresponse().read()
        finally:
            conn.close()

    def close(self) -> None:
        self._stopping.set()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._listener.close()
        self.storage.close()

    def __enter__(self) -> BadSeeder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(_TIMEOUT)
            with self._lock:
                self._sockets.append(conn)
                self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            data = b""
            while len(data) < HANDSHAKE_LENGTH:
                chunk = conn.recv(HANDSHAKE_LENGTH - len(data))
                if not chunk:
                    return
                data += chunk
            theirs = decode_handshake(data)
            if theirs.info_hash != self.metainfo.info_hash:
                return
            info = self.metainfo.info
            conn.sendall(
                encode_handshake(Handshake(self.metainfo.info_hash, self.peer_id, Reserved()))
                + codec.encode(wire.Bitfield(Bitfield.full(info.num_pieces).to_bytes()))
            )
            decoder = codec.MessageDecoder()
            served = 0
            while not self._stopping.is_set():
                chunk = conn.recv(65536)
                if not chunk:
                    return
                for message in decoder.feed(chunk):
                    served += self._answer(conn, message)
                    if self.hang_up_after is not None and served >= self.hang_up_after:
                        return
        except (OSError, ValueError):
            return
        finally:
            conn.close()

    def _answer(self, conn: socket.socket, message: wire.Message) -> int:
        """Answer one message; returns the number of blocks served (0 or 1)."""
        match message:
            case wire.Interested():
                conn.sendall(codec.encode(wire.Unchoke()))
            case wire.Request(piece=piece, offset=offset, length=length):
                if self.delay and self._stopping.wait(self.delay):
                    return 0
                block = bytearray(self.storage.read(piece, offset, length))
                if self.corrupt(piece):
                    for i in range(0, len(block), 997):
                        block[i] ^= 0xFF
                    self.corrupt_blocks_served += 1
                self.blocks_served += 1
                conn.sendall(codec.encode_piece_header(piece, offset, length) + bytes(block))
                return 1
            case _:
                pass
        return 0
