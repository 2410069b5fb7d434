"""Magnet URIs (BEP 9): a table of links -> values, a malformed table -> reason, round trips."""

from __future__ import annotations

import base64
import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torviz.shared.errors import MagnetError
from torviz.shared.magnet import (
    MAX_FILE_INDEX,
    MAX_SELECT_ONLY,
    MAX_URI_LENGTH,
    Magnet,
    format_magnet,
    parse_magnet,
)
from torviz.shared.types import InfoHash, PeerAddress

HEX = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a"
IH = InfoHash.from_hex(HEX)
B32 = base64.b32encode(IH.raw).decode()
HYBRID_V1 = "631a31dd0a46257d5078c0dee4e66e26f73e42ac"
HYBRID_V2 = "1220d8dd32ac93357c368556af3ac1d95c9d76bd0dff6fa9833ecdac3d53134efabb"

GOOD = [
    pytest.param(
        # The shape BEP 9 gives: xt, dn, tr, x.pe.
        f"magnet:?xt=urn:btih:{HEX}&dn=Example+Name&tr=http%3A%2F%2Ftracker.example%3A80%2Fannounce"
        "&x.pe=192.0.2.7:6881",
        Magnet(
            IH,
            "Example Name",
            ("http://tracker.example:80/announce",),
            peers=(PeerAddress("192.0.2.7", 6881),),
        ),
        id="bep9-shape",
    ),
    pytest.param(f"magnet:?xt=urn:btih:{HEX}", Magnet(IH), id="xt-only"),
    pytest.param(f"magnet:?xt=urn:btih:{HEX.upper()}", Magnet(IH), id="upper-hex"),
    pytest.param(f"magnet:?xt=urn:btih:{B32}", Magnet(IH), id="base32"),
    pytest.param(f"magnet:?xt=urn:btih:{B32.lower()}", Magnet(IH), id="base32-lower"),
    pytest.param(f"  MAGNET:?XT=URN:BTIH:{HEX}\n", Magnet(IH), id="case-and-space"),
    pytest.param(
        # A browser-style link: many trackers, a web seed, an unknown xs parameter.
        "magnet:?xt=urn:btih:08ada5a7a6183aae1e09d831df6748d566095a10&dn=Sintel"
        "&tr=udp%3A%2F%2Fexplodie.org%3A6969&tr=udp%3A%2F%2Ftracker.empire-js.us%3A1337"
        "&tr=wss%3A%2F%2Ftracker.btorrent.xyz&ws=https%3A%2F%2Fwebtorrent.io%2Ftorrents%2F"
        "&xs=https%3A%2F%2Fwebtorrent.io%2Ftorrents%2Fsintel.torrent",
        Magnet(
            InfoHash.from_hex("08ada5a7a6183aae1e09d831df6748d566095a10"),
            "Sintel",
            (
                "udp://explodie.org:6969",
                "udp://tracker.empire-js.us:1337",
                "wss://tracker.btorrent.xyz",
            ),
            ("https://webtorrent.io/torrents/",),
        ),
        id="browser-style",
    ),
    pytest.param(
        # A hybrid v1+v2 torrent lists both hashes; the v2 one is ignored.
        f"magnet:?xt=urn:btih:{HYBRID_V1}&xt=urn:btmh:{HYBRID_V2}&dn=bittorrent-v1-v2-hybrid-test",
        Magnet(InfoHash.from_hex(HYBRID_V1), "bittorrent-v1-v2-hybrid-test"),
        id="hybrid",
    ),
    pytest.param(
        f"magnet:?xt.1=urn:sha1:YNCKHTQCWBTRNJIV4WNAE52SJUQCZO5C&xt.2=urn:btih:{HEX}",
        Magnet(IH),
        id="indexed-xt",
    ),
    pytest.param(
        f"magnet:?xt=urn:btih:{HEX}&xt.1=urn:btih:{B32}", Magnet(IH), id="same-hash-twice"
    ),
    pytest.param(
        f"magnet:?xt=urn:btih:{HEX}&tr=udp://a:1&tr.1=udp://b:2&tr=udp://a:1&tr=&tr.2=udp://c:3",
        Magnet(IH, trackers=("udp://a:1", "udp://b:2", "udp://c:3")),
        id="trackers-ordered-deduplicated",
    ),
    pytest.param(
        # '+' stays literal outside dn; %2B is '+' inside dn.
        f"magnet:?xt=urn:btih:{HEX}&dn=a%2Bb+c%20d&tr=http://t/announce?key=a+b",
        Magnet(IH, "a+b c d", ("http://t/announce?key=a+b",)),
        id="plus-rules",
    ),
    pytest.param(
        f"magnet:?xt=urn:btih:{HEX}&dn=%E2%9C%93%20ok&dn=second",
        Magnet(IH, "\u2713 ok"),
        id="utf8-first-dn-wins",
    ),
    pytest.param(
        f"magnet:?xt=urn:btih:{HEX}&x.pe=[2001:db8::1]:6881&x.pe=%5B2001%3Adb8%3A%3A1%5D%3A6881"
        "&x.pe=10.0.0.1:1",
        Magnet(IH, peers=(PeerAddress("2001:db8::1", 6881), PeerAddress("10.0.0.1", 1))),
        id="peers-v6-deduplicated",
    ),
    pytest.param(
        f"magnet:?xt=urn:btih:{HEX}&so=0,2,4-6,2,5",
        Magnet(IH, select_only=(0, 2, 4, 5, 6)),
        id="select-only",
    ),
    pytest.param(
        f"magnet:?xt=urn:btih:{HEX}&&flag&kt=a+b&xl=1234&as=http://x/y", Magnet(IH), id="ignored"
    ),
]


