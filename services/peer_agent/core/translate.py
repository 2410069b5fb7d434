"""A peer session's events as the bus messages its connection sends, without I/O.

Strategy: ``to_bus`` is a pure function of one session event and the connection it came from
(``Origin``: torrent, peer key, address, direction); the connection actor only sends what it
returns, in order: ``to_storage`` first (a finished piece and its buffer, the data frame), then
each of ``to_coordinator``. What is not a message stays with the connection: ``Closed`` ends it,
``PiecesGivenBack``'s reason is logged, and a ``HandshakeDone`` is claimed (no other connection
of the torrent reaches that peer id) before its ``PeerConnected`` goes out. The peer's extension
handshake (``PeerInfo``) becomes ``PeerExtensions`` for every torrent, magnet or not: it is how
the coordinator learns the peer's ``v``, ``p``, ``ut_metadata`` with ``metadata_size`` and
``ut_pex``. Metadata pieces, rejects and PeX messages go up as they are; the coordinator judges
them (its metadata assembler, its PeX policy).

Rules:
- A piece whose blocks all came from this connection names it as the one contributor; a piece
  continued from another connection's blocks names each block's sender as an index into the
  distinct contributors (``StorePiece.block_senders``, what the storage agent's smart ban reads).
- Counts and lists are clipped to the bus schema's bounds: a ``WorkWanted`` asks for at most
  ``MAX_BATCH`` pieces, given-back pieces go in batches, the client name is clipped, PeX lists
  to ``MAX_PEX_PEERS`` and flags to a byte. The peer's ``v`` keeps only printable characters.
- An event a bus message cannot carry (a metadata piece with no data, over 16 KiB, a
  ``total_size`` out of range, a piece number past the schema's) is not sent: ``Outgoing.refused``
  names why, and the connection counts these (``bad_metadata_message`` after a few).
"""

from __future__ import annotations

from dataclasses import dataclass

from torviz.shared import bus
from torviz.shared.peer_id import identify_client
from torviz.shared.types import InfoHash, PeerAddress
from torviz.shared.wire.extension import ExtensionHandshake

from .events import (
    BitfieldReceived,
    Closed,
    DhtPortArrived,
    Event,
    HandshakeDone,
    HaveReceived,
    MetadataPieceArrived,
    MetadataRequestRejected,
    PeerInfo,
    PeerInterestChanged,
    PexArrived,
    PieceCompleted,
    PiecesGivenBack,
    WorkNeeded,
)

__all__ = [
    "MAX_METADATA_PIECE_NUMBER",
    "MAX_METADATA_TOTAL_SIZE",
    "NOTHING",
    "Origin",
    "Outgoing",
    "peer_extensions",
    "store_piece",
    "to_bus",
]

MAX_METADATA_TOTAL_SIZE = 2**31 - 1
"""The largest ``total_size`` / ``metadata_size`` the bus carries."""
MAX_METADATA_PIECE_NUMBER = 1023
"""The largest metadata piece number the bus carries (16 MiB of metadata: past any cap)."""


@dataclass(frozen=True, slots=True)
class Origin:
    """The connection a session belongs to, as the bus names it.

    Attributes:
        info_hash: the torrent.
        key: the agent's unique name for the connection (``"pa1/17"``).
        address: the peer's address.
        incoming: the peer dialled us.
    """

    info_hash: InfoHash
    key: str
    address: PeerAddress
    incoming: bool


@dataclass(frozen=True, slots=True)
class Outgoing:
    """What one session event becomes.

    Attributes:
        to_storage: a finished piece's ``StorePiece`` and its buffer (the data frame), sent first.
        to_coordinator: the messages for the coordinator, in order.
    """

    to_storage: tuple[bus.StorePiece, bytearray] | None = None
    to_coordinator: tuple[bus.Message, ...] = ()
    refused: str = ""
    """Why the event was not sent (one line); empty when it was, or sends nothing anyway."""


NOTHING = Outgoing()
"""An event that sends nothing (``Closed``)."""


