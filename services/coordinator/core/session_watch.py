"""What changed in the session since a watcher last asked: the torrent rows a list shows, as
deltas (``WatchSession`` -> ``SessionChanges``), for the terminal UI's once-a-second poll.

Strategy: ``SessionWatch`` keeps the last row of each torrent with the revision at which it
changed, a revision counter bumped once per question that found any change, and tombstones
``(revision, info_hash)`` of the torrents removed. A watcher passes the revision of its last
answer (``since``) and gets the rows changed after it and the torrents removed after it. Rows
carry rounded rates (``status.torrent_row``), so an idle torrent's noise is no change.

Rules: pure. ``since`` 0, older than the oldest tombstone still kept (at most
``MAX_TORRENTS``) or than the first revision, or newer than the current revision (the watcher
talked to a daemon that has restarted since) gets a complete answer: every row, ``complete``
set, no removals. A
torrent removed and added again loses its tombstone, so a watcher never drops it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import NamedTuple

from torviz.shared.bus import MAX_TORRENTS, TorrentRow
from torviz.shared.types import InfoHash

__all__ = ["Changes", "SessionWatch"]


class Changes(NamedTuple):
    revision: int
    complete: bool
    rows: tuple[TorrentRow, ...]
    removed: tuple[InfoHash, ...]


class SessionWatch:
    """The rows last seen and when each changed (see the module comment).

    Args:
        max_tombstones: removals remembered (older ``since`` values get a complete answer).
        start: the first revision (a ``since`` below it gets a complete answer). The daemon
            starts at a random one, so that a watcher of its previous run, whose ``since`` is
            from another count, is told everything rather than a wrong delta.
    """

    def __init__(self, max_tombstones: int = MAX_TORRENTS, start: int = 0) -> None:
        self.revision = max(0, start)
        self._rows: dict[InfoHash, tuple[int, TorrentRow]] = {}
        self._tombstones: deque[tuple[int, InfoHash]] = deque()
        self._max_tombstones = max(1, max_tombstones)
        self._floor = self.revision
        """The newest revision of a tombstone dropped: a ``since`` before it cannot be
        answered with changes."""

    def changes(self, rows_now: Iterable[TorrentRow], since: int) -> Changes:
        """Compare ``rows_now`` (every torrent, now) with the rows kept, and answer ``since``.

        Returns:
            The current revision, whether the answer is complete, the rows changed after
            ``since`` (every row when complete) and the torrents removed after ``since``.
        """
        current = {row.info_hash: row for row in rows_now}
        changed = [
            row
            for key, row in current.items()
            if (kept := self._rows.get(key)) is None or kept[1] != row
        ]
        gone = [key for key in self._rows if key not in current]
        if changed or gone:
            self.revision += 1
            self._note(changed, gone)
        complete = since <= 0 or since > self.revision or since < self._floor
        if complete:
            return Changes(self.revision, True, tuple(current.values()), ())
        rows = tuple(row for key, row in current.items() if self._rows[key][0] > since)
        removed = tuple(key for revision, key in self._tombstones if revision > since)
        return Changes(self.revision, False, rows, removed)

    def _note(self, changed: list[TorrentRow], gone: list[InfoHash]) -> None:
        revision = self.revision
        back = {row.info_hash for row in changed if row.info_hash not in self._rows}
        if back and self._tombstones:  # removed and added again: no longer removed
            self._tombstones = deque(item for item in self._tombstones if item[1] not in back)
        for row in changed:
            self._rows[row.info_hash] = (revision, row)
        for key in gone:
            del self._rows[key]
            self._tombstones.append((revision, key))
        while len(self._tombstones) > self._max_tombstones:
            dropped, _ = self._tombstones.popleft()
            self._floor = max(self._floor, dropped)
