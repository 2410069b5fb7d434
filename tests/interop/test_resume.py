"""Nothing lost: restarts, crashes of any service, rechecks, disk errors, pause and remove.

The daemon runs as a real process with its agents; libtorrent seeds through opentracker.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from testing.content import TorrentFile, make_content, multi_file_layout, single_file_layout
from testing.swarm import Swarm
from tests.interop.test_download import DOWNLOAD_TIMEOUT, TEST_CONFIG, _assert_identical, _seeded
from tests.support.daemon import TorvizDaemon, descendants
from tests.support.tmpfs import small_tmpfs
from torviz.shared.metainfo import parse_metainfo
from torviz.shared.tracker import parse_scrape_response

pytestmark = pytest.mark.interop

SLOW = 2_000_000
"""Bytes per second: slow enough that a test can act in the middle of a download."""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[TorvizDaemon]:
    config = tmp_path / "torviz.toml"
    config.write_text(TEST_CONFIG)
    daemon = TorvizDaemon(tmp_path / "state", config, tmp_path / "dl", tmp_path / "daemon.log")
    try:
        yield daemon.start()
    finally:
        daemon.stop()


def _complete(entry: dict[str, object]) -> bool:
    return entry["progress"] == 1.0


def test_restart_restores_every_torrent_in_its_state(
    swarm: Swarm, tmp_path: Path, daemon: TorvizDaemon
) -> None:
    done = make_content(tmp_path / "a", multi_file_layout(2 * 1024 * 1024), seed=21)
    torrent, _ = _seeded(swarm, tmp_path, done, 32 * 1024, seeders=1)
    parked = make_content(tmp_path / "b", single_file_layout(300_000), seed=22)
    other, _ = _seeded(swarm, tmp_path / "b", parked, 16 * 1024, seeders=0)
    assert daemon.cli("add", str(torrent.path)).returncode == 0
    assert daemon.cli("add", str(other.path)).returncode == 0
    assert daemon.cli("pause", other.info_hash.hex[:10]).returncode == 0
    daemon.wait_status(torrent.info_hash.hex, _complete, DOWNLOAD_TIMEOUT)
    assert daemon.shutdown() == 0

    daemon.start()
    seeding = daemon.wait_status(torrent.info_hash.hex, lambda e: e["state"] == "seeding", 30)
    assert seeding["pieces_verified"] == torrent.num_pieces
    assert seeding["downloaded"] > 0  # totals survive the restart
    assert daemon.status(other.info_hash.hex)["state"] == "paused"
    _assert_identical(done, tmp_path / "dl")


@pytest.mark.parametrize("victim", ["storage_agent", "peer_agent", "tracker_agent", "coordinator"])
def test_a_killed_service_loses_no_verified_piece(
    swarm: Swarm, tmp_path: Path, daemon: TorvizDaemon, victim: str
) -> None:
    spec = make_content(tmp_path / "seed", single_file_layout(12 * 1024 * 1024), seed=23)
    torrent, _ = _seeded(swarm, tmp_path, spec, 64 * 1024, seeders=0)
    swarm.seeder(torrent.path, spec.root, seed_mode=True, upload_limit=SLOW)
    assert daemon.cli("add", str(torrent.path)).returncode == 0
    before = daemon.wait_status(
        torrent.info_hash.hex,
        lambda e: 0.2 <= float(e["progress"]) < 0.8,
        DOWNLOAD_TIMEOUT,
    )["pieces_verified"]
    if victim == "coordinator":
        daemon.kill()  # its agents see their parent die and exit on their own
        daemon.start()
    else:
        os.kill(daemon.agent_pid(victim), signal.SIGKILL)  # the daemon starts a new one
    after = daemon.wait_status(
        torrent.info_hash.hex, lambda e: e["state"] in ("downloading", "seeding"), 60
    )["pieces_verified"]
    assert after >= before, f"{before - after} verified pieces were lost"
    daemon.wait_status(torrent.info_hash.hex, _complete, DOWNLOAD_TIMEOUT)
    _assert_identical(spec, tmp_path / "dl")


def test_existing_data_is_checked_and_a_complete_copy_seeds_at_once(
    swarm: Swarm, tmp_path: Path, daemon: TorvizDaemon
) -> None:
    spec = make_content(tmp_path / "seed", multi_file_layout(3 * 1024 * 1024), seed=24)
    torrent, _ = _seeded(swarm, tmp_path, spec, 64 * 1024, seeders=0)
    added = daemon.cli("add", str(torrent.path), "--dir", str(spec.root))
    assert added.returncode == 0, added.stderr
    entry = daemon.wait_status(torrent.info_hash.hex, lambda e: e["state"] == "seeding", 60)
    assert entry["pieces_verified"] == torrent.num_pieces and entry["downloaded"] == 0


def test_verify_finds_a_corrupted_piece_and_it_is_fetched_again(
    swarm: Swarm, tmp_path: Path, daemon: TorvizDaemon
) -> None:
    spec = make_content(tmp_path / "seed", single_file_layout(2 * 1024 * 1024), seed=25)
    torrent, _ = _seeded(swarm, tmp_path, spec, 64 * 1024, seeders=1)
    assert daemon.cli("add", str(torrent.path)).returncode == 0
    daemon.wait_status(torrent.info_hash.hex, _complete, DOWNLOAD_TIMEOUT)
    target = tmp_path / "dl" / spec.name
    with open(target, "r+b") as handle:
        handle.seek(100_000)
        byte = handle.read(1)
        handle.seek(100_000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    verify = daemon.cli("verify", torrent.info_hash.hex[:12])
    assert verify.returncode == 0, verify.stderr
    assert "verifying" in verify.stdout
    # The recheck finds the bad piece; the download fetches it again from the seeder.
    daemon.wait_status(torrent.info_hash.hex, lambda e: e["state"] != "checking", 60)
    daemon.wait_status(torrent.info_hash.hex, _complete, DOWNLOAD_TIMEOUT)
    _assert_identical(spec, tmp_path / "dl")


def _scrape_incomplete(scrape_url: str, info_hash: object) -> int:
    from torviz.shared.tracker import build_scrape_url

    with urllib.request.urlopen(build_scrape_url(scrape_url, [info_hash]), timeout=5) as reply:  # type: ignore[list-item]
        stats = parse_scrape_response(reply.read())
    return next(iter(stats.values())).incomplete


def test_pause_tells_the_tracker_and_resume_continues(
    swarm: Swarm, tmp_path: Path, daemon: TorvizDaemon
) -> None:
    spec = make_content(tmp_path / "seed", single_file_layout(8 * 1024 * 1024), seed=26)
    torrent, tracker = _seeded(swarm, tmp_path, spec, 64 * 1024, seeders=0)
    swarm.seeder(torrent.path, spec.root, seed_mode=True, upload_limit=SLOW)
    assert daemon.cli("add", str(torrent.path)).returncode == 0
    daemon.wait_status(torrent.info_hash.hex, lambda e: float(e["progress"]) > 0.1, 60)
    assert _scrape_incomplete(tracker.http_scrape_url, torrent.info_hash) == 1
    assert daemon.cli("pause", torrent.info_hash.hex).returncode == 0
    paused = daemon.wait_status(torrent.info_hash.hex, lambda e: e["state"] == "paused", 10)
    assert paused["peers"] == 0
    assert _scrape_incomplete(tracker.http_scrape_url, torrent.info_hash) == 0
    assert daemon.cli("resume", torrent.info_hash.hex).returncode == 0
    daemon.wait_status(torrent.info_hash.hex, _complete, DOWNLOAD_TIMEOUT)
    _assert_identical(spec, tmp_path / "dl")


def test_remove_keeps_the_files_unless_asked(
    swarm: Swarm, tmp_path: Path, daemon: TorvizDaemon
) -> None:
    spec = make_content(tmp_path / "seed", multi_file_layout(1024 * 1024), seed=27)
    torrent, _ = _seeded(swarm, tmp_path, spec, 32 * 1024, seeders=1)
    assert daemon.cli("add", str(torrent.path)).returncode == 0
    daemon.wait_status(torrent.info_hash.hex, _complete, DOWNLOAD_TIMEOUT)
    assert daemon.cli("remove", torrent.info_hash.hex).returncode == 0
    _assert_identical(spec, tmp_path / "dl")  # untouched
    bystander = tmp_path / "dl" / "not-ours.txt"
    bystander.write_text("keep me")
    assert daemon.cli("add", str(torrent.path)).returncode == 0
    daemon.wait_status(torrent.info_hash.hex, lambda e: e["state"] == "seeding", 60)
    removed = daemon.cli("remove", torrent.info_hash.hex, "--delete-data")
    assert removed.returncode == 0, removed.stderr
    for _ in range(50):  # the storage agent deletes them right after the reply
        left = [p for p in (tmp_path / "dl").rglob("*") if p.is_file()]
        if left == [bystander]:
            break
        time.sleep(0.1)
    assert left == [bystander]
    assert bystander.read_text() == "keep me"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs: a real disk that fills up."""
    with small_tmpfs(tmp_path / "small", "3m") as mount:
        yield mount


