"""Bytes captured from a libtorrent 2.1 seeder (tests/vectors/wire/capture_libtorrent.py),
decoded with torviz's codec and checked field by field."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from torviz.shared.peer_id import identify_client
from torviz.shared.wire import (
    PROTOCOL,
    Bitfield,
    Extended,
    HandshakeReader,
    HaveAll,
    Message,
    MessageDecoder,
    Piece,
    Unchoke,
    decode_extension_handshake,
    decode_handshake,
    encode,
)

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "wire"
META: dict[str, Any] = json.loads((VECTORS / "libtorrent_vectors.json").read_text())
_MESSAGE_NAMES = {1: "Unchoke", 7: "Piece", 14: "HaveAll", 17: "AllowedFast", 20: "Extended"}


def vector(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def payload() -> bytes:
    """Same generator as the capture script: SHA-256 in counter mode."""
    total = META["total_length"]
    blocks = (
        hashlib.sha256(b"torviz wire vector %d" % i).digest() for i in range((total + 31) // 32)
    )
    return b"".join(blocks)[:total]


def decode_in_steps(raw: bytes, step: int) -> list[Message]:
    decoder = MessageDecoder()
    out: list[Message] = []
    for start in range(0, len(raw), step):
        out += decoder.feed(raw[start : start + step])
    assert decoder.buffered == 0
    return out


@pytest.mark.parametrize("name", ["lt_handshake.bin", "lt_handshake_plain.bin"])
def test_handshake(name: str) -> None:
    raw = vector(name)
    handshake = decode_handshake(raw)
    assert raw[1:20] == PROTOCOL
    assert handshake.info_hash.hex == META["info_hash"]
    # libtorrent always advertises BEP 10 and BEP 6, and the DHT bit even with the DHT off.
    assert handshake.reserved.extension_protocol
    assert handshake.reserved.fast
    assert handshake.reserved.dht
    client = identify_client(handshake.peer_id)
    assert client.name == "libtorrent"
    assert META["libtorrent"].startswith(client.version)
    reader = HandshakeReader()
    events = [event for byte in range(68) for event in reader.feed(raw[byte : byte + 1])]
    assert events == [handshake.header, handshake]


def test_extension_handshake() -> None:
    raw = vector("lt_extension_handshake.bin")
    (message,) = MessageDecoder().feed(raw)
    assert isinstance(message, Extended) and message.ext_id == 0
    handshake = decode_extension_handshake(message.payload)
    assert handshake.v is not None and "libtorrent" in handshake.v
    assert handshake.extension_id("ut_metadata") is not None
    assert handshake.extension_id("ut_pex") is not None
    assert handshake.reqq is not None and handshake.reqq > 0
    assert handshake.metadata_size is not None and handshake.metadata_size > 0
    assert handshake.upload_only is True  # it is a seeder
    assert handshake.yourip == bytes([127, 0, 0, 1])
    assert handshake.extra.get(b"complete_ago") == -1
    assert encode(message) == raw


def test_single_frames() -> None:
    assert MessageDecoder().feed(vector("lt_have_all.bin")) == [HaveAll()]
    assert MessageDecoder().feed(vector("lt_unchoke.bin")) == [Unchoke()]
    # Three pieces: the high three bits of one byte, spare bits clear.
    assert MessageDecoder().feed(vector("lt_bitfield.bin")) == [Bitfield(b"\xe0")]


def test_pieces_carry_the_requested_bytes() -> None:
    data = payload()
    assert hashlib.sha1(data).hexdigest() == META["payload_sha1"]
    piece_length = META["piece_length"]
    for index, (piece, offset, length) in enumerate(META["requests"]):
        raw = vector(f"lt_piece_{index}.bin")
        (message,) = MessageDecoder().feed(raw)
        assert isinstance(message, Piece)
        assert (message.piece, message.offset, len(message.data)) == (piece, offset, length)
        start = piece * piece_length + offset
        assert message.data == data[start : start + length]
        assert encode(message) == raw


@pytest.mark.parametrize("step", [1, 5, 13, 1000, 16397, 65536])
def test_whole_stream_in_order(step: int) -> None:
    raw = vector("lt_stream_fast.bin")
    messages = decode_in_steps(raw, step)
    kinds = [type(m).__name__ for m in messages]
    expected = [_MESSAGE_NAMES[i] for i in META["stream_message_ids"]]
    assert kinds == expected
    assert b"".join(encode(m) for m in messages) == raw
    with_trailing = MessageDecoder()
    assert with_trailing.feed(raw + b"\x00\x00") == messages
    assert with_trailing.buffered == 2


def test_capture_recorded_libtorrent_behaviour() -> None:
    # The codec's default for unknown ids follows what libtorrent was seen to do.
    assert META["unknown_message_id_99_closed_connection"] is True
    assert any("invalid message" in reason for reason in META["libtorrent_disconnect_reasons"])
    # libtorrent took the client name from our extension handshake's ``v``.
    assert META["peers_seen_by_libtorrent"][0]["client"] == "torviz 0.1.0"
