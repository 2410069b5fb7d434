"""An iterative DHT lookup (BEP 5 ``get_peers`` / ``find_node``) as a pure state machine.

Strategy: Kademlia's iterative search. The lookup keeps a shortlist of the candidates closest to
the target (by XOR distance), asks the closest not yet asked, ``alpha`` at a time, and feeds the
nodes each answer names back into the shortlist. It sends nothing itself: the owner (``DhtNode``)
takes ``next_queries(now)``, sends them, and reports what came back with ``on_response`` or
``on_failure``; ``expire(now)`` turns queries that took too long into failures and hands those
nodes back so the owner can tell its routing table.

Rules:
- A candidate is keyed by its address: each address is queried at most once per lookup, whatever
  ids it is given under, and the owner matches answers by address.
- The shortlist holds at most ``capacity`` candidates; a newcomer takes the place of a failed
  one, or else of the farthest one not in flight if that is farther (an address once asked stays
  remembered and is never asked again); a seed not yet asked is never pushed out. From one answer
  at most ``per_response`` nodes are taken (the closest), so a node answering with 1,000 invented
  nodes displaces at most that many real ones. Once ``DISBELIEVE_AFTER`` nodes one answer named
  have failed and none has answered, the rest it named are dropped unasked: a liar costs a
  couple of timeouts, not sixteen.
- Only candidates closer than the ``k``-th closest that answered are asked (libtorrent's window):
  a lookup waiting on a slow near node does not wander through the far end of its shortlist.
- A query older than ``slow_after`` seconds stops holding one of the ``alpha`` slots (another
  candidate is asked meanwhile); after ``timeout`` seconds it has failed.
- An answer whose id differs from the one the candidate was known by (a spoofed or changed id)
  counts as a failure for termination and its token is not kept; its peers and nodes are still
  used, bounded as any other.
- Termination: the ``k`` closest candidates that have not failed have all answered (a farther
  query still in flight does not hold the lookup), or nothing is left to ask and nothing is in
  flight, or ``max_queries`` were sent and none is in flight.
- Peers are deduplicated and at most ``max_peers`` are kept; tokens are kept per answering node
  for ``announce_peer`` to the ``k`` closest that gave one.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Iterable

from torviz.shared.dht.node_id import NodeId, NodeInfo
from torviz.shared.types import InfoHash, PeerAddress

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_CAPACITY",
    "DEFAULT_K",
    "DEFAULT_MAX_PEERS",
    "DEFAULT_MAX_QUERIES",
    "DEFAULT_PER_RESPONSE",
    "DEFAULT_SLOW_AFTER",
    "DEFAULT_TIMEOUT",
    "DISBELIEVE_AFTER",
    "Lookup",
    "LookupKind",
]

DEFAULT_ALPHA = 3
"""Queries in flight at once (BEP 5 / Kademlia's alpha)."""
DEFAULT_K = 8
"""How many closest nodes must answer before the lookup ends (the bucket size)."""
DEFAULT_CAPACITY = 64
"""Candidates kept in the shortlist."""
DEFAULT_PER_RESPONSE = 16
"""Nodes taken from one answer (BEP 5 answers name 8; IPv4 and IPv6 together 16)."""
DEFAULT_MAX_QUERIES = 200
"""Queries one lookup may send, so that it ends even in a network of liars."""
DEFAULT_MAX_PEERS = 2_000
"""Distinct peers one lookup keeps."""
DEFAULT_TIMEOUT = 10.0
"""Seconds after which an unanswered query has failed."""
DISBELIEVE_AFTER = 2
"""Failures of nodes one answer named (none of them answering) after which the rest it named
are dropped unasked."""
DEFAULT_SLOW_AFTER = 2.0
"""Seconds after which an unanswered query no longer holds a slot of ``alpha``."""


class LookupKind(enum.Enum):
    """What a lookup asks each node."""

    FIND_NODE = "find_node"
    GET_PEERS = "get_peers"


class _State(enum.Enum):
    NEW = "new"
    IN_FLIGHT = "in_flight"
    ANSWERED = "answered"
    FAILED = "failed"


class _Candidate:
    __slots__ = ("contact", "distance", "referrer", "sent_at", "state")

    def __init__(self, contact: NodeInfo, distance: int, referrer: PeerAddress | None) -> None:
        self.contact = contact
        self.distance = distance
        self.referrer = referrer
        self.state = _State.NEW
        self.sent_at = 0.0


class Lookup:
    """One iterative search for the nodes closest to ``target`` (and, for get_peers, peers).

    Args:
        target: The id searched for (a node id, or an info hash as an id).
        kind: ``find_node`` or ``get_peers``.
        seeds: The closest nodes the owner knows (its routing table's answer).
        now: The clock, in seconds.
        alpha: Queries in flight at once.
        k: Closest answering nodes that end the lookup.
        capacity: Candidates kept.
        timeout: Seconds until an unanswered query has failed.
        slow_after: Seconds until an unanswered query stops holding a slot.
        per_response: Nodes taken from one answer.
        max_queries: Queries this lookup may send in all.
        max_peers: Distinct peers kept.

    Raises:
        ValueError: A bound below 1, or ``capacity`` below ``k``.
    """

    def __init__(
        self,
        target: NodeId,
        kind: LookupKind,
        seeds: Iterable[NodeInfo],
        now: float,
        *,
        alpha: int = DEFAULT_ALPHA,
        k: int = DEFAULT_K,
        capacity: int = DEFAULT_CAPACITY,
        timeout: float = DEFAULT_TIMEOUT,
        slow_after: float = DEFAULT_SLOW_AFTER,
        per_response: int = DEFAULT_PER_RESPONSE,
        max_queries: int = DEFAULT_MAX_QUERIES,
        max_peers: int = DEFAULT_MAX_PEERS,
    ) -> None:
        if min(alpha, k, capacity, per_response, max_queries, max_peers) < 1:
            raise ValueError("lookup bounds are at least 1")
        if capacity < k:
            raise ValueError("the shortlist holds at least k candidates")
        self.target = target
        self.kind = kind
        self.started = now
        self.alpha = alpha
        self.k = k
        self.capacity = capacity
        self.timeout = timeout
        self.slow_after = min(slow_after, timeout)
        self.per_response = per_response
        self.max_queries = max_queries
        self.max_peers = max_peers
        self._target = target.value
        self._candidates: dict[PeerAddress, _Candidate] = {}
        self._order: list[_Candidate] = []  # the same candidates, closest first
        self._checked = -1  # the value of _changes when _finished was last false
        self._changes = 0  # bumped whenever a candidate is added, dropped or changes state
        self._asked: set[PeerAddress] = set()  # every address ever queried (<= max_queries)
        self._tokens: dict[PeerAddress, bytes] = {}
        self._peers: dict[PeerAddress, None] = {}  # insertion-ordered set
        # Per referrer (a node whose answer named candidates): [named that answered, failed].
        self._referrers: dict[PeerAddress, list[int]] = {}
        self.queries_sent = 0
        self.responses = 0
        self.failures = 0
        self.discarded = 0  # candidates dropped unasked: their referrer named only dead ones
        self._done = False
        self.add_candidates(seeds)

    # -- what the owner reads ------------------------------------------------------------------

    @property
    def info_hash(self) -> InfoHash:
        """The target as an info hash (for a ``get_peers`` lookup)."""
        return InfoHash(self.target.raw)

    @property
    def done(self) -> bool:
        """Whether the lookup has ended (it sends nothing more and ignores late answers)."""
        if not self._done and self._checked != self._changes:
            self._done = self._finished()
            self._checked = self._changes
        return self._done

    @property
    def peers(self) -> list[PeerAddress]:
        """Every distinct peer found so far, in the order found."""
        return list(self._peers)

    @property
    def in_flight(self) -> int:
        """Queries sent and neither answered nor failed."""
        return sum(1 for c in self._candidates.values() if c.state is _State.IN_FLIGHT)

    def closest(self, count: int | None = None) -> list[NodeInfo]:
        """The closest nodes that answered, closest first.

        Args:
            count: How many (default ``k``).

        Returns:
            At most ``count`` contacts.
        """
        answered = [c for c in self._ranked() if c.state is _State.ANSWERED]
        return [c.contact for c in answered[: count or self.k]]

    def closest_with_tokens(self, count: int | None = None) -> list[tuple[NodeInfo, bytes]]:
        """The closest answering nodes that gave a token, for ``announce_peer``.

        Args:
            count: How many (default ``k``).

        Returns:
            At most ``count`` (contact, token) pairs, closest first.
        """
        found = [
            (c.contact, self._tokens[c.contact.address])
            for c in self._ranked()
            if c.state is _State.ANSWERED and c.contact.address in self._tokens
        ]
        return found[: count or self.k]

    def is_waiting_for(self, address: PeerAddress) -> bool:
        """Whether a query to ``address`` is in flight (an answer from it is expected)."""
        candidate = self._candidates.get(address)
        return candidate is not None and candidate.state is _State.IN_FLIGHT

    def next_deadline(self, now: float) -> float | None:
        """When ``expire`` (or ``next_queries``, as a query turns slow) next has work, if ever.

        Args:
            now: The clock.

        Returns:
            The earliest time a query in flight turns slow or fails; None when none is in flight.
        """
        times = []
        for c in self._candidates.values():
            if c.state is _State.IN_FLIGHT:
                slow = c.sent_at + self.slow_after
                times.append(slow if slow > now else c.sent_at + self.timeout)
        return min(times, default=None)

    # -- what the owner does -------------------------------------------------------------------

    def add_candidates(
        self, contacts: Iterable[NodeInfo], referrer: PeerAddress | None = None
    ) -> int:
        """Consider more nodes (seeds, a bootstrap router's answer, an answer's ``nodes``).

        Args:
            contacts: The nodes; ones already known or already asked are skipped.
            referrer: The node whose answer named them (None: seeds we trust).

        Returns:
            How many entered the shortlist.
        """
        added = 0
        for contact in contacts:
            address = contact.address
            if address in self._candidates or address in self._asked:
                continue
            distance = contact.id.value ^ self._target
            if len(self._candidates) >= self.capacity and not self._evict_for(distance):
                continue
            candidate = _Candidate(contact, distance, referrer)
            self._candidates[address] = candidate
            bisect.insort(self._order, candidate, key=_distance)
            added += 1
            self._changes += 1
        return added

    def next_queries(self, now: float) -> list[NodeInfo]:
        """The nodes to ask now; each is marked in flight and will not be returned again.

        Args:
            now: The clock.

        Returns:
            Up to ``alpha`` less the slots busy, closest first; none once done.
        """
        if self.done:
            return []
        busy = sum(1 for c in self._candidates.values() if self._holds_slot(c, now))
        chosen: list[NodeInfo] = []
        answered = 0
        for candidate in self._ranked():
            if busy + len(chosen) >= self.alpha or self.queries_sent >= self.max_queries:
                break
            if answered >= self.k:
                break  # nothing farther than the k closest that answered is worth asking
            if candidate.state is _State.ANSWERED:
                answered += 1
            elif candidate.state is _State.NEW:
                self._changes += 1
                candidate.state = _State.IN_FLIGHT
                candidate.sent_at = now
                self._asked.add(candidate.contact.address)
                self.queries_sent += 1
                chosen.append(candidate.contact)
        return chosen

    def on_response(
        self,
        address: PeerAddress,
        node_id: NodeId,
        nodes: Iterable[NodeInfo],
        values: Iterable[PeerAddress],
        token: bytes | None,
        now: float,
    ) -> list[PeerAddress]:
        """An answer from a node asked by this lookup.

        Args:
            address: Where the answer came from.
            node_id: The id the answer carries.
            nodes: The nodes it names (only the ``per_response`` closest are taken).
            values: The peers it names (get_peers).
            token: Its token for ``announce_peer``, if any.
            now: The clock.

        Returns:
            The peers new to this lookup (empty when the answer was not expected).
        """
        candidate = self._candidates.get(address)
        if self._done or candidate is None or candidate.state is not _State.IN_FLIGHT:
            return []
        self.responses += 1
        self._changes += 1
        if node_id == candidate.contact.id:
            candidate.state = _State.ANSWERED
            if candidate.referrer is not None:
                self._referrers.setdefault(candidate.referrer, [0, 0])[0] += 1
            if token is not None and self.kind is LookupKind.GET_PEERS:
                self._tokens[address] = token
        else:
            self._fail(candidate)
        new_peers = []
        for peer in values:
            if len(self._peers) >= self.max_peers:
                break
            if peer not in self._peers:
                self._peers[peer] = None
                new_peers.append(peer)
        self.add_candidates(self._closest_of(nodes), address)
        return new_peers

    def on_failure(self, address: PeerAddress, now: float) -> bool:
        """A query of this lookup failed (an error answer, or the owner gave up on it).

        Args:
            address: The node asked.
            now: The clock.

        Returns:
            Whether the failure concerned a query in flight (False when already settled).
        """
        candidate = self._candidates.get(address)
        if candidate is None or candidate.state is not _State.IN_FLIGHT:
            return False
        self._fail(candidate)
        return True

    def expire(self, now: float) -> list[NodeInfo]:
        """Fail the queries that have waited ``timeout`` seconds.

        Args:
            now: The clock.

        Returns:
            The nodes that failed (the owner tells its routing table).
        """
        late = [
            c
            for c in self._candidates.values()
            if c.state is _State.IN_FLIGHT and now - c.sent_at >= self.timeout
        ]
        for candidate in late:
            self._fail(candidate)
        return [c.contact for c in late]

    def cancel(self) -> list[NodeInfo]:
        """End the lookup now (its torrent was removed).

        Returns:
            The nodes still asked: their answers will be ignored.
        """
        pending = [c.contact for c in self._candidates.values() if c.state is _State.IN_FLIGHT]
        self._done = True
        return pending

    # -- inside --------------------------------------------------------------------------------

    def _fail(self, candidate: _Candidate) -> None:
        """A candidate failed; a referrer whose named nodes fail and never answer loses the
        candidates it named that were not asked yet (they may come back, named by another)."""
        candidate.state = _State.FAILED
        self.failures += 1
        self._changes += 1
        referrer = candidate.referrer
        if referrer is None:
            return
        score = self._referrers.setdefault(referrer, [0, 0])
        score[1] += 1
        if score[0] == 0 and score[1] >= DISBELIEVE_AFTER:
            for address in [
                a
                for a, c in self._candidates.items()
                if c.referrer == referrer and c.state is _State.NEW
            ]:
                self._remove(self._candidates[address])
                self.discarded += 1

    def _ranked(self) -> list[_Candidate]:
        return self._order

    def _remove(self, candidate: _Candidate) -> None:
        del self._candidates[candidate.contact.address]
        index = bisect.bisect_left(self._order, candidate.distance, key=_distance)
        while self._order[index] is not candidate:
            index += 1
        del self._order[index]
        self._changes += 1

    def _holds_slot(self, candidate: _Candidate, now: float) -> bool:
        return candidate.state is _State.IN_FLIGHT and now - candidate.sent_at < self.slow_after

    def _closest_of(self, nodes: Iterable[NodeInfo]) -> list[NodeInfo]:
        """The ``per_response`` nodes of an answer closest to the target, reading at most a
        bounded number of them."""
        taken: list[NodeInfo] = []
        for index, contact in enumerate(nodes):
            if index >= 16 * self.per_response:  # an answer is bounded already; be sure
                break
            taken.append(contact)
        if len(taken) > self.per_response:
            taken.sort(key=lambda c: c.id.value ^ self._target)
            del taken[self.per_response :]
        return taken

    def _evict_for(self, distance: int) -> bool:
        """Make room for a candidate at ``distance``: drop the farthest failed candidate, or else
        the farthest one not in flight if it is farther than the newcomer. A seed not yet asked
        stays: nodes invented by liars must not push out the nodes we started from.

        Returns:
            Whether room was made.
        """
        settled = [
            c
            for c in self._candidates.values()
            if c.state is not _State.IN_FLIGHT
            and not (c.state is _State.NEW and c.referrer is None)
        ]
        failed = [c for c in settled if c.state is _State.FAILED]
        victim = max(failed or settled, key=lambda c: c.distance, default=None)
        if victim is None or (not failed and victim.distance <= distance):
            return False
        self._remove(victim)
        self._tokens.pop(victim.contact.address, None)
        return True

    def _finished(self) -> bool:
        in_flight = any(c.state is _State.IN_FLIGHT for c in self._candidates.values())
        if self.queries_sent >= self.max_queries and not in_flight:
            return True
        alive = [c for c in self._ranked() if c.state is not _State.FAILED]
        if not alive:
            return not in_flight
        top = alive[: self.k]
        if all(c.state is _State.ANSWERED for c in top) and len(top) == self.k:
            return True
        return not in_flight and not any(c.state is _State.NEW for c in alive)


def _distance(candidate: _Candidate) -> int:
    return candidate.distance
