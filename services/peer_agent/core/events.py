"""What a peer session reports to its connection: one frozen dataclass per event, a closed union.

The connection turns most of them into bus messages (``translate.py``: ``PieceCompleted`` into
``StorePiece`` and ``PieceDownloaded``, ``HaveReceived`` into ``PeerHave``, ...); ``Closed`` is
always the last event of a session.

Rule: an event is named for what happened in the session (``HaveReceived``, ``WorkNeeded``,
``PiecesGivenBack``), never like the bus message it becomes, so a ``match`` on one can never
be mistaken for the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torviz.shared.bitfield import Bitfield
from torviz.shared.types import PeerAddress, PeerId
from torviz.shared.wire.extension import ExtensionHandshake
from torviz.shared.wire.handshake import Reserved

__all__ = [
    "BitfieldReceived",
    "Closed",
    "DhtPortArrived",
    "Event",
    "HandshakeDone",
    "HaveReceived",
    "MetadataPieceArrived",
    "MetadataRequestRejected",
    "PeerInfo",
    "PeerInterestChanged",
    "PexArrived",
    "PieceCompleted",
    "PiecesGivenBack",
    "WorkNeeded",
]


@dataclass(frozen=True, slots=True)
class HandshakeDone:
    peer_id: PeerId
    reserved: Reserved


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """The peer's extension handshake arrived (client name, listen port, queue limit, the
    extensions it offers and ``metadata_size``); again for each later one it sends."""

    extension: ExtensionHandshake


@dataclass(frozen=True, slots=True)
class BitfieldReceived:
    """The peer's whole have-state (bitfield, have-all or have-none)."""

    bits: Bitfield


@dataclass(frozen=True, slots=True)
class HaveReceived:
    piece: int


@dataclass(frozen=True, slots=True)
class PeerInterestChanged:
    """The peer became interested in our pieces, or stopped being (the choker's input)."""

    interested: bool


@dataclass(frozen=True, slots=True)
class PieceCompleted:
    """Every block of ``piece`` arrived; ``data`` is the whole piece, handed over for good.

    ``senders`` names the peer key that sent each block when the piece was continued from
    another connection's blocks; None when this connection sent them all.
    """

    piece: int
    data: bytearray
    senders: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class WorkNeeded:
    """The pipeline would run dry: the session can take ``count`` more pieces."""

    count: int


@dataclass(frozen=True, slots=True)
class PiecesGivenBack:
    """The session gave these assigned pieces up (timeouts, repeated rejects)."""

    pieces: tuple[int, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class MetadataPieceArrived:
    """The peer sent piece ``piece`` of the info dictionary (BEP 9), one we asked it for.

    ``total_size`` is as the peer said; ``data`` has exactly the length that ``piece`` and
    ``total_size`` imply (the codec checked it), nothing else about it is judged here.
    """

    piece: int
    total_size: int
    data: bytes


@dataclass(frozen=True, slots=True)
class MetadataRequestRejected:
    """The peer answered our request for metadata piece ``piece`` with a reject."""

    piece: int


@dataclass(frozen=True, slots=True)
class PexArrived:
    """A ``ut_pex`` message from the peer (BEP 11), IPv4 and IPv6 together, each list capped
    at ``MAX_PEX_PEERS``: ``added`` pairs an address with its flag byte (``PexFlags``)."""

    added: tuple[tuple[PeerAddress, int], ...]
    dropped: tuple[PeerAddress, ...]


@dataclass(frozen=True, slots=True)
class DhtPortArrived:
    """The peer's ``PORT`` (BEP 5): its DHT node listens on ``port`` at its address (reported
    once per connection)."""

    port: int


@dataclass(frozen=True, slots=True)
class Closed:
    """The session ended; ``reason`` is a snake_case code, ``message`` one readable line."""

    reason: str
    message: str = field(default="", compare=False)


Event = (
    HandshakeDone
    | PeerInfo
    | BitfieldReceived
    | HaveReceived
    | PeerInterestChanged
    | PieceCompleted
    | WorkNeeded
    | PiecesGivenBack
    | MetadataPieceArrived
    | MetadataRequestRejected
    | PexArrived
    | DhtPortArrived
    | Closed
)
