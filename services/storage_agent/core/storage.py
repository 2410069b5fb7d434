"""The storage interface: a torrent's pieces laid over its files, and what every store obeys.

Strategy: a ``Storage`` takes whole pieces in and hands byte ranges out. The torrent's
``TorrentGeometry`` maps a piece (or a range inside one) to file spans; this class checks every
argument against that geometry once and walks the spans, so that each implementation only moves
the bytes of one span of one file (``_write_span``, ``_read_span_into``) and says how its files
are made durable, closed, deleted and found (``flush``, ``close``, ``delete_files``,
``file_states``, ``sync_files``). ``store.FileStorage`` keeps the files on disk,
``memory.MemoryStorage`` in memory for tests; the agent's piece path (``pieces``) writes through
this interface and nothing else.

Rules:
- Pure: no file, thread or clock here; the subclasses do the I/O.
- Every implementation refuses the same ranges with the same ``StorageError``
  (``invalid_range``, ``bad_piece_length``), raised here before a subclass is called.
- BEP 47 padding files never hold bytes: writes into them are dropped (the piece hash already
  covered their zeros), reads give zeros.
- Reads never invent data: a file that is missing or too short is a ``StorageError``
  (``file_missing`` / ``file_short``); those reasons, and a path that is not a folder or not a
  regular file, are ``MISSING_DATA_REASONS``: "the data is not there", not "the disk failed".
- ``FileState`` is a file as found on disk (size and mtime): the resume record compares them.
"""

from __future__ import annotations

import abc
import errno
from collections.abc import Iterable
from dataclasses import dataclass

from torviz.shared.geometry import PieceIndexError
from torviz.shared.metainfo import InfoDict

from .errors import StorageError, storage_error_from_os

__all__ = ["MISSING_DATA_REASONS", "Buffer", "FileState", "Storage"]

Buffer = bytes | bytearray | memoryview

MISSING_DATA_REASONS = frozenset(
    {"file_missing", "file_short", "not_a_directory", "not_a_regular_file"}
)
"""``StorageError`` reasons that mean "the data is not there" rather than "the disk failed"."""


@dataclass(frozen=True, slots=True)
class FileState:
    """A file as found on disk: its size in bytes and its modification time in nanoseconds."""

    size: int
    mtime_ns: int


class Storage(abc.ABC):
    """Piece-level access to a torrent's files; subclasses move the bytes of one file span.

    The public methods validate their arguments against the torrent's geometry once, here, so
    that every implementation refuses the same ranges with the same errors.
    """

    def __init__(self, info: InfoDict) -> None:
        self._info = info
        self._geometry = info.geometry
        self._names = tuple("/".join(entry.path) for entry in info.files)

    @property
    def info(self) -> InfoDict:
        return self._info

    @property
    def download_dir(self) -> str:
        """The real path of the download directory; empty for a store that is not on disk."""
        return ""

    def write_piece(self, piece: int, data: Buffer) -> None:
        """Write one whole piece across the files it spans.

        Args:
            piece: the piece index.
            data: exactly ``geometry.piece_size(piece)`` bytes, already verified by the caller.

        Raises:
            StorageError: ``invalid_range`` for a bad index, ``bad_piece_length`` for data of the
                wrong size, or the mapped cause of a failed file operation.
        """
        size = self._piece_size(piece)
        view = memoryview(data).cast("B")
        if view.nbytes != size:
            raise StorageError(
                "bad_piece_length",
                f"piece {piece} is {size} bytes but {view.nbytes} bytes were given to write",
            )
        for span in self._geometry.spans(piece):
            if self._info.files[span.file_index].padding:
                continue
            start = span.buffer_offset
            self._write_span(span.file_index, span.file_offset, view[start : start + span.length])

    def read(self, piece: int, offset: int, length: int) -> bytes:
        """Read ``length`` bytes at ``offset`` inside ``piece`` (a block for a peer).

        Raises:
            StorageError: ``invalid_range`` if the range is not inside the piece,
                ``file_missing``/``file_short`` if the data is not on disk, or the mapped cause
                of a failed file operation.
        """
        size = self._piece_size(piece)
        if offset < 0 or length <= 0 or offset + length > size:
            raise StorageError(
                "invalid_range",
                f"read of {length} bytes at offset {offset} is outside piece {piece} "
                f"({size} bytes)",
            )
        buffer = bytearray(length)
        self._fill(piece, offset, memoryview(buffer))
        return bytes(buffer)

    def read_piece(self, piece: int) -> bytes:
        """Read a whole piece; same errors as ``read``."""
        return self.read(piece, 0, self._piece_size(piece))

    def read_piece_into(self, piece: int, buffer: bytearray | memoryview) -> memoryview:
        """Read a whole piece into ``buffer``, for hashing without a fresh allocation per piece.

        A recheck reuses one buffer per worker, so its memory does not grow with the number of
        pieces in flight.

        Args:
            piece: the piece index.
            buffer: writable, at least ``geometry.piece_size(piece)`` bytes.

        Returns:
            The part of ``buffer`` that holds the piece.

        Raises:
            ValueError: the buffer is too small.
            StorageError: as ``read``.
        """
        size = self._piece_size(piece)
        view = memoryview(buffer).cast("B")
        if view.nbytes < size:
            raise ValueError(f"a buffer of {view.nbytes} bytes cannot hold piece {piece}")
        view = view[:size]
        self._fill(piece, 0, view)
        return view

    def _fill(self, piece: int, offset: int, view: memoryview) -> None:
        """Read the range of ``piece`` starting at ``offset`` into all of ``view``."""
        for span in self._geometry.spans(piece, offset, view.nbytes):
            part = view[span.buffer_offset : span.buffer_offset + span.length]
            if self._info.files[span.file_index].padding:
                part[:] = bytes(span.length)
            else:
                self._read_span_into(span.file_index, span.file_offset, part)

    @abc.abstractmethod
    def flush(self) -> None:
        """Make every byte written so far durable; raises ``StorageError`` if it cannot."""

    @abc.abstractmethod
    def close(self) -> None:
        """Flush, then release every resource; the store reopens files if used again."""

    @abc.abstractmethod
    def delete_files(self) -> None:
        """Remove the torrent's files (and the folders that become empty)."""

    @abc.abstractmethod
    def file_states(self) -> tuple[FileState | None, ...]:
        """Each file's size and modification time; None for a file that is not there (or is a
        padding file, or not a regular file). Raises ``StorageError`` for a disk failure."""

    @abc.abstractmethod
    def sync_files(self, indices: Iterable[int]) -> None:
        """Make the data of the given files durable, whoever wrote it; missing files are skipped.
        Raises ``StorageError`` if a sync fails."""

    @abc.abstractmethod
    def _write_span(self, file_index: int, file_offset: int, data: memoryview) -> None: ...

    @abc.abstractmethod
    def _read_span_into(self, file_index: int, file_offset: int, view: memoryview) -> None: ...

    def _piece_size(self, piece: int) -> int:
        try:
            return self._geometry.piece_size(self._geometry.piece_index(piece))
        except PieceIndexError as exc:
            raise StorageError("invalid_range", str(exc)) from None

    def _missing(self, file_index: int, action: str) -> StorageError:
        return storage_error_from_os(
            FileNotFoundError(errno.ENOENT, "No such file or directory"),
            action,
            self._names[file_index],
        )
