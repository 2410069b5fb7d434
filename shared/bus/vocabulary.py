"""The bus schema's vocabulary: its bounds, its field aliases and its enums, with helpers.

Strategy: ``shared.bus.schema`` declares the messages; the words they are made of live here, so
that a service sizes a batch or clips a text with the schema's own numbers
(``MAX_BATCH``, ``clip_text``) and names a reason with the schema's own enum
(``DisconnectReason.BANNED``) instead of repeating ``4096`` or ``"banned"``. The codec reads the
annotations of ``schema``, so everything here is pinned by ``tests/vectors/bus_schema.snapshot``
like the messages.

Rules:
- An enum travels as its value: a ``StrEnum`` member is the same msgpack str its literal was,
  so turning a ``Name`` field into an enum leaves the wire bytes alone.
- A closed set of codes shared between services is an enum, never a ``Name``. A reason code
  (a ``ReasonCode``) qualifies the message that carries it; the message is the fact. So a value
  from the wire that is no member decodes as the enum's ``UNKNOWN`` (``"unknown"``) rather than
  refusing the whole message: a ``Rejected`` from another protocol version still reads as a
  refusal, a ``PeerDisconnected`` with an odd reason still frees the peer's pieces. Every other
  enum (states, kinds, sources) refuses a value that is no member (``bad_value``).
- A code made inside a service (a ``WireError`` reason ending a connection) becomes a member at
  the edge that builds the bus message, with ``ReasonCode.parse``.
- Texts and names that come from elsewhere (a peer's client string, an exception's message) are
  clipped to their bound before they are sent: ``clip_name``, ``clip_text``; lists longer than a
  message holds are split: ``batches``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Annotated, Self, TypeVar

__all__ = [
    "BLOCK_LENGTH",
    "MAX_ANNOUNCE_ROWS",
    "MAX_BATCH",
    "MAX_BITFIELD_BYTES",
    "MAX_BLOCK_LENGTH",
    "MAX_DATA_BYTES",
    "MAX_EVENTS",
    "MAX_FILE_ROWS",
    "MAX_HEADER_BYTES",
    "MAX_HOSTS",
    "MAX_MAGNET",
    "MAX_METADATA_BYTES",
    "MAX_METADATA_PIECE",
    "MAX_METAINFO_BYTES",
    "MAX_NAME",
    "MAX_PEER_KEYS",
    "MAX_PEER_ROWS",
    "MAX_PEX_PEERS",
    "MAX_PIECES",
    "MAX_PIECE_ORIGINS",
    "MAX_TEXT",
    "MAX_TORRENTS",
    "MAX_TRACKER_ROWS",
    "DisconnectReason",
    "EventLevel",
    "PeerSource",
    "PieceCell",
    "Range",
    "ReasonCode",
    "RejectReason",
    "ServiceKind",
    "Size",
    "StoreRefusal",
    "TorrentState",
    "TrackerState",
    "batches",
    "clip_name",
    "clip_text",
]

T = TypeVar("T")

# --- bounds -----------------------------------------------------------------------------------

MAX_PIECES = 2**21
"""Pieces of one torrent at most (libtorrent's default ``max_pieces``)."""
MAX_BITFIELD_BYTES = MAX_PIECES // 8
MAX_METAINFO_BYTES = 10 * 1024 * 1024
MAX_METADATA_BYTES = 8 * 1024 * 1024
"""The largest info dictionary torviz serves or fetches (``[peer_agent] max_metadata_size`` caps
it further)."""
MAX_METADATA_PIECE = 16 * 1024
"""BEP 9 metadata pieces are 16 KiB (the last one shorter)."""
MAX_MAGNET = 64 * 1024
"""The longest magnet link accepted (many ``tr`` and ``x.pe`` parameters fit)."""
MAX_PEX_PEERS = 100
"""Addresses in one ``ut_pex`` message, either way (``shared/wire/pex.py``)."""
MAX_HEADER_BYTES = 12 * 1024 * 1024
MAX_DATA_BYTES = 64 * 1024 * 1024
MAX_BLOCK_LENGTH = 128 * 1024
BLOCK_LENGTH = 16 * 1024
"""The block size every client requests; blame is traced per block."""
MAX_NAME = 256
"""Characters of a ``Name``: ids, hosts, client names, snake_case codes."""
MAX_TEXT = 4096
"""Characters of a ``Text``: one human-readable line, a URL or a path."""
MAX_BATCH = 4096
"""Peers, pieces or stats rows in one message; senders split larger batches (``batches``)."""
MAX_PEER_KEYS = 1024
"""Peer keys in one list (a piece's contributors, a smart ban's liars)."""
MAX_HOSTS = 1024
"""Hosts banned by one ``BanPeers``."""
MAX_TORRENTS = 10_000
"""Torrents in one ``StatusReport``."""
MAX_AGENTS = 4096
"""Agents in one ``StatusReport``."""
MAX_PEER_ROWS = 1024
"""Connections listed per torrent in a ``StatusReport``."""
MAX_TRACKER_ROWS = 256
"""Tracker URLs listed per torrent, or per announce, in a ``StatusReport``."""
MAX_ANNOUNCE_ROWS = 64
"""Announces listed per torrent in a ``StatusReport``."""
MAX_FILE_ROWS = 10_000
"""Files listed in a torrent's detail (the first ones of a bigger torrent)."""
MAX_EVENTS = 1000
"""Events of the daemon's log sent in one reply (and kept by the coordinator)."""
MAX_PIECE_ORIGINS = 250
"""Peer agents a piece map tells apart (``PieceCell.FIRST_ORIGIN`` + index fits a byte)."""
MAX_WEB_SEEDS = 64
"""Web seed URLs one torrent keeps (``url-list``, magnet ``ws=`` and added ones): the first."""


def clip_name(text: str) -> str:
    """``text`` cut to a ``Name``'s ``MAX_NAME`` characters."""
    return text[:MAX_NAME]


def clip_text(text: str) -> str:
    """``text`` cut to a ``Text``'s ``MAX_TEXT`` characters."""
    return text[:MAX_TEXT]


def batches(items: Sequence[T], size: int = MAX_BATCH) -> Iterator[tuple[T, ...]]:
    """``items`` in order, in tuples of at most ``size`` (none for no items).

    Raises:
        ValueError: ``size`` is below 1.
    """
    if size < 1:
        raise ValueError(f"a batch holds at least one item, not {size}")
    for start in range(0, len(items), size):
        yield tuple(items[start : start + size])


# --- field bounds and aliases -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Range:
    """Inclusive bounds of an ``int`` or ``float`` field: ``Annotated[int, Range(0, 255)]``."""

    lo: int | float
    hi: int | float


@dataclass(frozen=True, slots=True)
class Size:
    """Inclusive length bounds of a ``str`` (characters), ``bytes`` or ``tuple`` field."""

    lo: int
    hi: int


# Every str, bytes and tuple states its bound; the aliases keep the schema's classes short.
Name = Annotated[str, Size(0, MAX_NAME)]  # ids and hosts
Text = Annotated[str, Size(0, MAX_TEXT)]  # one human-readable line, a URL or a path
PeerKey = Annotated[str, Size(1, 128)]  # a peer agent's unique name for a connection: "pa1/17"
U32 = Annotated[int, Range(0, 2**32 - 1)]
PieceNo = Annotated[int, Range(0, MAX_PIECES - 1)]
PieceCount = Annotated[int, Range(0, MAX_PIECES)]
Port = Annotated[int, Range(0, 65535)]
Bitfield = Annotated[bytes, Size(0, MAX_BITFIELD_BYTES)]
PieceList = Annotated[tuple[PieceNo, ...], Size(0, MAX_BATCH)]  # empty: "nothing for you now"
PeerKeys = Annotated[tuple[PeerKey, ...], Size(0, MAX_PEER_KEYS)]
BlockSenders = Annotated[
    tuple[Annotated[int, Range(0, 1023)], ...], Size(0, MAX_DATA_BYTES // BLOCK_LENGTH)
]  # per 16 KiB block of a piece, an index into the message's ``contributors``
Rate = Annotated[float, Range(0.0, 1e15)]  # bytes per second
Seconds = Annotated[float, Range(0.0, 1e9)]


# --- enums that refuse a value that is no member -------------------------------------------------


class ServiceKind(StrEnum):
    """Who is on the other end of a bus connection (``Hello.service`` carries the value)."""

    COORDINATOR = "coordinator"
    TRACKER_AGENT = "tracker_agent"
    PEER_AGENT = "peer_agent"
    STORAGE_AGENT = "storage_agent"
    CLI = "cli"


class PeerSource(StrEnum):
    """Where a peer address came from."""

    TRACKER = "tracker"
    DHT = "dht"
    PEX = "pex"
    INCOMING = "incoming"
    MANUAL = "manual"
    MAGNET = "magnet"
    """A magnet link's ``x.pe`` peers."""
    WEB_SEED = "web_seed"
    """A web seed (BEP 19): an HTTP server holding the torrent's files, not a peer."""


class WebSeedState(StrEnum):
    """Where a web seed URL stands in the peer agent that fetches from it."""

    ACTIVE = "active"
    BACKING_OFF = "backing_off"
    """Requests failed: the next waits (exponential back-off, or the server's Retry-After)."""
    GIVEN_UP = "given_up"


class WebSeedUrlState(StrEnum):
    """Where a torrent's web seed URL stands for the coordinator (``WebSeedRow``)."""

    WAITING = "waiting"
    """Not fetched from now: the torrent is not open, complete, or at its web seed cap, or no
    peer agent has room."""
    CONNECTED = "connected"
    """A peer agent fetches from it (its row in ``peer_list`` tells how)."""
    RETRYING = "retrying"
    """Its last session ended in failure; it is placed again after a delay."""
    GIVEN_UP = "given_up"
    """It failed too often, or lacks every file: not tried again until the torrent restarts."""
    BANNED = "banned"
    """It sent pieces that failed their hash: not tried again for this torrent."""
    DISABLED = "disabled"
    """Web seeds are switched off (``[coordinator] web_seeds = false``)."""
    INVALID = "invalid"
    """Not a URL torviz can fetch from (not http/https, say): ``WebSeedRow.message`` says why."""


class EventLevel(StrEnum):
    """How much an event of the daemon's log matters."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class PieceCell(IntEnum):
    """One piece in a ``PieceMap``. A byte ``FIRST_ORIGIN + i`` is a verified piece whose
    blocks came through ``PieceMap.origins[i]`` (a peer agent on a host)."""

    MISSING = 0
    DOWNLOADING = 1
    """Asked of a connection, blocks arriving."""
    CHECKING = 2
    """Every block in, waiting for its hash check."""
    HAVE = 3
    """Verified; where it came from is not known (on disk before, or a peer agent since gone)."""
    FIRST_ORIGIN = 4


class TrackerState(StrEnum):
    """One tracker URL as the tracker agent sees it."""

    IDLE = "idle"
    ANNOUNCING = "announcing"
    WORKING = "working"
    FAILED = "failed"
    DISABLED = "disabled"


class TorrentState(StrEnum):
    """A torrent as the coordinator reports it to the user."""

    METADATA = "metadata"
    """Added from a magnet link: fetching the info dictionary from peers (BEP 9)."""
    CHECKING = "checking"
    DOWNLOADING = "downloading"
    SEEDING = "seeding"
    PAUSED = "paused"
    STOPPED = "stopped"
    ERROR = "error"


# --- reason codes: a value that is no member decodes as UNKNOWN ---------------------------------


class ReasonCode(StrEnum):
    """Base of the reason-code enums; each has ``UNKNOWN = "unknown"`` (the codec checks)."""

    @classmethod
    def parse(cls, code: str) -> Self:
        """The member whose value is ``code``, else ``UNKNOWN``: for codes made inside a
        service (an error's ``reason``) at the edge where they go on the bus."""
        try:
            return cls(code)
        except ValueError:
            return cls("unknown")


class RejectReason(ReasonCode):
    """Why an endpoint answered ``Rejected`` (``Rejected.reason``).

    ``Rejected`` is read across protocol versions, so a code of another version reads as
    ``UNKNOWN`` with its message intact.
    """

    VERSION_MISMATCH = "version_mismatch"
    SCHEMA_MISMATCH = "schema_mismatch"
    SERVICE_NOT_ACCEPTED = "service_not_accepted"
    IDENTITY_NOT_ALLOWED = "identity_not_allowed"
    """The caller's CURVE key may not speak for the agent (or the kind) it names."""
    DUPLICATE_AGENT = "duplicate_agent"
    """Another live process already runs with this agent id."""
    TOO_MANY_PEERS = "too_many_peers"
    HELLO_FIRST = "hello_first"
    """A message from a caller not welcomed (the endpoint restarted, or counted it dead)."""
    UNKNOWN = "unknown"


class DisconnectReason(ReasonCode):
    """Why a peer connection ended or never started (``PeerDisconnected``,
    ``PeerConnectFailed``), or why the coordinator closes one (``DisconnectPeer``)."""

    # the network
    CONNECT_TIMEOUT = "connect_timeout"
    SOCKET_TIMEOUT = "socket_timeout"
    CONNECTION_REFUSED = "connection_refused"
    CONNECTION_RESET = "connection_reset"
    UNREACHABLE = "unreachable"
    SOCKET_ERROR = "socket_error"
    PEER_CLOSED = "peer_closed"
    # the session's timers
    HANDSHAKE_TIMEOUT = "handshake_timeout"
    IDLE_TIMEOUT = "idle_timeout"
    UNINTERESTED = "uninterested"
    # the peer broke the protocol (the ``WireError`` reasons of shared.wire and the session)
    BAD_PSTRLEN = "bad_pstrlen"
    BAD_PROTOCOL = "bad_protocol"
    TRUNCATED = "truncated"
    BAD_LENGTH = "bad_length"
    FRAME_TOO_LARGE = "frame_too_large"
    UNKNOWN_MESSAGE = "unknown_message"
    BAD_EXTENSION_HANDSHAKE = "bad_extension_handshake"
    BAD_PIECE_INDEX = "bad_piece_index"
    BAD_BITFIELD_LENGTH = "bad_bitfield_length"
    BITFIELD_SPARE_BITS = "bitfield_spare_bits"
    FAST_NOT_NEGOTIATED = "fast_not_negotiated"
    BAD_REQUEST = "bad_request"
    REQUEST_FLOOD = "request_flood"
    TOO_MANY_BAD_REQUESTS = "too_many_bad_requests"
    WRONG_INFO_HASH = "wrong_info_hash"
    CONNECTED_TO_SELF = "connected_to_self"
    BAD_METADATA_MESSAGE = "bad_metadata_message"
    BAD_PEX = "bad_pex"
    BAD_PEX_LENGTH = "bad_pex_length"
    # the peer agent
    DUPLICATE_PEER = "duplicate_peer"
    ALREADY_CONNECTED = "already_connected"
    REPLACED = "replaced"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    TOO_MANY_FOR_TORRENT = "too_many_for_torrent"
    TOO_MANY_FROM_HOST = "too_many_from_host"
    TOO_MANY_INCOMING = "too_many_incoming"
    UNKNOWN_TORRENT = "unknown_torrent"
    TORRENT_DETACHED = "torrent_detached"
    AGENT_STOPPING = "agent_stopping"
    SHUTDOWN = "shutdown"
    STOPPED = "stopped"
    INTERNAL_ERROR = "internal_error"
    BANNED = "banned"
    # the coordinator
    SENT_CORRUPT_DATA = "sent_corrupt_data"
    BAD_BITFIELD = "bad_bitfield"
    BOTH_SEEDS = "both_seeds"
    WEB_SEED_GIVEN_UP = "web_seed_given_up"
    """A web seed's URL failed too often, or lacks every file: it is not asked again."""
    WEB_SEED_STOPPED = "web_seed_stopped"
    """A web seed the agent stopped (its torrent closed, the agent stopping)."""
    WEB_SEED_ERROR = "web_seed_error"
    """A web seed's driver failed on our side (a bug: the session ends, logged)."""
    WEB_SEED_REFUSED = "web_seed_refused"
    """A ``ConnectWebSeed`` the peer agent cannot start: a URL it cannot parse, a torrent
    without its geometry."""
    UNKNOWN = "unknown"


class StoreRefusal(ReasonCode):
    """Why the storage agent refused a ``StorePiece`` (``PieceStored.reason``); ``NONE`` (the
    empty string): it did not, the piece was hashed (and written if it matched) or was
    already verified."""

    NONE = ""
    UNKNOWN_TORRENT = "unknown_torrent"
    TORRENT_NOT_OPEN = "torrent_not_open"
    TORRENT_FAILED = "torrent_failed"
    TORRENT_CHECKING = "torrent_checking"
    PIECE_OUT_OF_RANGE = "piece_out_of_range"
    BAD_PIECE_LENGTH = "bad_piece_length"
    BAD_BLOCK_SENDERS = "bad_block_senders"
    AGENT_STOPPING = "agent_stopping"
    WRITE_FAILED = "write_failed"
    UNKNOWN = "unknown"
