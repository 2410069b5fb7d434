"""The iterative lookup as a state machine: alpha, the shortlist bound, timeouts, termination.

A small synthetic network stands behind the lookup: every node knows up to 8 nodes per bucket of
its own id (as a real routing table would), and answers a query with the 8 closest to the target
it knows. Answers are delivered by hand with a fake clock.
"""

from __future__ import annotations

import random

import pytest

from torviz.shared.dht.lookup import Lookup, LookupKind
from torviz.shared.dht.node_id import NodeId, NodeInfo, bucket_index, distance
from torviz.shared.types import PeerAddress


def _node(value: int, index: int) -> NodeInfo:
    return NodeInfo(
        NodeId.from_int(value),
        PeerAddress(f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}", 6881),
    )


class _Network:
    """``size`` nodes, each knowing up to 8 others per bucket."""

    def __init__(self, size: int, seed: int = 1) -> None:
        rng = random.Random(seed)
        self.nodes = [_node(rng.getrandbits(160), i + 1) for i in range(size)]
        self.by_address = {n.address: n for n in self.nodes}
        self.known: dict[PeerAddress, list[NodeInfo]] = {}
        for node in self.nodes:
            buckets: dict[int, list[NodeInfo]] = {}
            for other in rng.sample(self.nodes, len(self.nodes)):
                if other is node:
                    continue
                bucket = buckets.setdefault(bucket_index(node.id, other.id), [])
                if len(bucket) < 8:
                    bucket.append(other)
            self.known[node.address] = [n for b in buckets.values() for n in b]

    def answer(self, address: PeerAddress, target: NodeId) -> list[NodeInfo]:
        return sorted(self.known[address], key=lambda n: distance(n.id, target))[:8]

    def true_closest(self, target: NodeId, count: int = 8) -> list[NodeInfo]:
        return sorted(self.nodes, key=lambda n: distance(n.id, target))[:count]


def _run(lookup: Lookup, network: _Network, now: float = 0.0, rounds: int = 100) -> int:
    """Answer every query round by round until the lookup is done; the rounds it took."""
    for round_ in range(rounds):
        queries = lookup.next_queries(now)
        if lookup.done:
            return round_
        assert queries, "a lookup that is not done has something to ask"
        for node in queries:
            lookup.on_response(
                node.address, node.id, network.answer(node.address, lookup.target), [], None, now
            )
        now += 0.1
    raise AssertionError("the lookup did not end")


def test_a_lookup_finds_the_true_closest_nodes_in_few_queries() -> None:
    network = _Network(500)
    rng = random.Random(7)
    for _ in range(20):
        target = NodeId.from_int(rng.getrandbits(160))
        seeds = rng.sample(network.nodes, 8)
        lookup = Lookup(target, LookupKind.FIND_NODE, seeds, now=0.0)
        rounds = _run(lookup, network)
        assert lookup.closest() == network.true_closest(target)
        assert lookup.queries_sent < 60
        assert rounds < 30


def test_at_most_alpha_queries_are_in_flight() -> None:
    network = _Network(100)
    lookup = Lookup(NodeId(b"\x00" * 20), LookupKind.GET_PEERS, network.nodes[:20], now=0.0)
    first = lookup.next_queries(0.0)
    assert len(first) == 3
    assert lookup.next_queries(0.5) == []
    node = first[0]
    lookup.on_response(node.address, node.id, [], [], None, 0.6)
    assert len(lookup.next_queries(0.6)) == 1
    assert lookup.in_flight == 3


def test_the_first_queries_go_to_the_closest_seeds() -> None:
    network = _Network(50)
    target = NodeId.from_int(12345)
    lookup = Lookup(target, LookupKind.FIND_NODE, network.nodes, now=0.0)
    assert lookup.next_queries(0.0) == network.true_closest(target, 3)


