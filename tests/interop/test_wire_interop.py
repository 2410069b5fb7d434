"""torviz's wire codec against a live libtorrent seeder on loopback.

The seeder is ``tests/vectors/wire/capture_libtorrent.py seed`` in its own process, started and
stopped by a fixture. The test side speaks only through shared.wire: our handshake, our
extension handshake, requests, and MessageDecoder (with and without a block sink) for
everything libtorrent sends.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from torviz.shared.peer_id import generate_peer_id, identify_client
from torviz.shared.types import InfoHash
from torviz.shared.wire import (
    Extended,
    ExtensionHandshake,
    Handshake,
    HandshakeReader,
    HaveAll,
    HaveNone,
    Interested,
    Message,
    MessageDecoder,
    Piece,
    Request,
    Reserved,
    Unchoke,
    decode_extension_handshake,
    encode,
    encode_handshake,
    extension_handshake_message,
)

pytest.importorskip("libtorrent")
from tests.vectors.wire.capture_libtorrent import (
    PIECE_LENGTH,
    TOTAL_LENGTH,
    Seeder,
)

pytestmark = pytest.mark.interop

HOST = "127.0.0.5"
TIMEOUT = 15.0
OUR_V = "torviz 0.1.0 (interop test)"


@pytest.fixture(scope="module")
def seeder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeder]:
    process = Seeder(tmp_path_factory.mktemp("wire-seeder"), host=HOST, lifetime=120)
    try:
        yield process
    finally:
        process.close()


class Connection:
    """One plain TCP peer connection driven entirely by the shared.wire codec."""

    def __init__(self, seeder: Seeder, decoder: MessageDecoder | None = None) -> None:
        ready: dict[str, Any] = seeder.ready
        self.info_hash = InfoHash.from_hex(ready["info_hash"])
        self.sock = socket.create_connection((ready["host"], ready["port"]), timeout=TIMEOUT)
        self.decoder = decoder or MessageDecoder()
        self.pending: list[Message] = []

    def handshake(self, reserved: Reserved) -> Handshake:
        ours = Handshake(self.info_hash, generate_peer_id(), reserved)
        self.sock.sendall(encode_handshake(ours))
        reader = HandshakeReader()
        deadline = time.monotonic() + TIMEOUT
        while reader.handshake is None:
            self.pending += self._feed_reader(reader, deadline)
        return reader.handshake

    def _feed_reader(self, reader: HandshakeReader, deadline: float) -> list[Message]:
        reader.feed(self._recv(deadline))
        if reader.handshake is None:
            return []
        return self.decoder.feed(reader.take_surplus())

    def _recv(self, deadline: float) -> bytes:
        if time.monotonic() > deadline:
            raise TimeoutError("libtorrent went quiet")
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("libtorrent closed the connection")
        return data

    def send(self, *messages: Message) -> None:
        self.sock.sendall(b"".join(encode(m) for m in messages))

    def read_until(self, done: Callable[[list[Message]], bool]) -> list[Message]:
        """Messages received so far and then until ``done(messages)`` holds."""
        deadline = time.monotonic() + TIMEOUT
        messages, self.pending = self.pending, []
        while not done(messages):
            messages += self.decoder.feed(self._recv(deadline))
        return messages

    def close(self) -> None:
        self.sock.close()


def blocks() -> list[Request]:
    out = []
    for start in range(0, TOTAL_LENGTH, 16384):
        piece, offset = divmod(start, PIECE_LENGTH)
        out.append(Request(piece, offset, min(16384, TOTAL_LENGTH - start)))
    return out


def test_download_every_block_through_the_codec(seeder: Seeder) -> None:
    data = Path(seeder.ready["data_path"]).read_bytes()
    connection = Connection(seeder)
    try:
        theirs = connection.handshake(Reserved.build(extension_protocol=True, fast=True))
        assert theirs.info_hash == connection.info_hash
        assert theirs.reserved.extension_protocol and theirs.reserved.fast
        assert identify_client(theirs.peer_id).name == "libtorrent"
        connection.send(
            extension_handshake_message(ExtensionHandshake(m={"ut_metadata": 3}, v=OUR_V)),
            HaveNone(),
            Interested(),
        )
        early = connection.read_until(lambda ms: any(isinstance(m, Unchoke) for m in ms))
        assert any(isinstance(m, HaveAll) for m in early)
        (extended,) = [m for m in early if isinstance(m, Extended)]
        assert extended.ext_id == 0
        their_extensions = decode_extension_handshake(extended.payload)
        assert their_extensions.v is not None and "libtorrent" in their_extensions.v

        requests = blocks()
        connection.send(*requests)
        got = connection.read_until(
            lambda ms: sum(isinstance(m, Piece) for m in ms) == len(requests)
        )
        pieces = {(m.piece, m.offset): m for m in got if isinstance(m, Piece)}
        for request in requests:
            piece = pieces[(request.piece, request.offset)]
            start = request.piece * PIECE_LENGTH + request.offset
            assert piece.data == data[start : start + request.length]

        # libtorrent kept the connection after our extension handshake and names us by its v.
        peers = seeder.ask("peers")
        assert isinstance(peers, list)
        assert OUR_V in [peer["client"] for peer in peers]
    finally:
        connection.close()


def test_block_sink_writes_blocks_straight_into_the_piece_buffer(seeder: Seeder) -> None:
    data = Path(seeder.ready["data_path"]).read_bytes()
    buffer = bytearray(TOTAL_LENGTH)
    view = memoryview(buffer)

    def sink(piece: int, offset: int, length: int) -> memoryview:
        start = piece * PIECE_LENGTH + offset
        return view[start : start + length]

    connection = Connection(seeder, MessageDecoder(block_sink=sink))
    try:
        connection.handshake(Reserved.build(fast=True))
        connection.send(HaveNone(), Interested())
        connection.read_until(lambda ms: any(isinstance(m, Unchoke) for m in ms))
        requests = blocks()
        connection.send(*requests)
        got = connection.read_until(
            lambda ms: sum(isinstance(m, Piece) for m in ms) == len(requests)
        )
        assert all(isinstance(m.data, memoryview) for m in got if isinstance(m, Piece))
        assert bytes(buffer) == data
    finally:
        connection.close()


def test_libtorrent_drops_a_peer_that_sends_an_unknown_message_id(seeder: Seeder) -> None:
    """The evidence behind MessageDecoder's default of refusing unknown ids."""
    connection = Connection(seeder)
    try:
        connection.handshake(Reserved.build(extension_protocol=True, fast=True))
        connection.read_until(lambda ms: any(isinstance(m, HaveAll) for m in ms))
        connection.sock.sendall(b"\x00\x00\x00\x02\x63\x00" + encode(Interested()))
        with pytest.raises(ConnectionError):
            connection.read_until(lambda ms: False)
    finally:
        connection.close()
