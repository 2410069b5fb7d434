"""A torrent's lifecycle: its states and the one table of moves between them.

Strategy: every change of ``Torrent.state`` is a ``Move`` looked up in ``TRANSITIONS``
(``advance``); a move the table does not list from the current state raises
``IllegalTransitionError``, so a state can never be reached by a path nobody wrote down. What each
move does around the state (files opened or closed, connections dropped, trackers told) is the
caller's (``coordinator.py``, ``swarm.py``); this module only says where a torrent may go:

    METADATA --METADATA_FETCHED--> CHECKING                 (a magnet link's info dictionary is in)
    CHECKING --OPENED_PARTIAL / OPENED_COMPLETE--> DOWNLOADING / SEEDING
    DOWNLOADING --COMPLETED--> SEEDING
    any but PAUSED --PAUSE--> PAUSED --START--> CHECKING   (files closed while paused)
    any --FAIL--> ERROR --START--> CHECKING                (the storage agent reopens the files)
    PAUSED / ERROR --START_MAGNET--> METADATA              (resumed with no info dictionary yet)
    any but PAUSED --VERIFY--> CHECKING                    (every piece hashed again)
    DOWNLOADING/SEEDING --REOPEN--> CHECKING               (the storage agent lost pieces)

Rules: a torrent is created CHECKING, or METADATA when added from a magnet link (``initial_state``);
a torrent without its info dictionary starts again with ``START_MAGNET``, never ``START``
(``start_move`` picks one); the moves between open states (a storage agent that came
back answering ``TorrentOpened`` again) are listed as such, not skipped.
"""

from __future__ import annotations

import enum
from typing import Protocol

from torviz.shared.bus import TorrentState

__all__ = [
    "OPEN_STATES",
    "TRANSITIONS",
    "IllegalTransitionError",
    "Move",
    "advance",
    "initial_state",
    "next_state",
    "start_move",
]

CHECKING, DOWNLOADING, SEEDING = (
    TorrentState.CHECKING,
    TorrentState.DOWNLOADING,
    TorrentState.SEEDING,
)
PAUSED, ERROR = TorrentState.PAUSED, TorrentState.ERROR
METADATA = TorrentState.METADATA

OPEN_STATES = (DOWNLOADING, SEEDING)
"""States in which the torrent's files are open and its swarm runs."""


class Move(enum.Enum):
    """What happened to a torrent, as far as its state goes."""

    START = "start"
    """Added, resumed or retried: the storage agent opens (and checks) the files."""
    START_MAGNET = "start_magnet"
    """Resumed or retried with no info dictionary yet: peers are asked for it again."""
    METADATA_FETCHED = "metadata_fetched"
    """A magnet link's info dictionary arrived and checked out: the files open as for a
    .torrent."""
    OPENED_PARTIAL = "opened_partial"
    """The storage agent opened the files; pieces are missing."""
    OPENED_COMPLETE = "opened_complete"
    """The storage agent opened the files; every piece is there."""
    COMPLETED = "completed"
    """The last missing piece was verified."""
    PAUSE = "pause"
    """Paused by the user: the files close."""
    FAIL = "fail"
    """The storage agent failed (or answered nonsense): the torrent stops in error."""
    VERIFY = "verify"
    """The user asked to hash every piece again."""
    REOPEN = "reopen"
    """The storage agent came back without pieces we counted: start again from what it has."""


TRANSITIONS: dict[Move, tuple[frozenset[TorrentState], TorrentState]] = {
    Move.START: (frozenset({CHECKING, PAUSED, ERROR}), CHECKING),
    Move.START_MAGNET: (frozenset({METADATA, PAUSED, ERROR}), METADATA),
    Move.METADATA_FETCHED: (frozenset({METADATA}), CHECKING),
    Move.OPENED_PARTIAL: (frozenset({CHECKING, DOWNLOADING, SEEDING}), DOWNLOADING),
    Move.OPENED_COMPLETE: (frozenset({CHECKING, DOWNLOADING, SEEDING}), SEEDING),
    Move.COMPLETED: (frozenset({DOWNLOADING, SEEDING}), SEEDING),
    Move.PAUSE: (frozenset({METADATA, CHECKING, DOWNLOADING, SEEDING, ERROR}), PAUSED),
    Move.FAIL: (frozenset(TorrentState), ERROR),
    Move.VERIFY: (frozenset({CHECKING, DOWNLOADING, SEEDING, ERROR}), CHECKING),
    Move.REOPEN: (frozenset({DOWNLOADING, SEEDING}), CHECKING),
}
"""Each move: the states it may start from, and the state it leads to."""


class IllegalTransitionError(Exception):
    """A move the table does not allow from the torrent's state (a bug in the caller)."""

    def __init__(self, state: TorrentState, move: Move) -> None:
        super().__init__(f"a torrent cannot {move.value} while {state.value}")
        self.state = state
        self.move = move


class HasState(Protocol):
    """Anything with a lifecycle state (a ``Torrent``)."""

    state: TorrentState


def initial_state(*, has_metainfo: bool) -> TorrentState:
    """The state a torrent is created in: CHECKING, or METADATA from a magnet link."""
    return CHECKING if has_metainfo else METADATA


def start_move(*, has_metainfo: bool) -> Move:
    """The move that starts (or resumes, or retries) a torrent: ``START`` opens its files,
    ``START_MAGNET`` fetches its info dictionary first."""
    return Move.START if has_metainfo else Move.START_MAGNET


def next_state(state: TorrentState, move: Move) -> TorrentState:
    """Where ``move`` leads from ``state``.

    Args:
        state: the current state.
        move: what happened.

    Returns:
        The new state.

    Raises:
        IllegalTransitionError: ``TRANSITIONS`` does not allow ``move`` from ``state``.
    """
    sources, target = TRANSITIONS[move]
    if state not in sources:
        raise IllegalTransitionError(state, move)
    return target


def advance(subject: HasState, move: Move) -> TorrentState:
    """Apply ``move`` to ``subject``'s state (the one place a torrent's state changes).

    Args:
        subject: the torrent.
        move: what happened.

    Returns:
        The new state.

    Raises:
        IllegalTransitionError: the move is not allowed from the current state.
    """
    subject.state = next_state(subject.state, move)
    return subject.state