def test_a_node_is_asked_once_however_often_it_is_named() -> None:
    a, b = _node(1, 1), _node(2, 2)
    lookup = Lookup(NodeId.from_int(0), LookupKind.FIND_NODE, [a], now=0.0, alpha=1)
    assert lookup.next_queries(0.0) == [a]
    lookup.on_response(a.address, a.id, [a, b, a], [], None, 0.1)
    assert lookup.next_queries(0.1) == [b]
    lookup.on_response(b.address, b.id, [a, b], [], None, 0.2)
    # The same address under another id is still the same node.
    renamed = NodeInfo(NodeId.from_int(3), a.address)
    assert lookup.add_candidates([renamed]) == 0
    assert lookup.next_queries(0.2) == []
    assert lookup.done
    assert lookup.queries_sent == 2


def test_a_slow_query_frees_its_slot_and_a_silent_one_fails_after_the_timeout() -> None:
    nodes = [_node(i, i) for i in range(1, 6)]
    lookup = Lookup(
        NodeId.from_int(0),
        LookupKind.FIND_NODE,
        nodes,
        now=0.0,
        alpha=1,
        slow_after=2.0,
        timeout=10.0,
    )
    assert lookup.next_queries(0.0) == [nodes[0]]
    assert lookup.next_queries(1.9) == []
    assert lookup.next_deadline(1.9) == 2.0
    assert lookup.next_queries(2.0) == [nodes[1]]
    assert lookup.next_deadline(2.5) == 4.0
    assert lookup.expire(9.9) == []
    assert lookup.expire(10.0) == [nodes[0]]
    assert lookup.failures == 1
    # A late answer from a failed node changes nothing.
    assert lookup.on_response(nodes[0].address, nodes[0].id, [], [_peer(1)], None, 11.0) == []
    assert lookup.peers == []


def test_the_lookup_ends_when_the_k_closest_answered_though_a_farther_query_is_in_flight() -> None:
    near = [_node(i, i) for i in range(1, 4)]
    far = _node(1 << 150, 99)
    lookup = Lookup(NodeId.from_int(0), LookupKind.FIND_NODE, [*near, far], now=0.0, k=3, alpha=4)
    assert set(lookup.next_queries(0.0)) == {*near, far}
    for node in near:
        assert not lookup.done
        lookup.on_response(node.address, node.id, [], [], None, 0.1)
    assert lookup.done
    assert lookup.is_waiting_for(far.address)  # still in flight, but no longer waited for
    assert lookup.next_queries(0.2) == []
    assert lookup.on_response(far.address, far.id, [], [_peer(1)], None, 0.3) == []


def test_a_closer_query_in_flight_holds_the_lookup_open() -> None:
    nodes = [_node(i, i) for i in range(1, 5)]
    lookup = Lookup(NodeId.from_int(0), LookupKind.FIND_NODE, nodes, now=0.0, k=3, alpha=4)
    lookup.next_queries(0.0)
    for node in nodes[1:]:
        lookup.on_response(node.address, node.id, [], [], None, 0.1)
    assert not lookup.done  # the closest has not answered yet
    lookup.on_failure(nodes[0].address, 0.2)
    assert lookup.done  # failed: the 3 closest alive have answered
    assert lookup.closest() == nodes[1:]


def test_a_lookup_in_a_tiny_network_ends_when_nothing_is_left_to_ask() -> None:
    a, b = _node(5, 1), _node(6, 2)
    lookup = Lookup(NodeId.from_int(0), LookupKind.GET_PEERS, [a], now=0.0)
    lookup.next_queries(0.0)
    lookup.on_response(a.address, a.id, [b], [], None, 0.1)
    assert not lookup.done
    assert lookup.next_queries(0.1) == [b]
    lookup.on_response(b.address, b.id, [a], [], None, 0.2)
    assert lookup.done
    assert lookup.closest() == [a, b]


def test_a_lookup_with_no_seeds_is_done_at_once() -> None:
    lookup = Lookup(NodeId.from_int(0), LookupKind.GET_PEERS, [], now=0.0)
    assert lookup.done
    assert lookup.next_queries(0.0) == []


def test_the_shortlist_is_bounded_and_keeps_the_closest() -> None:
    rng = random.Random(3)
    seed = _node(1, 1)
    lookup = Lookup(NodeId.from_int(0), LookupKind.FIND_NODE, [seed], now=0.0, capacity=64)
    lookup.next_queries(0.0)
    many = [_node(rng.getrandbits(160), i + 2) for i in range(5_000)]
    lookup.add_candidates(many, seed.address)
    assert len(lookup._candidates) == 64
    kept = {n for n in many if n.address in lookup._candidates}
    closest = sorted(many, key=lambda n: n.id.value)[:63]
    assert kept == set(closest)


