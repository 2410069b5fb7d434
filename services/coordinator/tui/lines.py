"""Styled lines: what ``render`` produces and ``screen`` draws.

Strategy: a ``Line`` is a tuple of ``(text, Style)`` segments; a ``Style`` names a meaning
(selected, header, good, warning ...), never a colour: ``screen`` maps it to the terminal's
colours, or to reverse/bold on a terminal without any. Helpers here cut and pad lines to a
width in terminal cells.

Rules: pure. Segment texts are already escaped (``text.safe_text``) when they come from the
daemon.
"""

from __future__ import annotations

from enum import Enum

from .text import cell_width, fit, truncate

__all__ = [
    "ORIGIN_STYLES",
    "Line",
    "Segment",
    "Style",
    "join",
    "line_text",
    "line_width",
    "pad",
    "plain",
]


class Style(Enum):
    """What a segment means; ``screen`` picks its look."""

    NORMAL = "normal"
    SELECTED = "selected"
    HEADER = "header"
    TITLE = "title"
    DIM = "dim"
    GOOD = "good"
    WARN = "warn"
    BAD = "bad"
    BAR_DONE = "bar_done"
    BAR_TODO = "bar_todo"
    INPUT = "input"
    CURSOR = "cursor"
    ORIGIN_0 = "origin_0"
    ORIGIN_1 = "origin_1"
    ORIGIN_2 = "origin_2"
    ORIGIN_3 = "origin_3"
    ORIGIN_4 = "origin_4"
    ORIGIN_5 = "origin_5"
    ORIGIN_6 = "origin_6"
    ORIGIN_7 = "origin_7"


ORIGIN_STYLES = (
    Style.ORIGIN_0,
    Style.ORIGIN_1,
    Style.ORIGIN_2,
    Style.ORIGIN_3,
    Style.ORIGIN_4,
    Style.ORIGIN_5,
    Style.ORIGIN_6,
    Style.ORIGIN_7,
)

Segment = tuple[str, Style]
Line = tuple[Segment, ...]


def plain(text: str, width: int, style: Style = Style.NORMAL) -> Line:
    """One segment: ``text`` cut and padded to exactly ``width`` cells."""
    return ((fit(text, width), style),)


def line_width(line: Line) -> int:
    """The cells ``line`` takes."""
    return sum(cell_width(text) for text, _ in line)


def line_text(line: Line) -> str:
    """The characters of ``line`` without styles (what a monochrome capture shows)."""
    return "".join(text for text, _ in line)


def pad(line: Line, width: int) -> Line:
    """``line`` cut to ``width`` cells (the last segment kept ends in ``…``) and padded."""
    out: list[Segment] = []
    used = 0
    for text, style in line:
        size = cell_width(text)
        if used + size > width:
            cut = truncate(text, width - used)
            if cut:
                out.append((cut, style))
            used += cell_width(cut)
            break
        if text:
            out.append((text, style))
        used += size
    if used < width:
        out.append((" " * (width - used), Style.NORMAL))
    return tuple(out)


def join(left: Line, right: Line, left_width: int, right_width: int) -> Line:
    """Two panes side by side, a ``│`` between them."""
    return (*pad(left, left_width), ("│", Style.DIM), *pad(right, right_width))
