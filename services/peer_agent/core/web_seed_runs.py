"""The runs of pieces a web seed session holds: grouping, per-piece buffers, request progress.

Strategy: assigned pieces wait as ``(first, count)`` runs of consecutive pieces, cut at a
maximum size (``group_runs``); a run that starts becomes an ``ActiveRun``: its ``RunPlan``
(the Range requests, one ``RunPart`` each) and one buffer per piece, so that a piece whose
bytes are all in is handed over as its own ``bytearray`` (no copy, and its memory leaves with
it) while the rest of the run is still coming.

Rules:
- A part's progress is the count of its bytes received, in order: a retry asks only for the
  rest (``RunPart.remainder``), so no byte is counted twice.
- A piece's ``missing`` count starts at its bytes that some request fetches (padding bytes are
  zeros already: a new ``bytearray`` is zero-filled); at 0 the piece is complete.
- A piece slot is ``None`` once handed over, revoked or given back: bytes still arriving for it
  are counted but not kept. A part whose remaining bytes all fall in such pieces is cancelled,
  and a run with no live piece left is over.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from torviz.shared.geometry import TorrentGeometry
from torviz.shared.webseed import RangeRequest, RunPlan

__all__ = ["ActiveRun", "RunPart", "group_runs"]


def group_runs(pieces: Iterable[int], per_run: int) -> list[tuple[int, int]]:
    """Consecutive pieces as ``(first, count)`` runs of at most ``per_run`` pieces.

    Args:
        pieces: piece indices in any order; duplicates count once.
        per_run: the most pieces in one run (>= 1).

    Returns:
        The runs in ascending order.
    """
    runs: list[list[int]] = []
    for piece in sorted(set(pieces)):
        last = runs[-1] if runs else None
        if last is not None and last[0] + last[1] == piece and last[1] < per_run:
            last[1] += 1
        else:
            runs.append([piece, 1])
    return [(first, count) for first, count in runs]


@dataclass(slots=True)
class RunPart:
    """One Range request of an active run and how far it got.

    Attributes:
        request: the planned request (the whole of it).
        received: its bytes received so far, from its start.
        fetch_id: the fetch reading it now, or None.
        failures: its fetches that failed.
        cancelled: no live piece needs its remaining bytes any more.
    """

    request: RangeRequest
    received: int = 0
    fetch_id: int | None = None
    failures: int = 0
    cancelled: bool = False

    @property
    def finished(self) -> bool:
        """All its bytes are in, or it is cancelled."""
        return self.cancelled or self.received == self.request.length

    def remainder(self) -> RangeRequest:
        """The request for the bytes still to come (the whole request before any arrived)."""
        r = self.request
        done = self.received
        return RangeRequest(
            r.file_index, r.url, r.file_offset + done, r.length - done, r.buffer_offset + done,
            r.file_length,
        )  # fmt: skip


class ActiveRun:
    """A run being fetched: its plan, its parts, one buffer per piece.

    Args:
        geometry: the torrent's geometry.
        plan: the run's plan (``plan_run``).
    """

    __slots__ = ("_geometry", "buffers", "missing", "parts", "plan")

    def __init__(self, geometry: TorrentGeometry, plan: RunPlan) -> None:
        self._geometry = geometry
        self.plan = plan
        self.parts = [RunPart(request) for request in plan.requests]
        self.buffers: list[bytearray | None] = [
            bytearray(geometry.piece_size(piece)) for piece in self.pieces
        ]
        self.missing = [0] * plan.count
        for request in plan.requests:
            for index, length in self._pieces_of(request.buffer_offset, request.length):
                self.missing[index] += length

    @property
    def pieces(self) -> range:
        """The run's pieces, live or not."""
        return range(self.plan.first_piece, self.plan.first_piece + self.plan.count)

    def live(self) -> list[int]:
        """The pieces still wanted from this run (not handed over, revoked or given back)."""
        return [p for p, b in zip(self.pieces, self.buffers, strict=True) if b is not None]

    @property
    def buffered(self) -> int:
        """Bytes of the live pieces' buffers."""
        return sum(len(b) for b in self.buffers if b is not None)

    def take_complete(self, indices: Iterable[int] | None = None) -> list[tuple[int, bytearray]]:
        """Hand over the live pieces whose bytes are all in.

        Args:
            indices: the run's pieces (by index in the run) to look at; all when None (a run
                just started: a piece of padding only needs no request).

        Returns:
            ``(piece, buffer)`` pairs in piece order; their slots become None.
        """
        done = []
        for index in range(self.plan.count) if indices is None else indices:
            buffer = self.buffers[index]
            if buffer is not None and self.missing[index] == 0:
                done.append((self.plan.first_piece + index, buffer))
                self.buffers[index] = None
        return done

    def drop(self, pieces: Iterable[int]) -> list[int]:
        """Stop keeping these pieces (revoked or given back).

        Returns:
            The pieces of this run that were live and are now dropped.
        """
        dropped = []
        for piece in pieces:
            index = piece - self.plan.first_piece
            if 0 <= index < self.plan.count and self.buffers[index] is not None:
                self.buffers[index] = None
                dropped.append(piece)
        return dropped

    def pieces_needed(self, part: RunPart) -> list[int]:
        """The live pieces that ``part``'s remaining bytes fall in."""
        if part.finished:
            return []
        start = part.request.buffer_offset + part.received
        return [
            self.plan.first_piece + index
            for index, _ in self._pieces_of(start, part.request.length - part.received)
            if self.buffers[index] is not None
        ]

    def prune(self) -> list[int]:
        """Cancel the parts no live piece needs.

        Returns:
            The fetch ids of the cancelled parts that were in flight.
        """
        stopped = []
        for part in self.parts:
            if not part.finished and not self.pieces_needed(part):
                part.cancelled = True
                if part.fetch_id is not None:
                    stopped.append(part.fetch_id)
                    part.fetch_id = None
        return stopped

    def write(self, part: RunPart, data: memoryview) -> list[int]:
        """Put the next bytes of ``part`` in place (the one copy) and count them.

        Returns:
            The indices (in the run) of the pieces the bytes fell in, for ``take_complete``.

        Raises:
            ValueError: more bytes than the part still needs.
        """
        length = len(data)
        if length > part.request.length - part.received:
            raise ValueError(
                f"{length} bytes for a request with {part.request.length - part.received} to go"
            )
        at = 0
        start = part.request.buffer_offset + part.received
        piece_length = self._geometry.piece_length
        touched = []
        for index, chunk in self._pieces_of(start, length):
            touched.append(index)
            within = (start + at) - index * piece_length
            buffer = self.buffers[index]
            if buffer is not None:
                buffer[within : within + chunk] = data[at : at + chunk]
            self.missing[index] -= chunk
            at += chunk
        part.received += length
        return touched

    def _pieces_of(self, offset: int, length: int) -> Iterator[tuple[int, int]]:
        """The run's pieces that ``length`` bytes at buffer ``offset`` fall in, as
        ``(index in the run, bytes in that piece)``. Every piece of a run but the torrent's
        last has the full piece length, and the last can only end a run."""
        piece_length = self._geometry.piece_length
        end = offset + length
        while offset < end:
            index = offset // piece_length
            chunk = min(end, (index + 1) * piece_length) - offset
            yield index, chunk
            offset += chunk
