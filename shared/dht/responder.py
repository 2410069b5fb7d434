"""The answering side of a DHT node (BEP 5): one answer per query, never bigger than needed.

Strategy: a pure function of the node's state: the routing tables for ``find_node`` and
``get_peers``, the token keeper for ``get_peers`` and ``announce_peer``, the peer store for
``values`` and announces. The node decides *whether* to answer (rate limits, read-only mode); this
module decides *what*.

Rules:
- ``find_node`` and ``get_peers`` return the 8 closest nodes of the families asked for (BEP 32
  ``want``; none asked means the querier's own family), from the tables we have.
- ``get_peers`` returns a token bound to the querier's IP, and at most ``max_values`` peers of the
  querier's family (50 by default: 400 bytes for IPv4, 1,050 for IPv6), fewer when the answer
  would not fit one datagram (IPv6 values with 8 nodes and 8 nodes6), so a spoofed query gets
  back at most a few times its size.
- ``announce_peer`` with a token we did not give that IP in the last 5 to 10 minutes: error 203.
  With ``implied_port`` the source port is stored instead of ``port`` (BEP 5). A full store:
  error 202.
- An unknown method: error 204. A query carrying our own id gets no answer (a reflection of our
  own packet, or a node copying our id).
- Every answer echoes the querier's address in ``ip`` (BEP 42) and carries our ``v``.
"""

from __future__ import annotations

from collections.abc import Mapping

from torviz.shared.dht.krpc import (
    MAX_DATAGRAM_SIZE,
    AnnouncePeer,
    Error,
    ErrorCode,
    FindNode,
    GetPeers,
    Ping,
    Query,
    Response,
    UnknownQuery,
    Want,
    encode_krpc,
)
from torviz.shared.dht.node_id import NodeId, NodeInfo
from torviz.shared.dht.peer_store import PeerStore
from torviz.shared.dht.routing import RoutingTable
from torviz.shared.dht.tokens import TokenKeeper
from torviz.shared.types import InfoHash, PeerAddress

__all__ = ["DEFAULT_MAX_VALUES", "Responder"]

DEFAULT_MAX_VALUES = 50
"""Peers in one get_peers answer (see the module rules)."""


class Responder:
    """Answers queries from the node's tables, tokens and peer store."""

    def __init__(
        self,
        tables: Mapping[bool, RoutingTable],
        tokens: TokenKeeper,
        store: PeerStore,
        *,
        max_values: int = DEFAULT_MAX_VALUES,
        version: bytes | None = None,
    ) -> None:
        """A responder over the node's state (kept by reference: it sees later changes).

        Args:
            tables: The routing tables by family (True: IPv6).
            tokens: Hands out and checks announce tokens.
            store: The peers announced to us.
            max_values: Most peers in one get_peers answer.
            version: Our ``v``, or None.
        """
        self._tables = tables
        self._tokens = tokens
        self._store = store
        self.max_values = max_values
        self.version = version

    def answer(
        self, query: Query, source: PeerAddress, own_id: NodeId, now: float
    ) -> Response | Error | None:
        """The answer to one query.

        Args:
            query: The decoded query.
            source: Where it came from (IP and UDP port).
            own_id: Our node id now.
            now: The clock.

        Returns:
            The response or error to send back, or None when the query gets no answer.
        """
        t = query.t
        match query.args:
            case UnknownQuery(method=method):
                return self._error(t, ErrorCode.METHOD_UNKNOWN, f"unknown method {method}", source)
            case _ if query.node_id == own_id:
                return None
            case Ping():
                return self._response(t, own_id, source)
            case FindNode(target=target, want=want):
                nodes, nodes6 = self._closest(target, want, source)
                return self._response(t, own_id, source, nodes=nodes, nodes6=nodes6)
            case GetPeers(info_hash=info_hash, want=want):
                return self._get_peers(t, own_id, info_hash, want, source, now)
            case AnnouncePeer() as args:
                return self._announce(t, own_id, args, source, now)

    def _get_peers(
        self,
        t: bytes,
        own_id: NodeId,
        info_hash: InfoHash,
        want: Want,
        source: PeerAddress,
        now: float,
    ) -> Response:
        values = self._store.values(info_hash, self.max_values, ipv6=source.is_ipv6)
        nodes, nodes6 = self._closest(NodeId(info_hash.raw), want, source)
        token = self._tokens.token(source.host, now)
        while True:
            response = self._response(
                t, own_id, source, nodes=nodes, nodes6=nodes6, values=tuple(values), token=token
            )
            if not values or _fits(response):
                return response
            del values[len(values) // 2 :]  # 50 IPv6 values, 8 nodes and 8 nodes6 overflow

    def _announce(
        self, t: bytes, own_id: NodeId, args: AnnouncePeer, source: PeerAddress, now: float
    ) -> Response | Error:
        if not self._tokens.is_valid(args.token, source.host, now):
            return self._error(t, ErrorCode.PROTOCOL, "bad token", source)
        port = source.port if args.implied_port else args.port
        peer = PeerAddress(source.host, port)
        if not self._store.announce(args.info_hash, peer, now):
            return self._error(t, ErrorCode.SERVER, "peer store full", source)
        return self._response(t, own_id, source)

    def _closest(
        self, target: NodeId, want: Want, source: PeerAddress
    ) -> tuple[tuple[NodeInfo, ...], tuple[NodeInfo, ...]]:
        if want is Want.NONE:
            want = Want.N6 if source.is_ipv6 else Want.N4
        found: dict[bool, tuple[NodeInfo, ...]] = {False: (), True: ()}
        for ipv6, flag in ((False, Want.N4), (True, Want.N6)):
            table = self._tables.get(ipv6)
            if table is not None and flag in want:
                found[ipv6] = tuple(table.closest(target, 8))
        return found[False], found[True]

    def _response(
        self,
        t: bytes,
        own_id: NodeId,
        source: PeerAddress,
        *,
        nodes: tuple[NodeInfo, ...] = (),
        nodes6: tuple[NodeInfo, ...] = (),
        values: tuple[PeerAddress, ...] = (),
        token: bytes | None = None,
    ) -> Response:
        return Response(t, own_id, nodes, nodes6, values, token, source, self.version)

    def _error(self, t: bytes, code: ErrorCode, message: str, source: PeerAddress) -> Error:
        return Error(t, int(code), message, source, self.version)


def _fits(response: Response) -> bool:
    """Whether the response encodes within ``MAX_DATAGRAM_SIZE`` (the encoder refuses more)."""
    try:
        return len(encode_krpc(response)) <= MAX_DATAGRAM_SIZE
    except ValueError:
        return False
