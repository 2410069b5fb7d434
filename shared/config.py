"""Typed, frozen configuration: one dataclass per service, loaded from one TOML file.

Rules:
- Every field has a default, so the embedded default (``torviz-coordinator start`` with no
  file) needs no configuration at all.
- A TOML file may set any subset. An unknown section or key, or a value of the wrong type, is a
  ``ConfigError`` naming ``section.key`` (a typo must not be silently ignored).
- Each service receives only its own section.
- Pure: this module parses text; reading the file and picking platform directories is the
  caller's job.

Endpoints are ZeroMQ addresses (``tcp://127.0.0.1:7700``, ``ipc:///path``). An empty endpoint
means "choose one in the state directory" and is filled in by the coordinator at start.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import tomllib
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError
from .paths import MAX_PATH_DEPTH_CEILING

__all__ = [
    "DEFAULT_DHT_BOOTSTRAP",
    "Config",
    "CoordinatorConfig",
    "PeerAgentConfig",
    "SecurityConfig",
    "StorageAgentConfig",
    "TrackerAgentConfig",
    "parse_config",
    "split_host_port",
]


@dataclass(frozen=True, slots=True)
class CoordinatorConfig:
    download_dir: str = ""
    """Where new torrents are saved; empty: the user's download folder."""
    control: str = ""
    """Control endpoint for the CLI; empty: ``ipc://<state_dir>/control.sock``."""
    bus: str = ""
    """Endpoint the agents connect to; empty: ``ipc://<state_dir>/bus.sock``."""
    max_peers_per_torrent: int = 60
    """Connections per torrent, across all peer agents."""
    pieces_per_peer: int = 8
    """Pieces handed to one connection at a time, so it never waits for the coordinator."""
    max_path_depth: int = 64
    """Components a file's path in a torrent may have; a deeper torrent is refused when it is
    added (at most 1024, the most the storage agent accepts)."""
    embedded_agents: bool = True
    """Start the three agents as local child processes."""
    heartbeat_interval: float = 5.0
    """Seconds between heartbeats on the bus, in both directions (told to agents in
    ``Welcome``)."""
    heartbeat_misses: int = 3
    """Heartbeat intervals of silence after which an agent counts as dead (its peers and pieces
    go to other agents) and an agent counts its coordinator as lost (it drops its work and says
    hello again until a coordinator answers)."""
    max_metadata_size: int = 8 * 1024 * 1024
    """Bytes of info dictionary a magnet link's torrent may fetch from peers (BEP 9); a peer
    advertising more is dropped. At most 8 MiB."""
    metadata_timeout: float = 20.0
    """Seconds a peer may take to answer a metadata request before another peer is asked."""
    pex: bool = True
    """Exchange peer addresses with peers (BEP 11 PeX); never for private torrents."""
    web_seeds: bool = True
    """Download from web seeds (BEP 19): a torrent's ``url-list``, a magnet link's ``ws=`` and
    URLs added with ``add --web-seed`` or ``web-seed``. False ignores them all."""
    max_web_seeds_per_torrent: int = 4
    """Web seeds one torrent fetches from at once (each on some peer agent)."""
    max_web_seeds: int = 32
    """Web seeds fetched from at once in the whole session."""

    def __post_init__(self) -> None:
        for name, value in (
            ("max_web_seeds_per_torrent", self.max_web_seeds_per_torrent),
            ("max_web_seeds", self.max_web_seeds),
        ):
            if not 0 <= value <= 1000:
                raise ConfigError(
                    "bad_value", f"coordinator.{name} must be between 0 and 1000, not {value}"
                )
        if not 1 <= self.max_metadata_size <= 8 * 1024 * 1024:
            raise ConfigError(
                "bad_value",
                "coordinator.max_metadata_size must be between 1 and 8388608 bytes, "
                f"not {self.max_metadata_size}",
            )
        if not self.metadata_timeout > 0:
            raise ConfigError(
                "bad_value",
                f"coordinator.metadata_timeout must be more than 0 seconds, "
                f"not {self.metadata_timeout}",
            )
        if not self.heartbeat_interval >= 0:
            raise ConfigError(
                "bad_value",
                "coordinator.heartbeat_interval must be 0 (no heartbeats) or more seconds, "
                f"not {self.heartbeat_interval}",
            )
        if self.heartbeat_misses < 1:  # nobody can count to zero missed heartbeats
            raise ConfigError(
                "bad_value",
                f"coordinator.heartbeat_misses must be at least 1, not {self.heartbeat_misses}",
            )
        if not 1 <= self.max_path_depth <= MAX_PATH_DEPTH_CEILING:
            raise ConfigError(
                "bad_value",
                f"coordinator.max_path_depth must be between 1 and {MAX_PATH_DEPTH_CEILING}, "
                f"not {self.max_path_depth}",
            )


