"""One client, many hosts: torviz's agents on simulated machines, joined over CURVE.

Four network namespaces (testing/hosts.py, made by deploy/netns-hosts.sh) stand for four
machines on one /24:

- host 1: ``torviz-coordinator start`` (``embedded_agents = false``, bus on tcp://HOST1:PORT with
  CURVE keys, control on an ipc socket in its state directory), the storage agent (data on
  tcp://HOST1:PORT2) and the tracker agent;
- hosts 2 and 3: one peer agent each, with a copy of its bundle from ``keys init`` (its key
  pair and the coordinator's public key: what deploy/README.md says to copy);
- host 4: opentracker and three libtorrent seeders, each on its own extra address, uploading
  slowly so that "in the middle of a download" is a real moment.

Everything the user would do goes through the CLI: ``keys init``, ``start``, ``add``,
``status --json``. The content is a multi-file torrent whose pieces cross file boundaries,
compared byte for byte at the end. Shown: (a) the download spreads over both peer agents;
(b) it completes through one when the other is SIGKILLed; (c) agents register again on their
own with a coordinator restarted mid-download; (d) an agent whose key is not authorized is
refused, logged, and given nothing. Every process and namespace is removed afterwards.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import socket
import time
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
from testing.hosts import HostProcess, NamespaceHosts
from testing.swarm import LtPeer
from tests.support.netns import hosts_or_skip

pytestmark = pytest.mark.interop

SUBNET = "10.213.17"
"""This module's hosts; other modules pick other subnets."""
SIZE = 24 * 1024 * 1024 + 12_345
PIECE = 256 * 1024
SEEDERS = 3
SLOW = 1_000_000
"""Bytes per second each seeder uploads: about 8 s for the whole torrent from all three."""
DOWNLOAD_TIMEOUT = 90.0
REGISTER_TIMEOUT = 30.0
PEERS = {2: "peer-1", 3: "peer-2"}
"""Host -> peer agent id (also its key name)."""
_PORTS = itertools.count(7700, 2)


@dataclass
class Seeded:
    content: ContentSpec
    torrent: TorrentFile
    seeders: list[LtPeer]


@pytest.fixture(scope="module")
def hosts(
    tmp_path_factory: pytest.TempPathFactory, interop_tools: None
) -> Iterator[NamespaceHosts]:
    work = tmp_path_factory.mktemp("multihost")
    with hosts_or_skip(work, 4, SUBNET, prefix=f"tvm{os.getpid()}") as made:
        yield made


@pytest.fixture(scope="module")
def seeded(hosts: NamespaceHosts) -> Seeded:
    """The content, its torrent (announcing to opentracker on host 4) and its seeders there."""
    root = hosts.work_dir / "seed"
    content = make_content(root, multi_file_layout(SIZE), seed=71)
    assert content.pieces_spanning_files(PIECE) >= 3
    probe = make_torrent(content, PIECE, [], hosts.work_dir / "probe.torrent")
    tracker = hosts.tracker(4, [probe.info_hash])
    torrent = make_torrent(
        content, PIECE, [tracker.http_announce_url], hosts.work_dir / "t.torrent"
    )
    assert torrent.info_hash == probe.info_hash
    addresses = [hosts.add_address(4, 101 + i) for i in range(SEEDERS)]
    seeders = [hosts.seeder(4, torrent.path, root, a, upload_limit=SLOW) for a in addresses]
    return Seeded(content, torrent, seeders)


@pytest.fixture
def cluster(hosts: NamespaceHosts, tmp_path: Path) -> Iterator[TorvizCluster]:
    bus_port = next(_PORTS)
    made = TorvizCluster(hosts, tmp_path, bus_port=bus_port, data_port=bus_port + 1)
    try:
        yield made
    finally:
        made.stop()


# --- helpers ---------------------------------------------------------------------------------


