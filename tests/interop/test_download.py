"""End to end: ``torviz-coordinator download`` and the daemon fetch torrents from libtorrent.

Every process is real: opentracker, libtorrent seeders on their own 127.0.0.x addresses, and
torviz's four services talking over ZeroMQ. The content is compared byte for byte.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testing.content import (
    ContentSpec,
    TorrentFile,
    compare_content,
    make_content,
    make_torrent,
    multi_file_layout,
    single_file_layout,
)
from testing.opentracker import OpenTracker
from testing.swarm import Swarm
from tests.support.bad_seeder import BadSeeder
from tests.support.daemon import COORDINATOR, TorvizDaemon, descendants

pytestmark = pytest.mark.interop

DOWNLOAD_TIMEOUT = 120.0

# Everything on loopback; short timeouts so a failure shows quickly.
TEST_CONFIG = """
[peer_agent]
listen_host = "127.0.0.1"

[tracker_agent]
dht = false
announce_timeout = 5.0
bind_address = "127.0.0.1"
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "torviz.toml"
    path.write_text(TEST_CONFIG)
    return path


def _seeded(
    swarm: Swarm,
    tmp_path: Path,
    spec: ContentSpec,
    piece_length: int,
    seeders: int,
    udp: bool = False,
) -> tuple[TorrentFile, OpenTracker]:
    torrent_path = tmp_path / "test.torrent"
    # The info hash is only known once the torrent exists; opentracker's whitelist needs it.
    probe = make_torrent(spec, piece_length, [], tmp_path / "probe.torrent")
    tracker = swarm.tracker([probe.info_hash])
    url = tracker.udp_announce_url if udp else tracker.http_announce_url
    torrent = make_torrent(spec, piece_length, [url], torrent_path)
    assert torrent.info_hash == probe.info_hash
    for _ in range(seeders):
        swarm.seeder(torrent.path, spec.root, seed_mode=True)
    return torrent, tracker


def _download(
    torrent: Path, out: Path, config: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COORDINATOR, "download", str(torrent), "-o", str(out), "--config", str(config), *extra],
        capture_output=True,
        text=True,
        timeout=DOWNLOAD_TIMEOUT,
        check=False,
    )


def _assert_identical(spec: ContentSpec, out: Path) -> None:
    assert compare_content(spec.root, out, spec) == []


def test_single_file_from_one_seeder(swarm: Swarm, tmp_path: Path, config_file: Path) -> None:
    spec = make_content(tmp_path / "seed", single_file_layout(5 * 1024 * 1024 + 777), seed=1)
    torrent, _ = _seeded(swarm, tmp_path, spec, 256 * 1024, seeders=1)
    result = _download(torrent.path, tmp_path / "out", config_file)
    assert result.returncode == 0, result.stderr
    assert "every piece verified" in result.stdout
    assert "Traceback" not in result.stderr
    _assert_identical(spec, tmp_path / "out")


def test_multi_file_from_three_seeders(swarm: Swarm, tmp_path: Path, config_file: Path) -> None:
    spec = make_content(tmp_path / "seed", multi_file_layout(6 * 1024 * 1024 + 12_345), seed=2)
    assert spec.pieces_spanning_files(64 * 1024) > 0
    torrent, _ = _seeded(swarm, tmp_path, spec, 64 * 1024, seeders=3)
    result = _download(torrent.path, tmp_path / "out", config_file)
    assert result.returncode == 0, result.stderr
    _assert_identical(spec, tmp_path / "out")
    assert (tmp_path / "out" / spec.name / "empty.txt").stat().st_size == 0


def test_corrupt_pieces_are_fetched_again_from_honest_peers(
    swarm: Swarm, tmp_path: Path, config_file: Path
) -> None:
    spec = make_content(tmp_path / "seed", single_file_layout(4 * 1024 * 1024), seed=3)
    torrent, _ = _seeded(swarm, tmp_path, spec, 128 * 1024, seeders=1)
    tracker_url = next(t.http_announce_url for t in swarm._owned if hasattr(t, "http_announce_url"))
    with BadSeeder(torrent.path, spec.root, swarm.next_address()) as liar:
        liar.announce(tracker_url)
        result = _download(torrent.path, tmp_path / "out", config_file, "--log-level", "INFO")
    assert result.returncode == 0, result.stderr
    _assert_identical(spec, tmp_path / "out")
    assert liar.corrupt_blocks_served > 0, "the corrupt seeder was never asked for data"
    assert "rejected" in result.stderr.lower()


