"""The DHT routing table (BEP 5): k-buckets over the 160-bit id space, with replacement caches.

Strategy: buckets are kept as a list. Bucket ``i`` below the last holds the ids that share
exactly ``i`` leading bits with our id (``node_id.bucket_index``); the last bucket holds every id
sharing at least as many bits, ours included, so it is the only one that ever splits (BEP 5).
Each bucket holds at most ``k`` nodes that have answered a query of ours at least once
("confirmed") and a bounded replacement cache of the rest. The table never sends anything: when a
node should be pinged it says so (``HeardResult.to_ping``, ``questionable``), the caller sends
the ping and reports the answer (``heard_from(..., responded=True)``) or the timeout
(``failed``). Pure: ``now`` (monotonic seconds) and random sources are passed in.

Node states (BEP 5), from what the table saw:
- bad: failed ``max_failures`` (2) queries of ours in a row; an answer resets the count, a query
  from the node does not (a node behind a NAT may query us and never answer).
- good: answered a query of ours within ``good_for`` (15 minutes), or answered once and queried
  us within ``good_for``.
- questionable: the rest.

Rules:
- Only confirmed nodes (that answered us) enter a bucket. A node heard of any other way (it
  queried us, or it comes from a file) goes to the replacement cache, and if its bucket has room
  the table asks for it to be pinged; its answer moves it in.
- A full bucket: the last bucket splits (up to 160 buckets); else a bad node is replaced at once;
  else the newcomer waits in the replacement cache and the questionable nodes of the bucket are
  to be pinged (all at once, least recently heard first: at most ``k`` pings, where BEP 5 pings
  them one after the other). A node that turns bad is replaced at once by the freshest
  confirmed replacement.
- The table asks for a ping of one node at most once per ``ping_retry`` seconds.
- One node per IP address and per id, over buckets and caches together (libtorrent's
  ``dht_restrict_routing_ips``): an id heard from another address is refused, and so is a second
  id from a known IP, except when it answers from the same IP and port, which evicts the old id
  (the node restarted with a new id, e.g. after BEP 42).
- BEP 42: the ``id_check`` the caller passes (normally ``node_id.is_secure_node_id``) must accept
  a node's id for its IP before the node enters bucket or cache; local addresses
  (``node_id.is_bep42_exempt``: loopback, private ranges) are exempt. None turns the check off.
- One address family per table (BEP 32 keeps a second table for IPv6).
- A bucket unchanged (no node added, replaced or answering) for ``refresh_after`` (15 minutes)
  gets a lookup of a random id in its range (``buckets_to_refresh``).
- ``dump``/``load``: own id and the confirmed nodes' ids and addresses, bencoded; ``load`` reads at
  most ``MAX_DUMP_BYTES`` and turns anything malformed into an empty table and a reason. Loaded
  nodes are confirmed but questionable: they are pinged (``questionable``) before they count as
  good.
- ``change_own_id`` (the id chosen per BEP 42 once the external address is known) rebuilds the
  buckets around the new id and keeps every node that still fits.
"""

from __future__ import annotations

import enum
import ipaddress
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from torviz.shared.bencode import BencodeLimits, decode, encode
from torviz.shared.dht.node_id import (
    ID_BITS,
    NODE_ID_SIZE,
    NodeId,
    NodeInfo,
    RandomSource,
    bucket_index,
    distance,
    is_bep42_exempt,
)
from torviz.shared.errors import BencodeError
from torviz.shared.types import InfoHash, PeerAddress

__all__ = [
    "DUMP_VERSION",
    "MAX_DUMP_BYTES",
    "Admission",
    "HeardResult",
    "IdCheck",
    "LoadedTable",
    "NodeState",
    "NodeStatus",
    "Refusal",
    "RoutingLimits",
    "RoutingTable",
    "TableCounts",
]

IdCheck = Callable[[NodeId, str], bool]
"""A BEP 42 predicate: is this id acceptable for a node at this IP (textual)?"""

