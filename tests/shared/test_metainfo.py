"""Metainfo parsing: good and broken .torrent vectors, info-hash over raw bytes, properties."""

from __future__ import annotations

import hashlib
import importlib.util
import time
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torviz.shared.bencode import BencodeLimits, Value, decode, encode
from torviz.shared.errors import BencodeError, MetainfoError
from torviz.shared.metainfo import (
    MAX_FILES,
    MAX_NODES,
    MAX_PIECES,
    FileEntry,
    InfoDict,
    Metainfo,
    parse_info_dict,
    parse_metainfo,
)
from torviz.shared.types import InfoHash

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "torrents"


def load(kind: str, name: str) -> bytes:
    return (VECTORS / kind / f"{name}.torrent").read_bytes()


def good(name: str) -> Metainfo:
    return parse_metainfo(load("good", name))


def info_bytes(data: bytes) -> bytes:
    """The info dict's raw bytes, found without the code under test: in every vector used with
    this helper, ``info`` is the last top-level key."""
    return data[data.index(b"4:infod") + 6 : data.rindex(b"e")]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_broken", VECTORS / "make_broken.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_vectors_match_the_generator(tmp_path: Path) -> None:
    written = _generator().generate(tmp_path)
    generated = {p.relative_to(tmp_path) for p in written}
    committed = {
        p.relative_to(VECTORS)
        for p in VECTORS.glob("*/*.torrent")
        if not p.name.startswith("captured_")
    }
    assert generated == committed
    for relative in generated:
        assert (tmp_path / relative).read_bytes() == (VECTORS / relative).read_bytes(), relative


# --- broken torrents ------------------------------------------------------------------------

# vector name -> (MetainfoError reason, BencodeError reason of the cause or None)
BROKEN: dict[str, tuple[str, str | None]] = {
    "truncated": ("bad_bencode", "truncated"),
    "garbage": ("bad_bencode", "bad_token"),
    "nesting_bomb": ("bad_bencode", "too_deep"),
    "huge_string_claim": ("bad_bencode", "string_too_long"),
    "leading_zero_int": ("bad_bencode", "leading_zero"),
    "plus_sign_int": ("bad_bencode", "bad_integer"),
    "duplicate_info_key": ("bad_bencode", "duplicate_key"),
    "integer_key": ("bad_bencode", "non_bytes_key"),
    "top_is_list": ("not_a_dict", None),
    "no_info": ("info_missing", None),
    "info_is_list": ("info_not_a_dict", None),
    "name_missing": ("name_missing", None),
    "name_wrong_type": ("name_wrong_type", None),
    "name_traversal": ("path_traversal", None),
    "name_with_slash": ("separator_in_component", None),
    "name_empty": ("empty_path_component", None),
    "name_absolute": ("absolute_path", None),
    "piece_length_missing": ("piece_length_missing", None),
    "piece_length_wrong_type": ("piece_length_wrong_type", None),
    "piece_length_zero": ("piece_length_out_of_range", None),
    "piece_length_negative": ("piece_length_out_of_range", None),
    "piece_length_huge": ("piece_length_out_of_range", None),
    "pieces_missing": ("pieces_missing", None),
    "pieces_wrong_type": ("pieces_wrong_type", None),
    "pieces_not_multiple_of_20": ("pieces_not_multiple_of_20", None),
    "too_few_pieces": ("piece_count_mismatch", None),
    "too_many_piece_hashes": ("piece_count_mismatch", None),
    "both_length_and_files": ("both_length_and_files", None),
    "no_length_or_files": ("no_length_or_files", None),
    "length_wrong_type": ("length_wrong_type", None),
    "negative_length": ("negative_length", None),
    "negative_file_length": ("negative_length", None),
    "file_length_missing": ("length_missing", None),
    "files_wrong_type": ("files_wrong_type", None),
    "file_entry_wrong_type": ("file_entry_wrong_type", None),
    "no_files": ("no_files", None),
    "private_wrong_type": ("private_wrong_type", None),
    "attr_wrong_type": ("attr_wrong_type", None),
    "v2_only": ("v2_only", None),
    "absurd_size": ("torrent_too_large", None),
    "absurd_size_files": ("torrent_too_large", None),
    "empty_torrent": ("empty_torrent", None),
    "empty_multi_torrent": ("empty_torrent", None),
    "path_missing": ("path_missing", None),
    "path_wrong_type": ("path_wrong_type", None),
    "path_component_wrong_type": ("path_wrong_type", None),
    "path_empty_list": ("empty_path", None),
    "path_traversal": ("path_traversal", None),
    "path_traversal_middle": ("path_traversal", None),
    "path_traversal_in_component": ("path_traversal", None),
    "path_absolute": ("absolute_path", None),
    "path_absolute_backslash": ("absolute_path", None),
    "path_drive_letter": ("absolute_path", None),
    "path_unc": ("absolute_path", None),
    "path_empty_component": ("empty_path_component", None),
    "path_dot": ("dot_component", None),
    "path_slash_in_component": ("separator_in_component", None),
    "path_backslash_in_component": ("separator_in_component", None),
    "path_nul": ("nul_in_path", None),
    "duplicate_path": ("duplicate_path", None),
    "file_is_directory": ("duplicate_path", None),
    "directory_is_file": ("duplicate_path", None),
    "utf8_field_traversal": ("path_traversal", None),
    "path_too_deep": ("path_too_deep", None),
    "path_utf8_too_deep": ("path_too_deep", None),
    "path_component_too_long": ("path_component_too_long", None),
    "path_component_too_long_utf8": ("path_component_too_long", None),
    "name_too_long": ("path_component_too_long", None),
    "nonzero_length_and_files": ("both_length_and_files", None),
}


