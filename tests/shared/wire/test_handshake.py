"""The 68-byte handshake: exact bytes, reserved flags, the incremental reader, bad input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torviz.shared.errors import WireError
from torviz.shared.types import InfoHash, PeerId
from torviz.shared.wire import (
    HANDSHAKE_LENGTH,
    Handshake,
    HandshakeHeader,
    HandshakeReader,
    Reserved,
    decode_handshake,
    decode_handshake_header,
    encode_handshake,
)

INFO_HASH = InfoHash(bytes(range(20)))
PEER_ID = PeerId(b"-TV0100-" + b"abcdefghijkl")
# BEP 3 layout; reserved with BEP 10 (byte 5, 0x10), BEP 6 (byte 7, 0x04) and BEP 5 (0x01).
RAW = (
    b"\x13BitTorrent protocol"
    + bytes.fromhex("0000000000100005")
    + bytes(range(20))
    + b"-TV0100-abcdefghijkl"
)
HANDSHAKE = Handshake(INFO_HASH, PEER_ID, Reserved(bytes.fromhex("0000000000100005")))


def test_encode_and_decode_exact_bytes() -> None:
    assert len(RAW) == HANDSHAKE_LENGTH
    assert encode_handshake(HANDSHAKE) == RAW
    assert decode_handshake(RAW) == HANDSHAKE
    assert decode_handshake_header(RAW[:48]) == HandshakeHeader(HANDSHAKE.reserved, INFO_HASH)
    assert HANDSHAKE.header == decode_handshake_header(RAW)


def test_reserved_flags() -> None:
    assert Reserved.build(extension_protocol=True).raw == bytes.fromhex("0000000000100000")
    assert Reserved.build(fast=True).raw == bytes.fromhex("0000000000000004")
    assert Reserved.build(dht=True).raw == bytes.fromhex("0000000000000001")
    both = Reserved.build(extension_protocol=True, fast=True)
    assert (both.extension_protocol, both.fast, both.dht) == (True, True, False)
    assert not any((Reserved().extension_protocol, Reserved().fast, Reserved().dht))
    # Bits torviz does not know (here libtorrent's v2 upgrade bit 0x10 of byte 7 and an
    # Azureus bit 0x80 of byte 0) are kept as they came.
    odd = Reserved(bytes.fromhex("8000000000100014"))
    assert odd.extension_protocol and odd.fast and not odd.dht
    assert odd.other_bits == bytes.fromhex("8000000000000010")
    rebuilt = Reserved.build(extension_protocol=True, fast=True, other=odd.other_bits)
    assert rebuilt == odd
    assert "extension_protocol, fast" in repr(odd)
    with pytest.raises(ValueError):
        Reserved(bytes(7))


def test_reader_whole() -> None:
    reader = HandshakeReader()
    events = reader.feed(RAW + b"\x00\x00\x00\x01\x02")
    assert events == [HANDSHAKE.header, HANDSHAKE]
    assert reader.handshake == HANDSHAKE
    assert reader.take_surplus() == b"\x00\x00\x00\x01\x02"
    assert reader.take_surplus() == b""


def test_reader_byte_by_byte_reports_header_at_48_and_handshake_at_68() -> None:
    reader = HandshakeReader()
    for index in range(HANDSHAKE_LENGTH):
        events = reader.feed(RAW[index : index + 1])
        if index == 47:
            assert events == [HANDSHAKE.header]
            assert reader.header == HANDSHAKE.header and reader.handshake is None
        elif index == 67:
            assert events == [HANDSHAKE]
        else:
            assert events == []
    assert reader.take_surplus() == b""
    with pytest.raises(ValueError, match="already complete"):
        reader.feed(b"\x00")


def test_reader_header_then_peer_id_later() -> None:
    """An accepting side routes on the info hash before the peer id arrives."""
    reader = HandshakeReader()
    assert reader.feed(RAW[:50]) == [HANDSHAKE.header]
    assert reader.feed(RAW[50:]) == [HANDSHAKE]


BAD: list[tuple[str, bytes, str, int]] = [
    # (name, input, reason, index of the byte that must trigger the error)
    ("pstrlen 18", b"\x12BitTorrent protocol" + bytes(48), "bad_pstrlen", 0),
    ("pstrlen 0", b"\x00" + bytes(67), "bad_pstrlen", 0),
    ("HTTP request", b"GET /announce HTTP/1.1\r\n" + bytes(44), "bad_pstrlen", 0),
    ("wrong case", b"\x13Bittorrent protocol" + bytes(48), "bad_protocol", 4),
    ("last pstr byte", b"\x13BitTorrent protocoL" + bytes(48), "bad_protocol", 19),
]


@pytest.mark.parametrize(("name", "raw", "reason", "at"), BAD, ids=[b[0] for b in BAD])
def test_bad_prefix_refused_at_the_first_wrong_byte(
    name: str, raw: bytes, reason: str, at: int
) -> None:
    with pytest.raises(WireError) as whole:
        HandshakeReader().feed(raw)
    assert whole.value.reason == reason
    reader = HandshakeReader()
    for index in range(at):
        reader.feed(raw[index : index + 1])
    with pytest.raises(WireError) as bytewise:
        reader.feed(raw[at : at + 1])
    assert bytewise.value.reason == reason
    with pytest.raises(WireError) as decoded:
        decode_handshake(raw)
    assert decoded.value.reason == reason


@pytest.mark.parametrize("length", [0, 47, 67, 69])
def test_decode_wrong_length(length: int) -> None:
    data = (RAW + b"\x00")[:length]
    with pytest.raises(WireError) as caught:
        decode_handshake(data)
    assert caught.value.reason == "bad_length"
    if length < 48:
        with pytest.raises(WireError) as header:
            decode_handshake_header(data)
        assert header.value.reason == "truncated"


@given(
    st.binary(min_size=8, max_size=8),
    st.binary(min_size=20, max_size=20),
    st.binary(min_size=20, max_size=20),
)
def test_round_trip(reserved: bytes, info_hash: bytes, peer_id: bytes) -> None:
    handshake = Handshake(InfoHash(info_hash), PeerId(peer_id), Reserved(reserved))
    raw = encode_handshake(handshake)
    assert decode_handshake(raw) == handshake
    reader = HandshakeReader()
    assert reader.feed(raw[:30]) + reader.feed(raw[30:]) == [handshake.header, handshake]
