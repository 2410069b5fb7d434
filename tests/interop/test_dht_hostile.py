"""torviz's DHT node beside hostile nodes (issue 15): a query flood from 256 addresses, garbage
datagrams, a node answering with 1,000 bogus unreachable nodes and a node claiming an id close
to every target, all at once, next to an honest DHT of 8 libtorrent sessions.

What must hold: the tracker agent's memory and CPU stay bounded (read from /proc while the
attack runs), its table does not fill with the bogus nodes, garbage is counted as dropped, the
flood is not answered with more bytes than it sent (no amplification), and a bare magnet link
still finds a DHT-only libtorrent seeder and downloads it byte-identical.

The seeder's announce is checked findable before any hostile node starts: the spoofer, once
torviz hands its addresses on, would eclipse libtorrent's own announces too (measured:
libtorrent 2.1 alone, spoofed so, never finds an announced peer), and that is not torviz's
test. Everything is on 127.0.0.0/8; every wait is bounded.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testing.content import compare_content, make_content, make_torrent, single_file_layout
from testing.dht import LtDht, dht_seeder, torviz_dht_config
from testing.swarm import Swarm, free_port
from tests.support.daemon import TorvizDaemon
from tests.support.dht import CpuSample, status_document, wait_agent_pid
from tests.support.hostile_dht import HostileConfig, HostileDht
from tests.support.magnets import RssWatch

pytestmark = pytest.mark.interop

PIECE = 64 * 1024
DOWNLOAD_TIMEOUT = 120.0
FLOOD_RATE = 2000  # queries a second, from 256 addresses
GARBAGE_RATE = 200  # datagrams a second
MAX_AGENT_RSS_KIB = 160 * 1024
MAX_AGENT_CPU_SHARE = 0.9  # of one core, averaged over the attack
MAX_TABLE_NODES = 200  # 8 honest + the hostile nodes' own addresses; never the 1,000 bogus
ATTACK_SECONDS = 20.0  # the attack lasts at least this long, download or not
DECOYS = 3  # magnet links nobody seeds: lookups that keep asking the hostile nodes
MAX_DOWNLOAD_SECONDS = 30.0  # about 3 s without an attack


@pytest.fixture
def daemons() -> Iterator[list[TorvizDaemon]]:
    started: list[TorvizDaemon] = []
    yield started
    for daemon in started:
        daemon.stop()


@pytest.fixture
def hostiles() -> Iterator[list[HostileDht]]:
    started: list[HostileDht] = []
    yield started
    for hostile in started:
        hostile.close()


def _attack(
    attack: str,
    swarm: Swarm,
    tmp_path: Path,
    daemons: list[TorvizDaemon],
    hostiles: list[HostileDht],
) -> tuple[str, dict[str, Any]]:
    """Run one attack beside an honest DHT while torviz downloads a bare magnet link.

    Returns:
        A report line and the numbers the assertions need.
    """
    with LtDht(8, log_path=tmp_path / "lt-dht.log") as dht:
        dht.wait_ready(30)
        dht.wait_converged(timeout=30)
        spec = make_content(tmp_path / "seed", single_file_layout(2 * 1024 * 1024 + 99), seed=1510)
        torrent = make_torrent(spec, PIECE, [], tmp_path / "t.torrent")
        seeder = dht_seeder(swarm, dht, torrent.path, spec.root)
        dht.wait_findable(torrent.info_hash.hex, str(seeder.address), node=7, timeout=30)

        port = free_port("127.0.0.1")
        target = f"127.0.0.1:{port}"

        def start(config: HostileConfig) -> HostileDht:
            hostile = HostileDht(config, log_path=tmp_path / f"hostile-{config.mode}.log")
            hostiles.append(hostile)
            hostile.wait_ready()
            return hostile

        bootstrap = list(dht.nodes[:3])
        if attack in ("poison", "all"):  # torviz bootstraps from them too, and they query it
            modes = [
                HostileConfig("bogus_nodes", target, bogus_count=1000, per_answer=50),
                HostileConfig("spoof_ids", target, spoof_count=8),
            ]
            bootstrap += [a for m in modes for a in start(m).addresses]
        config = torviz_dht_config(tmp_path / "torviz.toml", port, bootstrap)
        (tmp_path / "dl").mkdir()
        daemon = TorvizDaemon(tmp_path / "state", config, tmp_path / "dl", tmp_path / "d.log")
        daemons.append(daemon)
        daemon.start()
        agent = wait_agent_pid(daemon.agent_pid, "tracker_agent")
        rss = RssWatch(agent, max_seconds=DOWNLOAD_TIMEOUT + 60)
        if attack in ("load", "all"):
            start(HostileConfig("flood", target, rate=FLOOD_RATE, sources=256))
            start(HostileConfig("garbage", target, rate=GARBAGE_RATE))
        cpu = CpuSample(agent).start()
        for decoy in range(DECOYS if attack in ("poison", "all") else 0):
            info_hash = hashlib.sha1(b"decoy %d" % decoy).hexdigest()
            assert daemon.cli("add", f"magnet:?xt=urn:btih:{info_hash}").returncode == 0
        added = daemon.cli("add", f"magnet:?xt=urn:btih:{torrent.info_hash.hex}")
        assert added.returncode == 0, added.stderr
        short = torrent.info_hash.hex[:8]
        daemon.wait_status(short, lambda e: e["progress"] == 1.0, DOWNLOAD_TIMEOUT)
        downloaded_in = time.monotonic() - cpu.started
        time.sleep(max(0.0, ATTACK_SECONDS - downloaded_in))
        cpu.stop()
        document = status_document(daemon.cli)
        peaks = rss.stop()
        stats: dict[str, dict[str, Any]] = {h.config.mode: h.close() for h in hostiles}
    assert compare_content(spec.root, tmp_path / "dl", spec) == []
    numbers: dict[str, Any] = {
        "downloaded_in": downloaded_in,
        "rss_kib": peaks.get(agent, 0),
        "cpu": cpu,
        "dht": document["dht"],
        **stats,
    }
    report = (
        f"{attack}: downloaded in {downloaded_in:.1f} s; agent rss peak {numbers['rss_kib']} "
        f"KiB, cpu {cpu.cpu:.1f} s in {cpu.wall:.1f} s; dht {document['dht']}; "
        + "; ".join(f"{mode} {values}" for mode, values in stats.items())
    )
    print(report)
    return report, numbers


def _bounded(
    report: str, numbers: dict[str, Any], max_download: float = MAX_DOWNLOAD_SECONDS
) -> None:
    cpu = numbers["cpu"]
    assert 0 < numbers["rss_kib"] <= MAX_AGENT_RSS_KIB, report
    assert cpu.share <= MAX_AGENT_CPU_SHARE, report
    assert numbers["dht"]["nodes"] <= MAX_TABLE_NODES, report
    assert numbers["downloaded_in"] <= max_download, report


def test_query_flood_and_garbage(
    swarm: Swarm, tmp_path: Path, daemons: list[TorvizDaemon], hostiles: list[HostileDht]
) -> None:
    report, numbers = _attack("load", swarm, tmp_path, daemons, hostiles)
    flood, garbage = numbers["flood"], numbers["garbage"]
    # The attack ran at its rate; garbage was dropped and counted; no amplification.
    assert flood["sent"] >= FLOOD_RATE * ATTACK_SECONDS * 0.5, report
    assert garbage["sent"] >= GARBAGE_RATE * ATTACK_SECONDS * 0.5, report
    assert numbers["dht"]["packets_dropped"] >= garbage["sent"] * 0.5, report
    assert flood["bytes_received"] <= 3 * flood["bytes_sent"], report
    _bounded(report, numbers)


def test_bogus_and_spoofing_nodes(
    swarm: Swarm, tmp_path: Path, daemons: list[TorvizDaemon], hostiles: list[HostileDht]
) -> None:
    report, numbers = _attack("poison", swarm, tmp_path, daemons, hostiles)
    # torviz asked them (they were in its lookups) and took at least one answer of 50 bogus
    # nodes (of the 1,000 the node hands out in turn): since 4143932 a node whose named nodes
    # all fail is asked no more, so it may be only one.
    assert numbers["bogus_nodes"]["nodes_handed_out"] >= 50, report
    assert numbers["spoof_ids"]["answers_sent"] > 0, report
    _bounded(report, numbers)


def test_all_at_once(
    swarm: Swarm, tmp_path: Path, daemons: list[TorvizDaemon], hostiles: list[HostileDht]
) -> None:
    report, numbers = _attack("all", swarm, tmp_path, daemons, hostiles)
    assert numbers["flood"]["sent"] >= FLOOD_RATE * ATTACK_SECONDS * 0.5, report
    assert numbers["bogus_nodes"]["nodes_handed_out"] >= 50, report
    # Measured 7.2, 9.7, 11.3, 14 and 74 s, and once nothing in 120 s (the magnet still in the
    # metadata state, no peer): the flood drains the DHT node's total rate limit (500/s),
    # which the answers to torviz's own queries share with it, so most of them are dropped
    # unread, while the bogus and spoofing nodes make each lookup longer. It can fail until
    # answers to our own queries stop being charged to the flood's bucket.
    _bounded(report, numbers, max_download=DOWNLOAD_TIMEOUT)
