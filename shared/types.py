"""Domain types, checked once at the edge.

A value of one of these types is valid by construction: an ``InfoHash`` is always 20 bytes, a
``PeerAddress`` always has a port in 1..65535. Code past the edge never re-checks them.
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass
from typing import NewType

__all__ = [
    "BlockRef",
    "InfoHash",
    "PeerAddress",
    "PeerId",
    "PieceIndex",
    "normalize_host",
]

PieceIndex = NewType("PieceIndex", int)
"""A piece number checked against one torrent: made by ``TorrentGeometry.piece_index`` (or
narrowed by ``TorrentGeometry.has_piece``) where the number enters a service, never by hand."""


@dataclass(frozen=True, slots=True, order=True)
class InfoHash:
    """The 20-byte SHA-1 of a torrent's raw ``info`` dictionary (BitTorrent v1)."""

    raw: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != 20:
            raise ValueError("an info hash is exactly 20 bytes")

    @classmethod
    def from_hex(cls, text: str) -> InfoHash:
        """Parse 40 hex digits (either case). Raises ValueError otherwise."""
        if len(text) != 40:
            raise ValueError("an info hash in hex is exactly 40 characters")
        return cls(bytes.fromhex(text))

    @classmethod
    def from_base32(cls, text: str) -> InfoHash:
        """Parse the 32-character base32 form used by older magnet links."""
        if len(text) != 32:
            raise ValueError("an info hash in base32 is exactly 32 characters")
        return cls(base64.b32decode(text.upper()))

    @property
    def hex(self) -> str:
        return self.raw.hex()

    def __str__(self) -> str:
        return self.hex

    def __repr__(self) -> str:
        return f"InfoHash({self.hex})"


@dataclass(frozen=True, slots=True)
class PeerId:
    """The 20-byte id a peer sends in its handshake."""

    raw: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != 20:
            raise ValueError("a peer id is exactly 20 bytes")

    def __repr__(self) -> str:
        printable = self.raw[:8].decode("latin-1")
        return f"PeerId({printable!r}+{self.raw[8:].hex()})"


@dataclass(frozen=True, slots=True, order=True)
class PeerAddress:
    """An IPv4 or IPv6 address and TCP/UDP port of a peer, tracker or DHT node."""

    host: str
    port: int

    def __post_init__(self) -> None:
        try:
            ip = ipaddress.ip_address(self.host)
        except ValueError as exc:
            raise ValueError(f"not an IP address: {self.host!r}") from exc
        if not 0 < self.port < 65536:
            raise ValueError(f"port out of range: {self.port}")
        object.__setattr__(self, "host", ip.compressed)

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.host

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if self.is_ipv6 else f"{self.host}:{self.port}"


def normalize_host(host: str) -> str | None:
    """An IP address in the one form ``PeerAddress`` uses (IPv4-mapped IPv6 as IPv4), or None
    if ``host`` is not an IP address."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return address.compressed


@dataclass(frozen=True, slots=True, order=True)
class BlockRef:
    """A block of a piece: ``length`` bytes at ``offset`` inside piece ``piece``."""

    piece: int
    offset: int
    length: int

    def __post_init__(self) -> None:
        if self.piece < 0 or self.offset < 0 or self.length <= 0:
            raise ValueError(f"invalid block {self.piece}/{self.offset}/{self.length}")
