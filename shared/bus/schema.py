"""The bus schema: every message torviz services exchange, in one module.

Strategy: one frozen dataclass per message, registered with ``@bus_message(tag=N)``. The codec
(``shared.bus.codec``) derives encoding, decoding and validation from the annotations below, so
a field's type *is* its wire contract. The words the messages are made of (bounds such as
``MAX_BATCH``, field aliases such as ``Name``, the enums and reason codes) live in
``shared.bus.vocabulary``. ``tests/vectors/bus_schema.snapshot`` pins the whole rendered schema:
any change to it is a deliberate, reviewed diff.

Rules:
- Tags are stable and never reused; a retired tag stays listed in ``RETIRED_TAGS``. Tags are
  grouped by channel (1-9 lifecycle, 10-29 tracker agent, 30-59 peer agent, 60-79 data
  endpoint, 80-99 storage agent, 100-127 control); tags up to 127 take one msgpack byte.
- Commands are imperative (``ConnectPeer``), events past tense (``PieceVerified``), replies name
  what happened (``TorrentAdded``).
- Field types are limited to: ``int`` (0..2**63-1 unless ``Range`` narrows it), ``bool``,
  ``float`` (finite, ``Range`` optional), ``str``/``bytes``/``tuple[X, ...]`` (each needs a
  ``Size`` bound), ``X | None``, ``InfoHash``, ``PeerId``, ``PeerAddress``, enums (``IntEnum``
  or ``StrEnum``) and records registered with ``@bus_record``.
- A closed set of codes that services share is an enum, never a ``Name``: reason codes are
  ``ReasonCode`` enums, whose unknown values decode as ``UNKNOWN`` (see the vocabulary).
- ``Hello``, ``Welcome`` and ``Rejected`` keep their tags and fields forever, so that two
  different protocol versions can always tell each other that they disagree (``Rejected.reason``
  is a ``RejectReason``: the same str on the wire, and any version's code decodes). Any other
  change to the snapshot bumps ``BUS_PROTOCOL_VERSION`` (4: the reason codes became enums, the
  wire bytes stayed the same).
- Times are durations in seconds, never absolute clock readings: clocks differ across hosts.
- A message with ``HAS_DATA`` travels as ``[header, data]``: the data frame carries piece or
  block bytes and is never packed into msgpack.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, ClassVar, TypeVar, dataclass_transform

from shared.types import InfoHash, PeerAddress, PeerId

from .vocabulary import (
    MAX_AGENTS,
    MAX_ANNOUNCE_ROWS,
    MAX_BATCH,
    MAX_BLOCK_LENGTH,
    MAX_DATA_BYTES,
    MAX_HOSTS,
    MAX_METAINFO_BYTES,
    MAX_PEER_ROWS,
    MAX_PIECES,
    MAX_TORRENTS,
    MAX_TRACKER_ROWS,
    U32,
    Bitfield,
    BlockSenders,
    DisconnectReason,
    Name,
    PeerKey,
    PeerKeys,
    PeerSource,
    PieceCount,
    PieceList,
    PieceNo,
    Port,
    Range,
    Rate,
    RejectReason,
    Seconds,
    ServiceKind,
    Size,
    StoreRefusal,
    Text,
    TorrentState,
    TrackerState,
)

# The exported names are listed once, in ``shared.bus.__all__``.

BUS_PROTOCOL_VERSION = 4

RETIRED_TAGS: frozenset[int] = frozenset({50})  # 50: ListeningOn, now part of AgentInfo


class Message:
    """Base of every bus message: a frozen slotted dataclass made by ``@bus_message``."""

    __slots__ = ()
    TAG: ClassVar[int]
    HAS_DATA: ClassVar[bool] = False


M = TypeVar("M", bound=Message)
R = TypeVar("R")

_messages: dict[int, type[Message]] = {}
_records: list[type] = []

MESSAGES: Mapping[int, type[Message]] = MappingProxyType(_messages)
"""Every message class by tag: the one registry the codec reads."""


@dataclass_transform(frozen_default=True)
def bus_message(tag: int, *, has_data: bool = False) -> Callable[[type[M]], type[M]]:
    """Make a class a frozen slotted dataclass and register it as the message ``tag``.

    Args:
        tag: the class's stable wire number, 1..65535.
        has_data: whether the message travels with a data frame.

    Raises:
        TypeError: the tag is out of range, retired or already taken (at import time).
    """

    def register(cls: type[M]) -> type[M]:
        if not 0 < tag < 65536 or tag in RETIRED_TAGS:
            raise TypeError(f"{cls.__name__}: tag {tag} is out of range or retired")
        if tag in _messages:
            raise TypeError(f"{cls.__name__}: tag {tag} is taken by {_messages[tag].__name__}")
        made = dataclass(frozen=True, slots=True)(cls)
        made.TAG = tag
        made.HAS_DATA = has_data
        _messages[tag] = made
        return made

    return register


@dataclass_transform(frozen_default=True)
def bus_record(cls: type[R]) -> type[R]:
    """Make a class a frozen slotted dataclass nested in messages as a positional array."""
    made = dataclass(frozen=True, slots=True)(cls)
    _records.append(made)
    return made


# --- records ----------------------------------------------------------------------------------


@bus_record
class TrackerTier:
    """One announce tier (BEP 12): URLs tried in order."""

    urls: Annotated[tuple[Text, ...], Size(1, 64)]


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


@bus_record
class PeerStatus:
    """One connection of a torrent, as ``status`` shows it."""

    address: PeerAddress
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


# --- coordinator <-> peer agent (30-59) --------------------------------------------------------


@bus_message(tag=30)
class AttachTorrent(Message):
    """Let the peer agent serve a torrent: its geometry, our peer id and what we already have."""

    info_hash: InfoHash
    piece_length: Annotated[int, Range(1, MAX_DATA_BYTES)]
    total_length: int
    num_pieces: Annotated[int, Range(1, MAX_PIECES)]
    peer_id: PeerId
    have: Bitfield
    private: bool
    storage_endpoint: Text
    """Where the agent sends this torrent's pieces (``StorePiece``) and reads blocks."""
    storage_public_key: Annotated[str, Size(0, 40)]
    """The storage endpoint's Z85 CURVE public key; empty when it uses no CURVE."""


