"""End to end: magnet links with libtorrent and opentracker on loopback (issue 14).

- ``download MAGNET`` with only ``tr=`` (opentracker) or only ``x.pe=`` (no tracker at all)
  fetches the metadata and a multi-file torrent from libtorrent seeders, byte-identical, and
  ``--save-torrent`` writes a .torrent whose info dictionary is the original one, byte for byte;
- it prints its phases in order: finding peers, fetching metadata, downloading;
- a libtorrent leecher given only a magnet link with torviz's address gets the metadata and
  the whole torrent from torviz alone;
- the daemon restarted in the ``metadata`` state keeps the magnet, and restarted after the
  fetch never fetches the metadata or the verified pieces again.

Every process is real; torviz's peer agent listens on a port chosen here, so test peers can
dial it while it fetches the metadata. Everything is on 127.0.0.0/8.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testing.content import (
    ContentSpec,
    TorrentFile,
    compare_content,
    make_content,
    make_torrent,
    multi_file_layout,
)
from testing.swarm import LtPeer, Swarm, free_port, next_loopback_address
from tests.support.daemon import TorvizDaemon, descendants
from tests.support.hostile_metadata import HostileMetadataPeer
from tests.support.magnets import DownloadRun, info_dict, info_hash_of, torviz_config

pytestmark = pytest.mark.interop

DOWNLOAD_TIMEOUT = 120.0
PIECE = 64 * 1024


@pytest.fixture
def port() -> int:
    return free_port("127.0.0.1")


@pytest.fixture
def config(tmp_path: Path, port: int) -> Path:
    return torviz_config(tmp_path / "torviz.toml", port, metadata_timeout=5.0)


def _content(tmp_path: Path, size: int = 4 * 1024 * 1024 + 12_345, seed: int = 14) -> ContentSpec:
    spec = make_content(tmp_path / "seed", multi_file_layout(size), seed=seed)
    assert spec.pieces_spanning_files(PIECE) > 0
    return spec


def _torrent(spec: ContentSpec, tmp_path: Path, trackers: list[str] | None = None) -> TorrentFile:
    return make_torrent(spec, PIECE, trackers or [], tmp_path / "made.torrent")


def _identical(spec: ContentSpec, out: Path) -> None:
    assert compare_content(spec.root, out, spec) == []


def _saved_info_is_original(saved: Path, torrent: TorrentFile) -> None:
    assert saved.is_file(), "--save-torrent wrote nothing"
    info = info_dict(torrent.path)
    assert info in saved.read_bytes(), "the saved .torrent does not hold the info dict verbatim"
    assert info_hash_of(info) == torrent.info_hash.hex


def test_magnet_with_only_trackers(swarm: Swarm, tmp_path: Path, config: Path) -> None:
    spec = _content(tmp_path)
    probe = _torrent(spec, tmp_path)
    tracker = swarm.tracker([probe.info_hash])
    torrent = make_torrent(spec, PIECE, [tracker.http_announce_url], tmp_path / "t.torrent")
    for _ in range(2):
        swarm.seeder(torrent.path, spec.root, seed_mode=True)
    magnet = torrent.magnet(trackers=[tracker.http_announce_url], name=spec.name)
    saved = tmp_path / "saved.torrent"
    with DownloadRun(
        magnet, tmp_path / "out", config, tmp_path / "dl.log", "--save-torrent", str(saved)
    ) as run:
        assert run.wait(DOWNLOAD_TIMEOUT) == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    _identical(spec, tmp_path / "out")
    _saved_info_is_original(saved, torrent)


def test_magnet_with_only_peer_addresses(swarm: Swarm, tmp_path: Path, config: Path) -> None:
    spec = _content(tmp_path, seed=15)
    torrent = _torrent(spec, tmp_path)  # no tracker anywhere
    seeders = [swarm.seeder(torrent.path, spec.root, seed_mode=True) for _ in range(2)]
    magnet = torrent.magnet(peers=[s.address for s in seeders])
    assert "tr=" not in magnet
    saved = tmp_path / "saved.torrent"
    with DownloadRun(
        magnet, tmp_path / "out", config, tmp_path / "dl.log", "--save-torrent", str(saved)
    ) as run:
        assert run.wait(DOWNLOAD_TIMEOUT) == 0, run.stderr[-3000:]
    _identical(spec, tmp_path / "out")
    _saved_info_is_original(saved, torrent)
    _wait_uploaded(seeders, spec.total_size)


def test_download_magnet_prints_its_phases(
    swarm: Swarm, tmp_path: Path, config: Path, port: int
) -> None:
    """Nobody at the magnet's address: finding peers. A peer that takes a metadata request and
    never answers dials in: fetching metadata. Then an honest seeder dials in: downloading."""
    spec = _content(tmp_path, seed=16)
    torrent = _torrent(spec, tmp_path)
    nobody = next_loopback_address()
    magnet = torrent.magnet(peers=[f"{nobody}:{free_port(nobody)}"], name=spec.name)
    with (
        HostileMetadataPeer(info_dict(torrent.path), next_loopback_address(), "silent") as silent,
        DownloadRun(magnet, tmp_path / "out", config, tmp_path / "dl.log") as run,
    ):
        _wait(lambda: run.first_line_with("finding peers") is not None, 30, run, "finding peers")
        _dial_when_listening(silent, port, run)
        _wait(lambda: silent.requests > 0, 30, run, "a metadata request to the silent peer")
        _wait(lambda: run.first_line_with("fetching metadata") is not None, 10, run, "phase")
        swarm.seeder(torrent.path, spec.root, seed_mode=True, connect_peers=[f"127.0.0.1:{port}"])
        assert run.wait(DOWNLOAD_TIMEOUT) == 0, run.stderr[-3000:]
    finding = run.first_line_with("finding peers")
    fetching = run.first_line_with("fetching metadata")
    downloading = run.first_line_with(": downloading")
    assert finding is not None and fetching is not None and downloading is not None, run.stdout
    assert finding < fetching <= downloading, run.stdout
    _identical(spec, tmp_path / "out")


def _wait_uploaded(seeders: list[LtPeer], size: int, timeout: float = 10.0) -> None:
    """Wait until the seeders' status events say they uploaded ``size`` bytes of payload in all
    (their events lag the download by up to half a second)."""
    deadline = time.monotonic() + timeout
    while True:
        statuses = [s.status() for s in seeders]
        total = sum(st.total_payload_upload for st in statuses if st is not None)
        if total >= size:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the seeders uploaded {total} of {size} bytes")
        time.sleep(0.2)


def _dial_when_listening(peer: HostileMetadataPeer, port: int, run: DownloadRun) -> None:
    """Dial torviz's peer agent, which may start listening a moment after the first phase line."""
    deadline = time.monotonic() + 20
    while True:
        try:
            peer.dial("127.0.0.1", port)
            return
        except ConnectionRefusedError:
            if time.monotonic() > deadline or run.process.poll() is not None:
                raise
            time.sleep(0.2)


