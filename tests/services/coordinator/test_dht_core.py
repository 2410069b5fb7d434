"""The coordinator's DHT bits with fake agents: the DHT port peer agents tell peers (the
tracker agent on their host), a peer's PORT passed on once per address, a .torrent's nodes in
TrackTorrent, the tracker agents' DHT reports in status and the diagnosis."""

from __future__ import annotations

import hashlib
from typing import Any

from torviz.services.coordinator.core import Coordinator
from torviz.shared.bencode import encode
from torviz.shared.bitfield import Bitfield
from torviz.shared.bus import (
    AddTorrent,
    AgentInfo,
    AttachMagnet,
    AttachTorrent,
    DhtNodeSeen,
    DhtStatusChanged,
    DhtSummary,
    DhtTorrentSummary,
    HostPort,
    PeerConnected,
    PeerDhtPort,
    ServiceKind,
    TorrentAdded,
    TorrentOpened,
    TrackTorrent,
)
from torviz.shared.types import InfoHash, PeerAddress, PeerId

from .test_core import PA1, PA2, PIECE, STORAGE, TRACKER, join, new_core, sent

TRACKER2 = b"tracker2"
HOST_A, HOST_B = "10.0.0.1", "10.0.0.2"


def torrent(*, private: bool = False, nodes: list[Any] | None = None) -> tuple[bytes, InfoHash]:
    data = bytes(range(256)) * (PIECE * 2 // 256)
    pieces = b"".join(hashlib.sha1(data[i : i + PIECE]).digest() for i in (0, PIECE))
    info: dict[bytes, Any] = {
        b"name": b"f",
        b"length": len(data),
        b"piece length": PIECE,
        b"pieces": pieces,
    }
    if private:
        info[b"private"] = 1
    top: dict[bytes, Any] = {b"info": info, b"announce": b"http://127.0.0.1:6969/announce"}
    if nodes is not None:
        top[b"nodes"] = nodes
    return encode(top), InfoHash(hashlib.sha1(encode(info)).digest())


def two_hosts(*, dht_a: int = 7001, dht_b: int = 7002) -> Coordinator:
    """Peer agent 1 and tracker agent 1 on host A, peer agent 2 and tracker agent 2 on B."""
    core = new_core()
    for identity, kind in [
        (STORAGE, ServiceKind.STORAGE_AGENT),
        (PA1, ServiceKind.PEER_AGENT),
        (PA2, ServiceKind.PEER_AGENT),
        (TRACKER, ServiceKind.TRACKER_AGENT),
        (TRACKER2, ServiceKind.TRACKER_AGENT),
    ]:
        join(core, identity, kind)
    core.handle(PA1, AgentInfo(50, PeerAddress(HOST_A, 6881), "", ""), 0.0)
    core.handle(PA2, AgentInfo(50, PeerAddress(HOST_B, 6882), "", ""), 0.0)
    core.handle(TRACKER, AgentInfo(0, None, "", "", announce_host=HOST_A, dht_port=dht_a), 0.0)
    core.handle(TRACKER2, AgentInfo(0, None, "", "", announce_host=HOST_B, dht_port=dht_b), 0.0)
    core.take_outbox()
    return core


def add(core: Coordinator, data: bytes, info_hash: InfoHash) -> None:
    assert isinstance(core.add_torrent(AddTorrent(data, ""), now=0.0), TorrentAdded)
    core.handle(STORAGE, TorrentOpened(info_hash, Bitfield(2).to_bytes()), 0.0)


def test_each_peer_agent_tells_the_dht_port_of_the_tracker_agent_on_its_host() -> None:
    core = two_hosts()
    add(core, *torrent())
    ports = {to: m.dht_port for to, m in sent(core, AttachTorrent)}
    assert ports == {PA1: 7001, PA2: 7002}


def test_a_private_torrent_or_no_dht_node_on_the_host_tells_no_port() -> None:
    core = two_hosts(dht_b=0)
    add(core, *torrent())
    assert {to: m.dht_port for to, m in sent(core, AttachTorrent)} == {PA1: 7001, PA2: 0}
    core = two_hosts()
    add(core, *torrent(private=True))
    assert {m.dht_port for _, m in sent(core, AttachTorrent)} == {0}


def test_a_dht_node_arriving_later_reattaches_the_peer_agents_on_its_host() -> None:
    core = two_hosts(dht_a=0)
    data, info_hash = torrent()
    add(core, data, info_hash)
    core.take_outbox()
    core.handle(TRACKER, AgentInfo(0, None, "", "", announce_host=HOST_A, dht_port=7005), 1.0)
    again = sent(core, AttachTorrent)
    assert [(to, m.info_hash, m.dht_port) for to, m in again] == [(PA1, info_hash, 7005)]
    core.handle(TRACKER, AgentInfo(0, None, "", "", announce_host=HOST_A, dht_port=7005), 2.0)
    assert sent(core, AttachTorrent) == []  # nothing changed
    core.agent_left(TRACKER, 3.0)
    assert [(to, m.dht_port) for to, m in sent(core, AttachTorrent)] == [(PA1, 0)]


def test_a_magnet_links_connections_tell_the_dht_port_of_their_host_and_follow_it() -> None:
    core = two_hosts(dht_a=0)
    link = "magnet:?xt=urn:btih:" + "ab" * 20
    assert isinstance(core.add_torrent(AddTorrent(b"", "", link), now=0.0), TorrentAdded)
    assert {to: m.dht_port for to, m in sent(core, AttachMagnet)} == {PA1: 0, PA2: 7002}
    core.handle(TRACKER, AgentInfo(0, None, "", "", announce_host=HOST_A, dht_port=7005), 1.0)
    assert [(to, m.dht_port) for to, m in sent(core, AttachMagnet)] == [(PA1, 7005)]


def test_a_peers_port_goes_to_the_dht_node_on_the_reporting_agents_host_once() -> None:
    core = two_hosts()
    data, info_hash = torrent()
    add(core, data, info_hash)
    peer = PeerAddress("192.0.2.7", 51413)
    for agent, key in [(PA2, "pa2/1"), (PA1, "pa1/1")]:
        core.handle(
            agent,
            PeerConnected(
                info_hash, key, peer, PeerId(key.encode().ljust(20, b".")), "", False, True, True
            ),
            0.0,
        )
    core.take_outbox()
    core.handle(PA2, PeerDhtPort(info_hash, "pa2/1", 6882), 1.0)
    assert sent(core, DhtNodeSeen) == [(TRACKER2, DhtNodeSeen(PeerAddress("192.0.2.7", 6882)))]
    core.handle(PA1, PeerDhtPort(info_hash, "pa1/1", 6882), 1.0)  # the same address
    core.handle(PA2, PeerDhtPort(info_hash, "pa2/1", 6882), 1.0)
    assert sent(core, DhtNodeSeen) == []
    core.handle(PA1, PeerDhtPort(info_hash, "pa2/1", 9), 1.0)  # another agent's connection
    core.handle(PA1, PeerDhtPort(info_hash, "pa1/9", 9), 1.0)  # no such connection
    assert sent(core, DhtNodeSeen) == []
    core.handle(PA1, PeerDhtPort(info_hash, "pa1/1", 7000), 1.0)
    assert sent(core, DhtNodeSeen) == [(TRACKER, DhtNodeSeen(PeerAddress("192.0.2.7", 7000)))]


def test_the_torrents_nodes_go_to_the_tracker_agents_unless_private() -> None:
    core = two_hosts()
    nodes = [[b"127.0.0.1", 6881], [b"dht.example.org", 25401], [b"bad", 0]]
    add(core, *torrent(nodes=nodes))
    tracks = sent(core, TrackTorrent)
    assert tracks and all(
        m.dht_nodes == (HostPort("127.0.0.1", 6881), HostPort("dht.example.org", 25401))
        for _, m in tracks
    )
    core = two_hosts()
    add(core, *torrent(private=True, nodes=nodes))
    assert [m.dht_nodes for _, m in sent(core, TrackTorrent)] == [()]


def summary(nodes: int, port: int) -> DhtSummary:
    return DhtSummary(nodes, nodes // 2, 1, 3, 40, 2, port)


def test_dht_reports_show_per_tracker_agent_and_summed_per_torrent() -> None:
    core = two_hosts()
    data, info_hash = torrent()
    add(core, data, info_hash)
    row_a = DhtTorrentSummary(info_hash, 5, 8, 900.0)
    row_b = DhtTorrentSummary(info_hash, 2, 3, 600.0)
    core.handle(TRACKER, DhtStatusChanged(summary(100, 7001), (row_a,)), 1.0)
    core.handle(TRACKER2, DhtStatusChanged(summary(50, 7002), (row_b,)), 1.0)
    core.handle(PA1, DhtStatusChanged(summary(9, 1), ()), 1.0)  # not a tracker agent: ignored
    report = core.status(2.0)
    agents = {a.agent_id: a.dht for a in report.agents}
    assert agents["tracker"] == summary(100, 7001)
    assert agents["tracker2"] == summary(50, 7002)
    assert agents["pa1"] is None
    assert report.torrents[0].dht == DhtTorrentSummary(info_hash, 7, 11, 600.0)
    # A DHT node switched off forgets its report.
    core.handle(TRACKER2, AgentInfo(0, None, "", "", announce_host=HOST_B, dht_port=0), 3.0)
    assert {a.agent_id: a.dht for a in core.status(3.0).agents}["tracker2"] is None


def test_the_diagnosis_of_a_torrent_without_trackers_mentions_the_dht() -> None:
    data, info_hash = torrent()
    without_trackers = data.replace(b"8:announce30:http://127.0.0.1:6969/announce", b"")
    assert without_trackers != data
    core = two_hosts()
    add(core, without_trackers, info_hash)
    assert core.diagnosis(info_hash) == (
        "the torrent lists no tracker, and the DHT knows no node (no bootstrap node answered)"
    )
    core.handle(TRACKER, DhtStatusChanged(summary(100, 7001), ()), 1.0)
    assert core.diagnosis(info_hash) == (
        "the torrent lists no tracker, and the DHT (100 nodes) found no peer yet"
    )
    off = two_hosts(dht_a=0, dht_b=0)
    add(off, without_trackers, info_hash)
    assert off.diagnosis(info_hash) == (
        "the torrent lists no tracker and no peer, and the DHT is off"
    )
