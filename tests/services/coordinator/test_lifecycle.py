"""A torrent's lifecycle is one table: every move the coordinator makes is in it, a move it
does not list raises, and no other module of the coordinator's core assigns a state."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

from torviz.services.coordinator.core import lifecycle
from torviz.services.coordinator.core.lifecycle import (
    TRANSITIONS,
    IllegalTransitionError,
    Move,
    advance,
    initial_state,
    next_state,
    start_move,
)
from torviz.shared.bus import TorrentState

CHECKING, DOWNLOADING, SEEDING = (
    TorrentState.CHECKING,
    TorrentState.DOWNLOADING,
    TorrentState.SEEDING,
)
PAUSED, ERROR = TorrentState.PAUSED, TorrentState.ERROR
METADATA = TorrentState.METADATA
CORE = Path(lifecycle.__file__).parent


@dataclass
class Subject:
    state: TorrentState


@pytest.mark.parametrize(
    ("state", "move", "after"),
    [
        (CHECKING, Move.OPENED_PARTIAL, DOWNLOADING),
        (CHECKING, Move.OPENED_COMPLETE, SEEDING),
        (SEEDING, Move.OPENED_PARTIAL, DOWNLOADING),  # a storage agent back with less
        (DOWNLOADING, Move.COMPLETED, SEEDING),
        (DOWNLOADING, Move.PAUSE, PAUSED),
        (PAUSED, Move.START, CHECKING),
        (PAUSED, Move.FAIL, ERROR),
        (ERROR, Move.START, CHECKING),
        (ERROR, Move.VERIFY, CHECKING),
        (SEEDING, Move.VERIFY, CHECKING),
        (DOWNLOADING, Move.REOPEN, CHECKING),
        (METADATA, Move.METADATA_FETCHED, CHECKING),
        (METADATA, Move.PAUSE, PAUSED),
        (METADATA, Move.FAIL, ERROR),
        (PAUSED, Move.START_MAGNET, METADATA),
        (ERROR, Move.START_MAGNET, METADATA),
    ],
)
def test_each_move_leads_where_the_table_says(
    state: TorrentState, move: Move, after: TorrentState
) -> None:
    subject = Subject(state)
    assert advance(subject, move) is after
    assert subject.state is after


@pytest.mark.parametrize(
    ("state", "move"),
    [
        (PAUSED, Move.PAUSE),
        (PAUSED, Move.VERIFY),
        (DOWNLOADING, Move.START),
        (CHECKING, Move.COMPLETED),
        (PAUSED, Move.OPENED_PARTIAL),
        (CHECKING, Move.REOPEN),
        (METADATA, Move.START),  # no info dictionary: nothing to open
        (METADATA, Move.VERIFY),
        (CHECKING, Move.METADATA_FETCHED),
        (PAUSED, Move.METADATA_FETCHED),
        (DOWNLOADING, Move.START_MAGNET),
    ],
)
def test_a_move_the_table_does_not_list_raises_and_changes_nothing(
    state: TorrentState, move: Move
) -> None:
    subject = Subject(state)
    with pytest.raises(IllegalTransitionError, match=move.value):
        advance(subject, move)
    assert subject.state is state


def test_every_move_is_in_the_table_and_every_state_reachable() -> None:
    assert set(TRANSITIONS) == set(Move)
    reached = {
        next_state(state, move) for move, (sources, _) in TRANSITIONS.items() for state in sources
    }
    # STOPPED is in the bus vocabulary, but no move of the coordinator's leads there.
    assert reached == set(TorrentState) - {TorrentState.STOPPED}


def test_a_magnet_torrent_is_created_and_started_in_the_metadata_state() -> None:
    assert initial_state(has_metainfo=False) is METADATA
    assert initial_state(has_metainfo=True) is CHECKING
    assert start_move(has_metainfo=False) is Move.START_MAGNET
    assert start_move(has_metainfo=True) is Move.START
    subject = Subject(PAUSED)
    assert advance(subject, start_move(has_metainfo=False)) is METADATA


def test_only_the_lifecycle_module_assigns_a_torrent_state() -> None:
    assigning: list[str] = []
    for path in sorted(CORE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else []
            targets += [node.target] if isinstance(node, ast.AugAssign | ast.AnnAssign) else []
            for target in targets:
                names = target.elts if isinstance(target, ast.Tuple) else [target]
                for name in names:
                    if isinstance(name, ast.Attribute) and name.attr == "state":
                        assigning.append(f"{path.name}:{name.lineno}")
    assert assigning and all(place.startswith("lifecycle.py:") for place in assigning), assigning
