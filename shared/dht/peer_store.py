"""Peers other nodes announced to us (BEP 5 ``announce_peer``), served back in ``get_peers``.

Strategy: one ordered map of ``(info hash, peer address) -> time of the last announce``, oldest
first (a repeated announce moves the entry to the end), and per info hash an ordered set of its
addresses, oldest first. Expiry and every eviction take the head of one of them, so an announce,
a sweep step and an eviction each cost O(1); ``values`` samples one info hash's addresses with
the random generator the caller passes in. Pure: ``now`` (monotonic seconds) comes from the caller.

Limits (libtorrent's ``dht_storage.cpp`` for comparison: 500 peers per info hash, 2,000 info
hashes, 100 peers per reply, entries dropped 45 minutes after their last announce; full tables
drop the new announce):
- ``expiry``: an announce counts for 30 minutes (BEP 5 peers re-announce every 15-30 minutes).
- ``max_peers_per_info_hash``: a full info hash drops its *oldest* peer for a new one (a fresh
  announce is likelier to be reachable than one 29 minutes old).
- ``max_peers``: a full store drops the oldest peer of all.
- ``max_info_hashes``: a new info hash beyond the cap is refused (``announce`` returns False):
  dropping whole swarms to make room would let one node with many tokens flush the store.
- ``values`` returns at most ``MAX_VALUES_V4`` IPv4 or ``MAX_VALUES_V6`` IPv6 peers, so that a
  ``get_peers`` answer fits one datagram: a compact IPv4 value is ``6:`` + 6 bytes (8 bytes),
  100 of them 800 bytes; an IPv6 value ``18:`` + 18 bytes (21 bytes), 50 of them 1,050 bytes,
  under the 1,232 bytes of UDP payload that IPv6's minimum MTU guarantees.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from dataclasses import dataclass

from torviz.shared.types import InfoHash, PeerAddress

__all__ = ["MAX_VALUES_V4", "MAX_VALUES_V6", "PeerStore", "PeerStoreLimits"]

MAX_VALUES_V4 = 100
MAX_VALUES_V6 = 50


@dataclass(frozen=True, slots=True)
class PeerStoreLimits:
    """Bounds of the store (seconds and counts, all positive)."""

    expiry: float = 1800.0
    """Seconds an announce counts for."""
    max_peers_per_info_hash: int = 500
    """Peers kept per info hash, IPv4 and IPv6 together."""
    max_peers: int = 10_000
    """Peers kept in all."""
    max_info_hashes: int = 2_000
    """Info hashes kept."""

    def __post_init__(self) -> None:
        for name in ("expiry", "max_peers_per_info_hash", "max_peers", "max_info_hashes"):
            if not getattr(self, name) > 0:
                raise ValueError(f"peer store limit {name} must be positive")


class PeerStore:
    """Announced peers per info hash, bounded and expiring."""

    def __init__(self, rng: random.Random, limits: PeerStoreLimits | None = None) -> None:
        """An empty store.

        Args:
            rng: Picks the sample ``values`` returns (seeded in tests).
            limits: The bounds; the defaults above when None.
        """
        self._rng = rng
        self._limits = limits or PeerStoreLimits()
        self._announced: OrderedDict[tuple[InfoHash, PeerAddress], float] = OrderedDict()
        self._swarms: dict[InfoHash, OrderedDict[PeerAddress, None]] = {}

    @property
    def limits(self) -> PeerStoreLimits:
        """The bounds in force."""
        return self._limits

    def announce(self, info_hash: InfoHash, peer: PeerAddress, now: float) -> bool:
        """Record that ``peer`` is in the swarm of ``info_hash`` (the token was checked before).

        Args:
            info_hash: The torrent announced.
            peer: The announcing node's IP with the port it announced (or its source port when
                ``implied_port`` was set).
            now: The current time (monotonic seconds).

        Returns:
            True when stored (or refreshed); False when the info hash is new and the store
            already holds ``max_info_hashes`` of them.
        """
        self.sweep(now)
        key = (info_hash, peer)
        if key in self._announced:
            self._announced.move_to_end(key)
            self._swarms[info_hash].move_to_end(peer)
            self._announced[key] = now
            return True
        swarm = self._swarms.get(info_hash)
        if swarm is None and len(self._swarms) >= self._limits.max_info_hashes:
            return False
        if swarm is not None and len(swarm) >= self._limits.max_peers_per_info_hash:
            self._drop((info_hash, next(iter(swarm))))
        if len(self._announced) >= self._limits.max_peers:
            self._drop(next(iter(self._announced)))
        self._announced[key] = now
        self._swarms.setdefault(info_hash, OrderedDict())[peer] = None
        return True

    def values(self, info_hash: InfoHash, count: int, *, ipv6: bool) -> list[PeerAddress]:
        """A random sample of the peers of ``info_hash`` of one address family.

        Expired entries are not swept here (``values`` answers queries and stays read-only);
        call ``sweep`` from the timer, or rely on ``announce`` doing it.

        Args:
            info_hash: The torrent asked for.
            count: How many the caller wants; clamped to ``MAX_VALUES_V4`` / ``MAX_VALUES_V6``.
            ipv6: IPv6 peers (for ``values`` of an IPv6 node, BEP 32) rather than IPv4.

        Returns:
            At most ``min(count, cap)`` distinct addresses, in random order.
        """
        swarm = self._swarms.get(info_hash)
        if swarm is None or count <= 0:
            return []
        family = [peer for peer in swarm if peer.is_ipv6 == ipv6]
        wanted = min(count, MAX_VALUES_V6 if ipv6 else MAX_VALUES_V4, len(family))
        return self._rng.sample(family, wanted)

    def sweep(self, now: float) -> int:
        """Drop every announce older than ``expiry``.

        Args:
            now: The current time (monotonic seconds).

        Returns:
            How many peers were dropped.
        """
        dropped = 0
        horizon = now - self._limits.expiry
        while self._announced:
            key, announced_at = next(iter(self._announced.items()))
            if announced_at > horizon:
                break
            self._drop(key)
            dropped += 1
        return dropped

    def next_deadline(self) -> float | None:
        """When the oldest announce expires (monotonic seconds), or None when empty."""
        for announced_at in self._announced.values():
            return announced_at + self._limits.expiry
        return None

    def count(self, info_hash: InfoHash | None = None) -> int:
        """Peers stored for ``info_hash``, or in all when None."""
        if info_hash is None:
            return len(self._announced)
        swarm = self._swarms.get(info_hash)
        return 0 if swarm is None else len(swarm)

    @property
    def info_hash_count(self) -> int:
        """Info hashes with at least one peer."""
        return len(self._swarms)

    def _drop(self, key: tuple[InfoHash, PeerAddress]) -> None:
        del self._announced[key]
        info_hash, peer = key
        swarm = self._swarms[info_hash]
        del swarm[peer]
        if not swarm:
            del self._swarms[info_hash]
