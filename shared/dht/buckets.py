"""The routing table's parts (BEP 5): one node's record, its state, and one bucket's choices.

Strategy: ``RoutingTable`` (``routing.py``) owns the list of buckets and the indexes by id and
by IP; this module holds what it is built of and the rules that need no more than one node or
one bucket to decide. A ``NodeEntry`` is the table's record of a node (mutable, never handed
out: callers see a frozen ``NodeStatus``); a ``Bucket`` holds up to ``k`` confirmed entries and
a bounded replacement cache. Pure: ``now`` (monotonic seconds) and random sources are passed in.

Node states (BEP 5), from what the table saw:
- bad: failed ``max_failures`` (2) queries of ours in a row; an answer resets the count, a query
  from the node does not (a node behind a NAT may query us and never answer).
- good: answered a query of ours within ``good_for`` (15 minutes), or answered once and queried
  us within ``good_for``.
- questionable: the rest.

Rules:
- A node is confirmed once it has answered a query of ours; only confirmed nodes enter a bucket.
- The table asks for a ping of one node at most once per ``ping_retry`` seconds (a clock that
  went back allows it again).
- A bucket with room, with a bad node, or that can split (the last bucket, fewer than 160 in
  the table) can take a node that answers: its unconfirmed cached nodes are then worth a ping.
- One node per IP (libtorrent's ``dht_restrict_routing_ips``), but per IP and port for the
  local addresses BEP 42 exempts (``node_id.is_bep42_exempt``: loopback, private ranges), where
  several nodes on one host are normal (a LAN, a test swarm on 127.0.0.1): ``ip_key``.
- A full replacement cache drops the least useful entry for a newcomer: never-answered before
  answered, then the least recently heard; a newcomer worse than all of them is refused.
- A freed bucket place goes to the freshest confirmed replacement (latest answer, then latest
  heard).
- Bucket ``i`` below the last holds the ids sharing exactly ``i`` leading bits with ours; the
  last bucket holds every id sharing at least as many (``bucket_index``).
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass, field

from torviz.shared.dht.node_id import (
    ID_BITS,
    NodeId,
    NodeInfo,
    RandomSource,
    is_bep42_exempt,
)
from torviz.shared.types import PeerAddress

__all__ = [
    "Bucket",
    "IpKey",
    "NodeEntry",
    "NodeState",
    "NodeStatus",
    "RoutingLimits",
    "ip_key",
    "random_id_in_bucket",
]

IpKey = tuple[str, int]
"""What the one-node-per-IP rule counts: the IP, and the port for a local IP (else 0)."""


def ip_key(address: PeerAddress) -> IpKey:
    """The key under which a node's address counts for the one-node-per-IP rule.

    Args:
        address: The node's address.

    Returns:
        ``(ip, 0)`` for a public IP (one node per IP); ``(ip, port)`` for a local one that
        BEP 42 exempts (one node per IP and port).
    """
    host = address.host
    return (host, address.port) if is_bep42_exempt(host) else (host, 0)


class NodeState(enum.Enum):
    """BEP 5's judgement of a node (see the module rules)."""

    GOOD = "good"
    QUESTIONABLE = "questionable"
    BAD = "bad"


@dataclass(frozen=True, slots=True)
class RoutingLimits:
    """The table's parameters (counts and seconds, all positive)."""

    k: int = 8
    """Nodes per bucket (BEP 5's K)."""
    max_replacements: int = 8
    """Nodes in a bucket's replacement cache."""
    max_failures: int = 2
    """Failed queries in a row that make a node bad."""
    good_for: float = 900.0
    """Seconds an answer (or a query from a confirmed node) keeps a node good."""
    refresh_after: float = 900.0
    """Seconds a bucket may stay unchanged before it is refreshed."""
    ping_retry: float = 30.0
    """Seconds before the table asks again for a ping of the same node."""

    def __post_init__(self) -> None:
        for name in ("k", "max_replacements", "max_failures", "good_for", "refresh_after"):
            if not getattr(self, name) > 0:
                raise ValueError(f"routing limit {name} must be positive")
        if self.ping_retry < 0:
            raise ValueError("routing limit ping_retry must not be negative")


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """A snapshot of one node the table knows (for tests, logs and status)."""

    info: NodeInfo
    state: NodeState
    in_bucket: bool
    confirmed: bool
    failures: int
    last_response: float | None
    last_query: float | None


