"""Bitfield: the wire layout (high bit first), malformed bitfields refused, round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torviz.shared.bitfield import Bitfield, BitfieldError


def test_wire_layout_is_high_bit_first() -> None:
    # BEP 3: "The high bit in the first byte corresponds to piece index 0."
    field = Bitfield(10, [0, 7, 9])
    assert field.to_bytes() == bytes([0b1000_0001, 0b0100_0000])
    assert Bitfield.from_bytes(b"\x81\x40", 10) == field
    assert list(field) == [0, 7, 9]
    assert 7 in field and 8 not in field and 10 not in field and -1 not in field


@pytest.mark.parametrize(
    ("data", "size", "reason"),
    [
        (b"\x80", 10, "bad_bitfield_length"),
        (b"\x80\x00\x00", 10, "bad_bitfield_length"),
        (b"\x80\x20", 10, "bitfield_spare_bits"),  # bit for "piece 10" of a 10-piece torrent
        (b"\x01", 7, "bitfield_spare_bits"),
    ],
)
def test_malformed_bitfields_are_refused(data: bytes, size: int, reason: str) -> None:
    with pytest.raises(BitfieldError) as caught:
        Bitfield.from_bytes(data, size)
    assert caught.value.reason == reason


def test_full_and_missing_from() -> None:
    ours = Bitfield(9, [1, 2])
    theirs = Bitfield.full(9)
    assert theirs.complete and len(theirs) == 9
    assert list(ours.missing_from(theirs)) == [0, 3, 4, 5, 6, 7, 8]
    assert ours.intersects(theirs)
    assert Bitfield(0).to_bytes() == b"" and Bitfield.full(0).complete


def test_out_of_range_add_is_an_error() -> None:
    with pytest.raises(IndexError):
        Bitfield(4).add(4)


@given(
    st.integers(0, 300).flatmap(
        lambda n: st.tuples(
            st.just(n), st.sets(st.integers(0, max(n - 1, 0))) if n else st.just(set())
        )
    )
)
def test_round_trip(case: tuple[int, set[int]]) -> None:
    size, indices = case
    field = Bitfield(size, indices)
    assert Bitfield.from_bytes(field.to_bytes(), size) == field
    assert set(field) == indices and len(field) == len(indices)
    assert Bitfield.from_int(field.to_int(), size) == field
