"""Metainfo against reference tools: torrents made by mktorrent and libtorrent, parsed by
torviz, must give libtorrent's info-hash, files, lengths, offsets and piece count."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from torviz.shared.bencode import encode
from torviz.shared.metainfo import Metainfo, parse_metainfo

lt: Any = pytest.importorskip("libtorrent")

pytestmark = pytest.mark.interop

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "torrents"
MKTORRENT = shutil.which("mktorrent")
ANNOUNCE = "http://127.0.0.1:6969/announce"

# Where libtorrent ignores the ``encoding`` field or replaces bytes differently, the names differ
# by design; the info-hash and the layout must still agree.
NAMES_DIFFER = {"legacy_encoding", "invalid_utf8_name"}


def write(path: Path, size: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    block = hashlib.sha256(b"%d" % seed).digest()
    path.write_bytes((block * (size // len(block) + 1))[:size])


def make_tree(root: Path) -> Path:
    """A directory with nested subdirectories, odd sizes and an empty file."""
    top = root / "content"
    write(top / "a.bin", 100_000, 1)
    write(top / "sub" / "b.bin", 50_000, 2)
    write(top / "sub" / "deeper" / "c.txt", 1_234, 3)
    write(top / "z.dat", 70_001, 4)
    (top / "sub" / "empty").write_bytes(b"")
    return top


def lt_info(data: bytes) -> Any:
    if hasattr(lt, "load_torrent_buffer"):
        return lt.load_torrent_buffer(data).ti
    return lt.torrent_info(lt.bdecode(data))


def lt_v1_hash(ti: Any) -> str:
    if hasattr(ti, "info_hashes"):
        return str(ti.info_hashes().v1)
    return str(ti.info_hash())


def lt_files(ti: Any) -> list[tuple[tuple[str, ...], int, int, bool]]:
    fs = ti.layout() if hasattr(ti, "layout") else ti.files()
    return [
        (
            tuple(fs.file_path(i).split(os.sep)),
            fs.file_size(i),
            fs.file_offset(i),
            bool(fs.file_flags(i) & fs.flag_pad_file),
        )
        for i in range(fs.num_files())
    ]


def assert_same_as_libtorrent(ours: Metainfo, ti: Any, *, compare_names: bool = True) -> None:
    assert ours.info_hash.hex == lt_v1_hash(ti)
    assert ours.info.num_pieces == ti.num_pieces()
    assert ours.info.piece_length == ti.piece_length()
    assert ours.info.total_length == ti.total_size()
    assert ours.info.private == ti.priv()
    theirs = lt_files(ti)
    mine = [(f.path, f.length, f.offset, f.padding) for f in ours.info.files]
    if compare_names:
        assert mine == theirs
    else:
        assert [m[1:] for m in mine] == [t[1:] for t in theirs]
    for index in range(ours.info.num_pieces):
        assert ours.info.piece_hash(index) == bytes(ti.hash_for_piece(index))
        assert ours.info.geometry.piece_size(index) == ti.piece_size(index)


def make_with_libtorrent(source: Path, piece_length: int, flags: int) -> bytes:
    if hasattr(lt, "list_files"):
        ct = lt.create_torrent(lt.list_files(str(source)), piece_length, flags=flags)
    else:  # libtorrent 2.0
        fs = lt.file_storage()
        lt.add_files(fs, str(source))
        ct = lt.create_torrent(fs, piece_length, flags=flags)
    ct.add_tracker(ANNOUNCE)
    lt.set_piece_hashes(ct, str(source.parent))
    return bytes(lt.bencode(ct.generate()))


@pytest.mark.parametrize("piece_length", [16384, 32768, 262144])
@pytest.mark.parametrize("hybrid", [False, True], ids=["v1", "hybrid"])
@pytest.mark.parametrize("multi", [False, True], ids=["single", "multi"])
def test_libtorrent_torrents(tmp_path: Path, piece_length: int, hybrid: bool, multi: bool) -> None:
    source = make_tree(tmp_path)
    if not multi:
        source = source / "z.dat"
    flags = 0 if hybrid else lt.create_torrent.v1_only
    data = make_with_libtorrent(source, piece_length, flags)
    path = tmp_path / "made.torrent"
    path.write_bytes(data)
    ours = parse_metainfo(path.read_bytes())
    assert_same_as_libtorrent(ours, lt.torrent_info(str(path)))
    assert ours.info.multi_file is multi
    assert ours.trackers == ((ANNOUNCE,),)
    if hybrid and multi:
        assert any(f.padding for f in ours.info.files)


@pytest.mark.skipif(MKTORRENT is None, reason="mktorrent is not installed")
@pytest.mark.parametrize("exponent", [15, 16, 18])
@pytest.mark.parametrize("multi", [False, True], ids=["single", "multi"])
def test_mktorrent_torrents(tmp_path: Path, exponent: int, multi: bool) -> None:
    source = make_tree(tmp_path)
    if not multi:
        source = source / "a.bin"
    out = tmp_path / "made.torrent"
    assert MKTORRENT is not None
    subprocess.run(
        [
            MKTORRENT,
            "-a",
            ANNOUNCE,
            "-a",
            "udp://127.0.0.1:6970,udp://127.0.0.1:6971",
            "-w",
            "http://127.0.0.1:8000/",
            "-l",
            str(exponent),
            "-t",
            "1",
            "-o",
            str(out),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    ours = parse_metainfo(out.read_bytes())
    assert_same_as_libtorrent(ours, lt.torrent_info(str(out)))
    assert ours.info.piece_length == 2**exponent
    assert ours.trackers == ((ANNOUNCE,), ("udp://127.0.0.1:6970", "udp://127.0.0.1:6971"))
    assert ours.web_seeds == ("http://127.0.0.1:8000/",)
    atp = lt.load_torrent_buffer(out.read_bytes()) if hasattr(lt, "load_torrent_buffer") else None
    if atp is not None:
        assert list(ours.web_seeds) == list(atp.url_seeds)
        assert [url for tier in ours.trackers for url in tier] == list(atp.trackers)


def test_unsorted_info_keys(tmp_path: Path) -> None:
    data = make_with_libtorrent(make_tree(tmp_path) / "a.bin", 16384, lt.create_torrent.v1_only)
    canonical = parse_metainfo(data)
    info = canonical.raw_info
    # Rebuild the info dict by hand with its keys in reverse order.
    parts = {
        b"length": encode(canonical.info.total_length),
        b"name": encode(canonical.info.name),
        b"piece length": encode(canonical.info.piece_length),
        b"pieces": encode(canonical.info.piece_hashes),
    }
    raw = b"d" + b"".join(encode(k) + v for k, v in sorted(parts.items(), reverse=True)) + b"e"
    assert raw != info and len(raw) == len(info)
    unsorted = b"d8:announce" + encode(ANNOUNCE) + b"4:info" + raw + b"e"
    ours = parse_metainfo(unsorted)
    assert ours.raw_info == raw
    assert ours.info_hash.raw == hashlib.sha1(raw).digest()
    assert ours.info_hash != canonical.info_hash
    assert ours.info == canonical.info
    path = tmp_path / "unsorted.torrent"
    path.write_bytes(unsorted)
    # libtorrent loads it too and hashes the same raw bytes.
    assert ours.info_hash.hex == lt_v1_hash(lt.torrent_info(str(path)))


@pytest.mark.parametrize(
    "name", sorted(p.stem for p in (VECTORS / "good").glob("*.torrent")), ids=str
)
def test_good_vectors_agree_with_libtorrent(name: str) -> None:
    data = (VECTORS / "good" / f"{name}.torrent").read_bytes()
    assert_same_as_libtorrent(
        parse_metainfo(data), lt_info(data), compare_names=name not in NAMES_DIFFER
    )
