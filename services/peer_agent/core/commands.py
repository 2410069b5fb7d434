"""What the agent tells a connection: one frozen dataclass per command, a closed union.

Strategy: the agent turns the coordinator's per-peer messages into these (``command_for``) and
tells them to the connection's actor, which calls its session; ``Acquired`` (we verified a
piece: send HAVE) goes to every connection of the torrent, ``Disconnect`` also comes from the
agent itself (bans, detaching, replacing, shutdown), and ``LearnGeometry`` goes to every
connection of a magnet torrent when ``AttachTorrent`` gives it its geometry.

Rule: ``PIECE_COMMANDS`` mean nothing to a connection in metadata mode (no geometry yet); the
agent does not route them to a magnet torrent, and a connection ignores any that slip through.
"""

from __future__ import annotations

from dataclasses import dataclass

from torviz.shared import bus
from torviz.shared.bitfield import Bitfield
from torviz.shared.geometry import TorrentGeometry
from torviz.shared.types import PeerAddress

__all__ = [
    "PIECE_COMMANDS",
    "Acquired",
    "Assign",
    "Command",
    "Disconnect",
    "FetchMetadata",
    "LearnGeometry",
    "OfferPeers",
    "PeerMessage",
    "Revoke",
    "SetChoked",
    "command_for",
]


@dataclass(frozen=True, slots=True)
class Assign:
    pieces: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Revoke:
    pieces: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Acquired:
    """We verified ``piece``: send HAVE."""

    piece: int


@dataclass(frozen=True, slots=True)
class SetChoked:
    """The coordinator's choker decided about this peer."""

    choked: bool


@dataclass(frozen=True, slots=True)
class Disconnect:
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class FetchMetadata:
    """Ask the peer for these pieces of the info dictionary (BEP 9)."""

    pieces: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class OfferPeers:
    """Send the peer a ``ut_pex`` message: ``added`` as (address, BEP 11 flags)."""

    added: tuple[tuple[PeerAddress, int], ...]
    dropped: tuple[PeerAddress, ...]


@dataclass(frozen=True, slots=True)
class LearnGeometry:
    """The magnet torrent got its info dictionary: leave metadata mode.

    Attributes:
        geometry: the torrent's geometry.
        have: the pieces we have (a copy of its own for each connection).
        info: the info dictionary's exact bytes, served from now on (empty: not served).
        pex: whether ``ut_pex`` stays on (off for a private torrent).
    """

    geometry: TorrentGeometry
    have: Bitfield
    info: bytes
    pex: bool


Command = (
    Assign | Revoke | Acquired | SetChoked | Disconnect | FetchMetadata | OfferPeers | LearnGeometry
)

PIECE_COMMANDS = (Assign, Revoke, Acquired)
"""Commands about pieces: meaningless before the geometry is known."""

PeerMessage = (
    bus.AssignPieces
    | bus.CancelPieces
    | bus.SetChoke
    | bus.DisconnectPeer
    | bus.RequestMetadata
    | bus.SendPex
)
"""The coordinator's messages for one connection (``info_hash`` and ``peer`` name it)."""


def command_for(message: PeerMessage) -> Command:
    """The command a coordinator message for one connection becomes.

    Args:
        message: ``AssignPieces``, ``CancelPieces``, ``SetChoke``, ``DisconnectPeer``,
            ``RequestMetadata`` or ``SendPex``.

    Returns:
        ``Assign``, ``Revoke``, ``SetChoked``, ``Disconnect``, ``FetchMetadata`` or
        ``OfferPeers`` respectively.
    """
    match message:
        case bus.AssignPieces(_, _, pieces):
            return Assign(pieces)
        case bus.CancelPieces(_, _, pieces):
            return Revoke(pieces)
        case bus.SetChoke(_, _, choked):
            return SetChoked(choked)
        case bus.DisconnectPeer(_, _, reason):
            return Disconnect(reason, "the coordinator closed it")
        case bus.RequestMetadata(_, _, pieces):
            return FetchMetadata(pieces)
        case bus.SendPex(_, _, added, dropped):
            return OfferPeers(tuple((peer.address, peer.flags) for peer in added), dropped)
