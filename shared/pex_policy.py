"""Peer exchange policy (BEP 11) for one torrent: what to tell each connection, and what to
believe of what a connection tells us. Pure: the caller passes ``now`` (seconds, monotonic).

Strategy, sending: the policy keeps the set of peers torviz is connected to (``connected`` /
``disconnected``, each under the peer's *listen* address) and, per connection, the set that
connection has already been told about. ``next_message`` is the difference: peers added and
dropped since the last message, at most ``max_added`` and ``max_dropped`` of each (the rest
waits for the next message), never the receiving peer itself, never more often than
``send_interval``, and nothing at all when nothing changed (uTorrent drops peers that send
empty PEX messages). A peer that came and went between two messages is never mentioned.

Strategy, receiving: ``receive`` turns a decoded ``PexMessage`` from a source connection into
candidates, bounded three ways so that one lying peer can neither fill the candidate list nor
aim torviz at a third party: at most ``max_accept_per_message`` new addresses per message, at
most ``max_kept_per_source`` addresses kept per source (its ``dropped`` entries free room),
and at most ``max_attempts_per_address`` connection attempts to one address learned through
PeX (``may_attempt`` / ``record_attempt``), whichever sources name it. Messages arriving
sooner than ``min_receive_interval`` after the previous one from the same source are ignored.
The attempt ledger holds at most ``max_tracked_addresses``; when full, new PeX addresses are
refused (fail closed) rather than forgetting the counts of old ones.

Rules:
- BEP 27: a private torrent gets no PeX at all: constructing the policy raises ``PexDisabledError``.
- The receiving connection, the source itself and torviz's own addresses are never candidates.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from torviz.shared.types import PeerAddress
from torviz.shared.wire.pex import PexMessage

__all__ = ["PexCandidate", "PexDisabledError", "PexLimits", "PexPolicy", "PexReceipt"]


class PexDisabledError(ValueError):
    """PeX asked for where it must not run (a private torrent, BEP 27)."""


@dataclass(frozen=True, slots=True)
class PexLimits:
    """Bounds of the policy (seconds and counts)."""

    send_interval: float = 60.0
    max_added: int = 50
    max_dropped: int = 50
    min_receive_interval: float = 45.0
    max_accept_per_message: int = 50
    max_kept_per_source: int = 200
    max_attempts_per_address: int = 3
    max_tracked_addresses: int = 10_000


@dataclass(frozen=True, slots=True)
class PexCandidate:
    """An address learned through PeX, with its BEP 11 flag byte and the peer that sent it."""

    address: PeerAddress
    flags: int
    source: PeerAddress


@dataclass(frozen=True, slots=True)
class PexReceipt:
    """What ``receive`` made of one message.

    Attributes:
        candidates: new addresses to add to the candidate list.
        ignored: added entries left out (over a cap, already known, or not allowed).
        too_frequent: the whole message was ignored because it came too soon.
    """

    candidates: tuple[PexCandidate, ...]
    ignored: int
    too_frequent: bool = False


@dataclass(slots=True)
class _Outgoing:
    told: dict[PeerAddress, int] = field(default_factory=dict)
    last_sent: float = -math.inf


@dataclass(slots=True)
class _Source:
    kept: set[PeerAddress] = field(default_factory=set)
    last_received: float = -math.inf


class PexPolicy:
    """BEP 11 bookkeeping for one torrent (see the module comment).

    Args:
        private: the torrent's ``private`` flag; True raises ``PexDisabledError``.
        limits: the bounds.
        own_addresses: torviz's own listen addresses, never sent and never candidates.

    Raises:
        PexDisabledError: the torrent is private (BEP 27).
    """

    def __init__(
        self,
        *,
        private: bool,
        limits: PexLimits | None = None,
        own_addresses: Iterable[PeerAddress] = (),
    ) -> None:
        if private:
            raise PexDisabledError("peer exchange is off for private torrents (BEP 27)")
        self.limits = limits or PexLimits()
        self._own = frozenset(own_addresses)
        self._connected: dict[PeerAddress, int] = {}
        self._outgoing: dict[PeerAddress, _Outgoing] = {}
        self._sources: dict[PeerAddress, _Source] = {}
        self._attempts: dict[PeerAddress, int] = {}

    # --- the swarm torviz is connected to ---

    def connected(self, peer: PeerAddress, flags: int = 0) -> None:
        """torviz completed a handshake with ``peer`` (its listen address) with these flags."""
        if peer not in self._own:
            self._connected[peer] = flags & 0xFF

    def disconnected(self, peer: PeerAddress) -> None:
        """The connection to ``peer`` ended: it is dropped from every later message."""
        self._connected.pop(peer, None)
        self._outgoing.pop(peer, None)
        self._sources.pop(peer, None)

    # --- sending ---

    def open(self, connection: PeerAddress) -> None:
        """``connection`` speaks ``ut_pex``: start telling it about the swarm."""
        self._outgoing.setdefault(connection, _Outgoing())

    def next_deadline(self, connection: PeerAddress) -> float | None:
        """When ``next_message`` may next send to ``connection`` (None if not open)."""
        state = self._outgoing.get(connection)
        return None if state is None else state.last_sent + self.limits.send_interval

    def next_message(self, connection: PeerAddress, now: float) -> PexMessage | None:
        """The message to send ``connection`` now, or None (too soon, nothing new, not open).

        Sending is assumed once this returns a message: the connection's view is updated.
        """
        state = self._outgoing.get(connection)
        if state is None or now < state.last_sent + self.limits.send_interval:
            return None
        current = {peer: f for peer, f in self._connected.items() if peer != connection}
        added = [peer for peer in current if peer not in state.told]
        added = sorted(added, key=_order)[: self.limits.max_added]
        dropped = sorted((p for p in state.told if p not in current), key=_order)
        dropped = dropped[: self.limits.max_dropped]
        if not added and not dropped:
            return None
        for peer in added:
            state.told[peer] = current[peer]
        for peer in dropped:
            del state.told[peer]
        state.last_sent = now
        v4 = [p for p in added if not p.is_ipv6]
        v6 = [p for p in added if p.is_ipv6]
        return PexMessage(
            added=tuple(v4),
            added_flags=tuple(current[p] for p in v4),
            dropped=tuple(p for p in dropped if not p.is_ipv6),
            added6=tuple(v6),
            added6_flags=tuple(current[p] for p in v6),
            dropped6=tuple(p for p in dropped if p.is_ipv6),
        )

    # --- receiving ---

    def receive(self, source: PeerAddress, message: PexMessage, now: float) -> PexReceipt:
        """Take the addresses ``source`` sent, within the caps.

        Returns:
            The new candidates and how many added entries were left out.
        """
        limits = self.limits
        state = self._sources.setdefault(source, _Source())
        offered = len(message.added) + len(message.added6)
        if now < state.last_received + limits.min_receive_interval:
            return PexReceipt((), offered, too_frequent=True)
        state.last_received = now
        for peer in (*message.dropped, *message.dropped6):
            state.kept.discard(peer)
        candidates: list[PexCandidate] = []
        pairs = (
            *zip(message.added, message.added_flags, strict=False),
            *zip(message.added6, message.added6_flags, strict=False),
        )
        for peer, flags in pairs:
            if len(candidates) >= limits.max_accept_per_message:
                break
            if len(state.kept) >= limits.max_kept_per_source:
                break
            if peer == source or peer in self._own or peer in state.kept:
                continue
            if not self._track(peer):
                continue
            state.kept.add(peer)
            candidates.append(PexCandidate(peer, flags, source))
        return PexReceipt(tuple(candidates), offered - len(candidates))

    def may_attempt(self, address: PeerAddress) -> bool:
        """Whether a connection to a PeX-learned ``address`` is still allowed."""
        count = self._attempts.get(address)
        return count is not None and count < self.limits.max_attempts_per_address

    def record_attempt(self, address: PeerAddress) -> bool:
        """Count one connection attempt to a PeX-learned ``address``.

        Returns:
            False when the address is unknown to PeX or its attempts are used up (do not dial).
        """
        if not self.may_attempt(address):
            return False
        self._attempts[address] += 1
        return True

    def _track(self, peer: PeerAddress) -> bool:
        count = self._attempts.get(peer)
        if count is not None:
            return count < self.limits.max_attempts_per_address
        if len(self._attempts) >= self.limits.max_tracked_addresses:
            return False
        self._attempts[peer] = 0
        return True


def _order(peer: PeerAddress) -> tuple[bool, str, int]:
    return (peer.is_ipv6, peer.host, peer.port)
