"""What a ``DhtNode`` is told and what it tells: its config, its events, its counters.

Strategy: the node's vocabulary lives apart from the machinery (``node.py``), so the shell and the
tests read one short module to learn what they may set and what comes back. Every class here is
plain data.

Rules:
- ``DhtConfig`` is frozen and checked at construction; defaults follow BEP 5 and libtorrent.
- Events are past tense and carry only what the shell forwards: peers found, an announce round
  done, our external address.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torviz.shared.dht.node_id import NodeInfo
from torviz.shared.dht.peer_store import PeerStoreLimits
from torviz.shared.dht.rate_limit import RateLimits
from torviz.shared.dht.responder import DEFAULT_MAX_VALUES
from torviz.shared.dht.routing import RoutingLimits
from torviz.shared.types import InfoHash, PeerAddress

__all__ = [
    "AnnounceDone",
    "DhtConfig",
    "DhtCounters",
    "DhtEvent",
    "ExternalAddress",
    "PeersFound",
    "SearchOutcome",
]


@dataclass(frozen=True, slots=True)
class DhtConfig:
    """How a node behaves (seconds and counts)."""

    port: int = 0
    """The UDP port the shell listens on (shown in ``DhtSummary``)."""
    ipv4: bool = True
    """Run the IPv4 table (the shell is bound to an IPv4 address)."""
    ipv6: bool = False
    """Run the IPv6 table (BEP 32; the shell is bound to an IPv6 address)."""
    read_only: bool = False
    """BEP 43: say ``ro`` in our queries and answer none (we cannot be reached)."""
    secure_id: bool = True
    """Take a BEP 42 id once our external address is known, and check others' ids on entry."""
    version: bytes | None = b"TV\x00\x01"
    """Our ``v`` (BEP 20 style: client letters and two version bytes)."""
    query_timeout: float = 10.0
    """Seconds an unanswered query waits before it fails."""
    slow_after: float = 2.0
    """Seconds after which a lookup asks another node beside a slow one."""
    alpha: int = 3
    k: int = 8
    max_transactions: int = 2_048
    """Queries outstanding at once."""
    max_searches: int = 16
    """Searches (lookups) running at once."""
    max_torrents: int = 10_000
    max_peers_per_torrent: int = 5_000
    """Distinct peers remembered per torrent (to report each once)."""
    lookup_interval: tuple[float, float] = (900.0, 1_800.0)
    """Seconds between a torrent's searches: uniform in this range (BEP 5: 15 to 30 minutes)."""
    retry_interval: float = 60.0
    """Seconds before a search that reached nobody is tried again."""
    maintenance_interval: float = 5.0
    ping_batch: int = 8
    """Questionable nodes pinged per maintenance round."""
    bootstrap_retry: tuple[float, float] = (30.0, 600.0)
    """First and longest wait before bootstrapping again while the table is empty."""
    max_values: int = DEFAULT_MAX_VALUES
    votes_needed: int = 3
    """Distinct nodes that must agree on our external address."""
    rate: RateLimits = field(default_factory=RateLimits)
    routing: RoutingLimits = field(default_factory=RoutingLimits)
    store: PeerStoreLimits = field(default_factory=PeerStoreLimits)

    def __post_init__(self) -> None:
        if not (self.ipv4 or self.ipv6):
            raise ValueError("a DHT node runs at least one address family")
        low, high = self.lookup_interval
        if not 0 < low <= high:
            raise ValueError("lookup_interval is (low, high) with 0 < low <= high")


@dataclass(frozen=True, slots=True)
class PeersFound:
    """A search found peers of a torrent (each reported once per torrent)."""

    info_hash: InfoHash
    peers: tuple[PeerAddress, ...]


@dataclass(frozen=True, slots=True)
class AnnounceDone:
    """A torrent's ``announce_peer`` round ended: ``count`` nodes accepted it."""

    info_hash: InfoHash
    count: int


@dataclass(frozen=True, slots=True)
class ExternalAddress:
    """Several nodes agree that our address is ``ip``."""

    ip: str


DhtEvent = PeersFound | AnnounceDone | ExternalAddress


@dataclass(frozen=True, slots=True)
class SearchOutcome:
    """How a torrent's last search went (for logs, status and tests)."""

    queries: int
    """Queries it sent (both families)."""
    responses: int
    closest: tuple[NodeInfo, ...]
    """The closest nodes that answered, per family, closest first."""
    peers: int
    """Distinct peers it found."""


@dataclass(slots=True)
class DhtCounters:
    """What the node did since it started (for ``DhtSummary``, logs and tests)."""

    queries_received: int = 0
    """Queries answered."""
    responses_received: int = 0
    errors_received: int = 0
    queries_sent: int = 0
    packets_dropped: int = 0
    """Every datagram dropped, whatever the reason below."""
    dropped_rate_limited: int = 0
    dropped_malformed: int = 0
    dropped_unmatched: int = 0
    """Answers to no query of ours (unknown transaction, or from another address)."""
    dropped_read_only: int = 0
    """Queries not answered because we are read-only."""
    queries_refused: int = 0
    """Queries we did not send: too many outstanding."""
    id_mismatches: int = 0
    """Answers under another id than the one the node was known by."""
    searches_started: int = 0
    searches_done: int = 0
