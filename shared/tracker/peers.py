"""Peer lists in tracker replies: compact IPv4 (BEP 23), compact IPv6 (BEP 7, BEP 15) and the
original dictionary model (BEP 3).

Strategy: the compact forms are fixed-stride byte strings, so the length is checked first and
only the entries within the caller's budget are ever sliced; a string claiming a million peers
costs one division. The dictionary model arrives already bencode-decoded (and bounded by the
decoder's limits); entries past the budget are counted, not inspected.

Rules:
- A compact string whose length is not a multiple of its stride is refused
  (``bad_compact_length``): the entry boundaries are lost, so no entry can be trusted.
- Individual unusable entries are dropped and counted, never an error: port 0, an unspecified,
  multicast or IPv4 broadcast address, a host name instead of an IP literal (we do not resolve
  names from trackers), a malformed dictionary. The good entries of a reply stay usable.
- A dictionary peer's ``peer id`` is kept only when it is exactly 20 bytes; a bad id does not
  drop the peer (the id is advisory).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from torviz.shared.bencode import Value
from torviz.shared.errors import TrackerError
from torviz.shared.tracker.model import MAX_PEERS_PER_REPLY, TrackerPeer
from torviz.shared.types import PeerAddress, PeerId

__all__ = [
    "COMPACT_V4_SIZE",
    "COMPACT_V6_SIZE",
    "decode_compact_v4",
    "decode_compact_v6",
    "decode_peer_dicts",
    "encode_compact_v4",
    "encode_compact_v6",
]

COMPACT_V4_SIZE = 6
"""Bytes per compact IPv4 peer: 4 address bytes, 2 port bytes, big-endian."""

COMPACT_V6_SIZE = 18
"""Bytes per compact IPv6 peer: 16 address bytes, 2 port bytes, big-endian."""

_MAX_HOST_BYTES = 64  # the longest IPv6 literal with a zone is well under this

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_BROADCAST_V4 = ipaddress.IPv4Address("255.255.255.255")


def decode_compact_v4(
    data: bytes, *, limit: int = MAX_PEERS_PER_REPLY
) -> tuple[list[PeerAddress], int]:
    """Decode a BEP 23 compact IPv4 peer string.

    Args:
        data: 6 bytes per peer.
        limit: most peers to return; the entries after it are counted as dropped.

    Returns:
        ``(peers, dropped)``: the usable peers in order, and how many entries were left out.

    Raises:
        TrackerError: ``bad_compact_length`` when the length is not a multiple of 6.
    """
    return _decode_compact(data, COMPACT_V4_SIZE, limit)


def decode_compact_v6(
    data: bytes, *, limit: int = MAX_PEERS_PER_REPLY
) -> tuple[list[PeerAddress], int]:
    """Decode a BEP 7 ``peers6`` string (also the BEP 15 IPv6 peer list): 18 bytes per peer.

    Returns and raises as ``decode_compact_v4``.
    """
    return _decode_compact(data, COMPACT_V6_SIZE, limit)


def _decode_compact(data: bytes, stride: int, limit: int) -> tuple[list[PeerAddress], int]:
    if len(data) % stride:
        family = "IPv4" if stride == COMPACT_V4_SIZE else "IPv6"
        raise TrackerError(
            "bad_compact_length",
            f"compact {family} peer list is {len(data)} bytes, not a multiple of {stride}",
        )
    entries = len(data) // stride
    taken = min(entries, max(limit, 0))
    dropped = entries - taken
    peers: list[PeerAddress] = []
    view = memoryview(data)
    address_size = stride - 2
    ip: _IPAddress
    for start in range(0, taken * stride, stride):
        raw = bytes(view[start : start + address_size])
        port = (view[start + address_size] << 8) | view[start + address_size + 1]
        ip = ipaddress.IPv4Address(raw) if address_size == 4 else ipaddress.IPv6Address(raw)
        if port == 0 or not _usable(ip):
            dropped += 1
            continue
        peers.append(PeerAddress(str(ip), port))
    return peers, dropped


def decode_peer_dicts(
    entries: Sequence[Value], *, limit: int = MAX_PEERS_PER_REPLY
) -> tuple[list[TrackerPeer], int]:
    """Decode the BEP 3 dictionary model: a list of ``{ip, port, peer id}`` dictionaries.

    Args:
        entries: the decoded ``peers`` list.
        limit: most peers to return; the entries after it are counted, not inspected.

    Returns:
        ``(peers, dropped)``: usable peers in order, and how many entries were left out.
    """
    taken = min(len(entries), max(limit, 0))
    dropped = len(entries) - taken
    peers: list[TrackerPeer] = []
    for index in range(taken):
        peer = _peer_from_dict(entries[index])
        if peer is None:
            dropped += 1
        else:
            peers.append(peer)
    return peers, dropped


def _peer_from_dict(entry: Value) -> TrackerPeer | None:
    if not isinstance(entry, dict):
        return None
    host = entry.get(b"ip")
    port = entry.get(b"port")
    if not isinstance(host, bytes) or not isinstance(port, int) or not 0 < port < 65536:
        return None
    if len(host) > _MAX_HOST_BYTES:
        return None
    text = host.decode("ascii", errors="replace")
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None  # a host name: not resolved here
    if not _usable(ip):
        return None
    raw_id = entry.get(b"peer id")
    peer_id = PeerId(raw_id) if isinstance(raw_id, bytes) and len(raw_id) == 20 else None
    return TrackerPeer(PeerAddress(str(ip), port), peer_id)


def _usable(ip: _IPAddress) -> bool:
    """False for addresses no peer can listen on."""
    return not (ip.is_unspecified or ip.is_multicast or ip == _BROADCAST_V4)


def encode_compact_v4(peers: Iterable[PeerAddress]) -> bytes:
    """Pack IPv4 peers as a BEP 23 compact string (6 bytes each).

    Raises:
        ValueError: a peer is IPv6.
    """
    return _encode_compact(peers, 4)


def encode_compact_v6(peers: Iterable[PeerAddress]) -> bytes:
    """Pack IPv6 peers as a BEP 7 ``peers6`` string (18 bytes each).

    Raises:
        ValueError: a peer is IPv4.
    """
    return _encode_compact(peers, 6)


def _encode_compact(peers: Iterable[PeerAddress], version: int) -> bytes:
    out = bytearray()
    for peer in peers:
        ip = ipaddress.ip_address(peer.host)
        if ip.version != version:
            raise ValueError(f"{peer} is not an IPv{version} peer")
        out += ip.packed
        out += peer.port.to_bytes(2, "big")
    return bytes(out)
