"""Magnet links, metadata and PeX with the peer agents on other hosts than the coordinator.

Four network namespaces (testing/hosts.py) stand for four machines on one /24:

- host 1: ``torviz-coordinator start`` (``embedded_agents = false``, CURVE bus), the storage
  agent and the tracker agent, and NO peer agent;
- hosts 2 and 3: one peer agent each (listening on 6882 and 6883);
- host 4: opentracker (on its own address, which host 1 reaches) and libtorrent peers, each on
  its own extra address. Host 1 has a blackhole route to every one of those extra addresses:
  nothing on the coordinator's host can reach them (checked), so whatever torviz gets from
  them came through a peer agent on host 2 or 3.

Shown (issue 14, "peers on several hosts"):

- a magnet link naming seeders (``x.pe``) that are not up yet: ``status --json`` shows the
  torrent in the ``metadata`` state; once they are, the remote peer agents dial them, the info
  dictionary is fetched through them and the multi-file torrent completes byte-identical,
  with connections held by both remote agents and every peer's source ``magnet``; the same
  with a magnet link naming only opentracker (``tr=``), announced to from host 1, every
  peer's source ``tracker``;
- serving: a libtorrent leecher on host 4 given only a magnet link naming the peer agent on
  host 2 gets the info dictionary (byte for byte the original) and all the data from it;
- PeX: seeder A (named by the magnet) tells the remote agent's connection, through
  ``ut_pex`` alone, about seeder B, which PeX off never dials torviz; torviz dials B from a
  remote agent, lists it with source ``pex`` and downloads from it.

Every process and namespace is removed afterwards (the ``hosts`` and ``cluster`` fixtures).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testing.cluster import TorvizCluster
from testing.content import (
    ContentSpec,
    TorrentFile,
    compare_content,
    make_content,
    make_torrent,
    multi_file_layout,
)
from testing.hosts import NamespaceHosts
from testing.lt_peer import LtPeerConfig
from testing.swarm import LtPeer
from tests.support.magnets import info_dict
from tests.support.netns import hosts_or_skip

pytestmark = pytest.mark.interop

SUBNET = "10.213.41"
"""This module's hosts; other modules pick other subnets."""
SIZE = 16 * 1024 * 1024 + 12_345
PIECE = 16 * 1024
"""Small pieces: about 1,000 of them, so the info dictionary is two metadata pieces."""
SLOW = 1_000_000
"""Bytes per second each seeder uploads: the download lasts long enough to watch in status."""
DOWNLOAD_TIMEOUT = 120.0
REGISTER_TIMEOUT = 30.0
PEER_PORTS = {2: 6882, 3: 6883}
"""Host -> its peer agent's listen port."""
PEER_NAMES = {host: f"peer-{host}" for host in PEER_PORTS}
SEED_HOST = 4
LT_PORT = 6900
"""libtorrent peers listen on LT_PORT + the last octet of their address."""
KEEP_SEED_LINKS = {"close_redundant_connections": False}
_BUS_PORTS = iter(range(7840, 7900, 2))


@dataclass
class Content:
    spec: ContentSpec
    torrent: TorrentFile
    """No tracker: every peer torviz finds comes from the magnet link or PeX."""
    tracked: TorrentFile
    """The same info dictionary, announcing to opentracker on host 4 (for ``tr=``)."""
    tracker_url: str


@pytest.fixture(scope="module")
def hosts(
    tmp_path_factory: pytest.TempPathFactory, interop_tools: None
) -> Iterator[NamespaceHosts]:
    work = tmp_path_factory.mktemp("multihost-magnet")
    with hosts_or_skip(work, 4, SUBNET, prefix=f"tvg{os.getpid()}") as made:
        yield made


