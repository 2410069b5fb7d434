"""``DhtNode`` on its own: exact KRPC messages in, the answers and queries it sends out.

Remote nodes are played by hand with ``krpc`` messages, so every field of what the node sends can
be checked; the clock is a number passed in.
"""

from __future__ import annotations

import random

from torviz.shared.dht.krpc import (
    AnnouncePeer,
    Error,
    FindNode,
    GetPeers,
    KrpcMessage,
    Ping,
    Query,
    QueryArgs,
    Response,
    UnknownQuery,
    Want,
    decode_krpc,
    encode_krpc,
)
from torviz.shared.dht.node import (
    AnnounceDone,
    DhtConfig,
    DhtNode,
    ExternalAddress,
    PeersFound,
)
from torviz.shared.dht.node_id import NodeId, NodeInfo, is_secure_node_id
from torviz.shared.dht.routing import NodeState
from torviz.shared.types import InfoHash, PeerAddress

OWN = NodeId.from_int(0)  # ids 1, 2, 3 ... fall in ever deeper buckets: all fit
INFO_HASH = InfoHash(b"\x11" * 20)


def _node(config: DhtConfig | None = None, seed: int = 1) -> DhtNode:
    return DhtNode(config or DhtConfig(), OWN, 0.0, random.Random(seed))


def _peer(index: int, port: int = 6881) -> PeerAddress:
    return PeerAddress(f"10.0.{index >> 8 & 255}.{index & 255}", port)


def _info(index: int, value: int | None = None) -> NodeInfo:
    return NodeInfo(NodeId.from_int(index if value is None else value), _peer(index))


def _fill(node: DhtNode, count: int, now: float = 0.0) -> list[NodeInfo]:
    """Put ``count`` answering nodes in the IPv4 table (ids 1..count)."""
    infos = [_info(i) for i in range(1, count + 1)]
    for info in infos:
        node.table().heard_from(info, now, responded=True)
    return infos


def _ask(
    node: DhtNode,
    args: QueryArgs,
    source: PeerAddress,
    now: float = 0.0,
    *,
    t: bytes = b"qq",
    read_only: bool = False,
) -> KrpcMessage | None:
    """Send one query; the answer the node sends back to ``source`` (None: no answer)."""
    node.receive(encode_krpc(Query(t, args, read_only=read_only)), source, now)
    answers = [
        decode_krpc(data)
        for data, address in node.take_outgoing()
        if address == source and not isinstance(decode_krpc(data), Query)
    ]
    assert len(answers) <= 1
    return answers[0] if answers else None


def _sent_queries(node: DhtNode) -> list[tuple[Query, PeerAddress]]:
    out = []
    for data, address in node.take_outgoing():
        message = decode_krpc(data)
        assert isinstance(message, Query)
        out.append((message, address))
    return out


def _answer(node: DhtNode, query: Query, source: PeerAddress, now: float, **fields: object) -> None:
    node_id = fields.pop("node_id", None)
    assert isinstance(node_id, NodeId)
    response = Response(query.t, node_id, **fields)  # type: ignore[arg-type]
    node.receive(encode_krpc(response), source, now)


# -- the responder ------------------------------------------------------------------------------


def test_a_ping_is_answered_with_our_id_and_the_querier_address() -> None:
    node = _node()
    answer = _ask(node, Ping(NodeId.from_int(5)), _peer(5))
    assert answer == Response(b"qq", OWN, ip=_peer(5), version=DhtConfig().version)
    assert node.counters.queries_received == 1


def test_a_querier_is_pinged_once_and_enters_the_table_when_it_answers() -> None:
    """A node that queries us is only cached by the table; our ping's answer moves it in, even
    into a full bucket that can split. However often it asks, it is pinged at most as the
    table asks (every 30 s) and once per newcomer interval."""
    node = _node()
    _fill(node, 8, 0.0)  # ids 1..8 fill the one bucket
    querier = NodeInfo(NodeId.from_int(1 << 159), _peer(50))

    def sent_after_query(t: bytes, now: float) -> list[KrpcMessage]:
        node.receive(encode_krpc(Query(t, Ping(querier.id))), querier.address, now)
        return [decode_krpc(d) for d, a in node.take_outgoing() if a == querier.address]

    ping, answer = sent_after_query(b"q1", 0.0)  # the table asks for it: it could split
    assert isinstance(answer, Response) and isinstance(ping, Query)
    assert isinstance(ping.args, Ping)
    again, _ = sent_after_query(b"q2", 1.0)  # a newcomer ping, once per interval
    assert isinstance(again, Query) and isinstance(again.args, Ping)
    (answer,) = sent_after_query(b"q3", 2.0)  # not pinged again within NEWCOMER_PING_INTERVAL
    _answer(node, ping, querier.address, 1.5, node_id=querier.id)
    assert querier.id in node.table()
    assert len(node.table()) == 9


