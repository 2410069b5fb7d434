"""The reconnect rule of a storage link, on a fake clock: a link that hears nothing at all
for ``reconnect_after`` seconds while pieces wait is opened again and every piece sent again."""

from __future__ import annotations

import hashlib

import pytest

from torviz.services.peer_agent.core.deliveries import (
    ANSWER_TIMEOUT,
    PROBE_INTERVAL,
    RECONNECT_AFTER,
    Deliveries,
)
from torviz.shared.bus import PieceStored, StorePiece, StoreRefusal
from torviz.shared.types import InfoHash

IH = InfoHash(hashlib.sha1(b"reconnect").digest())


def send(deliveries: Deliveries, piece: int, now: float) -> None:
    deliveries.sent(StorePiece(IH, piece, ("pa1/1",)), bytearray([piece]), now)


def pieces(kept: list | None) -> list[int] | None:  # type: ignore[type-arg]
    return None if kept is None else [d.message.piece for d in kept]


def test_the_limit_is_a_few_probes_and_well_under_the_answer_timeout() -> None:
    assert 3 * PROBE_INTERVAL <= RECONNECT_AFTER <= ANSWER_TIMEOUT / 4
    with pytest.raises(ValueError, match="probed before"):
        Deliveries(probe_interval=2.0, reconnect_after=2.0)


def test_a_silent_link_with_pieces_waiting_is_opened_again_with_every_piece() -> None:
    deliveries = Deliveries(probe_interval=2.0, reconnect_after=10.0)
    assert pieces(deliveries.reconnect_due(1000.0)) is None  # nothing waits: never
    send(deliveries, 1, 100.0)
    send(deliveries, 2, 101.0)
    deliveries.settle(
        PieceStored(IH, 2, StoreRefusal.TORRENT_CHECKING), 101.5
    )  # heard; 2 retries later
    assert [d.message.piece for d in deliveries.due(103.0)] == [2]  # sent again: no answer
    # Probes go out and nobody answers them.
    probes = [now for now in range(102, 112) if deliveries.probe_due(float(now))]
    assert probes == [104, 106, 108, 110]
    assert deliveries.next_deadline() == 111.5
    assert pieces(deliveries.reconnect_due(111.4)) is None
    assert pieces(deliveries.reconnect_due(111.5)) == [1, 2]  # the refused one too, in order
    # Counted afresh: the new link gets its own silence before the next reconnect.
    assert pieces(deliveries.reconnect_due(115.0)) is None
    assert pieces(deliveries.reconnect_due(121.5)) == [1, 2]


def test_anything_heard_keeps_the_link() -> None:
    deliveries = Deliveries(probe_interval=2.0, reconnect_after=10.0)
    send(deliveries, 1, 0.0)
    send(deliveries, 2, 0.0)
    for now in (2.0, 4.0, 6.0, 8.0):
        assert deliveries.probe_due(now)  # probes alone do not count as heard
    deliveries.heard(9.0)  # the storage agent answered a probe (a Heartbeat)
    assert pieces(deliveries.reconnect_due(18.9)) is None
    deliveries.settle(PieceStored(IH, 1, StoreRefusal.NONE), 18.0)  # an answer
    assert pieces(deliveries.reconnect_due(27.9)) is None
    assert pieces(deliveries.reconnect_due(28.0)) == [2]


def test_a_reconnect_resends_without_counting_attempts_and_pieces_still_expire() -> None:
    deliveries = Deliveries(probe_interval=2.0, reconnect_after=10.0, answer_timeout=25.0)
    send(deliveries, 1, 0.0)
    [delivery] = deliveries.reconnect_due(10.0) or []
    assert (delivery.attempts, delivery.sent_at) == (1, 0.0)
    assert deliveries.reconnect_due(20.0) is not None
    assert [d.message.piece for d in deliveries.expired(25.0)] == [1]  # gone for good
    assert deliveries.reconnect_due(40.0) is None and deliveries.next_deadline() is None


def test_hello_first_answers_just_after_a_reconnect_are_echoes_until_welcomed() -> None:
    deliveries = Deliveries(probe_interval=2.0, reconnect_after=10.0, rejoin_interval=2.0)
    send(deliveries, 1, 0.0)
    assert deliveries.reconnect_due(10.0) is not None
    assert deliveries.restarted(10.5) is None  # what the old socket sent, answered late
    deliveries.welcomed()
    assert pieces(deliveries.restarted(11.0)) == [1]  # a real restart after the welcome
