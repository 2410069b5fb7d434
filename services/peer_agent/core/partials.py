"""Half-fetched pieces a connection let go of, kept for the next connection that fetches them.

Strategy: a connection that gives a piece back (the peer choked us, rejected or timed out, or
the connection closed) has usually received some of its blocks already. Instead of dropping
them, it deposits the piece's buffer here with the sender of every block it holds; the next
connection of the same peer agent assigned that piece takes it and requests only the missing
blocks (libtorrent shares its downloading pieces between peers the same way). A piece finished
so is built from several peers' blocks, and its ``StorePiece`` names the sender of each block,
so that when it fails its hash the storage agent's smart ban can find which sender lied.

Rules:
- One store per attached torrent, shared by that torrent's connections in this agent. Every
  method runs without yielding, so connection greenlets never see a half-done change.
- A piece is deposited only when at least one of its blocks arrived; a deposit replaces an
  older one of the same piece (the newer holds at least as much of what the coordinator wants).
- Bounded: at most ``max_bytes`` of buffers; the oldest deposits go first. A piece verified
  meanwhile (``discard``) or a detached torrent frees its buffers at once.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["DEFAULT_MAX_BYTES", "PartialPiece", "PartialPieces"]

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
"""Buffers kept per torrent by default."""


@dataclass(slots=True)
class PartialPiece:
    """A piece's buffer and who sent each block in it (None: not received yet)."""

    buffer: bytearray
    senders: list[str | None]

    @property
    def received(self) -> int:
        return sum(1 for sender in self.senders if sender is not None)


class PartialPieces:
    """The half-fetched pieces of one torrent in one peer agent."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._max_bytes = max_bytes
        self._pieces: OrderedDict[int, PartialPiece] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._pieces)

    def __contains__(self, piece: object) -> bool:
        return piece in self._pieces

    @property
    def bytes(self) -> int:
        """Bytes of buffers held."""
        return self._bytes

    def deposit(self, piece: int, partial: PartialPiece) -> None:
        """Keep what a connection fetched of ``piece`` (nothing when no block arrived)."""
        if partial.received == 0 or len(partial.buffer) > self._max_bytes:
            return
        self.discard(piece)
        self._pieces[piece] = partial
        self._bytes += len(partial.buffer)
        while self._bytes > self._max_bytes:
            _, oldest = self._pieces.popitem(last=False)
            self._bytes -= len(oldest.buffer)

    def take(self, piece: int) -> PartialPiece | None:
        """Hand ``piece``'s partial to a connection that will finish it (it leaves the store)."""
        partial = self._pieces.pop(piece, None)
        if partial is not None:
            self._bytes -= len(partial.buffer)
        return partial

    def discard(self, piece: int) -> None:
        """``piece`` is verified (or fetched elsewhere): its blocks are no longer wanted."""
        self.take(piece)

    def clear(self) -> None:
        self._pieces.clear()
        self._bytes = 0
