"""Helpers for the web seed interop tests (issue 17): a .torrent with a ``url-list``, torviz's
loopback config for them, a daemon's torrent status read over its control socket, and the
peer agent among the processes of a ``download``.

Strategy: the tests build content and a .torrent with ``testing.content`` (libtorrent hashes
it), then ``add_url_list`` writes the web seed URLs into the .torrent's top-level dict (outside
``info``, so the info hash stays what libtorrent computed). Status is read as typed bus records
(``TorrentStatus``: ``peer_list`` and ``web_seeds``) through ``ControlClient``, the way
``status`` itself asks, so the tests check what the coordinator reports, not how the CLI
renders it.

Rules:
- Every wait is bounded and fails naming what it waited for, with the last status seen.
- ``download_alone`` runs the one-shot ``download`` (``magnets.DownloadRun``) under a
  ``RssWatch`` and always stops it and every process under it; daemons and servers belong to
  the callers.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from testing.processes import StopOnExit
from tests.support.daemon import TorvizDaemon, descendants
from tests.support.magnets import DownloadRun, RssWatch
from torviz.services.coordinator.cli.daemon_target import daemon_target
from torviz.shared import bencode
from torviz.shared.bus import (
    AgentStatus,
    GetStatus,
    PeerSource,
    PeerStatus,
    SessionEvent,
    StatusReport,
    TorrentStatus,
)
from torviz.shared.runtime.control import ControlClient

__all__ = [
    "DaemonStatus",
    "OneShot",
    "add_url_list",
    "download_alone",
    "peer_agent_pid",
    "web_seed_config",
    "web_seed_peers",
]

_POLL_S = 0.25
_AGENT_WAIT_S = 20.0


def add_url_list(torrent: Path, urls: Sequence[str]) -> None:
    """Write ``urls`` as the ``url-list`` of the .torrent at ``torrent`` (BEP 19).

    Only the top-level dict changes: the ``info`` dict, and with it the info hash, is kept
    byte for byte.

    Args:
        torrent: a .torrent file (rewritten in place).
        urls: the web seed URLs, in order.
    """
    value = bencode.decode(torrent.read_bytes(), strict=False)
    assert isinstance(value, dict)
    value[b"url-list"] = [url.encode() for url in urls]
    torrent.write_bytes(bencode.encode(value))


def web_seed_config(
    *,
    listen_port: int | None = None,
    max_failures: int = 8,
    timeout: float = 20.0,
    ca_file: Path | None = None,
    extra: str = "",
) -> str:
    """torviz's TOML config for a web seed test: loopback only, no DHT, short timeouts.

    Args:
        listen_port: the one port the peer agent listens on (so a libtorrent seeder can dial
            it), None for the default range.
        max_failures: ``[peer_agent] web_seed_max_failures`` (failed requests in a row before a
            web seed is given up).
        timeout: ``[peer_agent] web_seed_timeout`` in seconds.
        ca_file: ``[peer_agent] web_seed_ca_file``: CA certificates trusted for HTTPS.
        extra: more TOML appended (whole sections).
    """
    ports = "" if listen_port is None else f"listen_ports = [{listen_port}, {listen_port}]\n"
    if ca_file is not None:
        ports += f"web_seed_ca_file = {json.dumps(str(ca_file))}\n"  # a TOML basic string
    return f"""
[peer_agent]
listen_host = "127.0.0.1"
{ports}web_seed_timeout = {timeout}
web_seed_max_failures = {max_failures}

