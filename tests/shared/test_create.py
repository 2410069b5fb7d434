"""The pure half of torrent creation: piece size, file plan, metainfo bytes.

The comparison with libtorrent and mktorrent running for real is in
``tests/interop/test_create_interop.py``; the numbers here were captured from them.
"""

from __future__ import annotations

import hashlib

import bencodepy
import pytest
from hypothesis import given
from hypothesis import strategies as st

from torviz.shared import metainfo
from torviz.shared.create import (
    MAX_FILES,
    MAX_PATH_DEPTH,
    CreateError,
    FilePlan,
    PlannedFile,
    build_metainfo,
    check_piece_length,
    check_urls,
    choose_piece_length,
    parse_piece_size,
    piece_layout,
    plan_files,
    plan_single_file,
)
from torviz.shared.metainfo import parse_metainfo

KIB = 1024
MIB = 1024 * 1024

# (total size, piece length) printed by libtorrent 2.1's create_torrent with piece size 0, at
# each side of every step (the boundaries are inclusive on the smaller piece).
LIBTORRENT_AUTO = [
    (1, 16 * KIB),
    (2_684_355, 16 * KIB),
    (2_684_356, 32 * KIB),
    (10_737_418, 32 * KIB),
    (10_737_419, 64 * KIB),
    (42_949_673, 64 * KIB),
    (42_949_674, 128 * KIB),
    (171_798_692, 128 * KIB),
    (171_798_693, 256 * KIB),
    (687_194_767, 256 * KIB),
    (687_194_768, 512 * KIB),
    (1_000_000_000, 512 * KIB),
    (2_748_779_069, 512 * KIB),
    (2_748_779_070, 1 * MIB),
    (10_995_116_278, 1 * MIB),
    (10_995_116_279, 2 * MIB),
    (43_980_465_111, 2 * MIB),
    (43_980_465_112, 4 * MIB),
    (175_921_860_444, 4 * MIB),
    (175_921_860_445, 8 * MIB),
    (703_687_441_777, 8 * MIB),
    (703_687_441_778, 16 * MIB),
    (10**13, 16 * MIB),
]


@pytest.mark.parametrize(("total", "expected"), LIBTORRENT_AUTO)
def test_choose_piece_length_matches_libtorrent(total: int, expected: int) -> None:
    assert choose_piece_length(total) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("auto", None),
        (" AUTO ", None),
        ("16384", 16384),
        ("16K", 16384),
        ("256KiB", 262144),
        ("256 kib", 262144),
        ("1M", MIB),
        ("4MiB", 4 * MIB),
        ("64M", 64 * MIB),
    ],
)
def test_parse_piece_size(text: str, expected: int | None) -> None:
    assert parse_piece_size(text) == expected


@pytest.mark.parametrize(
    "text", ["", "0", "8K", "8192", "100000", "24K", "128M", "1G", "-16K", "16KB", "x", "1e6"]
)
def test_parse_piece_size_refuses(text: str) -> None:
    with pytest.raises(CreateError) as caught:
        parse_piece_size(text)
    assert caught.value.reason == "bad_piece_size"


def test_check_piece_length_bounds() -> None:
    assert check_piece_length(16 * KIB) == 16 * KIB
    assert check_piece_length(64 * MIB) == 64 * MIB
    for bad in (0, -16384, 8 * KIB, 16 * KIB + 1, 48 * KIB, 128 * MIB):
        with pytest.raises(CreateError):
            check_piece_length(bad)


def test_plan_orders_like_mktorrent() -> None:
    # mktorrent compares whole "/"-joined paths byte by byte: '-' (0x2d) < '/' (0x2f) < 'A'
    # (0x41) < 'a' (0x61) < any non-ASCII lead byte.
    plan = plan_files(
        "root",
        [
            (["sub", "z"], 1),
            (["sub-a"], 2),
            (["b.txt"], 3),
            (["A.txt"], 4),
            (["\u00e9t\u00e9"], 5),
            (["zz"], 0),
            ([".hidden"], 6),
        ],
    )
    assert [f.path for f in plan.files] == [
        (".hidden",),
        ("A.txt",),
        ("b.txt",),
        ("sub-a",),
        ("sub", "z"),
        ("zz",),
        ("\u00e9t\u00e9",),
    ]
    assert plan.multi_file and plan.name == "root" and plan.total_size == 21


def test_plan_single_file() -> None:
    plan = plan_single_file("movie.mkv", 12345)
    assert plan == FilePlan("movie.mkv", (PlannedFile((), 12345),), multi_file=False)
    assert plan.total_size == 12345


