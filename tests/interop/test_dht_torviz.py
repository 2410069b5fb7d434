"""torviz's DHT node against a loopback DHT of 8 libtorrent sessions (issue 15).

- ``download MAGNET`` with no ``tr`` and no ``x.pe`` downloads from a libtorrent seeder that
  only announced to the DHT, byte-identical;
- the daemon shows it: the seeder's source is ``dht`` in ``status --json``, and the top-level
  ``dht`` object counts the nodes of its table;
- a libtorrent leecher with a bare magnet link finds torviz (seeding a .torrent without
  trackers) through the DHT and downloads from it;
- restarted with an EMPTY bootstrap list, the daemon reloads its table from the state
  directory and a lookup still finds a seeder.

The libtorrent side alone is checked by test_dht_libtorrent.py (if that fails, these say
nothing about torviz). Everything is on 127.0.0.0/8; every wait is bounded.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testing.content import (
    ContentSpec,
    TorrentFile,
    compare_content,
    make_content,
    make_torrent,
    single_file_layout,
)
from testing.dht import LtDht, dht_seeder, torviz_dht_config
from testing.lt_dht import DHT_LOOPBACK
from testing.swarm import LtPeerConfig, Swarm, free_port, next_loopback_address
from tests.support.daemon import TorvizDaemon
from tests.support.dht import status_document, wait_document
from tests.support.magnets import DownloadRun

pytestmark = pytest.mark.interop

PIECE = 64 * 1024
DOWNLOAD_TIMEOUT = 90.0


@pytest.fixture
def dht(tmp_path: Path, interop_tools: None) -> Iterator[LtDht]:
    with LtDht(8, log_path=tmp_path / "lt-dht.log") as net:
        net.wait_ready(30)
        net.wait_converged(timeout=30)
        yield net


@pytest.fixture
def port() -> int:
    return free_port("127.0.0.1")


@pytest.fixture
def daemons() -> Iterator[list[TorvizDaemon]]:
    started: list[TorvizDaemon] = []
    yield started
    for daemon in started:
        daemon.stop()


def _content(tmp_path: Path, seed: int, size: int = 2 * 1024 * 1024 + 4321) -> ContentSpec:
    return make_content(tmp_path / f"seed-{seed}", single_file_layout(size), seed=seed)


def _torrent(spec: ContentSpec, tmp_path: Path) -> TorrentFile:
    return make_torrent(spec, PIECE, [], tmp_path / f"{spec.root.name}.torrent")


def _bare_magnet(torrent: TorrentFile) -> str:
    magnet = f"magnet:?xt=urn:btih:{torrent.info_hash.hex}"
    assert "tr=" not in magnet and "x.pe=" not in magnet
    return magnet


def _daemon(
    daemons: list[TorvizDaemon], tmp_path: Path, config: Path, download_dir: Path
) -> TorvizDaemon:
    download_dir.mkdir(parents=True, exist_ok=True)
    daemon = TorvizDaemon(tmp_path / "state", config, download_dir, tmp_path / "daemon.log")
    daemons.append(daemon)
    return daemon.start()


def _dht_nodes(document: dict[str, Any]) -> int:
    totals = document.get("dht")
    return int(totals.get("nodes", 0)) if isinstance(totals, dict) else 0


def test_download_bare_magnet_from_dht_only_seeder(
    dht: LtDht, swarm: Swarm, tmp_path: Path, port: int
) -> None:
    spec = _content(tmp_path, 1501)
    torrent = _torrent(spec, tmp_path)
    seeder = dht_seeder(swarm, dht, torrent.path, spec.root)
    dht.wait_findable(torrent.info_hash.hex, str(seeder.address), node=7, timeout=30)
    config = torviz_dht_config(tmp_path / "torviz.toml", port, dht.nodes[3:6])
    with DownloadRun(_bare_magnet(torrent), tmp_path / "out", config, tmp_path / "dl.log") as run:
        assert run.wait(DOWNLOAD_TIMEOUT) == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    assert compare_content(spec.root, tmp_path / "out", spec) == []


def test_status_shows_dht_nodes_and_dht_peers(
    dht: LtDht, swarm: Swarm, tmp_path: Path, port: int, daemons: list[TorvizDaemon]
) -> None:
    spec = _content(tmp_path, 1502)
    torrent = _torrent(spec, tmp_path)
    # Slow enough (about 4 s) for status to list the seeder while it serves us.
    seeder = dht_seeder(swarm, dht, torrent.path, spec.root, upload_limit=512 * 1024)
    dht.wait_findable(torrent.info_hash.hex, str(seeder.address), node=7, timeout=30)
    config = torviz_dht_config(tmp_path / "torviz.toml", port, dht.nodes[:3])
    daemon = _daemon(daemons, tmp_path, config, tmp_path / "dl")
    document = wait_document(daemon.cli, lambda d: _dht_nodes(d) >= 4, 30, "4 DHT nodes")
    agents = [a for a in document["agents"] if a.get("dht")]
    assert len(agents) == 1 and agents[0]["dht"]["port"] == port, document["agents"]
    added = daemon.cli("add", _bare_magnet(torrent))
    assert added.returncode == 0, added.stderr
    short = torrent.info_hash.hex[:8]
    seen: list[dict[str, Any]] = []

    def seeder_listed(entry: dict[str, Any]) -> bool:
        seen.extend(p for p in entry.get("peer_list", []) if p["address"] == str(seeder.address))
        return bool(seen) or entry["progress"] == 1.0

    daemon.wait_status(short, seeder_listed, DOWNLOAD_TIMEOUT)
    assert seen, "torviz never listed the seeder among its peers"
    assert {p["source"] for p in seen} == {"dht"}, seen
    entry = daemon.wait_status(short, lambda e: e["progress"] == 1.0, DOWNLOAD_TIMEOUT)
    assert entry["dht"] is not None and entry["dht"]["peers_found"] >= 1, entry["dht"]
    assert compare_content(spec.root, tmp_path / "dl", spec) == []
    document = status_document(daemon.cli)
    assert document["dht"]["nodes"] >= 4 and document["dht"]["good_nodes"] >= 1, document["dht"]


def test_libtorrent_leecher_finds_torviz_through_the_dht(
    dht: LtDht, swarm: Swarm, tmp_path: Path, port: int, daemons: list[TorvizDaemon]
) -> None:
    spec = _content(tmp_path, 1503)
    torrent = _torrent(spec, tmp_path)
    config = torviz_dht_config(tmp_path / "torviz.toml", port, dht.nodes[:3])
    daemon = _daemon(daemons, tmp_path, config, spec.root)
    added = daemon.cli("add", str(torrent.path))
    assert added.returncode == 0, added.stderr
    short = torrent.info_hash.hex[:8]
    daemon.wait_status(short, lambda e: e["state"] == "seeding", 60)
    torviz = f"127.0.0.1:{port}"
    # torviz announced itself: a libtorrent node it never bootstrapped from finds it.
    dht.wait_findable(torrent.info_hash.hex, torviz, node=7, timeout=60)
    leecher = swarm.peer(
        LtPeerConfig(
            role="leecher",
            torrent=tmp_path / "lt-fetched.torrent",
            save_path=tmp_path / "lt-out",
            listen_host=next_loopback_address(),
            magnet=_bare_magnet(torrent),
            dht_nodes=tuple(dht.nodes[6:8]),
            dht_announce_every=1.0,
            report_peers=True,
            status_interval=0.1,
            # About 2 s of transfer, so that status events list torviz while it serves.
            settings={
                **DHT_LOOPBACK,
                "ignore_limits_on_local_network": False,
                "download_rate_limit": 1 << 20,
            },
        )
    )
    leecher.wait_metadata(60)
    leecher.wait_finished(DOWNLOAD_TIMEOUT)
    assert compare_content(spec.root, tmp_path / "lt-out", spec) == []
    listed = [
        peer
        for event in leecher.process.events()
        for peer in event.get("peers", [])
        if isinstance(peer, dict) and peer.get("address") == torviz
    ]
    everyone = [p for e in leecher.process.events() for p in e.get("peers", [])]
    assert listed, f"the leecher never listed torviz among its peers: {everyone}"
    assert all("dht" in peer["source"] for peer in listed), listed


def test_restart_reloads_the_table_and_looks_up_without_bootstrap(
    dht: LtDht, swarm: Swarm, tmp_path: Path, port: int, daemons: list[TorvizDaemon]
) -> None:
    config = torviz_dht_config(tmp_path / "torviz.toml", port, dht.nodes[:2])
    daemon = _daemon(daemons, tmp_path, config, tmp_path / "dl")
    wait_document(daemon.cli, lambda d: _dht_nodes(d) >= 6, 45, "6 DHT nodes")
    assert daemon.shutdown() == 0
    table = tmp_path / "state" / "dht.dat"
    assert table.is_file() and table.stat().st_size > 0, "no DHT table in the state directory"
    # No bootstrap list at all now, and a DHT port no libtorrent node knows: nodes that had
    # torviz in their tables cannot teach it anything by querying it, so whatever its table
    # holds came from the state file.
    moved = free_port("127.0.0.1")
    torviz_dht_config(tmp_path / "torviz.toml", port, [], dht_port=moved)
    daemon.start()
    document = wait_document(daemon.cli, lambda d: _dht_nodes(d) >= 4, 20, "the reloaded nodes")
    assert [a["dht"]["port"] for a in document["agents"] if a.get("dht")] == [moved]
    spec = _content(tmp_path, 1504)
    torrent = _torrent(spec, tmp_path)
    seeder = dht_seeder(swarm, dht, torrent.path, spec.root)
    dht.wait_findable(torrent.info_hash.hex, str(seeder.address), node=7, timeout=30)
    added = daemon.cli("add", _bare_magnet(torrent))
    assert added.returncode == 0, added.stderr
    daemon.wait_status(torrent.info_hash.hex[:8], lambda e: e["progress"] == 1.0, DOWNLOAD_TIMEOUT)
    assert compare_content(spec.root, tmp_path / "dl", spec) == []
