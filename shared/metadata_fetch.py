"""Fetching a torrent's info dictionary from peers (BEP 9): a pure assembler, clock passed in.

Strategy: the first acceptable ``metadata_size`` a peer advertises fixes the size; pieces are
handed out one peer at a time (each missing piece is in flight with at most one peer), so
several peers fill different pieces at once. A request that times out or is rejected frees its
piece for another peer; a peer is not asked again for a piece it rejected or let time out while
another peer could be asked. When every piece is in, the whole is hashed: a match completes, a
mismatch names every peer that contributed a piece (the caller drops them) and starts over.

Rules:
- Memory is bounded by the cap: only the advertised size is ever held, in pieces of exactly
  the right length, and a size over the cap (or 0) is refused before anything is kept.
- A peer whose advertised size or ``total_size`` disagrees with the fixed size, or whose block
  has the wrong length, is named in a ``PeerDropped`` for the caller to disconnect.
- A late block for a piece still missing is accepted (the hash check guards it); a block for a
  piece already held is ignored.
- Pieces kept from an earlier run (``held`` then, ``restore`` now) are taken only once a peer
  advertised the same size, and only pieces of exactly the right length; the hash check guards
  them like any other, and a mismatch throws them away with the rest.
- Pure: no clock, no I/O. ``now`` is a monotonic time in seconds from the caller;
  ``next_deadline`` says when to call ``expire`` next.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from torviz.shared.wire.metadata import (
    DEFAULT_MAX_METADATA_SIZE,
    MetadataData,
    metadata_piece_count,
    metadata_piece_length,
)

__all__ = [
    "DEFAULT_METADATA_REQUEST_TIMEOUT",
    "MetadataAssembler",
    "MetadataComplete",
    "PeerDropped",
]

DEFAULT_METADATA_REQUEST_TIMEOUT = 20.0
"""Seconds before an unanswered metadata request is given to another peer."""

P = TypeVar("P", bound=Hashable)


@dataclass(frozen=True, slots=True)
class PeerDropped(Generic[P]):
    """Disconnect ``peers``: they broke the metadata exchange for ``reason``.

    Reasons: ``metadata_size_zero``, ``metadata_too_large``, ``metadata_size_mismatch``,
    ``bad_metadata_piece``, ``metadata_hash_mismatch``.
    """

    peers: frozenset[P]
    reason: str


@dataclass(frozen=True, slots=True)
class MetadataComplete:
    """The info dictionary, whose SHA-1 is the info hash."""

    info: bytes


@dataclass(slots=True)
class _InFlight(Generic[P]):
    peer: P
    deadline: float


@dataclass(slots=True)
class _PeerState:
    outstanding: set[int] = field(default_factory=set)
    avoid: set[int] = field(default_factory=set)  # rejected or timed out by this peer


class MetadataAssembler(Generic[P]):
    """Collects metadata pieces from several peers and checks them against the info hash.

    Args:
        info_hash: the 20-byte SHA-1 the assembled dictionary must have.
        max_size: the cap on ``metadata_size`` (default 8 MiB).
        timeout: seconds before an unanswered request is re-asked elsewhere.
        per_peer: requests outstanding at once with one peer.

    Raises:
        ValueError: an info hash that is not 20 bytes, or a non-positive bound.
    """

    def __init__(
        self,
        info_hash: bytes,
        *,
        max_size: int = DEFAULT_MAX_METADATA_SIZE,
        timeout: float = DEFAULT_METADATA_REQUEST_TIMEOUT,
        per_peer: int = 2,
    ) -> None:
        if len(info_hash) != 20:
            raise ValueError("an info hash is exactly 20 bytes")
        if max_size <= 0 or timeout <= 0 or per_peer <= 0:
            raise ValueError("max_size, timeout and per_peer must be positive")
        self._info_hash = info_hash
        self._max_size = max_size
        self._timeout = timeout
        self._per_peer = per_peer
        self._size: int | None = None
        self._pieces: dict[int, bytes] = {}
        self._contributors: dict[int, P] = {}
        self._in_flight: dict[int, _InFlight[P]] = {}
        self._peers: dict[P, _PeerState] = {}

    @property
    def size(self) -> int | None:
        """The metadata size being fetched, or None before a peer advertised one."""
        return self._size

    @property
    def received_bytes(self) -> int:
        """Bytes of metadata held so far (for status)."""
        return sum(len(block) for block in self._pieces.values())

    @property
    def peers(self) -> frozenset[P]:
        """The peers taking part."""
        return frozenset(self._peers)

    def held(self) -> dict[int, bytes]:
        """The pieces held so far, by index (to keep across a restart)."""
        return dict(self._pieces)

    def restore(self, size: int, pieces: Mapping[int, bytes], source: P) -> MetadataComplete | None:
        """Take pieces kept from an earlier fetch, once the size they belong to is the size
        being fetched (a peer advertised it) and nothing is held yet.

        Args:
            size: the metadata size the pieces were fetched for.
            pieces: piece index to bytes; pieces out of range or of the wrong length are
                skipped.
            source: who the pieces count as from (named, with the others, if the whole hashes
                wrong).

        Returns:
            ``MetadataComplete`` when the kept pieces are the whole and hash right, else None
            (a whole that hashes wrong is thrown away).
        """
        if self._size != size or self._pieces:
            return None
        count = metadata_piece_count(size)
        for piece, data in pieces.items():
            if 0 <= piece < count and len(data) == metadata_piece_length(piece, size):
                self._pieces[piece] = bytes(data)
                self._contributors[piece] = source
                flight = self._in_flight.pop(piece, None)
                if flight is not None:
                    self._peers[flight.peer].outstanding.discard(piece)
        if len(self._pieces) < count:
            return None
        info = b"".join(self._pieces[i] for i in range(count))
        if hashlib.sha1(info).digest() == self._info_hash:
            return MetadataComplete(info)
        self._pieces.clear()
        self._contributors.clear()
        return None

    def add_peer(self, peer: P, metadata_size: int) -> PeerDropped[P] | None:
        """A peer advertised ``ut_metadata`` with ``metadata_size`` in its extension handshake.

        Returns:
            None if the peer takes part, or ``PeerDropped`` naming it (size 0, over the cap,
            or disagreeing with the size already fixed).
        """
        reason = None
        if metadata_size <= 0:
            reason = "metadata_size_zero"
        elif metadata_size > self._max_size:
            reason = "metadata_too_large"
        elif self._size is not None and metadata_size != self._size:
            reason = "metadata_size_mismatch"
        if reason is not None:
            self.remove_peer(peer)
            return PeerDropped(frozenset({peer}), reason)
        if self._size is None:
            self._size = metadata_size
        if peer not in self._peers:
            self._peers[peer] = _PeerState()
        return None

    def remove_peer(self, peer: P) -> None:
        """Forget ``peer`` (disconnected); its requests go back to the pool."""
        state = self._peers.pop(peer, None)
        if state is None:
            return
        for piece in state.outstanding:
            flight = self._in_flight.get(piece)
            if flight is not None and flight.peer == peer:
                del self._in_flight[piece]
        if not self._peers and not self._pieces:
            self._size = None

    def next_requests(self, peer: P, now: float) -> list[int]:
        """Pieces to request from ``peer`` now; they count as in flight from this call.

        Args:
            peer: a peer added with ``add_peer``.
            now: the caller's monotonic clock, in seconds.

        Returns:
            Piece indices (possibly empty): missing, not in flight elsewhere, not refused or
            timed out by this peer, at most ``per_peer`` outstanding with it.
        """
        self.expire(now)
        state = self._peers.get(peer)
        if state is None or self._size is None:
            return []
        wanted: list[int] = []
        free = self._per_peer - len(state.outstanding)
        for piece in range(metadata_piece_count(self._size)):
            if free <= 0:
                break
            if piece in self._pieces or piece in self._in_flight or piece in state.avoid:
                continue
            wanted.append(piece)
            free -= 1
        if not wanted and free > 0 and state.avoid:
            # Every other peer is busy or gone: this peer may try its avoided pieces again.
            for piece in sorted(state.avoid):
                if free <= 0:
                    break
                if piece not in self._pieces and piece not in self._in_flight:
                    state.avoid.discard(piece)
                    wanted.append(piece)
                    free -= 1
        for piece in wanted:
            self._in_flight[piece] = _InFlight(peer, now + self._timeout)
            state.outstanding.add(piece)
        return wanted

    def on_reject(self, peer: P, piece: int) -> None:
        """``peer`` rejected ``piece``: ask someone else."""
        state = self._peers.get(peer)
        if state is None:
            return
        self._release(peer, state, piece)

    def expire(self, now: float) -> list[tuple[P, int]]:
        """Release the requests whose deadline passed.

        Returns:
            ``(peer, piece)`` for each request that timed out.
        """
        expired = [(f.peer, p) for p, f in self._in_flight.items() if f.deadline <= now]
        for peer, piece in expired:
            self._release(peer, self._peers[peer], piece)
        return expired

    def next_deadline(self) -> float | None:
        """The earliest request deadline, or None with nothing in flight."""
        return min((f.deadline for f in self._in_flight.values()), default=None)

    def on_data(self, peer: P, message: MetadataData) -> PeerDropped[P] | MetadataComplete | None:
        """``peer`` sent a metadata block.

        Returns:
            None while incomplete (or for a block ignored), ``MetadataComplete`` when the
            whole hashes to the info hash, ``PeerDropped`` for a peer whose block does not fit
            the size, or for every contributor when the hash is wrong (then the assembler
            starts over with the peers that remain).
        """
        state = self._peers.get(peer)
        if state is None or self._size is None:
            return None
        size = self._size
        piece = message.piece
        if message.total_size != size:
            self.remove_peer(peer)
            return PeerDropped(frozenset({peer}), "metadata_size_mismatch")
        if not 0 <= piece < metadata_piece_count(size) or len(message.data) != (
            metadata_piece_length(piece, size)
        ):
            self.remove_peer(peer)
            return PeerDropped(frozenset({peer}), "bad_metadata_piece")
        state.outstanding.discard(piece)
        if piece in self._pieces:
            return None
        flight = self._in_flight.pop(piece, None)
        if flight is not None and flight.peer != peer:
            self._peers[flight.peer].outstanding.discard(piece)  # its answer is no longer needed
        self._pieces[piece] = message.data
        self._contributors[piece] = peer
        if len(self._pieces) < metadata_piece_count(size):
            return None
        info = b"".join(self._pieces[i] for i in range(len(self._pieces)))
        if hashlib.sha1(info).digest() == self._info_hash:
            return MetadataComplete(info)
        culprits = frozenset(self._contributors.values())
        self._pieces.clear()
        self._contributors.clear()
        for culprit in culprits:
            self.remove_peer(culprit)
        for other in self._peers.values():
            other.avoid.clear()  # a fresh start: what they refused before may now be wanted
        if not self._peers:
            self._size = None
        return PeerDropped(culprits, "metadata_hash_mismatch")

    def _release(self, peer: P, state: _PeerState, piece: int) -> None:
        state.outstanding.discard(piece)
        state.avoid.add(piece)
        flight = self._in_flight.get(piece)
        if flight is not None and flight.peer == peer:
            del self._in_flight[piece]