def test_a_full_disk_stops_the_torrent_and_resume_continues(
    swarm: Swarm, tmp_path: Path, daemon: TorvizDaemon, small_disk: Path
) -> None:
    spec = make_content(tmp_path / "seed", single_file_layout(6 * 1024 * 1024), seed=28)
    torrent, _ = _seeded(swarm, tmp_path, spec, 64 * 1024, seeders=1)
    assert daemon.cli("add", str(torrent.path), "--dir", str(small_disk)).returncode == 0
    failed = daemon.wait_status(torrent.info_hash.hex, lambda e: e["state"] == "error", 60)
    error = str(failed["error"])
    assert spec.name in error and ("ENOSPC" in error or "disk full" in error), error
    status = daemon.cli("status", torrent.info_hash.hex)
    assert "Traceback" not in status.stdout + status.stderr
    before = failed["pieces_verified"]
    remount = ["mount", "-o", "remount,size=20m", str(small_disk)]
    subprocess.run(remount, check=True, capture_output=True)
    assert daemon.cli("resume", torrent.info_hash.hex).returncode == 0
    entry = daemon.wait_status(torrent.info_hash.hex, _complete, DOWNLOAD_TIMEOUT)
    assert entry["pieces_verified"] >= before
    _assert_identical(spec, small_disk)


