"""The upkeep of a ``DhtNode``'s routing tables: pings, bucket refresh, bootstrap and its retry.

Strategy: ``Maintenance`` runs one round every ``maintenance_interval`` (the node's ``tick`` asks
it) and sends pings on the node's behalf: to the nodes the table wants checked, and to a node that
queried us but waits in a replacement cache. Searches that fill the table (a quiet bucket, our own
id) are started through the node's ``Searches``; queries go out through the node's
``send_query``, so every transaction stays in one place.

Rules:
- A round: expiry of stored peers, pings of questionable nodes (the table says which, at most
  ``ping_batch``), a ``find_node`` search per quiet bucket while fewer than half of
  ``max_searches`` run, a search for our own id once a table loaded from the state file has
  nodes, and bootstrap again while the table is empty (backing off to ``bootstrap_retry[1]``).
- Bootstrap addresses are kept (at most 64, deduplicated, of the families we run).
- A node that queries us and is only cached by the table gets one ping per
  ``NEWCOMER_PING_INTERVAL``; at most ``MAX_NEWCOMERS`` addresses are remembered.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Iterable

from torviz.shared.dht.krpc import FindNode, Ping
from torviz.shared.dht.node_id import NodeInfo
from torviz.shared.dht.node_types import DhtConfig
from torviz.shared.dht.peer_store import PeerStore
from torviz.shared.dht.searches import (
    Asked,
    Purpose,
    Searches,
    SendQuery,
    Tables,
    has_nodes,
    own_id_of,
    want_both,
)
from torviz.shared.types import PeerAddress

__all__ = ["MAX_NEWCOMERS", "NEWCOMER_PING_INTERVAL", "Maintenance"]

NEWCOMER_PING_INTERVAL = 600.0
"""Seconds before a node that queried us (and was only cached) is pinged again."""
MAX_NEWCOMERS = 4_096
"""Addresses remembered as pinged newcomers."""


class Maintenance:
    """The rounds that keep the tables fresh, bootstrap, and the pings they send."""

    def __init__(
        self,
        config: DhtConfig,
        tables: Tables,
        store: PeerStore,
        searches: Searches,
        rng: random.Random,
        now: float,
        *,
        send_query: SendQuery,
    ) -> None:
        """The first round is due now; the first bootstrap retry after ``bootstrap_retry[0]``.

        Args:
            config: The node's config (``maintenance_interval``, ``ping_batch``, ...).
            tables: The node's routing tables (shared).
            store: The peers we store for others (expired each round).
            searches: The node's searches (refresh and join searches start there).
            rng: The node's random generator (the targets of refresh searches).
            now: The clock.
            send_query: How a query goes out.
        """
        self._config = config
        self._tables = tables
        self._store = store
        self._searches = searches
        self._rng = rng
        self._send_query = send_query
        self._bootstrap_nodes: tuple[PeerAddress, ...] = ()
        self._bootstrap_wait = config.bootstrap_retry[0]
        self._next_bootstrap = now + self._bootstrap_wait
        self.next_round = now
        """When the next round is due."""
        self._newcomers: OrderedDict[PeerAddress, float] = OrderedDict()

    def bootstrap(self, addresses: Iterable[PeerAddress], now: float) -> None:
        """Join through known addresses (``DhtNode.bootstrap``): a ``find_node`` for our id each.

        Args:
            addresses: The nodes to ask (their ids are unknown).
            now: The clock.
        """
        fresh = [a for a in dict.fromkeys(addresses) if a.is_ipv6 in self._tables]
        self._bootstrap_nodes = tuple(dict.fromkeys([*self._bootstrap_nodes, *fresh]))[:64]
        self._searches.join(now)
        for address in fresh[:64]:
            self._send_query(address, self._find_self(), Asked(Purpose.BOOTSTRAP), now)

    def tick(self, now: float) -> None:
        """Run a round if one is due.

        Args:
            now: The clock.
        """
        if now >= self.next_round:
            self.next_round = now + self._config.maintenance_interval
            self._round(now)

    def ping_all(self, nodes: Iterable[NodeInfo], now: float) -> None:
        """Ping each node (under the id we know it by)."""
        own_id = own_id_of(self._tables)
        for node in nodes:
            self._send_query(node.address, Ping(own_id), Asked(Purpose.PING, node.id), now)

    def ping_newcomer(self, node: NodeInfo, now: float) -> None:
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
        self.ping_all([node], now)

    def _round(self, now: float) -> None:
        self._store.sweep(now)
        for table in self._tables.values():
            self.ping_all(table.questionable(now, self._config.ping_batch), now)
            for target in table.buckets_to_refresh(now, self._rng):
                if self._searches.running < self._config.max_searches // 2:
                    self._searches.search_nodes(target, now)
        if not self._searches.joined and has_nodes(self._tables):
            self._searches.join(now)  # a table loaded from the state file: search for our own id
        if not has_nodes(self._tables) and self._bootstrap_nodes and now >= self._next_bootstrap:
            self._bootstrap_wait = min(2 * self._bootstrap_wait, self._config.bootstrap_retry[1])
            self._next_bootstrap = now + self._bootstrap_wait
            for address in self._bootstrap_nodes:
                self._send_query(address, self._find_self(), Asked(Purpose.BOOTSTRAP), now)

    def _find_self(self) -> FindNode:
        own_id = own_id_of(self._tables)
        return FindNode(own_id, own_id, want_both(self._tables))
