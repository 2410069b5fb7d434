"""The pure bookkeeping of pieces sent to a storage agent, on a fake clock."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torviz.services.peer_agent.core.deliveries import (
    MAX_ATTEMPTS,
    WINDOW,
    Deliveries,
    Verdict,
)
from torviz.shared.bus import PieceStored, StorePiece, StoreRefusal
from torviz.shared.types import InfoHash

IH = InfoHash(hashlib.sha1(b"deliveries").digest())
OTHER = InfoHash(hashlib.sha1(b"other").digest())


def send(deliveries: Deliveries, piece: int, now: float = 0.0, info_hash: InfoHash = IH) -> None:
    deliveries.sent(StorePiece(info_hash, piece, ("pa1/1",)), bytearray([piece % 256]), now)


def answer(
    piece: int, reason: StoreRefusal = StoreRefusal.NONE, info_hash: InfoHash = IH
) -> PieceStored:
    return PieceStored(info_hash, piece, reason)


def pieces(deliveries: Deliveries) -> list[int]:
    return [d.message.piece for d in deliveries.pending()]


def test_the_window_fills_and_an_answer_frees_a_place() -> None:
    deliveries = Deliveries()
    for piece in range(WINDOW - 1):
        send(deliveries, piece)
    assert not deliveries.full
    send(deliveries, WINDOW - 1)
    assert deliveries.full
    settled = deliveries.settle(answer(5), 1.0)
    assert settled.verdict is Verdict.DONE and settled.delivery is not None
    assert settled.delivery.message.piece == 5
    assert not deliveries.full and len(deliveries) == WINDOW - 1
    assert 5 not in pieces(deliveries)


def test_the_kept_buffer_is_the_one_sent() -> None:
    deliveries = Deliveries()
    data = bytearray(b"piece bytes")
    kept = deliveries.sent(StorePiece(IH, 3, ()), data, 0.0)
    assert kept.data is data


def test_an_answer_for_nothing_in_flight_is_ignored() -> None:
    deliveries = Deliveries()
    send(deliveries, 1)
    assert deliveries.settle(answer(2), 0.0).verdict is Verdict.UNKNOWN
    assert deliveries.settle(answer(1, info_hash=OTHER), 0.0).verdict is Verdict.UNKNOWN
    assert deliveries.settle(answer(1), 0.0).verdict is Verdict.DONE
    assert deliveries.settle(answer(1), 0.0).verdict is Verdict.UNKNOWN  # a duplicate answer
    assert len(deliveries) == 0


def test_two_copies_of_a_piece_take_one_answer_each() -> None:
    deliveries = Deliveries()
    send(deliveries, 7)
    send(deliveries, 7)
    assert deliveries.settle(answer(7), 0.0).verdict is Verdict.DONE
    assert len(deliveries) == 1
    assert deliveries.settle(answer(7), 0.0).verdict is Verdict.DONE
    assert len(deliveries) == 0


def test_a_passing_refusal_is_sent_again_after_a_second() -> None:
    deliveries = Deliveries()
    send(deliveries, 4)
    send(deliveries, 5)
    settled = deliveries.settle(answer(4, StoreRefusal.TORRENT_CHECKING), 10.0)
    assert settled.verdict is Verdict.RETRY
    assert deliveries.due(10.5) == []
    assert deliveries.next_deadline() == 11.0
    again = deliveries.due(11.0)
    assert [d.message.piece for d in again] == [4]
    assert again[0].attempts == 2 and again[0].sent_at == 11.0
    assert deliveries.due(20.0) == []  # in flight again: due only after another refusal
    assert len(deliveries) == 2  # still kept: the window counts it


def test_a_piece_refused_while_waiting_takes_no_answer_meant_for_another_copy() -> None:
    deliveries = Deliveries()
    send(deliveries, 9)
    deliveries.settle(answer(9, StoreRefusal.UNKNOWN_TORRENT), 0.0)
    # Nothing of piece 9 is in flight now: a stray answer does not settle the waiting one.
    assert deliveries.settle(answer(9), 0.5).verdict is Verdict.UNKNOWN
    assert len(deliveries) == 1


@pytest.mark.parametrize(
    "reason",
    [StoreRefusal.TORRENT_CHECKING, StoreRefusal.UNKNOWN_TORRENT, StoreRefusal.AGENT_STOPPING],
)
def test_passing_refusals_stop_after_the_last_attempt(reason: StoreRefusal) -> None:
    deliveries = Deliveries()
    send(deliveries, 0)
    now = 0.0
    for attempt in range(1, MAX_ATTEMPTS):
        assert deliveries.settle(answer(0, reason), now).verdict is Verdict.RETRY
        now += 1.0
        (again,) = deliveries.due(now)
        assert again.attempts == attempt + 1
    settled = deliveries.settle(answer(0, reason), now)
    assert settled.verdict is Verdict.GIVEN_UP
    assert settled.delivery is not None and settled.delivery.attempts == MAX_ATTEMPTS
    assert len(deliveries) == 0


@pytest.mark.parametrize(
    "reason",
    [
        StoreRefusal.WRITE_FAILED,
        StoreRefusal.BAD_PIECE_LENGTH,
        StoreRefusal.TORRENT_FAILED,
        StoreRefusal.UNKNOWN,  # a code this build does not know: dropped, never retried
    ],
)
def test_other_refusals_drop_the_piece(reason: StoreRefusal) -> None:
    deliveries = Deliveries()
    send(deliveries, 2)
    assert deliveries.settle(answer(2, reason), 0.0).verdict is Verdict.REFUSED
    assert len(deliveries) == 0


def test_a_restart_sends_everything_again_in_order_once() -> None:
    deliveries = Deliveries()
    for piece in (3, 1, 2):
        send(deliveries, piece)
    deliveries.settle(answer(1, StoreRefusal.TORRENT_CHECKING), 0.0)  # waiting for its retry
    resend = deliveries.restarted(5.0)
    assert resend is not None
    assert [d.message.piece for d in resend] == [3, 1, 2]
    assert all(d.retry_at is None for d in resend)
    assert all(d.attempts == 1 for d in resend)  # a lost send is no refusal
    # Every message sent before the new Hello is answered hello_first: echoes, ignored.
    assert deliveries.restarted(5.1) is None
    assert deliveries.restarted(6.9) is None
    assert deliveries.due(100.0) == []
    # Welcomed: the next hello_first is a new restart.
    deliveries.welcomed()
    assert deliveries.restarted(7.0) is not None
    # Not welcomed (that Hello was lost too): another try after the interval.
    assert deliveries.restarted(8.0) is None
    assert deliveries.restarted(9.0) is not None


def test_unanswered_pieces_expire() -> None:
    deliveries = Deliveries(answer_timeout=60.0)
    send(deliveries, 0, now=0.0)
    send(deliveries, 1, now=30.0)
    assert deliveries.expired(59.0) == []
    assert [d.message.piece for d in deliveries.expired(60.0)] == [0]
    assert pieces(deliveries) == [1]


def test_a_silent_link_with_pieces_waiting_is_probed() -> None:
    deliveries = Deliveries(probe_interval=2.0)
    assert not deliveries.probe_due(100.0)  # nothing waits
    assert deliveries.next_deadline() is None
    send(deliveries, 0, now=100.0)
    assert not deliveries.probe_due(101.0)
    assert deliveries.probe_due(102.0)
    assert not deliveries.probe_due(103.0)  # the probe counts: next one 2 s later
    assert deliveries.probe_due(104.0)
    deliveries.heard(105.0)
    assert not deliveries.probe_due(106.0)
    assert deliveries.next_deadline() == 107.0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["send", "ok", "retry", "refuse", "tick", "restart"]), st.integers(0, 5)
        ),
        max_size=80,
    )
)
def test_every_piece_sent_is_kept_until_settled(ops: list[tuple[str, int]]) -> None:
    """A model check: the kept pieces are exactly those sent and not yet dealt with."""
    deliveries = Deliveries(max_attempts=3)
    model: list[int] = []  # pieces kept, in send order (duplicates allowed)
    now = 0.0
    for op, piece in ops:
        now += 0.4
        if op == "send":
            send(deliveries, piece, now)
            model.append(piece)
        elif op in ("ok", "refuse", "retry"):
            reason = {
                "ok": StoreRefusal.NONE,
                "refuse": StoreRefusal.WRITE_FAILED,
                "retry": StoreRefusal.AGENT_STOPPING,
            }[op]
            settled = deliveries.settle(answer(piece, reason), now)
            if settled.verdict in (Verdict.DONE, Verdict.REFUSED, Verdict.GIVEN_UP):
                model.remove(piece)
            else:
                assert settled.verdict in (Verdict.RETRY, Verdict.UNKNOWN)
        elif op == "tick":
            for delivery in deliveries.due(now):
                assert delivery.attempts <= 3
        else:
            deliveries.restarted(now)
        assert sorted(pieces(deliveries)) == sorted(model)
        assert deliveries.full == (len(model) >= WINDOW)


def test_a_piece_that_keeps_meeting_restarts_is_given_up_in_the_end() -> None:
    deliveries = Deliveries(answer_timeout=120.0, rejoin_interval=2.0)
    send(deliveries, 4)  # sent at 0.0
    for now in (30.0, 60.0, 90.0):  # the storage agent crashes on it, again and again
        resend = deliveries.restarted(now)
        assert resend is not None and [d.message.piece for d in resend] == [4]
        deliveries.welcomed()
    assert deliveries.expired(119.0) == []
    assert [d.message.piece for d in deliveries.expired(120.0)] == [4]
    assert len(deliveries) == 0
