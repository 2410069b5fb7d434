"""A magnet torrent in the real agent process: metadata mode, BEP 9 and BEP 11 through the bus,
and the upgrade in place when ``AttachTorrent`` brings the geometry.

The test plays the coordinator and the storage agent (``Counterparts``); the peer is a fake
peer thread on its own loopback address that speaks ``ut_metadata`` and ``ut_pex`` and serves
the content once asked for blocks; the interop test fetches the metadata, then the pieces, from
a libtorrent seeder over one connection.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from testing import Swarm, make_content, make_torrent, single_file_layout
from testing.peer_agent import Counterparts
from torviz.services.peer_agent.connection import MAX_EXTENSION_REPORTS
from torviz.shared.bencode import encode
from torviz.shared.bitfield import Bitfield
from torviz.shared.bus import (
    AssignPieces,
    AttachMagnet,
    AttachTorrent,
    BroadcastHave,
    ConnectPeer,
    MetadataPieceReceived,
    MetadataRejected,
    PeerBitfield,
    PeerConnected,
    PeerConnectFailed,
    PeerDisconnected,
    PeerExtensions,
    PexPeer,
    PexReceived,
    RequestMetadata,
    SendPex,
)
from torviz.shared.metainfo import parse_metainfo
from torviz.shared.types import InfoHash, PeerAddress
from torviz.shared.wire import codec
from torviz.shared.wire import messages as wire
from torviz.shared.wire.extension import (
    ExtensionHandshake,
    decode_extension_handshake,
    encode_extension_handshake,
)
from torviz.shared.wire.metadata import (
    METADATA_PIECE_SIZE,
    MetadataData,
    MetadataReject,
    MetadataRequest,
    decode_metadata_message,
    encode_metadata_message,
    serve_metadata_request,
)
from torviz.shared.wire.pex import PexMessage, decode_pex, encode_pex

from .conftest import OUR_PEER_ID, listen_address
from .fake_peers import PeerLink, greet
from .seeding import RawPeer

PIECE = 16 * 1024
CONTENT = bytes(range(256)) * 200 + b"tail"  # 51,204 bytes: 4 pieces, the last one short
NUM_PIECES = 4
PIECE_HASHES = b"".join(
    hashlib.sha1(CONTENT[i : i + PIECE]).digest() for i in range(0, len(CONTENT), PIECE)
)
# Padded past 16 KiB so the metadata comes in two pieces.
INFO = encode(
    {
        b"length": len(CONTENT),
        b"name": b"magnet.bin",
        b"piece length": PIECE,
        b"pieces": PIECE_HASHES,
        b"x-padding": b"\0" * 20_000,
    }
)
INFO_HASH = InfoHash(hashlib.sha1(INFO).digest())
PEER_UT_METADATA, PEER_UT_PEX = 3, 4  # the ids the fake peer receives them under
KEPT = Bitfield(NUM_PIECES, [0, 2])  # the peer's bitfield, sent while we know no geometry
PEX_FROM_PEER = PexMessage(
    added=(PeerAddress("10.1.2.3", 6881), PeerAddress("10.1.2.4", 51413)),
    added_flags=(0x02, 0x10),
    dropped=(PeerAddress("10.9.9.9", 1),),
)


@dataclass
class MetadataPeer:
    """What the fake peer saw, and a way to send from the test thread (one writer at a time)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    ours: ExtensionHandshake | None = None
    """The agent's extension handshake."""
    metadata_requests: list[int] = field(default_factory=list)
    pex: list[PexMessage] = field(default_factory=list)
    requests: list[wire.Request] = field(default_factory=list)
    metadata_answers: list[MetadataData | MetadataReject] = field(default_factory=list)
    link: PeerLink | None = None

    def send(self, *items: wire.Message) -> None:
        assert self.link is not None
        with self.lock:
            self.link.send(*items)

    def send_ours(self, name: str, payload: bytes) -> None:
        """An extended message under the id the agent gave ``name``."""
        assert self.ours is not None
        ext_id = self.ours.extension_id(name)
        assert ext_id is not None, f"the agent does not offer {name}: {self.ours}"
        self.send(wire.Extended(ext_id, payload))


