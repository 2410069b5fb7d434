"""torviz's peer id, and the table of client conventions ``identify_client`` understands."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torviz.shared.peer_id import ClientInfo, generate_peer_id, identify_client
from torviz.shared.types import PeerId


def pad(prefix: bytes) -> bytes:
    return (prefix + b"0123456789abcdefghij")[:20]


CLIENTS: list[tuple[bytes, str, str]] = [
    (b"-LT2010-", "libtorrent", "2.0.1"),
    (b"-LT2110-", "libtorrent", "2.1.1"),
    (b"-LT1234-", "libtorrent", "1.2.3.4"),
    (b"-LT1C0A-", "libtorrent", "1.12.0.10"),
    (b"-qB4530-", "qBittorrent", "4.5.3"),
    (b"-qB46A0-", "qBittorrent", "4.6.10"),
    (b"-TR300Z-", "Transmission", "3.00"),
    (b"-TR2940-", "Transmission", "2.94"),
    (b"-TR0072-", "Transmission", "0.72"),
    (b"-TR0006-", "Transmission", "0.6"),
    (b"-TR4050-", "Transmission", "4.0.5"),
    (b"-UT355W-", "µTorrent", "3.5.5"),
    (b"-UT2210-", "µTorrent", "2.2.1"),
    (b"-BC0150-", "BitComet", "1.50"),
    (b"exbc\x00\x4b", "BitComet", "0.75"),
    (b"exbc\x01\x02LORD", "BitLord", "1.02"),
    (b"A2-1-36-0-", "aria2", "1.36.0"),
    (b"A2-1-18-10", "aria2", ""),
    (b"-DE13F0-", "Deluge", "1.3.15"),
    (b"-DE2110-", "Deluge", "2.1.1"),
    (b"-lt0D80-", "rtorrent", "0.13.8"),
    (b"-AZ5770-", "Vuze", "5.7.7.0"),
    (b"-BI3500-", "BiglyBT", "3.5.0.0"),
    (b"-WW0109-", "WebTorrent", "1.9"),
    (b"-WW0207-", "WebTorrent", "2.7"),
    (b"M7-4-0--", "BitTorrent", "7.4.0"),
    (b"M7-10-3-", "BitTorrent", "7.10.3"),
    (b"S58B-----", "Shad0w", "5.8.11"),
    (b"T03I-----", "BitTornado", "0.3.18"),
    (b"-TV0100-", "torviz", "0.1.0"),
    (b"-TV1A00-", "torviz", "1.10.0"),
    (b"-KT5100-", "KTorrent", "5.1.0"),
    # Azureus style, beyond the big clients (ids as these clients send them).
    (b"-CD0303-", "Enhanced CTorrent", "3.3"),
    (b"-CD0302-", "Enhanced CTorrent", "3.2"),
    (b"-CT1304-", "CTorrent", "1.3.4"),
    (b"-AG2053-", "Ares", "2.0.5.3"),
    (b"-AR1670-", "Arctic Torrent", "1.6.7"),
    (b"-AT2520-", "Artemis", "2.5.2"),
    (b"-AX0150-", "BitPump", "1.50"),
    (b"-BB1234-", "BitBuddy", "1.234"),
    (b"-BR0332-", "BitRocket", "0.3 (32)"),
    (b"-BF0000-", "Bitflu", ""),
    (b"-ES0100-", "Electric Sheep", "0.1.0"),
    (b"-GR6300-", "GetRight", "6.3.0"),
    (b"-HL0290-", "Halite", "0.2.9"),
    (b"-KT11R1-", "KTorrent", "1.1 RC 1"),
    (b"-KT22D3-", "KTorrent", "2.2 Dev 3"),
    (b"-KG2450-", "KGet", "2.4.5"),
    (b"-LP0302-", "Lphant", "3.02"),
    (b"-LW0001-", "LimeWire", ""),
    (b"-MG1Cr0-", "MediaGet", "1.12"),
    (b"-NE1090-", "BT Next Evolution", "1.0.9"),
    (b"-OS1000-", "OneSwarm", "1.0.0"),
    (b"-PC251Q-", "CacheLogic", "2.5.1.26"),
    (b"-SP3600-", "BitSpirit", "3.6.0"),
    (b"-ST0117-", "SymTorrent", "0.1.1.7"),
    (b"-SZ2132-", "Shareaza", "2.1.3.2"),
    (b"-TT210w-", "TuoTu", "2.1.0.58"),
    (b"-UE3440-", "µTorrent Embedded", "3.4.4"),
    (b"-UM1510-", "µTorrent Mac", "1.5.1"),
    (b"-VG2644-", "Vagaa", "2.6.4.4"),
    (b"-WD0007-", "WebTorrent Desktop", "0.7"),
    (b"-WY0300-", "FireTorrent", "0.3.0"),
    (b"-XX0025-", "Xtorrent", "0.0 (25)"),
    (b"-ZT0100-", "ZipTorrent", "0.1.0"),
    (b"-bk1000-", "BitKitten", "1.0.0"),
    (b"-7T1230-", "aTorrent", "1.2.3"),
    # Conventions of their own.
    (b"-ML2.7.2-kgjjfkd", "MLDonkey", "2.7.2"),
    (b"-FG0180u\xf8", "FlashGet", "1.80"),
    (b"-G3Anonymous", "G3 Torrent", ""),
    (b"-BOWA0C-", "Bits on Wheels", "1.0.6"),
    (b"-aria2-", "aria2", ""),
    (b"XBT054d-", "XBT Client", "0.5.4"),
    (b"DNA0100000", "BitTorrent DNA", "1.0.0"),
    (b"TIX0137-", "Tixati", "1.37"),
    (b"OP7685f2c1", "Opera", "7685"),
    (b"Mbrst1-1-32", "Burst!", "1.1.3"),
    (b"QVOD0054", "QVOD", "0.0.5.4"),
    (b"S3-1-0-0--", "Amazon S3", "1.0.0"),
    (b"Pando-6B511B", "Pando", ""),
    (b"AZ2500BT", "BitTyrant", ""),
    (b"Azureus\x00\x00\x00", "Azureus", "1"),
    (b"-----Azureus", "Azureus", "2.0.3.2"),
    (b"\x00\x03BS", "BitSpirit", "3"),
    (b"\x00\x00BS", "BitSpirit", "1"),
    (b"FUTB\x00\x4b", "BitComet (Solidox Mod)", "0.75"),
    (b"LIMEGUID", "LimeWire", ""),
    (b"btpd/012", "BitTorrent Protocol Daemon", ""),
    (b"Q1-10-0-", "Queen Bee", "1.10.0"),
    (b"A310--001v5Gysr4NxNK", "ABC", "3.1.0"),
    (b"R100--003hR6s07XWcov", "Tribler", "1.0.0"),
    (b"R37---003uApHy851-Pq", "Tribler", "3.7"),
    (b"T03I--008gY6iB6Aq27C", "BitTornado", "0.3.18"),
    # Known code, version characters outside the convention: name kept, version empty.
    (b"-qB45!0-", "qBittorrent", ""),
    (b"-BCxx50-", "BitComet", ""),
    # Unknown conventions.
    (b"-ZZ1234-", "unknown", ""),
    (b"\x00\x01\x02\x03\x04\x05\x06\x07", "unknown", ""),
    (b"Mxyz----", "unknown", ""),
    (b"S58B!----", "unknown", ""),
]


@pytest.mark.parametrize(("prefix", "name", "version"), CLIENTS, ids=[repr(c[0]) for c in CLIENTS])
def test_identify_client(prefix: bytes, name: str, version: str) -> None:
    info = identify_client(pad(prefix))
    assert info == ClientInfo(name, version)
    assert (info.name, info.version) == (name, version)
    assert identify_client(PeerId(pad(prefix))) == info


def test_unknown_keeps_a_printable_prefix() -> None:
    info = identify_client(b"\x00\x01AB-C\xff\x7f" + bytes(12))
    assert info == ClientInfo("unknown", "")
    assert info.prefix == "%00%01AB-C%FF%7F"
    assert str(info) == "unknown"
    assert identify_client(pad(b"-ZZ1234-")).prefix == "-ZZ1234-"
    assert str(identify_client(pad(b"-qB4530-"))) == "qBittorrent 4.5.3"


KNOWN_PREFIXES = [prefix for prefix, name, _ in CLIENTS if name != "unknown"]


@given(
    st.one_of(
        st.binary(max_size=24),
        st.tuples(st.sampled_from(KNOWN_PREFIXES), st.binary(max_size=20)).map(
            lambda pair: (pair[0][: len(pair[0]) // 2] + pair[1])[:20]
        ),
        st.tuples(st.sampled_from(KNOWN_PREFIXES), st.binary(max_size=20)).map(
            lambda pair: bytes(b if i % 3 else 0x7E for i, b in enumerate(pair[0])) + pair[1]
        ),
    )
)
def test_any_bytes_name_a_client_or_unknown_and_never_raise(peer_id: bytes) -> None:
    info = identify_client(peer_id)
    assert info.name and "\n" not in str(info)


def test_short_or_empty_input_is_tolerated() -> None:
    assert identify_client(b"") == ClientInfo("unknown", "")
    assert identify_client(b"-LT20") == ClientInfo("unknown", "")
    assert identify_client(b"exbc") == ClientInfo("unknown", "")


def test_generate_peer_id_layout() -> None:
    peer_id = generate_peer_id(lambda n: b"\xaa" * n, version="0.1.0")
    assert peer_id.raw == b"-TV0100-" + b"\xaa" * 12
    assert generate_peer_id(bytes, version="2.13.4").raw[:8] == b"-TV2D40-"
    assert identify_client(generate_peer_id(version="1.2.3")) == ClientInfo("torviz", "1.2.3")


def test_generate_peer_id_uses_the_package_version_and_fresh_bytes() -> None:
    counter = itertools.count()

    def fake_random(n: int) -> bytes:
        return bytes([next(counter) % 256]) * n

    first, second = generate_peer_id(fake_random), generate_peer_id(fake_random)
    assert first.raw[:8] == second.raw[:8] == b"-TV0100-"  # pyproject version 0.1.0
    assert first != second
    assert generate_peer_id() != generate_peer_id()  # os.urandom


def test_generate_peer_id_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="12 bytes"):
        generate_peer_id(lambda n: b"short")
    with pytest.raises(ValueError, match="does not fit"):
        generate_peer_id(version="100.0.0")