def test_find_node_returns_the_eight_closest_of_the_querier_family() -> None:
    node = _node()
    infos = _fill(node, 20)
    answer = _ask(node, FindNode(NodeId.from_int(999), NodeId.from_int(0)), _peer(999))
    assert isinstance(answer, Response)
    assert answer.nodes == tuple(infos[:8])
    assert answer.nodes6 == ()
    assert answer.values == () and answer.token is None


def test_get_peers_gives_a_token_that_announce_peer_needs() -> None:
    node = _node()
    _fill(node, 10)
    announcer = _peer(200)
    answer = _ask(node, GetPeers(NodeId.from_int(200), INFO_HASH), announcer)
    assert isinstance(answer, Response) and answer.token is not None
    assert len(answer.nodes) == 8 and answer.values == ()
    bad = _ask(node, AnnouncePeer(NodeId.from_int(200), INFO_HASH, 7000, b"nope"), announcer)
    assert isinstance(bad, Error) and bad.code == 203
    # The token is bound to the IP: another host cannot use it.
    stolen = _ask(
        node, AnnouncePeer(NodeId.from_int(201), INFO_HASH, 7000, answer.token), _peer(201)
    )
    assert isinstance(stolen, Error) and stolen.code == 203
    ok = _ask(node, AnnouncePeer(NodeId.from_int(200), INFO_HASH, 7000, answer.token), announcer)
    assert ok == Response(b"qq", OWN, ip=announcer, version=DhtConfig().version)
    # implied_port: the UDP source port counts, not the port given.
    _ask(
        node, AnnouncePeer(NodeId.from_int(200), INFO_HASH, 0, answer.token, True), _peer(202, 5555)
    )
    other = _ask(node, GetPeers(NodeId.from_int(300), INFO_HASH), _peer(300))
    assert isinstance(other, Response)
    assert set(other.values) == {PeerAddress(announcer.host, 7000)}
    token202 = _ask(node, GetPeers(NodeId.from_int(202), INFO_HASH), _peer(202, 5555))
    assert isinstance(token202, Response) and token202.token is not None
    _ask(
        node,
        AnnouncePeer(NodeId.from_int(202), INFO_HASH, 0, token202.token, True),
        _peer(202, 5555),
    )
    other = _ask(node, GetPeers(NodeId.from_int(300), INFO_HASH), _peer(300))
    assert isinstance(other, Response)
    assert set(other.values) == {PeerAddress(announcer.host, 7000), _peer(202, 5555)}
    assert node.summary(1.0).stored_peers == 2


def test_a_token_expires_after_two_rotations() -> None:
    node = _node()
    answer = _ask(node, GetPeers(NodeId.from_int(7), INFO_HASH), _peer(7))
    assert isinstance(answer, Response) and answer.token is not None
    late = _ask(
        node, AnnouncePeer(NodeId.from_int(7), INFO_HASH, 7000, answer.token), _peer(7), 601.0
    )
    assert isinstance(late, Error) and late.code == 203


def test_a_get_peers_answer_holds_at_most_fifty_values_and_fits_a_datagram() -> None:
    node = _node()
    _fill(node, 10)
    for index in range(1, 301):
        source = PeerAddress(f"192.0.2.{index % 250 + 1}", 1000 + index)
        got = _ask(node, GetPeers(NodeId.from_int(10_000 + index), INFO_HASH), source)
        assert isinstance(got, Response) and got.token is not None
        _ask(
            node,
            AnnouncePeer(NodeId.from_int(10_000 + index), INFO_HASH, 7000 + index, got.token),
            source,
        )
    node.receive(encode_krpc(Query(b"zz", GetPeers(NodeId.from_int(5), INFO_HASH))), _peer(5), 1.0)
    (data, _), *_ = node.take_outgoing()
    answer = decode_krpc(data)
    assert isinstance(answer, Response)
    assert len(answer.values) == 50
    assert len(data) < 1_000


