"""A session's events as bus messages (``core/translate.py``): which message, in which order."""

from __future__ import annotations

import hashlib

from torviz.services.peer_agent.core.events import (
    BitfieldReceived,
    Closed,
    HandshakeDone,
    HaveReceived,
    PeerInfo,
    PeerInterestChanged,
    PieceCompleted,
    PiecesGivenBack,
    WorkNeeded,
)
from torviz.services.peer_agent.core.translate import NOTHING, Origin, store_piece, to_bus
from torviz.shared import bus
from torviz.shared.bitfield import Bitfield
from torviz.shared.types import InfoHash, PeerAddress, PeerId
from torviz.shared.wire.extension import ExtensionHandshake
from torviz.shared.wire.handshake import Reserved

INFO_HASH = InfoHash(hashlib.sha1(b"torrent").digest())
ADDRESS = PeerAddress("127.0.0.1", 6881)
ORIGIN = Origin(INFO_HASH, "pa1/3", ADDRESS, incoming=False)


def test_a_completed_piece_goes_to_storage_first_then_the_coordinator_hears_of_it() -> None:
    data = bytearray(b"x" * 16)
    out = to_bus(PieceCompleted(4, data), ORIGIN)
    assert out.to_storage is not None
    store, frame = out.to_storage
    assert store == bus.StorePiece(INFO_HASH, 4, ("pa1/3",))
    assert frame is data  # the buffer itself: no copy
    assert out.to_coordinator == (bus.PieceDownloaded(INFO_HASH, 4, "pa1/3"),)


def test_a_piece_continued_from_other_connections_names_each_blocks_sender() -> None:
    store = store_piece(INFO_HASH, 2, "pa1/3", ("pa1/1", "pa1/3", "pa1/1", "pa1/2"))
    assert store.contributors == ("pa1/1", "pa1/3", "pa1/2")
    assert store.block_senders == (0, 1, 0, 2)


def test_the_renamed_session_events_become_the_bus_messages_of_the_old_names() -> None:
    bits = Bitfield(8, [1, 5])
    assert to_bus(HaveReceived(7), ORIGIN).to_coordinator == (bus.PeerHave(INFO_HASH, "pa1/3", 7),)
    assert to_bus(BitfieldReceived(bits), ORIGIN).to_coordinator == (
        bus.PeerBitfield(INFO_HASH, "pa1/3", bits.to_bytes()),
    )
    assert to_bus(WorkNeeded(3), ORIGIN).to_coordinator == (bus.WorkWanted(INFO_HASH, "pa1/3", 3),)
    assert to_bus(PeerInterestChanged(True), ORIGIN).to_coordinator == (
        bus.PeerInterest(INFO_HASH, "pa1/3", True),
    )


def test_counts_and_lists_are_clipped_to_the_schema_bounds() -> None:
    (wanted,) = to_bus(WorkNeeded(bus.MAX_BATCH + 50), ORIGIN).to_coordinator
    assert isinstance(wanted, bus.WorkWanted)
    assert wanted.count == bus.MAX_BATCH
    pieces = tuple(range(bus.MAX_BATCH + 1))
    released = to_bus(PiecesGivenBack(pieces, "request_timeout"), ORIGIN).to_coordinator
    assert released == (
        bus.PiecesReleased(INFO_HASH, "pa1/3", pieces[: bus.MAX_BATCH]),
        bus.PiecesReleased(INFO_HASH, "pa1/3", pieces[bus.MAX_BATCH :]),
    )


def test_a_handshake_becomes_peer_connected_with_the_client_named() -> None:
    peer_id = PeerId(b"-LT2010-" + b"b" * 12)
    origin = Origin(INFO_HASH, "pa1/9", ADDRESS, incoming=True)
    event = HandshakeDone(peer_id, Reserved.build(fast=True, extension_protocol=False))
    (connected,) = to_bus(event, origin).to_coordinator
    assert isinstance(connected, bus.PeerConnected)
    assert (connected.peer, connected.address, connected.peer_id) == ("pa1/9", ADDRESS, peer_id)
    assert connected.incoming
    assert connected.fast_extension
    assert not connected.extension_protocol
    assert "libtorrent" in connected.client.lower()


def test_closing_and_the_peers_extension_handshake_send_nothing() -> None:
    assert to_bus(Closed("peer_closed", "bye"), ORIGIN) is NOTHING
    assert to_bus(PeerInfo(ExtensionHandshake()), ORIGIN) is NOTHING
