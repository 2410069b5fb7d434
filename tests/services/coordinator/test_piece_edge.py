"""Piece numbers from agents become a ``PieceIndex`` where they enter the coordinator: a number
outside the torrent is dropped there, once, with a warning naming it; the swarm never sees it."""

from __future__ import annotations

import logging

import pytest

from torviz.services.coordinator.core import Coordinator
from torviz.shared.bitfield import Bitfield
from torviz.shared.bus import (
    BroadcastHave,
    CorruptBlocksTraced,
    Message,
    PeerHave,
    PieceDownloaded,
    PieceRejected,
    PieceVerified,
)
from torviz.shared.types import InfoHash

from .test_core import NUM_PIECES, PA1, STORAGE, connect, full_core, opened


def _events(info_hash: InfoHash, piece: int) -> list[tuple[bytes, Message]]:
    return [
        (PA1, PeerHave(info_hash, "pa1/1", piece)),
        (PA1, PieceDownloaded(info_hash, piece, "pa1/1")),
        (STORAGE, PieceVerified(info_hash, piece)),
        (STORAGE, PieceRejected(info_hash, piece, ("pa1/1",))),
        (STORAGE, CorruptBlocksTraced(info_hash, piece, ("pa1/1",), ())),
    ]


@pytest.fixture
def core() -> Coordinator:
    return full_core()


@pytest.mark.parametrize(
    "index", range(5), ids=lambda i: ["have", "downloaded", "verified", "rejected", "traced"][i]
)
def test_a_piece_outside_the_torrent_is_dropped_where_it_enters(
    core: Coordinator, index: int, caplog: pytest.LogCaptureFixture
) -> None:
    info_hash = opened(core)
    connect(core, info_hash, PA1, "pa1/1", 2, Bitfield(NUM_PIECES, [0]))
    core.take_outbox()
    sender, message = _events(info_hash, NUM_PIECES)[index]
    with caplog.at_level(logging.WARNING, logger="torviz.services.coordinator.core"):
        core.handle(sender, message, 1.0)
    assert (
        f"file.bin: {type(message).__name__} dropped: piece {NUM_PIECES} does not exist "
        f"(the torrent has {NUM_PIECES} pieces, 0..{NUM_PIECES - 1})"
    ) in caplog.text
    assert core.take_outbox() == []  # nothing cancelled, broadcast, banned or assigned
    status = core.status(0.0).torrents[0]
    assert (status.pieces_verified, status.peers) == (0, 1)


def test_the_last_piece_passes_the_edge(core: Coordinator) -> None:
    info_hash = opened(core)
    core.handle(STORAGE, PieceVerified(info_hash, NUM_PIECES - 1), 1.0)
    have = [m for _, m in core.take_outbox() if isinstance(m, BroadcastHave)]
    assert have and {m.piece for m in have} == {NUM_PIECES - 1}
    assert core.status(0.0).torrents[0].pieces_verified == 1