@pytest.mark.parametrize(
    ("root", "entries", "reason"),
    [
        ("..", [(["a"], 1)], "unsafe_name"),
        ("", [(["a"], 1)], "unsafe_name"),
        ("root", [(["a", ".."], 1)], "unsafe_name"),
        ("root", [([".", "a"], 1)], "unsafe_name"),
        ("root", [(["a", ""], 1)], "unsafe_name"),
        ("root", [(["a/b"], 1)], "unsafe_name"),
        ("root", [(["a\\b"], 1)], "unsafe_name"),
        ("root", [(["C:evil"], 1)], "unsafe_name"),
        ("root", [(["nul\0"], 1)], "unsafe_name"),
        ("root", [(["line\nbreak"], 1)], "unsafe_name"),
        ("root", [(["esc\x1b[2J"], 1)], "unsafe_name"),
        ("root", [(["bad\udcff"], 1)], "unsafe_name"),
        ("root", [([], 1)], "unsafe_name"),
        ("root", [(["x"] * (MAX_PATH_DEPTH + 1), 1)], "path_too_deep"),
        ("root", [(["a"], 1), (["a"], 2)], "duplicate_path"),
        ("root", [(["a"], 1), (["a", "b"], 2)], "path_conflict"),
        ("root", [], "empty_torrent"),
        ("root", [(["a"], 0), (["b"], 0)], "empty_torrent"),
    ],
)
def test_plan_refuses(root: str, entries: list[tuple[list[str], int]], reason: str) -> None:
    with pytest.raises(CreateError) as caught:
        plan_files(root, entries)
    assert caught.value.reason == reason
    assert "\n" not in str(caught.value)


def test_plan_refuses_too_many_files() -> None:
    entries = [([f"f{i}"], 1) for i in range(MAX_FILES + 1)]
    with pytest.raises(CreateError) as caught:
        plan_files("root", entries)
    assert caught.value.reason == "too_many_files"


def test_plan_single_file_refuses() -> None:
    with pytest.raises(CreateError) as caught:
        plan_single_file("empty", 0)
    assert caught.value.reason == "empty_torrent"
    with pytest.raises(CreateError) as caught:
        plan_single_file("a/b", 1)
    assert caught.value.reason == "unsafe_name"


def test_piece_layout_refuses_too_many_pieces() -> None:
    plan = plan_single_file("big", 16 * KIB * metainfo.MAX_PIECES + 1)
    with pytest.raises(CreateError) as caught:
        piece_layout(plan, 16 * KIB)
    assert caught.value.reason == "too_many_pieces"
    assert piece_layout(plan, 32 * KIB).num_pieces == metainfo.MAX_PIECES // 2 + 1


SINGLE_EXPECTED = (
    b"d8:announce30:http://127.0.0.1:6969/announce10:created by12:torviz/0.1.0"
    b"13:creation datei1700000000e4:infod6:lengthi5e4:name5:a.txt12:piece lengthi16384e"
    b"6:pieces20:" + hashlib.sha1(b"hello").digest() + b"ee"
)


def test_build_single_file_exact_bytes() -> None:
    data = build_metainfo(
        plan_single_file("a.txt", 5),
        16 * KIB,
        hashlib.sha1(b"hello").digest(),
        ["http://127.0.0.1:6969/announce"],
        created_by="torviz/0.1.0",
        creation_date=1_700_000_000,
    )
    assert data == SINGLE_EXPECTED
    # bencode.py agrees the bytes are canonical.
    assert bencodepy.encode(bencodepy.decode(data)) == data


def test_build_multi_file_reads_back() -> None:
    plan = plan_files("album", [(["cd2", "b.flac"], 40_000), (["cd1", "a.flac"], 10_000)])
    hashes = bytes(range(20)) * 4  # 50_000 bytes in 16 KiB pieces: 4 pieces
    data = build_metainfo(
        plan,
        16 * KIB,
        hashes,
        ["udp://127.0.0.1:6969", "http://127.0.0.2:8080/announce", "udp://127.0.0.1:6969"],
        ["http://127.0.0.1:8000/seed/"],
        private=True,
        comment="two discs",
        created_by="torviz/0.1.0",
        creation_date=None,
    )
    meta = parse_metainfo(data)
    top = bencodepy.decode(data)
    assert meta.info_hash.raw == hashlib.sha1(bencodepy.encode(top[b"info"])).digest()
    assert meta.info.name == "album"
    assert meta.info.multi_file and meta.info.private
    assert meta.info.piece_length == 16 * KIB
    assert meta.info.piece_hashes == hashes
    assert [(f.path, f.length) for f in meta.info.files] == [
        (("album", "cd1", "a.flac"), 10_000),
        (("album", "cd2", "b.flac"), 40_000),
    ]
    assert meta.trackers == (("udp://127.0.0.1:6969",), ("http://127.0.0.2:8080/announce",))
    assert top[b"announce"] == b"udp://127.0.0.1:6969"
    assert meta.web_seeds == ("http://127.0.0.1:8000/seed/",)
    assert meta.comment == "two discs" and meta.created_by == "torviz/0.1.0"
    assert meta.creation_date is None and b"creation date" not in top
    assert set(top[b"info"]) == {b"files", b"name", b"piece length", b"pieces", b"private"}