@bus_message(tag=31)
class DetachTorrent(Message):
    """Close every connection of a torrent and forget it."""

    info_hash: InfoHash


@bus_message(tag=32)
class ConnectPeer(Message):
    """Dial a peer; answered by ``PeerConnected`` or ``PeerConnectFailed``."""

    info_hash: InfoHash
    address: PeerAddress


@bus_message(tag=33)
class DisconnectPeer(Message):
    """Close one connection; answered by ``PeerDisconnected``."""

    info_hash: InfoHash
    peer: PeerKey
    reason: DisconnectReason


@bus_message(tag=34)
class AssignPieces(Message):
    """Download these pieces from this peer (the peer has them)."""

    info_hash: InfoHash
    peer: PeerKey
    pieces: PieceList


@bus_message(tag=35)
class CancelPieces(Message):
    """Stop fetching these pieces from this peer (another peer finished them)."""

    info_hash: InfoHash
    peer: PeerKey
    pieces: PieceList


@bus_message(tag=36)
class BroadcastHave(Message):
    """A piece was verified: send HAVE to every peer of the torrent."""

    info_hash: InfoHash
    piece: PieceNo


@bus_message(tag=37)
class SetChoke(Message):
    """Choke or unchoke one connection (the coordinator's choker decides, BEP 3)."""

    info_hash: InfoHash
    peer: PeerKey
    choked: bool


@bus_message(tag=38)
class BanPeers(Message):
    """Refuse connections from these hosts for this torrent (they sent corrupt data)."""

    info_hash: InfoHash
    hosts: Annotated[tuple[Name, ...], Size(1, MAX_HOSTS)]