DEFAULT_DHT_BOOTSTRAP = (
    "router.bittorrent.com:6881",
    "router.utorrent.com:6881",
    "dht.transmissionbt.com:6881",
    "dht.libtorrent.org:25401",
)
"""The public DHT routers a node joins through when it knows no node yet."""


@dataclass(frozen=True, slots=True)
class TrackerAgentConfig:
    announce_timeout: float = 15.0
    """Seconds an announce may go unanswered before its tracker counts as failed and the next
    tracker (BEP 12) is tried. An HTTP request is abandoned then; a UDP exchange keeps
    retransmitting on its own schedule (below) and a late answer still counts."""
    numwant: int = 200
    """Peers asked for in each announce."""
    dht: bool = True
    """Run a DHT node (BEP 5) that finds peers for public torrents as well as the trackers,
    and answers other nodes."""
    dht_port: int = 0
    """UDP port of the DHT node, bound on ``bind_address``. 0: the first free UDP port of
    ``[peer_agent] listen_ports`` (6881 by default, the peer listen port, as other clients
    do). A port that is taken stops the agent with one line."""
    dht_bootstrap: tuple[str, ...] = DEFAULT_DHT_BOOTSTRAP
    """``host:port`` of DHT nodes to join through when the saved table is empty or stale
    (``[v6addr]:port`` for IPv6): the well-known public routers by default. Tests and
    benchmarks pass their own loopback list or turn the DHT off."""
    dht_bind6: str = "::"
    """IPv6 address of the DHT's second UDP socket (BEP 32: an IPv6 table beside the IPv4
    one), on the same port, IPv6 only: ``::`` every IPv6 address of the host, empty no IPv6
    DHT. A host without IPv6 (the bind fails) runs IPv4 only, logged once. Unused when
    ``bind_address`` is an IPv6 address: the DHT then runs IPv6 only, there."""
    dht_state: str = ""
    """File the routing table is kept in across restarts (node ids and addresses); empty:
    ``dht.dat`` in the state directory the agent is given (``--state-dir``; the daemon passes
    its own), and none without one."""
    announce_to_all_tiers: bool = False
    """Announce to one tracker of every tier instead of stopping at the first tier that
    answers (BEP 12 falls through the tiers in order)."""
    udp_retransmit_base: float = 15.0
    """Seconds before a UDP tracker request is first sent again; doubled after every
    retransmission (BEP 15: 15 * 2^n s)."""
    udp_max_retransmits: int = 8
    """Retransmissions of one UDP tracker request before it fails (BEP 15: n up to 8, so about
    two hours of silence in all with the default base)."""
    scrape_interval: float = 300.0
    """Seconds at least between two scrapes of one tracker for one torrent; a scrape follows a
    successful announce once this has passed. 0 scrapes after every announce."""
    bind_address: str = ""
    """Local address announces and scrapes are sent from; empty: the system's choice.
    Trackers record the address they see, so on a host with several addresses set it to the
    address peers should dial (the peer agent's ``listen_host``)."""
    advertise_host: str = ""
    """The address trackers see this agent's announces come from, told to the coordinator,
    which pairs each tracker agent with the peer agent listening at that address (the one
    whose port it announces). Empty: ``bind_address`` when it names one address, else the
    local address this host uses to reach the coordinator (the peer agent's rule). Behind NAT,
    set it (and the peer agent's ``advertise_host``) to the public address."""
    ca_file: str = ""
    """A PEM file of CA certificates trusted for HTTPS trackers besides the system's (a
    tracker with a private CA); empty: the system's only. Certificates are always verified."""

    def __post_init__(self) -> None:
        checks = (
            ("announce_timeout", self.announce_timeout > 0, "a positive number of seconds"),
            ("numwant", 0 <= self.numwant < 2**31, "between 0 and 2147483647"),
            ("udp_retransmit_base", self.udp_retransmit_base > 0, "a positive number of seconds"),
            ("udp_max_retransmits", 0 <= self.udp_max_retransmits <= 16, "between 0 and 16"),
            ("scrape_interval", self.scrape_interval >= 0, "0 or more seconds"),
            ("dht_port", 0 <= self.dht_port <= 65535, "between 0 and 65535"),
            ("dht_bootstrap", len(self.dht_bootstrap) <= 64, "a list of at most 64 nodes"),
        )
        for name, ok, expected in checks:
            if not ok:
                value = getattr(self, name)
                raise ConfigError(
                    "bad_value", f"tracker_agent.{name} must be {expected}, not {value}"
                )
        for entry in self.dht_bootstrap:
            split_host_port(entry, "tracker_agent.dht_bootstrap")
        if self.dht_bind6 and not _is_ipv6_literal(self.dht_bind6):
            raise ConfigError(
                "bad_value",
                f"tracker_agent.dht_bind6 must be an IPv6 address (:: for all) or empty, "
                f"not {self.dht_bind6!r}",
            )


