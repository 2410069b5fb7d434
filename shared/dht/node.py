"""A whole DHT node (BEP 5, with BEP 32, 42 and 43) as a state machine fed datagrams and a clock.

Strategy: the shell (the tracker agent) owns the UDP socket and the clock. It hands every datagram
to ``receive``, calls ``tick`` at ``next_deadline`` (or at least every few seconds), sends what
``take_outgoing`` returns and forwards what ``take_events`` returns. Inside, the parts each own
one concern: ``Transactions`` matches answers to queries, ``Searches`` runs the searches (one
``Lookup`` per family) and the torrents' announces, ``Maintenance`` keeps the tables fresh and
bootstraps, ``RoutingTable`` keeps the nodes (one per address family), ``Responder`` answers,
``RateLimiter`` drops floods, ``AddressVotes`` learns our external address. The node receives,
ticks, and owns the outgoing datagrams and the events: the parts send and report through it.

Rules:
- Every datagram is charged to its source's and the total token bucket before it is decoded;
  over the limit it is dropped and counted. Malformed ones are dropped and counted; a malformed
  query with a readable ``t`` gets error 203.
- An answer counts only if its transaction id is one we sent *to that address*; anything else is
  dropped. An answering node goes into the routing table under the id it gave (the table
  applies BEP 42 and its other rules), unless we asked it under another id: a node answering
  each lookup under a new id (to seem closest) must not rewrite the table. Nodes named in
  answers are never added directly: they enter the table when they answer a query of ours.
- A node that queries us and is only cached by the table gets one ping (``maintenance.py``); its
  answer lets the table place it. Pings caused by queries use at most half the transactions, so
  a flood from many addresses cannot starve our own searches.
- Queries from read-only nodes (BEP 43 ``ro``) are answered, but the node never enters the table.
  In read-only mode we set ``ro`` on our queries and answer no query.
- Torrents are searched for every 15 to 30 minutes and announced to the closest nodes
  (``searches.py``); the tables are maintained every ``maintenance_interval`` (``maintenance.py``).
- Our id follows BEP 42 once several distinct nodes agree on our external IPv4 address (``ip``
  in answers); the tables are rebuilt around the new id and a search for it refills them.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from torviz.shared.bus import DhtSummary, DhtTorrentSummary
from torviz.shared.dht.external_ip import AddressVotes
from torviz.shared.dht.krpc import (
    Error,
    ErrorCode,
    KrpcMessage,
    Ping,
    Query,
    QueryArgs,
    Response,
    decode_krpc,
    encode_krpc,
)
from torviz.shared.dht.maintenance import MAX_NEWCOMERS, NEWCOMER_PING_INTERVAL, Maintenance
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
from torviz.shared.dht.searches import Asked, Purpose, Searches, own_id_of
from torviz.shared.dht.tokens import TokenKeeper
from torviz.shared.dht.transactions import Transactions
from torviz.shared.errors import KrpcError
from torviz.shared.types import InfoHash, PeerAddress

__all__ = [
    "MAX_NEWCOMERS",
    "NEWCOMER_PING_INTERVAL",
    "AnnounceDone",
    "DhtConfig",
    "DhtCounters",
    "DhtEvent",
    "DhtNode",
    "ExternalAddress",
    "PeersFound",
    "SearchOutcome",
]

_U32_MAX = 2**32 - 1


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
        self._transactions: Transactions[Asked] = Transactions(
            rng, capacity=config.max_transactions, timeout=config.query_timeout
        )
        self._votes = AddressVotes(needed=config.votes_needed)
        self.external_ip: str | None = None
        self._outgoing: list[tuple[bytes, PeerAddress]] = []
        self._events: list[DhtEvent] = []
        self._searches = Searches(
            config,
            self._tables,
            self.counters,
            rng,
            send_query=self._send_query,
            emit=self._emit,
        )
        self._maintenance = Maintenance(
            config,
            self._tables,
            self._store,
            self._searches,
            rng,
            now,
            send_query=self._send_query,
        )

    # -- reading -------------------------------------------------------------------------------

    @property
    def own_id(self) -> NodeId:
        """Our node id now (it changes once, when BEP 42 gives us a secure one)."""
        return own_id_of(self._tables)

    def table(self, ipv6: bool = False) -> RoutingTable:
        """The routing table of one family.

        Raises:
            KeyError: that family is not run.
        """
        return self._tables[ipv6]

    def last_search(self, info_hash: InfoHash) -> SearchOutcome | None:
        """How the torrent's last finished search went (None: none finished yet)."""
        return self._searches.last_search(info_hash)

    def torrents(self) -> list[InfoHash]:
        """The torrents searched for."""
        return self._searches.torrents()

    @property
    def searches(self) -> int:
        """Searches running now."""
        return self._searches.running

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
            lookups=min(self._searches.running, _U32_MAX),
            stored_peers=min(self._store.count(), _U32_MAX),
            queries_received=self.counters.queries_received,
            packets_dropped=self.counters.packets_dropped,
            port=self.config.port,
        )

    def torrent_summaries(self, now: float) -> list[DhtTorrentSummary]:
        """Per torrent: peers found, nodes that took our announce, when the next search is."""
        return self._searches.torrent_summaries(now)

    def next_deadline(self, now: float) -> float:
        """When ``tick`` next has work (at the latest the next maintenance round)."""
        times = [self._maintenance.next_round]
        deadline = self._transactions.next_deadline()
        if deadline is not None:
            times.append(deadline)
        times.extend(self._searches.deadlines(now))
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
        return self._searches.add_torrent(info_hash, port, now, announce=announce)

    def remove_torrent(self, info_hash: InfoHash) -> None:
        """Stop searching for a torrent (its running search is cancelled)."""
        self._searches.remove_torrent(info_hash)

    def bootstrap(self, addresses: Iterable[PeerAddress], now: float) -> None:
        """Join the DHT through known addresses (routers, a .torrent's ``nodes``, PORT messages).

        Each gets a ``find_node`` for our own id; the nodes they name feed a search for it. The
        list is kept (at most 64) to bootstrap again while the table is empty.

        Args:
            addresses: The nodes to ask (their ids are unknown).
            now: The clock.
        """
        self._maintenance.bootstrap(addresses, now)

    def ping(self, address: PeerAddress, now: float) -> None:
        """Ping a node (e.g. a peer's PORT message): if it answers, it enters the table."""
        if address.is_ipv6 in self._tables:
            self._send_query(address, Ping(self.own_id), Asked(Purpose.PING), now)

    # -- input ---------------------------------------------------------------------------------

    def receive(self, datagram: bytes, address: PeerAddress, now: float) -> None:
        """One datagram from ``address``.

        Args:
            datagram: The UDP payload (untrusted).
            address: Its source.
            now: The clock.
        """
        # An answer to our own query is never charged to the limits on what others send us,
        # or a flood of queries would starve our searches of their answers.
        if not self._transactions.awaiting(address) and not self._limiter.allow(address.host, now):
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
        self._searches.start_due(now)

    def tick(self, now: float) -> None:
        """Let time pass: timeouts, due searches, maintenance.

        Args:
            now: The clock.
        """
        for pending in self._transactions.expire(now):
            self._on_timeout(pending.record, pending.address, now)
        self._searches.expire(now)
        self._maintenance.tick(now)
        self._searches.start_due(now)

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
                self._maintenance.ping_all(heard.to_ping, now)
                if heard.admission is Admission.CACHED and node not in heard.to_ping:
                    self._maintenance.ping_newcomer(node, now)
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
            self._searches.on_failed(asked, address, now)
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
            self._maintenance.ping_all(heard.to_ping, now)
        if message.ip is not None:
            self._vote(message.ip, address, now)
        match asked.purpose:
            case Purpose.LOOKUP:
                assert asked.search is not None
                self._searches.on_lookup_response(asked.search, message, address, now)
            case Purpose.BOOTSTRAP:
                self._searches.on_bootstrap_response(message, address, now)
            case Purpose.ANNOUNCE:
                assert asked.info_hash is not None
                self._searches.announce_settled(asked.info_hash, accepted=True)
            case Purpose.PING:
                pass

    def _on_timeout(self, asked: Asked, address: PeerAddress, now: float) -> None:
        if asked.node_id is not None and address.is_ipv6 in self._tables:
            self._tables[address.is_ipv6].failed(NodeInfo(asked.node_id, address), now)
        self._searches.on_failed(asked, address, now)

    def _vote(self, ip: PeerAddress, voter: PeerAddress, now: float) -> None:
        if ip.is_ipv6 != voter.is_ipv6:
            return
        decided = self._votes.vote(ip.host, voter.host)
        if decided is None:
            return
        self.external_ip = decided
        self._emit(ExternalAddress(decided))
        if not self.config.secure_id or is_bep42_exempt(decided):
            return
        if ip.is_ipv6 and self.config.ipv4:
            return  # our id follows the IPv4 address when we have one
        if is_secure_node_id(self.own_id, decided):
            return
        new_id = secure_node_id(decided, self._rng.getrandbits(8), self._rng)
        for table in self._tables.values():
            table.change_own_id(new_id, now)
        self._searches.search_nodes(new_id, now)

    # -- output --------------------------------------------------------------------------------

    def _send_query(self, address: PeerAddress, args: QueryArgs, asked: Asked, now: float) -> bool:
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

    def _emit(self, event: DhtEvent) -> None:
        self._events.append(event)

    def _drop(self, reason: str) -> None:
        self.counters.packets_dropped += 1
        setattr(self.counters, reason, getattr(self.counters, reason) + 1)
