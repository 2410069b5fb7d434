"""A torrent's piece map as characters: one per piece, for ``status`` and the terminal UI.

Strategy: a ``PieceMap`` cell is a byte (``shared.bus.PieceCell``): missing, downloading,
checking, have (origin unknown), or ``FIRST_ORIGIN + i``, a verified piece whose blocks came
through ``origins[i]``. ``cell_char`` maps each byte to one printable character, so a map reads
in a plain text capture, in JSON and on a monochrome terminal alike:

- ``.`` missing, ``>`` downloading, ``?`` checking, ``#`` have (origin unknown);
- origin ``i``: ``0``-``9``, ``a``-``z``, ``A``-``Z``, then the other ASCII punctuation (not
  the four above, nor ``"`` and ``\\``), then letters from U+0100 on (Latin Extended).

``group_cells`` shrinks a map to at most a given number of cells for a display narrower than
the torrent has pieces: a group shows its least done state (missing before downloading before
checking before verified), and a fully verified group the origin most of its pieces came from.

Rules: pure functions, total over every byte value (a byte naming an origin the map does not
list still gets its character); every character is printable and one column wide.
"""

from __future__ import annotations

from collections import Counter

from torviz.shared.bus import PieceCell

__all__ = [
    "CHECKING_CHAR",
    "DOWNLOADING_CHAR",
    "HAVE_CHAR",
    "MISSING_CHAR",
    "ORIGIN_CHARS",
    "cell_char",
    "cells_text",
    "group_cells",
    "origin_char",
]

MISSING_CHAR = "."
DOWNLOADING_CHAR = ">"
CHECKING_CHAR = "?"
HAVE_CHAR = "#"

_STATE_CHARS = {
    PieceCell.MISSING: MISSING_CHAR,
    PieceCell.DOWNLOADING: DOWNLOADING_CHAR,
    PieceCell.CHECKING: CHECKING_CHAR,
    PieceCell.HAVE: HAVE_CHAR,
}
_ORIGIN_COUNT = 256 - PieceCell.FIRST_ORIGIN


def _origin_alphabet() -> str:
    letters = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    taken = set(_STATE_CHARS.values()) | {'"', "\\"} | set(letters)
    punctuation = "".join(chr(code) for code in range(0x21, 0x7F) if chr(code) not in taken)
    ascii_chars = letters + punctuation
    extended = "".join(chr(0x100 + i) for i in range(_ORIGIN_COUNT - len(ascii_chars)))
    return ascii_chars + extended


ORIGIN_CHARS = _origin_alphabet()
"""The character of origin ``i`` is ``ORIGIN_CHARS[i]`` (one for every byte an origin cell can
hold)."""
_TABLE = "".join(_STATE_CHARS[PieceCell(code)] for code in range(PieceCell.FIRST_ORIGIN))
_TABLE += ORIGIN_CHARS


def origin_char(index: int) -> str:
    """The character of ``PieceMap.origins[index]``.

    Raises:
        IndexError: ``index`` is not 0 to 251 (no cell byte can name it).
    """
    if not 0 <= index < _ORIGIN_COUNT:
        raise IndexError(f"no piece map cell names origin {index}")
    return ORIGIN_CHARS[index]


def cell_char(cell: int) -> str:
    """The character of one cell byte (0-255).

    Raises:
        IndexError: ``cell`` is not a byte value.
    """
    if not 0 <= cell < len(_TABLE):
        raise IndexError(f"{cell} is not a piece map cell")
    return _TABLE[cell]


def cells_text(cells: bytes) -> str:
    """The piece map as a string, one character per piece (``cell_char``)."""
    return "".join(_TABLE[cell] for cell in cells)


def _least_done(group: bytes) -> int:
    """One cell for a group of pieces: its least done state, else its most common origin."""
    for state in (PieceCell.MISSING, PieceCell.DOWNLOADING, PieceCell.CHECKING):
        if state in group:
            return int(state)
    counts = Counter(group).most_common()
    best = counts[0][1]
    return min(cell for cell, count in counts if count == best)  # a tie: the first origin


def group_cells(cells: bytes, limit: int) -> bytes:
    """``cells`` as at most ``limit`` cells: unchanged when they fit, else in ``limit`` groups
    of consecutive pieces (sizes differing by one at most), each shown by ``_least_done``.

    Raises:
        ValueError: ``limit`` is below 1.
    """
    if limit < 1:
        raise ValueError(f"a piece map needs at least one cell, not {limit}")
    count = len(cells)
    if count <= limit:
        return bytes(cells)
    return bytes(
        _least_done(cells[i * count // limit : (i + 1) * count // limit]) for i in range(limit)
    )
