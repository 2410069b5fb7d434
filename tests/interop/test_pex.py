"""End to end: torviz learns a seeder's address through BEP 11 ``ut_pex`` alone (issue 14).

Topology, all libtorrent on loopback, no tracker anywhere:

- B seeds with PeX off (it neither sends nor acts on ut_pex, so it never learns of torviz and
  never dials it: any connection between torviz and B is torviz's, from PeX);
- A seeds, dials B and keeps that connection (``close_redundant_connections`` off on both:
  libtorrent otherwise drops a seed-to-seed link), and uploads slowly;
- torviz is given a magnet link naming A alone (``x.pe``).

libtorrent sends its full peer list on the first one-second tick after the extension handshake
when it has two peers or more (src/ut_pex.cpp: ``send_ut_peer_list``; diffs follow once a
minute), but only peers past their handshake: the test waits until A reports B as a connected
seed before torviz starts, so the first message names B (measured: 1 to 1.5 s after the
handshake). torviz must then dial B, show it in ``status --json`` with source ``pex``, and
download from it (B's own upload counter says so: its only leecher is torviz).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testing.content import compare_content, make_content, make_torrent, multi_file_layout
from testing.swarm import Swarm, free_port
from tests.support.daemon import TorvizDaemon
from tests.support.magnets import torviz_config

pytestmark = pytest.mark.interop

KEEP_SEED_LINKS = {"close_redundant_connections": False}
PIECE = 64 * 1024


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[TorvizDaemon]:
    config = torviz_config(tmp_path / "torviz.toml", free_port("127.0.0.1"))
    daemon = TorvizDaemon(tmp_path / "state", config, tmp_path / "dl", tmp_path / "daemon.log")
    try:
        yield daemon.start()
    finally:
        daemon.stop()


def test_a_seeder_learnt_through_pex_alone_is_dialled_and_downloaded_from(
    swarm: Swarm, tmp_path: Path, daemon: TorvizDaemon
) -> None:
    spec = make_content(tmp_path / "seed", multi_file_layout(6 * 1024 * 1024 + 4321), seed=21)
    torrent = make_torrent(spec, PIECE, [], tmp_path / "t.torrent")
    b = swarm.seeder(
        torrent.path,
        spec.root,
        seed_mode=True,
        disable_pex=True,
        settings=KEEP_SEED_LINKS,
        upload_limit=1024 * 1024,  # slow enough that status sees B while it serves us
    )
    a = swarm.seeder(
        torrent.path,
        spec.root,
        seed_mode=True,
        settings=KEEP_SEED_LINKS,
        connect_peers=[b.address],
        upload_limit=256 * 1024,
        report_peers=True,
    )
    a.wait_peer(lambda p: p["address"] == str(b.address) and p["seed"], 20)
    magnet = torrent.magnet(peers=[a.address])
    assert str(b.address) not in magnet
    added = daemon.cli("add", magnet)
    assert added.returncode == 0, added.stderr

    short = torrent.info_hash.hex[:8]
    seen: list[dict[str, Any]] = []

    def b_served_us(entry: dict[str, Any]) -> bool:
        for peer in entry.get("peer_list", []):
            if peer["address"] == str(b.address):
                seen.append(peer)
        return any(p["downloaded"] > 0 for p in seen) or entry["progress"] == 1.0

    daemon.wait_status(short, b_served_us, 90)
    assert seen, f"torviz never listed B ({b.address}) among its peers"
    assert {p["source"] for p in seen} == {"pex"}, seen
    assert all(p["version"].startswith("libtorrent/") for p in seen), seen  # its BEP 10 ``v``
    daemon.wait_status(short, lambda e: e["progress"] == 1.0, 120)
    assert compare_content(spec.root, tmp_path / "dl", spec) == []
    # B's only leecher is torviz: its upload counter says torviz downloaded from it.
    b.wait_status(lambda s: s.total_payload_upload > 0, 10)
