"""One libtorrent session acting as a seeder or leecher, run as its own process; the JSON schema
both sides of that process boundary share; and the libtorrent settings every session of ours
starts from.

Strategy: the test process never hosts a libtorrent session; it starts this script with
``python testing/lt_peer.py --config JSON`` (JSON of `LtPeerConfig`) and reads one JSON object
per line from its stdout (`testing/swarm.py` owns the parent side). Events::

    {"event":"ready", "listen":"127.0.0.2:PORT", ...status}   listening, checked, announced
    {"event":"status", ...status}                              every `status_interval` seconds
    {"event":"finished", ...status}                            all wanted pieces on disk
    {"event":"tracker_reply"|"tracker_error", "url":..., ...}  each tracker answer
    {"event":"metadata", "at":..., "info_hash":...}             a magnet's info dict arrived
    {"event":"first_piece", "at":..., "piece":...}              the first piece verified
    {"event":"error", "reason":..., "message":...}              fatal; the process exits non-zero

where "...status" are the fields of `PeerStatus` (status events also carry "peers", the
connected peers with how each was learnt, when `report_peers` is set), and "at" is wall-clock
time (`time.time()`), so a benchmark can measure from its own start. Every other libtorrent
session we run (the verify benchmark's `bench/lt_recheck.py`, the wire capture, the
torrent-creation interop test) starts from `loopback_settings` too, so the loopback rules are
written once, here.

Rules:
- Loopback only, nothing that could leave the machine (`NETWORK_OFF`): DHT, LSD, UPnP, NAT-PMP
  and the IP notifier are off, no DHT bootstrap nodes, uTP off both ways (`dht_nodes` and
  `lt_dht.DHT_LOOPBACK` turn a loopback DHT on). `listen_interfaces` and `outgoing_interfaces`
  both name the session's own 127.0.0.x address, so a tracker sees one distinct IP per peer.
- `max_failcount` is high and `min_reconnect_time` 1 s (`QUICK_RETRY`):
  `high_performance_seed()` would otherwise blacklist a peer after one refused dial.
  `max_allowed_in_request_queue` stays at libtorrent's value (2000 in 2.0.x) unless `settings`
  overrides it: a seeder silently drops requests beyond it.
- The process exits on SIGTERM/SIGINT or when stdin reaches EOF, so a test process that dies
  without cleaning up never leaves a peer running.
- Stand-alone: only the standard library and libtorrent (run as a script, nothing else of the
  repository is importable). The parent imports this module for the schema alone, so
  libtorrent is optional at import time and required only by `main` and `loopback_settings`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from types import FrameType
from typing import Any, Literal, TextIO, cast

try:
    import libtorrent as lt
except ImportError:  # the parent side needs only the schema; main() reports it missing
    HAVE_LIBTORRENT = False
else:
    HAVE_LIBTORRENT = True

__all__ = [
    "NETWORK_OFF",
    "QUICK_RETRY",
    "LtPeerConfig",
    "PeerConfigError",
    "PeerStatus",
    "build_settings",
    "loopback_settings",
    "main",
]

_MAX_CONFIG_BYTES = 64 * 1024
_MAX_CONNECT_PEERS = 256
_ANNOUNCE_WAIT_S = 10.0
_FLUSH_WAIT_S = 2.0
_ALERT_WAIT_MS = 100

NETWORK_OFF: dict[str, bool | int | str] = {
    "enable_dht": False,
    "enable_lsd": False,
    "enable_upnp": False,
    "enable_natpmp": False,
    "enable_ip_notifier": False,
    "dht_bootstrap_nodes": "",
    "enable_outgoing_utp": False,
    "enable_incoming_utp": False,
}
"""Settings that keep a session from reaching beyond its own loopback address."""

QUICK_RETRY: dict[str, bool | int | str] = {
    "allow_multiple_connections_per_ip": True,
    "max_failcount": 100,
    "min_reconnect_time": 1,
}
"""Settings that make a session dial peers again quickly (loopback peers come and go)."""

# What a peer of ours adds: no rate limits, quick tracker stops, and no SSRF checks (trackers
# on 127.0.0.1 with arbitrary paths are what tests run; the checks would refuse some of them).
_PEER_SETTINGS: dict[str, bool | int | str] = {
    **QUICK_RETRY,
    "upload_rate_limit": 0,
    "download_rate_limit": 0,
    "stop_tracker_timeout": 1,
    "listen_system_port_fallback": False,
    "ssrf_mitigation": False,
}

# libtorrent's peer_source_flags (peer_info.source): bit n of the mask, by name.
_SOURCES = tuple(enumerate(("tracker", "dht", "pex", "lsd", "resume_data", "incoming")))

_CHECKING_STATES = frozenset({"queued_for_checking", "checking_files", "checking_resume_data"})


class PeerConfigError(ValueError):
    """A peer config (or a status event) that cannot be used."""


def split_host_port(text: str) -> tuple[str, int]:
    """Split ``host:port`` or ``[v6]:port``; raises PeerConfigError when malformed."""
    host, sep, port_text = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise PeerConfigError(f"not host:port: {text!r}")
    return host, int(port_text)


@dataclass(frozen=True, slots=True)
class LtPeerConfig:
    """What one peer process does; travels as its `--config` JSON.

    Fields:
        role: ``seeder`` (data must be complete in `save_path`) or ``leecher``.
        torrent: the .torrent file; its trackers are announced to.
        save_path: the directory holding (or receiving) the torrent's files.
        listen_host: this peer's own loopback address; also its outgoing interface.
        listen_port: 0 lets libtorrent pick one (reported in the ready event).
        seed_mode: trust the seeder's data without a hash check (known-good data only).
        connect_peers: ``host:port`` peers to dial directly (tests without a tracker).
        status_interval: seconds between status events, 0.05..60.
        wait_announce: hold "ready" until the first tracker answer; None means seeders only.
        watch_stdin: exit when stdin reaches EOF (off only for runs by hand).
        settings: extra libtorrent settings, applied last (e.g. max_allowed_in_request_queue).
        upload_limit: bytes per second this torrent uploads, 0 for no limit. A per-torrent
            limit, because libtorrent exempts loopback peers from the session's rate limits.
        magnet: a leecher starts from this magnet link instead of `torrent`; `torrent` is then
            where the .torrent goes once the metadata arrived (its info dict verbatim).
        disable_pex: the torrent neither sends nor acts on ut_pex (libtorrent's disable_pex).
        report_peers: status events list the connected peers (address, source, client, bytes).
        dht_nodes: loopback DHT nodes to add (`add_dht_node`); settings: `lt_dht.DHT_LOOPBACK`.
        dht_announce_every: seconds between forced DHT announces (0: libtorrent's schedule).
    """

    role: Literal["seeder", "leecher"]
    torrent: Path
    save_path: Path
    listen_host: str
    listen_port: int = 0
    seed_mode: bool = False
    connect_peers: tuple[str, ...] = ()
    status_interval: float = 0.5
    wait_announce: bool | None = None
    watch_stdin: bool = True
    settings: Mapping[str, bool | int | str] = field(default_factory=dict)
    upload_limit: int = 0
    magnet: str = ""
    disable_pex: bool = False
    report_peers: bool = False
    dht_nodes: tuple[str, ...] = ()
    dht_announce_every: float = 0.0

    def __post_init__(self) -> None:
        if self.magnet and (self.role != "leecher" or not self.magnet.startswith("magnet:?")):
            raise PeerConfigError("magnet must be a magnet:? link, and only for a leecher")
        if self.upload_limit < 0:
            raise PeerConfigError("upload_limit must be at least 0")
        if self.role not in ("seeder", "leecher"):
            raise PeerConfigError(f"role must be seeder or leecher, not {self.role!r}")
        if not 0 <= self.listen_port < 65536:
            raise PeerConfigError(f"listen_port out of range: {self.listen_port}")
        if not 0.05 <= self.status_interval <= 60:
            raise PeerConfigError("status_interval must be within 0.05..60 s")
        if max(len(self.connect_peers), len(self.dht_nodes)) > _MAX_CONNECT_PEERS:
            raise PeerConfigError(f"more than {_MAX_CONNECT_PEERS} connect_peers or dht_nodes")
        if not all(node.startswith("127.") for node in self.dht_nodes):
            raise PeerConfigError("dht_nodes must be on 127.0.0.0/8")
        for peer in (*self.connect_peers, *self.dht_nodes):
            split_host_port(peer)
        if self.dht_nodes and self.settings.get("enable_dht") is not True:
            raise PeerConfigError("dht_nodes need the DHT on: settings lt_dht.DHT_LOOPBACK")
        for name, value in self.settings.items():
            if not isinstance(name, str) or not isinstance(value, bool | int | str):
                raise PeerConfigError(f"libtorrent setting {name!r} must be bool, int or str")

    @property
    def waits_for_announce(self) -> bool:
        return self.role == "seeder" if self.wait_announce is None else self.wait_announce

    def to_json(self) -> str:
        config = {f.name: getattr(self, f.name) for f in fields(self)}
        config["settings"] = dict(self.settings)
        return json.dumps(config, default=str)  # default=str: paths become strings

    @classmethod
    def from_json(cls, text: str) -> LtPeerConfig:
        """Parse and check a config (at most 64 KiB of JSON).

        Raises:
            PeerConfigError: not JSON, unknown keys, wrong types or out-of-range values.
        """
        if len(text) > _MAX_CONFIG_BYTES:
            raise PeerConfigError("config larger than 64 KiB")
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PeerConfigError(f"config is not JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise PeerConfigError("config is not a JSON object")
        unknown = set(raw) - {f.name for f in fields(cls)}
        if unknown:
            raise PeerConfigError(f"unknown config keys: {sorted(unknown)}")

        def get(key: str, kinds: tuple[type, ...], default: Any = None) -> Any:
            value = raw.get(key, default)
            # bool is an int subclass: never accept it where a number is asked for.
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                raise PeerConfigError(f"config key {key!r} missing or of the wrong type")
            return value

        peers = get("connect_peers", (list,), [])
        dht_nodes = get("dht_nodes", (list,), [])
        if not all(isinstance(p, str) for p in [*peers, *dht_nodes]):
            raise PeerConfigError("connect_peers and dht_nodes must be lists of host:port")
        wait_announce = raw.get("wait_announce")
        if wait_announce is not None and not isinstance(wait_announce, bool):
            raise PeerConfigError("config key 'wait_announce' must be a bool or null")
        return cls(
            role=get("role", (str,)),
            torrent=Path(get("torrent", (str,))),
            save_path=Path(get("save_path", (str,))),
            listen_host=get("listen_host", (str,)),
            listen_port=get("listen_port", (int,), 0),
            seed_mode=get("seed_mode", (bool,), False),
            connect_peers=tuple(peers),
            status_interval=float(get("status_interval", (int, float), 0.5)),
            wait_announce=wait_announce,
            watch_stdin=get("watch_stdin", (bool,), True),
            settings=dict(get("settings", (dict,), {})),
            upload_limit=get("upload_limit", (int,), 0),
            magnet=get("magnet", (str,), ""),
            disable_pex=get("disable_pex", (bool,), False),
            report_peers=get("report_peers", (bool,), False),
            dht_nodes=tuple(dht_nodes),
            dht_announce_every=float(get("dht_announce_every", (int, float), 0.0)),
        )


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """One status snapshot of a peer (the fields of a ready, status or finished event)."""

    state: str
    progress: float
    num_peers: int
    num_seeds: int
    num_pieces: int
    total_upload: int
    total_download: int
    total_payload_upload: int
    total_payload_download: int
    download_rate: int
    upload_rate: int
    is_finished: bool
    is_seeding: bool

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> PeerStatus:
        """Build from an event; raises PeerConfigError on a missing or mistyped field."""
        kinds: dict[str, type | tuple[type, ...]] = {
            "str": str,
            "float": (int, float),
            "int": int,
            "bool": bool,
        }
        values: dict[str, Any] = {}
        for spec in fields(cls):
            value: Any = event.get(spec.name)
            # bool is an int subclass: a bool never counts as a number here.
            if not isinstance(value, kinds[str(spec.type)]) or (
                isinstance(value, bool) and spec.type != "bool"
            ):
                raise PeerConfigError(f"status field {spec.name!r} missing or not {spec.type}")
            values[spec.name] = float(event[spec.name]) if spec.type == "float" else value
        return cls(**values)

    @classmethod
    def from_lt(cls, status: Any) -> PeerStatus:
        """Build from a libtorrent `torrent_status`."""
        return cls(
            state=str(status.state).rsplit(".", 1)[-1],
            progress=float(status.progress),
            num_peers=int(status.num_peers),
            num_seeds=int(status.num_seeds),
            num_pieces=int(status.num_pieces),
            total_upload=int(status.total_upload),
            total_download=int(status.total_download),
            total_payload_upload=int(status.total_payload_upload),
            total_payload_download=int(status.total_payload_download),
            download_rate=int(status.download_rate),
            upload_rate=int(status.upload_rate),
            is_finished=bool(status.is_finished),
            is_seeding=bool(status.is_seeding),
        )


def loopback_settings(
    listen_host: str,
    listen_port: int = 0,
    *,
    alerts: tuple[str, ...] = ("error", "status"),
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The settings pack of a session on `listen_host` alone, network extras off.

    Args:
        listen_host: the session's own loopback address (listening and dialling out).
        listen_port: 0 lets libtorrent pick one.
        alerts: names of `lt.alert_category` members the session posts.
        extra: more settings, applied last.

    Returns:
        A dict `lt.session` takes (the bindings accept a dict where the stubs want a
        settings_pack).

    Raises:
        RuntimeError: libtorrent is not importable.
    """
    if not HAVE_LIBTORRENT:
        raise RuntimeError("the libtorrent Python bindings are not importable")
    host = f"[{listen_host}]" if ":" in listen_host else listen_host
    mask = 0
    for name in alerts:
        mask |= int(getattr(lt.alert_category, name))
    return {
        **NETWORK_OFF,
        "listen_interfaces": f"{host}:{listen_port}",
        "outgoing_interfaces": listen_host,
        "alert_mask": mask,
        **(extra or {}),
    }


def build_settings(config: LtPeerConfig) -> dict[str, Any]:
    """The libtorrent settings pack for `config`: role base, loopback rules, then overrides."""
    settings: dict[str, Any] = {}
    if config.role == "seeder":
        settings.update(lt.high_performance_seed())
    settings.update(
        loopback_settings(
            config.listen_host,
            config.listen_port,
            alerts=("error", "status", "tracker", "storage", "piece_progress"),
            extra=_PEER_SETTINGS,
        )
    )
    defaults = lt.default_settings()
    unknown = sorted(name for name in config.settings if name not in defaults)
    if unknown:
        raise PeerConfigError(f"unknown libtorrent settings: {unknown}")
    settings.update(config.settings)
    return settings


class _Emitter:
    """Writes one JSON object per line to stdout; a closed pipe means the parent is gone."""

    def __init__(self, stream: TextIO, stop: threading.Event) -> None:
        self._stream = stream
        self._stop = stop

    def __call__(self, event: str, **fields: Any) -> None:
        try:
            self._stream.write(json.dumps({"event": event, **fields}) + "\n")
            self._stream.flush()
        except (BrokenPipeError, ValueError):
            self._stop.set()


def _watch_stdin(stop: threading.Event) -> None:
    # Discard whatever arrives (bounded reads); EOF means the parent closed the pipe or died.
    try:
        while os.read(sys.stdin.fileno(), 4096):
            pass
    except (OSError, ValueError):
        pass
    stop.set()


def _install_stop_signals(stop: threading.Event) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


class _Peer:
    """The event loop of one session with one torrent."""

    def __init__(self, config: LtPeerConfig, emit: _Emitter, stop: threading.Event) -> None:
        self.config = config
        self.emit = emit
        self.stop = stop
        self.listen: str | None = None
        self.announced: str | None = None  # "ok", "error" or "timeout" once known
        self.ready = False
        self.finish_requested_at: float | None = None
        self.finished = False
        self.exit_code = 0
        self.first_piece = False
        if config.magnet:
            params = lt.parse_magnet_uri(config.magnet)
            self.info_hash = str(params.info_hashes.v1)
        else:
            params = lt.load_torrent_file(str(config.torrent))
            if params.ti is None:
                raise RuntimeError("no metadata in the torrent file")
            self.info_hash = str(params.ti.info_hashes().v1)
        self.has_trackers = bool(params.trackers)
        self.session = lt.session(cast("lt.settings_pack", build_settings(config)))
        params.save_path = str(config.save_path)
        flags = lt.torrent_flags.default_flags & ~lt.torrent_flags.auto_managed
        flags &= ~lt.torrent_flags.paused
        if config.seed_mode:
            flags |= lt.torrent_flags.seed_mode
        if config.disable_pex:
            flags |= lt.torrent_flags.disable_pex
        params.flags = flags
        self.handle = self.session.add_torrent(params)
        for node in config.dht_nodes:
            self.session.add_dht_node(split_host_port(node))
        self.next_dht_announce = time.monotonic() + config.dht_announce_every
        if config.upload_limit:
            self.handle.set_upload_limit(config.upload_limit)
        self.started = time.monotonic()

    def fail(self, reason: str, message: str, code: int) -> None:
        self.emit("error", reason=reason, message=message)
        self.exit_code = code
        self.stop.set()

    def on_alert(self, alert: Any) -> None:
        if isinstance(alert, lt.listen_succeeded_alert):
            if alert.socket_type == lt.socket_type_t.tcp and self.listen is None:
                host = str(alert.address)
                host = f"[{host}]" if ":" in host else host
                self.listen = f"{host}:{alert.port}"
                for peer in self.config.connect_peers:
                    self.handle.connect_peer(split_host_port(peer))
        elif isinstance(alert, lt.listen_failed_alert):
            if alert.socket_type == lt.socket_type_t.tcp:
                self.fail("listen_failed", alert.message(), 3)
        elif isinstance(alert, lt.tracker_reply_alert):
            self.announced = self.announced or "ok"
            self.emit("tracker_reply", url=alert.tracker_url(), num_peers=int(alert.num_peers))
        elif isinstance(alert, lt.tracker_error_alert):
            self.announced = self.announced or "error"
            self.emit("tracker_error", url=alert.tracker_url(), message=alert.message())
        elif isinstance(alert, lt.cache_flushed_alert):
            self.emit_finished()
        elif isinstance(alert, lt.metadata_received_alert):
            # The info dict verbatim in a .torrent of its own: its SHA-1 is the info hash.
            torrent_info = self.handle.torrent_file()
            info = b"" if torrent_info is None else bytes(torrent_info.info_section())
            self.config.torrent.write_bytes(b"d4:info" + info + b"e")
            self.emit("metadata", at=time.time(), info_hash=self.info_hash, size=len(info))
        elif isinstance(alert, lt.piece_finished_alert) and not self.first_piece:
            self.first_piece = True
            self.emit("first_piece", at=time.time(), piece=int(alert.piece_index))
        elif isinstance(alert, lt.torrent_error_alert | lt.file_error_alert):
            self.fail("storage_error", alert.message(), 5)
        elif alert.category() & lt.alert_category.error:
            print(f"lt_peer: {alert.what()}: {alert.message()}", file=sys.stderr, flush=True)

    def emit_finished(self) -> None:
        if not self.finished and self.finish_requested_at is not None:
            self.finished = True
            self.emit("finished", **asdict(PeerStatus.from_lt(self.handle.status())))

    def tick(self, now: float) -> None:
        status = PeerStatus.from_lt(self.handle.status())
        checking = status.state in _CHECKING_STATES
        if not self.ready and self.listen is not None and not checking:
            if self.config.role == "seeder" and not status.is_seeding:
                self.fail(
                    "seed_data_incomplete",
                    f"seeder data in {self.config.save_path} is incomplete "
                    f"(progress {status.progress:.3f} after the check)",
                    4,
                )
                return
            waiting = self.config.waits_for_announce and self.has_trackers
            if waiting and self.announced is None and now - self.started > _ANNOUNCE_WAIT_S:
                self.announced = "timeout"
            if not waiting or self.announced is not None:
                self.ready = True
                self.emit(
                    "ready",
                    listen=self.listen,
                    role=self.config.role,
                    info_hash=self.info_hash,
                    announce=self.announced or "none",
                    **asdict(status),
                )
        every = self.config.dht_announce_every
        if self.config.dht_nodes and every > 0 and now >= self.next_dht_announce:
            if self.config.role == "seeder" or not status.is_finished:
                self.handle.force_dht_announce()
            self.next_dht_announce = now + every
        if self.ready and status.is_finished and self.finish_requested_at is None:
            # Ask libtorrent to flush and close its files so that a reader of the save path
            # sees every byte; "finished" goes out on cache_flushed_alert (or after a bound).
            self.finish_requested_at = now
            self.handle.flush_cache()
        if self.finish_requested_at is not None and now - self.finish_requested_at > _FLUSH_WAIT_S:
            self.emit_finished()

    def peers(self) -> list[dict[str, Any]]:
        """The connected peers (at most 64): address, how it was learnt, client, bytes."""
        return [
            {
                "address": f"{info.ip[0]}:{info.ip[1]}",
                "source": [name for n, name in _SOURCES if int(info.source) >> n & 1],
                "client": bytes(info.client).decode("utf-8", "replace")
                if isinstance(info.client, bytes)
                else str(info.client),
                "down": int(info.total_download),
                "up": int(info.total_upload),
                "seed": bool(int(info.flags) & int(lt.peer_info.seed)),
            }
            for info in self.handle.get_peer_info()[:64]
        ]

    def run(self) -> int:
        next_status = 0.0
        while not self.stop.is_set():
            self.session.wait_for_alert(_ALERT_WAIT_MS)
            for alert in self.session.pop_alerts():
                self.on_alert(alert)
                if self.stop.is_set():
                    break
            if self.stop.is_set():
                break
            now = time.monotonic()
            self.tick(now)
            if now >= next_status and self.ready:
                peers = {"peers": self.peers()} if self.config.report_peers else {}
                self.emit("status", **asdict(PeerStatus.from_lt(self.handle.status())), **peers)
                next_status = now + self.config.status_interval
        self.session.pause()
        return self.exit_code


def main(argv: list[str] | None = None) -> int:
    """Run one peer until stopped; returns the process exit code."""
    parser = argparse.ArgumentParser(description="a libtorrent seeder or leecher on loopback")
    parser.add_argument("--config", required=True, help="JSON of LtPeerConfig")
    args = parser.parse_args(argv)
    stop = threading.Event()
    emit = _Emitter(sys.stdout, stop)
    if not HAVE_LIBTORRENT:
        emit("error", reason="no_libtorrent", message=f"no libtorrent for {sys.executable}")
        return 2
    try:
        config = LtPeerConfig.from_json(args.config)
    except PeerConfigError as exc:
        emit("error", reason="bad_config", message=str(exc))
        return 2
    _install_stop_signals(stop)
    if config.watch_stdin:
        threading.Thread(target=_watch_stdin, args=(stop,), daemon=True).start()
    try:
        peer = _Peer(config, emit, stop)
    except PeerConfigError as exc:
        emit("error", reason="bad_config", message=str(exc))
        return 2
    except RuntimeError as exc:  # libtorrent raises RuntimeError for unreadable torrents
        emit("error", reason="bad_torrent", message=f"{config.torrent}: {exc}")
        return 2
    try:
        return peer.run()
    except Exception as exc:
        traceback.print_exc()
        emit("error", reason="crash", message=f"{type(exc).__name__}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
