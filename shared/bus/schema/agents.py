"""Bus messages of every agent's link (lifecycle, 1-9) and of the tracker agent (10-29).

Strategy: the lifecycle messages open, keep and close every connection (``Hello`` to
``AgentInfo``); the tracker agent's channel carries the torrents to announce and, back, the
peers found and each tracker's state. Rules: see ``shared.bus.schema``.
"""

from __future__ import annotations

from typing import Annotated

from torviz.shared.types import InfoHash, PeerAddress, PeerId

from ..vocabulary import (
    MAX_BATCH,
    U32,
    Name,
    PeerSource,
    Port,
    Range,
    RejectReason,
    Seconds,
    Size,
    Text,
    TrackerState,
)
from .records import DhtSummary, DhtTorrentSummary, HostPort, TrackerTier
from .registry import Message, bus_message

# --- lifecycle (1-9): every connection ---------------------------------------------------------


@bus_message(tag=1)
class Hello(Message):
    """First message of every connection: who is calling and which protocol it speaks."""

    protocol_version: U32
    schema_digest: Name
    service: Name
    agent_id: Name
    host: Name
    pid: U32
    capabilities: Annotated[tuple[Name, ...], Size(0, 64)]


@bus_message(tag=2)
class Welcome(Message):
    """The answer to an accepted ``Hello``."""

    protocol_version: U32
    service: Name
    server_id: Name
    heartbeat_interval: Seconds


@bus_message(tag=3)
class Rejected(Message):
    """The answer to a refused ``Hello``; the caller stops with ``message``."""

    reason: RejectReason
    message: Text


@bus_message(tag=4)
class Heartbeat(Message):
    """Sent every ``Welcome.heartbeat_interval`` seconds by both ends."""

    seq: int


@bus_message(tag=5)
class Goodbye(Message):
    """The sender is leaving on purpose; its work must be reassigned."""

    reason: Name


@bus_message(tag=6)
class Shutdown(Message):
    """Coordinator to agent: stop cleanly."""

    reason: Name


@bus_message(tag=7)
class AgentInfo(Message):
    """Agent to coordinator, right after every ``Welcome``: what the agent offers.

    ``Hello`` never changes layout (it carries the version check), so what an agent announces
    about itself travels here.
    """

    capacity: U32
    """Peer agent: most connections held at once; storage agent: pieces verified at once."""
    listen_address: PeerAddress | None
    """Peer agent: where peers reach it for incoming connections (``None``: not listening)."""
    data_endpoint: Text
    """Storage agent: the data endpoint peer agents send pieces to; empty for other agents."""
    curve_public_key: Annotated[str, Size(0, 40)]
    """Storage agent: the Z85 CURVE public key of its data endpoint; empty when it uses none."""
    announce_host: Name = ""
    """Tracker agent: the IP address trackers see its announces come from (they record that,
    not ``ip=``); empty when it cannot tell. The coordinator has it announce the port of the
    peer agent listening at this address."""
    dht_port: Port = 0
    """Tracker agent: the UDP port of its DHT node; 0 when its DHT is off. Peer agents at its
    address tell peers this port (the ``PORT`` message)."""


# --- coordinator <-> tracker agent (10-29) -----------------------------------------------------


@bus_message(tag=10)
class TrackTorrent(Message):
    """Start announcing a torrent and looking for peers (trackers, and DHT unless private)."""

    info_hash: InfoHash
    tiers: Annotated[tuple[TrackerTier, ...], Size(0, 64)]
    peer_id: PeerId
    listen_port: Port
    private: bool
    uploaded: int
    downloaded: int
    left: int
    dht_nodes: Annotated[tuple[HostPort, ...], Size(0, 64)] = ()
    """DHT nodes the .torrent names (``nodes``, BEP 5): bootstrap candidates."""


@bus_message(tag=11)
class UpdateTransfer(Message):
    """New totals for the next announce."""

    info_hash: InfoHash
    uploaded: int
    downloaded: int
    left: int


@bus_message(tag=12)
class TorrentCompleted(Message):
    """The download finished: announce ``event=completed`` once."""

    info_hash: InfoHash


@bus_message(tag=13)
class UntrackTorrent(Message):
    """Stop looking for peers: announce ``event=stopped`` and forget the torrent."""

    info_hash: InfoHash


@bus_message(tag=14)
class DhtNodeSeen(Message):
    """A peer told us where its DHT node listens (the ``PORT`` message): try it for the table."""

    address: PeerAddress


@bus_message(tag=20)
class PeersDiscovered(Message):
    """Addresses found for a torrent; the coordinator deduplicates and decides whom to dial."""

    info_hash: InfoHash
    peers: Annotated[tuple[PeerAddress, ...], Size(0, MAX_BATCH)]
    source: PeerSource


@bus_message(tag=21)
class TrackerStateChanged(Message):
    """One tracker URL changed state; ``next_announce_in`` is relative to now."""

    info_hash: InfoHash
    url: Text
    tier: Annotated[int, Range(0, 255)]
    state: TrackerState
    error: Text | None
    seeders: U32 | None
    leechers: U32 | None
    completed: U32 | None
    """From scrape: downloads the tracker has seen complete."""
    next_announce_in: Seconds | None


@bus_message(tag=22)
class DhtStatusChanged(Message):
    """The tracker agent's DHT node: its table and, per torrent, what its lookups found (sent
    when it changed, at most every few seconds)."""

    summary: DhtSummary
    torrents: Annotated[tuple[DhtTorrentSummary, ...], Size(0, MAX_BATCH)]