def test_unknown_methods_and_malformed_queries_get_errors_and_garbage_is_dropped() -> None:
    node = _node()
    unknown = _ask(node, UnknownQuery("vote", NodeId.from_int(3)), _peer(3))
    assert isinstance(unknown, Error) and unknown.code == 204
    node.receive(b"d1:ad2:id3:abce1:q4:ping1:t2:xy1:y1:qe", _peer(3), 0.0)
    ((data, address),) = node.take_outgoing()
    error = decode_krpc(data)
    assert isinstance(error, Error) and error.code == 203 and error.t == b"xy"
    assert address == _peer(3)
    for garbage in (b"", b"\xff" * 100, b"i42e", b"d1:y1:re", b"x" * 5_000):
        node.receive(garbage, _peer(3), 0.0)
    assert node.take_outgoing() == []
    assert node.counters.dropped_malformed == 6
    assert node.counters.packets_dropped == 6


def test_a_query_with_our_own_id_gets_no_answer() -> None:
    node = _node()
    assert _ask(node, Ping(OWN), _peer(9)) is None


def test_a_read_only_querier_is_answered_but_never_enters_the_table() -> None:
    node = _node()
    answer = _ask(node, Ping(NodeId.from_int(8)), _peer(8), read_only=True)
    assert isinstance(answer, Response)
    assert node.take_outgoing() == []  # no ping of it either
    assert node.table().status(NodeId.from_int(8), 0.0) is None


def test_in_read_only_mode_we_answer_nothing_and_say_ro_in_our_queries() -> None:
    node = _node(DhtConfig(read_only=True))
    assert _ask(node, Ping(NodeId.from_int(8)), _peer(8)) is None
    assert node.counters.dropped_read_only == 1
    node.ping(_peer(9), 0.0)
    ((query, _),) = _sent_queries(node)
    assert query.read_only
    assert b"2:roi1e" in encode_krpc(query)


# -- transactions -------------------------------------------------------------------------------


def test_an_answer_counts_only_from_the_address_asked_and_with_our_transaction_id() -> None:
    node = _node()
    node.ping(_peer(20), 0.0)
    ((query, _),) = _sent_queries(node)
    liar = NodeId.from_int(21)
    _answer(node, query, _peer(21), 0.1, node_id=liar)  # right t, wrong address
    assert node.counters.dropped_unmatched == 1
    node.receive(encode_krpc(Response(b"??", liar)), _peer(20), 0.1)  # right address, wrong t
    assert node.counters.dropped_unmatched == 2
    assert len(node.table()) == 0
    _answer(node, query, _peer(20), 0.2, node_id=NodeId.from_int(20))
    assert NodeId.from_int(20) in node.table()
    _answer(node, query, _peer(20), 0.3, node_id=NodeId.from_int(20))  # a replay: closed
    assert node.counters.dropped_unmatched == 3
    assert node.outstanding == 0


def test_unanswered_queries_expire_and_make_the_node_bad() -> None:
    node = _node()
    (info,) = _fill(node, 1)
    node.tick(1_000.0)  # questionable after 15 minutes: pinged
    (ping, address), *_ = _sent_queries(node)
    assert isinstance(ping.args, Ping) and address == info.address
    node.tick(1_010.0)  # timed out: one failure
    node.tick(1_040.0)  # the table asks again after 30 s
    _sent_queries(node)
    node.tick(1_060.0)
    status = node.table().status(info.id, 1_060.0)
    assert status is not None and status.state is NodeState.BAD
    assert node.outstanding == 0


def test_outstanding_queries_are_capped() -> None:
    node = _node(DhtConfig(max_transactions=5))
    for index in range(1, 11):
        node.ping(_peer(index), 0.0)
    assert len(node.take_outgoing()) == 5
    assert node.counters.queries_refused == 5


# -- searches and announces ----------------------------------------------------------------------


def _run_search(
    node: DhtNode, now: float, peers: dict[PeerAddress, tuple[PeerAddress, ...]]
) -> int:
    """Answer every query the node sends, as nodes holding ``peers``; returns queries answered."""
    answered = 0
    for _ in range(100):
        queries = _sent_queries(node)
        if not queries:
            return answered
        for query, address in queries:
            node_id = NodeId.from_int(int(address.host.split(".")[-1]))
            if isinstance(query.args, GetPeers):
                _answer(
                    node,
                    query,
                    address,
                    now,
                    node_id=node_id,
                    token=b"tok" + address.host.encode(),
                    values=peers.get(address, ()),
                )
            else:
                _answer(node, query, address, now, node_id=node_id)
            answered += 1
    raise AssertionError("the search did not end")


