"""The daemon's log as a user reads it: the recent lines worth seeing, numbered, with their age.

Strategy: ``EventLog`` is a bounded ring of events (``MAX_EVENTS``; the oldest go first), each
with a sequence number counting from 1, the monotonic time it happened, its level, its text
and the torrent it is about. A watcher asks for the events after the last ``seq`` it saw
(``after``); a status report sends the whole ring (``recent``). Ages are relative to the
``now`` of the question, since clocks differ across hosts.

Rules: pure (the time is passed in); a text is one line (line breaks become spaces) of at most
``MAX_TEXT`` characters; recording never fails, whatever the text.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from torviz.shared.bus import MAX_EVENTS, MAX_TEXT, EventLevel, SessionEvent
from torviz.shared.types import InfoHash

__all__ = ["MAX_EVENTS", "EventLog", "one_line"]


def one_line(text: str) -> str:
    """``text`` as one line of at most ``MAX_TEXT`` characters (line breaks become spaces)."""
    return " ".join(text[: MAX_TEXT * 2].splitlines())[:MAX_TEXT]


@dataclass(frozen=True, slots=True)
class _Event:
    seq: int
    at: float
    level: EventLevel
    text: str
    info_hash: InfoHash | None


class EventLog:
    """A bounded ring of the daemon's events.

    Args:
        limit: events kept (the oldest are dropped first).
    """

    def __init__(self, limit: int = MAX_EVENTS) -> None:
        self._events: deque[_Event] = deque(maxlen=max(1, limit))
        self._seq = 0

    @property
    def last_seq(self) -> int:
        """The ``seq`` of the latest event (0: none yet)."""
        return self._seq

    def record(
        self, now: float, level: EventLevel, text: str, info_hash: InfoHash | None = None
    ) -> int:
        """Keep one event; returns its ``seq``.

        Args:
            now: when it happened (monotonic seconds).
            level: how much it matters.
            text: what happened (cut to one line).
            info_hash: the torrent it is about, if one.
        """
        self._seq += 1
        self._events.append(_Event(self._seq, now, level, one_line(text), info_hash))
        return self._seq

    def after(self, seq: int, now: float) -> tuple[SessionEvent, ...]:
        """The kept events whose ``seq`` is greater than ``seq``, oldest first, aged at ``now``.

        A ``seq`` greater than the latest (a watcher of a daemon that restarted) answers every
        kept event.
        """
        if seq > self._seq:
            seq = 0
        return tuple(
            SessionEvent(e.seq, max(0.0, now - e.at), e.level, e.text, e.info_hash)
            for e in self._events
            if e.seq > seq
        )

    def recent(self, now: float) -> tuple[SessionEvent, ...]:
        """Every kept event, oldest first, aged at ``now``."""
        return self.after(0, now)

    def __len__(self) -> int:
        return len(self._events)
