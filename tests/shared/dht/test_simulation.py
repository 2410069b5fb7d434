"""1,000 ``DhtNode``s in one process on an in-memory network with a fake clock.

The nodes join one by one, each bootstrapped from two nodes that joined before it (a few routers
would do as well, but make every join query the same nodes). Then: ``get_peers`` for random ids
ends at the true 8 closest nodes in few queries and few round trips; a peer announced from one
node is found from any other; with 5% of the datagrams lost, lookups still end close to the
truth. The network is built once for the module (about 15 s on one core).
"""

from __future__ import annotations

import random

import pytest

from tests.shared.dht.sim import SimNetwork, address_of
from torviz.shared.dht.node import AnnounceDone, PeersFound
from torviz.shared.dht.node_id import NodeId, distance
from torviz.shared.types import InfoHash, PeerAddress

SIZE = 1_000


@pytest.fixture(scope="module")
def network() -> SimNetwork:
    net = SimNetwork(seed=2026)
    joined: list[PeerAddress] = []
    for index in range(1, SIZE + 1):
        address = address_of(index)
        node = net.add(address)
        if joined:
            node.bootstrap(net.rng.sample(joined, min(2, len(joined))), net.now)
            net.collect(address)
            net.deliver()
        joined.append(address)
        if index % 50 == 0:
            net.step(0.5)
    net.run(5.0)
    for events in net.events.values():
        events.clear()
    return net


def _true_closest(net: SimNetwork, target: bytes, but: PeerAddress) -> list[NodeId]:
    ids = [node.own_id for address, node in net.nodes.items() if address != but]
    return sorted(ids, key=lambda i: distance(i, NodeId(target)))[:8]


def _search(net: SimNetwork, address: PeerAddress, info_hash: InfoHash, announce: bool) -> int:
    """Start a torrent's search on one node; the generations the network took to quiet down."""
    net.nodes[address].add_torrent(info_hash, 7000 + address.port, net.now, announce=announce)
    net.collect(address)
    return net.deliver()


def test_every_node_joined_and_nothing_was_dropped(network: SimNetwork) -> None:
    sizes = [len(node.table()) for node in network.nodes.values()]
    assert min(sizes) >= 8
    assert sum(sizes) / len(sizes) >= 20
    assert all(node.counters.packets_dropped == 0 for node in network.nodes.values())
    assert all(node.counters.queries_refused == 0 for node in network.nodes.values())


def test_get_peers_for_random_ids_ends_at_the_true_closest_in_few_queries(
    network: SimNetwork,
) -> None:
    rng = random.Random(1)
    addresses = list(network.nodes)
    for _ in range(40):
        info_hash = InfoHash(rng.randbytes(20))
        address = rng.choice(addresses)
        generations = _search(network, address, info_hash, announce=False)
        outcome = network.nodes[address].last_search(info_hash)
        assert outcome is not None, "the search ended without waiting for a timeout"
        assert [n.id for n in outcome.closest] == _true_closest(network, info_hash.raw, address)
        assert outcome.queries < 60
        assert generations <= 24  # about 12 round trips of alpha = 3 queries
        network.nodes[address].remove_torrent(info_hash)


def test_a_peer_announced_on_one_node_is_found_from_any_other(network: SimNetwork) -> None:
    rng = random.Random(2)
    addresses = list(network.nodes)
    info_hash = InfoHash(rng.randbytes(20))
    announcer = rng.choice(addresses)
    _search(network, announcer, info_hash, announce=True)
    assert AnnounceDone(info_hash, 8) in network.take_events(announcer)
    announced = PeerAddress(announcer.host, 7000 + announcer.port)
    stored = sum(node.summary(network.now).stored_peers for node in network.nodes.values())
    assert stored == 8
    for address in rng.sample([a for a in addresses if a != announcer], 30):
        _search(network, address, info_hash, announce=False)
        found = [
            peer
            for event in network.take_events(address)
            if isinstance(event, PeersFound) and event.info_hash == info_hash
            for peer in event.peers
        ]
        assert found == [announced]


def test_lookups_still_end_near_the_truth_when_datagrams_are_lost(network: SimNetwork) -> None:
    rng = random.Random(3)
    addresses = list(network.nodes)
    network.loss = 0.05
    overlaps: list[int] = []
    try:
        for _ in range(15):
            info_hash = InfoHash(rng.randbytes(20))
            address = rng.choice(addresses)
            node = network.nodes[address]
            _search(network, address, info_hash, announce=False)
            for _ in range(60):  # queries time out after 10 s; 30 s of fake time is plenty
                if node.last_search(info_hash) is not None:
                    break
                network.step(0.5)
            outcome = node.last_search(info_hash)
            assert outcome is not None
            truth = _true_closest(network, info_hash.raw, address)
            overlaps.append(len({n.id for n in outcome.closest} & set(truth)))
            assert outcome.queries < 60
            node.remove_torrent(info_hash)
        # A true neighbour whose answer is lost counts as failed; most are still found.
        assert sum(overlaps) / len(overlaps) >= 6.5
        assert min(overlaps) >= 4
    finally:
        network.loss = 0.0
