"""A torrent's detail for ``status ID`` and the terminal UI: its files with the bytes of each
in verified pieces, and its piece map.

Strategy: the verified pieces are one string of ``0``/``1`` per piece (built from the
picker's bit set in one step), so a file's completed bytes are its two edge pieces' overlap
plus a count of the whole pieces between them (``str.count``, in C): exact for a piece that
spans several files, and quick for a torrent of many pieces. The piece map starts from the same
string (``HAVE`` or ``MISSING``), makes a verified piece whose origin is known
``FIRST_ORIGIN + i`` (``piece_origins.py``; byte-wise masks over whole ints, not a loop per
piece), then marks the few pieces being fetched (``DOWNLOADING``) or waiting for their check
(``CHECKING``).

Rules: pure; a magnet link's torrent without its info dictionary has no files and no cells; a
stopped torrent (no picker) shows the pieces it had when it stopped; padding files (BEP 47)
are left out; at most ``MAX_FILE_ROWS`` files are listed (``file_count`` tells them all).
"""

from __future__ import annotations

from torviz.shared.bitfield import Bitfield
from torviz.shared.bus import (
    MAX_FILE_ROWS,
    FileStatus,
    PieceCell,
    PieceMap,
    PieceOrigin,
    TorrentDetail,
)
from torviz.shared.geometry import TorrentGeometry
from torviz.shared.metainfo import FileEntry

from .torrent import Torrent

__all__ = ["file_completed", "have_string", "overlay_origins", "torrent_detail"]

FILE_PATHS_BUDGET = 2 * 1024 * 1024
"""Bytes of file paths one detail lists at most (a torrent of very many long paths lists the
first ones; ``file_count`` still counts them all): a reply must stay under the bus's header
limit (``MAX_HEADER_BYTES``)."""

_CELL_OF_BIT = bytes.maketrans(b"01", bytes((PieceCell.MISSING, PieceCell.HAVE)))
_ORIGIN_CELL = bytes(
    min(255, PieceCell.FIRST_ORIGIN + mark - 1) if mark else 0 for mark in range(256)
)
"""An origins byte (0 unknown, else 1 + index) to its cell (0 where unknown)."""
_UNKNOWN_MASK = bytes([0xFF] + [0] * 255)
"""0xFF where the origin is unknown, else 0."""
_HAVE_MASK = bytes.maketrans(bytes((PieceCell.MISSING, PieceCell.HAVE)), bytes((0x00, 0xFF)))


def have_string(have: Bitfield) -> str:
    """One character per piece: ``1`` verified, ``0`` not."""
    size = have.size
    if not size:
        return ""
    return format(have.to_int(), f"0{size}b")[::-1]


def file_completed(geometry: TorrentGeometry, have: str, index: int) -> int:
    """Bytes of file ``index`` inside verified pieces (``have``: see ``have_string``).

    A piece spanning several files counts toward each only the bytes it holds of it.
    """
    length = geometry.file_lengths[index]
    if not length:
        return 0
    start = geometry.file_offsets[index]
    end = start + length
    piece_length = geometry.piece_length
    first, last = start // piece_length, (end - 1) // piece_length
    if first == last:
        return length if have[first] == "1" else 0
    total = have.count("1", first + 1, last) * piece_length
    if have[first] == "1":
        total += (first + 1) * piece_length - start
    if have[last] == "1":
        total += end - last * piece_length
    return total


def _path(entry: FileEntry, multi_file: bool) -> str:
    """Relative to the torrent's folder (a single-file torrent: its name)."""
    parts = entry.path[1:] if multi_file and len(entry.path) > 1 else entry.path
    return "/".join(parts)


def _have(torrent: Torrent) -> Bitfield:
    picker = torrent.swarm.picker
    if picker is not None:
        return picker.have
    if torrent.have_kept is not None and torrent.have_kept.size == torrent.num_pieces:
        return torrent.have_kept
    return Bitfield(torrent.num_pieces)


def torrent_detail(torrent: Torrent) -> TorrentDetail:
    """The files and piece map of ``torrent`` (see the module comment)."""
    metainfo = torrent.metainfo
    if metainfo is None:
        return TorrentDetail((), 0, PieceMap(b"", ()))
    info = metainfo.info
    geometry = info.geometry
    have = have_string(_have(torrent))
    shown = [(i, entry) for i, entry in enumerate(info.files) if not entry.padding]
    files: list[FileStatus] = []
    budget = FILE_PATHS_BUDGET
    for index, entry in shown[:MAX_FILE_ROWS]:
        path = _path(entry, info.multi_file)
        budget -= len(path.encode()) + 32
        if budget < 0:
            break
        files.append(FileStatus(path, entry.length, file_completed(geometry, have, index)))
    return TorrentDetail(tuple(files), len(shown), _piece_map(torrent, have))


def detail_size(detail: TorrentDetail) -> int:
    """About how many bytes ``detail`` takes in a reply (its cells and paths)."""
    return len(detail.pieces.cells) + sum(len(entry.path.encode()) + 32 for entry in detail.files)


def overlay_origins(cells: bytes, marks: bytes) -> bytes:
    """``cells`` (``HAVE``/``MISSING``) with each verified piece of known origin made
    ``FIRST_ORIGIN + i``: byte-wise AND and OR over whole ints, so a torrent of a million
    pieces takes milliseconds rather than a loop per piece."""
    size = len(cells)

    def number(data: bytes) -> int:
        return int.from_bytes(data, "big")

    have = number(cells.translate(_HAVE_MASK))
    origin = number(marks.translate(_ORIGIN_CELL)) & have
    unknown = number(marks.translate(_UNKNOWN_MASK)) & number(cells)
    return (origin | unknown).to_bytes(size, "big")


def _piece_map(torrent: Torrent, have: str) -> PieceMap:
    cells = bytearray(have.encode("ascii").translate(_CELL_OF_BIT))
    origins = torrent.origins
    known: tuple[PieceOrigin, ...] = ()
    if origins is not None and len(origins) == len(cells):
        cells = bytearray(overlay_origins(bytes(cells), origins.cells))
        known = origins.origins
    picker = torrent.swarm.picker
    if picker is not None:
        for piece in picker.downloading:
            if cells[piece] == PieceCell.MISSING:
                cells[piece] = PieceCell.DOWNLOADING
        for piece in picker.checking:
            if cells[piece] == PieceCell.MISSING or cells[piece] == PieceCell.DOWNLOADING:
                cells[piece] = PieceCell.CHECKING
    return PieceMap(bytes(cells), known)