@dataclass(slots=True)
class NodeEntry:
    """The table's record of one node, in a bucket or a replacement cache."""

    info: NodeInfo
    confirmed: bool = False
    """It answered a query of ours at least once."""
    last_response: float | None = None
    last_query: float | None = None
    last_heard: float = float("-inf")
    """The latest answer or query, whichever came last."""
    failures: int = 0
    """Queries of ours it failed in a row."""
    ping_asked: float | None = None
    """When the table last asked for it to be pinged."""

    def touch(self, now: float, responded: bool) -> None:
        """Record an answer to our query (``responded``) or a query it sent us."""
        self.last_heard = now
        if responded:
            self.confirmed = True
            self.last_response = now
            self.failures = 0
        else:
            self.last_query = now

    def is_bad(self, limits: RoutingLimits) -> bool:
        """Whether it failed ``max_failures`` queries in a row."""
        return self.failures >= limits.max_failures

    def state(self, limits: RoutingLimits, now: float) -> NodeState:
        """Its state now (see the module rules)."""
        if self.is_bad(limits):
            return NodeState.BAD
        good_for = limits.good_for
        if self.last_response is not None and now - self.last_response < good_for:
            return NodeState.GOOD
        if self.confirmed and self.last_query is not None and now - self.last_query < good_for:
            return NodeState.GOOD
        return NodeState.QUESTIONABLE

    def may_ask(self, limits: RoutingLimits, now: float) -> bool:
        """Whether the table may ask for a ping of it now (``ping_retry``)."""
        asked = self.ping_asked
        return asked is None or now - asked >= limits.ping_retry or now < asked

    def status(self, limits: RoutingLimits, in_bucket: bool, now: float) -> NodeStatus:
        """A frozen snapshot of the record, with its state now."""
        return NodeStatus(
            info=self.info,
            state=self.state(limits, now),
            in_bucket=in_bucket,
            confirmed=self.confirmed,
            failures=self.failures,
            last_response=self.last_response,
            last_query=self.last_query,
        )


@dataclass(slots=True)
class Bucket:
    """One k-bucket: its nodes, its replacement cache (oldest first), its last change."""

    last_changed: float
    nodes: dict[NodeId, NodeEntry] = field(default_factory=dict)
    cache: OrderedDict[NodeId, NodeEntry] = field(default_factory=OrderedDict)

    def has_room_or_bad(self, limits: RoutingLimits, *, can_split: bool = False) -> bool:
        """Whether a node that answers could take a place now.

        Args:
            limits: The table's parameters.
            can_split: Whether this bucket would split when full (the last one, fewer than
                160 in the table): it then counts as having room.

        Returns:
            True when it has room, can split, or holds a bad node.
        """
        if can_split or len(self.nodes) < limits.k:
            return True
        return any(e.is_bad(limits) for e in self.nodes.values())

    def questionable_nodes(self, limits: RoutingLimits, now: float) -> list[NodeEntry]:
        """Its questionable nodes, least recently heard first."""
        return sorted(
            (e for e in self.nodes.values() if e.state(limits, now) is NodeState.QUESTIONABLE),
            key=lambda e: e.last_heard,
        )

    def worst_bad_node(self, limits: RoutingLimits) -> NodeEntry | None:
        """The bad node to replace first (most failures, then least recently heard), or None."""
        bad = [e for e in self.nodes.values() if e.is_bad(limits)]
        return max(bad, key=lambda e: (e.failures, -e.last_heard)) if bad else None

    def cache_victim(self, newcomer: NodeEntry) -> NodeEntry | None:
        """The least useful cached entry, to drop for a newcomer when the cache is full.

        Returns:
            That entry, or None when the newcomer is less useful than every cached entry (it
            is then refused).
        """
        victim = min(self.cache.values(), key=lambda e: (e.confirmed, e.last_heard))
        if (victim.confirmed, victim.last_heard) > (newcomer.confirmed, newcomer.last_heard):
            return None
        return victim

    def best_replacement(self) -> NodeEntry | None:
        """The freshest confirmed cached node, to take a freed place, or None."""
        confirmed = [e for e in self.cache.values() if e.confirmed]
        if not confirmed:
            return None
        return max(confirmed, key=lambda e: (e.last_response or float("-inf"), e.last_heard))


def random_id_in_bucket(own_id: NodeId, index: int, *, last: bool, rng: RandomSource) -> NodeId:
    """A random id in bucket ``index``'s range, for a refresh lookup.

    Args:
        own_id: Our node id.
        index: The bucket.
        last: Whether it is the last bucket (any id sharing ``index`` leading bits with ours)
            rather than one holding the ids sharing exactly ``index`` bits.
        rng: Picks the free bits.

    Returns:
        An id inside the bucket's range.
    """
    fixed = index if last else index + 1  # leading bits given by the range
    free = ID_BITS - fixed
    prefix = (own_id.value >> free) << free
    if not last:
        prefix ^= 1 << free  # bit ``index`` differs from ours
    return NodeId.from_int(prefix | (rng.getrandbits(free) if free else 0))
