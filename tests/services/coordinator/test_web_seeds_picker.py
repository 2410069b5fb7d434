"""The run picker a web seed gets (``PiecePicker.pick_run``): consecutive pieces from the first one
wanted, checked against a plain reference over random picker states."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from torviz.services.coordinator.core.picking import PiecePicker
from torviz.shared.bitfield import Bitfield

WEB = "web seed"


def reference_run(picker: PiecePicker, n: int, offered: set[int], count: int) -> list[int]:
    """The first piece nobody has, fetches or checks among ``offered``, and those after it."""
    busy = set(picker.have) | set(picker.checking) | set(picker.downloading)
    wanted = [p for p in range(n) if p not in busy and p in offered]
    if not wanted or count <= 0:
        return []
    run = [wanted[0]]
    while len(run) < count and run[-1] + 1 in offered and run[-1] + 1 not in busy:
        run.append(run[-1] + 1)
    return run


@st.composite
def picker_states(draw: st.DrawFn) -> tuple[PiecePicker, int, Bitfield, int]:
    n = draw(st.integers(1, 80))
    have = draw(st.sets(st.integers(0, n - 1)))
    picker = PiecePicker(n, Bitfield(n, have), random.Random(draw(st.integers(0, 9))))
    for peer in range(draw(st.integers(0, 3))):  # peers fetching some pieces
        bits = Bitfield(n, draw(st.sets(st.integers(0, n - 1))))
        picker.peer_joined(bits)
        picked = picker.pick(peer, bits, draw(st.integers(0, 10)))
        for piece in picked[: draw(st.integers(0, len(picked)))]:
            picker.piece_downloaded(piece, 0.0)  # checking
    offered = draw(st.one_of(st.just(set(range(n))), st.sets(st.integers(0, n - 1))))
    return picker, n, Bitfield(n, offered), draw(st.integers(0, 100))


@settings(max_examples=300, deadline=None)
@given(picker_states())
def test_pick_run_takes_the_first_wanted_run(state: tuple[PiecePicker, int, Bitfield, int]) -> None:
    picker, n, offered, count = state
    expected = reference_run(picker, n, set(offered), count)
    endgame = picker.in_endgame or not any(
        p not in set(picker.have) | set(picker.checking) | set(picker.downloading) for p in range(n)
    )
    fetching = set(picker.downloading)
    picked = picker.pick_run(WEB, offered, count)
    if expected:
        assert picked == expected
    elif endgame and count > 0:
        assert len(picked) <= 1  # one second copy of a piece another connection fetches
        assert set(picked) <= fetching & set(offered)
    else:
        assert picked == []
    assert all(WEB in picker.owners(piece) for piece in picked)


def test_a_run_stops_at_a_piece_taken_and_the_next_run_starts_after_it() -> None:
    picker = PiecePicker(10, Bitfield(10, [0]), random.Random(1))
    every = Bitfield.full(10)
    assert picker.pick_run("a", every, 3) == [1, 2, 3]
    picker.piece_downloaded(5, 0.0)
    assert picker.pick_run("b", every, 9) == [4]
    assert picker.pick_run("b", every, 9) == [6, 7, 8, 9]
    assert picker.pick_run("c", every, 9) == [1]  # endgame: one copy


def test_a_piece_it_spoilt_goes_to_others_unless_nobody_else_has_it() -> None:
    picker = PiecePicker(4, Bitfield(4), random.Random(1))
    every = Bitfield.full(4)
    picker.peer_joined(every)
    assert picker.pick_run(WEB, every, 1) == [0]
    picker.piece_downloaded(0, 0.0)
    picker.piece_failed(0, [WEB])
    assert picker.pick_run(WEB, every, 2) == [0, 1]  # nobody else has piece 0
    picker.release_peer(WEB)  # forgets its suspicion too: start again with a peer beside it
    picker.peer_joined(every)
    assert picker.pick_run(WEB, every, 1) == [0]
    picker.piece_downloaded(0, 0.0)
    picker.piece_failed(0, [WEB])
    assert picker.pick_run(WEB, every, 2) == [1, 2]
