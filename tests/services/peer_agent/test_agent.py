"""The peer agent process end to end: hello, storage links, shutdown, and a real libtorrent seeder.

The test plays the coordinator and the storage agent (pyzmq ROUTERs in ``Counterparts``); the
seeder is libtorrent in its own process on a 127.0.0.x address (``swarm`` fixture).
"""

from __future__ import annotations

import hashlib
import socket
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.auth

from testing import Swarm, make_content, make_torrent, single_file_layout
from testing.peer_agent import AgentProcess, Counterparts
from torviz.shared.bitfield import Bitfield
from torviz.shared.bus import (
    AgentInfo,
    BroadcastHave,
    ConnectPeer,
    DisconnectPeer,
    DisconnectReason,
    Goodbye,
    Hello,
    PeerBitfield,
    PeerConnected,
    PeerConnectFailed,
    PeerDisconnected,
    PieceDownloaded,
    Rejected,
    RejectReason,
    Shutdown,
    TransferStats,
    Welcome,
    WorkWanted,
    decode_frames,
    encode_frames,
)
from torviz.shared.metainfo import parse_metainfo
from torviz.shared.types import InfoHash, PeerAddress

from .conftest import attach_message, attached
from .fake_peers import feed_work, recording

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
    counterparts.send(
        DisconnectPeer(torrent.info_hash, connected.peer, DisconnectReason.BOTH_SEEDS)
    )
    gone = counterparts.expect(PeerDisconnected)
    assert (gone.peer, gone.reason) == (connected.peer, DisconnectReason.BOTH_SEEDS)


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


# --- the coordinator link -----------------------------------------------------------------------


def peer_agent_info(counterparts: Counterparts) -> AgentInfo:
    return counterparts.expect(AgentInfo, lambda m: not m.data_endpoint)


def test_agent_info_announces_capacity_and_the_listen_address(
    counterparts: Counterparts, start_agent
) -> None:
    agent = start_agent("--max-connections", "7")
    info = peer_agent_info(counterparts)
    assert info.capacity == 7 and info.data_endpoint == "" and info.curve_public_key == ""
    assert info.listen_address is not None and info.listen_address.host == agent.listen_host
    with socket.create_connection((info.listen_address.host, info.listen_address.port), timeout=5):
        pass  # the announced address takes connections


def test_advertise_host_is_announced_with_the_bound_port(
    counterparts: Counterparts, start_agent
) -> None:
    start_agent(advertise_host="127.0.0.99", listen_ports=(7400, 7499))
    info = peer_agent_info(counterparts)
    assert info.listen_address is not None
    assert info.listen_address.host == "127.0.0.99"
    assert 7400 <= info.listen_address.port <= 7499


def connected_peer(counterparts: Counterparts, fake_peer, info_hash: InfoHash) -> tuple[str, Any]:
    attached(counterparts, attach_message(counterparts, info_hash, PIECE, SIZE))
    peer = fake_peer(recording(info_hash))
    counterparts.send(ConnectPeer(info_hash, PeerAddress(peer.host, peer.port)))
    return counterparts.expect(PeerConnected).peer, peer


def test_a_new_registration_detaches_every_torrent(
    counterparts: Counterparts, start_agent, fake_peer
) -> None:
    start_agent()
    peer_agent_info(counterparts)
    info_hash = InfoHash(hashlib.sha1(b"re-registered").digest())
    _, peer = connected_peer(counterparts, fake_peer, info_hash)
    assert counterparts.welcomes == 1

    # The coordinator restarted: it answers the agent's next message with hello_first.
    counterparts.send(Rejected(RejectReason.HELLO_FIRST, "fake coordinator: say Hello first"))
    counterparts.expect(Hello, lambda m: m.service == "peer_agent")
    info = peer_agent_info(counterparts)
    assert info.listen_address is not None and counterparts.welcomes == 2
    assert peer.wait_served(5.0), "the connection of the detached torrent stayed open"
    assert peer.links and not peer.errors

    # The new coordinator session starts empty: the torrent must be attached again.
    counterparts.send(ConnectPeer(info_hash, PeerAddress("127.0.0.1", 9)))
    assert counterparts.expect(PeerConnectFailed).reason == "unknown_torrent"
    connected_peer(counterparts, fake_peer, info_hash)