def test_every_broken_vector_is_in_the_table() -> None:
    assert {p.stem for p in (VECTORS / "broken").glob("*.torrent")} == set(BROKEN)


@pytest.mark.parametrize(("name", "expected"), sorted(BROKEN.items()))
def test_broken_vector(name: str, expected: tuple[str, str | None]) -> None:
    reason, cause = expected
    with pytest.raises(MetainfoError) as info:
        parse_metainfo(load("broken", name))
    assert info.value.reason == reason
    assert "\n" not in str(info.value) and str(info.value)
    if cause is None:
        assert info.value.__cause__ is None
    else:
        assert isinstance(info.value.__cause__, BencodeError)
        assert info.value.__cause__.reason == cause


def test_too_many_files() -> None:
    files = b"l" + b"de" * (MAX_FILES + 1) + b"e"
    data = b"d4:infod5:files" + files + b"4:name1:x12:piece lengthi16384e6:pieces0:ee"
    with pytest.raises(MetainfoError) as info:
        parse_metainfo(data)
    assert info.value.reason == "too_many_files"


def test_too_many_pieces() -> None:
    count = MAX_PIECES + 1
    info = {
        b"length": count * 1024,
        b"name": b"x",
        b"piece length": 1024,
        b"pieces": bytes(20 * count),
    }
    with pytest.raises(MetainfoError) as error:
        parse_metainfo(encode({b"info": info}))
    assert error.value.reason == "too_many_pieces"


def test_bencode_limits_are_passed_through() -> None:
    tight = BencodeLimits(max_size=100, max_depth=8, max_string_length=100, max_items=100)
    with pytest.raises(MetainfoError) as info:
        parse_metainfo(load("good", "single"), limits=tight)
    assert info.value.reason == "bad_bencode"
    assert isinstance(info.value.__cause__, BencodeError)
    assert info.value.__cause__.reason == "too_large"


# --- good torrents --------------------------------------------------------------------------


def test_single_file() -> None:
    data = load("good", "single")
    m = parse_metainfo(data)
    assert m.raw_info == info_bytes(data)
    assert m.info_hash == InfoHash(hashlib.sha1(info_bytes(data)).digest())
    assert m.info.name == "file.bin"
    assert m.info.files == (FileEntry(("file.bin",), 100_000, 0, False, ""),)
    assert not m.info.multi_file
    assert (m.info.piece_length, m.info.total_length, m.info.num_pieces) == (32768, 100_000, 4)
    assert (
        m.info.piece_hash(0) == hashlib.sha1(bytes(range(251)) * 130 + bytes(range(138))).digest()
    )
    assert m.info.piece_hash(3) == m.info.piece_hashes[60:80]
    with pytest.raises(IndexError):
        m.info.piece_hash(4)
    assert m.trackers == (("http://127.0.0.1:6969/announce",),)
    assert (m.comment, m.created_by, m.creation_date) == ("a comment", "vector maker", None)
    assert (m.web_seeds, m.http_seeds, m.info.private) == ((), (), False)


