"""Log lines about a torrent that a user wants to see in the daemon's events (``status``, the
terminal UI), for those that need more than one call: a tracker that starts failing or works
again.

Rules: only transitions are logged (a tracker failing on every announce is one line, and one
more when it works again), each with ``extra={"info_hash": ...}``; nothing per block or piece.
"""

from __future__ import annotations

import logging

from torviz.shared.bus import MAX_TRACKER_ROWS, TrackerState, TrackerStateChanged

from .torrent import Torrent

__all__ = ["tracker_changed"]

log = logging.getLogger(__name__)


def tracker_changed(torrent: Torrent, report: TrackerStateChanged) -> None:
    """Log a tracker URL of ``torrent`` that turned FAILED (with its error), or that works
    again after failing (announces in between do not count)."""
    failing = torrent.failing_trackers
    extra = {"info_hash": torrent.info_hash}
    if report.state is TrackerState.FAILED and report.url not in failing:
        if len(failing) < MAX_TRACKER_ROWS:
            failing.add(report.url)
        error = report.error or "no answer"
        log.warning("%s: tracker %s fails: %s", torrent.name, report.url, error, extra=extra)
    elif report.state is TrackerState.WORKING and report.url in failing:
        failing.discard(report.url)
        log.info("%s: tracker %s works again", torrent.name, report.url, extra=extra)