def metadata_peer(state: MetadataPeer) -> Callable[[PeerLink], None]:
    def behaviour(link: PeerLink) -> None:
        greet(link, INFO_HASH)
        state.link = link
        handshake = ExtensionHandshake(
            m={"ut_metadata": PEER_UT_METADATA, "ut_pex": PEER_UT_PEX},
            v="\x1bFake/1.0",
            p=51413,
            metadata_size=len(INFO),
        )
        state.send(
            wire.Extended(0, encode_extension_handshake(handshake)), wire.Bitfield(KEPT.to_bytes())
        )
        for message in link.messages():
            link.log.append(message)
            match message:
                case wire.Extended(0, payload):
                    state.ours = decode_extension_handshake(payload)
                case wire.Extended(ext_id, payload) if ext_id == PEER_UT_METADATA:
                    decoded = decode_metadata_message(payload)
                    if isinstance(decoded, MetadataRequest):
                        state.metadata_requests.append(decoded.piece)
                        answer = serve_metadata_request(INFO, decoded.piece)
                        state.send_ours("ut_metadata", encode_metadata_message(answer))
                    elif isinstance(decoded, MetadataData | MetadataReject):
                        state.metadata_answers.append(decoded)
                case wire.Extended(ext_id, payload) if ext_id == PEER_UT_PEX:
                    state.pex.append(decode_pex(payload).message)
                case wire.Interested():
                    state.send(wire.Unchoke())
                case wire.Request(piece, offset, length):
                    state.requests.append(message)
                    block = CONTENT[piece * PIECE + offset :][:length]
                    with state.lock:
                        link.send(codec.encode_piece_header(piece, offset, len(block)) + block)

    return behaviour


def extended(raw: RawPeer) -> list[wire.Extended]:
    return [m for m in raw.received if isinstance(m, wire.Extended)]


def wait_for(parts: Counterparts, what: str, condition: Callable[[], bool]) -> None:
    parts.wait_until(condition, 10.0, what)


def magnet_attached(parts: Counterparts) -> None:
    """``AttachMagnet``, then a dial to a closed port to learn it was handled (see
    ``conftest.attached``): ``connection_refused``, not ``unknown_torrent``."""
    parts.send(AttachMagnet(INFO_HASH, OUR_PEER_ID))
    closed = PeerAddress("127.0.0.1", 9)
    parts.send(ConnectPeer(INFO_HASH, closed))
    failed = parts.expect(PeerConnectFailed, lambda m: m.address == closed)
    assert failed.reason == "connection_refused", failed


def attach_torrent(parts: Counterparts) -> AttachTorrent:
    return AttachTorrent(
        info_hash=INFO_HASH,
        piece_length=PIECE,
        total_length=len(CONTENT),
        num_pieces=NUM_PIECES,
        peer_id=OUR_PEER_ID,
        have=Bitfield(NUM_PIECES).to_bytes(),
        private=False,
        storage_endpoint=parts.data_endpoint,
        storage_public_key="",
        info=INFO,
        pex=True,
    )