def _agents(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {agent["id"]: agent for agent in document["agents"]}


def _torrent(document: dict[str, Any]) -> dict[str, Any] | None:
    torrents = document["torrents"]
    return torrents[0] if torrents else None


def _start(cluster: TorvizCluster, peers: dict[int, str] = PEERS) -> dict[str, HostProcess]:
    """Keys, the coordinator, storage and tracker agents on host 1, ``peers`` on their hosts;
    returns once every agent is registered (its id listed by ``status --json``)."""
    cluster.init_keys(["storage-1", "tracker-1", *peers.values()])
    cluster.start_coordinator()
    cluster.start_agent("storage_agent", "storage-1")
    cluster.start_agent("tracker_agent", "tracker-1")
    for host, name in peers.items():
        cluster.start_agent("peer_agent", name, host=host, keys_dir=cluster.agent_keys(name))
    wanted = {"storage-1", "tracker-1", *peers.values()}
    cluster.wait_status(
        lambda d: wanted <= set(_agents(d)), REGISTER_TIMEOUT, f"agents {sorted(wanted)} registered"
    )
    return dict(cluster.agents)


def _add(cluster: TorvizCluster, seeded: Seeded) -> None:
    added = cluster.cli("add", str(seeded.torrent.path))
    assert added.returncode == 0, added.stderr


def _watch(
    cluster: TorvizCluster,
    until: Callable[[dict[str, Any], dict[str, Any]], bool],
    timeout: float,
    what: str,
    seen: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Poll ``status --json`` until ``until(document, torrent)``; records in ``seen`` the most
    connections each agent ever reported."""

    def check(document: dict[str, Any]) -> bool:
        if seen is not None:
            for agent_id, agent in _agents(document).items():
                seen[agent_id] = max(seen.get(agent_id, 0), int(agent["connections"]))
        torrent = _torrent(document)
        return torrent is not None and until(document, torrent)

    return cluster.wait_status(check, timeout, what)


def _complete(_: dict[str, Any], torrent: dict[str, Any]) -> bool:
    return bool(torrent["progress"] == 1.0)


def _assert_identical(seeded: Seeded, cluster: TorvizCluster) -> None:
    assert compare_content(seeded.content.root, cluster.download_dir, seeded.content) == []


def _established_remotes() -> set[tuple[str, int]]:
    """Remote (IPv4 address, port) of this thread's namespace's established TCP connections."""
    remotes = set()
    for line in Path("/proc/thread-self/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) > 3 and fields[3] == "01":  # ESTABLISHED
            address, port = fields[2].split(":")
            remotes.add((socket.inet_ntoa(int(address, 16).to_bytes(4, "little")), int(port, 16)))
    return remotes


# --- the tests -------------------------------------------------------------------------------


def test_a_multi_file_torrent_downloads_through_peer_agents_on_two_hosts(
    hosts: NamespaceHosts, seeded: Seeded, cluster: TorvizCluster
) -> None:
    processes = _start(cluster)
    agents = _agents(cluster.status())
    assert agents["storage-1"]["role"] == "storage_agent"
    assert agents["storage-1"]["address"] == cluster.data  # where peer agents send pieces
    assert agents["tracker-1"]["role"] == "tracker_agent"
    for host, name in PEERS.items():
        # Each peer agent announces the address it is reached at: its own host's.
        assert agents[name]["role"] == "peer_agent"
        assert agents[name]["address"].startswith(f"{hosts[host].address}:"), agents[name]
        assert agents[name]["pid"] == processes[name].pid
    _add(cluster, seeded)
    seen: dict[str, int] = {}
    _watch(cluster, _complete, DOWNLOAD_TIMEOUT, "download complete", seen)
    _assert_identical(seeded, cluster)
    assert seen.get("peer-1", 0) > 0 and seen.get("peer-2", 0) > 0, f"connections per agent: {seen}"


def test_b_a_killed_peer_agent_leaves_the_rest_to_the_other(
    seeded: Seeded, cluster: TorvizCluster
) -> None:
    processes = _start(cluster)
    _add(cluster, seeded)
    seen: dict[str, int] = {}
    before = _watch(
        cluster,
        lambda d, t: (
            float(t["progress"]) >= 0.2
            and all(_agents(d).get(n, {}).get("connections", 0) > 0 for n in PEERS.values())
        ),
        DOWNLOAD_TIMEOUT,
        "both peer agents connected and 20% downloaded",
        seen,
    )
    progress = float(_torrent(before)["progress"])  # type: ignore[index]
    assert progress < 0.9, f"the download was nearly done ({progress:.2f}) before the kill"
    processes["peer-1"].kill()
    _watch(cluster, _complete, DOWNLOAD_TIMEOUT, "download complete after peer-1 died")
    _assert_identical(seeded, cluster)
    assert processes["peer-2"].is_running()
    # Silent for heartbeat_misses * heartbeat_interval (3 s): counted dead and forgotten.
    gone = cluster.wait_status(
        lambda d: "peer-1" not in _agents(d), 15.0, "the dead peer agent dropped from status"
    )
    assert "peer-2" in _agents(gone)


@pytest.mark.parametrize(
    "stop_signal",
    [
        pytest.param(signal.SIGTERM, id="sigterm"),
        pytest.param(signal.SIGKILL, id="sigkill"),
    ],
)
def test_c_a_restarted_coordinator_gets_its_agents_back_and_finishes(
    seeded: Seeded, cluster: TorvizCluster, stop_signal: signal.Signals
) -> None:
    processes = _start(cluster)
    _add(cluster, seeded)
    before = _watch(
        cluster,
        lambda _, t: 0.2 <= float(t["progress"]) < 0.8,
        DOWNLOAD_TIMEOUT,
        "20% downloaded",
    )
    assert cluster.coordinator is not None
    cluster.coordinator.send_signal(stop_signal)
    assert cluster.coordinator.wait(15.0) is not None, "the coordinator did not stop"
    time.sleep(2 * cluster.heartbeat_interval)  # while it is away, the agents wait for it
    for name, process in processes.items():
        assert process.is_running(), f"{name} exited ({process.wait(0)}): {process.log_tail()}"
    cluster.start_coordinator()  # same state directory, same config
    wanted = set(processes)
    after = cluster.wait_status(
        lambda d: wanted <= set(_agents(d)), REGISTER_TIMEOUT, "agents registered again"
    )
    for name, process in processes.items():
        # The same processes, registered again on their own: nobody restarted them.
        assert process.is_running(), f"{name} exited: {process.log_tail()}"
        assert _agents(after)[name]["pid"] == process.pid
    verified = int(_torrent(before)["pieces_verified"])  # type: ignore[index]
    done = _watch(cluster, _complete, DOWNLOAD_TIMEOUT, "download complete after the restart")
    assert int(done["torrents"][0]["pieces_verified"]) >= verified
    _assert_identical(seeded, cluster)


def test_d_an_agent_with_an_unknown_key_is_refused(
    hosts: NamespaceHosts, seeded: Seeded, cluster: TorvizCluster, tmp_path: Path
) -> None:
    # A key pair made apart from the coordinator's folder; the coordinator's public key is no
    # secret, so the intruder has it too.
    other = cluster.init_keys(["peer-9"], keys_dir=tmp_path / "other-keys")
    _start(cluster, peers={2: "peer-1"})
    intruder_keys = cluster.agent_keys("peer-9", source=other)
    shutil.copy2(cluster.keys_dir / "coordinator.key", intruder_keys / "coordinator.key")
    intruder_public = _public_key(intruder_keys / "peer-9.key")
    intruder = cluster.start_agent("peer_agent", "peer-9", host=3, keys_dir=intruder_keys)
    _add(cluster, seeded)
    ever_listed: set[str] = set()
    intruder_remotes: set[tuple[str, int]] = set()

    def note(document: dict[str, Any], torrent: dict[str, Any]) -> bool:
        ever_listed.update(_agents(document))
        intruder_remotes.update(hosts.call(3, _established_remotes))
        return _complete(document, torrent)

    _watch(cluster, note, DOWNLOAD_TIMEOUT, "download complete beside an intruder")
    _assert_identical(seeded, cluster)
    assert "peer-9" not in ever_listed
    # The coordinator never gave it work: it never heard of the torrent (the agent logs
    # "attached HASH" for every torrent the coordinator attaches; peer-1 did).
    attached = re.compile(rf": attached {seeded.torrent.info_hash.hex}")
    assert attached.search(cluster.agents["peer-1"].log_text())
    assert not attached.search(intruder.log_text())
    assert intruder.is_running()  # it keeps knocking; nothing crashed
    # It was never told to dial a peer: no connection from host 3 to a seeder's listening port.
    # (A seeder may dial in: it remembers the port a peer agent of an earlier test listened on
    # at this address. Holding no torrent, the intruder can only drop it.)
    listening = {(s.address.host, s.address.port) for s in seeded.seeders}
    assert not intruder_remotes & listening, intruder_remotes
    assert cluster.coordinator is not None
    deadline = time.monotonic() + 10.0
    log = cluster.coordinator.log_text()
    while f"refused an unknown CURVE key {intruder_public}" not in log:
        assert time.monotonic() < deadline, f"no refusal logged: {log[-3000:]}"
        time.sleep(0.2)
        log = cluster.coordinator.log_text()
    refusal = next(
        line
        for line in log.splitlines()
        if f"refused an unknown CURVE key {intruder_public}" in line
    )
    assert hosts[3].address in refusal, refusal


def _public_key(path: Path) -> str:
    """The Z85 public key of a pyzmq certificate file."""
    import zmq.auth

    public, _ = zmq.auth.load_certificate(path)
    return public.decode("ascii")


# --- where simulated hosts cannot be made ----------------------------------------------------


def test_without_root_the_hosts_skip_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    for ci in ("", "true"):  # CI runs as root: without root this is a skip even there
        monkeypatch.setenv("CI", ci)
        with (
            pytest.raises(pytest.skip.Exception, match="building network namespaces needs root"),
            hosts_or_skip(tmp_path, 1, "10.213.18"),
        ):
            pass


def test_in_ci_a_missing_ip_command_is_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with (
        pytest.raises(pytest.fail.Exception, match=r"iproute2.*CI=true"),
        hosts_or_skip(tmp_path, 1, "10.213.18"),
    ):
        pass
    monkeypatch.setenv("CI", "")
    with (
        pytest.raises(pytest.skip.Exception, match="iproute2"),
        hosts_or_skip(tmp_path, 1, "10.213.18"),
    ):
        pass
