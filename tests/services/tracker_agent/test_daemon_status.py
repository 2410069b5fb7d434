"""End to end through the daemon: a hostile tracker and opentracker, seen in ``status --json``.

``torviz-coordinator start`` runs the coordinator and its three agents; the CLI adds a torrent
whose first tier is a hostile HTTP tracker (it refuses with the classic failure code 150) and
whose second tier is opentracker over UDP. ``status --json`` must show the hostile tracker
``failed`` with its cause named, and opentracker ``working`` with its scrape counts; then
``shutdown`` ends every process. On one host the tracker agent announces the port of the peer
agent beside it: ``status`` names that address, and opentracker hands it out.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testing.content import make_content, make_torrent, single_file_layout
from testing.swarm import Swarm
from tests.services.tracker_agent.fakes import HOSTILE_HTTP, HttpServer, Reply
from tests.services.tracker_agent.harness import fresh_info_hash, listed

pytestmark = pytest.mark.interop

COORDINATOR = [sys.executable, "-m", "torviz.services.coordinator"]
CONFIG = """
[peer_agent]
listen_host = "127.0.0.1"

[tracker_agent]
dht = false
announce_timeout = 5.0
"""
STATUS_TIMEOUT = 30.0


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COORDINATOR, *args], capture_output=True, text=True, timeout=30, check=False
    )


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], list[str], Path]]:
    """The daemon, started with a config file; killed at teardown if still running."""
    config = tmp_path / "torviz.toml"
    config.write_text(CONFIG)
    state = tmp_path / "state"
    flags = ["--state-dir", str(state)]
    log_path = tmp_path / "daemon.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [*COORDINATOR, "start", *flags, "--config", str(config),
             "--download-dir", str(tmp_path / "dl")],
            stdout=subprocess.DEVNULL, stderr=log, text=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not (state / "daemon.json").exists():
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "the daemon did not start"
            time.sleep(0.1)
        yield process, flags, log_path
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def _trackers(info_hash: str, flags: list[str]) -> dict[str, dict[str, Any]]:
    status = _cli("status", info_hash[:8], "--json", *flags)
    assert status.returncode == 0, status.stderr
    [entry] = json.loads(status.stdout)["torrents"]
    return {tracker["url"]: tracker for tracker in entry["trackers"]}


def test_status_shows_the_hostile_tracker_failed_and_opentracker_working(
    swarm: Swarm,
    tmp_path: Path,
    daemon: tuple[subprocess.Popen[str], list[str], Path],
) -> None:
    process, flags, log_path = daemon
    spec = make_content(tmp_path / "seed", single_file_layout(200_000), seed=21)
    probe = make_torrent(spec, 16 * 1024, [], tmp_path / "probe.torrent")
    # The fixture probes the last whitelisted hash; a fresh one keeps it independent of ours.
    tracker = swarm.tracker([probe.info_hash, fresh_info_hash()])
    good = tracker.udp_announce_url
    refusal, error = HOSTILE_HTTP["/code"]
    with HttpServer({"/announce": Reply(body=refusal.body)}) as hostile:
        bad = hostile.url("/announce")
        torrent = make_torrent(spec, 16 * 1024, [bad, good], tmp_path / "t.torrent")
        added = _cli("add", str(torrent.path), *flags)
        assert added.returncode == 0, added.stderr
        info_hash = torrent.info_hash.hex
        deadline = time.monotonic() + STATUS_TIMEOUT
        while True:
            trackers = _trackers(info_hash, flags)
            shown_bad, shown_good = trackers.get(bad), trackers.get(good)
            if (
                shown_bad is not None
                and shown_bad["state"] == "failed"
                and shown_good is not None
                and shown_good["state"] == "working"
                and shown_good["completed"] is not None
            ):
                break
            assert time.monotonic() < deadline, (trackers, log_path.read_text()[-3000:])
            time.sleep(0.3)
        assert shown_bad["last_error"] == error
        assert shown_bad["tier"] == 0 and shown_good["tier"] == 1
        assert shown_good["last_error"] is None
        # We are the only peer: a leecher, nobody finished yet (the scrape's counts).
        assert (shown_good["seeders"], shown_good["leechers"], shown_good["completed"]) == (0, 1, 0)
        assert shown_good["next_announce"] > 60
        assert _cli("shutdown", *flags).returncode == 0
        assert process.wait(timeout=30) == 0
    assert "Traceback" not in log_path.read_text()


def test_on_one_host_the_tracker_agent_announces_the_peer_agents_address(
    swarm: Swarm,
    tmp_path: Path,
    daemon: tuple[subprocess.Popen[str], list[str], Path],
) -> None:
    process, flags, log_path = daemon
    spec = make_content(tmp_path / "seed", single_file_layout(100_000), seed=22)
    probe = make_torrent(spec, 16 * 1024, [], tmp_path / "probe.torrent")
    tracker = swarm.tracker([probe.info_hash, fresh_info_hash()])
    torrent = make_torrent(spec, 16 * 1024, [tracker.http_announce_url], tmp_path / "t.torrent")
    assert _cli("add", str(torrent.path), *flags).returncode == 0
    deadline = time.monotonic() + STATUS_TIMEOUT
    while True:
        status = _cli("status", "--json", *flags)
        assert status.returncode == 0, status.stderr
        document = json.loads(status.stdout)
        [entry] = document["torrents"]
        states = [t["state"] for a in entry["announces"] for t in a["trackers"]]
        if states == ["working"]:
            break
        assert time.monotonic() < deadline, (entry, log_path.read_text()[-3000:])
        time.sleep(0.3)
    [peer_agent] = [a for a in document["agents"] if a["role"] == "peer_agent"]
    [tracker_agent] = [a for a in document["agents"] if a["role"] == "tracker_agent"]
    [announce] = entry["announces"]
    assert announce["address"] == peer_agent["address"]  # 127.0.0.1:PORT, where it listens
    assert tracker_agent["address"] == "127.0.0.1"  # where its announces come from
    assert announce["tracker_agent"] == tracker_agent["id"]
    assert announce["peer_agent"] == peer_agent["id"]
    assert announce["reports_totals"] is True and entry["reachable"] is True
    host, port = peer_agent["address"].rsplit(":", 1)
    assert any((a.host, a.port) == (host, int(port)) for a in listed(tracker, torrent.info_hash))
    text = _cli("status", *flags)
    assert text.returncode == 0, text.stderr
    line = next(line for line in text.stdout.splitlines() if line.startswith("  announce "))
    assert peer_agent["address"] in line and f"peer agent {peer_agent['id']}" in line, line
    assert "1/1 trackers working" in line
    assert "hint" not in text.stdout
    assert _cli("shutdown", *flags).returncode == 0
    assert process.wait(timeout=30) == 0
    assert "Traceback" not in log_path.read_text()
