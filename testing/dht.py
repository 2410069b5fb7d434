"""A loopback DHT of libtorrent sessions for tests and benchmarks (the parent side of
`testing/lt_dht.py`).

Strategy: `LtDht` starts the DHT process, waits until every session listens and has started
its DHT, then answers questions by sending commands and waiting for events: how full the
routing tables are (`wait_converged`), and who a get_peers lookup from one node finds
(`get_peers`). Seeders and leechers that use this DHT are ordinary `testing/lt_peer.py`
peers whose config names nodes to join (`LtPeerConfig.dht_nodes`; `dht_seeder`).
`torviz_dht_config` writes a torviz config whose DHT node joins it: on 127.0.0.1 at a port the
caller chose, so libtorrent and hostile nodes can be pointed at it, bootstrapped from loopback
nodes only.

Rules:
- Loopback only: the sessions take fresh 127.0.0.x addresses (`next_loopback_address`).
- Every wait is bounded and fails with a `SwarmError` naming what was awaited; the process is
  stopped by `close` (or the context manager, or `kill_leftovers`).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from testing.lt_dht import DHT_LOOPBACK, LtDhtConfig
from testing.processes import ManagedProcess, SwarmError
from testing.swarm import LtPeer, LtPeerConfig, Swarm, next_loopback_address

__all__ = ["LT_DHT_SCRIPT", "LtDht", "dht_seeder", "torviz_dht_config"]

LT_DHT_SCRIPT = Path(__file__).resolve().with_name("lt_dht.py")


class LtDht:
    """N libtorrent DHT sessions on their own loopback addresses, in one child process.

    Args:
        count: how many sessions (the issue asks for at least 8).
        log_path: where the process's stderr goes.
        extra_bootstrap: more ``host:port`` nodes each session bootstraps from.
        settings: extra libtorrent settings for every session.
    """

    def __init__(
        self,
        count: int = 8,
        *,
        log_path: Path | None = None,
        extra_bootstrap: Iterable[str] = (),
        settings: Mapping[str, bool | int | str] | None = None,
    ) -> None:
        self.config = LtDhtConfig(
            hosts=tuple(next_loopback_address() for _ in range(count)),
            extra_bootstrap=tuple(extra_bootstrap),
            settings=dict(settings or {}),
        )
        self.process = ManagedProcess(
            "lt-dht",
            [sys.executable, str(LT_DHT_SCRIPT), "--config", self.config.to_json()],
            log_path=log_path,
        )
        self.started = time.monotonic()
        self._nodes: list[str] = []

    @property
    def nodes(self) -> list[str]:
        """The sessions' ``host:port`` UDP addresses (their DHT endpoints), once ready."""
        if not self._nodes:
            raise SwarmError("not_ready", "lt-dht: nodes unknown before wait_ready()")
        return list(self._nodes)

    def wait_ready(self, timeout: float = 30.0) -> list[str]:
        """Wait until every session listens and its DHT is started; returns `nodes`."""
        event = self.process.wait_event("ready", timeout)
        nodes = event.get("nodes")
        if not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes):
            raise SwarmError("bad_event", f"lt-dht: bad ready event {event!r}")
        self._nodes = nodes
        return list(nodes)

    def tables(self) -> list[int]:
        """The newest routing-table size of every session (0 before the first stats)."""
        event = self.process.last("stats")
        table = [] if event is None else event.get("table", [])
        return [int(n) for n in table] if isinstance(table, list) else []

    def wait_converged(self, min_nodes: int | None = None, timeout: float = 60.0) -> float:
        """Wait until every session's table holds `min_nodes` nodes (default: all the others).

        Returns:
            Seconds since the process was started.
        """
        want = len(self.config.hosts) - 1 if min_nodes is None else min_nodes

        def full(event: dict[str, Any]) -> bool:
            table = event.get("table")
            return isinstance(table, list) and bool(table) and min(table) >= want

        try:
            self.process.wait_event("stats", timeout, full)
        except SwarmError as exc:
            raise SwarmError(
                exc.reason, f"{exc} (tables {self.tables()}, wanted {want} each)"
            ) from None
        return time.monotonic() - self.started

    def _send(self, command: Mapping[str, Any]) -> None:
        stdin = self.process.popen.stdin
        if stdin is None or stdin.closed:
            raise SwarmError("process_exited", "lt-dht: its stdin is closed")
        try:
            stdin.write((json.dumps(dict(command)) + "\n").encode())
            stdin.flush()
        except OSError as exc:
            raise SwarmError("process_exited", f"lt-dht: {exc}") from exc

    def found(self, info_hash: str, *, since: float = 0.0) -> set[str]:
        """Every ``host:port`` that lookups for `info_hash` returned at or after `since`
        (wall-clock time), from any node."""
        peers: set[str] = set()
        for event in self.process.events():
            if event.get("event") != "peers" or event.get("info_hash") != info_hash:
                continue
            at, listed = event.get("at"), event.get("peers")
            if isinstance(at, int | float) and at >= since and isinstance(listed, list):
                peers.update(str(p) for p in listed)
        return peers

    def get_peers(self, info_hash: str, *, node: int = 0, wait: float = 3.0) -> set[str]:
        """Run a get_peers lookup from session `node` and collect answers for `wait` seconds.

        libtorrent reports values as they arrive and never says that a lookup found nobody,
        hence the fixed wait (on loopback a lookup among 8 nodes takes milliseconds).

        Returns:
            The ``host:port`` peers found.
        """
        since = time.time()
        self._send({"cmd": "get_peers", "node": node, "info_hash": info_hash})
        time.sleep(wait)
        return self.found(info_hash, since=since)

    def wait_findable(
        self,
        info_hash: str,
        peer: str,
        *,
        node: int = 0,
        timeout: float = 60.0,
        interval: float = 1.0,
    ) -> float:
        """Start a get_peers lookup from `node` every `interval` seconds until one finds `peer`
        (``host:port``).

        Returns:
            Seconds it took (from this call to the answer that named `peer`).

        Raises:
            SwarmError: not found within `timeout` (the message lists what was found).
        """
        started, since = time.monotonic(), time.time()
        deadline = started + timeout
        next_lookup = 0.0
        while time.monotonic() < deadline:
            if time.monotonic() >= next_lookup:
                self._send({"cmd": "get_peers", "node": node, "info_hash": info_hash})
                next_lookup = time.monotonic() + interval
            for event in self.process.events():
                listed = event.get("peers")
                if (
                    event.get("event") == "peers"
                    and event.get("info_hash") == info_hash
                    and isinstance(listed, list)
                    and peer in listed
                    and float(event.get("at", 0)) >= since
                ):
                    return float(event["at"]) - since
            if not self.process.is_running():
                raise SwarmError("process_exited", f"lt-dht exited: {self.process.stderr_tail()}")
            time.sleep(0.05)
        raise SwarmError(
            "timeout",
            f"lt-dht: {peer} not found for {info_hash} in {timeout} s "
            f"(found: {sorted(self.found(info_hash, since=since))})",
        )

    def announce(self, info_hash: str, port: int, *, node: int = 0) -> None:
        """Session `node` announces itself (its address, `port`) for `info_hash`."""
        self._send({"cmd": "announce", "node": node, "info_hash": info_hash, "port": port})

    def add_node(self, address: str, *, node: int = 0) -> None:
        """Session `node` pings `address` (``host:port``), adding it to its table if it answers."""
        self._send({"cmd": "add_node", "node": node, "address": address})

    def close(self) -> None:
        """Stop the process (never raises)."""
        try:
            self.process.stop()
        except Exception as exc:
            print(f"lt-dht: stopping failed: {exc}", file=sys.stderr)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


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
            settings=DHT_LOOPBACK,
            dht_announce_every=announce_every,
            upload_limit=upload_limit,
            report_peers=True,
        )
    )