def _is_ipv6_literal(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def split_host_port(text: str, where: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` as ``(host, port)``.

    Raises:
        ConfigError: ``bad_value`` naming ``where`` when it is not that shape.
    """
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        host = ""  # an IPv6 address needs its brackets
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(
            "bad_value", f"{where}: {text!r} is not host:port (like dht.example.org:6881)"
        )
    return host, int(port)


@dataclass(frozen=True, slots=True)
class PeerAgentConfig:
    listen_host: str = "0.0.0.0"
    """Address to accept peer connections on (and to connect from)."""
    listen_ports: tuple[int, int] = (6881, 6999)
    """Inclusive range; the first free port is used."""
    max_request_queue: int = 500
    """Upper bound of outstanding block requests per peer (capped lower by its ``reqq``)."""
    request_timeout: float = 30.0
    """Seconds before an unanswered block request is sent again elsewhere."""
    keepalive_interval: float = 110.0
    """Seconds of silence before we send a keep-alive (peers drop us after 120 s)."""
    max_connections_per_torrent: int = 100
    """Connections one peer agent holds for one torrent, incoming and outgoing."""
    max_connections_per_host: int = 4
    """Connections of one torrent with one IP address; a peer dialling us from an address that
    holds this many already is refused, so one host cannot fill the torrent's slots."""
    outgoing_share: float = 0.2
    """Share of ``max_connections_per_torrent`` (rounded down) that incoming peers cannot take:
    kept for the peers the coordinator has us dial. From 0 to below 1."""
    replace_idle_after: float = 60.0
    """Seconds in which neither side was interested and no payload moved either way after
    which a connection may give its slot to a new incoming peer when the slots are full (the
    one idle longest goes, ending with ``replaced``)."""
    max_pending_per_host: int = 8
    """Accepted sockets from one IP address waiting for their handshake at once, of the 64 the
    listener keeps; more from that address are closed at once."""
    max_peer_requests: int = 500
    """Block requests queued for one peer (our ``reqq``). More are rejected (fast extension) or
    ignored; only a peer that was told the limit in the extension handshake and keeps sending
    far past it is disconnected."""
    piece_cache_bytes: int = 64 * 1024 * 1024
    """Memory for whole pieces read from disk to upload, shared by the agent's connections."""
    advertise_host: str = ""
    """The address other peers reach this agent at, announced to the coordinator; empty:
    ``listen_host`` when it names one address, else the local address this host uses to reach
    the coordinator."""
    web_seed_ca_file: str = ""
    """A PEM file of CA certificates trusted for HTTPS web seeds besides the system's; empty:
    the system's only. Certificates are always verified."""
    web_seed_timeout: float = 60.0
    """Seconds one web seed request may take, reply head and body; a slower one is retried."""
    web_seed_connections: int = 4
    """HTTP requests in flight to one web seed at most (fewer while it asks us to slow down)."""
    web_seed_max_failures: int = 8
    """Failed requests in a row (each retried after an exponential back-off with jitter, or
    the server's ``Retry-After``) after which a web seed is given up for the torrent."""

    def __post_init__(self) -> None:
        checks = (
            ("web_seed_timeout", self.web_seed_timeout > 0, "a positive number of seconds"),
            ("web_seed_connections", 1 <= self.web_seed_connections <= 64, "between 1 and 64"),
            ("web_seed_max_failures", 1 <= self.web_seed_max_failures <= 1000, "1 to 1000"),
            ("max_connections_per_host", self.max_connections_per_host >= 1, "at least 1"),
            ("outgoing_share", 0 <= self.outgoing_share < 1, "from 0 to below 1"),
            ("replace_idle_after", self.replace_idle_after >= 0, "0 or more seconds"),
            ("max_pending_per_host", self.max_pending_per_host >= 1, "at least 1"),
        )
        for name, ok, expected in checks:
            if not ok:
                value = getattr(self, name)
                raise ConfigError("bad_value", f"peer_agent.{name} must be {expected}, not {value}")


@dataclass(frozen=True, slots=True)
class StorageAgentConfig:
    data: str = ""
    """Endpoint peer agents send pieces to; empty: ``ipc://<state_dir>/data.sock``."""
    hash_threads: int = 2
    """Threads hashing pieces in parallel."""
    preallocate: bool = False
    """Reserve the full size of each file when it is created instead of a sparse file."""
    flush_interval: float = 5.0
    """Seconds between two flushes of written pieces to disk and to the resume record (when
    the agent keeps resume state): at most this much verified work is missing from the record
    after a crash, and it is found again by checking the files that changed."""


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    keys_dir: str = ""
    """Folder of CURVE keys made by ``torviz-coordinator keys init`` (or the part of it copied
    to this host). Empty: no keys, and every bus, data and control endpoint must be ipc (a tcp
    endpoint, loopback included, is refused: any local user can reach a tcp port). With keys,
    every tcp socket is encrypted and authenticated with CURVE: a bus or data endpoint admits
    the public keys in ``<keys_dir>/authorized`` and its own, a tcp control endpoint only the
    coordinator's own pair."""
    key_name: str = ""
    """Which key pair in ``keys_dir`` this process uses (``<key_name>.key_secret``); empty: the
    agent id, and ``coordinator`` for the coordinator."""


@dataclass(frozen=True, slots=True)
class Config:
    coordinator: CoordinatorConfig = field(default_factory=CoordinatorConfig)
    tracker_agent: TrackerAgentConfig = field(default_factory=TrackerAgentConfig)
    peer_agent: PeerAgentConfig = field(default_factory=PeerAgentConfig)
    storage_agent: StorageAgentConfig = field(default_factory=StorageAgentConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)


def parse_config(text: str) -> Config:
    """Parse a TOML document into a ``Config``.

    Raises:
        ConfigError: the TOML is malformed, or names an unknown section or key, or a value has
            the wrong type.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("bad_toml", f"configuration is not valid TOML: {exc}") from None
    sections = {f.name: f for f in dataclasses.fields(Config)}
    values: dict[str, Any] = {}
    for name, table in document.items():
        if name not in sections:
            known = ", ".join(sorted(sections))
            raise ConfigError("unknown_section", f"unknown section [{name}] (known: {known})")
        if not isinstance(table, dict):
            raise ConfigError("bad_section", f"[{name}] must be a table")
        section_type = _section_type(name)
        values[name] = _build_section(name, section_type, table)
    return Config(**values)


def _section_type(name: str) -> type[Any]:
    hints = typing.get_type_hints(Config)
    section: type[Any] = hints[name]
    return section


def _build_section(section: str, cls: type[Any], table: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in table.items():
        if key not in hints:
            raise ConfigError("unknown_key", f"unknown setting {section}.{key}")
        kwargs[key] = _coerce(f"{section}.{key}", hints[key], value)
    return cls(**kwargs)


def _coerce(where: str, annotation: Any, value: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is tuple:
        args = typing.get_args(annotation)
        if not isinstance(value, list):
            raise ConfigError("bad_type", f"{where} must be a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(where, args[0], item) for item in value)
        if len(value) != len(args):
            raise ConfigError("bad_type", f"{where} must be a list of {len(args)} values")
        return tuple(_coerce(where, arg, item) for arg, item in zip(args, value, strict=True))
    if origin in (types.UnionType, typing.Union):
        for arg in typing.get_args(annotation):
            if arg is type(None) and value is None:
                return None
            try:
                return _coerce(where, arg, value)
            except ConfigError:
                continue
        raise ConfigError("bad_type", f"{where} has the wrong type")
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    # bool is an int in Python; a TOML `true` must not pass as a port number.
    if annotation is int and isinstance(value, bool):
        raise ConfigError("bad_type", f"{where} must be an integer, not {value!r}")
    if not isinstance(value, annotation):
        expected = getattr(annotation, "__name__", str(annotation))
        raise ConfigError("bad_type", f"{where} must be {expected}, not {value!r}")
    return value
