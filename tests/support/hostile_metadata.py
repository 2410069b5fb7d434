"""Hostile peers for magnet links: a BEP 3 + BEP 10 + BEP 9 + BEP 11 "seeder" that lies.

``HostileMetadataPeer`` listens on a loopback address of its own and answers every connection
for one info hash with a handshake (extension and fast bits set), an extension handshake
offering ``ut_metadata`` and ``ut_pex``, and ``have none`` (it has no data, so the client under
test never asks it for a block). Then, by ``mode``:

- ``wrong_bytes``: advertises the true ``metadata_size`` and serves every requested piece with
  the right length and every byte inverted (the assembled dictionary hashes wrong);
- ``huge_size``: advertises ``metadata_size`` 2**31 and answers requests with 16 KiB of junk
  that claims that total size;
- ``silent``: advertises the true size and never answers a request;
- ``partial``: advertises the true size, serves metadata piece 0 and never answers for the
  others (a peer that vanishes half-way, for restart tests);
- ``pex_flood``: serves the true metadata honestly, and once the client's extension handshake
  names ``ut_pex``, sends 10,000 addresses: 100 messages of 100 (``flood_messages=100``) or
  one oversized message of 10,000 (``flood_messages=1``).

Rules:
- Loopback only: the flood names addresses in 127.77.0.0/16 on port 1, where nothing of the
  tests listens, plus one *canary* address (``canary``, on this peer's own host) in every
  message, where a listener counts the connections made to it, by source address (each is
  closed at once). Other peers of the swarm may learn of this peer through PeX and be flooded
  too (libtorrent then dials the canary without much of a bound): count by source address.
  No address outside 127.0.0.0/8 is ever written.
- Bytes are framed and bencoded by hand here (not through the product's codecs), so the
  product's decoders are tested against an independent writer.
- Threads, bounded: a frame longer than 1 MiB closes the connection, every socket has a
  timeout, ``close`` stops everything (also the canary).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import struct
import threading
from collections import Counter
from typing import Literal

__all__ = ["FLOOD_ADDRESSES", "HostileMetadataPeer", "Mode"]

Mode = Literal["wrong_bytes", "huge_size", "silent", "pex_flood", "partial"]

FLOOD_ADDRESSES = 10_000
"""How many addresses the PeX flood names in all."""

_PROTOCOL = b"\x13BitTorrent protocol"
_RESERVED = bytes([0, 0, 0, 0, 0, 0x10, 0, 0x04])  # extension protocol + fast extension
_OUR_UT_METADATA = 3  # the ids under which this peer receives those extensions
_OUR_UT_PEX = 4
_EXTENDED = 20
_HAVE_NONE = 15
_MAX_FRAME = 1 << 20
_BLOCK = 16 * 1024
_HUGE = 1 << 31
_TIMEOUT = 30.0


def _frame(message_id: int, payload: bytes = b"") -> bytes:
    return struct.pack(">IB", 1 + len(payload), message_id) + payload


def _bstr(data: bytes) -> bytes:
    return b"%d:%s" % (len(data), data)


def _extended(ext_id: int, payload: bytes) -> bytes:
    return _frame(_EXTENDED, bytes([ext_id]) + payload)


def _find_int(payload: bytes, key: bytes) -> int | None:
    """The integer after bencoded ``key`` in a flat dictionary (enough for BEP 9 requests)."""
    at = payload.find(_bstr(key) + b"i")
    if at < 0:
        return None
    start = at + len(_bstr(key)) + 1
    end = payload.find(b"e", start)
    try:
        return int(payload[start:end])
    except ValueError:
        return None


def _find_extension_id(handshake: bytes, name: bytes) -> int | None:
    """The id the client gave extension ``name`` in its ``m`` dictionary, if any."""
    return _find_int(handshake, name)


def flood_payload(addresses: list[tuple[str, int]]) -> bytes:
    """A ut_pex payload adding ``addresses`` (all flags 0), keys in bencode order."""
    compact = b"".join(socket.inet_aton(host) + struct.pack(">H", port) for host, port in addresses)
    return (
        b"d"
        + _bstr(b"added")
        + _bstr(compact)
        + _bstr(b"added.f")
        + _bstr(bytes(len(addresses)))
        + _bstr(b"dropped")
        + _bstr(b"")
        + b"e"
    )


class HostileMetadataPeer:
    """One hostile peer for the torrent whose raw info dictionary is ``info``.

    Args:
        info: the torrent's info dictionary, exactly as bencoded (its SHA-1 is the info hash).
        host: the loopback address to listen on.
        mode: how it lies (see the module docstring).
        flood_messages: ``pex_flood`` only: 100 messages of 100 addresses, or 1 of 10,000.
    """

    def __init__(self, info: bytes, host: str, mode: Mode, *, flood_messages: int = 100) -> None:
        if not host.startswith("127."):
            raise ValueError("hostile peers listen on loopback only")
        if flood_messages not in (1, 100):
            raise ValueError("flood_messages is 1 or 100")
        self.info = info
        self.info_hash = hashlib.sha1(info).digest()
        self.mode = mode
        self.flood_messages = flood_messages
        self.peer_id = b"-XX0001-" + os.urandom(12)
        self.connections = 0
        """Connections accepted (handshake with our info hash)."""
        self.extension_handshakes = 0
        """Extension handshakes received from the client."""
        self.requests = 0
        """ut_metadata requests received."""
        self.requested_pieces: list[int] = []
        """The metadata piece of each request, in order of arrival."""
        self.answered = 0
        """ut_metadata data messages sent."""
        self.floods_sent = 0
        """ut_pex messages sent."""
        self.closed_by_client = 0
        """Connections the client closed."""
        self.canary_hits = 0
        """Connections made to the canary address (one of the flooded addresses)."""
        self.canary_from: Counter[str] = Counter()
        """Connections made to the canary, by the address they came from."""
        self.connections_from: Counter[str] = Counter()
        """Connections accepted (handshake with our info hash), by the address they came from."""
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server((host, 0))
        self._listener.settimeout(0.2)
        self.address = (host, int(self._listener.getsockname()[1]))
        self._canary = socket.create_server((host, 0))
        self._canary.settimeout(0.2)
        self.canary = (host, int(self._canary.getsockname()[1]))
        self._threads = [
            threading.Thread(target=self._accept_loop, name="hostile-accept", daemon=True),
            threading.Thread(target=self._canary_loop, name="hostile-canary", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def __str__(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    @property
    def advertised_size(self) -> int:
        return _HUGE if self.mode == "huge_size" else len(self.info)

    def flood_addresses(self) -> list[tuple[str, int]]:
        """The addresses of the flood: 9,999 in 127.77.0.0/16 (port 1) and the canary."""
        fake = [(f"127.77.{n // 250}.{n % 250 + 1}", 1) for n in range(FLOOD_ADDRESSES - 1)]
        return [self.canary, *fake]

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
        self._canary.close()

    def __enter__(self) -> HostileMetadataPeer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- threads ------------------------------------------------------------------------------

    def _canary_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, peer = self._canary.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.canary_hits += 1
                self.canary_from[str(peer[0])] += 1
            conn.close()

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
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def dial(self, host: str, port: int) -> None:
        """Connect to a client (from this peer's own address) and speak as when dialled."""
        conn = socket.create_connection(
            (host, port), timeout=5, source_address=(self.address[0], 0)
        )
        conn.settimeout(_TIMEOUT)
        with self._lock:
            self._sockets.append(conn)
        conn.sendall(_PROTOCOL + _RESERVED + self.info_hash + self.peer_id)
        thread = threading.Thread(target=self._serve, args=(conn, True), daemon=True)
        self._threads.append(thread)
        thread.start()

    def _read_exactly(self, conn: socket.socket, size: int) -> bytes | None:
        data = b""
        while len(data) < size:
            chunk = conn.recv(min(65536, size - len(data)))
            if not chunk:
                return None
            data += chunk
        return data

    def _serve(self, conn: socket.socket, dialled: bool = False) -> None:
        try:
            theirs = self._read_exactly(conn, 68)
            if theirs is None or theirs[28:48] != self.info_hash:
                return
            with self._lock:
                self.connections += 1
                self.connections_from[str(conn.getpeername()[0])] += 1
            handshake = b"d1:md11:ut_metadatai%de6:ut_pexi%dee13:metadata_sizei%de1:v7:hostilee" % (
                _OUR_UT_METADATA,
                _OUR_UT_PEX,
                self.advertised_size,
            )
            ours = b"" if dialled else _PROTOCOL + _RESERVED + self.info_hash + self.peer_id
            conn.sendall(ours + _extended(0, handshake) + _frame(_HAVE_NONE))
            self._message_loop(conn)
        except TimeoutError:  # this peer's own patience ran out: nobody closed anything
            pass
        except OSError:  # reset by the client, or closed by ``close``
            if not self._stopping.is_set():
                with self._lock:
                    self.closed_by_client += 1
        finally:
            conn.close()

    def _message_loop(self, conn: socket.socket) -> None:
        their_metadata_id: int | None = None
        while not self._stopping.is_set():
            header = self._read_exactly(conn, 4)
            if header is None:
                with self._lock:
                    self.closed_by_client += 1
                return
            (length,) = struct.unpack(">I", header)
            if length > _MAX_FRAME:
                return
            body = self._read_exactly(conn, length) if length else b""
            if body is None:
                with self._lock:
                    self.closed_by_client += 1
                return
            if len(body) < 2 or body[0] != _EXTENDED:
                continue
            if body[1] == 0:
                with self._lock:
                    self.extension_handshakes += 1
                their_metadata_id = _find_extension_id(body[2:], b"ut_metadata")
                pex_id = _find_extension_id(body[2:], b"ut_pex")
                if self.mode == "pex_flood" and pex_id:
                    self._flood(conn, pex_id)
            elif body[1] == _OUR_UT_METADATA and their_metadata_id:
                self._answer(conn, body[2:], their_metadata_id)

    def _flood(self, conn: socket.socket, pex_id: int) -> None:
        addresses = self.flood_addresses()
        per_message = len(addresses) // self.flood_messages
        for start in range(0, len(addresses), per_message):
            # The canary rides in every message, so a cap per message cannot hide it.
            chunk = addresses[start : start + per_message]
            if start:
                chunk = [self.canary, *chunk[1:]]
            conn.sendall(_extended(pex_id, flood_payload(chunk)))
            with self._lock:
                self.floods_sent += 1

    def _answer(self, conn: socket.socket, payload: bytes, their_id: int) -> None:
        msg_type = _find_int(payload, b"msg_type")
        piece = _find_int(payload, b"piece")
        if msg_type != 0 or piece is None:
            return
        with self._lock:
            self.requests += 1
            self.requested_pieces.append(piece)
        if self.mode == "silent" or (self.mode == "partial" and piece != 0):
            return
        if self.mode == "huge_size":
            block, total = bytes(_BLOCK), _HUGE
        else:
            block = self.info[piece * _BLOCK : (piece + 1) * _BLOCK]
            total = len(self.info)
            if not block:
                reject = b"d8:msg_typei2e5:piecei%dee" % piece
                conn.sendall(_extended(their_id, reject))
                return
            if self.mode == "wrong_bytes":
                block = bytes(b ^ 0xFF for b in block)
        header = b"d8:msg_typei1e5:piecei%de10:total_sizei%dee" % (piece, total)
        conn.sendall(_extended(their_id, header + block))
        with self._lock:
            self.answered += 1
