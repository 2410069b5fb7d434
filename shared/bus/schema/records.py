"""Records: frozen dataclasses nested inside bus messages (tiers, per-peer counters, status rows).

Strategy: a record travels as a positional array inside its message; it has no tag and is never
sent alone. ``RECORDS`` lists them in declaration order, as the rendered schema shows them.
"""

from __future__ import annotations

from typing import Annotated

from torviz.shared.types import InfoHash, PeerAddress

from ..vocabulary import (
    MAX_ANNOUNCE_ROWS,
    MAX_FILE_ROWS,
    MAX_PEER_ROWS,
    MAX_PIECE_ORIGINS,
    MAX_PIECES,
    MAX_TRACKER_ROWS,
    MAX_WEB_SEEDS,
    U32,
    EventLevel,
    Name,
    PeerKey,
    PeerSource,
    PieceCount,
    Port,
    Range,
    Rate,
    Seconds,
    ServiceKind,
    Size,
    Text,
    TorrentState,
    TrackerState,
    WebSeedState,
    WebSeedUrlState,
)
from .registry import bus_record, registered_records


@bus_record
class HostPort:
    """A host name or IP address and a port, as a .torrent's ``nodes`` give DHT nodes."""

    host: Name
    port: Port


@bus_record
class DhtSummary:
    """One tracker agent's DHT node (BEP 5), as ``status`` shows it."""

    nodes: U32
    """Nodes in the routing tables (IPv4 and IPv6)."""
    good_nodes: U32
    """Of those, the ones heard from in the last 15 minutes."""
    lookups: U32
    """Lookups in flight."""
    stored_peers: U32
    """Peers other nodes announced to us, kept for their info hashes."""
    queries_received: int
    """Queries answered since the node started."""
    packets_dropped: int
    """Malformed, unwanted or over-the-limit packets dropped since the node started."""
    port: Port
    """The UDP port the node listens on."""


@bus_record
class DhtTorrentSummary:
    """One torrent in a tracker agent's DHT: what its lookups found."""

    info_hash: InfoHash
    peers_found: U32
    """Distinct peers the lookups returned so far."""
    announced_to: U32
    """Nodes that accepted our last ``announce_peer``."""
    next_lookup_in: Seconds | None


@bus_record
class TrackerTier:
    """One announce tier (BEP 12): URLs tried in order."""

    urls: Annotated[tuple[Text, ...], Size(1, 64)]


@bus_record
class WebSeedReport:
    """How a web seed fetches, from the peer agent running it (``PeerStats.web_seed``)."""

    state: WebSeedState
    failures: U32
    """Failed requests in a row (0 after a success)."""
    retry_in: Seconds | None
    """While backing off: seconds until the next request may start."""
    last_error: Text
    """The last failure, one line ('' when none yet)."""
    disabled_files: U32
    """Files the server does not have (404/410): their pieces go to other peers."""
    in_flight: U32
    """HTTP requests being read."""


@bus_record
class PeerStats:
    """Counters and rates of one peer connection since it opened."""

    info_hash: InfoHash
    peer: PeerKey
    downloaded: int
    uploaded: int
    download_rate: Rate
    upload_rate: Rate
    peer_choking: bool
    peer_interested: bool
    am_choking: bool
    am_interested: bool
    snubbed: bool
    """No block for 60 s while the peer unchoked us."""
    pieces: PieceCount
    """How many pieces the peer has (its progress)."""
    web_seed: WebSeedReport | None = None
    """Set for a web seed: its retry state."""


