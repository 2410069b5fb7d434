"""Text for the terminal: display widths, truncation with an ellipsis, rates, sizes, times.

Strategy: every string the daemon sends (names, peer clients, errors, log lines) passes
``safe_text`` before it is laid out, so a hostile name cannot drive the terminal; widths are
counted in terminal cells (``wcwidth``: a CJK character takes two), so a line never overflows.

Rules: pure; no terminal here.
"""

from __future__ import annotations

import time

from wcwidth import wcwidth

from torviz.shared.units import human_size, short_duration

from ..cli.commands.info import safe_text

__all__ = [
    "ELLIPSIS",
    "cell_width",
    "clock_text",
    "eta_text",
    "fit",
    "human_size",
    "percent_text",
    "rate_text",
    "safe_text",
    "short_rate_text",
    "tilde",
    "truncate",
]

ELLIPSIS = "…"


def _char_width(ch: str) -> int:
    return max(0, wcwidth(ch))


def cell_width(text: str) -> int:
    """How many terminal cells ``text`` takes (control characters count 0: escape first)."""
    if text.isascii():
        return len(text)
    return sum(_char_width(ch) for ch in text)


def truncate(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` cells, ending in ``…`` when something was cut."""
    if width <= 0:
        return ""
    if cell_width(text) <= width:
        return text
    kept, used = [], 0
    for ch in text:
        size = _char_width(ch)
        if used + size > width - 1:
            break
        kept.append(ch)
        used += size
    return "".join(kept) + ELLIPSIS


def fit(text: str, width: int, right: bool = False) -> str:
    """``text`` truncated and padded with spaces to exactly ``width`` cells.

    Args:
        right: pad on the left (numbers), else on the right.
    """
    cut = truncate(text, width)
    pad = " " * max(0, width - cell_width(cut))
    return pad + cut if right else cut + pad


def rate_text(rate: float) -> str:
    """``1536.0`` -> ``"1.5 KiB/s"``; ``"0 B/s"`` for nothing."""
    return f"{human_size(max(0.0, rate))}/s"


def tilde(text: str, home: str) -> str:
    """``text`` with each path under ``home`` shown as ``~/...`` (as shells show them); the
    home folder itself, alone, as ``~``. ``home`` empty or ``/``: unchanged."""
    home = home.rstrip("/")
    if not home:
        return text
    if text == home:
        return "~"
    return text.replace(home + "/", "~/")


def short_rate_text(rate: float) -> str:
    """A rate in at most 10 cells, three significant digits: ``"868 KiB/s"``,
    ``"1.23 MiB/s"``, ``"0 B/s"`` (for the list's narrow columns)."""
    value = max(0.0, rate)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 999.5 or unit == "TiB":
            break
        value /= 1024
    if unit == "B" or value >= 99.95:
        return f"{value:.0f} {unit}/s"
    return f"{value:.1f} {unit}/s" if value >= 9.995 else f"{value:.2f} {unit}/s"


def percent_text(fraction: float) -> str:
    """``0.4567`` -> ``"45.7%"``; never ``100.0%`` for a fraction below 1."""
    value = max(0.0, min(1.0, fraction)) * 100
    shown = f"{value:.1f}"
    if shown == "100.0" and fraction < 1.0:
        shown = "99.9"
    return f"{shown}%"


def eta_text(left: int, rate: float) -> str:
    """Time left for ``left`` bytes at ``rate`` B/s: ``12s``, ``4m05s``, ``2h10m``, ``3d04h``;
    ``-`` when nothing is left or nothing arrives."""
    if left <= 0 or rate < 1.0:
        return "-"
    seconds = int(left / rate + 0.5)
    return short_duration(seconds) if seconds < 1000 * 86400 else "-"


def clock_text(wall: float) -> str:
    """A wall-clock time as ``HH:MM:SS``, local time."""
    return time.strftime("%H:%M:%S", time.localtime(wall))
