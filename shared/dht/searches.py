"""The searches of a ``DhtNode``: a torrent's peers, our own id (joining), quiet buckets.

Strategy: ``Searches`` owns every running ``Search`` (one ``Lookup`` per address family we run)
and the torrents searched for. The node hands it the answers and failures of the queries a search
sent (each query's ``Asked`` record says which search), and calls ``start_due`` and ``expire``
as time passes; searches send through the node's ``send_query`` and report through its ``emit``,
so the node's transactions, outgoing datagrams and events stay in one place, in order.

Rules:
- A torrent gets a ``get_peers`` search on ``add_torrent`` and then every 15 to 30 minutes
  (jittered with the node's random generator; a search that reached nobody is retried after a
  minute); a public torrent then gets ``announce_peer`` to the 8 closest nodes that gave a token,
  per family. Peers are reported as they arrive (``PeersFound``), each once per torrent.
- A search is one ``Lookup`` per address family we run; nodes of the other family in an answer
  feed the other lookup. At most ``max_searches`` run at once; a torrent due meanwhile waits.
- Nodes named in answers are never added to the table here: only lookups take them.
- One search for our own id runs at a time (joining); bootstrap answers feed it.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from torviz.shared.bus import DhtTorrentSummary
from torviz.shared.dht.krpc import (
    AnnouncePeer,
    FindNode,
    GetPeers,
    QueryArgs,
    Response,
    Want,
)
from torviz.shared.dht.lookup import Lookup, LookupKind
from torviz.shared.dht.node_id import NodeId
from torviz.shared.dht.node_types import (
    AnnounceDone,
    DhtConfig,
    DhtCounters,
    DhtEvent,
    PeersFound,
    SearchOutcome,
)
from torviz.shared.dht.routing import RoutingTable
from torviz.shared.types import InfoHash, PeerAddress

__all__ = [
    "Asked",
    "Purpose",
    "Search",
    "Searches",
    "SendQuery",
    "Tables",
    "has_nodes",
    "own_id_of",
    "want_both",
]

_U32_MAX = 2**32 - 1

Tables = dict[bool, RoutingTable]
"""The routing tables by address family (True is IPv6)."""


class Purpose(enum.Enum):
    """Why a query went out."""

    PING = "ping"
    BOOTSTRAP = "bootstrap"
    LOOKUP = "lookup"
    ANNOUNCE = "announce"


class Search:
    """One search for a target: a lookup per address family."""

    __slots__ = ("info_hash", "lookups", "purpose")

    def __init__(
        self, purpose: Purpose, lookups: dict[bool, Lookup], info_hash: InfoHash | None
    ) -> None:
        self.purpose = purpose
        self.lookups = lookups
        self.info_hash = info_hash

    @property
    def done(self) -> bool:
        return all(lookup.done for lookup in self.lookups.values())


@dataclass(frozen=True, slots=True)
class Asked:
    """Why a query went out (the record of its transaction)."""

    purpose: Purpose
    node_id: NodeId | None = None
    search: Search | None = None
    info_hash: InfoHash | None = None


SendQuery = Callable[[PeerAddress, QueryArgs, Asked, float], bool]
"""The node's ``send_query(address, args, asked, now)``: False when no transaction was free."""


def own_id_of(tables: Tables) -> NodeId:
    """Our node id: the tables' (all share it)."""
    return next(iter(tables.values())).own_id


def has_nodes(tables: Tables) -> bool:
    """Whether any table holds a node."""
    return any(len(table) for table in tables.values())


def want_both(tables: Tables) -> Want:
    """What a query asks for: both families' nodes when we run both, else the default."""
    return Want.N4 | Want.N6 if len(tables) == 2 else Want.NONE


@dataclass(slots=True)
class _Torrent:
    port: int
    announce: bool
    next_lookup_at: float
    search: Search | None = None
    last: SearchOutcome | None = None
    peers: set[PeerAddress] = field(default_factory=set)
    announced_to: int = 0
    announcing: int = 0
    accepted: int = 0


