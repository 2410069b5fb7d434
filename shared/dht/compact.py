"""Compact forms in DHT messages (BEP 5, BEP 32): ``nodes`` / ``nodes6`` strings and ``values``.

A node is 26 bytes in ``nodes`` (20-byte id, 4-byte IPv4 address, 2-byte port, big-endian) and
38 bytes in ``nodes6`` (16-byte IPv6 address); a peer in ``values`` is one string of 6 (IPv4) or
18 (IPv6) bytes; BEP 42's ``ip`` uses the same 6- or 18-byte form.

Strategy: check a node string's stride and its entry count before slicing anything, so a string
claiming thousands of nodes costs one division.

Rules:
- A node string whose length is not a multiple of its stride is refused (``bad_nodes``,
  ``bad_nodes6``): entry boundaries are lost, so no entry can be trusted. More than the limit is
  refused too (``too_many_nodes``, ``too_many_nodes6``, ``too_many_values``).
- Unusable entries (port 0, unspecified, multicast or broadcast address) are dropped one by one,
  never an error; loopback and private addresses are kept (tests and LANs use them).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from torviz.shared.dht.node_id import NODE_ID_SIZE, NodeId, NodeInfo
from torviz.shared.errors import KrpcError
from torviz.shared.types import PeerAddress

__all__ = [
    "COMPACT_NODE6_SIZE",
    "COMPACT_NODE_SIZE",
    "MAX_NODES",
    "MAX_VALUES",
    "decode_compact_address",
    "decode_nodes",
    "decode_nodes6",
    "decode_peers",
    "encode_compact_address",
    "encode_nodes",
    "encode_nodes6",
    "encode_peers",
]

COMPACT_NODE_SIZE = 26
"""Bytes per ``nodes`` entry: 20-byte id, 4-byte IPv4 address, 2-byte port (big-endian)."""

COMPACT_NODE6_SIZE = 38
"""Bytes per ``nodes6`` entry (BEP 32): 20-byte id, 16-byte IPv6 address, 2-byte port."""

MAX_NODES = 16
"""Most entries accepted in one ``nodes`` or ``nodes6`` string (BEP 5 answers with K = 8)."""

MAX_VALUES = 128
"""Most peers accepted in one ``values`` list (libtorrent answers with at most 100)."""

_BROADCAST_V4 = ipaddress.IPv4Address("255.255.255.255")


def _usable(host: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> bool:
    return port != 0 and not (host.is_unspecified or host.is_multicast or host == _BROADCAST_V4)


def _address(raw: bytes) -> PeerAddress | None:
    """A compact 6- or 18-byte address, or None when unusable."""
    host: ipaddress.IPv4Address | ipaddress.IPv6Address
    host = ipaddress.IPv4Address(raw[:4]) if len(raw) == 6 else ipaddress.IPv6Address(raw[:16])
    port = int.from_bytes(raw[-2:], "big")
    if not _usable(host, port):
        return None
    return PeerAddress(str(host), port)


def decode_compact_address(raw: bytes) -> PeerAddress | None:
    """A compact address (6 bytes IPv4 or 18 bytes IPv6, port last), or None if unusable.

    Returns:
        The address, or None for another length, port 0, or an unspecified, multicast or
        broadcast address.
    """
    if len(raw) not in (6, 18):
        return None
    return _address(raw)


def encode_compact_address(address: PeerAddress) -> bytes:
    """The 6- or 18-byte compact form of ``address`` (for ``values`` and BEP 42 ``ip``)."""
    return ipaddress.ip_address(address.host).packed + address.port.to_bytes(2, "big")


def _decode_node_string(data: bytes, stride: int, limit: int, key: str) -> tuple[NodeInfo, ...]:
    if len(data) % stride:
        raise KrpcError(f"bad_{key}", f"{key} is {len(data)} bytes, not a multiple of {stride}")
    count = len(data) // stride
    if count > limit:
        raise KrpcError(f"too_many_{key}", f"{key} has {count} entries, limit is {limit}")
    out: list[NodeInfo] = []
    for start in range(0, len(data), stride):
        address = _address(data[start + NODE_ID_SIZE : start + stride])
        if address is not None:
            out.append(NodeInfo(NodeId(data[start : start + NODE_ID_SIZE]), address))
    return tuple(out)


def decode_nodes(data: bytes, *, limit: int = MAX_NODES) -> tuple[NodeInfo, ...]:
    """Decode a BEP 5 ``nodes`` string: 26 bytes per node.

    Args:
        data: the compact string.
        limit: most entries accepted.

    Returns:
        The usable nodes in order (unusable entries dropped).

    Raises:
        KrpcError: ``bad_nodes`` (length not a multiple of 26), ``too_many_nodes``.
    """
    return _decode_node_string(data, COMPACT_NODE_SIZE, limit, "nodes")


def decode_nodes6(data: bytes, *, limit: int = MAX_NODES) -> tuple[NodeInfo, ...]:
    """Decode a BEP 32 ``nodes6`` string: 38 bytes per node.

    Raises:
        KrpcError: ``bad_nodes6`` (length not a multiple of 38), ``too_many_nodes6``.
    """
    return _decode_node_string(data, COMPACT_NODE6_SIZE, limit, "nodes6")


def _encode_node_string(nodes: Iterable[NodeInfo], version: int) -> bytes:
    out = bytearray()
    for node in nodes:
        host = ipaddress.ip_address(node.address.host)
        if host.version != version:
            raise ValueError(f"{node} is not an IPv{version} node")
        out += node.id.raw + host.packed + node.address.port.to_bytes(2, "big")
    return bytes(out)


def encode_nodes(nodes: Iterable[NodeInfo]) -> bytes:
    """Pack IPv4 nodes as a ``nodes`` string.

    Raises:
        ValueError: a node is IPv6.
    """
    return _encode_node_string(nodes, 4)


def encode_nodes6(nodes: Iterable[NodeInfo]) -> bytes:
    """Pack IPv6 nodes as a ``nodes6`` string.

    Raises:
        ValueError: a node is IPv4.
    """
    return _encode_node_string(nodes, 6)


def decode_peers(values: object, *, limit: int = MAX_VALUES) -> tuple[PeerAddress, ...]:
    """Decode a get_peers ``values`` list: one compact string (6 or 18 bytes) per peer.

    Args:
        values: the decoded ``values`` value.
        limit: most entries accepted.

    Returns:
        The usable peers in order (port 0 and unusable addresses dropped).

    Raises:
        KrpcError: ``bad_values`` (not a list of 6- or 18-byte strings), ``too_many_values``.
    """
    if not isinstance(values, list):
        raise KrpcError("bad_values", "values is not a list")
    if len(values) > limit:
        raise KrpcError("too_many_values", f"values has {len(values)} peers, limit is {limit}")
    out: list[PeerAddress] = []
    for entry in values:
        if not isinstance(entry, bytes) or len(entry) not in (6, 18):
            raise KrpcError("bad_values", "a values entry is not a 6- or 18-byte string")
        address = _address(entry)
        if address is not None:
            out.append(address)
    return tuple(out)


def encode_peers(peers: Iterable[PeerAddress]) -> list[bytes]:
    """The ``values`` list for ``peers``: one compact string each."""
    return [encode_compact_address(peer) for peer in peers]
