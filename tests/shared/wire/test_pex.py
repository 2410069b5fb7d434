"""BEP 11 ut_pex codec: exact bytes from the BEP's description, round trips, hostile payloads."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torviz.shared.errors import WireError
from torviz.shared.types import PeerAddress
from torviz.shared.wire import Extended, MessageDecoder, encode
from torviz.shared.wire.pex import (
    MAX_PEX_ENTRIES,
    DecodedPex,
    PexFlags,
    PexMessage,
    decode_pex,
    encode_pex,
)

A = PeerAddress("10.0.0.1", 6881)  # 0a000001 1ae1
B = PeerAddress("192.168.1.2", 51413)  # c0a80102 c8d5
C6 = PeerAddress("2001:db8::1", 6881)

V6_BYTES = bytes.fromhex("20010db8000000000000000000000001") + b"\x1a\xe1"

# Built by hand from BEP 11: compact 6/18-byte entries, one flag byte per added peer, the six
# keys in bencode (sorted) order.
EXACT = (
    b"d5:added12:\x0a\x00\x00\x01\x1a\xe1\xc0\xa8\x01\x02\xc8\xd5"
    b"7:added.f2:\x12\x01"
    b"6:added618:" + V6_BYTES + b"8:added6.f1:\x02"
    b"7:dropped0:8:dropped60:e"
)
EXACT_MESSAGE = PexMessage(
    added=(A, B),
    added_flags=(PexFlags.SEED | PexFlags.REACHABLE, PexFlags.PREFERS_ENCRYPTION),
    added6=(C6,),
    added6_flags=(PexFlags.SEED,),
)


def test_flag_bits_are_bep11s() -> None:
    assert [int(f) for f in PexFlags] == [0x01, 0x02, 0x04, 0x08, 0x10]


def test_exact_bytes_both_ways() -> None:
    assert encode_pex(EXACT_MESSAGE) == EXACT
    assert decode_pex(EXACT) == DecodedPex(EXACT_MESSAGE, 0)


def test_dropped_only_and_empty() -> None:
    payload = b"d7:dropped6:\x0a\x00\x00\x01\x1a\xe1e"
    assert decode_pex(payload) == DecodedPex(PexMessage(dropped=(A,)), 0)
    assert decode_pex(b"de") == DecodedPex(PexMessage(), 0)
    assert (
        encode_pex(PexMessage())
        == b"d5:added0:7:added.f0:6:added60:8:added6.f0:7:dropped0:8:dropped60:e"
    )


def test_unknown_keys_ignored_and_unsorted_keys_accepted() -> None:
    payload = b"d1:zi1e7:dropped6:\x0a\x00\x00\x01\x1a\xe11:a3:xyze"
    assert decode_pex(payload).message == PexMessage(dropped=(A,))


def test_missing_or_short_flags_are_zero_and_extra_flags_ignored() -> None:
    two = b"\x0a\x00\x00\x01\x1a\xe1\xc0\xa8\x01\x02\xc8\xd5"
    no_flags = decode_pex(b"d5:added12:" + two + b"e").message
    assert no_flags.added == (A, B) and no_flags.added_flags == (0, 0)
    short = decode_pex(b"d5:added12:" + two + b"7:added.f1:\x02e").message
    assert short.added_flags == (2, 0)
    extra = decode_pex(b"d5:added12:" + two + b"7:added.f5:\x01\x02\x03\x04\x05e").message
    assert extra.added_flags == (1, 2)


def test_port_zero_and_unusable_addresses_dropped_and_counted() -> None:
    port0 = b"\x0a\x00\x00\x02\x00\x00"
    zero_ip = b"\x00\x00\x00\x00\x1a\xe1"
    good = b"\x0a\x00\x00\x01\x1a\xe1"
    decoded = decode_pex(b"d5:added18:" + port0 + zero_ip + good + b"7:added.f3:\x01\x02\x04e")
    assert decoded.message.added == (A,)
    assert decoded.message.added_flags == (4,)  # the flag stays with its own entry
    assert decoded.skipped == 2


def test_flood_of_10000_addresses_is_capped_and_cheap() -> None:
    entries = b"".join(
        bytes([10, (i >> 16) & 0xFF, (i >> 8) & 0xFF, i & 0xFF]) + b"\x1a\xe1"
        for i in range(10_000)
    )
    payload = b"d5:added60000:" + entries + b"7:added.f10000:" + b"\x02" * 10_000 + b"e"
    started = time.perf_counter()
    decoded = decode_pex(payload)
    assert time.perf_counter() - started < 1.0
    assert len(decoded.message.added) == MAX_PEX_ENTRIES
    assert decoded.skipped == 10_000 - MAX_PEX_ENTRIES
    assert decoded.message.added[0] == PeerAddress("10.0.0.0", 6881)
    capped = decode_pex(payload, max_entries=3)
    assert len(capped.message.added) == 3 and capped.skipped == 9_997


@pytest.mark.parametrize(
    ("payload", "reason", "text"),
    [
        (b"d5:added5:abcdee", "bad_pex_length", "IPv4 list is 5 bytes, not a multiple of 6"),
        (b"d7:dropped7:abcdefge", "bad_pex_length", "IPv4 list is 7 bytes, not a multiple of 6"),
        (b"d6:added66:abcdefe", "bad_pex_length", "IPv6 list is 6 bytes, not a multiple of 18"),
        (b"d8:dropped619:" + b"x" * 19 + b"e", "bad_pex_length", "IPv6 list is 19 bytes"),
        (b"d5:addedi1ee", "bad_pex", "key 'added' is a int, not a string"),
        (b"d7:added.flee", "bad_pex", "key 'added.f' is a list"),
        (b"d8:dropped6dee", "bad_pex", "key 'dropped6' is a dict"),
        (b"le", "bad_pex", "a bencoded list, not a dictionary"),
        (b"i5e", "bad_pex", "not a dictionary"),
        (b"", "bad_pex", "not valid bencode"),
        (b"d5:added", "bad_pex", "not valid bencode"),
        (b"dee", "bad_pex", "not valid bencode"),
        (b"d5:added0:5:added0:e", "bad_pex", "not valid bencode"),
    ],
)
def test_bad_payloads(payload: bytes, reason: str, text: str) -> None:
    with pytest.raises(WireError) as info:
        decode_pex(payload)
    assert info.value.reason == reason
    assert text in str(info.value)


def test_encode_refuses_caller_bugs() -> None:
    with pytest.raises(ValueError, match="2 peers but 1 flag"):
        encode_pex(PexMessage(added=(A, B), added_flags=(0,)))
    with pytest.raises(ValueError, match=r"0\.\.255"):
        encode_pex(PexMessage(added=(A,), added_flags=(256,)))
    with pytest.raises(ValueError, match="not an IPv4"):
        encode_pex(PexMessage(added=(C6,), added_flags=(0,)))


_v4 = st.builds(
    lambda a, b, port: PeerAddress(f"10.{a}.{b}.1", port),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(1, 65535),
)
_v6 = st.builds(
    lambda a, port: PeerAddress(f"2001:db8::{a:x}", port),
    st.integers(1, 0xFFFF),
    st.integers(1, 65535),
)


@st.composite
def _messages(draw: st.DrawFn) -> PexMessage:
    added = tuple(draw(st.lists(_v4, max_size=20)))
    added6 = tuple(draw(st.lists(_v6, max_size=20)))
    return PexMessage(
        added=added,
        added_flags=tuple(
            draw(st.lists(st.integers(0, 255), min_size=len(added), max_size=len(added)))
        ),
        dropped=tuple(draw(st.lists(_v4, max_size=20))),
        added6=added6,
        added6_flags=tuple(
            draw(st.lists(st.integers(0, 255), min_size=len(added6), max_size=len(added6)))
        ),
        dropped6=tuple(draw(st.lists(_v6, max_size=20))),
    )


@given(_messages())
def test_round_trip(message: PexMessage) -> None:
    assert decode_pex(encode_pex(message)) == DecodedPex(message, 0)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_wire_error(data: bytes) -> None:
    with contextlib.suppress(WireError):
        decode_pex(data)


LT_UT_PEX = Path(__file__).resolve().parents[2] / "vectors" / "wire" / "lt_ut_pex.bin"


def test_libtorrent_full_peer_list() -> None:
    """A frame libtorrent 2.1 sent (tests/vectors/wire/capture_libtorrent_pex.py): its full peer
    list to the first of two loopback connections, which it lists too (BEP 11 forbids nothing
    here; torviz's policy leaves the receiver out). Decoded through the real frame decoder, and
    re-encoded to the very same bytes: libtorrent also writes all six keys."""
    frame = LT_UT_PEX.read_bytes()
    [message] = MessageDecoder().feed(frame)
    assert isinstance(message, Extended) and message.ext_id == 1
    decoded = decode_pex(message.payload)
    expected = PexMessage(
        added=(PeerAddress("127.0.0.4", 40000), PeerAddress("127.0.0.5", 40001)),
        added_flags=(0, 0),
    )
    assert decoded == DecodedPex(expected, 0)
    assert encode(Extended(1, encode_pex(expected))) == frame
