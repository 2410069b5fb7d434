"""``TorrentGeometry.piece_index``: the one checked way to make a ``PieceIndex``, at its edges."""

from __future__ import annotations

import pytest

from torviz.shared.geometry import PieceIndexError, TorrentGeometry
from torviz.shared.types import PieceIndex

# 5 pieces: four of 100 bytes and a last one of 50.
GEOMETRY = TorrentGeometry(piece_length=100, total_length=450, file_lengths=(450,))


@pytest.mark.parametrize("piece", [0, 1, 4])
def test_a_piece_of_the_torrent_becomes_its_index(piece: int) -> None:
    index = GEOMETRY.piece_index(piece)
    assert index == piece and type(index) is int
    assert GEOMETRY.has_piece(piece)


@pytest.mark.parametrize("piece", [-1, 5, 6, 2**63])
def test_a_piece_outside_the_torrent_is_refused_with_its_number_and_the_count(piece: int) -> None:
    with pytest.raises(PieceIndexError) as caught:
        GEOMETRY.piece_index(piece)
    assert str(caught.value) == f"piece {piece} does not exist (the torrent has 5 pieces, 0..4)"
    assert (caught.value.piece, caught.value.num_pieces) == (piece, 5)
    assert isinstance(caught.value, IndexError)  # what the geometry raised for it before
    assert not GEOMETRY.has_piece(piece)


def test_the_geometrys_own_piece_checks_raise_the_same_error() -> None:
    with pytest.raises(PieceIndexError, match="piece 5 does not exist"):
        GEOMETRY.piece_size(5)
    with pytest.raises(PieceIndexError, match="piece -1 does not exist"):
        GEOMETRY.spans(-1)
    assert GEOMETRY.piece_size(GEOMETRY.piece_index(4)) == 50
    assert not GEOMETRY.is_valid_request(5, 0, 16)


def test_a_one_piece_torrent_has_exactly_piece_zero() -> None:
    single = TorrentGeometry(piece_length=1 << 20, total_length=1, file_lengths=(1,))
    assert single.piece_index(0) == PieceIndex(0)
    with pytest.raises(PieceIndexError, match=r"has 1 pieces, 0\.\.0"):
        single.piece_index(1)