def test_a_torrent_is_searched_announced_and_searched_again_in_15_to_30_minutes() -> None:
    node = _node()
    infos = _fill(node, 12)
    assert node.add_torrent(INFO_HASH, 7000, 0.0)
    seeder = PeerAddress("192.0.2.1", 51413)
    _run_search(node, 0.0, {infos[0].address: (seeder,), infos[1].address: (seeder,)})
    events = node.take_events()
    assert events == [PeersFound(INFO_HASH, (seeder,)), AnnounceDone(INFO_HASH, 8)]
    outcome = node.last_search(INFO_HASH)
    assert outcome is not None and outcome.peers == 1
    (summary,) = node.torrent_summaries(1.0)
    assert summary.peers_found == 1 and summary.announced_to == 8
    assert summary.next_lookup_in is not None and 899.0 <= summary.next_lookup_in <= 1_799.0
    node.tick(1.0 + summary.next_lookup_in - 1.0)
    assert not [q for q, _ in _sent_queries(node) if isinstance(q.args, GetPeers)]
    node.tick(1.0 + summary.next_lookup_in)
    assert [q for q, _ in _sent_queries(node) if isinstance(q.args, GetPeers)]


def test_the_announce_goes_to_the_closest_nodes_that_gave_a_token_with_our_port() -> None:
    node = _node()
    _fill(node, 12)
    node.add_torrent(INFO_HASH, 7000, 0.0)
    announces: list[tuple[Query, PeerAddress]] = []
    for _ in range(50):
        queries = _sent_queries(node)
        if not queries:
            break
        for query, address in queries:
            node_id = NodeId.from_int(int(address.host.split(".")[-1]))
            if isinstance(query.args, AnnouncePeer):
                announces.append((query, address))
                continue
            _answer(node, query, address, 0.0, node_id=node_id, token=b"t%d" % node_id.value)
    assert len(announces) == 8
    for query, address in announces:
        assert isinstance(query.args, AnnouncePeer)
        assert query.args.port == 7000 and not query.args.implied_port
        assert query.args.token == b"t%s" % address.host.split(".")[-1].encode()
    # Error answers and silence count as refusals.
    for query, address in announces[:3]:
        node.receive(encode_krpc(Error(query.t, 203, "bad token")), address, 1.0)
    node.tick(20.0)
    assert node.take_events() == [AnnounceDone(INFO_HASH, 0)]


def test_a_torrent_not_announced_gets_no_announce_peer() -> None:
    node = _node()
    _fill(node, 12)
    node.add_torrent(INFO_HASH, 7000, 0.0, announce=False)
    _run_search(node, 0.0, {})
    assert node.take_events() == []


def test_a_torrent_added_before_any_node_is_known_is_searched_once_the_table_fills() -> None:
    node = _node()
    node.add_torrent(INFO_HASH, 7000, 0.0)
    assert _sent_queries(node) == []
    node.bootstrap([_peer(1)], 0.0)
    ((query, address),) = _sent_queries(node)
    assert isinstance(query.args, FindNode) and query.args.target == OWN
    _answer(node, query, address, 0.1, node_id=NodeId.from_int(1), nodes=(_info(2), _info(3)))
    kinds = {type(q.args) for q, _ in _sent_queries(node)}
    assert kinds == {FindNode, GetPeers}


def test_removing_a_torrent_cancels_its_search() -> None:
    node = _node()
    _fill(node, 12)
    node.add_torrent(INFO_HASH, 7000, 0.0)
    queries = _sent_queries(node)
    assert node.searches == 1
    node.remove_torrent(INFO_HASH)
    assert node.searches == 0 and node.torrents() == []
    for query, address in queries:
        _answer(
            node,
            query,
            address,
            0.1,
            node_id=NodeId.from_int(int(address.host.split(".")[-1])),
            values=(PeerAddress("192.0.2.1", 1),),
        )
    assert node.take_events() == []
    assert _sent_queries(node) == []