DUMP_VERSION = 1
MAX_DUMP_BYTES = 256 * 1024
"""The most ``load`` reads: 160 full buckets of IPv6 nodes take ~49 KiB."""

_DUMP_LIMITS = BencodeLimits(
    max_size=MAX_DUMP_BYTES, max_depth=4, max_string_length=MAX_DUMP_BYTES, max_items=64
)


class NodeState(enum.Enum):
    """BEP 5's judgement of a node (see the module rules)."""

    GOOD = "good"
    QUESTIONABLE = "questionable"
    BAD = "bad"


class Admission(enum.Enum):
    """What ``heard_from`` did with a node."""

    ADDED = "added"
    """Now in a bucket (new, promoted from the cache, or in place of a bad node)."""
    UPDATED = "updated"
    """Was in a bucket already; its times were refreshed."""
    CACHED = "cached"
    """In (or still in) its bucket's replacement cache."""
    REFUSED = "refused"
    """Not kept; ``HeardResult.refusal`` says why."""


class Refusal(enum.Enum):
    """Why a node was not kept."""

    OWN_ID = "own id"
    WRONG_FAMILY = "address family of the other table"
    INSECURE_ID = "id fails the BEP 42 check for its IP"
    ID_AT_OTHER_ADDRESS = "id already known at another address"
    IP_IN_USE = "IP already in the table under another id"
    CACHE_FULL = "bucket and replacement cache full of better nodes"


@dataclass(frozen=True, slots=True)
class HeardResult:
    """The outcome of ``heard_from``: what happened, and whom the caller should ping now."""

    admission: Admission
    refusal: Refusal | None = None
    to_ping: tuple[NodeInfo, ...] = ()


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


@dataclass(frozen=True, slots=True)
class TableCounts:
    """Counts for status: nodes in buckets by state, cached nodes, buckets."""

    nodes: int
    good: int
    questionable: int
    bad: int
    replacements: int
    buckets: int


@dataclass(slots=True)
class _Entry:
    info: NodeInfo
    confirmed: bool = False
    last_response: float | None = None
    last_query: float | None = None
    last_heard: float = float("-inf")
    failures: int = 0
    ping_asked: float | None = None


@dataclass(slots=True)
class _Bucket:
    last_changed: float
    nodes: dict[NodeId, _Entry] = field(default_factory=dict)
    cache: OrderedDict[NodeId, _Entry] = field(default_factory=OrderedDict)


