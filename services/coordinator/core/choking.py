"""Whom to upload to: BEP 3's tit-for-tat choker, with the clock passed in.

Every ``rechoke_interval`` (10 s) the interested peers that give us the best download rate get
the regular upload slots: reciprocation. While seeding nobody gives us anything, so the slots go
to the peers we upload to fastest, which spreads our pieces the quickest. One more slot, the
optimistic unchoke, rotates every ``optimistic_interval`` (30 s) to a random interested peer
outside the regular set, three times as likely a newly connected one: that is how a new peer
with nothing to offer gets its first pieces, and how we discover faster partners.

Between rounds a peer that becomes interested while a slot is free is unchoked at once
(``grant``), so a lone leecher of a seeder does not wait up to ten seconds.

Pure: the caller passes ``now`` and a random generator, and applies the answer (``SetChoke``).
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

__all__ = ["Candidate", "Choker", "ChokerConfig"]


@dataclass(frozen=True, slots=True)
class ChokerConfig:
    upload_slots: int = 4
    """Regular unchoke slots (the optimistic unchoke comes on top)."""
    rechoke_interval: float = 10.0
    """Seconds between two choking rounds."""
    optimistic_interval: float = 30.0
    """Seconds an optimistic unchoke lasts before it rotates."""
    new_peer_age: float = 60.0
    """A peer connected for less than this is "new" for the optimistic draw."""
    new_peer_weight: int = 3
    """How much likelier a new peer is to win the optimistic draw."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """What the choker needs to know of one connection."""

    key: Hashable
    interested: bool
    """The peer wants pieces we have."""
    download_rate: float
    """Bytes per second the peer sends us."""
    upload_rate: float
    """Bytes per second we send the peer."""
    connected_at: float
    snubbed: bool = False


class Choker:
    """The set of unchoked connections of one torrent, recomputed every round."""

    def __init__(
        self, rng: random.Random, now: float, config: ChokerConfig = ChokerConfig()
    ) -> None:
        self.config = config
        self._rng = rng
        self._next_round = now
        self._next_optimistic = now
        self.optimistic: Hashable | None = None
        self.unchoked: frozenset[Hashable] = frozenset()

    def due(self, now: float) -> bool:
        return now >= self._next_round

    def next_deadline(self) -> float:
        return self._next_round

    def rechoke(
        self, candidates: Iterable[Candidate], *, seeding: bool, now: float
    ) -> frozenset[Hashable]:
        """One round: returns the connections to have unchoked from now on."""
        peers = {c.key: c for c in candidates}
        interested = [c for c in peers.values() if c.interested]
        # Snubbed peers give us nothing now whatever their rate says: they wait for the draw.
        eligible = [c for c in interested if seeding or not c.snubbed]
        eligible.sort(
            key=lambda c: (c.upload_rate if seeding else c.download_rate, -c.connected_at),
            reverse=True,
        )
        regular = {c.key for c in eligible[: self.config.upload_slots]}
        optimistic_gone = self.optimistic not in peers or not peers[self.optimistic].interested
        if now >= self._next_optimistic or optimistic_gone or self.optimistic in regular:
            self.optimistic = self._draw([c for c in interested if c.key not in regular], now)
            self._next_optimistic = now + self.config.optimistic_interval
        self.unchoked = frozenset(regular | ({self.optimistic} if self.optimistic else set()))
        self._next_round = now + self.config.rechoke_interval
        return self.unchoked

    def grant(self, key: Hashable) -> bool:
        """A peer became interested between rounds: unchoke it now if a slot is free."""
        if key in self.unchoked or len(self.unchoked) >= self.config.upload_slots + 1:
            return key in self.unchoked
        self.unchoked = self.unchoked | {key}
        return True

    def forget(self, key: Hashable) -> None:
        """A connection closed."""
        self.unchoked = self.unchoked - {key}
        if self.optimistic == key:
            self.optimistic = None

    def _draw(self, pool: list[Candidate], now: float) -> Hashable | None:
        if not pool:
            return None
        weights = [
            self.config.new_peer_weight if now - c.connected_at < self.config.new_peer_age else 1
            for c in pool
        ]
        return self._rng.choices(pool, weights)[0].key
