"""Hostile nodes against ``DhtNode``: floods, garbage, lies in answers, spoofed ids.

What must hold: memory and work stay bounded (rate limits, caps on every map), nothing raises,
and lookups among honest nodes still end at the true closest nodes. Floods hit one node directly;
lies and spoofed ids come from stand-ins placed in a simulated network of honest nodes.
"""

from __future__ import annotations

import random
import time
import tracemalloc

from tests.shared.dht.sim import SimNetwork, address_of
from torviz.shared.bencode import encode
from torviz.shared.dht.krpc import (
    AnnouncePeer,
    Error,
    FindNode,
    GetPeers,
    Ping,
    Query,
    Response,
    decode_krpc,
    encode_krpc,
    encode_nodes,
)
from torviz.shared.dht.node import DhtConfig, DhtEvent, DhtNode
from torviz.shared.dht.node_id import NodeId, NodeInfo, distance, secure_node_id
from torviz.shared.dht.peer_store import PeerStoreLimits
from torviz.shared.errors import KrpcError
from torviz.shared.types import InfoHash, PeerAddress

OWN = NodeId.from_int(12345)


def _node(config: DhtConfig | None = None) -> DhtNode:
    return DhtNode(config or DhtConfig(), OWN, 0.0, random.Random(1))


def _ping(index: int, t: bytes = b"aa") -> bytes:
    return encode_krpc(Query(t, Ping(NodeId.from_int(index + 1))))


def _answers(node: DhtNode) -> int:
    return sum(1 for data, _ in node.take_outgoing() if not isinstance(decode_krpc(data), Query))


# -- floods ------------------------------------------------------------------------------------


def test_a_query_flood_from_one_source_is_cut_to_its_rate_and_others_are_still_answered() -> None:
    node = _node()
    flooder = PeerAddress("192.0.2.66", 6881)
    honest = PeerAddress("192.0.2.7", 6881)
    answered = honest_answered = 0
    now = 0.0
    for index in range(20_000):  # 2,000 a second for 10 s
        now = index / 2_000
        node.receive(_ping(index), flooder, now)
        if index % 1_000 == 0:
            answered += _answers(node)
            node.receive(_ping(7, b"hh"), honest, now)
            honest_answered += _answers(node)
    answered += _answers(node)
    limits = DhtConfig().rate
    assert answered <= limits.per_source_burst + limits.per_source_rate * now + 1
    assert answered >= limits.per_source_rate * now  # the limit, not a ban
    assert honest_answered == 20
    assert node.counters.dropped_rate_limited == 20_000 - answered


def test_a_flood_from_many_sources_is_cut_to_the_total_rate_with_bounded_memory() -> None:
    node = _node()
    for index in range(1, 11):  # a table to search from afterwards
        node.table().heard_from(
            NodeInfo(NodeId.from_int(index), address_of(index)), 0.0, responded=True
        )
    before = len(node.table())
    # 10,000 a second for 2 s, each from another address with a valid BEP 42 id for it.
    rng = random.Random(3)
    flood = []
    for index in range(20_000):
        source = PeerAddress(f"198.18.{index >> 8 & 255}.{index & 255}", 1024 + index % 60_000)
        node_id = secure_node_id(source.host, rng.randrange(256), rng)
        flood.append((encode_krpc(Query(b"aa", Ping(node_id))), source))
    tracemalloc.start()
    try:
        started = time.monotonic()
        sent = 0
        for index, (datagram, source) in enumerate(flood):
            node.receive(datagram, source, index / 10_000)
            sent += len(node.take_outgoing())
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    limits = DhtConfig().rate
    answered = node.counters.queries_received
    assert answered <= limits.total_burst + limits.total_rate * 2.0 + 1
    assert answered >= limits.total_burst
    # Each answered query costs at most an answer and one ping of the newcomer: no amplification.
    assert sent <= 2 * answered
    assert node.outstanding <= DhtConfig().max_transactions
    assert len(node.table()) == before  # none of them answered a query of ours
    # Pinging the flooders takes at most half the transactions: our own searches still go out.
    assert node.outstanding <= DhtConfig().max_transactions // 2
    node.add_torrent(InfoHash(b"\x05" * 20), 7000, 2.0)
    searched = [a for d, a in node.take_outgoing() if isinstance(decode_krpc(d), Query)]
    assert len(searched) == 3 and node.counters.queries_refused == 0
    assert peak < 40 * 2**20
    assert elapsed < 30.0  # generous: the work per datagram is bounded, not its speed


def test_a_flood_of_answers_to_nothing_changes_nothing() -> None:
    node = _node()
    rng = random.Random(4)
    for index in range(5_000):
        t = rng.randbytes(2)
        fake = Response(t, NodeId.from_int(index + 1), nodes=(NodeInfo(OWN, address_of(1)),))
        node.receive(encode_krpc(fake), address_of(index % 200 + 2), index / 100)
    assert node.counters.dropped_unmatched + node.counters.dropped_rate_limited == 5_000
    assert len(node.table()) == 0 and node.take_outgoing() == [] and node.outstanding == 0


