"""A web seed that lacks a file: the session tells which pieces it can still serve, and an
``assign`` of nothing but pieces it cannot serve waits like an empty one (asking again at once
got the same pieces back, in a loop between the agent and the coordinator that spun both).
"""

from __future__ import annotations

from torviz.services.peer_agent.core.events import PiecesGivenBack, WorkNeeded
from torviz.services.peer_agent.core.web_seed import StopFetch
from torviz.shared.bitfield import Bitfield

from .test_web_seed import WALL, Harness, harness

IDLE = 5.0


def _lacking_b(h: Harness) -> None:
    """Assign every piece, then answer b.bin's request 404 (pieces 2, 3, 4 need b.bin)."""
    h.session.assign(range(5), h.now)
    first = h.session.next_requests(h.now)
    assert first[1].url.endswith("/b.bin")
    verdict = h.session.response_head(first[1].fetch_id, 404, {}, h.now, WALL)
    assert isinstance(verdict, StopFetch)
    assert h.given_back() == [PiecesGivenBack((2, 3, 4), "web_seed_file_missing")]
    for fetch in (first[0], first[3]):
        if fetch.url.endswith("/a.bin"):
            h.serve(fetch)
        else:
            h.session.body(fetch.fetch_id, b"", h.now)
    _forget(h)


def _forget(h: Harness) -> None:
    """Drop every event so far (taken from the session first)."""
    h.take()
    h.events.clear()


def test_servable_is_every_piece_until_a_file_is_missing() -> None:
    h = harness(idle_retry=IDLE)
    assert h.session.servable() == Bitfield.full(5)
    _lacking_b(h)
    assert h.session.servable() == Bitfield(5, (0, 1))


def test_an_assign_of_only_lacking_pieces_waits_like_an_empty_one() -> None:
    h = harness(idle_retry=IDLE)
    _lacking_b(h)
    h.session.next_requests(h.now)
    _forget(h)
    h.session.assign([3, 4], h.now)
    assert h.take() == [PiecesGivenBack((3, 4), "web_seed_file_missing")]  # no WorkNeeded
    assert h.session.next_deadline(h.now) == h.now + IDLE
    h.now += IDLE
    h.session.tick(h.now)
    assert any(isinstance(e, WorkNeeded) for e in h.take())


def test_an_assign_with_some_servable_pieces_asks_on() -> None:
    h = harness(idle_retry=IDLE)
    _lacking_b(h)
    h.session.next_requests(h.now)
    _forget(h)
    h.session.assign([0, 3], h.now)  # 0 was served already: re-assigned, it is fetched again
    assert PiecesGivenBack((3,), "web_seed_file_missing") in h.take()
    assert h.session.held == frozenset({0})
