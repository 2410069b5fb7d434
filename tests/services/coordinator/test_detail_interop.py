"""The detail of a torrent the real daemon downloaded from a libtorrent seeder (opentracker,
loopback): every piece verified with the daemon's peer agent (its agent id and host) as its
origin, each file's completed bytes its length, the peer named with that agent and host, and
the log's "complete" line with the torrent's info hash.

Every wait is bounded; every process is stopped at the end.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testing.content import make_content, make_torrent, multi_file_layout
from testing.swarm import Swarm
from tests.support.daemon import TorvizDaemon, running_daemon
from torviz.services.coordinator.cli.daemon_target import daemon_target
from torviz.shared.bus import GetStatus, PieceCell, ServiceKind, StatusReport, TorrentStatus
from torviz.shared.runtime.control import ControlClient

pytestmark = pytest.mark.interop

TIMEOUT = 120.0
CONFIG = """
[peer_agent]
listen_host = "127.0.0.1"

[tracker_agent]
dht = false
announce_timeout = 5.0
bind_address = "127.0.0.1"
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[TorvizDaemon]:
    with running_daemon(tmp_path, CONFIG) as running:
        yield running


def test_a_downloaded_torrent_shows_where_each_piece_came_from(
    swarm: Swarm, tmp_path: Path, daemon: TorvizDaemon
) -> None:
    spec = make_content(tmp_path / "seed", multi_file_layout(1024 * 1024), seed=7)
    probe = make_torrent(spec, 32 * 1024, [], tmp_path / "probe.torrent")
    tracker = swarm.tracker([probe.info_hash])
    torrent = make_torrent(spec, 32 * 1024, [tracker.http_announce_url], tmp_path / "t.torrent")
    swarm.seeder(torrent.path, spec.root, seed_mode=True)
    added = daemon.cli("add", str(torrent.path))
    assert added.returncode == 0, added.stderr

    target = daemon_target(argparse.Namespace(state_dir=str(daemon.state_dir), control=None))
    with ControlClient(target.control, curve=target.curve, green=False, timeout=10.0) as client:
        client.hello()

        def status() -> tuple[TorrentStatus, StatusReport]:
            report = client.request(GetStatus(torrent.info_hash.hex, detail=True))
            assert isinstance(report, StatusReport)
            return report.torrents[0], report

        deadline = time.monotonic() + TIMEOUT
        entry, report = status()
        seen_peer = None
        while entry.progress < 1.0 and time.monotonic() < deadline:
            if entry.peer_list:
                seen_peer = entry.peer_list[0]
            time.sleep(0.3)
            entry, report = status()
        assert entry.progress == 1.0, entry

    [peer_agent] = [a for a in report.agents if a.role is ServiceKind.PEER_AGENT]
    detail = entry.detail
    assert detail is not None
    assert [o.agent_id for o in detail.pieces.origins] == [peer_agent.agent_id]
    assert detail.pieces.origins[0].host == peer_agent.host
    assert detail.pieces.cells == bytes([PieceCell.FIRST_ORIGIN]) * torrent.num_pieces
    assert detail.file_count == len(detail.files) > 1
    assert all(f.completed == f.length for f in detail.files)
    assert sum(f.length for f in detail.files) == entry.total_length
    if seen_peer is not None:  # a fast download may end before a status sees its peer
        assert (seen_peer.agent, seen_peer.host) == (peer_agent.agent_id, peer_agent.host)
    [complete] = [e for e in report.events if e.text.startswith(f"{entry.name}: complete (")]
    assert complete.info_hash == torrent.info_hash
