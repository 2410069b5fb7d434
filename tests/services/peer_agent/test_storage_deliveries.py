"""Storage deliveries of the real agent process: the window, retries, and a storage restart.

The test plays the storage agent on a ROUTER (``Counterparts``), withholding or choosing each
``PieceStored``, and a fast fake seeder (``serving``) feeds the agent's one connection.
"""

from __future__ import annotations

import hashlib
import random
import time

from testing.peer_agent import Counterparts, StoredPiece
from torviz.services.peer_agent.core.deliveries import WINDOW
from torviz.shared.bus import (
    AssignPieces,
    ConnectPeer,
    Hello,
    PeerConnected,
    StorePiece,
    StoreRefusal,
    WorkWanted,
)
from torviz.shared.types import InfoHash, PeerAddress

from .conftest import attach_message, attached
from .fake_peers import piece_hashes, serving

PIECE = 32 * 1024
NUM_PIECES = 200
CONTENT = random.Random(7).randbytes(PIECE * NUM_PIECES)
INFO_HASH = InfoHash(hashlib.sha1(b"deliveries").digest())
OVERRUN = 40
"""Pieces a read already under way may complete past the window (a 1 MiB read)."""


class Picker:
    """Answers every ``WorkWanted`` of the one peer with the next pieces, in order."""

    def __init__(self, parts: Counterparts, peer: str) -> None:
        self.parts = parts
        self.peer = peer
        self.next = 0

    def pump(self, timeout: float) -> None:
        self.parts.pump(timeout)
        for want in self.parts.take_all(WorkWanted, lambda m: m.peer == self.peer):
            pieces = tuple(range(self.next, min(NUM_PIECES, self.next + want.count)))
            if pieces:
                self.parts.send(AssignPieces(INFO_HASH, self.peer, pieces))
                self.next += len(pieces)

    def until(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            self.pump(0.05)

    def quiet(self, period: float, timeout: float) -> None:
        """Pump until no piece arrived for ``period`` seconds."""
        deadline = time.monotonic() + timeout
        count, since = len(self.parts.pieces), time.monotonic()
        while time.monotonic() - since < period:
            assert time.monotonic() < deadline, "pieces kept arriving with a full window"
            self.pump(0.05)
            if len(self.parts.pieces) != count:
                count, since = len(self.parts.pieces), time.monotonic()


def distinct(pieces: list[StoredPiece]) -> list[int]:
    """Piece numbers in the order they first arrived."""
    return list(dict.fromkeys(p.piece for p in pieces))


def test_unanswered_pieces_fill_the_window_and_survive_a_storage_restart(
    counterparts: Counterparts, start_agent, fake_peer
) -> None:
    counterparts.ack_pieces = False  # the test answers each piece itself
    start_agent()
    attached(counterparts, attach_message(counterparts, INFO_HASH, PIECE, len(CONTENT)))
    seeder = fake_peer(serving(INFO_HASH, CONTENT, PIECE))
    counterparts.send(ConnectPeer(INFO_HASH, PeerAddress(seeder.host, seeder.port)))
    picker = Picker(counterparts, counterparts.expect(PeerConnected).peer)

    # Nothing is answered: the connection stops reading once the window is full.
    picker.until(lambda: len(counterparts.pieces) >= WINDOW, 20.0, "a full window")
    picker.quiet(0.5, 10.0)  # what was already on its way arrives
    held = len(counterparts.pieces)
    assert WINDOW <= held <= WINDOW + OVERRUN < NUM_PIECES
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        picker.pump(0.05)
    assert len(counterparts.pieces) == held, "the agent kept reading with a full window"

    # A passing refusal: the same piece comes again about a second later, the same bytes.
    first = counterparts.pieces[0]
    counterparts.answer_piece(first, StoreRefusal.TORRENT_CHECKING)
    refused_at = time.monotonic()
    picker.until(lambda: len(counterparts.pieces) > held, 5.0, "the refused piece again")
    again = counterparts.pieces[held]
    assert time.monotonic() - refused_at >= 0.8
    assert (again.piece, again.data) == (first.piece, first.data)
    unanswered = distinct(counterparts.pieces)
    assert len(unanswered) == held  # nothing new: the window is still full

    # The storage agent restarts: it lost every piece and knows nobody. The agent probes the
    # silent link, hears hello_first, says Hello and sends every unanswered piece, in order.
    counterparts.restart_storage()
    restarted_at = len(counterparts.storage_data)
    before_restart = len(counterparts.pieces)
    picker.until(
        lambda: len(counterparts.pieces) >= before_restart + held,
        15.0,
        "every unanswered piece again after the restart",
    )
    after = counterparts.storage_data[restarted_at:]
    hello = next(i for i, m in enumerate(after) if isinstance(m, Hello))
    resent = [m.piece for m in after[hello + 1 :] if isinstance(m, StorePiece)]
    assert resent == unanswered
    assert counterparts.storage_hellos == 2

    # Answered: the window frees and the rest of the torrent flows.
    for stored in counterparts.pieces[before_restart:]:
        counterparts.answer_piece(stored)
    counterparts.ack_pieces = True
    picker.until(
        lambda: len(distinct(counterparts.pieces)) == NUM_PIECES, 30.0, "every piece stored"
    )
    hashes = piece_hashes(CONTENT, PIECE)
    for stored in counterparts.pieces:
        assert stored.data is not None
        assert hashlib.sha1(stored.data).digest() == hashes[stored.piece], stored.piece
    assert not seeder.errors
