"""A torrent's detail: each file's bytes in verified pieces (exact where a piece spans files),
and the piece map (missing, being fetched, waiting for its check, verified, and verified
through which peer agent), driven through a coordinator with fake agents; each peer's agent
and host; the origins' bounds."""

from __future__ import annotations

import hashlib
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from torviz.services.coordinator.core import control_requests
from torviz.services.coordinator.core import torrent_detail as torrent_detail_module
from torviz.services.coordinator.core.piece_origins import PieceOrigins
from torviz.services.coordinator.core.torrent_detail import (
    detail_size,
    file_completed,
    have_string,
    overlay_origins,
    torrent_detail,
)
from torviz.shared.bencode import encode
from torviz.shared.bitfield import Bitfield
from torviz.shared.bus import (
    MAX_PIECE_ORIGINS,
    AddTorrent,
    AssignPieces,
    FileStatus,
    GetStatus,
    PieceCell,
    PieceDownloaded,
    PieceOrigin,
    PieceRejected,
    PieceVerified,
    TorrentAdded,
    TorrentOpened,
)
from torviz.shared.metainfo import parse_metainfo

from .test_core import NUM_PIECES, PA1, PA2, STORAGE, connect, full_core, opened, sent

PIECE = 16384
# Three pieces over a (10000), sub/b (30000), an empty file and d (8768): piece 0 holds all of
# a and the start of b, piece 1 only b, piece 2 the end of b and all of d.
FILES = [(b"a", 10000), (b"sub/b", 30000), (b"empty", 0), (b"d", 8768)]


def multi_file() -> bytes:
    files = [{b"length": n, b"path": path.split(b"/")} for path, n in FILES]
    info = {b"name": b"set", b"piece length": PIECE, b"pieces": bytes(60), b"files": files}
    return encode({b"info": info})


def test_a_file_counts_only_its_own_bytes_of_each_verified_piece() -> None:
    geometry = parse_metainfo(multi_file()).info.geometry
    assert geometry.num_pieces == 3

    def completed(have: set[int]) -> list[int]:
        bits = have_string(Bitfield(3, have))
        return [file_completed(geometry, bits, i) for i in range(len(FILES))]

    assert completed(set()) == [0, 0, 0, 0]
    assert completed({0}) == [10000, PIECE - 10000, 0, 0]
    assert completed({1}) == [0, PIECE, 0, 0]
    assert completed({2}) == [0, 30000 - (2 * PIECE - 10000), 0, 8768]
    assert completed({0, 1, 2}) == [10000, 30000, 0, 8768]


def test_the_detail_lists_files_relative_to_the_torrent_folder() -> None:
    core = full_core()
    metainfo = multi_file()
    reply = core.add_torrent(AddTorrent(metainfo, ""), now=0.0)
    assert isinstance(reply, TorrentAdded)
    core.handle(STORAGE, TorrentOpened(reply.info_hash, Bitfield(3, [0]).to_bytes()), 0.0)
    detail = torrent_detail(core.torrents[reply.info_hash])
    assert detail.file_count == 4
    assert detail.files == (
        FileStatus("a", 10000, 10000),
        FileStatus("sub/b", 30000, PIECE - 10000),
        FileStatus("empty", 0, 0),
        FileStatus("d", 8768, 0),
    )
    assert detail.pieces.cells == bytes([PieceCell.HAVE, PieceCell.MISSING, PieceCell.MISSING])


def test_the_piece_map_tells_each_state_and_who_delivered() -> None:
    core = full_core()
    info_hash = opened(core)
    connect(core, info_hash, PA1, "pa1/1", 9, Bitfield(NUM_PIECES, range(NUM_PIECES)))
    [(_, assigned)] = sent(core, AssignPieces)
    fetched, fetching = assigned.pieces
    checking, rejected = [p for p in range(NUM_PIECES) if p not in assigned.pieces][:2]

    for piece in (fetched, checking, rejected):
        core.handle(PA1, PieceDownloaded(info_hash, piece, "pa1/1"), 1.0)
    core.handle(STORAGE, PieceVerified(info_hash, fetched), 1.0)
    core.handle(STORAGE, PieceRejected(info_hash, rejected, ("pa1/1",)), 1.0)
    core.handle(STORAGE, PieceVerified(info_hash, rejected), 1.0)  # later, from the disk

    report = core.status(2.0, GetStatus(info_hash.hex, detail=True))
    [status] = report.torrents
    assert status.detail is not None
    pieces = status.detail.pieces
    assert pieces.origins == (PieceOrigin("pa1", "host"),)
    assert pieces.cells[fetched] == PieceCell.FIRST_ORIGIN
    assert pieces.cells[fetching] == PieceCell.DOWNLOADING
    assert pieces.cells[checking] == PieceCell.CHECKING
    assert pieces.cells[rejected] == PieceCell.HAVE  # its origin went with the bad copy
    assert len(pieces.cells) == NUM_PIECES
    [peer] = status.peer_list
    assert (peer.agent, peer.host) == ("pa1", "host")
    assert core.status(2.0, GetStatus(info_hash.hex)).torrents[0].detail is None

    core.pause(info_hash, 3.0)  # stopped: the pieces it had, and where from, still show
    paused = torrent_detail(core.torrents[info_hash]).pieces
    assert paused.cells[fetched] == PieceCell.FIRST_ORIGIN
    assert paused.cells[rejected] == PieceCell.HAVE
    assert paused.cells.count(PieceCell.MISSING) == NUM_PIECES - 2


