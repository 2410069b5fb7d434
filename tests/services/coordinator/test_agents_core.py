"""The coordinator and its agents: heartbeats, silence, saying hello again, what agents offer,
placement of new peers, and the agents in ``status``."""

from __future__ import annotations

from torviz.shared.bitfield import Bitfield
from torviz.shared.bus import (
    AgentInfo,
    AttachTorrent,
    ConnectPeer,
    DetachTorrent,
    DisconnectReason,
    Heartbeat,
    OpenTorrent,
    PeerDisconnected,
    PeersDiscovered,
    PeerSource,
    PeerStats,
    ServiceKind,
    TransferStats,
)
from torviz.shared.types import PeerAddress

from .test_core import (
    NUM_PIECES,
    PA1,
    PA2,
    STORAGE,
    TRACKER,
    addr,
    connect,
    full_core,
    join,
    kinds,
    new_core,
    opened,
    sent,
)


def test_heartbeats_go_to_every_agent_each_interval() -> None:
    core = full_core(heartbeat_interval=5.0)
    core.take_outbox()
    core.tick(1.0)
    beats = sent(core, Heartbeat)
    assert {to for to, _ in beats} == {STORAGE, PA1, PA2, TRACKER}
    core.tick(2.0)
    assert sent(core, Heartbeat) == []
    core.tick(6.0)
    assert [m.seq for _, m in sent(core, Heartbeat)] == [2, 2, 2, 2]


def test_a_silent_peer_agent_is_dead_and_its_peers_go_elsewhere() -> None:
    core = full_core(heartbeat_interval=5.0, heartbeat_misses=3)
    info_hash = opened(core)
    connect(core, info_hash, PA1, "pa1/1", 2, Bitfield.full(NUM_PIECES))
    core.take_outbox()
    for now in (5.0, 10.0, 15.0):  # everyone but PA1 keeps talking
        for identity in (STORAGE, PA2, TRACKER):
            core.handle(identity, Heartbeat(1), now)
        core.tick(now)
    assert core.take_dropped() == []
    core.handle(PA2, Heartbeat(2), 15.5)
    core.handle(STORAGE, Heartbeat(2), 15.5)
    core.handle(TRACKER, Heartbeat(2), 15.5)
    core.tick(15.5)
    assert core.take_dropped() == [PA1]
    assert [a.agent_id for a in core.status(0.0).agents] == ["storage", "pa2", "tracker"]
    # Its peer is dialled again from the agent that is left; its pieces are free again.
    assert sent(core, ConnectPeer) == [(PA2, ConnectPeer(info_hash, addr(2)))]
    # Whatever it says next is ignored until it says hello again.
    core.handle(PA1, Heartbeat(9), 16.0)
    assert "pa1" not in [a.agent_id for a in core.status(0.0).agents]


def test_an_agent_that_says_hello_again_starts_afresh() -> None:
    core = full_core()
    info_hash = opened(core)
    connect(core, info_hash, PA1, "pa1/1", 2, Bitfield.full(NUM_PIECES))
    assert core.status(0.0).torrents[0].peers == 1
    core.take_outbox()
    join(core, PA1, ServiceKind.PEER_AGENT)  # it lost us and dropped its connections
    assert core.status(0.0).torrents[0].peers == 0
    out = kinds(core.take_outbox())
    assert (PA1, "AttachTorrent") in out
    assert [a.agent_id for a in core.status(0.0).agents].count("pa1") == 1


def test_storage_agent_info_routes_the_pieces() -> None:
    core = new_core()
    join(core, STORAGE, ServiceKind.STORAGE_AGENT)
    core.handle(STORAGE, AgentInfo(32, None, "tcp://10.0.0.1:7701", "k" * 40), 0.0)
    join(core, PA1, ServiceKind.PEER_AGENT)
    opened(core)  # clears the outbox after attaching
    join(core, PA2, ServiceKind.PEER_AGENT)
    [(_, attach)] = sent(core, AttachTorrent)
    assert attach.storage_endpoint == "tcp://10.0.0.1:7701"
    assert attach.storage_public_key == "k" * 40
    # A second storage agent is left idle while the first serves.
    join(core, b"storage2", ServiceKind.STORAGE_AGENT)
    core.handle(b"storage2", AgentInfo(32, None, "tcp://10.0.0.7:7701", ""), 1.0)
    assert core.take_outbox() == []
    # The first one goes: the idle one takes over, and every peer agent is attached again with
    # its endpoint.
    core.agent_left(STORAGE, 1.0)
    out = core.take_outbox()
    assert [to for to, m in out if isinstance(m, OpenTorrent)] == [b"storage2"]
    detached = [to for to, m in out if isinstance(m, DetachTorrent)]
    attached = [(to, m) for to, m in out if isinstance(m, AttachTorrent)]
    assert sorted(detached) == [PA1, PA2]
    assert sorted(to for to, _ in attached) == [PA1, PA2]
    assert {m.storage_endpoint for _, m in attached} == {"tcp://10.0.0.7:7701"}
    assert {m.storage_public_key for _, m in attached} == {""}