def test_a_silent_coordinator_is_lost_and_the_agent_registers_again(
    counterparts: Counterparts, start_agent, fake_peer
) -> None:
    counterparts.heartbeat_interval = 0.3  # lost after 3 silent intervals: 0.9 s
    start_agent()
    peer_agent_info(counterparts)
    _, peer = connected_peer(counterparts, fake_peer, InfoHash(hashlib.sha1(b"quiet").digest()))
    counterparts.silent = True
    started = time.monotonic()
    assert peer.wait_served(5.0), "the agent kept its torrents without a coordinator"
    assert time.monotonic() - started >= 0.5  # not before the heartbeats were missed
    counterparts.pump(0.5)
    counterparts.silent = False
    info = peer_agent_info(counterparts)  # the agent keeps saying Hello until answered
    assert info.listen_address is not None and counterparts.welcomes == 2


def test_a_missing_key_stops_the_agent_with_one_line(short_dir: Path) -> None:
    keys = short_dir / "keys"
    keys.mkdir()
    agent = AgentProcess("tcp://127.0.0.1:9", short_dir, extra=("--keys", str(keys)))
    try:
        assert agent.wait(timeout=10) == 2
    finally:
        agent.stop()
    lines = agent.stderr().strip().splitlines()
    assert len(lines) == 1, lines
    assert "pa1.key_secret" in lines[0] and "missing" in lines[0]


def test_curve_on_the_coordinator_link_and_a_storage_link(
    counterparts: Counterparts, short_dir: Path
) -> None:
    keys = short_dir / "keys"
    keys.mkdir()
    zmq.auth.create_certificates(keys, "pa1")
    _, coordinator_secret = zmq.auth.create_certificates(keys, "coordinator")
    _, storage_secret = zmq.auth.create_certificates(short_dir, "storage")
    servers = []
    for secret_file in (coordinator_secret, storage_secret):
        public, secret = zmq.auth.load_certificate(secret_file)
        server = counterparts.context.socket(zmq.ROUTER)
        server.setsockopt(zmq.LINGER, 0)
        server.curve_server = True
        server.curve_publickey, server.curve_secretkey = public, secret
        server.bind("tcp://127.0.0.1:*")
        servers.append((server, public, server.getsockopt_string(zmq.LAST_ENDPOINT)))
    (bus_server, _, bus), (data_server, storage_public, data) = servers
    agent = AgentProcess(bus, short_dir, extra=("--keys", str(keys)))
    try:
        assert bus_server.poll(10_000), "no Hello over CURVE"
        identity, *frames = bus_server.recv_multipart()
        hello, _ = decode_frames(frames)
        assert isinstance(hello, Hello) and hello.agent_id == "pa1"
        welcome = Welcome(hello.protocol_version, "coordinator", "curve-test", 30.0)
        bus_server.send_multipart([identity, *encode_frames(welcome)])
        assert bus_server.poll(5000)
        info, _ = decode_frames(bus_server.recv_multipart()[1:])
        assert isinstance(info, AgentInfo)
        attach = replace(
            attach_message(counterparts, InfoHash(hashlib.sha1(b"curve").digest()), PIECE, SIZE),
            storage_endpoint=data,
            storage_public_key=storage_public.decode(),
        )
        bus_server.send_multipart([identity, *encode_frames(attach)])
        assert data_server.poll(10_000), "no Hello on the storage link over CURVE"
        storage_hello, _ = decode_frames(data_server.recv_multipart()[1:])
        assert isinstance(storage_hello, Hello) and storage_hello.agent_id == "pa1"
    finally:
        agent.stop()
        print(agent.stderr()[-3000:], file=sys.stderr)
