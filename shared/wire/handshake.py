"""The 68-byte BitTorrent handshake (BEP 3), its reserved bits (BEP 5, 6, 10), and an
incremental reader.

Layout: ``pstrlen=19 | "BitTorrent protocol" | reserved[8] | info_hash[20] | peer_id[20]``.

Strategy: the first 48 bytes (up to and including the info hash) form a ``HandshakeHeader``. An
accepting side must pick the torrent by info hash before it answers, and some peers hold their
peer id back until they have seen our handshake, so ``HandshakeReader`` reports the header as
soon as byte 48 arrives and the full ``Handshake`` at byte 68.

Rules:
- A wrong ``pstrlen`` or protocol string is refused at the first wrong byte
  (``WireError`` reasons ``bad_pstrlen`` / ``bad_protocol``): nothing else is buffered.
- The reader never holds more than 68 bytes; bytes past the handshake belong to the message
  stream and are handed back untouched by ``take_surplus``.
- Reserved bits we do not know are kept as they came, never dropped or rewritten.
"""

from __future__ import annotations

from dataclasses import dataclass

from torviz.shared.errors import WireError
from torviz.shared.types import InfoHash, PeerId

__all__ = [
    "HANDSHAKE_HEADER_LENGTH",
    "HANDSHAKE_LENGTH",
    "PROTOCOL",
    "Handshake",
    "HandshakeHeader",
    "HandshakeReader",
    "Reserved",
    "decode_handshake",
    "decode_handshake_header",
    "encode_handshake",
]

PROTOCOL = b"BitTorrent protocol"
_PREFIX = bytes([len(PROTOCOL)]) + PROTOCOL  # pstrlen + pstr, 20 bytes
HANDSHAKE_HEADER_LENGTH = 48  # prefix 20 + reserved 8 + info hash 20
HANDSHAKE_LENGTH = 68  # header + peer id 20

# (byte index, mask) of the reserved bits torviz understands.
_EXTENSION_PROTOCOL = (5, 0x10)  # BEP 10
_FAST = (7, 0x04)  # BEP 6
_DHT = (7, 0x01)  # BEP 5


@dataclass(frozen=True, slots=True)
class Reserved:
    """The 8 reserved handshake bytes, with the bits torviz knows exposed as flags.

    ``raw`` keeps every bit as received, including ones no BEP torviz implements.
    """

    raw: bytes = bytes(8)

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != 8:
            raise ValueError("the reserved field is exactly 8 bytes")

    @classmethod
    def build(
        cls,
        *,
        extension_protocol: bool = False,
        fast: bool = False,
        dht: bool = False,
        other: bytes = bytes(8),
    ) -> Reserved:
        """Reserved bytes with the given flags set on top of ``other`` (8 raw bytes)."""
        raw = bytearray(other)
        if len(raw) != 8:
            raise ValueError("the reserved field is exactly 8 bytes")
        for wanted, (index, mask) in (
            (extension_protocol, _EXTENSION_PROTOCOL),
            (fast, _FAST),
            (dht, _DHT),
        ):
            if wanted:
                raw[index] |= mask
        return cls(bytes(raw))

    def _bit(self, where: tuple[int, int]) -> bool:
        index, mask = where
        return bool(self.raw[index] & mask)

    @property
    def extension_protocol(self) -> bool:
        """BEP 10 extension protocol: bit 0x10 of byte 5."""
        return self._bit(_EXTENSION_PROTOCOL)

    @property
    def fast(self) -> bool:
        """BEP 6 fast extension: bit 0x04 of byte 7."""
        return self._bit(_FAST)

    @property
    def dht(self) -> bool:
        """BEP 5 DHT (the peer may send ``Port``): bit 0x01 of byte 7."""
        return self._bit(_DHT)

    @property
    def other_bits(self) -> bytes:
        """``raw`` with the three known flags cleared: what torviz does not interpret."""
        raw = bytearray(self.raw)
        for index, mask in (_EXTENSION_PROTOCOL, _FAST, _DHT):
            raw[index] &= ~mask & 0xFF
        return bytes(raw)

    def __repr__(self) -> str:
        flags = [
            name
            for name, on in (
                ("extension_protocol", self.extension_protocol),
                ("fast", self.fast),
                ("dht", self.dht),
            )
            if on
        ]
        return f"Reserved({self.raw.hex()}: {', '.join(flags) or 'no flags'})"


@dataclass(frozen=True, slots=True)
class HandshakeHeader:
    """The first 48 bytes of a handshake: enough to route an incoming connection."""

    reserved: Reserved
    info_hash: InfoHash


