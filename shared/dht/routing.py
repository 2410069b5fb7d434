"""The DHT routing table (BEP 5): k-buckets over the 160-bit id space, with replacement caches.

Strategy: buckets are kept as a list. Bucket ``i`` below the last holds the ids that share
exactly ``i`` leading bits with our id (``node_id.bucket_index``); the last bucket holds every id
sharing at least as many bits, ours included, so it is the only one that ever splits (BEP 5).
Each bucket holds at most ``k`` nodes that have answered a query of ours at least once
("confirmed") and a bounded replacement cache of the rest. The table never sends anything: when a
node should be pinged it says so (``HeardResult.to_ping``, ``questionable``), the caller sends
the ping and reports the answer (``heard_from(..., responded=True)``) or the timeout
(``failed``). Pure: ``now`` (monotonic seconds) and random sources are passed in.

This module keeps the buckets in order, the indexes by id and by IP, and the rules that span
buckets; ``buckets.py`` holds a node's record, the node states (good, questionable, bad) and the
choices inside one bucket; ``table_file.py`` the file form behind ``dump``/``load``. Their public
names are importable from here too.

Rules:
- Only confirmed nodes (that answered us) enter a bucket. A node heard of any other way (it
  queried us, or it comes from a file) goes to the replacement cache, and if its bucket has room
  (or holds a bad node, or is the last bucket and can split) the table asks for it to be pinged;
  its answer moves it in (splitting the last bucket if need be).
- A full bucket: the last bucket splits (up to 160 buckets); else a bad node is replaced at once;
  else the newcomer waits in the replacement cache and the questionable nodes of the bucket are
  to be pinged (all at once, least recently heard first: at most ``k`` pings, where BEP 5 pings
  them one after the other). A node that turns bad is replaced at once by the freshest
  confirmed replacement.
- The table asks for a ping of one node at most once per ``ping_retry`` seconds.
- One node per IP address and per id, over buckets and caches together (libtorrent's
  ``dht_restrict_routing_ips``): an id heard from another address is refused, and so is a second
  id from a known IP, except when it answers from the same IP and port, which evicts the old id
  (the node restarted with a new id, e.g. after BEP 42). Local addresses (those BEP 42 exempts)
  count per IP and port instead (``buckets.ip_key``): several nodes on one LAN host or on
  127.0.0.1 all enter.
- BEP 42: the ``id_check`` the caller passes (normally ``node_id.is_secure_node_id``) must accept
  a node's id for its IP before the node enters bucket or cache; local addresses
  (``node_id.is_bep42_exempt``: loopback, private ranges) are exempt. None turns the check off.
- One address family per table (BEP 32 keeps a second table for IPv6).
- A bucket unchanged (no node added, replaced or answering) for ``refresh_after`` (15 minutes)
  gets a lookup of a random id in its range (``buckets_to_refresh``).
- ``dump``/``load``: own id and the confirmed nodes' ids and addresses (``table_file.py``);
  ``load`` turns an unusable file into an empty table and a reason, and counts the entries it
  could not use or the table refused. Loaded nodes are confirmed but questionable: they are
  pinged (``questionable``) before they count as good.
- ``change_own_id`` (the id chosen per BEP 42 once the external address is known) rebuilds the
  buckets around the new id and keeps every node that still fits.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from torviz.shared.dht.buckets import (
    Bucket,
    IpKey,
    NodeEntry,
    NodeState,
    NodeStatus,
    RoutingLimits,
    ip_key,
    random_id_in_bucket,
)
from torviz.shared.dht.node_id import (
    ID_BITS,
    NodeId,
    NodeInfo,
    RandomSource,
    bucket_index,
    distance,
    is_bep42_exempt,
)
from torviz.shared.dht.table_file import (
    DUMP_VERSION,
    MAX_DUMP_BYTES,
    read_table_file,
    write_table_file,
)
from torviz.shared.types import InfoHash

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
    IP_IN_USE = "IP (IP and port, for a local IP) already in the table under another id"
    CACHE_FULL = "bucket and replacement cache full of better nodes"


@dataclass(frozen=True, slots=True)
class HeardResult:
    """The outcome of ``heard_from``: what happened, and whom the caller should ping now."""

    admission: Admission
    refusal: Refusal | None = None
    to_ping: tuple[NodeInfo, ...] = ()


@dataclass(frozen=True, slots=True)
class TableCounts:
    """Counts for status: nodes in buckets by state, cached nodes, buckets."""

    nodes: int
    good: int
    questionable: int
    bad: int
    replacements: int
    buckets: int


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
        self._buckets: list[Bucket] = [Bucket(last_changed=now)]
        self._by_id: dict[NodeId, NodeEntry] = {}
        self._by_ip: dict[IpKey, NodeId] = {}

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
        return entry.status(self._limits, in_bucket, now)

    def nodes(self, now: float) -> Iterator[NodeStatus]:
        """Every node in a bucket, bucket by bucket (far half first)."""
        for bucket in self._buckets:
            for entry in bucket.nodes.values():
                yield entry.status(self._limits, True, now)

    def counts(self, now: float) -> TableCounts:
        """Counts for status lines and ``DhtSummary``."""
        states = [e.state(self._limits, now) for b in self._buckets for e in b.nodes.values()]
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
        limits = self._limits
        own = self._buckets[self._index(target)]
        near = [e.info for e in own.nodes.values() if not e.is_bad(limits)]
        if len(near) < count:
            # The target's bucket shares a longer prefix with the target than any other bucket
            # does, so only when it is short do other buckets matter.
            near = [e.info for b in self._buckets for e in b.nodes.values() if not e.is_bad(limits)]
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
        limits = self._limits
        wanted: list[NodeEntry] = []
        for index, bucket in enumerate(self._buckets):
            wanted.extend(
                e for e in bucket.questionable_nodes(limits, now) if e.may_ask(limits, now)
            )
            if bucket.has_room_or_bad(limits, can_split=self._can_split(index)):
                wanted.extend(
                    e for e in bucket.cache.values() if not e.confirmed and e.may_ask(limits, now)
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
        last = len(self._buckets) - 1
        for index, bucket in enumerate(self._buckets):
            if now - bucket.last_changed >= self._limits.refresh_after:
                targets.append(
                    random_id_in_bucket(self._own_id, index, last=index == last, rng=rng)
                )
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
            entry.touch(now, responded)
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
        holder = self._by_ip.get(ip_key(node.address))
        if holder is not None:
            old = self._by_id[holder]
            if not (responded and old.info.address == node.address):
                return HeardResult(Admission.REFUSED, Refusal.IP_IN_USE)
            self.remove(holder)  # the same host and port answered with a new id
        entry = NodeEntry(info=node)
        entry.touch(now, responded)
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
        if not entry.is_bad(self._limits):
            return
        bucket = self._bucket_of(node.id)
        if node.id not in bucket.nodes:
            self._forget(entry)  # a cached node that does not answer is worth nothing
            return
        replacement = bucket.best_replacement()
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
            replacement = bucket.best_replacement()
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
        self._buckets = [Bucket(last_changed=now)]
        self._by_id.clear()
        self._by_ip.clear()
        for entry in entries:
            if entry.info.id != own_id:
                entry.ping_asked = None
                self._admit(entry, now, ask=False)

    # -- persistence -----------------------------------------------------------------------

    def dump(self) -> bytes:
        """Our id and the confirmed nodes (in buckets, then cached), bencoded for the state
        file (``table_file.write_table_file``: ``{"v": 1, "id": 20 bytes, "nodes": compact
        entries}``, an entry being the id, the packed IP and the port)."""
        entries = [e for b in self._buckets for e in b.nodes.values()]
        entries += [e for b in self._buckets for e in b.cache.values() if e.confirmed]
        return write_table_file(self._own_id, (e.info for e in entries))

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
            with ``fallback_id``). Every entry of the file not in the table now is counted in
            ``skipped``: unusable, refused, or pushed out of a full replacement cache by a
            later entry.
        """
        content = read_table_file(data, ipv6=ipv6)
        if isinstance(content, str):
            table = cls(fallback_id, now, limits=limits, id_check=id_check, ipv6=ipv6)
            return LoadedTable(table, content)
        table = cls(content.own_id, now, limits=limits, id_check=id_check, ipv6=ipv6)
        for info in content.nodes:
            table._restore(info, now)
        # Refused entries, and those a later entry pushed out of a full replacement cache.
        lost = len(content.nodes) - len(table._by_id)
        return LoadedTable(table, None, content.unusable + lost)

    # -- internals -------------------------------------------------------------------------

    def _index(self, node_id: NodeId | InfoHash) -> int:
        return min(bucket_index(self._own_id, node_id), len(self._buckets) - 1)

    def _bucket_of(self, node_id: NodeId) -> Bucket:
        return self._buckets[self._index(node_id)]

    def _can_split(self, index: int) -> bool:
        """Whether bucket ``index`` would split when full: the last one, below 160 buckets."""
        return index == len(self._buckets) - 1 and len(self._buckets) < ID_BITS

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

    def _admit(self, entry: NodeEntry, now: float, *, ask: bool = True) -> HeardResult:
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
            if self._can_split(index):
                self._split()
                continue
            worst = bucket.worst_bad_node(self._limits)
            if worst is not None:
                self._forget(worst)
                self._insert(bucket, entry, now)
                return HeardResult(Admission.ADDED)
            return self._cache(bucket, entry, now, ask=ask)

    def _cache(self, bucket: Bucket, entry: NodeEntry, now: float, *, ask: bool) -> HeardResult:
        if len(bucket.cache) >= self._limits.max_replacements:
            victim = bucket.cache_victim(entry)
            if victim is None:
                return HeardResult(Admission.REFUSED, Refusal.CACHE_FULL)
            self._forget(victim)
        bucket.cache[entry.info.id] = entry
        self._index_entry(entry)
        if not ask:
            return HeardResult(Admission.CACHED)
        return HeardResult(Admission.CACHED, to_ping=self._pings_for_cached(entry, now))

    def _pings_for_cached(self, entry: NodeEntry, now: float) -> tuple[NodeInfo, ...]:
        """Whom to ping for a node waiting in the cache: itself when it could move in once it
        answers (its bucket has room, holds a bad node or can split), else the bucket's
        questionable nodes (one of them may have gone)."""
        index = self._index(entry.info.id)
        bucket = self._buckets[index]
        limits = self._limits
        if not entry.confirmed and bucket.has_room_or_bad(limits, can_split=self._can_split(index)):
            wanted = [entry]
        else:
            wanted = bucket.questionable_nodes(limits, now)
        chosen = [e for e in wanted if e.may_ask(limits, now)]
        for e in chosen:
            e.ping_asked = now
        return tuple(e.info for e in chosen)

    def _insert(self, bucket: Bucket, entry: NodeEntry, now: float) -> None:
        bucket.nodes[entry.info.id] = entry
        bucket.last_changed = max(bucket.last_changed, now)
        self._index_entry(entry)

    def _index_entry(self, entry: NodeEntry) -> None:
        self._by_id[entry.info.id] = entry
        self._by_ip[ip_key(entry.info.address)] = entry.info.id

    def _forget(self, entry: NodeEntry) -> None:
        node_id = entry.info.id
        bucket = self._bucket_of(node_id)
        bucket.nodes.pop(node_id, None)
        bucket.cache.pop(node_id, None)
        del self._by_id[node_id]
        key = ip_key(entry.info.address)
        if self._by_ip.get(key) == node_id:
            del self._by_ip[key]

    def _split(self) -> None:
        """Split the last bucket: the ids sharing one more bit with ours move to a new one."""
        old = self._buckets[-1]
        depth = len(self._buckets)  # the new bucket holds ids sharing >= depth bits
        new = Bucket(last_changed=old.last_changed)
        self._buckets.append(new)
        for node_id in [i for i in old.nodes if bucket_index(self._own_id, i) >= depth]:
            new.nodes[node_id] = old.nodes.pop(node_id)
        for node_id in [i for i in old.cache if bucket_index(self._own_id, i) >= depth]:
            new.cache[node_id] = old.cache.pop(node_id)

    def _restore(self, info: NodeInfo, now: float) -> bool:
        """Put a node from the state file in: confirmed once, questionable now."""
        if self._refusal(info) is not None or info.id in self._by_id:
            return False
        if ip_key(info.address) in self._by_ip:
            return False
        entry = NodeEntry(info=info, confirmed=True)
        return self._admit(entry, now, ask=False).admission is not Admission.REFUSED


@dataclass(frozen=True, slots=True)
class LoadedTable:
    """What ``RoutingTable.load`` gives: the table, why the data was unusable (None when it was
    read), and how many of its entries were unusable or refused by the table."""

    table: RoutingTable
    reason: str | None
    skipped: int = 0