def test_geometry_follows_the_info_dict() -> None:
    info = good("multi").info
    g = info.geometry
    assert g.file_lengths == (40_000, 0, 70_000)
    assert (g.piece_length, g.total_length, g.num_pieces) == (32768, 110_000, 4)
    assert g.file_offsets == tuple(f.offset for f in info.files)
    assert info.geometry is g  # built once


def test_multi_file() -> None:
    m = good("multi")
    assert m.info.multi_file
    assert [(f.path, f.length, f.offset) for f in m.info.files] == [
        (("album", "cd1", "track1.flac"), 40_000, 0),
        (("album", "empty.txt"), 0, 40_000),
        (("album", "cover.jpg"), 70_000, 40_000),
    ]
    assert m.creation_date == 1_700_000_000


def test_one_entry_files_list_is_still_multi_file() -> None:
    info = good("one_file_multi").info
    assert info.multi_file
    assert info.files[0].path == ("album", "only.txt")


def test_padding_files() -> None:
    files = good("padding").info.files
    assert [(f.path[1:], f.padding, f.attr) for f in files] == [
        (("a.bin",), False, ""),
        ((".pad", "22768"), True, "p"),
        (("b.bin",), False, "x"),
        ((".pad", "12768"), True, "p"),
        (("c.bin",), False, ""),
    ]
    assert [f.offset for f in files] == [0, 10_000, 32768, 32768 + 20_000, 65536]
    assert [f.offset for f in files if not f.padding and f.length] == [0, 32768, 65536]


def test_bitcomet_padding_files() -> None:
    assert [f.padding for f in good("bitcomet_padding").info.files] == [False, True, False]


def test_announce_list_tiers() -> None:
    # Duplicates, empty strings, non-strings, empty tiers and non-list tiers are dropped.
    assert good("tiers").trackers == (
        ("http://127.0.0.1:1/a", "udp://127.0.0.1:2"),
        ("http://127.0.0.1:3/c",),
        ("http://127.0.0.1:4/d",),
    )


def test_unusable_announce_list_falls_back_to_announce() -> None:
    assert good("empty_announce_list").trackers == (("http://127.0.0.1:6969/announce",),)
    assert good("no_trackers").trackers == ()


def test_url_list_as_string_and_list() -> None:
    assert good("url_list_string").web_seeds == ("http://127.0.0.1:8000/file.bin",)
    m = good("url_list_list")
    assert m.web_seeds == ("http://127.0.0.1:8000/", "http://127.0.0.1:8001/")
    assert m.http_seeds == ("http://127.0.0.1:9000/seed",)


def test_private() -> None:
    assert good("private").info.private
    assert not good("private_zero").info.private


def test_unsorted_info_keys_hash_the_raw_bytes() -> None:
    data = load("good", "unsorted_info")
    m = parse_metainfo(data)
    raw = info_bytes(data)
    assert raw.startswith(b"d12:piece length")  # really unsorted
    assert m.raw_info == raw
    assert m.info_hash.raw == hashlib.sha1(raw).digest()
    # A re-encoding (sorted keys) would give another hash.
    assert m.info_hash.raw != hashlib.sha1(encode(decode(raw, strict=False))).digest()


def test_unsorted_top_level_and_trailing_newline_load() -> None:
    single = good("single")
    assert good("unsorted_top").info_hash == single.info_hash
    trailing = load("good", "trailing_newline")
    assert trailing.endswith(b"e\n")
    assert parse_metainfo(trailing).info_hash == single.info_hash


