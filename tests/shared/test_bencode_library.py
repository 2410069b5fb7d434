"""Encoding through bencode.py: the exact bytes the hand-written encoder gave, and its contract.

The expected bytes below were written by the encoder ``shared/bencode.py`` had before bencode.py
took the encoding over; they are kept here as data, so any change in the output is a failure.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from types import MappingProxyType

import bencodepy
import pytest

from torviz.shared.bencode import decode, encode
from torviz.shared.create import build_metainfo, piece_layout, plan_files
from torviz.shared.wire.extension import ExtensionHandshake, encode_extension_handshake

# The examples of BEP 3, written as the BEP writes them.
BEP3: list[tuple[object, bytes]] = [
    (b"spam", b"4:spam"),
    (3, b"i3e"),
    (-3, b"i-3e"),
    (0, b"i0e"),
    ([b"spam", b"eggs"], b"l4:spam4:eggse"),
    ({b"cow": b"moo", b"spam": b"eggs"}, b"d3:cow3:moo4:spam4:eggse"),
    ({b"spam": [b"a", b"b"]}, b"d4:spaml1:a1:bee"),
    ({b"spam": b"eggs", b"cow": b"moo"}, b"d3:cow3:moo4:spam4:eggse"),  # given unsorted
]


@pytest.mark.parametrize(("value", "expected"), BEP3)
def test_bep3_examples(value: object, expected: bytes) -> None:
    assert encode(value) == expected


CREATED = (
    b"d8:announce30:http://127.0.0.1:6969/announce"
    b"13:announce-listll30:http://127.0.0.1:6969/announceel20:udp://127.0.0.2:6969ee"
    b"7:comment9:corpus \xc3\xa9"
    b"10:created by10:torviz 0.1"
    b"13:creation datei1700000000e"
    b"4:infod5:filesl"
    b"d6:lengthi10000e4:pathl3:cd16:a.flacee"
    b"d6:lengthi7e4:pathl3:cd16:\xc3\xa9.txtee"
    b"d6:lengthi40000e4:pathl3:cd26:b.flacee"
    b"d6:lengthi1234e4:pathl9:cover.jpgee"
    b"e4:name11:Album \xc3\xa9t\xc3\xa9"
    b"12:piece lengthi16384e"
    b"6:pieces80:" + bytes(range(80)) + b"7:privatei1ee"
    b"8:url-listl27:http://127.0.0.1:8000/seed/e"
    b"e"
)


def test_created_multi_file_torrent() -> None:
    plan = plan_files(
        "Album \u00e9t\u00e9",
        [
            (["cd2", "b.flac"], 40_000),
            (["cd1", "a.flac"], 10_000),
            (["cover.jpg"], 1_234),
            (["cd1", "\u00e9.txt"], 7),
        ],
    )
    assert piece_layout(plan, 16384).num_pieces == 4
    data = build_metainfo(
        plan,
        16384,
        bytes(range(80)),
        ["http://127.0.0.1:6969/announce", "udp://127.0.0.2:6969"],
        ["http://127.0.0.1:8000/seed/"],
        private=True,
        comment="corpus \u00e9",
        created_by="torviz 0.1",
        creation_date=1_700_000_000,
    )
    assert data == CREATED
    assert encode(decode(data, strict=True)) == data


HANDSHAKE = (
    b"d12:complete_agoi5e1:ei0e"
    b"4:ipv616:" + bytes(range(16)) + b"1:md11:lt_donthavei0e11:ut_metadatai3e6:ut_pexi1ee"
    b"13:metadata_sizei31235e1:pi6881e4:reqqi500e11:upload_onlyi1e"
    b"1:v13:torviz 0.1 \xc3\xa9"
    b"6:yourip4:\x7f\x00\x00\x01"
    b"e"
)


def test_extension_handshake() -> None:
    handshake = ExtensionHandshake(
        m={"ut_metadata": 3, "ut_pex": 1, "lt_donthave": 0},
        v="torviz 0.1 \u00e9",
        p=6881,
        reqq=500,
        yourip=bytes([127, 0, 0, 1]),
        ipv6=bytes(range(16)),
        metadata_size=31_235,
        upload_only=True,
        extra={b"complete_ago": 5, b"e": 0, b"m": b"ignored"},
    )
    assert encode_extension_handshake(handshake) == HANDSHAKE


def test_python_types_and_key_order_by_raw_bytes() -> None:
    # str keys as UTF-8, sorted with the bytes keys by their raw bytes: "Z" < "a" < "é" < 0xff.
    value = {
        "\u00e9": 1,
        b"\xff": 2,
        b"Z": 3,
        "a": (b"x", bytearray(b"y"), memoryview(b"z"), "w"),
        b"": {},
    }
    assert encode(value) == b"d0:de1:Zi3e1:al1:x1:y1:z1:we2:\xc3\xa9i1e1:\xffi2ee"


class Flag(enum.IntEnum):
    ON = 1


class Text(str):
    """A str subclass as a dict key: equal as bytes to a bytes key all the same."""


def test_what_the_library_does_not_know_is_converted() -> None:
    # bencode.py dispatches on the exact type; these took the slow path to plain types.
    assert encode(Flag.ON) == b"i1e"
    assert encode({b"k": [Flag.ON, bytearray(b"ab")]}) == b"d1:kli1e2:abee"
    assert encode(MappingProxyType({b"b": 1, "a": 2})) == b"d1:ai2e1:bi1ee"
    assert encode(OrderedDict([(b"b", 1), (b"a", 2)])) == b"d1:ai2e1:bi1ee"


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        ([0, [True]], TypeError, r"bool at value\[1\]\[0\]"),
        ({b"a": {b"b": 10**40}}, ValueError, r"integer at value\[b'a'\]\[b'b'\] has more"),
        ([{"k": 1, b"k": 2}], ValueError, r"dict at value\[0\] has the key b'k' twice"),
        ({1: b"x", 2: b"y"}, TypeError, "key of type int"),
        ({b"a": bencodepy.Bencached(b"i1e")}, TypeError, r"Bencached at value\[b'a'\]"),
        ({b"a": 1.5}, TypeError, "float"),
        ({b"a": "\ud800"}, UnicodeEncodeError, "surrogates not allowed"),
        ({Text("k"): 1, b"k": 2}, ValueError, "has the key b'k' twice"),
    ],
)
def test_what_the_library_would_write_or_misname_is_refused(
    value: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        encode(value)


def test_the_traps_guarded_are_real() -> None:
    # Why encode() configures the library: it writes all of these without a word.
    assert bencodepy.encode(True) == b"i1e"
    assert bencodepy.encode(10**40) == b"i" + b"1" + b"0" * 40 + b"e"
    assert bencodepy.encode({"k": 1, b"k": 2}) == b"d1:ki1e1:ki2ee"
    with pytest.raises(KeyError):
        bencodepy.encode(None)


def test_encoding_is_done_by_bencodepy(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    library = bencodepy.BencodeEncoder.encode

    def spy(self: object, value: object) -> object:
        calls.append(value)
        return library(self, value)

    monkeypatch.setattr(bencodepy.BencodeEncoder, "encode", spy)
    assert encode({b"spam": [b"a", b"b"]}) == b"d4:spaml1:a1:bee"
    assert calls == [{b"spam": [b"a", b"b"]}]
