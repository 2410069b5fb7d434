"""The main view's two panes: the torrent list and the log.

Strategy: the list's columns are laid out for the width given: the name takes what the fixed
columns leave, and when the width is short the least needed columns go first (the bar, then
up rate, peers, ETA and down rate), so ``Name``, the percentage and the state always show. Only
the rows in view are built (``ViewModel.ordered``), so 1,000 torrents cost what 20 do.

Rules: pure; every text from the daemon escaped (``safe_text``); each line exactly ``width``
cells.
"""

from __future__ import annotations

from dataclasses import dataclass

from torviz.shared.bus import EventLevel, TorrentRow, TorrentState

from .lines import Line, Segment, Style, pad, plain
from .text import (
    ELLIPSIS,
    cell_width,
    eta_text,
    fit,
    percent_text,
    safe_text,
    short_rate_text,
    tilde,
    truncate,
)
from .view_model import LogLine, ViewModel

__all__ = [
    "BAR_DONE",
    "BAR_TODO",
    "Columns",
    "columns",
    "list_pane",
    "log_pane",
    "row_line",
    "wrap",
]

BAR_DONE = "█"
BAR_TODO = "░"
MIN_NAME = 12
MAX_BAR = 20
MAX_WRAP = 4
"""Lines a log entry takes at most (the rest is in ``status --json``)."""

STATE_STYLES = {
    TorrentState.SEEDING: Style.GOOD,
    TorrentState.DOWNLOADING: Style.NORMAL,
    TorrentState.PAUSED: Style.DIM,
    TorrentState.STOPPED: Style.DIM,
    TorrentState.CHECKING: Style.WARN,
    TorrentState.METADATA: Style.WARN,
    TorrentState.ERROR: Style.BAD,
}
LEVEL_STYLES = {
    EventLevel.INFO: Style.NORMAL,
    EventLevel.WARNING: Style.WARN,
    EventLevel.ERROR: Style.BAD,
}


PERCENT = 6
PROGRESS = 8
"""The progress column without a bar: wide enough for its heading."""
STATE = 11
RATE = 10
"""A rate column: ``short_rate_text`` fits."""


@dataclass(frozen=True, slots=True)
class Columns:
    """Widths of the list's columns for one pane width (0: not shown)."""

    name: int
    bar: int
    down: int
    up: int
    peers: int
    eta: int

    @property
    def progress(self) -> int:
        """The progress column: the bar, a space and the percentage, or just the percentage."""
        return self.bar + 1 + PERCENT if self.bar else PROGRESS


