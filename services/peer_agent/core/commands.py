"""What the agent tells a connection: one frozen dataclass per command, a closed union.

Strategy: the agent turns the coordinator's per-peer messages into these (``command_for``) and
tells them to the connection's actor, which calls its session; ``Acquired`` (we verified a
piece: send HAVE) goes to every connection of the torrent, ``Disconnect`` also comes from the
agent itself (bans, detaching, replacing, shutdown).
"""

from __future__ import annotations

from dataclasses import dataclass

from torviz.shared import bus

__all__ = [
    "Acquired",
    "Assign",
    "Command",
    "Disconnect",
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


Command = Assign | Revoke | Acquired | SetChoked | Disconnect

PeerMessage = bus.AssignPieces | bus.CancelPieces | bus.SetChoke | bus.DisconnectPeer
"""The coordinator's messages for one connection (``info_hash`` and ``peer`` name it)."""


def command_for(message: PeerMessage) -> Command:
    """The command a coordinator message for one connection becomes.

    Args:
        message: ``AssignPieces``, ``CancelPieces``, ``SetChoke`` or ``DisconnectPeer``.

    Returns:
        ``Assign``, ``Revoke``, ``SetChoked`` or ``Disconnect`` respectively.
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