def _pieces_touching(
    torrent: TorrentFile, root: Path, path: Path, start: int, end: int | None = None
) -> set[int]:
    """The pieces holding bytes ``start`` to ``end`` (exclusive; None: the file's end) of the
    file at ``path``, as the torrent lays it out."""
    info = parse_metainfo(torrent.path.read_bytes()).info
    [entry] = [f for f in info.files if root.joinpath(*f.path) == path]
    stop = entry.length if end is None else min(end, entry.length)
    first = (entry.offset + start) // torrent.piece_length
    last = (entry.offset + stop - 1) // torrent.piece_length
    return set(range(first, last + 1))


def _reached(target: float, entry: dict[str, object]) -> bool:
    return float(entry["progress"]) >= target or entry["progress"] == 1.0  # type: ignore[arg-type]


def _kill_everything(daemon: TorvizDaemon) -> None:
    """SIGKILL the coordinator and every agent at once (a power cut, minus the disk)."""
    victims = [daemon.pid, *descendants(daemon.pid)]
    for pid in victims:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    daemon.kill()


def test_crashes_over_several_rounds_refetch_only_what_was_in_flight(
    swarm: Swarm, tmp_path: Path, daemon: TorvizDaemon
) -> None:
    piece = 64 * 1024
    spec = make_content(tmp_path / "seed", multi_file_layout(16 * 1024 * 1024), seed=29)
    torrent, _ = _seeded(swarm, tmp_path, spec, piece, seeders=0)
    swarm.seeder(torrent.path, spec.root, seed_mode=True, upload_limit=SLOW)
    assert daemon.cli("add", str(torrent.path)).returncode == 0
    rng = random.Random(7)
    rounds = ["storage_agent", "coordinator", "everything", "storage_agent", "coordinator"]
    progress = 0.0
    for victim in rounds:
        progress = min(0.9, progress + rng.uniform(0.05, 0.15))
        entry = daemon.wait_status(
            torrent.info_hash.hex, functools.partial(_reached, progress), DOWNLOAD_TIMEOUT
        )
        if entry["progress"] == 1.0:
            break
        before = entry["pieces_verified"]
        if victim == "storage_agent":
            os.kill(daemon.agent_pid(victim), signal.SIGKILL)
        elif victim == "coordinator":
            daemon.kill()
            daemon.start()
        else:
            _kill_everything(daemon)
            daemon.start()
        after = daemon.wait_status(
            torrent.info_hash.hex, lambda e: e["state"] in ("downloading", "seeding"), 60
        )["pieces_verified"]
        assert after >= before, f"round {victim}: {before - after} verified pieces lost"
    final = daemon.wait_status(torrent.info_hash.hex, _complete, DOWNLOAD_TIMEOUT)
    _assert_identical(spec, tmp_path / "dl")
    # Each crash may cost the pieces in flight: one seeder, at most a batch of
    # `pieces_per_peer` (8) pieces, plus the piece being written. Totals are saved every
    # few seconds, so a killed coordinator can only make the counter smaller, never larger.
    in_flight = (8 + 1) * piece
    assert final["downloaded"] <= spec.total_size + len(rounds) * in_flight


