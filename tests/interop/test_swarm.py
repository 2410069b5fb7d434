"""torviz as a swarm citizen: it seeds to libtorrent, trades with other leechers, and finishes
despite slow peers. Real processes on loopback: opentracker, libtorrent, torviz's services."""

from __future__ import annotations

import re
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from testing.content import make_content, make_torrent, multi_file_layout, single_file_layout
from testing.swarm import Swarm
from tests.interop.test_download import (
    DOWNLOAD_TIMEOUT,
    _assert_identical,
    _download,
    _seeded,
)
from tests.support.bad_seeder import BadSeeder
from tests.support.daemon import COORDINATOR, TorvizDaemon
from torviz.shared.bencode import decode
from torviz.shared.types import InfoHash

pytestmark = pytest.mark.interop

LEECHERS_TIMEOUT = 30.0
"""Seconds the leechers get to start and announce."""

# Each torviz process listens on its own loopback address, as separate hosts would.
CONFIG = """
[peer_agent]
listen_host = "{host}"

[tracker_agent]
dht = false
announce_timeout = 5.0
bind_address = "{host}"
"""


def config_for(tmp_path: Path, host: str) -> Path:
    path = tmp_path / f"torviz-{host}.toml"
    path.write_text(CONFIG.format(host=host))
    return path


def uploaded_bytes(stdout: str) -> int:
    match = re.search(r"uploaded .* \((\d+) bytes\)", stdout)
    assert match, stdout
    return int(match.group(1))


def _wait_for_leechers(scrape_url: str, info_hash: InfoHash, count: int) -> None:
    """Until the tracker's scrape lists ``count`` leechers of the torrent (at most 30 s)."""
    url = f"{scrape_url}?info_hash={urllib.parse.quote(info_hash.raw)}"
    deadline = time.monotonic() + LEECHERS_TIMEOUT
    listed = 0
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url, timeout=5) as reply:
            scrape = decode(reply.read(65536), strict=False)
        assert isinstance(scrape, dict)
        files = scrape.get(b"files", {})
        assert isinstance(files, dict)
        counts = files.get(info_hash.raw, {})
        assert isinstance(counts, dict)
        incomplete = counts.get(b"incomplete", 0)
        assert isinstance(incomplete, int)
        listed = incomplete
        if listed >= count:
            return
        time.sleep(0.2)
    raise AssertionError(
        f"the tracker lists {listed} of {count} leechers after {LEECHERS_TIMEOUT} s"
    )