@dataclass(frozen=True, slots=True)
class Handshake:
    """A complete handshake."""

    info_hash: InfoHash
    peer_id: PeerId
    reserved: Reserved

    @property
    def header(self) -> HandshakeHeader:
        return HandshakeHeader(self.reserved, self.info_hash)


def encode_handshake(handshake: Handshake) -> bytes:
    """The 68 bytes that open a connection."""
    return _PREFIX + handshake.reserved.raw + handshake.info_hash.raw + handshake.peer_id.raw


def _check_prefix(data: bytes | bytearray | memoryview) -> None:
    """Refuse the first wrong byte of ``pstrlen + pstr`` present in ``data``."""
    if len(data) >= 1 and data[0] != len(PROTOCOL):
        raise WireError(
            "bad_pstrlen", f"handshake protocol length is {data[0]}, expected {len(PROTOCOL)}"
        )
    checked = min(len(data), len(_PREFIX))
    if checked > 1 and bytes(data[1:checked]) != PROTOCOL[: checked - 1]:
        shown = bytes(data[1:checked]).decode("latin-1")
        raise WireError("bad_protocol", f"handshake protocol string is {shown!r}, not BitTorrent")


def decode_handshake_header(data: bytes | bytearray | memoryview) -> HandshakeHeader:
    """Decode the first 48 bytes of a handshake.

    Args:
        data: at least 48 bytes; anything after byte 48 is ignored.

    Raises:
        WireError: ``bad_pstrlen``, ``bad_protocol``, or ``truncated`` if fewer than 48 bytes.
    """
    _check_prefix(data)
    if len(data) < HANDSHAKE_HEADER_LENGTH:
        raise WireError("truncated", f"handshake header needs 48 bytes, got {len(data)}")
    return HandshakeHeader(Reserved(bytes(data[20:28])), InfoHash(bytes(data[28:48])))


def decode_handshake(data: bytes | bytearray | memoryview) -> Handshake:
    """Decode exactly one 68-byte handshake.

    Raises:
        WireError: ``bad_pstrlen``, ``bad_protocol``, or ``bad_length`` unless exactly 68 bytes.
    """
    _check_prefix(data)
    if len(data) != HANDSHAKE_LENGTH:
        raise WireError("bad_length", f"a handshake is 68 bytes, got {len(data)}")
    header = decode_handshake_header(data)
    return Handshake(header.info_hash, PeerId(bytes(data[48:68])), header.reserved)


class HandshakeReader:
    """Incremental handshake parser for one connection.

    ``feed`` returns the events completed by that call: a ``HandshakeHeader`` once 48 bytes are
    in, then a ``Handshake`` once 68 are in (both at once if they arrive together). Bytes after
    the 68th are kept for ``take_surplus``; feeding more after the handshake is a caller bug.
    """

    __slots__ = ("_buf", "_handshake", "_header", "_surplus")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._header: HandshakeHeader | None = None
        self._handshake: Handshake | None = None
        self._surplus = b""

    @property
    def header(self) -> HandshakeHeader | None:
        """The header, once 48 bytes have arrived."""
        return self._header

    @property
    def handshake(self) -> Handshake | None:
        """The whole handshake, once 68 bytes have arrived."""
        return self._handshake

    def feed(self, data: bytes | bytearray | memoryview) -> list[HandshakeHeader | Handshake]:
        """Take the next received bytes.

        Raises:
            WireError: ``bad_pstrlen`` / ``bad_protocol`` at the first wrong byte.
            ValueError: if the handshake was already complete.
        """
        if self._handshake is not None:
            raise ValueError("handshake already complete; feed the message decoder instead")
        view = memoryview(data).cast("B")
        take = min(len(view), HANDSHAKE_LENGTH - len(self._buf))
        before = len(self._buf)
        self._buf += view[:take]
        if before < len(_PREFIX):
            _check_prefix(self._buf)
        events: list[HandshakeHeader | Handshake] = []
        if self._header is None and len(self._buf) >= HANDSHAKE_HEADER_LENGTH:
            self._header = decode_handshake_header(self._buf)
            events.append(self._header)
        if len(self._buf) == HANDSHAKE_LENGTH:
            self._handshake = decode_handshake(self._buf)
            self._surplus = bytes(view[take:])
            events.append(self._handshake)
        return events

    def take_surplus(self) -> bytes:
        """The bytes that followed the handshake in the last ``feed`` (then forgotten)."""
        surplus, self._surplus = self._surplus, b""
        return surplus
