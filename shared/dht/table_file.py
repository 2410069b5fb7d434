"""The routing table's file form, behind ``RoutingTable.dump`` and ``RoutingTable.load``.

Strategy: the file is one bencoded dictionary, ``{"v": 1, "id": 20 bytes, "nodes": compact
entries}``, an entry being the node id, the packed IP (4 or 16 bytes) and the port (2 bytes,
big-endian). ``write_table_file`` makes it; ``read_table_file`` checks it and gives the id and
the entries back; which entries the table keeps is the table's business (``routing.py``).

Rules:
- The file is untrusted (truncated, stale or garbage): ``read_table_file`` reads at most
  ``MAX_DUMP_BYTES`` under bencode limits and never raises; anything malformed in the frame (not
  bencode, not a dictionary, another version, no 20-byte id, entries not a whole number of
  entries of the table's family) makes the whole file unusable, and the reason is returned.
- One bad entry does not: an entry with port 0 or an unspecified or multicast IP is counted as
  unusable and left out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from torviz.shared.bencode import BencodeLimits, decode, encode
from torviz.shared.dht.node_id import NODE_ID_SIZE, NodeId, NodeInfo
from torviz.shared.errors import BencodeError
from torviz.shared.types import PeerAddress

__all__ = ["DUMP_VERSION", "MAX_DUMP_BYTES", "TableFile", "read_table_file", "write_table_file"]

DUMP_VERSION = 1
MAX_DUMP_BYTES = 256 * 1024
"""The most ``load`` reads: 160 full buckets of IPv6 nodes take ~49 KiB."""

_DUMP_LIMITS = BencodeLimits(
    max_size=MAX_DUMP_BYTES, max_depth=4, max_string_length=MAX_DUMP_BYTES, max_items=64
)


@dataclass(frozen=True, slots=True)
class TableFile:
    """What a usable file holds: our id, its usable entries in file order, and how many entries
    were left out as unusable."""

    own_id: NodeId
    nodes: tuple[NodeInfo, ...]
    unusable: int = 0


def write_table_file(own_id: NodeId, nodes: Iterable[NodeInfo]) -> bytes:
    """The file of a table.

    Args:
        own_id: Our node id.
        nodes: The nodes to keep, in the order to restore them; all of one address family.

    Returns:
        The bencoded file.
    """
    compact = b"".join(_compact(info) for info in nodes)
    return encode({b"v": DUMP_VERSION, b"id": own_id.raw, b"nodes": compact})


def read_table_file(data: bytes, *, ipv6: bool) -> TableFile | str:
    """A file made by ``write_table_file``, checked; never raises on bad data.

    Args:
        data: The file's bytes (untrusted).
        ipv6: Whether the entries are of an IPv6 table (16-byte IPs) rather than IPv4.

    Returns:
        The file's content, or the reason it is unusable (one line).
    """
    if len(data) > MAX_DUMP_BYTES:
        return f"routing table file over {MAX_DUMP_BYTES} bytes"
    try:
        value = decode(data, strict=True, limits=_DUMP_LIMITS)
    except BencodeError as exc:
        return f"routing table file is not bencode: {exc}"
    if not isinstance(value, dict):
        return "routing table file is not a dictionary"
    version, raw_id, compact = value.get(b"v"), value.get(b"id"), value.get(b"nodes")
    if version != DUMP_VERSION:
        return f"routing table file version {version!r}, not {DUMP_VERSION}"
    if not isinstance(raw_id, bytes) or len(raw_id) != NODE_ID_SIZE:
        return "routing table file has no 20-byte id"
    size = NODE_ID_SIZE + (16 if ipv6 else 4) + 2
    if not isinstance(compact, bytes) or len(compact) % size:
        return f"routing table nodes are not a string of {size}-byte entries"
    entries = [
        _from_compact(compact[start : start + size]) for start in range(0, len(compact), size)
    ]
    nodes = tuple(info for info in entries if info is not None)
    return TableFile(NodeId(raw_id), nodes, len(entries) - len(nodes))


def _compact(info: NodeInfo) -> bytes:
    ip = ipaddress.ip_address(info.address.host).packed
    return info.id.raw + ip + info.address.port.to_bytes(2, "big")


def _from_compact(entry: bytes) -> NodeInfo | None:
    node_id = NodeId(entry[:NODE_ID_SIZE])
    packed = entry[NODE_ID_SIZE:-2]
    port = int.from_bytes(entry[-2:], "big")
    ip = ipaddress.ip_address(packed)
    if port == 0 or ip.is_unspecified or ip.is_multicast:
        return None
    return NodeInfo(node_id, PeerAddress(str(ip), port))
