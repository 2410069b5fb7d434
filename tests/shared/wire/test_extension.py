"""BEP 10 extension handshake: BEP example bytes, round trips, tolerant fields, bad payloads."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torviz.shared import bencode
from torviz.shared.errors import BencodeError, WireError
from torviz.shared.wire import (
    Extended,
    ExtensionHandshake,
    MessageDecoder,
    decode_extension_handshake,
    encode,
    encode_extension_handshake,
    extension_handshake_message,
)

# The example of BEP 10: m = {LT_metadata: 1, ut_pex: 2}, p = 6881, v = "µTorrent 1.2".
BEP10_EXAMPLE = b"d1:md11:LT_metadatai1e6:ut_pexi2ee1:pi6881e1:v13:\xc2\xb5Torrent 1.2e"


def test_bep10_example() -> None:
    handshake = decode_extension_handshake(BEP10_EXAMPLE)
    assert handshake == ExtensionHandshake(
        m={"LT_metadata": 1, "ut_pex": 2}, p=6881, v="µTorrent 1.2"
    )
    assert encode_extension_handshake(handshake) == BEP10_EXAMPLE
    assert handshake.extension_id("ut_pex") == 2
    assert handshake.extension_id("ut_metadata") is None


def test_every_field_and_extra_keys_round_trip() -> None:
    handshake = ExtensionHandshake(
        m={"ut_metadata": 3, "lt_donthave": 0},
        v="torviz 0.1.0",
        p=51413,
        reqq=500,
        yourip=bytes([127, 0, 0, 1]),
        ipv4=bytes([127, 0, 0, 2]),
        ipv6=bytes(15) + b"\x01",
        metadata_size=31235,
        upload_only=True,
        extra={b"complete_ago": -1, b"e": 0, b"x_list": [b"a", 1]},
    )
    payload = encode_extension_handshake(handshake)
    assert decode_extension_handshake(payload) == handshake
    assert handshake.extension_id("lt_donthave") is None  # id 0 = disabled
    message = extension_handshake_message(handshake)
    assert message == Extended(0, payload)
    assert MessageDecoder().feed(encode(message)) == [message]


def test_minimal_handshake_is_just_m() -> None:
    assert encode_extension_handshake(ExtensionHandshake()) == b"d1:mdee"
    assert decode_extension_handshake(b"de") == ExtensionHandshake()


names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20)


@given(
    st.builds(
        ExtensionHandshake,
        m=st.dictionaries(names, st.integers(0, 255), max_size=6),
        v=st.none() | names,
        p=st.none() | st.integers(1, 65535),
        reqq=st.none() | st.integers(1, 2**31 - 1),
        yourip=st.none() | st.binary(min_size=4, max_size=4) | st.binary(min_size=16, max_size=16),
        metadata_size=st.none() | st.integers(0, 2**31 - 1),
        upload_only=st.none() | st.booleans(),
    )
)
def test_round_trip(handshake: ExtensionHandshake) -> None:
    assert decode_extension_handshake(encode_extension_handshake(handshake)) == handshake


def test_known_keys_with_bad_values_are_dropped() -> None:
    payload = bencode.encode(
        {
            b"m": {b"big": 300, b"neg": -1, b"ok": 4, b"\xff\xfe": 5, b"str": b"abc"},
            b"p": 0,
            b"reqq": -5,
            b"yourip": b"abcde",
            b"ipv4": b"abcd",
            b"ipv6": b"abcd",
            b"metadata_size": b"abc",
            b"upload_only": 0,
            b"v": [1],
        }
    )
    handshake = decode_extension_handshake(payload)
    assert handshake.m == {"ok": 4}
    assert handshake.p is None and handshake.reqq is None and handshake.yourip is None
    assert handshake.ipv4 == b"abcd" and handshake.ipv6 is None
    assert handshake.metadata_size is None and handshake.v is None
    assert handshake.upload_only is False
    assert handshake.extra == {}


@pytest.mark.parametrize(("claimed", "read"), [(2**31, 2**31 - 1), (2**64, 2**31 - 1), (-1, None)])
def test_a_metadata_size_out_of_range_reads_as_too_large_not_absent(
    claimed: int, read: int | None
) -> None:
    payload = bencode.encode({b"m": {b"ut_metadata": 3}, b"metadata_size": claimed})
    assert decode_extension_handshake(payload).metadata_size == read


def test_v_that_is_not_utf8_is_replaced_not_refused() -> None:
    assert decode_extension_handshake(b"d1:v3:\xb5T1e").v == "\ufffdT1"


# Keys out of order at the top and inside ``m``, as some clients write them; libtorrent, aria2,
# qBittorrent and Transmission keep such a peer.
UNSORTED = (
    b"d1:v17:Transmission 2.941:pi51413e1:md6:ut_pexi1e11:ut_metadatai3ee"
    b"13:metadata_sizei31235e4:reqqi512e12:complete_agoi-1ee"
)


def test_unsorted_keys_are_accepted() -> None:
    with pytest.raises(BencodeError) as strict:
        bencode.decode(UNSORTED, strict=True)
    assert strict.value.reason == "unsorted_keys"  # the vector really is out of order
    handshake = decode_extension_handshake(UNSORTED)
    assert handshake == ExtensionHandshake(
        m={"ut_pex": 1, "ut_metadata": 3},
        v="Transmission 2.94",
        p=51413,
        reqq=512,
        metadata_size=31235,
        extra={b"complete_ago": -1},
    )
    assert handshake.extension_id("ut_metadata") == 3
    # What we would send back is canonical again.
    assert encode_extension_handshake(handshake) == (
        b"d12:complete_agoi-1e1:md11:ut_metadatai3e6:ut_pexi1ee13:metadata_sizei31235e"
        b"1:pi51413e4:reqqi512e1:v17:Transmission 2.94e"
    )


MALFORMED = [
    ("empty", b""),
    ("integer", b"i1e"),
    ("list", b"le"),
    ("truncated", b"d1:md11:ut_metadatai1e"),
    ("duplicate keys", b"d1:pi1e1:pi2ee"),
    ("duplicate keys in m", b"d1:md1:ai1e1:ai2eee"),
    ("non-bytes key", b"di1ei2ee"),
    ("over the depth limit", b"d1:x" + b"l" * 16 + b"e" * 16 + b"e"),
    ("trailing bytes", b"d1:mdeexx"),
    ("leading zero", b"d1:pi06881ee"),
]


@pytest.mark.parametrize(("name", "payload"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_payload(name: str, payload: bytes) -> None:
    with pytest.raises(WireError) as caught:
        decode_extension_handshake(payload)
    assert caught.value.reason == "bad_extension_handshake"


@pytest.mark.parametrize(
    "handshake",
    [
        ExtensionHandshake(m={"x": 256}),
        ExtensionHandshake(p=0),
        ExtensionHandshake(yourip=b"abc"),
        ExtensionHandshake(ipv4=bytes(16)),
        ExtensionHandshake(ipv6=bytes(4)),
    ],
    ids=repr,
)
def test_encode_refuses_out_of_range_fields(handshake: ExtensionHandshake) -> None:
    with pytest.raises(ValueError):
        encode_extension_handshake(handshake)
