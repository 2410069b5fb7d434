"""The tracker agent's DHT node as a real process on a real UDP socket on loopback.

The test plays the coordinator (the bus) and a DHT node of its own (the sans-IO ``DhtNode`` on
a UDP socket of the test): the agent reports its DHT port, joins through the test's node,
answers its queries, looks a tracked torrent up and reports the peers another node announced
there as ``PeersDiscovered(DHT)``, pings a node a peer's ``PORT`` named, reports its state,
and keeps its table across a restart, joining again without any bootstrap list.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from tests.services.tracker_agent.conftest import StartAgent
from tests.services.tracker_agent.harness import PEER_ID, Coordinator, fresh_info_hash
from tests.services.tracker_agent.loopback_dht import (
    ANNOUNCED,
    LOOPBACK,
    LoopbackNode,
    free_udp_port,
)
from torviz.shared.bus import (
    AgentInfo,
    DhtNodeSeen,
    DhtStatusChanged,
    HostPort,
    PeersDiscovered,
    PeerSource,
    Shutdown,
    TrackTorrent,
)
from torviz.shared.types import InfoHash, PeerAddress


def dht_config(port: int, bootstrap: list[PeerAddress]) -> str:
    nodes = ", ".join(f'"{a.host}:{a.port}"' for a in bootstrap)
    return (
        f'announce_timeout = 1.0\ndht = true\ndht_port = {port}\nbind_address = "{LOOPBACK}"\n'
        f"dht_bootstrap = [{nodes}]\n"
    )


def track(info_hash: InfoHash, nodes: tuple[HostPort, ...] = ()) -> TrackTorrent:
    return TrackTorrent(info_hash, (), PEER_ID, 51413, False, 0, 0, 100, nodes)


def test_the_dht_node_joins_answers_looks_up_reports_and_keeps_its_table(
    coordinator: Coordinator, start_agent: StartAgent, tmp_path: Path
) -> None:
    ours = LoopbackNode()
    try:
        port = free_udp_port()
        agent_address = PeerAddress(LOOPBACK, port)
        state = tmp_path / "state"
        state.mkdir()
        info_hash = fresh_info_hash()
        ours.store_announce(info_hash)  # before the agent is in our table
        agent = start_agent(dht_config(port, [ours.address]), "--state-dir", str(state))
        info = coordinator.wait_for(lambda m: isinstance(m, AgentInfo), 10.0)
        assert isinstance(info, AgentInfo) and info.dht_port == port

        # It joins through the bootstrap node: find_node for its own id.
        assert ours.pump(lambda: ours.asked("find_node", agent_address), 10.0)
        # It answers our queries (its node enters our table).
        ours.node.ping(agent_address, ours.now())
        assert ours.pump(lambda: ours.node.table().counts(ours.now()).nodes >= 1, 10.0)

        # A tracked torrent is looked up; what another node announced comes back as peers.
        coordinator.send(track(info_hash))
        assert ours.pump(lambda: ours.asked("get_peers", agent_address), 10.0)
        found = coordinator.wait_for(
            lambda m: isinstance(m, PeersDiscovered) and m.info_hash == info_hash, 10.0
        )
        assert isinstance(found, PeersDiscovered)
        assert found.source is PeerSource.DHT and found.peers == (ANNOUNCED,)
        # After its lookup ends (the in-memory node it was told of never answers: a timeout).
        assert ours.pump(lambda: ours.asked("announce_peer", agent_address), 30.0)

        # A peer's PORT: the agent pings that node.
        pinger = LoopbackNode()
        try:
            coordinator.send(DhtNodeSeen(pinger.address))
            assert pinger.pump(lambda: pinger.asked("ping", agent_address), 10.0)
        finally:
            pinger.close()

        status = coordinator.wait_for(
            lambda m: (
                isinstance(m, DhtStatusChanged)
                and m.summary.nodes >= 1
                and any(row.info_hash == info_hash and row.peers_found for row in m.torrents)
            ),
            10.0,
        )
        assert isinstance(status, DhtStatusChanged) and status.summary.port == port

        coordinator.send(Shutdown("test"))
        ours.pump(lambda: agent.process.poll() is not None, 10.0)  # answering while it stops
        assert agent.wait_exit(10.0) == 0
        assert (state / "dht.dat").stat().st_size > 0
    finally:
        ours.close()


def test_a_restarted_agent_rejoins_from_its_saved_table_without_bootstrap(
    coordinator: Coordinator, start_agent: StartAgent, tmp_path: Path
) -> None:
    ours = LoopbackNode()
    try:
        port = free_udp_port()
        agent_address = PeerAddress(LOOPBACK, port)
        state = tmp_path / "state"
        state.mkdir()
        info_hash = fresh_info_hash()
        ours.store_announce(info_hash)
        first = start_agent(dht_config(port, [ours.address]), "--state-dir", str(state))
        assert ours.pump(lambda: ours.asked("find_node", agent_address), 10.0)
        ours.pump(lambda: False, 1.0)  # answer its join
        coordinator.send(Shutdown("test"))
        ours.pump(lambda: first.process.poll() is not None, 10.0)
        assert first.wait_exit(10.0) == 0
        assert (state / "dht.dat").exists()

        coordinator.replace()
        ours.queries.clear()
        start_agent(dht_config(port, []), "--state-dir", str(state))
        coordinator.send(track(info_hash))
        assert ours.pump(lambda: ours.asked("get_peers", agent_address), 15.0)
        found = coordinator.wait_for(
            lambda m: isinstance(m, PeersDiscovered) and m.info_hash == info_hash, 10.0
        )
        assert isinstance(found, PeersDiscovered) and found.peers == (ANNOUNCED,)
    finally:
        ours.close()


def test_a_torrents_nodes_are_bootstrap_candidates_and_a_private_torrent_is_left_alone(
    coordinator: Coordinator, start_agent: StartAgent
) -> None:
    ours = LoopbackNode()
    try:
        port = free_udp_port()
        agent_address = PeerAddress(LOOPBACK, port)
        start_agent(dht_config(port, []))
        private = TrackTorrent(fresh_info_hash(), (), PEER_ID, 51413, True, 0, 0, 100)
        public = track(fresh_info_hash(), (HostPort(LOOPBACK, ours.address.port),))
        coordinator.send(private)
        coordinator.send(public)
        # The .torrent's node is the only one it knows of: it joins through it.
        assert ours.pump(lambda: ours.asked("find_node", agent_address), 10.0)
        assert ours.pump(lambda: ours.asked("get_peers", agent_address), 10.0)
        status = coordinator.wait_for(
            lambda m: (
                isinstance(m, DhtStatusChanged)
                and any(row.info_hash == public.info_hash for row in m.torrents)
            ),
            10.0,
        )
        assert isinstance(status, DhtStatusChanged)
        assert [row.info_hash for row in status.torrents] == [public.info_hash]
    finally:
        ours.close()


def test_garbage_is_dropped_and_counted_and_the_node_still_answers(
    coordinator: Coordinator, start_agent: StartAgent
) -> None:
    ours = LoopbackNode()
    try:
        port = free_udp_port()
        agent_address = PeerAddress(LOOPBACK, port)
        agent = start_agent(dht_config(port, []))
        coordinator.wait_for(lambda m: isinstance(m, AgentInfo), 10.0)
        rng = random.Random(7)
        for size in range(2000):  # a burst of garbage: its rate limit drops most of it
            ours.sock.sendto(rng.randbytes(size % 1400 + 1), (LOOPBACK, port))
        time.sleep(1.5)  # past the per-source rate limit's burst
        ours.node.ping(agent_address, ours.now())
        assert ours.pump(lambda: ours.node.table().counts(ours.now()).nodes >= 1, 10.0)
        status = coordinator.wait_for(
            lambda m: isinstance(m, DhtStatusChanged) and m.summary.packets_dropped >= 100, 10.0
        )
        assert isinstance(status, DhtStatusChanged)
        assert agent.process.poll() is None
        assert "Traceback" not in agent.log()
    finally:
        ours.close()