def test_seeds_not_yet_asked_are_never_pushed_out_by_named_nodes() -> None:
    seeds = [_node((1 << 150) + i, i) for i in range(1, 17)]
    lookup = Lookup(NodeId.from_int(0), LookupKind.FIND_NODE, seeds, now=0.0, capacity=20)
    liar = seeds[0]
    assert lookup.next_queries(0.0) == seeds[:3]
    invented = [_node(i, 1_000 + i) for i in range(1, 100)]
    lookup.on_response(liar.address, liar.id, invented, [], None, 0.1)
    assert {s.address for s in seeds[3:]} <= set(lookup._candidates)  # the unasked ones
    assert len(lookup._candidates) == 20


def test_the_rest_named_by_a_node_whose_named_nodes_all_fail_is_dropped_unasked() -> None:
    liar, honest = _node(1 << 150, 1), _node(1 << 151, 2)
    lookup = Lookup(NodeId.from_int(0), LookupKind.FIND_NODE, [liar, honest], now=0.0, alpha=2)
    lookup.next_queries(0.0)
    invented = [_node(i, 100 + i) for i in range(1, 17)]
    real = _node(1 << 149, 3)
    lookup.on_response(liar.address, liar.id, invented, [], None, 0.1)
    lookup.on_response(honest.address, honest.id, [real], [], None, 0.1)
    first = lookup.next_queries(0.2)
    assert first == invented[:2]
    for node in first:
        lookup.on_failure(node.address, 5.0)
    assert lookup.discarded == 14
    assert lookup.next_queries(5.0) == [real]
    # Named again by a node we have no reason to doubt, an invented node may be asked after all.
    lookup.on_response(real.address, real.id, [invented[5]], [], None, 5.1)
    assert lookup.next_queries(5.1) == [invented[5]]


def test_one_answer_adds_at_most_per_response_nodes_the_closest_it_names() -> None:
    rng = random.Random(4)
    a = _node(1 << 159, 1)
    lookup = Lookup(NodeId.from_int(0), LookupKind.FIND_NODE, [a], now=0.0, per_response=16)
    lookup.next_queries(0.0)
    named = [_node(rng.getrandbits(150), i + 2) for i in range(1_000)]
    lookup.on_response(a.address, a.id, named, [], None, 0.1)
    assert len(lookup._candidates) == 17
    expected = sorted(named[: 16 * 16], key=lambda n: n.id.value)[:16]
    assert {n.address for n in expected} <= set(lookup._candidates)


def test_an_answer_under_another_id_counts_as_a_failure_and_its_token_is_not_kept() -> None:
    a, b = _node(1, 1), _node(2, 2)
    lookup = Lookup(NodeId.from_int(0), LookupKind.GET_PEERS, [a, b], now=0.0)
    lookup.next_queries(0.0)
    spoofed = lookup.on_response(a.address, NodeId.from_int(0), [], [_peer(1)], b"tok-a", 0.1)
    assert spoofed == [_peer(1)]  # peers are still useful: they get checked by a handshake
    lookup.on_response(b.address, b.id, [], [], b"tok-b", 0.1)
    assert lookup.failures == 1
    assert lookup.closest() == [b]
    assert lookup.closest_with_tokens() == [(b, b"tok-b")]


def test_peers_are_deduplicated_and_bounded() -> None:
    nodes = [_node(i, i) for i in range(1, 4)]
    lookup = Lookup(NodeId.from_int(0), LookupKind.GET_PEERS, nodes, now=0.0, max_peers=5)
    lookup.next_queries(0.0)
    assert lookup.on_response(
        nodes[0].address, nodes[0].id, [], [_peer(1), _peer(2), _peer(1)], None, 0.1
    ) == [_peer(1), _peer(2)]
    assert lookup.on_response(
        nodes[1].address, nodes[1].id, [], [_peer(i) for i in range(1, 10)], None, 0.1
    ) == [_peer(3), _peer(4), _peer(5)]
    assert lookup.peers == [_peer(i) for i in range(1, 6)]