def test_a_magnet_connection_fetches_metadata_exchanges_peers_and_upgrades_in_place(
    counterparts: Counterparts, start_agent, fake_peer
) -> None:
    start_agent()
    magnet_attached(counterparts)
    state = MetadataPeer()
    peer = fake_peer(metadata_peer(state))
    counterparts.send(ConnectPeer(INFO_HASH, PeerAddress(peer.host, peer.port)))
    key = counterparts.expect(PeerConnected).peer

    extensions = counterparts.expect(PeerExtensions)
    assert extensions == PeerExtensions(
        INFO_HASH, key, "Fake/1.0", 51413, ut_metadata=True, ut_pex=True, metadata_size=len(INFO)
    )
    wait_for(counterparts, "the agent's extension handshake", lambda: state.ours is not None)
    assert state.ours is not None and state.ours.metadata_size is None  # none to give yet

    # Nothing about pieces before the geometry: the bitfield is kept, assignments ignored.
    counterparts.send(AssignPieces(INFO_HASH, key, (0, 1)))
    counterparts.send(BroadcastHave(INFO_HASH, 3))
    counterparts.send(RequestMetadata(INFO_HASH, key, (0, 1)))
    got = sorted(
        (counterparts.expect(MetadataPieceReceived) for _ in range(2)), key=lambda m: m.piece
    )
    assert [(m.peer, m.piece, m.total_size) for m in got] == [
        (key, 0, len(INFO)),
        (key, 1, len(INFO)),
    ]
    assert got[0].data + got[1].data == INFO
    assert sorted(state.metadata_requests) == [0, 1]
    assert not counterparts.take_all(PeerBitfield)
    assert not state.requests and not any(isinstance(m, wire.Have) for m in peer.links[0].log)

    # Metadata mode: the agent has no info dictionary to give, so it rejects.
    state.send_ours("ut_metadata", encode_metadata_message(MetadataRequest(0)))
    wait_for(counterparts, "a reject", lambda: bool(state.metadata_answers))
    assert state.metadata_answers == [MetadataReject(0)]

    # PeX both ways.
    state.send_ours("ut_pex", encode_pex(PEX_FROM_PEER))
    pex = counterparts.expect(PexReceived)
    assert pex.peer == key
    assert pex.added == (
        PexPeer(PeerAddress("10.1.2.3", 6881), 0x02),
        PexPeer(PeerAddress("10.1.2.4", 51413), 0x10),
    )
    assert pex.dropped == (PeerAddress("10.9.9.9", 1),)
    offered = PexPeer(PeerAddress("10.7.7.7", 6881), 0x12)
    counterparts.send(SendPex(INFO_HASH, key, (offered,), (PeerAddress("10.8.8.8", 2),)))
    wait_for(counterparts, "a ut_pex message", lambda: bool(state.pex))
    assert state.pex[0].added == (offered.address,) and state.pex[0].added_flags == (0x12,)
    assert state.pex[0].dropped == (PeerAddress("10.8.8.8", 2),)

    # The metadata is in: the same connection learns the geometry and reports the kept bits.
    counterparts.send(attach_torrent(counterparts))
    bitfield = counterparts.expect(PeerBitfield)
    assert (bitfield.peer, bitfield.bitfield) == (key, KEPT.to_bytes())
    counterparts.send(AssignPieces(INFO_HASH, key, (0, 2)))
    wait_for(counterparts, "pieces 0 and 2 stored", lambda: len(counterparts.pieces) == 2)
    for stored in counterparts.pieces:
        assert stored.data == CONTENT[stored.piece * PIECE : (stored.piece + 1) * PIECE]
        assert stored.contributors == (key,)

    # Now it serves the info dictionary it was given.
    state.metadata_answers.clear()
    state.send_ours("ut_metadata", encode_metadata_message(MetadataRequest(1)))
    wait_for(counterparts, "metadata served", lambda: bool(state.metadata_answers))
    assert state.metadata_answers == [MetadataData(1, len(INFO), INFO[PIECE:])]
    assert len(peer.links) == 1 and not counterparts.take_all(PeerDisconnected)


def test_an_incoming_peer_of_a_magnet_torrent_is_admitted_and_rejected_metadata_goes_up(
    counterparts: Counterparts, start_agent
) -> None:
    start_agent()
    address = listen_address(counterparts)
    magnet_attached(counterparts)
    raw = RawPeer(counterparts, address, INFO_HASH, source="127.0.0.77")
    connected = counterparts.expect(PeerConnected)
    assert connected.incoming
    handshake = ExtensionHandshake(m={"ut_metadata": PEER_UT_METADATA})
    raw.send(wire.Extended(0, encode_extension_handshake(handshake)))
    extensions = counterparts.expect(PeerExtensions)
    assert (extensions.ut_metadata, extensions.ut_pex, extensions.metadata_size) == (
        True,
        False,
        0,
    )
    raw.wait_for("the agent's extension handshake", lambda: bool(extended(raw)))
    ours = decode_extension_handshake(extended(raw)[0].payload)
    ut_metadata = ours.extension_id("ut_metadata")
    assert ut_metadata is not None
    assert ours.v is not None and ours.v.startswith("torviz")

    counterparts.send(RequestMetadata(INFO_HASH, connected.peer, (1,)))
    raw.wait_for("a metadata request", lambda: len(extended(raw)) >= 2)
    request = extended(raw)[1]
    assert request == wire.Extended(PEER_UT_METADATA, encode_metadata_message(MetadataRequest(1)))
    raw.send(wire.Extended(ut_metadata, encode_metadata_message(MetadataReject(1))))
    rejected = counterparts.expect(MetadataRejected)
    assert (rejected.peer, rejected.piece) == (connected.peer, 1)
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        counterparts.pump(0.05)
    assert not counterparts.take_all(PeerDisconnected)
    raw.close()