def test_damaged_files_are_found_on_restart_and_only_they_are_fetched(
    swarm: Swarm, tmp_path: Path, daemon: TorvizDaemon
) -> None:
    piece = 64 * 1024
    spec = make_content(tmp_path / "seed", multi_file_layout(4 * 1024 * 1024), seed=30)
    torrent, _ = _seeded(swarm, tmp_path, spec, piece, seeders=0)
    fast = swarm.seeder(torrent.path, spec.root, seed_mode=True)
    assert daemon.cli("add", str(torrent.path)).returncode == 0
    done = daemon.wait_status(torrent.info_hash.hex, _complete, DOWNLOAD_TIMEOUT)
    assert daemon.shutdown() == 0
    fast.stop()
    # Slow now, so the state right after the check is seen before the refetch completes.
    swarm.seeder(torrent.path, spec.root, seed_mode=True, upload_limit=SLOW // 10)
    files = sorted(
        (p for p in (tmp_path / "dl").rglob("*") if p.is_file() and p.stat().st_size), key=str
    )
    flipped, truncated = files[0], files[-1]
    with open(flipped, "r+b") as handle:
        handle.seek(10)
        first = handle.read(1)
        handle.seek(10)
        handle.write(bytes([first[0] ^ 0x55]))
    os.truncate(truncated, truncated.stat().st_size // 2)
    damaged = _pieces_touching(torrent, tmp_path / "dl", flipped, 10, 11)
    damaged |= _pieces_touching(torrent, tmp_path / "dl", truncated, truncated.stat().st_size)
    daemon.start()
    entry = daemon.wait_status(torrent.info_hash.hex, lambda e: e["state"] != "checking", 60)
    assert entry["pieces_verified"] < torrent.num_pieces
    final = daemon.wait_status(torrent.info_hash.hex, _complete, DOWNLOAD_TIMEOUT)
    _assert_identical(spec, tmp_path / "dl")
    # Pieces come fast once the check is done: count the damage from what was damaged, not
    # from a status that may arrive a few pieces late.
    missing = len(damaged)
    refetched = final["downloaded"] - done["downloaded"]
    # Exactly the damaged pieces came again: no more than their bytes.
    assert 0 < refetched <= missing * piece