def test_tokens_come_from_the_k_closest_that_gave_one() -> None:
    nodes = [_node(i, i) for i in range(1, 13)]
    lookup = Lookup(NodeId.from_int(0), LookupKind.GET_PEERS, nodes, now=0.0, alpha=12)
    lookup.next_queries(0.0)
    for node in nodes:
        token = None if node.id.value == 2 else b"t%d" % node.id.value
        lookup.on_response(node.address, node.id, [], [], token, 0.1)
    assert lookup.done
    pairs = lookup.closest_with_tokens()
    assert [n.id.value for n, _ in pairs] == [1, 3, 4, 5, 6, 7, 8, 9]
    assert pairs[0][1] == b"t1"


def test_find_node_keeps_no_tokens() -> None:
    a = _node(1, 1)
    lookup = Lookup(NodeId.from_int(0), LookupKind.FIND_NODE, [a], now=0.0)
    lookup.next_queries(0.0)
    lookup.on_response(a.address, a.id, [], [], b"tok", 0.1)
    assert lookup.closest_with_tokens() == []


def test_a_lookup_ends_after_max_queries_among_liars() -> None:
    """Every node answers with 8 new invented nodes closer than itself: the lookup still ends."""
    rng = random.Random(5)
    counter = iter(range(1, 10**6))
    first = _node(1 << 100, next(counter))
    lookup = Lookup(NodeId.from_int(0), LookupKind.FIND_NODE, [first], now=0.0, max_queries=50)
    now = 0.0
    for _ in range(200):
        queries = lookup.next_queries(now)
        if lookup.done:
            break
        for node in queries:
            closer = [
                _node(rng.getrandbits(max(node.id.value.bit_length() - 1, 1)), next(counter))
                for _ in range(8)
            ]
            lookup.on_response(node.address, node.id, closer, [], None, now)
        now += 0.1
    assert lookup.done
    assert lookup.queries_sent == 50


def test_invented_nodes_in_an_answer_time_out_and_the_lookup_still_finds_the_true_closest() -> None:
    network = _Network(300, seed=9)
    rng = random.Random(10)
    target = NodeId.from_int(rng.getrandbits(160))
    liar = network.true_closest(target)[0]  # asked first: its lie comes in early
    bogus = [_node(target.value ^ rng.getrandbits(100), 100_000 + i) for i in range(1_000)]
    seeds = [liar, *rng.sample([n for n in network.nodes if n != liar], 7)]
    lookup = Lookup(target, LookupKind.GET_PEERS, seeds, now=0.0, timeout=5.0)
    now = 0.0
    asked_bogus = 0
    for _ in range(500):
        for node in lookup.expire(now):
            assert node.address.host.startswith("10.1.")  # only invented nodes fail
        queries = lookup.next_queries(now)
        if lookup.done:
            break
        for node in queries:
            if node.address in network.by_address and node != liar:
                lookup.on_response(
                    node.address, node.id, network.answer(node.address, target), [], None, now
                )
            elif node == liar:
                lookup.on_response(node.address, node.id, bogus, [], None, now)
            else:
                asked_bogus += 1  # an invented node never answers
        now += 0.5
    assert lookup.done
    assert lookup.closest() == network.true_closest(target)
    assert asked_bogus <= 16  # one answer brings in at most per_response of them
    assert lookup.queries_sent < 100
    assert len(lookup._candidates) <= 64


def test_cancel_ends_the_lookup_and_names_the_queries_in_flight() -> None:
    nodes = [_node(i, i) for i in range(1, 6)]
    lookup = Lookup(NodeId.from_int(0), LookupKind.GET_PEERS, nodes, now=0.0)
    sent = lookup.next_queries(0.0)
    assert lookup.cancel() == sent
    assert lookup.done
    assert lookup.next_queries(1.0) == []


@pytest.mark.parametrize("bound", ["alpha", "k", "capacity", "per_response", "max_queries"])
def test_bounds_below_one_are_refused(bound: str) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Lookup(NodeId.from_int(0), LookupKind.FIND_NODE, [], now=0.0, **{bound: 0})


def _peer(index: int) -> PeerAddress:
    return PeerAddress(f"192.0.2.{index}", 6881)
