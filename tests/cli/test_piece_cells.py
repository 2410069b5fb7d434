"""The piece map as characters (``cli/piece_cells.py``): one per piece, distinct and printable
for every byte, and groups of pieces showing their least done state or most common origin."""

from __future__ import annotations

import pytest

from torviz.services.coordinator.cli.piece_cells import (
    ORIGIN_CHARS,
    cell_char,
    cells_text,
    group_cells,
    origin_char,
)
from torviz.shared.bus import MAX_PIECE_ORIGINS, PieceCell

MISSING, DOWNLOADING, CHECKING, HAVE, FIRST = (
    PieceCell.MISSING,
    PieceCell.DOWNLOADING,
    PieceCell.CHECKING,
    PieceCell.HAVE,
    PieceCell.FIRST_ORIGIN,
)


def cells(*values: int) -> bytes:
    return bytes(values)


def test_states_and_the_first_origins_have_the_documented_characters() -> None:
    text = cells_text(cells(MISSING, DOWNLOADING, CHECKING, HAVE, FIRST, FIRST + 1, FIRST + 9))
    assert text == ".>?#019"
    assert cell_char(FIRST + 10) == "a"
    assert cell_char(FIRST + 35) == "z"
    assert cell_char(FIRST + 36) == "A"
    assert cell_char(FIRST + 61) == "Z"
    assert origin_char(0) == "0" and origin_char(61) == "Z"


def test_every_byte_has_its_own_printable_one_column_character() -> None:
    text = cells_text(bytes(range(256)))
    assert len(text) == 256
    assert len(set(text)) == 256
    assert all(ch.isprintable() and not ch.isspace() for ch in text)
    assert '"' not in text and "\\" not in text
    assert len(ORIGIN_CHARS) >= MAX_PIECE_ORIGINS
    assert set(ORIGIN_CHARS[62:]).isdisjoint(".>?#0123456789")


@pytest.mark.parametrize("bad", [-1, 252])
def test_an_origin_no_cell_can_name_is_refused(bad: int) -> None:
    with pytest.raises(IndexError):
        origin_char(bad)


def test_a_map_that_fits_is_unchanged() -> None:
    pieces = cells(HAVE, MISSING, FIRST)
    assert group_cells(pieces, 3) == pieces
    assert group_cells(b"", 10) == b""


def test_a_group_shows_its_least_done_state() -> None:
    pieces = cells(HAVE, MISSING, HAVE, DOWNLOADING, CHECKING, HAVE, FIRST, CHECKING)
    assert cells_text(group_cells(pieces, 4)) == ".>??"


def test_a_verified_group_shows_the_origin_most_of_it_came_from() -> None:
    pieces = cells(FIRST, FIRST + 1, FIRST + 1, HAVE, FIRST, FIRST, HAVE, HAVE, FIRST + 2)
    assert cells_text(group_cells(pieces, 3)) == "10#"
    # a tie: the lowest byte (have before origin 0 before origin 1)
    assert cells_text(group_cells(cells(FIRST + 1, FIRST, HAVE, FIRST), 1)) == "0"


def test_groups_cover_every_piece_in_order_with_sizes_one_apart() -> None:
    pieces = bytes([HAVE] * 99 + [MISSING])
    grouped = group_cells(pieces, 7)
    assert len(grouped) == 7
    assert cells_text(grouped) == "######."
    with pytest.raises(ValueError):
        group_cells(pieces, 0)
