"""A peer session's events as the bus messages its connection sends, without I/O.

Strategy: ``to_bus`` is a pure function of one session event and the connection it came from
(``Origin``: torrent, peer key, address, direction); the connection actor only sends what it
returns, in order: ``to_storage`` first (a finished piece and its buffer, the data frame), then
each of ``to_coordinator``. What is not a message stays with the connection: ``Closed`` ends it,
``PeerInfo`` and ``PiecesGivenBack``'s reason are logged, and a ``HandshakeDone`` is claimed
(no other connection of the torrent reaches that peer id) before its ``PeerConnected`` goes out.

Rules:
- A piece whose blocks all came from this connection names it as the one contributor; a piece
  continued from another connection's blocks names each block's sender as an index into the
  distinct contributors (``StorePiece.block_senders``, what the storage agent's smart ban reads).
- Counts and lists are clipped to the bus schema's bounds: a ``WorkWanted`` asks for at most
  ``MAX_BATCH`` pieces, given-back pieces go in batches, the client name is clipped.
"""

from __future__ import annotations

from dataclasses import dataclass

from torviz.shared import bus
from torviz.shared.peer_id import identify_client
from torviz.shared.types import InfoHash, PeerAddress

from .events import (
    BitfieldReceived,
    Closed,
    Event,
    HandshakeDone,
    HaveReceived,
    PeerInfo,
    PeerInterestChanged,
    PieceCompleted,
    PiecesGivenBack,
    WorkNeeded,
)

__all__ = ["NOTHING", "Origin", "Outgoing", "store_piece", "to_bus"]


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


NOTHING = Outgoing()
"""An event that sends nothing (``Closed``, ``PeerInfo``)."""


def to_bus(event: Event, origin: Origin) -> Outgoing:
    """The bus messages a session event becomes.

    Args:
        event: one event from ``PeerSession.take_events``.
        origin: the connection the session belongs to.

    Returns:
        What to send; ``NOTHING`` for ``Closed`` and ``PeerInfo``.
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
        case PeerInfo() | Closed():
            return NOTHING


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