@pytest.mark.parametrize(("uri", "expected"), GOOD)
def test_parse_good(uri: str, expected: Magnet) -> None:
    assert parse_magnet(uri) == expected


def test_parse_good_is_stable_through_format() -> None:
    for param in GOOD:
        uri = param.values[0]
        assert isinstance(uri, str)
        magnet = parse_magnet(uri)
        assert parse_magnet(format_magnet(magnet)) == magnet


def test_format_exact() -> None:
    magnet = Magnet(
        IH,
        "My file & more+",
        ("udp://t.example:6969/announce", "http://t2/a?x=1&y=2"),
        ("https://seed.example/files/",),
        (PeerAddress("192.0.2.1", 6881), PeerAddress("::1", 7000)),
        (0, 1, 2, 5, 7, 8),
    )
    assert format_magnet(magnet) == (
        f"magnet:?xt=urn:btih:{HEX}&dn=My%20file%20%26%20more%2B"
        "&tr=udp%3A%2F%2Ft.example%3A6969%2Fannounce&tr=http%3A%2F%2Ft2%2Fa%3Fx%3D1%26y%3D2"
        "&ws=https%3A%2F%2Fseed.example%2Ffiles%2F"
        "&x.pe=192.0.2.1%3A6881&x.pe=%5B%3A%3A1%5D%3A7000&so=0-2,5,7-8"
    )


