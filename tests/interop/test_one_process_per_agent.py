"""One agent id, one live process: a second process is refused, a restart is taken.

Every process is real: opentracker and slow libtorrent seeders on loopback, and torviz as an
operator runs it with ``embedded_agents = false``: ``torviz-coordinator start``, then the
storage, tracker and peer agents each as its own process on the daemon's ipc bus. In the
middle of a download:

- a second peer agent started with the live one's ``--agent-id`` (a unit copied twice) exits
  with status 2 and one error line naming the live process, the coordinator logs one warning
  naming both, and the download completes identical with no piece given up;
- the peer agent SIGKILLed and started again at once under the same id is taken as a restart
  (``restarted (pid A -> pid B)``), and the download completes identical.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testing.content import ContentSpec, TorrentFile, make_content, multi_file_layout
from testing.swarm import Swarm
from tests.interop.test_download import _assert_identical, _seeded
from tests.support.daemon import TorvizDaemon

pytestmark = pytest.mark.interop

SLOW = 600_000
"""Bytes per second per seeder: the download lasts long enough to act in its middle."""
SIZE = 12 * 1024 * 1024 + 4321
PIECE = 64 * 1024
DOWNLOAD_TIMEOUT = 120.0
REFUSED_WITHIN = 20.0
"""Seconds a duplicate may take to start, say hello and exit (a Python start on a busy box)."""

CONFIG = """
[coordinator]
embedded_agents = false

[peer_agent]
listen_host = "127.0.0.1"

[tracker_agent]
dht = false
announce_timeout = 5.0
bind_address = "127.0.0.1"
"""


class Agents:
    """Agent processes on the daemon's bus, each with its log file; ``close`` kills them all."""

    def __init__(self, daemon: TorvizDaemon, config: Path, logs: Path) -> None:
        self.bus = f"ipc://{daemon.state_dir}/bus.sock"
        self.data = f"ipc://{daemon.state_dir}/data.sock"
        self.state_dir = daemon.state_dir
        self.config = config
        self.logs = logs
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, kind: str, agent_id: str, *extra: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.logs / f"{agent_id}-{len(self.started)}.log"
        argv = [sys.executable, "-m", f"torviz.services.{kind}", "--coordinator", self.bus]
        argv += ["--agent-id", agent_id, "--config", str(self.config), "--log-file", str(log)]
        with open(log.with_suffix(".stderr"), "wb") as stderr:
            process = subprocess.Popen(
                [*argv, *extra], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
            )
        self.started.append((process, log))
        return process, log

    def start_all(self) -> subprocess.Popen[bytes]:
        """The storage and tracker agents, and peer agent ``peer-1`` (returned)."""
        self.start("storage_agent", "storage-1", "--data", self.data)
        self.start("tracker_agent", "tracker-1")
        peer, _ = self.start("peer_agent", "peer-1")
        return peer

    def logs_text(self) -> str:
        return "\n".join(
            path.read_text(errors="replace")
            for _, log in self.started
            for path in (log, log.with_suffix(".stderr"))
            if path.exists()
        )

    def close(self) -> None:
        for process, _ in self.started:
            if process.poll() is None:
                process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[TorvizDaemon, Agents]]:
    config = tmp_path / "torviz.toml"
    config.write_text(CONFIG)
    logs = tmp_path / "logs"
    logs.mkdir()
    daemon = TorvizDaemon(tmp_path / "state", config, tmp_path / "dl", logs / "coordinator.log")
    agents = Agents(daemon, config, logs)
    try:
        daemon.start("--log-level", "INFO")
        yield daemon, agents
    finally:
        daemon.stop()
        agents.close()


def _started_download(
    swarm: Swarm, tmp_path: Path, daemon: TorvizDaemon, agents: Agents
) -> tuple[ContentSpec, TorrentFile, subprocess.Popen[bytes]]:
    """A multi-file torrent from two slow seeders, added and under way (5 % or more)."""
    spec = make_content(tmp_path / "seed", multi_file_layout(SIZE), seed=12)
    torrent, _ = _seeded(swarm, tmp_path, spec, PIECE, seeders=0)
    for _ in range(2):
        swarm.seeder(torrent.path, spec.root, seed_mode=True, upload_limit=SLOW)
    peer = agents.start_all()
    added = daemon.cli("add", str(torrent.path))
    assert added.returncode == 0, added.stderr
    entry = daemon.wait_status(
        torrent.info_hash.hex, lambda e: float(e["progress"]) >= 0.05, DOWNLOAD_TIMEOUT
    )
    assert float(entry["progress"]) < 0.6, f"too fast to act in the middle: {entry}"
    return spec, torrent, peer


def _completed(daemon: TorvizDaemon, torrent: TorrentFile, spec: ContentSpec) -> None:
    daemon.wait_status(
        torrent.info_hash.hex, lambda e: float(e["progress"]) == 1.0, DOWNLOAD_TIMEOUT
    )
    _assert_identical(spec, daemon.download_dir)


def test_a_second_process_with_a_live_agents_id_is_refused_and_the_download_goes_on(
    swarm: Swarm, tmp_path: Path, cluster: tuple[TorvizDaemon, Agents]
) -> None:
    daemon, agents = cluster
    spec, torrent, live = _started_download(swarm, tmp_path, daemon, agents)

    copy, copy_log = agents.start("peer_agent", "peer-1")
    assert copy.wait(timeout=REFUSED_WITHIN) == 2
    errors = [line for line in copy_log.read_text().splitlines() if " ERROR " in line]
    assert len(errors) == 1, errors
    assert "duplicate_agent" in errors[0]
    assert "'peer-1' already runs on" in errors[0] and f"(pid {live.pid}," in errors[0]
    assert "give this one another --agent-id" in errors[0]
    assert "Traceback" not in copy_log.read_text()

    _completed(daemon, torrent, spec)
    assert live.poll() is None, "the live agent was disturbed"
    coordinator = daemon.log.read_text()
    warnings = [line for line in coordinator.splitlines() if "second process of" in line]
    assert len(warnings) == 1, warnings
    assert f"pid {copy.pid} on" in warnings[0] and f"pid {live.pid} on" in warnings[0]
    assert "said hello again" not in coordinator
    assert "restarted" not in coordinator
    everything = coordinator + agents.logs_text()
    assert "gave up piece" not in everything
    assert "Traceback" not in everything


def test_an_agent_killed_and_started_again_at_once_is_a_restart(
    swarm: Swarm, tmp_path: Path, cluster: tuple[TorvizDaemon, Agents]
) -> None:
    daemon, agents = cluster
    spec, torrent, first = _started_download(swarm, tmp_path, daemon, agents)

    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    second, _ = agents.start("peer_agent", "peer-1")
    deadline = time.monotonic() + REFUSED_WITHIN
    while f"peer-1 restarted (pid {first.pid} -> pid {second.pid})" not in daemon.log.read_text():
        assert second.poll() is None, f"the restarted agent exited {second.returncode}"
        assert time.monotonic() < deadline, "the coordinator never took the restart"
        time.sleep(0.2)

    _completed(daemon, torrent, spec)
    assert second.poll() is None
    coordinator = daemon.log.read_text()
    assert "second process of" not in coordinator
    assert "gave up piece" not in coordinator + agents.logs_text()