def test_text_fields() -> None:
    utf8 = good("utf8_name").info
    assert utf8.name == "m\u00fasica"
    assert utf8.files[0].path == ("m\u00fasica", "caf\u00e9.txt")
    assert good("name_utf8_field").info.name == "\u65e5\u672c"
    assert good("path_utf8_field").info.files[0].path == ("album", "caf\u00e9.txt")
    legacy = good("legacy_encoding").info
    assert legacy.name == "\u97f3\u4e50"
    assert legacy.files[0].path == ("\u97f3\u4e50", "\u6587\u4ef6.txt")
    assert good("invalid_utf8_name").info.name == "bad\ufffdname"


def test_odd_piece_length() -> None:
    info = good("odd_piece_length").info
    assert (info.piece_length, info.num_pieces, info.geometry.last_piece_size) == (
        1_000_000,
        3,
        500_000,
    )


# Captured from libtorrent 2.1 (hybrid v1+v2, pad files) and mktorrent 1.1; the info-hashes
# are what libtorrent reported for these files.
def test_captured_libtorrent_hybrid() -> None:
    m = good("captured_libtorrent_hybrid")
    assert m.info_hash.hex == "f40db1fcb5de4fec699f47e4d650ab50ec957e60"
    assert [(f.path, f.length, f.offset, f.padding) for f in m.info.files] == [
        (("data", "a.bin"), 100000, 0, False),
        (("data", ".pad", "14688"), 14688, 100000, True),
        (("data", "empty"), 0, 114688, False),
        (("data", "sub", "b.bin"), 50000, 114688, False),
        (("data", ".pad", "15536"), 15536, 164688, True),
    ]
    assert (m.info.num_pieces, m.info.piece_length, m.info.total_length) == (11, 16384, 180224)
    assert m.trackers == (("http://127.0.0.1:6969/announce",), ("udp://127.0.0.1:6969",))
    assert (m.created_by, m.creation_date) == ("libtorrent vector capture", 1700000000)


def test_captured_mktorrent_multi() -> None:
    m = good("captured_mktorrent_multi")
    assert m.info_hash.hex == "d28135b0dc7ae18f98651e4bf68b1d37e2ab029a"
    assert [(f.path, f.length, f.offset) for f in m.info.files] == [
        (("multi", "d1", "d2", "y.bin"), 33000, 0),
        (("multi", "d1", "empty"), 0, 33000),
        (("multi", "x.bin"), 40000, 33000),
    ]
    assert (m.info.num_pieces, m.info.private) == (3, True)
    assert m.trackers == (
        ("http://127.0.0.1:6969/announce",),
        ("http://127.0.0.1:6970/announce", "http://127.0.0.1:6971/announce"),
    )
    assert m.web_seeds == ("http://127.0.0.1:8000/",)


# --- the info dict alone (ut_metadata) ------------------------------------------------------


def test_parse_info_dict_matches_parse_metainfo() -> None:
    m = good("multi")
    assert parse_info_dict(m.raw_info) == m.info


def test_parse_info_dict_strictness() -> None:
    raw = good("unsorted_info").raw_info
    with pytest.raises(MetainfoError) as info:
        parse_info_dict(raw)
    assert info.value.reason == "bad_bencode"
    assert isinstance(info.value.__cause__, BencodeError)
    assert info.value.__cause__.reason == "unsorted_keys"
    assert parse_info_dict(raw, strict=False) == good("unsorted_info").info


def test_unsorted_info_keys_load_from_disk_and_a_strict_refusal_says_why() -> None:
    # A .torrent from disk loads whatever the order of its info keys (libtorrent agrees; see
    # tests/interop). Where canonical bytes are required, the refusal names the key order and
    # never claims that the info dictionary is missing.
    data = load("good", "unsorted_info")
    assert parse_metainfo(data).info.name == "file.bin"
    with pytest.raises(MetainfoError) as info:
        parse_info_dict(info_bytes(data))
    message = str(info.value)
    assert "keys are not in sorted order (byte 23)" in message
    assert "no 'info'" not in message and "\n" not in message
    with pytest.raises(MetainfoError) as missing:
        parse_metainfo(load("broken", "no_info"))
    assert (missing.value.reason, str(missing.value)) == (
        "info_missing",
        "the torrent has no 'info' dictionary",
    )


# --- limits on paths ------------------------------------------------------------------------