def start_download(torrent: Path, out: Path, config: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*COORDINATOR, "download", str(torrent), "-o", str(out), "--config", str(config), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> tuple[str, str]:
    try:
        out, err = process.communicate(timeout=DOWNLOAD_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    return out, err


def test_a_libtorrent_leecher_downloads_from_a_torviz_seeder(swarm: Swarm, tmp_path: Path) -> None:
    spec = make_content(tmp_path / "seed", multi_file_layout(3 * 1024 * 1024 + 4321), seed=11)
    probe = make_torrent(spec, 64 * 1024, [], tmp_path / "probe.torrent")
    tracker = swarm.tracker([probe.info_hash])
    torrent = make_torrent(spec, 64 * 1024, [tracker.http_announce_url], tmp_path / "t.torrent")
    host = swarm.next_address()
    # The data is already there: torviz checks it, finds it complete, and seeds for a while.
    seeder = start_download(
        torrent.path, spec.root, config_for(tmp_path, host), "--seed-time", "25"
    )
    try:
        leecher = swarm.leecher(torrent.path, tmp_path / "lt", wait=False)
        leecher.wait_finished(DOWNLOAD_TIMEOUT)
    finally:
        seeder.terminate()
        seeder.wait(timeout=30)
    _assert_identical(spec, tmp_path / "lt")


def test_torviz_leechers_trade_pieces_in_a_mixed_swarm(swarm: Swarm, tmp_path: Path) -> None:
    spec = make_content(tmp_path / "seed", single_file_layout(8 * 1024 * 1024), seed=12)
    probe = make_torrent(spec, 64 * 1024, [], tmp_path / "probe.torrent")
    tracker = swarm.tracker([probe.info_hash])
    torrent = make_torrent(spec, 64 * 1024, [tracker.http_announce_url], tmp_path / "t.torrent")
    # A slow seeder, so the leechers have every reason to trade among themselves.
    swarm.seeder(torrent.path, spec.root, seed_mode=True, upload_limit=1_500_000)
    torviz = [
        start_download(
            torrent.path,
            tmp_path / f"tv{n}",
            config_for(tmp_path, swarm.next_address()),
            "--seed-time",
            "10",
        )
        for n in range(2)
    ]
    lt_leecher = swarm.leecher(torrent.path, tmp_path / "lt", wait=False)
    results = [finish(process) for process in torviz]
    lt_leecher.wait_finished(DOWNLOAD_TIMEOUT)
    for n in range(2):
        _assert_identical(spec, tmp_path / f"tv{n}")
    _assert_identical(spec, tmp_path / "lt")
    uploads = [uploaded_bytes(out) for out, _ in results]
    # Torviz uploads in the swarm; which of the two does depends on timing: a leecher that
    # joins last may find every piece it has already held by the others (about one run in
    # four here), so requiring both was a coin toss.
    assert any(upload > 0 for upload in uploads), uploads


def test_a_torviz_swarm_of_one_seeder_and_three_leechers(swarm: Swarm, tmp_path: Path) -> None:
    spec = make_content(tmp_path / "seed", single_file_layout(6 * 1024 * 1024), seed=13)
    probe = make_torrent(spec, 32 * 1024, [], tmp_path / "probe.torrent")
    tracker = swarm.tracker([probe.info_hash])
    torrent = make_torrent(spec, 32 * 1024, [tracker.http_announce_url], tmp_path / "t.torrent")
    leechers = [
        start_download(
            torrent.path,
            tmp_path / f"leech{n}",
            config_for(tmp_path, swarm.next_address()),
            "--seed-time",
            "8",
        )
        for n in range(3)
    ]
    seeder: subprocess.Popen[str] | None = None
    try:
        # The seeder comes last, once the tracker lists every leecher: they start trading in
        # the same second however slowly each client started (a loaded machine took seconds).
        _wait_for_leechers(tracker.http_scrape_url, torrent.info_hash, len(leechers))
        seeder = start_download(
            torrent.path, spec.root, config_for(tmp_path, swarm.next_address()), "--seed-time", "60"
        )
        results = [finish(process) for process in leechers]
    finally:
        for process in [*leechers, *([seeder] if seeder else [])]:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
    for n in range(3):
        _assert_identical(spec, tmp_path / f"leech{n}")
    uploads = [uploaded_bytes(out) for out, _ in results]
    # The leechers carry a good part of the load between them. How it spreads is timing: a
    # leecher that starts a second late on this 1-second swarm may find every piece it holds
    # already held by the others, so no single leecher is required to upload.
    assert sum(uploads) >= spec.total_size // 2, uploads


def test_endgame_does_not_wait_for_a_slow_peer(swarm: Swarm, tmp_path: Path) -> None:
    spec = make_content(tmp_path / "seed", single_file_layout(2 * 1024 * 1024), seed=14)
    torrent, tracker = _seeded(swarm, tmp_path, spec, 64 * 1024, seeders=1)
    # A peer that takes 20 s per block: without endgame, its pieces would hold up the end.
    with BadSeeder(
        torrent.path, spec.root, swarm.next_address(), corrupt=lambda piece: False, delay=20.0
    ) as slow:
        slow.announce(tracker.http_announce_url)
        started = time.monotonic()
        result = _download(
            torrent.path, tmp_path / "out", config_for(tmp_path, "127.0.0.1"), "--log-level", "INFO"
        )
        elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    _assert_identical(spec, tmp_path / "out")
    assert slow.blocks_served + slow.connections > 0, "the slow peer was never used"
    # Not a speed target: without endgame the slow peer's pieces come back only when its
    # requests time out (30 s); with it the fast seeder fetches them again at once.
    assert elapsed < 25.0, f"the download waited for the slow peer ({elapsed:.1f} s)"


def test_a_libtorrent_leecher_downloads_from_the_torviz_daemon(
    swarm: Swarm, tmp_path: Path
) -> None:
    spec = make_content(tmp_path / "seed", multi_file_layout(3 * 1024 * 1024 + 99), seed=15)
    probe = make_torrent(spec, 32 * 1024, [], tmp_path / "probe.torrent")
    tracker = swarm.tracker([probe.info_hash])
    torrent = make_torrent(spec, 32 * 1024, [tracker.http_announce_url], tmp_path / "t.torrent")
    host = swarm.next_address()
    daemon = TorvizDaemon(
        tmp_path / "state", config_for(tmp_path, host), tmp_path / "dl", tmp_path / "daemon.log"
    )
    try:
        daemon.start()
        added = daemon.cli("add", str(torrent.path), "--dir", str(spec.root))
        assert added.returncode == 0, added.stderr
        daemon.wait_status(torrent.info_hash.hex, lambda e: e["state"] == "seeding", 60)
        leecher = swarm.leecher(torrent.path, tmp_path / "lt", wait=False)
        leecher.wait_finished(DOWNLOAD_TIMEOUT)
        _assert_identical(spec, tmp_path / "lt")
        entry = daemon.wait_status(torrent.info_hash.hex, lambda e: e["uploaded"] > 0, 30)
        assert entry["uploaded"] >= spec.total_size
    finally:
        daemon.stop()