@pytest.fixture(scope="module")
def content(hosts: NamespaceHosts) -> Content:
    spec = make_content(hosts.work_dir / "seed", multi_file_layout(SIZE), seed=141)
    assert spec.pieces_spanning_files(PIECE) >= 3
    torrent = make_torrent(spec, PIECE, [], hosts.work_dir / "t.torrent")
    assert len(info_dict(torrent.path)) > 16 * 1024, "the info dict fits one metadata piece"
    tracker = hosts.tracker(SEED_HOST, [torrent.info_hash])
    url = tracker.http_announce_url
    tracked = make_torrent(spec, PIECE, [url], hosts.work_dir / "tracked.torrent")
    assert tracked.info_hash == torrent.info_hash
    return Content(spec, torrent, tracked, url)


@pytest.fixture
def lt_peers(hosts: NamespaceHosts) -> Iterator[list[LtPeer]]:
    """libtorrent peers of one test, stopped at its end (the next test must not meet them)."""
    started: list[LtPeer] = []
    yield started
    for peer in started:
        peer.process.request_stop()
    for peer in started:
        peer.stop()


@pytest.fixture
def cluster(hosts: NamespaceHosts, tmp_path: Path) -> Iterator[TorvizCluster]:
    bus_port = next(_BUS_PORTS)
    made = TorvizCluster(hosts, tmp_path, bus_port=bus_port, data_port=bus_port + 1)
    try:
        yield made
    finally:
        made.stop()


# --- helpers ---------------------------------------------------------------------------------


def _start(cluster: TorvizCluster) -> None:
    """Coordinator, storage and tracker agents on host 1; a peer agent on hosts 2 and 3 (none
    on host 1). Returns once every agent is registered."""
    cluster.init_keys(["storage-1", "tracker-1", *PEER_NAMES.values()])
    cluster.start_coordinator()
    cluster.start_agent("storage_agent", "storage-1")
    cluster.start_agent("tracker_agent", "tracker-1")
    for host, name in PEER_NAMES.items():
        port = PEER_PORTS[host]
        cluster.start_agent(
            "peer_agent",
            name,
            host=host,
            keys_dir=cluster.agent_keys(name),
            config=f"[peer_agent]\nlisten_ports = [{port}, {port}]\n",
        )
    wanted = {"storage-1", "tracker-1", *PEER_NAMES.values()}
    document = cluster.wait_status(
        lambda d: wanted <= set(_agents(d)), REGISTER_TIMEOUT, f"agents {sorted(wanted)} registered"
    )
    peer_agents = {i for i, a in _agents(document).items() if a["role"] == "peer_agent"}
    assert peer_agents == set(PEER_NAMES.values()), "a peer agent on the coordinator's host"


