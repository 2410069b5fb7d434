"""A connection's uploader policy, without I/O: what it reads ahead, holds, and when it pauses.

Strategy: the connection's uploader greenlet serves the oldest request the peer queued with us.
It gets that piece whole from the agent's piece cache and lets the session send a run of its
blocks, ``budget`` bytes at a time. This policy makes its three decisions:
- Hold: the pieces served last (``held`` of them) stay at hand between runs, since peers
  interleave requests of a few pieces; they are let go as soon as nothing is queued, so the
  cache may evict them.
- Read ahead: when a piece is not at hand, the cache is asked for the next ``read_ahead``
  pieces requested too, so it loads them while this one is read and served.
- Pause: while ``backlog`` bytes of served blocks wait for the socket, the uploader waits for
  the writer: a slow peer holds little memory and a fast one cannot starve the others.

The greenlet keeps the waiting and the reading; this class holds no clock and no socket.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["UPLOAD_BACKLOG", "UPLOAD_BUDGET", "UploaderPolicy"]

UPLOAD_BUDGET = 256 * 1024
"""Block bytes the uploader serves before it lets other greenlets run."""
UPLOAD_BACKLOG = 1024 * 1024
"""Served block bytes waiting for the socket before the uploader pauses (per connection)."""
READ_AHEAD = 2
"""Pieces the uploader has the cache load before they are asked for."""
HELD_PIECES = 2
"""Pieces the uploader keeps at hand between rounds."""


class UploaderPolicy:
    """The pieces one uploader holds and the limits it serves by.

    Args:
        budget: block bytes served per run before yielding.
        backlog: served bytes waiting for the socket at which the uploader pauses.
        read_ahead: pieces requested after the current one that the cache is asked to load.
        held: pieces kept at hand between runs.
    """

    def __init__(
        self,
        *,
        budget: int = UPLOAD_BUDGET,
        backlog: int = UPLOAD_BACKLOG,
        read_ahead: int = READ_AHEAD,
        held: int = HELD_PIECES,
    ) -> None:
        self.budget = budget
        self.backlog = backlog
        self.read_ahead = read_ahead
        self._max_held = held
        self._held: dict[int, bytearray] = {}  # oldest first

    @property
    def lookahead(self) -> int:
        """How many of the upcoming requested pieces to look at: the current one and those
        to read ahead (the argument of ``PeerSession.upcoming_uploads``)."""
        return 1 + self.read_ahead

    def held(self, piece: int) -> bytearray | None:
        """The piece if it is at hand, else None (read it, after ``to_read_ahead``)."""
        return self._held.get(piece)

    def to_read_ahead(self, upcoming: Sequence[int]) -> list[int]:
        """The pieces to have the cache load now.

        Args:
            upcoming: the pieces requested next, the current one first.

        Returns:
            Those after the current one that are not at hand.
        """
        return [piece for piece in upcoming[1:] if piece not in self._held]

    def keep(self, piece: int, data: bytearray) -> None:
        """Hold a piece just read, letting the oldest one go past the limit."""
        self._held[piece] = data
        if len(self._held) > self._max_held:
            del self._held[next(iter(self._held))]

    def idle(self) -> None:
        """Nothing is queued: let every held piece go (the cache may evict them)."""
        self._held.clear()

    def must_wait(self, queued: int, sending: int) -> bool:
        """Whether to wait for the writer before serving more.

        Args:
            queued: served block bytes the session holds for the writer.
            sending: bytes the writer is sending right now.

        Returns:
            True while the bytes waiting for the socket reach ``backlog``.
        """
        return queued + sending >= self.backlog
