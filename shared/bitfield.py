"""A fixed-size set of piece indices, in the BitTorrent bitfield layout.

Bit ``i`` is the high bit first: piece 0 is ``0x80`` of byte 0 (BEP 3). The spare bits of the
last byte must be zero; a peer that sets them is broken, so ``from_bytes`` refuses them.
Backed by a Python ``int`` so that union, intersection and "what does this peer have that we
lack" are single big-integer operations even for hundreds of thousands of pieces.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .errors import TorvizError

__all__ = ["Bitfield", "BitfieldError"]


class BitfieldError(TorvizError):
    """A bitfield whose length or spare bits do not fit the torrent."""


class Bitfield:
    """A mutable set of piece indices in ``range(size)``."""

    __slots__ = ("_bits", "_size")

    def __init__(self, size: int, indices: Iterable[int] = ()) -> None:
        if size < 0:
            raise ValueError("a bitfield size is never negative")
        self._size = size
        self._bits = 0
        for index in indices:
            self.add(index)

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def full(cls, size: int) -> Bitfield:
        field = cls(size)
        field._bits = (1 << size) - 1
        return field

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, size: int) -> Bitfield:
        """Read the wire layout for a torrent of ``size`` pieces.

        Raises:
            BitfieldError: the length is not ``ceil(size / 8)`` or a spare bit is set.
        """
        expected = (size + 7) // 8
        if len(data) != expected:
            raise BitfieldError(
                "bad_bitfield_length",
                f"bitfield of {len(data)} bytes for {size} pieces (expected {expected})",
            )
        value = int.from_bytes(data, "big")
        spare = expected * 8 - size
        if spare and value & ((1 << spare) - 1):
            raise BitfieldError("bitfield_spare_bits", "bitfield has spare bits set")
        field = cls(size)
        # Stored with bit i = piece i, the reverse of the wire order.
        field._bits = _reverse_bits(value >> spare, size)
        return field

    def to_bytes(self) -> bytes:
        """The wire layout: ``ceil(size / 8)`` bytes, high bit first, spare bits zero."""
        length = (self._size + 7) // 8
        spare = length * 8 - self._size
        return (_reverse_bits(self._bits, self._size) << spare).to_bytes(length, "big")

    @classmethod
    def from_int(cls, bits: int, size: int) -> Bitfield:
        """A bitfield whose piece ``i`` is bit ``i`` of ``bits``."""
        if bits < 0 or bits >> size:
            raise ValueError("bits outside the bitfield")
        field = cls(size)
        field._bits = bits
        return field

    def to_int(self) -> int:
        """Piece ``i`` is bit ``i``: the form the piece picker combines with other sets."""
        return self._bits

    def copy(self) -> Bitfield:
        field = Bitfield(self._size)
        field._bits = self._bits
        return field

    # -- set operations -------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self._size

    def add(self, index: int) -> None:
        self._check(index)
        self._bits |= 1 << index

    def discard(self, index: int) -> None:
        self._check(index)
        self._bits &= ~(1 << index)

    def __contains__(self, index: object) -> bool:
        if not isinstance(index, int) or not 0 <= index < self._size:
            return False
        return bool(self._bits >> index & 1)

    def __len__(self) -> int:
        return self._bits.bit_count()

    def __iter__(self) -> Iterator[int]:
        bits = self._bits
        while bits:
            low = bits & -bits
            yield low.bit_length() - 1
            bits ^= low

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Bitfield):
            return NotImplemented
        return self._size == other._size and self._bits == other._bits

    def __hash__(self) -> int:
        raise TypeError("Bitfield is mutable")

    def __repr__(self) -> str:
        return f"Bitfield({len(self)}/{self._size})"

    @property
    def complete(self) -> bool:
        return self._bits == (1 << self._size) - 1

    def missing_from(self, other: Bitfield) -> Bitfield:
        """Pieces in ``other`` that are not in this set (what a peer could give us)."""
        self._check_size(other)
        field = Bitfield(self._size)
        field._bits = other._bits & ~self._bits
        return field

    def intersects(self, other: Bitfield) -> bool:
        self._check_size(other)
        return bool(self._bits & other._bits)

    def _check(self, index: int) -> None:
        if not 0 <= index < self._size:
            raise IndexError(f"piece {index} outside 0..{self._size - 1}")

    def _check_size(self, other: Bitfield) -> None:
        if other._size != self._size:
            raise ValueError("bitfields of different sizes")


def _reverse_bits(value: int, width: int) -> int:
    """Reverse the lowest ``width`` bits of ``value`` (wire order <-> index order)."""
    if width == 0:
        return 0
    # int -> binary string -> reversed -> int is linear and fast in CPython for large widths.
    return int(format(value, f"0{width}b")[::-1], 2)
