"""Every peer agent reachable by the swarm: a tracker agent beside each peer agent announces
that agent's address and port, and peers learned from the tracker dial in to both hosts.

Four network namespaces (testing/hosts.py) stand for four machines on one /24:

- host 1: ``torviz-coordinator start`` (``embedded_agents = false``, CURVE bus) and the
  storage agent;
- hosts 2 and 3: a peer agent (listening on 6882 and 6883: different ports, so an announce
  naming the wrong agent's port finds nobody) and a tracker agent each, as deploy/README.md
  lays them out;
- host 4: opentracker, then libtorrent seeders started only after torviz announced, so torviz
  cannot know them (its next announce is half an hour away): every connection of the download
  is one a seeder opened, to the address the tracker handed out.

Shown: ``status --json`` lists one announce per host with its address and port, both working;
the seeders connect in to the peer agents on both hosts (each agent's ``incoming`` count, and
every connection flagged ``I``); the multi-file torrent completes identical. With the tracker
agent left on the coordinator's host (the old layout), status says peers cannot reach us and
how to fix it.

The seeders keep libtorrent's default ``allow_multiple_connections_per_ip = false`` (the
loopback test default turns it on): with it on, libtorrent also drops a second connection
carrying a peer id it already holds, and every announce of ours carries the same peer id
(``services/coordinator/core/announcers.py`` notes that trade-off).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
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
from testing.opentracker import OpenTracker
from tests.services.tracker_agent.harness import listed
from tests.support.netns import hosts_or_skip
from torviz.shared.types import PeerAddress

pytestmark = pytest.mark.interop

SUBNET = "10.213.29"
"""This module's hosts; other modules pick other subnets."""
SIZE = 12 * 1024 * 1024 + 4321
PIECE = 256 * 1024
SEEDERS = 3
SLOW = 800_000
"""Bytes per second each seeder uploads: the download takes a few seconds, long enough to
watch its connections in ``status``."""
DOWNLOAD_TIMEOUT = 90.0
REGISTER_TIMEOUT = 30.0
ANNOUNCE_TIMEOUT = 30.0
PEER_PORTS = {2: 6882, 3: 6883}
"""Host -> its peer agent's listen port."""


@dataclass
class Content:
    spec: ContentSpec
    torrent: TorrentFile
    tracker: OpenTracker


@pytest.fixture(scope="module")
def hosts(
    tmp_path_factory: pytest.TempPathFactory, interop_tools: None
) -> Iterator[NamespaceHosts]:
    work = tmp_path_factory.mktemp("announce")
    with hosts_or_skip(work, 4, SUBNET, prefix=f"tva{os.getpid()}") as made:
        yield made


@pytest.fixture(scope="module")
def content(hosts: NamespaceHosts) -> Content:
    """A multi-file torrent announcing to opentracker on host 4 (no seeder yet)."""
    root = hosts.work_dir / "seed"
    spec = make_content(root, multi_file_layout(SIZE), seed=83)
    assert spec.pieces_spanning_files(PIECE) >= 3
    probe = make_torrent(spec, PIECE, [], hosts.work_dir / "probe.torrent")
    tracker = hosts.tracker(4, [probe.info_hash])
    torrent = make_torrent(spec, PIECE, [tracker.http_announce_url], hosts.work_dir / "t.torrent")
    assert torrent.info_hash == probe.info_hash
    return Content(spec, torrent, tracker)


@pytest.fixture
def cluster(hosts: NamespaceHosts, tmp_path: Path) -> Iterator[TorvizCluster]:
    made = TorvizCluster(hosts, tmp_path, bus_port=7810, data_port=7811)
    try:
        yield made
    finally:
        made.stop()