def test_announces_for_many_info_hashes_fill_the_store_only_to_its_caps() -> None:
    store = PeerStoreLimits(max_info_hashes=50, max_peers=200, max_peers_per_info_hash=10)
    node = _node(DhtConfig(store=store))
    rng = random.Random(5)
    refused = 0
    for index in range(2_000):
        source = PeerAddress(f"203.0.113.{index % 250 + 1}", 1000 + index)
        info_hash = InfoHash(rng.randbytes(20)) if index % 2 else InfoHash(b"\x01" * 20)
        now = index / 50
        node.receive(
            encode_krpc(Query(b"g", GetPeers(NodeId.from_int(index + 1), info_hash))), source, now
        )
        (reply,) = [decode_krpc(d) for d, a in node.take_outgoing() if a == source][:1]
        assert isinstance(reply, Response) and reply.token is not None
        announce = AnnouncePeer(NodeId.from_int(index + 1), info_hash, 6881, reply.token)
        node.receive(encode_krpc(Query(b"a", announce)), source, now)
        (answer,) = [decode_krpc(d) for d, a in node.take_outgoing() if a == source][:1]
        refused += isinstance(answer, Error) and answer.code == 202
    assert node.summary(40.0).stored_peers <= 200
    assert refused > 0


# -- garbage -----------------------------------------------------------------------------------


def _valid_messages() -> list[bytes]:
    own = NodeId.from_int(99)
    node = NodeInfo(NodeId.from_int(5), PeerAddress("192.0.2.5", 6881))
    return [
        encode_krpc(Query(b"aa", Ping(own))),
        encode_krpc(Query(b"ab", FindNode(own, NodeId.from_int(3)))),
        encode_krpc(Query(b"ac", GetPeers(own, InfoHash(b"\x02" * 20)))),
        encode_krpc(Query(b"ad", AnnouncePeer(own, InfoHash(b"\x02" * 20), 6881, b"tok"))),
        encode_krpc(Response(b"ae", own, nodes=(node,) * 8, token=b"tok")),
        encode_krpc(Error(b"af", 201, "oops")),
    ]


def test_garbage_and_mutated_messages_never_raise_and_are_counted() -> None:
    node = _node(DhtConfig(rate=DhtConfig().rate.__class__(per_source_burst=1e9, total_burst=1e9)))
    rng = random.Random(6)
    valid = _valid_messages()
    inputs: list[bytes] = [rng.randbytes(rng.randrange(0, 2_000)) for _ in range(3_000)]
    for _ in range(10_000):
        data = bytearray(rng.choice(valid))
        for _ in range(rng.randrange(1, 4)):
            match rng.randrange(3):
                case 0 if data:
                    data[rng.randrange(len(data))] = rng.randrange(256)
                case 1 if data:
                    del data[rng.randrange(len(data)) :]
                case _:
                    data[rng.randrange(len(data) + 1) : 0] = rng.randbytes(rng.randrange(1, 20))
        inputs.append(bytes(data))
    for index, datagram in enumerate(inputs):
        node.receive(datagram, PeerAddress("192.0.2.9", 6881), index / 1_000)
        for reply, _ in node.take_outgoing():
            decode_krpc(reply)  # whatever we send is well formed
    counters = node.counters
    assert (
        counters.dropped_malformed + counters.queries_received + counters.dropped_unmatched
        <= len(inputs)
    )
    assert counters.dropped_malformed >= 3_000


def test_an_answer_naming_1000_nodes_is_dropped_unread() -> None:
    node = _node()
    node.ping(address_of(1), 0.0)
    ((query, _),) = [(decode_krpc(d), a) for d, a in node.take_outgoing()]
    assert isinstance(query, Query)
    bogus = [NodeInfo(NodeId.from_int(i + 1), address_of(i + 10)) for i in range(1_000)]
    body = {b"id": NodeId.from_int(77).raw, b"nodes": encode_nodes(bogus)}
    datagram = encode({b"t": query.t, b"y": b"r", b"r": body})
    try:
        decode_krpc(datagram)
    except KrpcError as exc:
        assert exc.reason == "too_large"
    node.receive(datagram, address_of(1), 0.1)
    assert node.counters.dropped_malformed == 1
    assert len(node.table()) == 0 and node.outstanding == 1


# -- liars and spoofers in a network ----------------------------------------------------------


class _StandIn:
    """A node that answers pings honestly under ``node_id`` and lookups as ``lie`` says."""

    def __init__(self, node_id: NodeId, rng: random.Random) -> None:
        self.node_id = node_id
        self.rng = rng
        self.outgoing: list[tuple[bytes, PeerAddress]] = []
        self.invented: set[PeerAddress] = set()

    def receive(self, datagram: bytes, address: PeerAddress, now: float) -> None:
        try:
            message = decode_krpc(datagram)
        except KrpcError:
            return
        if not isinstance(message, Query):
            return
        match message.args:
            case FindNode(target=target):
                response = self.lie(message.t, target, address)
            case GetPeers(info_hash=info_hash):
                response = self.lie(message.t, NodeId(info_hash.raw), address)
            case _:
                response = Response(message.t, self.node_id, ip=address)
        self.outgoing.append((encode_krpc(response), address))

    def lie(self, t: bytes, target: NodeId, address: PeerAddress) -> Response:
        raise NotImplementedError

    def tick(self, now: float) -> None:
        pass

    def take_outgoing(self) -> list[tuple[bytes, PeerAddress]]:
        out, self.outgoing = self.outgoing, []
        return out

    def take_events(self) -> list[DhtEvent]:
        return []