def to_bus(event: Event, origin: Origin) -> Outgoing:
    """The bus messages a session event becomes.

    Args:
        event: one event from ``PeerSession.take_events``.
        origin: the connection the session belongs to.

    Returns:
        What to send; ``NOTHING`` for ``Closed``, ``refused`` set for a metadata piece the
        bus cannot carry.
    """
    info_hash, key = origin.info_hash, origin.key
    match event:
        case PieceCompleted(piece, data, senders):
            store = store_piece(info_hash, piece, key, senders)
            return Outgoing((store, data), (bus.PieceDownloaded(info_hash, piece, key),))
        case WorkNeeded(count):
            return Outgoing(
                to_coordinator=(bus.WorkWanted(info_hash, key, min(count, bus.MAX_BATCH)),)
            )
        case HaveReceived(piece):
            return Outgoing(to_coordinator=(bus.PeerHave(info_hash, key, piece),))
        case BitfieldReceived(bits):
            return Outgoing(to_coordinator=(bus.PeerBitfield(info_hash, key, bits.to_bytes()),))
        case PiecesGivenBack(pieces, _):
            released = tuple(
                bus.PiecesReleased(info_hash, key, batch) for batch in bus.batches(pieces)
            )
            return Outgoing(to_coordinator=released)
        case HandshakeDone(peer_id, reserved):
            connected = bus.PeerConnected(
                info_hash=info_hash,
                peer=key,
                address=origin.address,
                peer_id=peer_id,
                client=bus.clip_name(str(identify_client(peer_id))),
                incoming=origin.incoming,
                fast_extension=reserved.fast,
                extension_protocol=reserved.extension_protocol,
            )
            return Outgoing(to_coordinator=(connected,))
        case PeerInterestChanged(interested):
            return Outgoing(to_coordinator=(bus.PeerInterest(info_hash, key, interested),))
        case PeerInfo(extension):
            return Outgoing(to_coordinator=(peer_extensions(extension, origin),))
        case MetadataPieceArrived(piece, total_size, data):
            refused = _unfit_metadata_piece(piece, total_size, data)
            if refused:
                return Outgoing(refused=refused)
            received = bus.MetadataPieceReceived(info_hash, key, piece, total_size, bytes(data))
            return Outgoing(to_coordinator=(received,))
        case MetadataRequestRejected(piece):
            if not 0 <= piece <= MAX_METADATA_PIECE_NUMBER:  # never asked for: nothing to free
                return Outgoing(refused=f"a reject for metadata piece {piece}, never asked for")
            return Outgoing(to_coordinator=(bus.MetadataRejected(info_hash, key, piece),))
        case PexArrived(added, dropped):
            pex = bus.PexReceived(
                info_hash,
                key,
                tuple(bus.PexPeer(a, flags & 0xFF) for a, flags in added[: bus.MAX_PEX_PEERS]),
                tuple(dropped[: bus.MAX_PEX_PEERS]),
            )
            return Outgoing(to_coordinator=(pex,))
        case DhtPortArrived(port):
            return Outgoing(to_coordinator=(bus.PeerDhtPort(info_hash, key, port),))
        case Closed():
            return NOTHING


def peer_extensions(extension: ExtensionHandshake, origin: Origin) -> bus.PeerExtensions:
    """The ``PeerExtensions`` of a peer's extension handshake.

    Args:
        extension: the handshake as decoded (absent keys are None).
        origin: the connection it came on.

    Returns:
        The message: ``v`` printable and clipped ("" when absent), ``p`` or 0, whether the
        peer offers ``ut_metadata`` and ``ut_pex`` (a nonzero id), ``metadata_size`` (0 when
        absent or not positive; past the bus's range it is clamped to the largest it carries,
        so the coordinator still sees a size too large and drops the peer).
    """
    version = "".join(c for c in extension.v or "" if c.isprintable())
    size = extension.metadata_size or 0
    return bus.PeerExtensions(
        info_hash=origin.info_hash,
        peer=origin.key,
        version=bus.clip_name(version),
        listen_port=extension.p if extension.p is not None and 0 < extension.p < 65536 else 0,
        ut_metadata=extension.extension_id("ut_metadata") is not None,
        ut_pex=extension.extension_id("ut_pex") is not None,
        metadata_size=min(size, MAX_METADATA_TOTAL_SIZE) if size > 0 else 0,
    )


def _unfit_metadata_piece(piece: int, total_size: int, data: bytes) -> str:
    """Why a metadata piece cannot go on the bus ("" when it can)."""
    if not 0 <= piece <= MAX_METADATA_PIECE_NUMBER:
        return f"metadata piece {piece} is past the last the bus carries"
    if not 0 < total_size <= MAX_METADATA_TOTAL_SIZE:
        return f"metadata total_size {total_size} is out of range"
    if not 0 < len(data) <= bus.MAX_METADATA_PIECE:
        return f"a metadata piece of {len(data)} bytes (1 to {bus.MAX_METADATA_PIECE} allowed)"
    return ""


def store_piece(
    info_hash: InfoHash, piece: int, key: str, senders: tuple[str, ...] | None
) -> bus.StorePiece:
    """The ``StorePiece`` of a finished piece.

    Args:
        info_hash: the torrent.
        piece: the piece index.
        key: the connection that finished it.
        senders: each block's sender when the piece was continued from other connections'
            blocks; None when ``key`` sent them all.

    Returns:
        The message: ``key`` alone as contributor, or the distinct senders in order of first
        block with each block's sender as an index into them.
    """
    if senders is None:  # every block from this peer: the usual case
        return bus.StorePiece(info_hash, piece, (key,))
    index: dict[str, int] = {}
    block_senders = tuple(index.setdefault(sender, len(index)) for sender in senders)
    return bus.StorePiece(info_hash, piece, tuple(index), block_senders)
