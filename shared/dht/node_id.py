"""DHT node ids (BEP 5): 160-bit ids, the XOR metric, and BEP 42's ids bound to an IP address.

Strategy: a ``NodeId`` is 20 bytes checked once at construction; arithmetic (XOR distance,
common prefix length) goes through Python ints, which are exact and fast enough for 160 bits.
Randomness is passed in (an object with ``getrandbits``, e.g. ``random.Random``), so tests are
reproducible and this module stays pure.

BEP 42 ("DHT security extension"): a node's id must start with the 21 top bits of
``crc32c((ip & mask) | (r << 29))`` where ``r`` is the low 3 bits of the id's last byte; the mask
is ``03 0f 3f ff`` over the 4 bytes of an IPv4 address and ``01 03 07 0f 1f 3f 7f ff`` over the
top 8 bytes of an IPv6 address; ``r`` goes into the top 3 bits of the first masked byte. The
other bits of the id are random, and the last byte is the whole random byte whose low bits are
``r``.

Rules:
- Local addresses are exempt from the BEP 42 check (BEP 42 lists 10/8, 172.16/12, 192.168/16,
  169.254/16 and 127/8; for IPv6 we exempt loopback, link-local fe80::/10 and unique local
  fc00::/7 as libtorrent does): ``is_secure_node_id`` is always True for them.
- ``bucket_index`` numbers buckets by shared prefix: bucket ``i`` holds ids whose first ``i``
  bits equal ours and whose bit ``i`` differs (0 = the far half of the space). An id equal to
  ours has no bucket: its index is capped at 159.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Protocol

from torviz.shared.types import InfoHash, PeerAddress

__all__ = [
    "ID_BITS",
    "NODE_ID_SIZE",
    "NodeId",
    "NodeInfo",
    "RandomSource",
    "bucket_index",
    "common_prefix_length",
    "crc32c",
    "distance",
    "is_bep42_exempt",
    "is_secure_node_id",
    "random_id_in_bucket",
    "random_node_id",
    "secure_node_id",
]

NODE_ID_SIZE = 20
"""Bytes in a node id (and in an info hash, which lives in the same space)."""

ID_BITS = NODE_ID_SIZE * 8
"""Bits in a node id: 160."""

_ID_MASK = (1 << ID_BITS) - 1


class RandomSource(Protocol):
    """Anything that gives random bits: ``random.Random``, ``random.SystemRandom``."""

    def getrandbits(self, k: int, /) -> int:
        """An int of ``k`` random bits."""
        ...


@dataclass(frozen=True, slots=True, order=True)
class NodeId:
    """A 160-bit DHT node id; ordering is that of the raw bytes (the big-endian number)."""

    raw: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != NODE_ID_SIZE:
            raise ValueError("a node id is exactly 20 bytes")

    @classmethod
    def from_hex(cls, text: str) -> NodeId:
        """Parse 40 hex digits (either case).

        Raises:
            ValueError: not 40 hex digits.
        """
        if len(text) != 2 * NODE_ID_SIZE:
            raise ValueError("a node id in hex is exactly 40 characters")
        return cls(bytes.fromhex(text))

    @classmethod
    def from_int(cls, value: int) -> NodeId:
        """The id whose big-endian value is ``value`` (0 <= value < 2**160).

        Raises:
            ValueError: out of range.
        """
        if not 0 <= value <= _ID_MASK:
            raise ValueError("a node id is a 160-bit unsigned number")
        return cls(value.to_bytes(NODE_ID_SIZE, "big"))

    @classmethod
    def from_info_hash(cls, info_hash: InfoHash) -> NodeId:
        """An info hash as a target in the id space (get_peers looks up its closest nodes)."""
        return cls(info_hash.raw)

    @property
    def value(self) -> int:
        """The id as a big-endian unsigned number."""
        return int.from_bytes(self.raw, "big")

    @property
    def hex(self) -> str:
        return self.raw.hex()

    def __str__(self) -> str:
        return self.hex

    def __repr__(self) -> str:
        return f"NodeId({self.hex})"


@dataclass(frozen=True, slots=True, order=True)
class NodeInfo:
    """A DHT node's contact: its id and UDP address (one entry of a ``nodes`` string)."""

    id: NodeId
    address: PeerAddress

    def __str__(self) -> str:
        return f"{self.id.hex[:8]}@{self.address}"


def distance(a: NodeId | InfoHash, b: NodeId | InfoHash) -> int:
    """The Kademlia XOR distance between two ids, as an unsigned int (0 = equal)."""
    return int.from_bytes(a.raw, "big") ^ int.from_bytes(b.raw, "big")


def common_prefix_length(a: NodeId | InfoHash, b: NodeId | InfoHash) -> int:
    """How many leading bits two ids share: 0..160 (160 = equal)."""
    return ID_BITS - distance(a, b).bit_length()


