"""The coordinator's log lines into its event log (``core/event_log.py``), which ``status``
and the terminal UI show.

Strategy: ``EventHandler`` is a ``logging.Handler`` on the ``torviz`` logger of the
coordinator's process: every record of level INFO and up becomes one event, its text the
message (one line, cut to ``MAX_TEXT``), its torrent the record's ``info_hash`` when the call
gave one (``extra={"info_hash": ...}``). ``install`` puts it in place (the daemon does before
it restores the session, so the restored torrents are events; the actor when it starts, if
nobody did) and lowers the ``torviz`` logger to INFO if the configured level is higher, giving the
other handlers of the process that higher level, so what they print does not change.

Rules: the INFO lines of the runtime's plumbing (``torviz.shared.runtime``: each command's
control connection welcomed, actors started) are left out, or every ``status`` would be an
event; its warnings and errors are kept. A handler never raises and never logs; it only
appends to the ring, which the actor's greenlet reads (greenlets do not preempt each other in
between).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from torviz.shared.bus import EventLevel
from torviz.shared.types import InfoHash

from .core.event_log import EventLog

__all__ = ["EventHandler", "install", "uninstall"]

LOGGER = "torviz"
PLUMBING = "torviz.shared.runtime"
"""Loggers whose INFO lines are not events (see the module comment)."""


def _level(number: int) -> EventLevel:
    if number >= logging.ERROR:
        return EventLevel.ERROR
    if number >= logging.WARNING:
        return EventLevel.WARNING
    return EventLevel.INFO


class EventHandler(logging.Handler):
    """Feeds ``events`` with the records of level INFO and up.

    Args:
        events: the coordinator's event log.
        clock: monotonic seconds (``time.monotonic``; tests pass their own).
    """

    def __init__(self, events: EventLog, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(logging.INFO)
        self.events = events
        self.clock = clock
        self.restore: tuple[int, list[tuple[logging.Handler, int]]] = (logging.NOTSET, [])
        """The ``torviz`` logger's own level and the other handlers' levels before
        ``install`` (``uninstall`` puts them back)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Leave out the plumbing's INFO lines."""
        if record.levelno < logging.WARNING and (
            record.name == PLUMBING or record.name.startswith(PLUMBING + ".")
        ):
            return False
        return bool(super().filter(record))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            info_hash = getattr(record, "info_hash", None)
            self.events.record(
                self.clock(),
                _level(record.levelno),
                text,
                info_hash if isinstance(info_hash, InfoHash) else None,
            )
        except Exception:  # a bad log call must not break its caller
            self.handleError(record)


def install(events: EventLog, clock: Callable[[], float] = time.monotonic) -> EventHandler | None:
    """Put an ``EventHandler`` on the ``torviz`` logger (see the module comment).

    Returns:
        The handler, for ``uninstall``; None when one already feeds ``events`` (the daemon
        installs it before it restores the session, the actor when it starts: once is
        enough, and whoever installed it takes it off).
    """
    logger = logging.getLogger(LOGGER)
    if any(isinstance(h, EventHandler) and h.events is events for h in logger.handlers):
        return None
    handler = EventHandler(events, clock)
    configured = logger.getEffectiveLevel()
    changed: list[tuple[logging.Handler, int]] = []
    handler.restore = (logger.level, changed)
    if configured > logging.INFO:
        for other in logging.getLogger().handlers:
            if other.level < configured:
                changed.append((other, other.level))
                other.setLevel(configured)
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return handler


def uninstall(handler: EventHandler) -> None:
    """Take ``handler`` off the ``torviz`` logger and put the levels back."""
    logger = logging.getLogger(LOGGER)
    logger.removeHandler(handler)
    level, changed = handler.restore
    logger.setLevel(level)
    for other, before in changed:
        other.setLevel(before)