class RoutingTable:
    """One address family's routing table around our own id."""

    def __init__(
        self,
        own_id: NodeId,
        now: float,
        *,
        limits: RoutingLimits | None = None,
        id_check: IdCheck | None = None,
        ipv6: bool = False,
    ) -> None:
        """An empty table: one bucket covering the whole id space.

        Args:
            own_id: Our node id.
            now: The current time (monotonic seconds); buckets count as changed now.
            limits: The parameters; the defaults of ``RoutingLimits`` when None.
            id_check: The BEP 42 predicate applied to non-local nodes, or None for no check.
            ipv6: An IPv6 table (refuses IPv4 nodes) rather than an IPv4 one.
        """
        self._own_id = own_id
        self._limits = limits or RoutingLimits()
        self._id_check = id_check
        self._ipv6 = ipv6
        self._buckets: list[_Bucket] = [_Bucket(last_changed=now)]
        self._by_id: dict[NodeId, _Entry] = {}
        self._by_ip: dict[str, NodeId] = {}

    # -- reading ---------------------------------------------------------------------------

    @property
    def own_id(self) -> NodeId:
        """Our node id."""
        return self._own_id

    @property
    def limits(self) -> RoutingLimits:
        """The parameters in force."""
        return self._limits

    @property
    def ipv6(self) -> bool:
        """Whether this is the IPv6 table."""
        return self._ipv6

    @property
    def bucket_count(self) -> int:
        """Buckets now (1 to 160)."""
        return len(self._buckets)

    def __len__(self) -> int:
        """Nodes in buckets (not counting replacement caches)."""
        return sum(len(b.nodes) for b in self._buckets)

    def __contains__(self, node_id: object) -> bool:
        """Whether a node with this id is in a bucket."""
        if not isinstance(node_id, NodeId):
            return False
        entry = self._by_id.get(node_id)
        return entry is not None and node_id in self._bucket_of(node_id).nodes

    def status(self, node_id: NodeId, now: float) -> NodeStatus | None:
        """What the table knows of one node (in a bucket or a cache), or None."""
        entry = self._by_id.get(node_id)
        if entry is None:
            return None
        in_bucket = node_id in self._bucket_of(node_id).nodes
        return self._status(entry, in_bucket, now)

    def nodes(self, now: float) -> Iterator[NodeStatus]:
        """Every node in a bucket, bucket by bucket (far half first)."""
        for bucket in self._buckets:
            for entry in bucket.nodes.values():
                yield self._status(entry, True, now)

    def counts(self, now: float) -> TableCounts:
        """Counts for status lines and ``DhtSummary``."""
        states = [self._state(e, now) for b in self._buckets for e in b.nodes.values()]
        return TableCounts(
            nodes=len(states),
            good=states.count(NodeState.GOOD),
            questionable=states.count(NodeState.QUESTIONABLE),
            bad=states.count(NodeState.BAD),
            replacements=sum(len(b.cache) for b in self._buckets),
            buckets=len(self._buckets),
        )

    def closest(self, target: NodeId | InfoHash, count: int = 8) -> list[NodeInfo]:
        """The nodes in buckets closest to ``target`` by XOR distance, bad nodes left out.

        Args:
            target: An id or info hash.
            count: How many at most.

        Returns:
            Up to ``count`` nodes, closest first.
        """
        if count <= 0:
            return []
        limit = self._limits.max_failures
        own = self._buckets[self._index(target)]
        near = [e.info for e in own.nodes.values() if e.failures < limit]
        if len(near) < count:
            # The target's bucket shares a longer prefix with the target than any other bucket
            # does, so only when it is short do other buckets matter.
            near = [e.info for b in self._buckets for e in b.nodes.values() if e.failures < limit]
        near.sort(key=lambda info: distance(info.id, target))
        return near[:count]

    def next_deadline(self) -> float | None:
        """When a bucket is next due for a refresh (None while the table is empty)."""
        if not self._by_id:
            return None
        return min(b.last_changed for b in self._buckets) + self._limits.refresh_after

    # -- what to send ----------------------------------------------------------------------

    def questionable(self, now: float, limit: int = 8) -> list[NodeInfo]:
        """Nodes to ping now: questionable nodes in buckets, and unconfirmed cached nodes of
        buckets that have room or hold a bad node (an answer moves them in).

        The table records that it asked: it will not name the same node again for
        ``ping_retry`` seconds, so the caller should ping every node returned.

        Args:
            now: The current time (monotonic seconds).
            limit: How many at most (least recently heard first).

        Returns:
            Up to ``limit`` nodes.
        """
        wanted: list[_Entry] = []
        for bucket in self._buckets:
            for entry in bucket.nodes.values():
                if self._state(entry, now) is NodeState.QUESTIONABLE and self._may_ask(entry, now):
                    wanted.append(entry)
            if self._has_room_or_bad(bucket):
                wanted.extend(
                    e for e in bucket.cache.values() if not e.confirmed and self._may_ask(e, now)
                )
        wanted.sort(key=lambda e: e.last_heard)
        chosen = wanted[: max(limit, 0)]
        for entry in chosen:
            entry.ping_asked = now
        return [e.info for e in chosen]

    def buckets_to_refresh(self, now: float, rng: RandomSource) -> list[NodeId]:
        """Random lookup targets for buckets unchanged for ``refresh_after``; those buckets then
        count as changed now (the lookup that follows refreshes them).

        Args:
            now: The current time (monotonic seconds).
            rng: Picks the targets.

        Returns:
            One target per quiet bucket, each inside its bucket's range; none while the table
            is empty (a lookup would have no node to start from).
        """
        if not self._by_id:
            return []
        targets = []
        for index, bucket in enumerate(self._buckets):
            if now - bucket.last_changed >= self._limits.refresh_after:
                targets.append(self._random_id_in(index, rng))
                bucket.last_changed = now
        return targets

    # -- what was heard --------------------------------------------------------------------

    def heard_from(self, node: NodeInfo, now: float, *, responded: bool) -> HeardResult:
        """A node answered one of our queries (``responded``), or sent us a query.

        Args:
            node: Its id and the address the packet came from.
            now: The current time (monotonic seconds).
            responded: True for an answer to our query (matched by transaction id and
                address), False for a query it sent us.

        Returns:
            What the table did, and the nodes the caller should ping now.
        """
        entry = self._by_id.get(node.id)
        if entry is not None:
            if entry.info.address != node.address:
                return HeardResult(Admission.REFUSED, Refusal.ID_AT_OTHER_ADDRESS)
            self._touch(entry, now, responded)
            bucket = self._bucket_of(node.id)
            if node.id in bucket.nodes:
                if responded:
                    bucket.last_changed = now
                return HeardResult(Admission.UPDATED)
            if not responded:
                return HeardResult(Admission.CACHED, to_ping=self._pings_for_cached(entry, now))
            self._forget(entry)  # answered from the cache: place it afresh
            return self._admit(entry, now)
        refusal = self._refusal(node)
        if refusal is not None:
            return HeardResult(Admission.REFUSED, refusal)
        holder = self._by_ip.get(node.address.host)
        if holder is not None:
            old = self._by_id[holder]
            if not (responded and old.info.address == node.address):
                return HeardResult(Admission.REFUSED, Refusal.IP_IN_USE)
            self.remove(holder)  # the same host and port answered with a new id
        entry = _Entry(info=node)
        self._touch(entry, now, responded)
        return self._admit(entry, now)

    def failed(self, node: NodeInfo, now: float) -> None:
        """A query of ours to ``node`` timed out (or was answered with garbage).

        Args:
            node: The node queried: the id it is known by and the address queried. A different
                address means a different node claiming the id: ignored.
            now: The current time (monotonic seconds).
        """
        entry = self._by_id.get(node.id)
        if entry is None or entry.info.address != node.address:
            return
        entry.failures += 1
        if entry.failures < self._limits.max_failures:
            return
        bucket = self._bucket_of(node.id)
        if node.id not in bucket.nodes:
            self._forget(entry)  # a cached node that does not answer is worth nothing
            return
        replacement = self._best_replacement(bucket)
        if replacement is not None:
            self._forget(entry)
            del bucket.cache[replacement.info.id]
            self._insert(bucket, replacement, now)

    def remove(self, node_id: NodeId) -> bool:
        """Forget a node (bucket or cache); a confirmed replacement takes a freed bucket place.

        Returns:
            Whether the node was known.
        """
        entry = self._by_id.get(node_id)
        if entry is None:
            return False
        bucket = self._bucket_of(node_id)
        was_in_bucket = node_id in bucket.nodes
        self._forget(entry)
        if was_in_bucket:
            replacement = self._best_replacement(bucket)
            if replacement is not None:
                del bucket.cache[replacement.info.id]
                self._insert(bucket, replacement, bucket.last_changed)
        return True

    def change_own_id(self, own_id: NodeId, now: float) -> None:
        """Rebuild the table around a new own id, keeping every node that still fits.

        Nodes keep their history; bucket nodes are placed before cached ones, so a node only
        drops out when its new bucket is full and its cache too.

        Args:
            own_id: The new id (e.g. a BEP 42 id for the external address just learnt).
            now: The current time (monotonic seconds).
        """
        entries = [e for b in self._buckets for e in b.nodes.values()]
        entries += [e for b in self._buckets for e in b.cache.values()]
        self._own_id = own_id
        self._buckets = [_Bucket(last_changed=now)]
        self._by_id.clear()
        self._by_ip.clear()
        for entry in entries:
            if entry.info.id != own_id:
                entry.ping_asked = None
                self._admit(entry, now, ask=False)

    # -- persistence -----------------------------------------------------------------------

    def dump(self) -> bytes:
        """Our id and the confirmed nodes (in buckets, then cached), bencoded for the state
        file: ``{"v": 1, "id": 20 bytes, "nodes": compact entries}``, an entry being the id,
        the packed IP (4 or 16 bytes) and the port (2 bytes, big-endian)."""
        entries = [e for b in self._buckets for e in b.nodes.values()]
        entries += [e for b in self._buckets for e in b.cache.values() if e.confirmed]
        compact = b"".join(_compact(e.info) for e in entries)
        return encode({b"v": DUMP_VERSION, b"id": self._own_id.raw, b"nodes": compact})

    @classmethod
    def load(
        cls,
        data: bytes,
        now: float,
        *,
        fallback_id: NodeId,
        limits: RoutingLimits | None = None,
        id_check: IdCheck | None = None,
        ipv6: bool = False,
    ) -> LoadedTable:
        """A table from ``dump`` output, validated; never raises on bad data.

        Args:
            data: The state file's bytes (untrusted: truncated, stale or garbage).
            now: The current time (monotonic seconds).
            fallback_id: Our id when the data does not give a usable one.
            limits: As for the constructor.
            id_check: As for the constructor; loaded nodes are checked too.
            ipv6: As for the constructor; the entries must be of that family.

        Returns:
            The table and, when the data was unusable, the reason (the table is then empty,
            with ``fallback_id``). Entries the table refuses are counted in ``skipped``.
        """

        def empty(reason: str) -> LoadedTable:
            table = cls(fallback_id, now, limits=limits, id_check=id_check, ipv6=ipv6)
            return LoadedTable(table, reason)

        if len(data) > MAX_DUMP_BYTES:
            return empty(f"routing table file over {MAX_DUMP_BYTES} bytes")
        try:
            value = decode(data, strict=True, limits=_DUMP_LIMITS)
        except BencodeError as exc:
            return empty(f"routing table file is not bencode: {exc}")
        if not isinstance(value, dict):
            return empty("routing table file is not a dictionary")
        version, raw_id, compact = value.get(b"v"), value.get(b"id"), value.get(b"nodes")
        if version != DUMP_VERSION:
            return empty(f"routing table file version {version!r}, not {DUMP_VERSION}")
        if not isinstance(raw_id, bytes) or len(raw_id) != NODE_ID_SIZE:
            return empty("routing table file has no 20-byte id")
        size = NODE_ID_SIZE + (16 if ipv6 else 4) + 2
        if not isinstance(compact, bytes) or len(compact) % size:
            return empty(f"routing table nodes are not a string of {size}-byte entries")
        table = cls(NodeId(raw_id), now, limits=limits, id_check=id_check, ipv6=ipv6)
        skipped = 0
        for start in range(0, len(compact), size):
            info = _from_compact(compact[start : start + size])
            if info is None or not table._restore(info, now):
                skipped += 1
        return LoadedTable(table, None, skipped)

    # -- internals -------------------------------------------------------------------------

    def _index(self, node_id: NodeId | InfoHash) -> int:
        return min(bucket_index(self._own_id, node_id), len(self._buckets) - 1)

    def _bucket_of(self, node_id: NodeId) -> _Bucket:
        return self._buckets[self._index(node_id)]

    def _state(self, entry: _Entry, now: float) -> NodeState:
        if entry.failures >= self._limits.max_failures:
            return NodeState.BAD
        good_for = self._limits.good_for
        if entry.last_response is not None and now - entry.last_response < good_for:
            return NodeState.GOOD
        if entry.confirmed and entry.last_query is not None and now - entry.last_query < good_for:
            return NodeState.GOOD
        return NodeState.QUESTIONABLE

    def _status(self, entry: _Entry, in_bucket: bool, now: float) -> NodeStatus:
        return NodeStatus(
            info=entry.info,
            state=self._state(entry, now),
            in_bucket=in_bucket,
            confirmed=entry.confirmed,
            failures=entry.failures,
            last_response=entry.last_response,
            last_query=entry.last_query,
        )

    def _may_ask(self, entry: _Entry, now: float) -> bool:
        asked = entry.ping_asked
        return asked is None or now - asked >= self._limits.ping_retry or now < asked

    def _has_room_or_bad(self, bucket: _Bucket) -> bool:
        return len(bucket.nodes) < self._limits.k or any(
            e.failures >= self._limits.max_failures for e in bucket.nodes.values()
        )

    @staticmethod
    def _touch(entry: _Entry, now: float, responded: bool) -> None:
        entry.last_heard = now
        if responded:
            entry.confirmed = True
            entry.last_response = now
            entry.failures = 0
        else:
            entry.last_query = now

    def _refusal(self, node: NodeInfo) -> Refusal | None:
        if node.id == self._own_id:
            return Refusal.OWN_ID
        if node.address.is_ipv6 != self._ipv6:
            return Refusal.WRONG_FAMILY
        host = node.address.host
        check = self._id_check
        if check is not None and not is_bep42_exempt(host) and not check(node.id, host):
            return Refusal.INSECURE_ID
        return None

    def _admit(self, entry: _Entry, now: float, *, ask: bool = True) -> HeardResult:
        """Place a node that is in no bucket and no cache (its IP and id are free); ``ask``
        False when nobody will send the pings the result names (loading, a new own id)."""
        while True:
            index = self._index(entry.info.id)
            bucket = self._buckets[index]
            if not entry.confirmed:
                return self._cache(bucket, entry, now, ask=ask)
            if len(bucket.nodes) < self._limits.k:
                self._insert(bucket, entry, now)
                return HeardResult(Admission.ADDED)
            if index == len(self._buckets) - 1 and len(self._buckets) < ID_BITS:
                self._split()
                continue
            bad = [e for e in bucket.nodes.values() if e.failures >= self._limits.max_failures]
            if bad:
                worst = max(bad, key=lambda e: (e.failures, -e.last_heard))
                self._forget(worst)
                self._insert(bucket, entry, now)
                return HeardResult(Admission.ADDED)
            return self._cache(bucket, entry, now, ask=ask)

    def _cache(self, bucket: _Bucket, entry: _Entry, now: float, *, ask: bool) -> HeardResult:
        cache = bucket.cache
        if len(cache) >= self._limits.max_replacements:
            # Drop the least useful: never-answered before answered, then the least recent.
            victim = min(cache.values(), key=lambda e: (e.confirmed, e.last_heard))
            if (victim.confirmed, victim.last_heard) > (entry.confirmed, entry.last_heard):
                return HeardResult(Admission.REFUSED, Refusal.CACHE_FULL)
            self._forget(victim)
        cache[entry.info.id] = entry
        self._index_entry(entry)
        if not ask:
            return HeardResult(Admission.CACHED)
        return HeardResult(Admission.CACHED, to_ping=self._pings_for_cached(entry, now))

    def _pings_for_cached(self, entry: _Entry, now: float) -> tuple[NodeInfo, ...]:
        """Whom to ping for a node waiting in the cache: itself when it could move in once it
        answers, else the bucket's questionable nodes (one of them may have gone)."""
        bucket = self._bucket_of(entry.info.id)
        if not entry.confirmed and self._has_room_or_bad(bucket):
            wanted = [entry]
        else:
            wanted = sorted(
                (e for e in bucket.nodes.values() if self._state(e, now) is NodeState.QUESTIONABLE),
                key=lambda e: e.last_heard,
            )
        chosen = [e for e in wanted if self._may_ask(e, now)]
        for e in chosen:
            e.ping_asked = now
        return tuple(e.info for e in chosen)

    def _best_replacement(self, bucket: _Bucket) -> _Entry | None:
        confirmed = [e for e in bucket.cache.values() if e.confirmed]
        if not confirmed:
            return None
        return max(confirmed, key=lambda e: (e.last_response or float("-inf"), e.last_heard))

    def _insert(self, bucket: _Bucket, entry: _Entry, now: float) -> None:
        bucket.nodes[entry.info.id] = entry
        bucket.last_changed = max(bucket.last_changed, now)
        self._index_entry(entry)

    def _index_entry(self, entry: _Entry) -> None:
        self._by_id[entry.info.id] = entry
        self._by_ip[entry.info.address.host] = entry.info.id

    def _forget(self, entry: _Entry) -> None:
        node_id = entry.info.id
        bucket = self._bucket_of(node_id)
        bucket.nodes.pop(node_id, None)
        bucket.cache.pop(node_id, None)
        del self._by_id[node_id]
        if self._by_ip.get(entry.info.address.host) == node_id:
            del self._by_ip[entry.info.address.host]

    def _split(self) -> None:
        """Split the last bucket: the ids sharing one more bit with ours move to a new one."""
        old = self._buckets[-1]
        depth = len(self._buckets)  # the new bucket holds ids sharing >= depth bits
        new = _Bucket(last_changed=old.last_changed)
        self._buckets.append(new)
        for node_id in [i for i in old.nodes if bucket_index(self._own_id, i) >= depth]:
            new.nodes[node_id] = old.nodes.pop(node_id)
        for node_id in [i for i in old.cache if bucket_index(self._own_id, i) >= depth]:
            new.cache[node_id] = old.cache.pop(node_id)

    def _restore(self, info: NodeInfo, now: float) -> bool:
        """Put a node from the state file in: confirmed once, questionable now."""
        if self._refusal(info) is not None or info.id in self._by_id:
            return False
        if info.address.host in self._by_ip:
            return False
        entry = _Entry(info=info, confirmed=True)
        return self._admit(entry, now, ask=False).admission is not Admission.REFUSED

    def _random_id_in(self, index: int, rng: RandomSource) -> NodeId:
        """A random id in bucket ``index``'s range (the last bucket: any id sharing ``index``
        leading bits with ours)."""
        last = index == len(self._buckets) - 1
        fixed = index if last else index + 1  # leading bits given by the range
        free = ID_BITS - fixed
        prefix = (self._own_id.value >> free) << free
        if not last:
            prefix ^= 1 << free  # bit ``index`` differs from ours
        return NodeId.from_int(prefix | (rng.getrandbits(free) if free else 0))


@dataclass(frozen=True, slots=True)
class LoadedTable:
    """What ``RoutingTable.load`` gives: the table, why the data was unusable (None when it was
    read), and how many of its entries the table refused."""

    table: RoutingTable
    reason: str | None
    skipped: int = 0


def _compact(info: NodeInfo) -> bytes:
    ip = ipaddress.ip_address(info.address.host).packed
    return info.id.raw + ip + info.address.port.to_bytes(2, "big")


def _from_compact(entry: bytes) -> NodeInfo | None:
    node_id = NodeId(entry[:NODE_ID_SIZE])
    packed = entry[NODE_ID_SIZE:-2]
    port = int.from_bytes(entry[-2:], "big")
    ip = ipaddress.ip_address(packed)
    if port == 0 or ip.is_unspecified or ip.is_multicast:
        return None
    return NodeInfo(node_id, PeerAddress(str(ip), port))
