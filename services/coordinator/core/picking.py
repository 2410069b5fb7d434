"""Which pieces to hand a peer connection next: random first, partial first, rarest first, endgame.

Strategy: the coordinator hands whole pieces to each peer connection, a few at a time; the peer
agent fetches their blocks without asking again. So this picker works at piece granularity and
runs once per handed-out piece, not once per block.

Every set of pieces is a Python ``int`` used as a bitmask (bit ``i`` = piece ``i``), so the hot
questions ("what does this peer have that nobody is fetching yet, among the rarest?") are a few
big-integer operations in C instead of a Python loop over every piece:

- ``_levels[a]`` holds the pieces that exactly ``a`` connected peers have. A peer joining with a
  bitfield moves pieces up one level with one AND/XOR per level, and there are at most
  ``peers + 1`` levels.
- ``_wanted`` holds pieces nobody has, nobody fetches, and that are not waiting for their hash
  check. ``_partial`` holds pieces a peer agent kept half-fetched; they go out first.
- In endgame (nothing is left in ``_wanted``) a piece can be handed to a second connection so a
  slow peer cannot stall the last pieces; the first copy to arrive wins and the others are
  cancelled by the caller.
- A piece that failed its hash with blocks from several connections (``single_source``) is
  handed to one connection at a time, never doubled in endgame, so the copy that verifies comes
  from one sender and the storage agent's smart ban can judge the failed blocks against it.

Pure: the caller passes the random generator; there is no clock here.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from torviz.shared.bitfield import Bitfield

__all__ = ["PickerConfig", "PiecePicker"]


@dataclass(frozen=True, slots=True)
class PickerConfig:
    random_first: int = 4
    """Pick at random until this many pieces are verified, so new peers have something to trade."""
    endgame_copies: int = 2
    """In endgame, at most this many connections fetch the same piece at once."""


class PiecePicker:
    """Piece state of one torrent as seen by the coordinator.

    A piece is in exactly one of: *have* (verified), *pending* (downloaded, hash check under
    way), *busy* (handed to one or more connections), or *wanted* (everything else).
    """

    def __init__(
        self,
        num_pieces: int,
        have: Bitfield,
        rng: random.Random,
        config: PickerConfig = PickerConfig(),
    ) -> None:
        if have.size != num_pieces:
            raise ValueError("have bitfield does not match the piece count")
        self._n = num_pieces
        self._all = (1 << num_pieces) - 1
        self._rng = rng
        self._config = config
        self._have = have.to_int()
        self._pending = 0
        self._partial = 0
        self._single = 0  # pieces to fetch from one connection only (smart ban)
        self._wanted = self._all & ~self._have
        self._levels: list[int] = [self._all]
        self._owners: dict[int, set[Hashable]] = {}
        self._suspect: dict[Hashable, int] = {}  # per connection: pieces it sent us corrupt
        self._pending_since: dict[int, float] = {}  # downloaded pieces waiting for their check

    # -- availability -----------------------------------------------------------------------------

    def peer_joined(self, bits: Bitfield) -> None:
        """A connection announced these pieces (bitfield, have-all)."""
        self._shift(bits.to_int(), +1)

    def peer_left(self, bits: Bitfield) -> None:
        """A connection closed; its pieces are one copy rarer."""
        self._shift(bits.to_int(), -1)

    def peer_has(self, piece: int) -> None:
        """A connection announced one more piece (have)."""
        self._shift(1 << piece, +1)

    def availability(self, piece: int) -> int:
        mask = 1 << piece
        return next(a for a, level in enumerate(self._levels) if level & mask)

    def _shift(self, mask: int, step: int) -> None:
        levels = self._levels
        if step > 0:
            levels.append(0)
            for a in range(len(levels) - 2, -1, -1):
                moved = levels[a] & mask
                levels[a] ^= moved
                levels[a + 1] |= moved
        else:
            # A piece already at zero stays there: a bitfield we never counted cannot go negative.
            for a in range(1, len(levels)):
                moved = levels[a] & mask
                levels[a] ^= moved
                levels[a - 1] |= moved
        while len(levels) > 1 and not levels[-1]:
            levels.pop()

    # -- handing out work -------------------------------------------------------------------------

    @property
    def in_endgame(self) -> bool:
        return not self._wanted and bool(self._owners)

    def pick(self, peer: Hashable, peer_bits: Bitfield, count: int) -> list[int]:
        """Hand up to ``count`` pieces that ``peer`` has to that connection.

        Args:
            peer: any hashable key naming the connection.
            peer_bits: the pieces that connection has.
            count: how many pieces it can take now.

        Returns:
            The pieces, best first; they are now busy with ``peer``.
        """
        offered = self._offered(peer, peer_bits)
        picked: list[int] = []
        if count > 0:
            self._pick_from(self._partial & self._wanted & offered, count, picked)
        if len(picked) < count:
            candidates = self._wanted & offered
            if len(self) < self._config.random_first:
                self._pick_random(candidates, count - len(picked), picked)
            else:
                for level in self._levels[1:]:
                    self._pick_from(level & candidates, count - len(picked), picked)
                    if len(picked) >= count:
                        break
        if not picked and not self._wanted:
            # One second copy per call: enough to finish a piece a slow peer holds up, without
            # fetching the whole tail of the torrent twice.
            self._pick_endgame(peer, offered, 1, picked)
        self._take(peer, picked)
        return picked

    def pick_run(self, peer: Hashable, peer_bits: Bitfield, count: int) -> list[int]:
        """Hand up to ``count`` consecutive pieces to a connection that fetches runs (a web
        seed: one HTTP request per run): the first wanted piece nobody fetches, then the
        pieces after it while they are wanted too. Rarity and randomness do not matter to an
        HTTP server; in endgame it gets one piece another connection fetches, as ``pick``.

        Args:
            peer: any hashable key naming the connection.
            peer_bits: the pieces that connection has.
            count: how many pieces it can take now.

        Returns:
            The pieces, in order; they are now busy with ``peer``.
        """
        candidates = self._wanted & self._offered(peer, peer_bits)
        picked: list[int] = []
        if candidates and count > 0:
            first = (candidates & -candidates).bit_length() - 1
            gaps = ~candidates >> first  # negative: its lowest set bit (always one) ends the run
            length = (gaps & -gaps).bit_length() - 1
            picked = list(range(first, first + min(count, length)))
        elif count > 0 and not self._wanted:
            self._pick_endgame(peer, self._offered(peer, peer_bits), 1, picked)
        self._take(peer, picked)
        return picked

    def _offered(self, peer: Hashable, peer_bits: Bitfield) -> int:
        """What ``peer`` may be handed of what it has: a piece it sent corrupt goes to
        others, unless nobody else has it."""
        offered = peer_bits.to_int()
        suspect = self._suspect.get(peer, 0)
        if suspect:
            sole = [
                p
                for p in Bitfield.from_int(suspect & offered, self._n)
                if self.availability(p) <= 1
            ]
            offered &= ~suspect | self._mask_of(sole)
        return offered

    def _take(self, peer: Hashable, picked: list[int]) -> None:
        """``picked`` is busy with ``peer`` now."""
        for piece in picked:
            self._owners.setdefault(piece, set()).add(peer)
            mask = 1 << piece
            self._wanted &= ~mask
            self._partial &= ~mask

    def _pick_from(self, candidates: int, count: int, out: list[int]) -> None:
        """Take up to ``count`` pieces from ``candidates``, starting at a random index and wrapping.

        Starting at a random point spreads peers over the torrent (the tie-break between pieces
        equally rare) while still taking runs of neighbouring pieces, which the disk likes.
        """
        candidates &= ~self._mask_of(out)
        if not candidates or count <= 0:
            return
        start = self._rng.randrange(self._n)
        upper = candidates >> start << start
        for part in (upper, candidates ^ upper):
            remaining = part
            while remaining and len(out) < count:
                low = remaining & -remaining
                out.append(low.bit_length() - 1)
                remaining ^= low
            if len(out) >= count:
                return

    def _pick_random(self, candidates: int, count: int, out: list[int]) -> None:
        pieces = [p for p in Bitfield.from_int(candidates, self._n) if p not in out]
        out.extend(self._rng.sample(pieces, min(count, len(pieces))))

    def _pick_endgame(self, peer: Hashable, offered: int, count: int, out: list[int]) -> None:
        """Hand out pieces other connections are fetching, fewest copies first."""
        shared = [
            (len(owners), piece)
            for piece, owners in self._owners.items()
            if peer not in owners
            and len(owners) < self._config.endgame_copies
            and offered >> piece & 1
            and not self._pending >> piece & 1
            and not self._single >> piece & 1
            and piece not in out
        ]
        shared.sort()
        out.extend(piece for _, piece in shared[:count])

    @staticmethod
    def _mask_of(pieces: list[int]) -> int:
        mask = 0
        for piece in pieces:
            mask |= 1 << piece
        return mask

    # -- progress ---------------------------------------------------------------------------

    def owners(self, piece: int) -> frozenset[Hashable]:
        return frozenset(self._owners.get(piece, ()))

    def release(self, peer: Hashable, piece: int, *, partial: bool = False) -> None:
        """``peer`` stopped fetching ``piece`` (closed, choked, rejected, or cancelled).

        Args:
            partial: the peer agent kept the blocks it had; hand this piece out first.
        """
        owners = self._owners.get(piece)
        if owners is None or peer not in owners:
            return
        owners.discard(peer)
        if not owners:
            del self._owners[piece]
            mask = 1 << piece
            if not (self._have | self._pending) & mask:
                self._wanted |= mask
                if partial:
                    self._partial |= mask

    def release_peer(self, peer: Hashable) -> list[int]:
        """Release every piece ``peer`` was fetching and forget it; returns the pieces."""
        pieces = [piece for piece, owners in self._owners.items() if peer in owners]
        for piece in pieces:
            self.release(peer, piece)
        self._suspect.pop(peer, None)
        return pieces

    def piece_downloaded(self, piece: int, now: float) -> frozenset[Hashable]:
        """All blocks of ``piece`` arrived; it waits for its hash check.

        Returns:
            The other connections still fetching it (endgame), which the caller cancels.
        """
        owners = frozenset(self._owners.pop(piece, ()))
        mask = 1 << piece
        self._pending |= mask
        self._pending_since.setdefault(piece, now)
        self._wanted &= ~mask
        self._partial &= ~mask
        return owners

    def piece_verified(self, piece: int) -> None:
        self._pending_since.pop(piece, None)
        mask = 1 << piece
        self._have |= mask
        self._pending &= ~mask
        self._wanted &= ~mask
        self._partial &= ~mask
        self._single &= ~mask
        self._owners.pop(piece, None)

    def piece_failed(
        self, piece: int, contributors: Iterable[Hashable] = (), *, single_source: bool = False
    ) -> None:
        """The hash check failed: fetch the piece again, from other connections if possible.

        Args:
            contributors: connections to avoid for this piece.
            single_source: fetch the next copy from one connection only (no endgame copy).
        """
        self._pending_since.pop(piece, None)
        mask = 1 << piece
        if single_source:
            self._single |= mask
        for peer in contributors:
            self._suspect[peer] = self._suspect.get(peer, 0) | mask
        self._pending &= ~mask
        if not self._have & mask and piece not in self._owners:
            self._wanted |= mask

    def expire_pending(self, now: float, timeout: float) -> list[int]:
        """Pieces whose hash check has not reported back for ``timeout`` seconds: they were
        lost on the way (a storage agent died with them) and are fetched again."""
        lost = [piece for piece, since in self._pending_since.items() if now - since >= timeout]
        for piece in lost:
            self.piece_failed(piece)
        return lost

    # -- views ------------------------------------------------------------------------------

    def __len__(self) -> int:
        """The number of verified pieces."""
        return self._have.bit_count()

    @property
    def have(self) -> Bitfield:
        return Bitfield.from_int(self._have, self._n)

    @property
    def complete(self) -> bool:
        return self._have == self._all

    @property
    def downloading(self) -> tuple[int, ...]:
        """Pieces some connection is fetching."""
        return tuple(self._owners)

    @property
    def checking(self) -> tuple[int, ...]:
        """Pieces downloaded whole, waiting for their hash check."""
        return tuple(self._pending_since)

    def interesting(self, peer_bits: Bitfield) -> bool:
        """Does the peer have a piece we still lack?"""
        return bool(peer_bits.to_int() & self._all & ~self._have)