@bus_message(tag=40)
class PeerConnected(Message):
    """A handshake completed (dialled or incoming)."""

    info_hash: InfoHash
    peer: PeerKey
    address: PeerAddress
    peer_id: PeerId
    client: Name
    incoming: bool
    fast_extension: bool
    extension_protocol: bool


@bus_message(tag=41)
class PeerBitfield(Message):
    """The peer's full bitfield (BITFIELD, or HAVE_ALL/HAVE_NONE expanded)."""

    info_hash: InfoHash
    peer: PeerKey
    bitfield: Bitfield


@bus_message(tag=42)
class PeerHave(Message):
    """The peer announced one more piece."""

    info_hash: InfoHash
    peer: PeerKey
    piece: PieceNo


@bus_message(tag=43)
class PeerDisconnected(Message):
    """A connection closed; its assigned pieces are free again."""

    info_hash: InfoHash
    peer: PeerKey
    reason: DisconnectReason
    message: Text


@bus_message(tag=44)
class PeerConnectFailed(Message):
    """A ``ConnectPeer`` never reached a handshake."""

    info_hash: InfoHash
    address: PeerAddress
    reason: DisconnectReason
    message: Text


@bus_message(tag=45)
class WorkWanted(Message):
    """The peer can take ``count`` more pieces (it unchoked us and has spare pipeline)."""

    info_hash: InfoHash
    peer: PeerKey
    count: Annotated[int, Range(1, MAX_BATCH)]


@bus_message(tag=46)
class PiecesReleased(Message):
    """Assigned pieces this peer will not fetch (choked, rejected, or lacks them)."""

    info_hash: InfoHash
    peer: PeerKey
    pieces: PieceList


@bus_message(tag=47)
class TransferStats(Message):
    """Periodic counters and rates of the sender's connections."""

    peers: Annotated[tuple[PeerStats, ...], Size(0, MAX_BATCH)]


@bus_message(tag=48)
class PieceDownloaded(Message):
    """Notice only: a piece was sent to storage; ``PieceVerified`` is what counts."""

    info_hash: InfoHash
    piece: PieceNo
    peer: PeerKey


@bus_message(tag=49)
class PeerInterest(Message):
    """The peer became interested or not interested in our pieces (the choker's input)."""

    info_hash: InfoHash
    peer: PeerKey
    interested: bool


# --- peer agent <-> storage agent, data endpoint (60-79) ----------------------------------------


@bus_message(tag=60, has_data=True)
class StorePiece(Message):
    """A whole downloaded piece (data frame) to verify and write; ``contributors`` are peer keys."""

    info_hash: InfoHash
    piece: PieceNo
    contributors: PeerKeys
    block_senders: BlockSenders = ()
    """Who sent each 16 KiB block, as an index into ``contributors``; empty when one
    connection sent every block (``contributors[0]``)."""


@bus_message(tag=61)
class ReadBlock(Message):
    """Read a block to upload; answered by ``BlockRead`` or ``ReadFailed``."""

    request_id: int
    info_hash: InfoHash
    piece: PieceNo
    offset: Annotated[int, Range(0, MAX_DATA_BYTES - 1)]
    length: Annotated[int, Range(1, MAX_BLOCK_LENGTH)]


@bus_message(tag=62, has_data=True)
class BlockRead(Message):
    """The bytes of a ``ReadBlock`` (data frame)."""

    request_id: int
    info_hash: InfoHash
    piece: PieceNo
    offset: Annotated[int, Range(0, MAX_DATA_BYTES - 1)]


@bus_message(tag=63)
class ReadFailed(Message):
    """A ``ReadBlock`` that cannot be served (unknown torrent, piece not verified, I/O error)."""

    request_id: int
    reason: Name
    message: Text


