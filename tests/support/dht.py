"""Helpers for the DHT interop tests and the DHT benchmark: torviz's config with its DHT node on
a known port bootstrapped from loopback nodes, a libtorrent seeder that only announces to the
DHT, and /proc readings (CPU time, resident memory) of the tracker agent.

Strategy: torviz's DHT binds the tracker agent's ``bind_address`` (127.0.0.1 here) on a port
chosen by the test, so libtorrent nodes and hostile nodes can be pointed at it; its bootstrap
list names only the libtorrent nodes of `testing/dht.py`. The test process sets
``TORVIZ_DHT_LOCAL_ONLY=1`` (tests/conftest.py) and children inherit it: even a mistake here
could not reach a public router.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testing.dht import LtDht
from testing.swarm import LtPeer, LtPeerConfig, Swarm, next_loopback_address

__all__ = [
    "CpuSample",
    "cpu_seconds",
    "dht_seeder",
    "status_document",
    "torviz_dht_config",
    "wait_agent_pid",
    "wait_document",
]

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def torviz_dht_config(
    path: Path,
    listen_port: int,
    bootstrap: Sequence[str],
    *,
    dht_port: int | None = None,
    metadata_timeout: float = 10.0,
) -> Path:
    """Write a loopback-only torviz config with its DHT node on.

    Args:
        path: where to write the TOML file.
        listen_port: the one port of 127.0.0.1 the peer agent listens on.
        bootstrap: ``host:port`` DHT nodes (loopback) for ``dht_bootstrap``; may be empty.
        dht_port: the DHT's UDP port on 127.0.0.1; None: the same number as `listen_port`.
        metadata_timeout: seconds a peer may take to answer a metadata request.

    Returns:
        ``path``.
    """
    for node in bootstrap:
        assert node.startswith("127."), f"bootstrap node {node} is not on loopback"
    nodes = ", ".join(json.dumps(node) for node in bootstrap)
    path.write_text(
        f"""
[coordinator]
metadata_timeout = {metadata_timeout}

[peer_agent]
listen_host = "127.0.0.1"
listen_ports = [{listen_port}, {listen_port}]

[tracker_agent]
dht = true
dht_port = {listen_port if dht_port is None else dht_port}
dht_bootstrap = [{nodes}]
announce_timeout = 5.0
bind_address = "127.0.0.1"
"""
    )
    return path


def dht_seeder(
    swarm: Swarm,
    dht: LtDht,
    torrent: Path,
    data: Path,
    *,
    nodes: Sequence[str] | None = None,
    upload_limit: int = 0,
    announce_every: float = 1.0,
) -> LtPeer:
    """A libtorrent seeder of `torrent` (no tracker) that joins `dht` and announces to it
    every `announce_every` seconds; ready when returned (not yet findable: see
    `LtDht.wait_findable`)."""
    return swarm.peer(
        LtPeerConfig(
            role="seeder",
            torrent=torrent,
            save_path=data,
            listen_host=next_loopback_address(),
            seed_mode=True,
            dht_nodes=tuple(nodes if nodes is not None else dht.nodes[:2]),
            dht_announce_every=announce_every,
            upload_limit=upload_limit,
            report_peers=True,
        )
    )


def status_document(cli: Callable[..., Any]) -> dict[str, Any]:
    """``status --json`` of a daemon (`cli` is `TorvizDaemon.cli`), parsed."""
    result = cli("status", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert isinstance(document, dict)
    return document


def wait_document(
    cli: Callable[..., Any],
    predicate: Callable[[dict[str, Any]], bool],
    timeout: float,
    what: str,
) -> dict[str, Any]:
    """Poll ``status --json`` every 0.3 s until `predicate` holds; AssertionError (naming
    `what` and the last document) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        document = status_document(cli)
        if predicate(document):
            return document
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen in {timeout} s; last status: {document}")
        time.sleep(0.3)


def wait_agent_pid(agent_pid: Callable[[str], int], kind: str, timeout: float = 15.0) -> int:
    """The pid of the daemon's agent of `kind` (`agent_pid` is `TorvizDaemon.agent_pid`),
    waiting up to `timeout` seconds for the daemon to start it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return agent_pid(kind)
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of `pid` so far, in seconds (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


@dataclass
class CpuSample:
    """CPU used by one process between `start` and `stop` (wall clock and CPU seconds)."""

    pid: int
    wall: float = 0.0
    cpu: float = 0.0

    started: float = 0.0
    _cpu0: float = 0.0

    def start(self) -> CpuSample:
        self.started = time.monotonic()
        self._cpu0 = cpu_seconds(self.pid)
        return self

    def stop(self) -> CpuSample:
        self.wall = time.monotonic() - self.started
        self.cpu = cpu_seconds(self.pid) - self._cpu0
        return self

    @property
    def share(self) -> float:
        """CPU seconds per wall second (1.0 = one core busy)."""
        return self.cpu / self.wall if self.wall > 0 else 0.0