def test_a_piece_verified_before_its_delivery_is_told_still_gets_its_origin() -> None:
    """The storage agent's ``PieceVerified`` and the peer agent's ``PieceDownloaded`` travel on
    different sockets: either may come first. A duplicate delivered later (end game) does not
    take the credit from the first."""
    core = full_core()
    info_hash = opened(core)
    connect(core, info_hash, PA1, "pa1/1", 9, Bitfield(NUM_PIECES, range(NUM_PIECES)))
    connect(core, info_hash, PA2, "pa2/1", 10, Bitfield(NUM_PIECES, range(NUM_PIECES)))
    core.handle(STORAGE, PieceVerified(info_hash, 0), 1.0)
    core.handle(PA2, PieceDownloaded(info_hash, 0, "pa2/1"), 1.0)
    core.handle(PA1, PieceDownloaded(info_hash, 0, "pa1/1"), 1.1)
    pieces = torrent_detail(core.torrents[info_hash]).pieces
    assert pieces.origins == (PieceOrigin("pa2", "host"),)
    assert pieces.cells[0] == PieceCell.FIRST_ORIGIN


def test_a_magnet_without_its_metadata_has_no_files_and_no_cells() -> None:
    core = full_core()
    link = f"magnet:?xt=urn:btih:{hashlib.sha1(b'x').hexdigest()}&dn=Example"
    reply = core.add_torrent(AddTorrent(b"", "", link), now=0.0)
    assert isinstance(reply, TorrentAdded)
    detail = torrent_detail(core.torrents[reply.info_hash])
    assert (detail.files, detail.file_count, detail.pieces.cells) == ((), 0, b"")


def test_origins_are_bounded_and_forgotten_on_rejection() -> None:
    origins = PieceOrigins(MAX_PIECE_ORIGINS + 2)
    for piece in range(MAX_PIECE_ORIGINS + 1):
        origins.record(piece, f"pa{piece}", "host")
    assert len(origins.origins) == MAX_PIECE_ORIGINS
    assert origins.origin_of(MAX_PIECE_ORIGINS - 1) == MAX_PIECE_ORIGINS - 1
    assert origins.origin_of(MAX_PIECE_ORIGINS) is None  # one origin too many: unknown
    origins.record(MAX_PIECE_ORIGINS + 1, "pa0", "host")  # a known one still counts
    assert origins.origin_of(MAX_PIECE_ORIGINS + 1) == 0
    origins.forget(0)
    origins.record(10**6, "pa0", "host")  # out of range: ignored
    assert origins.origin_of(0) is None and origins.cells[0] == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, MAX_PIECE_ORIGINS)), max_size=300))
def test_the_origins_overlay_matches_a_piece_by_piece_reference(
    pieces: list[tuple[bool, int]],
) -> None:
    cells = bytes(PieceCell.HAVE if have else PieceCell.MISSING for have, _ in pieces)
    marks = bytes(mark for _, mark in pieces)
    expected = bytes(
        PieceCell.FIRST_ORIGIN + mark - 1 if have and mark else cell
        for (have, mark), cell in zip(pieces, cells, strict=True)
    )
    assert overlay_origins(cells, marks) == expected


def test_details_share_a_byte_budget_so_the_reply_fits_the_bus(monkeypatch: Any) -> None:
    core = full_core()
    added = []
    for name in (b"one", b"two", b"three"):
        info = {b"name": name, b"piece length": PIECE, b"pieces": bytes(60), b"length": 40000}
        reply = core.add_torrent(AddTorrent(encode({b"info": info}), ""), now=0.0)
        assert isinstance(reply, TorrentAdded)
        added.append(reply.info_hash)
    one = detail_size(torrent_detail(core.torrents[added[0]]))
    monkeypatch.setattr(control_requests, "DETAIL_BUDGET", 2 * one)
    report = core.status(0.0, GetStatus("", detail=True))
    assert [status.detail is not None for status in report.torrents] == [True, True, False]
    alone = core.status(0.0, GetStatus(added[2].hex, detail=True))
    assert alone.torrents[0].detail is not None


def test_a_torrent_of_many_long_paths_lists_the_first_that_fit(monkeypatch: Any) -> None:
    core = full_core()
    reply = core.add_torrent(AddTorrent(multi_file(), ""), now=0.0)
    assert isinstance(reply, TorrentAdded)
    monkeypatch.setattr(torrent_detail_module, "FILE_PATHS_BUDGET", 2 * 32 + len("a") + 5)
    detail = torrent_detail(core.torrents[reply.info_hash])
    assert [entry.path for entry in detail.files] == ["a", "sub/b"]
    assert detail.file_count == 4
