"""A torviz daemon (``torviz-coordinator start``) as a process under test, and its CLI.

``TorvizDaemon`` starts the daemon with its own state directory and config, waits until its
control socket is published, runs CLI commands against it, and finds its agents through
/proc. ``stop`` always leaves no process behind: shutdown, then SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["COORDINATOR", "LOOPBACK_CONFIG", "TorvizDaemon", "descendants", "running_daemon"]

COORDINATOR = [sys.executable, "-m", "torviz.services.coordinator"]
LOOPBACK_CONFIG = """
[peer_agent]
listen_host = "127.0.0.1"

[tracker_agent]
dht = false
"""
"""A daemon that listens on loopback only and runs no DHT node."""
_START_TIMEOUT = 20.0
_CLI_TIMEOUT = 30.0


def descendants(pid: int) -> set[int]:
    """Every process below ``pid``, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


class TorvizDaemon:
    """Args:
    state_dir: the daemon's state directory (kept across restarts of this object).
    config: its TOML config file.
    download_dir: where new torrents go.
    log: where its stderr goes (appended).
    """

    def __init__(self, state_dir: Path, config: Path, download_dir: Path, log: Path) -> None:
        self.state_dir = state_dir
        self.config = config
        self.download_dir = download_dir
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None

    @property
    def flags(self) -> list[str]:
        return ["--state-dir", str(self.state_dir)]

    def start(self, *extra: str, umask: int = -1) -> TorvizDaemon:
        """Start it (``extra``: more ``start`` arguments; ``umask``: the daemon's, -1 ours)
        and wait until its ``daemon.json`` is there."""
        self._log_handle = open(self.log, "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                *COORDINATOR,
                "start",
                *self.flags,
                "--config",
                str(self.config),
                "--download-dir",
                str(self.download_dir),
                *extra,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log_handle,
            umask=umask,
        )
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._published():
            if self.process.poll() is not None:
                raise AssertionError(f"the daemon exited: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("the daemon did not start")
            time.sleep(0.1)
        return self

    def _published(self) -> bool:
        """Whether ``daemon.json`` names this process (a killed predecessor leaves its own)."""
        assert self.process is not None
        try:
            info = json.loads((self.state_dir / "daemon.json").read_text())
        except (OSError, ValueError):
            return False
        return isinstance(info, dict) and info.get("pid") == self.process.pid

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*COORDINATOR, *args, *self.flags],
            capture_output=True,
            text=True,
            timeout=_CLI_TIMEOUT,
            check=False,
        )

    def status(self, torrent_id: str) -> dict[str, Any]:
        result = self.cli("status", torrent_id, "--json")
        assert result.returncode == 0, result.stderr
        [entry] = json.loads(result.stdout)["torrents"]
        assert isinstance(entry, dict)
        return entry

    def wait_status(
        self, torrent_id: str, predicate: Callable[[dict[str, Any]], bool], timeout: float
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            entry = self.status(torrent_id)
            if predicate(entry):
                return entry
            if time.monotonic() > deadline:
                raise AssertionError(f"status never matched: {entry}")
            time.sleep(0.3)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def agent_pid(self, kind: str) -> int:
        """The pid of the daemon's agent of ``kind`` (``storage_agent``, ``peer_agent``, ...)."""
        for pid in descendants(self.pid):
            if f"torviz.services.{kind}" in _command_line(pid):
                return pid
        raise AssertionError(f"no {kind} under the daemon")

    def kill(self) -> None:
        """SIGKILL the coordinator itself (its agents notice and exit on their own)."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def shutdown(self) -> int:
        result = self.cli("shutdown")
        assert result.returncode == 0, result.stderr
        assert self.process is not None
        return self.process.wait(timeout=30)

    def stop(self) -> None:
        """Whatever state it is in, leave no process of it behind."""
        if self.process is None:
            return
        children = descendants(self.process.pid)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in children):
            time.sleep(0.1)
        for pid in children:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None


@contextlib.contextmanager
def running_daemon(folder: Path, config: str = LOOPBACK_CONFIG) -> Iterator[TorvizDaemon]:
    """A started daemon whose config (``config``, TOML text), state, downloads (``dl``) and log
    are in ``folder``; stopped on exit, leaving no process."""
    (folder / "config.toml").write_text(config)
    daemon = TorvizDaemon(
        folder / "state", folder / "config.toml", folder / "dl", folder / "daemon.log"
    )
    try:
        yield daemon.start()
    finally:
        daemon.stop()