def deep_torrent(depth: int) -> bytes:
    """A multi-file torrent whose one file sits ``depth`` components deep (file name included)."""
    path = [b"d"] * (depth - 1) + [b"f.bin"]
    info = {
        b"files": [{b"length": 1000, b"path": path}],
        b"name": b"deep",
        b"piece length": 16384,
        b"pieces": bytes(20),
    }
    return encode({b"info": info})


def test_a_2000_deep_path_is_refused_at_once() -> None:
    data = deep_torrent(2000)
    started = time.perf_counter()
    with pytest.raises(MetainfoError) as info:
        parse_metainfo(data)
    elapsed = time.perf_counter() - started
    assert info.value.reason == "path_too_deep"
    assert str(info.value) == "a file's path has 2000 components, the limit is 64"
    assert elapsed < 1.0  # microseconds in fact; storage used to spend 90 s on such a path
    raw = parse_metainfo(deep_torrent(5), max_path_depth=5).raw_info
    with pytest.raises(MetainfoError) as again:
        parse_info_dict(raw, max_path_depth=4)
    assert again.value.reason == "path_too_deep"


def test_path_depth_limit_and_its_option() -> None:
    assert len(parse_metainfo(deep_torrent(64)).info.files[0].path) == 65  # name + 64
    with pytest.raises(MetainfoError) as info:
        parse_metainfo(deep_torrent(65))
    assert info.value.reason == "path_too_deep"
    deep = parse_metainfo(deep_torrent(2000), max_path_depth=2000)
    assert deep.info.files[0].path[-2:] == ("d", "f.bin")
    assert parse_info_dict(deep.raw_info, max_path_depth=2000) == deep.info
    with pytest.raises(ValueError):
        parse_metainfo(deep_torrent(1), max_path_depth=0)


@pytest.mark.parametrize(
    ("component", "accepted"),
    [
        (b"x" * 255, True),
        (b"x" * 256, False),
        ("\u00e9".encode() * 127 + b"x", True),  # 255 bytes
        ("\u00e9".encode() * 128, False),  # 128 characters, 256 bytes
        ("\U0001f600".encode() * 64, False),  # 64 characters, 256 bytes
    ],
    ids=["255 ascii", "256 ascii", "255 utf-8", "256 utf-8", "256 emoji"],
)
def test_component_and_name_length(component: bytes, accepted: bool) -> None:
    as_path = encode(
        {
            b"info": {
                b"files": [{b"length": 1000, b"path": [component]}],
                b"name": b"album",
                b"piece length": 16384,
                b"pieces": bytes(20),
            }
        }
    )
    as_name = encode(
        {
            b"info": {
                b"length": 1000,
                b"name": component,
                b"piece length": 16384,
                b"pieces": bytes(20),
            }
        }
    )
    for data in (as_path, as_name):
        if accepted:
            assert parse_metainfo(data).info.files[0].path[-1] == component.decode()
        else:
            with pytest.raises(MetainfoError) as info:
                parse_metainfo(data)
            assert info.value.reason == "path_component_too_long"
            assert "256 bytes, the limit is 255" in str(info.value)


def test_duplicates_among_many_deep_files() -> None:
    # The shape that made the old prefix sets quadratic in the depth: many files 64 deep.
    files = [{b"length": 1, b"path": [b"d%d" % (i % 7)] * 63 + [b"f%d" % i]} for i in range(1000)]
    info = {b"files": files, b"name": b"n", b"piece length": 16384, b"pieces": bytes(20)}
    parsed = parse_metainfo(encode({b"info": info}))
    assert len(parsed.info.files) == 1000
    files.append({b"length": 1, b"path": [b"d3"] * 63})  # a file where a folder is
    with pytest.raises(MetainfoError) as info_error:
        parse_metainfo(encode({b"info": info}))
    assert info_error.value.reason == "duplicate_path"
    assert str(info_error.value) == f"'n/{'/'.join(['d3'] * 63)}' is both a file and a directory"


def test_zero_length_beside_files_is_ignored() -> None:
    m = good("files_with_zero_length")
    assert m.info.multi_file
    assert [(f.path, f.length) for f in m.info.files] == [
        (("album", "a.txt"), 3000),
        (("album", "sub", "b.txt"), 2000),
    ]
    assert m.info.total_length == 5000


