"""The bus schema: every message torviz services exchange, in this one package.

Strategy: one frozen dataclass per message, registered with ``@bus_message(tag=N)``
(``registry``), declared in the module of its channel: ``agents`` (lifecycle and tracker agent),
``peers`` (peer agent and data endpoint), ``storage`` (storage agent), ``control`` (CLI), with
the records they nest in ``records``. This module holds the protocol version and the closed
unions per direction. The codec (``shared.bus.codec``) derives encoding, decoding and validation
from the annotations, so a field's type *is* its wire contract. The words the messages are made
of (bounds such as ``MAX_BATCH``, field aliases such as ``Name``, the enums and reason codes)
live in ``shared.bus.vocabulary``. ``tests/vectors/bus_schema.snapshot`` pins the whole rendered
schema: any change to it is a deliberate, reviewed diff.

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
  wire bytes stayed the same; 5: the disconnect reasons of BEP 9 and BEP 11 messages; 6:
  magnet links, metadata exchange and peer exchange; 7: the DHT; 8: the session watch, events,
  torrent detail for the terminal UI; 9: web seed disconnect reasons; 10: web seeds as
  connections, their status, ``AddWebSeed``).
- Times are durations in seconds, never absolute clock readings: clocks differ across hosts.
- A message with ``HAS_DATA`` travels as ``[header, data]``: the data frame carries piece or
  block bytes and is never packed into msgpack.
"""

from __future__ import annotations

from .agents import (
    AgentInfo,
    DhtNodeSeen,
    DhtStatusChanged,
    Goodbye,
    Heartbeat,
    Hello,
    PeersDiscovered,
    Rejected,
    Shutdown,
    TorrentCompleted,
    TrackerStateChanged,
    TrackTorrent,
    UntrackTorrent,
    UpdateTransfer,
    Welcome,
)
from .control import (
    AddTorrent,
    AddWebSeed,
    ControlFailed,
    ExportTorrent,
    GetStatus,
    ListTorrents,
    PauseTorrent,
    RemoveTorrent,
    ResumeTorrent,
    SessionChanges,
    ShutdownAccepted,
    ShutdownRequested,
    StatusReport,
    TorrentAdded,
    TorrentExported,
    TorrentPaused,
    TorrentRemoved,
    TorrentResumed,
    VerifyStarted,
    VerifyTorrent,
    WatchSession,
    WebSeedAdded,
)
from .peers import (
    AssignPieces,
    AttachMagnet,
    AttachTorrent,
    BanPeers,
    BlockRead,
    BroadcastHave,
    CancelPieces,
    ConnectPeer,
    ConnectWebSeed,
    DetachTorrent,
    DisconnectPeer,
    MetadataPieceReceived,
    MetadataRejected,
    PeerBitfield,
    PeerConnected,
    PeerConnectFailed,
    PeerDhtPort,
    PeerDisconnected,
    PeerExtensions,
    PeerHave,
    PeerInterest,
    PexReceived,
    PieceDownloaded,
    PiecesReleased,
    PieceStored,
    ReadBlock,
    ReadFailed,
    RequestMetadata,
    SendPex,
    SetChoke,
    StorePiece,
    TransferStats,
    WebSeedConnected,
    WorkWanted,
)
from .storage import (
    CheckProgress,
    CloseTorrent,
    CorruptBlocksTraced,
    OpenTorrent,
    PieceRejected,
    PieceVerified,
    RecheckTorrent,
    StorageFailed,
    TorrentClosed,
    TorrentOpened,
)

# The exported names are listed once, in ``shared.bus.__all__``; it imports each name from the
# module of this package that declares it.

BUS_PROTOCOL_VERSION = 10

# Closed unions per direction, for exhaustive ``match`` in each service.
Lifecycle = Hello | Welcome | Rejected | Heartbeat | Goodbye | Shutdown | AgentInfo
ToTrackerAgent = TrackTorrent | UpdateTransfer | TorrentCompleted | UntrackTorrent | DhtNodeSeen
FromTrackerAgent = PeersDiscovered | TrackerStateChanged | DhtStatusChanged
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
    | AttachMagnet
    | RequestMetadata
    | SendPex
    | ConnectWebSeed
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
    | PeerExtensions
    | MetadataPieceReceived
    | MetadataRejected
    | PexReceived
    | PeerDhtPort
    | WebSeedConnected
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
    | ExportTorrent
    | WatchSession
    | AddWebSeed
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
    | TorrentExported
    | SessionChanges
    | WebSeedAdded
)