def _wait(predicate: Callable[[], bool], timeout: float, run: DownloadRun, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if run.process.poll() is not None:
            raise AssertionError(f"download exited before {what}: {run.stderr[-2000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout} s; stdout: {run.stdout[-1500:]}")
        time.sleep(0.1)


# --- torviz serving a libtorrent leecher that has only a magnet link ----------------------------


@pytest.fixture
def daemon_factory(tmp_path: Path, config: Path) -> Iterator[list[TorvizDaemon]]:
    started: list[TorvizDaemon] = []
    yield started
    for daemon in started:
        daemon.stop()


def _daemon(
    started: list[TorvizDaemon], tmp_path: Path, config: Path, download_dir: Path
) -> TorvizDaemon:
    daemon = TorvizDaemon(tmp_path / "state", config, download_dir, tmp_path / "daemon.log")
    started.append(daemon)
    return daemon.start()


def test_libtorrent_fetches_metadata_and_data_from_torviz_alone(
    swarm: Swarm, tmp_path: Path, config: Path, port: int, daemon_factory: list[TorvizDaemon]
) -> None:
    spec = _content(tmp_path, seed=17)
    torrent = _torrent(spec, tmp_path)
    daemon = _daemon(daemon_factory, tmp_path, config, spec.root)
    added = daemon.cli("add", str(torrent.path))
    assert added.returncode == 0, added.stderr
    short = torrent.info_hash.hex[:8]
    daemon.wait_status(short, lambda e: e["state"] == "seeding", 60)
    fetched = tmp_path / "lt-fetched.torrent"
    leecher = swarm.leecher(
        fetched,
        tmp_path / "lt-out",
        magnet=torrent.magnet(peers=[f"127.0.0.1:{port}"]),
        report_peers=True,
    )
    event = leecher.wait_metadata(30)
    assert event["info_hash"] == torrent.info_hash.hex
    # libtorrent wrote the info dict it got from torviz verbatim: byte for byte the original.
    assert info_dict(fetched) == info_dict(torrent.path)
    status = leecher.wait_finished(DOWNLOAD_TIMEOUT)
    assert status.total_payload_download >= spec.total_size
    _identical(spec, tmp_path / "lt-out")
    assert daemon.status(short)["uploaded"] >= spec.total_size


# --- restarts ----------------------------------------------------------------------------------


def test_restart_in_the_metadata_state_keeps_the_magnet(
    swarm: Swarm, tmp_path: Path, config: Path, port: int, daemon_factory: list[TorvizDaemon]
) -> None:
    spec = _content(tmp_path, seed=18)
    torrent = _torrent(spec, tmp_path)
    nobody = next_loopback_address()
    magnet = torrent.magnet(peers=[f"{nobody}:{free_port(nobody)}"], name="waiting-for-peers")
    daemon = _daemon(daemon_factory, tmp_path, config, tmp_path / "dl")
    added = daemon.cli("add", magnet)
    assert added.returncode == 0, added.stderr
    short = torrent.info_hash.hex[:8]
    entry = daemon.wait_status(short, lambda e: e["state"] == "metadata", 20)
    assert entry["name"] == "waiting-for-peers"
    assert entry["metadata"] is not None and entry["metadata"]["received"] == 0, entry
    assert daemon.shutdown() == 0
    daemon.start()
    entry = daemon.wait_status(short, lambda e: e["state"] == "metadata", 20)
    assert entry["name"] == "waiting-for-peers"
    seeder = swarm.seeder(
        torrent.path, spec.root, seed_mode=True, connect_peers=[f"127.0.0.1:{port}"]
    )
    daemon.wait_status(short, lambda e: e["progress"] == 1.0, DOWNLOAD_TIMEOUT)
    _identical(spec, tmp_path / "dl")
    _wait_uploaded([seeder], spec.total_size)


def test_restart_after_the_fetch_fetches_nothing_again(
    swarm: Swarm, tmp_path: Path, config: Path, daemon_factory: list[TorvizDaemon]
) -> None:
    """The seeder uploads slowly; the daemon stops half-way and starts again: the seeder then
    uploads only what was missing. After a second restart with no peer anywhere, the torrent is
    whole at once: neither the metadata nor a piece could have been fetched."""
    spec = _content(tmp_path, seed=19)
    torrent = _torrent(spec, tmp_path)
    seeder = swarm.seeder(torrent.path, spec.root, seed_mode=True, upload_limit=1024 * 1024)
    daemon = _daemon(daemon_factory, tmp_path, config, tmp_path / "dl")
    added = daemon.cli("add", torrent.magnet(peers=[seeder.address]))
    assert added.returncode == 0, added.stderr
    short = torrent.info_hash.hex[:8]
    half = torrent.num_pieces // 3
    daemon.wait_status(short, lambda e: e["pieces_verified"] >= half, DOWNLOAD_TIMEOUT)
    assert daemon.shutdown() == 0
    daemon.start()
    entry = daemon.wait_status(short, lambda e: e["progress"] == 1.0, DOWNLOAD_TIMEOUT)
    assert entry["num_pieces"] == torrent.num_pieces
    _identical(spec, tmp_path / "dl")
    time.sleep(1.5)  # a status event from after the last block (they come every 0.5 s)
    status = seeder.status()
    assert status is not None
    uploaded = status.total_payload_upload
    slack = 16 * PIECE  # pieces in flight at the stop are fetched again, legitimately
    assert uploaded <= spec.total_size + slack, (uploaded, spec.total_size)
    seeder.stop()
    assert daemon.shutdown() == 0
    daemon.start()
    entry = daemon.wait_status(short, lambda e: e["state"] == "seeding", 30)
    assert entry["pieces_verified"] == torrent.num_pieces
    exported = daemon.cli("export", short, str(tmp_path / "exported.torrent"))
    assert exported.returncode == 0, exported.stderr
    assert info_dict(torrent.path) in (tmp_path / "exported.torrent").read_bytes()


def test_fetched_metadata_survives_a_kill(
    swarm: Swarm, tmp_path: Path, config: Path, daemon_factory: list[TorvizDaemon]
) -> None:
    """SIGKILL once the metadata is in, restart with no peer anywhere: the torrent comes back
    with its info dictionary (files, pieces), not in the metadata state."""
    spec = _content(tmp_path, seed=20)
    torrent = _torrent(spec, tmp_path)
    seeder = swarm.seeder(torrent.path, spec.root, seed_mode=True, upload_limit=256 * 1024)
    daemon = _daemon(daemon_factory, tmp_path, config, tmp_path / "dl")
    added = daemon.cli("add", torrent.magnet(peers=[seeder.address]))
    assert added.returncode == 0, added.stderr
    short = torrent.info_hash.hex[:8]
    daemon.wait_status(short, lambda e: e["state"] != "metadata", 60)
    victims = [daemon.pid, *descendants(daemon.pid)]  # a power cut, minus the disk
    for pid in victims:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    daemon.kill()
    seeder.stop()
    daemon.start()
    entry = daemon.wait_status(short, lambda e: e["state"] not in ("checking",), 30)
    assert entry["state"] != "metadata", entry
    assert entry["num_pieces"] == torrent.num_pieces
    exported = daemon.cli("export", short, str(tmp_path / "exported.torrent"))
    assert exported.returncode == 0, exported.stderr
    assert info_dict(torrent.path) in (tmp_path / "exported.torrent").read_bytes()


def test_restart_in_the_metadata_state_asks_only_for_the_missing_pieces(
    tmp_path: Path, config: Path, daemon_factory: list[TorvizDaemon]
) -> None:
    """A peer serves metadata piece 0 of 2 and never answers for piece 1. After a restart,
    the daemon dials it again and asks it for piece 1 only: piece 0 was kept."""
    spec = make_content(tmp_path / "seed", multi_file_layout(20 * 1024 * 1024 + 1), seed=22)
    torrent = make_torrent(spec, 16 * 1024, [], tmp_path / "t.torrent")
    info = info_dict(torrent.path)
    assert 16 * 1024 < len(info) <= 2 * 16 * 1024
    with HostileMetadataPeer(info, next_loopback_address(), "partial") as partial:
        daemon = _daemon(daemon_factory, tmp_path, config, tmp_path / "dl")
        added = daemon.cli("add", torrent.magnet(peers=[str(partial)]))
        assert added.returncode == 0, added.stderr
        short = torrent.info_hash.hex[:8]
        entry = daemon.wait_status(
            short, lambda e: (e["metadata"] or {}).get("received", 0) >= 16 * 1024, 30
        )
        assert entry["state"] == "metadata"
        assert 0 in partial.requested_pieces
        assert daemon.shutdown() == 0
        before = len(partial.requested_pieces)
        daemon.start()
        deadline = time.monotonic() + 30
        while len(partial.requested_pieces) == before and time.monotonic() < deadline:
            time.sleep(0.1)
        after = partial.requested_pieces[before:]
        assert after, "the restarted daemon asked the peer for nothing"
        assert 0 not in after, f"metadata piece 0 was fetched again: {after}"
        entry = daemon.status(short)
        assert entry["state"] == "metadata"
        assert entry["metadata"]["received"] >= 16 * 1024, entry
