"""Writes the generated .torrent vectors: good/*.torrent and broken/*.torrent.

Usage: python tests/vectors/torrents/make_broken.py [output_dir]

The bytes are built with a tiny encoder of its own that keeps dict insertion order, so a
vector can carry unsorted or duplicate keys, and so the vectors do not depend on the code they
test. Everything is deterministic: the test suite regenerates the files into a temporary
directory and checks they are identical to the committed ones. Files whose name starts with
``captured_`` were made by libtorrent or mktorrent and are not generated here.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Vectors are deliberately ill-typed (that is their point), so values are loosely typed here.
Raw = Any


class Pairs(list[tuple[bytes, Raw]]):
    """A dict written in exactly this order, repeats included."""


def benc(value: object) -> bytes:
    """Encode without sorting: dicts keep insertion order; ``Pairs`` may repeat keys."""
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, Pairs):
        return b"d" + b"".join(benc(k) + benc(v) for k, v in value) + b"e"
    if isinstance(value, dict):
        return b"d" + b"".join(benc(k) + benc(v) for k, v in value.items()) + b"e"
    if isinstance(value, list):
        return b"l" + b"".join(benc(item) for item in value) + b"e"
    raise TypeError(type(value).__name__)


def content(length: int) -> bytes:
    """Deterministic torrent data of ``length`` bytes."""
    pattern = bytes(range(251))
    return (pattern * (length // len(pattern) + 1))[:length]


def hashes(length: int, piece_length: int) -> bytes:
    data = content(length)
    return b"".join(
        hashlib.sha1(data[i : i + piece_length]).digest() for i in range(0, length, piece_length)
    )


def _key(name: str) -> bytes:
    """Keyword to bencode key: ``announce__list`` -> ``announce-list``, ``piece_length`` ->
    ``piece length``; dots pass through (``name.utf-8``)."""
    return name.replace("__", "-").replace("_", " ").encode()


PL = 32768  # piece length of the generated vectors
ANNOUNCE = b"http://127.0.0.1:6969/announce"


def single(length: Raw = 100_000, **extra: Raw) -> dict[bytes, Raw]:
    info: dict[bytes, Raw] = {
        b"length": length,
        b"name": b"file.bin",
        b"piece length": PL,
        b"pieces": hashes(length, PL),
    }
    info.update({_key(k): v for k, v in extra.items()})
    return dict(sorted(info.items()))


def multi(files: list[Raw], pieces: bytes | None = None, **extra: Raw) -> dict[bytes, Raw]:
    if pieces is None:
        lengths = [e.get(b"length") for e in files if isinstance(e, dict)]
        pieces = hashes(sum(n for n in lengths if isinstance(n, int)), PL)
    info: dict[bytes, Raw] = {
        b"files": files,
        b"name": b"album",
        b"piece length": PL,
        b"pieces": pieces,
    }
    info.update({_key(k): v for k, v in extra.items()})
    return dict(sorted(info.items()))


def f(length: int, *path: bytes | str, **extra: Raw) -> dict[bytes, Raw]:
    entry: dict[bytes, Raw] = {b"length": length, b"path": list(path)}
    entry.update({k.encode(): v for k, v in extra.items()})
    return dict(sorted(entry.items()))


def torrent(info: Raw, **outer: Raw) -> bytes:
    top: dict[bytes, Raw] = {b"announce": ANNOUNCE, b"info": info}
    top.update({_key(k): v for k, v in outer.items()})
    return benc(dict(sorted(top.items())))


def with_info(**changes: Raw) -> bytes:
    """The single-file torrent with info fields replaced; the value "_drop" removes one."""
    info = single()
    for key, value in changes.items():
        k = _key(key)
        if value == "_drop":
            info.pop(k, None)
        else:
            info[k] = value
    return torrent(dict(sorted(info.items())))


def with_path(*path: Raw) -> bytes:
    return torrent(multi([f(1000, b"ok.txt"), {b"length": 2000, b"path": list(path)}]))


GOOD: dict[str, Callable[[], bytes]] = {
    "single": lambda: torrent(single(), comment="a comment", created_by="vector maker"),
    "multi": lambda: torrent(
        multi([f(40_000, b"cd1", b"track1.flac"), f(0, b"empty.txt"), f(70_000, b"cover.jpg")]),
        creation_date=1_700_000_000,
    ),
    # BEP 47: pad so each file starts on a piece boundary; two pads share one path.
    "padding": lambda: torrent(
        multi(
            [
                f(10_000, b"a.bin"),
                f(PL - 10_000, b".pad", b"%d" % (PL - 10_000), attr=b"p"),
                f(20_000, b"b.bin", attr=b"x"),
                f(PL - 20_000, b".pad", b"%d" % (PL - 20_000), attr=b"p"),
                f(5_000, b"c.bin"),
            ]
        )
    ),
    "tiers": lambda: torrent(
        single(),
        announce__list=[
            [b"http://127.0.0.1:1/a", b"udp://127.0.0.1:2"],
            [b"http://127.0.0.1:1/a", b"", 7, b"http://127.0.0.1:3/c"],
            [],
            b"not a tier",
            [b"  http://127.0.0.1:4/d  "],
        ],
    ),
    "empty_announce_list": lambda: torrent(single(), announce__list=[[], [b""]]),
    "no_trackers": lambda: benc({b"info": single()}),
    "url_list_string": lambda: torrent(single(), url__list=b"http://127.0.0.1:8000/file.bin"),
    "url_list_list": lambda: torrent(
        single(),
        url__list=[b"http://127.0.0.1:8000/", b"http://127.0.0.1:8001/", b"", 3],
        httpseeds=[b"http://127.0.0.1:9000/seed"],
    ),
    "private": lambda: torrent(single(private=1)),
    "private_zero": lambda: torrent(single(private=0)),
    "one_file_multi": lambda: torrent(multi([f(5000, b"only.txt")])),
    # Info keys deliberately out of order: the info-hash is over these exact bytes.
    "unsorted_info": lambda: torrent(
        {
            b"piece length": PL,
            b"name": b"file.bin",
            b"pieces": hashes(50_000, PL),
            b"length": 50_000,
        }
    ),
    "unsorted_top": lambda: benc({b"info": single(), b"announce": ANNOUNCE}),
    "trailing_newline": lambda: torrent(single()) + b"\n",
    "utf8_name": lambda: torrent(
        multi([f(3000, "caf\u00e9.txt".encode())]) | {b"name": "m\u00fasica".encode()}
    ),
    "path_utf8_field": lambda: torrent(
        multi([f(3000, "caf\u00e9.txt".encode("latin-1"), **{"path.utf-8": ["caf\u00e9.txt"]})])
    ),
    "name_utf8_field": lambda: torrent(
        single(**{"name.utf-8": "\u65e5\u672c".encode()})
        | {b"name": "\u65e5\u672c".encode("shift_jis")}
    ),
    "legacy_encoding": lambda: torrent(
        multi([f(4000, "\u6587\u4ef6.txt".encode("gbk"))])
        | {b"name": "\u97f3\u4e50".encode("gbk")},
        encoding=b"GBK",
    ),
    "invalid_utf8_name": lambda: torrent(single() | {b"name": b"bad\xffname"}),
    "bitcomet_padding": lambda: torrent(
        multi(
            [
                f(10_000, b"a.bin"),
                f(PL - 10_000, b"_____padding_file_0_do_not_open____"),
                f(9_000, b"b.bin"),
            ]
        )
    ),
    # Old tools wrote ``length: 0`` beside ``files``; libtorrent ignores it, and so do we.
    "files_with_zero_length": lambda: torrent(
        multi([f(3000, b"a.txt"), f(2000, b"sub", b"b.txt")], length=0)
    ),
    "odd_piece_length": lambda: torrent(
        {
            b"length": 2_500_000,
            b"name": b"odd.bin",
            b"piece length": 1_000_000,
            b"pieces": hashes(2_500_000, 1_000_000),
        }
    ),
}

_SAMPLE = torrent(single())

BROKEN: dict[str, Callable[[], bytes]] = {
    # Not bencode, or over the limits.
    "truncated": lambda: _SAMPLE[: len(_SAMPLE) // 2],
    "garbage": lambda: b"this is not a torrent",
    "nesting_bomb": lambda: b"d4:info" + b"l" * 100_000 + b"e" * 100_000 + b"e",
    "huge_string_claim": lambda: b"d4:info4294967296:",
    "leading_zero_int": lambda: _SAMPLE.replace(
        b"12:piece lengthi32768e", b"12:piece lengthi032768e"
    ),
    "plus_sign_int": lambda: _SAMPLE.replace(b"12:piece lengthi32768e", b"12:piece lengthi+32768e"),
    "duplicate_info_key": lambda: torrent(
        Pairs([*single().items(), (b"private", 1), (b"private", 0)])
    ),
    "integer_key": lambda: b"d4:infodi1ei2eee",
    # Wrong shapes.
    "top_is_list": lambda: benc([ANNOUNCE]),
    "no_info": lambda: benc({b"announce": ANNOUNCE}),
    "info_is_list": lambda: torrent([1, 2]),
    "name_missing": lambda: with_info(name="_drop"),
    "name_wrong_type": lambda: with_info(name=42),
    "name_traversal": lambda: with_info(name=b".."),
    "name_with_slash": lambda: with_info(name=b"dir/file.bin"),
    "name_empty": lambda: with_info(name=b""),
    "name_absolute": lambda: with_info(name=b"/etc"),
    "piece_length_missing": lambda: with_info(piece_length="_drop"),
    "piece_length_wrong_type": lambda: with_info(piece_length=b"32768"),
    "piece_length_zero": lambda: with_info(piece_length=0),
    "piece_length_negative": lambda: with_info(piece_length=-32768),
    "piece_length_huge": lambda: with_info(piece_length=2**40),
    "pieces_missing": lambda: with_info(pieces="_drop"),
    "pieces_wrong_type": lambda: with_info(pieces=[b"x" * 20]),
    "pieces_not_multiple_of_20": lambda: with_info(pieces=b"x" * 70),
    "too_few_pieces": lambda: with_info(pieces=b"x" * 40),
    "too_many_piece_hashes": lambda: with_info(pieces=b"x" * 100),
    "both_length_and_files": lambda: with_info(files=[f(1, b"a")]),
    "no_length_or_files": lambda: with_info(length="_drop"),
    "length_wrong_type": lambda: with_info(length=b"100000"),
    "negative_length": lambda: with_info(length=-1),
    "negative_file_length": lambda: torrent(multi([f(1000, b"a"), f(-1000, b"b")])),
    "file_length_missing": lambda: torrent(multi([f(1000, b"a"), {b"path": [b"b"]}])),
    "files_wrong_type": lambda: with_info(length="_drop", files={b"a": 1}),
    "file_entry_wrong_type": lambda: torrent(multi([f(1000, b"a"), 5])),
    "no_files": lambda: torrent(multi([])),
    "private_wrong_type": lambda: with_info(private=b"1"),
    "attr_wrong_type": lambda: torrent(multi([f(1000, b"a", attr=1)])),
    "v2_only": lambda: with_info(
        pieces="_drop", length="_drop", meta_version=2, file_tree={b"a": {b"": {b"length": 1}}}
    ),
    "absurd_size": lambda: with_info(length=2**51),
    "absurd_size_files": lambda: torrent(
        multi([f(2**49, b"a"), f(2**49, b"b"), f(2**49, b"c")], pieces=b"x" * 20)
    ),
    "empty_torrent": lambda: with_info(length=0, pieces=b""),
    "empty_multi_torrent": lambda: torrent(multi([f(0, b"a"), f(0, b"b")])),
    # Hostile paths.
    "path_missing": lambda: torrent(multi([f(1000, b"a"), {b"length": 5}])),
    "path_wrong_type": lambda: with_path_raw(b"a/b"),
    "path_component_wrong_type": lambda: with_path(b"dir", 7),
    "path_empty_list": with_path,
    "path_traversal": lambda: with_path(b"..", b"..", b"etc", b"passwd"),
    "path_traversal_middle": lambda: with_path(b"a", b"..", b"..", b"b"),
    "path_traversal_in_component": lambda: with_path(b"a/../../b"),
    "path_absolute": lambda: with_path(b"/etc", b"passwd"),
    "path_absolute_backslash": lambda: with_path(b"\\windows", b"system32"),
    "path_drive_letter": lambda: with_path(b"C:", b"evil.exe"),
    "path_unc": lambda: with_path(b"\\\\server\\share"),
    "path_empty_component": lambda: with_path(b"a", b"", b"b"),
    "path_dot": lambda: with_path(b".", b"b"),
    "path_slash_in_component": lambda: with_path(b"a/b"),
    "path_backslash_in_component": lambda: with_path(b"a\\b"),
    "path_nul": lambda: with_path(b"a\x00b"),
    "duplicate_path": lambda: torrent(multi([f(1000, b"a", b"b"), f(2000, b"a", b"b")])),
    "file_is_directory": lambda: torrent(multi([f(1000, b"a"), f(2000, b"a", b"b")])),
    "directory_is_file": lambda: torrent(multi([f(1000, b"a", b"b", b"c"), f(2000, b"a", b"b")])),
    "utf8_field_traversal": lambda: torrent(multi([f(1000, b"ok", **{"path.utf-8": [b".."]})])),
    # Over the limits: a 2,000-deep path (in ``path`` or ``path.utf-8``), a name or a path
    # component of 256 bytes (in ASCII, or as 128 two-byte UTF-8 characters).
    "path_too_deep": lambda: with_path(*[b"d"] * 1999, b"f.bin"),
    "path_utf8_too_deep": lambda: torrent(
        multi([f(1000, b"ok", **{"path.utf-8": [b"d"] * 1999 + [b"f.bin"]})])
    ),
    "path_component_too_long": lambda: with_path(b"x" * 256),
    "path_component_too_long_utf8": lambda: with_path("\u00e9".encode() * 128),
    "name_too_long": lambda: with_info(name=b"n" * 252 + b".bin"),
    "nonzero_length_and_files": lambda: torrent(multi([f(3000, b"a.txt")], length=3000)),
}


def with_path_raw(path: Raw) -> bytes:
    return torrent(multi([f(1000, b"ok.txt"), {b"length": 2000, b"path": path}]))


def generate(out_dir: Path) -> list[Path]:
    """Write every generated vector under ``out_dir``; returns the paths written."""
    written: list[Path] = []
    for kind, table in (("good", GOOD), ("broken", BROKEN)):
        (out_dir / kind).mkdir(parents=True, exist_ok=True)
        for name, make in table.items():
            path = out_dir / kind / f"{name}.torrent"
            path.write_bytes(make())
            written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
    for written_path in generate(target):
        print(written_path)