def _agents(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {agent["id"]: agent for agent in document["agents"]}


def _start(cluster: TorvizCluster, trackers: dict[str, int]) -> None:
    """The coordinator and storage agent on host 1, a peer agent on hosts 2 and 3, and tracker
    agents on the hosts ``trackers`` names; returns once all are registered."""
    peers = {f"peer-{host}": host for host in PEER_PORTS}
    cluster.init_keys(["storage-1", *peers, *trackers])
    cluster.start_coordinator()
    cluster.start_agent("storage_agent", "storage-1")
    for name, host in peers.items():
        port = PEER_PORTS[host]
        cluster.start_agent(
            "peer_agent",
            name,
            host=host,
            keys_dir=cluster.agent_keys(name),
            config=f"[peer_agent]\nlisten_ports = [{port}, {port}]\n",
        )
    for name, host in trackers.items():
        keys = cluster.agent_keys(name) if host != cluster.home else None
        cluster.start_agent("tracker_agent", name, host=host, keys_dir=keys)
    wanted = {"storage-1", *peers, *trackers}
    cluster.wait_status(
        lambda d: wanted <= set(_agents(d)), REGISTER_TIMEOUT, f"agents {sorted(wanted)} registered"
    )


def _announces(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    torrents = document["torrents"]
    return {a["tracker_agent"]: a for a in torrents[0]["announces"]} if torrents else {}


def _working(announce: dict[str, Any]) -> bool:
    return [t["state"] for t in announce["trackers"]] == ["working"]


def test_peers_from_the_tracker_connect_in_to_the_peer_agents_on_both_hosts(
    hosts: NamespaceHosts, content: Content, cluster: TorvizCluster
) -> None:
    _start(cluster, {"tracker-2": 2, "tracker-3": 3})
    added = cluster.cli("add", str(content.torrent.path))
    assert added.returncode == 0, added.stderr
    announced = cluster.wait_status(
        lambda d: len(_announces(d)) == 2 and all(map(_working, _announces(d).values())),
        ANNOUNCE_TIMEOUT,
        "both tracker agents announced",
    )
    announces = _announces(announced)
    for host, port in PEER_PORTS.items():
        # Each announce names the address its tracker agent announces from (the tracker
        # records that one) and the port of the peer agent on that host.
        announce = announces[f"tracker-{host}"]
        assert announce["address"] == f"{hosts[host].address}:{port}", announce
        assert announce["peer_agent"] == f"peer-{host}"
        assert _agents(announced)[f"tracker-{host}"]["address"] == hosts[host].address
    assert announced["torrents"][0]["reachable"] is True
    assert [a["reports_totals"] for a in announces.values()].count(True) == 1
    listed = {(a.host, a.port) for a in _listed(hosts, content)}
    expected = {(hosts[host].address, port) for host, port in PEER_PORTS.items()}
    assert expected <= listed, listed

    # Seeders the tracker tells about us (torviz hears of them at its next announce only).
    addresses = [hosts.add_address(4, 101 + i) for i in range(SEEDERS)]
    for address in addresses:
        config = LtPeerConfig(
            role="seeder",
            torrent=content.torrent.path,
            save_path=content.spec.root,
            listen_host=address,
            seed_mode=True,
            upload_limit=SLOW,
            # torviz's peer agents share the session's peer id, and libtorrent keeps one
            # connection per peer id by default: the second agent a seeder reaches would be
            # dropped as a duplicate, and which one is second is a race (lost on loaded CI
            # runs). Here each seeder keeps both, so both hosts' agents are seen dialled in.
            settings={
                "allow_multiple_connections_per_ip": False,
                "allow_multiple_connections_per_pid": True,
            },
        )
        hosts.swarm.peer(config, netns=hosts[4].netns, timeout=30.0)

    incoming: dict[str, int] = {}
    flags: set[str] = set()
    remotes: set[str] = set()

    def watch(document: dict[str, Any]) -> bool:
        for agent_id, agent in _agents(document).items():
            incoming[agent_id] = max(incoming.get(agent_id, 0), int(agent.get("incoming", 0)))
        torrents = document["torrents"]
        if not torrents:
            return False
        for peer in torrents[0]["peer_list"]:
            flags.add(peer["flags"])
            remotes.add(peer["address"].rsplit(":", 1)[0])
        return bool(torrents[0]["progress"] == 1.0)

    cluster.wait_status(watch, DOWNLOAD_TIMEOUT, "download complete from seeders that dialled in")
    assert compare_content(content.spec.root, cluster.download_dir, content.spec) == []
    assert incoming.get("peer-2", 0) > 0 and incoming.get("peer-3", 0) > 0, incoming
    assert flags and all("I" in f for f in flags), flags  # nobody was dialled: all came in
    assert remotes <= set(addresses), remotes
    # The peer agents saw the seeders from the addresses the seeders listen on.
    for host in PEER_PORTS:
        log = cluster.agents[f"peer-{host}"].log_text()
        assert any(f"connected to {address}:" in log for address in addresses), log[-3000:]


def test_a_tracker_agent_beside_no_peer_agent_announces_as_before_and_status_says_so(
    hosts: NamespaceHosts, content: Content, cluster: TorvizCluster
) -> None:
    _start(cluster, {"tracker-1": 1})
    added = cluster.cli("add", str(content.torrent.path))
    assert added.returncode == 0, added.stderr
    document = cluster.wait_status(
        lambda d: "tracker-1" in _announces(d) and _working(_announces(d)["tracker-1"]),
        ANNOUNCE_TIMEOUT,
        "the tracker agent announced",
    )
    [torrent] = document["torrents"]
    assert torrent["reachable"] is False
    [announce] = torrent["announces"]
    # The first peer agent's port, from host 1's address: where nobody listens.
    assert announce["address"] == f"{hosts[1].address}:{PEER_PORTS[2]}"
    assert announce["peer_agent"] is None
    text = cluster.cli("status")
    assert text.returncode == 0, text.stderr
    assert (
        f"  hint       peers from trackers reach {hosts[1].address}:{PEER_PORTS[2]} only if a "
        "peer agent listens there: run a tracker agent on each peer agent's host"
    ) in text.stdout.splitlines(), text.stdout
    assert cluster.coordinator is not None
    assert "run a tracker agent on each peer agent's host" in cluster.coordinator.log_text()


def _listed(hosts: NamespaceHosts, content: Content) -> set[PeerAddress]:
    """Who opentracker hands out for the torrent, asked from host 4 as another peer would."""
    return hosts.call(4, listed, content.tracker, content.torrent.info_hash)
