"""The session as the terminal UI knows it: rows, selection, log, totals, agents and the mode.

Strategy: ``apply`` folds one ``SessionChanges`` (a delta since the last revision, or the whole
session when ``complete``) into a dict of rows by info hash and a sorted list of sort keys
(name, then hash), so an update costs O(changed rows) plus a bisect each, and a new torrent
appears in its place. The selection is an info hash, so it stays on its torrent when rows move;
a removed selected torrent hands the selection to the row that took its place.

Rules:
- Pure: no terminal, no socket, no clock (the wall time of an update is passed in).
- Bounded: at most ``MAX_LOG_LINES`` log lines are kept (the oldest go first).
- Every text from the daemon is kept as it came; ``render`` escapes it.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from torviz.shared.bus import (
    MAX_EVENTS,
    AgentStatus,
    EventLevel,
    SessionChanges,
    SessionTotals,
    TorrentRow,
    TorrentStatus,
)
from torviz.shared.types import InfoHash

from .text import clock_text

__all__ = [
    "MAX_LOG_LINES",
    "Confirm",
    "ConfirmKind",
    "LogLine",
    "Mode",
    "Prompt",
    "ViewModel",
]

MAX_LOG_LINES = 2000
MAX_SEEN = 2 * MAX_EVENTS


class Mode(Enum):
    """What the screen shows."""

    LIST = "list"
    DETAIL = "detail"
    AGENTS = "agents"
    HELP = "help"
    PROMPT = "prompt"
    CONFIRM = "confirm"


class ConfirmKind(Enum):
    """What a yes/no question is about."""

    REMOVE = "remove"
    REMOVE_DATA = "remove_data"
    SHUTDOWN = "shutdown"


@dataclass(frozen=True, slots=True)
class Confirm:
    """A question waiting for ``y`` or ``n``."""

    kind: ConfirmKind
    info_hash: InfoHash | None = None
    name: str = ""
    path: str = ""
    """The folder or file that removing with data deletes."""


@dataclass(slots=True)
class Prompt:
    """The add prompt's line being edited."""

    text: str = ""
    cursor: int = 0
    """Characters before the cursor."""
    error: str = ""
    """Why the last submitted text was refused (shown until the text changes)."""


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line of the log pane."""

    stamp: str
    """``HH:MM:SS``, when it happened (local time)."""
    level: EventLevel
    text: str


def _sort_key(row: TorrentRow) -> tuple[str, str]:
    return (row.name.casefold(), row.info_hash.hex)


@dataclass
class ViewModel:
    """Everything the screen is drawn from; ``keys`` and ``apply`` change it."""

    rows: dict[InfoHash, TorrentRow] = field(default_factory=dict)
    order: list[tuple[str, str]] = field(default_factory=list)
    """Sort keys of ``rows``, sorted; ``by_key`` maps each back to its info hash."""
    by_key: dict[tuple[str, str], InfoHash] = field(default_factory=dict)
    selected: InfoHash | None = None
    list_top: int = 0
    """The first row shown (kept so the selection stays in view without jumping)."""
    page_rows: int = 10
    """Rows the list shows at once (set from the layout; PgUp/PgDn move by it)."""
    revision: int = 0
    events_after: int = 0
    connected: bool = False
    """The daemon answered at least once."""
    log: deque[LogLine] = field(default_factory=lambda: deque(maxlen=MAX_LOG_LINES))
    log_scroll: int = 0
    """Lines scrolled back from the newest."""
    totals: SessionTotals | None = None
    agents: tuple[AgentStatus, ...] = ()
    mode: Mode = Mode.LIST
    detail_hash: InfoHash | None = None
    detail: TorrentStatus | None = None
    detail_scroll: int = 0
    prompt: Prompt = field(default_factory=Prompt)
    confirm: Confirm | None = None
    message: str = ""
    """The status line: what the last command did, or why the daemon does not answer."""
    message_level: EventLevel = EventLevel.INFO
    dirty: bool = True
    """Something changed since the last frame was drawn."""
    home: str = ""
    """The user's home folder: paths under it show as ``~/...`` (empty: as they are)."""
    _seen: dict[int, str] = field(default_factory=dict)
    """The text of each event number shown lately (oldest first, at most ``MAX_SEEN``)."""

    # --- the daemon's answers ------------------------------------------------------------

    def apply(self, changes: SessionChanges, wall: float) -> bool:
        """Fold in one reply to ``WatchSession``; ``wall`` is the time it arrived.

        Returns:
            Whether anything shown changed.
        """
        changed = not self.connected or changes.totals != self.totals
        changed |= changes.agents != self.agents
        self.connected = True
        if changes.complete:
            keep = {row.info_hash for row in changes.rows}
            for gone in [ih for ih in self.rows if ih not in keep]:
                self._drop(gone)
                changed = True
        for row in changes.rows:
            changed |= self._upsert(row)
        for gone in changes.removed:
            if gone in self.rows:
                self._drop(gone)
                changed = True
        for event in changes.events:
            self.events_after = max(self.events_after, event.seq)
            if self._seen.get(event.seq) == event.text:
                continue  # asked again after a resync: shown already
            self._seen[event.seq] = event.text
            if len(self._seen) > MAX_SEEN:
                del self._seen[next(iter(self._seen))]
            self.add_log(event.level, event.text, wall - event.age)
            changed = True
        self.revision = changes.revision
        self.totals = changes.totals
        self.agents = changes.agents
        if self.selected is None and self.order:
            self.selected = self.by_key[self.order[0]]
            changed = True
        self.dirty |= changed
        return changed

    def resync(self) -> None:
        """Ask for everything next time (the daemon went away: it may come back restarted,
        its revisions and event numbers starting again). Rows stay shown until the
        complete answer replaces them; events already shown are not shown twice."""
        self.revision = 0
        self.events_after = 0

    def set_detail(self, status: TorrentStatus | None) -> None:
        """The detail view's torrent, as ``GetStatus(detail=True)`` answered."""
        if status != self.detail:
            self.detail = status
            self.dirty = True

    def _upsert(self, row: TorrentRow) -> bool:
        old = self.rows.get(row.info_hash)
        if old == row:
            return False
        if old is not None and _sort_key(old) != _sort_key(row):
            self._unlink(old)
            old = None
        self.rows[row.info_hash] = row
        if old is None:
            key = _sort_key(row)
            bisect.insort(self.order, key)
            self.by_key[key] = row.info_hash
        return True

    def _unlink(self, row: TorrentRow) -> int:
        key = _sort_key(row)
        index = bisect.bisect_left(self.order, key)
        if index < len(self.order) and self.order[index] == key:
            del self.order[index]
        self.by_key.pop(key, None)
        return index

    def _drop(self, info_hash: InfoHash) -> None:
        row = self.rows.pop(info_hash)
        index = self._unlink(row)
        if self.selected == info_hash:
            if self.order:
                self.selected = self.by_key[self.order[min(index, len(self.order) - 1)]]
            else:
                self.selected = None

    # --- the log and the status line ---------------------------------------------------------

    def add_log(self, level: EventLevel, text: str, wall: float) -> None:
        """Add a line to the log pane (at the bottom; a scrolled-back view stays put)."""
        self.log.append(LogLine(clock_text(wall), level, text))
        if self.log_scroll:
            self.log_scroll = min(self.log_scroll + 1, len(self.log) - 1)
        self.dirty = True

    def say(self, text: str, level: EventLevel = EventLevel.INFO) -> None:
        """Show ``text`` on the status line."""
        if (text, level) != (self.message, self.message_level):
            self.message, self.message_level = text, level
            self.dirty = True

    # --- the list --------------------------------------------------------------------------

    def ordered(self, start: int, stop: int) -> list[TorrentRow]:
        """Rows ``start`` to ``stop`` (exclusive) in list order."""
        return [self.rows[self.by_key[key]] for key in self.order[start:stop]]

    def selected_index(self) -> int | None:
        """The selected row's place in the list."""
        row = self.rows.get(self.selected) if self.selected is not None else None
        if row is None:
            return None
        key = _sort_key(row)
        index = bisect.bisect_left(self.order, key)
        return index if index < len(self.order) and self.order[index] == key else None

    def selected_row(self) -> TorrentRow | None:
        """The selected torrent's row."""
        return self.rows.get(self.selected) if self.selected is not None else None

    def select_index(self, index: int) -> None:
        """Select the row at ``index`` (clamped)."""
        if not self.order:
            return
        index = max(0, min(index, len(self.order) - 1))
        chosen = self.by_key[self.order[index]]
        if chosen != self.selected:
            self.selected = chosen
            self.dirty = True

    def move(self, delta: int) -> None:
        """Move the selection ``delta`` rows down (negative: up)."""
        index = self.selected_index()
        self.select_index((0 if index is None else index) + delta)

    def fit_list(self, visible: int) -> None:
        """Scroll the list so the selected row is among the ``visible`` rows shown."""
        self.page_rows = max(1, visible)
        index = self.selected_index() or 0
        top = min(self.list_top, max(0, len(self.order) - self.page_rows))
        if index < top:
            top = index
        elif index >= top + self.page_rows:
            top = index - self.page_rows + 1
        self.list_top = max(0, top)