def test_build_one_tracker_has_no_announce_list() -> None:
    data = build_metainfo(plan_single_file("x", 1), 16 * KIB, bytes(20), ["udp://127.0.0.1:1"])
    top = bencodepy.decode(data)
    assert b"announce-list" not in top and b"url-list" not in top and b"comment" not in top
    assert b"private" not in top[b"info"]


def test_build_without_trackers() -> None:
    data = build_metainfo(plan_single_file("x", 1), 16 * KIB, bytes(20), [])
    assert parse_metainfo(data).trackers == ()
    assert b"announce" not in bencodepy.decode(data)


def test_build_refuses_wrong_hash_count() -> None:
    plan = plan_single_file("x", 16 * KIB + 1)
    for hashes in (bytes(20), bytes(60), bytes(39)):
        with pytest.raises(CreateError) as caught:
            build_metainfo(plan, 16 * KIB, hashes, [])
        assert caught.value.reason == "bad_piece_hashes"


@pytest.mark.parametrize(
    ("trackers", "web_seeds"),
    [
        (["ftp://127.0.0.1/announce"], []),
        (["127.0.0.1:6969"], []),
        (["http://"], []),
        (["http://127.0.0.1/a b"], []),
        (["http://[::1/announce"], []),
        ([], ["udp://127.0.0.1:1"]),
        ([], ["file:///etc/passwd"]),
    ],
)
def test_check_urls_refuses(trackers: list[str], web_seeds: list[str]) -> None:
    with pytest.raises(CreateError) as caught:
        check_urls(trackers, web_seeds)
    assert caught.value.reason == "bad_url"


def test_check_urls_accepts_and_deduplicates() -> None:
    assert check_urls(
        ["udp://127.0.0.1:6969", "HTTPS://[::1]:443/announce?k=1", "udp://127.0.0.1:6969"],
        ["http://127.0.0.1/x/"],
    ) == (["udp://127.0.0.1:6969", "HTTPS://[::1]:443/announce?k=1"], ["http://127.0.0.1/x/"])


_part = st.sampled_from(["a", "b", "a-b", "a.b", "B", "\u00e9", "z z", ".h", "a_b"])
_entries = st.lists(
    st.tuples(st.lists(_part, min_size=1, max_size=3).map(tuple), st.integers(0, 70_000)),
    min_size=1,
    max_size=12,
    unique_by=lambda entry: entry[0],
)


@given(_entries, st.sampled_from([16 * KIB, 32 * KIB]), st.booleans())
def test_plan_build_parse_round_trip(
    entries: list[tuple[tuple[str, ...], int]], piece_length: int, private: bool
) -> None:
    paths = {path for path, _ in entries}
    # Drop files that are also a directory of another file: a real tree cannot hold both.
    kept = [(p, n) for p, n in entries if not any(q[: len(p)] == p and q != p for q in paths)]
    if sum(n for _, n in kept) == 0:
        kept.append((("data",), 1))
    plan = plan_files("root", kept)
    geometry = piece_layout(plan, piece_length)
    hashes = b"".join(hashlib.sha1(str(i).encode()).digest() for i in range(geometry.num_pieces))
    data = build_metainfo(plan, piece_length, hashes, ["http://127.0.0.1/a"], private=private)
    meta = parse_metainfo(data)
    assert [(f.path, f.length) for f in meta.info.files] == [
        (("root", *entry.path), entry.length) for entry in plan.files
    ]
    keys = ["/".join(entry.path).encode() for entry in plan.files]
    assert keys == sorted(keys)
    assert meta.info.total_length == plan.total_size
    assert meta.info.private == private
    assert meta.info.piece_hashes == hashes
    assert meta.info.geometry == geometry