@pytest.mark.parametrize("strict", [True, False])
def test_parse_info_dict_refuses_trailing_bytes(strict: bool) -> None:
    with pytest.raises(MetainfoError) as info:
        parse_info_dict(good("single").raw_info + b"x", strict=strict)
    assert info.value.reason == "bad_bencode"
    assert isinstance(info.value.__cause__, BencodeError)
    assert info.value.__cause__.reason == "trailing_data"


def test_parse_info_dict_refuses_non_dict() -> None:
    with pytest.raises(MetainfoError) as info:
        parse_info_dict(b"li1ee")
    assert info.value.reason == "info_not_a_dict"


def test_info_dict_checks_its_invariants() -> None:
    entry = FileEntry(("x",), 100, 0, False, "")
    with pytest.raises(ValueError, match="hashes"):
        InfoDict("x", 64, b"\x00" * 20, (entry,), False, False, 100)
    with pytest.raises(ValueError, match="offsets"):
        InfoDict(
            "x", 64, b"\x00" * 40, (entry, FileEntry(("y",), 0, 5, False, "")), True, False, 100
        )
    with pytest.raises(ValueError, match="differs"):
        InfoDict("x", 64, b"\x00" * 40, (entry,), False, False, 101)


# --- properties -----------------------------------------------------------------------------

names = st.text(alphabet="abcXYZ019-_ \u00e9\u65e5", min_size=1, max_size=8)