def test_a_kept_bitfield_that_does_not_fit_the_geometry_closes_that_connection_only(
    counterparts: Counterparts, start_agent
) -> None:
    start_agent()
    address = listen_address(counterparts)
    magnet_attached(counterparts)
    bad = RawPeer(counterparts, address, INFO_HASH, source="127.0.0.78")
    bad_key = counterparts.expect(PeerConnected).peer
    good = RawPeer(counterparts, address, INFO_HASH, source="127.0.0.79")
    good_key = counterparts.expect(PeerConnected).peer
    bad.send(wire.Bitfield(b"\xff\xff"))  # 16 bits: fine while no piece count is known
    good.send(wire.HaveAll())
    counterparts.pump(0.3)
    assert not counterparts.take_all(PeerDisconnected)

    counterparts.send(attach_torrent(counterparts))
    gone = counterparts.expect(PeerDisconnected)
    assert gone.peer == bad_key and "bitfield" in gone.reason, gone
    kept = counterparts.expect(PeerBitfield)
    assert (kept.peer, kept.bitfield) == (good_key, Bitfield.full(NUM_PIECES).to_bytes())
    bad.wait_closed()
    counterparts.pump(0.3)
    assert not counterparts.take_all(PeerDisconnected)
    good.close()


def test_repeated_extension_handshakes_are_reported_once_each_and_bounded(
    counterparts: Counterparts, start_agent
) -> None:
    start_agent()
    address = listen_address(counterparts)
    magnet_attached(counterparts)
    raw = RawPeer(counterparts, address, INFO_HASH, source="127.0.0.80")
    key = counterparts.expect(PeerConnected).peer
    same = wire.Extended(0, encode_extension_handshake(ExtensionHandshake(v="Same/1")))
    raw.send(same, same, same)  # a repeat that changes nothing is not news
    updates = [
        wire.Extended(0, encode_extension_handshake(ExtensionHandshake(v=f"Flood/{n}")))
        for n in range(2 * MAX_EXTENSION_REPORTS)
    ]
    raw.send(*updates)
    raw.send(wire.Extended(0, encode_extension_handshake(ExtensionHandshake(v="Last/1"))))
    raw.wait_for("the agent's extension handshake", lambda: bool(extended(raw)))
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        counterparts.pump(0.05)
    versions = [m.version for m in counterparts.take_all(PeerExtensions) if m.peer == key]
    assert versions == ["Same/1"] + [f"Flood/{n}" for n in range(MAX_EXTENSION_REPORTS - 1)]
    assert not raw.closed
    raw.close()


@pytest.mark.interop
def test_metadata_from_a_libtorrent_seeder_then_its_pieces_on_the_same_connection(
    counterparts: Counterparts, start_agent, swarm: Swarm, tmp_path: Path
) -> None:
    content = make_content(tmp_path / "seed", single_file_layout(300_000, "lt.bin"), seed=5)
    torrent = make_torrent(content, PIECE, [], tmp_path / "lt.torrent")
    meta = parse_metainfo(torrent.path.read_bytes())
    seeder = swarm.seeder(torrent, content.root, seed_mode=True)
    start_agent()
    counterparts.send(AttachMagnet(torrent.info_hash, OUR_PEER_ID))
    counterparts.send(ConnectPeer(torrent.info_hash, seeder.address))
    key = counterparts.expect(PeerConnected).peer
    extensions = counterparts.expect(PeerExtensions)
    assert extensions.peer == key and "libtorrent" in extensions.version.lower()
    assert extensions.ut_metadata and extensions.ut_pex
    assert extensions.metadata_size == len(meta.raw_info)
    pieces = -(-len(meta.raw_info) // METADATA_PIECE_SIZE)
    counterparts.send(RequestMetadata(torrent.info_hash, key, tuple(range(pieces))))
    got = sorted(
        (counterparts.expect(MetadataPieceReceived) for _ in range(pieces)), key=lambda m: m.piece
    )
    fetched = b"".join(m.data for m in got)
    assert hashlib.sha1(fetched).digest() == torrent.info_hash.raw

    have = bytes((torrent.num_pieces + 7) // 8)
    counterparts.send(
        AttachTorrent(
            info_hash=torrent.info_hash,
            piece_length=PIECE,
            total_length=meta.info.total_length,
            num_pieces=torrent.num_pieces,
            peer_id=OUR_PEER_ID,
            have=have,
            private=False,
            storage_endpoint=counterparts.data_endpoint,
            storage_public_key="",
            info=fetched,
        )
    )
    bitfield = counterparts.expect(PeerBitfield)
    assert (bitfield.peer, bitfield.bitfield) == (key, Bitfield.full(torrent.num_pieces).to_bytes())
    counterparts.send(AssignPieces(torrent.info_hash, key, tuple(range(torrent.num_pieces))))
    wait_for(
        counterparts, "every piece stored", lambda: len(counterparts.pieces) == torrent.num_pieces
    )
    for stored in counterparts.pieces:
        assert stored.data is not None
        assert hashlib.sha1(stored.data).digest() == meta.info.piece_hash(stored.piece)
    assert not counterparts.take_all(PeerDisconnected)