class _Liar(_StandIn):
    """Names 16 invented nodes closer to the target than anyone; they never answer."""

    def lie(self, t: bytes, target: NodeId, address: PeerAddress) -> Response:
        nodes = []
        for _ in range(16):
            invented = PeerAddress(
                f"10.200.{self.rng.randrange(256)}.{self.rng.randrange(1, 255)}", 6881
            )
            self.invented.add(invented)
            nodes.append(
                NodeInfo(NodeId.from_int(target.value ^ self.rng.getrandbits(100)), invented)
            )
        return Response(t, self.node_id, nodes=tuple(nodes), token=b"x", ip=address)


class _Spoofer(_StandIn):
    """Claims, in each lookup answer, to be the node closest to the target."""

    def lie(self, t: bytes, target: NodeId, address: PeerAddress) -> Response:
        claimed = NodeId.from_int(target.value ^ 1)
        return Response(t, claimed, token=b"x", values=(PeerAddress("192.0.2.250", 1),), ip=address)


def test_lookups_succeed_among_liars_and_spoofers_and_their_inventions_stay_out_of_tables() -> None:
    net = SimNetwork(seed=9)
    rng = random.Random(10)
    joined: list[PeerAddress] = []
    liars: list[_Liar] = []
    honest = 200
    quick = DhtConfig(query_timeout=4.0, slow_after=1.0)  # the liars cost less fake time
    for index in range(1, honest + 61):
        address = address_of(index)
        if index > honest:  # the last 60 addresses: 30 liars and 30 spoofers
            kind = _Liar if index % 2 else _Spoofer
            stand_in = kind(NodeId.from_int(rng.getrandbits(160)), random.Random(index))
            if isinstance(stand_in, _Liar):
                liars.append(stand_in)
            net.add_other(address, stand_in)
            # Make them well known: 40 honest nodes ping each, so they enter those tables.
            for peer in rng.sample(joined, 40):
                net.nodes[peer].ping(address, net.now)
                net.collect(peer)
            net.deliver()
            continue
        node = net.add(address, quick)
        if joined:
            node.bootstrap(rng.sample(joined, min(2, len(joined))), net.now)
            net.collect(address)
            net.deliver()
        joined.append(address)
    net.run(2.0)
    liar_ids = {liar.node_id for liar in liars}
    sizes: list[int] = []
    for _ in range(40):
        info_hash = InfoHash(rng.randbytes(20))
        address = rng.choice(joined)
        node = net.nodes[address]
        node.add_torrent(info_hash, 7000, net.now, announce=False)
        net.collect(address)
        net.deliver()
        for _ in range(120):  # invented nodes time out in 4 s; 60 s of fake time at most
            if node.last_search(info_hash) is not None:
                break
            net.step(0.5)
        outcome = node.last_search(info_hash)
        assert outcome is not None
        honest_ids = [n.own_id for a, n in net.nodes.items() if a != address]
        expected = sorted(honest_ids, key=lambda i: distance(i, info_hash))[:8]
        # A liar answers lookups under its real id: it may rightly be among the closest. The
        # honest ones found are the closest honest nodes, in order, and no spoofed id is there.
        found = [n.id for n in outcome.closest if n.id not in liar_ids]
        assert found == expected[: len(found)]
        sizes.append(len(found))
        assert outcome.queries < 120
        node.remove_torrent(info_hash)
    assert min(sizes) >= 6
    invented = set().union(*(liar.invented for liar in liars))
    assert len(invented) >= 1_000
    for node in net.nodes.values():
        assert not any(s.info.address in invented for s in node.table().nodes(net.now))
        assert node.outstanding <= DhtConfig().max_transactions


def test_a_node_copying_another_node_id_does_not_take_its_place() -> None:
    node = _node()
    real = NodeInfo(NodeId.from_int(777), address_of(1))
    node.table().heard_from(real, 0.0, responded=True)
    node.ping(address_of(2), 0.0)
    ((data, address),) = node.take_outgoing()
    query = decode_krpc(data)
    assert isinstance(query, Query)
    node.receive(encode_krpc(Response(query.t, real.id)), address, 0.1)  # claims 777 from .2
    statuses = [s.info for s in node.table().nodes(0.2)]
    assert statuses == [real]
    # A node claiming our own id is not put in the table either.
    node.ping(address_of(3), 0.2)
    ((data, address),) = node.take_outgoing()
    query = decode_krpc(data)
    assert isinstance(query, Query)
    node.receive(encode_krpc(Response(query.t, OWN)), address, 0.3)
    assert [s.info for s in node.table().nodes(0.4)] == [real]
