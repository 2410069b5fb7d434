"""Peer connections of the real agent process against fake peers on loopback.

The agent runs as its own gevent-patched process; the test plays the coordinator and the storage
agent (pyzmq ROUTERs, ``Counterparts``) and the peers (TCP server threads, ``FakePeer``): a
well-behaved seeder, a silent one that records what the agent sends, and hostile ones.
"""

from __future__ import annotations

import hashlib
import random
import socket
import struct

import pytest

from testing.peer_agent import Counterparts
from torviz.shared.bus import (
    AssignPieces,
    BroadcastHave,
    CancelPieces,
    ConnectPeer,
    DetachTorrent,
    DisconnectPeer,
    DisconnectReason,
    PeerBitfield,
    PeerConnected,
    PeerConnectFailed,
    PeerDisconnected,
    PieceDownloaded,
    TransferStats,
    WorkWanted,
)
from torviz.shared.types import InfoHash, PeerAddress
from torviz.shared.wire import codec
from torviz.shared.wire import messages as wire
from torviz.shared.wire.handshake import Handshake, Reserved, encode_handshake

from .conftest import attach_message
from .fake_peers import (
    FAKE_PEER_ID,
    FakePeer,
    feed_work,
    piece_hashes,
    raw,
    recording,
    serving,
    then_send,
)

PIECE = 64 * 1024
CONTENT = random.Random(11).randbytes(40 * PIECE + 12_345)
INFO_HASH = InfoHash(hashlib.sha1(b"fake torrent").digest())
NUM_PIECES = -(-len(CONTENT) // PIECE)
BITFIELD_BYTES = (NUM_PIECES + 7) // 8


def address(peer: FakePeer) -> PeerAddress:
    return PeerAddress(peer.host, peer.port)


def connect(parts: Counterparts, peer: FakePeer) -> PeerConnected:
    parts.send(ConnectPeer(INFO_HASH, address(peer)))
    return parts.expect(PeerConnected, lambda m: m.address == address(peer))


@pytest.fixture
def agent(counterparts, start_agent):
    """An agent with the test torrent attached."""
    process = start_agent()
    counterparts.send(attach_message(counterparts, INFO_HASH, PIECE, len(CONTENT)))
    return process


def test_downloads_every_piece_from_a_seeder(counterparts, agent, fake_peer) -> None:
    seeder = fake_peer(serving(INFO_HASH, CONTENT, PIECE))
    connected = connect(counterparts, seeder)
    assert connected.client == "libtorrent 2.1.1"
    assert connected.fast_extension and connected.extension_protocol and not connected.incoming
    assert connected.peer_id == seeder.peer_id
    assert connected.peer.startswith(f"{agent.agent_id}/")
    bitfield = counterparts.expect(PeerBitfield)
    assert bitfield.bitfield == b"\xff" * (NUM_PIECES // 8) + b"\x80"
    want = counterparts.expect(WorkWanted)
    assert want.peer == connected.peer and want.count >= 1
    feed_work(counterparts, INFO_HASH, connected.peer, NUM_PIECES, 20.0, first_want=want.count)
    hashes = piece_hashes(CONTENT, PIECE)
    assert sorted(p.piece for p in counterparts.pieces) == list(range(NUM_PIECES))
    for stored in counterparts.pieces:
        assert stored.data is not None
        assert hashlib.sha1(stored.data).digest() == hashes[stored.piece], stored.piece
        assert stored.contributors == (connected.peer,)
    counterparts.wait_until(
        lambda: sum(isinstance(m, PieceDownloaded) for m in counterparts.inbox) == NUM_PIECES,
        5.0,
        "a PieceDownloaded per piece",
    )
    stats = counterparts.expect(
        TransferStats, lambda m: any(row.downloaded == len(CONTENT) for row in m.peers), 3.0
    )
    row = next(row for row in stats.peers if row.peer == connected.peer)
    assert row.info_hash == INFO_HASH and not row.peer_choking
    assert counterparts.storage_hellos == 1
    assert not seeder.errors


# A hostile peer completes the handshake, then sends one of these.
HOSTILE = [
    ("unknown message id", struct.pack(">IB", 2, 0xEE) + b"\x00", "unknown_message"),
    ("4 GiB length prefix", b"\xff\xff\xff\xff\x07", "frame_too_large"),
    ("bitfield too short", codec.encode(wire.Bitfield(b"\xff")), "bad_bitfield_length"),
    (
        "bitfield spare bits",
        codec.encode(wire.Bitfield(b"\xff" * BITFIELD_BYTES)),
        "bitfield_spare_bits",
    ),
    ("have out of range", codec.encode(wire.Have(NUM_PIECES)), "bad_piece_index"),
    ("choke with a payload", struct.pack(">IB", 2, 0) + b"\x00", "bad_length"),
]
# Without the fast extension a request cannot be rejected: one outside the torrent ends it.
PLAIN_REQUEST_OUTSIDE = codec.encode(wire.Request(NUM_PIECES, 0, 16384))


def test_hostile_peers_are_dropped_with_the_codec_reason_while_others_keep_working(
    counterparts, agent, fake_peer
) -> None:
    seeder = fake_peer(serving(INFO_HASH, CONTENT, PIECE))
    good = connect(counterparts, seeder)
    want = counterparts.expect(WorkWanted, lambda m: m.peer == good.peer)
    hostile = {name: fake_peer(then_send(INFO_HASH, payload)) for name, payload, _ in HOSTILE}
    hostile["plain request outside"] = fake_peer(
        then_send(INFO_HASH, PLAIN_REQUEST_OUTSIDE, reserved=Reserved())
    )
    keys = {name: connect(counterparts, peer).peer for name, peer in hostile.items()}
    feed_work(counterparts, INFO_HASH, good.peer, NUM_PIECES, 20.0, first_want=want.count)
    for name, _, reason in [*HOSTILE, ("plain request outside", b"", "bad_request")]:
        gone = counterparts.expect(PeerDisconnected, lambda m, k=keys[name]: m.peer == k)
        assert gone.reason == reason, name
        assert gone.message, name
    assert len(counterparts.pieces) == NUM_PIECES
    assert not counterparts.take_all(PeerDisconnected, lambda m: m.peer == good.peer)


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        (raw(b"\x13BitTorrent protocol" + bytes(48)), "wrong_info_hash"),
        (raw(b"\x13BitTorrenT protocol"), "bad_protocol"),
        (raw(b"GET / HTTP/1.1\r\n\r\n"), "bad_pstrlen"),
        (
            raw(
                encode_handshake(Handshake(INFO_HASH, FAKE_PEER_ID, Reserved()))[:30],
                then_close=True,
            ),
            "peer_closed",
        ),
    ],
    ids=["wrong_info_hash", "bad_protocol", "not_bittorrent", "closed_mid_handshake"],
)
def test_a_bad_handshake_is_a_failed_connect(
    counterparts, agent, fake_peer, behaviour, reason
) -> None:
    peer = fake_peer(behaviour)
    counterparts.send(ConnectPeer(INFO_HASH, address(peer)))
    failed = counterparts.expect(PeerConnectFailed)
    assert (failed.address, failed.reason) == (address(peer), reason)
    assert not counterparts.take_all(PeerConnected)


