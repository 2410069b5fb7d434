"""Compact peer lists (BEP 23 IPv4, BEP 7 IPv6) and the BEP 3 dictionary model."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.shared.tracker.strategies import v4_peers, v6_peers
from torviz.shared.bencode import Value
from torviz.shared.errors import TrackerError
from torviz.shared.tracker import (
    TrackerPeer,
    decode_compact_v4,
    decode_compact_v6,
    decode_peer_dicts,
    encode_compact_v4,
    encode_compact_v6,
)
from torviz.shared.types import PeerAddress, PeerId


def test_bep23_example() -> None:
    # The example from the wiki spec BEP 23 cites: 192.168.24.52:2001 -> C0 A8 18 34 07 D1.
    assert decode_compact_v4(bytes.fromhex("c0a8183407d1")) == (
        [PeerAddress("192.168.24.52", 2001)],
        0,
    )
    assert encode_compact_v4([PeerAddress("192.168.24.52", 2001)]) == bytes.fromhex("c0a8183407d1")


def test_bep7_layout() -> None:
    data = bytes.fromhex("200100000000000053aa064c00007f831ae1")
    assert decode_compact_v6(data) == ([PeerAddress("2001::53aa:64c:0:7f83", 6881)], 0)
    assert encode_compact_v6([PeerAddress("2001::53aa:64c:0:7f83", 6881)]) == data


@pytest.mark.parametrize(
    ("data", "peers", "dropped"),
    [
        (b"", [], 0),
        (bytes.fromhex("7f0000010000"), [], 1),  # port 0
        (bytes.fromhex("000000001ae1"), [], 1),  # 0.0.0.0
        (bytes.fromhex("e00000011ae1"), [], 1),  # multicast
        (bytes.fromhex("ffffffff1ae1"), [], 1),  # broadcast
        (
            bytes.fromhex("7f0000011ae1 0a0000020001".replace(" ", "")),
            [PeerAddress("127.0.0.1", 6881), PeerAddress("10.0.0.2", 1)],
            0,
        ),
    ],
)
def test_v4_filtering(data: bytes, peers: list[PeerAddress], dropped: int) -> None:
    assert decode_compact_v4(data) == (peers, dropped)


def test_v6_filtering() -> None:
    unspecified = bytes(16) + b"\x1a\xe1"
    multicast = bytes.fromhex("ff02" + "00" * 13 + "01") + b"\x1a\xe1"
    loopback = bytes(15) + b"\x01\x1a\xe1"
    assert decode_compact_v6(unspecified + multicast + loopback) == (
        [PeerAddress("::1", 6881)],
        2,
    )


@pytest.mark.parametrize("size", [1, 5, 7, 13])
def test_v4_length_must_be_whole_entries(size: int) -> None:
    with pytest.raises(TrackerError) as caught:
        decode_compact_v4(bytes(size))
    assert caught.value.reason == "bad_compact_length"


@pytest.mark.parametrize("size", [1, 6, 17, 19, 35])
def test_v6_length_must_be_whole_entries(size: int) -> None:
    with pytest.raises(TrackerError) as caught:
        decode_compact_v6(bytes(size))
    assert caught.value.reason == "bad_compact_length"


def test_limit_cuts_without_reading_the_rest() -> None:
    data = bytes.fromhex("0a0000011ae1") * 1_000_000
    peers, dropped = decode_compact_v4(data, limit=3)
    assert peers == [PeerAddress("10.0.0.1", 6881)] * 3 and dropped == 999_997
    assert decode_compact_v4(data[:12], limit=0) == ([], 2)


def test_dictionary_model() -> None:
    pid = b"-AB1234-" + bytes(12)
    peers, dropped = decode_peer_dicts(
        [
            {b"ip": b"10.0.0.1", b"port": 1, b"peer id": pid},
            {b"ip": b"::1", b"port": 2},
            {b"ip": b"x" * 100, b"port": 3},
            {b"ip": b"10.0.0.1", b"port": b"1"},
            [b"10.0.0.1", 1],
        ]
    )
    assert peers == [
        TrackerPeer(PeerAddress("10.0.0.1", 1), PeerId(pid)),
        TrackerPeer(PeerAddress("::1", 2)),
    ]
    assert dropped == 3
    many: list[Value] = [{b"ip": b"10.0.0.1", b"port": 1}] * 50
    peers, dropped = decode_peer_dicts(many, limit=10)
    assert len(peers) == 10 and dropped == 40


def test_encoders_refuse_the_other_family() -> None:
    with pytest.raises(ValueError):
        encode_compact_v4([PeerAddress("::1", 1)])
    with pytest.raises(ValueError):
        encode_compact_v6([PeerAddress("127.0.0.1", 1)])


@given(st.lists(v4_peers, max_size=100))
def test_v4_round_trip(peers: list[PeerAddress]) -> None:
    data = encode_compact_v4(peers)
    assert len(data) == 6 * len(peers)
    assert decode_compact_v4(data) == (peers, 0)


@given(st.lists(v6_peers, max_size=100))
def test_v6_round_trip(peers: list[PeerAddress]) -> None:
    data = encode_compact_v6(peers)
    assert len(data) == 18 * len(peers)
    assert decode_compact_v6(data) == (peers, 0)
