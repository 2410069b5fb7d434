"""Building and checking routing tables in the DHT table tests (``test_routing.py``,
``test_table_file.py``).

Our id is 0 in most tests, so a node's bucket is the position of its highest set bit: ``near(i,
n)`` makes the ``n``-th id that shares exactly ``i`` leading bits with ours.
"""

from __future__ import annotations

import random

from torviz.shared.dht.buckets import ip_key
from torviz.shared.dht.node_id import ID_BITS, NodeId, NodeInfo, bucket_index
from torviz.shared.dht.routing import Admission, RoutingTable
from torviz.shared.types import PeerAddress

OWN = NodeId.from_int(0)
MINUTES = 60.0


def near(shared_bits: int, n: int = 0) -> NodeId:
    """An id sharing exactly ``shared_bits`` leading bits with ``OWN`` (n < 2**(159-bits))."""
    return NodeId.from_int((1 << (ID_BITS - 1 - shared_bits)) | n)


_addresses = iter(range(1, 1 << 24))


def node(node_id: NodeId, host: str | None = None, port: int = 6881) -> NodeInfo:
    """A node at a fresh private address (exempt from BEP 42) unless ``host`` is given."""
    if host is None:
        i = next(_addresses)
        host = f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}"
    return NodeInfo(node_id, PeerAddress(host, port))


def answered(table: RoutingTable, info: NodeInfo, now: float = 0.0) -> Admission:
    return table.heard_from(info, now, responded=True).admission


def full_far_bucket(table: RoutingTable, now: float = 0.0) -> list[NodeInfo]:
    """Eight nodes in bucket 0 (the far half), the table split once."""
    nodes = [node(near(0, n)) for n in range(8)]
    for info in nodes:
        assert answered(table, info, now) is Admission.ADDED
    assert answered(table, node(near(5)), now) is Admission.ADDED  # splits: far half is apart
    assert table.bucket_count >= 2
    return nodes


def check_consistent(table: RoutingTable) -> None:
    """Every known node sits in exactly one place, indexed by id and by IP (IP and port for a
    local IP), in its own bucket."""
    buckets = table._buckets
    places = [(i, nid) for i, b in enumerate(buckets) for nid in [*b.nodes, *b.cache]]
    assert len(places) == len({nid for _, nid in places}) == len(table._by_id)
    assert len(table._by_ip) == len(table._by_id)
    last = len(buckets) - 1
    for i, nid in places:
        assert min(bucket_index(table.own_id, nid), last) == i
        assert table._by_ip[ip_key(table._by_id[nid].info.address)] == nid
    for bucket in buckets:
        assert len(bucket.nodes) <= table.limits.k
        assert len(bucket.cache) <= table.limits.max_replacements
        assert all(e.confirmed for e in bucket.nodes.values())
    assert len(buckets) <= ID_BITS


def populated(ipv6: bool = False, seed: int = 4) -> RoutingTable:
    """A table around a random id, fed answers from 300 random nodes at numbered addresses (so
    buckets split and caches fill)."""
    rng = random.Random(seed)
    table = RoutingTable(NodeId(rng.randbytes(20)), 0.0, ipv6=ipv6)
    for i in range(300):
        host = f"2001:db8::{i + 1:x}" if ipv6 else f"10.0.{i // 250}.{i % 250 + 1}"
        answered(table, node(NodeId(rng.randbytes(20)), host, 1000 + i))
    return table