@bus_record
class PeerStatus:
    """One connection of a torrent, as ``status`` shows it."""

    address: PeerAddress | None
    """Where the peer is; None for a web seed (``url`` says where)."""
    client: Name
    flags: Annotated[str, Size(0, 16)]
    """Letters, as other clients show them: ``D``/``d`` we download (unchoked/choked but
    interested), ``U``/``u`` we upload (unchoked/choked but interested), ``S`` snubbed,
    ``I`` incoming, ``F`` fast extension, ``E`` extension protocol."""
    download_rate: Rate
    upload_rate: Rate
    downloaded: int
    uploaded: int
    progress: Annotated[float, Range(0.0, 1.0)]
    version: Name = ""
    """The client and version the peer names in its extension handshake (``v``)."""
    source: PeerSource = PeerSource.INCOMING
    """Where its address came from (a tracker, the magnet link, PeX, ...)."""
    agent: Name = ""
    """The peer agent holding the connection (its agent id)."""
    host: Name = ""
    """The host that peer agent runs on."""
    url: Text = ""
    """A web seed's URL ('' for a peer)."""
    web_seed: WebSeedReport | None = None
    """A web seed's retry state."""


@bus_record
class PexPeer:
    """One address of a ``ut_pex`` message, with its BEP 11 flags (``PexFlags``)."""

    address: PeerAddress
    flags: Annotated[int, Range(0, 255)]


@bus_record
class MetadataProgress:
    """A torrent added from a magnet link, while it fetches its info dictionary."""

    peers_asked: U32
    """Connections asked for metadata pieces so far."""
    received: int
    """Metadata bytes received and kept."""
    size: int | None
    """The info dictionary's size, once a peer named it (``metadata_size``)."""


@bus_record
class TrackerStatus:
    """One tracker URL of a torrent, as ``status`` shows it (announce and scrape results)."""

    url: Text
    tier: Annotated[int, Range(0, 255)]
    state: TrackerState
    error: Text | None
    seeders: U32 | None
    leechers: U32 | None
    completed: U32 | None
    """Downloads the tracker has seen complete (scrape's ``downloaded``)."""
    next_announce_in: Seconds | None


@bus_record
class AnnounceStatus:
    """One tracker agent announcing a torrent, as ``status`` shows it."""

    tracker_agent: Name
    """The announcing tracker agent's id."""
    host: Name
    """Where trackers see the announce come from (its ``AgentInfo.announce_host``); empty when
    that agent could not tell."""
    port: Port
    """The port announced."""
    peer_agent: Name
    """The peer agent listening at ``host:port``, or empty when none does (peers the trackers
    send there find nobody: ``TorrentStatus.reachable`` is false)."""
    totals: bool
    """This announce reports the torrent's uploaded and downloaded bytes; the others report 0,
    so that no tracker counts our traffic twice."""
    trackers: Annotated[tuple[TrackerStatus, ...], Size(0, MAX_TRACKER_ROWS)]
    """The latest result of each tracker URL for this announce."""


@bus_record
class FileStatus:
    """One file of a torrent, in its detail."""

    path: Text
    """Relative to the torrent's folder, parts joined with ``/`` (a single-file torrent: its
    name)."""
    length: int
    completed: int
    """Bytes of it in verified pieces."""


@bus_record
class PieceOrigin:
    """A peer agent that delivered pieces, in a ``PieceMap``."""

    agent_id: Name
    host: Name


@bus_record
class PieceMap:
    """Every piece of a torrent, one byte each (a ``PieceCell``, or ``FIRST_ORIGIN + i``: a
    verified piece whose blocks came through ``origins[i]``)."""

    cells: Annotated[bytes, Size(0, MAX_PIECES)]
    origins: Annotated[tuple[PieceOrigin, ...], Size(0, MAX_PIECE_ORIGINS)]


@bus_record
class TorrentDetail:
    """What ``status`` adds for one torrent when asked for detail (``GetStatus.detail``)."""

    files: Annotated[tuple[FileStatus, ...], Size(0, MAX_FILE_ROWS)]
    """The files in order (the first ``MAX_FILE_ROWS`` of a bigger torrent)."""
    file_count: int
    """How many files the torrent has (more than ``files`` lists when it has very many)."""
    pieces: PieceMap


@bus_record
class WebSeedRow:
    """One web seed URL of a torrent, whether fetched from now or not."""

    url: Text
    state: WebSeedUrlState
    message: Text
    """Why it is in that state ('' when nothing to say): the last error, the ban's cause."""
    downloaded: int
    """Bytes it delivered to us over all its sessions."""
    hash_failures: U32
    """Pieces from it that failed their hash."""