@bus_message(tag=64)
class PieceStored(Message):
    """Storage to the peer agent that sent a ``StorePiece``: the piece is dealt with.

    ``reason`` is ``StoreRefusal.NONE`` (empty) when the piece was hashed (and written if it
    matched: the coordinator hears ``PieceVerified`` or ``PieceRejected``) or was already
    verified; otherwise it names why it was refused (``TORRENT_CHECKING``, ``UNKNOWN_TORRENT``,
    ``AGENT_STOPPING``, ...) and the sender may send it again later. Until this arrives the
    sender keeps the piece.
    """

    info_hash: InfoHash
    piece: PieceNo
    reason: StoreRefusal


# --- coordinator <-> storage agent (80-99) ------------------------------------------------------


@bus_message(tag=80)
class OpenTorrent(Message):
    """Open (and check or resume) a torrent's files; the agent checks SHA-1(raw_info)."""

    info_hash: InfoHash
    raw_info: Annotated[bytes, Size(1, MAX_METAINFO_BYTES)]
    save_path: Text


@bus_message(tag=81)
class CloseTorrent(Message):
    """Flush resume state and close the files; answered by ``TorrentClosed``.

    With ``delete_files`` the torrent's files (and its resume state) are deleted as well;
    without it they are never touched.
    """

    info_hash: InfoHash
    delete_files: bool


@bus_message(tag=82)
class RecheckTorrent(Message):
    """Hash every piece on disk again, trusting nothing; answered by ``TorrentOpened``."""

    info_hash: InfoHash


@bus_message(tag=90)
class TorrentOpened(Message):
    """The files are open; ``have`` holds the pieces already verified on disk."""

    info_hash: InfoHash
    have: Bitfield


@bus_message(tag=91)
class PieceVerified(Message):
    """A piece matched its SHA-1 and is on disk."""

    info_hash: InfoHash
    piece: PieceNo


@bus_message(tag=92)
class PieceRejected(Message):
    """A piece failed its SHA-1; nothing was written. ``contributors`` are suspects."""

    info_hash: InfoHash
    piece: PieceNo
    contributors: PeerKeys


@bus_message(tag=93)
class StorageFailed(Message):
    """A file operation failed; ``errno_name`` is e.g. ``"ENOSPC"`` (empty when not an OSError)."""

    info_hash: InfoHash
    file: Text
    errno_name: Name
    message: Text


@bus_message(tag=95)
class CheckProgress(Message):
    """A check of the files on disk (at open or recheck) has hashed ``checked`` of ``total``."""

    info_hash: InfoHash
    checked: PieceCount
    total: PieceCount


@bus_message(tag=96)
class CorruptBlocksTraced(Message):
    """A piece that failed its SHA-1 with blocks from several peers was fetched again and
    verified; its blocks compared with the failed copy's name who sent bad data (libtorrent's
    smart ban). ``liars`` sent at least one block that differs from the verified piece;
    ``cleared`` sent only blocks that match it."""

    info_hash: InfoHash
    piece: PieceNo
    liars: PeerKeys
    cleared: PeerKeys


@bus_message(tag=94)
class TorrentClosed(Message):
    """The files are closed and resume state is flushed."""

    info_hash: InfoHash


# --- control: CLI <-> coordinator (100-129), one reply per request ------------------------------


@bus_message(tag=100)
class AddTorrent(Message):
    """Add a .torrent (its exact bytes) to download into ``download_dir``."""

    metainfo: Annotated[bytes, Size(1, MAX_METAINFO_BYTES)]
    download_dir: Text


@bus_message(tag=101)
class TorrentAdded(Message):
    """Reply to ``AddTorrent``."""

    info_hash: InfoHash
    name: Text


@bus_message(tag=102)
class ListTorrents(Message):
    """Ask for the status of every torrent; answered by ``StatusReport``."""


@bus_message(tag=103)
class GetStatus(Message):
    """Ask for the torrents whose hex info-hash starts with ``prefix``."""

    prefix: Annotated[str, Size(0, 40)]