class Searches:
    """The running searches and the torrents searched for."""

    def __init__(
        self,
        config: DhtConfig,
        tables: Tables,
        counters: DhtCounters,
        rng: random.Random,
        *,
        send_query: SendQuery,
        emit: Callable[[DhtEvent], None],
    ) -> None:
        """No search yet.

        Args:
            config: The node's config (``max_searches``, ``k``, ``alpha``, the intervals).
            tables: The node's routing tables (shared, read for the closest nodes).
            counters: The node's counters (``searches_started``, ``searches_done``).
            rng: The node's random generator (the jitter of torrent searches).
            send_query: How a query goes out.
            emit: How an event goes out.
        """
        self._config = config
        self._tables = tables
        self._counters = counters
        self._rng = rng
        self._send_query = send_query
        self._emit = emit
        self._running: list[Search] = []
        self._torrents: dict[InfoHash, _Torrent] = {}
        self._torrents_due = float("inf")  # no idle torrent is due before this
        self.joined = False
        """A search for our own id has been started."""

    # -- reading -------------------------------------------------------------------------------

    @property
    def running(self) -> int:
        """Searches running now."""
        return len(self._running)

    def last_search(self, info_hash: InfoHash) -> SearchOutcome | None:
        """How the torrent's last finished search went (None: none finished yet)."""
        torrent = self._torrents.get(info_hash)
        return None if torrent is None else torrent.last

    def torrents(self) -> list[InfoHash]:
        """The torrents searched for."""
        return list(self._torrents)

    def torrent_summaries(self, now: float) -> list[DhtTorrentSummary]:
        """Per torrent: peers found, nodes that took our announce, when the next search is."""
        return [
            DhtTorrentSummary(
                info_hash=info_hash,
                peers_found=min(len(torrent.peers), _U32_MAX),
                announced_to=min(torrent.announced_to, _U32_MAX),
                next_lookup_in=None
                if torrent.search is not None
                else max(0.0, torrent.next_lookup_at - now),
            )
            for info_hash, torrent in self._torrents.items()
        ]

    def deadlines(self, now: float) -> Iterator[float]:
        """When the lookups next have work and when idle torrents are due."""
        for search in self._running:
            for lookup in search.lookups.values():
                deadline = lookup.next_deadline(now)
                if deadline is not None:
                    yield deadline
        yield from (t.next_lookup_at for t in self._torrents.values() if t.search is None)

    # -- commands ------------------------------------------------------------------------------

    def add_torrent(self, info_hash: InfoHash, port: int, now: float, *, announce: bool) -> bool:
        """Search for a torrent's peers now and every 15-30 minutes (``DhtNode.add_torrent``).

        Args:
            info_hash: The torrent.
            port: The TCP port we announce.
            now: The clock.
            announce: Whether to ``announce_peer`` after each search.

        Returns:
            False when ``max_torrents`` are searched for already (the torrent is not added).
        """
        torrent = self._torrents.get(info_hash)
        if torrent is not None:
            torrent.port, torrent.announce = port, announce
            return True
        if len(self._torrents) >= self._config.max_torrents:
            return False
        self._torrents[info_hash] = _Torrent(port, announce, next_lookup_at=now)
        self._torrents_due = now
        self.start_due(now)
        return True

    def remove_torrent(self, info_hash: InfoHash) -> None:
        """Stop searching for a torrent (its running search is cancelled)."""
        torrent = self._torrents.pop(info_hash, None)
        if torrent is not None and torrent.search is not None:
            self._cancel(torrent.search)

    def start_due(self, now: float) -> None:
        """Start the searches of the torrents due (while a table has nodes and room is left)."""
        if now < self._torrents_due or not has_nodes(self._tables):
            return
        due = float("inf")
        for info_hash, torrent in self._torrents.items():
            if torrent.search is not None:
                continue
            if torrent.next_lookup_at > now or len(self._running) >= self._config.max_searches:
                due = min(due, max(torrent.next_lookup_at, now + 1.0))
                continue
            target = NodeId(info_hash.raw)
            search = self._start(target, LookupKind.GET_PEERS, Purpose.LOOKUP, info_hash, now)
            if search is not None:
                torrent.search = search
                self._pump(search, now)
            if torrent.search is None:  # it ended at once, or could not start
                due = min(due, max(torrent.next_lookup_at, now + 1.0))
        self._torrents_due = due

    def search_nodes(self, target: NodeId, now: float) -> None:
        """A ``find_node`` search to fill the table (a quiet bucket, or our new id)."""
        search = self._start(target, LookupKind.FIND_NODE, Purpose.BOOTSTRAP, None, now)
        if search is not None:
            self._pump(search, now)

    def join(self, now: float) -> Search:
        """The running search for our own id, started if there is none (or it is done)."""
        for search in self._running:
            if search.purpose is Purpose.BOOTSTRAP and not search.done:
                return search
        self.joined = True
        own_id = own_id_of(self._tables)
        started = self._start(own_id, LookupKind.FIND_NODE, Purpose.BOOTSTRAP, None, now)
        if started is None:  # too many searches: a detached one takes the nodes (and drops them)
            return Search(Purpose.BOOTSTRAP, {}, None)
        self._pump(started, now)
        return started

    # -- what the node hands on ----------------------------------------------------------------

    def expire(self, now: float) -> None:
        """Let time pass for the lookups: nodes that did not answer in time fail in the table."""
        for search in list(self._running):
            for ipv6, lookup in search.lookups.items():
                for node in lookup.expire(now):
                    self._tables[ipv6].failed(node, now)
            self._pump(search, now)

    def on_lookup_response(
        self, search: Search, response: Response, address: PeerAddress, now: float
    ) -> None:
        """An answer to a lookup's query: its nodes, peers and token feed the lookups."""
        own_id = own_id_of(self._tables)
        ipv6 = address.is_ipv6
        lookup = search.lookups.get(ipv6)
        if lookup is None:
            return
        own, other = (
            (response.nodes6, response.nodes) if ipv6 else (response.nodes, response.nodes6)
        )
        own = tuple(n for n in own if n.id != own_id)  # never ask ourselves
        other = tuple(n for n in other if n.id != own_id)
        values = response.values if search.info_hash is not None else ()
        peers = lookup.on_response(address, response.node_id, own, values, response.token, now)
        other_lookup = search.lookups.get(not ipv6)
        if other_lookup is not None and other:
            other_lookup.add_candidates(other, address)
        if peers and search.info_hash is not None:
            self._found(search.info_hash, peers)
        self._pump(search, now)

    def on_bootstrap_response(self, response: Response, address: PeerAddress, now: float) -> None:
        """An answer to a bootstrap ``find_node``: the nodes it names feed the join search."""
        own_id = own_id_of(self._tables)
        search = self.join(now)
        for ipv6, lookup in search.lookups.items():
            named = response.nodes6 if ipv6 else response.nodes
            lookup.add_candidates((n for n in named if n.id != own_id), address)
        self._pump(search, now)

    def on_failed(self, asked: Asked, address: PeerAddress, now: float) -> None:
        """A query of a search or an announce failed (an error or a timeout)."""
        if asked.purpose is Purpose.LOOKUP and asked.search is not None:
            lookup = asked.search.lookups.get(address.is_ipv6)
            if lookup is not None:
                lookup.on_failure(address, now)
            self._pump(asked.search, now)
        elif asked.purpose is Purpose.ANNOUNCE and asked.info_hash is not None:
            self.announce_settled(asked.info_hash, accepted=False)

    def announce_settled(self, info_hash: InfoHash, *, accepted: bool) -> None:
        """One ``announce_peer`` was answered (or failed); the last one reports ``AnnounceDone``."""
        torrent = self._torrents.get(info_hash)
        if torrent is None or torrent.announcing == 0:
            return
        torrent.announcing -= 1
        torrent.accepted += accepted
        if torrent.announcing == 0:
            torrent.announced_to = torrent.accepted
            self._emit(AnnounceDone(info_hash, torrent.accepted))

    # -- inside --------------------------------------------------------------------------------

    def _start(
        self,
        target: NodeId,
        kind: LookupKind,
        purpose: Purpose,
        info_hash: InfoHash | None,
        now: float,
    ) -> Search | None:
        if len(self._running) >= self._config.max_searches:
            return None
        config = self._config
        lookups = {
            ipv6: Lookup(
                target,
                kind,
                table.closest(target, 2 * config.k),
                now,
                alpha=config.alpha,
                k=config.k,
                timeout=2 * config.query_timeout,  # the transactions time out first
                slow_after=config.slow_after,
            )
            for ipv6, table in self._tables.items()
        }
        search = Search(purpose, lookups, info_hash)
        self._running.append(search)
        self._counters.searches_started += 1
        return search

    def _pump(self, search: Search, now: float) -> None:
        """Send what a search's lookups want to send; finish the search once they are done."""
        if search not in self._running:
            return
        want = want_both(self._tables)
        own = own_id_of(self._tables)
        for lookup in search.lookups.values():
            for node in lookup.next_queries(now):
                args: QueryArgs
                if lookup.kind is LookupKind.GET_PEERS:
                    args = GetPeers(own, lookup.info_hash, want)
                else:
                    args = FindNode(own, lookup.target, want)
                asked = Asked(Purpose.LOOKUP, node.id, search)
                if not self._send_query(node.address, args, asked, now):
                    lookup.on_failure(node.address, now)
        if search.done:
            self._finish(search, now)

    def _finish(self, search: Search, now: float) -> None:
        self._running.remove(search)
        self._counters.searches_done += 1
        if search.info_hash is None:
            return
        torrent = self._torrents.get(search.info_hash)
        if torrent is None or torrent.search is not search:
            return
        torrent.search = None
        lookups = search.lookups.values()
        torrent.last = SearchOutcome(
            queries=sum(lookup.queries_sent for lookup in lookups),
            responses=sum(lookup.responses for lookup in lookups),
            closest=tuple(node for lookup in lookups for node in lookup.closest()),
            peers=sum(len(lookup.peers) for lookup in lookups),
        )
        reached = torrent.last.responses > 0
        low, high = self._config.lookup_interval
        wait = self._rng.uniform(low, high) if reached else self._config.retry_interval
        torrent.next_lookup_at = now + wait
        self._torrents_due = min(self._torrents_due, torrent.next_lookup_at)
        if not torrent.announce:
            return
        torrent.accepted = 0
        own_id = own_id_of(self._tables)
        for lookup in search.lookups.values():
            for node, token in lookup.closest_with_tokens(self._config.k):
                args = AnnouncePeer(own_id, search.info_hash, torrent.port, token)
                asked = Asked(Purpose.ANNOUNCE, node.id, info_hash=search.info_hash)
                if self._send_query(node.address, args, asked, now):
                    torrent.announcing += 1
        if torrent.announcing == 0:
            torrent.announced_to = 0
            self._emit(AnnounceDone(search.info_hash, 0))

    def _cancel(self, search: Search) -> None:
        for lookup in search.lookups.values():
            lookup.cancel()
        if search in self._running:
            self._running.remove(search)

    def _found(self, info_hash: InfoHash, peers: Sequence[PeerAddress]) -> None:
        torrent = self._torrents.get(info_hash)
        if torrent is None:
            return
        new = [p for p in peers if p not in torrent.peers]
        room = self._config.max_peers_per_torrent - len(torrent.peers)
        torrent.peers.update(new[: max(room, 0)])
        if new:
            self._emit(PeersFound(info_hash, tuple(new)))