def columns(width: int) -> Columns:
    """The list's columns for a pane ``width`` cells wide."""
    fixed = 1 + 1 + PROGRESS + 1 + STATE  # marker, name's space, progress, space, state
    shown = {"down": RATE, "up": RATE, "peers": 5, "eta": 6}
    for drop in ("up", "peers", "eta", "down"):
        if width - fixed - sum(w + 1 for w in shown.values()) >= MIN_NAME:
            break
        del shown[drop]
    left = width - fixed - sum(w + 1 for w in shown.values())
    bar = min(MAX_BAR, (left - MIN_NAME) // 2)
    bar = bar if bar >= 5 else 0
    name = left - (bar + 1 + PERCENT - PROGRESS if bar else 0)
    return Columns(
        name=max(1, name),
        bar=bar,
        down=shown.get("down", 0),
        up=shown.get("up", 0),
        peers=shown.get("peers", 0),
        eta=shown.get("eta", 0),
    )


def _header(cols: Columns) -> Line:
    parts = [" " + fit("Name", cols.name)]
    parts.append(fit("Progress", cols.progress))
    parts.append(fit("State", STATE))
    for width, title in ((cols.down, "Down"), (cols.up, "Up"), (cols.peers, "Peers")):
        if width:
            parts.append(fit(title, width, right=True))
    if cols.eta:
        parts.append(fit("ETA", cols.eta, right=True))
    return ((" ".join(parts), Style.HEADER),)


def _bar(fraction: float, width: int) -> list[Segment]:
    done = max(0, min(width, int(fraction * width + 0.5 if fraction < 1 else width)))
    if fraction < 1.0 and done == width:
        done = width - 1
    return [(BAR_DONE * done, Style.BAR_DONE), (BAR_TODO * (width - done), Style.BAR_TODO)]


def shown_fraction(row: TorrentRow) -> float:
    """What the bar shows: the check's progress while checking, the metadata fetched while
    fetching it, else the verified fraction."""
    if row.state is TorrentState.CHECKING and row.check_progress is not None:
        return row.check_progress
    metadata = row.metadata
    if row.state is TorrentState.METADATA and metadata is not None and metadata.size:
        return min(1.0, metadata.received / metadata.size)
    return row.progress


def row_line(row: TorrentRow, cols: Columns, selected: bool) -> Line:
    """One torrent's row: name, bar and percentage, state, rates, peers, ETA."""
    fraction = shown_fraction(row)
    segs: list[Segment] = [(">" if selected else " ", Style.NORMAL)]
    segs.append((fit(safe_text(row.name), cols.name) + " ", Style.NORMAL))
    if cols.bar:
        segs += [*_bar(fraction, cols.bar), (" ", Style.NORMAL)]
    percent_width = PERCENT if cols.bar else PROGRESS
    segs.append((fit(percent_text(fraction), percent_width, right=True) + " ", Style.NORMAL))
    segs.append((fit(row.state.value, STATE), STATE_STYLES.get(row.state, Style.NORMAL)))
    for width, rate in ((cols.down, row.download_rate), (cols.up, row.upload_rate)):
        if width:
            style = Style.NORMAL if rate >= 1 else Style.DIM
            text = short_rate_text(rate) if rate >= 1 else "-"
            segs.append((" " + fit(text, width, right=True), style))
    if cols.peers:
        segs.append((" " + fit(str(row.peers), cols.peers, right=True), Style.NORMAL))
    if cols.eta:
        downloading = row.state is TorrentState.DOWNLOADING
        eta = eta_text(row.left, row.download_rate) if downloading else "-"
        segs.append((" " + fit(eta, cols.eta, right=True), Style.NORMAL))
    if selected:
        segs = [(text, Style.SELECTED) for text, _ in segs]
    return tuple(segs)


def list_pane(model: ViewModel, width: int, height: int) -> list[Line]:
    """The torrent list: a header and the rows in view, exactly ``height`` lines."""
    if height <= 0:
        return []
    cols = columns(width)
    lines: list[Line] = [pad(_header(cols), width)]
    rows_shown = height - 1
    if not model.order:
        hint = "No torrents: press + to add one" if model.connected else "Waiting for the daemon…"
        lines.append(plain("  " + hint, width, Style.DIM))
    else:
        top = max(0, min(model.list_top, len(model.order) - rows_shown))
        for row in model.ordered(top, top + rows_shown):
            lines.append(pad(row_line(row, cols, row.info_hash == model.selected), width))
    while len(lines) < height:
        lines.append(plain("", width))
    return lines[:height]


def wrap(text: str, width: int) -> list[str]:
    """``text`` in pieces of at most ``width`` cells, broken after a space when one is near
    the end of a piece (a long word or URL is cut where it must be)."""
    if width <= 0:
        return []
    pieces: list[str] = []
    current: list[str] = []
    used = 0
    for ch in text:
        size = cell_width(ch)
        if used + size > width and current:
            cut = "".join(current).rfind(" ") + 1
            if cut == 0 or cut < len(current) * 2 // 3:  # no space near the end: cut the word
                cut = len(current)
            pieces.append("".join(current[:cut]))
            current = current[cut:]
            used = sum(cell_width(c) for c in current)
        current.append(ch)
        used += size
    pieces.append("".join(current))
    return pieces


def _entry_lines(entry: LogLine, width: int, home: str) -> list[Line]:
    """One log line, wrapped under its text (the time stays alone in its column)."""
    stamp = entry.stamp + " "
    indent = cell_width(stamp)
    style = LEVEL_STYLES.get(entry.level, Style.NORMAL)
    text = tilde(safe_text(entry.text), home)
    if width - indent < 12:  # too narrow to wrap usefully: cut instead
        return [pad(((stamp, Style.DIM), (text, style)), width)]
    parts = wrap(text, width - indent)
    if len(parts) > MAX_WRAP:
        parts = parts[:MAX_WRAP]
        parts[-1] = truncate(parts[-1] + ELLIPSIS, width - indent)
    lines = [pad(((stamp, Style.DIM), (parts[0], style)), width)]
    lines += [pad(((" " * indent, Style.NORMAL), (part, style)), width) for part in parts[1:]]
    return lines


def log_pane(model: ViewModel, width: int, height: int) -> list[Line]:
    """The log: a ``Log`` title and the newest lines at the bottom, long lines wrapped
    (``log_scroll`` lines back from the newest)."""
    if height <= 0:
        return []
    scroll = min(model.log_scroll, max(0, len(model.log) - 1))
    title = "Log" if not scroll else f"Log (scrolled back {scroll}; ] to go forward)"
    room = height - 1
    shown: list[Line] = []
    index = len(model.log) - 1 - scroll
    while index >= 0 and len(shown) < room:
        shown[:0] = _entry_lines(model.log[index], width, model.home)
        index -= 1
    shown = shown[-room:] if room > 0 else []
    lines = [plain(title, width, Style.HEADER)]
    lines += [plain("", width)] * (room - len(shown))
    return (lines + shown)[:height]
