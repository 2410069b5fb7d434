"""A loopback DHT of libtorrent sessions, run as one process: N DHT-only sessions, each on its
own 127.0.0.x address, bootstrapped to each other, answering lookups on command.

Strategy: the parent (`testing/dht.py`, `LtDht`) starts ``python testing/lt_dht.py --config
JSON`` (JSON of `LtDhtConfig`). The sessions start with the DHT off, each listening on its own
address; once every UDP port is known, the DHT is turned on in each and every other session is
added as a node (`add_dht_node`: libtorrent pings it and keeps it once it answers), so no port
race and no wait for a bucket refresh. Not as routers (`dht_bootstrap_nodes`): libtorrent
never puts a router into its routing table, so N sessions naming each other as routers keep N
empty tables (measured: all 0 after 20 s). The same holds for any client given a libtorrent
node to bootstrap from: add it as a node (`LtPeerConfig.dht_nodes` does). One process hosts
all sessions: a libtorrent session is threads of its own, so N of them cost little more than
one, where N processes would each pay an interpreter. Events, one JSON object per line on stdout::

    {"event":"ready", "nodes":["127.0.0.2:PORT", ...]}               DHT started in every one
    {"event":"stats", "at":..., "table":[n0, n1, ...]}               routing-table sizes
    {"event":"peers", "node":i, "info_hash":..., "peers":[...], "at":...}  a response's values
    {"event":"error", "reason":..., "message":...}                    fatal; exits non-zero

Commands, one JSON object per line on stdin (EOF stops the process)::

    {"cmd":"get_peers", "node":i, "info_hash":HEX}           a get_peers lookup from node i
    {"cmd":"announce", "node":i, "info_hash":HEX, "port":P}   node i announces itself at P
    {"cmd":"add_node", "node":i, "address":"host:port"}       node i pings that node

Rules:
- Loopback only: `testing/lt_peer.NETWORK_OFF` first, then `DHT_LOOPBACK` (the DHT on with
  libtorrent's address restrictions off, which would otherwise refuse 127.x nodes); peers of
  `testing/lt_peer.py` that join this DHT take `DHT_LOOPBACK` as their extra `settings`. The only
  addresses ever contacted are the bootstrap list (all loopback) and what nodes answer; a
  session's `outgoing_interfaces` pins its sockets to its own 127.0.0.x.
- Runs as a script (it puts the repository root on sys.path for `testing.lt_peer`, which
  imports only the standard library, libtorrent and nothing of torviz).
- The process exits on SIGTERM/SIGINT or when stdin reaches EOF.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import FrameType
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script

from testing.lt_peer import HAVE_LIBTORRENT, NETWORK_OFF, PeerConfigError, split_host_port

if HAVE_LIBTORRENT:
    import libtorrent as lt

__all__ = ["DHT_LOOPBACK", "LtDhtConfig", "dht_settings", "main"]

_MAX_CONFIG_BYTES = 64 * 1024
_MAX_NODES = 64
_MAX_COMMAND = 4096
_ALERT_WAIT_MS = 50
_LISTEN_WAIT_S = 10.0


DHT_LOOPBACK: dict[str, bool | int | str] = {
    "enable_dht": True,
    "dht_restrict_routing_ips": False,
    "dht_restrict_search_ips": False,
    "dht_enforce_node_id": False,
    "dht_prefer_verified_node_ids": False,
    "dht_ignore_dark_internet": False,
    "dht_read_only": False,
    "dht_privacy_lookups": False,
    "dht_upload_rate_limit": 1_000_000,
    # Loopback answers in microseconds: libtorrent's per-IP block (5 queries/s) stays, but a
    # test's burst of lookups must not trip it.
    "dht_block_ratelimit": 1000,
}
"""Settings that make a libtorrent DHT work among 127.x addresses (after `NETWORK_OFF`):
several nodes per /24, ids not derived from a loopback address, "dark" address ranges."""


def dht_settings(bootstrap: list[str] | tuple[str, ...] = ()) -> dict[str, bool | int | str]:
    """`DHT_LOOPBACK` with `bootstrap` (``host:port`` strings, loopback) as the routers
    (which libtorrent never puts in its table: empty, the usual case here, is fine).

    Raises:
        PeerConfigError: a bootstrap entry is not ``host:port`` on 127.0.0.0/8.
    """
    for node in bootstrap:
        host, _ = split_host_port(node)
        if not host.startswith("127."):
            raise PeerConfigError(f"bootstrap node {node!r} is not on 127.0.0.0/8")
    return {**DHT_LOOPBACK, "dht_bootstrap_nodes": ",".join(bootstrap)}


@dataclass(frozen=True, slots=True)
class LtDhtConfig:
    """The DHT process's `--config` JSON.

    Fields:
        hosts: one loopback address per session (at most 64).
        extra_bootstrap: more ``host:port`` nodes every session also adds (e.g. a torviz
            node), loopback only.
        stats_interval: seconds between stats events, 0.1..60.
        settings: extra libtorrent settings for every session, applied last.
    """

    hosts: tuple[str, ...]
    extra_bootstrap: tuple[str, ...] = ()
    stats_interval: float = 0.5
    settings: dict[str, bool | int | str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 1 <= len(self.hosts) <= _MAX_NODES:
            raise PeerConfigError(f"hosts must name 1..{_MAX_NODES} addresses")
        for host in self.hosts:
            if not host.startswith("127."):
                raise PeerConfigError(f"host {host!r} is not on 127.0.0.0/8")
        dht_settings(self.extra_bootstrap)  # validates
        if not 0.1 <= self.stats_interval <= 60:
            raise PeerConfigError("stats_interval must be within 0.1..60 s")

    def to_json(self) -> str:
        return json.dumps({f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def from_json(cls, text: str) -> LtDhtConfig:
        """Parse and check a config; raises PeerConfigError when unusable."""
        if len(text) > _MAX_CONFIG_BYTES:
            raise PeerConfigError("config larger than 64 KiB")
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PeerConfigError(f"config is not JSON: {exc}") from exc
        if not isinstance(raw, dict) or set(raw) - {f.name for f in fields(cls)}:
            raise PeerConfigError("config is not an object of LtDhtConfig's keys")
        hosts, extra = raw.get("hosts"), raw.get("extra_bootstrap", [])
        settings = raw.get("settings", {})
        interval = raw.get("stats_interval", 0.5)
        if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
            raise PeerConfigError("hosts must be a list of addresses")
        if not isinstance(extra, list) or not all(isinstance(h, str) for h in extra):
            raise PeerConfigError("extra_bootstrap must be a list of host:port strings")
        if not isinstance(settings, dict) or not isinstance(interval, int | float):
            raise PeerConfigError("settings must be an object, stats_interval a number")
        return cls(tuple(hosts), tuple(extra), float(interval), settings)


def _emit(event: str, **values: Any) -> None:
    try:
        sys.stdout.write(json.dumps({"event": event, **values}) + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        os._exit(0)


class _Net:
    """The sessions and the alert loop."""

    def __init__(self, config: LtDhtConfig) -> None:
        self.config = config
        mask = int(lt.alert_category.error) | int(lt.alert_category.status)
        mask |= int(lt.alert_category.dht) | int(lt.alert_category.dht_operation)
        mask |= int(lt.alert_category.stats)
        self.sessions: list[Any] = []
        for host in config.hosts:
            settings: dict[str, Any] = {
                **NETWORK_OFF,
                "listen_interfaces": f"{host}:0",
                "outgoing_interfaces": host,
                "alert_mask": mask,
                "listen_system_port_fallback": False,
            }
            self.sessions.append(lt.session(cast("lt.settings_pack", settings)))
        self.addresses: list[str | None] = [None] * len(self.sessions)
        self.table: list[int] = [0] * len(self.sessions)

    def wait_listening(self) -> list[str]:
        deadline = time.monotonic() + _LISTEN_WAIT_S
        while None in self.addresses:
            if time.monotonic() > deadline:
                raise RuntimeError("not every session listened on UDP within 10 s")
            for index, session in enumerate(self.sessions):
                session.wait_for_alert(10)
                for alert in session.pop_alerts():
                    if isinstance(alert, lt.listen_failed_alert):
                        raise RuntimeError(f"{self.config.hosts[index]}: {alert.message()}")
                    if (
                        isinstance(alert, lt.listen_succeeded_alert)
                        and alert.socket_type == lt.socket_type_t.udp
                    ):
                        self.addresses[index] = f"{alert.address}:{alert.port}"
        return [a for a in self.addresses if a is not None]

    def start_dht(self) -> None:
        addresses = [a for a in self.addresses if a is not None]
        for session in self.sessions:
            session.apply_settings({**dht_settings([]), **self.config.settings})
        for index, session in enumerate(self.sessions):
            for address in [*addresses[:index], *addresses[index + 1 :]]:
                session.add_dht_node(split_host_port(address))
            for address in self.config.extra_bootstrap:
                session.add_dht_node(split_host_port(address))

    def command(self, raw: dict[str, Any]) -> None:
        node = raw.get("node")
        if not isinstance(node, int) or not 0 <= node < len(self.sessions):
            _emit("bad_command", command=raw)
            return
        session = self.sessions[node]
        kind = raw.get("cmd")
        if kind == "get_peers":
            session.dht_get_peers(lt.sha1_hash(bytes.fromhex(str(raw["info_hash"]))))
        elif kind == "announce":
            session.dht_announce(
                lt.sha1_hash(bytes.fromhex(str(raw["info_hash"]))), int(raw["port"]), 0
            )
        elif kind == "add_node":
            host, port = split_host_port(str(raw["address"]))
            session.add_dht_node((host, port))
        else:
            _emit("bad_command", command=raw)

    def on_alert(self, index: int, alert: Any) -> None:
        if isinstance(alert, lt.dht_stats_alert):
            self.table[index] = sum(int(b["num_nodes"]) for b in alert.routing_table)
        elif isinstance(alert, lt.dht_get_peers_reply_alert):
            # Posted once per response that carries values, never when a lookup ends: a
            # lookup that finds nobody says nothing (the parent waits with a bound).
            found = sorted({f"{host}:{port}" for host, port in alert.peers()})
            _emit("peers", node=index, info_hash=str(alert.info_hash), peers=found, at=time.time())
        elif alert.category() & lt.alert_category.error:
            print(f"lt_dht[{index}]: {alert.what()}: {alert.message()}", file=sys.stderr)

    def run(self, stop: threading.Event, commands: queue.SimpleQueue[dict[str, Any]]) -> None:
        next_stats = 0.0
        while not stop.is_set():
            self.sessions[0].wait_for_alert(_ALERT_WAIT_MS)
            while not commands.empty():
                raw = commands.get()
                try:
                    self.command(raw)
                except (KeyError, ValueError, TypeError, PeerConfigError) as exc:
                    _emit("bad_command", command=raw, message=str(exc))
            for index, session in enumerate(self.sessions):
                for alert in session.pop_alerts():
                    self.on_alert(index, alert)
            now = time.monotonic()
            if now >= next_stats:
                _emit("stats", at=time.time(), table=list(self.table))
                for session in self.sessions:
                    session.post_dht_stats()
                next_stats = now + self.config.stats_interval
        for session in self.sessions:
            session.pause()


def _read_commands(stop: threading.Event, commands: queue.SimpleQueue[dict[str, Any]]) -> None:
    try:
        for line in sys.stdin:
            if len(line) > _MAX_COMMAND:
                continue
            try:
                raw = json.loads(line)
            except ValueError:
                continue
            if isinstance(raw, dict):
                commands.put(raw)
    except (OSError, ValueError):
        pass
    stop.set()


def main(argv: list[str] | None = None) -> int:
    """Run the DHT until stopped; returns the process exit code."""
    parser = argparse.ArgumentParser(description="a loopback DHT of libtorrent sessions")
    parser.add_argument("--config", required=True, help="JSON of LtDhtConfig")
    args = parser.parse_args(argv)
    if not HAVE_LIBTORRENT:
        _emit("error", reason="no_libtorrent", message=f"no libtorrent for {sys.executable}")
        return 2
    try:
        config = LtDhtConfig.from_json(args.config)
    except PeerConfigError as exc:
        _emit("error", reason="bad_config", message=str(exc))
        return 2
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    commands: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
    threading.Thread(target=_read_commands, args=(stop, commands), daemon=True).start()
    try:
        net = _Net(config)
        nodes = net.wait_listening()
        net.start_dht()
        _emit("ready", nodes=nodes)
        net.run(stop, commands)
    except Exception as exc:
        traceback.print_exc()
        _emit("error", reason="crash", message=f"{type(exc).__name__}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
