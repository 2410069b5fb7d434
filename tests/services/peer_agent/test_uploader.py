"""The uploader policy (``core/uploader.py``): what it holds, reads ahead and when it pauses."""

from __future__ import annotations

from torviz.services.peer_agent.core.uploader import UPLOAD_BACKLOG, UPLOAD_BUDGET, UploaderPolicy


def test_the_defaults_are_the_connections_limits() -> None:
    policy = UploaderPolicy()
    assert (policy.budget, policy.backlog) == (UPLOAD_BUDGET, UPLOAD_BACKLOG)
    assert policy.lookahead == 3  # the current piece and two read ahead


def test_it_holds_the_pieces_served_last_and_lets_the_oldest_go() -> None:
    policy = UploaderPolicy(held=2)
    for piece in (1, 2, 3):
        policy.keep(piece, bytearray([piece]))
    assert policy.held(1) is None
    assert policy.held(2) == bytearray([2])
    assert policy.held(3) == bytearray([3])
    policy.idle()
    assert policy.held(3) is None


def test_it_reads_ahead_the_next_requested_pieces_not_at_hand() -> None:
    policy = UploaderPolicy(read_ahead=2)
    policy.keep(6, bytearray(1))
    assert policy.to_read_ahead([4, 5, 6]) == [5]
    assert policy.to_read_ahead([4]) == []


def test_it_waits_while_the_backlog_is_full() -> None:
    policy = UploaderPolicy(backlog=100)
    assert not policy.must_wait(60, 39)
    assert policy.must_wait(60, 40)
    assert policy.must_wait(100, 0)
