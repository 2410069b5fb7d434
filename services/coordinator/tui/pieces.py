"""The piece map of the detail view: one cell per piece, or per group of pieces.

Strategy: a torrent has up to 2^21 pieces and the screen a few hundred cells, so pieces are
grouped evenly; a group shows its least done state (missing < downloading < checking <
verified), and a group of verified pieces the origin most of them came from. Every cell has a
character as well as a colour, so a capture without colours still reads: ``.`` missing, ``>``
downloading, ``?`` checking, ``#`` verified (origin unknown), and a letter per host that
delivered pieces (the legend names the letters).

Rules: pure; the cells are bytes as ``PieceMap`` carries them (``PieceCell`` or
``FIRST_ORIGIN + i``); an origin index past the map's ``origins`` counts as unknown.
"""

from __future__ import annotations

from collections import Counter

from torviz.shared.bus import PieceCell, PieceMap

from .lines import ORIGIN_STYLES, Line, Segment, Style
from .text import safe_text, truncate

__all__ = ["HOST_LETTERS", "host_letters", "legend", "map_cells", "map_lines"]

HOST_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_STATE_CHARS = {
    PieceCell.MISSING: (".", Style.DIM),
    PieceCell.DOWNLOADING: (">", Style.WARN),
    PieceCell.CHECKING: ("?", Style.WARN),
    PieceCell.HAVE: ("#", Style.GOOD),
}


def host_letters(pieces: PieceMap) -> list[tuple[str, str, Style]]:
    """Each host that delivered pieces, in order of its first origin: (host, letter, style)."""
    hosts: list[str] = []
    for origin in pieces.origins:
        if origin.host not in hosts:
            hosts.append(origin.host)
    return [
        (host, HOST_LETTERS[i % len(HOST_LETTERS)], ORIGIN_STYLES[i % len(ORIGIN_STYLES)])
        for i, host in enumerate(hosts)
    ]


def _cell_looks(pieces: PieceMap) -> dict[int, Segment]:
    """Cell value -> (character, style)."""
    looks: dict[int, Segment] = {int(cell): look for cell, look in _STATE_CHARS.items()}
    letters = {host: (letter, style) for host, letter, style in host_letters(pieces)}
    for i, origin in enumerate(pieces.origins):
        looks[PieceCell.FIRST_ORIGIN + i] = letters[origin.host]
    return looks


def _group_value(group: bytes) -> int:
    least = min(group)
    if least < PieceCell.HAVE:
        return least
    if group.count(group[0]) == len(group):
        return group[0]
    return Counter(group).most_common(1)[0][0]


def map_cells(pieces: PieceMap, slots: int) -> list[Segment]:
    """At most ``slots`` cells for the map: one per piece, or one per group of pieces."""
    cells = pieces.cells
    if not cells or slots <= 0:
        return []
    looks = _cell_looks(pieces)
    unknown = _STATE_CHARS[PieceCell.HAVE]
    if len(cells) <= slots:
        values = list(cells)
    else:
        per = -(-len(cells) // slots)
        values = [_group_value(cells[i : i + per]) for i in range(0, len(cells), per)]
    return [looks.get(value, unknown) for value in values]


def map_lines(pieces: PieceMap, width: int, rows: int) -> list[Line]:
    """The map in at most ``rows`` lines of ``width`` cells (fewer when the pieces are few)."""
    cells = map_cells(pieces, width * rows)
    lines: list[Line] = []
    for start in range(0, len(cells), width):
        merged: list[Segment] = []
        for char, style in cells[start : start + width]:
            if merged and merged[-1][1] is style:
                merged[-1] = (merged[-1][0] + char, style)
            else:
                merged.append((char, style))
        lines.append(tuple(merged))
    return lines


def legend(pieces: PieceMap, width: int) -> Line:
    """What the map's characters mean, hosts by letter."""
    segs: list[Segment] = [
        (". missing ", Style.DIM),
        ("> downloading ", Style.WARN),
        ("? checking ", Style.WARN),
        ("# have ", Style.GOOD),
    ]
    for host, letter, style in host_letters(pieces):
        segs.append((f"{letter} {truncate(safe_text(host) or '?', 24)} ", style))
    return tuple(segs)