def test_no_peers_gives_one_clear_line(tmp_path: Path, config_file: Path) -> None:
    spec = make_content(tmp_path / "seed", single_file_layout(100_000), seed=4)
    # A tracker URL where nothing listens: every announce fails.
    torrent = make_torrent(spec, 16 * 1024, ["http://127.0.0.1:9/announce"], tmp_path / "t.torrent")
    result = _download(torrent.path, tmp_path / "out", config_file, "--stall-timeout", "3")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("torviz: error: no peers"), result.stderr
    assert "127.0.0.1:9" in lines[-1]
    assert "Traceback" not in result.stderr


@pytest.fixture
def daemon(tmp_path: Path, config_file: Path) -> Iterator[TorvizDaemon]:
    daemon = TorvizDaemon(tmp_path / "state", config_file, tmp_path / "dl", tmp_path / "daemon.log")
    try:
        yield daemon.start()
    finally:
        daemon.stop()


def test_daemon_add_status_shutdown(swarm: Swarm, tmp_path: Path, daemon: TorvizDaemon) -> None:
    spec = make_content(tmp_path / "seed", multi_file_layout(2 * 1024 * 1024), seed=5)
    torrent, _ = _seeded(swarm, tmp_path, spec, 32 * 1024, seeders=1)
    added = daemon.cli("add", str(torrent.path))
    assert added.returncode == 0, added.stderr
    assert torrent.info_hash.hex in added.stdout
    entry = daemon.wait_status(
        torrent.info_hash.hex[:8], lambda e: e["progress"] == 1.0, DOWNLOAD_TIMEOUT
    )
    for key in (
        "info_hash",
        "name",
        "state",
        "progress",
        "downloaded",
        "uploaded",
        "download_rate",
        "upload_rate",
        "peers",
        "pieces_verified",
        "num_pieces",
    ):
        assert key in entry
    assert entry["pieces_verified"] == entry["num_pieces"] == torrent.num_pieces
    assert entry["state"] == "seeding"
    _assert_identical(spec, tmp_path / "dl")
    listing = daemon.cli("list")
    assert torrent.info_hash.hex[:12] in listing.stdout
    children = descendants(daemon.pid)
    assert len(children) >= 3
    assert daemon.shutdown() == 0
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{pid}") for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [pid for pid in children if os.path.exists(f"/proc/{pid}")] == []
    assert not (tmp_path / "state" / "daemon.json").exists()


def test_cli_finds_a_daemon_started_with_default_settings(
    tmp_path: Path, config_file: Path
) -> None:
    # Only the platform directories are redirected (as a user's would be); no flag is passed.
    env = {
        **os.environ,
        "XDG_STATE_HOME": str(tmp_path / "state-home"),
        "XDG_CONFIG_HOME": str(tmp_path / "config-home"),
    }
    (tmp_path / "config-home" / "torviz").mkdir(parents=True)
    (tmp_path / "config-home" / "torviz" / "config.toml").write_text(config_file.read_text())
    daemon = subprocess.Popen(
        [*COORDINATOR, "start", "--download-dir", str(tmp_path / "dl")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            listing = subprocess.run(
                [*COORDINATOR, "list"],
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            if listing.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert listing.returncode == 0, listing.stderr
        assert listing.stdout.strip() == "no torrents"
        assert (tmp_path / "state-home" / "torviz" / "daemon.json").exists()
        stop = subprocess.run(
            [*COORDINATOR, "shutdown"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert stop.returncode == 0, stop.stderr
        assert daemon.wait(timeout=30) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(timeout=10)
    gone = subprocess.run(
        [*COORDINATOR, "list"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert gone.returncode == 1
    assert gone.stderr.strip().startswith("torviz: error: no torviz daemon at ipc://")