def test_connect_refusals(counterparts, start_agent, fake_peer) -> None:
    start_agent("--max-connections", "2")
    other = InfoHash(b"\x02" * 20)
    counterparts.send(attach_message(counterparts, INFO_HASH, PIECE, len(CONTENT)))
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = PeerAddress("127.0.0.1", probe.getsockname()[1])
    counterparts.send(ConnectPeer(INFO_HASH, closed))
    refused = counterparts.expect(PeerConnectFailed, lambda m: m.address == closed)
    assert refused.reason == "connection_refused"

    counterparts.send(ConnectPeer(other, closed))
    assert counterparts.expect(PeerConnectFailed).reason == "unknown_torrent"

    first, second, third = (fake_peer(recording(INFO_HASH)) for _ in range(3))
    connect(counterparts, first)
    counterparts.send(ConnectPeer(INFO_HASH, address(first)))
    assert counterparts.expect(PeerConnectFailed).reason == "already_connected"
    connect(counterparts, second)
    counterparts.send(ConnectPeer(INFO_HASH, address(third)))
    assert counterparts.expect(PeerConnectFailed).reason == "too_many_connections"


def test_commands_reach_the_connection(counterparts, agent, fake_peer) -> None:
    silent = fake_peer(recording(INFO_HASH, have_all=True))
    key = connect(counterparts, silent).peer
    counterparts.expect(WorkWanted, lambda m: m.peer == key)
    link = silent.links[0]

    counterparts.send(AssignPieces(INFO_HASH, key, (3, 5)))
    counterparts.wait_until(
        lambda: sum(isinstance(m, wire.Request) for m in link.log) == 8, 5.0, "8 requests"
    )
    assert {(m.piece, m.offset) for m in link.log if isinstance(m, wire.Request)} == {
        (piece, offset) for piece in (3, 5) for offset in range(0, PIECE, 16384)
    }
    counterparts.send(CancelPieces(INFO_HASH, key, (5,)))
    counterparts.wait_until(
        lambda: sum(isinstance(m, wire.Cancel) for m in link.log) == 4, 5.0, "4 cancels"
    )
    assert {m.piece for m in link.log if isinstance(m, wire.Cancel)} == {5}
    counterparts.send(CancelPieces(INFO_HASH, key, (3,)))
    counterparts.send(AssignPieces(INFO_HASH, key, ()))  # the coordinator has nothing more
    counterparts.wait_until(lambda: wire.NotInterested() in link.log, 5.0, "NOT_INTERESTED")
    assert link.log.index(wire.Interested()) < link.log.index(wire.NotInterested())

    counterparts.send(BroadcastHave(INFO_HASH, 7))
    counterparts.wait_until(lambda: wire.Have(7) in link.log, 5.0, "HAVE 7")

    # Commands for keys that do not exist (or no longer) are ignored.
    counterparts.send(AssignPieces(INFO_HASH, f"{agent.agent_id}/999", (1,)))
    counterparts.send(DisconnectPeer(INFO_HASH, "elsewhere/1", DisconnectReason.BANNED))

    counterparts.send(DisconnectPeer(INFO_HASH, key, DisconnectReason.BOTH_SEEDS))
    gone = counterparts.expect(PeerDisconnected, lambda m: m.peer == key)
    assert gone.reason is DisconnectReason.BOTH_SEEDS
    assert silent.wait_served(5.0), "the agent did not close the socket"


def test_detach_closes_the_connections_of_the_torrent(counterparts, agent, fake_peer) -> None:
    peers = [fake_peer(recording(INFO_HASH)) for _ in range(2)]
    keys = {connect(counterparts, peer).peer for peer in peers}
    counterparts.send(DetachTorrent(INFO_HASH))
    for _ in range(len(keys)):
        gone = counterparts.expect(PeerDisconnected)
        assert gone.reason == "torrent_detached"
        keys.discard(gone.peer)
    assert not keys
    counterparts.send(ConnectPeer(INFO_HASH, address(peers[0])))
    assert counterparts.expect(PeerConnectFailed).reason == "unknown_torrent"