def test_a_new_peer_agent_gets_the_new_peers() -> None:
    core = full_core()
    info_hash = opened(core)
    core.handle(PA2, AgentInfo(200, PeerAddress("127.0.0.1", 7000), "", ""), 0.0)
    peers = tuple(addr(n) for n in range(2, 12))
    core.handle(TRACKER, PeersDiscovered(info_hash, peers, PeerSource.TRACKER), 0.0)
    dials = sent(core, ConnectPeer)
    assert sorted(to for to, _ in dials).count(PA1) == 5
    join(core, b"pa3", ServiceKind.PEER_AGENT)
    core.handle(b"pa3", AgentInfo(200, PeerAddress("127.0.0.3", 7000), "", ""), 0.0)
    core.take_outbox()
    more = tuple(addr(n) for n in range(20, 25))
    core.handle(TRACKER, PeersDiscovered(info_hash, more, PeerSource.TRACKER), 0.0)
    assert [to for to, _ in sent(core, ConnectPeer)] == [b"pa3"] * 5


def test_throughput_steers_placement() -> None:
    core = full_core()
    info_hash = opened(core)
    connect(core, info_hash, PA1, "pa1/1", 2, Bitfield.full(NUM_PIECES))
    connect(core, info_hash, PA2, "pa2/1", 3, Bitfield.full(NUM_PIECES))
    row = PeerStats(info_hash, "pa1/1", 10**9, 0, 9e7, 0.0, False, True, True, True, False, 6)
    core.handle(PA1, TransferStats((row,)), 1.0)
    core.tick(1.0)
    core.take_outbox()
    core.handle(TRACKER, PeersDiscovered(info_hash, (addr(9),), PeerSource.TRACKER), 1.0)
    assert [to for to, _ in sent(core, ConnectPeer)] == [PA2]
    # Once its busy connection is gone, the agent counts as idle again.
    core.handle(
        PA1, PeerDisconnected(info_hash, "pa1/1", DisconnectReason.PEER_CLOSED, "closed"), 2.0
    )
    core.tick(2.0)
    agents = core.status(2.0).agents
    assert [(a.agent_id, a.download_rate) for a in agents if a.agent_id == "pa1"] == [("pa1", 0.0)]


def test_status_lists_the_agents() -> None:
    core = full_core()
    core.handle(STORAGE, AgentInfo(32, None, "tcp://10.0.0.1:7701", ""), 3.0)
    info_hash = opened(core)
    connect(core, info_hash, PA1, "pa1/1", 2, Bitfield.full(NUM_PIECES))
    row = PeerStats(info_hash, "pa1/1", 100, 0, 2e6, 1e3, False, True, True, True, False, 6)
    core.handle(PA1, TransferStats((row,)), 4.0)
    core.tick(6.0)
    agents = {a.agent_id: a for a in core.status(0.0).agents}
    assert set(agents) == {"storage", "pa1", "pa2", "tracker"}
    pa1 = agents["pa1"]
    assert pa1.role is ServiceKind.PEER_AGENT and pa1.host == "host" and pa1.pid == 1
    assert (pa1.connections, pa1.capacity) == (1, 200)
    assert (pa1.download_rate, pa1.upload_rate) == (2e6, 1e3)
    assert pa1.address == "127.0.0.1:6999" and pa1.last_heartbeat == 2.0
    assert agents["storage"].address == "tcp://10.0.0.1:7701"
    assert agents["storage"].last_heartbeat == 3.0


def test_our_own_peer_agents_are_never_dialled() -> None:
    core = full_core()
    info_hash = opened(core)
    ours = PeerAddress("10.0.0.3", 7000)
    core.handle(PA2, AgentInfo(200, ours, "", ""), 0.0)
    peers = (PeerAddress("127.0.0.1", 6999), ours, addr(5))  # PA1's, PA2's, a real peer
    core.handle(TRACKER, PeersDiscovered(info_hash, peers, PeerSource.TRACKER), 0.0)
    assert [m.address for _, m in sent(core, ConnectPeer)] == [addr(5)]


def test_a_silent_peer_agents_rates_leave_the_status_within_one_heartbeat() -> None:
    """Numbers of an agent that may be dead stop counting after one missed heartbeat; its
    connections go when it is declared dead, and a late stats row brings the rates back."""
    core = full_core(heartbeat_interval=5.0, heartbeat_misses=3)
    info_hash = opened(core)
    connect(core, info_hash, PA1, "pa1/1", 2, Bitfield.full(NUM_PIECES))
    row = PeerStats(info_hash, "pa1/1", 10, 0, 2_400_000.0, 0.0, False, True, False, True, False, 6)
    core.handle(PA1, TransferStats((row,)), 0.5)
    assert core.status(0.0).torrents[0].download_rate == 2_400_000.0
    for second in range(1, 8):  # everyone else keeps talking; PA1 is silent
        for other in (PA2, STORAGE, TRACKER):
            core.handle(other, TransferStats(()), float(second))
        core.tick(float(second))
    assert core.status(0.0).torrents[0].download_rate == 0.0  # stale after one heartbeat
    assert core.status(0.0).torrents[0].peers == 1  # not yet dead
    core.handle(PA1, TransferStats((row,)), 7.5)
    assert core.status(0.0).torrents[0].download_rate == 2_400_000.0
