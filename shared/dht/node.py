"""A whole DHT node (BEP 5, with BEP 32, 42 and 43) as a state machine fed datagrams and a clock.

Strategy: the shell (the tracker agent) owns the UDP socket and the clock. It hands every datagram
to ``receive``, calls ``tick`` at ``next_deadline`` (or at least every few seconds), sends what
``take_outgoing`` returns and forwards what ``take_events`` returns. Inside, the parts each own
one concern: ``Transactions`` matches answers to queries, ``Lookup`` drives one iterative search,
``RoutingTable`` keeps the nodes (one per address family), ``Responder`` answers, ``RateLimiter``
drops floods, ``AddressVotes`` learns our external address.

Rules:
- Every datagram is charged to its source's and the total token bucket before it is decoded;
  over the limit it is dropped and counted. Malformed ones are dropped and counted; a malformed
  query with a readable ``t`` gets error 203.
- An answer counts only if its transaction id is one we sent *to that address*; anything else is
  dropped. An answering node goes into the routing table under the id it gave (the table
  applies BEP 42 and its other rules), unless we asked it under another id: a node answering
  each lookup under a new id (to seem closest) must not rewrite the table. Nodes named in
  answers are never added directly: they enter the table when they answer a query of ours.
- A node that queries us and is only cached by the table gets one ping (per 10 minutes); its
  answer lets the table place it. Pings caused by queries use at most half the transactions, so
  a flood from many addresses cannot starve our own searches.
- Queries from read-only nodes (BEP 43 ``ro``) are answered, but the node never enters the table.
  In read-only mode we set ``ro`` on our queries and answer no query.
- A torrent gets a ``get_peers`` search on ``add_torrent`` and then every 15 to 30 minutes
  (jittered with the node's random generator; a search that reached nobody is retried after a
  minute); a public torrent then gets ``announce_peer`` to the 8 closest nodes that gave a token,
  per family. Peers are reported as they arrive (``PeersFound``), each once per torrent.
- A search is one ``Lookup`` per address family we run; nodes of the other family in an answer
  feed the other lookup. At most ``max_searches`` run at once; a torrent due meanwhile waits.
- Maintenance every ``maintenance_interval``: pings of questionable nodes (the table says which),
  a ``find_node`` search per quiet bucket, expiry of stored peers, and bootstrap again while the
  table is empty (backing off to 10 minutes).
- Our id follows BEP 42 once several distinct nodes agree on our external IPv4 address (``ip``
  in answers); the tables are rebuilt around the new id and a search for it refills them.
"""

from __future__ import annotations

import enum
import random
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from torviz.shared.bus import DhtSummary, DhtTorrentSummary
from torviz.shared.dht.external_ip import AddressVotes
from torviz.shared.dht.krpc import (
    AnnouncePeer,
    Error,
    ErrorCode,
    FindNode,
    GetPeers,
    KrpcMessage,
    Ping,
    Query,
    QueryArgs,
    Response,
    Want,
    decode_krpc,
    encode_krpc,
)
from torviz.shared.dht.lookup import Lookup, LookupKind
from torviz.shared.dht.node_id import (
    NodeId,
    NodeInfo,
    is_bep42_exempt,
    is_secure_node_id,
    random_node_id,
    secure_node_id,
)
from torviz.shared.dht.node_state import dump_tables, load_tables
from torviz.shared.dht.node_types import (
    AnnounceDone,
    DhtConfig,
    DhtCounters,
    DhtEvent,
    ExternalAddress,
    PeersFound,
    SearchOutcome,
)
from torviz.shared.dht.peer_store import PeerStore
from torviz.shared.dht.rate_limit import RateLimiter
from torviz.shared.dht.responder import Responder
from torviz.shared.dht.routing import Admission, RoutingTable
from torviz.shared.dht.tokens import TokenKeeper
from torviz.shared.dht.transactions import Transactions
from torviz.shared.errors import KrpcError
from torviz.shared.types import InfoHash, PeerAddress

__all__ = [
    "AnnounceDone",
    "DhtConfig",
    "DhtCounters",
    "DhtEvent",
    "DhtNode",
    "ExternalAddress",
    "PeersFound",
    "SearchOutcome",
]

NEWCOMER_PING_INTERVAL = 600.0
"""Seconds before a node that queried us (and was only cached) is pinged again."""
MAX_NEWCOMERS = 4_096
"""Addresses remembered as pinged newcomers."""

_U32_MAX = 2**32 - 1