@bus_message(tag=104)
class StatusReport(Message):
    """Reply to ``ListTorrents`` and ``GetStatus``."""

    torrents: Annotated[tuple[TorrentStatus, ...], Size(0, MAX_TORRENTS)]
    agents: Annotated[tuple[AgentStatus, ...], Size(0, MAX_AGENTS)]


@bus_message(tag=105)
class ShutdownRequested(Message):
    """The user asks the daemon to stop; answered by ``ShutdownAccepted``."""


@bus_message(tag=106)
class ShutdownAccepted(Message):
    """Reply to ``ShutdownRequested``: the daemon is stopping."""


@bus_message(tag=107)
class ControlFailed(Message):
    """Reply to any request that failed; ``reason`` is a snake_case code."""

    reason: Name
    message: Text


@bus_message(tag=108)
class RemoveTorrent(Message):
    """Stop and forget a torrent, deleting its files if asked."""

    info_hash: InfoHash
    delete_files: bool


@bus_message(tag=109)
class TorrentRemoved(Message):
    """Reply to ``RemoveTorrent``."""

    info_hash: InfoHash


@bus_message(tag=110)
class PauseTorrent(Message):
    """Stop transferring a torrent (trackers get ``stopped``); answered by ``TorrentPaused``."""

    info_hash: InfoHash


@bus_message(tag=111)
class TorrentPaused(Message):
    """Reply to ``PauseTorrent``."""

    info_hash: InfoHash


@bus_message(tag=112)
class ResumeTorrent(Message):
    """Resume a paused torrent, or retry one in error; answered by ``TorrentResumed``."""

    info_hash: InfoHash


@bus_message(tag=113)
class TorrentResumed(Message):
    """Reply to ``ResumeTorrent``."""

    info_hash: InfoHash


@bus_message(tag=114)
class VerifyTorrent(Message):
    """Recheck every piece of a torrent on disk; answered by ``VerifyStarted``."""

    info_hash: InfoHash


@bus_message(tag=115)
class VerifyStarted(Message):
    """Reply to ``VerifyTorrent``; ``status`` shows the check's progress."""

    info_hash: InfoHash


RECORDS: tuple[type, ...] = tuple(_records)
"""Nested records (not messages), in declaration order."""

# Closed unions per direction, for exhaustive ``match`` in each service.
Lifecycle = Hello | Welcome | Rejected | Heartbeat | Goodbye | Shutdown | AgentInfo
ToTrackerAgent = TrackTorrent | UpdateTransfer | TorrentCompleted | UntrackTorrent
FromTrackerAgent = PeersDiscovered | TrackerStateChanged
ToPeerAgent = (
    SetChoke
    | BanPeers
    | AttachTorrent
    | DetachTorrent
    | ConnectPeer
    | DisconnectPeer
    | AssignPieces
    | CancelPieces
    | BroadcastHave
)
FromPeerAgent = (
    PeerInterest
    | PeerConnected
    | PeerBitfield
    | PeerHave
    | PeerDisconnected
    | PeerConnectFailed
    | WorkWanted
    | PiecesReleased
    | TransferStats
    | PieceDownloaded
)
DataRequest = StorePiece | ReadBlock
DataReply = BlockRead | ReadFailed | PieceStored
ToStorageAgent = OpenTorrent | CloseTorrent | RecheckTorrent
FromStorageAgent = (
    TorrentOpened
    | PieceVerified
    | PieceRejected
    | CorruptBlocksTraced
    | StorageFailed
    | TorrentClosed
    | CheckProgress
)
ControlRequest = (
    AddTorrent
    | ListTorrents
    | GetStatus
    | ShutdownRequested
    | RemoveTorrent
    | PauseTorrent
    | ResumeTorrent
    | VerifyTorrent
)
ControlReply = (
    TorrentAdded
    | StatusReport
    | ShutdownAccepted
    | ControlFailed
    | TorrentRemoved
    | TorrentPaused
    | TorrentResumed
    | VerifyStarted
)