def _agents(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {agent["id"]: agent for agent in document["agents"]}


def _torrent(document: dict[str, Any]) -> dict[str, Any] | None:
    torrents = document["torrents"]
    return torrents[0] if torrents else None


def _unreachable_from_home(hosts: NamespaceHosts, address: str) -> str:
    """A blackhole route to ``address`` on host 1 (removed with the namespaces); returns it."""
    route = ["ip", "-n", hosts[1].netns, "route", "replace", "blackhole", f"{address}/32"]
    result = subprocess.run(route, capture_output=True, text=True, timeout=10, check=False)
    assert result.returncode == 0, result.stderr
    return address


def _lt_address(hosts: NamespaceHosts, last_octet: int) -> str:
    """One more address of host 4 that host 1 cannot reach."""
    return _unreachable_from_home(hosts, hosts.add_address(SEED_HOST, last_octet))


def _lt_peer(
    hosts: NamespaceHosts, started: list[LtPeer], config: LtPeerConfig, *, wait: bool = True
) -> LtPeer:
    peer = hosts.swarm.peer(config, netns=hosts[SEED_HOST].netns, wait=wait, timeout=30.0)
    started.append(peer)
    return peer


def _seeder_config(
    content: Content, address: str, *, tracked: bool = False, **options: Any
) -> LtPeerConfig:
    return LtPeerConfig(
        role="seeder",
        torrent=(content.tracked if tracked else content.torrent).path,
        save_path=content.spec.root,
        listen_host=address,
        listen_port=LT_PORT + int(address.rsplit(".", 1)[1]),
        seed_mode=True,
        **options,
    )


def _reaches(address: str, port: int) -> bool:
    """Whether a TCP connection to ``address:port`` opens from this thread's namespace."""
    try:
        with socket.create_connection((address, port), timeout=2.0):
            return True
    except OSError:
        return False


def _check_only_remote_hosts_reach(hosts: NamespaceHosts, peers: list[LtPeer]) -> None:
    for peer in peers:
        where = (peer.address.host, peer.address.port)
        assert not hosts.call(1, _reaches, *where), f"host 1 reaches {peer.address}"
        for host in PEER_PORTS:
            assert hosts.call(host, _reaches, *where), f"host {host} cannot reach {peer.address}"


@dataclass
class Watched:
    """What ``status --json`` showed over a wait."""

    states: list[str]
    connections: dict[str, int]
    """Most connections each agent ever reported."""
    peers: dict[str, list[dict[str, Any]]]
    """Every row of ``peer_list`` seen, by peer address."""


def _watch(
    cluster: TorvizCluster,
    until: Callable[[dict[str, Any]], bool],
    timeout: float,
    what: str,
    watched: Watched,
) -> dict[str, Any]:
    def check(document: dict[str, Any]) -> bool:
        for agent_id, agent in _agents(document).items():
            watched.connections[agent_id] = max(
                watched.connections.get(agent_id, 0), int(agent["connections"])
            )
        torrent = _torrent(document)
        if torrent is None:
            return False
        if not watched.states or watched.states[-1] != torrent["state"]:
            watched.states.append(torrent["state"])
        for peer in torrent["peer_list"]:
            watched.peers.setdefault(peer["address"], []).append(peer)
        return until(torrent)

    return cluster.wait_status(check, timeout, what)


def _attached_by_magnet(cluster: TorvizCluster, content: Content) -> None:
    """Every remote peer agent was attached to the torrent from the magnet link (no info yet)."""
    for name in PEER_NAMES.values():
        log = cluster.agents[name].log_text()
        assert f"attached {content.torrent.info_hash.hex} from a magnet link" in log, log[-3000:]


def _fetched_by_coordinator(cluster: TorvizCluster, content: Content) -> None:
    assert cluster.coordinator is not None
    log = cluster.coordinator.log_text()
    size = len(info_dict(content.torrent.path))
    assert f"metadata fetched ({size} bytes)" in log, cluster.coordinator.log_tail("welcomed cli")


# --- the tests -------------------------------------------------------------------------------


def test_a_magnet_with_only_peer_addresses_fetches_through_peer_agents_on_other_hosts(
    hosts: NamespaceHosts, content: Content, cluster: TorvizCluster, lt_peers: list[LtPeer]
) -> None:
    addresses = [_lt_address(hosts, 101 + i) for i in range(3)]
    configs = [_seeder_config(content, a, upload_limit=SLOW) for a in addresses]
    seeder_addresses = [f"{c.listen_host}:{c.listen_port}" for c in configs]
    _start(cluster)
    magnet = content.torrent.magnet(peers=seeder_addresses, name=content.spec.name)
    assert "tr=" not in magnet
    added = cluster.cli("add", magnet)
    assert added.returncode == 0, added.stderr
    watched = Watched([], {}, {})
    # Nobody listens at the magnet's addresses yet: the torrent waits for its info dictionary.
    waiting = _watch(
        cluster,
        lambda t: t["state"] == "metadata",
        30,
        "the torrent in the metadata state",
        watched,
    )
    torrent = _torrent(waiting)
    assert torrent is not None and torrent["metadata"] is not None, torrent
    assert torrent["metadata"]["received"] == 0, torrent
    assert torrent["name"] == content.spec.name
    _attached_by_magnet(cluster, content)

    # The seeders come up; the remote agents dial them again (redial after 10 s).
    seeders = [_lt_peer(hosts, lt_peers, c, wait=False) for c in configs]
    for seeder in seeders:
        seeder.wait_ready(30)
    _check_only_remote_hosts_reach(hosts, seeders)
    _watch(cluster, lambda t: t["progress"] == 1.0, DOWNLOAD_TIMEOUT, "download complete", watched)
    assert watched.states[0] == "metadata" and watched.states[-1] != "metadata", watched.states
    _downloaded_through_remote_agents(cluster, content, watched, seeder_addresses, "magnet")


def test_a_magnet_with_only_a_tracker_fetches_through_peer_agents_on_other_hosts(
    hosts: NamespaceHosts, content: Content, cluster: TorvizCluster, lt_peers: list[LtPeer]
) -> None:
    """The tracker agent on host 1 reaches opentracker; the seeders it hands out are reachable
    only from hosts 2 and 3."""
    configs = [
        _seeder_config(content, _lt_address(hosts, 104 + i), tracked=True, upload_limit=SLOW)
        for i in range(3)
    ]
    seeders = [_lt_peer(hosts, lt_peers, c, wait=False) for c in configs]
    for seeder in seeders:
        seeder.wait_ready(30)
        assert seeder.announce_result == "ok", seeder
    _check_only_remote_hosts_reach(hosts, seeders)
    _start(cluster)
    magnet = content.torrent.magnet(trackers=[content.tracker_url], name=content.spec.name)
    assert "x.pe=" not in magnet
    added = cluster.cli("add", magnet)
    assert added.returncode == 0, added.stderr
    watched = Watched([], {}, {})
    _watch(cluster, lambda t: t["progress"] == 1.0, DOWNLOAD_TIMEOUT, "download complete", watched)
    assert watched.states[-1] != "metadata", watched.states
    _attached_by_magnet(cluster, content)
    addresses = [str(s.address) for s in seeders]
    _downloaded_through_remote_agents(cluster, content, watched, addresses, "tracker")


def _downloaded_through_remote_agents(
    cluster: TorvizCluster,
    content: Content,
    watched: Watched,
    seeder_addresses: list[str],
    source: str,
) -> None:
    """Byte-identical, the metadata fetched by the coordinator, connections held by both
    remote agents and only to the seeders, each learnt from ``source``; the exported .torrent
    holds the original info dictionary."""
    assert compare_content(content.spec.root, cluster.download_dir, content.spec) == []
    _fetched_by_coordinator(cluster, content)
    for name in PEER_NAMES.values():
        assert watched.connections.get(name, 0) > 0, watched.connections
    assert watched.peers, "status never listed a peer"
    assert set(watched.peers) <= set(seeder_addresses), set(watched.peers)
    sources = {row["source"] for rows in watched.peers.values() for row in rows}
    assert sources == {source}, sources
    exported = cluster.cli("export", content.torrent.info_hash.hex, str(cluster.work_dir / "x.t"))
    assert exported.returncode == 0, exported.stderr
    assert info_dict(content.torrent.path) in (cluster.work_dir / "x.t").read_bytes()


def test_b_a_libtorrent_leecher_gets_metadata_and_data_from_a_remote_peer_agent(
    hosts: NamespaceHosts, content: Content, cluster: TorvizCluster, lt_peers: list[LtPeer]
) -> None:
    shutil.copytree(content.spec.root, cluster.download_dir, dirs_exist_ok=True)
    _start(cluster)
    added = cluster.cli("add", str(content.torrent.path))
    assert added.returncode == 0, added.stderr
    watched = Watched([], {}, {})
    _watch(cluster, lambda t: t["state"] == "seeding", 60, "torviz seeding", watched)

    served_by = f"{hosts[2].address}:{PEER_PORTS[2]}"
    magnet = content.torrent.magnet(peers=[served_by])
    fetched = hosts.work_dir / "lt-fetched.torrent"
    out = hosts.work_dir / "lt-out"
    out.mkdir(exist_ok=True)
    config = LtPeerConfig(
        role="leecher",
        torrent=fetched,
        save_path=out,
        listen_host=_lt_address(hosts, 120),
        magnet=magnet,
        report_peers=True,
    )
    leecher = _lt_peer(hosts, lt_peers, config)
    event = leecher.wait_metadata(30)
    assert event["info_hash"] == content.torrent.info_hash.hex
    # libtorrent wrote the info dict it got from the remote agent: byte for byte the original.
    assert info_dict(fetched) == info_dict(content.torrent.path)
    status = leecher.wait_finished(DOWNLOAD_TIMEOUT)
    assert status.total_payload_download >= content.spec.total_size
    assert compare_content(content.spec.root, out, content.spec) == []
    # Its only peer was the agent on host 2 (the magnet named nobody else, and nothing else
    # could tell it of anyone), which says it uploaded the whole torrent.
    assert {p["address"] for p in leecher.connected_peers()} <= {served_by}
    _watch(
        cluster,
        lambda t: t["uploaded"] >= content.spec.total_size,
        15,
        "torviz's upload counted",
        watched,
    )
    assert f"connected to {config.listen_host}:" in cluster.agents["peer-2"].log_text()
    assert f"connected to {config.listen_host}:" not in cluster.agents["peer-3"].log_text()


def test_c_pex_from_a_peer_of_a_remote_agent_leads_to_a_second_seeder(
    hosts: NamespaceHosts, content: Content, cluster: TorvizCluster, lt_peers: list[LtPeer]
) -> None:
    """B has PeX off (it never learns of torviz, so never dials it); A dials B and keeps the
    link, and is the only peer the magnet names. A's ``ut_pex`` to the remote agent holding
    its connection is the only way torviz can learn B's address."""
    b = _lt_peer(
        hosts,
        lt_peers,
        _seeder_config(
            content,
            _lt_address(hosts, 112),
            disable_pex=True,
            settings=KEEP_SEED_LINKS,
            upload_limit=SLOW,
        ),
    )
    a = _lt_peer(
        hosts,
        lt_peers,
        _seeder_config(
            content,
            _lt_address(hosts, 111),
            settings=KEEP_SEED_LINKS,
            connect_peers=(str(b.address),),
            upload_limit=256 * 1024,
            report_peers=True,
        ),
    )
    a.wait_peer(lambda p: p["address"] == str(b.address) and p["seed"], 20)
    _check_only_remote_hosts_reach(hosts, [a, b])
    _start(cluster)
    magnet = content.torrent.magnet(peers=[a.address])
    assert str(b.address) not in magnet
    added = cluster.cli("add", magnet)
    assert added.returncode == 0, added.stderr

    watched = Watched([], {}, {})

    def b_served_us(torrent: dict[str, Any]) -> bool:
        rows = watched.peers.get(str(b.address), [])
        return any(r["downloaded"] > 0 for r in rows) or torrent["progress"] == 1.0

    _watch(cluster, b_served_us, 90, "B listed and downloaded from", watched)
    rows = watched.peers.get(str(b.address), [])
    assert rows, f"torviz never listed B ({b.address}); peers seen: {sorted(watched.peers)}"
    assert {r["source"] for r in rows} == {"pex"}, rows
    _watch(cluster, lambda t: t["progress"] == 1.0, DOWNLOAD_TIMEOUT, "download complete", watched)
    assert compare_content(content.spec.root, cluster.download_dir, content.spec) == []
    # B's only leecher is torviz, and only a remote agent can reach it.
    b.wait_status(lambda s: s.total_payload_upload > 0, 10)
    dialled_b = [
        name
        for name in PEER_NAMES.values()
        if f"connected to {b.address}" in cluster.agents[name].log_text()
    ]
    assert dialled_b, "no remote peer agent logged a connection to B"