@st.composite
def multi_file_torrents(draw: st.DrawFn) -> tuple[bytes, list[tuple[list[str], int]], int]:
    piece_length = draw(st.sampled_from([1024, 16384, 32768, 100_000]))
    paths = draw(st.lists(st.lists(names, min_size=1, max_size=3), min_size=1, max_size=8))
    unique: dict[tuple[str, ...], None] = {}
    for path in paths:
        key = tuple(path)
        if not any(key[: len(other)] == other or other[: len(key)] == key for other in unique):
            unique[key] = None
    files = [(list(path), draw(st.integers(min_value=0, max_value=200_000))) for path in unique]
    total = sum(length for _, length in files)
    if total == 0:
        files[0] = (files[0][0], 1)
        total = 1
    pieces = bytes(20 * -(-total // piece_length))
    info = {
        b"name": b"root",
        b"piece length": piece_length,
        b"pieces": pieces,
        b"files": [{b"length": n, b"path": p} for p, n in files],
    }
    return encode({b"announce": b"http://127.0.0.1/a", b"info": info}), files, piece_length


@given(multi_file_torrents())
def test_generated_torrents_parse_to_their_description(
    case: tuple[bytes, list[tuple[list[str], int]], int],
) -> None:
    data, files, piece_length = case
    m = parse_metainfo(data)
    assert [(list(f.path[1:]), f.length) for f in m.info.files] == files
    assert all(f.path[0] == "root" for f in m.info.files)
    assert m.info.total_length == sum(n for _, n in files)
    assert m.info.num_pieces == -(-m.info.total_length // piece_length)
    assert m.info_hash.raw == hashlib.sha1(info_bytes(data)).digest()
    assert parse_info_dict(m.raw_info) == m.info


GOOD_NAMES = sorted(p.stem for p in (VECTORS / "good").glob("*.torrent"))


@settings(max_examples=400)
@given(st.sampled_from(GOOD_NAMES), st.integers(min_value=0), st.binary(min_size=1, max_size=3))
def test_damaged_torrents_raise_only_metainfo_error(name: str, where: int, junk: bytes) -> None:
    data = bytearray(load("good", name))
    where %= len(data)
    data[where : where + len(junk)] = junk
    for candidate in (bytes(data), bytes(data[:where])):
        try:
            parse_metainfo(candidate)
        except MetainfoError as exc:
            assert exc.reason


@pytest.mark.parametrize(
    ("encoding", "raw", "expected"),
    [
        (b"GBK", "\u97f3\u4e50".encode("gbk"), "\u97f3\u4e50"),
        (b"no-such-codec", b"a\xffb", "a\ufffdb"),
        (b"rot13", b"a\xffb", "a\ufffdb"),  # not a text codec
        (b"hex", b"a\xffb", "a\ufffdb"),
        (b"unicode_escape", b"x\\ud800\xff", "x\\ud800\ufffd"),  # would give a lone surrogate
        (b"\xff", b"a\xffb", "a\ufffdb"),
        (b"utf-8", "caf\u00e9".encode(), "caf\u00e9"),
    ],
)
def test_declared_encoding_fallbacks(encoding: bytes, raw: bytes, expected: str) -> None:
    # The comment goes through the same decoding as names and paths, minus the path checks.
    info = {b"length": 5, b"name": b"x", b"piece length": 16384, b"pieces": bytes(20)}
    m = parse_metainfo(encode({b"comment": raw, b"encoding": encoding, b"info": info}))
    assert m.comment == expected
    m.comment.encode("utf-8")  # always valid text for the bus


json_like = st.recursive(
    st.integers(min_value=-5, max_value=2**52)
    | st.binary(max_size=6)
    | st.sampled_from([b"..", b"/", b"", b"p", b"a/b"]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from([b"length", b"path", b"files", b"name", b"attr", b"path.utf-8", b"x"]),
            children,
            max_size=3,
        )
    ),
    max_leaves=8,
)


def _replace_somewhere(value: object, path: list[int], new: object) -> object:
    """Replace the node that ``path`` leads to (choices taken modulo the width)."""
    if not path:
        return new
    step, rest = path[0], path[1:]
    if isinstance(value, dict) and value:
        key = sorted(value)[step % len(value)]
        return {**value, key: _replace_somewhere(value[key], rest, new)}
    if isinstance(value, list) and value:
        i = step % len(value)
        return [*value[:i], _replace_somewhere(value[i], rest, new), *value[i + 1 :]]
    return new


@settings(max_examples=400)
@given(
    st.sampled_from(["multi", "padding", "tiers", "url_list_list", "single"]),
    st.lists(st.integers(min_value=0, max_value=50), max_size=5),
    json_like,
)
def test_wrong_types_anywhere_raise_only_metainfo_error(
    name: str, path: list[int], new: object
) -> None:
    original = decode(load("good", name), strict=False)
    damaged = _replace_somewhere(original, path, new)
    try:
        m = parse_metainfo(encode(damaged))
    except MetainfoError as exc:
        assert exc.reason
    else:
        assert m.info.total_length == sum(f.length for f in m.info.files)


def test_an_encoding_name_with_a_nul_byte_is_ignored() -> None:
    # Found by hypothesis: codecs.lookup raises ValueError (not LookupError) on "ut\x00f8".
    pieces = hashlib.sha1(b"x").digest()
    info = {b"name": b"a", b"length": 1, b"piece length": 16384, b"pieces": pieces}
    metainfo = parse_metainfo(encode({b"info": info, b"encoding": b"ut\x00f8"}))
    assert metainfo.info.name == "a"


def _with_nodes(nodes: Value) -> bytes:
    data = load("good", "single")
    top = decode(data, strict=False)
    assert isinstance(top, dict)
    top[b"nodes"] = nodes
    return encode(top)


def test_dht_nodes_are_parsed_bounded_and_deduplicated() -> None:
    nodes: list[Value] = [
        [b"127.0.0.1", 6881],
        [b"dht.example.org", 25401],
        [b"127.0.0.1", 6881],  # a duplicate
        [b"::1", 7000],
        [b"bad host", 1],  # a space
        [b"h\xffx", 1],  # not ASCII
        [b"", 1],
        [b"h", 0],
        [b"h", 65536],
        [b"h", b"1"],
        [b"h"],
        b"h:1",
        [b"x" * 254, 1],
    ]
    m = parse_metainfo(_with_nodes(nodes))
    assert m.nodes == (("127.0.0.1", 6881), ("dht.example.org", 25401), ("::1", 7000))
    many: list[Value] = [[f"10.0.0.{i}".encode(), 6881] for i in range(MAX_NODES + 10)]
    assert len(parse_metainfo(_with_nodes(many)).nodes) == MAX_NODES
    assert parse_metainfo(_with_nodes(b"not a list")).nodes == ()
    assert good("single").nodes == ()
