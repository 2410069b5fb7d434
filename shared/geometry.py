"""Piece, block and file arithmetic of one torrent: the only place torviz computes an offset.

Strategy: a torrent's files are laid end to end into one byte stream, cut into pieces of
``piece_length`` bytes (the last one may be shorter), and pieces into blocks of ``block_size``
bytes (the last block of a piece may be shorter). ``TorrentGeometry`` is built once per
torrent, checks its invariants in ``__post_init__``, precomputes file start offsets, and
answers every question about pieces, blocks and file spans from them; file lookups bisect, so
a torrent with 100k files costs O(log n) per span.

Rules:
- Piece length need not be a power of two nor a multiple of 16 KiB (real torrents exist with
  odd sizes); it only has to be positive. A total length of 0 is refused: such a torrent has no
  pieces and nothing to download.
- Zero-length files occupy no bytes: they never appear in a span and their piece range is empty.
- Padding files (BEP 47) are ordinary files here; skipping their bytes is storage's business.
- Bad arguments raise ``ValueError`` (construction) or ``IndexError`` (an index or range
  outside the torrent); ``is_valid_request`` is the non-raising check for remote input.
- A piece number from outside (a peer's HAVE, a bus message) becomes a ``PieceIndex`` once, at
  the edge where it enters a service: ``piece_index`` checks it (``PieceIndexError`` names the
  piece and the count), ``has_piece`` is the same test without raising. Code past that edge
  takes the index as valid. Nothing else compares a piece with ``num_pieces``.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from itertools import accumulate
from typing import TypeGuard

from torviz.shared.types import BlockRef, PieceIndex

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "FileSpan",
    "PieceIndexError",
    "TorrentGeometry",
]

DEFAULT_BLOCK_SIZE = 16 * 1024
"""The request size every client uses (BEP 3); larger requests are commonly refused."""


class PieceIndexError(IndexError):
    """A piece number outside the torrent (``TorrentGeometry.piece_index``).

    Args:
        piece: the number given.
        num_pieces: the pieces the torrent has.
    """

    def __init__(self, piece: int, num_pieces: int) -> None:
        super().__init__(
            f"piece {piece} does not exist (the torrent has {num_pieces} pieces, "
            f"0..{num_pieces - 1})"
        )
        self.piece = piece
        self.num_pieces = num_pieces


@dataclass(frozen=True, slots=True)
class FileSpan:
    """Part of a byte range that falls inside one file.

    Attributes:
        file_index: index of the file in the torrent's file list.
        file_offset: where the part starts inside that file.
        length: bytes in the part (always > 0).
        buffer_offset: where the part starts inside the caller's buffer for the whole range.
    """

    file_index: int
    file_offset: int
    length: int
    buffer_offset: int


@dataclass(frozen=True, slots=True)
class TorrentGeometry:
    """The layout of a torrent's bytes into pieces, blocks and files.

    Attributes:
        piece_length: bytes per piece (> 0); the last piece may be shorter.
        total_length: bytes in the torrent (> 0), equal to the sum of ``file_lengths``.
        file_lengths: length of each file, in torrent order (each >= 0, at least one file).
        block_size: bytes per request (> 0); the last block of a piece may be shorter.
    """

    piece_length: int
    total_length: int
    file_lengths: tuple[int, ...]
    block_size: int = DEFAULT_BLOCK_SIZE
    # Derived in __post_init__: start offset of each file, and for the non-empty files only,
    # their start offsets and indices (what bisect searches).
    _file_offsets: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _nonempty_starts: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _nonempty_index: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.piece_length <= 0:
            raise ValueError(f"piece length must be positive, not {self.piece_length}")
        if self.block_size <= 0:
            raise ValueError(f"block size must be positive, not {self.block_size}")
        if not self.file_lengths:
            raise ValueError("a torrent has at least one file")
        if any(length < 0 for length in self.file_lengths):
            raise ValueError("file lengths cannot be negative")
        if self.total_length <= 0:
            raise ValueError("a torrent with no bytes has nothing to download")
        total = sum(self.file_lengths)
        if total != self.total_length:
            raise ValueError(
                f"total length {self.total_length} differs from the sum of file lengths {total}"
            )
        offsets = (0, *accumulate(self.file_lengths))[:-1]
        nonempty = [i for i, length in enumerate(self.file_lengths) if length > 0]
        object.__setattr__(self, "_file_offsets", offsets)
        object.__setattr__(self, "_nonempty_starts", tuple(offsets[i] for i in nonempty))
        object.__setattr__(self, "_nonempty_index", tuple(nonempty))

    @property
    def num_pieces(self) -> int:
        """Number of pieces: ``ceil(total_length / piece_length)``."""
        return -(-self.total_length // self.piece_length)

    @property
    def last_piece_size(self) -> int:
        """Bytes in the last piece (equal to ``piece_length`` when it divides the total)."""
        return self.total_length - (self.num_pieces - 1) * self.piece_length

    @property
    def file_offsets(self) -> tuple[int, ...]:
        """Start offset of each file inside the torrent's byte stream."""
        return self._file_offsets

    def has_piece(self, piece: int) -> TypeGuard[PieceIndex]:
        """Whether ``piece`` is a piece of the torrent (``0 <= piece < num_pieces``)."""
        return 0 <= piece < self.num_pieces

    def piece_index(self, piece: int) -> PieceIndex:
        """``piece`` as a checked index of this torrent: the one way to make a ``PieceIndex``.

        Raises:
            PieceIndexError: ``piece`` is negative or not below ``num_pieces``.
        """
        if self.has_piece(piece):
            return piece
        raise PieceIndexError(piece, self.num_pieces)

    def _check_piece(self, piece: int) -> None:
        if not 0 <= piece < self.num_pieces:  # piece_index, without a call on hot paths
            raise PieceIndexError(piece, self.num_pieces)

    def piece_size(self, piece: int) -> int:
        """Bytes in ``piece``. Raises IndexError for a piece outside the torrent."""
        self._check_piece(piece)
        if piece == self.num_pieces - 1:
            return self.last_piece_size
        return self.piece_length

    def piece_offset(self, piece: int) -> int:
        """Offset of ``piece``'s first byte in the torrent. Raises IndexError if out of range."""
        self._check_piece(piece)
        return piece * self.piece_length

    def num_blocks(self, piece: int) -> int:
        """Number of blocks in ``piece``. Raises IndexError if out of range."""
        return -(-self.piece_size(piece) // self.block_size)

    def block(self, piece: int, index: int) -> BlockRef:
        """Block ``index`` of ``piece``, its length trimmed at the end of the piece.

        Raises:
            IndexError: the piece or the block index is out of range.
        """
        size = self.piece_size(piece)
        offset = index * self.block_size
        if index < 0 or offset >= size:
            raise IndexError(f"block {index} outside piece {piece} of {size} bytes")
        return BlockRef(piece, offset, min(self.block_size, size - offset))

    def blocks(self, piece: int) -> list[BlockRef]:
        """Every block of ``piece`` in order. Raises IndexError if out of range."""
        size = self.piece_size(piece)
        step = self.block_size
        return [
            BlockRef(piece, offset, min(step, size - offset)) for offset in range(0, size, step)
        ]

    def block_index(self, offset: int) -> int:
        """Index of the block that starts at ``offset`` inside a piece.

        Raises:
            ValueError: ``offset`` is negative or not on a block boundary.
        """
        if offset < 0 or offset % self.block_size:
            raise ValueError(f"offset {offset} is not the start of a {self.block_size}-byte block")
        return offset // self.block_size

    def is_valid_request(
        self, piece: int, offset: int, length: int, max_length: int = DEFAULT_BLOCK_SIZE
    ) -> bool:
        """Whether a peer's request lies inside one piece and is of an acceptable size.

        Args:
            piece, offset, length: the request as received.
            max_length: largest length accepted (BEP 3 clients use 16 KiB).

        Returns:
            True if ``0 < length <= max_length`` and the range lies inside an existing piece.
        """
        if not self.has_piece(piece) or offset < 0 or not 0 < length <= max_length:
            return False
        return offset + length <= self.piece_size(piece)

    def spans(self, piece: int, offset: int = 0, length: int | None = None) -> tuple[FileSpan, ...]:
        """Map ``length`` bytes at ``offset`` inside ``piece`` onto the files they belong to.

        Args:
            piece: the piece index.
            offset: start of the range inside the piece.
            length: bytes in the range; None means up to the end of the piece.

        Returns:
            The file parts in torrent order, skipping zero-length files; their lengths sum to
            ``length`` and their ``buffer_offset`` values count from the start of the range.

        Raises:
            IndexError: the piece is out of range or the byte range leaves the piece.
        """
        size = self.piece_size(piece)
        if length is None:
            length = size - offset
        if offset < 0 or length < 0 or offset + length > size:
            raise IndexError(f"range {offset}+{length} outside piece {piece} of {size} bytes")
        start = piece * self.piece_length + offset
        end = start + length
        starts = self._nonempty_starts
        indices = self._nonempty_index
        lengths = self.file_lengths
        result: list[FileSpan] = []
        k = bisect.bisect_right(starts, start) - 1
        position = start
        while position < end:
            file_index = indices[k]
            file_start = starts[k]
            take = min(end, file_start + lengths[file_index]) - position
            result.append(FileSpan(file_index, position - file_start, take, position - start))
            position += take
            k += 1
        return tuple(result)

    def pieces_for_file(self, file_index: int) -> range:
        """The pieces holding any byte of file ``file_index``; empty for a zero-length file.

        Raises:
            IndexError: no such file.
        """
        if not 0 <= file_index < len(self.file_lengths):
            raise IndexError(f"file {file_index} outside 0..{len(self.file_lengths) - 1}")
        length = self.file_lengths[file_index]
        if length == 0:
            return range(0)
        start = self._file_offsets[file_index]
        return range(start // self.piece_length, (start + length - 1) // self.piece_length + 1)