def test_bootstrap_is_retried_with_backoff_while_the_table_is_empty() -> None:
    node = _node()
    node.bootstrap([_peer(1)], 0.0)
    assert len(_sent_queries(node)) == 1
    times = []
    now = 0.0
    while now < 2_000.0:
        now += 5.0
        node.tick(now)
        if _sent_queries(node):
            times.append(now)
    assert times == [30.0, 90.0, 210.0, 450.0, 930.0, 1_530.0]  # doubling up to 10 minutes


def test_quiet_buckets_are_refreshed_with_a_find_node_search() -> None:
    node = _node()
    _fill(node, 12)
    node.tick(0.0)
    _sent_queries(node)
    node.tick(901.0)
    finds = [q for q, _ in _sent_queries(node) if isinstance(q.args, FindNode)]
    assert finds


# -- our address and id ------------------------------------------------------------------------


def test_several_nodes_agreeing_on_our_address_give_us_a_bep42_id() -> None:
    node = _node()
    ours = PeerAddress("203.0.113.7", 6881)
    for index in (1, 2, 3):
        node.ping(_peer(index), 0.0)
    queries = _sent_queries(node)
    for index, (query, address) in enumerate(queries[:2], start=1):
        _answer(node, query, address, 0.1, node_id=NodeId.from_int(index), ip=ours)
    assert node.take_events() == [] and node.own_id == OWN
    query, address = queries[2]
    _answer(node, query, address, 0.1, node_id=NodeId.from_int(3), ip=ours)
    assert node.take_events() == [ExternalAddress("203.0.113.7")]
    assert node.own_id != OWN
    assert is_secure_node_id(node.own_id, "203.0.113.7")
    assert node.table().own_id == node.own_id
    assert node.external_ip == "203.0.113.7"


def test_one_node_repeating_an_address_is_one_vote() -> None:
    node = _node()
    for _ in range(5):
        node.ping(_peer(1), 0.0)
        ((query, address),) = _sent_queries(node)
        _answer(
            node, query, address, 0.1, node_id=NodeId.from_int(1), ip=PeerAddress("203.0.113.7", 1)
        )
    assert node.take_events() == [] and node.own_id == OWN


def test_a_local_external_address_keeps_our_id() -> None:
    node = _node()
    for index in (1, 2, 3):
        node.ping(_peer(index), 0.0)
    for index, (query, address) in enumerate(_sent_queries(node), start=1):
        _answer(node, query, address, 0.1, node_id=NodeId.from_int(index), ip=_peer(77))
    assert node.take_events() == [ExternalAddress("10.0.0.77")]
    assert node.own_id == OWN


# -- state, status, IPv6 -------------------------------------------------------------------------


def test_the_table_survives_a_restart_and_garbage_state_is_ignored() -> None:
    node = _node()
    infos = _fill(node, 10)
    saved = node.dump()
    again = DhtNode(DhtConfig(), None, 5.0, random.Random(2), saved=saved)
    assert again.own_id == OWN and again.load_problem is None
    assert {s.info for s in again.table().nodes(5.0)} == set(infos)
    # The loaded nodes are pinged, and a search for our own id starts without any bootstrap.
    again.tick(5.0)
    kinds = {type(q.args) for q, _ in _sent_queries(again)}
    assert kinds == {Ping, FindNode}
    for garbage in (b"", b"junk", b"d1:4i1ee", b"le"):
        broken = DhtNode(DhtConfig(), None, 0.0, random.Random(3), saved=garbage)
        assert broken.load_problem is not None or len(broken.table()) == 0
        assert len(broken.table()) == 0


def test_the_summary_counts_nodes_searches_and_drops() -> None:
    node = _node(DhtConfig(port=6999))
    _fill(node, 12)
    node.add_torrent(INFO_HASH, 7000, 0.0)
    node.receive(b"garbage", _peer(99), 0.0)
    summary = node.summary(1.0)
    assert (summary.nodes, summary.good_nodes, summary.lookups) == (12, 12, 1)
    assert summary.packets_dropped == 1 and summary.port == 6999
    (torrent,) = node.torrent_summaries(1.0)
    assert torrent.next_lookup_in is None and torrent.peers_found == 0


def _v6(index: int) -> PeerAddress:
    return PeerAddress(f"fd00::{index:x}", 6881)


