"""A session's events as bus messages (``core/translate.py``): which message, in which order."""

from __future__ import annotations

import hashlib

import pytest

from torviz.services.peer_agent.core.events import (
    BitfieldReceived,
    Closed,
    HandshakeDone,
    HaveReceived,
    MetadataPieceArrived,
    MetadataRequestRejected,
    PeerInfo,
    PeerInterestChanged,
    PexArrived,
    PieceCompleted,
    PiecesGivenBack,
    WorkNeeded,
)
from torviz.services.peer_agent.core.translate import (
    MAX_METADATA_TOTAL_SIZE,
    NOTHING,
    Origin,
    store_piece,
    to_bus,
)
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


def test_closing_sends_nothing() -> None:
    assert to_bus(Closed("peer_closed", "bye"), ORIGIN) is NOTHING


def test_the_peers_extension_handshake_becomes_peer_extensions() -> None:
    ext = ExtensionHandshake(
        m={"ut_metadata": 3, "ut_pex": 0, "lt_donthave": 7},
        v="libtorrent/2.1.1",
        p=51413,
        metadata_size=31_234,
    )
    assert to_bus(PeerInfo(ext), ORIGIN).to_coordinator == (
        bus.PeerExtensions(INFO_HASH, "pa1/3", "libtorrent/2.1.1", 51413, True, False, 31_234),
    )
    (bare,) = to_bus(PeerInfo(ExtensionHandshake()), ORIGIN).to_coordinator
    assert bare == bus.PeerExtensions(INFO_HASH, "pa1/3", "", 0, False, False, 0)


def test_a_hostile_extension_handshake_is_bounded_to_the_schema() -> None:
    ext = ExtensionHandshake(
        m={"ut_pex": 1}, v="\x1b[2Jevil\n" + "x" * 1000, p=0, metadata_size=2**40
    )
    (out,) = to_bus(PeerInfo(ext), ORIGIN).to_coordinator
    assert isinstance(out, bus.PeerExtensions)
    assert out.version.startswith("[2Jevilx") and len(out.version) == bus.MAX_NAME
    # A size past the bus's range is clamped, not hidden: the coordinator must see it is too
    # large (and drop the peer), not take it for a peer without metadata.
    assert out.metadata_size == MAX_METADATA_TOTAL_SIZE
    assert (out.listen_port, out.ut_pex, out.ut_metadata) == (0, True, False)
    bus.encode_frames(out)  # within every bound of the schema
    (negative,) = to_bus(PeerInfo(ExtensionHandshake(metadata_size=-5)), ORIGIN).to_coordinator
    assert isinstance(negative, bus.PeerExtensions) and negative.metadata_size == 0


def test_metadata_pieces_and_rejects_go_to_the_coordinator() -> None:
    data = b"d" * 16384
    out = to_bus(MetadataPieceArrived(1, 40_000, data), ORIGIN)
    assert out.to_coordinator == (bus.MetadataPieceReceived(INFO_HASH, "pa1/3", 1, 40_000, data),)
    assert not out.refused
    rejected = to_bus(MetadataRequestRejected(2), ORIGIN).to_coordinator
    assert rejected == (bus.MetadataRejected(INFO_HASH, "pa1/3", 2),)


@pytest.mark.parametrize(
    ("event", "why"),
    [
        (MetadataPieceArrived(0, 0, b"x"), "total_size 0"),
        (MetadataPieceArrived(0, 2**31, b"x"), "total_size 2147483648"),
        (MetadataPieceArrived(0, 100, b""), "0 bytes"),
        (MetadataPieceArrived(0, 10**6, b"x" * 16385), "16385 bytes"),
        (MetadataPieceArrived(1024, 2**31 - 1, b"x"), "piece 1024"),
        (MetadataPieceArrived(-1, 100, b"x"), "piece -1"),
        (MetadataRequestRejected(5000), "piece 5000"),
    ],
)
def test_metadata_messages_the_bus_cannot_carry_are_refused_not_sent(
    event: MetadataPieceArrived | MetadataRequestRejected, why: str
) -> None:
    out = to_bus(event, ORIGIN)
    assert out.to_coordinator == () and out.to_storage is None
    assert why in out.refused


def test_pex_is_clipped_to_the_schema_bounds() -> None:
    added = tuple((PeerAddress(f"10.0.{i // 256}.{i % 256}", 6881), 0x1FF) for i in range(150))
    dropped = tuple(PeerAddress("::1", 1000 + i) for i in range(120))
    (out,) = to_bus(PexArrived(added, dropped), ORIGIN).to_coordinator
    assert isinstance(out, bus.PexReceived)
    assert len(out.added) == bus.MAX_PEX_PEERS == len(out.dropped)
    assert out.added[0] == bus.PexPeer(PeerAddress("10.0.0.0", 6881), 0xFF)
    assert out.dropped == dropped[: bus.MAX_PEX_PEERS]
    bus.encode_frames(out)
    (empty,) = to_bus(PexArrived((), ()), ORIGIN).to_coordinator
    assert empty == bus.PexReceived(INFO_HASH, "pa1/3", (), ())