def bucket_index(own: NodeId, other: NodeId | InfoHash) -> int:
    """The bucket of ``other`` in the table of ``own``: its common prefix length, at most 159."""
    return min(common_prefix_length(own, other), ID_BITS - 1)


def random_node_id(rng: RandomSource) -> NodeId:
    """A uniformly random id (before the external address is known, BEP 42 cannot apply)."""
    return NodeId.from_int(rng.getrandbits(ID_BITS))


def random_id_in_bucket(own: NodeId, index: int, rng: RandomSource) -> NodeId:
    """A random id that falls in bucket ``index`` of ``own``'s table (to refresh that bucket).

    The id shares exactly the first ``index`` bits with ``own``, differs at bit ``index``, and
    is random after it.

    Args:
        own: our id.
        index: the bucket, 0..159.
        rng: the random source.

    Returns:
        The target id for a find_node that refreshes the bucket.

    Raises:
        ValueError: index out of range.
    """
    if not 0 <= index < ID_BITS:
        raise ValueError(f"bucket index out of range: {index}")
    low_bits = ID_BITS - index - 1
    flipped = own.value ^ (1 << low_bits)
    high = (flipped >> low_bits) << low_bits
    return NodeId.from_int(high | rng.getrandbits(low_bits) if low_bits else high)


# -- BEP 42 ----------------------------------------------------------------------------------

_V4_MASK = bytes((0x03, 0x0F, 0x3F, 0xFF))
_V6_MASK = bytes((0x01, 0x03, 0x07, 0x0F, 0x1F, 0x3F, 0x7F, 0xFF))
_PREFIX_MASK = 0xFFFFF800  # the top 21 bits of the crc

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_EXEMPT_NETWORKS: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
    ipaddress.ip_network("10.0.0.0/8"),
    ipaddress.ip_network("172.16.0.0/12"),
    ipaddress.ip_network("192.168.0.0/16"),
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
    ipaddress.ip_network("fe80::/10"),
    ipaddress.ip_network("fc00::/7"),
)


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as BEP 42 uses it.

    ``crc32c(b"123456789") == 0xE3069283`` (RFC 3720's check value).
    """
    crc = 0xFFFFFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC32C_TABLE[(crc ^ byte) & 0xFF]
    return crc ^ 0xFFFFFFFF


def _ip(ip: str | _IPAddress) -> _IPAddress:
    address = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_bep42_exempt(ip: str | _IPAddress) -> bool:
    """True for the local addresses BEP 42 exempts (see the module rules).

    Raises:
        ValueError: not an IP address.
    """
    address = _ip(ip)
    return any(address in network for network in _EXEMPT_NETWORKS)


def _prefix(address: _IPAddress, r: int) -> int:
    """The crc whose top 21 bits a secure id for ``address`` and ``r`` (0..7) starts with."""
    if isinstance(address, ipaddress.IPv4Address):
        masked = bytearray(a & m for a, m in zip(address.packed, _V4_MASK, strict=True))
    else:
        masked = bytearray(a & m for a, m in zip(address.packed[:8], _V6_MASK, strict=True))
    masked[0] |= (r & 0x07) << 5
    return crc32c(bytes(masked))


def secure_node_id(ip: str | _IPAddress, rand: int, rng: RandomSource) -> NodeId:
    """A BEP 42 id for our external address ``ip``.

    Args:
        ip: our external IPv4 or IPv6 address (an IPv4-mapped IPv6 address counts as IPv4).
        rand: the random byte 0..255 that becomes the id's last byte (its low 3 bits are ``r``).
        rng: random bits for the rest of the id (bits 21..151).

    Returns:
        The id: 21 bits of the crc, 3 random bits, 16 random bytes, then ``rand``.

    Raises:
        ValueError: ``rand`` out of range or ``ip`` not an IP address.
    """
    if not 0 <= rand <= 0xFF:
        raise ValueError(f"BEP 42 rand is one byte, not {rand}")
    crc = _prefix(_ip(ip), rand)
    middle = rng.getrandbits(ID_BITS - 21 - 8)  # the 131 bits between the prefix and rand
    value = ((crc & _PREFIX_MASK) << (ID_BITS - 32)) | (middle << 8) | rand
    return NodeId.from_int(value)


def is_secure_node_id(node_id: NodeId, ip: str | _IPAddress) -> bool:
    """Whether ``node_id`` is a valid BEP 42 id for a node at ``ip``.

    The id's first 21 bits must equal the crc's for ``r`` = its last byte's low 3 bits.
    Local addresses (``is_bep42_exempt``) always pass.

    Raises:
        ValueError: ``ip`` not an IP address.
    """
    address = _ip(ip)
    if is_bep42_exempt(address):
        return True
    crc = _prefix(address, node_id.raw[-1])
    return int.from_bytes(node_id.raw[:4], "big") & _PREFIX_MASK == crc & _PREFIX_MASK
