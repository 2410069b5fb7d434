"""Planning the HTTP Range requests that fetch a run of pieces from a web seed.

Strategy: the coordinator hands a web seed contiguous runs of pieces (HTTP suits long reads);
``plan_run`` lays the run's bytes out in one buffer, asks ``TorrentGeometry`` which file parts
each piece covers (the geometry owns every offset), and merges the parts that continue one
another in the same file, so a run inside one file is one request however many pieces it holds,
and a run across a file boundary is one request per file it touches.

Rules:
- One ``RangeRequest`` per (file, contiguous byte range), in buffer order; together with the
  ``zero_fills`` they cover every byte of the run exactly once.
- BEP 47 padding files are never requested: no server holds them. Their bytes are zeros, which
  the plan lists as ``zero_fills`` for the reader to write into the buffer itself.
- Zero-length files never appear (the geometry never yields a span for them).
- A run outside the torrent, or a file list that does not match the geometry, is a caller's
  mistake: ``IndexError`` / ``ValueError``, as the geometry raises them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torviz.shared.geometry import FileSpan, TorrentGeometry
from torviz.shared.metainfo import FileEntry
from torviz.shared.webseed.urls import WebSeedUrl, file_url

__all__ = ["RangeRequest", "RunPlan", "ZeroFill", "plan_run"]


@dataclass(frozen=True, slots=True)
class RangeRequest:
    """One HTTP GET with a single byte range, for one file.

    Attributes:
        file_index: the file's index in the torrent.
        url: the file's URL on the web seed.
        file_offset: the first byte wanted, counted from the file's start.
        length: bytes wanted (> 0).
        buffer_offset: where those bytes go in the run's buffer.
        file_length: the file's length according to the torrent (to check a server's
            ``Content-Length`` or ``Content-Range`` total against).
    """

    file_index: int
    url: str
    file_offset: int
    length: int
    buffer_offset: int
    file_length: int

    @property
    def last_byte(self) -> int:
        """The last byte wanted (inclusive, as HTTP counts), from the file's start."""
        return self.file_offset + self.length - 1

    @property
    def range_header(self) -> str:
        """The ``Range`` header's value: ``bytes=first-last``."""
        return f"bytes={self.file_offset}-{self.last_byte}"


@dataclass(frozen=True, slots=True)
class ZeroFill:
    """Bytes of a padding file inside the run: zeros, written locally, never requested.

    Attributes:
        file_index: the padding file's index in the torrent.
        buffer_offset: where the zeros go in the run's buffer.
        length: how many (> 0).
    """

    file_index: int
    buffer_offset: int
    length: int


@dataclass(frozen=True, slots=True)
class RunPlan:
    """How to fill the buffer of pieces ``first_piece .. first_piece + count - 1``.

    Attributes:
        first_piece: the run's first piece.
        count: pieces in the run (>= 1).
        length: the buffer's size: the bytes of every piece of the run.
        requests: the HTTP requests, in buffer order.
        zero_fills: the padding bytes to write as zeros, in buffer order.
    """

    first_piece: int
    count: int
    length: int
    requests: tuple[RangeRequest, ...]
    zero_fills: tuple[ZeroFill, ...]

    @property
    def file_indices(self) -> frozenset[int]:
        """The files the requests read (to skip a run that needs a file the seed lacks)."""
        return frozenset(r.file_index for r in self.requests)


def plan_run(
    geometry: TorrentGeometry,
    files: Sequence[FileEntry],
    first_piece: int,
    count: int,
    base_url: WebSeedUrl,
) -> RunPlan:
    """Map a run of pieces onto the Range requests that fetch it from one web seed.

    Args:
        geometry: the torrent's geometry.
        files: the torrent's files (``InfoDict.files``), in the geometry's order.
        first_piece: the run's first piece.
        count: pieces in the run (>= 1).
        base_url: the web seed, checked by ``parse_web_seed_url``.

    Returns:
        The plan: requests, zero fills and the buffer's length.

    Raises:
        ValueError: ``count`` is below 1, or ``files`` does not match the geometry.
        IndexError: the run leaves the torrent.
    """
    if count < 1:
        raise ValueError(f"a run holds at least one piece, not {count}")
    if tuple(f.length for f in files) != geometry.file_lengths:
        raise ValueError("the file list does not match the torrent's geometry")
    last = first_piece + count - 1
    geometry.piece_index(first_piece)
    geometry.piece_index(last)
    only_file = len(files) == 1
    urls: dict[int, str] = {}
    requests: list[RangeRequest] = []
    zero_fills: list[ZeroFill] = []
    buffer_offset = 0
    for piece in range(first_piece, last + 1):
        for span in geometry.spans(piece):
            at = buffer_offset + span.buffer_offset
            entry = files[span.file_index]
            if entry.padding:
                _add_zeros(zero_fills, span, at)
                continue
            url = urls.get(span.file_index)
            if url is None:
                url = urls[span.file_index] = file_url(base_url, entry.path, only_file=only_file)
            _add_request(requests, span, at, url, entry.length)
        buffer_offset += geometry.piece_size(piece)
    return RunPlan(first_piece, count, buffer_offset, tuple(requests), tuple(zero_fills))


def _add_request(
    requests: list[RangeRequest], span: FileSpan, at: int, url: str, file_length: int
) -> None:
    """Append ``span`` as a request, or extend the previous one if the span continues it."""
    if requests:
        prev = requests[-1]
        if (
            prev.file_index == span.file_index
            and prev.file_offset + prev.length == span.file_offset
            and prev.buffer_offset + prev.length == at
        ):
            requests[-1] = RangeRequest(
                prev.file_index,
                prev.url,
                prev.file_offset,
                prev.length + span.length,
                prev.buffer_offset,
                file_length,
            )
            return
    requests.append(
        RangeRequest(span.file_index, url, span.file_offset, span.length, at, file_length)
    )


def _add_zeros(zero_fills: list[ZeroFill], span: FileSpan, at: int) -> None:
    if zero_fills:
        prev = zero_fills[-1]
        if prev.file_index == span.file_index and prev.buffer_offset + prev.length == at:
            zero_fills[-1] = ZeroFill(
                prev.file_index, prev.buffer_offset, prev.length + span.length
            )
            return
    zero_fills.append(ZeroFill(span.file_index, at, span.length))