BAD = [
    ("", "not_magnet"),
    ("http://example.org/?xt=urn:btih:" + HEX, "not_magnet"),
    ("magnet:xt=urn:btih:" + HEX, "not_magnet"),
    ("magnet:?dn=name&tr=udp://t:1", "missing_xt"),
    ("magnet:?xt=urn:btih:abc", "bad_info_hash"),
    ("magnet:?xt=urn:btih:" + HEX[:-1] + "g", "bad_info_hash"),
    ("magnet:?xt=urn:btih:" + HEX + "0", "bad_info_hash"),
    ("magnet:?xt=urn:btih:" + B32[:-1] + "1", "bad_info_hash"),
    ("magnet:?xt=urn:btih:" + HEX[:20] + " " + HEX[21:], "bad_info_hash"),
    (f"magnet:?xt=urn:btih:{HEX}&xt=urn:btih:{HYBRID_V1}", "conflicting_info_hash"),
    (f"magnet:?xt=urn:btih:{HEX}&xt.1=urn:btih:zz", "bad_info_hash"),
    (f"magnet:?xt=urn:btmh:{HYBRID_V2}&dn=v2-only", "unsupported_xt"),
    ("magnet:?xt=urn:sha1:YNCKHTQCWBTRNJIV4WNAE52SJUQCZO5C", "unsupported_xt"),
    ("magnet:?xt=urn:ed2k:354B15E68FB8F36D7CD88FF94116CDC1", "unsupported_xt"),
    (f"magnet:?xt=urn:btih:{HEX}&x.pe=192.0.2.1", "bad_peer_address"),
    (f"magnet:?xt=urn:btih:{HEX}&x.pe=192.0.2.1:0", "bad_peer_address"),
    (f"magnet:?xt=urn:btih:{HEX}&x.pe=192.0.2.1:65536", "bad_peer_address"),
    (f"magnet:?xt=urn:btih:{HEX}&x.pe=192.0.2.1:http", "bad_peer_address"),
    (f"magnet:?xt=urn:btih:{HEX}&x.pe=peer.example:6881", "bad_peer_address"),
    (f"magnet:?xt=urn:btih:{HEX}&x.pe=[192.0.2.1]:6881", "bad_peer_address"),
    (f"magnet:?xt=urn:btih:{HEX}&x.pe=2001:db8::1:6881", "bad_peer_address"),
    (f"magnet:?xt=urn:btih:{HEX}&x.pe=[2001:db8::1]", "bad_peer_address"),
    (f"magnet:?xt=urn:btih:{HEX}&x.pe=", "bad_peer_address"),
    (f"magnet:?xt=urn:btih:{HEX}&so=a", "bad_select_only"),
    (f"magnet:?xt=urn:btih:{HEX}&so=", "bad_select_only"),
    (f"magnet:?xt=urn:btih:{HEX}&so=1,,2", "bad_select_only"),
    (f"magnet:?xt=urn:btih:{HEX}&so=6-4", "bad_select_only"),
    (f"magnet:?xt=urn:btih:{HEX}&so=-3", "bad_select_only"),
    (f"magnet:?xt=urn:btih:{HEX}&so={MAX_FILE_INDEX}", "bad_select_only"),
    (f"magnet:?xt=urn:btih:{HEX}&so=0-{MAX_SELECT_ONLY}", "bad_select_only"),
    (f"magnet:?xt=urn:btih:{HEX}&so=0-60000,70000-119999", "bad_select_only"),
    (f"magnet:?xt=urn:btih:{HEX}&dn=%zz", "bad_encoding"),
    (f"magnet:?xt=urn:btih:{HEX}&dn=abc%4", "bad_encoding"),
    (f"magnet:?xt=urn:btih:{HEX}&tr=%ff%fe", "bad_encoding"),
    (f"magnet:?xt=urn:btih:{HEX}&dn=\udcff", "bad_encoding"),
    (f"magnet:?xt=urn:btih:{HEX}&tr=" + "a" * MAX_URI_LENGTH, "too_long"),
    ("magnet:?" + "&".join(["x=1"] * 1100) + f"&xt=urn:btih:{HEX}", "too_many_params"),
]


@pytest.mark.parametrize(("uri", "reason"), BAD, ids=[f"{r}-{i}" for i, (_, r) in enumerate(BAD)])
def test_parse_bad(uri: str, reason: str) -> None:
    with pytest.raises(MagnetError) as caught:
        parse_magnet(uri)
    assert caught.value.reason == reason
    message = str(caught.value)
    assert message and "\n" not in message and len(message) < 300


def test_limits_are_inclusive() -> None:
    base = f"magnet:?xt=urn:btih:{HEX}&tr="
    uri = base + "a" * (MAX_URI_LENGTH - len(base))
    assert len(parse_magnet(uri).trackers[0]) == MAX_URI_LENGTH - len(base)
    wide = parse_magnet(f"magnet:?xt=urn:btih:{HEX}&so=0-{MAX_SELECT_ONLY - 1}")
    assert len(wide.select_only) == MAX_SELECT_ONLY
    assert parse_magnet(f"magnet:?xt=urn:btih:{HEX}&so={MAX_FILE_INDEX - 1}").select_only == (
        MAX_FILE_INDEX - 1,
    )


_text = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)
_ipv4 = st.ip_addresses(v=4).map(str)
_ipv6 = st.ip_addresses(v=6).map(lambda ip: ipaddress.IPv6Address(ip).compressed)
_peer = st.builds(PeerAddress, _ipv4 | _ipv6, st.integers(1, 65535))

magnets = st.builds(
    Magnet,
    info_hash=st.binary(min_size=20, max_size=20).map(InfoHash),
    display_name=st.none() | _text,
    trackers=st.lists(_text, unique=True, max_size=5).map(tuple),
    web_seeds=st.lists(_text, unique=True, max_size=3).map(tuple),
    peers=st.lists(_peer, unique=True, max_size=4).map(tuple),
    select_only=st.sets(st.integers(0, MAX_FILE_INDEX - 1), max_size=20).map(
        lambda s: tuple(sorted(s))
    ),
)


@given(magnets)
def test_round_trip(magnet: Magnet) -> None:
    uri = format_magnet(magnet)
    assert uri.isascii() and " " not in uri
    assert parse_magnet(uri) == magnet


@given(st.text(max_size=300))
def test_arbitrary_text_never_crashes(text: str) -> None:
    for candidate in (text, "magnet:?" + text, f"magnet:?xt=urn:btih:{HEX}&" + text):
        try:
            parse_magnet(candidate)
        except MagnetError as exc:
            assert exc.reason
