"""``metainfo_from_magnet``: the .torrent of a fetched magnet link keeps the info dictionary's
exact bytes (so its info hash), puts each ``tr`` in a tier of its own and ``ws`` in url-list."""

from __future__ import annotations

import hashlib

import pytest

from torviz.shared.bencode import decode
from torviz.shared.errors import MagnetError
from torviz.shared.magnet import Magnet, metainfo_from_magnet
from torviz.shared.metainfo import parse_metainfo
from torviz.shared.types import InfoHash

# Keys out of bencode order and a non-canonical layout: re-encoding would change the hash.
RAW_INFO = b"d4:name5:hello6:lengthi5e12:piece lengthi16384e6:pieces20:" + b"\x01" * 20 + b"e"
INFO_HASH = InfoHash(hashlib.sha1(RAW_INFO).digest())


def test_the_info_dictionary_is_spliced_byte_for_byte() -> None:
    magnet = Magnet(
        INFO_HASH,
        display_name="hello",
        trackers=("http://a.example/announce", "udp://b.example:80"),
        web_seeds=("http://seed.example/files/",),
    )
    data = metainfo_from_magnet(magnet, RAW_INFO)
    assert RAW_INFO in data
    metainfo = parse_metainfo(data)
    assert metainfo.info_hash == INFO_HASH
    assert metainfo.raw_info == RAW_INFO
    assert metainfo.trackers == (("http://a.example/announce",), ("udp://b.example:80",))
    assert metainfo.web_seeds == ("http://seed.example/files/",)
    top = decode(data, strict=False)
    assert isinstance(top, dict)
    assert top[b"announce"] == b"http://a.example/announce"
    assert list(top) == [b"announce", b"announce-list", b"info", b"url-list"]


def test_a_magnet_link_without_trackers_gives_an_info_only_torrent() -> None:
    data = metainfo_from_magnet(Magnet(INFO_HASH), RAW_INFO)
    assert data == b"d4:info" + RAW_INFO + b"e"
    assert parse_metainfo(data).trackers == ()


def test_an_info_dictionary_of_another_torrent_is_refused() -> None:
    with pytest.raises(MagnetError) as caught:
        metainfo_from_magnet(Magnet(InfoHash(b"\x02" * 20)), RAW_INFO)
    assert caught.value.reason == "info_hash_mismatch"
