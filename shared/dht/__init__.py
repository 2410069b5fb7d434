"""The mainline DHT (BEP 5, with BEP 32, 42 and 43) as sans-IO state machines: no sockets, no clock.

``krpc`` (with ``compact``) encodes and decodes KRPC messages; ``node_id`` holds ids, the XOR
metric and BEP 42; ``routing`` (with ``buckets`` and ``table_file``) the routing table; ``tokens``
and ``peer_store`` what a responder keeps; ``lookup`` one iterative search; ``transactions``,
``rate_limit``, ``external_ip`` and ``responder`` the parts of a node; ``node`` the whole node fed
datagrams and a clock (``node_types`` its config, events and counters, ``node_state`` its state
file, ``searches`` its searches and announces, ``maintenance`` the upkeep of its tables). The
shell (the tracker agent) owns the UDP socket and the clock.
"""

from torviz.shared.dht.lookup import Lookup, LookupKind
from torviz.shared.dht.node import DhtNode
from torviz.shared.dht.node_id import NodeId, NodeInfo
from torviz.shared.dht.node_types import (
    AnnounceDone,
    DhtConfig,
    DhtCounters,
    DhtEvent,
    ExternalAddress,
    PeersFound,
    SearchOutcome,
)

__all__ = [
    "AnnounceDone",
    "DhtConfig",
    "DhtCounters",
    "DhtEvent",
    "DhtNode",
    "ExternalAddress",
    "Lookup",
    "LookupKind",
    "NodeId",
    "NodeInfo",
    "PeersFound",
    "SearchOutcome",
]