def test_with_ipv6_a_second_table_answers_nodes6_and_searches_run_per_family() -> None:
    node = _node(DhtConfig(ipv6=True))
    _fill(node, 10)
    six = [NodeInfo(NodeId.from_int(i), _v6(100 + i)) for i in range(1, 11)]
    for info in six:
        node.table(ipv6=True).heard_from(info, 0.0, responded=True)
    both = _ask(
        node, FindNode(NodeId.from_int(50), NodeId.from_int(0), Want.N4 | Want.N6), _peer(50)
    )
    assert isinstance(both, Response) and len(both.nodes) == 8 and len(both.nodes6) == 8
    own_family = _ask(node, FindNode(NodeId.from_int(51), NodeId.from_int(0)), _v6(51))
    assert (
        isinstance(own_family, Response) and own_family.nodes == () and len(own_family.nodes6) == 8
    )
    node.add_torrent(INFO_HASH, 7000, 0.0, announce=False)
    queries = _sent_queries(node)
    assert {a.is_ipv6 for _, a in queries} == {False, True}
    assert all(q.args.want == Want.N4 | Want.N6 for q, _ in queries if isinstance(q.args, GetPeers))
    # An IPv4 node naming IPv6 nodes feeds the IPv6 lookup (asked once a slot is free).
    fresh6 = NodeInfo(NodeId(INFO_HASH.raw), _v6(3))
    for query, address in queries:
        node_id = next(
            s.info.id
            for t in (False, True)
            for s in node.table(t).nodes(0.0)
            if s.info.address == address
        )
        nodes6 = (fresh6,) if not address.is_ipv6 else ()
        _answer(node, query, address, 0.1, node_id=node_id, nodes6=nodes6, token=b"t")
    asked = {a for _, a in _sent_queries(node)}
    assert fresh6.address in asked
    assert node.summary(0.0).nodes == 20


def test_a_node_answering_under_another_id_than_asked_does_not_rewrite_the_table() -> None:
    node = _node()
    (info,) = _fill(node, 1)
    node.tick(1_000.0)  # questionable: pinged under the id the table knows
    ((ping, address),) = [(q, a) for q, a in _sent_queries(node) if isinstance(q.args, Ping)]
    assert address == info.address
    _answer(node, ping, address, 1_000.5, node_id=NodeId.from_int(999))
    assert node.counters.id_mismatches == 1
    assert [s.info for s in node.table().nodes(1_001.0)] == [info]


def test_a_get_peers_answer_with_ipv6_values_and_both_node_families_still_fits_a_datagram() -> None:
    node = _node(DhtConfig(ipv6=True))
    _fill(node, 10)
    for i in range(1, 11):
        node.table(ipv6=True).heard_from(
            NodeInfo(NodeId.from_int(i), _v6(100 + i)), 0.0, responded=True
        )
    for index in range(1, 61):
        source = PeerAddress(f"2001:db8::{index:x}", 2000 + index)
        got = _ask(node, GetPeers(NodeId.from_int(500 + index), INFO_HASH), source)
        assert isinstance(got, Response) and got.token is not None
        args = AnnouncePeer(NodeId.from_int(500 + index), INFO_HASH, 7000, got.token)
        assert isinstance(_ask(node, args, source), Response)
    query = Query(b"zz", GetPeers(NodeId.from_int(5), INFO_HASH, Want.N4 | Want.N6))
    node.receive(encode_krpc(query), _v6(5), 1.0)
    ((data, _),) = node.take_outgoing()
    answer = decode_krpc(data)
    assert isinstance(answer, Response)
    assert len(answer.nodes) == 8 and len(answer.nodes6) == 8
    assert 0 < len(answer.values) < 50
    assert len(data) <= 1_500


def test_answers_to_our_queries_get_past_a_flood_that_uses_up_the_limits() -> None:
    node = _node()
    honest = _peer(2)
    node.ping(honest, 0.0)
    [(datagram, _)] = node.take_outgoing()
    ping = decode_krpc(datagram)
    assert isinstance(ping, Query)
    for i in range(1_200):  # each source under its own limit, together over the total
        flooder = PeerAddress(f"127.9.{i // 250}.{i % 250 + 1}", 6881)
        node.receive(encode_krpc(Query(b"f", Ping(NodeId.from_int(i + 10)))), flooder, 0.5)
    node.take_outgoing()
    _answer(node, ping, honest, 0.5, node_id=NodeId.from_int(5))
    assert NodeId.from_int(5) in node.table()
