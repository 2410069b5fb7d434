"""The peer agent process end to end: hello, storage links, shutdown, and a real libtorrent seeder.

The test plays the coordinator and the storage agent (pyzmq ROUTERs in ``Counterparts``); the
seeder is libtorrent in its own process on a 127.0.0.x address (``swarm`` fixture).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest
import zmq

from shared.bitfield import Bitfield
from shared.bus import (
    BroadcastHave,
    ConnectPeer,
    DisconnectPeer,
    Goodbye,
    Hello,
    PeerBitfield,
    PeerConnected,
    PeerDisconnected,
    PieceDownloaded,
    Shutdown,
    TransferStats,
    WorkWanted,
    decode_frames,
)
from shared.metainfo import parse_metainfo
from shared.types import InfoHash, PeerAddress
from tests.support import Swarm, make_content, make_torrent, single_file_layout

from .conftest import attach_message
from .harness import Counterparts, feed_work, recording

PIECE = 64 * 1024
SIZE = 3 * 1024 * 1024 + 12_345  # 49 pieces, the last one short


@pytest.mark.interop
def test_downloads_a_torrent_from_a_libtorrent_seeder(
    counterparts: Counterparts, start_agent, swarm: Swarm, tmp_path: Path
) -> None:
    content = make_content(tmp_path / "seed", single_file_layout(SIZE, "lt.bin"), seed=3)
    torrent = make_torrent(content, PIECE, [], tmp_path / "lt.torrent")
    meta = parse_metainfo(torrent.path.read_bytes())
    seeder = swarm.seeder(torrent, content.root, seed_mode=True)
    start_agent()
    counterparts.send(attach_message(counterparts, torrent.info_hash, PIECE, SIZE))
    counterparts.send(ConnectPeer(torrent.info_hash, seeder.address))

    connected = counterparts.expect(PeerConnected)
    assert "libtorrent" in connected.client
    assert connected.address == seeder.address and not connected.incoming
    assert connected.fast_extension and connected.extension_protocol
    bitfield = counterparts.expect(PeerBitfield)
    assert bitfield.bitfield == Bitfield.full(torrent.num_pieces).to_bytes()
    want = counterparts.expect(WorkWanted)
    feed_work(
        counterparts, torrent.info_hash, connected.peer, torrent.num_pieces, 20.0,
        first_want=want.count,
    )  # fmt: skip

    assert sorted(p.piece for p in counterparts.pieces) == list(range(torrent.num_pieces))
    for stored in counterparts.pieces:
        assert stored.data is not None
        assert hashlib.sha1(stored.data).digest() == meta.info.piece_hash(stored.piece)
        assert stored.contributors == (connected.peer,)
    counterparts.wait_until(
        lambda: (
            sum(isinstance(m, PieceDownloaded) for m in counterparts.inbox) == torrent.num_pieces
        ),
        5.0,
        "a PieceDownloaded per piece",
    )
    stats = counterparts.expect(
        TransferStats, lambda m: any(row.downloaded == SIZE for row in m.peers), 3.0
    )
    assert stats.peers[0].peer == connected.peer

    counterparts.send(BroadcastHave(torrent.info_hash, 0))
    counterparts.send(DisconnectPeer(torrent.info_hash, connected.peer, "done"))
    gone = counterparts.expect(PeerDisconnected)
    assert (gone.peer, gone.reason) == (connected.peer, "done")


def test_torrents_share_one_storage_link_per_endpoint(
    counterparts: Counterparts, start_agent, short_dir: Path
) -> None:
    start_agent()
    other = counterparts.context.socket(zmq.ROUTER)
    other.setsockopt(zmq.LINGER, 0)
    other.bind(f"ipc://{short_dir}/other-data")
    for seed in (b"a", b"b"):
        info_hash = InfoHash(hashlib.sha1(seed).digest())
        counterparts.send(attach_message(counterparts, info_hash, PIECE, SIZE))
    attach = attach_message(counterparts, InfoHash(hashlib.sha1(b"c").digest()), PIECE, SIZE)
    counterparts.send(replace(attach, storage_endpoint=f"ipc://{short_dir}/other-data"))
    assert other.poll(5000), "no Hello on the second storage endpoint"
    _, *frames = other.recv_multipart()
    hello, _ = decode_frames(frames)
    assert isinstance(hello, Hello) and hello.service == "peer_agent" and hello.agent_id == "pa1"
    counterparts.wait_until(lambda: counterparts.storage_hellos == 1, 5.0, "one storage Hello")
    counterparts.pump(0.3)
    assert counterparts.storage_hellos == 1


def test_shutdown_closes_connections_and_exits(
    counterparts: Counterparts, start_agent, fake_peer
) -> None:
    agent = start_agent()
    info_hash = InfoHash(hashlib.sha1(b"shutdown").digest())
    counterparts.send(attach_message(counterparts, info_hash, PIECE, SIZE))
    peer = fake_peer(recording(info_hash))
    counterparts.send(ConnectPeer(info_hash, PeerAddress(peer.host, peer.port)))
    key = counterparts.expect(PeerConnected).peer
    counterparts.send(Shutdown("test"))
    gone = counterparts.expect(PeerDisconnected)
    assert (gone.peer, gone.reason) == (key, "shutdown")
    counterparts.expect(Goodbye)
    assert agent.wait(timeout=10) == 0
    assert peer.wait_served(5.0)


def test_a_rejected_agent_exits_with_status_1(counterparts: Counterparts, start_agent) -> None:
    counterparts.reject_agents = True
    agent = start_agent()
    assert agent.wait(timeout=10) == 1
    assert "rejected" in agent.stderr()