@bus_record
class TorrentStatus:
    """One torrent in a ``StatusReport``."""

    info_hash: InfoHash
    name: Text
    state: TorrentState
    progress: Annotated[float, Range(0.0, 1.0)]
    total_length: int
    downloaded: int
    uploaded: int
    download_rate: Rate
    upload_rate: Rate
    peers: U32
    seeds: U32
    pieces_verified: PieceCount
    num_pieces: PieceCount
    save_path: Text
    error: Text | None
    trackers: Annotated[tuple[TrackerStatus, ...], Size(0, MAX_TRACKER_ROWS)]
    peer_list: Annotated[tuple[PeerStatus, ...], Size(0, MAX_PEER_ROWS)]
    check_progress: Annotated[float, Range(0.0, 1.0)] | None
    """While the files are being checked: the fraction hashed so far."""
    announces: Annotated[tuple[AnnounceStatus, ...], Size(0, MAX_ANNOUNCE_ROWS)] = ()
    """Who announces the torrent to its trackers, and from which address and port."""
    reachable: bool = True
    """Every announce names a peer agent listening at its address. False when no tracker agent
    runs on a peer agent's host: peers from the trackers then dial an address nobody listens
    at."""
    metadata: MetadataProgress | None = None
    """In the ``metadata`` state: how far the fetch of the info dictionary is."""
    dht: DhtTorrentSummary | None = None
    """What the DHT found for the torrent (None: no DHT node looks it up, e.g. private)."""
    detail: TorrentDetail | None = None
    """Files and piece map, when the request asked for them (``GetStatus.detail``)."""
    web_seeds: Annotated[tuple[WebSeedRow, ...], Size(0, MAX_WEB_SEEDS)] = ()
    """Its web seed URLs (BEP 19) and where each stands."""


@bus_record
class TorrentRow:
    """One torrent as a list shows it: the small part of ``TorrentStatus`` that changes."""

    info_hash: InfoHash
    name: Text
    state: TorrentState
    progress: Annotated[float, Range(0.0, 1.0)]
    total_length: int
    left: int
    """Bytes not yet verified (0 once complete, and while the size is unknown)."""
    download_rate: Rate
    upload_rate: Rate
    peers: U32
    seeds: U32
    error: Text | None
    check_progress: Annotated[float, Range(0.0, 1.0)] | None
    metadata: MetadataProgress | None


@bus_record
class SessionEvent:
    """One line of the daemon's log: a torrent added, a tracker failing, a peer banned ..."""

    seq: int
    """Numbers events in order, from 1; a watcher asks for those after the last it saw."""
    age: Seconds
    """How long ago it happened."""
    level: EventLevel
    text: Text
    info_hash: InfoHash | None
    """The torrent it is about, if one."""


@bus_record
class SessionTotals:
    """The whole session in numbers, for a status line."""

    download_rate: Rate
    upload_rate: Rate
    torrents: U32
    peers: U32
    agents: U32
    hosts: U32
    """Distinct hosts the agents run on."""
    dht_nodes: U32 | None
    """Nodes in the DHT routing tables (None: no DHT node runs)."""


@bus_record
class AgentStatus:
    """One agent connected to the coordinator, in a ``StatusReport``."""

    agent_id: Name
    role: ServiceKind
    host: Name
    pid: U32
    connections: U32
    """Peer agents: peer connections open or being opened."""
    capacity: U32
    """From ``AgentInfo``: connections a peer agent holds at most, pieces a storage agent
    verifies at once."""
    download_rate: Rate
    upload_rate: Rate
    last_heartbeat: Seconds
    """Seconds since anything was last heard from the agent."""
    address: Text
    """A peer agent's address for incoming peers, a storage agent's data endpoint, a tracker
    agent's announce address, or empty."""
    incoming: U32 = 0
    """Peer agents: of ``connections``, those the peers opened (they dialled our address)."""
    dht: DhtSummary | None = None
    """Tracker agents running a DHT node: its table and counters."""


RECORDS: tuple[type, ...] = registered_records()
"""Nested records (not messages), in declaration order."""