[tracker_agent]
dht = false
announce_timeout = 5.0
bind_address = "127.0.0.1"
{extra}"""


def web_seed_peers(status: TorrentStatus) -> list[PeerStatus]:
    """The rows of ``status.peer_list`` that are web seeds."""
    return [peer for peer in status.peer_list if peer.source is PeerSource.WEB_SEED]


def peer_agent_pid(root: int) -> int:
    """The pid of the peer agent under the process ``root`` (0 when there is none yet)."""
    for pid in sorted(descendants(root)):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"torviz.services.peer_agent" in command:
            return pid
    return 0


class DaemonStatus(StopOnExit):
    """A control connection to a running daemon that reads one torrent's ``TorrentStatus``.

    Every status read is kept in ``seen`` (oldest first), so a test can ask afterwards what was
    reported during the download: rows are gone once their connection closed. ``events`` is
    the daemon's event log and ``agents`` its agents, as the last read reported them.

    Args:
        daemon: the running daemon.
        info_hash: the torrent's info hash in hex.
        timeout: seconds each control request may take.
    """

    def __init__(self, daemon: TorvizDaemon, info_hash: str, timeout: float = 10.0) -> None:
        target = daemon_target(argparse.Namespace(state_dir=str(daemon.state_dir), control=None))
        self.info_hash = info_hash
        self.seen: list[TorrentStatus] = []
        self.events: tuple[SessionEvent, ...] = ()
        self.agents: tuple[AgentStatus, ...] = ()
        self._client = ControlClient(
            target.control, curve=target.curve, green=False, timeout=timeout
        )
        try:
            self._client.hello()
        except BaseException:
            self._client.close()
            raise

    def status(self) -> TorrentStatus:
        """The torrent's status now (kept in ``seen``)."""
        report = self._client.request(GetStatus(self.info_hash))
        assert isinstance(report, StatusReport), report
        [entry] = report.torrents
        self.seen.append(entry)
        self.events = report.events
        self.agents = report.agents
        return entry

    def wait(
        self, predicate: Callable[[TorrentStatus], bool], timeout: float, what: str
    ) -> TorrentStatus:
        """Poll the status until ``predicate`` holds.

        Raises:
            AssertionError: not within ``timeout`` s; names ``what`` and the last status.
        """
        deadline = time.monotonic() + timeout
        while True:
            entry = self.status()
            if predicate(entry):
                return entry
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout} s; last status: {entry}")
            time.sleep(_POLL_S)

    def wait_agents(self, count: int, timeout: float) -> None:
        """Poll until the daemon reports ``count`` agents (all registered after a start).

        Raises:
            AssertionError: not within ``timeout`` s.
        """
        deadline = time.monotonic() + timeout
        self.status()
        while len(self.agents) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.agents)} agents, not {count}, in {timeout} s")
            time.sleep(_POLL_S)
            self.status()

    def stop(self) -> None:
        self._client.close()


@dataclass(frozen=True, slots=True)
class OneShot:
    """How a one-shot ``download`` ended.

    Attributes:
        code: its exit code.
        stdout: its progress lines.
        stderr: its stderr (with ``--log-level INFO``: the services' log lines).
        agent_peak_kib: the peer agent's peak resident memory, KiB.
        peaks: every process's peak resident memory, KiB, by pid.
    """

    code: int
    stdout: str
    stderr: str
    agent_peak_kib: int
    peaks: dict[int, int]


def download_alone(
    torrent: Path, out: Path, config_text: str, folder: Path, timeout: float, *extra: str
) -> OneShot:
    """Run ``download TORRENT -o OUT`` to its end, sampling every process's memory.

    Args:
        torrent: the .torrent.
        out: the download directory.
        config_text: torviz's TOML config (written into ``folder``).
        folder: where the config and the log go.
        timeout: seconds the download may take.
        extra: more ``download`` arguments.

    Raises:
        AssertionError: no peer agent appeared, or the download did not end within ``timeout``.
    """
    config = folder / "torviz.toml"
    config.write_text(config_text)
    log = folder / "download.log"
    with DownloadRun(str(torrent), out, config, log, "--log-level", "INFO", *extra) as run:
        watch = RssWatch(run.pid, max_seconds=timeout + 30)
        try:
            deadline = time.monotonic() + _AGENT_WAIT_S
            agent = peer_agent_pid(run.pid)
            while agent == 0 and run.process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
                agent = peer_agent_pid(run.pid)
            code = run.wait(timeout)
        finally:
            peaks = watch.stop()
        assert agent != 0, f"no peer agent under the download; stderr: {run.stderr[-2000:]}"
        return OneShot(code, run.stdout, run.stderr, peaks.get(agent, 0), peaks)
