"""Which connections hear a coordinator message, and what they are told, without I/O.

Strategy: ``route`` turns one coordinator message about connections into the commands to tell
(``commands.py``), each with the handle of the connection it is for, reading and updating the
agent's ``Registry``: a per-peer message goes to the one connection its key names, ``BanPeers``
closes the banned hosts' connections, ``BroadcastHave`` tells every connection of the torrent.
``upgrade`` is what every live connection of a magnet torrent is told once ``AttachTorrent``
gave the torrent its geometry: ``LearnGeometry``, which the connections act on in place.
The agent actor only tells what these return.

Rules:
- A key that is closed, unknown or of another torrent gets nothing: its ``PeerDisconnected``
  is on the way (keys are never reused, so a late command never reaches a newer connection).
- ``PIECE_COMMANDS`` for a magnet torrent (no geometry yet) are dropped here: a coordinator
  that assigns pieces before the upgrade has nothing a connection could act on.
- A connection not started yet (no handle) is skipped.
"""

from __future__ import annotations

from typing import TypeVar

from torviz.shared import bus
from torviz.shared.bus import DisconnectReason
from torviz.shared.types import InfoHash

from .commands import (
    PIECE_COMMANDS,
    Acquired,
    Command,
    Disconnect,
    LearnGeometry,
    PeerMessage,
    command_for,
)
from .torrents import Connection, Registry

__all__ = ["Routed", "route", "upgrade"]

H = TypeVar("H")

Routed = PeerMessage | bus.BanPeers | bus.BroadcastHave
"""The coordinator messages ``route`` handles."""


def route(registry: Registry[H], message: Routed) -> list[tuple[H, Command]]:
    """The commands one coordinator message becomes, with the connection each is for.

    Args:
        registry: the agent's bookkeeping (``BanPeers`` records the ban there,
            ``BroadcastHave`` the piece).
        message: a per-peer message (``AssignPieces``, ``CancelPieces``, ``SetChoke``,
            ``DisconnectPeer``, ``RequestMetadata``, ``SendPex``), ``BanPeers`` or
            ``BroadcastHave``.

    Returns:
        (handle, command) pairs in the order to tell them; empty when nobody is concerned.
    """
    targets: list[Connection[H]]
    command: Command
    match message:
        case bus.BanPeers(info_hash, hosts):
            targets = registry.ban(info_hash, hosts)
            command = Disconnect(DisconnectReason.BANNED, "the host was banned")
        case bus.BroadcastHave(info_hash, piece):
            targets = registry.piece_verified(info_hash, piece)
            command = Acquired(piece)
        case _:
            command = command_for(message)
            if isinstance(command, PIECE_COMMANDS) and registry.is_magnet(message.info_hash):
                return []
            connection = registry.lookup(message.info_hash, message.peer)
            targets = [] if connection is None else [connection]
    return [(c.handle, command) for c in targets if c.handle is not None]


def upgrade(registry: Registry[H], info_hash: InfoHash) -> list[tuple[H, Command]]:
    """What the live connections of a torrent that just got its geometry are told.

    Args:
        registry: the agent's bookkeeping, after ``attach`` gave the torrent its geometry.
        info_hash: the torrent.

    Returns:
        A ``LearnGeometry`` (with a have-state of its own) for each live connection; empty
        when the torrent is unknown or still has no geometry.
    """
    torrent = registry.torrent(info_hash)
    if torrent is None or torrent.geometry is None or torrent.have is None:
        return []
    return [
        (c.handle, LearnGeometry(torrent.geometry, torrent.have.copy(), torrent.info, torrent.pex))
        for c in registry.connections_of(info_hash)
        if c.handle is not None
    ]