class _Purpose(enum.Enum):
    PING = "ping"
    BOOTSTRAP = "bootstrap"
    LOOKUP = "lookup"
    ANNOUNCE = "announce"


class _Search:
    """One search for a target: a lookup per address family."""

    __slots__ = ("info_hash", "lookups", "purpose")

    def __init__(
        self, purpose: _Purpose, lookups: dict[bool, Lookup], info_hash: InfoHash | None
    ) -> None:
        self.purpose = purpose
        self.lookups = lookups
        self.info_hash = info_hash

    @property
    def done(self) -> bool:
        return all(lookup.done for lookup in self.lookups.values())


@dataclass(frozen=True, slots=True)
class _Asked:
    """Why a query went out (the record of its transaction)."""

    purpose: _Purpose
    node_id: NodeId | None = None
    search: _Search | None = None
    info_hash: InfoHash | None = None


@dataclass(slots=True)
class _Torrent:
    port: int
    announce: bool
    next_lookup_at: float
    search: _Search | None = None
    last: SearchOutcome | None = None
    peers: set[PeerAddress] = field(default_factory=set)
    announced_to: int = 0
    announcing: int = 0
    accepted: int = 0


class DhtNode:
    """One DHT node: routing tables, searches, the responder and the counters."""

    def __init__(
        self,
        config: DhtConfig,
        own_id: NodeId | None,
        now: float,
        rng: random.Random,
        *,
        saved: bytes | None = None,
    ) -> None:
        """A node, fresh or from a saved state (``dump``).

        Args:
            config: How it behaves.
            own_id: Our id; None for a random one. A usable saved state's id wins.
            now: The clock, in seconds.
            rng: Every random choice (ids, jitter, secrets, samples).
            saved: ``dump`` output from the last run (untrusted: anything unusable is ignored
                and ``load_problem`` says why).
        """
        self.config = config
        self.counters = DhtCounters()
        self._rng = rng
        self._tables, self.load_problem = load_tables(
            saved,
            own_id or random_node_id(rng),
            now,
            families=[v6 for v6, on in ((False, config.ipv4), (True, config.ipv6)) if on],
            limits=config.routing,
            id_check=is_secure_node_id if config.secure_id else None,
        )
        self._tokens = TokenKeeper(now, rng.randbytes)
        self._store = PeerStore(rng, config.store)
        self._responder = Responder(
            self._tables,
            self._tokens,
            self._store,
            max_values=config.max_values,
            version=config.version,
        )
        self._limiter = RateLimiter(config.rate, now)
        self._transactions: Transactions[_Asked] = Transactions(
            rng, capacity=config.max_transactions, timeout=config.query_timeout
        )
        self._votes = AddressVotes(needed=config.votes_needed)
        self.external_ip: str | None = None
        self._searches: list[_Search] = []
        self._torrents: dict[InfoHash, _Torrent] = {}
        self._outgoing: list[tuple[bytes, PeerAddress]] = []
        self._events: list[DhtEvent] = []
        self._bootstrap_nodes: tuple[PeerAddress, ...] = ()
        self._bootstrap_wait = config.bootstrap_retry[0]
        self._next_bootstrap = now + self._bootstrap_wait
        self._next_maintenance = now
        self._joined = False  # a search for our own id has been started
        self._torrents_due = float("inf")  # no idle torrent is due before this
        self._newcomers: OrderedDict[PeerAddress, float] = OrderedDict()

    # -- reading -------------------------------------------------------------------------------

    @property
    def own_id(self) -> NodeId:
        """Our node id now (it changes once, when BEP 42 gives us a secure one)."""
        return next(iter(self._tables.values())).own_id

    def table(self, ipv6: bool = False) -> RoutingTable:
        """The routing table of one family.

        Raises:
            KeyError: that family is not run.
        """
        return self._tables[ipv6]

    def last_search(self, info_hash: InfoHash) -> SearchOutcome | None:
        """How the torrent's last finished search went (None: none finished yet)."""
        torrent = self._torrents.get(info_hash)
        return None if torrent is None else torrent.last

    def torrents(self) -> list[InfoHash]:
        """The torrents searched for."""
        return list(self._torrents)

    @property
    def searches(self) -> int:
        """Searches running now."""
        return len(self._searches)

    @property
    def outstanding(self) -> int:
        """Queries waiting for an answer."""
        return len(self._transactions)

    def summary(self, now: float) -> DhtSummary:
        """The node's line in ``status``."""
        counts = [table.counts(now) for table in self._tables.values()]
        return DhtSummary(
            nodes=min(sum(c.nodes for c in counts), _U32_MAX),
            good_nodes=min(sum(c.good for c in counts), _U32_MAX),
            lookups=min(len(self._searches), _U32_MAX),
            stored_peers=min(self._store.count(), _U32_MAX),
            queries_received=self.counters.queries_received,
            packets_dropped=self.counters.packets_dropped,
            port=self.config.port,
        )

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

    def next_deadline(self, now: float) -> float:
        """When ``tick`` next has work (at the latest the next maintenance round)."""
        times = [self._next_maintenance]
        deadline = self._transactions.next_deadline()
        if deadline is not None:
            times.append(deadline)
        for search in self._searches:
            for lookup in search.lookups.values():
                deadline = lookup.next_deadline(now)
                if deadline is not None:
                    times.append(deadline)
        times.extend(t.next_lookup_at for t in self._torrents.values() if t.search is None)
        return max(now, min(times))

    def dump(self) -> bytes:
        """The routing tables for the state file (``saved`` of the next start)."""
        return dump_tables(self._tables)

    def take_outgoing(self) -> list[tuple[bytes, PeerAddress]]:
        """The datagrams to send, and where; the node forgets them."""
        out, self._outgoing = self._outgoing, []
        return out

    def take_events(self) -> list[DhtEvent]:
        """What happened since the last call: peers found, announces done, our address."""
        out, self._events = self._events, []
        return out

    # -- commands ------------------------------------------------------------------------------

    def add_torrent(
        self, info_hash: InfoHash, port: int, now: float, *, announce: bool = True
    ) -> bool:
        """Search for a torrent's peers now and every 15-30 minutes, announcing if asked.

        Args:
            info_hash: The torrent.
            port: The TCP port we announce (the peer agent's listen port).
            now: The clock.
            announce: Whether to ``announce_peer`` after each search.

        Returns:
            False when ``max_torrents`` are searched for already (the torrent is not added).
        """
        torrent = self._torrents.get(info_hash)
        if torrent is not None:
            torrent.port, torrent.announce = port, announce
            return True
        if len(self._torrents) >= self.config.max_torrents:
            return False
        self._torrents[info_hash] = _Torrent(port, announce, next_lookup_at=now)
        self._torrents_due = now
        self._start_due_torrents(now)
        return True

    def remove_torrent(self, info_hash: InfoHash) -> None:
        """Stop searching for a torrent (its running search is cancelled)."""
        torrent = self._torrents.pop(info_hash, None)
        if torrent is not None and torrent.search is not None:
            self._cancel(torrent.search)

    def bootstrap(self, addresses: Iterable[PeerAddress], now: float) -> None:
        """Join the DHT through known addresses (routers, a .torrent's ``nodes``, PORT messages).

        Each gets a ``find_node`` for our own id; the nodes they name feed a search for it. The
        list is kept (at most 64) to bootstrap again while the table is empty.

        Args:
            addresses: The nodes to ask (their ids are unknown).
            now: The clock.
        """
        fresh = [a for a in dict.fromkeys(addresses) if a.is_ipv6 in self._tables]
        self._bootstrap_nodes = tuple(dict.fromkeys([*self._bootstrap_nodes, *fresh]))[:64]
        self._join(now)
        for address in fresh[:64]:
            self._send_query(address, self._find_self(), _Asked(_Purpose.BOOTSTRAP), now)

    def ping(self, address: PeerAddress, now: float) -> None:
        """Ping a node (e.g. a peer's PORT message): if it answers, it enters the table."""
        if address.is_ipv6 in self._tables:
            self._send_query(address, Ping(self.own_id), _Asked(_Purpose.PING), now)

    # -- input ---------------------------------------------------------------------------------

    def receive(self, datagram: bytes, address: PeerAddress, now: float) -> None:
        """One datagram from ``address``.

        Args:
            datagram: The UDP payload (untrusted).
            address: Its source.
            now: The clock.
        """
        if not self._limiter.allow(address.host, now):
            self._drop("dropped_rate_limited")
            return
        try:
            message = decode_krpc(datagram)
        except KrpcError as exc:
            self._drop("dropped_malformed")
            if exc.transaction_id is not None and not self.config.read_only:
                code = int(ErrorCode.PROTOCOL)
                error = Error(exc.transaction_id, code, exc.reason, address, self.config.version)
                self._send(error, address)
            return
        match message:
            case Query():
                self._on_query(message, address, now)
            case Response() | Error():
                self._on_answer(message, address, now)
        self._start_due_torrents(now)

    def tick(self, now: float) -> None:
        """Let time pass: timeouts, due searches, maintenance.

        Args:
            now: The clock.
        """
        for pending in self._transactions.expire(now):
            self._on_timeout(pending.record, pending.address, now)
        for search in list(self._searches):
            for ipv6, lookup in search.lookups.items():
                for node in lookup.expire(now):
                    self._tables[ipv6].failed(node, now)
            self._pump(search, now)
        if now >= self._next_maintenance:
            self._next_maintenance = now + self.config.maintenance_interval
            self._maintain(now)
        self._start_due_torrents(now)

    # -- answering -----------------------------------------------------------------------------

    def _on_query(self, query: Query, address: PeerAddress, now: float) -> None:
        if self.config.read_only:
            self._drop("dropped_read_only")
            return
        table = self._tables.get(address.is_ipv6)
        node_id = query.node_id
        if (
            table is not None
            and node_id is not None
            and node_id != self.own_id
            and not query.read_only
        ):
            node = NodeInfo(node_id, address)
            heard = table.heard_from(node, now, responded=False)
            # Pings a query makes us send may use half the transactions at most: a flood of
            # queries from many addresses must not starve our own lookups.
            if len(self._transactions) < self.config.max_transactions // 2:
                self._ping_all(heard.to_ping, now)
                if heard.admission is Admission.CACHED and node not in heard.to_ping:
                    self._ping_newcomer(node, now)
        answer = self._responder.answer(query, address, self.own_id, now)
        if answer is None:
            self._drop("dropped_malformed")
            return
        self.counters.queries_received += 1
        self._send(answer, address)

    # -- answers to our queries ----------------------------------------------------------------

    def _on_answer(self, message: Response | Error, address: PeerAddress, now: float) -> None:
        pending = self._transactions.close(message.t, address)
        if pending is None:
            self._drop("dropped_unmatched")
            return
        asked = pending.record
        if isinstance(message, Error):
            self.counters.errors_received += 1
            self._on_failed(asked, address, now)
            return
        self.counters.responses_received += 1
        table = self._tables.get(address.is_ipv6)
        if table is None:  # we never ask another family; be safe all the same
            return
        mismatch = asked.node_id is not None and asked.node_id != message.node_id
        if mismatch:
            self.counters.id_mismatches += 1
        elif message.node_id != self.own_id:
            heard = table.heard_from(NodeInfo(message.node_id, address), now, responded=True)
            self._ping_all(heard.to_ping, now)
        if message.ip is not None:
            self._vote(message.ip, address, now)
        match asked.purpose:
            case _Purpose.LOOKUP:
                assert asked.search is not None
                self._on_lookup_response(asked.search, message, address, now)
            case _Purpose.BOOTSTRAP:
                search = self._join(now)
                for ipv6, lookup in search.lookups.items():
                    named = message.nodes6 if ipv6 else message.nodes
                    lookup.add_candidates((n for n in named if n.id != self.own_id), address)
                self._pump(search, now)
            case _Purpose.ANNOUNCE:
                assert asked.info_hash is not None
                self._announce_settled(asked.info_hash, accepted=True)
            case _Purpose.PING:
                pass

    def _on_lookup_response(
        self, search: _Search, response: Response, address: PeerAddress, now: float
    ) -> None:
        ipv6 = address.is_ipv6
        lookup = search.lookups.get(ipv6)
        if lookup is None:
            return
        own, other = (
            (response.nodes6, response.nodes) if ipv6 else (response.nodes, response.nodes6)
        )
        own = tuple(n for n in own if n.id != self.own_id)  # never ask ourselves
        other = tuple(n for n in other if n.id != self.own_id)
        values = response.values if search.info_hash is not None else ()
        peers = lookup.on_response(address, response.node_id, own, values, response.token, now)
        other_lookup = search.lookups.get(not ipv6)
        if other_lookup is not None and other:
            other_lookup.add_candidates(other, address)
        if peers and search.info_hash is not None:
            self._found(search.info_hash, peers)
        self._pump(search, now)

    def _on_timeout(self, asked: _Asked, address: PeerAddress, now: float) -> None:
        if asked.node_id is not None and address.is_ipv6 in self._tables:
            self._tables[address.is_ipv6].failed(NodeInfo(asked.node_id, address), now)
        self._on_failed(asked, address, now)

    def _on_failed(self, asked: _Asked, address: PeerAddress, now: float) -> None:
        if asked.purpose is _Purpose.LOOKUP and asked.search is not None:
            lookup = asked.search.lookups.get(address.is_ipv6)
            if lookup is not None:
                lookup.on_failure(address, now)
            self._pump(asked.search, now)
        elif asked.purpose is _Purpose.ANNOUNCE and asked.info_hash is not None:
            self._announce_settled(asked.info_hash, accepted=False)

    def _vote(self, ip: PeerAddress, voter: PeerAddress, now: float) -> None:
        if ip.is_ipv6 != voter.is_ipv6:
            return
        decided = self._votes.vote(ip.host, voter.host)
        if decided is None:
            return
        self.external_ip = decided
        self._events.append(ExternalAddress(decided))
        if not self.config.secure_id or is_bep42_exempt(decided):
            return
        if ip.is_ipv6 and self.config.ipv4:
            return  # our id follows the IPv4 address when we have one
        if is_secure_node_id(self.own_id, decided):
            return
        new_id = secure_node_id(decided, self._rng.getrandbits(8), self._rng)
        for table in self._tables.values():
            table.change_own_id(new_id, now)
        self._search_nodes(new_id, now)

    # -- searches ------------------------------------------------------------------------------

    def _start_search(
        self,
        target: NodeId,
        kind: LookupKind,
        purpose: _Purpose,
        info_hash: InfoHash | None,
        now: float,
    ) -> _Search | None:
        if len(self._searches) >= self.config.max_searches:
            return None
        config = self.config
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
        search = _Search(purpose, lookups, info_hash)
        self._searches.append(search)
        self.counters.searches_started += 1
        return search

    def _pump(self, search: _Search, now: float) -> None:
        """Send what a search's lookups want to send; finish the search once they are done."""
        if search not in self._searches:
            return
        want = Want.N4 | Want.N6 if len(self._tables) == 2 else Want.NONE
        own = self.own_id
        for lookup in search.lookups.values():
            for node in lookup.next_queries(now):
                args: QueryArgs
                if lookup.kind is LookupKind.GET_PEERS:
                    args = GetPeers(own, lookup.info_hash, want)
                else:
                    args = FindNode(own, lookup.target, want)
                asked = _Asked(_Purpose.LOOKUP, node.id, search)
                if not self._send_query(node.address, args, asked, now):
                    lookup.on_failure(node.address, now)
        if search.done:
            self._finish(search, now)

    def _finish(self, search: _Search, now: float) -> None:
        self._searches.remove(search)
        self.counters.searches_done += 1
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
        low, high = self.config.lookup_interval
        wait = self._rng.uniform(low, high) if reached else self.config.retry_interval
        torrent.next_lookup_at = now + wait
        self._torrents_due = min(self._torrents_due, torrent.next_lookup_at)
        if not torrent.announce:
            return
        torrent.accepted = 0
        for lookup in search.lookups.values():
            for node, token in lookup.closest_with_tokens(self.config.k):
                args = AnnouncePeer(self.own_id, search.info_hash, torrent.port, token)
                asked = _Asked(_Purpose.ANNOUNCE, node.id, info_hash=search.info_hash)
                if self._send_query(node.address, args, asked, now):
                    torrent.announcing += 1
        if torrent.announcing == 0:
            torrent.announced_to = 0
            self._events.append(AnnounceDone(search.info_hash, 0))

    def _announce_settled(self, info_hash: InfoHash, *, accepted: bool) -> None:
        torrent = self._torrents.get(info_hash)
        if torrent is None or torrent.announcing == 0:
            return
        torrent.announcing -= 1
        torrent.accepted += accepted
        if torrent.announcing == 0:
            torrent.announced_to = torrent.accepted
            self._events.append(AnnounceDone(info_hash, torrent.accepted))

    def _cancel(self, search: _Search) -> None:
        for lookup in search.lookups.values():
            lookup.cancel()
        if search in self._searches:
            self._searches.remove(search)

    def _found(self, info_hash: InfoHash, peers: Sequence[PeerAddress]) -> None:
        torrent = self._torrents.get(info_hash)
        if torrent is None:
            return
        new = [p for p in peers if p not in torrent.peers]
        room = self.config.max_peers_per_torrent - len(torrent.peers)
        torrent.peers.update(new[: max(room, 0)])
        if new:
            self._events.append(PeersFound(info_hash, tuple(new)))

    def _start_due_torrents(self, now: float) -> None:
        if now < self._torrents_due or not self._has_nodes():
            return
        due = float("inf")
        for info_hash, torrent in self._torrents.items():
            if torrent.search is not None:
                continue
            if torrent.next_lookup_at > now or len(self._searches) >= self.config.max_searches:
                due = min(due, max(torrent.next_lookup_at, now + 1.0))
                continue
            target = NodeId(info_hash.raw)
            search = self._start_search(
                target, LookupKind.GET_PEERS, _Purpose.LOOKUP, info_hash, now
            )
            if search is not None:
                torrent.search = search
                self._pump(search, now)
            if torrent.search is None:  # it ended at once, or could not start
                due = min(due, max(torrent.next_lookup_at, now + 1.0))
        self._torrents_due = due

    def _search_nodes(self, target: NodeId, now: float) -> None:
        """A ``find_node`` search to fill the table (a quiet bucket, or our new id)."""
        search = self._start_search(target, LookupKind.FIND_NODE, _Purpose.BOOTSTRAP, None, now)
        if search is not None:
            self._pump(search, now)

    def _join(self, now: float) -> _Search:
        """The running search for our own id, started if there is none (or it is done)."""
        for search in self._searches:
            if search.purpose is _Purpose.BOOTSTRAP and not search.done:
                return search
        self._joined = True
        started = self._start_search(
            self.own_id, LookupKind.FIND_NODE, _Purpose.BOOTSTRAP, None, now
        )
        if started is None:  # too many searches: a detached one takes the nodes (and drops them)
            return _Search(_Purpose.BOOTSTRAP, {}, None)
        self._pump(started, now)
        return started

    # -- maintenance ---------------------------------------------------------------------------

    def _maintain(self, now: float) -> None:
        self._store.sweep(now)
        for table in self._tables.values():
            self._ping_all(table.questionable(now, self.config.ping_batch), now)
            for target in table.buckets_to_refresh(now, self._rng):
                if len(self._searches) < self.config.max_searches // 2:
                    self._search_nodes(target, now)
        if not self._joined and self._has_nodes():
            self._join(now)  # a table loaded from the state file: search for our own id
        if not self._has_nodes() and self._bootstrap_nodes and now >= self._next_bootstrap:
            self._bootstrap_wait = min(2 * self._bootstrap_wait, self.config.bootstrap_retry[1])
            self._next_bootstrap = now + self._bootstrap_wait
            for address in self._bootstrap_nodes:
                self._send_query(address, self._find_self(), _Asked(_Purpose.BOOTSTRAP), now)

    def _has_nodes(self) -> bool:
        return any(len(table) for table in self._tables.values())

    def _ping_newcomer(self, node: NodeInfo, now: float) -> None:
        """Ping a node that queried us and waits in a replacement cache: its answer lets the
        table place it (a full bucket that can split takes it). Once per address per
        ``NEWCOMER_PING_INTERVAL``; the memory of whom we pinged is bounded."""
        pinged = self._newcomers.get(node.address)
        if pinged is not None and now - pinged < NEWCOMER_PING_INTERVAL:
            return
        self._newcomers[node.address] = now
        self._newcomers.move_to_end(node.address)
        while len(self._newcomers) > MAX_NEWCOMERS:
            self._newcomers.popitem(last=False)
        self._ping_all([node], now)

    def _ping_all(self, nodes: Iterable[NodeInfo], now: float) -> None:
        for node in nodes:
            self._send_query(node.address, Ping(self.own_id), _Asked(_Purpose.PING, node.id), now)

    # -- output --------------------------------------------------------------------------------

    def _find_self(self) -> FindNode:
        want = Want.N4 | Want.N6 if len(self._tables) == 2 else Want.NONE
        return FindNode(self.own_id, self.own_id, want)

    def _send_query(self, address: PeerAddress, args: QueryArgs, asked: _Asked, now: float) -> bool:
        t = self._transactions.open(address, asked, now)
        if t is None:
            self.counters.queries_refused += 1
            return False
        query = Query(t, args, read_only=self.config.read_only, version=self.config.version)
        self.counters.queries_sent += 1
        self._send(query, address)
        return True

    def _send(self, message: KrpcMessage, address: PeerAddress) -> None:
        self._outgoing.append((encode_krpc(message), address))

    def _drop(self, reason: str) -> None:
        self.counters.packets_dropped += 1
        setattr(self.counters, reason, getattr(self.counters, reason) + 1)
